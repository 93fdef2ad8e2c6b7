//! Row types: one struct to read, one to insert, one to change, per table.
//! They never leave the crate as API output; `http::views` maps them.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde_json::Value;
use uuid::Uuid;

use super::schema::{order_items, orders, products};
use crate::domain::{Attention, DeliveryStatus, OrderStatus};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = products, check_for_backend(diesel::pg::Pg))]
pub struct ProductRow {
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
    pub currency: String,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = products)]
pub struct NewProduct {
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
    pub currency: String,
    pub active: bool,
}

#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = products)]
pub struct ProductChanges {
    pub name: Option<String>,
    pub price_cents: Option<i64>,
    pub currency: Option<String>,
    pub active: Option<bool>,
}

/// Also (de)serialized as JSON: an Idempotency-Key keeps the row its
/// request answered from (`to_jsonb` of the row: the same field names).
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, serde::Serialize, serde::Deserialize)]
#[diesel(table_name = orders, check_for_backend(diesel::pg::Pg))]
pub struct OrderRow {
    pub id: Uuid,
    pub status: OrderStatus,
    pub customer_email: String,
    pub customer_name: String,
    pub currency: String,
    pub total_cents: i64,
    pub shipping_address: Value,
    pub payment_method: String,
    pub payment_intent_id: Option<String>,
    pub payment_status: Option<String>,
    pub decline_code: Option<String>,
    pub delivery_status: DeliveryStatus,
    pub shipment_id: Option<String>,
    pub tracking_number: Option<String>,
    pub delivery_attempts: i32,
    pub delivery_last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub delivery_outcome_unknown: bool,
    pub attention: Option<Attention>,
    pub attention_since: Option<DateTime<Utc>>,
    /// The order's last event's `sequence` (kept by the events trigger).
    #[serde(default)]
    pub event_seq: i32,
    /// When the order entered its status (kept by the events trigger).
    #[serde(default = "Utc::now")]
    pub status_since: DateTime<Utc>,
    /// The gateway's `client_secret` and `next_action` while the customer
    /// must authenticate.
    #[serde(default)]
    pub payment_action: Option<Value>,
    #[serde(default)]
    pub refund_id: Option<String>,
    #[serde(default)]
    pub refund_source: Option<crate::domain::RefundSource>,
    #[serde(default)]
    pub dispute_id: Option<String>,
    #[serde(default)]
    pub dispute_status: Option<String>,
    #[serde(default)]
    pub dispute_reason: Option<String>,
    #[serde(default)]
    pub dispute_due_by: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = order_items, check_for_backend(diesel::pg::Pg))]
pub struct OrderItemRow {
    pub order_id: Uuid,
    pub line_no: i16,
    pub sku: String,
    pub name: String,
    pub quantity: i32,
    pub unit_price_cents: i64,
    pub line_total_cents: i64,
}

/// An order with its lines, as read for the API.
#[derive(Debug, Clone)]
pub struct OrderWithItems {
    pub order: OrderRow,
    pub items: Vec<OrderItemRow>,
}

crate::domain::status::text_enum! {
    /// Where a keyed request stands (the `state` column).
    KeyState {
        InProgress => "in_progress",
        Completed => "completed",
    }
}

crate::domain::status::text_enum! {
    /// Kinds of outbox work; the column's CHECK lists the same values.
    OutboxKind {
        Deliver => "deliver",
        ReconcilePayment => "reconcile_payment",
        Refund => "refund",
    }
}

// The gateway statuses the order records that orderflow acts on.

/// The gateway status recorded on an order once its charge is refunded.
pub const REFUNDED: &str = "refunded";

/// The gateway status recorded once a refund failed after it was accepted.
pub const REFUND_FAILED: &str = "refund_failed";

/// The gateway status of an intent created and not confirmed yet.
pub const REQUIRES_CONFIRMATION: &str = "requires_confirmation";

/// The gateway status of an intent whose customer must authenticate.
pub const REQUIRES_ACTION: &str = "requires_action";
