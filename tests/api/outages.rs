//! PostgreSQL or Redis unreachable: 503 with no charge, or 201 with the
//! delivery owed in PostgreSQL.

use crate::helpers::*;

/// A TCP port on loopback with nothing listening.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[actix_rt::test]
async fn postgres_unreachable_gives_503_with_retry_after_and_no_charge_attempt() {
    let app = spawn_app_with(Opts {
        database_url: Some(format!(
            "postgres://postgres@127.0.0.1:{}/orderflow",
            closed_port()
        )),
        ..Opts::default()
    })
    .await;
    let resp = app.purchase(&visa(), Some("k-503")).await;
    assert_eq!(resp.status, 503, "{}", resp.body);
    assert_eq!(resp.code(), "unavailable");
    assert!(resp.header("retry-after").is_some());
    assert_eq!(
        app.sims.payment.stats().requests,
        0,
        "no payment may be attempted"
    );
    let order = app
        .get(&format!("/api/v1/orders/{}", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(order.status, 503);
    // A staff token cannot be checked (nor its revoke seen): 503, never
    // let through and never called unknown.
    let staff = app
        .ops_with_token(
            "GET",
            "/api/v1/dashboard/summary",
            None,
            Some("oft_someone"),
        )
        .await;
    assert_eq!(staff.status, 503, "{}", staff.body);
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status, 503);
    assert_eq!(
        ready.body["error"]["down"],
        serde_json::json!(["postgresql"])
    );
    assert_eq!(app.get("/healthz").await.status, 200);
}

#[actix_rt::test]
async fn redis_unreachable_still_sells_and_owes_the_delivery_in_postgres() {
    let app = spawn_app_with(Opts {
        redis_url: Some(format!("redis://127.0.0.1:{}", closed_port())),
        ..Opts::default()
    })
    .await;
    let resp = app.purchase(&visa(), None).await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    assert_eq!(resp.body["status"], "paid");
    let id = order_id(&resp);
    assert!(
        app.owed("deliver", id).await,
        "the outbox delivery must be durable in PostgreSQL"
    );
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.body["error"]["down"], serde_json::json!(["redis"]));
}

#[actix_rt::test]
async fn readyz_is_200_when_both_answer() {
    let app = spawn_app().await;
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
}

use diesel::RunQueryDsl;

/// Ends every connection the app holds to its database, as a server
/// restart or an administrator would; returns how many.
async fn kill_app_connections(app: &TestApp) -> i64 {
    app.db(|c| {
        diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
            "(SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = 'orderflow-test') k)",
        ))
        .get_result::<i64>(c)
        .expect("terminate")
    })
    .await
}

#[actix_rt::test]
async fn connections_killed_while_idle_are_replaced_before_the_next_purchase() {
    let app = spawn_app().await;
    let keys: Vec<String> = (0..4).map(|i| format!("idle-{i}")).collect();
    let body = visa();
    // At once, so the pool opens several connections.
    let first =
        futures_util::future::join_all(keys.iter().map(|k| app.purchase(&body, Some(k)))).await;
    assert!(first.iter().all(|r| r.status == 201));
    tokio::time::sleep(orderflow::db::ALIVE_BYPASS * 2).await;
    assert!(kill_app_connections(&app).await >= 1);
    // Idle past the bypass window, each is tested as it is checked out and
    // the dead ones are replaced: no request sees the restart.
    for i in 0..4 {
        let resp = app.purchase(&visa(), Some(&format!("after-{i}"))).await;
        assert_eq!(resp.status, 201, "{}", resp.body);
    }
    assert_eq!(app.sims.payment.stats().succeeded_by_order.len(), 8);
}

#[actix_rt::test]
async fn a_connection_that_failed_is_dropped_not_handed_out_again() {
    let app = spawn_app_with(Opts {
        env: vec![("DB_POOL_SIZE", "1".into())],
        ..Opts::default()
    })
    .await;
    let resp = app.purchase(&visa(), Some("before")).await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    let path = format!("/api/v1/orders/{}", order_id(&resp));
    assert_eq!(app.get(&path).await.status, 200);
    // Killed just after it went back to the pool, within the bypass window:
    // the next unit gets it untested, fails, and must drop it. (Reads run
    // outside a transaction, so only the pool can tell it was lost.)
    assert_eq!(kill_app_connections(&app).await, 1);
    let mut answers = Vec::new();
    for _ in 0..4 {
        let resp = app.get(&path).await;
        if resp.status == 503 {
            assert_eq!(resp.code(), "unavailable", "{}", resp.body);
        }
        answers.push(resp.status);
    }
    assert!(
        answers[1..].iter().all(|s| *s == 200),
        "one 503 at most, then a new connection: {answers:?}"
    );
    let resp = app.purchase(&visa(), Some("after")).await;
    assert_eq!(resp.status, 201, "{}", resp.body);
}
