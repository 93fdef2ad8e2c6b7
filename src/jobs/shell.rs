//! The job shell: what every job run goes through, whatever its kind. It
//! times the run and counts its outcome in this process' metrics and in the
//! shared totals `serve` reports (`done`, `failed` = will be retried,
//! `dead` = given up).

use apalis::prelude::{AbortError, BoxDynError};

use super::JobQueue;
use crate::metrics::JobMetrics;

/// Runs `job` of `kind`, recording its duration and outcome.
pub async fn observe(
    metrics: &JobMetrics,
    queue: &JobQueue,
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
    metrics.observe(kind, outcome, started.elapsed());
    if let Ok(mut conn) = queue.connection().await {
        if let Err(e) = super::stats::count(&mut conn, queue.prefix(), kind, outcome).await {
            tracing::debug!(error = %e, "job total not counted");
        }
    }
    result
}
