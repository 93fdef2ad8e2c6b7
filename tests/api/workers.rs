//! Workers against the real Redis and PostgreSQL: deliveries exactly once,
//! retries and failures, reconciliation, the outbox sweep, cancel and
//! refund, retry-delivery.

use std::time::Duration;

use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;

fn fulfilling(o: &Value) -> bool {
    o["status"] == "fulfilling"
}

async fn set_shipping(app: &TestApp, knobs: Value) {
    let r = app
        .client
        .post(format!("{}/_sim/config", app.sims.shipping_url()))
        .send_json(&knobs)
        .await
        .unwrap();
    assert!(r.status().is_success());
}

#[actix_rt::test]
async fn a_paid_order_gets_exactly_one_shipment_and_moves_to_fulfilling() {
    let app = spawn_app().await;
    let worker = app.start_worker(fast_worker());
    let id = app.paid_order().await;

    let o = app.wait_order(id, 15, fulfilling).await;

    assert_eq!(o["delivery"]["status"], "requested");
    assert!(o["delivery"]["shipment_id"]
        .as_str()
        .unwrap()
        .starts_with("shp_"));
    assert!(o["delivery"]["tracking_number"].as_str().is_some());
    assert_eq!(o["delivery"]["attempts"], 1);
    assert_eq!(
        app.sims
            .shipping
            .stats()
            .shipments_by_reference
            .get(&id.to_string()),
        Some(&1)
    );
    assert!(!app.owed("deliver", id).await);
    worker.stop().unwrap();
}

#[actix_rt::test]
async fn duplicate_enqueues_and_two_workers_still_make_one_shipment_per_order() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(app.paid_order().await);
    }
    // Every order's job pushed three more times under distinct task ids.
    let queue = orderflow::jobs::JobQueue::new(&app.settings).unwrap();
    for id in &ids {
        for n in 0..3 {
            queue
                .push_with(
                    orderflow::orders::Deliver { order_id: *id },
                    format!("dup-{id}-{n}"),
                    Duration::ZERO,
                )
                .await
                .unwrap();
        }
    }
    let w1 = app.start_worker(fast_worker());
    let w2 = app.start_worker(fast_worker());
    for id in &ids {
        app.wait_order(*id, 20, fulfilling).await;
    }
    w1.stop().unwrap();
    w2.stop().unwrap();
    app.assert_shipped_once(&ids);
    app.assert_all_shipped_once(ids.len());
}

#[actix_rt::test]
async fn shipping_outages_are_retried_with_backoff_then_succeed() {
    let app = spawn_app().await;
    set_shipping(&app, json!({"failure_rate": 1.0, "failure_status": 503})).await;
    let mut opts = fast_worker();
    opts.retry.max_attempts = 50;
    let worker = app.start_worker(opts);
    let id = app.paid_order().await;
    let o = app
        .wait_order(id, 15, |o| o["delivery"]["attempts"].as_i64() >= Some(2))
        .await;
    assert_eq!(o["status"], "paid");
    assert!(
        o["delivery"]["last_error"]
            .as_str()
            .unwrap()
            .contains("503"),
        "{o}"
    );

    set_shipping(&app, json!({"failure_rate": 0.0})).await;
    let o = app.wait_order(id, 15, fulfilling).await;
    assert!(o["delivery"]["attempts"].as_i64().unwrap() >= 2);
    assert_eq!(o["delivery"]["last_error"], Value::Null);
    assert_eq!(
        app.sims
            .shipping
            .stats()
            .shipments_by_reference
            .get(&id.to_string()),
        Some(&1)
    );
    worker.stop().unwrap();
}

#[actix_rt::test]
async fn the_last_attempt_marks_the_delivery_failed_and_ops_can_retry_it() {
    let app = spawn_app().await;
    set_shipping(&app, json!({"failure_rate": 1.0, "failure_status": 429})).await;
    let worker = app.start_worker(fast_worker()); // 3 attempts
    let id = app.paid_order().await;
    let o = app
        .wait_order(id, 20, |o| o["delivery"]["status"] == "failed")
        .await;
    assert_eq!(o["delivery"]["attempts"], 3);
    assert_eq!(o["status"], "paid");
    assert!(!app.owed("deliver", id).await);

    // Not failed → 409; unknown → 404; no token → 401.
    let other = app.paid_order().await;
    set_shipping(&app, json!({"failure_rate": 0.0})).await;
    app.wait_order(other, 15, fulfilling).await;
    let conflict = app
        .ops(
            "POST",
            &format!("/api/v1/orders/{other}/retry-delivery"),
            None,
        )
        .await;
    assert_eq!(
        (conflict.status.as_u16(), conflict.code()),
        (409, "invalid_state")
    );
    assert_eq!(
        app.ops(
            "POST",
            &format!("/api/v1/orders/{}/retry-delivery", Uuid::new_v4()),
            None
        )
        .await
        .status,
        404
    );
    let unauth = app
        .ops_with_token(
            "POST",
            &format!("/api/v1/orders/{id}/retry-delivery"),
            None,
            None,
        )
        .await;
    assert_eq!(unauth.status, 401);

    let retried = app
        .ops("POST", &format!("/api/v1/orders/{id}/retry-delivery"), None)
        .await;
    assert_eq!(retried.status, 202, "{}", retried.body);
    assert_eq!(retried.body["delivery"]["status"], "queued");
    app.wait_order(id, 15, fulfilling).await;
    assert_eq!(
        app.sims
            .shipping
            .stats()
            .shipments_by_reference
            .get(&id.to_string()),
        Some(&1)
    );
    worker.stop().unwrap();
}

