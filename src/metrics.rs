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
        Ok(Metrics {
            registry,
            partner: PartnerMetrics { calls, latency },
        })
    }
}
