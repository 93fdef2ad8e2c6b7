//! Status refresh for the ops board: the async case of the design. Workers do
//! the waiting on partners, concurrently, and aggregate into Redis; the
//! dashboard only reads Redis.
//!
//! A run is planned by [`RefreshPlan`] (scheduled once per
//! `STATUS_REFRESH_INTERVAL_SECS` across all worker processes, or on demand):
//! it lists the active orders and pushes one [`RefreshBatch`] per
//! [`BATCH`] orders, so 50,000 orders are 50 jobs, not 50,000. A batch calls,
//! concurrently and bounded per partner, the payment gateway (one intent per
//! order with one), the shipping partner (one shipment per order with one)
//! and the warehouse (its batch endpoint, skus de-duplicated across the
//! batch), and writes one board entry per order. A source that fails keeps
//! its last known value and is marked not ok (stale on the board). Shipping
//! progress moves orders to `shipped` / `delivered` in PostgreSQL. A partner
//! that keeps failing is skipped for a while (circuit breaker) instead of
//! hammered. Safe twice: a batch only overwrites entries with what it saw.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use apalis::prelude::{BoxDynError, Data};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{JobContext, JobKind};
use crate::board::{self, BoardEntry, PaymentState, ShippingState, StockItem, WarehouseState};
use crate::db::{self, orders};
use crate::partners::Partner;

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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshBatch {
    pub run: i64,
    pub order_ids: Vec<Uuid>,
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

pub async fn plan(job: RefreshPlan, ctx: Data<Arc<JobContext>>) -> Result<(), BoxDynError> {
    let observer = Arc::clone(&ctx);
    observer
        .observe(RefreshPlan::QUEUE, execute_plan(job, ctx))
        .await
}

#[tracing::instrument(name = "job.refresh_plan", skip_all, fields(refresh.run = job.run))]
async fn execute_plan(job: RefreshPlan, ctx: Data<Arc<JobContext>>) -> Result<(), BoxDynError> {
    let mut conn = ctx.queue.connection().await?;
    let prefix = ctx.queue.prefix().to_owned();
    match board::claim_run(&mut conn, &prefix, job.run, job.on_demand).await? {
        board::Claim::Run => {}
        board::Claim::Queued => {
            tracing::info!("a refresh is running; one more run will follow it");
            return Ok(());
        }
        board::Claim::Skipped => {
            tracing::info!("a refresh is still running; this scheduled one is skipped");
            return Ok(());
        }
    }
    let ids = db::unit(&ctx.pool, orders::active_ids).await?;
    let batches: Vec<&[Uuid]> = ids.chunks(BATCH).collect();
    board::start_run(&mut conn, &prefix, job.run, batches.len(), ids.len()).await?;
    if batches.is_empty() {
        let end = board::finalize(&mut conn, &prefix, job.run, 0, job.run).await?;
        return follow_up(&ctx, end).await;
    }
    for chunk in batches {
        let batch = RefreshBatch {
            run: job.run,
            order_ids: chunk.to_vec(),
        };
        let id = batch.task_id();
        ctx.queue
            .push_with(batch, id, std::time::Duration::ZERO)
            .await?;
    }
    tracing::info!(refresh.orders = ids.len(), "refresh planned");
    Ok(())
}

pub async fn batch(job: RefreshBatch, ctx: Data<Arc<JobContext>>) -> Result<(), BoxDynError> {
    let observer = Arc::clone(&ctx);
    observer
        .observe(RefreshBatch::QUEUE, execute_batch(job, ctx))
        .await
}

/// One partner's outcomes in a batch, for health and the breaker.
#[derive(Default)]
struct Tally {
    ok: u64,
    failed: u64,
}

#[tracing::instrument(name = "job.refresh_batch", skip_all, fields(refresh.run = job.run, refresh.orders = job.order_ids.len()))]
async fn execute_batch(job: RefreshBatch, ctx: Data<Arc<JobContext>>) -> Result<(), BoxDynError> {
    tracing::debug!("refresh batch started");
    let ids = job.order_ids.clone();
    let orders = db::unit(&ctx.pool, move |c| orders::find_many(c, &ids)).await?;
    let mut conn = ctx.queue.connection().await?;
    let prefix = ctx.queue.prefix().to_owned();
    let previous: HashMap<Uuid, BoardEntry> = board::entries(&mut conn, &prefix, &job.order_ids)
        .await?
        .into_iter()
        .flatten()
        .map(|e| (e.id, e))
        .collect();
    let now = Utc::now();

    // Payment: one intent per order that has one.
    let (payment_ids, intents): (Vec<Uuid>, Vec<String>) = orders
        .iter()
        .filter_map(|o| o.order.payment_intent_id.clone().map(|pi| (o.order.id, pi)))
        .unzip();
    let payment = ctx.limited_many(Partner::Payment, intents, |p, pi| {
        Box::pin(async move {
            p.payment
                .intent_status(&pi)
                .await
                .map_err(|e| e.to_string())
        })
    });
    // Shipping: one shipment per order that has one.
    let (shipping_ids, shipments): (Vec<Uuid>, Vec<String>) = orders
        .iter()
        .filter_map(|o| o.order.shipment_id.clone().map(|s| (o.order.id, s)))
        .unzip();
    let shipping = ctx.limited_many(Partner::Shipping, shipments, |p, shp| {
        Box::pin(async move {
            p.shipping
                .get_shipment(&shp)
                .await
                .map_err(|e| e.to_string())
        })
    });
    // Warehouse: the batch's skus, de-duplicated, 100 per call.
    let skus: Vec<String> = orders
        .iter()
        .flat_map(|o| o.items.iter().map(|i| i.sku.clone()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let sku_chunks: Vec<Vec<String>> = skus
        .chunks(crate::partners::warehouse::MAX_SKUS)
        .map(<[String]>::to_vec)
        .collect();
    let warehouse = ctx.limited_many(Partner::Warehouse, sku_chunks, |p, chunk| {
        Box::pin(async move {
            match &p.warehouse {
                Some(w) => w.stock(&chunk).await.map_err(|e| e.to_string()),
                None => Err("WAREHOUSE_API_URL is not set".to_owned()),
            }
        })
    });
    let (payment, shipping, warehouse) = futures_util::join!(payment, shipping, warehouse);
    tracing::debug!("refresh batch: partners answered");

    let mut tallies: HashMap<Partner, Tally> = HashMap::new();
    let mut count = |partner: Partner, ok: bool| {
        let t = tallies.entry(partner).or_default();
        if ok {
            t.ok += 1
        } else {
            t.failed += 1
        }
    };
    let payment: HashMap<Uuid, Result<String, String>> =
        payment_ids.into_iter().zip(payment).collect();
    let shipping: HashMap<Uuid, Result<crate::partners::shipping::Shipment, String>> =
        shipping_ids.into_iter().zip(shipping).collect();
    let mut stock: HashMap<String, Option<i64>> = HashMap::new();
    let mut warehouse_ok = true;
    for r in warehouse {
        match r {
            Ok(items) => {
                count(Partner::Warehouse, true);
                stock.extend(items.into_iter().map(|s| (s.sku, s.available)));
            }
            Err(_) => {
                count(Partner::Warehouse, false);
                warehouse_ok = false;
            }
        }
    }

    let mut entries = Vec::with_capacity(orders.len());
    let mut progress = Vec::new();
    for o in &orders {
        let id = o.order.id;
        let prev = previous.get(&id);
        let mut pay = prev
            .map(|p| p.payment.clone())
            .unwrap_or_else(|| PaymentState {
                status: o.order.payment_status.clone(),
                ..PaymentState::default()
            });
        match payment.get(&id) {
            Some(Ok(status)) => {
                count(Partner::Payment, true);
                pay = PaymentState {
                    status: Some(status.clone()),
                    checked_at: Some(now),
                    ok: true,
                };
            }
            Some(Err(_)) => {
                count(Partner::Payment, false);
                pay.ok = false;
            }
            // No intent yet: nothing to ask, and nothing stale.
            None => {
                pay.checked_at = Some(now);
                pay.ok = true;
            }
        }
        let mut ship = prev
            .map(|p| p.shipping.clone())
            .unwrap_or_else(|| ShippingState {
                tracking_number: o.order.tracking_number.clone(),
                ..ShippingState::default()
            });
        match shipping.get(&id) {
            Some(Ok(s)) => {
                count(Partner::Shipping, true);
                ship = ShippingState {
                    status: s.status.clone(),
                    tracking_number: s.tracking_number.clone().or(ship.tracking_number),
                    eta: s.eta.clone(),
                    checked_at: Some(now),
                    ok: true,
                };
                if let Some(st) = s.status.as_deref() {
                    progress.push((id, st.to_owned()));
                }
            }
            Some(Err(_)) => {
                count(Partner::Shipping, false);
                ship.ok = false;
            }
            // No shipment yet: nothing to ask, and nothing stale.
            None => {
                ship.checked_at = Some(now);
                ship.ok = true;
            }
        }
        let mut ware = prev.map(|p| p.warehouse.clone()).unwrap_or_default();
        let order_skus: Vec<&String> = o.items.iter().map(|i| &i.sku).collect();
        if warehouse_ok && !order_skus.is_empty() {
            ware = WarehouseState {
                items: order_skus
                    .iter()
                    .map(|s| StockItem {
                        sku: (*s).clone(),
                        available: stock.get(*s).copied().flatten(),
                    })
                    .collect(),
                checked_at: Some(now),
                ok: true,
            };
        } else if !warehouse_ok {
            ware.ok = false;
        }
        entries.push(BoardEntry {
            id,
            status: o.order.status.clone(),
            total_cents: o.order.total_cents,
            currency: o.order.currency.clone(),
            created_at: o.order.created_at,
            customer_name: o.order.customer_name.clone(),
            delivery_status: o.order.delivery_status.clone(),
            delivery_outcome_unknown: o.order.delivery_outcome_unknown,
            attention: o.order.attention.as_deref().and_then(|a| a.parse().ok()),
            payment: pay,
            shipping: ship,
            warehouse: ware,
        });
    }

    // Shipping progress → the order's status in PostgreSQL.
    if !progress.is_empty() {
        let moved = db::unit(&ctx.pool, move |c| {
            orders::record_shipping_progress(c, &progress)
        })
        .await?;
        for e in entries.iter_mut() {
            if let Some(status) = moved.get(&e.id) {
                e.status = status.clone();
            }
        }
    }
    for (partner, t) in &tallies {
        let open = ctx.breakers.record(*partner, t.ok, t.failed);
        if let Err(e) =
            board::record_partner(&mut conn, &prefix, *partner, t.ok, t.failed, open).await
        {
            tracing::debug!(error = %e, "partner health not recorded");
        }
    }
    board::write_batch(&mut conn, &prefix, job.run, &entries).await?;
    if let Some(end) = board::finish_batch(&mut conn, &prefix, job.run).await? {
        tracing::info!(
            refresh.orders = end.summary.orders,
            refresh.duration_ms = end.summary.duration_ms,
            "refresh finished"
        );
        return follow_up(&ctx, end).await;
    }
    Ok(())
}

/// Starts the run asked for while `end`'s run was in progress, if any.
async fn follow_up(ctx: &JobContext, end: board::RunEnd) -> Result<(), BoxDynError> {
    if end.again {
        let plan = RefreshPlan {
            run: Utc::now().timestamp_millis(),
            on_demand: true,
        };
        let id = plan.task_id();
        ctx.queue
            .push_with(plan, id, std::time::Duration::ZERO)
            .await?;
    }
    Ok(())
}
