//! `WebhookDrain{endpoint}`: send an endpoint's due deliveries.
//!
//! Pushed by the fan-out when an endpoint gets deliveries, by a drainer for
//! its next retry, by the sweep for an endpoint whose wake-up was lost, and
//! on resend or re-enable. Safe any number of times: a job first takes the
//! endpoint's drain lease, so one drainer per endpoint runs in the whole
//! fleet and the others end at once. The drainer keeps up to
//! `WEBHOOK_CONCURRENCY` POSTs in flight, takes more due deliveries as they
//! finish, records finished attempts in batches, and ends when nothing is
//! due; a future retry gets a delayed wake-up. At least once: a drainer
//! killed mid-flight leaves its deliveries due, and once its drain lease
//! runs out the next drainer sends them again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use apalis::prelude::{BoxDynError, Data, TaskId};
use chrono::Utc;
use futures_util::stream::{FuturesUnordered, StreamExt};
use rand::Rng;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::client::Post;
use super::signature;
use super::WebhookContext;
use crate::db::webhooks::{self as store, AttemptRecord, DeliveryState, DueDelivery, Target};
use crate::db::{self, events};
use crate::http::views::event_id;
use crate::jobs::JobKind;
use crate::partners::call::{status_outcome, CallError, Outcome};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookDrain {
    pub endpoint_id: Uuid,
}

impl JobKind for WebhookDrain {
    const QUEUE: &'static str = "webhook";
    fn task_id(&self) -> String {
        format!("webhook-{}", self.endpoint_id)
    }
}

/// How often a drainer with nothing new to send looks again.
const RECHECK: Duration = Duration::from_millis(50);
/// Finished attempts recorded per statement, at most.
const RECORD_BATCH: usize = 128;
/// How much earlier than the latest due time taken a look starts, and how
/// often it starts from the beginning instead.
const LATE_COMMIT_SECS: i64 = 5;
const FULL_SCAN_EVERY: Duration = Duration::from_secs(10);
/// A retry due sooner than this is waited for by the drainer itself.
const STAY_FOR: Duration = Duration::from_secs(2);
/// The first retry's delay doubles up to this.
const RETRY_CAP: Duration = Duration::from_secs(3600);

pub async fn run(
    job: WebhookDrain,
    ctx: Data<Arc<WebhookContext>>,
    task: TaskId,
) -> Result<(), BoxDynError> {
    drain(&ctx, job.endpoint_id, &task.to_string())
        .await
        .map_err(|e| {
            tracing::warn!(endpoint = %super::endpoint_id(job.endpoint_id), error = %e, "webhook drain stopped; the sweep wakes it again");
            e.into()
        })
}

/// A due delivery, rendered and ready to send.
struct Ready {
    due: DueDelivery,
    post: Post,
}

async fn drain(ctx: &WebhookContext, endpoint: Uuid, task: &str) -> anyhow::Result<()> {
    let Some(target) = hold(ctx, endpoint, task).await? else {
        return Ok(());
    };
    let mut round = Round::new(ctx.settings.concurrency);
    let mut recorder = Recorder::start(ctx, endpoint);
    loop {
        if round.wants_more() {
            let sending = recorder.unrecorded();
            let from = round.scan_from();
            let ready = take_due(ctx, endpoint, task, &target, round.room(), sending, from).await?;
            round.found(&ready);
            for r in ready {
                recorder.sending(r.due.delivery_id);
                round.inflight.push(send(ctx, r));
            }
        }
        if round.inflight.is_empty() {
            recorder.finish().await?;
            if !finish_or_stay(ctx, endpoint, task).await? {
                return Ok(());
            }
            recorder = Recorder::start(ctx, endpoint);
            round.idle_since = None;
            continue;
        }
        for done in round.wait().await {
            recorder.add(done);
        }
    }
}

