//! The order's jobs: each one does the outbox work it is named for, for
//! one order, and re-reads the order before it acts.

pub mod deliver;
pub mod reconcile;
pub mod refund;

pub use deliver::Deliver;
pub use reconcile::ReconcilePayment;
pub use refund::Refund;
