//! Order queries. State changes are conditional updates (`WHERE status = …`)
//! so a transition happens at most once whoever attempts it.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::models::{OrderItemRow, OrderRow, OrderWithItems};
use super::schema::{order_items, orders};
use super::DbError;
use crate::domain::stuck::StuckRules;
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

pub fn exists(conn: &mut PgConnection, id: Uuid) -> Result<bool, DbError> {
    Ok(diesel::select(diesel::dsl::exists(orders::table.find(id))).get_result(conn)?)
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
    /// The customer must authenticate: the order stays `payment_pending`
    /// with the gateway's action for the storefront.
    Action {
        intent_id: &'a str,
        action: &'a serde_json::Value,
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
    /// `None` keeps what is stored while pending; settling clears it.
    pub action: Option<&'a serde_json::Value>,
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
                action: None,
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
                action: None,
            },
            PaymentResult::Action { intent_id, action } => PaymentColumns {
                status: OrderStatus::PaymentPending,
                intent_id: Some(intent_id),
                gateway_status: Some(REQUIRES_ACTION),
                decline_code: None,
                delivery_status: None,
                action: Some(action),
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
                action: None,
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

/// What a listing shows.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub status: Option<OrderStatus>,
    /// Only the orders these rules call stuck.
    pub stuck: Option<StuckRules>,
    /// Only orders with a dispute.
    pub disputed: bool,
    /// Only the orders `q` finds.
    pub search: Option<crate::domain::search::Search>,
    /// Only orders created at or after this instant.
    pub created_from: Option<DateTime<Utc>>,
    /// Only orders created before this instant.
    pub created_to: Option<DateTime<Utc>>,
}

/// One page of orders, newest first, strictly after `after`.
pub fn list(
    conn: &mut PgConnection,
    filter: ListFilter,
    after: Option<Cursor>,
    limit: i64,
) -> Result<Vec<OrderWithItems>, DbError> {
    let mut query = orders::table.select(OrderRow::as_select()).into_boxed();
    if let Some(s) = filter.status {
        query = query.filter(orders::status.eq(s));
    }
    if let Some(rules) = filter.stuck {
        let mut stuck: Box<
            dyn BoxableExpression<orders::table, diesel::pg::Pg, SqlType = diesel::sql_types::Bool>,
        > = Box::new(diesel::dsl::sql::<diesel::sql_types::Bool>("false"));
        let now = Utc::now();
        let awaiting = || orders::payment_status.is_not_distinct_from(REQUIRES_ACTION);
        for (status, cutoff) in rules.cutoffs(now) {
            let overstayed = orders::status
                .eq(status)
                .and(orders::status_since.lt(cutoff));
            stuck =
                match status {
                    // An order awaiting 3-D Secure has its own deadline.
                    OrderStatus::PaymentPending => Box::new(stuck.or(
                        overstayed.and(orders::payment_status.is_distinct_from(REQUIRES_ACTION)),
                    )),
                    _ => Box::new(stuck.or(overstayed)),
                };
        }
        if let Some(cutoff) = rules.awaiting_action_cutoff(now) {
            stuck = Box::new(
                stuck.or(orders::status
                    .eq(OrderStatus::PaymentPending)
                    .and(awaiting())
                    .and(orders::status_since.lt(cutoff))),
            );
        }
        query = query.filter(stuck);
    }
    if filter.disputed {
        query = query.filter(orders::dispute_id.is_not_null());
    }
    if let Some(from) = filter.created_from {
        query = query.filter(orders::created_at.ge(from));
    }
    if let Some(to) = filter.created_to {
        query = query.filter(orders::created_at.lt(to));
    }
    {
        use crate::domain::search::Search;
        match filter.search {
            None => {}
            Some(Search::Id { low, high }) => query = query.filter(orders::id.between(low, high)),
            Some(Search::Email(email)) => {
                query = query.filter(
                    diesel::dsl::sql::<diesel::sql_types::Text>("lower(customer_email)").eq(email),
                )
            }
            Some(Search::Tracking(t)) => query = query.filter(orders::tracking_number.eq(t)),
            Some(Search::Intent { intent, order }) => {
                query = query
                    .filter(orders::id.nullable().eq(order))
                    .filter(orders::payment_intent_id.eq(intent))
            }
        }
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

/// How many orders are stuck, by status (one index range each, and one
/// more for the orders awaiting 3-D Secure, which have their own deadline).
pub fn stuck_counts(
    conn: &mut PgConnection,
    rules: &StuckRules,
) -> Result<Vec<(OrderStatus, i64)>, DbError> {
    let now = Utc::now();
    rules
        .cutoffs(now)
        .into_iter()
        .map(|(status, cutoff)| {
            let overstayed = orders::table
                .filter(orders::status.eq(status))
                .filter(orders::status_since.lt(cutoff));
            if status != OrderStatus::PaymentPending {
                return Ok((status, overstayed.count().get_result(conn)?));
            }
            let other: i64 = overstayed
                .filter(orders::payment_status.is_distinct_from(REQUIRES_ACTION))
                .count()
                .get_result(conn)?;
            let awaiting: i64 = match rules.awaiting_action_cutoff(now) {
                Some(cutoff) => orders::table
                    .filter(orders::status.eq(status))
                    .filter(orders::payment_status.eq(REQUIRES_ACTION))
                    .filter(orders::status_since.lt(cutoff))
                    .count()
                    .get_result(conn)?,
                None => 0,
            };
            Ok((status, other + awaiting))
        })
        .collect()
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

/// Records a charge outcome on a `payment_pending` order, owes its delivery
/// when paid, and completes the Idempotency-Key `key` with the updated row,
/// as one prepared statement. Returns the order as it is now, or `None`
/// (and changes nothing) if it had already left `payment_pending`.
pub fn settle_payment(
    conn: &mut PgConnection,
    id: Uuid,
    result: &PaymentResult<'_>,
    key: Option<&str>,
) -> Result<Option<OrderRow>, DbError> {
    let cols = result.columns();
    Ok(super::prepared::SettlePayment {
        id,
        status: cols.status,
        intent_id: cols.intent_id,
        gateway_status: cols.gateway_status,
        decline_code: cols.decline_code,
        delivery_status: cols.delivery_status,
        action: cols.action,
        settles: cols.status != OrderStatus::PaymentPending,
        owe_delivery: cols.status == OrderStatus::Paid,
        key,
    }
    .get_result(conn)
    .optional()?)
}

pub use super::models::{REFUNDED, REFUND_FAILED, REQUIRES_ACTION, REQUIRES_CONFIRMATION};

/// Records the id of the order's new, unconfirmed intent while the order
/// is `payment_pending`: whether it was recorded (a cancelled or settled
/// order must not be charged).
pub fn record_intent(conn: &mut PgConnection, id: Uuid, intent_id: &str) -> Result<bool, DbError> {
    let n = diesel::update(
        orders::table
            .find(id)
            .filter(orders::status.eq(OrderStatus::PaymentPending))
            .filter(
                orders::payment_intent_id
                    .is_null()
                    .or(orders::payment_intent_id.eq(intent_id)),
            ),
    )
    .set((
        orders::payment_intent_id.eq(intent_id),
        orders::payment_status.eq(REQUIRES_CONFIRMATION),
        orders::updated_at.eq(diesel::dsl::now),
    ))
    .execute(conn)?;
    Ok(n == 1)
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

/// A dispute (chargeback) as the gateway reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispute {
    pub id: String,
    pub status: String,
    pub reason: Option<String>,
    pub due_by: Option<DateTime<Utc>>,
}

/// Records the refund orderflow made of a cancelled order's charge.
pub fn record_refund(
    conn: &mut PgConnection,
    id: Uuid,
    intent_id: &str,
    refund_id: &str,
) -> Result<(), DbError> {
    diesel::update(
        orders::table
            .find(id)
            .filter(orders::status.eq(OrderStatus::Cancelled)),
    )
    .set((
        orders::payment_intent_id.eq(intent_id),
        orders::payment_status.eq(REFUNDED),
        orders::refund_id.eq(refund_id),
        orders::refund_source.eq(crate::domain::RefundSource::Orderflow),
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
        super::outbox::done(conn, super::outbox::OutboxKind::Deliver, id)?;
        super::outbox::add(conn, super::outbox::OutboxKind::Refund, id)?;
        Ok(Ok(Cancelled {
            was_paid: status == OrderStatus::Paid,
            intent_id,
        }))
    })
}

/// Why an order's money could not be re-driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedriveRefusal {
    NotFound,
    /// Neither its payment nor its refund is unsettled.
    NothingOwed,
}

/// Owes, due now and with a new settle window, the money work an order
/// has left: the reconciliation of a `payment_pending` order, or the refund
/// of a cancelled one not yet refunded. The attention mark stays until the
/// work settles.
pub fn redrive_money(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Result<super::outbox::OutboxKind, RedriveRefusal>, DbError> {
    use super::outbox::{self, OutboxKind};
    conn.transaction(|conn| {
        let row: Option<(OrderStatus, Option<String>)> = orders::table
            .find(id)
            .select((orders::status, orders::payment_status))
            .for_update()
            .first(conn)
            .optional()?;
        let kind = match row {
            None => return Ok(Err(RedriveRefusal::NotFound)),
            Some((OrderStatus::PaymentPending, _)) => OutboxKind::ReconcilePayment,
            Some((OrderStatus::Cancelled, paid)) if paid.as_deref() != Some(REFUNDED) => {
                OutboxKind::Refund
            }
            Some(_) => return Ok(Err(RedriveRefusal::NothingOwed)),
        };
        outbox::redrive(conn, kind, id)?;
        Ok(Ok(kind))
    })
}

/// Locks the order a gateway event is about: the intent id it holds
/// (`Some(None)` if none yet), or `None` if the order is not recorded.
pub fn lock_for_gateway(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<Option<String>>, DbError> {
    Ok(orders::table
        .find(id)
        .select(orders::payment_intent_id)
        .for_update()
        .first(conn)
        .optional()?)
}

/// The gateway reports the order's charge refunded in full. A refund of a
/// cancelled order is orderflow's (its refund job or a re-drive); any other
/// was made at the gateway. Whether it changed anything.
pub fn record_gateway_refund(conn: &mut PgConnection, id: Uuid) -> Result<bool, DbError> {
    let n = diesel::sql_query(
        "UPDATE orders SET payment_status = $2, \
           refund_source = CASE WHEN status = $3 THEN $6 ELSE $7 END, \
           attention = NULL, attention_since = NULL, updated_at = now() \
         WHERE id = $1 AND payment_status IS DISTINCT FROM $2 \
           AND status NOT IN ($4, $5)",
    )
    .bind::<diesel::sql_types::Uuid, _>(id)
    .bind::<diesel::sql_types::Text, _>(REFUNDED)
    .bind::<diesel::sql_types::Text, _>(OrderStatus::Cancelled)
    .bind::<diesel::sql_types::Text, _>(OrderStatus::PaymentPending)
    .bind::<diesel::sql_types::Text, _>(OrderStatus::PaymentFailed)
    .bind::<diesel::sql_types::Text, _>(crate::domain::RefundSource::Orderflow)
    .bind::<diesel::sql_types::Text, _>(crate::domain::RefundSource::Gateway)
    .execute(conn)?;
    Ok(n == 1)
}

/// The gateway reports refund `refund_id` failed after accepting it: if it
/// is the order's refund (or the order knew no refund id), the order says
/// so and asks ops to look. A newer refund that succeeded is not undone.
pub fn record_refund_failed(
    conn: &mut PgConnection,
    id: Uuid,
    refund_id: &str,
) -> Result<bool, DbError> {
    let n = diesel::update(
        orders::table
            .find(id)
            .filter(orders::payment_status.eq(REFUNDED))
            .filter(
                orders::refund_id
                    .is_null()
                    .or(orders::refund_id.eq(refund_id)),
            ),
    )
    .set((
        orders::payment_status.eq(REFUND_FAILED),
        orders::refund_id.eq(refund_id),
        orders::attention.eq(crate::domain::Attention::RefundFailed),
        orders::attention_since.eq(diesel::dsl::now),
        orders::updated_at.eq(diesel::dsl::now),
    ))
    .execute(conn)?;
    Ok(n == 1)
}

/// Dispute statuses that are final.
pub const DISPUTE_CLOSED: [&str; 3] = ["won", "lost", "warning_closed"];

/// Records the order's dispute as the gateway has it now; a closed dispute
/// is never reopened by an older event. Whether it changed anything.
pub fn record_dispute(
    conn: &mut PgConnection,
    id: Uuid,
    dispute: &Dispute,
) -> Result<bool, DbError> {
    let n = diesel::update(
        orders::table
            .find(id)
            .filter(
                orders::dispute_id
                    .is_null()
                    .or(orders::dispute_id.eq(&dispute.id)),
            )
            .filter(
                orders::dispute_status
                    .is_null()
                    .or(orders::dispute_status.ne_all(DISPUTE_CLOSED)),
            )
            .filter(orders::dispute_status.is_distinct_from(&dispute.status)),
    )
    .set((
        orders::dispute_id.eq(&dispute.id),
        orders::dispute_status.eq(&dispute.status),
        orders::dispute_reason.eq(&dispute.reason),
        orders::dispute_due_by.eq(dispute.due_by),
        orders::updated_at.eq(diesel::dsl::now),
    ))
    .execute(conn)?;
    Ok(n == 1)
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
