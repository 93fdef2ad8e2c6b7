//! PostgreSQL access: the r2d2 pool of sync Diesel connections, the embedded
//! migrations, and `unit`, the one way the HTTP layer touches the database.
//!
//! Query functions in the submodules take `&mut PgConnection`, so the same
//! function runs alone or inside a caller's transaction. A unit of work is one
//! checkout from the pool on actix's blocking thread pool; no connection or
//! transaction is ever held while a partner is called.

pub mod delivery;
pub mod events;
pub mod group;
pub mod idempotency;
pub mod models;
pub mod orders;
pub mod outbox;
pub mod prepared;
pub mod products;
pub mod schema;
pub mod webhook_log;
pub mod webhooks;

use std::time::Duration;

use anyhow::Context as _;
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool, PooledConnection};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::{Connection, RunQueryDsl};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use secrecy::ExposeSecret;

use crate::config::Settings;

pub type DbConn = PooledConnection<ConnectionManager<PgConnection>>;

/// The r2d2 pool, and how long a unit of work on it may take before its
/// caller gives up (answers 503, or retries the job): the checkout timeout
/// plus the statement timeout plus a second. PostgreSQL bounds a slow
/// statement itself; this bounds a silent one (a partition, a stalled
/// server), where no server-side timeout can answer.
#[derive(Clone)]
pub struct DbPool {
    pool: Pool<ConnectionManager<PgConnection>>,
    deadline: Duration,
}

impl std::ops::Deref for DbPool {
    type Target = Pool<ConnectionManager<PgConnection>>;
    fn deref(&self) -> &Self::Target {
        &self.pool
    }
}

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

/// Sets per-connection limits when r2d2 opens a connection.
#[derive(Debug)]
struct SessionSettings {
    statement_timeout_ms: u128,
    application_name: &'static str,
}

impl CustomizeConnection<PgConnection, diesel::r2d2::Error> for SessionSettings {
    fn on_acquire(&self, conn: &mut PgConnection) -> Result<(), diesel::r2d2::Error> {
        conn.batch_execute(&format!(
            "SET statement_timeout = {}; SET application_name = '{}';",
            self.statement_timeout_ms, self.application_name
        ))
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// Builds the pool without connecting: a database that is down at start
/// makes requests answer 503 until it is back, instead of failing the process.
pub fn build_pool(settings: &Settings, application_name: &'static str) -> DbPool {
    build_pool_sized(settings, application_name, settings.db_pool_size)
}

/// [`build_pool`] with at most `max_size` connections (at least 1).
pub fn build_pool_sized(
    settings: &Settings,
    application_name: &'static str,
    max_size: u32,
) -> DbPool {
    let url = with_tcp_timeouts(settings.database_url.expose_secret());
    let manager = ConnectionManager::<PgConnection>::new(url);
    let pool = Pool::builder()
        .max_size(max_size.max(1))
        .min_idle(Some(0))
        .connection_timeout(settings.db_checkout_timeout)
        .idle_timeout(Some(Duration::from_secs(300)))
        .connection_customizer(Box::new(SessionSettings {
            statement_timeout_ms: settings.db_statement_timeout.as_millis(),
            application_name,
        }))
        .build_unchecked(manager);
    DbPool {
        pool,
        deadline: settings.db_checkout_timeout
            + settings.db_statement_timeout
            + Duration::from_secs(1),
    }
}

/// libpq's own client-side limits, unless the URL sets them: connecting
/// gives up after 3 s (`connect_timeout`); a connection whose sent data is
/// not acknowledged for 10 s is dropped (`tcp_user_timeout`), and an idle
/// one is probed by TCP keepalives (after 10 s, every 5 s, dropped after 3
/// misses), so a connection cut by a partition is found dead instead of
/// waiting forever.
fn with_tcp_timeouts(database_url: &str) -> String {
    let Ok(mut url) = url::Url::parse(database_url) else {
        return database_url.to_owned();
    };
    let set: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
    let defaults = [
        ("connect_timeout", "3"),
        ("tcp_user_timeout", "10000"),
        ("keepalives", "1"),
        ("keepalives_idle", "10"),
        ("keepalives_interval", "5"),
        ("keepalives_count", "3"),
    ];
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in defaults {
            if !set.iter().any(|s| s == k) {
                q.append_pair(k, v);
            }
        }
    }
    url.to_string()
}

/// Runs one unit of work on actix's blocking pool: one checkout, the
/// closure (which opens its own transaction when it needs one), done.
/// The caller's tracing span is carried into the blocking thread. Past the
/// pool's deadline the caller gets `Unavailable` while the blocking thread
/// may still be waiting on the network (it holds its connection until
/// libpq gives up); see [`unit_before_deadline`] for work that must not
/// commit once its caller has given up.
pub async fn unit<T, F>(pool: &DbPool, f: F) -> Result<T, DbError>
where
    F: FnOnce(&mut PgConnection) -> Result<T, DbError> + Send + 'static,
    T: Send + 'static,
{
    unit_before_deadline(pool, move |conn, _| f(conn)).await
}

/// [`unit`], with the instant past which the caller has given up passed to
/// the closure, so it can roll back instead of committing what nobody will
/// be told about (checked right before the commit).
pub async fn unit_before_deadline<T, F>(pool: &DbPool, f: F) -> Result<T, DbError>
where
    F: FnOnce(&mut PgConnection, std::time::Instant) -> Result<T, DbError> + Send + 'static,
    T: Send + 'static,
{
    let limit = pool.deadline;
    let deadline = std::time::Instant::now() + limit;
    let pool = pool.clone();
    let span = tracing::Span::current();
    let work = actix_web::web::block(move || {
        let _entered = span.enter();
        let mut conn = pool.get()?;
        f(&mut conn, deadline)
    });
    match tokio::time::timeout_at(deadline.into(), work).await {
        Ok(done) => {
            done.map_err(|e| DbError::Other(anyhow::anyhow!("blocking task failed: {e}")))?
        }
        Err(_) => Err(DbError::Unavailable(format!(
            "no answer from the database within {} ms",
            limit.as_millis()
        ))),
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
