//! Webhooks through faults: events made while Redis is down, and a worker
//! SIGKILLed mid-delivery, are all delivered (at least once) afterwards.

use std::collections::BTreeSet;
use std::time::Duration;

use uuid::Uuid;

use crate::harness::{signal, worker_command, OwnRedis};
use crate::helpers::*;
use crate::receiver::{register, Mode, Receiver};

/// Every event of `ids` in PostgreSQL.
async fn all_events(app: &TestApp, ids: &[Uuid]) -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    for id in ids {
        let body = app
            .ops("GET", &format!("/api/v1/orders/{id}/events"), None)
            .await
            .body;
        for e in body["events"].as_array().unwrap() {
            all.insert(e["id"].as_str().unwrap().to_owned());
        }
    }
    all
}

async fn wait_all_delivered(app: &TestApp, receiver: &Receiver, ids: &[Uuid], secs: u64) {
    for id in ids {
        app.wait_order(*id, secs, |o| o["status"] == "fulfilling")
            .await;
    }
    let expected = all_events(app, ids).await;
    // created, paid, fulfilling; and a `delivery.attempt_failed` for a
    // delivery attempt that a killed worker took with it.
    assert!(expected.len() >= ids.len() * 3, "{expected:?}");
    receiver
        .wait_for(secs, "every event", |got| {
            got.iter()
                .filter(|g| g.accepted)
                .map(|g| g.event_id.clone())
                .collect::<BTreeSet<_>>()
                == expected
        })
        .await;
}

#[actix_rt::test]
async fn events_made_while_redis_is_down_are_all_delivered_once_it_is_back() {
    let _serial = crate::serial();
    let mut redis = OwnRedis::start();
    let app = spawn_app_with(Opts {
        redis_url: Some(redis.url()),
        ..Opts::default()
    })
    .await;
    let receiver = Receiver::start(Mode::Ok);
    register(&app, &receiver.url, &["*"]).await;
    let mut opts = fast_worker();
    opts.sweep.grace = Duration::from_secs(1);
    opts.sweep.repush_after = Duration::from_secs(1);
    let worker = app.start_worker(opts);

    redis.stop();
    let mut ids = Vec::new();
    for _ in 0..10 {
        let resp = app.purchase(&visa(), None).await;
        assert_eq!(
            resp.status, 201,
            "purchases go on without Redis: {}",
            resp.body
        );
        ids.push(order_id(&resp));
    }
    actix_rt::time::sleep(Duration::from_secs(2)).await;
    redis.restart();
    wait_all_delivered(&app, &receiver, &ids, 60).await;
    assert!(!worker.is_finished());
    worker.stop().unwrap();
}

#[actix_rt::test]
async fn a_worker_sigkilled_mid_delivery_delivers_after_its_restart() {
    let _serial = crate::serial();
    let app = spawn_app().await;
    let receiver = Receiver::start(Mode::Hang(Duration::from_millis(1500)));
    register(&app, &receiver.url, &["*"]).await;
    let s = &app.settings;
    let spawn = || {
        use secrecy::ExposeSecret;
        worker_command(
            &app,
            s.database_url.expose_secret(),
            s.redis_url.expose_secret(),
        )
        .env("PARTNER_TIMEOUT_MS", "2000")
        .env("SWEEP_GRACE_SECS", "1")
        .spawn()
        .unwrap()
    };
    let mut first = spawn();
    let id = order_id(&app.purchase(&visa(), None).await);
    receiver
        .wait_for(20, "a delivery in flight", |_| receiver.started() >= 1)
        .await;
    signal(&first, "-KILL");
    first.wait().unwrap();
    assert!(receiver.accepted().is_empty(), "killed before any answer");
    receiver.set_mode(Mode::Ok);
    let mut second = spawn();
    wait_all_delivered(&app, &receiver, &[id], 60).await;
    signal(&second, "-TERM");
    second.wait().unwrap();
}
