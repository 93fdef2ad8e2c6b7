//! Prometheus metrics, names prefixed `orderflow_` (API.md §5).
//!
//! HTTP request counts and latency histograms come from `actix-web-prom`
//! (labelled by route pattern, not raw path); partner calls are recorded by
//! the partner clients through [`PartnerMetrics`]. One registry per process.

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub partner: PartnerMetrics,
    pub queues: QueueGauges,
}

/// Partner calls by partner and outcome.
#[derive(Clone)]
pub struct PartnerMetrics {
    calls: IntCounterVec,
    latency: HistogramVec,
}

impl PartnerMetrics {
    pub fn observe(&self, partner: &str, outcome: &str, elapsed: Duration) {
        self.calls.with_label_values(&[partner, outcome]).inc();
        self.latency
            .with_label_values(&[partner, outcome])
            .observe(elapsed.as_secs_f64());
    }
}

impl Metrics {
    pub fn new() -> anyhow::Result<Self> {
        let registry = Registry::new();
        let calls = IntCounterVec::new(
            Opts::new("partner_calls_total", "Calls to partner systems").namespace("orderflow"),
            &["partner", "outcome"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "partner_call_duration_seconds",
                "Latency of calls to partner systems",
            )
            .namespace("orderflow")
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["partner", "outcome"],
        )?;
        registry.register(Box::new(calls.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        let queues = QueueGauges::new(&registry)?;
        Ok(Metrics {
            registry,
            partner: PartnerMetrics { calls, latency },
            queues,
        })
    }
}

/// Job outcomes of this process, by kind and outcome (`done`, `failed` =
/// will be retried, `dead` = given up).
#[derive(Clone)]
pub struct JobMetrics {
    jobs: IntCounterVec,
    duration: HistogramVec,
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
        registry.register(Box::new(jobs.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(JobMetrics { jobs, duration })
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
                "Age of the oldest owed work item (0 when none)",
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

    pub fn set(&self, stats: &[crate::jobs::stats::QueueStats], outbox_lag: Option<f64>) {
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

/// Encodes a registry in the Prometheus text format.
pub fn encode(registry: &Registry) -> String {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    let _ = prometheus::TextEncoder::new().encode(&registry.gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}
