//! Order queries. State changes are conditional updates (`WHERE status = …`)
//! so a transition happens at most once whoever attempts it.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::models::{NewOrder, OrderItemRow, OrderRow, OrderWithItems};
use super::schema::{order_items, orders};
use super::DbError;
use crate::domain::{DeliveryStatus, OrderStatus};

pub fn insert(
    conn: &mut PgConnection,
    order: &NewOrder<'_>,
    items: &[OrderItemRow],
) -> Result<(), DbError> {
    diesel::insert_into(orders::table)
        .values(order)
        .execute(conn)?;
    diesel::insert_into(order_items::table)
        .values(items)
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

/// Records the charge outcome on a `payment_pending` order. Returns the
/// updated row, or `None` if the order had already left `payment_pending`
/// (someone else settled it first).
pub fn record_payment(
    conn: &mut PgConnection,
    id: Uuid,
    result: &PaymentResult<'_>,
) -> Result<Option<OrderRow>, DbError> {
    let target = orders::table
        .find(id)
        .filter(orders::status.eq(OrderStatus::PaymentPending.as_str()));
    let now = diesel::dsl::now;
    let row = match *result {
        PaymentResult::Paid {
            intent_id,
            gateway_status,
        } => diesel::update(target)
            .set((
                orders::status.eq(OrderStatus::Paid.as_str()),
                orders::payment_intent_id.eq(intent_id),
                orders::payment_status.eq(gateway_status),
                orders::delivery_status.eq(DeliveryStatus::Queued.as_str()),
                orders::updated_at.eq(now),
            ))
            .returning(OrderRow::as_returning())
            .get_result(conn)
            .optional()?,
        PaymentResult::Failed {
            intent_id,
            gateway_status,
            decline_code,
        } => diesel::update(target)
            .set((
                orders::status.eq(OrderStatus::PaymentFailed.as_str()),
                orders::payment_intent_id.eq(intent_id),
                orders::payment_status.eq(gateway_status),
                orders::decline_code.eq(decline_code),
                orders::updated_at.eq(now),
            ))
            .returning(OrderRow::as_returning())
            .get_result(conn)
            .optional()?,
        PaymentResult::Unknown {
            intent_id,
            gateway_status,
        } => diesel::update(target)
            .set((
                orders::payment_intent_id.eq(intent_id),
                orders::payment_status.eq(gateway_status),
                orders::updated_at.eq(now),
            ))
            .returning(OrderRow::as_returning())
            .get_result(conn)
            .optional()?,
    };
    Ok(row)
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
        query = query.filter(orders::status.eq(s.as_str()));
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
