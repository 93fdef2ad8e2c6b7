//! The board's Redis store. Keys (all under `{prefix}.board.`):
//! - `order.{id}`: one JSON [`BoardEntry`] per order;
//! - `index` and `index.{status}`: ZSETs of the orders on the board (score =
//!   created_at), swapped in atomically (RENAME) when a refresh run finishes,
//!   so they hold exactly the active orders of the latest complete run;
//! - `build.{run}` / `build.{run}.{status}`: those indexes while run `run`
//!   is being built; `run.{run}`: a hash counting its batches;
//! - `running`: the run in progress, with a lease each finished batch
//!   extends; `again`: one more run was asked for meanwhile;
//! - `last_refresh`: JSON of the last finished run; `events`: a counter
//!   bumped at each finished run (the serve-side watcher follows it).

use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::BoardEntry;
use crate::domain::OrderStatus;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastRefresh {
    pub finished_at: DateTime<Utc>,
    pub duration_ms: i64,
    pub orders: i64,
}

pub fn entry_key(prefix: &str, id: Uuid) -> String {
    format!("{prefix}.board.order.{id}")
}

pub fn index_key(prefix: &str, status: Option<OrderStatus>) -> String {
    match status {
        Some(s) => format!("{prefix}.board.index.{s}"),
        None => format!("{prefix}.board.index"),
    }
}

fn build_key(prefix: &str, run: i64, status: Option<OrderStatus>) -> String {
    match status {
        Some(s) => format!("{prefix}.board.build.{run}.{s}"),
        None => format!("{prefix}.board.build.{run}"),
    }
}

fn run_key(prefix: &str, run: i64) -> String {
    format!("{prefix}.board.run.{run}")
}

pub fn last_refresh_key(prefix: &str) -> String {
    format!("{prefix}.board.last_refresh")
}

pub fn events_key(prefix: &str) -> String {
    format!("{prefix}.board.events")
}

/// The run in progress (its id), with a lease each finished batch extends.
fn running_key(prefix: &str) -> String {
    format!("{prefix}.board.running")
}

/// Set when a refresh was asked for during a run: one more run follows it.
fn again_key(prefix: &str) -> String {
    format!("{prefix}.board.again")
}

/// How long a run may go without finishing a batch before another run may
/// start (a run whose batch died would otherwise block refreshes forever).
pub const RUN_LEASE_MS: u64 = 120_000;

/// What a planned run should do, given the run in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunClaim {
    /// No other run is in progress: this one runs.
    Run,
    /// Another run is in progress; a follow-up run was asked for.
    Queued,
    /// Another run is in progress; nothing to do (a scheduled refresh).
    Skipped,
}

/// Claims the single run slot for `run`, atomically: the run takes it if it
/// is free (or already its own: a retried plan); otherwise an on-demand
/// request asks for one follow-up run (however many arrive meanwhile) and a
/// scheduled one is skipped. So refreshes never overlap and pile up when a
/// run takes longer than the interval or ops click refresh repeatedly.
pub async fn claim_run(
    conn: &mut ConnectionManager,
    prefix: &str,
    run: i64,
    on_demand: bool,
) -> redis::RedisResult<RunClaim> {
    let script = redis::Script::new(
        r"
        if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
        if redis.call('GET', KEYS[1]) == ARGV[1] then return 0 end
        if ARGV[3] == '1' then
          redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
          return 1
        end
        return 2",
    );
    let r: i64 = script
        .key(running_key(prefix))
        .key(again_key(prefix))
        .arg(run)
        .arg(RUN_LEASE_MS)
        .arg(if on_demand { "1" } else { "0" })
        .invoke_async(conn)
        .await?;
    Ok(match r {
        0 => RunClaim::Run,
        1 => RunClaim::Queued,
        _ => RunClaim::Skipped,
    })
}

/// Reads the stored entries of `ids` (missing ones are `None`).
pub async fn entries(
    conn: &mut ConnectionManager,
    prefix: &str,
    ids: &[Uuid],
) -> redis::RedisResult<Vec<Option<BoardEntry>>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<String> = ids.iter().map(|id| entry_key(prefix, *id)).collect();
    let raw: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(conn).await?;
    Ok(raw
        .into_iter()
        .map(|r| r.and_then(|s| serde_json::from_str(&s).ok()))
        .collect())
}

/// Starts a run of `batches` batches.
pub async fn start_run(
    conn: &mut ConnectionManager,
    prefix: &str,
    run: i64,
    batches: usize,
    orders: usize,
) -> redis::RedisResult<()> {
    let key = run_key(prefix, run);
    redis::pipe()
        .hset(&key, "total", batches)
        .hset(&key, "orders", orders)
        .hset(&key, "started_ms", Utc::now().timestamp_millis())
        .expire(&key, 3600)
        .query_async::<()>(conn)
        .await
}

