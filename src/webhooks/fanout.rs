//! The fan-out timer and the webhook sweep, in every worker process.
//!
//! Fan-out reads PostgreSQL, not Redis: every 100 ms it wakes each enabled
//! endpoint with no live drainer that has log entries past its cursor, or
//! a delivery row overdue by the sweep's grace (a delayed wake-up lost with
//! Redis, a drainer killed). A wake-up lost with Redis is pushed again on
//! the next tick. The sweep moves idle endpoints' cursors past entries of
//! types they do not take, and trims the log behind every cursor.

use std::time::Duration;

use secrecy::ExposeSecret;
use tokio::sync::watch;
use uuid::Uuid;

use super::{WebhookContext, WebhookDrain};
use crate::db::{self, webhooks as store};
use crate::jobs::JobQueue;

const EVERY: Duration = Duration::from_millis(100);
/// Log entries trimmed per sweep, at most.
const TRIM: i64 = 10_000;

/// When the sweep runs, and how overdue a delivery row must be before the
/// timer wakes its endpoint (its own delayed wake-up was lost).
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
            if let Err(e) = sweep(&ctx).await {
                tracing::debug!(error = %e, "webhook sweep failed; the next one retries");
            }
        }
        let grace = timing.grace;
        match db::unit(&ctx.pool, move |c| store::wakeable_endpoints(c, grace)).await {
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

/// Shifts the log if the database moved ([`store::rebase_if_moved`]),
/// moves idle cursors, seals secrets again under the current key
/// ([`reseal`]) and trims the log behind the cursors.
/// Returns how many entries it trimmed.
pub async fn sweep(ctx: &WebhookContext) -> anyhow::Result<usize> {
    let keys = ctx.secrets.clone();
    Ok(db::unit(&ctx.pool, move |c| {
        let shift = store::rebase_if_moved(c)?;
        if shift != 0 {
            tracing::warn!(shift, "webhook log: the database moved to a cluster with younger transaction ids; the log and the cursors were shifted below the horizon");
        }
        store::advance_idle_cursors(c)?;
        reseal(c, &keys)?;
        store::trim_log(c, TRIM)
    })
    .await?)
}

/// Pushes a drain of each endpoint under a fresh task id (`why` tags it:
/// `f` the fan-out timer, `h` an ops request); if the push fails, the
/// timer pushes one again on its next tick (a delivery row's, once it is
/// `SWEEP_GRACE_SECS` overdue).
pub async fn wake(queue: &JobQueue, endpoints: &[Uuid], why: &str) {
    for &endpoint_id in endpoints {
        if let Err(e) = queue.push_fresh(WebhookDrain { endpoint_id }, why).await {
            tracing::debug!(error = %e, "webhook wake-up not pushed; the next tick pushes it again");
        }
    }
}

/// Endpoints whose secrets a sweep seals again, at most.
const RESEAL: i64 = 100;

/// Seals again, under the current key, every secret sealed under an older
/// one (or stored before sealing). One that does not open is left as it
/// is, with a warning: its key is not configured. Returns how many rows
/// it sealed again.
pub fn reseal(
    c: &mut diesel::PgConnection,
    keys: &super::sealed::SecretsKeys,
) -> Result<usize, crate::db::DbError> {
    let mut done = 0;
    for old in crate::db::webhooks::stale_sealed(c, &keys.current_prefix(), RESEAL)? {
        let again = |stored: &str| {
            keys.open(old.id, stored)
                .map(|plain| keys.seal(old.id, plain.expose_secret()))
        };
        let new = match (
            again(&old.secret),
            old.previous_secret.as_deref().map(again).transpose(),
        ) {
            (Ok(secret), Ok(previous_secret)) => crate::db::webhooks::StoredSecrets {
                id: old.id,
                secret,
                previous_secret,
            },
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(endpoint = %super::endpoint_id(old.id), error = %e, "a webhook secret cannot be sealed again");
                continue;
            }
        };
        done += usize::from(crate::db::webhooks::reseal(c, &old, &new)?);
    }
    Ok(done)
}
