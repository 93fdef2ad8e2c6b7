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

use super::schema::idempotency_keys::dsl as k;
use super::DbError;

crate::domain::status::text_enum! {
    /// Where a keyed request stands (the `state` column).
    KeyState {
        InProgress => "in_progress",
        Completed => "completed",
    }
}

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
    /// Replay this response.
    Completed { status: u16, body: Value },
    /// The previous owner went silent; resume its order (if it got that far).
    TakenOver { order_id: Option<Uuid> },
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
    let (hash, state, order_id, status, body, locked_at): (
        String,
        KeyState,
        Option<Uuid>,
        Option<i16>,
        Option<Value>,
        chrono::DateTime<chrono::Utc>,
    ) = k::idempotency_keys
        .find(key)
        .select((
            k::request_hash,
            k::state,
            k::order_id,
            k::response_status,
            k::response_body,
            k::locked_at,
        ))
        .for_update()
        .first(conn)?;
    if hash != request_hash {
        return Ok(KeyClaim::Reused);
    }
    if state == KeyState::Completed {
        if let (Some(status), Some(body)) = (status, body) {
            return Ok(KeyClaim::Completed {
                status: u16::try_from(status).unwrap_or(500),
                body,
            });
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

/// Stores the response to replay.
pub fn complete(
    conn: &mut PgConnection,
    key: &str,
    status: u16,
    body: &Value,
) -> Result<(), DbError> {
    super::prepared::CompleteKey {
        key,
        response_status: status as i16,
        response_body: body,
    }
    .execute(conn)?;
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