/// Records a drainer's finished attempts on a task of its own, as many per
/// statement as have finished meanwhile (up to [`RECORD_BATCH`]), so the
/// window of POSTs never waits for PostgreSQL.
struct Recorder {
    tx: tokio::sync::mpsc::UnboundedSender<AttemptRecord>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// Deliveries sent or being sent whose attempt is not recorded yet:
    /// still due in PostgreSQL, so never taken again meanwhile.
    unrecorded: Arc<std::sync::Mutex<std::collections::HashSet<i64>>>,
}

impl Recorder {
    fn start(ctx: &WebhookContext, endpoint: Uuid) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<AttemptRecord>();
        let ctx = ctx.clone();
        let unrecorded: Arc<std::sync::Mutex<std::collections::HashSet<i64>>> = Arc::default();
        let pending = Arc::clone(&unrecorded);
        let task = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < RECORD_BATCH {
                    match rx.try_recv() {
                        Ok(more) => batch.push(more),
                        Err(_) => break,
                    }
                }
                let ids: Vec<i64> = batch.iter().map(|a| a.delivery_id).collect();
                record(&ctx, endpoint, batch).await?;
                let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
                for id in ids {
                    p.remove(&id);
                }
            }
            Ok(())
        });
        Recorder {
            tx,
            task,
            unrecorded,
        }
    }

    fn sending(&self, delivery: i64) {
        self.lock().insert(delivery);
    }

    fn unrecorded(&self) -> Vec<i64> {
        self.lock().iter().copied().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<i64>> {
        self.unrecorded.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, done: AttemptRecord) {
        // The task only ends when this sender is dropped, or on an error
        // that `finish` reports.
        let _ = self.tx.send(done);
    }

    /// Waits until everything added is recorded.
    async fn finish(self) -> anyhow::Result<()> {
        drop(self.tx);
        self.task.await?
    }
}

/// A drainer's moving window of POSTs.
struct Round {
    limit: usize,
    inflight: FuturesUnordered<futures_util::future::BoxFuture<'static, AttemptRecord>>,
    /// When a look last found nothing.
    idle_since: Option<Instant>,
    /// The latest due time taken so far, and when the scan last started
    /// from the beginning.
    taken_up_to: Option<chrono::DateTime<Utc>>,
    full_scan_at: Instant,
}

impl Round {
    fn new(limit: usize) -> Self {
        Round {
            limit,
            inflight: FuturesUnordered::new(),
            idle_since: None,
            taken_up_to: None,
            full_scan_at: Instant::now(),
        }
    }

    /// Where the next look for due deliveries starts: a little before the
    /// latest due time already taken (a fan-out that committed late may
    /// have made earlier ones), and from the beginning every
    /// [`FULL_SCAN_EVERY`].
    fn scan_from(&mut self) -> chrono::DateTime<Utc> {
        let start = chrono::DateTime::<Utc>::UNIX_EPOCH;
        if self.full_scan_at.elapsed() >= FULL_SCAN_EVERY {
            self.full_scan_at = Instant::now();
            return start;
        }
        self.taken_up_to
            .map(|t| t - chrono::Duration::seconds(LATE_COMMIT_SECS))
            .unwrap_or(start)
    }

    fn room(&self) -> usize {
        self.limit - self.inflight.len()
    }

    /// Take more when an eighth of the window is free (so the window stays
    /// nearly full: refilling only at half kept a 200 ms endpoint at ~75 %
    /// of `WEBHOOK_CONCURRENCY`), and not more often than every
    /// [`RECHECK`] while looks find nothing.
    fn wants_more(&self) -> bool {
        self.room() >= (self.limit / 8).max(1)
            && self.idle_since.is_none_or(|t| t.elapsed() >= RECHECK)
    }

    fn found(&mut self, ready: &[Ready]) {
        self.idle_since = if ready.is_empty() {
            Some(Instant::now())
        } else {
            None
        };
        if let Some(latest) = ready.iter().map(|r| r.due.next_attempt_at).max() {
            self.taken_up_to = Some(self.taken_up_to.map_or(latest, |t| t.max(latest)));
        }
    }

