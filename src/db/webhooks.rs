//! Webhook endpoints, the webhook log (the events' outbox: migration 8)
//! and the deliveries (migrations 7 to 9); what ops read of them, the
//! delivery log, is `delivery_log`.
//!
//! An endpoint's deliveries waiting for a first attempt are the webhook
//! log's entries past its cursor ([`new_entries`]); the endpoint's one
//! drainer ([`take_drain`]) sends them and writes each delivery's row once,
//! with its first answer, moving the cursor in the same transaction
//! ([`record`]). Retries and resends are rows ([`due`]). All set-based, so
//! a drainer's round is a few statements.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{BoxedSqlQuery, SqlQuery};
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
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub failing_since: Option<DateTime<Utc>>,
    pub consecutive_failures: i32,
    /// Until when no wake-up takes the endpoint (its circuit is open).
    pub circuit_until: Option<DateTime<Utc>>,
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
    /// Sealed (`webhooks::sealed`), never the plain secret.
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

/// Makes `sealed` the endpoint's secret; the one it replaces stays valid
/// for `keep_old` (signed with beside the new one). `None`: no such
/// endpoint.
pub fn rotate_secret(
    conn: &mut PgConnection,
    id: Uuid,
    sealed: &str,
    keep_old: Duration,
) -> Result<Option<EndpointRow>, DbError> {
    let until = diesel::dsl::sql::<Nullable<Timestamptz>>("now() + make_interval(secs => ")
        .bind::<Double, _>(keep_old.as_secs_f64())
        .sql(")");
    Ok(diesel::update(ep::table.find(id))
        .set((
            ep::previous_secret.eq(ep::secret.nullable()),
            ep::previous_secret_until.eq(until),
            ep::secret.eq(sealed),
            ep::updated_at.eq(diesel::dsl::now),
        ))
        .returning(EndpointRow::as_returning())
        .get_result(conn)
        .optional()?)
}

/// An endpoint's stored secrets, as a sweep that seals them again reads
/// them.
#[derive(Debug, QueryableByName)]
pub struct StoredSecrets {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = Text)]
    pub secret: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub previous_secret: Option<String>,
}

/// Up to `limit` endpoints with a secret not sealed under the key whose
/// values start with `current_prefix`.
pub fn stale_sealed(
    conn: &mut PgConnection,
    current_prefix: &str,
    limit: i64,
) -> Result<Vec<StoredSecrets>, DbError> {
    Ok(diesel::sql_query(
        "SELECT id, secret, previous_secret FROM webhook_endpoints \
         WHERE left(secret, length($1)) <> $1 \
            OR left(previous_secret, length($1)) <> $1 LIMIT $2",
    )
    .bind::<Text, _>(current_prefix)
    .bind::<BigInt, _>(limit)
    .load(conn)?)
}

/// Stores `new`'s values if the row still holds `old`'s (a rotation in
/// between wins).
pub fn reseal(
    conn: &mut PgConnection,
    old: &StoredSecrets,
    new: &StoredSecrets,
) -> Result<bool, DbError> {
    Ok(diesel::sql_query(
        "UPDATE webhook_endpoints SET secret = $3, previous_secret = $4 \
         WHERE id = $1 AND secret = $2 AND previous_secret IS NOT DISTINCT FROM $5",
    )
    .bind::<SqlUuid, _>(old.id)
    .bind::<Text, _>(&old.secret)
    .bind::<Text, _>(&new.secret)
    .bind::<Nullable<Text>, _>(&new.previous_secret)
    .bind::<Nullable<Text>, _>(&old.previous_secret)
    .execute(conn)?
        == 1)
}

pub fn delete(conn: &mut PgConnection, id: Uuid) -> Result<bool, DbError> {
    Ok(diesel::delete(ep::table.find(id)).execute(conn)? == 1)
}

#[derive(QueryableByName)]
struct EndpointId {
    #[diesel(sql_type = SqlUuid)]
    endpoint_id: Uuid,
}

/// The webhook bookkeeping (the drain lease, the cursor, attempts) commits
/// without waiting for its WAL flush. A crash may lose the last few hundred
/// milliseconds of it, which only means a delivery is sent again: delivery is at least once, and receivers dedupe.
/// Never used for a change of an order, its event, or money.
pub fn relaxed_commit(conn: &mut PgConnection) -> Result<(), DbError> {
    diesel::sql_query("SET LOCAL synchronous_commit TO OFF").execute(conn)?;
    Ok(())
}

