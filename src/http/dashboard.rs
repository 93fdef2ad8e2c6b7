//! The ops board API (docs/API.md): read from the Redis cache the workers
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
/// How long a rendered board is served as is (see `orders`).
pub const BOARD_TTL: Duration = Duration::from_millis(250);
/// How long an older rendered board is still served while a fresh one is
/// rendered in the background; past this, reads wait for the render (and
/// answer 503 if Redis is down).
pub const BOARD_MAX_STALE: Duration = Duration::from_secs(2);
/// How often each `serve` process checks whether a refresh finished.
pub const BOARD_WATCH_EVERY: Duration = Duration::from_millis(500);

type BoardKey = (Option<OrderStatus>, usize);
type Render = futures_util::future::Shared<
    futures_util::future::BoxFuture<'static, Result<web::Bytes, String>>,
>;

/// One rendered board (by status filter and limit): its bytes and when they
/// were rendered, and the render under way, which every read that must wait
/// joins (one Redis read per board at a time, however many reads).
#[derive(Default)]
struct BoardSlot {
    rendered: Option<(std::time::Instant, web::Bytes)>,
    rendering: Option<Render>,
}

#[derive(Default)]
struct Boards {
    slots: std::collections::HashMap<BoardKey, BoardSlot>,
    /// Bumped when a refresh finishes: renders started before it are not
    /// kept.
    epoch: u64,
}

/// The micro-cache of rendered boards of one `serve` process, and the
/// board's generation (`{prefix}.board.events`, bumped by each finished
/// refresh) as last seen by the process' watcher.
pub struct BoardCache {
    boards: std::sync::Mutex<Boards>,
    generation: tokio::sync::watch::Sender<Option<i64>>,
    renders: prometheus::IntCounter,
}

impl BoardCache {
    pub fn new(renders: prometheus::IntCounter) -> Self {
        BoardCache {
            boards: Default::default(),
            generation: tokio::sync::watch::Sender::new(None),
            renders,
        }
    }

    fn boards(&self) -> std::sync::MutexGuard<'_, Boards> {
        self.boards
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A refresh finished: forget every rendered board.
    fn invalidate(&self) {
        let mut boards = self.boards();
        boards.epoch += 1;
        boards.slots.clear();
    }
}

/// Watches `{prefix}.board.events` for the whole process: when a refresh
/// finishes, the rendered boards are dropped, then the event streams are
/// told (so a page that reloads on the event gets the new board).
pub async fn watch_board(state: web::Data<AppState>) {
    let key = board::events_key(state.queue.prefix());
    let mut tick = actix_rt::time::interval(BOARD_WATCH_EVERY);
    let mut seen: Option<Option<i64>> = None;
    loop {
        tick.tick().await;
        let Ok(mut conn) = state.queue.connection().await else {
            continue;
        };
        let Ok(now) = redis::AsyncCommands::get::<_, Option<i64>>(&mut conn, &key).await else {
            continue;
        };
        if seen != Some(now) {
            if seen.is_some() {
                state.board_cache.invalidate();
            }
            seen = Some(now);
            state.board_cache.generation.send_replace(now);
        }
    }
}

/// Starts rendering a board unless a render is under way; returns the
/// render to join, and whether it is new (nobody drives it yet).
fn render(state: &web::Data<AppState>, boards: &mut Boards, key: BoardKey) -> (Render, bool) {
    let epoch = boards.epoch;
    let slot = boards.slots.entry(key).or_default();
    if let Some(r) = &slot.rendering {
        return (r.clone(), false);
    }
    let state = state.clone();
    let r: Render = futures_util::FutureExt::shared(Box::pin(async move {
        state.board_cache.renders.inc();
        let rendered = render_board(&state, key).await;
        let mut boards = state.board_cache.boards();
        if boards.epoch == epoch {
            let slot = boards.slots.entry(key).or_default();
            slot.rendering = None;
            if let Ok(body) = &rendered {
                slot.rendered = Some((std::time::Instant::now(), body.clone()));
            }
        }
        rendered.map_err(|e| e.to_string())
    })
        as futures_util::future::BoxFuture<'static, _>);
    slot.rendering = Some(r.clone());
    (r, true)
}

pub const MAX_LIMIT: usize = 500;

fn redis_down(e: impl std::fmt::Display) -> ApiError {
    ApiError::Unavailable(format!("redis: {e}"))
}

/// Stale: the last refresh of the source failed, or is older than 3
/// refresh intervals (docs/API.md).
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
        "delivery": {"status": e.delivery_status, "outcome_unknown": e.delivery_outcome_unknown},
        "attention": e.attention,
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
    // the last render gets the same bytes, so heavy polling costs Redis and
    // the JSON work once per TTL, not once per request. Past the TTL, one
    // read starts a re-render in the background and every read meanwhile
    // still gets the previous bytes: no read waits on Redis (when dozens of
    // reads re-rendered at once they all queued on Redis behind the
    // refresh's writes, the read tail). The board itself changes once per
    // refresh interval; `stale` flags computed up to BOARD_MAX_STALE early
    // are immaterial against a 3-interval threshold.
    let key = (status, limit);
    enum Plan {
        Serve(web::Bytes),
        ServeAndRender(web::Bytes, Render),
        Wait(Render),
    }
    let plan = {
        let mut boards = state.board_cache.boards();
        let rendered = boards
            .slots
            .get(&key)
            .and_then(|s| s.rendered.clone())
            .map(|(at, body)| (at.elapsed(), body));
        match rendered {
            Some((age, body)) if age < BOARD_TTL => Plan::Serve(body),
            Some((age, body)) if age < BOARD_MAX_STALE => match render(&state, &mut boards, key) {
                (r, true) => Plan::ServeAndRender(body, r),
                (_, false) => Plan::Serve(body),
            },
            _ => Plan::Wait(render(&state, &mut boards, key).0),
        }
    };
    let body = match plan {
        Plan::Serve(body) => body,
        // Serve the previous board; the new render runs on its own.
        Plan::ServeAndRender(body, r) => {
            actix_rt::spawn(r);
            body
        }
        Plan::Wait(r) => r.await.map_err(ApiError::Unavailable)?,
    };
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}

/// Reads a board page from Redis and renders it as the response body.
async fn render_board(state: &AppState, (status, limit): BoardKey) -> Result<web::Bytes, ApiError> {
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
    Ok(web::Bytes::from(
        serde_json::to_vec(&json!({"generated_at": now, "orders": orders}))
            .map_err(|e| ApiError::Unexpected(e.into()))?,
    ))
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
        // Uses the partial index on flagged orders.
        let attention: i64 = o::orders
            .filter(o::attention.is_not_null())
            .count()
            .get_result(c)?;
        Ok((rows, lag, attention))
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
    let (rows, lag, attention) = counts?;
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
    })))
}

#[utoipa::path(
    post, path = "/api/v1/dashboard/refresh", tag = "ops", security(("ops_token" = [])),
    responses((status = 202, description = "A refresh of every active order is enqueued"), (status = 401), (status = 503))
)]
pub async fn refresh(_: OpsAuth, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let plan = RefreshPlan {
        run: Utc::now().timestamp_millis(),
        on_demand: true,
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
    let start: Option<i64> =
        redis::AsyncCommands::get(&mut conn, board::events_key(state.queue.prefix()))
            .await
            .map_err(redis_down)?;
    // The process' board watcher (`watch_board`) sees each finished refresh
    // and drops the rendered boards before telling the streams.
    let generation = state.board_cache.generation.subscribe();
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
                        let last = board::last_refresh(&mut conn, &prefix).await.ok().flatten();
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
