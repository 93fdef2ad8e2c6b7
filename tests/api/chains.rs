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
async fn a_payment_that_never_settles_is_retried_for_its_window_flagged_after_its_first_part() {
    let app = spawn_app().await;
    app.set_payment(json!({"failure_rate": 1.0, "failure_status": 500}))
        .await;
    let resp = app.purchase(&visa(), None).await;
    assert_eq!(resp.status, 202, "{}", resp.body);
    let id = order_id(&resp);
    let mut opts = fast_worker();
    opts.sweep.grace = Duration::ZERO;
    opts.sweep.stale_payment = Duration::ZERO;
    // The attempt budget says 3; money is retried by time instead.
    opts.retry.settle.attention_after = Duration::from_secs(2);
    opts.retry.settle.give_up_after = Duration::from_secs(5);
    opts.retry.settle.cap = Duration::from_millis(200);
    let worker = app.start_worker(opts);
    let o = app.wait_order(id, 40, |o| !o["attention"].is_null()).await;
    assert_eq!(o["attention"]["reason"], "payment_unsettled", "{o}");
    assert_eq!(o["status"], "payment_pending");
    // Flagged, and still owed: the retries go on past the attempt budget.
    assert!(app.owed("reconcile_payment", id).await);
    let summary = app.ops("GET", "/api/v1/dashboard/summary", None).await;
    assert_eq!(summary.body["needs_attention"], 1, "{}", summary.body);
    // Past the window: no longer owed, and no more calls.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while app.owed("reconcile_payment", id).await {
        assert!(
            std::time::Instant::now() < deadline,
            "still owed past the window"
        );
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    let calls = |s: orderflow::sim::payment::PaymentStats| s.requests + s.reads;
    let before = calls(app.sims.payment.stats());
    actix_rt::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        calls(app.sims.payment.stats()),
        before,
        "retried after the window"
    );
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
                        let start = orderflow::db::shipments::BeginRequest {
                            order_id: id,
                            task: "t".into(),
                        };
                        orderflow::db::shipments::begin_deliveries(
                            &mut c,
                            &[start],
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

/// One set-based unit answers each request of a batch as the one-order
/// start would: started, a duplicate (another task, or not due), or moot.
#[actix_rt::test]
async fn a_batch_of_delivery_starts_answers_each_request_as_alone() {
    use diesel::connection::SimpleConnection;
    use diesel::prelude::*;
    use orderflow::db::schema::{orders::dsl as o, outbox::dsl as w};
    use orderflow::db::shipments::{self, BeginRequest, DeliveryBegin, ShipmentRecord};
    let app = spawn_app().await;
    app.seed_paid_orders(5, "now()").await;
    let mut ids: Vec<uuid::Uuid> = app
        .db(|c| o::orders.select(o::id).order(o::id).load(c).unwrap())
        .await;
    let (due, twice, cancelled, unowed, later) = (ids[0], ids[1], ids[2], ids[3], ids[4]);
    app.db(move |c| {
        c.batch_execute(&format!(
            "UPDATE orders SET status = 'cancelled', delivery_status = 'not_requested' WHERE id = '{cancelled}';
             DELETE FROM outbox WHERE order_id = '{unowed}';
             UPDATE outbox SET next_attempt_at = now() + interval '1 hour' WHERE order_id = '{later}';"
        ))
        .unwrap()
    })
    .await;
    let req = |id, task: &str| BeginRequest {
        order_id: id,
        task: task.to_owned(),
    };
    let reqs = vec![
        req(due, "a"),
        req(twice, "b1"),
        req(twice, "b2"),
        req(cancelled, "c"),
        req(unowed, "d"),
        req(later, "e"),
    ];
    let answers = app
        .db(move |c| shipments::begin_deliveries(c, &reqs, Duration::from_secs(30)).unwrap())
        .await;
    let kinds: Vec<&str> = answers
        .iter()
        .map(|a| match a {
            DeliveryBegin::Start(s) if s.attempt == 1 && s.items.is_empty() => "start",
            DeliveryBegin::Start(_) => "start (wrong attempt)",
            DeliveryBegin::NotYet => "not yet",
            DeliveryBegin::Nothing => "nothing",
        })
        .collect();
    // `twice`: one of its two wake-ups gets the attempt, the other is a duplicate.
    let twice_answers = &kinds[1..3];
    assert!(
        twice_answers.contains(&"start") && twice_answers.contains(&"not yet"),
        "{kinds:?}"
    );
    assert_eq!(
        [kinds[0], kinds[3], kinds[4], kinds[5]],
        ["start", "nothing", "nothing", "not yet"]
    );
    let state = move |id| {
        move |c: &mut diesel::PgConnection| {
            let (d, n): (String, i32) = o::orders
                .find(id)
                .select((o::delivery_status, o::delivery_attempts))
                .first::<(orderflow::domain::DeliveryStatus, i32)>(c)
                .map(|(d, n)| (d.as_str().to_owned(), n))
                .unwrap();
            let owed: i64 = w::outbox
                .filter(w::order_id.eq(id))
                .count()
                .get_result(c)
                .unwrap();
            (d, n, owed)
        }
    };
    assert_eq!(app.db(state(due)).await, ("requested".into(), 1, 1));
    assert_eq!(
        app.db(state(twice)).await,
        ("requested".into(), 1, 1),
        "counted once"
    );
    assert_eq!(
        app.db(state(cancelled)).await.2,
        0,
        "a moot delivery leaves the outbox"
    );
    assert_eq!(
        app.db(state(unowed)).await,
        ("queued".into(), 0, 0),
        "nothing owed: untouched"
    );
    assert_eq!(
        app.db(state(later)).await,
        ("queued".into(), 0, 1),
        "not due: untouched"
    );

    // Recording: the paid ones move, the cancelled one does not; every
    // delivery of the batch leaves the outbox.
    let rec = |id, s: &str| ShipmentRecord {
        order_id: id,
        shipment_id: s.to_owned(),
        tracking: Some(format!("T-{s}")),
    };
    let records = vec![
        rec(due, "shp_1"),
        rec(cancelled, "shp_2"),
        rec(twice, "shp_3"),
    ];
    let moved = app
        .db(move |c| shipments::record_shipments(c, &records).unwrap())
        .await;
    assert_eq!(moved, vec![true, false, true]);
    ids.truncate(3);
    let after: Vec<(uuid::Uuid, String, Option<String>)> = app
        .db(move |c| {
            o::orders
                .filter(o::id.eq_any(&ids))
                .select((o::id, o::status, o::tracking_number))
                .order(o::id)
                .load::<(uuid::Uuid, orderflow::domain::OrderStatus, Option<String>)>(c)
                .unwrap()
                .into_iter()
                .map(|(id, s, t)| (id, s.as_str().to_owned(), t))
                .collect()
        })
        .await;
    assert_eq!(after[0].1, "fulfilling");
    assert_eq!(after[0].2.as_deref(), Some("T-shp_1"));
    assert_eq!(after[1].1, "fulfilling");
    assert_eq!(after[2].1, "cancelled");
    for id in [due, twice, cancelled] {
        assert_eq!(app.db(state(id)).await.2, 0);
    }
}

/// Attempt 1 creates the shipment and gets no answer (outcome unknown);
/// attempt 2 gets a definite "not now" (429). The 429 says nothing about
/// the shipment of attempt 1: the order stays not cancellable, and once an
/// attempt gets through it ships, once, with nothing refunded.
#[actix_rt::test]
async fn a_later_429_does_not_forget_that_a_shipment_may_exist() {
    let app = spawn_app().await;
    app.set_shipping(json!({"failure_rate": 1.0, "failure_status": 503, "after_effect": true}))
        .await;
    let mut opts = fast_worker();
    opts.retry.max_attempts = 5;
    let worker = app.start_worker(opts);
    let id = order_id(&app.purchase(&visa(), None).await);
    app.wait_order(id, 20, |o| o["delivery"]["outcome_unknown"] == true)
        .await;
    app.set_shipping(json!({"failure_status": 429, "retry_after_secs": 30, "after_effect": false}))
        .await;
    let attempts = app
        .wait_order(id, 20, |o| o["delivery"]["status"] == "queued")
        .await["delivery"]["attempts"]
        .as_i64()
        .unwrap_or_default();
    let o = app
        .wait_order(id, 20, |o| {
            o["delivery"]["attempts"].as_i64() > Some(attempts)
                && o["delivery"]["status"] == "queued"
        })
        .await;
    assert!(
        o["delivery"]["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("429"),
        "{o}"
    );
    assert_eq!(o["delivery"]["outcome_unknown"], true, "{o}");
    let cancel = app
        .ops("POST", &format!("/api/v1/orders/{id}/cancel"), None)
        .await;
    assert_eq!(cancel.status, 409, "{}", cancel.body);
    worker.stop().unwrap();
    assert!(app.sims.payment.stats().refunds_by_intent.is_empty());
    app.assert_shipped_once(&[id]);
}

/// An attempt that stalls past its lease while a second attempt starts:
/// the stale attempt's answer (a definite 429) must not overwrite the live
/// one's `requested`, or a cancel would pass while the live attempt creates
/// the shipment.
#[actix_rt::test]
async fn a_stale_attempt_cannot_overwrite_the_live_one() {
    use orderflow::db::shipments::{self, AttemptFailure, BeginRequest, DeliveryBegin};
    let app = spawn_app().await;
    let id = order_id(&app.purchase(&visa(), None).await);
    let begin = move |c: &mut diesel::PgConnection, task: &str| {
        let req = BeginRequest {
            order_id: id,
            task: task.to_owned(),
        };
        shipments::begin_deliveries(c, &[req], Duration::ZERO).expect("begin")
    };
    let (first, second) = app.db(move |c| (begin(c, "stale"), begin(c, "live"))).await;
    let attempt = |b: &[DeliveryBegin]| match b.first() {
        Some(DeliveryBegin::Start(s)) => s.attempt,
        other => panic!("no attempt started: {other:?}"),
    };
    assert_eq!((attempt(&first), attempt(&second)), (1, 2));
    app.db(move |c| {
        let failure = AttemptFailure {
            outcome_unknown: false,
            retry_in: Some(Duration::from_secs(30)),
        };
        shipments::record_delivery_error(c, id, 1, "shipping answered 429", failure)
            .expect("record")
    })
    .await;
    let o = app.get(&format!("/api/v1/orders/{id}")).await.body;
    assert_eq!(o["delivery"]["status"], "requested", "{o}");
    let cancel = app
        .ops("POST", &format!("/api/v1/orders/{id}/cancel"), None)
        .await;
    assert_eq!(cancel.status, 409, "{}", cancel.body);
}
