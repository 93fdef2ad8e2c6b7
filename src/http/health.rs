//! `/healthz` (the process runs) and `/readyz` (PostgreSQL and Redis answer).

use actix_web::{web, HttpResponse};
use diesel::RunQueryDsl;
use serde_json::json;

use super::AppState;
use crate::db;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let (pg, redis) = futures_util::join!(
        db::unit(&state.pool, |conn| {
            diesel::sql_query("SELECT 1").execute(conn)?;
            Ok(())
        }),
        state.queue.ping()
    );
    let mut down = Vec::new();
    if let Err(e) = &pg {
        tracing::warn!(error = %e, "readiness: postgresql down");
        down.push("postgresql");
    }
    if let Err(e) = &redis {
        tracing::warn!(error = %e, "readiness: redis down");
        down.push("redis");
    }
    let checks = json!({
        "postgresql": if pg.is_ok() { "up" } else { "down" },
        "redis": if redis.is_ok() { "up" } else { "down" },
    });
    if down.is_empty() {
        HttpResponse::Ok().json(json!({"status": "ready", "checks": checks}))
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", crate::error::RETRY_AFTER_SECS.to_string()))
            .json(json!({"error": {
                "code": "unavailable",
                "message": format!("down: {}", down.join(", ")),
                "down": down,
                "checks": checks,
            }}))
    }
}
