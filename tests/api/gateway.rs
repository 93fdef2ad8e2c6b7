//! The payment gateway's events inbox: a signed event is stored once by its
//! id however often (and however concurrently) it comes; a forged, stale,
//! unsigned or oversized one is refused before any database work; a rolled
//! secret verifies beside the new one; ops list and replay what arrived.

use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;

const SECRET: &str = "whsec_gateway_current";
const OLD_SECRET: &str = "whsec_gateway_previous";

async fn app_with_secrets() -> TestApp {
    spawn_app_with(Opts {
        env: vec![("GATEWAY_WEBHOOK_SECRETS", format!("{SECRET},{OLD_SECRET}"))],
        ..Opts::default()
    })
    .await
}

fn event(id: &str, order: Uuid) -> Vec<u8> {
    json!({
        "id": id, "type": "payment_intent.succeeded", "created": chrono::Utc::now().timestamp(),
        "data": {"object": {"id": "pi_123", "object": "payment_intent", "status": "succeeded",
                            "metadata": {"order_id": order.to_string()}}}
    })
    .to_string()
    .into_bytes()
}

fn signed(secret: &str, t: i64, body: &[u8]) -> String {
    orderflow::webhooks::signature::sign_all(&[secret.to_owned().into()], t, body)
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// POSTs `body` to the inbox with `signature` (none: no header).
async fn post(app: &TestApp, body: Vec<u8>, signature: Option<String>) -> (u16, Value) {
    let mut req = app
        .client
        .post(app.url("/api/v1/gateway/webhooks"))
        .insert_header(("Content-Type", "application/json"));
    if let Some(s) = signature {
        req = req.insert_header(("Stripe-Signature", s));
    }
    let mut res = req.send_body(body).await.expect("send");
    let body = res.body().limit(1 << 20).await.expect("body");
    (
        res.status().as_u16(),
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

async fn stored(app: &TestApp) -> i64 {
    app.db(|c| {
        use diesel::prelude::*;
        use orderflow::db::schema::gateway_events::dsl as g;
        g::gateway_events.count().get_result(c).expect("count")
    })
    .await
}

async fn counted(app: &TestApp, outcome: &str) -> f64 {
    let text = app.metrics_text().await;
    metric_value(
        &text,
        &format!("orderflow_gateway_events_total{{outcome=\"{outcome}\"}}"),
    )
    .unwrap_or(0.0)
}

#[actix_rt::test]
async fn a_signed_event_is_stored_once_however_often_and_however_concurrently_it_comes() {
    let app = app_with_secrets().await;
    let body = event("evt_once", Uuid::new_v4());
    let (status, answer) = post(&app, body.clone(), Some(signed(SECRET, now(), &body))).await;
    assert_eq!(
        (status, &answer["duplicate"]),
        (200, &json!(false)),
        "{answer}"
    );
    let again = (0..100).map(|_| post(&app, body.clone(), Some(signed(SECRET, now(), &body))));
    for (status, answer) in futures_util::future::join_all(again).await {
        assert_eq!(
            (status, &answer["duplicate"]),
            (200, &json!(true)),
            "{answer}"
        );
    }
    assert_eq!(stored(&app).await, 1);
    assert_eq!(counted(&app, "received").await, 1.0);
    assert_eq!(counted(&app, "duplicate").await, 100.0);

    // A hundred at once of a new id: still one row.
    let body = event("evt_racing", Uuid::new_v4());
    let racing = (0..100).map(|_| post(&app, body.clone(), Some(signed(SECRET, now(), &body))));
    let answers = futures_util::future::join_all(racing).await;
    assert!(answers.iter().all(|(s, _)| *s == 200));
    let firsts = answers
        .iter()
        .filter(|(_, a)| a["duplicate"] == false)
        .count();
    assert_eq!(firsts, 1, "exactly one of them stored it");
    assert_eq!(stored(&app).await, 2);
}

#[actix_rt::test]
async fn forged_stale_unsigned_and_oversized_events_are_refused_and_nothing_is_stored() {
    let app = app_with_secrets().await;
    let body = event("evt_refused", Uuid::new_v4());
    let refusals = [
        (
            "another secret",
            Some(signed("whsec_someone_else", now(), &body)),
            400,
        ),
        ("stale t", Some(signed(SECRET, now() - 301, &body)), 400),
        ("no header", None, 400),
        ("garbage header", Some("v1=zz".to_owned()), 400),
    ];
    for (what, signature, want) in refusals {
        let (status, answer) = post(&app, body.clone(), signature).await;
        assert_eq!(status, want, "{what}: {answer}");
        assert_eq!(
            answer["error"]["code"], "invalid_signature",
            "{what}: {answer}"
        );
    }
    // A body altered after signing.
    let signature = signed(SECRET, now(), &body);
    let (status, answer) = post(&app, event("evt_altered", Uuid::new_v4()), Some(signature)).await;
    assert_eq!(
        (status, answer["error"]["code"].clone()),
        (400, json!("invalid_signature"))
    );
    // Over 1 MiB: refused unread.
    let big = vec![b' '; (1 << 20) + 1];
    let (status, answer) = post(&app, big.clone(), Some(signed(SECRET, now(), &big))).await;
    assert_eq!(
        (status, answer["error"]["code"].clone()),
        (413, json!("payload_too_large"))
    );
    // Signed, but not an event.
    let junk = br#"{"hello": "world"}"#.to_vec();
    let (status, answer) = post(&app, junk.clone(), Some(signed(SECRET, now(), &junk))).await;
    assert_eq!(
        (status, answer["error"]["code"].clone()),
        (400, json!("malformed_request"))
    );
    assert_eq!(stored(&app).await, 0);
    assert_eq!(counted(&app, "invalid").await, 7.0);
}

#[actix_rt::test]
async fn while_a_secret_is_rolled_both_verify() {
    let app = app_with_secrets().await;
    for (id, secret) in [("evt_new_secret", SECRET), ("evt_old_secret", OLD_SECRET)] {
        let body = event(id, Uuid::new_v4());
        let (status, answer) = post(&app, body.clone(), Some(signed(secret, now(), &body))).await;
        assert_eq!(status, 200, "{id}: {answer}");
    }
    assert_eq!(stored(&app).await, 2);
    // With no secret configured, nothing verifies.
    let bare = spawn_app().await;
    let body = event("evt_unconfigured", Uuid::new_v4());
    let (status, _) = post(&bare, body.clone(), Some(signed(SECRET, now(), &body))).await;
    assert_eq!(status, 400);
}

#[actix_rt::test]
async fn ops_list_what_arrived_and_replay_it() {
    let app = app_with_secrets().await;
    let order = Uuid::new_v4();
    let body = event("evt_listed", order);
    post(&app, body.clone(), Some(signed(SECRET, now(), &body))).await;
    let list = app.ops("GET", "/api/v1/gateway-events", None).await;
    assert_eq!(list.status, 200, "{}", list.body);
    let first = &list.body["events"][0];
    assert_eq!(first["id"], "evt_listed");
    assert_eq!(first["type"], "payment_intent.succeeded");
    assert_eq!(first["order_id"], order.to_string());
    assert_eq!(first["status"], "pending");
    let none = app
        .ops("GET", "/api/v1/gateway-events?status=processed", None)
        .await;
    assert_eq!(none.body["events"], json!([]));
    let bad = app
        .ops("GET", "/api/v1/gateway-events?status=settled&limit=0", None)
        .await;
    assert_eq!(bad.status, 422, "{}", bad.body);
    let unauthenticated = app
        .ops_with_token("GET", "/api/v1/gateway-events", None, None)
        .await;
    assert_eq!(unauthenticated.status, 401);
    let replay = app
        .ops("POST", "/api/v1/gateway-events/evt_listed/replay", None)
        .await;
    assert_eq!(replay.status, 202, "{}", replay.body);
    let unknown = app
        .ops("POST", "/api/v1/gateway-events/evt_nope/replay", None)
        .await;
    assert_eq!(unknown.status, 404);
}
