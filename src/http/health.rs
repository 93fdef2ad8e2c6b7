//! `/healthz` (the process runs), `/readyz` (PostgreSQL and Redis answer)
//! and `/metrics` (Prometheus text, with queue and outbox state read now).

use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use diesel::RunQueryDsl;
use serde_json::json;

use super::AppState;
use crate::db;
use crate::error::ApiError;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// How long `/readyz` waits for PostgreSQL before calling it down (a
/// silent server must not make the probe itself time out).
const READY_PG_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let pg_check = db::unit(&state.pool, |conn| {
        diesel::sql_query("SELECT 1").execute(conn)?;
        Ok(())
    });
    let pg = async {
        match tokio::time::timeout(READY_PG_WAIT, pg_check).await {
            Ok(r) => r,
            Err(_) => Err(db::DbError::Unavailable("no answer within 2 s".into())),
        }
    };
    let (pg, redis) = futures_util::join!(pg, state.queue.ping());
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

/// `/metrics`' guard and read cache: the token it asks for (if any), and
/// when the shared figures were last read. One scrape at a time reads;
/// the scrapes in between answer from the gauges it set.
pub struct Scrape {
    token: Option<[u8; 32]>,
    every: std::time::Duration,
    last_read: tokio::sync::Mutex<Option<std::time::Instant>>,
}

impl Scrape {
    pub fn new(token: Option<[u8; 32]>, every: std::time::Duration) -> Self {
        Scrape {
            token,
            every,
            last_read: tokio::sync::Mutex::new(None),
        }
    }
}

/// Prometheus text: this process' HTTP metrics; every process' partner
/// calls, queue depth and job totals (counted in Redis by whichever process
/// made or ran them), the outbox lag and the stuck orders, read at most
/// once per `METRICS_READ_EVERY_MS`. A source that does not answer within
/// a second keeps its last values. With `METRICS_TOKEN` set, 401 without it.
pub async fn metrics(
    req: HttpRequest,
    state: web::Data<AppState>,
    metrics: web::Data<crate::metrics::Metrics>,
) -> HttpResponse {
    if let Some(token) = &state.scrape.token {
        if !super::auth::bearer_matches(&req, token) {
            return ApiError::Unauthorized.error_response();
        }
    }
    {
        let mut last = state.scrape.last_read.lock().await;
        if last.is_none_or(|at| at.elapsed() >= state.scrape.every) {
            read_shared(&state, &metrics).await;
            *last = Some(std::time::Instant::now());
        }
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(metrics.encode())
}

/// Reads the figures every process shares into this process' gauges.
async fn read_shared(state: &AppState, metrics: &crate::metrics::Metrics) {
    let queue = state.queue.clone();
    let shared = async {
        let conn = tokio::time::timeout(std::time::Duration::from_secs(1), queue.connection())
            .await
            .ok()
            .and_then(Result::ok);
        let stats = match conn.clone() {
            Some(mut c) => tokio::time::timeout(
                std::time::Duration::from_secs(1),
                crate::jobs::stats::read(&mut c, queue.prefix(), state.job_kinds),
            )
            .await
            .ok()
            .and_then(Result::ok),
            None => None,
        };
        metrics.load_shared_calls(conn, queue.prefix()).await;
        stats
    };
    let rules = state.stuck;
    let lag = db::unit(&state.pool, move |c| {
        let lag = crate::db::outbox::oldest_age_secs(c)?;
        let hooks = (
            crate::db::webhooks::lag_secs(c)?,
            crate::db::webhooks::horizon_age_secs(c)?,
            crate::db::gateway_events::lag_secs(c)?,
        );
        Ok((lag, crate::db::orders::stuck_counts(c, &rules)?, hooks))
    });
    let (stats, read) = futures_util::join!(shared, lag);
    let (lag, stuck) = match read {
        Ok((lag, stuck, (webhook_lag, horizon_age, gateway_lag))) => {
            metrics.webhook_lag.set(webhook_lag);
            metrics.horizon_age.set(horizon_age);
            metrics.gateway_lag.set(gateway_lag);
            (Ok(lag), Some(stuck))
        }
        Err(e) => (Err(e), None),
    };
    for (status, n) in stuck.into_iter().flatten() {
        metrics
            .stuck_orders
            .with_label_values(&[status.as_str()])
            .set(n);
    }
    metrics
        .queues
        .set(stats.as_deref().unwrap_or(&[]), lag.ok());
}
