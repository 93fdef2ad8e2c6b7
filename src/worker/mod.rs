//! `orderflow worker`: the apalis workers of one process, wired together.
//!
//! Built around how apalis 1.0 on Redis really behaves (summarised in
//! `docs/ARCHITECTURE.md`):
//! - a unique worker name per process start (a restart under the same name
//!   is refused for a heartbeat interval), heartbeats every 5 s, orphaned
//!   after 2 missed: a job interrupted by SIGKILL runs again on a live worker
//!   (or the restarted one) within about 10–15 s;
//! - a poll strategy, or an idle worker only fetches on its heartbeat
//!   (and not apalis' own interval, which can stop re-arming: [`poll`]);
//! - Diesel runs on tokio's blocking pool (`db::unit`), never in the job's
//!   task, so heartbeats are never starved;
//! - the Redis connection tolerates a slow command (10 s response timeout
//!   instead of redis-rs' 500 ms); apalis still ends a worker on any backend
//!   error, so each worker is restarted in process ([`restart`]): a blip
//!   never stops the process, and the supervisor is only for crashes;
//! - no `RetryPolicy` layer: jobs own their attempt budget (see `jobs`);
//! - the sweeper paces its pushes and finished jobs are vacuumed
//!   ([`housekeeping`]), so Redis memory stays bounded.
//!
//! The status refresh runs on threads of its own at a lower priority
//! (`REFRESH_NICE`): its runtime (and blocking pool), its partner executor,
//! its database connections and its Redis connection. A niced thread
//! starved of CPU must never hold something a delivery waits for.
//!
//! SIGTERM/SIGINT: workers stop fetching, finish in-flight jobs, return
//! fetched-but-unstarted ones, and the process exits 0.

mod housekeeping;
mod kinds;
mod metrics_endpoint;
mod options;
mod poll;
mod restart;

use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::{BackendExt, WorkerBuilder, WorkerBuilderExt};
use tokio::sync::watch;

pub use kinds::KINDS;
pub use options::WorkerOptions;

use crate::board::{self, RefreshContext};
use crate::config::Settings;
use crate::db;
use crate::jobs::{self, JobContext, JobQueue};
use crate::metrics::Metrics;
use crate::orders::{self, Deliver, ReconcilePayment, Refund};
use crate::partners::executor::{LocalExecutor, PartnerConfig, PartnerExecutor};
use crate::webhooks::{self, client::WebhookClient, WebhookContext, WebhookDrain};
use restart::{connect_redis, stopped, storage, unique_name, Restart};

/// Database connections of a worker's status refresh, apart from the ones
/// of its deliveries: a batch holds one only to read its orders and to
/// record shipping progress, and waits on partners without one.
const REFRESH_DB_CONNECTIONS: u32 = 4;

/// Endpoints a worker process drains at once (each with up to
/// `WEBHOOK_CONCURRENCY` requests in flight).
const WEBHOOK_ENDPOINTS_AT_ONCE: usize = 64;

/// The context of deliveries, reconciliation and refunds.
fn job_context(
    settings: &Settings,
    opts: &WorkerOptions,
    metrics: &Metrics,
    partners: &PartnerConfig,
) -> anyhow::Result<JobContext> {
    let pool = db::build_pool(settings, "orderflow-worker");
    Ok(JobContext {
        deliveries: orders::jobs::deliver::DeliveryUnits::start(&pool, opts.retry.lease),
        pool,
        partners: PartnerExecutor::start(partners.clone(), metrics.partner.clone())?,
        queue: Arc::new(JobQueue::new(settings)?),
        policy: opts.retry,
        metrics: crate::metrics::JobMetrics::new(&metrics.registry)?,
    })
}

