//! The gateway's events (migration 16): stored once by id, listed for ops,
//! replayed on request.

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use serde_json::Value;
use uuid::Uuid;

use super::schema::gateway_events::dsl as g;
use super::DbError;
use crate::gateway::event::Received;
use crate::gateway::GatewayEventStatus;

/// Stores `event` unless its id is already there; true if it was new.
pub fn insert_once(
    conn: &mut PgConnection,
    event: &Received,
    payload: &Value,
) -> Result<bool, DbError> {
    let n = diesel::insert_into(g::gateway_events)
        .values((
            g::id.eq(&event.id),
            g::type_.eq(&event.kind),
            g::object_id.eq(&event.object_id),
            g::order_id.eq(event.order_id),
            g::payload.eq(payload),
        ))
        .on_conflict_do_nothing()
        .execute(conn)?;
    Ok(n == 1)
}

/// An event as ops see it.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = super::schema::gateway_events, check_for_backend(diesel::pg::Pg))]
pub struct EventRow {
    pub id: String,
    #[diesel(column_name = type_)]
    pub kind: String,
    pub order_id: Option<Uuid>,
    pub status: GatewayEventStatus,
    pub received_at: DateTime<Utc>,
    pub processed_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

/// The newest `limit` events, of `status` if given.
pub fn list(
    conn: &mut PgConnection,
    status: Option<GatewayEventStatus>,
    limit: i64,
) -> Result<Vec<EventRow>, DbError> {
    let mut q = g::gateway_events
        .select(EventRow::as_select())
        .order((g::received_at.desc(), g::id.desc()))
        .limit(limit)
        .into_boxed();
    if let Some(status) = status {
        q = q.filter(g::status.eq(status));
    }
    Ok(q.load(conn)?)
}

/// Makes an event `pending` again, to be processed anew; false if unknown.
pub fn replay(conn: &mut PgConnection, id: &str) -> Result<bool, DbError> {
    let n = diesel::update(g::gateway_events.find(id))
        .set((
            g::status.eq(GatewayEventStatus::Pending),
            g::processed_at.eq(None::<DateTime<Utc>>),
            g::error.eq(None::<String>),
        ))
        .execute(conn)?;
    Ok(n == 1)
}
