//! The pure heart of a refresh batch: one order, its previous board entry
//! and what the partners answered → its new entry, and the forward move the
//! shipping progress calls for. No I/O, so every rule is unit tested here.
//!
//! Rules: a source that answered replaces what the board knew (`ok`, checked
//! now); a source that failed keeps its last known value and is marked not
//! ok (stale on the board); a source with nothing to ask (no intent yet, no
//! shipment yet, no skus) is fresh by definition.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{BoardEntry, PaymentState, ShippingState, StockItem, WarehouseState};
use crate::db::delivery::Advance;
use crate::db::models::OrderWithItems;
use crate::domain::{DeliveryStatus, OrderStatus};
use crate::partners::shipping::Shipment;

/// What the partners answered for one batch.
#[derive(Debug, Default)]
pub struct Answers {
    /// The gateway status of each order's intent, by order.
    pub payment: HashMap<Uuid, Result<String, String>>,
    /// Each order's shipment, by order.
    pub shipping: HashMap<Uuid, Result<Shipment, String>>,
    /// Stock by sku, from the warehouse calls that succeeded.
    pub stock: HashMap<String, Option<i64>>,
    /// Whether every warehouse call of the batch succeeded.
    pub warehouse_ok: bool,
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
        payment: payment(o, prev, answers.payment.get(&id), now),
        shipping: shipping_state(o, prev, shipping, now),
        warehouse: warehouse(o, prev, answers, now),
    };
    Merged { entry, advance }
}

fn payment(
    o: &OrderWithItems,
    prev: Option<&BoardEntry>,
    answer: Option<&Result<String, String>>,
    now: DateTime<Utc>,
) -> PaymentState {
    let known = || {
        prev.map(|p| p.payment.clone())
            .unwrap_or_else(|| PaymentState {
                status: o.order.payment_status.clone(),
                ..PaymentState::default()
            })
    };
    match answer {
        Some(Ok(status)) => PaymentState {
            status: Some(status.clone()),
            checked_at: Some(now),
            ok: true,
        },
        Some(Err(_)) => PaymentState {
            ok: false,
            ..known()
        },
        // No intent yet: nothing to ask, and nothing stale.
        None => PaymentState {
            checked_at: Some(now),
            ok: true,
            ..known()
        },
    }
}

fn shipping_state(
    o: &OrderWithItems,
    prev: Option<&BoardEntry>,
    answer: Option<&Result<Shipment, String>>,
    now: DateTime<Utc>,
) -> ShippingState {
    let known = prev
        .map(|p| p.shipping.clone())
        .unwrap_or_else(|| ShippingState {
            tracking_number: o.order.tracking_number.clone(),
            ..ShippingState::default()
        });
    match answer {
        Some(Ok(s)) => ShippingState {
            status: s.status.clone(),
            tracking_number: s.tracking_number.clone().or(known.tracking_number),
            eta: s.eta.clone(),
            checked_at: Some(now),
            ok: true,
        },
        Some(Err(_)) => ShippingState { ok: false, ..known },
        // No shipment yet: nothing to ask, and nothing stale.
        None => ShippingState {
            checked_at: Some(now),
            ok: true,
            ..known
        },
    }
}

fn warehouse(
    o: &OrderWithItems,
    prev: Option<&BoardEntry>,
    answers: &Answers,
    now: DateTime<Utc>,
) -> WarehouseState {
    let known = prev.map(|p| p.warehouse.clone()).unwrap_or_default();
    if !answers.warehouse_ok {
        return WarehouseState { ok: false, ..known };
    }
    if o.items.is_empty() {
        return known;
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

    fn order(intent: Option<&str>, shipment: Option<&str>) -> OrderWithItems {
        let now = Utc::now();
        let id = Uuid::new_v4();
        OrderWithItems {
            order: OrderRow {
                id,
                status: OrderStatus::Fulfilling,
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
        pay: Result<&str, &str>,
        ship: Result<Shipment, &str>,
    ) -> Answers {
        let id = o.order.id;
        Answers {
            payment: [(id, pay.map(str::to_owned).map_err(str::to_owned))].into(),
            shipping: [(id, ship.map_err(str::to_owned))].into(),
            stock: [("MUG".to_owned(), Some(7))].into(),
            warehouse_ok: true,
        }
    }

    #[test]
    fn answers_replace_what_the_board_knew_and_are_fresh() {
        let o = order(Some("pi_1"), Some("shp_1"));
        let now = Utc::now();
        let m = merge(
            &o,
            None,
            &answers(&o, Ok("succeeded"), Ok(shipment("label_created"))),
            now,
        );
        assert_eq!(m.entry.payment.status.as_deref(), Some("succeeded"));
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
    }

    #[test]
    fn a_failed_source_keeps_its_last_value_and_is_marked_not_ok() {
        let o = order(Some("pi_1"), Some("shp_1"));
        let earlier = Utc::now() - chrono::Duration::seconds(30);
        let prev = merge(
            &o,
            None,
            &answers(&o, Ok("succeeded"), Ok(shipment("in_transit"))),
            earlier,
        )
        .entry;
        let mut failing = answers(&o, Err("timed out"), Err("503"));
        failing.warehouse_ok = false;
        let m = merge(&o, Some(&prev), &failing, Utc::now());
        assert_eq!(m.entry.payment.status.as_deref(), Some("succeeded"));
        assert_eq!(m.entry.payment.checked_at, Some(earlier));
        assert!(!m.entry.payment.ok && !m.entry.shipping.ok && !m.entry.warehouse.ok);
        assert_eq!(m.entry.shipping.status.as_deref(), Some("in_transit"));
        assert_eq!(m.entry.warehouse.items, prev.warehouse.items);
        assert_eq!(m.advance, None, "no answer, no move");
    }

    #[test]
    fn nothing_to_ask_is_fresh_and_keeps_the_orders_own_values() {
        let o = order(None, None);
        let now = Utc::now();
        let m = merge(
            &o,
            None,
            &Answers {
                warehouse_ok: true,
                ..Answers::default()
            },
            now,
        );
        assert!(m.entry.payment.ok && m.entry.shipping.ok);
        assert_eq!(m.entry.payment.checked_at, Some(now));
        assert_eq!(
            m.entry.payment.status.as_deref(),
            Some("succeeded"),
            "the order's payment status"
        );
        assert_eq!(m.entry.shipping.tracking_number.as_deref(), Some("T-1"));
        assert_eq!(
            m.entry.warehouse.items[0].available, None,
            "a sku the warehouse did not list"
        );
    }

    #[test]
    fn shipping_progress_moves_orders_only_forward() {
        let o = order(None, Some("shp_1"));
        let moved = |status: &str| {
            merge(
                &o,
                None,
                &answers(&o, Ok("succeeded"), Ok(shipment(status))),
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
        let mut o = order(None, None);
        o.order.delivery_outcome_unknown = true;
        o.order.attention = Some(crate::domain::Attention::RefundUnsettled);
        let m = merge(&o, None, &Answers::default(), Utc::now());
        assert_eq!(m.entry.status, OrderStatus::Fulfilling);
        assert_eq!(m.entry.delivery_status, DeliveryStatus::Requested);
        assert!(m.entry.delivery_outcome_unknown);
        assert_eq!(
            m.entry.attention,
            Some(crate::domain::Attention::RefundUnsettled)
        );
    }
}
