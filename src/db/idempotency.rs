//! Idempotency-Key records (docs/API.md), stored in PostgreSQL.
//!
//! `claim` runs inside the transaction that records the order: the first
//! request inserts the key `in_progress` (concurrent ones block on the unique
//! index until it commits, then see it), and `complete` stores the response
//! in the transaction that settles the payment. An expired record (24 h) is
//! taken over as if new. An `in_progress` record whose owner went silent for
//! longer than the lease (a crashed process) is taken over too, and the new
//! owner resumes the order already attached to it rather than creating one.

use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::BigInt;
use serde_json::Value;
use uuid::Uuid;

use super::models::OrderRow;
use super::schema::idempotency_keys::dsl as k;
use super::DbError;

pub use super::models::KeyState;

/// How long a completed response is replayed.
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);

/// What a request with a key should do.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyClaim {
    /// First request with this key: go ahead.
    Claimed,
    /// The key was used with a different body.
    Reused,
    /// Another request with this key is running.
    InProgress,
    /// Replay the first answer.
    Completed(Replay),
    /// The previous owner went silent; resume its order (if it got that far).
    TakenOver { order_id: Option<Uuid> },
}

/// A live key's record, as a retry with it reads it.
#[derive(Queryable, Selectable)]
#[diesel(table_name = super::schema::idempotency_keys, check_for_backend(diesel::pg::Pg))]
struct StoredKey {
    request_hash: String,
    state: KeyState,
    order_id: Option<Uuid>,
    response_order: Option<Value>,
    response_status: Option<i16>,
    response_body: Option<Value>,
    locked_at: chrono::DateTime<chrono::Utc>,
}

/// What a completed key answers again.
#[derive(Debug, Clone, PartialEq)]
pub enum Replay {
    /// The order as the statement that settled it returned it: the answer
    /// is rendered from it, as the first one was.
    Order(Box<OrderRow>),
    /// A response stored rendered (records completed by older versions).
    Rendered { status: u16, body: Value },
}

/// Claims `key` for a request whose body hashes to `request_hash`.
/// Must run inside a transaction.
/// `order_id` is the id of the order the caller will insert in the same
/// transaction if the claim succeeds (the foreign key is deferred).
pub fn claim(
    conn: &mut PgConnection,
    key: &str,
    request_hash: &str,
    order_id: Uuid,
    lease: Duration,
) -> Result<KeyClaim, DbError> {
    let claimed = super::prepared::ClaimKey {
        key,
        request_hash,
        order_id,
        retention_secs: RETENTION.as_secs() as i64,
    }
    .execute(conn)?;
    if claimed == 1 {
        return Ok(KeyClaim::Claimed);
    }

    // The row exists and is live; ON CONFLICT already locked it.
    let stored: StoredKey = k::idempotency_keys
        .find(key)
        .select(StoredKey::as_select())
        .for_update()
        .first(conn)?;
    let StoredKey {
        request_hash: hash,
        state,
        order_id,
        response_order: row,
        response_status: status,
        response_body: body,
        locked_at,
    } = stored;
    if hash != request_hash {
        return Ok(KeyClaim::Reused);
    }
    if state == KeyState::Completed {
        if let Some(row) = row {
            let row: OrderRow = serde_json::from_value(row)
                .map_err(|e| DbError::Other(anyhow::anyhow!("stored order unreadable: {e}")))?;
            return Ok(KeyClaim::Completed(Replay::Order(Box::new(row))));
        }
        if let (Some(status), Some(body)) = (status, body) {
            return Ok(KeyClaim::Completed(Replay::Rendered {
                status: u16::try_from(status).unwrap_or(500),
                body,
            }));
        }
    }
    let lease = chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
    if chrono::Utc::now() - locked_at < lease {
        return Ok(KeyClaim::InProgress);
    }
    diesel::update(k::idempotency_keys.find(key))
        .set(k::locked_at.eq(diesel::dsl::now))
        .execute(conn)?;
    Ok(KeyClaim::TakenOver { order_id })
}

/// Completes `key` with the order its request answered from (the answer
/// is rendered again from it on replay).
pub fn complete(conn: &mut PgConnection, key: &str, order: &OrderRow) -> Result<(), DbError> {
    let order = serde_json::to_value(order).map_err(|e| DbError::Other(e.into()))?;
    super::prepared::CompleteKey { key, order: &order }.execute(conn)?;
    Ok(())
}

/// Deletes records past their retention; returns how many.
pub fn purge_expired(conn: &mut PgConnection, limit: i64) -> Result<usize, DbError> {
    Ok(diesel::sql_query(
        "DELETE FROM idempotency_keys WHERE key IN \
         (SELECT key FROM idempotency_keys WHERE expires_at <= now() ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)",
    )
    .bind::<BigInt, _>(limit)
    .execute(conn)?)
}
