//! Queue statistics read straight from apalis-redis' keys (its own
//! introspection calls are broken in 1.0, see the notes), plus job totals
//! that workers count in one Redis hash, `{prefix}.job_totals`.

use redis::aio::ConnectionManager;
use redis::AsyncCommands;

use super::queue_name;
use crate::metrics::QueueStats;

pub fn totals_key(prefix: &str) -> String {
    format!("{prefix}.job_totals")
}

/// Counts one finished job run (`state`: done, failed or dead).
pub async fn count(
    conn: &mut ConnectionManager,
    prefix: &str,
    kind: &str,
    state: &str,
) -> redis::RedisResult<()> {
    conn.hincr(totals_key(prefix), format!("{kind}.{state}"), 1)
        .await
}

/// Reads the statistics of each of `kinds` (the workers' list,
/// `worker::KINDS`).
pub async fn read(
    conn: &mut ConnectionManager,
    prefix: &str,
    kinds: &[&'static str],
) -> redis::RedisResult<Vec<QueueStats>> {
    let totals: std::collections::HashMap<String, u64> = conn.hgetall(totals_key(prefix)).await?;
    let mut out = Vec::with_capacity(kinds.len());
    for &kind in kinds {
        let q = queue_name(prefix, kind);
        let (active, scheduled, workers): (u64, u64, Vec<String>) = redis::pipe()
            .llen(format!("{q}:active"))
            .zcard(format!("{q}:scheduled"))
            .zrange(format!("{q}:workers"), 0, -1)
            .query_async(conn)
            .await?;
        let mut running = 0u64;
        if !workers.is_empty() {
            let mut pipe = redis::pipe();
            for w in &workers {
                pipe.scard(format!("{q}:inflight:{w}"));
            }
            let sizes: Vec<u64> = pipe.query_async(conn).await?;
            running = sizes.iter().sum();
        }
        let get = |s: &str| totals.get(&format!("{kind}.{s}")).copied().unwrap_or(0);
        out.push(QueueStats {
            kind,
            pending: active + scheduled,
            running,
            done: get("done"),
            failed: get("failed"),
            dead: get("dead"),
        });
    }
    Ok(out)
}