/// A place in the webhook log: entries are ordered by `(xact, position)`,
/// the commit order of their transactions (see migration 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    pub xact: i64,
    pub position: i64,
}

impl Pos {
    /// The place just before `self`: every entry before `self` is at or
    /// before it.
    pub fn before(self) -> Pos {
        Pos {
            xact: self.xact,
            position: self.position - 1,
        }
    }
}

/// Where a drainer sends, once it holds the endpoint's drain lease, what
/// it sends (the subscribed types, as of the last renewal) and where its
/// cursor stands.
#[derive(Debug, Clone, QueryableByName)]
pub struct Target {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = Text)]
    pub url: String,
    /// Sealed (`webhooks::sealed`).
    #[diesel(sql_type = Text)]
    pub secret: String,
    /// The secret before the last rotation, while it is still valid.
    #[diesel(sql_type = Nullable<Text>)]
    pub previous_secret: Option<String>,
    #[diesel(sql_type = Array<Text>)]
    pub events: Vec<String>,
    /// Failures in a row when the lease was taken (0: healthy).
    #[diesel(sql_type = Int4)]
    pub consecutive_failures: i32,
    #[diesel(sql_type = Int8)]
    cursor_xact: i64,
    #[diesel(sql_type = Int8)]
    cursor_position: i64,
}

impl Target {
    pub fn cursor(&self) -> Pos {
        Pos {
            xact: self.cursor_xact,
            position: self.cursor_position,
        }
    }
}

/// Takes the drain lease of an enabled endpoint that no drainer holds (or
/// whose holder let it run out) and whose circuit is closed, for `lease`:
/// one drainer per endpoint across all workers. `task` names this
/// drainer's run, never reused.
pub fn take_drain(
    conn: &mut PgConnection,
    endpoint: Uuid,
    task: &str,
    lease: Duration,
) -> Result<Option<Target>, DbError> {
    hold_drain(
        conn,
        endpoint,
        task,
        lease,
        "(drain_until IS NULL OR drain_until < now() OR drain_task = $2) \
         AND (circuit_until IS NULL OR circuit_until <= now())",
    )
}

/// Opens `endpoint`'s circuit for `wait`: gives the lease back with the
/// cursor, and no wake-up takes the endpoint until then (the fan-out timer
/// wakes it for a probe after). False if `task` no longer held the lease.
pub fn open_circuit(
    conn: &mut PgConnection,
    endpoint: Uuid,
    task: &str,
    cursor: Pos,
    wait: Duration,
) -> Result<bool, DbError> {
    let n = diesel::sql_query(format!(
        "UPDATE webhook_endpoints SET drain_task = NULL, drain_until = NULL, \
           circuit_until = now() + make_interval(secs => $5), {} \
         WHERE id = $1 AND drain_task = $2",
        move_cursor(3, 4)
    ))
    .bind::<SqlUuid, _>(endpoint)
    .bind::<Text, _>(task)
    .bind::<BigInt, _>(cursor.xact)
    .bind::<BigInt, _>(cursor.position)
    .bind::<Double, _>(wait.as_secs_f64())
    .execute(conn)?;
    Ok(n == 1)
}

/// Renews the drain lease `task` holds, even one that ran out while no
/// other drainer took it; `None` once another took it or the lease was
/// ended (a disable, or the log shifted by [`rebase_if_moved`]): the
/// drainer stops, and what it held in memory goes with it.
pub fn renew_drain(
    conn: &mut PgConnection,
    endpoint: Uuid,
    task: &str,
    lease: Duration,
) -> Result<Option<Target>, DbError> {
    hold_drain(conn, endpoint, task, lease, "drain_task = $2")
}

fn hold_drain(
    conn: &mut PgConnection,
    endpoint: Uuid,
    task: &str,
    lease: Duration,
    free: &str,
) -> Result<Option<Target>, DbError> {
    Ok(diesel::sql_query(format!(
        "UPDATE webhook_endpoints SET drain_task = $2, \
           drain_until = now() + make_interval(secs => $3) \
         WHERE id = $1 AND enabled AND ({free}) \
         RETURNING id, url, secret, events, consecutive_failures, cursor_xact, cursor_position, \
           CASE WHEN previous_secret_until > now() THEN previous_secret END AS previous_secret",
    ))
    .bind::<SqlUuid, _>(endpoint)
    .bind::<Text, _>(task)
    .bind::<Double, _>(lease.as_secs_f64())
    .get_result(conn)
    .optional()?)
}

