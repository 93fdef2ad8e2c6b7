//! The ops board API (API.md §3): read from the Redis cache the workers
//! fill, plus cheap PostgreSQL counts. No request here calls a partner.

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde_json::{json, Value};

use super::auth::OpsAuth;
use super::AppState;
use crate::board::{self, BoardEntry};
use crate::db;
use crate::domain::OrderStatus;
use crate::error::ApiError;
use crate::jobs::{JobKind, RefreshPlan};

pub const DEFAULT_LIMIT: usize = 100;
/// How long a rendered board is served again (see `orders`).
pub const BOARD_TTL: Duration = Duration::from_millis(250);

/// Rendered boards by (status filter, limit).
pub type BoardCache = std::sync::Mutex<
    std::collections::HashMap<(Option<OrderStatus>, usize), (std::time::Instant, web::Bytes)>,
>;
pub const MAX_LIMIT: usize = 500;

fn redis_down(e: impl std::fmt::Display) -> ApiError {
    ApiError::Unavailable(format!("redis: {e}"))
}

/// Stale: the last refresh of the source failed, or is older than 3
/// refresh intervals (API.md §3).
fn stale(
    ok: bool,
    checked_at: Option<DateTime<Utc>>,
    interval: Duration,
    now: DateTime<Utc>,
) -> bool {
    let limit = chrono::Duration::from_std(interval * 3).unwrap_or(chrono::Duration::MAX);
    !ok || checked_at.is_none_or(|t| now - t > limit)
}

fn entry_json(e: &BoardEntry, interval: Duration, now: DateTime<Utc>) -> Value {
    json!({
        "id": e.id,
        "status": e.status,
        "total_cents": e.total_cents,
        "currency": e.currency,
        "created_at": e.created_at,
        "customer_name": e.customer_name,
        "delivery": {"status": e.delivery_status},
        "payment": {
            "status": e.payment.status,
            "checked_at": e.payment.checked_at,
            "stale": stale(e.payment.ok, e.payment.checked_at, interval, now),
        },
        "shipping": {
            "status": e.shipping.status,
            "tracking_number": e.shipping.tracking_number,
            "eta": e.shipping.eta,
            "checked_at": e.shipping.checked_at,
            "stale": stale(e.shipping.ok, e.shipping.checked_at, interval, now),
        },
        "warehouse": {
            "items": e.warehouse.items,
            "checked_at": e.warehouse.checked_at,
            "stale": stale(e.warehouse.ok, e.warehouse.checked_at, interval, now),
        },
    })
}

fn parse_query(query: &str) -> Result<(Option<OrderStatus>, usize), ApiError> {
    let listing = super::query::Listing::parse(query, DEFAULT_LIMIT, MAX_LIMIT)?;
    if listing.errors.is_empty() {
        Ok((listing.status, listing.limit))
    } else {
        Err(ApiError::Validation(listing.errors))
    }
}

#[utoipa::path(
    get, path = "/api/v1/dashboard/orders", tag = "ops", security(("ops_token" = [])),
    params(
        ("status" = Option<String>, Query, description = "Only orders in this status"),
        ("limit" = Option<usize>, Query, description = "1–500, default 100"),
    ),
    responses((status = 200, description = "The live board, from the cache"), (status = 401), (status = 422), (status = 503))
)]
pub async fn orders(
    _: OpsAuth,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (status, limit) = parse_query(req.query_string())?;
    // A micro-cache of the rendered board: every read within BOARD_TTL of
    // the last one gets the same bytes, so heavy polling costs Redis and the
    // JSON work once per TTL, not once per request. The board itself changes
    // once per refresh interval; `stale` flags computed up to 250 ms early
    // are immaterial against a 3-interval threshold.
    let key = (status, limit);
    if let Ok(cache) = state.board_cache.lock() {
        if let Some((at, body)) = cache.get(&key) {
            if at.elapsed() < BOARD_TTL {
                return Ok(HttpResponse::Ok()
                    .content_type("application/json")
                    .body(body.clone()));
            }
        }
    }
    let now = Utc::now();
    let entries = match status {
        // Only active orders are on the board.
        Some(s) if !board::ACTIVE.contains(&s.as_str()) => Vec::new(),
        _ => {
            let mut conn = state.queue.connection().await.map_err(redis_down)?;
            board::board(
                &mut conn,
                state.queue.prefix(),
                status.map(OrderStatus::as_str),
                limit,
            )
            .await
            .map_err(redis_down)?
        }
    };
    let orders: Vec<Value> = entries
        .iter()
        .map(|e| entry_json(e, state.refresh_interval, now))
        .collect();
    let body = web::Bytes::from(
        serde_json::to_vec(&json!({"generated_at": now, "orders": orders}))
            .map_err(|e| ApiError::Unexpected(e.into()))?,
    );
    if let Ok(mut cache) = state.board_cache.lock() {
        cache.insert(key, (std::time::Instant::now(), body.clone()));
    }
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}

