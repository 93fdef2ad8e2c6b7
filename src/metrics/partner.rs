//! Partner-call metrics: this process' instruments, and the totals of
//! every process shared through Redis (`{prefix}.partner_calls`).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{HistogramVec, IntCounterVec};
use redis::aio::ConnectionManager;
use redis::AsyncCommands;

pub(super) const CALLS: &str = "orderflow_partner_calls_total";
pub(super) const CALLS_HELP: &str = "Calls to partner systems";
pub(super) const LATENCY: &str = "orderflow_partner_call_duration_seconds";
pub(super) const LATENCY_HELP: &str = "Latency of calls to partner systems";

/// Upper bounds (seconds) of the partner latency histogram.
pub const PARTNER_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

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

    pub(super) fn add(&mut self, other: &CallTally, sign_add: bool) {
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

pub(super) fn entry<'a>(
    tallies: &'a mut Vec<CallTally>,
    partner: &str,
    outcome: &str,
) -> &'a mut CallTally {
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

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Partner calls by partner and outcome: this process' own instruments,
/// plus the calls not yet added to the shared totals in Redis.
#[derive(Clone)]
pub struct PartnerMetrics {
    pub(super) calls: IntCounterVec,
    pub(super) latency: HistogramVec,
    pub(super) unshared: Arc<Mutex<Vec<CallTally>>>,
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
    // An empty family is invalid to the text encoder, which then stops:
    // every family sorted after it would be missing from the scrape.
    if tallies.is_empty() {
        return Vec::new();
    }
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
