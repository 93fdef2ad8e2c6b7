//! Delivery queries: the attempts of a paid order's shipment, and the
//! forward moves its progress at the shipping partner calls for. Each locks
//! the order row before the outbox row, the order every transaction here
//! takes them in.

use std::collections::{HashMap, HashSet};

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

/// A woken delivery job's request to start its attempt.
#[derive(Debug, Clone)]
pub struct BeginRequest {
    pub order_id: Uuid,
    /// The job's apalis task id (see [`outbox::claim`]).
    ///
    /// [`outbox::claim`]: super::outbox::claim
    pub task: String,
}

/// Starts delivery attempts on paid orders, one transaction for all of
/// `reqs`, answering each in order. For each order: it is locked first (in
/// id order, so concurrent batches and a cancel never deadlock), its outbox
/// row second, the order every transaction here takes them in. An order
/// not awaiting a shipment (shipped, cancelled, failed, gone) answers
/// `Nothing` and its outbox row goes; one awaiting it claims the attempt
/// (see [`outbox::claim`]): when granted, its delivery becomes `requested`
/// (so it cannot be cancelled while the shipment is made) and the attempt
/// is counted; when not, nothing changes and it answers `NotYet` (another
/// job holds the attempt, or it is not due) or `Nothing` (nothing owed).
///
/// [`outbox::claim`]: super::outbox::claim
pub fn begin_deliveries(
    conn: &mut PgConnection,
    reqs: &[BeginRequest],
    lease: std::time::Duration,
) -> Result<Vec<DeliveryBegin>, DbError> {
    use super::outbox::OutboxKind;
    use super::prepared::{ClaimMany, DropOutbox, LockDeliverable, StartDeliveries};
    conn.transaction(|conn| {
        let mut ids: Vec<Uuid> = reqs.iter().map(|r| r.order_id).collect();
        ids.sort_unstable();
        ids.dedup();
        let deliverable: HashSet<Uuid> = LockDeliverable { ids: &ids }
            .load::<Uuid>(conn)?
            .into_iter()
            .collect();
        let moot: Vec<Uuid> = ids
            .iter()
            .copied()
            .filter(|id| !deliverable.contains(id))
            .collect();
        if !moot.is_empty() {
            DropOutbox {
                kind: OutboxKind::Deliver,
                ids: &moot,
            }
            .execute(conn)?;
        }
        let asking: Vec<&BeginRequest> = reqs
            .iter()
            .filter(|r| deliverable.contains(&r.order_id))
            .collect();
        let claim_ids: Vec<Uuid> = asking.iter().map(|r| r.order_id).collect();
        let claim_tasks: Vec<&str> = asking.iter().map(|r| r.task.as_str()).collect();
        let granted: HashMap<Uuid, String> = ClaimMany {
            kind: OutboxKind::Deliver,
            ids: &claim_ids,
            tasks: &claim_tasks,
            lease_secs: lease.as_secs_f64(),
        }
        .load::<(Uuid, Option<String>, i32)>(conn)?
        .into_iter()
        .filter_map(|(id, task, _)| Some((id, task?)))
        .collect();
        let started_ids: Vec<Uuid> = granted.keys().copied().collect();
        let mut started: HashMap<Uuid, (i32, serde_json::Value)> = HashMap::new();
        let mut items: HashMap<Uuid, Vec<(String, i32)>> = HashMap::new();
        if !started_ids.is_empty() {
            for (id, attempt, address) in
                (StartDeliveries { ids: &started_ids })
                    .load::<(Uuid, i32, serde_json::Value)>(conn)?
            {
                started.insert(id, (attempt, address));
            }
            for i in items_of(conn, &started_ids)? {
                items
                    .entry(i.order_id)
                    .or_default()
                    .push((i.sku, i.quantity));
            }
        }
        let waiting = still_owed(conn, &claim_ids, &granted)?;
        Ok(reqs
            .iter()
            .map(|r| answer(r, &granted, &mut started, &mut items, &waiting))
            .collect())
    })
}

/// One request's answer: its start if its task holds the granted attempt
/// (the first such request only), else a duplicate or nothing owed.
fn answer(
    r: &BeginRequest,
    granted: &HashMap<Uuid, String>,
    started: &mut HashMap<Uuid, (i32, serde_json::Value)>,
    items: &mut HashMap<Uuid, Vec<(String, i32)>>,
    waiting: &HashSet<Uuid>,
) -> DeliveryBegin {
    let id = r.order_id;
    if granted.get(&id) == Some(&r.task) {
        if let Some((attempt, address)) = started.remove(&id) {
            return DeliveryBegin::Start(DeliveryStart {
                attempt,
                address,
                items: items.remove(&id).unwrap_or_default(),
            });
        }
    }
    if waiting.contains(&id) {
        DeliveryBegin::NotYet
    } else {
        DeliveryBegin::Nothing
    }
}

