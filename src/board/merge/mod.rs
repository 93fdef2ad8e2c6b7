//! The pure heart of a refresh batch: which sources of an order are due
//! ([`asks`]), and, from its previous entry and what the partners answered,
//! its new entry, the next time each source is due, and the forward move its
//! shipping progress calls for ([`merge`]). No I/O, so every rule is unit
//! tested here.
//!
//! Rules: a source that answered replaces what the board knew (`ok`, checked
//! now) and is scheduled by the state it reported; a source that failed
//! keeps its last known value, is marked not ok (stale on the board) and is
//! due again at the next run; a source not asked this time (not due, or over
//! the call budget) is left as it was; a source with nothing to ask (no
//! intent yet, a settled payment, no shipment yet) shows what PostgreSQL
//! knows and is fresh by definition.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{BoardEntry, Due, PaymentState, ShippingState, StockItem, WarehouseState};
use crate::db::models::OrderWithItems;
use crate::db::shipments::Advance;
use crate::domain::{DeliveryStatus, OrderStatus};
use crate::partners::shipping::Shipment;

/// How soon each source is asked again, by the state it last reported
/// (docs/ARCHITECTURE.md lists the defaults). An answer that changed
/// nothing doubles the shipping interval, up to `2^max_backoff` times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// An unsettled payment (the order is `payment_pending`).
    pub payment_pending: Duration,
    /// A shipment whose label was just created.
    pub label_created: Duration,
    pub in_transit: Duration,
    pub out_for_delivery: Duration,
    /// Any other shipping status (an exception, one we do not know).
    pub other_shipping: Duration,
    /// The stock of the order's skus.
    pub stock: Duration,
    pub max_backoff: u32,
}

impl Schedule {
    /// The defaults, with unsettled payments asked every run of `interval`.
    pub fn every_run(interval: Duration) -> Self {
        Schedule {
            payment_pending: interval,
            label_created: Duration::from_secs(30),
            in_transit: Duration::from_secs(300),
            out_for_delivery: Duration::from_secs(120),
            other_shipping: Duration::from_secs(60),
            stock: Duration::from_secs(300),
            max_backoff: 3,
        }
    }

    /// The base interval of a shipping status; `None` for `delivered`
    /// (never asked again).
    fn shipping(&self, status: Option<&str>) -> Option<Duration> {
        match status {
            Some("delivered") => None,
            Some("label_created") => Some(self.label_created),
            Some("in_transit") => Some(self.in_transit),
            Some("out_for_delivery") => Some(self.out_for_delivery),
            _ => Some(self.other_shipping),
        }
    }
}

/// Which sources of an order a run asks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Asks {
    pub payment: bool,
    pub shipping: bool,
    pub warehouse: bool,
}

/// The sources of `o` that are due at `now` (all of them when `force`,
/// or when the board has no entry for it yet). Unforced, a payment is
/// asked only while unsettled.
pub fn asks(
    o: &OrderWithItems,
    prev: Option<&BoardEntry>,
    now: DateTime<Utc>,
    force: bool,
) -> Asks {
    let due = |d: Option<&Due>| force || d.is_none_or(|d| d.next_at.is_some_and(|t| t <= now));
    Asks {
        payment: o.order.payment_intent_id.is_some()
            && (force
                || (o.order.status == OrderStatus::PaymentPending
                    && due(prev.map(|p| &p.payment.due)))),
        shipping: o.order.shipment_id.is_some() && due(prev.map(|p| &p.shipping.due)),
        warehouse: !o.items.is_empty() && due(prev.map(|p| &p.warehouse.due)),
    }
}

/// When a source that has something to ask is next due, after answering.
fn due_in(every: Option<Duration>, unchanged: u32, now: DateTime<Utc>) -> Due {
    let every_secs = every.map(|d| d.as_secs().max(1));
    Due {
        next_at: every_secs.map(|s| now + chrono::Duration::seconds(s as i64)),
        every_secs,
        unchanged,
    }
}

/// Due at the next run: nothing to ask yet, or the last call failed.
fn due_now(now: DateTime<Utc>, every_secs: Option<u64>) -> Due {
    Due {
        next_at: Some(now),
        every_secs,
        unchanged: 0,
    }
}

/// What the partners answered for one batch.
#[derive(Debug, Default)]
pub struct Answers {
    /// The gateway status of each asked order's intent, by order.
    pub payment: HashMap<Uuid, Result<String, String>>,
    /// Each asked order's shipment, by order.
    pub shipping: HashMap<Uuid, Result<Shipment, String>>,
    /// Stock by sku, from the warehouse calls that succeeded.
    pub stock: HashMap<String, Option<i64>>,
    /// Whether every warehouse call of the batch succeeded.
    pub warehouse_ok: bool,
    /// The orders whose stock was asked.
    pub stock_asked: std::collections::HashSet<Uuid>,
}

/// An order's new board entry, and the move its shipping progress calls for.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    pub entry: BoardEntry,
    pub advance: Option<Advance>,
}