    /// Waits for one POST to finish (or for the recheck time), and returns
    /// it with every other one that has.
    async fn wait(&mut self) -> Vec<AttemptRecord> {
        let mut finished = Vec::new();
        tokio::select! {
            Some(done) = self.inflight.next() => finished.push(done),
            _ = tokio::time::sleep(RECHECK) => {}
        }
        while let Some(Some(done)) = futures_util::FutureExt::now_or_never(self.inflight.next()) {
            finished.push(done);
        }
        finished
    }
}

async fn hold(ctx: &WebhookContext, endpoint: Uuid, task: &str) -> anyhow::Result<Option<Target>> {
    let (task, lease) = (task.to_owned(), ctx.lease);
    Ok(db::unit(&ctx.pool, move |c| {
        store::take_drain(c, endpoint, &task, lease)
    })
    .await?)
}

/// Renews the lease and takes up to `room` due deliveries but those it is
/// `sending` (in flight, or not recorded yet), rendered.
async fn take_due(
    ctx: &WebhookContext,
    endpoint: Uuid,
    task: &str,
    target: &Target,
    room: usize,
    sending: Vec<i64>,
    from: chrono::DateTime<Utc>,
) -> anyhow::Result<Vec<Ready>> {
    let (task, lease) = (task.to_owned(), ctx.lease);
    let bodies = ctx.bodies.clone();
    let (due, unrendered) = db::unit(&ctx.pool, move |c| {
        use diesel::Connection;
        c.transaction(|c| {
            store::relaxed_commit(c)?;
            if store::take_drain(c, endpoint, &task, lease)?.is_none() {
                return Ok((Vec::new(), Vec::new()));
            }
            let due = store::due(c, endpoint, room as i64, &sending, from)?;
            let mut ids: Vec<Uuid> = due.iter().map(|d| d.event_id).collect();
            ids.sort_unstable();
            ids.dedup();
            // Rendered by another drainer already: not read again.
            let missing = bodies.missing(&ids);
            let unrendered = if missing.is_empty() {
                Vec::new()
            } else {
                events::by_ids(c, &missing)?
            };
            Ok((due, unrendered))
        })
    })
    .await?;
    // Rendered here, not in the transaction: the connection is back.
    ctx.bodies.render(unrendered);
    Ok(due
        .into_iter()
        .filter_map(|due| {
            let body = ctx.bodies.get(due.event_id)?;
            let t = Utc::now().timestamp();
            let post = Post {
                url: target.url.clone(),
                event_id: event_id(due.event_id),
                signature: signature::sign(&target.secret, t, &body),
                body,
            };
            Some(Ready { due, post })
        })
        .collect())
}

/// Sends one attempt on the webhook thread and judges its answer.
fn send(
    ctx: &WebhookContext,
    ready: Ready,
) -> futures_util::future::BoxFuture<'static, AttemptRecord> {
    let sender = ctx.sender.clone();
    let settings = ctx.settings;
    Box::pin(async move {
        let attempted_at = Utc::now();
        let started = Instant::now();
        let Ready { due, post } = ready;
        let answer = sender
            .run(move |client| Box::pin(async move { client.send(post).await }))
            .await
            .unwrap_or_else(|_| Err(CallError::Transport("webhook sender stopped".into())));
        let delivered = status_outcome(answer.as_ref().copied()) == Outcome::Ok;
        let (response_status, error) = match &answer {
            Ok(s) if delivered => (Some(*s as i16), None),
            Ok(s) => (Some(*s as i16), Some(format!("answered HTTP {s}"))),
            Err(e) => (None, Some(e.to_string().chars().take(300).collect())),
        };
        let state = judge(delivered, due.attempt, settings.max_attempts);
        AttemptRecord {
            delivery_id: due.delivery_id,
            attempt: due.attempt,
            state,
            retry_in: retry_delay(settings.retry_base, due.attempt),
            response_status,
            error,
            duration_ms: started.elapsed().as_millis().min(i32::MAX as u128) as i32,
            attempted_at,
        }
    })
}

