//! Group commit for jobs: many concurrent jobs that each need the same small
//! unit of work (start a delivery, record a shipment) hand their request to
//! a [`Group`], which runs every request waiting at that moment as one unit,
//! one transaction of a few set-based statements, and answers each job.
//! Nothing waits for a batch to fill: a request that finds a free slot runs
//! at once (alone, if it is alone), and requests that arrive while every
//! slot is busy share the next unit. Under load, the statements and commits
//! per job fall by the batch size; idle, the latency is one unit's.

use std::sync::Arc;

use diesel::PgConnection;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::{unit, DbError, DbPool};

/// The work of one unit: the requests in, one answer per request out, in
/// the same order.
pub type GroupWork<Req, Resp> =
    Arc<dyn Fn(&mut PgConnection, &[Req]) -> Result<Vec<Resp>, DbError> + Send + Sync>;

type Waiting<Req, Resp> = (Req, oneshot::Sender<Result<Resp, DbError>>);

/// A handle to a group's runner; cheap to clone.
pub struct Group<Req, Resp> {
    tx: mpsc::UnboundedSender<Waiting<Req, Resp>>,
}

impl<Req, Resp> Clone for Group<Req, Resp> {
    fn clone(&self) -> Self {
        Group {
            tx: self.tx.clone(),
        }
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> Group<Req, Resp> {
    /// Starts the runner on the current tokio runtime: at most `in_flight`
    /// units at once, each of at most `max` requests.
    pub fn start(pool: DbPool, in_flight: usize, max: usize, work: GroupWork<Req, Resp>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(
            pool,
            Arc::new(Semaphore::new(in_flight.max(1))),
            max.max(1),
            work,
            rx,
        ));
        Group { tx }
    }

    /// Runs `req` in the next unit; its answer, or the unit's error.
    pub async fn call(&self, req: Req) -> Result<Resp, DbError> {
        let (done, answer) = oneshot::channel();
        self.tx
            .send((req, done))
            .map_err(|_| DbError::Unavailable("the group runner has stopped".into()))?;
        answer
            .await
            .map_err(|_| DbError::Unavailable("the group runner dropped the request".into()))?
    }
}

async fn run<Req: Send + 'static, Resp: Send + 'static>(
    pool: DbPool,
    slots: Arc<Semaphore>,
    max: usize,
    work: GroupWork<Req, Resp>,
    mut rx: mpsc::UnboundedReceiver<Waiting<Req, Resp>>,
) {
    loop {
        // A free slot first, then everything waiting: requests that arrive
        // while the slots are busy gather into the next unit.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < max {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let (pool, work) = (pool.clone(), Arc::clone(&work));
        tokio::spawn(async move {
            let (reqs, waiters): (Vec<Req>, Vec<_>) = batch.into_iter().unzip();
            let n = reqs.len();
            let result = unit(&pool, move |c| work(c, &reqs)).await;
            drop(slot);
            match result {
                Ok(answers) if answers.len() == n => {
                    for (w, a) in waiters.into_iter().zip(answers) {
                        let _ = w.send(Ok(a));
                    }
                }
                Ok(_) => answer_all(
                    waiters,
                    "a group unit answered the wrong number of requests",
                ),
                Err(e) => answer_all(waiters, &e.to_string()),
            }
        });
    }
}

/// Every request of a failed unit gets its error (nothing of it committed).
fn answer_all<Resp>(waiters: Vec<oneshot::Sender<Result<Resp, DbError>>>, why: &str) {
    for w in waiters {
        let _ = w.send(Err(DbError::Unavailable(why.to_owned())));
    }
}
