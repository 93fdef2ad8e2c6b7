//! The purchase path end to end: charge outcomes, totals, order lookup,
//! delivery enqueued.

use serde_json::json;

use crate::helpers::*;

#[actix_rt::test]
async fn a_paid_purchase_uses_catalog_prices_records_the_order_and_enqueues_delivery() {
    // Arrange
    let app = spawn_app().await;
    let mut body = visa();
    body["items"][0]["unit_price_cents"] = json!(1); // client prices are ignored

    // Act
    let resp = app.purchase(&body, None).await;

    // Assert
    assert_eq!(resp.status, 201, "{}", resp.body);
    let o = &resp.body;
    assert_eq!(o["status"], "paid");
    assert_eq!(o["items"][0]["unit_price_cents"], 1299);
    assert_eq!(o["items"][0]["line_total_cents"], 2598);
    assert_eq!(o["items"][1]["line_total_cents"], 499);
    assert_eq!(o["total_cents"], 3097);
    assert_eq!(o["currency"], "usd");
    assert_eq!(o["customer"]["name"], "Ada Lovelace");
    assert_eq!(o["delivery"]["status"], "queued");
    assert!(o["payment"]["intent_id"]
        .as_str()
        .unwrap()
        .starts_with("pi_"));
    assert!(resp.header("x-request-id").is_some());
    let id = order_id(&resp);
    assert_eq!(app.sims.payment.charges_for(&id.to_string()), 1);
    assert_eq!(
        app.sims
            .payment
            .stats()
            .intents_by_order
            .get(&id.to_string()),
        Some(&1)
    );
    assert!(
        app.owed("deliver", id).await,
        "delivery must be owed in PostgreSQL"
    );
    let queued: bool = redis::cmd("HEXISTS")
        .arg(format!("{}.deliver:data", app.redis_prefix))
        .arg(format!("deliver-{id}"))
        .query(&mut app.redis())
        .unwrap();
    assert!(queued, "the delivery job must be in Redis");

    let fetched = app.get(&format!("/api/v1/orders/{id}")).await;
    assert_eq!(fetched.status, 200);
    assert_eq!(
        fetched.body, resp.body,
        "GET returns the order as the purchase answered it"
    );
}

#[actix_rt::test]
async fn a_declined_card_gives_402_with_the_decline_code_and_the_failed_order() {
    let app = spawn_app().await;
    let resp = app
        .purchase(
            &purchase_body(&[("SKU-2", 1)], "pm_card_chargeDeclinedInsufficientFunds"),
            None,
        )
        .await;
    assert_eq!(resp.status, 402, "{}", resp.body);
    assert_eq!(resp.code(), "payment_declined");
    assert_eq!(resp.body["error"]["decline_code"], "insufficient_funds");
    assert_eq!(resp.body["error"]["order"]["status"], "payment_failed");
    let id = order_id(&resp);
    assert!(!app.owed("deliver", id).await);
    let fetched = app.get(&format!("/api/v1/orders/{id}")).await;
    assert_eq!(fetched.body["status"], "payment_failed");
}

#[actix_rt::test]
async fn every_generic_decline_token_is_a_402() {
    let app = spawn_app().await;
    for pm in [
        "pm_card_chargeDeclined",
        "pm_card_visa_chargeDeclined",
        "pm_card_chargeCustomerFail",
    ] {
        let resp = app
            .purchase(&purchase_body(&[("SKU-2", 1)], pm), None)
            .await;
        assert_eq!(resp.status, 402, "{pm}");
        assert_eq!(
            resp.body["error"]["decline_code"], "generic_decline",
            "{pm}"
        );
    }
}

