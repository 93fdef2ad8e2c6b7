//! Money through faults: a charge whose answer was lost, then a payment
//! gateway outage longer than any attempt budget, then a cancel after the
//! gateway forgot the charge's Idempotency-Key (hole 3 of the gateway
//! issue); and a worker killed while it processes a gateway event.

use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use serde_json::json;

use crate::harness::{self, Proxy};
use crate::helpers::*;

async fn wait_for(what: &str, secs: u64, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done().await {
        assert!(Instant::now() < deadline, "never: {what}");
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
}

#[actix_rt::test]
async fn a_lost_charge_answer_a_gateway_outage_and_a_late_cancel_charge_once_and_refund_once() {
    let _serial = crate::serial();
    let app = spawn_app().await;
    // The charge is made; its answer is lost.
    app.sims_lose_confirms(1).await;
    let resp = app.purchase(&visa(), None).await;
    assert_eq!(resp.status, 202, "{}", resp.body);
    let id = order_id(&resp);
    // The gateway goes away for longer than the old attempt budget
    // (8 attempts, at most 1 s apart here) and past the attention time.
    let proxy = Proxy::start(&app.sims.payment_addr.to_string());
    proxy.cut();
    let s = &app.settings;
    let mut worker = harness::worker_command(
        &app,
        s.database_url.expose_secret(),
        s.redis_url.expose_secret(),
    )
    .env("PAYMENT_GATEWAY_URL", format!("http://{}", proxy.addr()))
    .env("PARTNER_TIMEOUT_MS", "500")
    .env("STALE_PAYMENT_SECS", "0")
    .env("SWEEP_GRACE_SECS", "1")
    .env("JOB_RETRY_CAP_SECS", "1")
    .env("PAYMENT_RETRY_CAP_SECS", "1")
    .env("PAYMENT_RETRY_ATTENTION_SECS", "4")
    .spawn()
    .unwrap();
    let outage = Instant::now();
    wait_for("ops told", 40, async || {
        app.get(&format!("/api/v1/orders/{id}")).await.body["attention"]["reason"]
            == "payment_unsettled"
    })
    .await;
    while outage.elapsed() < Duration::from_secs(12) {
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        app.owed("reconcile_payment", id).await,
        "given up during the outage"
    );
    // Cancelled while the outage lasts, and after the gateway forgot the
    // charge's key (as it does after 24 h).
    let cancelled = app
        .ops("POST", &format!("/api/v1/orders/{id}/cancel"), None)
        .await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    app.payment_sim("/_sim/faults", json!({"forget_idempotency_keys": true}))
        .await;
    proxy.heal();
    wait_for("refunded", 60, async || {
        app.get(&format!("/api/v1/orders/{id}")).await.body["payment"]["status"] == "refunded"
    })
    .await;
    let o = app.get(&format!("/api/v1/orders/{id}")).await.body;
    assert_eq!(o["status"], "cancelled");
    assert!(o["attention"].is_null(), "{o}");
    let stats = app.sims.payment.stats();
    let order = id.to_string();
    assert_eq!(stats.intents_by_order[&order], 1, "none created: {stats:?}");
    assert_eq!(stats.succeeded_by_order[&order], 1, "one charge: {stats:?}");
    let intent = o["payment"]["intent_id"].as_str().unwrap();
    assert_eq!(
        stats.refunds_by_intent[intent], 1,
        "refunded once: {stats:?}"
    );
    harness::signal(&worker, "-TERM");
    worker.wait().unwrap();
}

const SECRET: &str = "whsec_fault_events";

#[actix_rt::test]
async fn a_worker_killed_while_it_processes_a_gateway_event_leaves_it_to_the_next_which_applies_it_once(
) {
    let _serial = crate::serial();
    let app = spawn_app_with(Opts {
        env: vec![("GATEWAY_WEBHOOK_SECRETS", SECRET.to_owned())],
        ..Opts::default()
    })
    .await;
    app.payment_sim(
        "/_sim/events",
        json!({"url": app.url("/api/v1/gateway/webhooks"), "secret": SECRET}),
    )
    .await;
    let resp = app
        .purchase(
            &purchase_body(&[("SKU-1", 1)], "pm_card_threeDSecureRequired"),
            None,
        )
        .await;
    assert_eq!(resp.status, 202, "{}", resp.body);
    let id = order_id(&resp);
    let intent = resp.body["payment"]["intent_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let s = &app.settings;
    let command = || {
        let mut c = harness::worker_command(
            &app,
            s.database_url.expose_secret(),
            s.redis_url.expose_secret(),
        );
        c.env("PARTNER_TIMEOUT_MS", "2000");
        c
    };
    let first = command().spawn().unwrap();
    // The purchase's own events processed first (an older event read again
    // later would find the intent succeeded and settle the order itself).
    let done_events = || async {
        app.db(|c| {
            use diesel::prelude::*;
            use orderflow::db::schema::gateway_events::dsl as g;
            g::gateway_events
                .filter(g::status.ne("pending"))
                .count()
                .get_result::<i64>(c)
                .unwrap()
        })
        .await
    };
    wait_for("the purchase's events processed", 20, async || {
        done_events().await >= 2
    })
    .await;
    // The worker's read of the intent will take a while: it is killed in it.
    app.set_payment(json!({"latency_ms": 1500})).await;
    app.payment_sim(
        &format!("/_sim/payment_intents/{intent}/authenticate"),
        json!({"success": true}),
    )
    .await;
    let held = || async {
        app.db(|c| {
            use diesel::prelude::*;
            use orderflow::db::schema::gateway_events::dsl as g;
            g::gateway_events
                .filter(g::type_.eq("payment_intent.succeeded"))
                .filter(g::lease_until.is_not_null())
                .count()
                .get_result::<i64>(c)
                .unwrap()
        })
        .await
    };
    wait_for("the event taken", 20, async || held().await == 1).await;
    harness::signal(&first, "-KILL");
    let mut first = first;
    first.wait().unwrap();
    let o = app.get(&format!("/api/v1/orders/{id}")).await.body;
    assert_eq!(
        o["status"], "payment_pending",
        "applied before the kill: {o}"
    );
    app.set_payment(json!({"latency_ms": 0})).await;
    let mut second = command().spawn().unwrap();
    wait_for("paid", 60, async || {
        app.get(&format!("/api/v1/orders/{id}")).await.body["status"] == "fulfilling"
    })
    .await;
    let events = app
        .ops("GET", &format!("/api/v1/orders/{id}/events"), None)
        .await;
    let paid = events.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "order.paid")
        .count();
    assert_eq!(paid, 1, "{}", events.body);
    assert_eq!(app.sims.payment.charges_for(&id.to_string()), 1);
    harness::signal(&second, "-TERM");
    second.wait().unwrap();
}
