//! One chain per outbox item, outcomes that are not known, and attempt
//! budgets that end in an ops flag rather than retries forever.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

/// Shipping creates the shipment, then fails (`hang`: never answers) on
/// every POST: the order cannot be cancelled while the outcome is unknown,
/// and once an attempt gets through it ships, once, and nothing is refunded.
async fn cancel_waits_for_the_unknown_outcome(hang: bool) {
    let app = spawn_app().await;
    let knobs = if hang {
        json!({"hang_rate": 1.0, "after_effect": true})
    } else {
        json!({"failure_rate": 1.0, "failure_status": 503, "after_effect": true})
    };
    app.set_shipping(knobs).await;
    let mut opts = fast_worker();
    opts.retry.max_attempts = 2;
    let worker = app.start_worker(opts);
    let id = order_id(&app.purchase(&visa(), None).await);
    let o = app
        .wait_order(id, 20, |o| o["delivery"]["outcome_unknown"] == true)
        .await;
    assert_eq!(o["status"], "paid", "{o}");
    let cancel = app
        .ops("POST", &format!("/api/v1/orders/{id}/cancel"), None)
        .await;
    assert_eq!(cancel.status, 409, "{}", cancel.body);
    assert_eq!(cancel.code(), "invalid_state");
    let message = cancel.body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("shipment may exist"), "{message}");

    // The attempts run out: failed, and still not cancellable.
    let o = app
        .wait_order(id, 30, |o| o["delivery"]["status"] == "failed")
        .await;
    assert_eq!(o["delivery"]["outcome_unknown"], true, "{o}");
    let cancel = app
        .ops("POST", &format!("/api/v1/orders/{id}/cancel"), None)
        .await;
    assert_eq!(cancel.status, 409, "{}", cancel.body);

    // Ops retry with the partner healthy: the retry learns the shipment
    // exists (same reference) and the order ships.
    app.set_shipping(json!({"failure_rate": 0.0, "hang_rate": 0.0, "after_effect": false}))
        .await;
    let retry = app
        .ops("POST", &format!("/api/v1/orders/{id}/retry-delivery"), None)
        .await;
    assert_eq!(retry.status, 202, "{}", retry.body);
    let o = app
        .wait_order(id, 20, |o| o["status"] == "fulfilling")
        .await;
    assert_eq!(o["delivery"]["outcome_unknown"], false, "{o}");
    worker.stop().unwrap();
    let stats = app.sims.shipping.stats();
    assert_eq!(stats.shipments_by_reference.get(&id.to_string()), Some(&1));
    assert!(app.sims.payment.stats().refunds_by_intent.is_empty());
}

#[actix_rt::test]
async fn an_order_whose_shipment_may_exist_after_a_5xx_is_not_cancellable() {
    cancel_waits_for_the_unknown_outcome(false).await;
}

#[actix_rt::test]
async fn an_order_whose_shipment_may_exist_after_a_timeout_is_not_cancellable() {
    cancel_waits_for_the_unknown_outcome(true).await;
}

#[actix_rt::test]
async fn a_429_is_a_definite_no_and_the_order_stays_cancellable() {
    let app = spawn_app().await;
    app.set_shipping(json!({"failure_rate": 1.0, "failure_status": 429, "retry_after_secs": 30}))
        .await;
    let worker = app.start_worker(fast_worker());
    let id = order_id(&app.purchase(&visa(), None).await);
    app.wait_order(id, 20, |o| {
        o["delivery"]["attempts"] == 1 && o["delivery"]["status"] == "queued"
    })
    .await;
    let cancel = app
        .ops("POST", &format!("/api/v1/orders/{id}/cancel"), None)
        .await;
    assert_eq!(cancel.status, 200, "{}", cancel.body);
    worker.stop().unwrap();
    assert!(app.sims.shipping.stats().shipments_by_reference.is_empty());
}

