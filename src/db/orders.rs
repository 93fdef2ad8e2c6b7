//! Order queries. State changes are conditional updates (`WHERE status = …`)
//! so a transition happens at most once whoever attempts it.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::models::{OrderItemRow, OrderRow, OrderWithItems};
use super::schema::{order_items, orders};
use super::DbError;
use crate::domain::{DeliveryStatus, OrderStatus};

/// Inserts the order and its lines in one prepared statement.
pub fn insert(
    conn: &mut PgConnection,
    order: &OrderRow,
    items: &[OrderItemRow],
) -> Result<(), DbError> {
    super::prepared::InsertOrder {
        id: order.id,
        status: order.status,
        customer_email: &order.customer_email,
        customer_name: &order.customer_name,
        currency: &order.currency,
        total_cents: order.total_cents,
        shipping_address: &order.shipping_address,
        payment_method: &order.payment_method,
        at: order.created_at,
        line_nos: items.iter().map(|i| i.line_no).collect(),
        skus: items.iter().map(|i| i.sku.as_str()).collect(),
        names: items.iter().map(|i| i.name.as_str()).collect(),
        quantities: items.iter().map(|i| i.quantity).collect(),
        unit_prices: items.iter().map(|i| i.unit_price_cents).collect(),
        line_totals: items.iter().map(|i| i.line_total_cents).collect(),
    }
    .execute(conn)?;
    Ok(())
}

pub fn items_of(conn: &mut PgConnection, order_ids: &[Uuid]) -> Result<Vec<OrderItemRow>, DbError> {
    Ok(order_items::table
        .filter(order_items::order_id.eq_any(order_ids))
        .order((order_items::order_id, order_items::line_no))
        .select(OrderItemRow::as_select())
        .load(conn)?)
}

pub fn find(conn: &mut PgConnection, id: Uuid) -> Result<Option<OrderWithItems>, DbError> {
    let Some(order) = orders::table
        .find(id)
        .select(OrderRow::as_select())
        .first(conn)
        .optional()?
    else {
        return Ok(None);
    };
    let items = items_of(conn, &[id])?;
    Ok(Some(OrderWithItems { order, items }))
}

/// How a charge attempt ended, as recorded on the order.
#[derive(Debug, Clone)]
pub enum PaymentResult<'a> {
    Paid {
        intent_id: &'a str,
        gateway_status: &'a str,
    },
    Failed {
        intent_id: Option<&'a str>,
        gateway_status: Option<&'a str>,
        decline_code: &'a str,
    },
    /// Outcome unknown (timeout, gateway error): the order stays
    /// `payment_pending` for reconciliation.
    Unknown {
        intent_id: Option<&'a str>,
        gateway_status: Option<&'a str>,
    },
}

/// The columns a payment result writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaymentColumns<'a> {
    pub status: OrderStatus,
    /// `None` keeps what is stored.
    pub intent_id: Option<&'a str>,
    /// `None` keeps what is stored.
    pub gateway_status: Option<&'a str>,
    pub decline_code: Option<&'a str>,
    /// `None` keeps what is stored.
    pub delivery_status: Option<DeliveryStatus>,
}

impl<'a> PaymentResult<'a> {
    pub fn columns(&self) -> PaymentColumns<'a> {
        match *self {
            PaymentResult::Paid {
                intent_id,
                gateway_status,
            } => PaymentColumns {
                status: OrderStatus::Paid,
                intent_id: Some(intent_id),
                gateway_status: Some(gateway_status),
                decline_code: None,
                delivery_status: Some(DeliveryStatus::Queued),
            },
            PaymentResult::Failed {
                intent_id,
                gateway_status,
                decline_code,
            } => PaymentColumns {
                status: OrderStatus::PaymentFailed,
                intent_id,
                gateway_status,
                decline_code: Some(decline_code),
                delivery_status: None,
            },
            PaymentResult::Unknown {
                intent_id,
                gateway_status,
            } => PaymentColumns {
                status: OrderStatus::PaymentPending,
                intent_id,
                gateway_status,
                decline_code: None,
                delivery_status: None,
            },
        }
    }
}

/// A position in the newest-first listing: the last row of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

