//! The payment gateway's signed events: what the gateway tells orderflow
//! about money without being asked (a payment settled, a refund that
//! failed later, a dispute).
//!
//! ```text
//! gateway ── POST /api/v1/gateway/webhooks (http/gateway.rs) ──▶ verify
//!   (signature, no database work when it fails) ──▶ one INSERT … ON
//!   CONFLICT (id) DO NOTHING into gateway_events, status `pending`: the row
//!   is the event and the work it owes; the same id again is a no-op
//! ```
//!
//! Then a worker takes the pending row ([`process`]): it reads the object
//! the event is about from the gateway again ([`fact`]), and, in one
//! transaction under the order's row lock, applies what moves the order
//! forward and marks the event processed. An event for an order not yet
//! recorded waits and is tried again, then is kept as `unmatched`.
//!
//! [`verify`] checks `Stripe-Signature` against every configured secret
//! (`GATEWAY_WEBHOOK_SECRETS`), [`event`] reads the few fields the inbox
//! keeps, [`kind`] names the types acted on, and `db/gateway_events.rs`
//! stores, takes and lists them.

pub mod event;
pub mod fact;
pub mod kind;
pub mod process;
pub mod verify;

pub use crate::db::gateway_events::GatewayEventStatus;

/// How long finished events stay in the inbox (and dedupe resends).
pub const RETENTION: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

/// The largest event body the inbox reads (the gateway's are a few KiB).
pub const BODY_LIMIT: usize = 1 << 20;
/// How far a signature's `t` may be from now, in seconds.
pub const TOLERANCE_SECS: i64 = 300;
