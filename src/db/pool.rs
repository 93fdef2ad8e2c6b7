//! The r2d2 pool of Diesel connections and `unit`, the one way the rest of
//! the code checks a connection out.
//!
//! A connection is tested (`SELECT 1`) when it is checked out only if it has
//! been idle in the pool for [`ALIVE_BYPASS`] or more. One returned a moment
//! ago has just answered; testing it again cost a round trip per unit of
//! work (what that cost is in docs/BENCHMARKS.md) and would find nothing
//! the unit's own first statement does not. What the test used to catch there
//! is caught by the unit instead: Diesel marks a connection whose socket
//! closed as broken, and a unit that fails as unavailable for any other
//! reason marks its connection lost; either way the pool drops it rather
//! than hand it out again. So a server restart costs at most the units that
//! were in flight or checked out within the window, each a retryable 503 or
//! job retry. (HikariCP skips its check the same way, within 500 ms of a
//! connection's last use.)

use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, ManageConnection, Pool};
use secrecy::ExposeSecret;

use super::DbError;
use crate::config::Settings;

/// A connection idle for less than this is handed out without a test.
pub const ALIVE_BYPASS: Duration = Duration::from_millis(500);

/// A pooled connection, with what the pool knows about it.
pub struct Conn {
    pg: PgConnection,
    /// When it last went back to the pool (or was opened).
    returned: Instant,
    /// A unit on it found the database unreachable: never reuse it.
    lost: bool,
}

impl Deref for Conn {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.pg
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.pg
    }
}

/// Diesel's connection manager, with the test skipped for connections just
/// returned and lost connections dropped.
#[derive(Debug)]
pub struct Manager {
    diesel: ConnectionManager<PgConnection>,
}

impl ManageConnection for Manager {
    type Connection = Conn;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<Conn, Self::Error> {
        Ok(Conn {
            pg: self.diesel.connect()?,
            returned: Instant::now(),
            lost: false,
        })
    }

    fn is_valid(&self, conn: &mut Conn) -> Result<(), Self::Error> {
        if conn.returned.elapsed() < ALIVE_BYPASS {
            return Ok(());
        }
        self.diesel.is_valid(&mut conn.pg)
    }

    /// Called as the connection goes back to the pool.
    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.returned = Instant::now();
        conn.lost || self.diesel.has_broken(&mut conn.pg)
    }
}

/// The r2d2 pool, and how long a unit of work on it may take before its
/// caller gives up (answers 503, or retries the job): the checkout timeout
/// plus the statement timeout plus a second. PostgreSQL bounds a slow
/// statement itself; this bounds a silent one (a partition, a stalled
/// server), where no server-side timeout can answer.
#[derive(Clone)]
pub struct DbPool {
    pool: Pool<Manager>,
    deadline: Duration,
}

impl std::ops::Deref for DbPool {
    type Target = Pool<Manager>;
    fn deref(&self) -> &Self::Target {
        &self.pool
    }
}

/// Sets per-connection limits when r2d2 opens a connection.
#[derive(Debug)]
struct SessionSettings {
    statement_timeout_ms: u128,
    application_name: &'static str,
}

impl CustomizeConnection<Conn, diesel::r2d2::Error> for SessionSettings {
    fn on_acquire(&self, conn: &mut Conn) -> Result<(), diesel::r2d2::Error> {
        conn.batch_execute(&format!(
            "SET statement_timeout = {}; SET idle_in_transaction_session_timeout = {}; \
             SET application_name = '{}';",
            self.statement_timeout_ms,
            idle_in_transaction_ms(self.statement_timeout_ms),
            self.application_name
        ))
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// How long one of our sessions may sit idle inside a transaction before
/// PostgreSQL ends it: no unit of ours waits between statements (partner
/// calls are made with no transaction open), so one that does is stuck,
/// and its open transaction would hold the webhook log's horizon (every
/// first delivery) back. Twice the statement timeout, at least a second.
fn idle_in_transaction_ms(statement_timeout_ms: u128) -> u128 {
    (statement_timeout_ms * 2).max(1000)
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
    let manager = Manager {
        diesel: ConnectionManager::new(url),
    };
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
        let done = f(&mut conn, deadline);
        if matches!(done, Err(DbError::Unavailable(_))) {
            conn.lost = true;
        }
        done
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