/// Gives the drain lease back, with the cursor where the drainer left it.
pub fn release_drain(
    conn: &mut PgConnection,
    endpoint: Uuid,
    task: &str,
    cursor: Pos,
) -> Result<(), DbError> {
    diesel::sql_query(format!(
        "UPDATE webhook_endpoints SET drain_task = NULL, drain_until = NULL, {} \
         WHERE id = $1 AND drain_task = $2",
        move_cursor(3, 4)
    ))
    .bind::<SqlUuid, _>(endpoint)
    .bind::<Text, _>(task)
    .bind::<BigInt, _>(cursor.xact)
    .bind::<BigInt, _>(cursor.position)
    .execute(conn)?;
    Ok(())
}

/// The SET clause that moves an endpoint's cursor to (`$x`, `$y`), never
/// back.
fn move_cursor(x: u8, y: u8) -> String {
    format!(
        "cursor_xact = CASE WHEN (${x}, ${y}) > (cursor_xact, cursor_position) \
           THEN ${x} ELSE cursor_xact END, \
         cursor_position = CASE WHEN (${x}, ${y}) > (cursor_xact, cursor_position) \
           THEN ${y} ELSE cursor_position END"
    )
}

/// A log entry waiting for its first attempt.
#[derive(Debug, Clone, QueryableByName)]
pub struct LogEntry {
    #[diesel(sql_type = Int8)]
    pub xact: i64,
    #[diesel(sql_type = Int8)]
    pub position: i64,
    #[diesel(sql_type = SqlUuid)]
    pub event_id: Uuid,
}

impl LogEntry {
    pub fn pos(&self) -> Pos {
        Pos {
            xact: self.xact,
            position: self.position,
        }
    }
}

#[derive(QueryableByName)]
struct Horizon {
    #[diesel(sql_type = Int8)]
    horizon: i64,
}

/// Up to `limit` log entries after `after` of the `types` (`*`: all),
/// oldest first, and how far the look reached: the last entry's place if
/// it took `limit`, else the log's horizon (every entry of an ended
/// transaction). Only entries older than the horizon are taken, so none
/// can commit later before them.
pub fn new_entries(
    conn: &mut PgConnection,
    after: Pos,
    types: &[String],
    limit: i64,
) -> Result<(Vec<LogEntry>, Pos), DbError> {
    let horizon = diesel::sql_query("SELECT webhook_log_horizon() AS horizon")
        .get_result::<Horizon>(conn)?
        .horizon;
    let entries: Vec<LogEntry> = diesel::sql_query(
        "SELECT xact, position, event_id FROM webhook_log \
         WHERE (xact, position) > ($1, $2) AND xact < $3 \
           AND (type = ANY ($4) OR '*' = ANY ($4)) \
         ORDER BY xact, position LIMIT $5",
    )
    .bind::<BigInt, _>(after.xact)
    .bind::<BigInt, _>(after.position)
    .bind::<BigInt, _>(horizon)
    .bind::<Array<Text>, _>(types)
    .bind::<BigInt, _>(limit)
    .load(conn)?;
    let reached = match entries.last() {
        Some(last) if entries.len() as i64 >= limit => last.pos(),
        _ => Pos {
            xact: horizon - 1,
            position: i64::MAX,
        }
        .max(after),
    };
    Ok((entries, reached))
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

/// What an attempt was of: a delivery row (a retry or a resend), or a log
/// entry's first attempt (its row is written with the answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Row(i64),
    Log(Pos),
}

impl Source {
    pub fn row(self) -> Option<i64> {
        match self {
            Source::Row(id) => Some(id),
            Source::Log(_) => None,
        }
    }

    pub fn log(self) -> Option<Pos> {
        match self {
            Source::Log(pos) => Some(pos),
            Source::Row(_) => None,
        }
    }
}

