//! The serve side of the board: a micro-cache of rendered board pages per
//! `serve` process, and the watcher that drops them when a refresh run
//! finishes.
//!
//! Every read within [`BOARD_TTL`] of the last render gets the same bytes,
//! so heavy polling costs Redis and the JSON work once per TTL, not once per
//! request. Past the TTL, one read starts a re-render in the background and
//! every read meanwhile still gets the previous bytes, so no read waits on
//! Redis; past [`BOARD_MAX_STALE`] reads wait for the render. The board
//! itself changes once per refresh run, and `stale` flags computed up to
//! `BOARD_MAX_STALE` early are immaterial against thresholds of 3 polling
//! intervals (45 s and more).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use chrono::{DateTime, Utc};
use futures_util::future::{BoxFuture, FutureExt, Shared};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::{store, BoardEntry, Due};
use crate::domain::stuck::StuckRules;
use crate::domain::OrderStatus;
use crate::jobs::JobQueue;

/// How long a rendered board is served as is.
pub const BOARD_TTL: Duration = Duration::from_millis(250);
/// How long an older rendered board is still served while a fresh one is
/// rendered in the background; past this, reads wait for the render (and
/// fail if Redis is down).
pub const BOARD_MAX_STALE: Duration = Duration::from_secs(2);
/// How often each `serve` process checks whether a refresh finished.
pub const BOARD_WATCH_EVERY: Duration = Duration::from_millis(500);

/// A board page: the status filter and the limit.
pub type BoardKey = (Option<OrderStatus>, usize);
type Render = Shared<BoxFuture<'static, Result<Bytes, String>>>;

/// One rendered board: its bytes and when they were rendered, and the
/// render under way, which every read that must wait joins (one Redis read
/// per board at a time, however many reads).
#[derive(Default)]
struct Slot {
    rendered: Option<(Instant, Bytes)>,
    rendering: Option<Render>,
}

#[derive(Default)]
struct Boards {
    slots: HashMap<BoardKey, Slot>,
    /// Bumped when a refresh finishes: renders started before it are not
    /// kept.
    epoch: u64,
}

/// The rendered boards of one `serve` process, and the board's generation
/// (`{prefix}.board.events`, bumped by each finished run) as last seen by
/// the process' watcher.
pub struct BoardCache {
    boards: Mutex<Boards>,
    generation: watch::Sender<Option<i64>>,
    renders: prometheus::IntCounter,
    queue: Arc<JobQueue>,
    stuck: StuckRules,
}

/// What a read does with the cache.
enum Read {
    Serve(Bytes),
    ServeAndRender(Bytes, Render),
    Wait(Render),
}

impl BoardCache {
    pub fn new(
        queue: Arc<JobQueue>,
        renders: prometheus::IntCounter,
        stuck: StuckRules,
    ) -> Arc<Self> {
        Arc::new(BoardCache {
            boards: Default::default(),
            generation: watch::Sender::new(None),
            renders,
            queue,
            stuck,
        })
    }

    fn boards(&self) -> MutexGuard<'_, Boards> {
        self.boards
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The board's generation as the watcher last saw it; changes when a
    /// refresh run finishes (after the rendered boards were dropped).
    pub fn subscribe(&self) -> watch::Receiver<Option<i64>> {
        self.generation.subscribe()
    }

    /// The rendered page `key`, as JSON bytes; an error says why Redis
    /// could not be read.
    pub async fn read(self: &Arc<Self>, key: BoardKey) -> Result<Bytes, String> {
        let read = {
            let mut boards = self.boards();
            let rendered = boards
                .slots
                .get(&key)
                .and_then(|s| s.rendered.clone())
                .map(|(at, body)| (at.elapsed(), body));
            match rendered {
                Some((age, body)) if age < BOARD_TTL => Read::Serve(body),
                Some((age, body)) if age < BOARD_MAX_STALE => match self.render(&mut boards, key) {
                    (r, true) => Read::ServeAndRender(body, r),
                    (_, false) => Read::Serve(body),
                },
                _ => Read::Wait(self.render(&mut boards, key).0),
            }
        };
        match read {
            Read::Serve(body) => Ok(body),
            // Serve the previous board; the new render runs on its own.
            Read::ServeAndRender(body, r) => {
                actix_rt::spawn(r);
                Ok(body)
            }
            Read::Wait(r) => r.await,
        }
    }

    /// Starts rendering a board unless a render is under way; returns the
    /// render to join, and whether it is new (nobody drives it yet).
    fn render(self: &Arc<Self>, boards: &mut Boards, key: BoardKey) -> (Render, bool) {
        let epoch = boards.epoch;
        let slot = boards.slots.entry(key).or_default();
        if let Some(r) = &slot.rendering {
            return (r.clone(), false);
        }
        let cache = Arc::clone(self);
        let r: Render = async move {
            cache.renders.inc();
            let rendered = cache.render_page(key).await;
            let mut boards = cache.boards();
            if boards.epoch == epoch {
                let slot = boards.slots.entry(key).or_default();
                slot.rendering = None;
                if let Ok(body) = &rendered {
                    slot.rendered = Some((Instant::now(), body.clone()));
                }
            }
            rendered
        }
        .boxed()
        .shared();
        slot.rendering = Some(r.clone());
        (r, true)
    }

