//! Prometheus metrics, names prefixed `orderflow_` (docs/API.md).
//!
//! HTTP request counts and latency histograms come from `actix-web-prom`
//! (labelled by route pattern, not raw path); partner calls are recorded by
//! the partner clients through [`PartnerMetrics`]. One registry per process.
//!
//! Partner calls happen in every process (`serve` charges, workers deliver,
//! refund and refresh), but `serve`'s `/metrics` must show them all, like the
//! job totals. So each process adds its calls to one Redis hash,
//! `{prefix}.partner_calls` (count, latency sum and per-bucket counts per
//! partner and outcome), every second and when it stops; `serve` renders that
//! hash as the `orderflow_partner_*` families. A worker's own endpoint
//! (`WORKER_METRICS_ADDR`) shows its process-local calls.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use redis::aio::ConnectionManager;
use redis::AsyncCommands;

const CALLS: &str = "orderflow_partner_calls_total";
const CALLS_HELP: &str = "Calls to partner systems";
const LATENCY: &str = "orderflow_partner_call_duration_seconds";
const LATENCY_HELP: &str = "Latency of calls to partner systems";

/// Upper bounds (seconds) of the partner latency histogram.
pub const PARTNER_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub partner: PartnerMetrics,
    pub queues: QueueGauges,
    /// Boards rendered from Redis by this `serve` (reads not served from
    /// its micro-cache).
    pub board_renders: prometheus::IntCounter,
    /// The partner calls of every process, as last read from Redis.
    shared_calls: Arc<Mutex<Vec<CallTally>>>,
}

/// Calls of one partner with one outcome: how many, their summed latency
/// and how many fell in each bucket of [`PARTNER_BUCKETS`] (not cumulative;
/// the rest took longer than the last bound).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallTally {
    pub partner: String,
    pub outcome: String,
    pub count: u64,
    pub sum_micros: u64,
    pub buckets: [u64; PARTNER_BUCKETS.len()],
}

impl CallTally {
    fn new(partner: &str, outcome: &str) -> Self {
        CallTally {
            partner: partner.to_owned(),
            outcome: outcome.to_owned(),
            ..Default::default()
        }
    }

    fn record(&mut self, elapsed: Duration) {
        self.count += 1;
        self.sum_micros += elapsed.as_micros() as u64;
        let secs = elapsed.as_secs_f64();
        if let Some(i) = PARTNER_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i] += 1;
        }
    }

    fn add(&mut self, other: &CallTally, sign_add: bool) {
        let op = |a: &mut u64, b: u64| {
            *a = if sign_add {
                a.saturating_add(b)
            } else {
                a.saturating_sub(b)
            }
        };
        op(&mut self.count, other.count);
        op(&mut self.sum_micros, other.sum_micros);
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            op(a, b);
        }
    }
}

fn entry<'a>(tallies: &'a mut Vec<CallTally>, partner: &str, outcome: &str) -> &'a mut CallTally {
    let i = match tallies
        .iter()
        .position(|t| t.partner == partner && t.outcome == outcome)
    {
        Some(i) => i,
        None => {
            tallies.push(CallTally::new(partner, outcome));
            tallies.len() - 1
        }
    };
    &mut tallies[i]
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Partner calls by partner and outcome: this process' own instruments,
/// plus the calls not yet added to the shared totals in Redis.
#[derive(Clone)]
pub struct PartnerMetrics {
    calls: IntCounterVec,
    latency: HistogramVec,
    unshared: Arc<Mutex<Vec<CallTally>>>,
}

impl PartnerMetrics {
    pub fn observe(&self, partner: &str, outcome: &str, elapsed: Duration) {
        self.calls.with_label_values(&[partner, outcome]).inc();
        self.latency
            .with_label_values(&[partner, outcome])
            .observe(elapsed.as_secs_f64());
        entry(&mut lock(&self.unshared), partner, outcome).record(elapsed);
    }

    /// Adds the calls observed since the last flush to `{prefix}.partner_calls`
    /// in one atomic pipeline, and returns them. Nothing is lost when Redis
    /// fails or the future is dropped: a call leaves the local tally only
    /// after Redis has counted it.
    pub async fn flush(
        &self,
        conn: &mut ConnectionManager,
        prefix: &str,
    ) -> redis::RedisResult<Vec<CallTally>> {
        let batch: Vec<CallTally> = lock(&self.unshared)
            .iter()
            .filter(|t| t.count > 0)
            .cloned()
            .collect();
        if batch.is_empty() {
            return Ok(batch);
        }
        let key = shared_calls_key(prefix);
        let mut pipe = redis::pipe();
        pipe.atomic();
        for t in &batch {
            let field = |stat: &str| format!("{}|{}|{stat}", t.partner, t.outcome);
            pipe.hincr(&key, field("count"), t.count).ignore();
            pipe.hincr(&key, field("sum_us"), t.sum_micros).ignore();
            for (i, n) in t.buckets.iter().enumerate().filter(|(_, n)| **n > 0) {
                pipe.hincr(&key, field(&format!("b{i}")), *n).ignore();
            }
        }
        pipe.query_async::<()>(conn).await?;
        let mut unshared = lock(&self.unshared);
        for t in &batch {
            entry(&mut unshared, &t.partner, &t.outcome).add(t, false);
        }
        Ok(batch)
    }

