//! `WebhookDrain{endpoint}`: send an endpoint's due deliveries.
//!
//! Pushed by the fan-out timer when an endpoint has log entries waiting and
//! no drainer, by a drainer for its next retry, and on resend. Safe any
//! number of times: a job first takes the endpoint's drain lease, so one
//! drainer per endpoint runs in the whole fleet and the others end at once.
//! The drainer keeps up to `WEBHOOK_CONCURRENCY` POSTs in flight: due
//! delivery rows (retries, resends) first, then the log's entries past its
//! cursor. It takes more as they finish, records finished attempts in
//! batches with the cursor (`recorder`), and ends when nothing is due; a
//! future retry gets a delayed wake-up. At least once: a drainer killed
//! mid-flight leaves its cursor before what it had not recorded, and once
//! its drain lease runs out the next drainer sends those again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use apalis::prelude::{BoxDynError, Data, TaskId};
use chrono::Utc;
use futures_util::stream::{FuturesUnordered, StreamExt};
use rand::Rng;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::client::Post;
use super::recorder::{Recorder, Shared};
use super::signature;
use super::WebhookContext;
use crate::db::webhooks::{self as store, AttemptRecord, DeliveryState, Pos, Source, Target};
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
/// How much earlier than the latest due time taken a look starts, and how
/// often it starts from the beginning instead.
const LATE_COMMIT_SECS: i64 = 5;
const FULL_SCAN_EVERY: Duration = Duration::from_secs(10);
/// A retry due sooner than this is waited for by the drainer itself.
const STAY_FOR: Duration = Duration::from_secs(2);
/// The first retry's delay doubles up to this.
const RETRY_CAP: Duration = Duration::from_secs(3600);
/// The window a drainer of a healthy endpoint starts with: it doubles
/// with each delivery, so an endpoint that hangs from the start holds this
/// many requests, not `WEBHOOK_CONCURRENCY`.
const FIRST_WINDOW: usize = 8;
/// Failures in a row after which a drainer opens its endpoint's circuit.
const CIRCUIT_AFTER: i32 = 3;
/// The longest a circuit stays open before the next probe.
const CIRCUIT_CAP: Duration = Duration::from_secs(300);

pub async fn run(
    job: WebhookDrain,
    ctx: Data<Arc<WebhookContext>>,
    task: TaskId,
) -> Result<(), BoxDynError> {
    let task = task.to_string();
    let run = async {
        drain(&ctx, job.endpoint_id, &task).await.map_err(|e| {
            tracing::warn!(endpoint = %super::endpoint_id(job.endpoint_id), error = %e, "webhook drain stopped; the fan-out timer wakes it again once its lease runs out");
            e.into()
        })
    };
    crate::jobs::shell::observe(&ctx.metrics, &ctx.queue, WebhookDrain::QUEUE, run).await
}

/// Something to send: a due delivery row or a log entry.
struct Item {
    source: Source,
    event_id: Uuid,
    attempt: i32,
    /// A row's due time (the look's scan start follows it).
    due_at: Option<chrono::DateTime<Utc>>,
}

/// An item rendered and ready to send (`None`: its event no longer
/// exists, the attempt is recorded failed without a POST).
struct Ready {
    item: Item,
    post: Option<Post>,
}

/// How many attempts, per `WEBHOOK_CONCURRENCY`, may wait for the recorder
/// before a drainer stops taking more: a recorder that cannot write holds
/// the sending back instead of letting POSTs run unrecorded.
const UNRECORDED_PER_SLOT: usize = 2;

