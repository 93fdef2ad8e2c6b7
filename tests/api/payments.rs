//! Payments the gateway settles: 3-D Secure, settlement by the gateway's
//! signed events (late, twice, out of order, before the order), refunds
//! that fail later, disputes, refunds made in the gateway's dashboard, and
//! no charge left behind (reconcile and refund never create one).

use std::time::Duration;

use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;

const SECRET: &str = "whsec_gateway_events";

/// An app whose inbox trusts `SECRET`, and a simulator that sends it every
/// change, signed.
async fn app_with_events() -> TestApp {
    let app = spawn_app_with(Opts {
        env: vec![("GATEWAY_WEBHOOK_SECRETS", SECRET.to_owned())],
        ..Opts::default()
    })
    .await;
    events_to(&app, json!({})).await;
    app
}

/// Points the simulator's events at the app's inbox, with `knobs`.
async fn events_to(app: &TestApp, knobs: Value) {
    let mut config = json!({"url": app.url("/api/v1/gateway/webhooks"), "secret": SECRET});
    if let (Some(c), Some(k)) = (config.as_object_mut(), knobs.as_object()) {
        c.extend(k.clone());
    }
    app.payment_sim("/_sim/events", config).await;
}

fn three_d_secure() -> Value {
    purchase_body(&[("SKU-1", 1)], "pm_card_threeDSecureRequired")
}

