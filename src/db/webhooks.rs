//! Webhook endpoints and their deliveries (migration 7); the delivery log
//! is `webhook_log`.
//!
//! A delivery is made by fan-out ([`fan_out`]) from the events some enabled
//! endpoint subscribes to, sent by the endpoint's one drainer
//! ([`take_drain`], [`due`]), and settled with its attempt logged
//! ([`record`]), all set-based so a drainer's round is a few statements.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{
    Array, BigInt, Bool, Double, Int4, Int8, Nullable, SmallInt, Text, Timestamptz, Uuid as SqlUuid,
};
use uuid::Uuid;

use super::schema::webhook_endpoints as ep;
use super::DbError;

crate::domain::status::text_enum! {
    /// Where one delivery (or one attempt, in the log) stands.
    DeliveryState {
        Pending => "pending",
        Delivered => "delivered",
        Retrying => "retrying",
        Failed => "failed",
    }
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = ep, check_for_backend(diesel::pg::Pg))]
pub struct EndpointRow {
    pub id: Uuid,
    pub url: String,
    /// Array elements read as nullable; the CHECK-free column never holds
    /// a NULL one (see [`EndpointRow::event_types`]).
    pub events: Vec<Option<String>>,
    pub description: String,
    pub enabled: bool,
    pub secret: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub failing_since: Option<DateTime<Utc>>,
    pub consecutive_failures: i32,
}

impl EndpointRow {
    pub fn event_types(&self) -> Vec<String> {
        self.events.iter().flatten().cloned().collect()
    }
}

#[derive(Debug, Insertable)]
#[diesel(table_name = ep)]
pub struct NewEndpoint {
    pub id: Uuid,
    pub url: String,
    pub events: Vec<String>,
    pub description: String,
    pub enabled: bool,
    pub secret: String,
}

