//! Partner health as ops see it, and as the refresh acts on it.
//!
//! - In Redis, shared by all workers: `{prefix}.partners.{name}` (last
//!   success and error, circuit state) and per-minute call counters
//!   `{prefix}.partners.{name}.{ok|err}.{minute}`, read as a 5-minute window
//!   by the dashboard summary.
//! - In each worker process: a circuit breaker per partner, so a partner
//!   that keeps failing is skipped for a while instead of hammered.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use serde::Serialize;

use crate::partners::Partner;

/// Partner health as the summary shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartnerHealth {
    pub healthy: bool,
    pub last_success_at: Option<DateTime<Utc>>,
    /// Failed share of the calls of the last 5 minutes (0 without calls).
    pub error_rate: f64,
}

fn minute() -> i64 {
    Utc::now().timestamp() / 60
}

/// Records the outcome of `calls` calls to a partner.
pub async fn record_partner(
    conn: &mut ConnectionManager,
    prefix: &str,
    partner: Partner,
    ok: u64,
    failed: u64,
    circuit_open: bool,
) -> redis::RedisResult<()> {
    let base = format!("{prefix}.partners.{partner}");
    let m = minute();
    let mut pipe = redis::pipe();
    if ok > 0 {
        pipe.incr(format!("{base}.ok.{m}"), ok).ignore();
        pipe.expire(format!("{base}.ok.{m}"), 600).ignore();
        pipe.hset(&base, "last_success_at", Utc::now().to_rfc3339())
            .ignore();
    }
    if failed > 0 {
        pipe.incr(format!("{base}.err.{m}"), failed).ignore();
        pipe.expire(format!("{base}.err.{m}"), 600).ignore();
        pipe.hset(&base, "last_error_at", Utc::now().to_rfc3339())
            .ignore();
    }
    pipe.hset(&base, "circuit_open", if circuit_open { "1" } else { "0" })
        .ignore();
    pipe.query_async::<()>(conn).await
}

pub async fn partner_health(
    conn: &mut ConnectionManager,
    prefix: &str,
) -> redis::RedisResult<Vec<(&'static str, PartnerHealth)>> {
    let m = minute();
    let mut out = Vec::new();
    for &partner in Partner::ALL {
        let base = format!("{prefix}.partners.{partner}");
        let mut pipe = redis::pipe();
        pipe.hget(&base, "last_success_at")
            .hget(&base, "circuit_open");
        for k in 0..5 {
            pipe.get(format!("{base}.ok.{}", m - k))
                .get(format!("{base}.err.{}", m - k));
        }
        let (last, open, counts): (Option<String>, Option<String>, Vec<Option<u64>>) = {
            let v: Vec<redis::Value> = pipe.query_async(conn).await?;
            let s = |x: &redis::Value| {
                redis::from_redis_value::<Option<String>>(x.clone())
                    .ok()
                    .flatten()
            };
            let n = |x: &redis::Value| {
                redis::from_redis_value::<Option<u64>>(x.clone())
                    .ok()
                    .flatten()
            };
            (
                v.first().and_then(s),
                v.get(1).and_then(s),
                v.iter().skip(2).map(n).collect(),
            )
        };
        let ok: u64 = counts.iter().step_by(2).flatten().sum();
        let err: u64 = counts.iter().skip(1).step_by(2).flatten().sum();
        let error_rate = if ok + err == 0 {
            0.0
        } else {
            err as f64 / (ok + err) as f64
        };
        out.push((
            partner.as_str(),
            PartnerHealth {
                healthy: open.as_deref() != Some("1") && error_rate < 0.5,
                last_success_at: last
                    .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                    .map(|t| t.with_timezone(&Utc)),
                error_rate,
            },
        ));
    }
    Ok(out)
}

/// Per-partner circuit breakers of this process: after `threshold` failures
/// in a row a partner is skipped for `cool_down` (calls fail at once), then
/// tried again.
pub struct Breakers {
    threshold: u64,
    cool_down: Duration,
    state: Mutex<HashMap<Partner, (u64, Option<Instant>)>>,
}

impl Breakers {
    pub fn new(threshold: u64, cool_down: Duration) -> Self {
        Breakers {
            threshold,
            cool_down,
            state: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a call to `partner` may go out now.
    pub fn allow(&self, partner: Partner) -> bool {
        let Ok(state) = self.state.lock() else {
            return true;
        };
        match state.get(&partner) {
            Some((_, Some(until))) => Instant::now() >= *until,
            _ => true,
        }
    }

    /// Records outcomes; returns whether the circuit is now open.
    pub fn record(&self, partner: Partner, ok: u64, failed: u64) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        let entry = state.entry(partner).or_insert((0, None));
        if ok > 0 {
            *entry = (0, None);
        }
        entry.0 += failed;
        if ok == 0 && failed > 0 && entry.0 >= self.threshold {
            entry.1 = Some(Instant::now() + self.cool_down);
            tracing::warn!(
                partner = partner.as_str(),
                failures = entry.0,
                "partner keeps failing; circuit open"
            );
        }
        entry.1.is_some_and(|until| Instant::now() < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partner_that_keeps_failing_opens_its_circuit_until_the_cool_down() {
        let b = Breakers::new(5, Duration::from_millis(50));
        assert!(!b.record(Partner::Shipping, 0, 4));
        assert!(b.allow(Partner::Shipping));
        assert!(
            b.record(Partner::Shipping, 0, 1),
            "fifth failure in a row opens it"
        );
        assert!(!b.allow(Partner::Shipping));
        assert!(b.allow(Partner::Payment), "per partner");
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.allow(Partner::Shipping), "half-open after the cool-down");
        assert!(!b.record(Partner::Shipping, 1, 0), "a success closes it");
    }
}
