//! The fan-out timer and the webhook sweep, in every worker process.
//!
//! Fan-out reads PostgreSQL, not Redis: every 100 ms it turns the events
//! awaiting fan-out into deliveries (`db::webhooks::fan_out`, rows locked by
//! another worker are skipped) and wakes each endpoint that got some. The
//! sweep wakes endpoints whose deliveries are overdue with no drainer (a
//! wake-up lost with Redis, a drainer killed).

use std::time::Duration;

use tokio::sync::watch;
use uuid::Uuid;

use super::{WebhookContext, WebhookDrain};
use crate::db::{self, webhooks as store};
use crate::jobs::JobQueue;

const EVERY: Duration = Duration::from_millis(100);
/// Events fanned out per statement.
const BATCH: i64 = 2000;

/// When the sweep runs, and how overdue a delivery must be for it.
#[derive(Debug, Clone, Copy)]
pub struct SweepTiming {
    pub every: Duration,
    pub grace: Duration,
}

/// Fans out (and sweeps) until `stop`.
pub async fn fan_out_loop(
    ctx: std::sync::Arc<WebhookContext>,
    timing: SweepTiming,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    let mut last_sweep = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if last_sweep.elapsed() >= timing.every {
            last_sweep = std::time::Instant::now();
            if let Err(e) = sweep(&ctx, timing.grace).await {
                tracing::debug!(error = %e, "webhook sweep failed; the next one retries");
            }
        }
        match db::unit(&ctx.pool, |c| store::fan_out(c, BATCH)).await {
            Ok(endpoints) => {
                failing = false;
                wake(&ctx.queue, &endpoints, "f").await;
            }
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "webhook fan-out failed; it retries every 100 ms");
            }
            Err(_) => {}
        }
    }
}

/// Wakes the endpoints with deliveries more than `grace` overdue and no
/// live drainer. Returns how many.
pub async fn sweep(ctx: &WebhookContext, grace: Duration) -> anyhow::Result<usize> {
    let endpoints = db::unit(&ctx.pool, move |c| store::overdue_endpoints(c, grace)).await?;
    wake(&ctx.queue, &endpoints, "s").await;
    Ok(endpoints.len())
}

/// Pushes a drain of each endpoint under a fresh task id (`why` tags it:
/// `f` fan-out, `s` sweep, `h` an ops request); if the push fails, the
/// sweep pushes one once the deliveries are overdue.
pub async fn wake(queue: &JobQueue, endpoints: &[Uuid], why: &str) {
    for &endpoint_id in endpoints {
        if let Err(e) = queue.push_fresh(WebhookDrain { endpoint_id }, why).await {
            tracing::debug!(error = %e, "webhook wake-up not pushed; the sweep will push it");
        }
    }
}
