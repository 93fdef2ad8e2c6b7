//! Owed work: the transactional outbox (see the first migration's comment).
//! Rows are written by the statement that makes work owed
//! (`orders::settle_payment` owes `deliver`) and deleted by the job that
//! completes it; the worker's sweeper re-pushes rows that linger.

/// Kinds of owed work; the column's CHECK lists the same values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwedKind {
    Deliver,
    ReconcilePayment,
    Refund,
}

impl OwedKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OwedKind::Deliver => "deliver",
            OwedKind::ReconcilePayment => "reconcile_payment",
            OwedKind::Refund => "refund",
        }
    }
}
