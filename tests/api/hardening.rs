//! Input no database can store, definite gateway refusals, timeouts that a
//! client may retry, and what reaches the partners and the logs.

use serde_json::json;

use crate::helpers::*;

#[actix_rt::test]
async fn a_nul_character_in_any_string_is_422_naming_the_field_never_500() {
    let app = spawn_app().await;
    let mut body = visa();
    body["items"][0]["sku"] = json!("SKU-\u{0}1");
    body["payment_method"] = json!("pm_card_visa\u{0}");
    body["shipping_address"]["line2"] = json!("\u{0}");
    body["customer"]["email"] = json!("a\u{0}@example.com");
    let resp = app.purchase(&body, None).await;
    assert_eq!(resp.status, 422, "{}", resp.body);
    let fields = resp.fields();
    for f in [
        "items[0].sku",
        "payment_method",
        "shipping_address.line2",
        "customer.email",
    ] {
        assert!(fields.contains(&f.to_owned()), "{f} not in {fields:?}");
    }
    assert_eq!(app.order_count().await, 0);
    assert_eq!(app.sims.payment.stats().requests, 0);

    let product = json!({"sku": "NUL-1", "name": "a\u{0}b", "price_cents": 100, "currency": "usd"});
    let resp = app.ops("POST", "/api/v1/products", Some(&product)).await;
    assert_eq!(resp.status, 422, "{}", resp.body);
    assert_eq!(resp.fields(), vec!["name".to_owned()]);
    let resp = app
        .ops(
            "PATCH",
            "/api/v1/products/SKU%001",
            Some(&json!({"active": true})),
        )
        .await;
    assert_eq!(resp.status, 404, "{}", resp.body);
    let resp = app.ops("DELETE", "/api/v1/products/%00", None).await;
    assert_eq!(resp.status, 404, "{}", resp.body);
}

#[actix_rt::test]
async fn the_catalog_refuses_a_price_the_gateway_cannot_charge() {
    let app = spawn_app().await;
    let zero = json!({"sku": "FREE-1", "name": "Free", "price_cents": 0, "currency": "usd"});
    let resp = app.ops("POST", "/api/v1/products", Some(&zero)).await;
    assert_eq!(resp.status, 422, "{}", resp.body);
    assert_eq!(resp.fields(), vec!["price_cents".to_owned()]);
    let resp = app
        .ops(
            "PATCH",
            "/api/v1/products/SKU-1",
            Some(&json!({"price_cents": 0})),
        )
        .await;
    assert_eq!(resp.status, 422, "{}", resp.body);
}