/// One page of orders, newest first, strictly after `after`.
pub fn list(
    conn: &mut PgConnection,
    status: Option<OrderStatus>,
    after: Option<Cursor>,
    limit: i64,
) -> Result<Vec<OrderWithItems>, DbError> {
    let mut query = orders::table.select(OrderRow::as_select()).into_boxed();
    if let Some(s) = status {
        query = query.filter(orders::status.eq(s));
    }
    if let Some(c) = after {
        // Row comparison (created_at, id) < (c.created_at, c.id), spelled out
        // so PostgreSQL can use the (created_at DESC, id DESC) index.
        query = query.filter(
            orders::created_at
                .lt(c.created_at)
                .or(orders::created_at.eq(c.created_at).and(orders::id.lt(c.id))),
        );
    }
    let rows: Vec<OrderRow> = query
        .order((orders::created_at.desc(), orders::id.desc()))
        .limit(limit)
        .load(conn)?;
    with_items(conn, rows)
}

/// Attaches their lines to `rows` (one query), keeping the rows' order.
fn with_items(
    conn: &mut PgConnection,
    rows: Vec<OrderRow>,
) -> Result<Vec<OrderWithItems>, DbError> {
    let ids: Vec<Uuid> = rows.iter().map(|o| o.id).collect();
    let mut by_order: std::collections::HashMap<Uuid, Vec<OrderItemRow>> =
        std::collections::HashMap::new();
    for item in items_of(conn, &ids)? {
        by_order.entry(item.order_id).or_default().push(item);
    }
    Ok(rows
        .into_iter()
        .map(|order| {
            let items = by_order.remove(&order.id).unwrap_or_default();
            OrderWithItems { order, items }
        })
        .collect())
}

/// Records a charge outcome on a `payment_pending` order and owes its
/// delivery when paid, as one prepared statement. Returns the order as it is
/// now, or `None` (and changes nothing) if it had already left
/// `payment_pending`.
pub fn settle_payment(
    conn: &mut PgConnection,
    id: Uuid,
    result: &PaymentResult<'_>,
) -> Result<Option<OrderRow>, DbError> {
    let cols = result.columns();
    Ok(super::prepared::SettlePayment {
        id,
        status: cols.status,
        intent_id: cols.intent_id,
        gateway_status: cols.gateway_status,
        decline_code: cols.decline_code,
        delivery_status: cols.delivery_status,
        owe_delivery: cols.status == OrderStatus::Paid,
    }
    .get_result(conn)
    .optional()?)
}

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
/// delivery's attempt (see [`owed::claim`]); a claim that is not granted
/// rolls the whole start back. The order row is locked first and the owed
/// row second, the order every transaction here takes them in (cancel,
/// settle, record): the other way round, a cancel and a delivery deadlock.
///
/// [`owed::claim`]: super::owed::claim
pub fn begin_delivery(
    conn: &mut PgConnection,
    id: Uuid,
    task: &str,
    lease: std::time::Duration,
) -> Result<DeliveryBegin, DbError> {
    use super::owed::{self, Claim, OwedKind};
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
            owed::settle(conn, OwedKind::Deliver, id)?;
            return Ok(DeliveryBegin::Nothing);
        };
        match owed::claim(conn, OwedKind::Deliver, id, task, lease)? {
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
/// owed delivery is settled. Returns false if the order was not `paid`.
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
        super::owed::settle(conn, super::owed::OwedKind::Deliver, id)?;
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
/// (the owed row says when), or `failed` for good (the owed delivery is
/// then settled; ops may retry it).
pub fn record_delivery_error(
    conn: &mut PgConnection,
    id: Uuid,
    error: &str,
    failure: AttemptFailure,
) -> Result<(), DbError> {
    use super::owed::{self, OwedKind};
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
            Some(delay) => owed::retry_in(conn, OwedKind::Deliver, id, delay)?,
            None => owed::settle(conn, OwedKind::Deliver, id)?,
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
            super::owed::owe(conn, super::owed::OwedKind::Deliver, id)?;
        }
        Ok(n == 1)
    })
}

