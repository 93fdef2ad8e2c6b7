//! Webhooks: signed notifications of order events to the storefront.
//!
//! ```text
//! a change of an order ──(same statement: the events trigger)──▶ order_events
//!        │ and webhook_log, in commit order, when an enabled endpoint
//!        │ subscribes to its type
//!        ▼
//! fanout (every worker, every 100 ms): endpoints with entries past their
//!        │ cursor and no drainer ──▶ push WebhookDrain{endpoint} (a wake-up)
//!        ▼
//! drain (apalis job): takes the endpoint's drain lease (one drainer per
//!   endpoint in the fleet), takes due retries and the log entries past
//!   its cursor, POSTs them signed, at most WEBHOOK_CONCURRENCY in flight;
//!   `recorder` writes each delivery's row once, with its answer, and moves
//!   the cursor; the event bodies come from `bodies`, rendered once for
//!   every endpoint
//! ```
//!
//! PostgreSQL is the truth: an event that commits is delivered even if
//! Redis is down then (the fan-out timer reads PostgreSQL and pushes a
//! lost wake-up again). A slow or dead endpoint holds only its own
//! drainer: other endpoints have theirs, and deliveries, purchases and the
//! refresh never wait for a webhook.

pub mod bodies;
pub mod client;
pub mod drain;
pub mod endpoint;
pub mod fanout;
pub mod guard;
pub mod recorder;
pub mod sealed;
pub mod signature;

use std::sync::Arc;

use uuid::Uuid;

pub use drain::WebhookDrain;

use crate::config::WebhookSettings;
use crate::db::DbPool;
use crate::jobs::JobQueue;
use crate::partners::executor::LocalExecutor;

/// What the webhook jobs share in a worker process.
#[derive(Clone)]
pub struct WebhookContext {
    pub pool: DbPool,
    pub queue: Arc<JobQueue>,
    /// The webhook client's own thread, apart from the partners'.
    pub sender: LocalExecutor<client::WebhookClient>,
    pub settings: WebhookSettings,
    /// How long a drainer's hold on its endpoint (the drain lease) lasts
    /// without renewal: longer than an attempt can take.
    pub lease: std::time::Duration,
    /// Event bodies rendered by one drainer, for the others.
    pub bodies: Arc<bodies::Bodies>,
    /// Turns true when the process stops: drainers give their leases back.
    pub stop: tokio::sync::watch::Receiver<bool>,
    /// The job metrics every job shell reports to.
    pub metrics: crate::metrics::JobMetrics,
    /// The keys webhook secrets are sealed with.
    pub secrets: std::sync::Arc<sealed::SecretsKeys>,
}

impl WebhookContext {
    pub fn stopping(&self) -> bool {
        *self.stop.borrow()
    }
}

/// The public id of an endpoint.
pub fn endpoint_id(id: Uuid) -> String {
    format!("we_{}", id.simple())
}

/// The endpoint a `we_…` id names, if it is one.
pub fn parse_endpoint_id(raw: &str) -> Option<Uuid> {
    Uuid::try_parse(raw.strip_prefix("we_")?).ok()
}
