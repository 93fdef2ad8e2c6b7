//! The ops board, end to end: what workers learn from the partners about
//! every active order, kept in Redis, and read by the dashboard without
//! calling any partner. (The board, its refresh and the dashboard's reads
//! are one feature; this module is its one room.)
//!
//! ```text
//!  worker processes                                   serve processes
//!  ────────────────                                   ───────────────
//!  schedule ── once per interval, cluster-wide ─┐
//!  POST /api/v1/dashboard/refresh ──────────────┤
//!                                               ▼
//!  plan     claims the run slot (store), lists active orders (PostgreSQL),
//!           pushes one RefreshBatch per 1,000 orders
//!                                               ▼
//!  batch    load:    the orders (PostgreSQL) and their last entries (Redis)
//!           fetch:   payment, shipping, warehouse, concurrently, bounded
//!                    per partner, behind a circuit breaker (fetch, health)
//!           merge:   pure: entry per order + forward moves (merge)
//!           persist: moves → PostgreSQL; health, entries → Redis; the
//!                    run's last batch swaps the new index in (store)
//!                                               ▼
//!  Redis: board.order.{id}, board.index[.{status}], board.events ──▶ cache:
//!           a watcher per process sees board.events move, drops the
//!           rendered boards and wakes the event streams; reads are served
//!           from a 250 ms micro-cache of rendered JSON
//! ```
//!
//! - [`store`]: the Redis keys, the run slot and its lease, the index swap.
//! - [`health`]: partner health windows and the per-process breakers.
//! - [`schedule`]: the cluster-wide timer; [`plan`] and [`batch`]: the two
//!   job kinds of a run; [`fetch`]: the partner fan-out; [`merge`]: the
//!   pure per-order merge.
//! - [`cache`]: the serve-side render cache and watcher.

pub mod batch;
pub mod cache;
pub mod fetch;
pub mod health;
pub mod merge;
pub mod plan;
pub mod schedule;
pub mod store;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use batch::RefreshBatch;
pub use plan::RefreshPlan;

use crate::domain::{Attention, DeliveryStatus, OrderStatus};
use crate::jobs::JobContext;

/// When a source of an entry is asked next (see [`merge::Schedule`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Due {
    /// When the source is next due; `None`: never again (a settled
    /// payment, a delivered parcel) until a forced refresh.
    pub next_at: Option<DateTime<Utc>>,
    /// The interval the source is polled at now; `stale` is judged against
    /// it. `None` with `next_at`: never polled, so never stale by age.
    pub every_secs: Option<u64>,
    /// Answers in a row that changed nothing (they back the interval off).
    #[serde(default)]
    pub unchanged: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PaymentState {
    pub status: Option<String>,
    pub checked_at: Option<DateTime<Utc>>,
    /// Whether the last refresh of this source succeeded.
    pub ok: bool,
    #[serde(default)]
    pub due: Due,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShippingState {
    pub status: Option<String>,
    pub tracking_number: Option<String>,
    pub eta: Option<String>,
    pub checked_at: Option<DateTime<Utc>>,
    pub ok: bool,
    #[serde(default)]
    pub due: Due,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StockItem {
    pub sku: String,
    pub available: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WarehouseState {
    pub items: Vec<StockItem>,
    pub checked_at: Option<DateTime<Utc>>,
    pub ok: bool,
    #[serde(default)]
    pub due: Due,
}

/// What the board knows about one order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BoardEntry {
    pub id: Uuid,
    pub status: OrderStatus,
    pub total_cents: i64,
    pub currency: String,
    pub created_at: DateTime<Utc>,
    pub customer_name: String,
    /// The order's delivery status (`failed` offers a retry on the page).
    pub delivery_status: DeliveryStatus,
    /// A delivery attempt got no answer: the shipment may exist, so the
    /// page offers no Cancel.
    #[serde(default)]
    pub delivery_outcome_unknown: bool,
    /// Why ops must look at the order, if they must.
    #[serde(default)]
    pub attention: Option<Attention>,
    /// When the order entered its status (for the stuck mark).
    #[serde(default)]
    pub status_since: Option<DateTime<Utc>>,
    pub payment: PaymentState,
    pub shipping: ShippingState,
    pub warehouse: WarehouseState,
}

/// What the refresh's jobs get: the worker's job context (pool, queue,
/// partner executor) and the refresh's own partner bounds.
pub struct RefreshContext {
    pub jobs: Arc<JobContext>,
    pub bounds: Arc<Bounds>,
}

/// The per-process bounds on refresh calls: concurrency, breakers, the
/// call budget, and the polling schedule.
pub struct Bounds {
    pub breakers: health::Breakers,
    pub limits: fetch::Limits,
    pub budget: fetch::Budget,
    pub schedule: merge::Schedule,
}
