//! Refund: make sure a cancelled order is not left charged.
//!
//! Owed by `POST /orders/{id}/cancel` in the transaction that cancels the
//! order. The cancel request refunds inline when it can; this job covers the
//! rest: a refund that failed, and a cancelled `payment_pending` order whose
//! charge may yet have succeeded. It never creates a charge: it finds the
//! order's intent by its recorded id, else the gateway's search
//! (`PaymentGateway::locate`); an intent that was never charged is cancelled
//! (so a late confirm cannot charge it), and a succeeded one is refunded
//! with `Idempotency-Key: orderflow-refund-{order}` (a new key after a
//! refund that failed), so however often it runs the gateway refunds once.
//! Not settled → retried with backoff for the settle window (72 h),
//! `refund_unsettled` from its first hour on.

use std::sync::Arc;

use apalis::prelude::{BoxDynError, Data, TaskId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::db::models::OrderRow;
use crate::db::outbox::{self, OutboxKind};
use crate::db::{self, orders};
use crate::domain::{Attention, OrderStatus};
use crate::jobs::{JobContext, JobKind, OutboxJob};
use crate::partners::payment::{ChargeOutcome, Located, PaymentGateway, RefundMade};

/// Refunds cancelled order `o`'s charge if there is one: `Ok(None)` when
/// nothing was charged, `Err` when that is not known yet.
async fn refund_charge(
    gateway: &PaymentGateway,
    o: &OrderRow,
) -> Result<Option<(String, RefundMade)>, String> {
    let found = match gateway.locate(o.id, o.payment_intent_id.as_deref()).await {
        Located::Found(found) => found,
        Located::None => return Ok(None),
        Located::Unknown(reason) => return Err(reason),
    };
    let found = match found {
        // Never charged yet: cancel it, so nothing can charge it later.
        ChargeOutcome::Unconfirmed { intent_id }
        | ChargeOutcome::RequiresAction { intent_id, .. } => gateway
            .cancel_intent(&intent_id)
            .await
            .map_err(|e| e.to_string())?,
        other => other,
    };
    match found {
        ChargeOutcome::Succeeded { intent_id, .. } => {
            let after_failed = (o.payment_status.as_deref() == Some(orders::REFUND_FAILED))
                .then_some(o.refund_id.as_deref())
                .flatten();
            let refund = gateway
                .refund(o.id, &intent_id, after_failed)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Some((intent_id, refund)))
        }
        ChargeOutcome::Declined { .. } => Ok(None),
        ChargeOutcome::Unknown { reason, .. } => Err(reason),
        ChargeOutcome::Unconfirmed { .. } | ChargeOutcome::RequiresAction { .. } => {
            Err("the intent is not cancelled yet".into())
        }
    }
}

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
        .run(move |p| Box::pin(async move { refund_charge(&p.payment, &o).await }))
        .await?;
    match result {
        Ok(refunded) => {
            let charged = refunded.is_some();
            db::unit(&ctx.pool, move |c| {
                c.build_transaction().run(|c| {
                    if let Some((intent, refund)) = &refunded {
                        orders::record_refund(c, id, intent, &refund.id)?;
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
            ctx.retry_settling(job, attempt, Attention::RefundUnsettled, &reason, None)
                .await
        }
    }
}