#[actix_rt::test]
async fn a_gateway_refusal_that_is_not_a_card_error_fails_the_payment_at_once() {
    let app = spawn_app().await;
    // A price left from before the catalog refused it: the gateway answers
    // 400 invalid_request_error for amount 0.
    app.db(|c| {
        use diesel::prelude::*;
        use orderflow::db::schema::products::dsl as p;
        diesel::update(p::products.find("SKU-1"))
            .set(p::price_cents.eq(0))
            .execute(c)
            .unwrap();
    })
    .await;
    let only_it = purchase_body(&[("SKU-1", 1)], "pm_card_visa");
    let resp = app.purchase(&only_it, None).await;
    assert_eq!(resp.status, 402, "{}", resp.body);
    assert_eq!(resp.code(), "payment_declined");
    assert_eq!(
        resp.body["error"]["decline_code"], "parameter_invalid_integer",
        "{}",
        resp.body
    );
    assert_eq!(resp.body["error"]["order"]["status"], "payment_failed");
    let id = resp.body["error"]["order"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let o = app.get(&format!("/api/v1/orders/{id}")).await.body;
    assert_eq!(o["status"], "payment_failed", "{o}");
    assert!(!app.owed("reconcile_payment", id.parse().unwrap()).await);
}

#[actix_rt::test]
async fn a_statement_timeout_is_a_retryable_503_and_nothing_is_charged() {
    let app = spawn_app_with(Opts {
        statement_timeout_ms: 300,
        ..Opts::default()
    })
    .await;
    // Another session holds the catalog: the purchase's read waits on the
    // lock until its statement times out.
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let pool = app.pool.clone();
    let holder = std::thread::spawn(move || {
        use diesel::connection::SimpleConnection;
        use diesel::Connection;
        let mut c = pool.get().unwrap();
        c.transaction::<_, diesel::result::Error, _>(|c| {
            c.batch_execute("LOCK TABLE products IN ACCESS EXCLUSIVE MODE")?;
            locked_tx.send(()).unwrap();
            let _ = release_rx.recv_timeout(std::time::Duration::from_secs(20));
            Ok(())
        })
        .unwrap();
    });
    locked_rx.recv().unwrap();
    let resp = app.purchase(&visa(), None).await;
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    assert_eq!(resp.status, 503, "{}", resp.body);
    assert_eq!(resp.code(), "unavailable");
    assert!(resp.header("retry-after").is_some());
    assert_eq!(app.sims.payment.stats().requests, 0, "no payment attempted");
}

#[actix_rt::test]
async fn every_post_to_the_gateway_carries_an_idempotency_key() {
    let app = spawn_app().await;
    // A charge (create and confirm), a 3-D Secure intent, a refund.
    let paid = order_id(&app.purchase(&visa(), None).await);
    let three_ds = purchase_body(&[("SKU-1", 1)], "pm_card_threeDSecure2Required");
    let resp = app.purchase(&three_ds, None).await;
    assert_eq!(resp.status, 202, "{}", resp.body);
    let resp = app
        .ops("POST", &format!("/api/v1/orders/{paid}/cancel"), None)
        .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let stats = app.sims.payment.stats();
    assert!(stats.requests >= 4, "{stats:?}");
    assert_eq!(stats.posts_without_key, 0, "{stats:?}");
}

#[actix_rt::test]
async fn no_query_string_value_and_no_token_reaches_the_log() {
    let app = spawn_app().await;
    let bind = format!("127.0.0.1:{}", free_port());
    let log = tempfile_path("serve-log");
    let out = std::fs::File::create(&log).unwrap();
    let err = out.try_clone().unwrap();
    let token = "ops-token-that-must-not-be-logged";
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .arg("serve")
        .env_clear()
        .env(
            "DATABASE_URL",
            secrecy::ExposeSecret::expose_secret(&app.settings.database_url),
        )
        .env("REDIS_URL", redis_url())
        .env("REDIS_PREFIX", &app.redis_prefix)
        .env("OPS_TOKEN", token)
        .env("PAYMENT_GATEWAY_URL", app.sims.payment_url())
        .env("BIND_ADDR", &bind)
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "debug")
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap();
    let base = format!("http://{bind}");
    for _ in 0..100 {
        if app
            .client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok()
        {
            break;
        }
        actix_rt::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let r = app
        .client
        .get(format!("{base}/api/v1/orders?limit=5&token=qs-secret-1"))
        .insert_header(("Authorization", format!("Bearer {token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .client
        .get(format!(
            "{base}/api/v1/dashboard/orders?access_token={token}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = app
        .client
        .post(format!("{base}/api/v1/purchase?card=4242424242424242"))
        .send_json(&visa())
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    assert!(
        text.contains("/api/v1/orders"),
        "the path is logged: {text}"
    );
    assert!(text.contains("/api/v1/purchase"), "{text}");
    // Who and from where: the principal's name and the client's address.
    let listing = text
        .lines()
        .find(|l| l.contains("GET /api/v1/orders"))
        .unwrap_or_default();
    assert!(
        listing.contains("client=127.0.0.1") && listing.contains("principal=ops_token"),
        "the access line names the client and the principal: {listing}\n{text}"
    );
    let anonymous = text
        .lines()
        .find(|l| l.contains("POST /api/v1/purchase"))
        .unwrap_or_default();
    assert!(anonymous.contains("principal=-"), "{anonymous}");
    for secret in [token, "qs-secret-1", "4242424242424242", "limit=5"] {
        assert!(!text.contains(secret), "{secret} was logged:\n{text}");
    }
}

fn tempfile_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "orderflow-{name}-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ))
}

/// A burst of scrapes reads PostgreSQL and Redis once per
/// `METRICS_READ_EVERY_MS`, not once per scrape: a tight scrape loop (or
/// someone hammering a public `/metrics`) costs the database nothing more.
/// Seen from outside: an outbox item an hour overdue, added after the
/// first scrape, does not show in the 50 scrapes within the window.
#[actix_rt::test]
async fn a_burst_of_metrics_scrapes_reads_the_database_once() {
    let app = spawn_app_with(Opts {
        env: vec![("METRICS_READ_EVERY_MS", "60000".into())],
        ..Opts::default()
    })
    .await;
    let lag = "orderflow_outbox_lag_seconds";
    let first = metric_value(&app.metrics_text().await, lag);
    assert_eq!(first, Some(0.0), "nothing owed yet");
    app.seed_paid_orders(1, "now() - interval '1 hour'").await;
    let scrapes = futures_util::future::join_all((0..50).map(|_| app.metrics_text())).await;
    for text in &scrapes {
        assert_eq!(metric_value(text, lag), first, "a scrape read afresh");
    }
    // Read afresh each time, the same item shows at once.
    let fresh = spawn_app().await;
    fresh.seed_paid_orders(1, "now() - interval '1 hour'").await;
    let seen = metric_value(&fresh.metrics_text().await, lag).unwrap_or_default();
    assert!(seen >= 3500.0, "lag {seen}");
}

/// With `METRICS_TOKEN` set, `/metrics` answers only with it.
#[actix_rt::test]
async fn metrics_token_keeps_metrics_to_whoever_holds_it() {
    let app = spawn_app_with(Opts {
        env: vec![("METRICS_TOKEN", "scrape-secret-1".into())],
        ..Opts::default()
    })
    .await;
    let none = app.get("/metrics").await;
    assert_eq!(none.status, 401);
    assert_eq!(none.code(), "unauthorized");
    let wrong = app
        .client
        .get(app.url("/metrics"))
        .insert_header(("Authorization", "Bearer nope-nope-nope"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(wrong.status().as_u16(), 401);
    let mut right = app
        .client
        .get(app.url("/metrics"))
        .insert_header(("Authorization", "Bearer scrape-secret-1"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(right.status().as_u16(), 200);
    let body = right.body().await.expect("body");
    assert!(String::from_utf8_lossy(&body).contains("orderflow_http_requests_total"));
}
