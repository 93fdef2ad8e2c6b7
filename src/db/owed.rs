//! Owed work: the transactional outbox (see the first migration's comment).
//! Rows are written by the statement that makes work owed
//! (`orders::settle_payment` owes `deliver`) and deleted by the job that
//! completes it; the worker's sweeper re-pushes rows that linger.

/// Kinds of owed work; the column's CHECK lists the same values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwedKind {
    Deliver,
    ReconcilePayment,
    Refund,
}

impl OwedKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OwedKind::Deliver => "deliver",
            OwedKind::ReconcilePayment => "reconcile_payment",
            OwedKind::Refund => "refund",
        }
    }
}

use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Nullable, Text, Uuid as SqlUuid};
use uuid::Uuid;

use super::schema::owed_work::dsl as w;
use super::DbError;

impl std::str::FromStr for OwedKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "deliver" => Ok(OwedKind::Deliver),
            "reconcile_payment" => Ok(OwedKind::ReconcilePayment),
            "refund" => Ok(OwedKind::Refund),
            other => Err(format!("unknown owed kind `{other}`")),
        }
    }
}

/// Records that `kind` is owed for `order_id`; idempotent.
pub fn owe(conn: &mut PgConnection, kind: OwedKind, order_id: Uuid) -> Result<(), DbError> {
    diesel::insert_into(w::owed_work)
        .values((w::kind.eq(kind.as_str()), w::order_id.eq(order_id)))
        .on_conflict_do_nothing()
        .execute(conn)?;
    Ok(())
}

/// The work is done (or moot): forget it.
pub fn settle(conn: &mut PgConnection, kind: OwedKind, order_id: Uuid) -> Result<(), DbError> {
    diesel::delete(w::owed_work.find((kind.as_str(), order_id))).execute(conn)?;
    Ok(())
}

#[derive(QueryableByName)]
struct Due {
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = SqlUuid)]
    order_id: Uuid,
}

/// Takes up to `limit` owed items that are older than `grace` and were not
/// pushed in the last `repush_after`, and marks them pushed now. Rows locked
/// by a concurrent sweeper are skipped, so several sweepers never take the
/// same item in the same window.
pub fn take_due(
    conn: &mut PgConnection,
    grace: Duration,
    repush_after: Duration,
    limit: i64,
) -> Result<Vec<(OwedKind, Uuid)>, DbError> {
    let rows: Vec<Due> = diesel::sql_query(
        "UPDATE owed_work SET last_pushed_at = now() WHERE (kind, order_id) IN ( \
           SELECT kind, order_id FROM owed_work \
           WHERE owed_since < now() - make_interval(secs => $1) \
             AND (last_pushed_at IS NULL OR last_pushed_at < now() - make_interval(secs => $2)) \
           ORDER BY owed_since LIMIT $3 FOR UPDATE SKIP LOCKED) \
         RETURNING kind, order_id",
    )
    .bind::<Double, _>(grace.as_secs_f64())
    .bind::<Double, _>(repush_after.as_secs_f64())
    .bind::<BigInt, _>(limit)
    .load(conn)?;
    Ok(rows
        .into_iter()
        .filter_map(|r| Some((r.kind.parse().ok()?, r.order_id)))
        .collect())
}

/// Owes a reconciliation for every order left `payment_pending` longer than
/// `older_than` (a 202, or a request that died mid-charge).
pub fn owe_stale_payments(
    conn: &mut PgConnection,
    older_than: Duration,
    limit: i64,
) -> Result<usize, DbError> {
    Ok(diesel::sql_query(
        "INSERT INTO owed_work (kind, order_id) \
         SELECT 'reconcile_payment', id FROM orders \
         WHERE status = 'payment_pending' AND updated_at < now() - make_interval(secs => $1) \
         ORDER BY updated_at LIMIT $2 ON CONFLICT DO NOTHING",
    )
    .bind::<Double, _>(older_than.as_secs_f64())
    .bind::<BigInt, _>(limit)
    .execute(conn)?)
}

#[derive(QueryableByName)]
struct Lag {
    #[diesel(sql_type = Nullable<Double>)]
    seconds: Option<f64>,
}

/// Age in seconds of the oldest owed item (0 when nothing is owed).
pub fn oldest_age_secs(conn: &mut PgConnection) -> Result<f64, DbError> {
    let lag: Lag = diesel::sql_query(
        "SELECT EXTRACT(EPOCH FROM now() - min(owed_since))::float8 AS seconds FROM owed_work",
    )
    .get_result(conn)?;
    Ok(lag.seconds.unwrap_or(0.0).max(0.0))
}
