//! What every job handler gets: the pool, the partner executor, the queue
//! producer and the retry policy.

use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::{AbortError, BoxDynError};
use rand::Rng;

use super::{JobQueue, OutboxJob};
use crate::db::outbox;
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
    /// The deliver jobs' database work, run together (`db::group`).
    pub deliveries: crate::orders::jobs::deliver::DeliveryUnits,
}

impl JobContext {
    /// Runs one job through the job shell ([`super::shell::observe`]).
    pub async fn observe(
        &self,
        kind: &'static str,
        job: impl std::future::Future<Output = Result<(), BoxDynError>>,
    ) -> Result<(), BoxDynError> {
        super::shell::observe(&self.metrics, &self.queue, kind, job).await
    }
}

impl JobContext {
    /// Claims an attempt of the outbox item `job` was woken for (see
    /// [`outbox::claim`]): `None` when this wake-up has nothing to do.
    pub async fn claim<J: OutboxJob>(
        &self,
        job: &J,
        task: String,
    ) -> Result<Option<i32>, crate::db::DbError> {
        let (lease, order_id) = (self.policy.lease, job.order_id());
        let claim = crate::db::unit(&self.pool, move |c| {
            outbox::claim(c, J::OUTBOX, order_id, &task, lease)
        })
        .await?;
        Ok(match claim {
            outbox::Claim::Run { attempt } => Some(attempt),
            outbox::Claim::NotYet | outbox::Claim::NotOwed => None,
        })
    }

    /// After failed attempt `attempt` of `job`: the next attempt after a
    /// jittered backoff (recorded on the outbox row, woken by a delayed push),
    /// or, past the budget, the order is flagged `why` for ops and the work
    /// is no longer owed. Never an apalis retry, which would start a second
    /// chain on its own schedule.
    pub async fn retry_or_flag<J: OutboxJob>(
        &self,
        job: J,
        attempt: i32,
        why: crate::domain::Attention,
        reason: &str,
    ) -> Result<(), BoxDynError> {
        let order_id = job.order_id();
        if attempt >= self.policy.max_attempts {
            crate::db::unit(&self.pool, move |c| {
                c.build_transaction().run(|c| {
                    crate::db::orders::flag_attention(c, order_id, why)?;
                    outbox::done(c, J::OUTBOX, order_id)
                })
            })
            .await?;
            tracing::warn!(
                job.kind = J::QUEUE,
                attempt,
                reason,
                attention = why.as_str(),
                "attempts used up; flagged for ops"
            );
            return Err(AbortError::new(GaveUp(reason.to_owned())).into());
        }
        let delay = self.policy.backoff(attempt, None);
        self.retry_in(job, attempt, delay, reason).await
    }

    /// Records that `job`'s next attempt is due in `delay` and pushes its
    /// wake-up.
    async fn retry_in<J: OutboxJob>(
        &self,
        job: J,
        attempt: i32,
        delay: Duration,
        reason: &str,
    ) -> Result<(), BoxDynError> {
        let order_id = job.order_id();
        crate::db::unit(&self.pool, move |c| {
            outbox::retry_in(c, J::OUTBOX, order_id, delay)
        })
        .await?;
        tracing::info!(
            job.kind = J::QUEUE,
            attempt,
            retry_in_ms = delay.as_millis() as u64,
            reason,
            "will be retried"
        );
        self.wake_after(job, attempt, delay).await;
        Ok(())
    }

    /// After failed attempt `attempt` of a payment or refund the gateway
    /// has not settled: retried with backoff until the settle window ends
    /// (then flagged `why` and no longer owed), flagged `why` from the
    /// window's attention time on. `at_least` delays the next attempt (a
    /// 3-D Secure deadline that is still ahead).
    pub async fn retry_settling<J: OutboxJob>(
        &self,
        job: J,
        attempt: i32,
        why: crate::domain::Attention,
        reason: &str,
        at_least: Option<Duration>,
    ) -> Result<(), BoxDynError> {
        let (order_id, window) = (job.order_id(), self.policy.settle);
        let age = crate::db::unit(&self.pool, move |c| outbox::age(c, J::OUTBOX, order_id)).await?;
        let Some(age) = age else {
            return Ok(()); // no longer owed
        };
        if age >= window.give_up_after {
            return self.retry_or_flag(job, i32::MAX, why, reason).await;
        }
        if age >= window.attention_after {
            crate::db::unit(&self.pool, move |c| {
                crate::db::orders::flag_attention(c, order_id, why)
            })
            .await?;
        }
        let policy = RetryPolicy {
            cap: window.cap,
            ..self.policy
        };
        let delay = policy.backoff(attempt, at_least);
        self.retry_in(job, attempt, delay, reason).await
    }

    /// Pushes the wake-up of `job`'s next attempt, due in `delay` (the owed
    /// row already says when). If the push fails (Redis down, queue full),
    /// the sweeper pushes one once the attempt is overdue.
    pub async fn wake_after<J: OutboxJob>(&self, job: J, attempt: i32, delay: Duration) {
        let id = format!("{}-a{attempt}", job.task_id());
        if let Err(e) = self.queue.push_with(job, id, delay).await {
            tracing::warn!(error = %e, "retry wake-up not pushed; the sweeper will push it");
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("gave up: {0}")]
struct GaveUp(String);

/// Our own attempt budget and backoff: apalis-redis retries failed jobs on a
/// fixed linear schedule whatever a policy says, so jobs that want backoff
/// finish `Ok` and push their next attempt with a delay; the attempt count
/// lives on the order row.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: i32,
    pub base: Duration,
    pub cap: Duration,
    /// How long a started attempt owns its outbox item: past it, with neither
    /// an outcome nor a retry recorded (a job lost with its worker), the
    /// sweeper may push the item again. Above the partner timeout.
    pub lease: Duration,
    /// How payments and refunds the gateway has not settled are retried:
    /// by time, not by count.
    pub settle: SettleWindow,
    /// How long a customer has to authenticate (3-D Secure) before the
    /// intent is cancelled.
    pub action_timeout: Duration,
}

/// Money is retried by time: an unsettled payment or refund is tried again
/// with backoff (capped at `cap`) for `give_up_after` since it was first
/// owed; ops see `attention` from `attention_after` on, while the retries
/// go on.
#[derive(Debug, Clone, Copy)]
pub struct SettleWindow {
    pub attention_after: Duration,
    pub give_up_after: Duration,
    pub cap: Duration,
}

impl Default for SettleWindow {
    fn default() -> Self {
        SettleWindow {
            attention_after: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(72 * 3600),
            cap: Duration::from_secs(600),
        }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            base: Duration::from_secs(1),
            cap: Duration::from_secs(120),
            lease: Duration::from_secs(30),
            settle: SettleWindow::default(),
            action_timeout: Duration::from_secs(1800),
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
            ..RetryPolicy::default()
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