/// The webhooks' context: their own sender thread; the jobs' pool and queue.
fn webhook_context(
    settings: &Settings,
    opts: &WorkerOptions,
    metrics: &Metrics,
    jobs: &JobContext,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<WebhookContext> {
    let (timeout, hooks, partner) = (
        settings.partner_timeout,
        settings.webhooks,
        metrics.partner.clone(),
    );
    Ok(WebhookContext {
        pool: jobs.pool.clone(),
        queue: jobs.queue.clone(),
        sender: LocalExecutor::spawn("webhooks", 0, move || {
            WebhookClient::new(
                timeout,
                hooks.allow_private_targets,
                hooks.host_connections,
                partner,
            )
        })?,
        settings: settings.webhooks,
        lease: settings.partner_timeout * 2 + Duration::from_secs(5),
        bodies: Arc::new(webhooks::bodies::Bodies::with_capacity(opts.webhook_bodies)),
        stop,
        metrics: jobs.metrics.clone(),
        secrets: Arc::new(settings.webhook_secrets.clone()),
    })
}

/// The refresh's context: its own executor (niced), pool and queue.
fn refresh_context(
    settings: &Settings,
    opts: &WorkerOptions,
    metrics: &Metrics,
    partners: PartnerConfig,
    jobs: &JobContext,
) -> anyhow::Result<RefreshContext> {
    let pool_size = settings.db_pool_size.min(REFRESH_DB_CONNECTIONS);
    let run_interval = opts
        .refresh_every
        .unwrap_or(settings.status_refresh_interval);
    let executor = PartnerExecutor::start_named(
        partners,
        metrics.partner.clone(),
        "refresh-partner",
        opts.refresh_nice,
    )?;
    Ok(RefreshContext {
        jobs: Arc::new(JobContext {
            partners: executor,
            pool: db::build_pool_sized(settings, "orderflow-refresh", pool_size),
            queue: Arc::new(JobQueue::new(settings)?),
            ..jobs.clone()
        }),
        bounds: Arc::new(board::Bounds {
            breakers: board::health::Breakers::new(5, Duration::from_secs(10)),
            limits: board::fetch::Limits::new(opts.partner_concurrency),
            budget: board::fetch::Budget::new(opts.partner_calls_per_sec, run_interval),
            schedule: board::merge::Schedule::every_run(run_interval),
        }),
    })
}

/// The refresh's runtime: two threads at nice value `nice`.
fn refresh_runtime(nice: i32) -> std::io::Result<BackgroundRuntime> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("refresh")
        .on_thread_start(move || crate::priority::lower_current_thread(nice))
        .enable_all()
        .build()?;
    Ok(BackgroundRuntime(Some(rt)))
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

/// A `watch` that turns true when `stop` does, and that the process can
/// also trip itself (a panic on the refresh runtime).
fn halt_on(mut stop: watch::Receiver<bool>) -> (watch::Sender<bool>, watch::Receiver<bool>) {
    let (tx, rx) = watch::channel(false);
    let forward = tx.clone();
    tokio::spawn(async move {
        if stop.wait_for(|s| *s).await.is_ok() {
            let _ = forward.send(true);
        }
    });
    (tx, rx)
}

/// Waits for a task of the refresh runtime; a panic there stops the whole
/// process (for its supervisor), as one elsewhere would.
async fn watch_refresh_task(
    task: tokio::task::JoinHandle<()>,
    halt: watch::Sender<bool>,
) -> anyhow::Result<()> {
    task.await.map_err(|e| {
        tracing::error!(error = %e, "a refresh worker panicked; stopping the process");
        let _ = halt.send(true);
        anyhow::anyhow!("a refresh worker panicked: {e}")
    })
}

/// Builds the apalis worker of one job kind and keeps it running (see
/// [`Restart::keep_running`]) until the process halts.
macro_rules! keep_worker {
    ($w:expr, $job:ty, $handler:path, $ctx:expr, $batch:expr, $concurrency:expr) => {{
        let w: &Wiring = $w;
        let (conn, prefix, opts, ctx, halt) = (
            w.conn.clone(),
            w.prefix.clone(),
            w.opts.clone(),
            $ctx.clone(),
            w.halt.clone(),
        );
        let kind = <$job as jobs::JobKind>::QUEUE;
        kinds::check_listed(kind);
        w.restart.clone().keep_running(kind, move || {
            WorkerBuilder::new(unique_name(kind))
                .backend(
                    storage::<$job>(&conn, &prefix, &opts, $batch)
                        .poll_with_strategy(poll::Rearming::every(opts.poll)),
                )
                .data(ctx.clone())
                .concurrency($concurrency)
                .build($handler)
                .run_until(stopped(halt.clone()))
        })
    }};
}

/// What every worker of the process is built from.
struct Wiring {
    conn: redis::aio::ConnectionManager,
    prefix: String,
    opts: WorkerOptions,
    halt: watch::Receiver<bool>,
    restart: Restart,
}

/// Runs the workers until `stop` turns true. Errors when the process should
/// exit non-zero: a bad setting, or a worker that ended without a shutdown
/// signal (a panic).
pub async fn run(
    settings: Settings,
    opts: WorkerOptions,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    settings.webhook_secrets.warn_if_development();
    let metrics = Metrics::for_worker()?;
    let partners = PartnerConfig::from_settings(&settings, "worker")?;
    let ctx = Arc::new(job_context(&settings, &opts, &metrics, &partners)?);
    let refresh_rt = refresh_runtime(opts.refresh_nice)?;
    let refresh_ctx = Arc::new(refresh_context(&settings, &opts, &metrics, partners, &ctx)?);
    let endpoint = match settings.worker_metrics_addr {
        Some(addr) => Some(metrics_endpoint::serve(addr, metrics.registry.clone())?),
        None => None,
    };
    let Some(conn) = connect_redis(&settings, &mut stop).await else {
        return Ok(());
    };
    tracing::info!(redis.prefix = %settings.redis_prefix, "worker started");
    let (halt_tx, halt) = halt_on(stop.clone());
    let w = Wiring {
        conn,
        prefix: settings.redis_prefix.clone(),
        opts,
        restart: Restart {
            metrics: ctx.metrics.clone(),
            stop: halt.clone(),
        },
        halt,
    };
    let hooks = Arc::new(webhook_context(
        &settings,
        &w.opts,
        &metrics,
        &ctx,
        w.halt.clone(),
    )?);
    let (refreshed, (), (), ()) = tokio::join!(
        refresh_workers(&w, &refresh_rt, &refresh_ctx, halt_tx),
        job_workers(&w, &ctx),
        webhook_workers(&w, &hooks),
        timers(&w, &ctx, &metrics),
    );
    if let Err(e) = metrics.partner.flush(&mut w.conn.clone(), &w.prefix).await {
        tracing::warn!(error = %e, "partner call metrics not flushed at exit");
    }
    if let Some(endpoint) = endpoint {
        endpoint.stop(true).await;
    }
    refreshed?;
    if !*stop.borrow() {
        anyhow::bail!("workers stopped without a shutdown signal");
    }
    tracing::info!("worker stopped");
    Ok(())
}

/// Deliveries, reconciliation and refunds, until the process halts.
async fn job_workers(w: &Wiring, ctx: &Arc<JobContext>) {
    let deliver = keep_worker!(
        w,
        Deliver,
        orders::jobs::deliver::run,
        ctx,
        64,
        w.opts.deliver_concurrency
    );
    let reconcile = keep_worker!(
        w,
        ReconcilePayment,
        orders::jobs::reconcile::run,
        ctx,
        16,
        w.opts.payment_concurrency
    );
    let refund = keep_worker!(
        w,
        Refund,
        orders::jobs::refund::run,
        ctx,
        16,
        w.opts.payment_concurrency
    );
    tokio::join!(deliver, reconcile, refund);
}

/// Webhook drains (one endpoint each) and the fan-out timer.
async fn webhook_workers(w: &Wiring, ctx: &Arc<WebhookContext>) {
    let drains = keep_worker!(
        w,
        WebhookDrain,
        webhooks::drain::run,
        ctx,
        16,
        WEBHOOK_ENDPOINTS_AT_ONCE
    );
    let timing = webhooks::fanout::SweepTiming {
        every: w.opts.sweep_every,
        grace: w.opts.sweep.grace,
    };
    let fan_out = webhooks::fanout::fan_out_loop(ctx.clone(), timing, w.halt.clone());
    tokio::join!(drains, fan_out);
}

/// The status refresh's two workers, on the refresh runtime; a panic there
/// halts the process.
async fn refresh_workers(
    w: &Wiring,
    rt: &BackgroundRuntime,
    ctx: &Arc<RefreshContext>,
    halt: watch::Sender<bool>,
) -> anyhow::Result<()> {
    let plan = rt.handle().spawn(keep_worker!(
        w,
        board::RefreshPlan,
        board::plan::run,
        ctx,
        4,
        4
    ));
    let batch = rt.handle().spawn(keep_worker!(
        w,
        board::RefreshBatch,
        board::batch::run,
        ctx,
        8,
        16
    ));
    let (p, b) = tokio::join!(
        watch_refresh_task(plan, halt.clone()),
        watch_refresh_task(batch, halt)
    );
    p.and(b)
}

/// The sweeper and vacuum, the refresh schedule, the sharing of this
/// process' partner-call counts and the gateway events' processing, until
/// the process halts.
async fn timers(w: &Wiring, ctx: &Arc<JobContext>, metrics: &Metrics) {
    let housekeeping = housekeeping::housekeeping(
        ctx.clone(),
        w.conn.clone(),
        w.prefix.clone(),
        w.opts.clone(),
        w.halt.clone(),
    );
    let schedule = board::schedule::schedule(
        &ctx.queue,
        w.conn.clone(),
        w.opts.refresh_every,
        w.halt.clone(),
    );
    let conn = w.conn.clone();
    let connect = move || {
        let conn = conn.clone();
        async move { Some(conn) }
    };
    let share_calls = metrics.partner.flush_every(
        w.prefix.clone(),
        Duration::from_secs(1),
        connect,
        w.halt.clone(),
    );
    let gateway_events = crate::gateway::process::run(
        ctx.clone(),
        w.opts.gateway_events,
        metrics.gateway_events.clone(),
        w.halt.clone(),
    );
    tokio::join!(housekeeping, schedule, share_calls, gateway_events);
}
