//! The job queue: apalis 1.0 on Redis.
//!
//! Job payloads carry ids only; a job re-reads the state it acts on. Every
//! push uses a deterministic task id (`deliver-{order}`), so duplicate pushes
//! of live work are dropped by Redis. A push is only a wake-up: the work
//! itself is recorded in PostgreSQL (`outbox`) in the same transaction as
//! the state change that makes it owed, and a sweeper re-pushes what lingers.

pub mod context;
pub mod shell;
pub mod stats;
pub mod sweep;
pub mod vacuum;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use apalis::prelude::{TaskBuilder, TaskId, TaskSink};
use apalis_redis::{Config as QueueConfig, RedisStorage};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::ExposeSecret;
use serde::Serialize;

use crate::config::Settings;
pub use context::{JobContext, RetryPolicy, SettleWindow};

/// A job kind: its queue suffix and task id scheme.
pub trait JobKind: Serialize + Send + Sync + Unpin + 'static {
    /// Queue name suffix, e.g. `deliver` → `{prefix}.deliver`.
    const QUEUE: &'static str;
    /// Deterministic task id, so duplicate pushes are dropped.
    fn task_id(&self) -> String;
}

/// A job that does the outbox for one order (deliver, reconcile, refund):
/// its `outbox` kind and order, so claims and retries need only the job.
pub trait OutboxJob: JobKind + for<'de> serde::Deserialize<'de> {
    const OUTBOX: crate::db::outbox::OutboxKind;
    fn order_id(&self) -> uuid::Uuid;
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    #[error("redis push timed out")]
    Timeout,
    /// The queue holds [`MAX_SCHEDULED`] entries: the work stays owed in
    /// PostgreSQL and the sweeper pushes it when there is room.
    #[error("queue {0} is full; the sweeper will push this later")]
    Full(String),
}

/// The most entries a queue's scheduled set may hold. apalis-redis 1.0's
/// fetch script moves every due entry in one Lua `unpack`, which fails at
/// 8,000 (and then fails for every worker on that queue, on every poll), so
/// no producer pushes past this, and the sweeper tops queues up to it.
pub const MAX_SCHEDULED: usize = 4000;

/// How long a queue's size, once read, is trusted before it is read again
/// (pushes made meanwhile are counted on top).
const SIZE_TTL: Duration = Duration::from_millis(200);

/// A queue's scheduled-set size as last read, and pushes since.
#[derive(Clone, Copy)]
struct Room {
    read_at: Instant,
    scheduled: usize,
    pushed_since: usize,
}

/// Producer side of the queues, shared by all handlers of a process.
/// Connects lazily, so a Redis that is down at start (or later) only delays
/// wake-ups; it never fails a request.
pub struct JobQueue {
    client: redis::Client,
    prefix: String,
    conn: Mutex<Option<ConnectionManager>>,
    /// While Redis is down, reconnect at most once per second instead of
    /// making every request wait for a refused connection.
    last_failure: Mutex<Option<Instant>>,
    /// Per queue: how full it was when last read.
    rooms: Mutex<std::collections::HashMap<String, Room>>,
}

const PUSH_TIMEOUT: Duration = Duration::from_millis(1000);
const RECONNECT_GAP: Duration = Duration::from_secs(1);