#[actix_rt::test]
async fn a_4xx_from_the_partner_fails_the_delivery_at_once() {
    let app = spawn_app().await;
    set_shipping(&app, json!({"failure_rate": 1.0, "failure_status": 422})).await;
    let worker = app.start_worker(fast_worker());
    let id = app.paid_order().await;
    let o = app
        .wait_order(id, 15, |o| o["delivery"]["status"] == "failed")
        .await;
    assert_eq!(o["delivery"]["attempts"], 1);
    worker.stop().unwrap();
}

#[actix_rt::test]
async fn deliveries_owed_while_redis_was_down_are_swept_and_delivered() {
    // The API cannot reach Redis: purchases still succeed, delivery owed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = spawn_app_with(Opts {
        redis_url: Some(format!("redis://127.0.0.1:{closed}")),
        ..Opts::default()
    })
    .await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(app.paid_order().await);
    }
    // A worker on the real Redis sweeps what is owed.
    let mut settings = app.settings.clone();
    settings.redis_url = secrecy::SecretString::from(redis_url());
    let mut opts = fast_worker();
    opts.sweep.grace = Duration::ZERO;
    let worker = app.start_worker_with(settings, opts);
    for id in &ids {
        app.wait_order(*id, 20, fulfilling).await;
        assert!(!app.owed("deliver", *id).await);
    }
    worker.stop().unwrap();
}

#[actix_rt::test]
async fn a_payment_pending_order_is_reconciled_without_a_second_charge() {
    let app = spawn_app().await;
    // The charge is made and its answer lost.
    app.sims_lose_confirms(1).await;
    let resp = app.purchase(&visa(), None).await;
    assert_eq!(resp.status, 202, "{}", resp.body);
    let id = order_id(&resp);

    let mut opts = fast_worker();
    opts.sweep.grace = Duration::ZERO;
    opts.sweep.stale_payment = Duration::ZERO;
    let worker = app.start_worker(opts);
    let o = app.wait_order(id, 20, fulfilling).await;
    assert!(o["payment"]["intent_id"].as_str().is_some());
    assert_eq!(
        app.sims.payment.charges_for(&id.to_string()),
        1,
        "never charged twice"
    );
    worker.stop().unwrap();
}

#[actix_rt::test]
async fn cancelling_a_paid_order_refunds_it_once_and_it_never_ships() {
    let app = spawn_app().await;
    let id = app.paid_order().await; // no worker yet: delivery queued
    let path = format!("/api/v1/orders/{id}/cancel");
    let responses =
        futures_util::future::join_all((0..8).map(|_| app.ops("POST", &path, None))).await;
    let ok: Vec<_> = responses.iter().filter(|r| r.status == 200).collect();
    assert_eq!(ok.len(), 1, "exactly one cancel wins");
    assert!(responses
        .iter()
        .filter(|r| r.status != 200)
        .all(|r| r.status == 409 && r.code() == "invalid_state"));
    assert_eq!(ok[0].body["status"], "cancelled");
    assert_eq!(ok[0].body["payment"]["status"], "refunded");
    let intent = ok[0].body["payment"]["intent_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.sims.payment.stats().refunds_by_intent.get(&intent),
        Some(&1)
    );

    // The delivery pushed at purchase time finds a cancelled order.
    let worker = app.start_worker(fast_worker());
    actix_rt::time::sleep(Duration::from_millis(1500)).await;
    worker.stop().unwrap();
    assert_eq!(
        app.sims
            .shipping
            .stats()
            .shipments_by_reference
            .get(&id.to_string()),
        None
    );
    assert_eq!(
        app.get(&format!("/api/v1/orders/{id}")).await.body["status"],
        "cancelled"
    );
    assert_eq!(
        app.sims.payment.stats().refunds_by_intent.get(&intent),
        Some(&1),
        "the refund job refunds nothing more"
    );
}

