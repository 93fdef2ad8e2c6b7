//! Processing the inbox: a worker loop takes due `pending` events, reads
//! each one's object from the gateway again, and applies the fact under the
//! order's row lock, with the event marked processed in the same
//! transaction. The order's own conditional statements make every change
//! forward-only (`settle_payment` changes only a `payment_pending` order, a
//! closed dispute is never reopened, a refund recorded is not re-recorded),
//! so events late, twice or out of order change nothing twice, and the
//! events they write are the ones a poll would have written: the trigger
//! writes them from the same row changes.

use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounterVec;
use tokio::sync::watch;
use uuid::Uuid;

use super::fact::{self, Fact, Read};
use super::kind::{Handled, Subject};
use super::GatewayEventStatus;
use crate::db::gateway_events::{self as store, Due};
use crate::db::{self, orders, DbError};
use crate::domain::OrderStatus;
use crate::jobs::JobContext;
use crate::orders::Deliver;
use crate::partners::payment::{ChargeOutcome, GatewayError};

/// How the loop runs.
#[derive(Debug, Clone, Copy)]
pub struct Processing {
    /// How often the inbox is looked at when it was empty.
    pub poll: Duration,
    /// Most events taken at once.
    pub batch: i64,
    /// How long a taken event is held: past it, another worker takes it.
    pub lease: Duration,
    /// Attempts before an event whose order is not recorded is `unmatched`.
    pub unmatched_after: i32,
    /// Backoff between attempts: base, doubling, capped.
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Processing {
    fn default() -> Self {
        Processing {
            poll: Duration::from_millis(250),
            batch: 64,
            lease: Duration::from_secs(30),
            unmatched_after: 10,
            base: Duration::from_secs(1),
            cap: Duration::from_secs(300),
        }
    }
}

/// What became of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Processed,
    Unmatched,
    Failed,
    Retried,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Processed => "processed",
            Outcome::Unmatched => "unmatched",
            Outcome::Failed => "failed",
            Outcome::Retried => "retried",
        }
    }
}

/// Processes the inbox until `halt`; `counted` counts outcomes.
pub async fn run(
    ctx: Arc<JobContext>,
    opts: Processing,
    counted: IntCounterVec,
    mut halt: watch::Receiver<bool>,
) {
    loop {
        if *halt.borrow() {
            return;
        }
        let (batch, lease) = (opts.batch, opts.lease);
        let taken = match db::unit(&ctx.pool, move |c| store::take_due(c, batch, lease)).await {
            Ok(taken) => taken,
            Err(e) => {
                tracing::warn!(error = %e, "gateway events not taken; retrying");
                Vec::new()
            }
        };
        let full = taken.len() as i64 == opts.batch;
        let runs = taken.into_iter().map(|due| process(&ctx, &opts, due));
        for outcome in futures_util::future::join_all(runs).await {
            counted.with_label_values(&[outcome.label()]).inc();
        }
        if !full {
            tokio::select! {
                _ = tokio::time::sleep(opts.poll) => {}
                _ = halt.wait_for(|h| *h) => return,
            }
        }
    }
}

#[tracing::instrument(name = "gateway.event", skip_all, fields(event.id = %due.id, event.type = %due.kind))]
async fn process(ctx: &Arc<JobContext>, opts: &Processing, due: Due) -> Outcome {
    let Ok(kind) = due.kind.parse::<Handled>() else {
        return finish(ctx, due, GatewayEventStatus::Ignored, None, None).await;
    };
    let Some(object) = due.object_id.clone() else {
        let why = "the event names no object";
        return finish(ctx, due, GatewayEventStatus::Failed, None, Some(why)).await;
    };
    let read = match read_again(ctx, kind.subject(), object).await {
        Ok(read) => read,
        Err(GatewayError::Status { status: 404, .. }) => {
            let why = "the gateway has no such object";
            return finish(ctx, due, GatewayEventStatus::Failed, None, Some(why)).await;
        }
        Err(e) => return retry(ctx, opts, due, &format!("gateway: {e}")).await,
    };
    let (id, order) = (due.id.clone(), due.order_id);
    let applied = db::unit(&ctx.pool, move |c| apply(c, &id, order, &read)).await;
    match applied {
        Ok(Some((order_id, paid))) => {
            if paid {
                if let Err(e) = ctx.queue.push(Deliver { order_id }).await {
                    tracing::warn!(error = %e, "delivery wake-up not pushed; the sweeper will push it");
                }
            }
            Outcome::Processed
        }
        Ok(None) if due.attempts >= opts.unmatched_after => {
            let why = "no recorded order has this payment";
            finish(ctx, due, GatewayEventStatus::Unmatched, None, Some(why)).await
        }
        Ok(None) => retry(ctx, opts, due, "the order is not recorded (yet)").await,
        Err(e) => retry(ctx, opts, due, &format!("database: {e}")).await,
    }
}

