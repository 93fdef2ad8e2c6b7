//! Every job kind the workers run, by queue suffix. The Redis vacuum and
//! the queue statistics cover exactly these, so a worker refuses to start
//! a job whose kind is missing here (its queue would never be vacuumed),
//! and every test that starts a worker would fail.

use crate::board::{RefreshBatch, RefreshPlan};
use crate::jobs::JobKind;
use crate::orders::{Deliver, ReconcilePayment, Refund};
use crate::webhooks::WebhookDrain;

/// The job kinds, with their queue suffixes.
pub const KINDS: [&str; 6] = [
    Deliver::QUEUE,
    ReconcilePayment::QUEUE,
    Refund::QUEUE,
    RefreshPlan::QUEUE,
    RefreshBatch::QUEUE,
    WebhookDrain::QUEUE,
];

/// Panics if `kind` is not listed: a programming error, caught by the
/// first test that starts a worker.
pub(super) fn check_listed(kind: &str) {
    assert!(
        KINDS.contains(&kind),
        "job kind `{kind}` is run but not listed in worker::KINDS: its queue would never be vacuumed"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_is_listed_once() {
        let mut kinds = KINDS.to_vec();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds.len(), KINDS.len());
    }

    #[test]
    #[should_panic(expected = "not listed")]
    fn a_kind_not_listed_is_refused() {
        check_listed("not_a_kind");
    }
}