/// The types of the order's events, oldest first.
async fn timeline(app: &TestApp, id: Uuid) -> Vec<String> {
    let events = app
        .ops("GET", &format!("/api/v1/orders/{id}/events"), None)
        .await;
    events.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The intent's status at the simulator.
async fn intent_status(app: &TestApp, intent: &str) -> Value {
    let mut res = app
        .client
        .get(format!(
            "{}/v1/payment_intents/{intent}",
            app.sims.payment_url()
        ))
        .insert_header(("Authorization", "Bearer sk_test_orderflow"))
        .send()
        .await
        .unwrap();
    res.json::<Value>().await.unwrap()["status"].clone()
}

fn intent_of(order: &Value) -> String {
    order["payment"]["intent_id"]
        .as_str()
        .expect("intent id")
        .to_owned()
}

/// A worker that processes gateway events quickly.
fn events_worker() -> orderflow::worker::WorkerOptions {
    let mut opts = fast_worker();
    opts.gateway_events.poll = Duration::from_millis(50);
    opts.gateway_events.base = Duration::from_millis(100);
    opts.gateway_events.cap = Duration::from_millis(200);
    opts
}

#[actix_rt::test]
async fn three_d_secure_answers_202_with_the_client_secret_and_settles_by_the_gateway_event() {
    let app = app_with_events().await;
    let worker = app.start_worker(events_worker());
    let first = app.purchase(&three_d_secure(), Some("3ds-key")).await;
    assert_eq!(first.status, 202, "{}", first.body);
    let order = &first.body;
    assert_eq!(order["status"], "payment_pending");
    assert_eq!(order["payment"]["status"], "requires_action");
    let intent = intent_of(order);
    let secret = order["payment"]["client_secret"]
        .as_str()
        .unwrap_or_default();
    assert!(secret.starts_with(&intent), "{order}");
    assert!(order["payment"]["next_action"].is_object(), "{order}");
    // The idempotent replay gives the storefront the same answer.
    let replay = app.purchase(&three_d_secure(), Some("3ds-key")).await;
    assert_eq!(replay.status, 202);
    assert_eq!(
        replay.header("Idempotent-Replayed").as_deref(),
        Some("true")
    );
    assert_eq!(replay.body, first.body);
    // The customer authenticates; the gateway's event settles the order.
    let id = order_id(&first);
    app.payment_sim(
        &format!("/_sim/payment_intents/{intent}/authenticate"),
        json!({"success": true}),
    )
    .await;
    let paid = app
        .wait_order(id, 20, |o| o["status"] == "fulfilling")
        .await;
    assert!(paid["payment"]["client_secret"].is_null(), "{paid}");
    assert_eq!(
        timeline(&app, id).await,
        [
            "order.created",
            "payment.requires_action",
            "order.paid",
            "order.fulfilling"
        ]
    );
    assert_eq!(app.sims.payment.charges_for(&id.to_string()), 1);
    app.assert_shipped_once(&[id]);
    worker.stop().unwrap();
}

#[actix_rt::test]
async fn three_d_secure_that_fails_authentication_fails_the_order() {
    let app = app_with_events().await;
    let worker = app.start_worker(events_worker());
    let resp = app.purchase(&three_d_secure(), None).await;
    let (id, intent) = (order_id(&resp), intent_of(&resp.body));
    app.payment_sim(
        &format!("/_sim/payment_intents/{intent}/authenticate"),
        json!({"success": false}),
    )
    .await;
    let failed = app
        .wait_order(id, 20, |o| o["status"] == "payment_failed")
        .await;
    assert_eq!(
        failed["payment"]["decline_code"], "payment_intent_authentication_failure",
        "{failed}"
    );
    // Its intent is cancelled, not left open to another try that could
    // charge an order that failed.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut status = intent_status(&app, &intent).await;
    while status != "canceled" && std::time::Instant::now() < deadline {
        actix_rt::time::sleep(Duration::from_millis(100)).await;
        status = intent_status(&app, &intent).await;
    }
    assert_eq!(status, "canceled");
    assert_eq!(app.sims.payment.charges_for(&id.to_string()), 0);
    worker.stop().unwrap();
}

#[actix_rt::test]
async fn three_d_secure_abandoned_past_its_deadline_is_cancelled_and_fails() {
    let app = app_with_events().await;
    let mut opts = events_worker();
    opts.retry.action_timeout = Duration::from_secs(2);
    opts.sweep.stale_payment = Duration::ZERO;
    opts.sweep.grace = Duration::ZERO;
    let worker = app.start_worker(opts);
    let resp = app.purchase(&three_d_secure(), None).await;
    let (id, intent) = (order_id(&resp), intent_of(&resp.body));
    let failed = app
        .wait_order(id, 30, |o| o["status"] == "payment_failed")
        .await;
    assert_eq!(
        failed["payment"]["decline_code"], "authentication_timeout",
        "{failed}"
    );
    // The intent is cancelled: a late authentication cannot charge it.
    let late = app
        .client
        .post(format!(
            "{}/_sim/payment_intents/{intent}/authenticate",
            app.sims.payment_url()
        ))
        .send_json(&json!({"success": true}))
        .await
        .unwrap();
    assert_eq!(late.status(), 400);
    assert_eq!(app.sims.payment.charges_for(&id.to_string()), 0);
    worker.stop().unwrap();
}

/// A Stripe-shaped event about intent `intent`, signed.
fn signed_event(id: &str, kind: &str, intent: &str, order: Uuid) -> (Vec<u8>, String) {
    let body = json!({
        "id": id, "object": "event", "type": kind, "created": chrono::Utc::now().timestamp(),
        "data": {"object": {"id": intent, "object": "payment_intent",
                            "amount": 1, "status": "whatever the payload says",
                            "metadata": {"order_id": order.to_string()}}}
    })
    .to_string()
    .into_bytes();
    let sig = orderflow::webhooks::signature::sign_all(
        &[SECRET.to_owned().into()],
        chrono::Utc::now().timestamp(),
        &body,
    );
    (body, sig)
}

async fn deliver(app: &TestApp, (body, sig): (Vec<u8>, String)) -> u16 {
    app.client
        .post(app.url("/api/v1/gateway/webhooks"))
        .insert_header(("Content-Type", "application/json"))
        .insert_header(("Stripe-Signature", sig))
        .send_body(body)
        .await
        .expect("send")
        .status()
        .as_u16()
}

/// A 3-D Secure order authenticated at the gateway with no event sent.
async fn authenticated_quietly(app: &TestApp) -> (Uuid, String) {
    app.payment_sim("/_sim/events", json!({})).await; // no URL: events not sent
    let resp = app.purchase(&three_d_secure(), None).await;
    let (id, intent) = (order_id(&resp), intent_of(&resp.body));
    app.payment_sim(
        &format!("/_sim/payment_intents/{intent}/authenticate"),
        json!({"success": true}),
    )
    .await;
    (id, intent)
}

#[actix_rt::test]
async fn the_same_event_twice_and_a_hundred_times_at_once_has_one_effect() {
    let app = app_with_events().await;
    let (id, intent) = authenticated_quietly(&app).await;
    let event = signed_event("evt_hundred", "payment_intent.succeeded", &intent, id);
    let sends = (0..100).map(|_| deliver(&app, event.clone()));
    let statuses = futures_util::future::join_all(sends).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(deliver(&app, event.clone()).await, 200);
    let worker = app.start_worker(events_worker());
    app.wait_order(id, 20, |o| o["status"] == "fulfilling")
        .await;
    // Long enough for a second effect to show.
    actix_rt::time::sleep(Duration::from_millis(500)).await;
    let types = timeline(&app, id).await;
    assert_eq!(
        types.iter().filter(|t| *t == "order.paid").count(),
        1,
        "{types:?}"
    );
    app.assert_shipped_once(&[id]);
    let listed = app
        .ops("GET", "/api/v1/gateway-events?status=processed", None)
        .await;
    let ours: Vec<&Value> = listed.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["id"] == "evt_hundred")
        .collect();
    assert_eq!(ours.len(), 1, "{}", listed.body);
    assert_eq!(ours[0]["order_id"], id.to_string());
    worker.stop().unwrap();
}

