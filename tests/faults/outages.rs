//! Blips and partitions of Redis and PostgreSQL, through the fault
//! harness's proxy, while purchases and deliveries flow.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use uuid::Uuid;

use crate::harness::{self, OwnRedis, Proxy};
use crate::helpers::*;

async fn slow_shipping(app: &TestApp, ms: u64) {
    app.client
        .post(format!("{}/_sim/config", app.sims.shipping_url()))
        .send_json(&json!({"latency_ms": ms}))
        .await
        .unwrap();
}

/// Waits until every order is `fulfilling`; panics after `secs`, or as soon
/// as `alive` says the worker is gone.
async fn wait_all_shipped(app: &TestApp, ids: &[Uuid], secs: u64, alive: &mut dyn FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let mut done = 0;
        for id in ids {
            if app.get(&format!("/api/v1/orders/{id}")).await.body["status"] == "fulfilling" {
                done += 1;
            }
        }
        if done == ids.len() {
            return;
        }
        assert!(
            alive(),
            "the worker exited with {done}/{} shipped",
            ids.len()
        );
        assert!(Instant::now() < deadline, "{done}/{} shipped", ids.len());
        actix_rt::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Six 2 s cuts of the worker's connections to `target` while purchases
/// keep coming: the worker process never exits, logs each outage once per
/// worker kind (not per retry), counts its restarts, and every order
/// ships once.
async fn six_cuts(target: &str) {
    let app = spawn_app().await;
    slow_shipping(&app, 300).await;
    let proxy = match target {
        "postgres" => Proxy::postgres(),
        _ => Proxy::redis(),
    };
    let s = &app.settings;
    let (db_url, redis_url) = match target {
        "postgres" => (
            proxy.database_url(&app.db_name),
            secrecy::ExposeSecret::expose_secret(&s.redis_url).to_owned(),
        ),
        _ => (
            secrecy::ExposeSecret::expose_secret(&s.database_url).to_owned(),
            proxy.redis_url(),
        ),
    };
    let log = std::env::temp_dir().join(format!("orderflow-cuts-{}", Uuid::new_v4().simple()));
    let metrics_port = free_port();
    let mut worker = harness::worker_command(&app, &db_url, &redis_url)
        .env("WORKER_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
        .env("RUST_LOG", "info")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let mut ids = Vec::new();
    for cut in 0..6 {
        for _ in 0..5 {
            ids.push(order_id(&app.purchase(&visa(), None).await));
        }
        actix_rt::time::sleep(Duration::from_millis(700)).await;
        proxy.cut();
        for _ in 0..5 {
            ids.push(order_id(&app.purchase(&visa(), None).await));
        }
        actix_rt::time::sleep(Duration::from_secs(2)).await;
        proxy.heal();
        assert!(
            worker.try_wait().unwrap().is_none(),
            "the worker exited during cut {cut}"
        );
    }
    wait_all_shipped(&app, &ids, 60, &mut || worker.try_wait().unwrap().is_none()).await;
    let metrics = app
        .get_text(&format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await;
    harness::signal(&worker, "-TERM");
    let status = worker.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM still exits 0 after the blips"
    );
    app.assert_shipped_once(&ids);
    let warned = text.matches("worker lost its backend").count();
    let restarts: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("orderflow_worker_restarts_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    eprintln!("{target}: {} orders shipped once through 6 cuts; {warned} outage warnings, {restarts} restarts", ids.len());
    // Five apalis workers per process, each warns at most once per cut.
    assert!(
        warned <= 6 * 5,
        "one warning per outage, not per retry: {warned}\n{text}"
    );
    if target == "redis" {
        assert!(restarts >= 6.0, "restarts counted: {restarts}\n{metrics}");
        // Cuts closer together than a worker's recovery time are one outage.
        assert!(warned >= 1, "the outage is logged: {warned}");
    }
}

#[actix_rt::test]
async fn six_redis_cuts_while_deliveries_flow_never_stop_the_worker_and_each_ships_once() {
    let _serial = crate::serial();
    six_cuts("redis").await;
}

#[actix_rt::test]
async fn six_postgres_cuts_while_deliveries_flow_never_stop_the_worker_and_each_ships_once() {
    let _serial = crate::serial();
    six_cuts("postgres").await;
}

#[actix_rt::test]
async fn a_redis_stall_while_deliveries_run_is_survived_and_each_ships_once() {
    let _serial = crate::serial();
    let app = spawn_app().await;
    slow_shipping(&app, 1000).await;
    let proxy = Proxy::redis();
    let mut settings = app.settings.clone();
    settings.redis_url = secrecy::SecretString::from(proxy.redis_url());
    let mut ids = Vec::new();
    for _ in 0..30 {
        ids.push(order_id(&app.purchase(&visa(), None).await));
    }
    let worker = app.start_worker_with(settings, fast_worker());
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    proxy.pause();
    actix_rt::time::sleep(Duration::from_millis(1500)).await;
    proxy.heal();
    wait_all_shipped(&app, &ids, 45, &mut || !worker.is_finished()).await;
    assert!(
        !worker.is_finished(),
        "a 1.5 s stall must not end the worker"
    );
    worker.stop().unwrap();
    app.assert_shipped_once(&ids);
}

#[actix_rt::test]
async fn a_redis_restart_loses_the_queues_yet_the_worker_stays_and_every_order_ships_once() {
    let _serial = crate::serial();
    let mut redis = OwnRedis::start();
    let app = spawn_app_with(Opts {
        redis_url: Some(redis.url()),
        ..Opts::default()
    })
    .await;
    slow_shipping(&app, 2000).await;
    let mut opts = fast_worker();
    opts.sweep.grace = Duration::from_secs(3);
    opts.sweep.repush_after = Duration::from_secs(3);
    let worker = app.start_worker(opts);
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(order_id(&app.purchase(&visa(), None).await));
    }
    actix_rt::time::sleep(Duration::from_millis(500)).await;
    // Deliveries are in flight: the server dies, forgets every queue, and
    // comes back empty.
    redis.stop();
    actix_rt::time::sleep(Duration::from_secs(2)).await;
    redis.restart();
    for _ in 0..5 {
        ids.push(order_id(&app.purchase(&visa(), None).await));
    }
    slow_shipping(&app, 0).await;
    wait_all_shipped(&app, &ids, 60, &mut || !worker.is_finished()).await;
    assert!(!worker.is_finished());
    worker.stop().unwrap();
    app.assert_shipped_once(&ids);
}

/// Times one request; the app's own client waits up to 30 s.
async fn timed<F: std::future::Future<Output = Resp>>(f: F) -> (Resp, Duration) {
    let t = Instant::now();
    let r = f.await;
    (r, t.elapsed())
}

#[actix_rt::test]
async fn a_silent_postgres_gives_a_503_within_10_s_without_a_payment_and_readyz_within_3_s() {
    let _serial = crate::serial();
    let proxy = Proxy::postgres();
    // `app` owns the database; `through` serves it through the proxy.
    let app = spawn_app().await;
    let through = spawn_app_with(Opts {
        database_url: Some(proxy.database_url(&app.db_name)),
        ..Opts::default()
    })
    .await;
    let warm = through.purchase(&visa(), Some("warm")).await;
    assert_eq!(warm.status, 201, "{}", warm.body);
    let charges_before = through.sims.payment.stats().requests;

    proxy.pause();
    let (resp, took) = timed(through.purchase(&visa(), Some("during-partition"))).await;
    assert_eq!(resp.status, 503, "{}", resp.body);
    assert_eq!(resp.code(), "unavailable");
    assert!(resp.header("retry-after").is_some());
    assert!(took < Duration::from_secs(10), "answered after {took:?}");
    let (ready, ready_took) = timed(through.get("/readyz")).await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(
        ready.body["error"]["down"].to_string().contains("postgres"),
        "{}",
        ready.body
    );
    assert!(
        ready_took < Duration::from_secs(3),
        "readyz took {ready_took:?}"
    );
    assert_eq!(
        through.sims.payment.stats().requests,
        charges_before,
        "no payment attempted"
    );
    proxy.heal();

    // After the partition: the stuck statements finish, but nothing of the
    // answered-503 purchase was committed; its retry is a new purchase.
    let deadline = Instant::now() + Duration::from_secs(30);
    let retried = loop {
        let r = through.purchase(&visa(), Some("during-partition")).await;
        if r.status != 503 && r.status != 409 {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "still {} after healing",
            r.status
        );
        actix_rt::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(retried.status, 201, "{}", retried.body);
    assert_eq!(app.order_count().await, 2, "the warm-up and the retry");
    eprintln!("silent postgres: purchase 503 in {took:?}, readyz 503 in {ready_took:?}");
}

#[actix_rt::test]
async fn a_silent_redis_delays_no_purchase_and_readyz_names_it_within_3_s() {
    let _serial = crate::serial();
    let proxy = Proxy::redis();
    let app = spawn_app_with(Opts {
        redis_url: Some(proxy.redis_url()),
        ..Opts::default()
    })
    .await;
    assert_eq!(app.purchase(&visa(), None).await.status, 201);
    proxy.pause();
    let (resp, took) = timed(app.purchase(&visa(), None)).await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    assert!(took < Duration::from_secs(3), "purchase took {took:?}");
    let id = order_id(&resp);
    assert!(
        app.owed("deliver", id).await,
        "the delivery is owed, for the sweeper"
    );
    let (ready, ready_took) = timed(app.get("/readyz")).await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(
        ready.body["error"]["down"].to_string().contains("redis"),
        "{}",
        ready.body
    );
    assert!(
        ready_took < Duration::from_secs(3),
        "readyz took {ready_took:?}"
    );
    proxy.heal();
}

#[actix_rt::test]
async fn a_slow_redis_above_redis_rs_default_timeout_does_not_end_the_worker() {
    let _serial = crate::serial();
    let app = spawn_app().await;
    let proxy = Proxy::redis();
    let mut settings = app.settings.clone();
    settings.redis_url = secrecy::SecretString::from(proxy.redis_url());
    let worker = app.start_worker_with(settings, fast_worker());
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    // Every Redis answer 600 ms late: over redis-rs' default 500 ms
    // response timeout, which apalis would turn into a dead worker.
    proxy.slow(600);
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(order_id(&app.purchase(&visa(), None).await));
    }
    actix_rt::time::sleep(Duration::from_secs(3)).await;
    proxy.heal();
    wait_all_shipped(&app, &ids, 45, &mut || !worker.is_finished()).await;
    assert!(!worker.is_finished());
    worker.stop().unwrap();
    app.assert_shipped_once(&ids);
}
