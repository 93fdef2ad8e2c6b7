//! Delivery queries: the attempts of a paid order's shipment, and the
//! forward moves its progress at the shipping partner calls for. Each locks
//! the order row before the outbox row, the order every transaction here
//! takes them in.

use diesel::prelude::*;
use uuid::Uuid;

use super::orders::items_of;
use super::schema::orders;
use super::DbError;
use crate::domain::{DeliveryStatus, OrderStatus};

/// What a shipment request needs, read when a delivery attempt starts.
#[derive(Debug, Clone)]
pub struct DeliveryStart {
    /// This attempt's number (1 for the first).
    pub attempt: i32,
    pub address: serde_json::Value,
    pub items: Vec<(String, i32)>,
}

/// How a woken delivery job starts.
#[derive(Debug, Clone)]
pub enum DeliveryBegin {
    /// Make attempt `start.attempt` now.
    Start(DeliveryStart),
    /// A duplicate wake-up: another job holds the attempt, or the next one
    /// is not due yet. Nothing to do.
    NotYet,
    /// The order is not (or no longer) awaiting a shipment.
    Nothing,
}

/// Starts a delivery attempt on a paid order for the job `task`: marks the
/// delivery `requested` (so the order cannot be cancelled while the
/// shipment is being created), counts the attempt, and claims the owed
/// delivery's attempt (see [`outbox::claim`]); a claim that is not granted
/// rolls the whole start back. The order row is locked first and the owed
/// row second, the order every transaction here takes them in (cancel,
/// settle, record): the other way round, a cancel and a delivery deadlock.
///
/// [`outbox::claim`]: super::outbox::claim
pub fn begin_delivery(
    conn: &mut PgConnection,
    id: Uuid,
    task: &str,
    lease: std::time::Duration,
) -> Result<DeliveryBegin, DbError> {
    use super::outbox::{self, Claim, OutboxKind};
    /// Why a start was rolled back.
    enum Undo {
        Claim(DeliveryBegin),
        Db(DbError),
    }
    impl From<diesel::result::Error> for Undo {
        fn from(e: diesel::result::Error) -> Self {
            Undo::Db(e.into())
        }
    }
    impl From<DbError> for Undo {
        fn from(e: DbError) -> Self {
            Undo::Db(e)
        }
    }
    let started = conn.transaction(|conn| {
        let started: Option<(i32, serde_json::Value)> = diesel::update(
            orders::table
                .find(id)
                .filter(orders::status.eq(OrderStatus::Paid))
                .filter(
                    orders::delivery_status
                        .eq_any([DeliveryStatus::Queued, DeliveryStatus::Requested]),
                ),
        )
        .set((
            orders::delivery_status.eq(DeliveryStatus::Requested),
            orders::delivery_attempts.eq(orders::delivery_attempts + 1),
            orders::updated_at.eq(diesel::dsl::now),
        ))
        .returning((orders::delivery_attempts, orders::shipping_address))
        .get_result(conn)
        .optional()?;
        let Some((attempt, address)) = started else {
            // Not awaiting a shipment (shipped, cancelled, failed, gone).
            outbox::done(conn, OutboxKind::Deliver, id)?;
            return Ok(DeliveryBegin::Nothing);
        };
        match outbox::claim(conn, OutboxKind::Deliver, id, task, lease)? {
            Claim::Run { .. } => {}
            Claim::NotYet => return Err(Undo::Claim(DeliveryBegin::NotYet)),
            Claim::NotOwed => return Err(Undo::Claim(DeliveryBegin::Nothing)),
        }
        let items = items_of(conn, &[id])?
            .into_iter()
            .map(|i| (i.sku, i.quantity))
            .collect();
        Ok(DeliveryBegin::Start(DeliveryStart {
            attempt,
            address,
            items,
        }))
    });
    match started {
        Ok(begin) | Err(Undo::Claim(begin)) => Ok(begin),
        Err(Undo::Db(e)) => Err(e),
    }
}