async fn drain(ctx: &WebhookContext, endpoint: Uuid, job: &str) -> anyhow::Result<()> {
    // The lease's holder is this run, not the job: a job run again (its
    // worker was orphaned) must not pass for one stalled past its lease.
    let task = format!("{job}/{}", Uuid::new_v4().simple());
    let task = task.as_str();
    let Some(target) = hold(ctx, endpoint, task).await? else {
        return Ok(());
    };
    let progress = Shared::new(target.cursor());
    let mut round = Round::new(ctx.settings.concurrency, target.consecutive_failures);
    let mut recorder = Recorder::start(ctx, endpoint, task, progress.clone());
    let behind_at = ctx.settings.concurrency * UNRECORDED_PER_SLOT;
    loop {
        if ctx.stopping() {
            return stop(ctx, endpoint, task, round, recorder, &progress).await;
        }
        if recorder.ended() {
            // Its error; `Ok` cannot be, the sender is still held here.
            recorder.finish().await?;
            anyhow::bail!("the webhook recorder ended");
        }
        if round.circuit_due() {
            return open_circuit(ctx, endpoint, task, round, recorder, &progress).await;
        }
        let behind = progress.lock().unrecorded() >= behind_at;
        if !behind && round.wants_more() {
            let (from, room) = (round.scan_from(), round.room());
            let ready = take_due(ctx, endpoint, task, room, &progress, from).await?;
            round.found(&ready, room);
            for r in ready {
                round.inflight.push(send(ctx, r));
            }
        }
        if round.inflight.is_empty() {
            if behind {
                tokio::time::sleep(RECHECK).await;
                continue;
            }
            if let Some(wait) = round.until_next_look() {
                tokio::time::sleep(wait).await;
                continue;
            }
            recorder.finish().await?;
            if !finish_or_stay(ctx, endpoint, task, &progress).await? {
                return Ok(());
            }
            recorder = Recorder::start(ctx, endpoint, task, progress.clone());
            round.look_now();
            continue;
        }
        for done in round.wait().await {
            recorder.add(done);
        }
    }
}

/// Failures in a row: takes nothing more, records what is in flight and
/// gives the lease back with the circuit open, so a dead endpoint holds
/// neither a sender slot nor connections while it waits for its probe.
async fn open_circuit(
    ctx: &WebhookContext,
    endpoint: Uuid,
    task: &str,
    round: Round,
    recorder: Recorder,
    progress: &Shared,
) -> anyhow::Result<()> {
    let (round, cursor) = wind_down(round, recorder, progress).await?;
    let wait = circuit_wait(round.failures_in_row + round.failures_before);
    let owned = task.to_owned();
    db::unit(&ctx.pool, move |c| {
        store::open_circuit(c, endpoint, &owned, cursor, wait)
    })
    .await?;
    tracing::info!(endpoint = %super::endpoint_id(endpoint), wait_ms = wait.as_millis() as u64, "webhook endpoint failing: its circuit is open until the next probe");
    Ok(())
}

/// Takes nothing more: waits for the POSTs in flight (each ends within the
/// request timeout), records them, and returns the round and the cursor the
/// lease is given back with.
async fn wind_down(
    mut round: Round,
    recorder: Recorder,
    progress: &Shared,
) -> anyhow::Result<(Round, Pos)> {
    while let Some(done) = round.inflight.next().await {
        round.settled(&done);
        recorder.add(done);
    }
    recorder.finish().await?;
    let cursor = progress.lock().cursor();
    Ok((round, cursor))
}

/// How long a circuit stays open after `failures` in a row: doubling from
/// 2 s with every [`CIRCUIT_AFTER`] more, up to [`CIRCUIT_CAP`].
pub fn circuit_wait(failures: i32) -> Duration {
    let opens = (failures / CIRCUIT_AFTER).clamp(1, 16) as u32;
    (Duration::from_secs(1) * 2u32.pow(opens)).min(CIRCUIT_CAP)
}

/// The worker is stopping (SIGTERM): takes nothing more, waits for the
/// POSTs in flight (each ends within the request timeout), records them and
/// gives the lease back with the cursor, so a drainer elsewhere goes on at
/// once and sends nothing twice.
async fn stop(
    ctx: &WebhookContext,
    endpoint: Uuid,
    task: &str,
    round: Round,
    recorder: Recorder,
    progress: &Shared,
) -> anyhow::Result<()> {
    let (_, cursor) = wind_down(round, recorder, progress).await?;
    release(ctx, endpoint, task, cursor).await?;
    tracing::info!(endpoint = %super::endpoint_id(endpoint), "webhook drain stopped for the shutdown; its lease is free");
    Ok(())
}

/// A drainer's moving window of POSTs. The window starts at
/// [`FIRST_WINDOW`] (one after failures) and each delivery doubles it up to
/// `WEBHOOK_CONCURRENCY`; a failure shrinks it to one, so a failing
/// endpoint holds one connection, not hundreds.
struct Round {
    limit: usize,
    window: usize,
    /// Failures since the last delivery, in this run and before it.
    failures_in_row: i32,
    failures_before: i32,
    inflight: FuturesUnordered<futures_util::future::BoxFuture<'static, AttemptRecord>>,
    /// When a look last took all there was (fewer than it had room for),
    /// and whether it found nothing at all.
    idle_since: Option<Instant>,
    dry: bool,
    /// The latest due time taken so far, and when the scan last started
    /// from the beginning.
    taken_up_to: Option<chrono::DateTime<Utc>>,
    full_scan_at: Instant,
}

