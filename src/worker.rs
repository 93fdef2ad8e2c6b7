//! `orderflow worker`: the apalis workers of one process.
//!
//! Built around how apalis 1.0 on Redis really behaves (see
//! `shared/notes/apalis-1.0.md`):
//! - a unique worker name per process start (a restart under the same name
//!   is refused for a heartbeat interval), heartbeats every 5 s, orphaned
//!   after 2 missed: a job interrupted by SIGKILL runs again on a live worker
//!   (or the restarted one) within about 10–15 s;
//! - `poll_with_interval`, or an idle worker only fetches on its heartbeat;
//! - Diesel runs on tokio's blocking pool (`db::unit`), never in the job's
//!   task, so heartbeats are never starved;
//! - the Redis connection tolerates a slow command (10 s response timeout
//!   instead of redis-rs' 500 ms); a backend error that still ends a worker
//!   ends the process non-zero, for the supervisor to restart it;
//! - no `RetryPolicy` layer: jobs own their attempt budget (see `jobs`);
//! - the sweeper paces its pushes (apalis dies at 8,000 due entries) and
//!   finished jobs are vacuumed so Redis memory stays bounded.
//!
//! SIGTERM/SIGINT: workers stop fetching, finish in-flight jobs, return
//! fetched-but-unstarted ones, and the process exits 0.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use apalis::prelude::{BackendExt, WorkerBuilder, WorkerBuilderExt};
use apalis_core::backend::Vacuum;
use apalis_redis::{Config as QueueConfig, RedisStorage};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::ExposeSecret;
use tokio::sync::watch;

