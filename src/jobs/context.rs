//! What every job handler gets: the pool, the partner executor, the queue
//! producer and the retry policy.

use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::{AbortError, BoxDynError};
use rand::Rng;

use super::JobQueue;
use crate::db::DbPool;
use crate::metrics::JobMetrics;
use crate::partners::executor::PartnerExecutor;

#[derive(Clone)]
pub struct JobContext {
    pub pool: DbPool,
    pub partners: PartnerExecutor,
    pub queue: Arc<JobQueue>,
    pub policy: RetryPolicy,
    pub metrics: JobMetrics,
}

impl JobContext {
    /// Runs one job, recording its duration and outcome in this process'
    /// metrics and in the shared totals `serve` reports (`done`, `failed` =
    /// will be retried, `dead` = given up).
    pub async fn observe(
        &self,
        kind: &'static str,
        job: impl std::future::Future<Output = Result<(), BoxDynError>>,
    ) -> Result<(), BoxDynError> {
        let started = std::time::Instant::now();
        let result = job.await;
        let outcome = match &result {
            Ok(()) => "done",
            Err(e) if e.downcast_ref::<AbortError>().is_some() => "dead",
            Err(e) => {
                tracing::warn!(job.kind = kind, error = %e, "job failed; it will be retried");
                "failed"
            }
        };
        self.metrics.observe(kind, outcome, started.elapsed());
        if let Ok(mut conn) = self.queue.connection().await {
            if let Err(e) = super::stats::count(&mut conn, self.queue.prefix(), kind, outcome).await
            {
                tracing::debug!(error = %e, "job total not counted");
            }
        }
        result
    }
}

/// Our own attempt budget and backoff: apalis-redis retries failed jobs on a
/// fixed linear schedule whatever a policy says, so jobs that want backoff
/// finish `Ok` and push their next attempt with a delay; the attempt count
/// lives on the order row.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: i32,
    pub base: Duration,
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            base: Duration::from_secs(1),
            cap: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// Delay before attempt `attempt + 1`: exponential with jitter (50–100 %
    /// of `base × 2^(attempt-1)`, capped), and never before the partner's
    /// `Retry-After`.
    pub fn backoff(&self, attempt: i32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.clamp(1, 20).saturating_sub(1) as u32);
        let ceiling = exp.min(self.cap);
        let jittered = ceiling.mul_f64(rand::rng().random_range(0.5..=1.0));
        retry_after.map_or(jittered, |r| jittered.max(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_is_capped_and_honours_retry_after() {
        let p = RetryPolicy {
            max_attempts: 8,
            base: Duration::from_secs(1),
            cap: Duration::from_secs(10),
        };
        for _ in 0..50 {
            let d1 = p.backoff(1, None);
            assert!(d1 >= Duration::from_millis(500) && d1 <= Duration::from_secs(1));
            let d3 = p.backoff(3, None);
            assert!(d3 >= Duration::from_secs(2) && d3 <= Duration::from_secs(4));
            assert!(p.backoff(30, None) <= Duration::from_secs(10));
            assert!(p.backoff(1, Some(Duration::from_secs(7))) >= Duration::from_secs(7));
        }
    }
}