impl Round {
    fn new(limit: usize, failures_before: i32) -> Self {
        Round {
            limit,
            window: if failures_before > 0 {
                1
            } else {
                limit.min(FIRST_WINDOW)
            },
            failures_in_row: 0,
            failures_before,
            inflight: FuturesUnordered::new(),
            idle_since: None,
            dry: false,
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

    /// Nothing in flight, and the last look found something: how long until
    /// the next look (it may find more before the drainer gives up).
    fn until_next_look(&self) -> Option<Duration> {
        if self.dry {
            return None;
        }
        Some(
            self.idle_since
                .map_or(Duration::ZERO, |t| RECHECK.saturating_sub(t.elapsed())),
        )
    }

    /// The drainer stays: its next look is now.
    fn look_now(&mut self) {
        self.idle_since = None;
        self.dry = false;
    }

    fn room(&self) -> usize {
        self.window.saturating_sub(self.inflight.len())
    }

    /// Whether to open the circuit: after [`CIRCUIT_AFTER`] failures in a
    /// row, or after the one attempt that probed an endpoint that was
    /// already failing.
    fn circuit_due(&self) -> bool {
        let after = if self.failures_before > 0 {
            1
        } else {
            CIRCUIT_AFTER
        };
        self.failures_in_row >= after
    }

    /// Follows a finished attempt: the window and the failures in a row.
    fn settled(&mut self, done: &AttemptRecord) {
        if done.error.as_deref() == Some(GONE) {
            return;
        }
        if done.state == DeliveryState::Delivered {
            self.window = (self.window * 2).min(self.limit);
            self.failures_in_row = 0;
            self.failures_before = 0;
        } else {
            self.window = 1;
            self.failures_in_row += 1;
        }
    }

    /// Take more when an eighth of the window is free (so the window stays
    /// nearly full: refilling only at half kept a 200 ms endpoint at ~75 %
    /// of `WEBHOOK_CONCURRENCY`), and not more often than every
    /// [`RECHECK`] once a look has taken all there was: events then come
    /// in batches of 50 ms, not one look (a transaction) per delivery.
    fn wants_more(&self) -> bool {
        self.room() >= (self.window / 8).max(1)
            && self.idle_since.is_none_or(|t| t.elapsed() >= RECHECK)
    }

    fn found(&mut self, ready: &[Ready], room: usize) {
        self.dry = ready.is_empty();
        self.idle_since = (ready.len() < room).then(Instant::now);
        if let Some(latest) = ready.iter().filter_map(|r| r.item.due_at).max() {
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
        for done in &finished {
            self.settled(done);
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

/// Renews the lease and takes up to `room` items, rendered: due delivery
/// rows but those already taken, then log entries past the last look.
async fn take_due(
    ctx: &WebhookContext,
    endpoint: Uuid,
    task: &str,
    room: usize,
    progress: &Shared,
    from: chrono::DateTime<Utc>,
) -> anyhow::Result<Vec<Ready>> {
    let (task, lease) = (task.to_owned(), ctx.lease);
    let bodies = ctx.bodies.clone();
    let (sending, after) = {
        let p = progress.lock();
        (p.rows(), p.reached())
    };
    let look = db::unit(&ctx.pool, move |c| {
        use diesel::Connection;
        c.transaction(|c| {
            store::relaxed_commit(c)?;
            let Some(target) = store::renew_drain(c, endpoint, &task, lease)? else {
                return Ok(None);
            };
            let look = look(c, &target, room as i64, &sending, after, from)?;
            let mut ids: Vec<Uuid> = look.items.iter().map(|i| i.event_id).collect();
            ids.sort_unstable();
            ids.dedup();
            // Rendered by another drainer already: not read again. Taken
            // out of the cache now, so an eviction cannot lose one.
            let (held, missing) = bodies.held(&ids);
            let unrendered = if missing.is_empty() {
                Vec::new()
            } else {
                events::by_ids(c, &missing)?
            };
            Ok(Some((target, look, held, unrendered)))
        })
    })
    .await?;
    let Some((target, look, mut held, unrendered)) = look else {
        return Ok(Vec::new());
    };
    progress
        .lock()
        .took(&look.rows(), &look.entries(), look.reached);
    // Rendered here, not in the transaction: the connection is back.
    ctx.bodies.render(unrendered, &mut held);
    let secrets = signing_secrets(ctx, &target)?;
    let t = Utc::now().timestamp();
    Ok(look
        .items
        .into_iter()
        .map(|item| {
            let post = held.get(&item.event_id).map(|body| Post {
                url: target.url.clone(),
                event_id: event_id(item.event_id),
                signature: signature::sign_all(&secrets, t, body),
                body: body.clone(),
            });
            Ready { item, post }
        })
        .collect())
}

/// The endpoint's valid secrets, opened: the current one, then the one
/// before a rotation while it is valid.
fn signing_secrets(
    ctx: &WebhookContext,
    target: &Target,
) -> anyhow::Result<Vec<secrecy::SecretString>> {
    std::iter::once(&target.secret)
        .chain(&target.previous_secret)
        .map(|stored| {
            ctx.secrets.open(target.id, stored).map_err(|e| {
                anyhow::anyhow!("the endpoint's secret does not open: {e} (is WEBHOOK_SECRETS_KEY_PREVIOUS set?)")
            })
        })
        .collect()
}

/// What one look took, and how far into the log it reached (`None`: it
/// did not look there, the window was full of rows).
struct Look {
    items: Vec<Item>,
    reached: Option<Pos>,
}

impl Look {
    fn rows(&self) -> Vec<i64> {
        self.items.iter().filter_map(|i| i.source.row()).collect()
    }

    fn entries(&self) -> Vec<Pos> {
        self.items.iter().filter_map(|i| i.source.log()).collect()
    }
}

fn look(
    c: &mut diesel::PgConnection,
    target: &Target,
    room: i64,
    sending: &[i64],
    after: Pos,
    from: chrono::DateTime<Utc>,
) -> Result<Look, db::DbError> {
    let rows = store::due(c, target.id, room, sending, from)?;
    let mut items: Vec<Item> = rows
        .into_iter()
        .map(|d| Item {
            source: Source::Row(d.delivery_id),
            event_id: d.event_id,
            attempt: d.attempt,
            due_at: Some(d.next_attempt_at),
        })
        .collect();
    let left = room - items.len() as i64;
    if left <= 0 {
        return Ok(Look {
            items,
            reached: None,
        });
    }
    let (entries, reached) =
        store::new_entries(c, after.max(target.cursor()), &target.events, left)?;
    items.extend(entries.into_iter().map(|e| Item {
        source: Source::Log(e.pos()),
        event_id: e.event_id,
        attempt: 1,
        due_at: None,
    }));
    Ok(Look {
        items,
        reached: Some(reached),
    })
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
        let Ready { item, post } = ready;
        let Some(post) = post else {
            return gone(item, attempted_at);
        };
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
        let state = judge(delivered, item.attempt, settings.max_attempts);
        AttemptRecord {
            source: item.source,
            event_id: item.event_id,
            attempt: item.attempt,
            state,
            retry_in: retry_delay(settings.retry_base, item.attempt),
            response_status,
            error,
            duration_ms: started.elapsed().as_millis().min(i32::MAX as u128) as i32,
            attempted_at,
        }
    })
}

/// Why an attempt that made no POST failed: its event no longer exists.
const GONE: &str = "the event no longer exists";

/// An attempt at an event that no longer exists (its order was deleted):
/// failed, so the cursor passes it.
fn gone(item: Item, attempted_at: chrono::DateTime<Utc>) -> AttemptRecord {
    AttemptRecord {
        source: item.source,
        event_id: item.event_id,
        attempt: item.attempt,
        state: DeliveryState::Failed,
        retry_in: Duration::ZERO,
        response_status: None,
        error: Some(GONE.into()),
        duration_ms: 0,
        attempted_at,
    }
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

/// Nothing in flight: gives the lease back with the cursor, unless a
/// delivery is due now or within [`STAY_FOR`], or the log has more (then
/// waits and goes on: true). A later retry gets a delayed wake-up.
async fn finish_or_stay(
    ctx: &WebhookContext,
    endpoint: Uuid,
    task: &str,
    progress: &Shared,
) -> anyhow::Result<bool> {
    let cursor = progress.lock().cursor();
    let (next, more) = db::unit(&ctx.pool, move |c| {
        let more = store::has_waiting(c, endpoint, cursor)?;
        Ok((store::next_due(c, endpoint)?, more))
    })
    .await?;
    let wait = next.map(|at| (at - Utc::now()).to_std().unwrap_or(Duration::ZERO));
    if more {
        return Ok(hold(ctx, endpoint, task).await?.is_some());
    }
    if let Some(wait) = wait.filter(|w| *w <= STAY_FOR) {
        tokio::time::sleep(wait).await;
        return Ok(hold(ctx, endpoint, task).await?.is_some());
    }
    release(ctx, endpoint, task, cursor).await?;
    // A resend made between the look and the release found the lease held
    // and its wake-up ended at once: look again now that it is free. (Log
    // entries committed meanwhile are woken by the fan-out timer.)
    let again = db::unit(&ctx.pool, move |c| store::next_due(c, endpoint)).await?;
    if again.is_some_and(|at| at <= Utc::now()) {
        return Ok(hold(ctx, endpoint, task).await?.is_some());
    }
    if let Some(wait) = wait {
        wake_after(ctx, endpoint, wait).await;
    }
    Ok(false)
}

/// Gives the drain lease back, with the cursor at `cursor`.
async fn release(
    ctx: &WebhookContext,
    endpoint: Uuid,
    task: &str,
    cursor: Pos,
) -> anyhow::Result<()> {
    let owned = task.to_owned();
    db::unit(&ctx.pool, move |c| {
        store::release_drain(c, endpoint, &owned, cursor)
    })
    .await?;
    Ok(())
}

/// Pushes a drain of `endpoint` due in `delay`; if the push fails, the
/// fan-out timer pushes one once the delivery is `SWEEP_GRACE_SECS`
/// overdue.
pub async fn wake_after(ctx: &WebhookContext, endpoint: Uuid, delay: Duration) {
    let job = WebhookDrain {
        endpoint_id: endpoint,
    };
    let at = Utc::now().timestamp() + delay.as_secs() as i64;
    let id = format!("{}-at{at}", job.task_id());
    if let Err(e) = ctx.queue.push_with(job, id, delay).await {
        tracing::warn!(error = %e, "webhook retry wake-up not pushed; the fan-out timer pushes one once it is overdue");
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

    fn finished(state: DeliveryState, error: Option<&str>) -> AttemptRecord {
        AttemptRecord {
            source: Source::Log(Pos {
                xact: 1,
                position: 1,
            }),
            event_id: Uuid::nil(),
            attempt: 1,
            state,
            retry_in: Duration::ZERO,
            response_status: None,
            error: error.map(str::to_owned),
            duration_ms: 0,
            attempted_at: Utc::now(),
        }
    }

    #[test]
    fn the_window_starts_small_doubles_on_deliveries_and_a_failure_shrinks_it() {
        let mut round = Round::new(256, 0);
        assert_eq!(round.room(), FIRST_WINDOW);
        for _ in 0..10 {
            round.settled(&finished(DeliveryState::Delivered, None));
        }
        assert_eq!(round.room(), 256);
        round.settled(&finished(DeliveryState::Retrying, Some("timed out")));
        assert_eq!(round.room(), 1);
        // An event that no longer exists says nothing of the endpoint.
        round.settled(&finished(DeliveryState::Failed, Some(GONE)));
        assert_eq!((round.room(), round.failures_in_row), (1, 1));
        assert!(!round.circuit_due());
        round.settled(&finished(DeliveryState::Retrying, None));
        round.settled(&finished(DeliveryState::Retrying, None));
        assert!(round.circuit_due(), "three failures in a row open it");
    }

    #[test]
    fn an_endpoint_already_failing_gets_one_probe_and_its_circuit_waits_longer() {
        let mut round = Round::new(256, 7);
        assert_eq!(round.room(), 1);
        round.settled(&finished(DeliveryState::Retrying, None));
        assert!(round.circuit_due());
        assert_eq!(circuit_wait(3), Duration::from_secs(2));
        assert_eq!(circuit_wait(6), Duration::from_secs(4));
        assert!(circuit_wait(8) < circuit_wait(9));
        assert_eq!(circuit_wait(1000), CIRCUIT_CAP);
        // A delivery closes it: the window opens again.
        let mut round = Round::new(256, 7);
        round.settled(&finished(DeliveryState::Delivered, None));
        assert_eq!((round.room(), round.circuit_due()), (2, false));
    }
}
