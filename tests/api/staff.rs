//! Staff accounts, roles, the audit trail, the page's session and search
//! (docs/API.md, "Staff accounts").

use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;

/// Adds account `name` with `role` through the API; its token.
async fn add_staff(app: &TestApp, name: &str, role: &str) -> String {
    let r = app
        .ops(
            "POST",
            "/api/v1/staff",
            Some(&json!({"name": name, "role": role})),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let token = r.body["token"].as_str().expect("a token").to_owned();
    assert!(token.starts_with("oft_") && token.len() >= 40, "{token}");
    token
}

/// Signs in with `token` (`POST /api/v1/session`): the raw response, for
/// its status, its cookie and its body.
async fn sign_in(
    app: &TestApp,
    token: &str,
) -> awc::ClientResponse<
    impl futures_util::Stream<Item = Result<actix_web::web::Bytes, awc::error::PayloadError>>,
> {
    app.client
        .post(app.url("/api/v1/session"))
        .send_json(&json!({ "token": token }))
        .await
        .expect("send")
}

async fn audit(app: &TestApp, query: &str) -> Vec<Value> {
    let r = app
        .ops("GET", &format!("/api/v1/audit?{query}"), None)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body["entries"].as_array().expect("entries").clone()
}

#[actix_rt::test]
async fn every_role_gets_what_it_may_and_403_for_the_rest() {
    let app = spawn_app().await;
    let order = app.paid_order().await;
    let mut tokens = Vec::new();
    for role in ["viewer", "operator", "refunder", "admin"] {
        tokens.push((role, add_staff(&app, &format!("{role}-1"), role).await));
    }
    // (method, path, body, the least role that may).
    let routes: Vec<(&str, String, Option<Value>, usize)> = vec![
        ("GET", "/api/v1/orders".into(), None, 0),
        ("GET", format!("/api/v1/orders/{order}/events"), None, 0),
        ("GET", "/api/v1/dashboard/summary".into(), None, 0),
        ("GET", "/api/v1/webhook-endpoints".into(), None, 0),
        ("GET", "/api/v1/gateway-events".into(), None, 0),
        (
            "POST",
            format!("/api/v1/orders/{order}/retry-delivery"),
            None,
            1,
        ),
        ("POST", "/api/v1/dashboard/refresh".into(), None, 1),
        ("POST", format!("/api/v1/orders/{order}/reconcile"), None, 1),
        (
            "POST",
            "/api/v1/orders/bulk/retry-delivery".into(),
            Some(json!({"ids": [order]})),
            1,
        ),
        (
            "POST",
            format!("/api/v1/orders/{}/cancel", Uuid::new_v4()),
            None,
            2,
        ),
        (
            "POST",
            "/api/v1/orders/bulk/cancel".into(),
            Some(json!({"ids": [Uuid::new_v4()]})),
            2,
        ),
        (
            "PATCH",
            "/api/v1/products/SKU-2".into(),
            Some(json!({"name": "Renamed"})),
            3,
        ),
        ("GET", "/api/v1/staff".into(), None, 3),
        ("GET", "/api/v1/audit".into(), None, 3),
        (
            "POST",
            "/api/v1/webhook-endpoints".into(),
            Some(json!({"url": "http://127.0.0.1:9/x", "events": ["*"]})),
            3,
        ),
    ];
    for (method, path, body, least) in &routes {
        for (rank, (role, token)) in tokens.iter().enumerate() {
            let r = app
                .ops_with_token(method, path, body.as_ref(), Some(token))
                .await;
            if rank >= *least {
                assert!(
                    r.status != 403 && r.status != 401 && r.status.as_u16() < 500,
                    "{role} {method} {path}: {} {:?}",
                    r.status,
                    r.body
                );
            } else {
                assert_eq!(r.status, 403, "{role} {method} {path}: {:?}", r.body);
                assert_eq!(r.code(), "forbidden");
            }
        }
        // No token, an unknown one, one in the wrong shape: 401.
        for token in [None, Some("oft_unknown"), Some("nonsense")] {
            let r = app.ops_with_token(method, path, body.as_ref(), token).await;
            assert_eq!(r.status, 401, "{token:?} {method} {path}");
            assert_eq!(r.code(), "unauthorized");
        }
    }
}

#[actix_rt::test]
async fn a_revoked_token_is_refused_within_a_second_and_the_name_is_never_reused() {
    let app = spawn_app().await;
    let token = add_staff(&app, "leaver", "operator").await;
    let ok = app
        .ops_with_token("GET", "/api/v1/orders", None, Some(&token))
        .await;
    assert_eq!(ok.status, 200);
    let r = app.ops("DELETE", "/api/v1/staff/leaver", None).await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    let start = std::time::Instant::now();
    loop {
        let r = app
            .ops_with_token("GET", "/api/v1/orders", None, Some(&token))
            .await;
        if r.status == 401 {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(1),
            "still {} a second after the revoke",
            r.status
        );
        actix_rt::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        app.ops("DELETE", "/api/v1/staff/leaver", None).await.status,
        404
    );
    let again = app
        .ops(
            "POST",
            "/api/v1/staff",
            Some(&json!({"name": "leaver", "role": "viewer"})),
        )
        .await;
    assert_eq!(again.status, 409);
    let listed = app.ops("GET", "/api/v1/staff", None).await;
    let row = &listed.body["staff"][0];
    assert_eq!(row["name"], "leaver");
    assert!(row["revoked_at"].is_string());
    assert!(row.get("token").is_none() && !listed.body.to_string().contains("oft_"));
}

/// Each replica caches principals; a revoke made through one is seen by
/// the other within a second (it polls the shared epoch).
#[actix_rt::test]
async fn a_revoke_through_one_serve_is_seen_by_a_second_serve_within_a_second() {
    let app = spawn_app().await;
    let replica = app.spawn_replica();
    let token = add_staff(&app, "mover", "viewer").await;
    for base in [&app.base, &replica] {
        let r = app
            .ops_at(base, "GET", "/api/v1/orders", None, Some(&token))
            .await;
        assert_eq!(r.status, 200, "{base}: {:?}", r.body);
    }
    // The replica has the principal cached now; the revoke goes to the other.
    let r = app.ops("DELETE", "/api/v1/staff/mover", None).await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    let start = std::time::Instant::now();
    loop {
        let r = app
            .ops_at(&replica, "GET", "/api/v1/orders", None, Some(&token))
            .await;
        if r.status == 401 {
            break;
        }
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert!(
            start.elapsed() < std::time::Duration::from_secs(1),
            "the replica still answers 200 a second after the revoke"
        );
        actix_rt::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[actix_rt::test]
async fn a_cancel_is_audited_with_its_actor_and_its_events_carry_it() {
    let app = spawn_app().await;
    let order = app.paid_order().await;
    let refunder = add_staff(&app, "rita", "refunder").await;
    let viewer = add_staff(&app, "vic", "viewer").await;

    let refused = app
        .ops_with_token(
            "POST",
            &format!("/api/v1/orders/{order}/cancel"),
            None,
            Some(&viewer),
        )
        .await;
    assert_eq!(refused.status, 403);
    let r = app
        .ops_with_token(
            "POST",
            &format!("/api/v1/orders/{order}/cancel"),
            None,
            Some(&refunder),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    let entries = audit(&app, &format!("target={order}")).await;
    assert_eq!(entries.len(), 2, "{entries:?}");
    // Newest first.
    assert_eq!(
        entries[0]["actor"],
        json!({"type": "staff", "name": "rita"})
    );
    assert_eq!(entries[0]["action"], "order.cancel");
    assert_eq!(entries[0]["outcome"], "succeeded");
    assert_eq!(entries[0]["client_ip"], "127.0.0.1");
    assert!(entries[0]["request_id"].is_string());
    assert_eq!(entries[1]["actor"]["name"], "vic");
    assert_eq!(entries[1]["outcome"], "refused");
    assert_eq!(audit(&app, "actor=rita").await.len(), 1);

    let events = app
        .ops("GET", &format!("/api/v1/orders/{order}/events"), None)
        .await;
    let events = events.body["events"].as_array().expect("events").clone();
    let by_type = |t: &str| events.iter().find(|e| e["type"] == t).cloned().expect(t);
    assert_eq!(
        by_type("order.created")["actor"],
        json!({"type": "system", "name": "orderflow"})
    );
    assert_eq!(
        by_type("order.cancelled")["actor"],
        json!({"type": "staff", "name": "rita"})
    );
    assert_eq!(
        by_type("payment.refunded")["actor"],
        json!({"type": "staff", "name": "rita"})
    );
}

#[actix_rt::test]
async fn every_changing_route_writes_one_audit_entry_even_when_it_fails() {
    let app = spawn_app().await;
    let order = app.paid_order().await;
    let calls: Vec<(&str, String, Option<Value>, &str, &str)> = vec![
        (
            "POST",
            format!("/api/v1/orders/{order}/retry-delivery"),
            None,
            "order.retry_delivery",
            "failed",
        ),
        (
            "POST",
            format!("/api/v1/orders/{order}/reconcile"),
            None,
            "order.reconcile",
            "failed",
        ),
        (
            "POST",
            "/api/v1/dashboard/refresh".into(),
            None,
            "dashboard.refresh",
            "succeeded",
        ),
        (
            "PATCH",
            "/api/v1/products/SKU-2".into(),
            Some(json!({"price_cents": 1})),
            "product.update",
            "succeeded",
        ),
        (
            "POST",
            "/api/v1/products".into(),
            Some(json!({"sku": "NEW-1", "name": "New", "price_cents": 5, "currency": "usd"})),
            "product.create",
            "succeeded",
        ),
        (
            "DELETE",
            "/api/v1/products/SKU-3".into(),
            None,
            "product.deactivate",
            "succeeded",
        ),
        (
            "POST",
            "/api/v1/staff".into(),
            Some(json!({"name": "sam", "role": "viewer"})),
            "staff.create",
            "succeeded",
        ),
        (
            "DELETE",
            "/api/v1/staff/sam".into(),
            None,
            "staff.revoke",
            "succeeded",
        ),
        (
            "POST",
            format!("/api/v1/orders/{order}/cancel"),
            None,
            "order.cancel",
            "succeeded",
        ),
    ];
    for (i, (method, path, body, action, outcome)) in calls.iter().enumerate() {
        app.ops(method, path, body.as_ref()).await;
        let entries = audit(&app, "").await;
        assert_eq!(entries.len(), i + 1, "{method} {path}: {entries:?}");
        assert_eq!(entries[0]["action"], *action, "{path}");
        assert_eq!(entries[0]["outcome"], *outcome, "{path}");
        assert_eq!(
            entries[0]["actor"],
            json!({"type": "staff", "name": "ops_token"})
        );
    }
    // A read is not audited.
    app.ops("GET", "/api/v1/orders", None).await;
    assert_eq!(audit(&app, "").await.len(), calls.len());
}

#[actix_rt::test]
async fn the_page_session_is_a_strict_http_only_cookie_and_cross_origin_changes_are_refused() {
    let app = spawn_app().await;
    let order = app.paid_order().await;
    let operator = add_staff(&app, "olga", "operator").await;
    let mut res = sign_in(&app, &operator).await;
    assert_eq!(res.status(), 200);
    let set = res
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("a cookie")
        .to_owned();
    let who: Value = res.json().await.expect("json");
    assert_eq!(who, json!({"name": "olga", "role": "operator"}));
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(set.contains(flag), "{set} lacks {flag}");
    }
    assert!(!set.contains("Secure"), "loopback: no Secure flag: {set}");
    assert!(!set.contains(&operator), "the cookie is not the token");
    let cookie = set.split(';').next().expect("name=value").to_owned();

    let with_cookie = |method: &str, path: &str, origin: Option<&str>| {
        let method = awc::http::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = app
            .client
            .request(method, app.url(path))
            .insert_header(("Cookie", cookie.clone()));
        if let Some(o) = origin {
            req = req.insert_header(("Origin", o.to_owned()));
        }
        req
    };
    let r = with_cookie("GET", "/api/v1/session", None)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let own = app.base.clone();
    let path = format!("/api/v1/orders/{order}/retry-delivery");
    let r = with_cookie("POST", &path, Some("https://evil.example"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 403, "a cross-origin POST with the cookie");
    let r = with_cookie("POST", &path, None).send().await.expect("send");
    assert_eq!(r.status(), 403, "a cookie POST without Origin");
    let r = with_cookie("POST", &path, Some(&own))
        .send()
        .await
        .expect("send");
    assert_eq!(
        r.status(),
        409,
        "same origin: the action runs (and is refused by state)"
    );
    let refused = audit(&app, &format!("target={order}")).await;
    assert_eq!(
        refused.iter().filter(|e| e["outcome"] == "refused").count(),
        2
    );

    // Sign-out ends the session on the server, not only in the browser.
    let r = with_cookie("DELETE", "/api/v1/session", Some(&own))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 204);
    let r = with_cookie("GET", "/api/v1/session", None)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    let bad = sign_in(&app, "oft_nope").await;
    assert_eq!(bad.status(), 401);
}

#[actix_rt::test]
async fn a_resend_of_an_event_the_endpoint_does_not_subscribe_to_is_422() {
    let app = spawn_app().await;
    let r = app
        .ops(
            "POST",
            "/api/v1/webhook-endpoints",
            Some(&json!({"url": "http://127.0.0.1:9/hook", "events": ["order.shipped"]})),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let endpoint = r.body["id"].as_str().expect("id").to_owned();
    let order = app.paid_order().await;
    let events = app
        .ops("GET", &format!("/api/v1/orders/{order}/events"), None)
        .await;
    let paid = events.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["type"] == "order.paid")
        .expect("order.paid")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let r = app
        .ops(
            "POST",
            &format!("/api/v1/webhook-endpoints/{endpoint}/events/{paid}/resend"),
            None,
        )
        .await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert_eq!(r.code(), "validation_failed");
    let queued: i64 = app
        .db(|c| {
            use diesel::prelude::*;
            orderflow::db::schema::webhook_deliveries::table
                .count()
                .get_result(c)
                .expect("count")
        })
        .await;
    assert_eq!(queued, 0, "nothing was queued");
}

#[actix_rt::test]
async fn search_finds_an_order_by_each_kind_of_q() {
    let app = spawn_app().await;
    let mut body = visa();
    body["customer"]["email"] = json!("Ann_100%@Example.com");
    let r = app.purchase(&body, None).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let order = order_id(&r);
    let intent = r.body["payment"]["intent_id"].as_str().map(str::to_owned);
    let other = app.paid_order().await;
    app.db(move |c| {
        use diesel::prelude::*;
        use orderflow::db::schema::orders::dsl as o;
        diesel::update(o::orders.find(order))
            .set(o::tracking_number.eq("TRK-SEARCH-1"))
            .execute(c)
            .expect("tracking");
    })
    .await;
    let found = |q: String| {
        let app = &app;
        async move {
            let r = app
                .ops("GET", &format!("/api/v1/orders?q={}", urlencode(&q)), None)
                .await;
            assert_eq!(r.status, 200, "{q}: {:?}", r.body);
            r.body["orders"]
                .as_array()
                .expect("orders")
                .iter()
                .map(|o| o["id"].as_str().expect("id").to_owned())
                .collect::<Vec<_>>()
        }
    };
    let me = vec![order.to_string()];
    assert_eq!(found(order.to_string()).await, me);
    assert_eq!(found(order.simple().to_string()[..8].to_owned()).await, me);
    assert_eq!(found("ann_100%@example.COM".into()).await, me);
    assert!(
        found("ann_1%@example.com".into()).await.is_empty(),
        "% is literal"
    );
    assert_eq!(found("TRK-SEARCH-1".into()).await, me);
    if let Some(intent) = intent {
        assert_eq!(found(intent).await, me);
    }
    assert!(found("pi_unknown".into()).await.is_empty());
    assert!(!found(other.to_string()).await.contains(&order.to_string()));
    // Combined with the other filters, and a bad instant is 422.
    let r = app
        .ops("GET", "/api/v1/orders?status=paid&created_from=2000-01-01T00:00:00Z&created_to=2999-01-01T00:00:00Z", None)
        .await;
    assert_eq!(r.body["orders"].as_array().map(Vec::len), Some(2));
    let r = app
        .ops("GET", "/api/v1/orders?created_from=yesterday", None)
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.fields(), ["created_from"]);
    let r = app
        .ops(
            "GET",
            "/api/v1/orders?created_from=2999-01-01T00:00:00Z",
            None,
        )
        .await;
    assert_eq!(r.body["orders"].as_array().map(Vec::len), Some(0));
}

#[actix_rt::test]
async fn each_search_kind_is_answered_from_an_index() {
    let app = spawn_app().await;
    let plans: Vec<String> = app
        .db(|c| {
            use diesel::prelude::*;
            #[derive(QueryableByName)]
            struct Line {
                #[diesel(sql_type = diesel::sql_types::Text, column_name = "QUERY PLAN")]
                line: String,
            }
            diesel::sql_query("SET enable_seqscan = off").execute(c).expect("set");
            [
                "SELECT id FROM orders WHERE lower(customer_email) = 'a@b.c' ORDER BY created_at DESC, id DESC LIMIT 51",
                "SELECT id FROM orders WHERE tracking_number = 'TRK1' ORDER BY created_at DESC, id DESC LIMIT 51",
                "SELECT id FROM orders WHERE id BETWEEN '01234567-0000-0000-0000-000000000000' AND '01234567-ffff-ffff-ffff-ffffffffffff' LIMIT 51",
            ]
            .iter()
            .map(|q| {
                diesel::sql_query(format!("EXPLAIN {q}"))
                    .load::<Line>(c)
                    .expect("explain")
                    .into_iter()
                    .map(|l| l.line)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .collect()
        })
        .await;
    for (plan, index) in
        plans
            .iter()
            .zip(["orders_email_idx", "orders_tracking_idx", "orders_pkey"])
    {
        assert!(plan.contains(index), "not from {index}:\n{plan}");
    }
}

#[actix_rt::test]
async fn bulk_actions_answer_per_id_and_audit_each() {
    let app = spawn_app().await;
    let paid = app.paid_order().await;
    let missing = Uuid::new_v4();
    let r = app
        .ops(
            "POST",
            "/api/v1/orders/bulk/cancel",
            Some(&json!({"ids": [paid, missing, "not-an-id", paid]})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let results = r.body["results"].as_array().expect("results");
    assert_eq!(results.len(), 3, "a repeated id counts once: {results:?}");
    assert_eq!(results[0]["id"], paid.to_string());
    assert_eq!(results[0]["status"], 200);
    assert!(results[0]["error"].is_null());
    assert_eq!(results[1]["status"], 404);
    assert_eq!(results[1]["error"]["code"], "not_found");
    assert_eq!(results[2]["status"], 404);
    let again = app
        .ops(
            "POST",
            "/api/v1/orders/bulk/cancel",
            Some(&json!({"ids": [paid]})),
        )
        .await;
    assert_eq!(again.body["results"][0]["status"], 409);
    let entries = audit(&app, "").await;
    assert_eq!(entries.len(), 4, "{entries:?}");
    assert!(entries.iter().all(|e| e["action"] == "order.cancel"));
    for (bad, why) in [
        (json!({"ids": []}), "empty"),
        (json!({"ids": vec![paid; 101]}), "over 100"),
        (json!({"id": [paid]}), "no ids"),
    ] {
        let r = app
            .ops("POST", "/api/v1/orders/bulk/retry-delivery", Some(&bad))
            .await;
        assert_eq!(r.status, 422, "{why}");
    }
}

fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .expect("encode")
        .trim_start_matches('=')
        .to_owned()
}

/// Sessions do not pile up: a sign-in clears those that expired or ended
/// more than a day ago (their start and end stay in the audit trail).
#[actix_rt::test]
async fn a_sign_in_clears_sessions_that_ended_or_expired_a_day_ago() {
    let app = spawn_app().await;
    let staff = add_staff(&app, "sam", "viewer").await;
    let seeded = app
        .db(|c| {
            use diesel::prelude::*;
            diesel::sql_query(
                "INSERT INTO staff_sessions (id_hash, staff_name, created_at, expires_at, ended_at) VALUES
                   ('\\x01', 'sam', now() - interval '3 days', now() - interval '2 days', NULL),
                   ('\\x02', 'sam', now() - interval '3 days', now() + interval '1 hour', now() - interval '2 days'),
                   ('\\x03', 'sam', now() - interval '1 hour', now() - interval '1 minute', NULL),
                   ('\\x04', 'sam', now() - interval '1 hour', now() + interval '11 hours', NULL)",
            )
            .execute(c)
        })
        .await;
    assert_eq!(seeded.expect("seed"), 4);
    let r = sign_in(&app, &staff).await;
    assert_eq!(r.status(), 200);
    let left: Vec<Vec<u8>> = app
        .db(|c| {
            use diesel::prelude::*;
            use orderflow::db::schema::staff_sessions as s;
            s::table
                .select(s::id_hash)
                .filter(s::id_hash.eq_any([vec![1u8], vec![2], vec![3], vec![4]]))
                .order(s::id_hash)
                .load(c)
        })
        .await
        .expect("read");
    assert_eq!(left, vec![vec![3u8], vec![4]], "only the recent ones stay");
}
