//! Deliver: create the shipment of a paid order at the shipping partner.
//!
//! Pushed by the purchase path right after the order is marked paid (the
//! `deliver` outbox row is committed with that update), by the sweeper for
//! outbox rows that linger, by itself for a retry, and by ops' retry-delivery.
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
use std::time::Duration;

use apalis::prelude::{AbortError, BoxDynError, Data, TaskId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::db;
use crate::db::group::Group;
use crate::db::shipments::{self, AttemptFailure, BeginRequest, DeliveryBegin, ShipmentRecord};
use crate::db::DbPool;
use crate::jobs::{JobContext, JobKind, OutboxJob};
use crate::partners::shipping::{Shipment, ShippingError};

/// The deliver jobs' two units of work, each shared by every job waiting
/// for it at that moment: starting attempts and recording shipments.
#[derive(Clone)]
pub struct DeliveryUnits {
    begin: Group<BeginRequest, DeliveryBegin>,
    record: Group<ShipmentRecord, bool>,
}

/// Units of each kind at once, and requests per unit.
const UNITS_IN_FLIGHT: usize = 4;
const PER_UNIT: usize = 64;

impl DeliveryUnits {
    /// Starts the runners on the current runtime; `lease` is the attempt
    /// lease (see [`RetryPolicy`](crate::jobs::RetryPolicy)).
    pub fn start(pool: &DbPool, lease: Duration) -> Self {
        DeliveryUnits {
            begin: Group::start(
                pool.clone(),
                UNITS_IN_FLIGHT,
                PER_UNIT,
                Arc::new(move |c, reqs| shipments::begin_deliveries(c, reqs, lease)),
            ),
            record: Group::start(
                pool.clone(),
                UNITS_IN_FLIGHT,
                PER_UNIT,
                Arc::new(shipments::record_shipments),
            ),
        }
    }
}

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

impl OutboxJob for Deliver {
    const OUTBOX: crate::db::outbox::OutboxKind = crate::db::outbox::OutboxKind::Deliver;
    fn order_id(&self) -> Uuid {
        self.order_id
    }
}

pub async fn run(
    job: Deliver,
    ctx: Data<Arc<JobContext>>,
    task: TaskId,
) -> Result<(), BoxDynError> {
    let observer = Arc::clone(&ctx);
    observer
        .observe(Deliver::QUEUE, execute(job, ctx, task.to_string()))
        .await
}

#[tracing::instrument(name = "job.deliver", skip_all, fields(order.id = %job.order_id))]
async fn execute(
    job: Deliver,
    ctx: Data<Arc<JobContext>>,
    task: String,
) -> Result<(), BoxDynError> {
    let id = job.order_id;
    let begin = ctx
        .deliveries
        .begin
        .call(BeginRequest { order_id: id, task })
        .await?;
    let start = match begin {
        DeliveryBegin::Start(start) => start,
        DeliveryBegin::NotYet => {
            tracing::debug!("another wake-up holds this delivery's attempt, or it is not due");
            return Ok(());
        }
        DeliveryBegin::Nothing => {
            tracing::debug!("order not awaiting a shipment; nothing to do");
            return Ok(());
        }
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
    record_attempt(&ctx, id, attempt, result).await
}

/// Records how attempt `attempt` ended: the shipment, a retry with its
/// wake-up, or the failure for good.
async fn record_attempt(
    ctx: &JobContext,
    id: Uuid,
    attempt: i32,
    result: Result<Shipment, ShippingError>,
) -> Result<(), BoxDynError> {
    match result {
        Ok(shipment) => {
            let record = ShipmentRecord {
                order_id: id,
                shipment_id: shipment.id,
                tracking: shipment.tracking_number,
            };
            ctx.deliveries.record.call(record).await?;
            tracing::info!(delivery.attempt = attempt, "shipment created");
            Ok(())
        }
        Err(ShippingError::Permanent { message }) => {
            let error = message.clone();
            let failure = AttemptFailure {
                outcome_unknown: false,
                retry_in: None,
            };
            db::unit(&ctx.pool, move |c| {
                shipments::record_delivery_error(c, id, attempt, &error, failure)
            })
            .await?;
            tracing::warn!(delivery.attempt = attempt, error = %message, "delivery failed for good");
            Err(AbortError::new(ShippingError::Permanent { message }).into())
        }
        Err(ShippingError::Retryable {
            message,
            retry_after,
            outcome_unknown,
        }) => {
            let give_up = attempt >= ctx.policy.max_attempts;
            let delay = ctx.policy.backoff(attempt, retry_after);
            let failure = AttemptFailure {
                outcome_unknown,
                retry_in: (!give_up).then_some(delay),
            };
            let error = message.clone();
            db::unit(&ctx.pool, move |c| {
                shipments::record_delivery_error(c, id, attempt, &error, failure)
            })
            .await?;
            if give_up {
                tracing::warn!(delivery.attempt = attempt, error = %message, "delivery failed after the last attempt");
                return Err(AbortError::new(ShippingError::Retryable {
                    message,
                    retry_after,
                    outcome_unknown,
                })
                .into());
            }
            tracing::info!(delivery.attempt = attempt, retry_in_ms = delay.as_millis() as u64, error = %message, "delivery will be retried");
            ctx.wake_after(Deliver { order_id: id }, attempt, delay)
                .await;
            Ok(())
        }
    }
}