use crate::config::{ConfigError, Settings};
use crate::db;
use crate::jobs::sweep::{sweep_once, SweepPolicy};
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
    /// Finished jobs older than this are vacuumed from Redis...
    pub keep_finished: Duration,
    /// ...this often. Each vacuum is one Lua call over the queue's data hash
    /// (Redis is blocked meanwhile), so it runs often over little.
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
            keep_finished: Duration::from_secs(60),
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
        WorkerOptions {
            refresh_every: Some(settings.status_refresh_interval),
            partner_concurrency: settings.refresh_partner_concurrency,
            refresh_nice: settings.refresh_nice,
            ..WorkerOptions::default()
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
    let mut delay = Duration::from_millis(250);
    loop {
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
        delay = (delay * 2).min(Duration::from_secs(10));
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

    // `halt` stops every worker of the process: set by the shutdown signal,
    // or when one worker ends on its own (apalis ends a worker on a fatal
    // backend error), so the process exits and its supervisor restarts it.
    let (halt_tx, halt) = watch::channel(false);
    let mut external = stop.clone();
    let forward = halt_tx.clone();
    tokio::spawn(async move {
        if external.wait_for(|s| *s).await.is_ok() {
            let _ = forward.send(true);
        }
    });
    let signal = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
        Ok::<(), std::io::Error>(())
    };
    let supervised = |name: &'static str,
                      worker: futures_util::future::BoxFuture<
        'static,
        Result<(), apalis::prelude::WorkerError>,
    >| {
        let halt_tx = halt_tx.clone();
        async move {
            let result = worker.await;
            if let Err(e) = &result {
                tracing::error!(worker = name, error = %e, "worker ended; stopping the process");
            }
            let _ = halt_tx.send(true);
            (name, result)
        }
    };
    let deliver = WorkerBuilder::new(unique_name("deliver"))
        .backend(storage::<Deliver>(&conn, &prefix, &opts, 64).poll_with_interval(opts.poll))
        .data(ctx.clone())
        .concurrency(opts.deliver_concurrency)
        .build(jobs::deliver::run)
        .run_until(signal(halt.clone()));
    let reconcile = WorkerBuilder::new(unique_name("reconcile"))
        .backend(
            storage::<ReconcilePayment>(&conn, &prefix, &opts, 16).poll_with_interval(opts.poll),
        )
        .data(ctx.clone())
        .concurrency(opts.payment_concurrency)
        .build(jobs::reconcile::run)
        .run_until(signal(halt.clone()));
    let refund = WorkerBuilder::new(unique_name("refund"))
        .backend(storage::<Refund>(&conn, &prefix, &opts, 16).poll_with_interval(opts.poll))
        .data(ctx.clone())
        .concurrency(opts.payment_concurrency)
        .build(jobs::refund::run)
        .run_until(signal(halt.clone()));
    let plan = WorkerBuilder::new(unique_name("refresh"))
        .backend(storage::<RefreshPlan>(&conn, &prefix, &opts, 4).poll_with_interval(opts.poll))
        .data(refresh_ctx.clone())
        .concurrency(4)
        .build(jobs::refresh::plan)
        .run_until(signal(halt.clone()));
    let batch = WorkerBuilder::new(unique_name("refresh-batch"))
        .backend(storage::<RefreshBatch>(&conn, &prefix, &opts, 8).poll_with_interval(opts.poll))
        .data(refresh_ctx.clone())
        .concurrency(16)
        .build(jobs::refresh::batch)
        .run_until(signal(halt.clone()));
    // On the refresh runtime; a panic there ends the process like a worker
    // error would.
    let on_refresh_rt = |name: &'static str,
                         worker: futures_util::future::BoxFuture<
        'static,
        Result<(), apalis::prelude::WorkerError>,
    >| {
        let handle = refresh_rt.handle().spawn(supervised(name, worker));
        let halt_tx = halt_tx.clone();
        async move {
            match handle.await {
                Ok((name, result)) => (name, result.map_err(|e| e.to_string())),
                Err(e) => {
                    tracing::error!(worker = name, error = %e, "worker panicked; stopping the process");
                    let _ = halt_tx.send(true);
                    (name, Err(format!("panicked: {e}")))
                }
            }
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

    let here = |name: &'static str,
                worker: futures_util::future::BoxFuture<
        'static,
        Result<(), apalis::prelude::WorkerError>,
    >| {
        let run = supervised(name, worker);
        async move {
            let (name, result) = run.await;
            (name, result.map_err(|e| e.to_string()))
        }
    };
    let (d, r, f, p, b, (), (), ()) = tokio::join!(
        here("deliver", Box::pin(deliver)),
        here("reconcile_payment", Box::pin(reconcile)),
        here("refund", Box::pin(refund)),
        on_refresh_rt("refresh", Box::pin(plan)),
        on_refresh_rt("refresh_batch", Box::pin(batch)),
        housekeeping,
        schedule,
        share_calls
    );
    let mut last = conn.clone();
    if let Err(e) = metrics.partner.flush(&mut last, &prefix).await {
        tracing::warn!(error = %e, "partner call metrics not flushed at exit");
    }
    for (name, result) in [d, r, f, p, b] {
        if let Err(e) = result {
            anyhow::bail!("the {name} worker stopped: {e}");
        }
    }
    if !*stop.borrow() {
        anyhow::bail!("workers stopped without a shutdown signal");
    }
    tracing::info!("worker stopped");
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
            match vacuum(&conn, &prefix, opts.keep_finished).await {
                Ok(n) if n > 0 => tracing::debug!(vacuumed = n, "vacuumed finished jobs"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "vacuum failed"),
            }
        }
    }
}

/// Deletes finished jobs older than `keep` from every queue, and the
/// queues' `done` sets, which apalis never trims (job totals are counted in
/// `{prefix}.job_totals` instead). Returns how many jobs were deleted.
pub async fn vacuum(
    conn: &ConnectionManager,
    prefix: &str,
    keep: Duration,
) -> anyhow::Result<usize> {
    let opts = WorkerOptions::default();
    let mut n = storage::<Deliver>(conn, prefix, &opts, 1)
        .vacuum_before(keep)
        .await?;
    n += storage::<ReconcilePayment>(conn, prefix, &opts, 1)
        .vacuum_before(keep)
        .await?;
    n += storage::<Refund>(conn, prefix, &opts, 1)
        .vacuum_before(keep)
        .await?;
    let mut c = conn.clone();
    for kind in jobs::stats::KINDS {
        redis::cmd("UNLINK")
            .arg(format!("{}:done", jobs::queue_name(prefix, kind)))
            .query_async::<()>(&mut c)
            .await?;
    }
    Ok(n)
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
