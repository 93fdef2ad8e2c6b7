//! Deliver: create the shipment of a paid order at the shipping partner.
//!
//! Pushed by the purchase path right after the order is marked paid (the
//! `deliver` owed-work row is committed with that update), by the sweeper for
//! owed rows that linger, by itself for a retry, and by ops' retry-delivery.
//!
//! Safe twice, or concurrently: the partner keys shipments by `reference` =
//! order id (plus an Idempotency-Key), so it never makes two; the order moves
//! `paid → fulfilling` by a conditional update; an order that is no longer
//! awaiting a shipment makes the job a no-op.
//!
//! Retries: timeouts, 5xx and 429 are retried with exponential backoff and
//! jitter (honouring `Retry-After`) up to `RetryPolicy::max_attempts`, counted
//! on the order row; a 4xx that cannot succeed fails at once. A failed
//! delivery shows `failed` with `attempts` and `last_error` on the order, and
//! the job ends with `AbortError` (dead in Redis, no backend retries).

use std::sync::Arc;

use apalis::prelude::{AbortError, BoxDynError, Data};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{JobContext, JobKind};
use crate::db::{self, orders, owed};
use crate::partners::shipping::ShippingError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deliver {
    pub order_id: Uuid,
}

impl JobKind for Deliver {
    const QUEUE: &'static str = "deliver";
    fn task_id(&self) -> String {
        format!("deliver-{}", self.order_id)
    }
}

pub async fn run(job: Deliver, ctx: Data<Arc<JobContext>>) -> Result<(), BoxDynError> {
    let observer = Arc::clone(&ctx);
    observer.observe(Deliver::QUEUE, execute(job, ctx)).await
}

#[tracing::instrument(name = "job.deliver", skip_all, fields(order.id = %job.order_id))]
async fn execute(job: Deliver, ctx: Data<Arc<JobContext>>) -> Result<(), BoxDynError> {
    let id = job.order_id;
    let Some(start) = db::unit(&ctx.pool, move |c| orders::begin_delivery(c, id)).await? else {
        // Shipped already, cancelled, failed, or gone: nothing is owed.
        db::unit(&ctx.pool, move |c| {
            owed::settle(c, owed::OwedKind::Deliver, id)
        })
        .await?;
        tracing::debug!("order not awaiting a shipment; nothing to do");
        return Ok(());
    };
    let attempt = start.attempt;
    let result = ctx
        .partners
        .run(move |p| {
            Box::pin(async move {
                p.shipping
                    .create_shipment(id, &start.address, &start.items)
                    .await
            })
        })
        .await?;
    match result {
        Ok(shipment) => {
            let tracking = shipment.tracking_number.clone();
            db::unit(&ctx.pool, move |c| {
                orders::record_shipment(c, id, &shipment.id, tracking.as_deref())
            })
            .await?;
            tracing::info!(delivery.attempt = attempt, "shipment created");
            Ok(())
        }
        Err(ShippingError::Permanent { message }) => {
            let error = message.clone();
            db::unit(&ctx.pool, move |c| {
                orders::record_delivery_error(c, id, &error, true)
            })
            .await?;
            tracing::warn!(delivery.attempt = attempt, error = %message, "delivery failed for good");
            Err(AbortError::new(ShippingError::Permanent { message }).into())
        }
        Err(ShippingError::Retryable {
            message,
            retry_after,
        }) => {
            let give_up = attempt >= ctx.policy.max_attempts;
            let error = message.clone();
            db::unit(&ctx.pool, move |c| {
                orders::record_delivery_error(c, id, &error, give_up)
            })
            .await?;
            if give_up {
                tracing::warn!(delivery.attempt = attempt, error = %message, "delivery failed after the last attempt");
                return Err(AbortError::new(ShippingError::Retryable {
                    message,
                    retry_after,
                })
                .into());
            }
            let delay = ctx.policy.backoff(attempt, retry_after);
            tracing::info!(delivery.attempt = attempt, retry_in_ms = delay.as_millis() as u64, error = %message, "delivery will be retried");
            ctx.queue
                .push_with(
                    Deliver { order_id: id },
                    format!("deliver-{id}-a{attempt}"),
                    delay,
                )
                .await?;
            Ok(())
        }
    }
}
