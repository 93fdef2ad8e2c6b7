//! Job metrics: this process' job outcomes, and the queue gauges `serve`
//! reads from Redis and PostgreSQL at scrape time.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use std::time::Duration;

/// Job outcomes of this process, by kind and outcome (`done`, `failed` =
/// will be retried, `dead` = given up).
#[derive(Clone)]
pub struct JobMetrics {
    jobs: IntCounterVec,
    duration: HistogramVec,
    /// apalis workers restarted in process after losing their backend.
    pub restarts: IntCounterVec,
    /// 1 while a kind's apalis worker is down and being restarted.
    pub restarting: prometheus::IntGaugeVec,
}

impl JobMetrics {
    pub fn new(registry: &Registry) -> anyhow::Result<Self> {
        let jobs = IntCounterVec::new(
            Opts::new("worker_jobs_total", "Jobs run by this worker process")
                .namespace("orderflow"),
            &["kind", "outcome"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "worker_job_duration_seconds",
                "Duration of jobs run by this worker process",
            )
            .namespace("orderflow")
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["kind", "outcome"],
        )?;
        let restarts = IntCounterVec::new(
            Opts::new(
                "worker_restarts_total",
                "apalis workers of this process restarted after losing their backend",
            )
            .namespace("orderflow"),
            &["kind"],
        )?;
        let restarting = prometheus::IntGaugeVec::new(
            Opts::new(
                "worker_restarting",
                "1 while this process' worker of a job kind is down and being restarted",
            )
            .namespace("orderflow"),
            &["kind"],
        )?;
        registry.register(Box::new(jobs.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(restarts.clone()))?;
        registry.register(Box::new(restarting.clone()))?;
        Ok(JobMetrics {
            jobs,
            duration,
            restarts,
            restarting,
        })
    }

    pub fn observe(&self, kind: &str, outcome: &str, elapsed: Duration) {
        self.jobs.with_label_values(&[kind, outcome]).inc();
        self.duration
            .with_label_values(&[kind, outcome])
            .observe(elapsed.as_secs_f64());
    }
}

/// Queue and outbox state read from Redis and PostgreSQL at scrape time, so
/// `serve` shows it whichever worker ran the jobs.
#[derive(Clone)]
pub struct QueueGauges {
    queue: prometheus::GaugeVec,
    totals: prometheus::GaugeVec,
    outbox_lag: prometheus::Gauge,
}

impl QueueGauges {
    pub fn new(registry: &Registry) -> anyhow::Result<Self> {
        let queue = prometheus::GaugeVec::new(
            Opts::new(
                "queue_jobs",
                "Jobs in the queue now, by kind and state (pending, running)",
            )
            .namespace("orderflow"),
            &["kind", "state"],
        )?;
        let totals = prometheus::GaugeVec::new(
            Opts::new(
                "jobs_total",
                "Jobs finished by any worker, by kind and state (done, failed, dead)",
            )
            .namespace("orderflow"),
            &["kind", "state"],
        )?;
        let outbox_lag = prometheus::Gauge::with_opts(
            Opts::new(
                "outbox_lag_seconds",
                "Age of the oldest outbox item (0 when none)",
            )
            .namespace("orderflow"),
        )?;
        registry.register(Box::new(queue.clone()))?;
        registry.register(Box::new(totals.clone()))?;
        registry.register(Box::new(outbox_lag.clone()))?;
        Ok(QueueGauges {
            queue,
            totals,
            outbox_lag,
        })
    }

    pub fn set(&self, stats: &[QueueStats], outbox_lag: Option<f64>) {
        for s in stats {
            self.queue
                .with_label_values(&[s.kind, "pending"])
                .set(s.pending as f64);
            self.queue
                .with_label_values(&[s.kind, "running"])
                .set(s.running as f64);
            for (state, n) in [("done", s.done), ("failed", s.failed), ("dead", s.dead)] {
                self.totals
                    .with_label_values(&[s.kind, state])
                    .set(n as f64);
            }
        }
        if let Some(lag) = outbox_lag {
            self.outbox_lag.set(lag);
        }
    }
}

/// One job kind's queue as it stands, and its run totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueStats {
    pub kind: &'static str,
    /// Ready or scheduled (delayed, retry-waiting, just pushed).
    pub pending: u64,
    /// Fetched by a worker and not finished.
    pub running: u64,
    pub done: u64,
    /// Attempts that failed and will be retried.
    pub failed: u64,
    /// Given up.
    pub dead: u64,
}
