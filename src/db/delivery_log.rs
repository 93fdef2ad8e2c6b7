//! The webhook delivery log: what ops read per endpoint and per order, and
//! its retention.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{
    BigInt, Double, Int4, Nullable, SmallInt, Text, Timestamptz, Uuid as SqlUuid,
};
use uuid::Uuid;

use super::webhooks::{DeliveryState, OF_ITS_TYPES};
use super::DbError;

/// One line of a delivery log: an attempt, or a delivery not yet tried.
#[derive(Debug, Clone, QueryableByName)]
pub struct LogLine {
    #[diesel(sql_type = SqlUuid)]
    pub endpoint_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    pub event_id: Uuid,
    #[diesel(sql_type = Text)]
    pub kind: String,
    #[diesel(sql_type = SqlUuid)]
    pub order_id: Uuid,
    #[diesel(sql_type = Int4)]
    pub attempt: i32,
    #[diesel(sql_type = Text)]
    pub status: DeliveryState,
    #[diesel(sql_type = Nullable<SmallInt>)]
    pub response_status: Option<i16>,
    #[diesel(sql_type = Nullable<Text>)]
    pub error: Option<String>,
    #[diesel(sql_type = Nullable<Int4>)]
    pub duration_ms: Option<i32>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub attempted_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// The delivery log, newest first, of the deliveries `scope` picks (`$1`
/// is its parameter, `$2` the limit; `w` is the endpoint, `e` the event):
/// the attempts that did not deliver (their rows), the ones that did (on
/// their delivery), the rows not tried yet (resends) and the log entries
/// past the endpoint's cursor (not tried yet).
fn log_query(scope: &str) -> String {
    format!(
        "SELECT * FROM ( \
           (SELECT d.endpoint_id, d.event_id, e.type AS kind, e.order_id, a.attempt, a.status, \
              a.response_status, a.error, a.duration_ms, a.attempted_at, a.next_attempt_at, \
              a.attempted_at AS at, a.attempt AS n \
            FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id \
              JOIN order_events e ON e.id = d.event_id JOIN webhook_endpoints w ON w.id = d.endpoint_id \
            WHERE {scope} ORDER BY a.id DESC LIMIT $2) \
           UNION ALL \
           (SELECT d.endpoint_id, d.event_id, e.type, e.order_id, d.attempts, d.status, \
              d.response_status, d.error, d.duration_ms, d.attempted_at, NULL, \
              coalesce(d.attempted_at, d.created_at), d.attempts \
            FROM webhook_deliveries d JOIN order_events e ON e.id = d.event_id \
              JOIN webhook_endpoints w ON w.id = d.endpoint_id \
            WHERE {scope} AND d.status IN ('delivered', 'pending') \
            ORDER BY d.id DESC LIMIT $2) \
           UNION ALL \
           (SELECT w.id, l.event_id, l.type, e.order_id, 0, 'pending', NULL, NULL, NULL, NULL, \
              NULL, l.created_at, 0 \
            FROM webhook_endpoints w JOIN webhook_log l \
              ON (l.xact, l.position) > (w.cursor_xact, w.cursor_position) \
                AND {OF_ITS_TYPES} \
              JOIN order_events e ON e.id = l.event_id \
            WHERE {scope} ORDER BY l.xact DESC, l.position DESC LIMIT $2) \
         ) log ORDER BY at DESC, n DESC LIMIT $2"
    )
}

/// Whose delivery log.
#[derive(Debug, Clone, Copy)]
pub enum LogOf {
    /// An endpoint's deliveries.
    Endpoint(Uuid),
    /// The deliveries of one order's events.
    Order(Uuid),
}

/// A delivery log, newest first.
pub fn log(conn: &mut PgConnection, of: LogOf, limit: i64) -> Result<Vec<LogLine>, DbError> {
    let (scope, id) = match of {
        LogOf::Endpoint(id) => ("w.id = $1", id),
        LogOf::Order(id) => ("e.order_id = $1", id),
    };
    Ok(diesel::sql_query(log_query(scope))
        .bind::<SqlUuid, _>(id)
        .bind::<BigInt, _>(limit)
        .load(conn)?)
}

/// Deletes up to `limit` settled deliveries (delivered or failed) made
/// more than `older_than` ago, with their attempts: the log keeps
/// [`RETENTION`] by default. Events are the record and are kept.
pub fn purge_settled(
    conn: &mut PgConnection,
    older_than: Duration,
    limit: i64,
) -> Result<usize, DbError> {
    conn.transaction(|conn| {
        if !take_purge_turn(conn)? {
            return Ok(0);
        }
        Ok(diesel::sql_query(PURGE_SETTLED)
            .bind::<Double, _>(older_than.as_secs_f64())
            .bind::<BigInt, _>(limit)
            .execute(conn)?)
    })
}

/// The purge (`$1`: seconds of retention, `$2`: the limit), answered from
/// the partial index of settled rows by their time.
pub const PURGE_SETTLED: &str = "DELETE FROM webhook_deliveries WHERE id IN ( \
       SELECT id FROM webhook_deliveries \
       WHERE status IN ('delivered', 'failed') \
         AND created_at < now() - make_interval(secs => $1) LIMIT $2)";

/// Takes this transaction's turn at the purge; false if another process
/// has it (each worker sweeps every few seconds: one purging is enough).
pub fn take_purge_turn(conn: &mut PgConnection) -> QueryResult<bool> {
    #[derive(QueryableByName)]
    struct Turn {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        taken: bool,
    }
    Ok(diesel::sql_query(
        "SELECT pg_try_advisory_xact_lock(hashtext('orderflow.delivery_log_purge')) AS taken",
    )
    .get_result::<Turn>(conn)?
    .taken)
}

/// How long settled deliveries stay in the log.
pub const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
