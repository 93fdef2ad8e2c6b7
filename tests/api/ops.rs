//! Ops API: bearer auth on every endpoint, order listing with keyset
//! pagination, product management.

use serde_json::json;

use crate::helpers::*;

#[actix_rt::test]
async fn every_ops_endpoint_requires_the_token() {
    let app = spawn_app().await;
    let endpoints = [
        ("GET", "/api/v1/orders", None),
        (
            "POST",
            "/api/v1/products",
            Some(json!({"sku": "N-1", "name": "n", "price_cents": 1, "currency": "usd"})),
        ),
        (
            "PATCH",
            "/api/v1/products/SKU-1",
            Some(json!({"price_cents": 1})),
        ),
        ("DELETE", "/api/v1/products/SKU-1", None),
    ];
    for (method, path, body) in &endpoints {
        for token in [None, Some("wrong-token-value"), Some("")] {
            let resp = app.ops_with_token(method, path, body.as_ref(), token).await;
            assert_eq!(resp.status, 401, "{method} {path} with {token:?}");
            assert_eq!(resp.code(), "unauthorized");
        }
    }
    // Nothing changed.
    let p = app.get("/api/v1/products").await;
    let sku1 = p.body["products"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["sku"] == "SKU-1")
        .unwrap()
        .clone();
    assert_eq!(
        (sku1["price_cents"].as_i64(), sku1["active"].as_bool()),
        (Some(1299), Some(true))
    );
}

#[actix_rt::test]
async fn orders_are_listed_newest_first_in_pages_without_gaps_or_repeats() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let pm = if i % 3 == 0 {
            "pm_card_chargeDeclined"
        } else {
            "pm_card_visa"
        };
        ids.push(
            order_id(
                &app.purchase(&purchase_body(&[("SKU-1", 1)], pm), None)
                    .await,
            )
            .to_string(),
        );
    }
    ids.reverse(); // newest first

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/orders?limit=3&cursor={c}"),
            None => "/api/v1/orders?limit=3".to_owned(),
        };
        let resp = app.ops("GET", &path, None).await;
        assert_eq!(resp.status, 200, "{}", resp.body);
        pages += 1;
        for o in resp.body["orders"].as_array().unwrap() {
            seen.push(o["id"].as_str().unwrap().to_owned());
        }
        match resp.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ids);

    let failed = app
        .ops("GET", "/api/v1/orders?status=payment_failed", None)
        .await;
    let failed: Vec<_> = failed.body["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["status"].clone())
        .collect();
    assert_eq!(failed.len(), 3);
    assert!(failed.iter().all(|s| s == "payment_failed"));

    let default = app.ops("GET", "/api/v1/orders", None).await;
    assert_eq!(default.body["orders"].as_array().unwrap().len(), 7);
    assert_eq!(default.body["next_cursor"], json!(null));
}

#[actix_rt::test]
async fn bad_listing_parameters_are_422() {
    let app = spawn_app().await;
    for q in [
        "limit=0",
        "limit=501",
        "limit=x",
        "status=lost",
        "cursor=garbage",
    ] {
        let resp = app.ops("GET", &format!("/api/v1/orders?{q}"), None).await;
        assert_eq!(resp.status, 422, "{q}");
        assert_eq!(resp.code(), "validation_failed");
    }
    assert_eq!(
        app.ops("GET", "/api/v1/orders?limit=500", None)
            .await
            .status,
        200
    );
}

#[actix_rt::test]
async fn products_can_be_created_changed_and_retired() {
    let app = spawn_app().await;
    let created = app
        .ops(
            "POST",
            "/api/v1/products",
            Some(&json!({"sku": "NEW-1", "name": "Lamp", "price_cents": 4200, "currency": "usd"})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(
        created.body,
        json!({"sku": "NEW-1", "name": "Lamp", "price_cents": 4200, "currency": "usd", "active": true})
    );

    let dup = app
        .ops(
            "POST",
            "/api/v1/products",
            Some(&json!({"sku": "NEW-1", "name": "Lamp", "price_cents": 1, "currency": "usd"})),
        )
        .await;
    assert_eq!(dup.status, 409);

    let bad = app
        .ops(
            "POST",
            "/api/v1/products",
            Some(&json!({"sku": "", "price_cents": -1, "currency": "US"})),
        )
        .await;
    assert_eq!(bad.status, 422);
    assert_eq!(bad.fields(), vec!["sku", "name", "currency", "price_cents"]);

    let patched = app
        .ops(
            "PATCH",
            "/api/v1/products/NEW-1",
            Some(&json!({"price_cents": 4500})),
        )
        .await;
    assert_eq!(patched.status, 200);
    assert_eq!(patched.body["price_cents"], 4500);
    let bought = app
        .purchase(&purchase_body(&[("NEW-1", 2)], "pm_card_visa"), None)
        .await;
    assert_eq!(bought.body["total_cents"], 9000, "the new price is charged");

    assert_eq!(
        app.ops(
            "PATCH",
            "/api/v1/products/NOPE",
            Some(&json!({"name": "x"}))
        )
        .await
        .status,
        404
    );
    let deleted = app.ops("DELETE", "/api/v1/products/NEW-1", None).await;
    assert_eq!(deleted.status, 204);
    assert_eq!(
        app.ops("DELETE", "/api/v1/products/NOPE", None)
            .await
            .status,
        404
    );
    let retired = app
        .purchase(&purchase_body(&[("NEW-1", 1)], "pm_card_visa"), None)
        .await;
    assert_eq!(retired.status, 422);
    assert_eq!(retired.fields(), vec!["items[0].sku"]);
    // The earlier order still shows its line.
    let old = app
        .get(&format!("/api/v1/orders/{}", order_id(&bought)))
        .await;
    assert_eq!(old.body["items"][0]["sku"], "NEW-1");
}