/// Of `ids`, the orders whose delivery is owed: granted now, or owed but
/// not claimable by this request (a duplicate wake-up).
fn still_owed(
    conn: &mut PgConnection,
    ids: &[Uuid],
    granted: &HashMap<Uuid, String>,
) -> Result<HashSet<Uuid>, DbError> {
    use super::outbox::OutboxKind;
    use super::schema::outbox::dsl as w;
    let ungranted: Vec<Uuid> = ids
        .iter()
        .copied()
        .filter(|id| !granted.contains_key(id))
        .collect();
    let mut owed: HashSet<Uuid> = granted.keys().copied().collect();
    if !ungranted.is_empty() {
        owed.extend(
            w::outbox
                .filter(w::kind.eq(OutboxKind::Deliver))
                .filter(w::order_id.eq_any(&ungranted))
                .select(w::order_id)
                .load::<Uuid>(conn)?,
        );
    }
    Ok(owed)
}

/// A shipment the partner created, to record.
#[derive(Debug, Clone)]
pub struct ShipmentRecord {
    pub order_id: Uuid,
    pub shipment_id: String,
    pub tracking: Option<String>,
}

/// Records the shipments the partner created, one transaction for all:
/// each `paid` order moves to `fulfilling` with its shipment, and its
/// outbox delivery is done. Answers, per record, whether its order moved
/// (false if it was not `paid`).
pub fn record_shipments(
    conn: &mut PgConnection,
    records: &[ShipmentRecord],
) -> Result<Vec<bool>, DbError> {
    use super::outbox::OutboxKind;
    use super::prepared::{DropOutbox, RecordShipments};
    let mut sorted: Vec<&ShipmentRecord> = records.iter().collect();
    sorted.sort_unstable_by_key(|r| r.order_id);
    sorted.dedup_by_key(|r| r.order_id);
    let ids: Vec<Uuid> = sorted.iter().map(|r| r.order_id).collect();
    let shipment_ids: Vec<&str> = sorted.iter().map(|r| r.shipment_id.as_str()).collect();
    let tracking: Vec<Option<&str>> = sorted.iter().map(|r| r.tracking.as_deref()).collect();
    conn.transaction(|conn| {
        let moved: HashSet<Uuid> = RecordShipments {
            ids: &ids,
            shipment_ids: &shipment_ids,
            tracking: &tracking,
        }
        .load::<Uuid>(conn)?
        .into_iter()
        .collect();
        DropOutbox {
            kind: OutboxKind::Deliver,
            ids: &ids,
        }
        .execute(conn)?;
        Ok(records
            .iter()
            .map(|r| moved.contains(&r.order_id))
            .collect())
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

/// Records failed attempt `attempt`: back to `queued` with the next attempt
/// due (the outbox row says when), or `failed` for good (the outbox delivery
/// is then settled; ops may retry it). Fenced by attempt: an answer from an
/// attempt that a later one replaced changes nothing. An unknown outcome is
/// never forgotten by a later definite "not now" (a 429, a refused
/// connection): only a recorded shipment clears it.
pub fn record_delivery_error(
    conn: &mut PgConnection,
    id: Uuid,
    attempt: i32,
    error: &str,
    failure: AttemptFailure,
) -> Result<(), DbError> {
    use super::outbox::{self, OutboxKind};
    let next = match failure.retry_in {
        Some(_) => DeliveryStatus::Queued,
        None => DeliveryStatus::Failed,
    };
    conn.transaction(|conn| {
        let n = diesel::update(
            orders::table
                .find(id)
                .filter(orders::status.eq(OrderStatus::Paid))
                .filter(orders::delivery_status.eq(DeliveryStatus::Requested))
                .filter(orders::delivery_attempts.eq(attempt)),
        )
        .set((
            orders::delivery_status.eq(next),
            orders::delivery_last_error.eq(error),
            orders::delivery_outcome_unknown.eq(orders::delivery_outcome_unknown.or(failure
                .outcome_unknown
                .into_sql::<diesel::sql_types::Bool>())),
            orders::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)?;
        if n == 0 {
            // A stale attempt (a later one started) or a settled delivery:
            // the live attempt, or nothing, owns the outbox row.
            return Ok(());
        }
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
) -> Result<HashMap<Uuid, OrderStatus>, DbError> {
    let mut moved = HashMap::new();
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