/// How one attempt ended, to record.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub source: Source,
    pub event_id: Uuid,
    pub attempt: i32,
    /// `Delivered`, `Retrying` (due again after `retry_in`) or `Failed`.
    pub state: DeliveryState,
    pub retry_in: Duration,
    pub response_status: Option<i16>,
    pub error: Option<String>,
    pub duration_ms: i32,
    pub attempted_at: DateTime<Utc>,
}

/// Settles a drainer's finished attempts (in the order they finished): the
/// rows of first attempts, each retried delivery's state, next attempt and
/// last answer, a log row for each attempt that did not deliver, the
/// endpoint's health and its `cursor` (when it moved). One transaction.
///
/// Fenced by the drain lease: if `task` no longer holds it (it lapsed and
/// another drainer took it, and sends these events again), nothing is
/// written and this returns false, so one event never gets two rows and
/// two retry chains.
pub fn record(
    conn: &mut PgConnection,
    endpoint: Uuid,
    task: &str,
    attempts: &[AttemptRecord],
    cursor: Option<Pos>,
) -> Result<bool, DbError> {
    if attempts.is_empty() {
        return Ok(true);
    }
    let ok = |a: &AttemptRecord| a.state == DeliveryState::Delivered;
    let trailing = attempts.iter().rev().take_while(|a| !ok(a)).count() as i32;
    let any_ok = attempts.iter().any(ok);
    let (firsts, retries): (Vec<&AttemptRecord>, Vec<&AttemptRecord>) =
        attempts.iter().partition(|a| a.source.log().is_some());
    let health = Health {
        any_ok,
        trailing_failures: trailing,
        cursor,
    };
    conn.transaction(|conn| {
        relaxed_commit(conn)?;
        // First: it locks the endpoint's row, so the lease cannot pass
        // to another drainer before this commits.
        if !record_health(conn, endpoint, task, &health)? {
            return Ok(false);
        }
        if !firsts.is_empty() {
            record_firsts(conn, endpoint, &firsts)?;
        }
        if !retries.is_empty() {
            record_retries(conn, endpoint, &retries)?;
        }
        Ok(true)
    })
}

/// What a batch of attempts says about its endpoint.
#[derive(Clone, Copy)]
struct Health {
    any_ok: bool,
    trailing_failures: i32,
    cursor: Option<Pos>,
}

/// The attempts' columns, in one order, for `unnest`.
struct Columns {
    state: Vec<&'static str>,
    delay: Vec<f64>,
    response_status: Vec<Option<i16>>,
    error: Vec<Option<String>>,
    duration_ms: Vec<i32>,
    attempted_at: Vec<DateTime<Utc>>,
}

impl Columns {
    fn of(attempts: &[&AttemptRecord]) -> Self {
        Columns {
            state: attempts.iter().map(|a| a.state.as_str()).collect(),
            delay: attempts.iter().map(|a| a.retry_in.as_secs_f64()).collect(),
            response_status: attempts.iter().map(|a| a.response_status).collect(),
            error: attempts.iter().map(|a| a.error.clone()).collect(),
            duration_ms: attempts.iter().map(|a| a.duration_ms).collect(),
            attempted_at: attempts.iter().map(|a| a.attempted_at).collect(),
        }
    }