#[actix_rt::test]
async fn an_order_with_a_shipment_cannot_be_cancelled() {
    let app = spawn_app().await;
    let worker = app.start_worker(fast_worker());
    let id = app.paid_order().await;
    app.wait_order(id, 15, fulfilling).await;
    let resp = app
        .ops("POST", &format!("/api/v1/orders/{id}/cancel"), None)
        .await;
    assert_eq!((resp.status.as_u16(), resp.code()), (409, "invalid_state"));
    let declined = app
        .purchase(
            &purchase_body(&[("SKU-1", 1)], "pm_card_chargeDeclined"),
            None,
        )
        .await;
    let resp = app
        .ops(
            "POST",
            &format!("/api/v1/orders/{}/cancel", order_id(&declined)),
            None,
        )
        .await;
    assert_eq!(resp.status, 409);
    assert_eq!(
        app.ops(
            "POST",
            &format!("/api/v1/orders/{}/cancel", Uuid::new_v4()),
            None
        )
        .await
        .status,
        404
    );
    assert_eq!(
        app.ops_with_token("POST", &format!("/api/v1/orders/{id}/cancel"), None, None)
            .await
            .status,
        401
    );
    worker.stop().unwrap();
}

#[actix_rt::test]
async fn a_cancelled_pending_order_whose_charge_went_through_is_refunded() {
    let app = spawn_app().await;
    // The charge is made and its answer lost.
    app.sims_lose_confirms(1).await;
    let resp = app.purchase(&visa(), None).await;
    assert_eq!(resp.status, 202);
    let id = order_id(&resp);
    let cancelled = app
        .ops("POST", &format!("/api/v1/orders/{id}/cancel"), None)
        .await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);

    let worker = app.start_worker(fast_worker());
    let o = app
        .wait_order(id, 20, |o| o["payment"]["status"] == "refunded")
        .await;
    assert_eq!(o["status"], "cancelled");
    worker.stop().unwrap();
    let stats = app.sims.payment.stats();
    assert_eq!(stats.succeeded_by_order.get(&id.to_string()), Some(&1));
    let intent = o["payment"]["intent_id"].as_str().unwrap();
    assert_eq!(stats.refunds_by_intent.get(intent), Some(&1));
    assert!(!app.owed("refund", id).await);
}

