//! Sweep owed work: push the job for every owed item whose wake-up was lost
//! (Redis down at purchase time, a job that died for good while PostgreSQL
//! was down, a cancel whose inline refund failed) and owe a reconciliation
//! for every order left `payment_pending`. It also deletes Idempotency-Key
//! records past their retention, so that table stays bounded.
//!
//! Every worker process sweeps on its own timer; each item is taken by one
//! sweeper per window (`FOR UPDATE SKIP LOCKED` plus `last_pushed_at`), so
//! several sweepers make one push per item per window, not one each. Pushes
//! are paced: a sweep takes at most `batch` items, and none while the
//! queue's scheduled set holds more than `max_scheduled` entries (apalis-redis
//! 1.0 workers die at 8,000 due entries in one fetch).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::AsyncCommands;

use super::{Deliver, JobContext, JobKind, ReconcilePayment, Refund};
use crate::db::{self, owed};

#[derive(Debug, Clone, Copy)]
pub struct SweepPolicy {
    /// How old an owed item must be before the sweeper pushes it (the normal
    /// path pushes it at once).
    pub grace: Duration,
    /// How long after a push the item may be pushed again.
    pub repush_after: Duration,
    /// Items per sweep.
    pub batch: i64,
    /// Skip pushing while a queue's scheduled set is larger than this.
    pub max_scheduled: usize,
    /// Owe reconciliation for orders `payment_pending` for longer than this.
    pub stale_payment: Duration,
}

impl Default for SweepPolicy {
    fn default() -> Self {
        SweepPolicy {
            grace: Duration::from_secs(30),
            repush_after: Duration::from_secs(60),
            batch: 500,
            max_scheduled: 4000,
            stale_payment: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    pub pushed: usize,
    pub stale_payments: usize,
    pub purged_keys: usize,
    pub skipped_backlog: bool,
}

/// Entries waiting in a queue's scheduled set.
pub async fn scheduled_len(ctx: &JobContext, queue: &str) -> Result<usize, super::QueueError> {
    let mut conn = ctx.queue.connection().await?;
    conn.zcard(format!("{queue}:scheduled"))
        .await
        .map_err(|e| super::QueueError::Unavailable(e.to_string()))
}

/// One sweep.
pub async fn sweep_once(
    ctx: &JobContext,
    policy: &SweepPolicy,
) -> Result<SweepReport, anyhow::Error> {
    let mut report = SweepReport::default();
    let stale = policy.stale_payment;
    report.stale_payments =
        db::unit(&ctx.pool, move |c| owed::owe_stale_payments(c, stale, 1000)).await?;
    // Idempotency-Key records past their 24 h retention.
    report.purged_keys = db::unit(&ctx.pool, |c| {
        crate::db::idempotency::purge_expired(c, 1000)
    })
    .await?;

    for queue in [
        ctx.queue.queue_name::<Deliver>(),
        ctx.queue.queue_name::<ReconcilePayment>(),
        ctx.queue.queue_name::<Refund>(),
    ] {
        if scheduled_len(ctx, &queue).await? > policy.max_scheduled {
            report.skipped_backlog = true;
            tracing::warn!(queue = %queue, "scheduled backlog too large; sweep pushes nothing this round");
            return Ok(report);
        }
    }
    let (grace, repush, batch) = (policy.grace, policy.repush_after, policy.batch);
    let due = db::unit(&ctx.pool, move |c| owed::take_due(c, grace, repush, batch)).await?;
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    for (kind, order_id) in due {
        // A fresh task id per sweep: an old task with the default id may
        // still be stored (dead or done) and would swallow the push.
        let pushed = match kind {
            owed::OwedKind::Deliver => {
                let j = Deliver { order_id };
                let id = format!("{}-s{stamp}", j.task_id());
                ctx.queue.push_with(j, id, Duration::ZERO).await
            }
            owed::OwedKind::ReconcilePayment => {
                let j = ReconcilePayment { order_id };
                let id = format!("{}-s{stamp}", j.task_id());
                ctx.queue.push_with(j, id, Duration::ZERO).await
            }
            owed::OwedKind::Refund => {
                let j = Refund { order_id };
                let id = format!("{}-s{stamp}", j.task_id());
                ctx.queue.push_with(j, id, Duration::ZERO).await
            }
        };
        pushed?;
        report.pushed += 1;
    }
    Ok(report)
}