/// The event's object as the gateway has it now.
async fn read_again(
    ctx: &JobContext,
    subject: Subject,
    object: String,
) -> Result<Read, GatewayError> {
    ctx.partners
        .run(move |p| {
            Box::pin(async move {
                let gw = &p.payment;
                let mut read = match subject {
                    Subject::Intent => return Ok(fact::intent(&final_intent(gw, &object).await?)),
                    Subject::Charge => fact::charge(&gw.charge_object(&object).await?),
                    Subject::Refund => fact::refund(&gw.refund_object(&object).await?),
                    Subject::Dispute => fact::dispute(&gw.dispute(&object).await?),
                };
                // Charges, refunds and disputes name their intent, whose
                // metadata names the order: one more read on rare events
                // keeps orders free of an index on the intent id.
                if let (None, Some(intent)) = (read.order_id, read.intent_id.as_deref()) {
                    read.order_id = fact::order_of(&gw.intent(intent).await?);
                }
                Ok(read)
            })
        })
        .await
        .map_err(|e| GatewayError::Transport(e.to_string()))?
}

/// The intent as it stands now; one that failed and awaits a new payment
/// method is cancelled first, so the order's failure is final: a customer
/// retrying 3-D Secure with the same client secret cannot charge an order
/// that already failed.
async fn final_intent(
    gw: &crate::partners::payment::PaymentGateway,
    intent: &str,
) -> Result<serde_json::Value, GatewayError> {
    let body = gw.intent(intent).await?;
    if body["status"] != crate::partners::payment::REQUIRES_PAYMENT_METHOD {
        return Ok(body);
    }
    gw.cancel_intent(intent).await?;
    gw.intent(intent).await
}

/// Applies `read` to its order under the order's row lock and marks event
/// `id` processed, one transaction: the order and whether it was paid now,
/// or `None` (nothing changed) if no recorded order has this payment.
fn apply(
    conn: &mut diesel::PgConnection,
    id: &str,
    order_hint: Option<Uuid>,
    read: &Read,
) -> Result<Option<(Uuid, bool)>, DbError> {
    use diesel::Connection;
    conn.transaction(|c| {
        crate::db::events::act_as(c, &crate::domain::actor::Actor::gateway())?;
        let Some(order) = read.order_id.or(order_hint) else {
            return Ok(None);
        };
        let Some(recorded) = orders::lock_for_gateway(c, order)? else {
            return Ok(None);
        };
        // Money on an intent the order does not hold is not the order's
        // charge: left for ops as unmatched.
        let theirs = matches!(read.fact, Fact::Intent(_))
            || recorded.is_none()
            || recorded == read.intent_id;
        if !theirs {
            return Ok(None);
        }
        let paid = match &read.fact {
            Fact::Intent(ChargeOutcome::Unconfirmed { .. }) => false,
            Fact::Intent(outcome) => {
                orders::settle_payment(c, order, &outcome.payment_result(), None)?
                    .is_some_and(|row| row.status == OrderStatus::Paid)
            }
            Fact::Refunded => orders::record_gateway_refund(c, order).map(|_| false)?,
            Fact::RefundFailed { refund_id } => {
                orders::record_refund_failed(c, order, refund_id).map(|_| false)?
            }
            Fact::Dispute(d) => orders::record_dispute(c, order, d).map(|_| false)?,
            Fact::RefundFine | Fact::Nothing => false,
        };
        store::finish(c, id, GatewayEventStatus::Processed, Some(order), None)?;
        Ok(Some((order, paid)))
    })
}

async fn finish(
    ctx: &JobContext,
    due: Due,
    status: GatewayEventStatus,
    order: Option<Uuid>,
    why: Option<&'static str>,
) -> Outcome {
    let id = due.id;
    let done = db::unit(&ctx.pool, move |c| {
        store::finish(c, &id, status, order, why)
    })
    .await;
    if let Err(e) = done {
        tracing::warn!(error = %e, "gateway event not marked; its lease will run out");
    }
    match status {
        GatewayEventStatus::Unmatched => Outcome::Unmatched,
        GatewayEventStatus::Failed => Outcome::Failed,
        _ => Outcome::Processed,
    }
}

async fn retry(ctx: &JobContext, opts: &Processing, due: Due, why: &str) -> Outcome {
    let shift = due.attempts.clamp(1, 20) as u32 - 1;
    let delay = opts.base.saturating_mul(1 << shift).min(opts.cap);
    let (id, why) = (due.id, why.to_owned());
    tracing::info!(retry_in_ms = delay.as_millis() as u64, reason = %why, "gateway event retried");
    let kept = db::unit(&ctx.pool, move |c| store::retry_in(c, &id, delay, &why)).await;
    if let Err(e) = kept {
        tracing::warn!(error = %e, "gateway event retry not recorded; its lease will run out");
    }
    Outcome::Retried
}
