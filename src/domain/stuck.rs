//! Stuck orders: an order that stays too long in a status it should leave
//! (`payment_pending`, `paid` without a shipment, `fulfilling`). The rule is
//! pure; PostgreSQL finds them by `(status, status_since)` (an index), and
//! views mark them with [`StuckRules::judge`].

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::OrderStatus;

/// How long an order may stay in each status that should move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StuckRules {
    pub payment_pending: Duration,
    pub paid: Duration,
    pub fulfilling: Duration,
    /// A `payment_pending` order whose customer must authenticate (3-D
    /// Secure) waits up to `PAYMENT_ACTION_TIMEOUT_SECS`, then its intent is
    /// cancelled: it is stuck only past that deadline.
    pub awaiting_action: Duration,
}

impl Default for StuckRules {
    fn default() -> Self {
        StuckRules {
            payment_pending: Duration::from_secs(900),
            paid: Duration::from_secs(600),
            fulfilling: Duration::from_secs(172_800),
            awaiting_action: Duration::from_secs(1800),
        }
    }
}

/// Why and since when an order is stuck.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuck {
    /// When the order overstayed (entered its status + the limit).
    pub since: DateTime<Utc>,
    pub reason: String,
}

impl StuckRules {
    /// The statuses an order can be stuck in, each with its limit.
    pub fn limits(&self) -> [(OrderStatus, Duration); 3] {
        [
            (OrderStatus::PaymentPending, self.payment_pending),
            (OrderStatus::Paid, self.paid),
            (OrderStatus::Fulfilling, self.fulfilling),
        ]
    }

    pub fn limit(&self, status: OrderStatus) -> Option<Duration> {
        self.limits()
            .into_iter()
            .find(|(s, _)| *s == status)
            .map(|(_, d)| d)
    }

    /// The rule as PostgreSQL asks it: per status an order can be stuck
    /// in, it is stuck at `now` if it entered that status before the
    /// instant given.
    pub fn cutoffs(&self, now: DateTime<Utc>) -> Vec<(OrderStatus, DateTime<Utc>)> {
        self.limits()
            .into_iter()
            .filter_map(|(s, d)| Some((s, now - chrono::Duration::from_std(d).ok()?)))
            .collect()
    }

    /// The instant before which a `payment_pending` order awaiting its
    /// customer's authentication is stuck at `now`.
    pub fn awaiting_action_cutoff(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        Some(now - chrono::Duration::from_std(self.awaiting_action).ok()?)
    }

    /// Whether an order in `status` since `since` is stuck at `now`;
    /// `awaiting_action`: its payment waits for the customer (3-D Secure).
    pub fn judge(
        &self,
        status: OrderStatus,
        since: DateTime<Utc>,
        awaiting_action: bool,
        now: DateTime<Utc>,
    ) -> Option<Stuck> {
        if awaiting_action && status == OrderStatus::PaymentPending {
            let over = since + chrono::Duration::from_std(self.awaiting_action).ok()?;
            return (over < now).then(|| Stuck {
                since: over,
                reason: format!(
                    "3-D Secure not completed within its {} s deadline, and its intent not cancelled",
                    self.awaiting_action.as_secs()
                ),
            });
        }
        let limit = self.limit(status)?;
        let over = since + chrono::Duration::from_std(limit).ok()?;
        // Strictly past, as `cutoffs` asks PostgreSQL (`status_since <`).
        if over >= now {
            return None;
        }
        Some(Stuck {
            since: over,
            reason: reason(status, limit),
        })
    }
}

fn reason(status: OrderStatus, limit: Duration) -> String {
    let what = match status {
        OrderStatus::PaymentPending => "payment not settled",
        OrderStatus::Paid => "paid but no shipment created",
        _ => "shipment not moving",
    };
    format!("{what} for more than {} s", limit.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_is_stuck_only_past_its_status_limit() {
        let rules = StuckRules {
            payment_pending: Duration::from_secs(10),
            paid: Duration::from_secs(20),
            fulfilling: Duration::from_secs(30),
            awaiting_action: Duration::from_secs(40),
        };
        let t0 = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        let at = |s: i64| t0 + chrono::Duration::seconds(s);
        assert_eq!(rules.judge(OrderStatus::Paid, t0, false, at(19)), None);
        // At the limit itself: not yet, in Rust as in the SQL cutoff.
        assert_eq!(rules.judge(OrderStatus::Paid, t0, false, at(20)), None);
        assert!(rules.cutoffs(at(20)).contains(&(OrderStatus::Paid, t0)));
        let stuck = rules.judge(OrderStatus::Paid, t0, false, at(21)).unwrap();
        assert_eq!(stuck.since, at(20));
        assert!(stuck.reason.contains("no shipment"), "{}", stuck.reason);
        assert!(rules
            .judge(OrderStatus::PaymentPending, t0, false, at(11))
            .is_some());
        assert!(rules
            .judge(OrderStatus::Fulfilling, t0, false, at(29))
            .is_none());
        for settled in [
            OrderStatus::Shipped,
            OrderStatus::Delivered,
            OrderStatus::Cancelled,
            OrderStatus::PaymentFailed,
        ] {
            assert_eq!(rules.judge(settled, t0, false, at(1_000_000)), None);
        }
    }

    #[test]
    fn an_order_awaiting_3d_secure_is_stuck_only_past_the_action_deadline() {
        let rules = StuckRules {
            payment_pending: Duration::from_secs(10),
            awaiting_action: Duration::from_secs(40),
            ..StuckRules::default()
        };
        let t0 = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        let at = |s: i64| t0 + chrono::Duration::seconds(s);
        let pending = OrderStatus::PaymentPending;
        assert!(rules.judge(pending, t0, true, at(39)).is_none());
        let stuck = rules.judge(pending, t0, true, at(41)).unwrap();
        assert_eq!(stuck.since, at(40));
        assert!(stuck.reason.contains("3-D Secure"), "{}", stuck.reason);
        assert!(rules.judge(pending, t0, false, at(11)).is_some());
        assert_eq!(rules.awaiting_action_cutoff(at(40)), Some(t0));
    }
}