#[actix_rt::test]
async fn serve_reports_queue_depth_job_totals_and_outbox_lag_whichever_worker_ran_the_jobs() {
    let app = spawn_app().await;
    let id = app.paid_order().await;
    // Before any worker: the delivery is pending and owed.
    let before = app.metrics_text().await;
    assert!(
        before.contains(r#"orderflow_queue_jobs{kind="deliver",state="pending"} 1"#),
        "{before}"
    );
    assert!(before.contains("orderflow_outbox_lag_seconds"), "{before}");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut settings = app.settings.clone();
    settings.worker_metrics_addr = Some(format!("127.0.0.1:{port}").parse().unwrap());
    let worker = app.start_worker_with(settings, fast_worker());
    app.wait_order(id, 15, fulfilling).await;

    let after = app.metrics_text().await;
    assert!(
        after.contains(r#"orderflow_jobs_total{kind="deliver",state="done"} 1"#),
        "{after}"
    );
    assert!(
        after.contains(r#"orderflow_queue_jobs{kind="deliver",state="pending"} 0"#),
        "{after}"
    );
    assert!(after.contains("orderflow_outbox_lag_seconds 0"), "{after}");
    let own = app
        .get_text(&format!("http://127.0.0.1:{port}/metrics"))
        .await;
    assert!(
        own.contains(r#"orderflow_worker_jobs_total{kind="deliver",outcome="done"} 1"#),
        "{own}"
    );
    assert!(
        own.contains(r#"orderflow_partner_calls_total{outcome="ok",partner="shipping"} 1"#),
        "the worker's own endpoint shows its own calls: {own}"
    );
    assert!(
        own.contains(r#"orderflow_partner_calls_total{outcome="ok",partner="shipping"} 1"#),
        "{own}"
    );
    worker.stop().unwrap();
}

#[actix_rt::test]
async fn concurrent_sweeps_push_each_owed_item_once_per_window() {
    let app = spawn_app().await;
    app.seed_paid_orders(300, "now() - interval '1 hour'").await;
    let pool = app.pool.clone();
    let taken = futures_util::future::join_all((0..4).map(|_| {
        let pool = pool.clone();
        async move {
            orderflow::db::unit(&pool, |c| {
                orderflow::db::outbox::take_due(
                    c,
                    orderflow::db::outbox::OutboxKind::Deliver,
                    Duration::ZERO,
                    Duration::from_secs(60),
                    1000,
                )
            })
            .await
        }
    }))
    .await;
    let mut all: Vec<Uuid> = taken.into_iter().flat_map(|t| t.unwrap()).collect();
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(n, 300, "every item taken once across the four sweepers");
    assert_eq!(all.len(), 300);
    let again = orderflow::db::unit(&pool, |c| {
        orderflow::db::outbox::take_due(
            c,
            orderflow::db::outbox::OutboxKind::Deliver,
            Duration::ZERO,
            Duration::from_secs(60),
            1000,
        )
    })
    .await
    .unwrap();
    assert!(
        again.is_empty(),
        "nothing is pushed again within the window"
    );
}

#[actix_rt::test]
async fn finished_jobs_are_vacuumed_so_redis_memory_stays_bounded() {
    use redis::Commands;
    let app = spawn_app().await;
    let worker = app.start_worker(fast_worker());
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(app.paid_order().await);
    }
    for id in &ids {
        app.wait_order(*id, 15, fulfilling).await;
    }
    worker.stop().unwrap();
    let q = format!("{}.deliver", app.redis_prefix);
    let mut r = app.redis();
    let stored: usize = r.hlen(format!("{q}:data")).unwrap();
    assert_eq!(stored, 10, "finished jobs are stored until vacuumed");

    let conn = redis::Client::open(redis_url())
        .unwrap()
        .get_connection_manager()
        .await
        .unwrap();
    let workers: usize = r.zcard(format!("{q}:workers")).unwrap();
    assert!(workers >= 1, "the stopped worker is still registered");
    let policy = orderflow::jobs::vacuum::VacuumPolicy {
        keep_done: Duration::ZERO,
        keep_dead: Duration::ZERO,
        dead_worker_after: Duration::ZERO,
    };
    let vacuumed = orderflow::jobs::vacuum::vacuum(
        &conn,
        &app.redis_prefix,
        &policy,
        &orderflow::worker::KINDS,
    )
    .await
    .unwrap();

    assert_eq!(vacuumed.tasks, 10);
    assert!(
        vacuumed.workers >= 5,
        "each queue's stopped worker: {vacuumed:?}"
    );
    let workers: usize = r.zcard(format!("{q}:workers")).unwrap();
    assert_eq!(workers, 0, "stopped workers are forgotten");
    let worker_meta: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}.*:workers:metadata:*", app.redis_prefix))
        .query(&mut r)
        .unwrap();
    assert!(worker_meta.is_empty(), "{worker_meta:?}");
    let left: usize = r.hlen(format!("{q}:data")).unwrap();
    assert_eq!(left, 0);
    let done: bool = r.exists(format!("{q}:done")).unwrap();
    assert!(!done, "the done set is trimmed too");
    let metas: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{q}:meta:*"))
        .query(&mut r)
        .unwrap();
    assert!(metas.is_empty(), "{metas:?}");
    // Job totals survive the vacuum: serve still reports them.
    let totals: std::collections::HashMap<String, u64> = r
        .hgetall(format!("{}.job_totals", app.redis_prefix))
        .unwrap();
    assert_eq!(totals.get("deliver.done"), Some(&10));
}

#[actix_rt::test]
async fn the_sweeper_deletes_expired_idempotency_records_and_keeps_live_ones() {
    let app = spawn_app().await;
    app.purchase(&visa(), Some("live-key")).await;
    app.db(|c| {
        use diesel::connection::SimpleConnection;
        c.batch_execute(
            "INSERT INTO idempotency_keys (key, request_hash, state, response_status, response_body, expires_at) \
             SELECT 'old-' || g, 'h', 'completed', 201, '{}', now() - interval '1 hour' FROM generate_series(1, 50) g",
        )
        .unwrap();
    })
    .await;
    async fn count(app: &TestApp) -> i64 {
        app.db(|c| {
            use diesel::prelude::*;
            use orderflow::db::schema::idempotency_keys::dsl as k;
            k::idempotency_keys.count().get_result::<i64>(c).unwrap()
        })
        .await
    }
    assert_eq!(count(&app).await, 51);
    let worker = app.start_worker(fast_worker());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count(&app).await != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "expired records were not purged"
        );
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    worker.stop().unwrap();
    let replay = app.purchase(&visa(), Some("live-key")).await;
    assert_eq!(
        replay.header("idempotent-replayed").as_deref(),
        Some("true")
    );
}