#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = ep)]
pub struct EndpointChanges {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

pub fn create(conn: &mut PgConnection, new: &NewEndpoint) -> Result<EndpointRow, DbError> {
    Ok(diesel::insert_into(ep::table)
        .values(new)
        .returning(EndpointRow::as_returning())
        .get_result(conn)?)
}

pub fn list(conn: &mut PgConnection) -> Result<Vec<EndpointRow>, DbError> {
    Ok(ep::table
        .order(ep::created_at)
        .select(EndpointRow::as_select())
        .load(conn)?)
}

pub fn find(conn: &mut PgConnection, id: Uuid) -> Result<Option<EndpointRow>, DbError> {
    Ok(ep::table
        .find(id)
        .select(EndpointRow::as_select())
        .first(conn)
        .optional()?)
}

/// Applies `changes` (none: reads the endpoint); `None` if there is no
/// such endpoint.
pub fn update(
    conn: &mut PgConnection,
    id: Uuid,
    changes: &EndpointChanges,
) -> Result<Option<EndpointRow>, DbError> {
    let nothing = changes.url.is_none()
        && changes.events.is_none()
        && changes.description.is_none()
        && changes.enabled.is_none();
    if nothing {
        return find(conn, id);
    }
    Ok(diesel::update(ep::table.find(id))
        .set((changes, ep::updated_at.eq(diesel::dsl::now)))
        .returning(EndpointRow::as_returning())
        .get_result(conn)
        .optional()?)
}

pub fn delete(conn: &mut PgConnection, id: Uuid) -> Result<bool, DbError> {
    Ok(diesel::delete(ep::table.find(id)).execute(conn)? == 1)
}

#[derive(QueryableByName)]
struct EndpointId {
    #[diesel(sql_type = SqlUuid)]
    endpoint_id: Uuid,
}

/// Makes the deliveries of up to `limit` events awaiting fan-out (a tick
/// takes all there are), one per enabled endpoint subscribed to the
/// event's type, and returns the endpoints that got some. Events taken by a concurrent
/// fan-out are skipped.
pub fn fan_out(conn: &mut PgConnection, limit: i64) -> Result<Vec<Uuid>, DbError> {
    conn.transaction(|conn| {
        relaxed_commit(conn)?;
        let rows: Vec<EndpointId> = diesel::sql_query(
            "WITH f AS (DELETE FROM webhook_fanout WHERE event_id IN ( \
                 SELECT event_id FROM webhook_fanout LIMIT $1 FOR UPDATE SKIP LOCKED) \
               RETURNING event_id), \
             d AS (INSERT INTO webhook_deliveries (endpoint_id, event_id) \
               SELECT w.id, e.id FROM f JOIN order_events e ON e.id = f.event_id \
                 JOIN webhook_endpoints w \
                 ON w.enabled AND (e.type = ANY (w.events) OR '*' = ANY (w.events)) \
               ORDER BY e.order_id, e.sequence \
               RETURNING endpoint_id) \
             SELECT DISTINCT endpoint_id FROM d",
        )
        .bind::<BigInt, _>(limit)
        .load(conn)?;
        Ok(rows.into_iter().map(|r| r.endpoint_id).collect())
    })
}

/// The webhook bookkeeping (fan-out, the drain lease, attempts) commits without
/// waiting for its WAL flush. A crash may lose the last few hundred
/// milliseconds of it, which only means an event is fanned out or a
/// delivery sent again: delivery is at least once, and receivers dedupe.
/// Never used for a change of an order, its event, or money.
pub fn relaxed_commit(conn: &mut PgConnection) -> Result<(), DbError> {
    diesel::sql_query("SET LOCAL synchronous_commit TO OFF").execute(conn)?;
    Ok(())
}

/// Where a drainer sends, once it holds the endpoint's drain lease.
#[derive(Debug, Clone, QueryableByName)]
pub struct Target {
    #[diesel(sql_type = Text)]
    pub url: String,
    #[diesel(sql_type = Text)]
    pub secret: String,
}

/// Takes (or renews, for the same `task`) the drain lease of an enabled
/// endpoint for `lease`: one drainer per endpoint across all workers.
pub fn take_drain(
    conn: &mut PgConnection,
    endpoint: Uuid,
    task: &str,
    lease: Duration,
) -> Result<Option<Target>, DbError> {
    Ok(diesel::sql_query(
        "UPDATE webhook_endpoints SET drain_task = $2, \
           drain_until = now() + make_interval(secs => $3) \
         WHERE id = $1 AND enabled \
           AND (drain_until IS NULL OR drain_until < now() OR drain_task = $2) \
         RETURNING url, secret",
    )
    .bind::<SqlUuid, _>(endpoint)
    .bind::<Text, _>(task)
    .bind::<Double, _>(lease.as_secs_f64())
    .get_result(conn)
    .optional()?)
}

/// Gives the drain lease back.
pub fn release_drain(conn: &mut PgConnection, endpoint: Uuid, task: &str) -> Result<(), DbError> {
    diesel::update(ep::table.find(endpoint).filter(ep::drain_task.eq(task)))
        .set((
            ep::drain_task.eq(None::<String>),
            ep::drain_until.eq(None::<DateTime<Utc>>),
        ))
        .execute(conn)?;
    Ok(())
}

/// A due delivery, and the number its next attempt has.
#[derive(Debug, Clone, QueryableByName)]
pub struct DueDelivery {
    #[diesel(sql_type = Int8)]
    pub delivery_id: i64,
    #[diesel(sql_type = SqlUuid)]
    pub event_id: Uuid,
    #[diesel(sql_type = Int4)]
    pub attempt: i32,
    #[diesel(sql_type = Timestamptz)]
    pub next_attempt_at: DateTime<Utc>,
}

/// Up to `limit` due deliveries of `endpoint` due since `from`, oldest
/// first, but those in `in_flight`. A read: only the endpoint's drainer
/// (who holds the drain lease) sends them, and it knows what it has in
/// flight; if it dies they are still due for the next one. `from` lets a
/// drainer skip the index entries of deliveries it already settled (dead
/// until vacuum).
pub fn due(
    conn: &mut PgConnection,
    endpoint: Uuid,
    limit: i64,
    in_flight: &[i64],
    from: DateTime<Utc>,
) -> Result<Vec<DueDelivery>, DbError> {
    Ok(diesel::sql_query(
        "SELECT id AS delivery_id, event_id, attempts + 1 AS attempt, next_attempt_at \
         FROM webhook_deliveries \
         WHERE endpoint_id = $1 AND status IN ('pending', 'retrying') \
           AND next_attempt_at >= $4 AND next_attempt_at <= now() AND NOT (id = ANY ($3)) \
         ORDER BY next_attempt_at, id LIMIT $2",
    )
    .bind::<SqlUuid, _>(endpoint)
    .bind::<BigInt, _>(limit)
    .bind::<Array<Int8>, _>(in_flight)
    .bind::<Timestamptz, _>(from)
    .load(conn)?)
}

/// How one attempt ended, to record.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub delivery_id: i64,
    pub attempt: i32,
    /// `Delivered`, `Retrying` (due again after `retry_in`) or `Failed`.
    pub state: DeliveryState,
    pub retry_in: Duration,
    pub response_status: Option<i16>,
    pub error: Option<String>,
    pub duration_ms: i32,
    pub attempted_at: DateTime<Utc>,
}

