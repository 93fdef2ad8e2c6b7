//! The gateway's events (migration 16): stored once by id, listed for ops,
//! replayed on request.

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use serde_json::Value;
use uuid::Uuid;

use super::schema::gateway_events::dsl as g;
use super::DbError;

crate::domain::status::text_enum! {
    /// Where an inbox event stands.
    GatewayEventStatus {
        Pending => "pending",
        Processed => "processed",
        Unmatched => "unmatched",
        Ignored => "ignored",
        Failed => "failed",
    }
}

/// An event as the inbox stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub id: String,
    pub kind: String,
    /// The object's id (`pi_…`, `ch_…`, `re_…`, `dp_…`).
    pub object_id: Option<String>,
    pub order_id: Option<Uuid>,
}

/// Stores `event` unless its id is already there; true if it was new. A
/// type orderflow does not act on (`handled` false) is acknowledged and
/// kept `ignored`, owing nothing.
pub fn insert_once(
    conn: &mut PgConnection,
    event: &Received,
    payload: &Value,
    handled: bool,
) -> Result<bool, DbError> {
    let (status, processed_at) = match handled {
        true => (GatewayEventStatus::Pending, None),
        false => (GatewayEventStatus::Ignored, Some(Utc::now())),
    };
    let n = diesel::insert_into(g::gateway_events)
        .values((
            g::id.eq(&event.id),
            g::type_.eq(&event.kind),
            g::object_id.eq(&event.object_id),
            g::order_id.eq(event.order_id),
            g::payload.eq(payload),
            g::status.eq(status),
            g::processed_at.eq(processed_at),
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
            g::next_attempt_at.eq(diesel::dsl::now),
            g::lease_until.eq(None::<DateTime<Utc>>),
            g::attempts.eq(0),
        ))
        .execute(conn)?;
    Ok(n == 1)
}

/// A pending event taken for processing.
#[derive(Debug, Clone, QueryableByName)]
pub struct Due {
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub kind: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub object_id: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Uuid>)]
    pub order_id: Option<Uuid>,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pub attempts: i32,
}

/// Takes up to `limit` pending events that are due and not held, holding
/// them for `lease` (an event whose processor died is taken again after it).
pub fn take_due(
    conn: &mut PgConnection,
    limit: i64,
    lease: std::time::Duration,
) -> Result<Vec<Due>, DbError> {
    use diesel::sql_types::{BigInt, Double, Text};
    Ok(diesel::sql_query(
        "UPDATE gateway_events SET lease_until = now() + make_interval(secs => $2), \
           attempts = attempts + 1 \
         WHERE id IN (SELECT id FROM gateway_events \
           WHERE status = $3 AND next_attempt_at <= now() \
             AND (lease_until IS NULL OR lease_until < now()) \
           ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
         RETURNING id, type AS kind, object_id, order_id, attempts",
    )
    .bind::<BigInt, _>(limit)
    .bind::<Double, _>(lease.as_secs_f64())
    .bind::<Text, _>(GatewayEventStatus::Pending)
    .load(conn)?)
}

/// The event is done with: `status`, about `order_id`, with `error` if any.
pub fn finish(
    conn: &mut PgConnection,
    id: &str,
    status: GatewayEventStatus,
    order_id: Option<Uuid>,
    error: Option<&str>,
) -> Result<(), DbError> {
    diesel::update(g::gateway_events.find(id))
        .set((
            g::status.eq(status),
            g::order_id.eq(order_id),
            g::processed_at.eq(diesel::dsl::now),
            g::lease_until.eq(None::<DateTime<Utc>>),
            g::error.eq(error),
        ))
        .execute(conn)?;
    Ok(())
}

/// The event stays pending, tried again in `delay`; `error` says why.
pub fn retry_in(
    conn: &mut PgConnection,
    id: &str,
    delay: std::time::Duration,
    error: &str,
) -> Result<(), DbError> {
    let due = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
    diesel::update(g::gateway_events.find(id))
        .set((
            g::next_attempt_at.eq(due),
            g::lease_until.eq(None::<DateTime<Utc>>),
            g::error.eq(error),
        ))
        .execute(conn)?;
    Ok(())
}

/// Deletes up to `limit` finished events received more than `older_than`
/// ago: the number deleted.
pub fn purge(
    conn: &mut PgConnection,
    older_than: std::time::Duration,
    limit: i64,
) -> Result<usize, DbError> {
    use diesel::sql_types::{BigInt, Double, Text};
    Ok(diesel::sql_query(
        "DELETE FROM gateway_events WHERE id IN (SELECT id FROM gateway_events \
           WHERE status <> $3 AND received_at < now() - make_interval(secs => $1) \
           ORDER BY received_at LIMIT $2)",
    )
    .bind::<Double, _>(older_than.as_secs_f64())
    .bind::<BigInt, _>(limit)
    .bind::<Text, _>(GatewayEventStatus::Pending)
    .execute(conn)?)
}

/// Age in seconds of the oldest pending event (0 when none is).
pub fn lag_secs(conn: &mut PgConnection) -> Result<f64, DbError> {
    super::age_secs(
        conn,
        &format!(
            "SELECT min(received_at) FROM gateway_events WHERE status = '{}'",
            GatewayEventStatus::Pending.as_str()
        ),
    )
}
