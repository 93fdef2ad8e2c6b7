//! Refund: make sure a cancelled order is not left charged.
//!
//! Owed by `POST /orders/{id}/cancel` in the transaction that cancels the
//! order. The cancel request refunds inline when it can; this job covers the
//! rest: a refund that failed, and a cancelled `payment_pending` order whose
//! charge may yet have succeeded. It reads the intent (or replays the charge
//! with the order's Idempotency-Key when no intent id is known), and refunds
//! a succeeded charge with `Idempotency-Key: orderflow-refund-{order}`, so
//! however often it runs the gateway refunds once. Known limit: when no
//! intent id was ever recorded and the original charge never reached the
//! gateway, the replay creates the charge that is then refunded.

use std::sync::Arc;

use apalis::prelude::{BoxDynError, Data, TaskId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{JobContext, JobKind, OutboxJob};
use crate::db::outbox::{self, OutboxKind};
use crate::db::{self, orders};
use crate::domain::{Attention, OrderStatus};
use crate::partners::payment::{charge_of, ChargeOutcome};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub order_id: Uuid,
}

impl JobKind for Refund {
    const QUEUE: &'static str = "refund";
    fn task_id(&self) -> String {
        format!("refund-{}", self.order_id)
    }
}

impl OutboxJob for Refund {
    const OUTBOX: OutboxKind = OutboxKind::Refund;
    fn order_id(&self) -> Uuid {
        self.order_id
    }
}

pub async fn run(job: Refund, ctx: Data<Arc<JobContext>>, task: TaskId) -> Result<(), BoxDynError> {
    let observer = Arc::clone(&ctx);
    observer
        .observe(Refund::QUEUE, execute(job, ctx, task.to_string()))
        .await
}

#[tracing::instrument(name = "job.refund", skip_all, fields(order.id = %job.order_id))]
async fn execute(job: Refund, ctx: Data<Arc<JobContext>>, task: String) -> Result<(), BoxDynError> {
    let id = job.order_id;
    let Some(attempt) = ctx.claim(&job, task).await? else {
        return Ok(()); // a duplicate wake-up, or nothing owed
    };
    let order = db::unit(&ctx.pool, move |c| orders::find(c, id)).await?;
    let done = |ctx: Data<Arc<JobContext>>| async move {
        db::unit(&ctx.pool, move |c| outbox::done(c, OutboxKind::Refund, id)).await
    };
    let Some(order) = order.filter(|o| o.order.status == OrderStatus::Cancelled) else {
        return Ok(done(ctx).await?);
    };
    if order.order.payment_status.as_deref() == Some(crate::db::orders::REFUNDED) {
        return Ok(done(ctx).await?);
    }
    let o = order.order;
    let result = ctx
        .partners
        .run(move |p| {
            Box::pin(async move {
                let state = p
                    .payment
                    .current_state(&charge_of(&o), o.payment_intent_id.as_deref())
                    .await;
                match state {
                    ChargeOutcome::Succeeded { intent_id, .. } => p
                        .payment
                        .refund(o.id, &intent_id)
                        .await
                        .map(|refund| Some((intent_id, refund)))
                        .map_err(|e| e.to_string()),
                    ChargeOutcome::Unknown { reason, .. } => Err(reason),
                    // Declined, cancelled, needs action: nothing was charged.
                    _ => Ok(None),
                }
            })
        })
        .await?;
    match result {
        Ok(refunded) => {
            let charged = refunded.is_some();
            db::unit(&ctx.pool, move |c| {
                c.build_transaction().run(|c| {
                    if let Some((intent, _refund_id)) = &refunded {
                        orders::record_refund(c, id, intent)?;
                    }
                    outbox::done(c, OutboxKind::Refund, id)
                })
            })
            .await?;
            tracing::info!(payment.refunded = charged, "refund settled");
            Ok(())
        }
        Err(reason) => {
            let reason = format!("refund not settled yet: {reason}");
            ctx.retry_or_flag(job, attempt, Attention::RefundUnsettled, &reason)
                .await
        }
    }
}
