//! Webhooks against a real receiver: signed, at least once, every
//! subscribed event and nothing else; retried through a receiver's outage
//! with the attempts in the log; a hanging receiver delays nobody; the
//! endpoints API; stuck orders.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use orderflow::webhooks::signature::{verify, Refused};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;
use crate::receiver::{register, Got, Mode, Receiver};

fn fulfilling(o: &Value) -> bool {
    o["status"] == "fulfilling"
}

/// The events of `ids` in PostgreSQL whose type is in `types`, by id.
async fn events_in_db(app: &TestApp, ids: &[Uuid], types: &[&str]) -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    for id in ids {
        let body = app
            .ops("GET", &format!("/api/v1/orders/{id}/events"), None)
            .await
            .body;
        for e in body["events"].as_array().unwrap() {
            if types.contains(&e["type"].as_str().unwrap()) {
                all.insert(e["id"].as_str().unwrap().to_owned());
            }
        }
    }
    all
}

fn distinct_accepted(got: &[Got]) -> BTreeSet<String> {
    got.iter()
        .filter(|g| g.accepted)
        .map(|g| g.event_id.clone())
        .collect()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[actix_rt::test]
async fn a_verifying_receiver_gets_every_subscribed_event_signed_and_nothing_else() {
    let app = spawn_app().await;
    let receiver = Receiver::start(Mode::Ok);
    let subscribed = ["order.paid", "order.fulfilling"];
    let (endpoint, secret) = register(&app, &receiver.url, &subscribed).await;
    let worker = app.start_worker(fast_worker());
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(order_id(&app.purchase(&visa(), None).await));
    }
    let declined = app
        .purchase(
            &purchase_body(&[("SKU-1", 1)], "pm_card_chargeDeclined"),
            None,
        )
        .await;
    ids.push(
        declined.body["error"]["order"]["id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap(),
    );
    for id in &ids[..5] {
        app.wait_order(*id, 15, fulfilling).await;
    }
    let expected = events_in_db(&app, &ids, &subscribed).await;
    assert_eq!(expected.len(), 10);
    receiver
        .wait_for(15, "every subscribed event", |got| {
            distinct_accepted(got) == expected
        })
        .await;
    actix_rt::time::sleep(Duration::from_millis(500)).await;
    for g in receiver.got() {
        assert_eq!(g.content_type, "application/json");
        let body = g.json();
        assert_eq!(
            body["id"],
            g.event_id.as_str(),
            "the header names the body's event"
        );
        assert!(
            subscribed.contains(&body["type"].as_str().unwrap()),
            "{body}"
        );
        assert_eq!(verify(&g.signature, &secret, &g.body, now(), 300), Ok(()));
        assert_eq!(
            verify(&g.signature, "whsec_wrong", &g.body, now(), 300),
            Err(Refused::Mismatch),
            "a wrong secret fails verification"
        );
        assert!(body["data"]["order"]["id"].is_string());
    }
    let log = app
        .wait_delivery_log(&endpoint, 15, |lines| {
            lines.len() >= 10 && lines.iter().all(|l| l["status"] == "delivered")
        })
        .await;
    let lines = log["deliveries"].as_array().unwrap();
    assert!(lines.iter().all(|l| l["response_status"] == 200), "{log}");
    let listed = app.ops("GET", "/api/v1/webhook-endpoints", None).await.body;
    let ep = &listed["endpoints"][0];
    assert!(ep.get("secret").is_none(), "the secret is shown once: {ep}");
    assert!(ep["health"]["last_success_at"].is_string(), "{ep}");
    assert_eq!(ep["health"]["consecutive_failures"], 0);
    worker.stop().unwrap();
}

#[actix_rt::test]
async fn a_receiver_that_fails_for_a_while_gets_the_events_after_it_recovers() {
    let app = spawn_app().await;
    let receiver = Receiver::start(Mode::Status(500));
    let (endpoint, secret) = register(&app, &receiver.url, &["*"]).await;
    let worker = app.start_worker(fast_worker());
    let id = order_id(&app.purchase(&visa(), None).await);
    app.wait_order(id, 15, fulfilling).await;
    receiver
        .wait_for(15, "three failed attempts", |got| got.len() >= 3)
        .await;
    let listed = app.ops("GET", "/api/v1/webhook-endpoints", None).await.body;
    let health = &listed["endpoints"][0]["health"];
    assert!(health["failing_since"].is_string(), "{health}");
    assert!(
        health["consecutive_failures"].as_i64().unwrap() >= 1,
        "{health}"
    );

    receiver.set_mode(Mode::Ok);
    let expected = events_in_db(
        &app,
        &[id],
        &["order.created", "order.paid", "order.fulfilling"],
    )
    .await;
    receiver
        .wait_for(30, "every event after the recovery", |got| {
            distinct_accepted(got) == expected
        })
        .await;
    for g in receiver.accepted() {
        assert_eq!(verify(&g.signature, &secret, &g.body, now(), 300), Ok(()));
    }
    // The receiver has each event before the worker records its answer.
    let log = app
        .wait_delivery_log(&endpoint, 15, |lines| {
            let delivered: BTreeSet<String> = lines
                .iter()
                .filter(|l| l["status"] == "delivered")
                .filter_map(|l| l["event_id"].as_str().map(String::from))
                .collect();
            delivered == expected && lines.iter().all(|l| l["status"] != "pending")
        })
        .await;
    let lines = log["deliveries"].as_array().unwrap();
    let retried: Vec<&Value> = lines.iter().filter(|l| l["status"] == "retrying").collect();
    assert!(!retried.is_empty(), "{log}");
    assert!(retried
        .iter()
        .all(|l| l["response_status"] == 500 && l["next_attempt_at"].is_string()));
    let mut by_event: HashMap<&str, Vec<&Value>> = HashMap::new();
    for l in lines {
        by_event
            .entry(l["event_id"].as_str().unwrap())
            .or_default()
            .push(l);
    }
    let mut redelivered = 0;
    for (event, attempts) in by_event {
        // Newest first: the last attempt delivered it, after its failures.
        assert_eq!(attempts[0]["status"], "delivered", "{event}: {attempts:?}");
        let n = attempts[0]["attempt"].as_i64().unwrap();
        assert_eq!(
            n as usize,
            attempts.len(),
            "one log line per attempt: {attempts:?}"
        );
        if n >= 2 {
            redelivered += 1;
        }
    }
    assert!(redelivered >= 1, "{log}");
    let listed = app.ops("GET", "/api/v1/webhook-endpoints", None).await.body;
    let health = &listed["endpoints"][0]["health"];
    assert_eq!(health["consecutive_failures"], 0, "{health}");
    assert!(health["failing_since"].is_null(), "{health}");
    worker.stop().unwrap();
}

#[actix_rt::test]
async fn a_hanging_receiver_delays_neither_purchases_nor_a_healthy_receiver() {
    let app = spawn_app().await;
    let hanging = Receiver::start(Mode::Hang(Duration::from_secs(60)));
    let healthy = Receiver::start(Mode::Ok);
    register(&app, &hanging.url, &["*"]).await;
    register(&app, &healthy.url, &["*"]).await;
    let worker = app.start_worker(fast_worker());
    let mut ids = Vec::new();
    for _ in 0..20 {
        let resp = app.purchase(&visa(), None).await;
        assert_eq!(resp.status, 201, "{}", resp.body);
        ids.push(order_id(&resp));
    }
    for id in &ids {
        app.wait_order(*id, 15, fulfilling).await;
    }
    let expected = events_in_db(
        &app,
        &ids,
        &["order.created", "order.paid", "order.fulfilling"],
    )
    .await;
    assert_eq!(expected.len(), 60);
    healthy
        .wait_for(15, "every event while the other hangs", |got| {
            distinct_accepted(got) == expected
        })
        .await;
    assert!(hanging.started() >= 1, "the hanging receiver was tried");
    assert!(
        hanging.accepted().is_empty(),
        "the hanging receiver never answered in time"
    );
    worker.stop().unwrap();
}

#[actix_rt::test]
async fn bad_registrations_are_422_naming_the_field() {
    let app = spawn_app().await;
    let cases = [
        (json!({"url": "not a url", "events": ["order.paid"]}), "url"),
        (
            json!({"url": "ftp://shop.example/h", "events": ["order.paid"]}),
            "url",
        ),
        (
            json!({"url": "https://shop.example/h", "events": ["order.eaten"]}),
            "events[0]",
        ),
        (
            json!({"url": "https://shop.example/h", "events": []}),
            "events",
        ),
        (json!({"events": ["*"]}), "url"),
        (json!({"url": "https://shop.example/h"}), "events"),
        (
            json!({"url": "https://shop.example/h", "events": ["*"], "enabled": "yes"}),
            "enabled",
        ),
    ];
    for (body, field) in cases {
        let resp = app
            .ops("POST", "/api/v1/webhook-endpoints", Some(&body))
            .await;
        assert_eq!(
            (resp.status.as_u16(), resp.code()),
            (422, "validation_failed"),
            "{body}: {}",
            resp.body
        );
        assert!(
            resp.fields().contains(&field.to_owned()),
            "{body}: {}",
            resp.body
        );
    }

    let strict = spawn_app_with(Opts {
        env: vec![("WEBHOOK_ALLOW_PRIVATE_TARGETS", "false".into())],
        ..Opts::default()
    })
    .await;
    for url in [
        "http://127.0.0.1:9/h",
        "http://localhost:9/h",
        "http://10.0.0.7/h",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:9/h",
    ] {
        let resp = strict
            .ops(
                "POST",
                "/api/v1/webhook-endpoints",
                Some(&json!({"url": url, "events": ["*"]})),
            )
            .await;
        assert_eq!(resp.status, 422, "{url}: {}", resp.body);
        assert_eq!(resp.fields(), ["url"], "{url}");
    }
    let unauth = app
        .ops_with_token("GET", "/api/v1/webhook-endpoints", None, None)
        .await;
    assert_eq!(unauth.status, 401);
}

#[actix_rt::test]
async fn endpoints_are_changed_disabled_resent_and_deleted() {
    let app = spawn_app().await;
    let receiver = Receiver::start(Mode::Ok);
    let (endpoint, _) = register(&app, &receiver.url, &["order.paid"]).await;
    let worker = app.start_worker(fast_worker());
    let path = format!("/api/v1/webhook-endpoints/{endpoint}");

    let patched = app
        .ops(
            "PATCH",
            &path,
            Some(&json!({"description": "<b>shop</b>", "events": ["order.created"]})),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(patched.body["events"], json!(["order.created"]));
    assert_eq!(patched.body["description"], "<b>shop</b>");
    assert!(patched.body.get("secret").is_none());

    let off = app
        .ops("PATCH", &path, Some(&json!({"enabled": false})))
        .await;
    assert_eq!(off.body["enabled"], false);
    let quiet = order_id(&app.purchase(&visa(), None).await);
    actix_rt::time::sleep(Duration::from_millis(800)).await;
    assert!(
        receiver.got().is_empty(),
        "a disabled endpoint gets nothing while it is disabled"
    );

    // Enabled again, it gets what it missed, then what comes next.
    app.ops("PATCH", &path, Some(&json!({"enabled": true})))
        .await;
    receiver
        .wait_for(10, "the missed order's created event", |got| got.len() == 1)
        .await;
    let missed = receiver.got()[0].json();
    assert_eq!(missed["order_id"], quiet.to_string());
    let loud = order_id(&app.purchase(&visa(), None).await);
    receiver
        .wait_for(10, "the new order's created event", |got| got.len() == 2)
        .await;
    let first = receiver.got()[1].json();
    assert_eq!(first["order_id"], loud.to_string());
    assert_eq!(first["type"], "order.created");

    let event = first["id"].as_str().unwrap();
    let resend = app
        .ops("POST", &format!("{path}/events/{event}/resend"), None)
        .await;
    assert_eq!(resend.status, 202, "{}", resend.body);
    receiver
        .wait_for(10, "the resent event", |got| got.len() == 3)
        .await;
    assert_eq!(
        receiver.got()[2].event_id,
        event,
        "the same event, once more"
    );
    let quiet_events = app
        .ops("GET", &format!("/api/v1/orders/{quiet}/events"), None)
        .await
        .body;
    let quiet_created = quiet_events["events"][0]["id"].as_str().unwrap();
    let resend_old = app
        .ops(
            "POST",
            &format!("{path}/events/{quiet_created}/resend"),
            None,
        )
        .await;
    assert_eq!(resend_old.status, 202, "any event can be resent");
    receiver
        .wait_for(10, "the older event", |got| got.len() == 4)
        .await;

    for missing in [
        format!("{path}/events/evt_{}/resend", Uuid::new_v4().simple()),
        format!(
            "/api/v1/webhook-endpoints/we_{}/events/{event}/resend",
            Uuid::new_v4().simple()
        ),
        format!("{path}/events/nonsense/resend"),
    ] {
        assert_eq!(
            app.ops("POST", &missing, None).await.status,
            404,
            "{missing}"
        );
    }
    let gone = format!("/api/v1/webhook-endpoints/we_{}", Uuid::new_v4().simple());
    assert_eq!(
        app.ops("PATCH", &gone, Some(&json!({"enabled": true})))
            .await
            .status,
        404
    );
    assert_eq!(app.ops("DELETE", &path, None).await.status, 204);
    assert_eq!(app.ops("DELETE", &path, None).await.status, 404);
    assert_eq!(
        app.ops("GET", &format!("{path}/deliveries"), None)
            .await
            .status,
        404
    );
    worker.stop().unwrap();
}

#[actix_rt::test]
async fn an_order_the_shipping_partner_keeps_failing_becomes_stuck_paid_until_it_ships() {
    let app = spawn_app_with(Opts {
        env: vec![("STUCK_PAID_SECS", "2".into())],
        ..Opts::default()
    })
    .await;
    app.set_shipping(json!({"failure_rate": 1.0, "failure_status": 503}))
        .await;
    let mut opts = fast_worker();
    opts.retry.max_attempts = 1000;
    let worker = app.start_worker(opts);
    let id = order_id(&app.purchase(&visa(), None).await);
    let fresh = order_id(&app.purchase(&visa(), None).await);
    actix_rt::time::sleep(Duration::from_millis(2500)).await;
    let late = order_id(&app.purchase(&visa(), None).await);

    let stuck = app.ops("GET", "/api/v1/orders?stuck=true", None).await.body;
    let listed: Vec<&str> = stuck["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert!(listed.contains(&id.to_string().as_str()), "{stuck}");
    assert!(!listed.contains(&late.to_string().as_str()), "{stuck}");
    let mark = &stuck["orders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["id"] == id.to_string())
        .unwrap()["stuck"];
    assert!(mark["since"].is_string(), "{mark}");
    assert!(
        mark["reason"].as_str().unwrap().contains("no shipment"),
        "{mark}"
    );
    let all = app.ops("GET", "/api/v1/orders", None).await.body;
    let late_row = all["orders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["id"] == late.to_string())
        .unwrap();
    assert!(
        late_row["stuck"].is_null(),
        "ops listings carry stuck: null when not stuck"
    );
    let summary = app.ops("GET", "/api/v1/dashboard/summary", None).await.body;
    assert_eq!(summary["stuck"], 2, "{summary}");
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("orderflow_stuck_orders{status=\"paid\"} 2"),
        "{metrics}"
    );
    crate::dashboard::refresh_and_wait(&app).await;
    let board = app.ops("GET", "/api/v1/dashboard/orders", None).await.body;
    let entry = crate::dashboard::find(&board, id).unwrap();
    assert!(entry["stuck"]["reason"].is_string(), "{entry}");

    app.set_shipping(json!({"failure_rate": 0.0})).await;
    for o in [id, fresh, late] {
        app.wait_order(o, 20, fulfilling).await;
    }
    let stuck = app.ops("GET", "/api/v1/orders?stuck=true", None).await.body;
    assert_eq!(
        stuck["orders"],
        json!([]),
        "shipped orders are no longer stuck"
    );
    assert_eq!(
        app.ops("GET", "/api/v1/orders?stuck=maybe", None)
            .await
            .status,
        422
    );
    worker.stop().unwrap();
}

/// The receiver code of docs/WEBHOOKS.md, between its markers.
fn receiver_snippet() -> String {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/WEBHOOKS.md")).unwrap();
    let start = doc.find("<!-- receiver-snippet -->").unwrap();
    let end = doc.find("<!-- /receiver-snippet -->").unwrap();
    let block = &doc[start..end];
    let code = block.split("```python").nth(1).unwrap();
    code.split("```").next().unwrap().to_owned()
}

/// Runs the snippet's `verify` and `Orders.apply` on a delivery: prints
/// the event id and whether each of two applications applied it.
fn run_snippet(secret: &str, header: &str, body: &[u8]) -> std::process::Output {
    let dir = std::env::temp_dir().join(format!("orderflow-snippet-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let body_path = dir.join("body.json");
    std::fs::write(&body_path, body).unwrap();
    let script = format!(
        "{}\nimport sys\nevent = verify(sys.argv[1], sys.argv[2], open(sys.argv[3], 'rb').read())\n\
         orders = Orders()\nprint(event['id'], orders.apply(event), orders.apply(event))\n",
        receiver_snippet()
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(secret)
        .arg(header)
        .arg(&body_path)
        .output()
        .expect("python3 runs the docs' receiver snippet");
    let _ = std::fs::remove_dir_all(dir);
    out
}

#[actix_rt::test]
async fn the_receiver_code_in_the_docs_verifies_a_real_delivery_and_dedupes_it() {
    let app = spawn_app().await;
    let receiver = Receiver::start(Mode::Ok);
    let (_, secret) = register(&app, &receiver.url, &["order.created"]).await;
    let worker = app.start_worker(fast_worker());
    app.purchase(&visa(), None).await;
    receiver
        .wait_for(15, "a delivery", |got| !got.is_empty())
        .await;
    let got = receiver.got()[0].clone();

    let ok = run_snippet(&secret, &got.signature, &got.body);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout).trim(),
        format!("{} True False", got.event_id),
        "verified, applied once, the redelivery ignored"
    );
    let wrong = run_snippet("whsec_wrong", &got.signature, &got.body);
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("signature mismatch"));
    let mut tampered = got.body.clone();
    tampered.extend_from_slice(b" ");
    assert!(!run_snippet(&secret, &got.signature, &tampered)
        .status
        .success());
    worker.stop().unwrap();
}

#[actix_rt::test]
async fn settled_deliveries_leave_the_log_after_its_retention_and_events_stay() {
    let app = spawn_app().await;
    let receiver = Receiver::start(Mode::Ok);
    let (endpoint, _) = register(&app, &receiver.url, &["*"]).await;
    let mut opts = fast_worker();
    opts.sweep.delivery_log_retention = Duration::from_secs(3600);
    let worker = app.start_worker(opts);
    let id = order_id(&app.purchase(&visa(), None).await);
    app.wait_order(id, 15, fulfilling).await;
    receiver
        .wait_for(15, "three events", |got| distinct_accepted(got).len() == 3)
        .await;
    let path = format!("/api/v1/webhook-endpoints/{endpoint}/deliveries");
    let log = || {
        let (app, path) = (&app, &path);
        async move { app.ops("GET", path, None).await.body["deliveries"].clone() }
    };
    app.wait_delivery_log(&endpoint, 15, |lines| {
        lines.len() == 3 && lines.iter().all(|l| l["status"] == "delivered")
    })
    .await;
    // One delivery made two hours ago: past the retention.
    app.db(|c| {
        use diesel::prelude::*;
        diesel::sql_query(
            "UPDATE webhook_deliveries SET created_at = now() - interval '2 hours' \
             WHERE id = (SELECT min(id) FROM webhook_deliveries)",
        )
        .execute(c)
        .unwrap();
    })
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while log().await.as_array().unwrap().len() != 2 {
        assert!(std::time::Instant::now() < deadline, "{}", log().await);
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    let events = app
        .ops("GET", &format!("/api/v1/orders/{id}/events"), None)
        .await
        .body;
    assert_eq!(
        events["events"].as_array().unwrap().len(),
        3,
        "events are kept"
    );
    worker.stop().unwrap();
}

/// Rotating a secret: the answer shows the new one once; until the old one
/// expires each delivery carries a `v1` for each (either verifies), then
/// only the new one. Secrets are sealed at rest, never stored plain, and a
/// secret stored plain (from before sealing) is sealed by the sweep.
#[actix_rt::test]
async fn a_rotated_secret_signs_beside_the_old_one_until_it_expires_and_secrets_are_sealed() {
    let app = spawn_app().await;
    let receiver = Receiver::start(Mode::Ok);
    let (endpoint, old) = register(&app, &receiver.url, &["order.created"]).await;
    let worker = app.start_worker(fast_worker());
    let stored = || {
        app.db(|c| {
            use diesel::prelude::*;
            use orderflow::db::schema::webhook_endpoints::dsl as w;
            w::webhook_endpoints
                .select((w::secret, w::previous_secret))
                .first::<(String, Option<String>)>(c)
                .expect("secret")
        })
    };
    let (at_rest, _) = stored().await;
    assert!(
        at_rest.starts_with("sealed1:") && !at_rest.contains(&old),
        "{at_rest}"
    );

    let path = format!("/api/v1/webhook-endpoints/{endpoint}/rotate-secret");
    let rotated = app
        .ops("POST", &path, Some(&json!({"expire_old_in_secs": 3600})))
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let new = rotated.body["secret"]
        .as_str()
        .expect("the new secret")
        .to_owned();
    assert!(new.starts_with("whsec_") && new != old);
    let listed = app.ops("GET", "/api/v1/webhook-endpoints", None).await;
    assert!(
        !listed.body.to_string().contains("whsec_"),
        "secrets are never listed"
    );
    app.purchase(&visa(), None).await;
    receiver
        .wait_for(10, "one event", |got| got.len() == 1)
        .await;
    let got = &receiver.got()[0];
    let now = chrono::Utc::now().timestamp();
    assert_eq!(got.signature.matches("v1=").count(), 2, "{}", got.signature);
    for secret in [&old, &new] {
        verify(&got.signature, secret, &got.body, now, 300).expect("each secret verifies");
    }

    // Expired at once: only the new secret signs.
    let again = app
        .ops("POST", &path, Some(&json!({"expire_old_in_secs": 0})))
        .await;
    let newest = again.body["secret"].as_str().unwrap().to_owned();
    // A drainer reads the secrets when it takes or renews its lease: a
    // fresh one for the next purchase.
    worker.stop().unwrap();
    let worker = app.start_worker(fast_worker());
    app.purchase(&visa(), None).await;
    receiver
        .wait_for(10, "two events", |got| got.len() == 2)
        .await;
    let got = &receiver.got()[1];
    assert_eq!(got.signature.matches("v1=").count(), 1, "{}", got.signature);
    verify(
        &got.signature,
        &newest,
        &got.body,
        chrono::Utc::now().timestamp(),
        300,
    )
    .expect("the newest verifies");
    assert!(verify(&got.signature, &new, &got.body, now, 300).is_err());

    // A secret stored plain is sealed by the next sweep, and still signs.
    app.db(|c| {
        use diesel::prelude::*;
        diesel::sql_query(
            "UPDATE webhook_endpoints SET secret = 'whsec_plain', previous_secret = NULL",
        )
        .execute(c)
        .expect("plain");
    })
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !stored().await.0.starts_with("sealed1:") {
        assert!(std::time::Instant::now() < deadline, "never sealed");
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    }
    worker.stop().unwrap();

    for (body, field) in [
        (json!({"expire_old_in_secs": -1}), "expire_old_in_secs"),
        (json!({"expire_old_in_secs": "soon"}), "expire_old_in_secs"),
        (
            json!({"expire_old_in_secs": 99_999_999}),
            "expire_old_in_secs",
        ),
    ] {
        let bad = app.ops("POST", &path, Some(&body)).await;
        assert_eq!(bad.status, 422, "{body}");
        assert_eq!(bad.fields(), vec![field.to_string()]);
    }
    let unknown = format!(
        "/api/v1/webhook-endpoints/we_{}/rotate-secret",
        Uuid::new_v4().simple()
    );
    assert_eq!(app.ops("POST", &unknown, None).await.status, 404);
    assert_eq!(
        app.ops_with_token("POST", &path, None, None).await.status,
        401
    );
}
