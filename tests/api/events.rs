//! Order events: every change records exactly its event, in order, with
//! `sequence` 1, 2, 3… and no gap, also under concurrent writers.

use std::time::Duration;

use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;

/// The order's event types, checking `sequence` runs 1, 2, 3… and each
/// event carries the order as it was right after its change.
pub async fn event_types(app: &TestApp, id: Uuid) -> Vec<String> {
    let resp = app
        .ops("GET", &format!("/api/v1/orders/{id}/events"), None)
        .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let events = resp.body["events"].as_array().unwrap().clone();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["sequence"], json!(i + 1), "{e}");
        assert_eq!(e["order_id"], json!(id));
        assert!(e["id"].as_str().unwrap().starts_with("evt_"));
        let status = e["data"]["order"]["status"].as_str().unwrap();
        if let Some(s) = e["type"].as_str().unwrap().strip_prefix("order.") {
            if s != "created" {
                assert_eq!(status, s, "an order.<status> event carries that status");
            }
        }
    }
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

fn fulfilling(o: &Value) -> bool {
    o["status"] == "fulfilling"
}

#[actix_rt::test]
async fn a_purchase_and_its_delivery_record_created_paid_fulfilling() {
    let app = spawn_app().await;
    let worker = app.start_worker(fast_worker());
    let id = order_id(&app.purchase(&visa(), None).await);
    app.wait_order(id, 15, fulfilling).await;
    assert_eq!(
        event_types(&app, id).await,
        ["order.created", "order.paid", "order.fulfilling"]
    );
    let events = app
        .ops("GET", &format!("/api/v1/orders/{id}/events"), None)
        .await
        .body;
    let first = &events["events"][0]["data"]["order"];
    assert_eq!(
        first["status"], "payment_pending",
        "the order right after it was created"
    );
    assert_eq!(first["items"][0]["sku"], "SKU-1");
    worker.stop().unwrap();
}

#[actix_rt::test]
async fn a_decline_records_created_then_payment_failed() {
    let app = spawn_app().await;
    let resp = app
        .purchase(
            &purchase_body(&[("SKU-1", 1)], "pm_card_chargeDeclined"),
            None,
        )
        .await;
    assert_eq!(resp.status, 402);
    let id: Uuid = resp.body["error"]["order"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        event_types(&app, id).await,
        ["order.created", "order.payment_failed"]
    );
}

#[actix_rt::test]
async fn a_202_then_reconciled_records_paid_once_reconciled() {
    let app = spawn_app().await;
    // The charge is made and its answer lost.
    app.sims_lose_confirms(1).await;
    let resp = app.purchase(&visa(), None).await;
    assert_eq!(resp.status, 202, "{}", resp.body);
    let id = order_id(&resp);
    assert_eq!(event_types(&app, id).await, ["order.created"]);
    let mut opts = fast_worker();
    opts.sweep.grace = Duration::ZERO;
    opts.sweep.stale_payment = Duration::ZERO;
    let worker = app.start_worker(opts);
    app.wait_order(id, 20, fulfilling).await;
    assert_eq!(
        event_types(&app, id).await,
        ["order.created", "order.paid", "order.fulfilling"]
    );
    worker.stop().unwrap();
}

#[actix_rt::test]
async fn a_cancel_records_cancelled_then_refunded() {
    let app = spawn_app().await;
    let id = order_id(&app.purchase(&visa(), None).await);
    let resp = app
        .ops("POST", &format!("/api/v1/orders/{id}/cancel"), None)
        .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(
        event_types(&app, id).await,
        [
            "order.created",
            "order.paid",
            "order.cancelled",
            "payment.refunded"
        ]
    );
}

#[actix_rt::test]
async fn failed_attempts_then_ops_retry_then_shipment_are_all_recorded() {
    let app = spawn_app().await;
    app.set_shipping(json!({"failure_rate": 1.0, "failure_status": 503}))
        .await;
    let worker = app.start_worker(fast_worker()); // 3 attempts
    let id = order_id(&app.purchase(&visa(), None).await);
    app.wait_order(id, 20, |o| o["delivery"]["status"] == "failed")
        .await;
    app.set_shipping(json!({"failure_rate": 0.0})).await;
    let retried = app
        .ops("POST", &format!("/api/v1/orders/{id}/retry-delivery"), None)
        .await;
    assert_eq!(retried.status, 202);
    app.wait_order(id, 20, fulfilling).await;
    assert_eq!(
        event_types(&app, id).await,
        [
            "order.created",
            "order.paid",
            "delivery.attempt_failed",
            "delivery.attempt_failed",
            "delivery.attempt_failed",
            "delivery.failed",
            "delivery.retry_requested",
            "order.fulfilling",
        ]
    );
    let events = app
        .ops("GET", &format!("/api/v1/orders/{id}/events"), None)
        .await
        .body;
    let failed = &events["events"][2]["data"]["order"]["delivery"];
    assert!(
        failed["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "an attempt's event says what went wrong: {failed}"
    );
    worker.stop().unwrap();
}

#[actix_rt::test]
async fn sequences_have_no_gap_when_cancels_race_deliveries() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for _ in 0..40 {
        ids.push(order_id(&app.purchase(&visa(), None).await));
    }
    let w1 = app.start_worker(fast_worker());
    let w2 = app.start_worker(fast_worker());
    let paths: Vec<String> = ids
        .iter()
        .map(|id| format!("/api/v1/orders/{id}/cancel"))
        .collect();
    let cancels =
        futures_util::future::join_all(paths.iter().map(|p| app.ops("POST", p, None))).await;
    assert!(cancels.iter().all(|r| r.status == 200 || r.status == 409));
    for &id in &ids {
        app.wait_order(id, 20, |o| o["status"] == "cancelled" || fulfilling(o))
            .await;
    }
    w1.stop().unwrap();
    w2.stop().unwrap();
    let (gaps, lagging): (i64, i64) = app
        .db(|c| {
            use diesel::prelude::*;
            #[derive(QueryableByName)]
            struct N {
                #[diesel(sql_type = diesel::sql_types::BigInt)]
                n: i64,
            }
            let gaps: N = diesel::sql_query(
                "SELECT count(*) AS n FROM (SELECT order_id FROM order_events GROUP BY order_id \
                 HAVING max(sequence) <> count(*) OR min(sequence) <> 1) g",
            )
            .get_result(c)
            .unwrap();
            let lagging: N = diesel::sql_query(
                "SELECT count(*) AS n FROM orders o WHERE o.event_seq <> \
                 (SELECT max(sequence) FROM order_events e WHERE e.order_id = o.id)",
            )
            .get_result(c)
            .unwrap();
            (gaps.n, lagging.n)
        })
        .await;
    assert_eq!((gaps, lagging), (0, 0));
    for id in ids {
        let types = event_types(&app, id).await;
        let last = types.last().unwrap().as_str();
        assert!(
            last == "payment.refunded" || last == "order.fulfilling",
            "each order was either cancelled and refunded or shipped: {types:?}"
        );
    }
}

