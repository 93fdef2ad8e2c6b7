//! A refresh batch job: load → fetch → merge → persist for up to
//! [`BATCH`](super::plan::BATCH) orders. Safe twice: a batch only
//! overwrites entries with what it saw, and order moves are conditional.

use std::collections::HashMap;
use std::sync::Arc;

use apalis::prelude::{BoxDynError, Data};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::fetch::{fetch, Tally};
use super::merge::{merge, Merged};
use super::{health, plan, store, BoardEntry, RefreshContext};
use crate::db::models::OrderWithItems;
use crate::db::{self, orders, shipments};
use crate::jobs::JobKind;
use crate::partners::Partner;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshBatch {
    pub run: i64,
    pub order_ids: Vec<Uuid>,
    /// Ask every source, due or not, beyond the budget: an on-demand run.
    #[serde(default)]
    pub force: bool,
}

impl JobKind for RefreshBatch {
    const QUEUE: &'static str = "refresh_batch";
    fn task_id(&self) -> String {
        format!(
            "refresh-{}-{}",
            self.run,
            self.order_ids
                .first()
                .map(|u| u.to_string())
                .unwrap_or_default()
        )
    }
}

pub async fn run(job: RefreshBatch, ctx: Data<Arc<RefreshContext>>) -> Result<(), BoxDynError> {
    let jobs = Arc::clone(&ctx.jobs);
    jobs.observe(RefreshBatch::QUEUE, execute(job, &ctx)).await
}

#[tracing::instrument(name = "job.refresh_batch", skip_all, fields(refresh.run = job.run, refresh.orders = job.order_ids.len()))]
async fn execute(job: RefreshBatch, ctx: &RefreshContext) -> Result<(), BoxDynError> {
    let (orders, previous) = load(ctx, &job.order_ids).await?;
    let (answers, tallies) = fetch(ctx, &orders, &previous, job.force).await;
    let now = Utc::now();
    let schedule = &ctx.bounds.schedule;
    let merged: Vec<Merged> = orders
        .iter()
        .map(|o| merge(o, previous.get(&o.order.id), &answers, schedule, now))
        .collect();
    persist(ctx, job.run, merged, &tallies).await
}

/// The batch's orders (PostgreSQL) and their current entries (Redis).
async fn load(
    ctx: &RefreshContext,
    ids: &[Uuid],
) -> Result<(Vec<OrderWithItems>, HashMap<Uuid, BoardEntry>), BoxDynError> {
    let wanted = ids.to_vec();
    let orders = db::unit(&ctx.jobs.pool, move |c| orders::find_many(c, &wanted)).await?;
    let mut conn = ctx.jobs.queue.connection().await?;
    let previous = store::entries(&mut conn, ctx.jobs.queue.prefix(), ids)
        .await?
        .into_iter()
        .flatten()
        .map(|e| (e.id, e))
        .collect();
    Ok((orders, previous))
}

/// Shipping progress → the orders in PostgreSQL; partner health and the
/// entries → Redis; the run's last batch makes the run the board.
async fn persist(
    ctx: &RefreshContext,
    run: i64,
    merged: Vec<Merged>,
    tallies: &[(Partner, Tally)],
) -> Result<(), BoxDynError> {
    let moves: Vec<_> = merged
        .iter()
        .filter_map(|m| Some((m.entry.id, m.advance?)))
        .collect();
    let mut entries: Vec<BoardEntry> = merged.into_iter().map(|m| m.entry).collect();
    if !moves.is_empty() {
        let moved = db::unit(&ctx.jobs.pool, move |c| shipments::advance(c, &moves)).await?;
        for e in entries.iter_mut() {
            if let Some(status) = moved.get(&e.id) {
                e.status = *status;
            }
        }
    }
    let mut conn = ctx.jobs.queue.connection().await?;
    let prefix = ctx.jobs.queue.prefix();
    for (partner, t) in tallies.iter().filter(|(_, t)| t.ok + t.failed > 0) {
        let open = ctx.bounds.breakers.record(*partner, t.ok, t.failed);
        if let Err(e) =
            health::record_partner(&mut conn, prefix, *partner, t.ok, t.failed, open).await
        {
            tracing::debug!(error = %e, "partner health not recorded");
        }
    }
    store::write_batch(&mut conn, prefix, run, &entries).await?;
    if let Some(end) = store::finish_batch(&mut conn, prefix, run).await? {
        tracing::info!(
            refresh.orders = end.summary.orders,
            refresh.duration_ms = end.summary.duration_ms,
            "refresh finished"
        );
        return plan::follow_up(&ctx.jobs, end).await;
    }
    Ok(())
}