#[actix_rt::test]
async fn succeeded_before_requires_action_leaves_the_order_paid() {
    let app = app_with_events().await;
    let (id, intent) = authenticated_quietly(&app).await;
    let worker = app.start_worker(events_worker());
    let succeeded = signed_event("evt_late_1", "payment_intent.succeeded", &intent, id);
    assert_eq!(deliver(&app, succeeded).await, 200);
    app.wait_order(id, 20, |o| o["status"] == "fulfilling")
        .await;
    // The older event arrives last: read again, the intent has succeeded.
    let older = signed_event("evt_late_0", "payment_intent.requires_action", &intent, id);
    assert_eq!(deliver(&app, older).await, 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let listed = app
            .ops("GET", "/api/v1/gateway-events?status=processed", None)
            .await;
        let seen = listed.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["id"] == "evt_late_0");
        if seen {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never processed");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    let o = app.get(&format!("/api/v1/orders/{id}")).await.body;
    assert_eq!(o["status"], "fulfilling", "{o}");
    assert_eq!(
        timeline(&app, id).await,
        [
            "order.created",
            "payment.requires_action",
            "order.paid",
            "order.fulfilling"
        ]
    );
    worker.stop().unwrap();
}

/// A PaymentIntent made straight at the gateway, not by a purchase (with
/// the order's metadata if given, charged if `confirm`): its id.
async fn intent_at_gateway(
    app: &TestApp,
    amount: u32,
    order: Option<Uuid>,
    confirm: bool,
) -> String {
    let (amount, order) = (amount.to_string(), order.map(|o| o.to_string()));
    let mut form = vec![
        ("amount", amount.as_str()),
        ("currency", "usd"),
        ("payment_method", "pm_card_visa"),
    ];
    if confirm {
        form.push(("confirm", "true"));
    }
    if let Some(o) = &order {
        form.push(("metadata[order_id]", o.as_str()));
    }
    let mut res = app
        .client
        .post(format!("{}/v1/payment_intents", app.sims.payment_url()))
        .insert_header(("Authorization", "Bearer sk_test_orderflow"))
        .send_form(&form)
        .await
        .unwrap();
    let intent: Value = res.json().await.unwrap();
    intent["id"].as_str().unwrap().to_owned()
}

#[actix_rt::test]
async fn an_event_before_its_order_is_recorded_waits_then_applies() {
    let app = app_with_events().await;
    app.payment_sim("/_sim/events", json!({})).await;
    let id = Uuid::new_v4();
    // The gateway has a succeeded intent for an order orderflow has not
    // recorded yet.
    let intent = intent_at_gateway(&app, 1299, Some(id), true).await;
    let worker = app.start_worker(events_worker());
    let event = signed_event("evt_early", "payment_intent.succeeded", &intent, id);
    assert_eq!(deliver(&app, event).await, 200);
    actix_rt::time::sleep(Duration::from_millis(600)).await;
    let pending = app
        .ops("GET", "/api/v1/gateway-events?status=pending", None)
        .await;
    assert!(
        pending.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["id"] == "evt_early"),
        "{}",
        pending.body
    );
    // Now the order is recorded (as the purchase's first unit would).
    let intent_for_row = intent.clone();
    app.db(move |c| {
        use diesel::connection::SimpleConnection;
        c.batch_execute(&format!(
            "INSERT INTO orders (id, status, customer_email, customer_name, currency, total_cents, \
               shipping_address, payment_method, delivery_status, payment_intent_id) \
             VALUES ('{id}', 'payment_pending', 'a@example.com', 'A', 'usd', 1299, '{{}}', \
               'pm_card_visa', 'not_requested', '{intent_for_row}')"
        ))
        .expect("insert order");
    })
    .await;
    app.wait_order(id, 20, |o| o["status"] == "fulfilling")
        .await;
    worker.stop().unwrap();
}

