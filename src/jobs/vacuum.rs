//! Keeps Redis bounded. apalis-redis 1.0 never deletes anything on its own:
//! every task leaves its payload (`{q}:data`), its metadata (`{q}:meta:{id}`,
//! `{q}:meta:result`) and its id in `{q}:done` or `{q}:dead`; every worker
//! name ever started stays in `{q}:workers` with its `{q}:workers:metadata:{name}`
//! hash (and a worker restarted in process gets a new name each time). The
//! vacuum, run by every worker process on a timer, removes, for every queue
//! (the status refresh's plan and batch queues included):
//! - finished tasks older than `keep_done` (default 60 s; job totals are
//!   counted apart, in `{prefix}.job_totals`, so nothing reads them later);
//! - dead tasks (given up) older than `keep_dead` (default 24 h), long enough
//!   to inspect one (`HGETALL {q}:meta:{id}`) after an incident;
//! - workers unseen for `dead_worker_after` (default 60 s) with nothing in
//!   flight: their entry and metadata (orphaned jobs are re-queued first by
//!   apalis' own orphan check, which also drops the entry but not the metadata).
//!
//! It walks the sets with `SSCAN` and deletes in pipelines of a few hundred
//! keys, so Redis is never blocked for long (apalis' own `vacuum` is one
//! Lua call over the whole data hash).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;

use super::queue_name;

#[derive(Debug, Clone, Copy)]
pub struct VacuumPolicy {
    pub keep_done: Duration,
    pub keep_dead: Duration,
    pub dead_worker_after: Duration,
}

impl Default for VacuumPolicy {
    fn default() -> Self {
        VacuumPolicy {
            keep_done: Duration::from_secs(60),
            keep_dead: Duration::from_secs(24 * 3600),
            dead_worker_after: Duration::from_secs(60),
        }
    }
}

/// What one vacuum removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VacuumReport {
    pub tasks: usize,
    pub workers: usize,
}

const CHUNK: usize = 500;

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// One vacuum of each of `kinds`' queues under `prefix` (the workers'
/// list, `worker::KINDS`).
pub async fn vacuum(
    conn: &ConnectionManager,
    prefix: &str,
    policy: &VacuumPolicy,
    kinds: &[&str],
) -> redis::RedisResult<VacuumReport> {
    let mut c = conn.clone();
    let mut report = VacuumReport::default();
    let now = now_secs();
    for kind in kinds {
        let q = queue_name(prefix, kind);
        report.tasks +=
            finished(&mut c, &q, "done", now - policy.keep_done.as_secs() as i64).await?;
        report.tasks +=
            finished(&mut c, &q, "dead", now - policy.keep_dead.as_secs() as i64).await?;
        report.workers +=
            stale_workers(&mut c, &q, now - policy.dead_worker_after.as_secs() as i64).await?;
    }
    report.workers += orphan_metadata(&mut c, prefix).await?;
    Ok(report)
}

/// Deletes the tasks of `{q}:{set}` that finished at or before `cutoff`.
async fn finished(
    c: &mut ConnectionManager,
    q: &str,
    set: &str,
    cutoff: i64,
) -> redis::RedisResult<usize> {
    let set = format!("{q}:{set}");
    let mut cursor: u64 = 0;
    let mut removed = 0;
    loop {
        let (next, ids): (u64, Vec<String>) = redis::cmd("SSCAN")
            .arg(&set)
            .arg(cursor)
            .arg("COUNT")
            .arg(CHUNK)
            .query_async(c)
            .await?;
        removed += expire_chunk(c, q, &set, &ids, cutoff).await?;
        if next == 0 {
            return Ok(removed);
        }
        cursor = next;
    }
}

/// Of `ids`, members of `set`, deletes those that finished at or before
/// `cutoff` (payload, metadata, result, membership), in one pipeline.
async fn expire_chunk(
    c: &mut ConnectionManager,
    q: &str,
    set: &str,
    ids: &[String],
    cutoff: i64,
) -> redis::RedisResult<usize> {
    if ids.is_empty() {
        return Ok(0);
    }
    let mut read = redis::pipe();
    for id in ids {
        read.cmd("HMGET")
            .arg(format!("{q}:meta:{id}"))
            .arg("status")
            .arg("done_at");
    }
    let seen: Vec<(Option<String>, Option<i64>)> = read.query_async(c).await?;
    let mut delete = redis::pipe();
    let mut n = 0;
    for (id, (status, done_at)) in ids.iter().zip(seen) {
        // No metadata at all: a leftover member, nothing to keep.
        let expired = done_at.map_or(status.is_none(), |t| t <= cutoff);
        if expired {
            delete
                .hdel(format!("{q}:data"), id)
                .ignore()
                .hdel(format!("{q}:meta:result"), id)
                .ignore()
                .del(format!("{q}:meta:{id}"))
                .ignore()
                .srem(set, id)
                .ignore();
            n += 1;
        }
    }
    if n > 0 {
        delete.query_async::<()>(c).await?;
    }
    Ok(n)
}

/// Removes workers of `q` last seen before `cutoff` that hold no job.
async fn stale_workers(
    c: &mut ConnectionManager,
    q: &str,
    cutoff: i64,
) -> redis::RedisResult<usize> {
    let workers = format!("{q}:workers");
    let stale: Vec<String> = redis::cmd("ZRANGEBYSCORE")
        .arg(&workers)
        .arg("-inf")
        .arg(cutoff)
        .arg("LIMIT")
        .arg(0)
        .arg(CHUNK)
        .query_async(c)
        .await?;
    let mut removed = 0;
    for name in stale {
        if forget_worker(c, q, &name).await? {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Forgets worker `name` of `q` unless it still holds jobs in flight (those
/// are re-queued by apalis' orphan check first).
async fn forget_worker(c: &mut ConnectionManager, q: &str, name: &str) -> redis::RedisResult<bool> {
    let inflight: u64 = redis::cmd("SCARD")
        .arg(format!("{q}:inflight:{name}"))
        .query_async(c)
        .await?;
    if inflight > 0 {
        return Ok(false);
    }
    redis::pipe()
        .zrem(format!("{q}:workers"), name)
        .ignore()
        .del(format!("{q}:workers:metadata:{name}"))
        .ignore()
        .query_async::<()>(c)
        .await?;
    Ok(true)
}

/// Deletes worker metadata whose worker is no longer registered (apalis'
/// orphan check drops the entry and keeps the metadata).
async fn orphan_metadata(c: &mut ConnectionManager, prefix: &str) -> redis::RedisResult<usize> {
    let pattern = format!("{}.*:workers:metadata:*", glob_escape(prefix));
    let mut cursor: u64 = 0;
    let mut removed = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(c)
            .await?;
        for key in keys {
            let Some((q, name)) = key.split_once(":workers:metadata:") else {
                continue;
            };
            let seen: Option<f64> = redis::cmd("ZSCORE")
                .arg(format!("{q}:workers"))
                .arg(name)
                .query_async(c)
                .await?;
            if seen.is_none() && forget_worker(c, q, name).await? {
                removed += 1;
            }
        }
        if next == 0 {
            return Ok(removed);
        }
        cursor = next;
    }
}

/// `prefix` with Redis glob characters escaped.
fn glob_escape(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len());
    for ch in prefix.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_of_the_prefix_are_escaped() {
        assert_eq!(glob_escape("shop[1]*"), "shop\\[1\\]\\*");
        assert_eq!(glob_escape("orderflow"), "orderflow");
    }
}