/// Merges one order.
pub fn merge(
    o: &OrderWithItems,
    prev: Option<&BoardEntry>,
    answers: &Answers,
    schedule: &Schedule,
    now: DateTime<Utc>,
) -> Merged {
    let id = o.order.id;
    let shipping = answers.shipping.get(&id);
    let advance = match shipping {
        Some(Ok(s)) => s.status.as_deref().and_then(progress),
        _ => None,
    };
    let entry = BoardEntry {
        id,
        status: o.order.status,
        total_cents: o.order.total_cents,
        currency: o.order.currency.clone(),
        created_at: o.order.created_at,
        customer_name: o.order.customer_name.clone(),
        delivery_status: o.order.delivery_status,
        delivery_outcome_unknown: o.order.delivery_outcome_unknown,
        attention: o.order.attention,
        status_since: Some(o.order.status_since),
        payment: payment(o, prev, answers.payment.get(&id), schedule, now),
        shipping: shipping_state(o, prev, shipping, schedule, now),
        warehouse: warehouse(o, prev, answers, schedule, now),
    };
    Merged { entry, advance }
}

fn payment(
    o: &OrderWithItems,
    prev: Option<&BoardEntry>,
    answer: Option<&Result<String, String>>,
    schedule: &Schedule,
    now: DateTime<Utc>,
) -> PaymentState {
    let known = prev.map(|p| p.payment.clone());
    let pending = o.order.status == OrderStatus::PaymentPending;
    match answer {
        Some(Ok(status)) => PaymentState {
            status: Some(status.clone()),
            checked_at: Some(now),
            ok: true,
            due: due_in(pending.then_some(schedule.payment_pending), 0, now),
        },
        Some(Err(_)) => {
            let known = known.unwrap_or_default();
            PaymentState {
                ok: false,
                due: due_now(now, known.due.every_secs),
                ..known
            }
        }
        // Not asked, and still unsettled: left as it was until it is due.
        None if pending && o.order.payment_intent_id.is_some() => {
            known.unwrap_or_else(|| PaymentState {
                status: o.order.payment_status.clone(),
                ok: true,
                due: due_now(now, None),
                ..PaymentState::default()
            })
        }
        // No intent yet, or settled: PostgreSQL knows; nothing to ask.
        None => PaymentState {
            status: o.order.payment_status.clone(),
            checked_at: Some(now),
            ok: true,
            due: due_now(now, None),
        },
    }
}

fn shipping_state(
    o: &OrderWithItems,
    prev: Option<&BoardEntry>,
    answer: Option<&Result<Shipment, String>>,
    schedule: &Schedule,
    now: DateTime<Utc>,
) -> ShippingState {
    let known = prev
        .map(|p| p.shipping.clone())
        .unwrap_or_else(|| ShippingState {
            tracking_number: o.order.tracking_number.clone(),
            ok: true,
            due: due_now(now, None),
            ..ShippingState::default()
        });
    match answer {
        Some(Ok(s)) => {
            let unchanged = if known.checked_at.is_some() && known.status == s.status {
                (known.due.unchanged + 1).min(schedule.max_backoff)
            } else {
                0
            };
            let every = schedule
                .shipping(s.status.as_deref())
                .map(|d| d * (1 << unchanged));
            ShippingState {
                status: s.status.clone(),
                tracking_number: s.tracking_number.clone().or(known.tracking_number),
                eta: s.eta.clone(),
                checked_at: Some(now),
                ok: true,
                due: due_in(every, unchanged, now),
            }
        }
        Some(Err(_)) => ShippingState {
            ok: false,
            due: due_now(now, known.due.every_secs),
            ..known
        },
        // Not asked: left as it was until it is due.
        None if o.order.shipment_id.is_some() => known,
        // No shipment yet: nothing to ask, and nothing stale.
        None => ShippingState {
            checked_at: Some(now),
            ok: true,
            due: due_now(now, None),
            ..known
        },
    }
}

fn warehouse(
    o: &OrderWithItems,
    prev: Option<&BoardEntry>,
    answers: &Answers,
    schedule: &Schedule,
    now: DateTime<Utc>,
) -> WarehouseState {
    let known = prev.map(|p| p.warehouse.clone()).unwrap_or_default();
    if !answers.stock_asked.contains(&o.order.id) || o.items.is_empty() {
        return known;
    }
    if !answers.warehouse_ok {
        return WarehouseState {
            ok: false,
            due: due_now(now, known.due.every_secs),
            ..known
        };
    }
    WarehouseState {
        items: o
            .items
            .iter()
            .map(|i| StockItem {
                sku: i.sku.clone(),
                available: answers.stock.get(&i.sku).copied().flatten(),
            })
            .collect(),
        checked_at: Some(now),
        ok: true,
        due: due_in(Some(schedule.stock), 0, now),
    }
}

/// What a shipping partner status means for the order: `in_transit` /
/// `out_for_delivery` → `shipped`, `delivered` → `delivered`, each only
/// forward. Other statuses (`label_created`, an exception) move nothing.
pub fn progress(partner_status: &str) -> Option<Advance> {
    match partner_status {
        "in_transit" | "out_for_delivery" => Some(Advance {
            to: OrderStatus::Shipped,
            delivery: DeliveryStatus::InTransit,
            from: &[OrderStatus::Fulfilling],
        }),
        "delivered" => Some(Advance {
            to: OrderStatus::Delivered,
            delivery: DeliveryStatus::Delivered,
            from: &[OrderStatus::Fulfilling, OrderStatus::Shipped],
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
