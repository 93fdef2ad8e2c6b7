//! Reconcile payment: settle an order left `payment_pending` (the gateway
//! timed out or failed during the purchase, the request died mid-charge, or
//! the customer has yet to authenticate).
//!
//! It never creates or confirms a charge: it finds the order's intent by
//! its recorded id, else by the gateway's search on `metadata[order_id]`
//! (`PaymentGateway::locate`), and applies where it stands. An intent is
//! confirmed only after its id is recorded (`orders::purchase::pay`), so an
//! order with none found was never charged and fails. An intent left
//! unconfirmed (the confirm never landed), or awaiting an authentication
//! past `PAYMENT_ACTION_TIMEOUT_SECS`, is cancelled and read again (a
//! confirm that won the race shows as succeeded). Paid → delivery owed and
//! pushed. Still unknown → retried with backoff for the settle window (72 h),
//! `payment_unsettled` from its first hour on. Safe twice: the settle
//! statement only changes a `payment_pending` order.

use std::sync::Arc;

use apalis::prelude::{BoxDynError, Data, TaskId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Deliver;
use crate::db::models::OrderRow;
use crate::db::outbox::{self, OutboxKind};
use crate::db::{self, orders};
use crate::domain::{Attention, OrderStatus};
use crate::jobs::{JobContext, JobKind, OutboxJob};
use crate::partners::payment::{ChargeOutcome, Located, PaymentGateway, REQUIRES_PAYMENT_METHOD};

/// What reconciling decided.
enum Step {
    /// Record this on the order.
    Apply(ChargeOutcome),
    /// Nothing settled yet: try again (no sooner than the duration given).
    Wait(String, Option<std::time::Duration>),
}

/// The decline code of a payment that never completed: no intent was
/// confirmed, or the confirmation never arrived.
pub const NOT_COMPLETED: &str = "payment_not_completed";

/// The decline code of a payment whose customer did not authenticate in time.
pub const ACTION_EXPIRED: &str = "authentication_timeout";

/// Where order `o`'s payment stands at the gateway, cancelling what can no
/// longer settle by itself. `action_left` is the time the customer still has
/// to authenticate (`None` once the deadline passed).
async fn settle(
    gateway: &PaymentGateway,
    o: &OrderRow,
    action_left: Option<std::time::Duration>,
) -> Step {
    let found = match gateway.locate(o.id, o.payment_intent_id.as_deref()).await {
        Located::Found(outcome) => outcome,
        Located::None => return Step::Apply(failed(None, "none", NOT_COMPLETED)),
        Located::Unknown(reason) => return Step::Wait(reason, None),
    };
    let give_up_code = match &found {
        // Failed, yet open to another try: cancelled first, so the order's
        // failure is final (a 3-D Secure retry cannot charge it later).
        ChargeOutcome::Declined {
            status: Some(status),
            decline_code,
            ..
        } if status == REQUIRES_PAYMENT_METHOD => decline_code.clone(),
        ChargeOutcome::RequiresAction { .. } => match action_left {
            Some(left) => {
                return Step::Wait("the customer has yet to authenticate".into(), Some(left))
            }
            None => ACTION_EXPIRED.to_owned(),
        },
        ChargeOutcome::Unconfirmed { .. } => NOT_COMPLETED.to_owned(),
        ChargeOutcome::Unknown { reason, .. } => return Step::Wait(reason.clone(), None),
        _ => return Step::Apply(found),
    };
    let Some(intent) = found.intent_id().map(str::to_owned) else {
        return Step::Wait("intent without id".into(), None);
    };
    match gateway.cancel_intent(&intent).await {
        Ok(now @ ChargeOutcome::Succeeded { .. }) => Step::Apply(now),
        Ok(ChargeOutcome::Declined { status, .. }) => Step::Apply(failed(
            Some(intent),
            status.as_deref().unwrap_or("canceled"),
            &give_up_code,
        )),
        Ok(_) => Step::Wait("the intent is not cancelled yet".into(), None),
        Err(e) => Step::Wait(format!("the intent could not be cancelled: {e}"), None),
    }
}

fn failed(intent_id: Option<String>, status: &str, code: &str) -> ChargeOutcome {
    ChargeOutcome::Declined {
        intent_id,
        status: Some(status.to_owned()),
        decline_code: code.to_owned(),
        message: "The payment did not complete.".into(),
    }
}

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
    let deadline = (o.created_at + chrono::Duration::from_std(ctx.policy.action_timeout)?)
        .signed_duration_since(chrono::Utc::now())
        .to_std()
        .ok();
    let outcome = ctx
        .partners
        .run(move |p| Box::pin(async move { settle(&p.payment, &o, deadline).await }))
        .await?;
    let outcome = match outcome {
        Step::Apply(outcome) => outcome,
        Step::Wait(reason, at_least) => {
            let reason = format!("payment not settled yet: {reason}");
            return ctx
                .retry_settling(job, attempt, Attention::PaymentUnsettled, &reason, at_least)
                .await;
        }
    };
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
