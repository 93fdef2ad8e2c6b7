//! Idempotency-Key (docs/API.md): replay, reuse, in-flight, races, expiry,
//! takeover of a crashed request.

use diesel::prelude::*;
use futures_util::future::join_all;
use serde_json::json;

use crate::helpers::*;

#[actix_rt::test]
async fn a_retry_with_the_same_key_replays_the_first_response_without_a_second_charge() {
    let app = spawn_app().await;
    let first = app.purchase(&visa(), Some("key-1")).await;
    assert_eq!(first.status, 201);
    assert_eq!(first.header("idempotent-replayed"), None);
    let again = app.purchase(&visa(), Some("key-1")).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(app.order_count().await, 1);
    assert_eq!(
        app.sims.payment.charges_for(&order_id(&first).to_string()),
        1
    );
}

#[actix_rt::test]
async fn key_order_and_whitespace_do_not_make_a_different_body() {
    let app = spawn_app().await;
    let first = app.purchase(&visa(), Some("key-ws")).await;
    let mut text = serde_json::to_string_pretty(&visa()).unwrap();
    text = text
        .replace("\"customer\"", "\"zz\": null, \"customer\"")
        .replacen("\"zz\": null, ", "", 1);
    let again = app
        .raw_post_with_key("/api/v1/purchase", "key-ws", text.into_bytes())
        .await;
    assert_eq!(again.status, first.status);
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
}

#[actix_rt::test]
async fn declines_and_pending_outcomes_are_replayed_too() {
    let app = spawn_app().await;
    let body = purchase_body(&[("SKU-1", 1)], "pm_card_chargeDeclined");
    let first = app.purchase(&body, Some("key-d")).await;
    assert_eq!(first.status, 402);
    let again = app.purchase(&body, Some("key-d")).await;
    assert_eq!((again.status, &again.body), (first.status, &first.body));
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(app.sims.payment.stats().intents_by_order.len(), 1);
}

#[actix_rt::test]
async fn the_same_key_with_a_different_body_is_409_reused() {
    let app = spawn_app().await;
    assert_eq!(app.purchase(&visa(), Some("key-2")).await.status, 201);
    let other = purchase_body(&[("SKU-2", 1)], "pm_card_visa");
    let resp = app.purchase(&other, Some("key-2")).await;
    assert_eq!(resp.status, 409);
    assert_eq!(resp.code(), "idempotency_key_reused");
    assert_eq!(app.order_count().await, 1);
}

#[actix_rt::test]
async fn twenty_parallel_requests_with_one_key_make_one_order_and_one_charge() {
    // Arrange: a slow gateway so the requests overlap.
    let app = spawn_app().await;
    app.set_payment(json!({"latency_ms": 300})).await;
    let body = visa();

    // Act
    let responses = join_all((0..24).map(|_| app.purchase(&body, Some("race-key")))).await;

    // Assert
    assert_eq!(app.order_count().await, 1);
    let stats = app.sims.payment.stats();
    assert_eq!(stats.intents_by_order.len(), 1, "{stats:?}");
    assert_eq!(stats.intents_by_order.values().sum::<u32>(), 1);
    let created = responses
        .iter()
        .filter(|r| r.status == 201 && r.header("idempotent-replayed").is_none())
        .count();
    assert_eq!(created, 1);
    for r in &responses {
        match r.status.as_u16() {
            201 => assert_eq!(r.body["status"], "paid"),
            409 => assert_eq!(r.code(), "request_in_progress"),
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    assert!(
        responses.iter().any(|r| r.status == 409),
        "the requests should have overlapped"
    );
    let replay = app.purchase(&body, Some("race-key")).await;
    assert_eq!(
        replay.header("idempotent-replayed").as_deref(),
        Some("true")
    );
}

#[actix_rt::test]
async fn an_expired_key_starts_a_new_purchase() {
    let app = spawn_app().await;
    let first = app.purchase(&visa(), Some("key-old")).await;
    app.db(|c| {
        use orderflow::db::schema::idempotency_keys::dsl as k;
        diesel::update(k::idempotency_keys.find("key-old"))
            .set(k::expires_at.eq(chrono::Utc::now() - chrono::Duration::hours(1)))
            .execute(c)
            .unwrap();
    })
    .await;
    let second = app.purchase(&visa(), Some("key-old")).await;
    assert_eq!(second.status, 201);
    assert_eq!(second.header("idempotent-replayed"), None);
    assert_ne!(order_id(&first), order_id(&second));
    assert_eq!(app.order_count().await, 2);
}

#[actix_rt::test]
async fn a_retry_takes_over_a_crashed_request_and_charges_its_order_once() {
    // Arrange: a request that recorded its order and claimed its key, then
    // died before charging (its lease long expired).
    let app = spawn_app().await;
    let body = visa();
    let hash = orderflow::http::body::fingerprint(body.as_object().unwrap());
    let order = uuid::Uuid::new_v4();
    app.db(move |c| {
        use diesel::connection::SimpleConnection;
        c.batch_execute(&format!(
            "INSERT INTO orders (id, status, customer_email, customer_name, currency, total_cents, shipping_address, payment_method) \
             VALUES ('{order}', 'payment_pending', 'ada@example.com', 'Ada', 'usd', 1299, '{{}}', 'pm_card_visa');
             INSERT INTO order_items VALUES ('{order}', 0, 'SKU-1', 'Analytical Engine T-shirt', 1, 1299, 1299);
             INSERT INTO idempotency_keys (key, request_hash, state, order_id, locked_at, expires_at)
             VALUES ('crashed', '{hash}', 'in_progress', '{order}', now() - interval '1 hour', now() + interval '1 day');"
        ))
        .unwrap();
    })
    .await;

    // Act
    let resp = app.purchase(&body, Some("crashed")).await;

    // Assert: the existing order was charged and settled, no new order.
    assert_eq!(resp.status, 201, "{}", resp.body);
    assert_eq!(order_id(&resp), order);
    assert_eq!(app.order_count().await, 1);
    assert_eq!(app.sims.payment.charges_for(&order.to_string()), 1);
    let again = app.purchase(&body, Some("crashed")).await;
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
}

#[actix_rt::test]
async fn without_a_key_every_request_is_a_new_purchase() {
    let app = spawn_app().await;
    let a = app.purchase(&visa(), None).await;
    let b = app.purchase(&visa(), None).await;
    assert_ne!(order_id(&a), order_id(&b));
    assert_eq!(app.order_count().await, 2);
}

/// The replay is the first answer, even after the order moved on: the key
/// keeps the order as the statement that settled it returned it.
#[actix_rt::test]
async fn a_replay_after_the_order_moved_on_is_still_the_first_answer() {
    let app = spawn_app().await;
    let first = app.purchase(&visa(), Some("key-moved")).await;
    assert_eq!(first.status, 201);
    assert_eq!(first.body["status"], "paid");
    let id = order_id(&first);
    app.db(move |c| {
        use diesel::connection::SimpleConnection;
        c.batch_execute(&format!(
            "UPDATE orders SET status = 'fulfilling', delivery_status = 'requested', \
             shipment_id = 'shp_x', updated_at = now() WHERE id = '{id}'"
        ))
        .unwrap()
    })
    .await;
    let again = app.purchase(&visa(), Some("key-moved")).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(
        app.get(&format!("/api/v1/orders/{id}")).await.body["status"],
        "fulfilling"
    );
}
