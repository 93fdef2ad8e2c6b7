//! How each apalis worker of a process is built and kept running: its
//! unique name, its Redis storage, and an in-process restart with capped,
//! jittered backoff when apalis ends it (apalis 1.0 ends a worker on any
//! backend error).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use apalis_redis::{Config as QueueConfig, RedisStorage};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::ExposeSecret;
use tokio::sync::watch;

use super::WorkerOptions;
use crate::config::Settings;
use crate::jobs::{self, JobKind};

/// Connects the manager apalis uses, retrying with backoff while Redis is down.
pub(super) async fn connect_redis(
    settings: &Settings,
    stop: &mut watch::Receiver<bool>,
) -> Option<ConnectionManager> {
    let mut backoff = crate::backoff::Backoff::default();
    loop {
        let delay = backoff.next_delay();
        let attempt = async {
            let client = redis::Client::open(settings.redis_url.expose_secret())?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(Duration::from_secs(10)));
            client.get_connection_manager_with_config(config).await
        };
        match attempt.await {
            Ok(c) => return Some(c),
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "redis unreachable; retrying")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return None,
        }
    }
}

/// A worker name no other live worker has: host, pid, start time and a
/// random tag (two runs in one process, as in tests, can start within the
/// same millisecond). apalis refuses a name it saw alive recently.
pub(super) fn unique_name(kind: &str) -> String {
    use rand::Rng;
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let tag: u32 = rand::rng().random();
    format!("{kind}-{host}-{}-{started}-{tag:08x}", std::process::id())
}

pub(super) fn storage<J: JobKind>(
    conn: &ConnectionManager,
    prefix: &str,
    opts: &WorkerOptions,
    batch: usize,
) -> RedisStorage<J> {
    RedisStorage::<J>::new(conn.clone()).with_config(
        QueueConfig::default()
            .queue(jobs::queue_name(prefix, J::QUEUE))
            .heartbeat_interval(opts.heartbeat)
            .missed_heartbeats(opts.missed_heartbeats)
            .batch_size(batch.max(1))
            .lock_tasks(false),
    )
}

/// Keeps one kind's apalis worker running until `stop`.
#[derive(Clone)]
pub(super) struct Restart {
    pub metrics: crate::metrics::JobMetrics,
    pub stop: watch::Receiver<bool>,
}

/// A restarted worker that has run this long is healthy again: the outage
/// is over (logged once) and the backoff starts from the bottom.
const RECOVERED_AFTER: Duration = Duration::from_secs(5);

impl Restart {
    /// Runs the worker `start` builds until `stop`; when it ends on its own
    /// (apalis 1.0 ends a worker on any backend error: a dropped Redis
    /// connection, a failed poll), builds it again under a new name after a
    /// capped, jittered backoff. Its in-flight jobs are re-queued by the
    /// orphan check of the live workers, as after a crash. One warning when
    /// an outage starts and one line when it ends, not one per attempt.
    pub async fn keep_running<F, W>(self, kind: &'static str, mut start: F)
    where
        F: FnMut() -> W,
        W: std::future::Future<Output = Result<(), apalis::prelude::WorkerError>>,
    {
        let mut stop = self.stop.clone();
        let mut backoff = crate::backoff::Backoff::default();
        let mut outage: Option<Instant> = None;
        let restarting = self.metrics.restarting.with_label_values(&[kind]);
        loop {
            let run = start();
            tokio::pin!(run);
            let result = loop {
                tokio::select! {
                    r = &mut run => break r,
                    _ = tokio::time::sleep(RECOVERED_AFTER), if outage.is_some() => {
                        if let Some(since) = outage.take() {
                            tracing::info!(worker = kind, outage_ms = since.elapsed().as_millis() as u64, "worker running again");
                        }
                        restarting.set(0);
                        backoff.reset();
                    }
                }
            };
            if *stop.borrow() {
                return;
            }
            let error = match result {
                Ok(()) => "ended without a shutdown signal".to_owned(),
                Err(e) => e.to_string(),
            };
            if outage.is_none() {
                tracing::warn!(worker = kind, error = %error, "worker lost its backend; restarting it in process with backoff");
                outage = Some(Instant::now());
            } else {
                tracing::debug!(worker = kind, error = %error, "worker restart failed");
            }
            self.metrics.restarts.with_label_values(&[kind]).inc();
            restarting.set(1);
            let delay = backoff.next_jittered();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}

/// Resolves when `stop` turns true: a worker's shutdown signal.
pub(super) async fn stopped(mut stop: watch::Receiver<bool>) -> Result<(), std::io::Error> {
    let _ = stop.wait_for(|s| *s).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_names_differ_even_within_one_millisecond() {
        let names: std::collections::HashSet<String> =
            (0..1000).map(|_| unique_name("deliver")).collect();
        assert_eq!(names.len(), 1000);
    }
}