    /// Reads a board page from Redis and renders it.
    async fn render_page(&self, (status, limit): BoardKey) -> Result<Bytes, String> {
        let now = Utc::now();
        let entries = match status {
            // Only active orders are on the board.
            Some(s) if !s.is_active() => Vec::new(),
            _ => {
                let mut conn = self.queue.connection().await.map_err(redis_down)?;
                store::board(&mut conn, self.queue.prefix(), status, limit)
                    .await
                    .map_err(redis_down)?
            }
        };
        let orders: Vec<Value> = entries
            .iter()
            .map(|e| entry_json(e, &self.stuck, now))
            .collect();
        serde_json::to_vec(&json!({"generated_at": now, "orders": orders}))
            .map(Bytes::from)
            .map_err(|e| e.to_string())
    }

    /// A refresh finished: forget every rendered board.
    fn invalidate(&self) {
        let mut boards = self.boards();
        boards.epoch += 1;
        boards.slots.clear();
    }

    /// Watches `{prefix}.board.events` for the whole process: when a
    /// refresh finishes, the rendered boards are dropped, then the event
    /// streams are told (so a page that reloads on the event gets the new
    /// board). Runs for the life of the process.
    pub async fn watch(self: Arc<Self>) {
        let key = store::events_key(self.queue.prefix());
        let mut tick = actix_rt::time::interval(BOARD_WATCH_EVERY);
        let mut seen: Option<Option<i64>> = None;
        loop {
            tick.tick().await;
            let Ok(mut conn) = self.queue.connection().await else {
                continue;
            };
            let Ok(now) = redis::AsyncCommands::get::<_, Option<i64>>(&mut conn, &key).await else {
                continue;
            };
            if seen != Some(now) {
                if seen.is_some() {
                    self.invalidate();
                }
                seen = Some(now);
                self.generation.send_replace(now);
            }
        }
    }
}

fn redis_down(e: impl std::fmt::Display) -> String {
    format!("redis: {e}")
}

/// Stale: the last ask of the source failed, it was never asked, or it is
/// older than 3 of its own polling intervals (`every_secs`; a source that is
/// not polled, such as a settled payment, is never stale by age).
fn stale(ok: bool, checked_at: Option<DateTime<Utc>>, due: &Due, now: DateTime<Utc>) -> bool {
    let Some(checked_at) = checked_at else {
        return true;
    };
    let too_old = due
        .every_secs
        .is_some_and(|s| now - checked_at > chrono::Duration::seconds(s.saturating_mul(3) as i64));
    !ok || too_old
}

/// Whether the entry's payment waits for its customer (3-D Secure).
fn awaiting_action(e: &BoardEntry) -> bool {
    e.payment.status.as_deref() == Some(crate::db::orders::REQUIRES_ACTION)
}

/// An entry as the API shows it.
fn entry_json(e: &BoardEntry, rules: &StuckRules, now: DateTime<Utc>) -> Value {
    let stuck = e
        .status_since
        .and_then(|since| rules.judge(e.status, since, awaiting_action(e), now))
        .map(|s| json!({"since": s.since, "reason": s.reason}));
    json!({
        "id": e.id,
        "status": e.status,
        "total_cents": e.total_cents,
        "currency": e.currency,
        "created_at": e.created_at,
        "customer_name": e.customer_name,
        "delivery": {"status": e.delivery_status, "outcome_unknown": e.delivery_outcome_unknown},
        "attention": e.attention,
        "stuck": stuck,
        "payment": {
            "status": e.payment.status,
            "checked_at": e.payment.checked_at,
            "stale": stale(e.payment.ok, e.payment.checked_at, &e.payment.due, now),
        },
        "shipping": {
            "status": e.shipping.status,
            "tracking_number": e.shipping.tracking_number,
            "eta": e.shipping.eta,
            "checked_at": e.shipping.checked_at,
            "stale": stale(e.shipping.ok, e.shipping.checked_at, &e.shipping.due, now),
        },
        "warehouse": {
            "items": e.warehouse.items,
            "checked_at": e.warehouse.checked_at,
            "stale": stale(e.warehouse.ok, e.warehouse.checked_at, &e.warehouse.due, now),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_stale_when_failed_unasked_or_older_than_three_of_its_intervals() {
        let now = Utc::now();
        let every = |s| Due {
            every_secs: Some(s),
            ..Due::default()
        };
        let ago = |s| Some(now - chrono::Duration::seconds(s));
        assert!(!stale(true, ago(44), &every(15), now));
        assert!(stale(true, ago(46), &every(15), now));
        assert!(
            !stale(true, ago(899), &every(300), now),
            "a parcel in transit"
        );
        assert!(stale(true, ago(901), &every(300), now));
        assert!(
            !stale(true, ago(86_400), &Due::default(), now),
            "not polled"
        );
        assert!(stale(false, Some(now), &every(15), now));
        assert!(stale(true, None, &Due::default(), now));
    }
}
