//! The merge rules, one test each.
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
            event_seq: 0,
            status_since: now,
            payment_action: None,
            refund_id: None,
            refund_source: None,
            dispute_id: None,
            dispute_status: None,
            dispute_reason: None,
            dispute_due_by: None,
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

fn schedule() -> Schedule {
    Schedule::every_run(Duration::from_secs(15))
}

/// `o` merged after the shipping partner reported `status`.
fn reported(
    o: &OrderWithItems,
    prev: Option<&BoardEntry>,
    status: &str,
    now: DateTime<Utc>,
) -> Merged {
    merge(
        o,
        prev,
        &answers(o, None, Some(Ok(shipment(status)))),
        &schedule(),
        now,
    )
}

fn ask(payment: bool, shipping: bool, warehouse: bool) -> Asks {
    Asks {
        payment,
        shipping,
        warehouse,
    }
}

fn at(now: DateTime<Utc>, secs: i64) -> Option<DateTime<Utc>> {
    Some(now + chrono::Duration::seconds(secs))
}

#[test]
fn answers_replace_what_the_board_knew_and_schedule_the_next_ask_by_state() {
    let o = fulfilling();
    let now = Utc::now();
    let m = reported(&o, None, "label_created", now);
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
    let transit = reported(&o, Some(&m.entry), "in_transit", now);
    assert_eq!(
        transit.entry.shipping.due.next_at,
        at(now, 300),
        "in transit: every few minutes"
    );
    assert_eq!(transit.entry.shipping.due.unchanged, 0);
    let delivered = reported(&o, Some(&transit.entry), "delivered", now);
    assert_eq!(
        delivered.entry.shipping.due.next_at, None,
        "delivered: never again"
    );
}

#[test]
fn unchanged_answers_back_off_up_to_a_cap() {
    let o = fulfilling();
    let now = Utc::now();
    let mut e = reported(&o, None, "in_transit", now).entry;
    let mut intervals = vec![e.shipping.due.every_secs];
    for _ in 0..5 {
        e = reported(&o, Some(&e), "in_transit", now).entry;
        intervals.push(e.shipping.due.every_secs);
    }
    assert_eq!(intervals, [300, 600, 1200, 2400, 2400, 2400].map(Some));
    let moved = reported(&o, Some(&e), "out_for_delivery", now);
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
        &schedule(),
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
    let m = merge(&paid, None, &Answers::default(), &schedule(), now);
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
    assert_eq!(asks(&o, None, now, false), ask(false, true, true));
    let first = reported(&o, None, "in_transit", now).entry;
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
        &schedule(),
        soon,
    )
    .entry;
    assert_eq!(untouched.shipping, first.shipping);
    assert_eq!(untouched.warehouse, first.warehouse);
    let later = now + chrono::Duration::seconds(301);
    assert_eq!(asks(&o, Some(&first), later, false), ask(false, true, true));
    assert_eq!(
        asks(&o, Some(&first), soon, true),
        ask(true, true, true),
        "a forced refresh asks every source, a settled payment too"
    );
}

#[test]
fn a_failed_source_keeps_its_last_value_is_marked_not_ok_and_is_due_again() {
    let o = fulfilling();
    let earlier = Utc::now() - chrono::Duration::seconds(30);
    let prev = reported(&o, None, "in_transit", earlier).entry;
    let mut failing = answers(&o, None, Some(Err("503")));
    failing.warehouse_ok = false;
    let now = Utc::now();
    let m = merge(&o, Some(&prev), &failing, &schedule(), now);
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
    assert_eq!(asks(&o, None, now, false), ask(false, false, true));
    let m = merge(
        &o,
        None,
        &Answers {
            warehouse_ok: true,
            ..Answers::default()
        },
        &schedule(),
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
            &schedule(),
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
    let m = merge(&o, None, &Answers::default(), &schedule(), Utc::now());
    assert_eq!(m.entry.status, OrderStatus::Fulfilling);
    assert_eq!(m.entry.delivery_status, DeliveryStatus::Requested);
    assert!(m.entry.delivery_outcome_unknown);
    assert_eq!(
        m.entry.attention,
        Some(crate::domain::Attention::RefundUnsettled)
    );
}