/// Stores a batch's entries and adds them to the run's indexes being built.
pub async fn write_batch(
    conn: &mut ConnectionManager,
    prefix: &str,
    run: i64,
    batch: &[BoardEntry],
) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    for e in batch {
        let json = serde_json::to_string(e).unwrap_or_default();
        // Entries outlive a few missed runs, not forever.
        pipe.set_ex(entry_key(prefix, e.id), json, 24 * 3600);
        let score = e.created_at.timestamp_millis();
        if e.status.is_active() {
            pipe.zadd(build_key(prefix, run, None), e.id.to_string(), score);
            pipe.zadd(
                build_key(prefix, run, Some(e.status)),
                e.id.to_string(),
                score,
            );
        }
    }
    pipe.expire(build_key(prefix, run, None), 3600);
    for s in OrderStatus::ACTIVE {
        pipe.expire(build_key(prefix, run, Some(*s)), 3600);
    }
    pipe.query_async::<()>(conn).await
}

/// Counts a finished batch (extending the run's lease); the batch that
/// completes the run swaps the built indexes in and records the run.
/// Returns the run's end then.
pub async fn finish_batch(
    conn: &mut ConnectionManager,
    prefix: &str,
    run: i64,
) -> redis::RedisResult<Option<RunEnd>> {
    let key = run_key(prefix, run);
    // The expiry again: a late duplicate batch of a finished run (whose
    // key is gone) must not leave a key behind forever.
    let (done,): (i64,) = redis::pipe()
        .hincr(&key, "done", 1)
        .expire(&key, 3600)
        .ignore()
        .query_async(conn)
        .await?;
    redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0",
    )
    .key(running_key(prefix))
    .arg(run)
    .arg(RUN_LEASE_MS)
    .invoke_async::<()>(conn)
    .await?;
    let (total, orders, started): (Option<i64>, Option<i64>, Option<i64>) = redis::cmd("HMGET")
        .arg(&key)
        .arg("total")
        .arg("orders")
        .arg("started_ms")
        .query_async(conn)
        .await?;
    if Some(done) != total {
        return Ok(None);
    }
    finalize(conn, prefix, run, orders.unwrap_or(0), started.unwrap_or(0))
        .await
        .map(Some)
}

/// A finished run: its summary, and whether a refresh was asked for while
/// it ran (then the caller starts the follow-up run).
#[derive(Debug, Clone)]
pub struct RunEnd {
    pub summary: LastRefresh,
    pub again: bool,
}

/// Makes run `run` the board: its indexes replace the old ones (an empty
/// run empties the board), `last_refresh` and the event counter move, and
/// the run slot is released, all atomically.
pub async fn finalize(
    conn: &mut ConnectionManager,
    prefix: &str,
    run: i64,
    orders: i64,
    started_ms: i64,
) -> redis::RedisResult<RunEnd> {
    let mut pipe = redis::pipe();
    pipe.atomic();
    for status in std::iter::once(None).chain(OrderStatus::ACTIVE.iter().map(|s| Some(*s))) {
        let built = build_key(prefix, run, status);
        let live = index_key(prefix, status);
        // An empty run built no key: the live index is then just deleted.
        pipe.cmd("DEL").arg(&live).ignore();
        pipe.cmd("EVAL")
            .arg("if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('RENAME', KEYS[1], KEYS[2]) end return 0")
            .arg(2)
            .arg(&built)
            .arg(&live)
            .ignore();
    }
    let now = Utc::now();
    let summary = LastRefresh {
        finished_at: now,
        duration_ms: (now.timestamp_millis() - started_ms).max(0),
        orders,
    };
    pipe.set(
        last_refresh_key(prefix),
        serde_json::to_string(&summary).unwrap_or_default(),
    )
    .ignore();
    pipe.incr(events_key(prefix), 1).ignore();
    // The run's own bookkeeping is done with.
    pipe.cmd("DEL").arg(run_key(prefix, run)).ignore();
    pipe.cmd("EVAL")
        .arg(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end return 0",
        )
        .arg(1)
        .arg(running_key(prefix))
        .arg(run)
        .ignore();
    pipe.cmd("GETDEL").arg(again_key(prefix));
    let (again,): (Option<String>,) = pipe.query_async(conn).await?;
    Ok(RunEnd {
        summary,
        again: again.is_some(),
    })
}

/// The newest `limit` orders on the board, optionally of one status.
pub async fn board(
    conn: &mut ConnectionManager,
    prefix: &str,
    status: Option<OrderStatus>,
    limit: usize,
) -> redis::RedisResult<Vec<BoardEntry>> {
    let ids: Vec<String> = conn
        .zrevrange(
            index_key(prefix, status),
            0,
            limit.saturating_sub(1) as isize,
        )
        .await?;
    let ids: Vec<Uuid> = ids.iter().filter_map(|s| Uuid::parse_str(s).ok()).collect();
    Ok(entries(conn, prefix, &ids)
        .await?
        .into_iter()
        .flatten()
        .collect())
}

pub async fn last_refresh(
    conn: &mut ConnectionManager,
    prefix: &str,
) -> redis::RedisResult<Option<LastRefresh>> {
    let raw: Option<String> = conn.get(last_refresh_key(prefix)).await?;
    Ok(raw.and_then(|s| serde_json::from_str(&s).ok()))
}
