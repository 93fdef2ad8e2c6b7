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
use crate::db::delivery::Advance;
use crate::db::models::OrderWithItems;
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
mod tests {
    use super::*;
    use crate::db::models::{OrderItemRow, OrderRow};

    fn order(status: OrderStatus, intent: Option<&str>, shipment: Option<&str>) -> OrderWithItems {
        let now = Utc::now();
        let id = Uuid::new_v4();
        OrderWithItems {
            order: OrderRow {
                id,
                status,
                customer_email: "a@example.com".into(),
                customer_name: "Ada".into(),
                currency: "eur".into(),
                total_cents: 1200,
                shipping_address: serde_json::json!({}),
                payment_method: "pm_card_visa".into(),
                payment_intent_id: intent.map(str::to_owned),
                payment_status: Some("succeeded".into()),
                decline_code: None,
                delivery_status: DeliveryStatus::Requested,
                shipment_id: shipment.map(str::to_owned),
                tracking_number: Some("T-1".into()),
                delivery_attempts: 1,
                delivery_last_error: None,
                created_at: now,
                updated_at: now,
                delivery_outcome_unknown: false,
                attention: None,
                attention_since: None,
            },
            items: vec![OrderItemRow {
                order_id: id,
                line_no: 0,
                sku: "MUG".into(),
                name: "Mug".into(),
                quantity: 1,
                unit_price_cents: 1200,
                line_total_cents: 1200,
            }],
        }
    }

    fn fulfilling() -> OrderWithItems {
        order(OrderStatus::Fulfilling, Some("pi_1"), Some("shp_1"))
    }

    fn shipment(status: &str) -> Shipment {
        Shipment {
            id: "shp_1".into(),
            status: Some(status.into()),
            tracking_number: None,
            eta: Some("2026-12-03".into()),
        }
    }

    fn answers(
        o: &OrderWithItems,
        pay: Option<Result<&str, &str>>,
        ship: Option<Result<Shipment, &str>>,
    ) -> Answers {
        let id = o.order.id;
        Answers {
            payment: pay
                .map(|p| (id, p.map(str::to_owned).map_err(str::to_owned)))
                .into_iter()
                .collect(),
            shipping: ship
                .map(|s| (id, s.map_err(str::to_owned)))
                .into_iter()
                .collect(),
            stock: [("MUG".to_owned(), Some(7))].into(),
            warehouse_ok: true,
            stock_asked: [id].into(),
        }
    }

    const SCHEDULE: fn() -> Schedule = || Schedule::every_run(Duration::from_secs(15));

    fn at(now: DateTime<Utc>, secs: i64) -> Option<DateTime<Utc>> {
        Some(now + chrono::Duration::seconds(secs))
    }

    #[test]
    fn answers_replace_what_the_board_knew_and_schedule_the_next_ask_by_state() {
        let o = fulfilling();
        let now = Utc::now();
        let m = merge(
            &o,
            None,
            &answers(&o, None, Some(Ok(shipment("label_created")))),
            &SCHEDULE(),
            now,
        );
        assert!(m.entry.payment.ok && m.entry.shipping.ok && m.entry.warehouse.ok);
        assert_eq!(m.entry.shipping.checked_at, Some(now));
        // The partner sent no tracking number: the order's stays.
        assert_eq!(m.entry.shipping.tracking_number.as_deref(), Some("T-1"));
        assert_eq!(
            m.entry.warehouse.items,
            vec![StockItem {
                sku: "MUG".into(),
                available: Some(7)
            }]
        );
        assert_eq!(m.advance, None, "a label moves nothing");
        assert_eq!(
            m.entry.shipping.due.next_at,
            at(now, 30),
            "a new label is asked again soon"
        );
        assert_eq!(m.entry.warehouse.due.next_at, at(now, 300));
        let transit = merge(
            &o,
            Some(&m.entry),
            &answers(&o, None, Some(Ok(shipment("in_transit")))),
            &SCHEDULE(),
            now,
        );
        assert_eq!(
            transit.entry.shipping.due.next_at,
            at(now, 300),
            "in transit: every few minutes"
        );
        assert_eq!(transit.entry.shipping.due.unchanged, 0);
        let delivered = merge(
            &o,
            Some(&transit.entry),
            &answers(&o, None, Some(Ok(shipment("delivered")))),
            &SCHEDULE(),
            now,
        );
        assert_eq!(
            delivered.entry.shipping.due.next_at, None,
            "delivered: never again"
        );
    }