#[utoipa::path(
    get, path = "/api/v1/dashboard/summary", tag = "ops", security(("ops_token" = [])),
    responses((status = 200, description = "Counts, queues, partner health, last refresh, outbox lag"), (status = 401), (status = 503))
)]
pub async fn summary(_: OpsAuth, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let counts = db::unit(&state.pool, |c| {
        use crate::db::schema::orders::dsl as o;
        let rows: Vec<(String, i64)> = o::orders
            .group_by(o::status)
            .select((o::status, diesel::dsl::count_star()))
            .load(c)?;
        let lag = crate::db::owed::oldest_age_secs(c)?;
        Ok((rows, lag))
    });
    let redis = async {
        let mut conn = state.queue.connection().await.map_err(redis_down)?;
        let prefix = state.queue.prefix();
        let queues = crate::jobs::stats::read(&mut conn, prefix)
            .await
            .map_err(redis_down)?;
        let partners = board::partner_health(&mut conn, prefix)
            .await
            .map_err(redis_down)?;
        let last = board::last_refresh(&mut conn, prefix)
            .await
            .map_err(redis_down)?;
        Ok::<_, ApiError>((queues, partners, last))
    };
    let (counts, redis) = futures_util::join!(counts, redis);
    let (rows, lag) = counts?;
    let (queues, partners, last) = redis?;
    let mut by_status: BTreeMap<String, i64> = OrderStatus::ALL
        .iter()
        .map(|s| (s.as_str().to_owned(), 0))
        .collect();
    by_status.extend(rows);
    let queues: BTreeMap<&str, Value> = queues
        .iter()
        .map(|q| {
            (q.kind, json!({"pending": q.pending, "running": q.running, "done": q.done, "failed": q.failed, "dead": q.dead}))
        })
        .collect();
    let partners: BTreeMap<&str, Value> =
        partners.into_iter().map(|(k, v)| (k, json!(v))).collect();
    Ok(HttpResponse::Ok().json(json!({
        "orders_by_status": by_status,
        "queues": queues,
        "partners": partners,
        "last_refresh": last,
        "outbox_lag_seconds": lag,
    })))
}

#[utoipa::path(
    post, path = "/api/v1/dashboard/refresh", tag = "ops", security(("ops_token" = [])),
    responses((status = 202, description = "A refresh of every active order is enqueued"), (status = 401), (status = 503))
)]
pub async fn refresh(_: OpsAuth, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let plan = RefreshPlan {
        run: Utc::now().timestamp_millis(),
    };
    let run = plan.run;
    let id = plan.task_id();
    state
        .queue
        .push_with(plan, id, Duration::ZERO)
        .await
        .map_err(redis_down)?;
    Ok(HttpResponse::Accepted().json(json!({"run": run})))
}

/// Server-sent events: `event: refresh` each time a refresh run finishes
/// (the page then re-reads the board), and a comment every 15 s to keep
/// proxies from closing the stream. The page reads it with `fetch`, so the
/// token travels in the Authorization header, never in a URL.
pub async fn events(_: OpsAuth, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut conn = state.queue.connection().await.map_err(redis_down)?;
    let key = board::events_key(state.queue.prefix());
    let start: Option<i64> = redis::AsyncCommands::get(&mut conn, &key)
        .await
        .map_err(redis_down)?;
    let prefix = state.queue.prefix().to_owned();
    let stream = futures_util::stream::unfold(
        (conn, start, 0u32),
        move |(mut conn, mut seen, mut idle)| {
            let key = key.clone();
            let prefix = prefix.clone();
            async move {
                loop {
                    actix_rt::time::sleep(Duration::from_secs(1)).await;
                    let now: Option<i64> = redis::AsyncCommands::get(&mut conn, &key)
                        .await
                        .ok()
                        .flatten();
                    if now != seen {
                        seen = now;
                        let last = board::last_refresh(&mut conn, &prefix).await.ok().flatten();
                        let data = serde_json::to_string(&last).unwrap_or_else(|_| "null".into());
                        let chunk = web::Bytes::from(format!("event: refresh\ndata: {data}\n\n"));
                        return Some((Ok::<_, actix_web::Error>(chunk), (conn, seen, 0)));
                    }
                    idle += 1;
                    if idle >= 15 {
                        return Some((Ok(web::Bytes::from_static(b": ping\n\n")), (conn, seen, 0)));
                    }
                }
            }
        },
    );
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .streaming(stream))
}

/// Content-Security-Policy of the page: only our own script, style and API;
/// no inline script or handler can run even if markup got in.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(("Content-Security-Policy", PAGE_CSP))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .insert_header(("Cache-Control", "no-cache"))
        .body(body)
}

/// `GET /dashboard`: the ops page (plain HTML/CSS/JS embedded in the binary).
pub async fn page() -> HttpResponse {
    asset("text/html; charset=utf-8", include_str!("page/index.html"))
}

pub async fn page_js() -> HttpResponse {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("page/app.js"),
    )
}

pub async fn page_css() -> HttpResponse {
    asset("text/css; charset=utf-8", include_str!("page/app.css"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_stale_when_failed_or_older_than_three_intervals() {
        let now = Utc::now();
        let i = Duration::from_secs(15);
        assert!(!stale(
            true,
            Some(now - chrono::Duration::seconds(44)),
            i,
            now
        ));
        assert!(stale(
            true,
            Some(now - chrono::Duration::seconds(46)),
            i,
            now
        ));
        assert!(stale(false, Some(now), i, now));
        assert!(stale(true, None, i, now));
    }
}
