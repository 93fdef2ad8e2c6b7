//! PostgreSQL access: the r2d2 pool of sync Diesel connections, the embedded
//! migrations, and `unit`, the one way the HTTP layer touches the database.
//!
//! Query functions in the submodules take `&mut PgConnection`, so the same
//! function runs alone or inside a caller's transaction. A unit of work is one
//! checkout from the pool on actix's blocking thread pool; no connection or
//! transaction is ever held while a partner is called.

pub mod delivery_log;
pub mod events;
pub mod gateway_events;
pub mod group;
pub mod idempotency;
pub mod models;
pub mod orders;
pub mod outbox;
mod pool;
pub mod prepared;
pub mod products;
pub mod schema;
pub mod shipments;
pub mod webhooks;

pub use pool::{build_pool, build_pool_sized, unit, unit_before_deadline, DbPool, ALIVE_BYPASS};

use anyhow::Context as _;
use diesel::pg::PgConnection;

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::{Connection, RunQueryDsl};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use secrecy::ExposeSecret;

use crate::config::Settings;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Why a unit of work did not complete.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database cannot be reached (pool checkout timed out, connection
    /// lost). Nothing was committed by this unit; the client may retry.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("row not found")]
    NotFound,
    #[error(transparent)]
    Other(anyhow::Error),
}

impl From<DieselError> for DbError {
    fn from(e: DieselError) -> Self {
        match e {
            DieselError::NotFound => DbError::NotFound,
            DieselError::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                info,
            ) => DbError::Unavailable(info.message().to_owned()),
            DieselError::BrokenTransactionManager => {
                DbError::Unavailable("connection broken".into())
            }
            // The COMMIT failed (the connection went away mid-commit): the
            // commit's error says why.
            DieselError::RollbackErrorOnCommit { commit_error, .. } => DbError::from(*commit_error),
            // Retryable by the client: the statement ran out of
            // `DB_STATEMENT_TIMEOUT_MS`, or the server is shutting down.
            DieselError::DatabaseError(kind, info) if is_transient(&kind, info.message()) => {
                DbError::Unavailable(info.message().to_owned())
            }
            other => DbError::Other(anyhow::Error::new(other)),
        }
    }
}

/// Errors a retry may not get: a statement or lock timeout, a deadlock, a
/// serialization failure, a server going away. (Diesel exposes no SQLSTATE,
/// so the server's messages are matched; PostgreSQL's are in English unless
/// `lc_messages` says otherwise.)
fn is_transient(kind: &DatabaseErrorKind, message: &str) -> bool {
    matches!(kind, DatabaseErrorKind::SerializationFailure)
        || [
            "canceling statement due to statement timeout",
            "canceling statement due to lock timeout",
            "deadlock detected",
            "terminating connection",
            "the database system is",
            // libpq's own words for a connection that broke under a query.
            "server closed the connection",
            "could not receive data from server",
            "could not send data to server",
            "no connection to the server",
            "connection to server",
            "lost synchronization with server",
            "SSL connection has been closed",
            "SSL SYSCALL error",
        ]
        .iter()
        .any(|m| message.contains(m))
}

impl From<diesel::r2d2::PoolError> for DbError {
    fn from(e: diesel::r2d2::PoolError) -> Self {
        DbError::Unavailable(e.to_string())
    }
}

impl From<anyhow::Error> for DbError {
    fn from(e: anyhow::Error) -> Self {
        DbError::Other(e)
    }
}

/// Connects to the server's maintenance database and creates the target
/// database if it does not exist yet.
pub fn create_database_if_missing(database_url: &str) -> anyhow::Result<()> {
    let mut url = url::Url::parse(database_url).context("DATABASE_URL is not a URL")?;
    let name = url.path().trim_start_matches('/').to_owned();
    if name.is_empty() {
        anyhow::bail!("DATABASE_URL names no database");
    }
    url.set_path("/postgres");
    let mut conn =
        PgConnection::establish(url.as_str()).context("connecting to the maintenance database")?;
    #[derive(diesel::QueryableByName)]
    struct Exists {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        exists: bool,
    }
    let found: Exists =
        diesel::sql_query("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS exists")
            .bind::<diesel::sql_types::Text, _>(&name)
            .get_result(&mut conn)
            .context("looking up the database")?;
    if !found.exists {
        let quoted = name.replace('"', "\"\"");
        match diesel::sql_query(format!("CREATE DATABASE \"{quoted}\"")).execute(&mut conn) {
            Ok(_) => tracing::info!(db.name = %name, "created database"),
            // Another process created it between our check and our CREATE.
            Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {}
            Err(e) => return Err(e).context("creating the database"),
        }
    }
    Ok(())
}

