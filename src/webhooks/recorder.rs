//! A drainer's bookkeeping: what it has taken and not yet recorded, and
//! where its cursor may move; finished attempts are recorded on a task of
//! their own, as many per statement as have finished meanwhile (up to
//! [`RECORD_BATCH`]), so the window of POSTs never waits for PostgreSQL.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use uuid::Uuid;

use super::WebhookContext;
use crate::db;
use crate::db::webhooks::{self as store, AttemptRecord, Pos};

/// Finished attempts recorded per statement, at most.
const RECORD_BATCH: usize = 128;

/// What a drainer has taken and not recorded yet, and how far its looks
/// into the log reached.
#[derive(Debug)]
pub struct Progress {
    /// Delivery rows sent or being sent: still due in PostgreSQL until
    /// recorded, so never taken again meanwhile.
    rows: HashSet<i64>,
    /// Log entries sent or being sent: beyond the cursor until recorded.
    log: BTreeSet<Pos>,
    /// Every log entry up to here was taken (or is not the endpoint's).
    reached: Pos,
}

impl Progress {
    pub fn new(cursor: Pos) -> Self {
        Progress {
            rows: HashSet::new(),
            log: BTreeSet::new(),
            reached: cursor,
        }
    }

    /// Where the cursor may stand: just before the oldest entry not yet
    /// recorded, or as far as the looks reached.
    pub fn cursor(&self) -> Pos {
        self.log.first().map_or(self.reached, |p| p.before())
    }

    pub fn reached(&self) -> Pos {
        self.reached
    }

    pub fn rows(&self) -> Vec<i64> {
        self.rows.iter().copied().collect()
    }

    /// How many attempts were taken and are not recorded yet (those in
    /// flight among them).
    pub fn unrecorded(&self) -> usize {
        self.rows.len() + self.log.len()
    }

    /// A look took these rows and entries and reached `reached`.
    pub fn took(&mut self, rows: &[i64], entries: &[Pos], reached: Option<Pos>) {
        self.rows.extend(rows);
        self.log.extend(entries);
        if let Some(r) = reached {
            self.reached = self.reached.max(r);
        }
    }
}

/// The progress shared by a drainer's looks and its recorder.
#[derive(Debug, Clone)]
pub struct Shared(Arc<Mutex<Progress>>);

impl Shared {
    pub fn new(cursor: Pos) -> Self {
        Shared(Arc::new(Mutex::new(Progress::new(cursor))))
    }

    pub fn lock(&self) -> MutexGuard<'_, Progress> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct Recorder {
    tx: tokio::sync::mpsc::UnboundedSender<AttemptRecord>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Recorder {
    /// Records what is [`add`](Self::add)ed for the drainer holding the
    /// lease as `task`. A failed write (a checkout or statement timeout, a
    /// blip) is tried again, with the batch unchanged, for as long as a
    /// lease lasts; then, or once the lease has passed to another drainer,
    /// the recorder ends with the error and its drainer stops (see
    /// [`ended`](Self::ended)).
    pub fn start(ctx: &WebhookContext, endpoint: Uuid, task: &str, progress: Shared) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<AttemptRecord>();
        let (ctx, task) = (ctx.clone(), task.to_owned());
        let task = tokio::spawn(async move {
            let mut written = progress.lock().cursor();
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < RECORD_BATCH {
                    match rx.try_recv() {
                        Ok(more) => batch.push(more),
                        Err(_) => break,
                    }
                }
                let cursor = settle_log(&progress, &batch);
                let moved = (cursor > written).then_some(cursor);
                written = written.max(cursor);
                let rows: Vec<i64> = batch.iter().filter_map(|a| a.source.row()).collect();
                write(&ctx, endpoint, &task, Arc::new(batch), moved).await?;
                let mut p = progress.lock();
                for id in rows {
                    p.rows.remove(&id);
                }
            }
            Ok(())
        });
        Recorder { tx, task }
    }

    pub fn add(&self, done: AttemptRecord) {
        // The task only ends when this sender is dropped, or on an error
        // that `finish` reports.
        let _ = self.tx.send(done);
    }

    /// Whether the recorder gave up before it was finished: its drainer
    /// must stop sending (what it sends would not be recorded).
    pub fn ended(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits until everything added is recorded.
    pub async fn finish(self) -> anyhow::Result<()> {
        drop(self.tx);
        self.task.await?
    }
}

/// Writes one batch, trying again after a failure (on the reconnect
/// schedule) for up to a lease.
async fn write(
    ctx: &WebhookContext,
    endpoint: Uuid,
    task: &str,
    batch: Arc<Vec<AttemptRecord>>,
    moved: Option<Pos>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut backoff = crate::backoff::Backoff::default();
    loop {
        let (batch, task) = (batch.clone(), task.to_owned());
        let kept = db::unit(&ctx.pool, move |c| {
            store::record(c, endpoint, &task, &batch, moved)
        })
        .await;
        match kept {
            Ok(true) => return Ok(()),
            Ok(false) => anyhow::bail!(
                "the drain lease passed to another drainer, which sends these attempts again"
            ),
            Err(e) if started.elapsed() >= ctx.lease => return Err(e.into()),
            Err(e) => {
                tracing::warn!(endpoint = %super::endpoint_id(endpoint), error = %e, "webhook attempts not recorded; trying again");
                tokio::time::sleep(backoff.next_jittered()).await;
            }
        }
    }
}

/// Takes the batch's log entries off the unrecorded ones (they are
/// recorded with the cursor this returns, in one transaction).
fn settle_log(progress: &Shared, batch: &[AttemptRecord]) -> Pos {
    let mut p = progress.lock();
    for pos in batch.iter().filter_map(|a| a.source.log()) {
        p.log.remove(&pos);
    }
    p.cursor()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(xact: i64, position: i64) -> Pos {
        Pos { xact, position }
    }

    #[test]
    fn the_cursor_stops_before_the_oldest_entry_not_recorded() {
        let mut p = Progress::new(at(5, 10));
        assert_eq!(p.cursor(), at(5, 10));
        p.took(
            &[],
            &[at(6, 12), at(7, 11), at(7, 14)],
            Some(at(9, i64::MAX)),
        );
        assert_eq!(p.cursor(), at(6, 11));
        p.log.remove(&at(7, 11));
        assert_eq!(
            p.cursor(),
            at(6, 11),
            "a later entry recorded first moves nothing"
        );
        p.log.remove(&at(6, 12));
        assert_eq!(p.cursor(), at(7, 13));
        p.log.remove(&at(7, 14));
        assert_eq!(p.cursor(), at(9, i64::MAX));
        p.took(&[], &[], Some(at(8, 0)));
        assert_eq!(p.reached(), at(9, i64::MAX), "a look never moves it back");
    }
}
