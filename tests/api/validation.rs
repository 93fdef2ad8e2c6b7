//! Every validation rule and every 4xx of docs/API.md's table.

use serde_json::{json, Value};

use crate::helpers::*;

#[actix_rt::test]
async fn every_problem_is_reported_at_once_including_catalog_checks() {
    let app = spawn_app().await;
    let body = json!({
        "customer": {"email": "nope", "name": "\u{0007}"},
        "items": [
            {"sku": "NO-SUCH", "quantity": 1},
            {"sku": "OLD-1", "quantity": 1},
            {"sku": "SKU-1", "quantity": 1001},
            {"sku": "SKU-2", "quantity": "2"},
            {"sku": "SKU-2", "quantity": 1}
        ],
        "currency": "usd",
        "shipping_address": {"line1": "", "city": "c".repeat(101), "postal_code": "p".repeat(21), "country": "XX"},
        "payment_method": ""
    });
    let resp = app.purchase(&body, None).await;
    assert_eq!(resp.status, 422, "{}", resp.body);
    assert_eq!(resp.code(), "validation_failed");
    let fields = resp.fields();
    for f in [
        "customer.email",
        "customer.name",
        "items[0].sku",
        "items[1].sku",
        "items[2].quantity",
        "items[3].quantity",
        "items[4].sku",
        "shipping_address.line1",
        "shipping_address.city",
        "shipping_address.postal_code",
        "shipping_address.country",
        "payment_method",
    ] {
        assert!(
            fields.contains(&f.to_owned()),
            "{f} missing from {fields:?}"
        );
    }
    assert_eq!(app.order_count().await, 0);
    assert_eq!(app.sims.payment.stats().requests, 0, "nothing is charged");
}

#[actix_rt::test]
async fn each_rule_alone_gives_422_naming_its_field() {
    let app = spawn_app().await;
    type Mutation = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "customer.email",
            Box::new(|b| {
                b["customer"]["email"] = json!(format!("{}@example.com", "a".repeat(250)))
            }),
        ),
        (
            "customer.email",
            Box::new(|b| b["customer"]["email"] = json!("a@")),
        ),
        (
            "customer.name",
            Box::new(|b| b["customer"]["name"] = json!("x".repeat(201))),
        ),
        (
            "customer.name",
            Box::new(|b| b["customer"]["name"] = json!("   ")),
        ),
        (
            "customer",
            Box::new(|b| {
                b.as_object_mut().unwrap().remove("customer");
            }),
        ),
        ("items", Box::new(|b| b["items"] = json!([]))),
        (
            "items",
            Box::new(|b| {
                b["items"] = json!((0..101)
                    .map(|i| json!({"sku": format!("S{i}"), "quantity": 1}))
                    .collect::<Vec<_>>())
            }),
        ),
        (
            "items[0].quantity",
            Box::new(|b| b["items"][0]["quantity"] = json!(0)),
        ),
        (
            "items[0].quantity",
            Box::new(|b| b["items"][0]["quantity"] = json!(1.5)),
        ),
        (
            "items[1].sku",
            Box::new(|b| b["items"][1]["sku"] = json!("SKU-1")),
        ),
        (
            "items[0].sku",
            Box::new(|b| b["items"][0]["sku"] = json!(42)),
        ),
        ("currency", Box::new(|b| b["currency"] = json!("USD"))),
        ("currency", Box::new(|b| b["currency"] = json!("eur"))),
        (
            "shipping_address.line1",
            Box::new(|b| b["shipping_address"]["line1"] = json!("l".repeat(201))),
        ),
        (
            "shipping_address.line2",
            Box::new(|b| b["shipping_address"]["line2"] = json!(7)),
        ),
        (
            "shipping_address.city",
            Box::new(|b| {
                b["shipping_address"]
                    .as_object_mut()
                    .unwrap()
                    .remove("city");
            }),
        ),
        (
            "shipping_address.postal_code",
            Box::new(|b| b["shipping_address"]["postal_code"] = json!(null)),
        ),
        (
            "shipping_address.country",
            Box::new(|b| b["shipping_address"]["country"] = json!("gb")),
        ),
        (
            "shipping_address",
            Box::new(|b| b["shipping_address"] = json!("London")),
        ),
        (
            "payment_method",
            Box::new(|b| b["payment_method"] = json!("p".repeat(256))),
        ),
    ];
    for (field, mutate) in cases {
        let mut body = visa();
        mutate(&mut body);
        let resp = app.purchase(&body, None).await;
        assert_eq!(resp.status, 422, "{field}: {}", resp.body);
        assert_eq!(resp.fields(), vec![field.to_owned()], "{}", resp.body);
    }
    assert_eq!(app.order_count().await, 0);
}