#[actix_rt::test]
async fn events_of_an_unknown_order_are_404_and_need_the_token() {
    let app = spawn_app().await;
    let resp = app
        .ops(
            "GET",
            &format!("/api/v1/orders/{}/events", Uuid::new_v4()),
            None,
        )
        .await;
    assert_eq!((resp.status.as_u16(), resp.code()), (404, "not_found"));
    let resp = app
        .ops("GET", "/api/v1/orders/not-a-uuid/events", None)
        .await;
    assert_eq!(resp.status, 404);
    let resp = app
        .ops_with_token(
            "GET",
            &format!("/api/v1/orders/{}/events", Uuid::new_v4()),
            None,
            None,
        )
        .await;
    assert_eq!(resp.status, 401);
}

/// The order's events, (sequence, type, created_at), in sequence order.
async fn timeline(app: &TestApp, id: Uuid) -> Vec<(i32, String, chrono::DateTime<chrono::Utc>)> {
    use diesel::prelude::*;
    use orderflow::db::schema::order_events::dsl as e;
    app.db(move |c| {
        e::order_events
            .filter(e::order_id.eq(id))
            .order(e::sequence)
            .select((e::sequence, e::type_, e::created_at))
            .load(c)
            .expect("events")
    })
    .await
}

/// An order paid, not yet given to a worker (no worker runs).
async fn paid_order(app: &TestApp) -> Uuid {
    let id = order_id(&app.purchase(&visa(), None).await);
    app.wait_order(id, 10, |o| o["status"] == "paid").await;
    id
}

/// An attempt lost with its worker (its lease ran out, the next attempt
/// took the order over, `requested` to `requested`) is in the timeline as
/// `delivery.attempt_failed`, like an attempt that answered.
#[actix_rt::test]
async fn an_attempt_lost_with_its_worker_is_in_the_timeline() {
    use diesel::connection::SimpleConnection;
    let app = spawn_app().await;
    let id = paid_order(&app).await;
    app.db(move |c| {
        c.batch_execute(&format!(
            "UPDATE orders SET delivery_status = 'requested', delivery_attempts = 1 WHERE id = '{id}'; \
             UPDATE orders SET delivery_status = 'requested', delivery_attempts = 2 WHERE id = '{id}';"
        ))
        .expect("two attempts");
    })
    .await;
    let kinds: Vec<String> = timeline(&app, id).await.into_iter().map(|e| e.1).collect();
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("delivery.attempt_failed"),
        "{kinds:?}"
    );
}

/// Events are stamped with the time of the change, taken under the
/// order's row lock, not the transaction's start: a transaction that began
/// earlier but changed the order later gets the later time, so times never
/// run backwards as `sequence` grows.
#[actix_rt::test]
async fn event_times_never_run_backwards_as_the_sequence_grows() {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    let app = spawn_app().await;
    let id = paid_order(&app).await;
    app.db(move |c| {
        c.batch_execute(&format!(
            "UPDATE orders SET delivery_status = 'requested', delivery_attempts = 1 WHERE id = '{id}'"
        ))
        .expect("requested");
    })
    .await;
    let url = format!("{}/{}", pg_base(), app.db_name);
    tokio::task::spawn_blocking(move || {
        let mut early = diesel::PgConnection::establish(&url).expect("early");
        let mut late = diesel::PgConnection::establish(&url).expect("late");
        // `early` starts first (its now() is fixed here) ...
        early.batch_execute("BEGIN; SELECT now();").expect("begin");
        std::thread::sleep(Duration::from_millis(100));
        // ... `late` changes the order and commits ...
        late.batch_execute(&format!(
            "UPDATE orders SET delivery_status = 'queued' WHERE id = '{id}'"
        ))
        .expect("late change");
        // ... then `early` changes it after.
        early
            .batch_execute(&format!(
                "UPDATE orders SET delivery_status = 'failed' WHERE id = '{id}'; COMMIT;"
            ))
            .expect("early change");
    })
    .await
    .expect("transactions");
    let events = timeline(&app, id).await;
    assert!(events.len() >= 4, "{events:?}");
    for pair in events.windows(2) {
        assert!(
            pair[0].2 <= pair[1].2,
            "{} at {} before {} at {}",
            pair[0].1,
            pair[0].2,
            pair[1].1,
            pair[1].2
        );
    }
}
