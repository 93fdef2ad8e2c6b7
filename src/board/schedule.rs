//! The refresh timer: a run once per `STATUS_REFRESH_INTERVAL_SECS` across
//! all worker processes. Each process checks every second, and only the one
//! that claims the interval's key in Redis (`SET NX`) pushes the plan.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;
use tokio::sync::watch;

use super::RefreshPlan;
use crate::jobs::{JobKind, JobQueue};

/// Runs until `stop`; `every` of `None` (or zero) schedules nothing.
pub async fn schedule(
    queue: &JobQueue,
    conn: ConnectionManager,
    every: Option<Duration>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(every) = every.filter(|d| !d.is_zero()) else {
        return;
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let slot = now.as_millis() / every.as_millis().max(1);
        let mut c = conn.clone();
        let claimed: redis::RedisResult<Option<String>> = redis::cmd("SET")
            .arg(format!("{}.board.tick.{slot}", queue.prefix()))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg((every.as_millis() * 3) as u64)
            .query_async(&mut c)
            .await;
        if let Ok(Some(_)) = claimed {
            let plan = RefreshPlan::now(false);
            let id = plan.task_id();
            if let Err(e) = queue.push_with(plan, id, Duration::ZERO).await {
                tracing::warn!(error = %e, "scheduled refresh not pushed");
            }
        }
    }
}