#[actix_rt::test]
async fn a_product_in_another_currency_is_rejected_on_currency() {
    let app = spawn_app().await;
    let mut body = purchase_body(&[("EUR-1", 1)], "pm_card_visa");
    let resp = app.purchase(&body, None).await;
    assert_eq!(resp.status, 422);
    assert_eq!(resp.fields(), vec!["currency"]);
    body["currency"] = json!("eur");
    assert_eq!(app.purchase(&body, None).await.status, 201);
}

#[actix_rt::test]
async fn malformed_bodies_are_400_wrong_types_415_and_large_413() {
    let app = spawn_app().await;
    for (body, what) in [
        (b"{not json".to_vec(), "syntax"),
        (b"[1,2]".to_vec(), "array"),
        (b"\"text\"".to_vec(), "string"),
        (b"".to_vec(), "empty"),
        (vec![0xff, 0xfe, b'{', b'}'], "invalid utf-8"),
    ] {
        let resp = app
            .raw_post("/api/v1/purchase", Some("application/json"), body)
            .await;
        assert_eq!(resp.status, 400, "{what}");
        assert_eq!(resp.code(), "malformed_request", "{what}");
    }
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let resp = app
            .raw_post("/api/v1/purchase", ct, serde_json::to_vec(&visa()).unwrap())
            .await;
        assert_eq!(resp.status, 415, "{ct:?}");
        assert_eq!(resp.code(), "unsupported_media_type");
    }
    let ok_ct = app
        .raw_post(
            "/api/v1/purchase",
            Some("Application/JSON; charset=utf-8"),
            serde_json::to_vec(&visa()).unwrap(),
        )
        .await;
    assert_eq!(ok_ct.status, 201);
    let mut big = visa();
    big["padding"] = json!("x".repeat(64 * 1024));
    let resp = app
        .raw_post(
            "/api/v1/purchase",
            Some("application/json"),
            serde_json::to_vec(&big).unwrap(),
        )
        .await;
    assert_eq!(resp.status, 413);
    assert_eq!(resp.code(), "payload_too_large");
}

#[actix_rt::test]
async fn a_malformed_idempotency_key_is_400() {
    let app = spawn_app().await;
    for key in ["k".repeat(256), "tab\there".to_owned()] {
        let resp = app.purchase(&visa(), Some(&key)).await;
        assert_eq!(resp.status, 400, "{key}");
        assert_eq!(resp.code(), "invalid_idempotency_key");
    }
    let res = app
        .client
        .post(app.url("/api/v1/purchase"))
        .insert_header(("Idempotency-Key", ""))
        .send_json(&visa())
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(app.order_count().await, 0);
}

#[actix_rt::test]
async fn odd_inputs_never_cause_a_500() {
    let app = spawn_app().await;
    let bodies = [
        json!({}),
        json!({"items": null}),
        json!({"items": [null, [], {}, {"sku": null, "quantity": null}]}),
        json!({"customer": {"email": ["x"], "name": {}}, "items": [{"sku": "SKU-1", "quantity": 1e300}]}),
        json!({"items": [{"sku": "SKU-1", "quantity": -9223372036854775808i64}], "currency": "\u{0000}"}),
        json!({"items": [{"sku": "x".repeat(10_000), "quantity": 1}]}),
        json!({"customer": {"email": "a@b.c", "name": "😀".repeat(200)}, "items": [{"sku": "SKU-1", "quantity": 1}],
               "currency": "usd", "shipping_address": {"line1": "ü", "city": "ß", "postal_code": "1", "country": "DE"},
               "payment_method": "pm_card_visa"}),
    ];
    for body in bodies {
        let resp = app.purchase(&body, None).await;
        assert!(
            resp.status.is_client_error() || resp.status.is_success(),
            "{body}: {} {}",
            resp.status,
            resp.body
        );
        assert!(
            resp.body.get("error").is_some() || resp.body.get("id").is_some(),
            "{body}"
        );
    }
    // Methods and paths outside the table still get the envelope.
    let resp = app.get("/api/v1/purchase").await;
    assert_eq!(resp.status, 405);
    assert_eq!(resp.code(), "method_not_allowed");
    let resp = app.get("/no/such/path").await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.code(), "not_found");
}
