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

mod jobs;
mod partner;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::proto::MetricFamily;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use redis::aio::ConnectionManager;

pub use jobs::{JobMetrics, QueueGauges, QueueStats};
pub use partner::{
    call_families, read_shared_calls, shared_calls_key, CallTally, PartnerMetrics, PARTNER_BUCKETS,
};
use partner::{entry, lock, CALLS, CALLS_HELP, LATENCY, LATENCY_HELP};

/// The outcomes `orderflow_gateway_events_total` counts.
pub const GATEWAY_OUTCOMES: [&str; 3] = ["received", "duplicate", "invalid"];

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub partner: PartnerMetrics,
    pub queues: QueueGauges,
    /// Boards rendered from Redis by this `serve` (reads not served from
    /// its micro-cache).
    pub board_renders: prometheus::IntCounter,
    /// Stuck orders by status, read from PostgreSQL at scrape time.
    pub stuck_orders: prometheus::IntGaugeVec,
    /// Webhook lag and what holds it: read from PostgreSQL at scrape time.
    pub webhook_lag: prometheus::Gauge,
    pub horizon_age: prometheus::Gauge,
    /// Gateway events this `serve` received, by outcome (`received`: new
    /// and stored, `duplicate`, `invalid`: refused before any database work).
    pub gateway_events: IntCounterVec,
    /// Age of the oldest gateway event not processed yet: read from
    /// PostgreSQL at scrape time.
    pub gateway_lag: prometheus::Gauge,
    /// The partner calls of every process, as last read from Redis.
    shared_calls: Arc<Mutex<Vec<CallTally>>>,
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
        let stuck_orders = prometheus::IntGaugeVec::new(
            Opts::new(
                "orderflow_stuck_orders",
                "Orders that overstayed their status (STUCK_*_SECS), by status",
            ),
            &["status"],
        )?;
        registry.register(Box::new(stuck_orders.clone()))?;
        let webhook_lag = prometheus::Gauge::with_opts(Opts::new(
            "orderflow_webhook_lag_seconds",
            "Age of the oldest event an enabled webhook endpoint has not had a first attempt at (0 when none)",
        ))?;
        registry.register(Box::new(webhook_lag.clone()))?;
        let horizon_age = prometheus::Gauge::with_opts(Opts::new(
            "orderflow_transaction_horizon_age_seconds",
            "Age of the oldest open PostgreSQL transaction holding a transaction id: webhook first deliveries wait behind it (0 when none)",
        ))?;
        registry.register(Box::new(horizon_age.clone()))?;
        let gateway_events = IntCounterVec::new(
            Opts::new(
                "orderflow_gateway_events_total",
                "Payment gateway events by outcome: in serve, received (new, stored), duplicate, invalid (refused before any database work); in a worker, processed, unmatched, failed, retried",
            ),
            &["outcome"],
        )?;
        for outcome in GATEWAY_OUTCOMES {
            gateway_events.with_label_values(&[outcome]);
        }
        registry.register(Box::new(gateway_events.clone()))?;
        let gateway_lag = prometheus::Gauge::with_opts(Opts::new(
            "orderflow_gateway_events_lag_seconds",
            "Age of the oldest payment gateway event not processed yet (0 when none)",
        ))?;
        registry.register(Box::new(gateway_lag.clone()))?;
        Ok(Metrics {
            gateway_events,
            gateway_lag,
            webhook_lag,
            horizon_age,
            registry,
            board_renders,
            stuck_orders,
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

    #[test]
    fn a_scrape_before_any_partner_call_still_has_every_family() {
        let m = Metrics::new().unwrap();
        let text = m.encode();
        for name in [
            "orderflow_outbox_lag_seconds",
            "orderflow_transaction_horizon_age_seconds",
            "orderflow_webhook_lag_seconds",
        ] {
            assert!(
                text.contains(&format!("\n{name} ")),
                "{name} missing:\n{text}"
            );
        }
    }

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