/// Flags the order for ops (`attention`), once: the first reason stays.
pub fn flag_attention(
    conn: &mut PgConnection,
    id: Uuid,
    why: crate::domain::Attention,
) -> Result<(), DbError> {
    diesel::update(orders::table.find(id).filter(orders::attention.is_null()))
        .set((
            orders::attention.eq(why),
            orders::attention_since.eq(diesel::dsl::now),
        ))
        .execute(conn)?;
    Ok(())
}

/// The gateway status recorded on an order once its charge is refunded.
pub const REFUNDED: &str = "refunded";

/// Records the refund of a cancelled order's charge.
pub fn record_refund(conn: &mut PgConnection, id: Uuid, intent_id: &str) -> Result<(), DbError> {
    diesel::update(
        orders::table
            .find(id)
            .filter(orders::status.eq(OrderStatus::Cancelled)),
    )
    .set((
        orders::payment_intent_id.eq(intent_id),
        orders::payment_status.eq(REFUNDED),
        orders::attention.eq(None::<crate::domain::Attention>),
        orders::attention_since.eq(None::<chrono::DateTime<Utc>>),
        orders::updated_at.eq(diesel::dsl::now),
    ))
    .execute(conn)?;
    Ok(())
}

/// Why an order could not be cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelRefusal {
    NotFound,
    InvalidState,
    /// A delivery attempt got no answer: the shipment may exist.
    DeliveryOutcomeUnknown,
}

/// What a cancel did: the order's intent (for an inline refund) and whether
/// it had been paid.
#[derive(Debug, Clone)]
pub struct Cancelled {
    pub was_paid: bool,
    pub intent_id: Option<String>,
}

/// Cancels a `payment_pending` order, or a `paid` one whose shipment is not
/// being or has not been created, and owes the refund check — one
/// transaction, the row locked, so concurrent cancels cancel (and refund)
/// once. The delivery owed for a paid order is settled: it must not ship.
pub fn cancel(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Result<Cancelled, CancelRefusal>, DbError> {
    conn.transaction(|conn| {
        let row: Option<(OrderStatus, DeliveryStatus, Option<String>, bool)> = orders::table
            .find(id)
            .select((
                orders::status,
                orders::delivery_status,
                orders::payment_intent_id,
                orders::delivery_outcome_unknown,
            ))
            .for_update()
            .first(conn)
            .optional()?;
        let Some((status, delivery, intent_id, outcome_unknown)) = row else {
            return Ok(Err(CancelRefusal::NotFound));
        };
        if outcome_unknown && status == OrderStatus::Paid {
            return Ok(Err(CancelRefusal::DeliveryOutcomeUnknown));
        }
        let cancellable = status == OrderStatus::PaymentPending
            || (status == OrderStatus::Paid
                && matches!(
                    delivery,
                    DeliveryStatus::NotRequested | DeliveryStatus::Queued | DeliveryStatus::Failed
                ));
        if !cancellable {
            return Ok(Err(CancelRefusal::InvalidState));
        }
        diesel::update(orders::table.find(id))
            .set((
                orders::status.eq(OrderStatus::Cancelled),
                orders::delivery_status.eq(DeliveryStatus::NotRequested),
                orders::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn)?;
        super::owed::settle(conn, super::owed::OwedKind::Deliver, id)?;
        super::owed::owe(conn, super::owed::OwedKind::Refund, id)?;
        Ok(Ok(Cancelled {
            was_paid: status == OrderStatus::Paid,
            intent_id,
        }))
    })
}

/// Ids of the orders the status refresh covers (not delivered, cancelled or
/// payment_failed), newest first.
pub fn active_ids(conn: &mut PgConnection) -> Result<Vec<Uuid>, DbError> {
    Ok(orders::table
        .filter(orders::status.eq_any(OrderStatus::ACTIVE))
        .order((orders::created_at.desc(), orders::id.desc()))
        .select(orders::id)
        .load(conn)?)
}

/// Orders with their lines, in no particular order.
pub fn find_many(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<OrderWithItems>, DbError> {
    let rows: Vec<OrderRow> = orders::table
        .filter(orders::id.eq_any(ids))
        .select(OrderRow::as_select())
        .load(conn)?;
    with_items(conn, rows)
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
