//! The worker's timers: the outbox sweep and the Redis vacuum.

use std::sync::Arc;
use std::time::Instant;

use redis::aio::ConnectionManager;
use tokio::sync::watch;

use super::WorkerOptions;
use crate::jobs::sweep::sweep_once;
use crate::jobs::vacuum::vacuum;
use crate::jobs::JobContext;

/// The sweeper and the vacuum, on timers, until `stop`.
pub(super) async fn housekeeping(
    ctx: Arc<JobContext>,
    conn: ConnectionManager,
    prefix: String,
    opts: WorkerOptions,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(opts.sweep_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_vacuum = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        match sweep_once(&ctx, &opts.sweep).await {
            Ok(r) if r.pushed > 0 || r.stale_payments > 0 => {
                tracing::info!(
                    sweep.pushed = r.pushed,
                    sweep.stale_payments = r.stale_payments,
                    "swept the outbox"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "sweep failed; next round retries"),
        }
        if last_vacuum.elapsed() >= opts.vacuum_every {
            last_vacuum = Instant::now();
            match vacuum(&conn, &prefix, &opts.vacuum, &super::KINDS).await {
                Ok(r) => tracing::debug!(
                    vacuum.tasks = r.tasks,
                    vacuum.workers = r.workers,
                    "vacuumed"
                ),
                Err(e) => tracing::warn!(error = %e, "vacuum failed; the next one retries"),
            }
        }
    }
}