    /// Flushes every `every` until `stop`; `connect` gives the Redis
    /// connection for a round (None: skip the round). The owner flushes once
    /// more when its last partner call is done.
    pub async fn flush_every<F, Fut>(
        &self,
        prefix: String,
        every: Duration,
        mut connect: F,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<ConnectionManager>>,
    {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if let Some(mut conn) = connect().await {
                if let Err(e) = self.flush(&mut conn, &prefix).await {
                    tracing::debug!(error = %e, "partner call metrics not flushed; next round retries");
                }
            }
        }
    }
}

pub fn shared_calls_key(prefix: &str) -> String {
    format!("{prefix}.partner_calls")
}

/// Reads the partner calls every process has flushed.
pub async fn read_shared_calls(
    conn: &mut ConnectionManager,
    prefix: &str,
) -> redis::RedisResult<Vec<CallTally>> {
    let fields: std::collections::HashMap<String, u64> =
        conn.hgetall(shared_calls_key(prefix)).await?;
    let mut out = Vec::new();
    for (field, n) in fields {
        let mut parts = field.splitn(3, '|');
        let (Some(partner), Some(outcome), Some(stat)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let t = entry(&mut out, partner, outcome);
        match stat {
            "count" => t.count = n,
            "sum_us" => t.sum_micros = n,
            bucket => {
                if let Some(slot) = bucket
                    .strip_prefix('b')
                    .and_then(|i| i.parse::<usize>().ok())
                    .and_then(|i| t.buckets.get_mut(i))
                {
                    *slot = n;
                }
            }
        }
    }
    out.sort_by(|a, b| (&a.partner, &a.outcome).cmp(&(&b.partner, &b.outcome)));
    Ok(out)
}

/// The two `orderflow_partner_*` families for a set of tallies.
pub fn call_families(tallies: &[CallTally]) -> Vec<MetricFamily> {
    let labels = |t: &CallTally| {
        ["outcome", "partner"]
            .into_iter()
            .zip([&t.outcome, &t.partner])
            .map(|(name, value)| {
                let mut l = proto::LabelPair::default();
                l.set_name(name.to_owned());
                l.set_value(value.clone());
                l
            })
            .collect::<Vec<_>>()
    };
    let family = |name: &str, help: &str, kind, metrics| {
        let mut f = MetricFamily::default();
        f.set_name(name.to_owned());
        f.set_help(help.to_owned());
        f.set_field_type(kind);
        f.set_metric(metrics);
        f
    };
    let counters = tallies
        .iter()
        .map(|t| {
            let mut c = proto::Counter::default();
            c.set_value(t.count as f64);
            let mut m = proto::Metric::from_label(labels(t));
            m.set_counter(c);
            m
        })
        .collect();
    let histograms = tallies
        .iter()
        .map(|t| {
            let mut cumulative = 0;
            let buckets = PARTNER_BUCKETS
                .iter()
                .zip(t.buckets)
                .map(|(bound, n)| {
                    cumulative += n;
                    let mut b = proto::Bucket::default();
                    b.set_upper_bound(*bound);
                    b.set_cumulative_count(cumulative.min(t.count));
                    b
                })
                .collect();
            let mut h = proto::Histogram::default();
            h.set_sample_count(t.count);
            h.set_sample_sum(t.sum_micros as f64 / 1e6);
            h.set_bucket(buckets);
            let mut m = proto::Metric::from_label(labels(t));
            m.set_histogram(h);
            m
        })
        .collect();
    vec![
        family(CALLS, CALLS_HELP, MetricType::COUNTER, counters),
        family(LATENCY, LATENCY_HELP, MetricType::HISTOGRAM, histograms),
    ]
}

impl Metrics {
    /// `serve`'s metrics: partner calls are rendered from the shared totals
    /// (see [`Metrics::encode`]), not from this process' instruments.
    pub fn new() -> anyhow::Result<Self> {
        let registry = Registry::new();
        let calls = IntCounterVec::new(Opts::new(CALLS, CALLS_HELP), &["partner", "outcome"])?;
        let latency = HistogramVec::new(
            HistogramOpts::new(LATENCY, LATENCY_HELP).buckets(PARTNER_BUCKETS.to_vec()),
            &["partner", "outcome"],
        )?;
        let queues = QueueGauges::new(&registry)?;
        let board_renders = prometheus::IntCounter::with_opts(Opts::new(
            "orderflow_board_renders_total",
            "Dashboard boards rendered from Redis by this process (the other reads come from its micro-cache)",
        ))?;
        registry.register(Box::new(board_renders.clone()))?;
        Ok(Metrics {
            registry,
            board_renders,
            partner: PartnerMetrics {
                calls,
                latency,
                unshared: Arc::default(),
            },
            queues,
            shared_calls: Arc::default(),
        })
    }

    /// A worker's metrics: its own endpoint shows its own partner calls.
    pub fn for_worker() -> anyhow::Result<Self> {
        let m = Metrics::new()?;
        m.registry.register(Box::new(m.partner.calls.clone()))?;
        m.registry.register(Box::new(m.partner.latency.clone()))?;
        Ok(m)
    }

    /// Flushes this process' partner calls and reads everyone's from Redis
    /// (`conn` is None when Redis is unreachable). When the read fails, the
    /// last read plus what this process just flushed is kept, so the
    /// counters never go backwards.
    pub async fn load_shared_calls(&self, conn: Option<ConnectionManager>, prefix: &str) {
        let Some(mut conn) = conn else { return };
        let flushed = self.partner.flush(&mut conn, prefix).await;
        let read =
            tokio::time::timeout(Duration::from_secs(1), read_shared_calls(&mut conn, prefix))
                .await;
        let mut shared = lock(&self.shared_calls);
        match read {
            Ok(Ok(all)) => *shared = all,
            _ => {
                for t in flushed.iter().flatten() {
                    entry(&mut shared, &t.partner, &t.outcome).add(t, true);
                }
            }
        }
    }

    /// Prometheus text: the registry, plus (for `serve`, whose registry has
    /// no partner families) every process' partner calls as last loaded,
    /// with this process' not yet flushed calls added.
    pub fn encode(&self) -> String {
        let mut families = self.registry.gather();
        if !families.iter().any(|f| f.name() == CALLS) {
            let mut tallies = lock(&self.shared_calls).clone();
            for t in lock(&self.partner.unshared).iter() {
                entry(&mut tallies, &t.partner, &t.outcome).add(t, true);
            }
            tallies.sort_by(|a, b| (&a.partner, &a.outcome).cmp(&(&b.partner, &b.outcome)));
            families.extend(call_families(&tallies));
            families.sort_by(|a, b| a.name().cmp(b.name()));
        }
        encode_families(&families)
    }
}

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
    encode_families(&registry.gather())
}

