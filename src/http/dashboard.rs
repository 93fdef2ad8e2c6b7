//! The ops board API (docs/API.md): read from the Redis cache the workers
//! fill, plus cheap PostgreSQL counts. No request here calls a partner.

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use diesel::prelude::*;
use serde_json::{json, Value};

use super::AppState;
use crate::board::{self, RefreshPlan};
use crate::db;
use crate::domain::OrderStatus;
use crate::error::ApiError;
use crate::jobs::JobKind;
use crate::staff::Principal;

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 500;

fn redis_down(e: impl std::fmt::Display) -> ApiError {
    ApiError::Unavailable(format!("redis: {e}"))
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
    _: Principal,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let key = parse_query(req.query_string())?;
    // Rendered pages come from the process' micro-cache (board::cache).
    let body = state
        .board_cache
        .read(key)
        .await
        .map_err(ApiError::Unavailable)?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}

#[utoipa::path(
    get, path = "/api/v1/dashboard/summary", tag = "ops", security(("ops_token" = [])),
    responses((status = 200, description = "Counts, queues, partner health, last refresh, outbox lag"), (status = 401), (status = 503))
)]
pub async fn summary(_: Principal, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let rules = state.stuck;
    let counts = db::unit(&state.pool, move |c| {
        use crate::db::schema::orders::dsl as o;
        let rows: Vec<(String, i64)> = o::orders
            .group_by(o::status)
            .select((o::status, diesel::dsl::count_star()))
            .load(c)?;
        let lag = crate::db::outbox::oldest_age_secs(c)?;
        // Uses the partial index on flagged orders.
        let attention: i64 = o::orders
            .filter(o::attention.is_not_null())
            .count()
            .get_result(c)?;
        let stuck: i64 = crate::db::orders::stuck_counts(c, &rules)?
            .iter()
            .map(|(_, n)| n)
            .sum();
        let hooks = WebhookLag {
            lag: crate::db::webhooks::lag_secs(c)?,
            horizon_age: crate::db::webhooks::horizon_age_secs(c)?,
        };
        Ok((rows, lag, attention, stuck, hooks))
    });
    let redis = async {
        let mut conn = state.queue.connection().await.map_err(redis_down)?;
        let prefix = state.queue.prefix();
        let queues = crate::jobs::stats::read(&mut conn, prefix, state.job_kinds)
            .await
            .map_err(redis_down)?;
        // The run first: a batch records partner health before it finishes
        // its run, so health read after `last` is at least that run's own
        // (read the other way round, a run finishing in between showed as
        // done with the health from before it).
        let last = board::store::last_refresh(&mut conn, prefix)
            .await
            .map_err(redis_down)?;
        let partners = board::health::partner_health(&mut conn, prefix)
            .await
            .map_err(redis_down)?;
        Ok::<_, ApiError>((queues, partners, last))
    };
    let (counts, redis) = futures_util::join!(counts, redis);
    let (rows, lag, attention, stuck, hooks) = counts?;
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
        "needs_attention": attention,
        "stuck": stuck,
        "webhooks": hooks.view(state.webhooks.stalled_after),
    })))
}

/// How far behind first deliveries are, and why they may be.
struct WebhookLag {
    /// Age of the oldest event an enabled endpoint has not tried.
    lag: f64,
    /// Age of the oldest open transaction holding the log's horizon.
    horizon_age: f64,
}

impl WebhookLag {
    fn view(&self, stalled_after: Duration) -> Value {
        let limit = stalled_after.as_secs_f64();
        json!({
            "lag_seconds": self.lag,
            "horizon_age_seconds": self.horizon_age,
            "stalled": self.lag >= limit || self.horizon_age >= limit,
        })
    }
}

#[utoipa::path(
    post, path = "/api/v1/dashboard/refresh", tag = "ops", security(("ops_token" = [])),
    responses((status = 202, description = "A refresh of every active order is enqueued"), (status = 401), (status = 503))
)]
pub async fn refresh(_: Principal, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let plan = RefreshPlan::now(true);
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
/// proxies from closing the stream. The page reads it with `fetch` on its
/// session cookie, so no token is ever in a URL.
#[utoipa::path(
    get, path = "/api/v1/dashboard/events", tag = "ops", security(("ops_token" = [])),
    responses(
        (status = 200, description = "text/event-stream: `event: refresh` after each refresh run, a comment every 15 s", content_type = "text/event-stream"),
        (status = 401), (status = 503),
    )
)]
pub async fn events(_: Principal, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut conn = state.queue.connection().await.map_err(redis_down)?;
    let start: Option<i64> =
        redis::AsyncCommands::get(&mut conn, board::store::events_key(state.queue.prefix()))
            .await
            .map_err(redis_down)?;
    // The process' board watcher sees each finished refresh and drops the
    // rendered boards before telling the streams.
    let generation = state.board_cache.subscribe();
    let prefix = state.queue.prefix().to_owned();
    let stream = futures_util::stream::unfold(
        (conn, generation, start),
        move |(mut conn, mut generation, mut seen)| {
            let prefix = prefix.clone();
            async move {
                loop {
                    let now = *generation.borrow_and_update();
                    if now.is_some() && now != seen {
                        seen = now;
                        let last = board::store::last_refresh(&mut conn, &prefix)
                            .await
                            .ok()
                            .flatten();
                        let data = serde_json::to_string(&last).unwrap_or_else(|_| "null".into());
                        let chunk = web::Bytes::from(format!("event: refresh\ndata: {data}\n\n"));
                        return Some((Ok::<_, actix_web::Error>(chunk), (conn, generation, seen)));
                    }
                    match actix_rt::time::timeout(Duration::from_secs(15), generation.changed())
                        .await
                    {
                        Ok(Ok(())) => continue,
                        // The process is stopping.
                        Ok(Err(_)) => return None,
                        Err(_) => {
                            let ping = web::Bytes::from_static(b": ping\n\n");
                            return Some((Ok(ping), (conn, generation, seen)));
                        }
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
