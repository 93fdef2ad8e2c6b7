//! The SQL of staff accounts, sessions and the audit trail.

use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;

use super::audit::Outcome;
use super::{Principal, Role, BOOTSTRAP_NAME};
use crate::db::schema::{audit_entries, staff, staff_epoch, staff_sessions};
use crate::db::DbError;
use crate::domain::actor::ActorKind;

/// An account as `staff list` and `GET /api/v1/staff` show it (never its
/// token or hash).
#[derive(Debug, Clone, Queryable, Selectable, serde::Serialize, utoipa::ToSchema)]
#[diesel(table_name = staff, check_for_backend(diesel::pg::Pg))]
pub struct Account {
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Why an account was not added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddRefusal {
    /// The name is taken (by a live or a revoked account: names are never
    /// reused, so the audit trail stays unambiguous).
    NameTaken,
}

/// Adds account `name` with `role`, whose token hashes to `token_hash`.
pub fn add(
    conn: &mut PgConnection,
    name: &str,
    role: Role,
    token_hash: &[u8; 32],
    by: &str,
) -> Result<Result<Account, AddRefusal>, DbError> {
    let made = diesel::insert_into(staff::table)
        .values((
            staff::name.eq(name),
            staff::role.eq(role),
            staff::token_hash.eq(token_hash.as_slice()),
            staff::created_by.eq(by),
        ))
        .on_conflict_do_nothing()
        .returning(Account::as_returning())
        .get_result(conn)
        .optional()?;
    Ok(made.ok_or(AddRefusal::NameTaken))
}

/// Every account, oldest first.
pub fn list(conn: &mut PgConnection) -> Result<Vec<Account>, DbError> {
    Ok(staff::table
        .order(staff::created_at)
        .select(Account::as_select())
        .load(conn)?)
}

/// Revokes account `name` and ends its sessions; every `serve` drops its
/// cached principals on the next poll. `false` if there is no live account
/// of that name.
pub fn revoke(conn: &mut PgConnection, name: &str) -> Result<bool, DbError> {
    conn.transaction(|conn| {
        let n = diesel::update(
            staff::table
                .filter(staff::name.eq(name))
                .filter(staff::revoked_at.is_null()),
        )
        .set(staff::revoked_at.eq(diesel::dsl::now))
        .execute(conn)?;
        if n == 1 {
            diesel::update(
                staff_sessions::table
                    .filter(staff_sessions::staff_name.eq(name))
                    .filter(staff_sessions::ended_at.is_null()),
            )
            .set(staff_sessions::ended_at.eq(diesel::dsl::now))
            .execute(conn)?;
            bump_epoch(conn)?;
        }
        Ok(n == 1)
    })
}

/// The live account whose token hashes to `hash`.
pub fn by_token(conn: &mut PgConnection, hash: &[u8; 32]) -> Result<Option<Principal>, DbError> {
    let row: Option<(String, Role)> = staff::table
        .filter(staff::token_hash.eq(hash.as_slice()))
        .filter(staff::revoked_at.is_null())
        .select((staff::name, staff::role))
        .first(conn)
        .optional()?;
    Ok(row.map(|(name, role)| Principal { name, role }))
}

/// Starts a session for `who` (`None`: the bootstrap admin) until `expires`.
pub fn start_session(
    conn: &mut PgConnection,
    id_hash: &[u8; 32],
    who: Option<&str>,
    expires: DateTime<Utc>,
) -> Result<(), DbError> {
    diesel::insert_into(staff_sessions::table)
        .values((
            staff_sessions::id_hash.eq(id_hash.as_slice()),
            staff_sessions::staff_name.eq(who),
            staff_sessions::expires_at.eq(expires),
        ))
        .execute(conn)?;
    prune_sessions(conn)
}

/// Clears sessions that expired or ended over a day ago: each sign-in
/// sweeps, so the table holds about a day of sign-ins (the audit trail
/// keeps every start and end).
fn prune_sessions(conn: &mut PgConnection) -> Result<(), DbError> {
    let day_ago = Utc::now() - Duration::days(1);
    diesel::delete(
        staff_sessions::table.filter(
            staff_sessions::expires_at
                .lt(day_ago)
                .or(staff_sessions::ended_at.lt(day_ago)),
        ),
    )
    .execute(conn)?;
    Ok(())
}

/// The principal of the live session whose id hashes to `hash`. (A
/// revoke ends its account's sessions, so a live session's account is
/// live.)
pub fn by_session(conn: &mut PgConnection, hash: &[u8; 32]) -> Result<Option<Principal>, DbError> {
    let row: Option<(Option<String>, Option<Role>)> = staff_sessions::table
        .left_join(staff::table)
        .filter(staff_sessions::id_hash.eq(hash.as_slice()))
        .filter(staff_sessions::ended_at.is_null())
        .filter(staff_sessions::expires_at.gt(diesel::dsl::now))
        .select((staff_sessions::staff_name, staff::role.nullable()))
        .first(conn)
        .optional()?;
    Ok(match row {
        None => None,
        Some((None, _)) => Some(Principal {
            name: BOOTSTRAP_NAME.into(),
            role: Role::Admin,
        }),
        Some((Some(name), role)) => role.map(|role| Principal { name, role }),
    })
}

/// Ends the session whose id hashes to `hash` (signing out).
pub fn end_session(conn: &mut PgConnection, hash: &[u8; 32]) -> Result<(), DbError> {
    conn.transaction(|conn| {
        diesel::update(
            staff_sessions::table
                .filter(staff_sessions::id_hash.eq(hash.as_slice()))
                .filter(staff_sessions::ended_at.is_null()),
        )
        .set(staff_sessions::ended_at.eq(diesel::dsl::now))
        .execute(conn)?;
        bump_epoch(conn)
    })
}

/// The counter every `serve` polls: it moves when a right is taken away.
pub fn epoch(conn: &mut PgConnection) -> Result<i64, DbError> {
    Ok(staff_epoch::table.select(staff_epoch::n).first(conn)?)
}

fn bump_epoch(conn: &mut PgConnection) -> Result<(), DbError> {
    diesel::update(staff_epoch::table)
        .set(staff_epoch::n.eq(staff_epoch::n + 1))
        .execute(conn)?;
    Ok(())
}

/// One audit entry, as written and as listed.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = audit_entries, check_for_backend(diesel::pg::Pg))]
pub struct AuditRow {
    pub at: DateTime<Utc>,
    pub actor_type: ActorKind,
    pub actor_name: String,
    pub action: String,
    pub target: Option<String>,
    pub request_id: Option<String>,
    pub client_ip: Option<String>,
    pub outcome: Outcome,
}

pub fn insert_audit(conn: &mut PgConnection, row: &AuditRow) -> Result<(), DbError> {
    diesel::insert_into(audit_entries::table)
        .values(row)
        .execute(conn)?;
    Ok(())
}

/// A filter of the audit trail.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub target: Option<String>,
    /// Entries older than this id (the cursor).
    pub before: Option<i64>,
}

/// Entries newest first, with their ids (for the cursor).
pub fn list_audit(
    conn: &mut PgConnection,
    filter: AuditFilter,
    limit: i64,
) -> Result<Vec<(i64, AuditRow)>, DbError> {
    let mut q = audit_entries::table.into_boxed();
    if let Some(a) = filter.actor {
        q = q.filter(audit_entries::actor_name.eq(a));
    }
    if let Some(t) = filter.target {
        q = q.filter(audit_entries::target.eq(t));
    }
    if let Some(b) = filter.before {
        q = q.filter(audit_entries::id.lt(b));
    }
    Ok(q.order(audit_entries::id.desc())
        .limit(limit)
        .select((audit_entries::id, AuditRow::as_select()))
        .load(conn)?)
}
