//! The outbox: work a state change owes (see the first migration's comment).
//! Rows are written by the statement that makes work owed
//! (`orders::settle_payment` owes `deliver`) and deleted by the job that
//! completes it; the worker's sweeper re-pushes rows that linger.

use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Text, Uuid as SqlUuid};
use uuid::Uuid;

use super::schema::outbox::dsl as w;
use super::DbError;

pub use super::models::OutboxKind;

/// Records that `kind` is owed for `order_id`; idempotent.
pub fn add(conn: &mut PgConnection, kind: OutboxKind, order_id: Uuid) -> Result<(), DbError> {
    diesel::insert_into(w::outbox)
        .values((w::kind.eq(kind), w::order_id.eq(order_id)))
        .on_conflict_do_nothing()
        .execute(conn)?;
    Ok(())
}

/// The work is done (or moot): forget it.
pub fn done(conn: &mut PgConnection, kind: OutboxKind, order_id: Uuid) -> Result<(), DbError> {
    diesel::delete(w::outbox.find((kind, order_id))).execute(conn)?;
    Ok(())
}

#[derive(QueryableByName)]
struct Due {
    #[diesel(sql_type = SqlUuid)]
    order_id: Uuid,
}

/// Takes up to `limit` outbox items of `kind` whose next attempt is more than
/// `grace` overdue (no job started or re-armed them: a lost wake-up, a job
/// that died for good) and that were not pushed in the last
/// `repush_after`, and marks them pushed now. An item whose job is running
/// (within its attempt lease) or waiting for its own next attempt is never
/// taken, so the sweeper never starts a second chain. Rows locked by a
/// concurrent sweeper are skipped.
pub fn take_due(
    conn: &mut PgConnection,
    kind: OutboxKind,
    grace: Duration,
    repush_after: Duration,
    limit: i64,
) -> Result<Vec<Uuid>, DbError> {
    let rows: Vec<Due> = diesel::sql_query(
        "UPDATE outbox SET last_pushed_at = now() WHERE (kind, order_id) IN ( \
           SELECT kind, order_id FROM outbox \
           WHERE kind = $1 AND next_attempt_at < now() - make_interval(secs => $2) \
             AND (last_pushed_at IS NULL OR last_pushed_at < now() - make_interval(secs => $3)) \
           ORDER BY next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED) \
         RETURNING order_id",
    )
    .bind::<Text, _>(kind.as_str())
    .bind::<Double, _>(grace.as_secs_f64())
    .bind::<Double, _>(repush_after.as_secs_f64())
    .bind::<BigInt, _>(limit)
    .load(conn)?;
    Ok(rows.into_iter().map(|r| r.order_id).collect())
}

/// What a woken job may do with its outbox item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Run attempt number `attempt` (1 for the first) now.
    Run { attempt: i32 },
    /// Another job holds the current attempt, or the next one is not due
    /// yet: this wake-up is a duplicate.
    NotYet,
    /// Nothing is owed (done, or moot).
    NotOwed,
}

/// Claims an attempt of owed `kind` for `order_id` for the job `task` (its
/// apalis task id): granted when the next attempt is due, or when `task`
/// already holds the current attempt (apalis re-running the same task after
/// a crash, which is the same attempt). The attempt is leased for `lease`;
/// a job that neither finishes nor re-arms within it is the sweeper's again.
pub fn claim(
    conn: &mut PgConnection,
    kind: OutboxKind,
    order_id: Uuid,
    task: &str,
    lease: Duration,
) -> Result<Claim, DbError> {
    let claimed = super::prepared::ClaimMany {
        kind,
        ids: &[order_id],
        tasks: &[task],
        lease_secs: lease.as_secs_f64(),
    }
    .load::<(Uuid, Option<String>, i32)>(conn)?;
    if let Some((_, _, attempts)) = claimed.first() {
        return Ok(Claim::Run { attempt: *attempts });
    }
    let owed: i64 = w::outbox
        .filter(w::kind.eq(kind))
        .filter(w::order_id.eq(order_id))
        .count()
        .get_result(conn)?;
    Ok(if owed > 0 {
        Claim::NotYet
    } else {
        Claim::NotOwed
    })
}

