//! Reconcile payment: settle an order left `payment_pending` (the gateway
//! timed out or failed during the purchase, or the request died mid-charge).
//!
//! Reads the PaymentIntent when its id is known; otherwise replays the
//! charge with the same Idempotency-Key (`orderflow-charge-{order}`), which a
//! Stripe-compatible gateway answers with the original intent, so the
//! customer is never charged twice. Paid → delivery owed and pushed;
//! declined → `payment_failed`; still unknown → retried with backoff up to
//! the attempt budget, then the order is flagged `payment_unsettled` for ops.
//! Safe twice: the settle statement only changes a `payment_pending` order.

use std::sync::Arc;

use apalis::prelude::{BoxDynError, Data, TaskId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Deliver, JobContext, JobKind, OutboxJob};
use crate::db::outbox::{self, OutboxKind};
use crate::db::{self, orders};
use crate::domain::{Attention, OrderStatus};
use crate::partners::payment::{charge_of, ChargeOutcome};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcilePayment {
    pub order_id: Uuid,
}

impl JobKind for ReconcilePayment {
    const QUEUE: &'static str = "reconcile_payment";
    fn task_id(&self) -> String {
        format!("reconcile-{}", self.order_id)
    }
}

impl OutboxJob for ReconcilePayment {
    const OUTBOX: OutboxKind = OutboxKind::ReconcilePayment;
    fn order_id(&self) -> Uuid {
        self.order_id
    }
}

pub async fn run(
    job: ReconcilePayment,
    ctx: Data<Arc<JobContext>>,
    task: TaskId,
) -> Result<(), BoxDynError> {
    let observer = Arc::clone(&ctx);
    observer
        .observe(ReconcilePayment::QUEUE, execute(job, ctx, task.to_string()))
        .await
}

#[tracing::instrument(name = "job.reconcile_payment", skip_all, fields(order.id = %job.order_id))]
async fn execute(
    job: ReconcilePayment,
    ctx: Data<Arc<JobContext>>,
    task: String,
) -> Result<(), BoxDynError> {
    let id = job.order_id;
    let Some(attempt) = ctx.claim(&job, task).await? else {
        return Ok(()); // a duplicate wake-up, or nothing owed
    };
    let order = db::unit(&ctx.pool, move |c| orders::find(c, id)).await?;
    let Some(order) = order.filter(|o| o.order.status == OrderStatus::PaymentPending) else {
        db::unit(&ctx.pool, move |c| {
            outbox::done(c, OutboxKind::ReconcilePayment, id)
        })
        .await?;
        return Ok(());
    };
    let o = order.order;
    let outcome = ctx
        .partners
        .run(move |p| {
            Box::pin(async move {
                p.payment
                    .current_state(&charge_of(&o), o.payment_intent_id.as_deref())
                    .await
            })
        })
        .await?;
    if let ChargeOutcome::Unknown { reason, .. } = &outcome {
        let reason = format!("payment outcome still unknown: {reason}");
        return ctx
            .retry_or_flag(job, attempt, Attention::PaymentUnsettled, &reason)
            .await;
    }
    let paid = matches!(outcome, ChargeOutcome::Succeeded { .. });
    let settled = db::unit(&ctx.pool, move |c| {
        c.build_transaction().run(|c| {
            let changed = orders::settle_payment(c, id, &outcome.payment_result(), None)?.is_some();
            outbox::done(c, OutboxKind::ReconcilePayment, id)?;
            Ok::<_, db::DbError>(changed)
        })
    })
    .await?;
    if settled && paid {
        tracing::info!("payment reconciled: paid");
        if let Err(e) = ctx.queue.push(Deliver { order_id: id }).await {
            tracing::warn!(error = %e, "delivery wake-up not pushed; the sweeper will push it");
        }
    }
    Ok(())
}