fn encode_families(families: &[MetricFamily]) -> String {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    let _ = prometheus::TextEncoder::new().encode(families, &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
    }

    #[test]
    fn serve_renders_partner_calls_as_a_counter_and_a_cumulative_histogram() {
        let m = Metrics::new().unwrap();
        for ms in [3, 30, 30, 700, 20_000] {
            m.partner
                .observe("warehouse", "ok", Duration::from_millis(ms));
        }
        m.partner
            .observe("payment", "timeout", Duration::from_millis(5));
        let text = m.encode();
        let calls = r#"orderflow_partner_calls_total{outcome="ok",partner="warehouse"}"#;
        assert_eq!(line(&text, calls), Some("5"), "{text}");
        let bucket = |le: &str| {
            line(
                &text,
                &format!(
                    r#"orderflow_partner_call_duration_seconds_bucket{{outcome="ok",partner="warehouse",le="{le}"}}"#
                ),
            )
        };
        assert_eq!(bucket("0.005"), Some("1"));
        assert_eq!(bucket("0.025"), Some("1"));
        assert_eq!(bucket("0.05"), Some("3"));
        assert_eq!(bucket("1"), Some("4"));
        assert_eq!(bucket("10"), Some("4"));
        assert_eq!(bucket("+Inf"), Some("5"));
        assert_eq!(
            line(
                &text,
                r#"orderflow_partner_call_duration_seconds_sum{outcome="ok",partner="warehouse"}"#
            ),
            Some("20.763")
        );
        assert_eq!(
            line(
                &text,
                r#"orderflow_partner_calls_total{outcome="timeout",partner="payment"}"#
            ),
            Some("1")
        );
        assert_eq!(
            text.matches("# TYPE orderflow_partner_calls_total counter")
                .count(),
            1
        );
    }

    #[test]
    fn a_worker_registry_shows_its_own_calls() {
        let m = Metrics::for_worker().unwrap();
        m.partner
            .observe("shipping", "ok", Duration::from_millis(1));
        let text = encode(&m.registry);
        assert!(
            text.contains(r#"orderflow_partner_calls_total{outcome="ok",partner="shipping"} 1"#),
            "{text}"
        );
        assert_eq!(
            text.matches("# TYPE orderflow_partner_calls_total counter")
                .count(),
            1
        );
    }
}