/// A 2xx is delivered; anything else is retried until the budget is used.
pub fn judge(delivered: bool, attempt: i32, max_attempts: i32) -> DeliveryState {
    if delivered {
        DeliveryState::Delivered
    } else if attempt >= max_attempts {
        DeliveryState::Failed
    } else {
        DeliveryState::Retrying
    }
}

/// The wait after failed attempt `attempt`: `base` doubling per attempt up
/// to an hour, plus up to 25 % jitter (never less, so the schedule's total
/// span is at least the documented one).
pub fn retry_delay(base: Duration, attempt: i32) -> Duration {
    let doublings = (attempt.max(1) - 1).min(30) as u32;
    let delay = base
        .saturating_mul(1u32 << doublings.min(31))
        .min(RETRY_CAP);
    delay.mul_f64(rand::rng().random_range(1.0..=1.25))
}

async fn record(
    ctx: &WebhookContext,
    endpoint: Uuid,
    finished: Vec<AttemptRecord>,
) -> anyhow::Result<()> {
    Ok(db::unit(&ctx.pool, move |c| store::record(c, endpoint, &finished)).await?)
}

/// Nothing in flight: gives the lease back, unless a delivery is due now
/// or within [`STAY_FOR`] (then waits and goes on: true). A later retry
/// gets a delayed wake-up.
async fn finish_or_stay(ctx: &WebhookContext, endpoint: Uuid, task: &str) -> anyhow::Result<bool> {
    let next = db::unit(&ctx.pool, move |c| store::next_due(c, endpoint)).await?;
    let wait = next.map(|at| (at - Utc::now()).to_std().unwrap_or(Duration::ZERO));
    if let Some(wait) = wait.filter(|w| *w <= STAY_FOR) {
        tokio::time::sleep(wait).await;
        return Ok(hold(ctx, endpoint, task).await?.is_some());
    }
    let owned = task.to_owned();
    db::unit(&ctx.pool, move |c| {
        store::release_drain(c, endpoint, &owned)
    })
    .await?;
    // A delivery made between the look and the release found the lease
    // held and its wake-up ended at once: look again now that it is free.
    let again = db::unit(&ctx.pool, move |c| store::next_due(c, endpoint)).await?;
    if again.is_some_and(|at| at <= Utc::now()) {
        return Ok(hold(ctx, endpoint, task).await?.is_some());
    }
    if let Some(wait) = wait {
        wake_after(ctx, endpoint, wait).await;
    }
    Ok(false)
}

/// Pushes a drain of `endpoint` due in `delay`; if the push fails, the
/// sweep pushes one once the delivery is overdue.
pub async fn wake_after(ctx: &WebhookContext, endpoint: Uuid, delay: Duration) {
    let job = WebhookDrain {
        endpoint_id: endpoint,
    };
    let at = Utc::now().timestamp() + delay.as_secs() as i64;
    let id = format!("{}-at{at}", job.task_id());
    if let Err(e) = ctx.queue.push_with(job, id, delay).await {
        tracing::warn!(error = %e, "webhook retry wake-up not pushed; the sweep will push it");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_to_an_hour_and_the_budget_ends_in_failed() {
        let base = Duration::from_secs(30);
        let d1 = retry_delay(base, 1);
        assert!(d1 >= base && d1 <= base.mul_f64(1.25));
        let d3 = retry_delay(base, 3);
        assert!(d3 >= base * 4 && d3 <= (base * 4).mul_f64(1.25));
        assert!(retry_delay(base, 20) <= RETRY_CAP.mul_f64(1.25));
        // The default budget (10 attempts) spans at least an hour, and so
        // do 8 attempts.
        let span: Duration = (1..8).map(|a| retry_delay(base, a)).sum();
        assert!(span >= Duration::from_secs(3600), "{span:?}");
        assert_eq!(judge(true, 10, 10), DeliveryState::Delivered);
        assert_eq!(judge(false, 9, 10), DeliveryState::Retrying);
        assert_eq!(judge(false, 10, 10), DeliveryState::Failed);
    }
}