/// How long ago `kind` became owed for `order_id`; `None` if it is not.
pub fn age(
    conn: &mut PgConnection,
    kind: OutboxKind,
    order_id: Uuid,
) -> Result<Option<Duration>, DbError> {
    let since: Option<chrono::DateTime<chrono::Utc>> = w::outbox
        .find((kind, order_id))
        .select(w::created_at)
        .first(conn)
        .optional()?;
    Ok(since.map(|t| (chrono::Utc::now() - t).to_std().unwrap_or_default()))
}

/// Owes `kind` for `order_id` with its next attempt due now, whatever was
/// owed before: an ops re-drive. The settle window starts again.
pub fn redrive(conn: &mut PgConnection, kind: OutboxKind, order_id: Uuid) -> Result<(), DbError> {
    diesel::sql_query(
        "INSERT INTO outbox (kind, order_id) VALUES ($1, $2) \
         ON CONFLICT (kind, order_id) DO UPDATE SET created_at = now(), \
           next_attempt_at = now(), attempt_task = NULL, last_pushed_at = NULL, attempts = 0",
    )
    .bind::<Text, _>(kind.as_str())
    .bind::<SqlUuid, _>(order_id)
    .execute(conn)?;
    Ok(())
}

/// The attempt failed and the next one is due in `delay`: the lease is
/// released and the sweeper leaves the item alone until then.
pub fn retry_in(
    conn: &mut PgConnection,
    kind: OutboxKind,
    order_id: Uuid,
    delay: Duration,
) -> Result<(), DbError> {
    diesel::sql_query(
        "UPDATE outbox SET attempt_task = NULL, \
           next_attempt_at = now() + make_interval(secs => $3) \
         WHERE kind = $1 AND order_id = $2",
    )
    .bind::<Text, _>(kind.as_str())
    .bind::<SqlUuid, _>(order_id)
    .bind::<Double, _>(delay.as_secs_f64())
    .execute(conn)?;
    Ok(())
}

/// Owes a reconciliation for every order still `payment_pending` more than
/// `older_than` after it was created (a 202, or a request that died
/// mid-charge); one awaiting its customer's authentication only after
/// `awaiting_action` (its deadline: until then the gateway's event settles
/// it, and polling it would grow with the orders awaiting one).
pub fn owe_stale_payments(
    conn: &mut PgConnection,
    older_than: Duration,
    awaiting_action: Duration,
    limit: i64,
) -> Result<usize, DbError> {
    Ok(diesel::sql_query(
        "INSERT INTO outbox (kind, order_id) \
         SELECT $3, id FROM orders \
         WHERE status = $4 AND attention IS NULL \
           AND created_at < now() - make_interval(secs => CASE \
             WHEN payment_status = $5 THEN greatest($1, $6) ELSE $1 END) \
         ORDER BY created_at LIMIT $2 ON CONFLICT DO NOTHING",
    )
    .bind::<Double, _>(older_than.as_secs_f64())
    .bind::<BigInt, _>(limit)
    .bind::<Text, _>(OutboxKind::ReconcilePayment)
    .bind::<Text, _>(crate::domain::OrderStatus::PaymentPending)
    .bind::<Text, _>(super::models::REQUIRES_ACTION)
    .bind::<Double, _>(awaiting_action.as_secs_f64())
    .execute(conn)?)
}

/// Age in seconds of the oldest outbox item (0 when nothing is owed).
pub fn oldest_age_secs(conn: &mut PgConnection) -> Result<f64, DbError> {
    super::age_secs(conn, "SELECT min(created_at) FROM outbox")
}
