//! `orderflow worker`: the apalis workers of one process.
//!
//! Built around how apalis 1.0 on Redis really behaves (see
//! the project's notes on apalis 1.0, summarised in `docs/ARCHITECTURE.md`):
//! - a unique worker name per process start (a restart under the same name
//!   is refused for a heartbeat interval), heartbeats every 5 s, orphaned
//!   after 2 missed: a job interrupted by SIGKILL runs again on a live worker
//!   (or the restarted one) within about 10–15 s;
//! - `poll_with_interval`, or an idle worker only fetches on its heartbeat;
//! - Diesel runs on tokio's blocking pool (`db::unit`), never in the job's
//!   task, so heartbeats are never starved;
//! - the Redis connection tolerates a slow command (10 s response timeout
//!   instead of redis-rs' 500 ms); apalis still ends a worker on any backend
//!   error (a dropped connection, a Redis restart), so each worker is
//!   restarted in process under a new name with capped, jittered backoff
//!   (`Restart::keep_running`): a blip never stops the process, and the
//!   supervisor is only for crashes;
//! - no `RetryPolicy` layer: jobs own their attempt budget (see `jobs`);
//! - the sweeper paces its pushes (apalis dies at 8,000 due entries) and
//!   finished jobs are vacuumed so Redis memory stays bounded.
//!
//! SIGTERM/SIGINT: workers stop fetching, finish in-flight jobs, return
//! fetched-but-unstarted ones, and the process exits 0.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use apalis::prelude::{BackendExt, WorkerBuilder, WorkerBuilderExt};
use apalis_redis::{Config as QueueConfig, RedisStorage};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::ExposeSecret;
use tokio::sync::watch;

use crate::config::{ConfigError, Settings};
use crate::db;
use crate::jobs::sweep::{sweep_once, SweepPolicy};
use crate::jobs::vacuum::{vacuum, VacuumPolicy};
use crate::jobs::{
    self, Deliver, JobContext, JobKind, JobQueue, ReconcilePayment, RefreshBatch, RefreshPlan,
    Refund, RetryPolicy,
};
use crate::metrics::Metrics;
use crate::partners::executor::{PartnerConfig, PartnerExecutor};
use crate::partners::payment::PaymentConfig;

/// Tuning of one worker process.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub heartbeat: Duration,
    pub missed_heartbeats: usize,
    pub poll: Duration,
    pub deliver_concurrency: usize,
    pub payment_concurrency: usize,
    pub sweep_every: Duration,
    pub sweep: SweepPolicy,
    pub retry: RetryPolicy,
    /// What the Redis vacuum removes ([`VacuumPolicy`])...
    pub vacuum: VacuumPolicy,
    /// ...and how often it runs.
    pub vacuum_every: Duration,
    /// Scheduled status refresh period (`STATUS_REFRESH_INTERVAL_SECS`);
    /// `None` leaves only on-demand refreshes.
    pub refresh_every: Option<Duration>,
    /// Concurrent calls per partner during a status refresh, per process.
    pub partner_concurrency: usize,
    /// Nice value of the threads that run status refreshes
    /// (`REFRESH_NICE`, see [`crate::priority`]).
    pub refresh_nice: i32,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            heartbeat: Duration::from_secs(5),
            missed_heartbeats: 2,
            poll: Duration::from_millis(200),
            deliver_concurrency: 512,
            payment_concurrency: 64,
            sweep_every: Duration::from_secs(5),
            sweep: SweepPolicy::default(),
            retry: RetryPolicy::default(),
            vacuum: VacuumPolicy::default(),
            vacuum_every: Duration::from_secs(15),
            refresh_every: Some(Duration::from_secs(15)),
            partner_concurrency: 1024,
            refresh_nice: 10,
        }
    }
}

impl WorkerOptions {
    /// The defaults with what the environment sets (`worker` and `dev`).
    pub fn from_settings(settings: &Settings) -> Self {
        let defaults = WorkerOptions::default();
        WorkerOptions {
            refresh_every: Some(settings.status_refresh_interval),
            partner_concurrency: settings.refresh_partner_concurrency,
            refresh_nice: settings.refresh_nice,
            sweep: SweepPolicy {
                grace: settings.sweep_grace,
                // A push that was lost (Redis went down with it) is pushed
                // again as late as a wake-up is.
                repush_after: settings.sweep_grace.max(Duration::from_secs(5)),
                stale_payment: settings.stale_payment,
                ..defaults.sweep
            },
            retry: RetryPolicy {
                max_attempts: settings.job_max_attempts,
                cap: settings.job_retry_cap,
                // An attempt is a partner call or two: a job that holds one
                // longer was lost with its worker.
                lease: settings.partner_timeout * 2 + Duration::from_secs(10),
                ..defaults.retry
            },
            ..defaults
        }
    }
}

