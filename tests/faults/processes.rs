//! `orderflow worker` as a real process: SIGKILL mid-job, SIGTERM mid-job.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{signal, spawn_worker};
use crate::helpers::*;

async fn slow_shipping(app: &TestApp, ms: u64) {
    app.client
        .post(format!("{}/_sim/config", app.sims.shipping_url()))
        .send_json(&json!({"latency_ms": ms}))
        .await
        .unwrap();
}

/// Waits until the order's delivery attempt has started (job in flight).
async fn wait_in_flight(app: &TestApp, id: uuid::Uuid) {
    app.wait_order(id, 15, |o| {
        o["delivery"]["status"] == "requested" && o["status"] == "paid"
    })
    .await;
}

#[actix_rt::test]
async fn a_job_interrupted_by_sigkill_runs_again_within_15_seconds_and_ships_once() {
    let _serial = crate::serial();
    let app = spawn_app().await;
    slow_shipping(&app, 3000).await;
    let mut first = spawn_worker(&app);
    let resp = app.purchase(&visa(), None).await;
    let id = order_id(&resp);
    wait_in_flight(&app, id).await;

    signal(&first, "-KILL");
    let killed_at = Instant::now();
    first.wait().unwrap();
    slow_shipping(&app, 0).await;
    // The supervisor's restart: a new process (a new worker name).
    let mut second = spawn_worker(&app);
    app.wait_order(id, 25, |o| o["status"] == "fulfilling")
        .await;
    let recovered_in = killed_at.elapsed();
    signal(&second, "-TERM");
    second.wait().unwrap();

    assert!(
        recovered_in <= Duration::from_secs(16),
        "re-run took {recovered_in:?}"
    );
    assert_eq!(
        app.sims
            .shipping
            .stats()
            .shipments_by_reference
            .get(&id.to_string()),
        Some(&1)
    );
    eprintln!("SIGKILL recovery took {recovered_in:?}");
}

#[actix_rt::test]
async fn sigterm_finishes_the_in_flight_job_and_exits_0() {
    let _serial = crate::serial();
    let app = spawn_app().await;
    slow_shipping(&app, 2000).await;
    let mut worker = spawn_worker(&app);
    let resp = app.purchase(&visa(), None).await;
    let id = order_id(&resp);
    wait_in_flight(&app, id).await;

    signal(&worker, "-TERM");
    let status = worker.wait().unwrap();

    assert_eq!(status.code(), Some(0));
    let o = app.get(&format!("/api/v1/orders/{id}")).await.body;
    assert_eq!(
        o["status"], "fulfilling",
        "the in-flight delivery finished before exit: {o}"
    );
    assert_eq!(
        app.sims
            .shipping
            .stats()
            .shipments_by_reference
            .get(&id.to_string()),
        Some(&1)
    );
}

#[actix_rt::test]
async fn a_worker_killed_again_and_again_mid_delivery_still_ships_each_order_once() {
    let _serial = crate::serial();
    let app = spawn_app().await;
    slow_shipping(&app, 500).await;
    // A second worker that stays up, so orphans are found by a live one.
    let mut steady = spawn_worker(&app);
    let mut victim = spawn_worker(&app);
    let mut ids = Vec::new();
    for round in 0..5 {
        for _ in 0..8 {
            ids.push(order_id(&app.purchase(&visa(), None).await));
        }
        actix_rt::time::sleep(Duration::from_millis(700)).await;
        signal(&victim, "-KILL");
        victim.wait().unwrap();
        assert!(
            steady.try_wait().unwrap().is_none(),
            "the other worker exited in round {round}"
        );
        victim = spawn_worker(&app);
    }
    for id in &ids {
        app.wait_order(*id, 60, |o| o["status"] == "fulfilling")
            .await;
    }
    for w in [&mut steady, &mut victim] {
        signal(w, "-TERM");
        assert_eq!(w.wait().unwrap().code(), Some(0));
    }
    app.assert_shipped_once(&ids);
}