    #[test]
    fn unchanged_answers_back_off_up_to_a_cap() {
        let o = fulfilling();
        let now = Utc::now();
        let mut e = merge(
            &o,
            None,
            &answers(&o, None, Some(Ok(shipment("in_transit")))),
            &SCHEDULE(),
            now,
        )
        .entry;
        let mut intervals = vec![e.shipping.due.every_secs];
        for _ in 0..5 {
            e = merge(
                &o,
                Some(&e),
                &answers(&o, None, Some(Ok(shipment("in_transit")))),
                &SCHEDULE(),
                now,
            )
            .entry;
            intervals.push(e.shipping.due.every_secs);
        }
        assert_eq!(intervals, [300, 600, 1200, 2400, 2400, 2400].map(Some));
        let moved = merge(
            &o,
            Some(&e),
            &answers(&o, None, Some(Ok(shipment("out_for_delivery")))),
            &SCHEDULE(),
            now,
        );
        assert_eq!(
            moved.entry.shipping.due.every_secs,
            Some(120),
            "a change resets the back-off"
        );
    }

    #[test]
    fn a_payment_is_asked_only_while_unsettled() {
        let now = Utc::now();
        let pending = order(OrderStatus::PaymentPending, Some("pi_1"), None);
        assert!(asks(&pending, None, now, false).payment);
        let m = merge(
            &pending,
            None,
            &answers(&pending, Some(Ok("processing")), None),
            &SCHEDULE(),
            now,
        );
        assert_eq!(
            m.entry.payment.due.next_at,
            at(now, 15),
            "unsettled: every run"
        );
        assert!(
            !asks(&pending, Some(&m.entry), now, false).payment,
            "not due yet"
        );
        assert!(
            asks(
                &pending,
                Some(&m.entry),
                now + chrono::Duration::seconds(15),
                false
            )
            .payment
        );
        let paid = fulfilling();
        assert!(
            !asks(&paid, None, now, false).payment,
            "settled: PostgreSQL knows"
        );
        let m = merge(&paid, None, &Answers::default(), &SCHEDULE(), now);
        assert_eq!(m.entry.payment.status.as_deref(), Some("succeeded"));
        assert!(m.entry.payment.ok);
        assert_eq!(m.entry.payment.due.every_secs, None, "never stale by age");
        assert!(
            asks(&pending, Some(&m.entry), now, true).payment,
            "a forced refresh asks"
        );
        assert!(
            asks(&paid, Some(&m.entry), now, true).payment,
            "even about a settled one"
        );
    }

    #[test]
    fn only_due_sources_are_asked_and_the_rest_stay_as_they_were() {
        let o = fulfilling();
        let now = Utc::now();
        assert_eq!(
            asks(&o, None, now, false),
            Asks {
                payment: false,
                shipping: true,
                warehouse: true
            }
        );
        let first = merge(
            &o,
            None,
            &answers(&o, None, Some(Ok(shipment("in_transit")))),
            &SCHEDULE(),
            now,
        )
        .entry;
        let soon = now + chrono::Duration::seconds(60);
        assert_eq!(
            asks(&o, Some(&first), soon, false),
            Asks::default(),
            "nothing due a minute later"
        );
        let untouched = merge(
            &o,
            Some(&first),
            &Answers {
                warehouse_ok: true,
                ..Answers::default()
            },
            &SCHEDULE(),
            soon,
        )
        .entry;
        assert_eq!(untouched.shipping, first.shipping);
        assert_eq!(untouched.warehouse, first.warehouse);
        let later = now + chrono::Duration::seconds(301);
        assert_eq!(
            asks(&o, Some(&first), later, false),
            Asks {
                payment: false,
                shipping: true,
                warehouse: true
            }
        );
        assert_eq!(
            asks(&o, Some(&first), soon, true),
            Asks {
                payment: true,
                shipping: true,
                warehouse: true
            },
            "a forced refresh asks every source, a settled payment too"
        );
    }