/// Records the shipment the partner created: `paid → fulfilling`, and the
/// outbox delivery is settled. Returns false if the order was not `paid`.
pub fn record_shipment(
    conn: &mut PgConnection,
    id: Uuid,
    shipment_id: &str,
    tracking: Option<&str>,
) -> Result<bool, DbError> {
    conn.transaction(|conn| {
        let n = diesel::update(
            orders::table
                .find(id)
                .filter(orders::status.eq(OrderStatus::Paid)),
        )
        .set((
            orders::status.eq(OrderStatus::Fulfilling),
            orders::delivery_status.eq(DeliveryStatus::Requested),
            orders::shipment_id.eq(shipment_id),
            orders::tracking_number.eq(tracking),
            orders::delivery_last_error.eq(None::<String>),
            orders::delivery_outcome_unknown.eq(false),
            orders::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)?;
        super::outbox::done(conn, super::outbox::OutboxKind::Deliver, id)?;
        Ok(n == 1)
    })
}

/// How a failed delivery attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptFailure {
    /// No answer came (timeout, 5xx, broken connection): the shipment may
    /// exist at the partner.
    pub outcome_unknown: bool,
    /// When the next attempt is due; `None` gives up (`failed`).
    pub retry_in: Option<std::time::Duration>,
}

/// Records a failed attempt: back to `queued` with the next attempt due
/// (the outbox row says when), or `failed` for good (the outbox delivery is
/// then settled; ops may retry it).
pub fn record_delivery_error(
    conn: &mut PgConnection,
    id: Uuid,
    error: &str,
    failure: AttemptFailure,
) -> Result<(), DbError> {
    use super::outbox::{self, OutboxKind};
    let next = match failure.retry_in {
        Some(_) => DeliveryStatus::Queued,
        None => DeliveryStatus::Failed,
    };
    conn.transaction(|conn| {
        diesel::update(
            orders::table
                .find(id)
                .filter(orders::status.eq(OrderStatus::Paid))
                .filter(orders::delivery_status.eq(DeliveryStatus::Requested)),
        )
        .set((
            orders::delivery_status.eq(next),
            orders::delivery_last_error.eq(error),
            orders::delivery_outcome_unknown.eq(failure.outcome_unknown),
            orders::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)?;
        match failure.retry_in {
            Some(delay) => outbox::retry_in(conn, OutboxKind::Deliver, id, delay)?,
            None => outbox::done(conn, OutboxKind::Deliver, id)?,
        }
        Ok(())
    })
}

/// Ops retry of a failed delivery: back to `queued` with a fresh attempt
/// budget, delivery owed again. False when the delivery had not failed.
pub fn requeue_failed_delivery(conn: &mut PgConnection, id: Uuid) -> Result<bool, DbError> {
    conn.transaction(|conn| {
        let n = diesel::update(
            orders::table
                .find(id)
                .filter(orders::status.eq(OrderStatus::Paid))
                .filter(orders::delivery_status.eq(DeliveryStatus::Failed)),
        )
        .set((
            orders::delivery_status.eq(DeliveryStatus::Queued),
            orders::delivery_attempts.eq(0),
            orders::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)?;
        if n == 1 {
            super::outbox::add(conn, super::outbox::OutboxKind::Deliver, id)?;
        }
        Ok(n == 1)
    })
}

/// A forward move of an order that the shipping partner's progress calls
/// for (see `board::merge::progress`): to `to` with delivery `delivery`,
/// from any of `from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advance {
    pub to: OrderStatus,
    pub delivery: DeliveryStatus,
    pub from: &'static [OrderStatus],
}

/// Applies the moves, each only from its `from` statuses (so only forward).
/// Returns the orders that moved, with their new status.
pub fn advance(
    conn: &mut PgConnection,
    moves: &[(Uuid, Advance)],
) -> Result<std::collections::HashMap<Uuid, OrderStatus>, DbError> {
    let mut moved = std::collections::HashMap::new();
    for (id, m) in moves {
        let n = diesel::update(orders::table.find(id).filter(orders::status.eq_any(m.from)))
            .set((
                orders::status.eq(m.to),
                orders::delivery_status.eq(m.delivery),
                orders::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn)?;
        if n == 1 {
            moved.insert(*id, m.to);
        }
    }
    Ok(moved)
}
