//! Owed work: the transactional outbox (see the migration's comment).

use diesel::prelude::*;
use uuid::Uuid;

use super::schema::owed_work::dsl as w;
use super::DbError;

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

/// Records that `kind` is owed for `order_id`; idempotent.
pub fn owe(conn: &mut PgConnection, kind: OwedKind, order_id: Uuid) -> Result<(), DbError> {
    diesel::insert_into(w::owed_work)
        .values((w::kind.eq(kind.as_str()), w::order_id.eq(order_id)))
        .on_conflict_do_nothing()
        .execute(conn)?;
    Ok(())
}

/// Notes that the wake-up for this work reached the queue.
pub fn mark_pushed(conn: &mut PgConnection, kind: OwedKind, order_id: Uuid) -> Result<(), DbError> {
    diesel::update(w::owed_work.find((kind.as_str(), order_id)))
        .set(w::last_pushed_at.eq(diesel::dsl::now))
        .execute(conn)?;
    Ok(())
}

/// Whether `kind` is still owed for `order_id`.
pub fn is_owed(conn: &mut PgConnection, kind: OwedKind, order_id: Uuid) -> Result<bool, DbError> {
    Ok(diesel::select(diesel::dsl::exists(
        w::owed_work.find((kind.as_str(), order_id)),
    ))
    .get_result(conn)?)
}
