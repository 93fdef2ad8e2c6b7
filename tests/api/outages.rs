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
