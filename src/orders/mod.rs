//! The order room: an order's life from the purchase to its shipment or
//! refund. `purchase` is `POST /api/v1/purchase` (validate → record →
//! charge → mark paid → owe delivery); `actions` are what ops do to an
//! order (cancel, retry delivery, reconcile, in bulk too); `jobs` are the order's jobs
//! (deliver, reconcile a payment, refund), run by the workers.
//!
//! The order's reads (`GET /api/v1/orders…`) are in `http::orders`, its
//! SQL in `db::orders`, `db::shipments` (shipments) and `db::idempotency`.

pub mod actions;
pub mod jobs;
pub mod purchase;

pub use jobs::{Deliver, ReconcilePayment, Refund};