    #[test]
    fn a_failed_source_keeps_its_last_value_is_marked_not_ok_and_is_due_again() {
        let o = fulfilling();
        let earlier = Utc::now() - chrono::Duration::seconds(30);
        let prev = merge(
            &o,
            None,
            &answers(&o, None, Some(Ok(shipment("in_transit")))),
            &SCHEDULE(),
            earlier,
        )
        .entry;
        let mut failing = answers(&o, None, Some(Err("503")));
        failing.warehouse_ok = false;
        let now = Utc::now();
        let m = merge(&o, Some(&prev), &failing, &SCHEDULE(), now);
        assert!(!m.entry.shipping.ok && !m.entry.warehouse.ok);
        assert_eq!(m.entry.shipping.status.as_deref(), Some("in_transit"));
        assert_eq!(m.entry.shipping.checked_at, Some(earlier));
        assert_eq!(
            m.entry.shipping.due.next_at,
            Some(now),
            "asked again at the next run"
        );
        assert_eq!(
            m.entry.shipping.due.every_secs,
            Some(300),
            "staleness keeps its interval"
        );
        assert_eq!(m.entry.warehouse.items, prev.warehouse.items);
        assert_eq!(m.advance, None, "no answer, no move");
    }

    #[test]
    fn nothing_to_ask_is_fresh_and_shows_the_orders_own_values() {
        let o = order(OrderStatus::Paid, None, None);
        let now = Utc::now();
        assert_eq!(
            asks(&o, None, now, false),
            Asks {
                payment: false,
                shipping: false,
                warehouse: true
            }
        );
        let m = merge(
            &o,
            None,
            &Answers {
                warehouse_ok: true,
                ..Answers::default()
            },
            &SCHEDULE(),
            now,
        );
        assert!(m.entry.payment.ok && m.entry.shipping.ok);
        assert_eq!(m.entry.payment.checked_at, Some(now));
        assert_eq!(m.entry.shipping.tracking_number.as_deref(), Some("T-1"));
        assert_eq!(
            m.entry.shipping.due.next_at,
            Some(now),
            "asked as soon as a shipment exists"
        );
    }

    #[test]
    fn shipping_progress_moves_orders_only_forward() {
        let o = fulfilling();
        let moved = |status: &str| {
            merge(
                &o,
                None,
                &answers(&o, None, Some(Ok(shipment(status)))),
                &SCHEDULE(),
                Utc::now(),
            )
            .advance
        };
        let transit = moved("in_transit").expect("in transit moves");
        assert_eq!(
            (transit.to, transit.delivery),
            (OrderStatus::Shipped, DeliveryStatus::InTransit)
        );
        assert_eq!(transit.from, &[OrderStatus::Fulfilling]);
        assert_eq!(
            moved("out_for_delivery").map(|a| a.to),
            Some(OrderStatus::Shipped)
        );
        let delivered = moved("delivered").expect("delivered moves");
        assert_eq!(delivered.to, OrderStatus::Delivered);
        assert!(delivered.from.contains(&OrderStatus::Shipped));
        assert!(!delivered.from.contains(&OrderStatus::Delivered));
        assert_eq!(moved("exception"), None);
    }

    #[test]
    fn the_entry_carries_the_orders_own_state() {
        let mut o = order(OrderStatus::Fulfilling, None, None);
        o.order.delivery_outcome_unknown = true;
        o.order.attention = Some(crate::domain::Attention::RefundUnsettled);
        let m = merge(&o, None, &Answers::default(), &SCHEDULE(), Utc::now());
        assert_eq!(m.entry.status, OrderStatus::Fulfilling);
        assert_eq!(m.entry.delivery_status, DeliveryStatus::Requested);
        assert!(m.entry.delivery_outcome_unknown);
        assert_eq!(
            m.entry.attention,
            Some(crate::domain::Attention::RefundUnsettled)
        );
    }
}
