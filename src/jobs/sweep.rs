//! Sweep the outbox: push the job for every outbox item whose wake-up was lost
//! (Redis down at purchase time, a job that died for good while PostgreSQL
//! was down, a cancel whose inline refund failed) and owe a reconciliation
//! for every order left `payment_pending`. It also deletes Idempotency-Key
//! records past their retention, settled webhook deliveries past the
//! log's (7 days) and finished gateway events past theirs (7 days), so those
//! tables stay bounded.
//!
//! An item is pushed only when its next attempt is overdue (see
//! `outbox::take_due`): never while its job runs or waits for its own retry,
//! so there is one chain per outbox item. Every worker process sweeps on its
//! own timer; each item is taken by one sweeper per window (`FOR UPDATE
//! SKIP LOCKED` plus `last_pushed_at`). Pushes are paced: a sweep tops each
//! queue up to `jobs::MAX_SCHEDULED` entries and no further (apalis-redis
//! 1.0 workers die at 8,000 due entries in one fetch).

use std::time::Duration;

use super::JobContext;
use crate::db::{self, outbox};
use crate::orders::{Deliver, ReconcilePayment, Refund};

#[derive(Debug, Clone, Copy)]
pub struct SweepPolicy {
    /// How overdue an outbox item's next attempt must be before the sweeper
    /// pushes it (the normal path pushes it on time).
    pub grace: Duration,
    /// How long after a push the item may be pushed again.
    pub repush_after: Duration,
    /// Most items per queue per sweep.
    pub batch: i64,
    /// Owe reconciliation for orders `payment_pending` for longer than this.
    pub stale_payment: Duration,
    /// Settled webhook deliveries older than this leave the delivery log.
    pub delivery_log_retention: Duration,
    /// Finished gateway events older than this leave the inbox (longer than
    /// the gateway resends an event: Stripe, 3 days).
    pub gateway_event_retention: Duration,
}

impl Default for SweepPolicy {
    fn default() -> Self {
        SweepPolicy {
            grace: Duration::from_secs(30),
            repush_after: Duration::from_secs(60),
            batch: 2000,
            stale_payment: Duration::from_secs(60),
            delivery_log_retention: crate::db::delivery_log::RETENTION,
            gateway_event_retention: crate::gateway::RETENTION,
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    pub pushed: usize,
    pub stale_payments: usize,
    pub purged_keys: usize,
    pub purged_deliveries: usize,
    pub purged_gateway_events: usize,
    /// A queue was full: its outbox items wait for the next sweep.
    pub skipped_backlog: bool,
}

/// One sweep: owe stale payments, purge expired keys and old webhook
/// deliveries, and top every queue up to [`super::MAX_SCHEDULED`] with its
/// overdue outbox items.
pub async fn sweep_once(
    ctx: &JobContext,
    policy: &SweepPolicy,
) -> Result<SweepReport, anyhow::Error> {
    let mut report = SweepReport::default();
    // An order awaiting its customer's authentication is the gateway's
    // to settle (its event): it is polled only once its deadline passed.
    let (stale, quiet) = (policy.stale_payment, ctx.policy.action_timeout);
    report.stale_payments = db::unit(&ctx.pool, move |c| {
        outbox::owe_stale_payments(c, stale, quiet, 1000)
    })
    .await?;
    // Idempotency-Key records past their 24 h retention.
    report.purged_keys = db::unit(&ctx.pool, |c| {
        crate::db::idempotency::purge_expired(c, 1000)
    })
    .await?;
    let retention = policy.delivery_log_retention;
    report.purged_deliveries = db::unit(&ctx.pool, move |c| {
        crate::db::delivery_log::purge_settled(c, retention, 1000)
    })
    .await?;
    let retention = policy.gateway_event_retention;
    report.purged_gateway_events = db::unit(&ctx.pool, move |c| {
        crate::db::gateway_events::purge(c, retention, 1000)
    })
    .await?;
    for kind in [
        outbox::OutboxKind::Deliver,
        outbox::OutboxKind::ReconcilePayment,
        outbox::OutboxKind::Refund,
    ] {
        sweep_kind(ctx, policy, kind, &mut report).await?;
    }
    Ok(report)
}

/// Pushes the overdue outbox items of one kind, as many as its queue has room.
async fn sweep_kind(
    ctx: &JobContext,
    policy: &SweepPolicy,
    kind: outbox::OutboxKind,
    report: &mut SweepReport,
) -> Result<(), anyhow::Error> {
    let queue = jobs_queue(ctx, kind);
    let room = super::MAX_SCHEDULED.saturating_sub(ctx.queue.scheduled_len(&queue).await?);
    if room == 0 {
        report.skipped_backlog = true;
        tracing::warn!(queue = %queue, "queue full; its outbox items wait for the next sweep");
        return Ok(());
    }
    let (grace, repush) = (policy.grace, policy.repush_after);
    let limit = policy.batch.min(room as i64);
    let due = db::unit(&ctx.pool, move |c| {
        outbox::take_due(c, kind, grace, repush, limit)
    })
    .await?;
    for order_id in due {
        let pushed = match kind {
            outbox::OutboxKind::Deliver => ctx.queue.push_fresh(Deliver { order_id }, "s").await,
            outbox::OutboxKind::ReconcilePayment => {
                ctx.queue
                    .push_fresh(ReconcilePayment { order_id }, "s")
                    .await
            }
            outbox::OutboxKind::Refund => ctx.queue.push_fresh(Refund { order_id }, "s").await,
        };
        match pushed {
            Ok(()) => report.pushed += 1,
            Err(super::QueueError::Full(_)) => {
                report.skipped_backlog = true;
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn jobs_queue(ctx: &JobContext, kind: outbox::OutboxKind) -> String {
    match kind {
        outbox::OutboxKind::Deliver => ctx.queue.queue_name::<Deliver>(),
        outbox::OutboxKind::ReconcilePayment => ctx.queue.queue_name::<ReconcilePayment>(),
        outbox::OutboxKind::Refund => ctx.queue.queue_name::<Refund>(),
    }
}