#[actix_rt::test]
async fn an_event_for_an_order_never_recorded_is_kept_unmatched() {
    let app = app_with_events().await;
    let mut opts = events_worker();
    opts.gateway_events.unmatched_after = 3;
    let worker = app.start_worker(opts);
    let intent = intent_at_gateway(&app, 100, None, false).await;
    let event = signed_event("evt_stray", "payment_intent.created", "x", Uuid::new_v4());
    assert_eq!(deliver(&app, event).await, 200); // an unknown type: ignored
    let stray = signed_event(
        "evt_unmatched",
        "payment_intent.succeeded",
        &intent,
        Uuid::new_v4(),
    );
    assert_eq!(deliver(&app, stray).await, 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let listed = app.ops("GET", "/api/v1/gateway-events", None).await;
        let status = |id: &str| {
            listed.body["events"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["id"] == id)
                .map(|e| e["status"].clone())
        };
        if status("evt_unmatched") == Some(json!("unmatched")) {
            assert_eq!(status("evt_stray"), Some(json!("ignored")));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", listed.body);
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    worker.stop().unwrap();
}

#[actix_rt::test]
async fn a_dispute_on_an_intent_the_order_does_not_hold_is_unmatched_and_changes_nothing() {
    let app = app_with_events().await;
    let mut opts = events_worker();
    opts.gateway_events.unmatched_after = 3;
    let worker = app.start_worker(opts);
    let resp = app.purchase(&visa(), None).await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    let id = order_id(&resp);
    // A second charge made at the gateway with the order's metadata.
    let stray = intent_at_gateway(&app, 100, Some(id), true).await;
    assert_ne!(stray, intent_of(&resp.body));
    app.payment_sim(
        &format!("/_sim/payment_intents/{stray}/dispute"),
        json!({"reason": "fraudulent"}),
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let listed = app.ops("GET", "/api/v1/gateway-events", None).await;
        let events = listed.body["events"].as_array().unwrap().clone();
        let dispute = events.iter().find(|e| {
            e["type"]
                .as_str()
                .unwrap_or("")
                .starts_with("charge.dispute")
        });
        if dispute.is_some_and(|e| e["status"] == "unmatched") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", listed.body);
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    let o = app.get(&format!("/api/v1/orders/{id}")).await.body;
    assert!(o["payment"]["dispute"].is_null(), "{o}");
    assert!(!timeline(&app, id)
        .await
        .contains(&"payment.disputed".to_owned()));
    worker.stop().unwrap();
}

/// A paid order, cancelled: its refund made inline.
async fn paid_then_cancelled(app: &TestApp) -> (Uuid, String) {
    app.set_shipping(json!({"failure_rate": 1.0, "failure_status": 503}))
        .await;
    let resp = app.purchase(&visa(), None).await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    let id = order_id(&resp);
    let cancelled = app
        .ops("POST", &format!("/api/v1/orders/{id}/cancel"), None)
        .await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    assert_eq!(
        cancelled.body["payment"]["status"], "refunded",
        "{}",
        cancelled.body
    );
    let refund = cancelled.body["payment"]["refund"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    (id, refund)
}

#[actix_rt::test]
async fn a_refund_that_fails_later_is_recorded_flagged_and_redriven_with_a_new_refund() {
    let app = app_with_events().await;
    let (id, refund) = paid_then_cancelled(&app).await;
    let worker = app.start_worker(events_worker());
    app.payment_sim(&format!("/_sim/refunds/{refund}/fail"), json!({}))
        .await;
    let o = app
        .wait_order(id, 20, |o| o["payment"]["status"] == "refund_failed")
        .await;
    assert_eq!(o["attention"]["reason"], "refund_failed", "{o}");
    assert!(timeline(&app, id)
        .await
        .contains(&"payment.refund_failed".to_owned()));
    // Ops re-drive it: a new refund, with a new key.
    let redrive = app
        .ops("POST", &format!("/api/v1/orders/{id}/reconcile"), None)
        .await;
    assert_eq!(redrive.status, 202, "{}", redrive.body);
    let o = app
        .wait_order(id, 20, |o| o["payment"]["status"] == "refunded")
        .await;
    assert!(o["attention"].is_null(), "{o}");
    assert_ne!(o["payment"]["refund"]["id"], refund.as_str());
    let intent = intent_of(&o);
    assert_eq!(app.sims.payment.stats().refunds_by_intent[&intent], 2);
    assert_eq!(app.sims.payment.charges_for(&id.to_string()), 1);
    worker.stop().unwrap();
}

#[actix_rt::test]
async fn a_dispute_is_shown_with_its_deadline_and_closes() {
    let app = app_with_events().await;
    let worker = app.start_worker(events_worker());
    let resp = app.purchase(&visa(), None).await;
    let (id, intent) = (order_id(&resp), intent_of(&resp.body));
    let dispute = app
        .payment_sim(
            &format!("/_sim/payment_intents/{intent}/dispute"),
            json!({"reason": "fraudulent"}),
        )
        .await;
    let o = app
        .wait_order(id, 20, |o| !o["payment"]["dispute"].is_null())
        .await;
    assert_eq!(o["payment"]["dispute"]["reason"], "fraudulent", "{o}");
    assert!(
        o["payment"]["dispute"]["evidence_due_by"].is_string(),
        "{o}"
    );
    let listed = app.ops("GET", "/api/v1/orders?disputed=true", None).await;
    let ids: Vec<&Value> = listed.body["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| &o["id"])
        .collect();
    assert_eq!(ids, [&json!(id.to_string())], "{}", listed.body);
    let dp = dispute["id"].as_str().unwrap();
    app.payment_sim(
        &format!("/_sim/disputes/{dp}/close"),
        json!({"status": "won"}),
    )
    .await;
    app.wait_order(id, 20, |o| o["payment"]["dispute"]["status"] == "won")
        .await;
    let types = timeline(&app, id).await;
    assert!(types.contains(&"payment.disputed".to_owned()), "{types:?}");
    assert!(
        types.contains(&"payment.dispute_closed".to_owned()),
        "{types:?}"
    );
    worker.stop().unwrap();
}

#[actix_rt::test]
async fn a_refund_made_in_the_gateway_dashboard_is_recorded_with_source_gateway() {
    let app = app_with_events().await;
    let worker = app.start_worker(events_worker());
    let resp = app.purchase(&visa(), None).await;
    let (id, intent) = (order_id(&resp), intent_of(&resp.body));
    app.wait_order(id, 20, |o| o["status"] == "fulfilling")
        .await;
    app.payment_sim(&format!("/_sim/payment_intents/{intent}/refund"), json!({}))
        .await;
    let o = app
        .wait_order(id, 20, |o| o["payment"]["status"] == "refunded")
        .await;
    assert_eq!(o["payment"]["refund"]["source"], "gateway", "{o}");
    assert_eq!(o["status"], "fulfilling");
    let events = app
        .ops("GET", &format!("/api/v1/orders/{id}/events"), None)
        .await;
    let refunded: Vec<&Value> = events.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "payment.refunded")
        .collect();
    assert_eq!(refunded.len(), 1, "{}", events.body);
    assert_eq!(refunded[0]["data"]["source"], "gateway");
    worker.stop().unwrap();
}

#[actix_rt::test]
async fn a_purchase_whose_intent_was_created_but_never_recorded_is_never_charged() {
    let app = spawn_app().await;
    // The create is made at the gateway, then its answer is lost: no id is
    // recorded, so nothing is ever confirmed.
    app.set_payment(json!({"failure_rate": 1.0, "failure_status": 500, "after_effect": true}))
        .await;
    let resp = app.purchase(&visa(), None).await;
    assert_eq!(resp.status, 202, "{}", resp.body);
    let id = order_id(&resp);
    assert!(resp.body["payment"]["intent_id"].is_null(), "{}", resp.body);
    app.set_payment(json!({"failure_rate": 0.0, "after_effect": false}))
        .await;
    let mut opts = fast_worker();
    opts.sweep.stale_payment = Duration::ZERO;
    opts.sweep.grace = Duration::ZERO;
    let worker = app.start_worker(opts);
    let o = app
        .wait_order(id, 20, |o| o["status"] == "payment_failed")
        .await;
    assert_eq!(o["payment"]["decline_code"], "payment_not_completed", "{o}");
    let stats = app.sims.payment.stats();
    assert_eq!(
        stats.intents_by_order[&id.to_string()],
        1,
        "none created by reconcile"
    );
    assert_eq!(app.sims.payment.charges_for(&id.to_string()), 0);
    worker.stop().unwrap();
}

#[actix_rt::test]
async fn ops_reconcile_redrives_an_unsettled_payment_at_once_and_refuses_a_settled_one() {
    let app = spawn_app().await;
    app.sims_lose_confirms(1).await;
    let resp = app.purchase(&visa(), None).await;
    assert_eq!(resp.status, 202, "{}", resp.body);
    let id = order_id(&resp);
    // A worker that would wait an hour before looking at it by itself.
    let worker = app.start_worker(fast_worker());
    let redrive = app
        .ops("POST", &format!("/api/v1/orders/{id}/reconcile"), None)
        .await;
    assert_eq!(redrive.status, 202, "{}", redrive.body);
    app.wait_order(id, 20, |o| o["status"] == "fulfilling")
        .await;
    assert_eq!(app.sims.payment.charges_for(&id.to_string()), 1);
    let again = app
        .ops("POST", &format!("/api/v1/orders/{id}/reconcile"), None)
        .await;
    assert_eq!(again.status, 409, "{}", again.body);
    assert_eq!(again.code(), "invalid_state");
    let missing = app
        .ops(
            "POST",
            &format!("/api/v1/orders/{}/reconcile", Uuid::new_v4()),
            None,
        )
        .await;
    assert_eq!(missing.status, 404);
    worker.stop().unwrap();
}

#[actix_rt::test]
async fn orders_awaiting_3d_secure_are_left_to_the_gateway_until_their_deadline() {
    let app = spawn_app().await;
    let card = three_d_secure();
    let ids = futures_util::future::join_all((0..10).map(|_| app.purchase(&card, None)))
        .await
        .iter()
        .map(order_id)
        .collect::<Vec<_>>();
    let mut opts = fast_worker();
    opts.sweep.stale_payment = Duration::ZERO;
    opts.sweep.grace = Duration::ZERO;
    let reads = app.sims.payment.stats().reads;
    let worker = app.start_worker(opts);
    // Several sweeps: a poll would be owed at once without the deadline.
    actix_rt::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        app.sims.payment.stats().reads,
        reads,
        "polled before the deadline"
    );
    for id in ids {
        assert!(!app.owed("reconcile_payment", id).await);
    }
    worker.stop().unwrap();
}

/// The stuck orders ops list: (id, reason).
async fn stuck_orders(app: &TestApp) -> Vec<(String, Value)> {
    let listed = app.ops("GET", "/api/v1/orders?stuck=true", None).await;
    listed.body["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["id"].as_str().unwrap().to_owned(),
                o["stuck"]["reason"].clone(),
            )
        })
        .collect()
}

#[actix_rt::test]
async fn an_order_awaiting_3d_secure_is_stuck_only_past_its_action_deadline() {
    for (deadline, stuck) in [("1800", false), ("1", true)] {
        let app = spawn_app_with(Opts {
            env: vec![
                ("STUCK_PAYMENT_PENDING_SECS", "1".into()),
                ("PAYMENT_ACTION_TIMEOUT_SECS", deadline.into()),
            ],
            ..Opts::default()
        })
        .await;
        let waiting = order_id(&app.purchase(&three_d_secure(), None).await);
        actix_rt::time::sleep(Duration::from_millis(2100)).await;
        let listed = stuck_orders(&app).await;
        let found = listed.iter().find(|(id, _)| *id == waiting.to_string());
        assert_eq!(found.is_some(), stuck, "deadline {deadline}: {listed:?}");
        if let Some((_, reason)) = found {
            assert!(reason.as_str().unwrap().contains("3-D Secure"), "{reason}");
        }
        let summary = app.ops("GET", "/api/v1/dashboard/summary", None).await;
        assert_eq!(
            summary.body["stuck"],
            if stuck { 1 } else { 0 },
            "{}",
            summary.body
        );
    }
}

#[actix_rt::test]
async fn events_sent_twice_and_out_of_order_settle_each_order_once_and_lost_ones_fall_back_to_the_poll(
) {
    let app = app_with_events().await;
    events_to(&app, json!({"duplicate_rate": 1.0, "reorder_ms": 300})).await;
    let mut opts = events_worker();
    opts.retry.action_timeout = Duration::from_secs(3);
    // Longer than a purchase takes: a poll never races the purchase's own
    // create-record-confirm.
    opts.sweep.stale_payment = Duration::from_secs(2);
    opts.sweep.grace = Duration::ZERO;
    let worker = app.start_worker(opts);
    let card = three_d_secure();
    let mut orders = Vec::new();
    for _ in 0..5 {
        let resp = app.purchase(&card, None).await;
        orders.push((order_id(&resp), intent_of(&resp.body)));
    }
    for (_, intent) in &orders {
        app.payment_sim(
            &format!("/_sim/payment_intents/{intent}/authenticate"),
            json!({"success": true}),
        )
        .await;
    }
    for (id, _) in &orders {
        app.wait_order(*id, 20, |o| o["status"] == "fulfilling")
            .await;
        let types = timeline(&app, *id).await;
        assert_eq!(
            types.iter().filter(|t| *t == "order.paid").count(),
            1,
            "{types:?}"
        );
    }
    // Every event is lost: the poll past the action deadline settles it.
    events_to(&app, json!({"drop_rate": 1.0})).await;
    let resp = app.purchase(&card, None).await;
    let (id, intent) = (order_id(&resp), intent_of(&resp.body));
    app.payment_sim(
        &format!("/_sim/payment_intents/{intent}/authenticate"),
        json!({"success": true}),
    )
    .await;
    let o = app
        .wait_order(id, 30, |o| o["status"] == "fulfilling")
        .await;
    assert_eq!(o["payment"]["status"], "succeeded", "{o}");
    assert_eq!(app.sims.payment.charges_for(&id.to_string()), 1);
    worker.stop().unwrap();
}
