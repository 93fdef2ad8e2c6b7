//! The first job of a refresh run: claim the run slot, list the active
//! orders and push one [`RefreshBatch`] per [`BATCH`] orders, so 50,000
//! orders are 50 jobs, not 50,000. A scheduled run asks the partners only
//! about the sources that are due, within the call budget; an on-demand
//! run (ops' refresh) asks about every source.

use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::{BoxDynError, Data};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::store::{self, RunClaim};
use super::{RefreshBatch, RefreshContext};
use crate::db::{self, orders};
use crate::jobs::{JobContext, JobKind};

/// Orders per refresh batch job: few jobs per run (apalis-redis dies at
/// 8,000 due entries), and enough calls per job to fill the per-partner
/// concurrency.
pub const BATCH: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshPlan {
    /// The run's id: its start time in milliseconds.
    pub run: i64,
    /// Asked for by ops (`POST /api/v1/dashboard/refresh`) rather than the
    /// schedule: if a run is in progress, one follow-up run is queued
    /// instead of skipping.
    #[serde(default)]
    pub on_demand: bool,
}

impl JobKind for RefreshPlan {
    const QUEUE: &'static str = "refresh";
    fn task_id(&self) -> String {
        format!("refresh-plan-{}", self.run)
    }
}

impl RefreshPlan {
    /// A run starting now.
    pub fn now(on_demand: bool) -> Self {
        RefreshPlan {
            run: Utc::now().timestamp_millis(),
            on_demand,
        }
    }
}

pub async fn run(job: RefreshPlan, ctx: Data<Arc<RefreshContext>>) -> Result<(), BoxDynError> {
    let jobs = Arc::clone(&ctx.jobs);
    jobs.observe(RefreshPlan::QUEUE, execute(job, &jobs)).await
}

#[tracing::instrument(name = "job.refresh_plan", skip_all, fields(refresh.run = job.run))]
async fn execute(job: RefreshPlan, ctx: &JobContext) -> Result<(), BoxDynError> {
    let mut conn = ctx.queue.connection().await?;
    let prefix = ctx.queue.prefix().to_owned();
    match store::claim_run(&mut conn, &prefix, job.run, job.on_demand).await? {
        RunClaim::Run => {}
        RunClaim::Queued => {
            tracing::info!("a refresh is running; one more run will follow it");
            return Ok(());
        }
        RunClaim::Skipped => {
            tracing::info!("a refresh is still running; this scheduled one is skipped");
            return Ok(());
        }
    }
    let ids = db::unit(&ctx.pool, orders::active_ids).await?;
    let batches: Vec<&[Uuid]> = ids.chunks(BATCH).collect();
    store::start_run(&mut conn, &prefix, job.run, batches.len(), ids.len()).await?;
    if batches.is_empty() {
        let end = store::finalize(&mut conn, &prefix, job.run, 0, job.run).await?;
        return follow_up(ctx, end).await;
    }
    for chunk in batches {
        let batch = RefreshBatch {
            run: job.run,
            order_ids: chunk.to_vec(),
            force: job.on_demand,
        };
        let id = batch.task_id();
        ctx.queue.push_with(batch, id, Duration::ZERO).await?;
    }
    tracing::info!(refresh.orders = ids.len(), "refresh planned");
    Ok(())
}

/// Starts the run asked for while `end`'s run was in progress, if any.
pub async fn follow_up(ctx: &JobContext, end: store::RunEnd) -> Result<(), BoxDynError> {
    if end.again {
        let plan = RefreshPlan::now(true);
        let id = plan.task_id();
        ctx.queue.push_with(plan, id, Duration::ZERO).await?;
    }
    Ok(())
}