    /// Binds the columns as the next six parameters, in this order.
    fn bind(self, q: BoxedSqlQuery<'_, Pg, SqlQuery>) -> BoxedSqlQuery<'_, Pg, SqlQuery> {
        q.bind::<Array<Text>, _>(self.state)
            .bind::<Array<Double>, _>(self.delay)
            .bind::<Array<Nullable<SmallInt>>, _>(self.response_status)
            .bind::<Array<Nullable<Text>>, _>(self.error)
            .bind::<Array<Int4>, _>(self.duration_ms)
            .bind::<Array<Timestamptz>, _>(self.attempted_at)
    }
}

/// First attempts: one delivery row each, written with its answer, and a
/// log row for those that did not deliver.
fn record_firsts(
    conn: &mut PgConnection,
    endpoint: Uuid,
    attempts: &[&AttemptRecord],
) -> Result<(), DbError> {
    let c = Columns::of(attempts);
    let q = diesel::sql_query(
        "WITH r AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::float8[], $4::int2[], \
                 $5::text[], $6::int4[], $7::timestamptz[]) \
               AS r(event_id, status, delay, response_status, error, duration_ms, attempted_at)), \
             d AS (INSERT INTO webhook_deliveries (endpoint_id, event_id, status, attempts, \
                 next_attempt_at, response_status, error, duration_ms, attempted_at) \
               SELECT $8, r.event_id, r.status, 1, CASE WHEN r.status = 'retrying' \
                   THEN now() + make_interval(secs => r.delay) ELSE r.attempted_at END, \
                 r.response_status, r.error, r.duration_ms, r.attempted_at FROM r \
               RETURNING id, status, response_status, error, duration_ms, attempted_at, \
                 next_attempt_at) \
         INSERT INTO webhook_attempts (delivery_id, endpoint_id, attempt, status, \
           response_status, error, duration_ms, attempted_at, next_attempt_at) \
         SELECT d.id, $8, 1, d.status, d.response_status, d.error, d.duration_ms, \
           d.attempted_at, CASE WHEN d.status = 'retrying' THEN d.next_attempt_at END \
         FROM d WHERE d.status <> 'delivered'",
    )
    .into_boxed()
    .bind::<Array<SqlUuid>, _>(attempts.iter().map(|a| a.event_id).collect::<Vec<_>>());
    c.bind(q).bind::<SqlUuid, _>(endpoint).execute(conn)?;
    Ok(())
}

/// Later attempts of delivery rows: each row's state, next attempt and
/// last answer, and a log row for those that did not deliver.
fn record_retries(
    conn: &mut PgConnection,
    endpoint: Uuid,
    attempts: &[&AttemptRecord],
) -> Result<(), DbError> {
    let ids: Vec<i64> = attempts.iter().filter_map(|a| a.source.row()).collect();
    let c = Columns::of(attempts);
    let q = diesel::sql_query(
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
    .into_boxed()
    .bind::<Array<Int8>, _>(ids)
    .bind::<Array<Int4>, _>(attempts.iter().map(|a| a.attempt).collect::<Vec<_>>());
    c.bind(q).bind::<SqlUuid, _>(endpoint).execute(conn)?;
    Ok(())
}

/// The endpoint's health after a round: its last success, and the failures
/// since (the round's trailing ones, added to the count if it had none);
/// and its cursor, which only moves forward. False if `task` does not hold
/// the drain lease (nothing changed).
fn record_health(
    conn: &mut PgConnection,
    endpoint: Uuid,
    task: &str,
    health: &Health,
) -> Result<bool, DbError> {
    let Health {
        any_ok,
        trailing_failures,
        cursor,
    } = *health;
    // No move: a place every cursor is past.
    let at = cursor.unwrap_or(Pos {
        xact: 0,
        position: 0,
    });
    let n = diesel::sql_query(format!(
        "UPDATE webhook_endpoints SET \
           last_success_at = CASE WHEN $2 THEN now() ELSE last_success_at END, \
           consecutive_failures = CASE WHEN $2 THEN $3 ELSE consecutive_failures + $3 END, \
           failing_since = CASE WHEN $3 = 0 THEN NULL \
             WHEN $2 THEN now() ELSE coalesce(failing_since, now()) END, \
           circuit_until = CASE WHEN $2 THEN NULL ELSE circuit_until END, \
           {} \
         WHERE id = $1 AND drain_task = $6",
        move_cursor(4, 5)
    ))
    .bind::<SqlUuid, _>(endpoint)
    .bind::<Bool, _>(any_ok)
    .bind::<Int4, _>(trailing_failures)
    .bind::<BigInt, _>(at.xact)
    .bind::<BigInt, _>(at.position)
    .bind::<Text, _>(task)
    .execute(conn)?;
    Ok(n == 1)
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

/// Log entry `l` is of a type endpoint `w` takes (SQL).
pub const OF_ITS_TYPES: &str = "(l.type = ANY (w.events) OR '*' = ANY (w.events))";

/// Endpoint `w`'s log entries after `cursor` (its own by default) that
/// wait for a first attempt (SQL, for `EXISTS`).
fn waiting(cursor: &str) -> String {
    format!(
        "SELECT 1 FROM webhook_log l WHERE (l.xact, l.position) > {cursor} \
           AND l.xact < webhook_log_horizon() AND {OF_ITS_TYPES}"
    )
}
const OWN_CURSOR: &str = "(w.cursor_xact, w.cursor_position)";

/// Sets endpoint `w`'s cursor to the log's head: past every entry of an
/// ended transaction (SQL, a `SET` list).
const TO_HEAD: &str =
    "cursor_xact = webhook_log_horizon() - 1, cursor_position = 9223372036854775807";

#[derive(QueryableByName)]
struct Exists {
    #[diesel(sql_type = Bool)]
    exists: bool,
}

/// Whether `endpoint` has log entries after `cursor` waiting for a first
/// attempt.
pub fn has_waiting(conn: &mut PgConnection, endpoint: Uuid, cursor: Pos) -> Result<bool, DbError> {
    let row: Exists = diesel::sql_query(format!(
        "SELECT EXISTS (SELECT 1 FROM webhook_endpoints w \
           WHERE w.id = $1 AND EXISTS ({})) AS exists",
        waiting("($2, $3)")
    ))
    .bind::<SqlUuid, _>(endpoint)
    .bind::<BigInt, _>(cursor.xact)
    .bind::<BigInt, _>(cursor.position)
    .get_result(conn)?;
    Ok(row.exists)
}

/// Enabled endpoints with no live drainer and something to send: a log
/// entry waiting for its first attempt, or a delivery row more than
/// `grace` overdue (its delayed wake-up was lost: Redis down, a worker
/// killed).
pub fn wakeable_endpoints(conn: &mut PgConnection, grace: Duration) -> Result<Vec<Uuid>, DbError> {
    let rows: Vec<EndpointId> = diesel::sql_query(format!(
        "SELECT w.id AS endpoint_id FROM webhook_endpoints w \
         WHERE w.enabled AND (w.drain_until IS NULL OR w.drain_until < now()) \
           AND (w.circuit_until IS NULL OR w.circuit_until <= now()) \
           AND (EXISTS ({}) OR EXISTS (SELECT 1 FROM webhook_deliveries d \
             WHERE d.endpoint_id = w.id AND d.status IN ('pending', 'retrying') \
               AND d.next_attempt_at < now() - make_interval(secs => $1)))",
        waiting(OWN_CURSOR)
    ))
    .bind::<Double, _>(grace.as_secs_f64())
    .load(conn)?;
    Ok(rows.into_iter().map(|r| r.endpoint_id).collect())
}

/// Moves the cursor of every endpoint with no live drainer and nothing
/// waiting to the log's horizon (the entries it passes are of types it
/// does not take), so the log can be trimmed behind it.
pub fn advance_idle_cursors(conn: &mut PgConnection) -> Result<usize, DbError> {
    Ok(diesel::sql_query(format!(
        "UPDATE webhook_endpoints w SET {TO_HEAD} \
         WHERE (w.drain_until IS NULL OR w.drain_until < now()) \
           AND {OWN_CURSOR} < (webhook_log_horizon() - 1, 9223372036854775807) \
           AND NOT EXISTS ({})",
        waiting(OWN_CURSOR)
    ))
    .execute(conn)?)
}

/// Seconds since the oldest event an enabled endpoint waits to make its
/// first attempt at was written (0 when none): the webhook lag.
pub fn lag_secs(conn: &mut PgConnection) -> Result<f64, DbError> {
    super::age_secs(
        conn,
        &format!(
            "SELECT min(first.created_at) \
             FROM webhook_endpoints w, LATERAL (SELECT l.created_at FROM webhook_log l \
               WHERE (l.xact, l.position) > {OWN_CURSOR} AND {OF_ITS_TYPES} \
               ORDER BY l.xact, l.position LIMIT 1) first \
             WHERE w.enabled"
        ),
    )
}

#[derive(QueryableByName)]
struct Shift {
    #[diesel(sql_type = Int8)]
    shift: i64,
}

/// Guards the log against a database moved to a cluster whose transaction
/// ids are younger (a dump and restore, a logical replica, a blue/green
/// switch): shifts every entry and cursor below the horizon if any sorts
/// at or past it (migration 14 says why that means a move). Returns the
/// shift, 0 when none was needed. Every writer of the log runs the same
/// check first; this sweep catches old entries no write follows.
pub fn rebase_if_moved(conn: &mut PgConnection) -> Result<i64, DbError> {
    Ok(diesel::sql_query("SELECT webhook_log_rebase() AS shift")
        .get_result::<Shift>(conn)?
        .shift)
}

/// Seconds the oldest open transaction holding an id (anywhere in the
/// cluster) has been open: the log's horizon waits for it, and so does
/// every first delivery after it (0 when none).
pub fn horizon_age_secs(conn: &mut PgConnection) -> Result<f64, DbError> {
    super::age_secs(
        conn,
        "SELECT min(xact_start) FROM pg_stat_activity \
         WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()",
    )
}

/// How long the log keeps an entry for a disabled endpoint that has not
/// taken it yet: enabled again within this, it gets what it missed.
pub const PAUSED_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Deletes log entries every enabled endpoint's cursor has passed (every
/// ended one, when none is enabled) and every disabled one's too, unless
/// the entry is older than [`PAUSED_RETENTION`]. Looks at the first
/// `limit` such entries in log order (so the cost stays bounded behind a
/// long pause); returns how many it deleted.
pub fn trim_log(conn: &mut PgConnection, limit: i64) -> Result<usize, DbError> {
    Ok(diesel::sql_query(
        "WITH low AS (SELECT cursor_xact AS x, cursor_position AS p FROM webhook_endpoints \
             WHERE enabled ORDER BY cursor_xact, cursor_position LIMIT 1), \
           paused AS (SELECT cursor_xact AS x, cursor_position AS p FROM webhook_endpoints \
             WHERE NOT enabled ORDER BY cursor_xact, cursor_position LIMIT 1), \
           upto AS (SELECT coalesce((SELECT x FROM low), webhook_log_horizon() - 1) AS x, \
             coalesce((SELECT p FROM low), 9223372036854775807) AS p), \
           first AS (SELECT l.xact, l.position, l.created_at FROM webhook_log l, upto \
             WHERE (l.xact, l.position) <= (upto.x, upto.p) \
             ORDER BY l.xact, l.position LIMIT $1) \
         DELETE FROM webhook_log WHERE (xact, position) IN ( \
           SELECT f.xact, f.position FROM first f \
           WHERE NOT EXISTS (SELECT 1 FROM paused) \
              OR (f.xact, f.position) <= (SELECT x, p FROM paused) \
              OR f.created_at < now() - make_interval(secs => $2))",
    )
    .bind::<BigInt, _>(limit)
    .bind::<Double, _>(PAUSED_RETENTION.as_secs_f64())
    .execute(conn)?)
}

/// Why a resend was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResendRefusal {
    /// No such endpoint or event.
    NotFound,
    /// The endpoint does not subscribe to the event's type: it would get
    /// what it never asked for (an order's customer data included).
    NotSubscribed,
}

/// A new delivery of `event` to `endpoint`, if it subscribes to the
/// event's type. Closes the endpoint's circuit: ops asking for a send mean
/// now.
pub fn resend(
    conn: &mut PgConnection,
    endpoint: Uuid,
    event: Uuid,
) -> Result<Result<(), ResendRefusal>, DbError> {
    use super::schema::{order_events, webhook_endpoints};
    let events: Option<Vec<Option<String>>> = webhook_endpoints::table
        .find(endpoint)
        .select(webhook_endpoints::events)
        .first(conn)
        .optional()?;
    let kind: Option<String> = order_events::table
        .find(event)
        .select(order_events::type_)
        .first(conn)
        .optional()?;
    let (Some(events), Some(kind)) = (events, kind) else {
        return Ok(Err(ResendRefusal::NotFound));
    };
    let subscribed = events.iter().flatten().any(|e| e == "*" || *e == kind);
    if !subscribed {
        return Ok(Err(ResendRefusal::NotSubscribed));
    }
    let queued = diesel::sql_query(
        "WITH w AS (UPDATE webhook_endpoints SET circuit_until = NULL \
           WHERE id = $1 AND EXISTS (SELECT 1 FROM order_events WHERE id = $2) RETURNING id) \
         INSERT INTO webhook_deliveries (endpoint_id, event_id) \
         SELECT w.id, e.id FROM w, order_events e WHERE e.id = $2",
    )
    .bind::<SqlUuid, _>(endpoint)
    .bind::<SqlUuid, _>(event)
    .execute(conn)?;
    Ok(if queued == 1 {
        Ok(())
    } else {
        Err(ResendRefusal::NotFound)
    })
}