/// Applies pending migrations; returns the versions applied.
pub fn run_migrations(conn: &mut PgConnection) -> anyhow::Result<Vec<String>> {
    let applied = conn
        .run_pending_migrations(MIGRATIONS)
        .map_err(|e| anyhow::anyhow!("running migrations: {e}"))?;
    Ok(applied.iter().map(|v| v.to_string()).collect())
}

/// Blocks until `attempt` succeeds, retrying with exponential backoff
/// (0.25 s doubling to 10 s) and logging every failure.
pub fn retry_with_backoff<T>(what: &str, mut attempt: impl FnMut() -> anyhow::Result<T>) -> T {
    let mut backoff = crate::backoff::Backoff::default();
    loop {
        match attempt() {
            Ok(v) => return v,
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %format!("{e:#}"), retry_in_ms = delay.as_millis() as u64, "{what} failed; retrying");
                std::thread::sleep(delay);
            }
        }
    }
}

/// `migrate`: waits for the server, creates the database if missing and
/// applies the migrations.
pub fn migrate(settings: &Settings) -> Vec<String> {
    let url = settings.database_url.expose_secret().to_owned();
    retry_with_backoff("migrating the database", || {
        create_database_if_missing(&url)?;
        let mut conn = PgConnection::establish(&url).context("connecting to the database")?;
        run_migrations(&mut conn)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Info(&'static str);
    impl diesel::result::DatabaseErrorInformation for Info {
        fn message(&self) -> &str {
            self.0
        }
        fn details(&self) -> Option<&str> {
            None
        }
        fn hint(&self) -> Option<&str> {
            None
        }
        fn table_name(&self) -> Option<&str> {
            None
        }
        fn column_name(&self) -> Option<&str> {
            None
        }
        fn constraint_name(&self) -> Option<&str> {
            None
        }
        fn statement_position(&self) -> Option<i32> {
            None
        }
    }

    fn db(kind: DatabaseErrorKind, message: &'static str) -> DieselError {
        DieselError::DatabaseError(kind, Box::new(Info(message)))
    }

    #[test]
    fn a_broken_connection_or_a_timeout_is_unavailable_not_a_bug() {
        for e in [
            db(
                DatabaseErrorKind::Unknown,
                "could not receive data from server: Connection reset by peer",
            ),
            db(
                DatabaseErrorKind::Unknown,
                "server closed the connection unexpectedly",
            ),
            db(
                DatabaseErrorKind::Unknown,
                "canceling statement due to statement timeout",
            ),
            db(DatabaseErrorKind::ClosedConnection, "anything"),
            db(
                DatabaseErrorKind::SerializationFailure,
                "could not serialize access",
            ),
            DieselError::RollbackErrorOnCommit {
                rollback_error: Box::new(db(
                    DatabaseErrorKind::Unknown,
                    "no connection to the server",
                )),
                commit_error: Box::new(db(
                    DatabaseErrorKind::Unknown,
                    "could not send data to server: Broken pipe",
                )),
            },
        ] {
            assert!(matches!(DbError::from(e), DbError::Unavailable(_)));
        }
        assert!(matches!(
            DbError::from(db(
                DatabaseErrorKind::CheckViolation,
                "violates check constraint"
            )),
            DbError::Other(_)
        ));
    }
}

#[derive(diesel::QueryableByName)]
struct Age {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Double>)]
    seconds: Option<f64>,
}

/// Seconds since the time `oldest` selects (a query of one timestamp,
/// NULL when there is nothing), 0 when NULL: the lag figures `/metrics`
/// reports.
pub fn age_secs(conn: &mut PgConnection, oldest: &str) -> Result<f64, DbError> {
    let age: Age = diesel::sql_query(format!(
        "SELECT EXTRACT(EPOCH FROM now() - ({oldest}))::float8 AS seconds"
    ))
    .get_result(conn)?;
    Ok(age.seconds.unwrap_or(0.0).max(0.0))
}

impl From<DbError> for crate::error::ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable(why) => crate::error::ApiError::Unavailable(why),
            DbError::NotFound => crate::error::ApiError::NotFound,
            DbError::Other(e) => crate::error::ApiError::Unexpected(e),
        }
    }
}
