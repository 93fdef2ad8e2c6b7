//! What every job handler gets: the pool, the partner executor, the queue
//! producer and the retry policy.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::{AbortError, BoxDynError};
use futures_util::future::LocalBoxFuture;
use rand::Rng;

use super::{JobQueue, OwedJob};
use crate::db::owed;
use crate::db::DbPool;
use crate::metrics::JobMetrics;
use crate::partners::executor::{Clients, PartnerExecutor};
use crate::partners::Partner;

#[derive(Clone)]
pub struct JobContext {
    pub pool: DbPool,
    pub partners: PartnerExecutor,
    pub queue: Arc<JobQueue>,
    pub policy: RetryPolicy,
    pub metrics: JobMetrics,
    pub breakers: Arc<Breakers>,
    pub limits: Arc<Limits>,
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

impl JobContext {
    /// Claims an attempt of the owed item `job` was woken for (see
    /// [`owed::claim`]): `None` when this wake-up has nothing to do.
    pub async fn claim<J: OwedJob>(
        &self,
        job: &J,
        task: String,
    ) -> Result<Option<i32>, crate::db::DbError> {
        let (lease, order_id) = (self.policy.lease, job.order_id());
        let claim = crate::db::unit(&self.pool, move |c| {
            owed::claim(c, J::OWED, order_id, &task, lease)
        })
        .await?;
        Ok(match claim {
            owed::Claim::Run { attempt } => Some(attempt),
            owed::Claim::NotYet | owed::Claim::NotOwed => None,
        })
    }

    /// After failed attempt `attempt` of `job`: the next attempt after a
    /// jittered backoff (recorded on the owed row, woken by a delayed push),
    /// or, past the budget, the order is flagged `why` for ops and the work
    /// is no longer owed. Never an apalis retry, which would start a second
    /// chain on its own schedule.
    pub async fn retry_or_flag<J: OwedJob>(
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
                    owed::settle(c, J::OWED, order_id)
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
        crate::db::unit(&self.pool, move |c| {
            owed::retry_in(c, J::OWED, order_id, delay)
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

    /// Pushes the wake-up of `job`'s next attempt, due in `delay` (the owed
    /// row already says when). If the push fails (Redis down, queue full),
    /// the sweeper pushes one once the attempt is overdue.
    pub async fn wake_after<J: OwedJob>(&self, job: J, attempt: i32, delay: Duration) {
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
    /// How long a started attempt owns its owed item: past it, with neither
    /// an outcome nor a retry recorded (a job lost with its worker), the
    /// sweeper may push the item again. Above the partner timeout.
    pub lease: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            base: Duration::from_secs(1),
            cap: Duration::from_secs(120),
            lease: Duration::from_secs(30),
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

/// Per-partner circuit breakers of this process: after `threshold` failures
/// in a row a partner is skipped for `cool_down` (calls fail at once), then
/// tried again.
pub struct Breakers {
    threshold: u64,
    cool_down: Duration,
    state: std::sync::Mutex<std::collections::HashMap<Partner, (u64, Option<std::time::Instant>)>>,
}

impl Breakers {
    pub fn new(threshold: u64, cool_down: Duration) -> Self {
        Breakers {
            threshold,
            cool_down,
            state: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Whether a call to `partner` may go out now.
    pub fn allow(&self, partner: Partner) -> bool {
        let Ok(state) = self.state.lock() else {
            return true;
        };
        match state.get(&partner) {
            Some((_, Some(until))) => std::time::Instant::now() >= *until,
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
            entry.1 = Some(std::time::Instant::now() + self.cool_down);
            tracing::warn!(
                partner = partner.as_str(),
                failures = entry.0,
                "partner keeps failing; circuit open"
            );
        }
        entry
            .1
            .is_some_and(|until| std::time::Instant::now() < until)
    }
}

/// Bounds on concurrent calls per partner for the status refresh.
pub struct Limits {
    payment: tokio::sync::Semaphore,
    shipping: tokio::sync::Semaphore,
    warehouse: tokio::sync::Semaphore,
}

impl Limits {
    pub fn new(per_partner: usize) -> Self {
        Limits {
            payment: tokio::sync::Semaphore::new(per_partner),
            shipping: tokio::sync::Semaphore::new(per_partner),
            warehouse: tokio::sync::Semaphore::new(per_partner),
        }
    }

    fn of(&self, partner: Partner) -> &tokio::sync::Semaphore {
        match partner {
            Partner::Payment => &self.payment,
            Partner::Shipping => &self.shipping,
            Partner::Warehouse => &self.warehouse,
        }
    }
}

impl JobContext {
    /// Calls one partner once per argument with `call`, each call within
    /// that partner's concurrency bound and unless its circuit is open.
    /// All of them go to the partner executor as one message and come back
    /// as one answer, in the arguments' order: a refresh batch makes a
    /// thousand calls, and a hop per call between the job's thread and the
    /// executor's (two thread wake-ups) cost more CPU than the calls.
    pub async fn limited_many<A, T>(
        &self,
        partner: Partner,
        args: Vec<A>,
        call: PartnerCall<A, T>,
    ) -> Vec<Result<T, String>>
    where
        A: Send + 'static,
        T: Send + 'static,
    {
        let n = args.len();
        let limits = Arc::clone(&self.limits);
        let breakers = Arc::clone(&self.breakers);
        let run = self
            .partners
            .run(move |clients| {
                Box::pin(async move {
                    futures_util::future::join_all(args.into_iter().map(|arg| {
                        let clients = Rc::clone(&clients);
                        let limits = Arc::clone(&limits);
                        let breakers = Arc::clone(&breakers);
                        async move {
                            if !breakers.allow(partner) {
                                return Err(format!("{partner}: circuit open"));
                            }
                            let _permit = limits
                                .of(partner)
                                .acquire()
                                .await
                                .map_err(|e| e.to_string())?;
                            call(clients, arg).await
                        }
                    }))
                    .await
                })
            })
            .await;
        match run {
            Ok(results) => results,
            Err(e) => (0..n).map(|_| Err(e.to_string())).collect(),
        }
    }
}

/// One partner call of [`JobContext::limited_many`]: the clients and one
/// argument in, the answer or the error's text out.
pub type PartnerCall<A, T> = fn(Rc<Clients>, A) -> LocalBoxFuture<'static, Result<T, String>>;

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
