//! Order events (migration 7; the trigger as it is now: migration 8):
//! written by the events trigger inside the statement that changes the
//! order; read here, oldest first.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::models::{OrderItemRow, OrderRow};
use super::schema::order_events;
use super::DbError;
use crate::domain::actor::Actor;

/// An event with the order as it was right after the change.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = order_events, check_for_backend(diesel::pg::Pg))]
pub struct EventRow {
    pub id: Uuid,
    pub order_id: Uuid,
    pub sequence: i32,
    #[diesel(column_name = type_)]
    pub kind: String,
    pub created_at: DateTime<Utc>,
    pub order_row: serde_json::Value,
    /// Who made the change (`staff::Actor`); NULL is the service itself.
    pub actor: Option<serde_json::Value>,
}

/// An event ready to render: its row, the order it carries, the lines.
#[derive(Debug, Clone)]
pub struct Event {
    pub row: EventRow,
    pub order: OrderRow,
    pub items: Vec<OrderItemRow>,
}

/// The events of order `id`, oldest first; `None` if there is no such order.
pub fn of_order(conn: &mut PgConnection, id: Uuid) -> Result<Option<Vec<Event>>, DbError> {
    if !super::orders::exists(conn, id)? {
        return Ok(None);
    }
    let rows = order_events::table
        .filter(order_events::order_id.eq(id))
        .order(order_events::sequence)
        .select(EventRow::as_select())
        .load(conn)?;
    Ok(Some(with_orders(conn, rows)?))
}

/// Events by id, in no particular order.
pub fn by_ids(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<Event>, DbError> {
    let rows = order_events::table
        .filter(order_events::id.eq_any(ids))
        .select(EventRow::as_select())
        .load(conn)?;
    with_orders(conn, rows)
}

fn with_orders(conn: &mut PgConnection, rows: Vec<EventRow>) -> Result<Vec<Event>, DbError> {
    let mut ids: Vec<Uuid> = rows.iter().map(|r| r.order_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut lines: std::collections::HashMap<Uuid, Vec<OrderItemRow>> = Default::default();
    for item in super::orders::items_of(conn, &ids)? {
        lines.entry(item.order_id).or_default().push(item);
    }
    rows.into_iter()
        .map(|row| {
            let order: OrderRow = serde_json::from_value(row.order_row.clone())
                .map_err(|e| DbError::Other(anyhow::anyhow!("event {}: order: {e}", row.id)))?;
            let items = lines.get(&row.order_id).cloned().unwrap_or_default();
            Ok(Event { row, order, items })
        })
        .collect()
}

/// Makes `actor` the author of what this transaction changes: the order
/// events written by it carry it. (A transaction-local setting, read by the
/// events trigger; without one, the author is the service itself.)
pub fn act_as(conn: &mut PgConnection, actor: &Actor) -> Result<(), DbError> {
    let who = serde_json::to_string(actor).map_err(|e| DbError::Other(e.into()))?;
    diesel::sql_query("SELECT set_config('orderflow.actor', $1, true)")
        .bind::<diesel::sql_types::Text, _>(who)
        .execute(conn)?;
    Ok(())
}