#[actix_rt::test]
async fn retry_after_is_honoured_and_the_sweeper_starts_no_second_chain() {
    let app = spawn_app().await;
    app.set_shipping(json!({"failure_rate": 1.0, "failure_status": 429, "retry_after_secs": 20}))
        .await;
    // A sweeper that would push anything owed for more than a second.
    let mut opts = fast_worker();
    opts.sweep.grace = Duration::from_secs(1);
    opts.sweep.repush_after = Duration::from_secs(1);
    let worker = app.start_worker(opts);
    let id = order_id(&app.purchase(&visa(), None).await);
    let reference = id.to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while app
        .sims
        .shipping
        .stats()
        .arrivals_ms_by_reference
        .get(&reference)
        .is_none_or(Vec::is_empty)
    {
        assert!(std::time::Instant::now() < deadline, "no delivery attempt");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    app.set_shipping(json!({"failure_rate": 0.0})).await;
    app.wait_order(id, 40, |o| o["status"] == "fulfilling")
        .await;
    // Long enough for a stray second chain to show itself.
    actix_rt::time::sleep(Duration::from_secs(2)).await;
    worker.stop().unwrap();
    let arrivals = app.sims.shipping.stats().arrivals_ms_by_reference[&reference].clone();
    assert_eq!(arrivals.len(), 2, "one 429, then one success: {arrivals:?}");
    assert!(
        arrivals[1] - arrivals[0] >= 20_000,
        "the retry came {} ms after the 429 asking for 20 s",
        arrivals[1] - arrivals[0]
    );
}

#[actix_rt::test]
async fn a_payment_that_never_settles_is_flagged_for_ops_not_retried_forever() {
    let app = spawn_app().await;
    app.set_payment(json!({"failure_rate": 1.0, "failure_status": 500}))
        .await;
    let resp = app.purchase(&visa(), None).await;
    assert_eq!(resp.status, 202, "{}", resp.body);
    let id = order_id(&resp);
    let mut opts = fast_worker();
    opts.sweep.grace = Duration::ZERO;
    opts.sweep.stale_payment = Duration::ZERO;
    let worker = app.start_worker(opts);
    let o = app.wait_order(id, 40, |o| !o["attention"].is_null()).await;
    assert_eq!(o["attention"]["reason"], "payment_unsettled", "{o}");
    assert_eq!(o["status"], "payment_pending");
    let summary = app.ops("GET", "/api/v1/dashboard/summary", None).await;
    assert_eq!(summary.body["needs_attention"], 1, "{}", summary.body);
    // No attempts after the flag.
    let calls = app.sims.payment.stats().requests;
    actix_rt::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        app.sims.payment.stats().requests,
        calls,
        "retried after the flag"
    );
    assert!(!app.owed("reconcile_payment", id).await);
    worker.stop().unwrap();
}

#[actix_rt::test]
async fn cancels_racing_delivery_starts_never_deadlock() {
    let app = spawn_app().await;
    app.seed_paid_orders(400, "now()").await;
    let ids: Vec<uuid::Uuid> = app
        .db(|c| {
            use diesel::prelude::*;
            use orderflow::db::schema::orders::dsl as o;
            o::orders.select(o::id).load(c).unwrap()
        })
        .await;
    // For every order, a delivery start and a cancel at the same moment.
    let errors = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..2)
        .map(|side| {
            let (pool, ids, errors) = (app.pool.clone(), ids.clone(), errors.clone());
            std::thread::spawn(move || {
                let mut c = pool.get().unwrap();
                for id in ids {
                    let r = if side == 0 {
                        orderflow::db::delivery::begin_delivery(
                            &mut c,
                            id,
                            "t",
                            Duration::from_secs(30),
                        )
                        .map(|_| ())
                    } else {
                        orderflow::db::orders::cancel(&mut c, id).map(|_| ())
                    };
                    if let Err(e) = r {
                        errors.lock().unwrap().push(format!("{id}: {e}"));
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let errors = errors.lock().unwrap();
    assert!(
        errors.is_empty(),
        "{} errors, e.g. {:?}",
        errors.len(),
        errors.first()
    );
}