/// Database connections of a worker's status refresh, apart from the ones
/// of its deliveries: a batch holds one only to read its orders and to
/// record shipping progress, and waits on partners without one.
const REFRESH_DB_CONNECTIONS: u32 = 4;

/// The partner URLs a worker needs.
fn partner_config(settings: &Settings) -> Result<PartnerConfig, ConfigError> {
    let payment = settings.payment_gateway_url.clone().ok_or(ConfigError {
        var: "PAYMENT_GATEWAY_URL",
        message: "required by worker".into(),
    })?;
    let shipping = settings.shipping_api_url.clone().ok_or(ConfigError {
        var: "SHIPPING_API_URL",
        message: "required by worker".into(),
    })?;
    let warehouse = settings.warehouse_api_url.clone().ok_or(ConfigError {
        var: "WAREHOUSE_API_URL",
        message: "required by worker".into(),
    })?;
    Ok(PartnerConfig {
        payment: PaymentConfig {
            base_url: payment,
            api_key: settings.payment_api_key.clone(),
            timeout: settings.partner_timeout,
        },
        shipping_url: shipping,
        warehouse_url: Some(warehouse),
        timeout: settings.partner_timeout,
    })
}

/// Connects the manager apalis uses, retrying with backoff while Redis is down.
async fn connect_redis(
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
fn unique_name(kind: &str) -> String {
    use rand::Rng;
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let tag: u32 = rand::rng().random();
    format!("{kind}-{host}-{}-{started}-{tag:08x}", std::process::id())
}

fn storage<J: JobKind>(
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

/// A runtime owned by async code: shut down without blocking when dropped
/// (dropping a tokio runtime inside another one's task would panic).
struct BackgroundRuntime(Option<tokio::runtime::Runtime>);

impl BackgroundRuntime {
    fn handle(&self) -> tokio::runtime::Handle {
        match &self.0 {
            Some(rt) => rt.handle().clone(),
            None => tokio::runtime::Handle::current(),
        }
    }
}

impl Drop for BackgroundRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Runs the workers until `stop` turns true. Errors when a worker ends on
/// its own (a fatal backend error): the process should then exit non-zero.
pub async fn run(
    settings: Settings,
    opts: WorkerOptions,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let metrics = Metrics::for_worker()?;
    let partner_config = partner_config(&settings)?;
    let partners = PartnerExecutor::start(partner_config.clone(), metrics.partner.clone())?;
    let pool = db::build_pool(&settings, "orderflow-worker");
    let queue = Arc::new(JobQueue::new(&settings)?);
    let ctx = Arc::new(JobContext {
        pool,
        partners,
        queue,
        policy: opts.retry,
        metrics: crate::metrics::JobMetrics::new(&metrics.registry)?,
        breakers: Arc::new(jobs::Breakers::new(5, Duration::from_secs(10))),
        limits: Arc::new(jobs::Limits::new(opts.partner_concurrency)),
    });
    // The status refresh runs on threads of its own at a lower priority
    // (`REFRESH_NICE`): its runtime (and blocking pool) and its partner
    // executor. Deliveries, reconciliation and refunds keep theirs. It also
    // has its own database connections and its own Redis connection for
    // pushes: a niced thread starved of CPU must never hold something a
    // delivery waits for (with one shared pool, 16 refresh batches could
    // hold all 16 connections; the queue's connection driver runs on the
    // runtime of whoever connected first).
    let nice = opts.refresh_nice;
    let refresh_rt = BackgroundRuntime(Some(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("refresh")
            .on_thread_start(move || crate::priority::lower_current_thread(nice))
            .enable_all()
            .build()?,
    ));
    let refresh_ctx = Arc::new(JobContext {
        partners: PartnerExecutor::start_named(
            partner_config,
            metrics.partner.clone(),
            "refresh-partner",
            nice,
        )?,
        pool: db::build_pool_sized(
            &settings,
            "orderflow-refresh",
            settings.db_pool_size.min(REFRESH_DB_CONNECTIONS),
        ),
        queue: Arc::new(JobQueue::new(&settings)?),
        policy: ctx.policy,
        metrics: ctx.metrics.clone(),
        breakers: ctx.breakers.clone(),
        limits: ctx.limits.clone(),
    });
    if let Some(addr) = settings.worker_metrics_addr {
        serve_metrics(addr, metrics.registry.clone()).await?;
    }
    let Some(conn) = connect_redis(&settings, &mut stop).await else {
        return Ok(());
    };
    let prefix = settings.redis_prefix.clone();
    tracing::info!(redis.prefix = %prefix, "worker started");

    // Each apalis worker runs under `keep_running`: when it ends on its own
    // (apalis ends a worker on any backend error, a Redis blip included),
    // it is built again under a new name after a capped, jittered backoff.
    // `halt` stops every worker of the process: the shutdown signal, or a
    // panic on the refresh runtime.
    let (halt_tx, halt) = watch::channel(false);
    {
        let (mut external, halt_tx) = (stop.clone(), halt_tx.clone());
        tokio::spawn(async move {
            if external.wait_for(|s| *s).await.is_ok() {
                let _ = halt_tx.send(true);
            }
        });
    }
    let restart = Restart {
        metrics: ctx.metrics.clone(),
        stop: halt.clone(),
    };
    macro_rules! apalis_worker {
        ($job:ty, $kind:literal, $handler:path, $ctx:expr, $batch:expr, $concurrency:expr) => {{
            let (conn, prefix, opts, ctx, stop) = (
                conn.clone(),
                prefix.clone(),
                opts.clone(),
                $ctx.clone(),
                halt.clone(),
            );
            restart.clone().keep_running($kind, move || {
                WorkerBuilder::new(unique_name($kind))
                    .backend(
                        storage::<$job>(&conn, &prefix, &opts, $batch)
                            .poll_with_interval(opts.poll),
                    )
                    .data(ctx.clone())
                    .concurrency($concurrency)
                    .build($handler)
                    .run_until(stopped(stop.clone()))
            })
        }};
    }
    let deliver = apalis_worker!(
        Deliver,
        "deliver",
        jobs::deliver::run,
        ctx,
        64,
        opts.deliver_concurrency
    );
    let reconcile = apalis_worker!(
        ReconcilePayment,
        "reconcile_payment",
        jobs::reconcile::run,
        ctx,
        16,
        opts.payment_concurrency
    );
    let refund = apalis_worker!(
        Refund,
        "refund",
        jobs::refund::run,
        ctx,
        16,
        opts.payment_concurrency
    );
    // The status refresh's workers run on the refresh runtime; a panic
    // there ends the process (for its supervisor), as one here would.
    let plan = refresh_rt.handle().spawn(apalis_worker!(
        RefreshPlan,
        "refresh",
        jobs::refresh::plan,
        refresh_ctx,
        4,
        4
    ));
    let batch = refresh_rt.handle().spawn(apalis_worker!(
        RefreshBatch,
        "refresh_batch",
        jobs::refresh::batch,
        refresh_ctx,
        8,
        16
    ));
    let on_refresh_rt = |task: tokio::task::JoinHandle<()>| {
        let halt_tx = halt_tx.clone();
        async move {
            let joined = task.await;
            if let Err(e) = &joined {
                tracing::error!(error = %e, "a refresh worker panicked; stopping the process");
                let _ = halt_tx.send(true);
            }
            joined.map_err(|e| anyhow::anyhow!("a refresh worker panicked: {e}"))
        }
    };
    let housekeeping = housekeeping(
        ctx.clone(),
        conn.clone(),
        prefix.clone(),
        opts.clone(),
        halt.clone(),
    );
    let share_calls = {
        let conn = conn.clone();
        metrics.partner.flush_every(
            prefix.clone(),
            Duration::from_secs(1),
            move || {
                let conn = conn.clone();
                async move { Some(conn) }
            },
            halt.clone(),
        )
    };
    let schedule = schedule_refresh(
        ctx.clone(),
        conn.clone(),
        prefix.clone(),
        opts.refresh_every,
        halt.clone(),
    );

    let ((), (), (), p, b, (), (), ()) = tokio::join!(
        deliver,
        reconcile,
        refund,
        on_refresh_rt(plan),
        on_refresh_rt(batch),
        housekeeping,
        schedule,
        share_calls
    );
    let mut last = conn.clone();
    if let Err(e) = metrics.partner.flush(&mut last, &prefix).await {
        tracing::warn!(error = %e, "partner call metrics not flushed at exit");
    }
    p?;
    b?;
    if !*stop.borrow() {
        anyhow::bail!("workers stopped without a shutdown signal");
    }
    tracing::info!("worker stopped");
    Ok(())
}

/// Keeps one kind's apalis worker running until `stop`.
#[derive(Clone)]
struct Restart {
    metrics: crate::metrics::JobMetrics,
    stop: watch::Receiver<bool>,
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
    async fn keep_running<F, W>(self, kind: &'static str, mut start: F)
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
async fn stopped(mut stop: watch::Receiver<bool>) -> Result<(), std::io::Error> {
    let _ = stop.wait_for(|s| *s).await;
    Ok(())
}

/// Starts a status refresh once per `every` across all worker processes:
/// each process checks every second, and only the one that claims the
/// interval's key in Redis (`SET NX`) pushes the plan.
async fn schedule_refresh(
    ctx: Arc<JobContext>,
    conn: ConnectionManager,
    prefix: String,
    every: Option<Duration>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(every) = every.filter(|d| !d.is_zero()) else {
        return;
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let slot = now.as_millis() / every.as_millis().max(1);
        let mut c = conn.clone();
        let claimed: redis::RedisResult<Option<String>> = redis::cmd("SET")
            .arg(format!("{prefix}.board.tick.{slot}"))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg((every.as_millis() * 3) as u64)
            .query_async(&mut c)
            .await;
        if let Ok(Some(_)) = claimed {
            let plan = RefreshPlan {
                run: now.as_millis() as i64,
                on_demand: false,
            };
            let id = plan.task_id();
            if let Err(e) = ctx.queue.push_with(plan, id, Duration::ZERO).await {
                tracing::warn!(error = %e, "scheduled refresh not pushed");
            }
        }
    }
}

/// The sweeper and the vacuum, on timers, until `stop`.
async fn housekeeping(
    ctx: Arc<JobContext>,
    conn: ConnectionManager,
    prefix: String,
    opts: WorkerOptions,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(opts.sweep_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_vacuum = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        match sweep_once(&ctx, &opts.sweep).await {
            Ok(r) if r.pushed > 0 || r.stale_payments > 0 => {
                tracing::info!(
                    sweep.pushed = r.pushed,
                    sweep.stale_payments = r.stale_payments,
                    "swept owed work"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "sweep failed; next round retries"),
        }
        if last_vacuum.elapsed() >= opts.vacuum_every {
            last_vacuum = Instant::now();
            match vacuum(&conn, &prefix, &opts.vacuum).await {
                Ok(r) => tracing::debug!(
                    vacuum.tasks = r.tasks,
                    vacuum.workers = r.workers,
                    "vacuumed"
                ),
                Err(e) => tracing::warn!(error = %e, "vacuum failed; the next one retries"),
            }
        }
    }
}

/// Serves this process' metrics (`WORKER_METRICS_ADDR`): every request to
/// the listener gets the Prometheus text, whatever its path.
async fn serve_metrics(
    addr: std::net::SocketAddr,
    registry: prometheus::Registry,
) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("WORKER_METRICS_ADDR: cannot bind {addr}: {e}"))?;
    tracing::info!(metrics.addr = %addr, "worker metrics listening");
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                continue;
            };
            let registry = registry.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let _ = tokio::time::timeout(Duration::from_secs(2), sock.read(&mut buf)).await;
                let body = crate::metrics::encode(&registry);
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(body.as_bytes()).await;
            });
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_sets_the_refresh_of_worker_and_dev() {
        let env = [
            ("STATUS_REFRESH_INTERVAL_SECS", "7"),
            ("REFRESH_PARTNER_CONCURRENCY", "33"),
            ("REFRESH_NICE", "4"),
        ];
        let settings = Settings::from_lookup(|k| {
            env.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
        .expect("settings");
        let opts = WorkerOptions::from_settings(&settings);
        assert_eq!(opts.refresh_every, Some(Duration::from_secs(7)));
        assert_eq!(opts.partner_concurrency, 33);
        assert_eq!(opts.refresh_nice, 4);
    }

    #[test]
    fn worker_names_differ_even_within_one_millisecond() {
        let names: std::collections::HashSet<String> =
            (0..1000).map(|_| unique_name("deliver")).collect();
        assert_eq!(names.len(), 1000);
    }
}