#[actix_rt::test]
async fn a_card_that_needs_3d_secure_answers_202_and_its_intent_waits_for_the_customer() {
    let app = spawn_app().await;
    let resp = app
        .purchase(
            &purchase_body(&[("SKU-2", 1)], "pm_card_authenticationRequired"),
            None,
        )
        .await;
    assert_eq!(resp.status, 202, "{}", resp.body);
    assert_eq!(resp.body["status"], "payment_pending");
    assert_eq!(resp.body["payment"]["status"], "requires_action");
    assert!(resp.body["payment"]["client_secret"].is_string());
    let pi = resp.body["payment"]["intent_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let intent = app
        .client
        .get(format!(
            "{}/v1/payment_intents/{pi}",
            app.sims.payment_url()
        ))
        .insert_header(("Authorization", "Bearer sk_test_x"))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(intent["status"], "requires_action");
}

#[actix_rt::test]
async fn a_gateway_that_does_not_answer_in_time_gives_202_payment_pending() {
    let app = spawn_app_with(Opts {
        partner_timeout_ms: 300,
        ..Opts::default()
    })
    .await;
    app.set_payment(json!({"hang_rate": 1.0})).await;
    let resp = app.purchase(&visa(), None).await;
    assert_eq!(resp.status, 202, "{}", resp.body);
    assert_eq!(resp.body["status"], "payment_pending");
    let id = order_id(&resp);
    assert_eq!(
        resp.header("location"),
        Some(format!("/api/v1/orders/{id}"))
    );
    assert_eq!(
        app.get(&format!("/api/v1/orders/{id}")).await.body["status"],
        "payment_pending"
    );
    assert!(!app.owed("deliver", id).await);
}

#[actix_rt::test]
async fn a_gateway_error_gives_202_and_is_not_a_decline() {
    let app = spawn_app().await;
    for status in [500, 503, 429] {
        app.set_payment(json!({"failure_rate": 1.0, "failure_status": status}))
            .await;
        let resp = app.purchase(&visa(), None).await;
        assert_eq!(resp.status, 202, "{status}: {}", resp.body);
        assert_eq!(resp.body["status"], "payment_pending");
    }
}

#[actix_rt::test]
async fn unknown_and_malformed_order_ids_are_404() {
    let app = spawn_app().await;
    for path in [
        format!("/api/v1/orders/{}", uuid::Uuid::new_v4()),
        "/api/v1/orders/not-a-uuid".to_owned(),
        "/api/v1/orders/%00%ff".to_owned(),
    ] {
        let resp = app.get(&path).await;
        assert_eq!(resp.status, 404, "{path}");
        assert_eq!(resp.code(), "not_found");
    }
}

#[actix_rt::test]
async fn the_catalog_lists_products_with_prices() {
    let app = spawn_app().await;
    let resp = app.get("/api/v1/products").await;
    assert_eq!(resp.status, 200);
    let p = resp.body["products"].as_array().unwrap();
    let sku1 = p.iter().find(|p| p["sku"] == "SKU-1").unwrap();
    assert_eq!(sku1["price_cents"], 1299);
    assert_eq!(sku1["currency"], "usd");
    assert_eq!(sku1["active"], true);
}

#[actix_rt::test]
async fn request_ids_are_echoed_or_generated() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(app.url("/healthz"))
        .insert_header(("X-Request-Id", "abc-123"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers().get("x-request-id").unwrap(), "abc-123");
    let res = app
        .client
        .get(app.url("/api/v1/orders/x"))
        .send()
        .await
        .unwrap();
    assert!(!res.headers().get("x-request-id").unwrap().is_empty());
}

#[actix_rt::test]
async fn openapi_and_metrics_describe_the_service() {
    let app = spawn_app().await;
    let _ = app.purchase(&visa(), None).await;
    let doc = app.get("/api/v1/openapi.json").await;
    assert_eq!(doc.status, 200);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/purchase",
        "/api/v1/orders/{id}",
        "/api/v1/orders",
        "/api/v1/products",
        "/api/v1/products/{sku}",
    ] {
        assert!(
            doc.body["paths"].get(path).is_some(),
            "{path} missing from OpenAPI"
        );
    }
    let text = app.metrics_text().await;
    assert!(text.contains(r#"orderflow_http_requests_total{endpoint="/api/v1/purchase",method="POST",status="201"} 1"#), "{text}");
    assert!(text.contains("orderflow_http_requests_duration_seconds_bucket"));
    assert!(
        // The intent's create and its confirm.
        text.contains(r#"orderflow_partner_calls_total{outcome="ok",partner="payment"} 2"#),
        "{text}"
    );
}
