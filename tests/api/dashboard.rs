//! The ops board: refresh into the Redis cache by the workers, read by the
//! dashboard endpoints without calling partners.

use std::time::Duration;

use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;

pub async fn refresh_and_wait(app: &TestApp) -> Value {
    let before =
        app.ops("GET", "/api/v1/dashboard/summary", None).await.body["last_refresh"].clone();
    let r = app.ops("POST", "/api/v1/dashboard/refresh", None).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let s = app.ops("GET", "/api/v1/dashboard/summary", None).await.body;
        if !s["last_refresh"].is_null() && s["last_refresh"] != before {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "refresh never finished: {s}"
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn find(board: &Value, id: Uuid) -> Option<&Value> {
    board["orders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["id"] == id.to_string())
}

#[actix_rt::test]
async fn a_refresh_puts_every_active_order_on_the_board_with_each_partner_state() {
    let app = spawn_app().await;
    let worker = app.start_worker(fast_worker());
    let paid = order_id(&app.purchase(&visa(), None).await);
    app.wait_order(paid, 15, |o| o["status"] == "fulfilling")
        .await;
    let declined = order_id(
        &app.purchase(
            &purchase_body(&[("SKU-2", 1)], "pm_card_chargeDeclined"),
            None,
        )
        .await,
    );

    let summary = refresh_and_wait(&app).await;

    assert_eq!(summary["last_refresh"]["orders"], 1);
    assert_eq!(summary["orders_by_status"]["fulfilling"], 1);
    assert_eq!(summary["orders_by_status"]["payment_failed"], 1);
    assert!(summary["queues"]["deliver"]["done"].as_u64().unwrap() >= 1);
    assert!(summary["outbox_lag_seconds"].is_number());
    for p in ["payment", "shipping", "warehouse"] {
        assert_eq!(summary["partners"][p]["healthy"], true, "{p}: {summary}");
        assert!(summary["partners"][p]["last_success_at"].is_string(), "{p}");
    }
    let board = app.ops("GET", "/api/v1/dashboard/orders", None).await.body;
    let o = find(&board, paid).expect("the paid order is on the board");
    assert!(
        find(&board, declined).is_none(),
        "payment_failed is not active"
    );
    assert_eq!(o["status"], "fulfilling");
    assert_eq!(o["payment"]["status"], "succeeded");
    assert_eq!(o["payment"]["stale"], false);
    assert_eq!(o["shipping"]["status"], "label_created");
    assert!(o["shipping"]["tracking_number"].is_string());
    assert_eq!(o["shipping"]["stale"], false);
    let items = o["warehouse"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|i| i["available"].is_i64()));
    assert_eq!(o["warehouse"]["stale"], false);
    // The refresh used its own few connections (never the deliveries' pool).
    let refresh_conns = app.connections_named("orderflow-refresh").await;
    assert!((1..=4).contains(&refresh_conns), "{refresh_conns}");
    assert!(app.connections_named("orderflow-worker").await >= 1);
    worker.stop().unwrap();
}

#[actix_rt::test]
async fn a_failing_partner_keeps_the_last_value_marked_stale_and_shows_unhealthy() {
    let app = spawn_app().await;
    let worker = app.start_worker(fast_worker());
    let id = order_id(&app.purchase(&visa(), None).await);
    app.wait_order(id, 15, |o| o["status"] == "fulfilling")
        .await;
    refresh_and_wait(&app).await;

    app.set_payment(json!({"failure_rate": 1.0, "failure_status": 500}))
        .await;
    let summary = refresh_and_wait(&app).await;

    let board = app.ops("GET", "/api/v1/dashboard/orders", None).await.body;
    let o = find(&board, id).unwrap();
    assert_eq!(o["payment"]["status"], "succeeded", "last known value kept");
    assert_eq!(o["payment"]["stale"], true);
    assert_eq!(o["shipping"]["stale"], false);
    assert_eq!(
        summary["partners"]["payment"]["healthy"], false,
        "{summary}"
    );
    assert!(
        summary["partners"]["payment"]["error_rate"]
            .as_f64()
            .unwrap()
            >= 0.5
    );
    worker.stop().unwrap();
}

#[actix_rt::test]
async fn shipping_progress_moves_orders_to_shipped_then_delivered_and_off_the_board() {
    // Stages do not move with time here (an hour each): the test pins the
    // shipment's stage at the simulator, so no refresh, however slow on a
    // loaded machine, can miss one.
    let app = spawn_app_with(Opts {
        ship_stage_secs: 3600,
        ..Opts::default()
    })
    .await;
    let worker = app.start_worker(fast_worker());
    let id = order_id(&app.purchase(&visa(), None).await);
    let o = app
        .wait_order(id, 15, |o| o["status"] == "fulfilling")
        .await;
    let shipment = o["delivery"]["shipment_id"].as_str().unwrap().to_owned();
    let pin = |stage: &'static str| {
        let app = &app;
        let url = format!(
            "{}/_sim/shipments/{shipment}/status",
            app.sims.shipping_url()
        );
        async move {
            let res = app
                .client
                .post(url)
                .send_json(&json!({ "status": stage }))
                .await
                .unwrap();
            assert_eq!(res.status(), 200, "pinning {stage}");
        }
    };

    // Refreshes, then reads the order back.
    let refreshed = || {
        let app = &app;
        async move {
            refresh_and_wait(app).await;
            app.get(&format!("/api/v1/orders/{id}")).await.body
        }
    };

    // Still label_created: a refresh leaves the order fulfilling.
    let o = refreshed().await;
    assert_eq!(o["status"], "fulfilling", "{o}");

    pin("in_transit").await;
    let o = refreshed().await;
    assert_eq!(o["status"], "shipped", "{o}");
    assert_eq!(o["delivery"]["status"], "in_transit");
    let board = app
        .ops("GET", "/api/v1/dashboard/orders?status=shipped", None)
        .await
        .body;
    // The board shows the partner's own stage.
    assert_eq!(
        find(&board, id).unwrap()["shipping"]["status"],
        "in_transit",
        "{board}"
    );

    pin("out_for_delivery").await;
    let o = refreshed().await;
    assert_eq!(o["status"], "shipped", "{o}");

    pin("delivered").await;
    let o = refreshed().await;
    assert_eq!(o["status"], "delivered", "{o}");
    let board = app.ops("GET", "/api/v1/dashboard/orders", None).await.body;
    assert!(
        find(&board, id).is_none(),
        "delivered orders leave the board"
    );
    assert_eq!(
        crate::events::event_types(&app, id).await,
        [
            "order.created",
            "order.paid",
            "order.fulfilling",
            "order.shipped",
            "order.delivered"
        ],
        "shipping progress records its events too"
    );
    worker.stop().unwrap();
}

#[actix_rt::test]
async fn the_scheduled_refresh_runs_once_per_interval_across_worker_processes() {
    let app = spawn_app().await;
    let opts = orderflow::worker::WorkerOptions {
        refresh_every: Some(Duration::from_secs(1)),
        ..fast_worker()
    };
    let w1 = app.start_worker(opts.clone());
    let w2 = app.start_worker(opts);
    actix_rt::time::sleep(Duration::from_millis(4500)).await;
    w1.stop().unwrap();
    w2.stop().unwrap();
    use redis::Commands;
    let mut r = app.redis();
    // Every plan ever pushed (task id `refresh-plan-{run ms}`): one per
    // 1 s interval, never one per worker.
    let ids: Vec<String> = r
        .hkeys(format!("{}.refresh:data", app.redis_prefix))
        .unwrap();
    let mut slots: Vec<i64> = ids
        .iter()
        .filter_map(|id| id.strip_prefix("refresh-plan-")?.parse::<i64>().ok())
        .map(|ms| ms / 1000)
        .collect();
    let plans = slots.len();
    slots.sort();
    slots.dedup();
    assert_eq!(slots.len(), plans, "two plans in one interval: {ids:?}");
    assert!(
        (2..=6).contains(&plans),
        "{plans} refreshes planned in 4.5 s with a 1 s interval: {ids:?}"
    );
}

#[actix_rt::test]
async fn the_event_stream_announces_each_finished_refresh() {
    use futures_util::StreamExt;
    let app = spawn_app().await;
    let worker = app.start_worker(fast_worker());
    let mut stream = app
        .client
        .get(app.url("/api/v1/dashboard/events"))
        .insert_header(("Authorization", format!("Bearer {TOKEN}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        stream.headers().get("content-type").unwrap(),
        "text/event-stream"
    );
    app.ops("POST", "/api/v1/dashboard/refresh", None).await;
    let mut seen = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !seen.contains("event: refresh") {
        assert!(std::time::Instant::now() < deadline, "no event: {seen}");
        if let Ok(Some(Ok(chunk))) =
            actix_rt::time::timeout(Duration::from_secs(2), stream.next()).await
        {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    assert!(seen.contains("\"orders\":0"), "{seen}");
    worker.stop().unwrap();
}

#[actix_rt::test]
async fn dashboard_endpoints_require_the_token_and_check_their_query() {
    let app = spawn_app().await;
    for (m, p) in [
        ("GET", "/api/v1/dashboard/orders"),
        ("GET", "/api/v1/dashboard/summary"),
        ("POST", "/api/v1/dashboard/refresh"),
        ("GET", "/api/v1/dashboard/events"),
    ] {
        assert_eq!(
            app.ops_with_token(m, p, None, None).await.status,
            401,
            "{m} {p}"
        );
        assert_eq!(
            app.ops_with_token(m, p, None, Some("nope-nope-nope"))
                .await
                .status,
            401,
            "{m} {p}"
        );
    }
    for q in ["limit=0", "limit=501", "status=lost"] {
        assert_eq!(
            app.ops("GET", &format!("/api/v1/dashboard/orders?{q}"), None)
                .await
                .status,
            422,
            "{q}"
        );
    }
    let empty = app
        .ops("GET", "/api/v1/dashboard/orders?status=delivered", None)
        .await;
    assert_eq!(empty.status, 200);
    assert_eq!(empty.body["orders"], json!([]));
}

fn metric(text: &str, name_and_labels: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[actix_rt::test]
async fn serve_metrics_count_the_partner_calls_of_every_process_with_latency_histograms() {
    let app = spawn_app().await;
    // serve charges; a worker delivers and then refreshes the board, which
    // asks all three partners. Only workers call the warehouse.
    let worker = app.start_worker(fast_worker());
    let id = order_id(&app.purchase(&visa(), None).await);
    app.wait_order(id, 15, |o| o["status"] == "fulfilling")
        .await;
    refresh_and_wait(&app).await;
    worker.stop().unwrap();

    let text = app.metrics_text().await;
    let calls = |p: &str| {
        metric(
            &text,
            &format!(r#"orderflow_partner_calls_total{{outcome="ok",partner="{p}"}}"#),
        )
    };
    let histogram = |p: &str, what: &str| {
        metric(
            &text,
            &format!(
                r#"orderflow_partner_call_duration_seconds_{what}{{outcome="ok",partner="{p}"{}}}"#,
                if what == "bucket" {
                    r#",le="+Inf""#
                } else {
                    ""
                }
            ),
        )
    };
    assert_eq!(calls("warehouse"), Some(1), "one batch call: {text}");
    // The charge's two calls, create and confirm (serve), and the
    // refresh's intent check (worker).
    assert_eq!(calls("payment"), Some(3), "{text}");
    // The shipment (deliver job) and the refresh's shipment check.
    assert_eq!(calls("shipping"), Some(2), "{text}");
    for p in ["payment", "shipping", "warehouse"] {
        assert_eq!(histogram(p, "count"), calls(p), "{p}: {text}");
        assert_eq!(histogram(p, "bucket"), calls(p), "{p}: {text}");
    }
    // Scraping again counts nothing twice.
    assert_eq!(
        metric(
            &app.metrics_text().await,
            r#"orderflow_partner_calls_total{outcome="ok",partner="payment"}"#
        ),
        Some(3)
    );
}

async fn board_renders(app: &TestApp) -> u64 {
    metric(&app.metrics_text().await, "orderflow_board_renders_total").unwrap()
}

async fn board_burst(app: &TestApp, n: usize) {
    let reads = (0..n).map(|_| app.ops("GET", "/api/v1/dashboard/orders", None));
    for r in futures_util::future::join_all(reads).await {
        assert_eq!(r.status, 200, "{}", r.body);
    }
}

#[actix_rt::test]
async fn a_burst_of_board_reads_costs_one_render_and_no_read_waits_on_an_old_board() {
    let app = spawn_app().await;
    // Nothing rendered yet: 50 reads at once wait for one render.
    board_burst(&app, 50).await;
    assert_eq!(board_renders(&app).await, 1);
    // Within the TTL: served as is.
    board_burst(&app, 50).await;
    assert_eq!(board_renders(&app).await, 1);
    // Past the TTL: the previous board is served and one re-render starts.
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    board_burst(&app, 50).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while board_renders(&app).await < 2 {
        assert!(std::time::Instant::now() < deadline, "no re-render");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(board_renders(&app).await, 2);
}

#[actix_rt::test]
async fn a_board_read_after_the_refresh_event_shows_that_refresh() {
    use futures_util::StreamExt;
    let app = spawn_app().await;
    let worker = app.start_worker(fast_worker());
    let id = order_id(&app.purchase(&visa(), None).await);
    app.wait_order(id, 15, |o| o["status"] == "fulfilling")
        .await;
    let mut stream = app
        .client
        .get(app.url("/api/v1/dashboard/events"))
        .insert_header(("Authorization", format!("Bearer {TOKEN}")))
        .send()
        .await
        .unwrap();
    let r = app.ops("POST", "/api/v1/dashboard/refresh", None).await;
    assert_eq!(r.status, 202);
    // Keep the micro-cache warm with the board as it was, up to the event.
    let mut next = stream.next();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        assert!(std::time::Instant::now() < deadline, "no refresh event");
        let board = app.ops("GET", "/api/v1/dashboard/orders", None).await;
        assert_eq!(board.status, 200);
        match actix_rt::time::timeout(Duration::from_millis(20), &mut next).await {
            Ok(Some(Ok(chunk))) if String::from_utf8_lossy(&chunk).contains("event: refresh") => {
                break
            }
            Ok(_) => next = stream.next(),
            Err(_) => {}
        }
    }
    let board = app.ops("GET", "/api/v1/dashboard/orders", None).await.body;
    assert!(
        find(&board, id).is_some(),
        "the board read right after the event is the new one: {board}"
    );
    worker.stop().unwrap();
}

#[actix_rt::test]
async fn board_reads_answer_503_in_the_envelope_when_redis_is_down() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let app = spawn_app_with(Opts {
        redis_url: Some(format!("redis://127.0.0.1:{port}")),
        ..Opts::default()
    })
    .await;
    let r = app.ops("GET", "/api/v1/dashboard/orders", None).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.code(), "unavailable");
}

async fn set_latency(app: &TestApp, ms: u64) {
    for base in [
        app.sims.payment_url(),
        app.sims.shipping_url(),
        app.sims.warehouse_url(),
    ] {
        let r = app
            .client
            .post(format!("{base}/_sim/config"))
            .send_json(&json!({ "latency_ms": ms }))
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
}

#[actix_rt::test]
async fn refresh_requests_during_a_run_make_one_follow_up_run_not_overlapping_runs() {
    let app = spawn_app().await;
    let worker = app.start_worker(fast_worker());
    let id = order_id(&app.purchase(&visa(), None).await);
    app.wait_order(id, 15, |o| o["status"] == "fulfilling")
        .await;
    // Each run now waits about a second on the partners.
    set_latency(&app, 1000).await;
    for _ in 0..5 {
        let r = app.ops("POST", "/api/v1/dashboard/refresh", None).await;
        assert_eq!(r.status, 202, "{}", r.body);
        // Requests in the same millisecond are one plan (its task id is
        // the run's start in ms); this test counts five.
        actix_rt::time::sleep(Duration::from_millis(3)).await;
    }
    // A scheduled refresh meanwhile is skipped, not queued.
    let queue = orderflow::jobs::JobQueue::new(&app.settings).unwrap();
    let scheduled = orderflow::board::RefreshPlan {
        run: 1,
        on_demand: false,
    };
    let task = orderflow::jobs::JobKind::task_id(&scheduled);
    queue
        .push_with(scheduled, task, Duration::ZERO)
        .await
        .unwrap();
    let mut redis = app.redis();
    let mut counts = || {
        let finished: Option<u64> =
            redis::Commands::get(&mut redis, format!("{}.board.events", app.redis_prefix)).unwrap();
        let plans: Option<u64> = redis::Commands::hget(
            &mut redis,
            format!("{}.job_totals", app.redis_prefix),
            "refresh.done",
        )
        .unwrap();
        (finished.unwrap_or(0), plans.unwrap_or(0))
    };
    // Five requests, the scheduled plan and the follow-up are seven plans;
    // the first claims the run, the other four requests queue one follow-up
    // run.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while counts() != (2, 7) {
        assert!(
            std::time::Instant::now() < deadline,
            "runs finished, plans done: {:?}",
            counts()
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    // Nothing else follows.
    actix_rt::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(counts(), (2, 7));
    worker.stop().unwrap();
}

#[actix_rt::test]
async fn refresh_calls_run_concurrently_within_the_per_partner_bound() {
    let app = spawn_app().await;
    let worker = app.start_worker(orderflow::worker::WorkerOptions {
        partner_concurrency: 3,
        refresh_every: None,
        ..fast_worker()
    });
    let mut ids = Vec::new();
    for _ in 0..12 {
        ids.push(order_id(&app.purchase(&visa(), None).await));
    }
    for id in &ids {
        app.wait_order(*id, 15, |o| o["status"] == "fulfilling")
            .await;
    }
    // Each of the 12 intent and 12 shipment lookups waits 150 ms at its
    // partner: serially the most at once would be 1, unbounded 12.
    set_latency(&app, 150).await;
    let load = |base: String, reset: bool| {
        let app = &app;
        async move {
            let text = app
                .get_text(&format!("{base}/_sim/load?reset={reset}"))
                .await;
            serde_json::from_str::<Value>(&text).unwrap()["max_in_flight"].clone()
        }
    };
    load(app.sims.payment_url(), true).await;
    load(app.sims.shipping_url(), true).await;
    let summary = refresh_and_wait(&app).await;
    assert_eq!(summary["last_refresh"]["orders"], 12);
    assert_eq!(load(app.sims.payment_url(), false).await, 3);
    assert_eq!(load(app.sims.shipping_url(), false).await, 3);
    worker.stop().unwrap();
}

/// Every job kind that runs is counted in the summary's queue totals,
/// the webhook drainer's too (it once skipped the job shell and read 0).
#[actix_rt::test]
async fn every_job_kind_that_ran_is_counted_in_the_summary() {
    let app = spawn_app().await;
    let receiver = crate::receiver::Receiver::start(crate::receiver::Mode::Ok);
    crate::receiver::register(&app, &receiver.url, &["order.created"]).await;
    let worker = app.start_worker(fast_worker());
    let paid = order_id(&app.purchase(&visa(), None).await);
    app.wait_order(paid, 15, |o| o["status"] == "fulfilling")
        .await;
    receiver
        .wait_for(10, "the created event", |got| !got.is_empty())
        .await;
    refresh_and_wait(&app).await;
    // A drainer's run ends a moment after its last POST: wait for it.
    let kinds = ["deliver", "webhook", "refresh", "refresh_batch"];
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let queues = app.ops("GET", "/api/v1/dashboard/summary", None).await.body["queues"].clone();
        let missing: Vec<&str> = kinds
            .into_iter()
            .filter(|k| queues[*k]["done"].as_u64() < Some(1))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never counted done: {missing:?} in {queues}"
        );
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    worker.stop().unwrap();
}
