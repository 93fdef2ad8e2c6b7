//! The partner simulators behave as docs/API.md says.

use std::time::Duration;

use orderflow::sim::{self, SimArgs};
use serde_json::{json, Value};

async fn start(stage_secs: u64) -> sim::Simulators {
    let mut args = SimArgs::ephemeral(3);
    args.ship_stage_secs = stage_secs;
    let mut sims = sim::start(&args).unwrap();
    for s in std::mem::take(&mut sims.servers) {
        actix_rt::spawn(s);
    }
    sims
}

async fn json_of(
    mut r: awc::ClientResponse<
        impl futures_util::Stream<Item = Result<actix_web::web::Bytes, awc::error::PayloadError>>
            + Unpin,
    >,
) -> (u16, Value, Option<String>) {
    let replayed = r
        .headers()
        .get("idempotent-replayed")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = r.body().await.unwrap();
    (
        r.status().as_u16(),
        serde_json::from_slice(&body).unwrap_or(Value::Null),
        replayed,
    )
}

#[actix_rt::test]
async fn the_gateway_replays_an_idempotent_charge_and_rejects_other_parameters() {
    let sims = start(30).await;
    let c = awc::Client::default();
    let post = |form: Vec<(&'static str, &'static str)>, key: &'static str| {
        c.post(format!("{}/v1/payment_intents", sims.payment_url()))
            .insert_header(("Authorization", "Bearer sk_test_x"))
            .insert_header(("Idempotency-Key", key))
            .send_form(&form)
    };
    let form = vec![
        ("amount", "1000"),
        ("currency", "usd"),
        ("payment_method", "pm_card_visa"),
        ("confirm", "true"),
        ("metadata[order_id]", "o-1"),
    ];
    let (s1, b1, r1) = json_of(post(form.clone(), "k").await.unwrap()).await;
    let (s2, b2, r2) = json_of(post(form, "k").await.unwrap()).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(b1, b2);
    assert_eq!((r1, r2.as_deref()), (None, Some("true")));
    let other = vec![
        ("amount", "2000"),
        ("currency", "usd"),
        ("payment_method", "pm_card_visa"),
        ("confirm", "true"),
    ];
    let (s3, b3, _) = json_of(post(other, "k").await.unwrap()).await;
    assert_eq!(s3, 400);
    assert_eq!(b3["error"]["type"], "idempotency_error");
    assert_eq!(sims.payment.charges_for("o-1"), 1);
    // Without the secret key: 401.
    let r = c
        .post(format!("{}/v1/payment_intents", sims.payment_url()))
        .send_form(&[("amount", "1")])
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[actix_rt::test]
async fn shipments_are_unique_per_reference_and_advance_with_time() {
    let sims = start(1).await;
    let c = awc::Client::default();
    let body = json!({"reference": "order-1", "address": {"line1": "x"}, "items": [{"sku": "A", "quantity": 1}]});
    let (s1, a, _) = json_of(
        c.post(format!("{}/v1/shipments", sims.shipping_url()))
            .send_json(&body)
            .await
            .unwrap(),
    )
    .await;
    let (s2, b, _) = json_of(
        c.post(format!("{}/v1/shipments", sims.shipping_url()))
            .send_json(&body)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s1, s2), (201, 200));
    assert_eq!(a["id"], b["id"]);
    assert_eq!(a["status"], "label_created");
    let stats = sims.shipping.stats();
    assert_eq!(stats.shipments_by_reference.get("order-1"), Some(&1));
    assert_eq!(stats.posts_by_reference.get("order-1"), Some(&2));
    actix_rt::time::sleep(Duration::from_millis(1100)).await;
    let id = a["id"].as_str().unwrap();
    let (_, later, _) = json_of(
        c.get(format!("{}/v1/shipments/{id}", sims.shipping_url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(later["status"], "in_transit");
    let (s404, _, _) = json_of(
        c.get(format!("{}/v1/shipments/shp_nope", sims.shipping_url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s404, 404);

    // A pinned stage holds, whatever time does; bad pins are refused.
    let pin = |id: String, status: &'static str| {
        let c = c.clone();
        let url = format!("{}/_sim/shipments/{id}/status", sims.shipping_url());
        async move {
            json_of(
                c.post(url)
                    .send_json(&json!({ "status": status }))
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    let (s, pinned, _) = pin(id.to_owned(), "label_created").await;
    assert_eq!((s, pinned["status"].as_str()), (200, Some("label_created")));
    actix_rt::time::sleep(Duration::from_millis(1100)).await;
    let (_, held, _) = json_of(
        c.get(format!("{}/v1/shipments/{id}", sims.shipping_url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(held["status"], "label_created");
    assert_eq!(pin(id.to_owned(), "lost").await.0, 400);
    assert_eq!(pin("shp_nope".to_owned(), "delivered").await.0, 404);
}

#[actix_rt::test]
async fn the_warehouse_answers_single_and_batch_stock_deterministically() {
    let sims = start(30).await;
    let c = awc::Client::default();
    let (_, one, _) = json_of(
        c.get(format!("{}/v1/stock/SKU-1", sims.warehouse_url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let (_, again, _) = json_of(
        c.get(format!("{}/v1/stock/SKU-1", sims.warehouse_url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(one["available"], again["available"]);
    assert_eq!(
        one["available"].as_i64().unwrap(),
        one["on_hand"].as_i64().unwrap() - one["reserved"].as_i64().unwrap()
    );
    let (_, batch, _) = json_of(
        c.get(format!(
            "{}/v1/stock?skus=SKU-1,SKU-2,SKU-3",
            sims.warehouse_url()
        ))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(batch["stock"].as_array().unwrap().len(), 3);
    let too_many = (0..101)
        .map(|i| format!("S{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let (s, _, _) = json_of(
        c.get(format!("{}/v1/stock?skus={too_many}", sims.warehouse_url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 400);
    c.post(format!("{}/_sim/unknown_skus", sims.warehouse_url()))
        .send_json(&json!(["GONE"]))
        .await
        .unwrap();
    let (s, _, _) = json_of(
        c.get(format!("{}/v1/stock/GONE", sims.warehouse_url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 404);
}

#[actix_rt::test]
async fn runtime_knobs_inject_failures_and_latency() {
    let sims = start(30).await;
    let c = awc::Client::default();
    let r = c
        .post(format!("{}/_sim/config", sims.shipping_url()))
        .send_json(&json!({"failure_rate": 1.0, "failure_status": 429}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(format!("{}/v1/shipments/x", sims.shipping_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers().get("retry-after").unwrap(), "1");
    c.post(format!("{}/_sim/config", sims.shipping_url()))
        .send_json(&json!({"failure_rate": 0.0, "latency_ms": 300}))
        .await
        .unwrap();
    let t = std::time::Instant::now();
    let r = c
        .get(format!("{}/v1/shipments/x", sims.shipping_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(t.elapsed() >= Duration::from_millis(300));
    let bad = c
        .post(format!("{}/_sim/config", sims.shipping_url()))
        .send_json(&json!({"hang_rate": 2.0}))
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
}

/// A storefront keeps its connections open between deliveries, as a
/// receiver that reads (and verifies) each body does: the webhook client
/// then reuses one connection instead of opening one per delivery.
#[actix_rt::test]
async fn the_storefront_receiver_keeps_the_connection_alive_between_deliveries() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sims = start(30).await;
    let mut conn = tokio::net::TcpStream::connect(sims.storefront_addr)
        .await
        .unwrap();
    let body = r#"{"id":"evt_1","type":"order.paid"}"#;
    let mut answers = String::new();
    for id in ["evt_1", "evt_2"] {
        let request = format!(
            "POST /webhooks HTTP/1.1\r\nHost: shop\r\nContent-Type: application/json\r\n\
             Orderflow-Event-Id: {id}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(request.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
            .await
            .expect("an answer on the same connection")
            .unwrap();
        assert!(
            n > 0,
            "the storefront closed the connection before answering {id}"
        );
        answers.push_str(&String::from_utf8_lossy(&buf[..n]).to_lowercase());
    }
    assert_eq!(answers.matches("http/1.1 200").count(), 2, "{answers}");
    assert!(!answers.contains("connection: close"), "{answers}");
    assert_eq!(sims.storefront.stats(), (2, 2));
}