impl JobQueue {
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        let client = redis::Client::open(settings.redis_url.expose_secret())
            .map_err(|e| anyhow::anyhow!("REDIS_URL: {e}"))?;
        Ok(JobQueue {
            client,
            prefix: settings.redis_prefix.clone(),
            conn: Mutex::new(None),
            last_failure: Mutex::new(None),
            rooms: Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// Entries in `queue`'s scheduled set now (read from Redis).
    pub async fn scheduled_len(&self, queue: &str) -> Result<usize, QueueError> {
        let mut conn = self.connection().await?;
        let n: usize = redis::cmd("ZCARD")
            .arg(format!("{queue}:scheduled"))
            .query_async(&mut conn)
            .await
            .map_err(|e| QueueError::Unavailable(e.to_string()))?;
        if let Ok(mut rooms) = self.rooms.lock() {
            rooms.insert(
                queue.to_owned(),
                Room {
                    read_at: Instant::now(),
                    scheduled: n,
                    pushed_since: 0,
                },
            );
        }
        Ok(n)
    }

    /// Takes room for one push to `queue`, or says it is full.
    async fn reserve(&self, queue: &str) -> Result<(), QueueError> {
        let cached = self
            .rooms
            .lock()
            .ok()
            .and_then(|r| r.get(queue).copied())
            .filter(|r| r.read_at.elapsed() < SIZE_TTL);
        let used = match cached {
            Some(r) => r.scheduled + r.pushed_since,
            None => self.scheduled_len(queue).await?,
        };
        if used >= MAX_SCHEDULED {
            return Err(QueueError::Full(queue.to_owned()));
        }
        if let Ok(mut rooms) = self.rooms.lock() {
            if let Some(r) = rooms.get_mut(queue) {
                r.pushed_since += 1;
            }
        }
        Ok(())
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn queue_name<J: JobKind>(&self) -> String {
        queue_name(&self.prefix, J::QUEUE)
    }

    /// A connection manager, connecting if needed.
    pub async fn connection(&self) -> Result<ConnectionManager, QueueError> {
        if let Some(c) = self
            .conn
            .lock()
            .map_err(|_| QueueError::Unavailable("lock poisoned".into()))?
            .as_ref()
        {
            return Ok(c.clone());
        }
        {
            let last = self
                .last_failure
                .lock()
                .map_err(|_| QueueError::Unavailable("lock poisoned".into()))?;
            if last.is_some_and(|t| t.elapsed() < RECONNECT_GAP) {
                return Err(QueueError::Unavailable("reconnect backoff".into()));
            }
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(PUSH_TIMEOUT))
            .set_number_of_retries(1);
        match self.client.get_connection_manager_with_config(config).await {
            Ok(c) => {
                if let Ok(mut slot) = self.conn.lock() {
                    *slot = Some(c.clone());
                }
                Ok(c)
            }
            Err(e) => {
                if let Ok(mut last) = self.last_failure.lock() {
                    *last = Some(Instant::now());
                }
                Err(QueueError::Unavailable(e.to_string()))
            }
        }
    }

    /// Pushes a job under its default task id, bounded by a timeout.
    /// Duplicates of a live task id are dropped by the backend.
    pub async fn push<J: JobKind + for<'de> serde::Deserialize<'de>>(
        &self,
        job: J,
    ) -> Result<(), QueueError> {
        let id = job.task_id();
        self.push_with(job, id, Duration::ZERO).await
    }

    /// Pushes a job under `task_id`, to run no earlier than `delay` from
    /// now, unless the queue is full ([`QueueError::Full`]).
    pub async fn push_with<J: JobKind + for<'de> serde::Deserialize<'de>>(
        &self,
        job: J,
        task_id: String,
        delay: Duration,
    ) -> Result<(), QueueError> {
        let queue = self.queue_name::<J>();
        let attempt = async {
            self.reserve(&queue).await?;
            let conn = self.connection().await?;
            let mut storage = RedisStorage::<J>::new(conn)
                .with_config(QueueConfig::default().queue(self.queue_name::<J>()));
            let mut task = TaskBuilder::new(job).task_id(TaskId::from_string(task_id));
            if !delay.is_zero() {
                task = task.run_after(whole_seconds_after(delay));
            }
            storage
                .push_task(task.build())
                .await
                .map_err(|e| QueueError::Unavailable(e.to_string()))
        };
        match tokio::time::timeout(PUSH_TIMEOUT, attempt).await {
            Ok(r) => r,
            Err(_) => Err(QueueError::Timeout),
        }
    }

    /// Pushes a wake-up of `job` under a fresh task id (its own, `tag` and
    /// the time in ms): an older task with the plain id may still be stored
    /// (done or dead) and would swallow the push.
    pub async fn push_fresh<J: JobKind + for<'de> serde::Deserialize<'de>>(
        &self,
        job: J,
        tag: &str,
    ) -> Result<(), QueueError> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let id = format!("{}-{tag}{stamp}", job.task_id());
        self.push_with(job, id, Duration::ZERO).await
    }

    /// `PING`, for readiness.
    pub async fn ping(&self) -> Result<(), QueueError> {
        let attempt = async {
            let mut conn = self.connection().await?;
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .map_err(|e| QueueError::Unavailable(e.to_string()))?;
            Ok(())
        };
        match tokio::time::timeout(PUSH_TIMEOUT, attempt).await {
            Ok(r) => r,
            Err(_) => Err(QueueError::Timeout),
        }
    }
}

/// apalis schedules in whole seconds (it may round a delay down and run up
/// to a second early): a delay rounded up, plus one second, is never early.
fn whole_seconds_after(delay: Duration) -> Duration {
    let secs = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
    Duration::from_secs(secs + 1)
}

pub fn queue_name(prefix: &str, kind: &str) -> String {
    format!("{prefix}.{kind}")
}