/// Settles a drainer's finished attempts (in the order they finished): each
/// delivery's state, next attempt and last answer, a log row for each
/// attempt that did not deliver, and the endpoint's health. One
/// transaction.
pub fn record(
    conn: &mut PgConnection,
    endpoint: Uuid,
    attempts: &[AttemptRecord],
) -> Result<(), DbError> {
    if attempts.is_empty() {
        return Ok(());
    }
    let ok = |a: &AttemptRecord| a.state == DeliveryState::Delivered;
    let trailing = attempts.iter().rev().take_while(|a| !ok(a)).count() as i32;
    let any_ok = attempts.iter().any(ok);
    conn.transaction(|conn| {
        relaxed_commit(conn)?;
        diesel::sql_query(
            "WITH r AS (SELECT * FROM unnest($1::int8[], $2::int4[], $3::text[], $4::float8[], \
                 $5::int2[], $6::text[], $7::int4[], $8::timestamptz[]) \
               AS r(id, attempt, status, delay, response_status, error, duration_ms, attempted_at)), \
             u AS (UPDATE webhook_deliveries d SET status = r.status, attempts = r.attempt, \
                 next_attempt_at = CASE WHEN r.status = 'retrying' \
                   THEN now() + make_interval(secs => r.delay) ELSE d.next_attempt_at END, \
                 response_status = r.response_status, error = r.error, \
                 duration_ms = r.duration_ms, attempted_at = r.attempted_at \
               FROM r WHERE d.id = r.id) \
             INSERT INTO webhook_attempts (delivery_id, endpoint_id, attempt, status, \
               response_status, error, duration_ms, attempted_at, next_attempt_at) \
             SELECT r.id, $9, r.attempt, r.status, r.response_status, r.error, r.duration_ms, \
               r.attempted_at, CASE WHEN r.status = 'retrying' \
                 THEN now() + make_interval(secs => r.delay) END \
             FROM r WHERE r.status <> 'delivered'",
        )
        .bind::<Array<Int8>, _>(attempts.iter().map(|a| a.delivery_id).collect::<Vec<_>>())
        .bind::<Array<Int4>, _>(attempts.iter().map(|a| a.attempt).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(attempts.iter().map(|a| a.state.as_str()).collect::<Vec<_>>())
        .bind::<Array<Double>, _>(
            attempts
                .iter()
                .map(|a| a.retry_in.as_secs_f64())
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Nullable<SmallInt>>, _>(
            attempts.iter().map(|a| a.response_status).collect::<Vec<_>>(),
        )
        .bind::<Array<Nullable<Text>>, _>(
            attempts.iter().map(|a| a.error.as_deref()).collect::<Vec<_>>(),
        )
        .bind::<Array<Int4>, _>(attempts.iter().map(|a| a.duration_ms).collect::<Vec<_>>())
        .bind::<Array<Timestamptz>, _>(attempts.iter().map(|a| a.attempted_at).collect::<Vec<_>>())
        .bind::<SqlUuid, _>(endpoint)
        .execute(conn)?;
        record_health(conn, endpoint, any_ok, trailing)
    })
}

/// The endpoint's health after a round: its last success, and the failures
/// since (the round's trailing ones, added to the count if it had none).
fn record_health(
    conn: &mut PgConnection,
    endpoint: Uuid,
    any_ok: bool,
    trailing_failures: i32,
) -> Result<(), DbError> {
    diesel::sql_query(
        "UPDATE webhook_endpoints SET \
           last_success_at = CASE WHEN $2 THEN now() ELSE last_success_at END, \
           consecutive_failures = CASE WHEN $2 THEN $3 ELSE consecutive_failures + $3 END, \
           failing_since = CASE WHEN $3 = 0 THEN NULL \
             WHEN $2 THEN now() ELSE coalesce(failing_since, now()) END \
         WHERE id = $1",
    )
    .bind::<SqlUuid, _>(endpoint)
    .bind::<Bool, _>(any_ok)
    .bind::<Int4, _>(trailing_failures)
    .execute(conn)?;
    Ok(())
}

#[derive(QueryableByName)]
struct NextDue {
    #[diesel(sql_type = Nullable<Timestamptz>)]
    at: Option<DateTime<Utc>>,
}

/// When `endpoint`'s next delivery is due (`None`: nothing left to send).
pub fn next_due(conn: &mut PgConnection, endpoint: Uuid) -> Result<Option<DateTime<Utc>>, DbError> {
    let row: NextDue = diesel::sql_query(
        "SELECT min(next_attempt_at) AS at FROM webhook_deliveries \
         WHERE endpoint_id = $1 AND status IN ('pending', 'retrying')",
    )
    .bind::<SqlUuid, _>(endpoint)
    .get_result(conn)?;
    Ok(row.at)
}

/// Enabled endpoints with a delivery more than `grace` overdue and no live
/// drainer: their wake-up was lost (Redis down, a worker killed).
pub fn overdue_endpoints(conn: &mut PgConnection, grace: Duration) -> Result<Vec<Uuid>, DbError> {
    let rows: Vec<EndpointId> = diesel::sql_query(
        "SELECT w.id AS endpoint_id FROM webhook_endpoints w \
         WHERE w.enabled AND (w.drain_until IS NULL OR w.drain_until < now()) \
           AND EXISTS (SELECT 1 FROM webhook_deliveries d \
             WHERE d.endpoint_id = w.id AND d.status IN ('pending', 'retrying') \
               AND d.next_attempt_at < now() - make_interval(secs => $1))",
    )
    .bind::<Double, _>(grace.as_secs_f64())
    .load(conn)?;
    Ok(rows.into_iter().map(|r| r.endpoint_id).collect())
}

/// A new delivery of `event` to `endpoint`; false if either is unknown.
pub fn resend(conn: &mut PgConnection, endpoint: Uuid, event: Uuid) -> Result<bool, DbError> {
    Ok(diesel::sql_query(
        "INSERT INTO webhook_deliveries (endpoint_id, event_id) \
         SELECT w.id, e.id FROM webhook_endpoints w, order_events e \
         WHERE w.id = $1 AND e.id = $2",
    )
    .bind::<SqlUuid, _>(endpoint)
    .bind::<SqlUuid, _>(event)
    .execute(conn)?
        == 1)
}
