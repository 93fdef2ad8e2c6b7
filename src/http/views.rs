//! Wire types: what the API sends and (for the OpenAPI document) receives.
//! Rows are mapped here; they never serialize themselves.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::db::models::{OrderWithItems, ProductRow};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProductView {
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
    pub currency: String,
    pub active: bool,
}

impl From<ProductRow> for ProductView {
    fn from(p: ProductRow) -> Self {
        ProductView {
            sku: p.sku,
            name: p.name,
            price_cents: p.price_cents,
            currency: p.currency,
            active: p.active,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProductList {
    pub products: Vec<ProductView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CustomerView {
    pub email: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OrderItemView {
    pub sku: String,
    pub name: String,
    pub quantity: i32,
    pub unit_price_cents: i64,
    pub line_total_cents: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PaymentView {
    /// Gateway PaymentIntent id, once known.
    pub intent_id: Option<String>,
    /// Gateway status of the intent, once known.
    pub status: Option<String>,
    /// Why the gateway declined, for `payment_failed` orders.
    pub decline_code: Option<String>,
    /// While `status` is `requires_action` (3-D Secure): the gateway's
    /// `client_secret` and `next_action`, for the storefront's payment SDK.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub next_action: Option<Value>,
    /// The refund, once one was made: its id (when known) and who made it
    /// (`orderflow`, or `gateway` for one made in the gateway's dashboard).
    pub refund: Option<RefundView>,
    /// A chargeback the gateway reported, with its evidence deadline.
    pub dispute: Option<DisputeView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RefundView {
    pub id: Option<String>,
    pub source: Option<crate::domain::RefundSource>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DisputeView {
    pub id: String,
    /// The gateway's: `warning_needs_response | needs_response | under_review | won | lost | warning_closed`…
    pub status: Option<String>,
    pub reason: Option<String>,
    pub evidence_due_by: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryView {
    /// `not_requested | queued | requested | in_transit | delivered | failed`
    pub status: String,
    pub shipment_id: Option<String>,
    pub tracking_number: Option<String>,
    pub attempts: i32,
    pub last_error: Option<String>,
    /// The last attempt got no answer (the shipment may exist): the order
    /// cannot be cancelled until an attempt learns the outcome.
    pub outcome_unknown: bool,
}

/// An order (docs/API.md).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OrderView {
    pub id: Uuid,
    /// `payment_pending | paid | payment_failed | fulfilling | shipped | delivered | cancelled`
    pub status: String,
    pub customer: CustomerView,
    pub items: Vec<OrderItemView>,
    pub currency: String,
    pub total_cents: i64,
    #[schema(value_type = AddressBody)]
    pub shipping_address: Value,
    pub payment: PaymentView,
    pub delivery: DeliveryView,
    /// Set when a job used up its attempts without settling the order:
    /// ops must look (`payment_unsettled`, `refund_unsettled`).
    pub attention: Option<AttentionView>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// In ops listings: why and since when the order is stuck, or null.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<StuckView>)]
    pub stuck: Option<Option<StuckView>>,
}

/// An order that overstayed its status (docs/API.md, "Stuck orders").
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StuckView {
    pub since: DateTime<Utc>,
    pub reason: String,
}

impl OrderView {
    /// The view as ops see it: with its `stuck` mark judged at `now`.
    pub fn judged(
        mut self,
        rules: &crate::domain::stuck::StuckRules,
        status: crate::domain::OrderStatus,
        since: DateTime<Utc>,
    ) -> Self {
        let awaiting = self.payment.status.as_deref() == Some(crate::db::orders::REQUIRES_ACTION);
        self.stuck = Some(
            rules
                .judge(status, since, awaiting, Utc::now())
                .map(|s| StuckView {
                    since: s.since,
                    reason: s.reason,
                }),
        );
        self
    }
}

/// An order event (docs/API.md, "Order events").
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventView {
    /// `evt_…`
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub order_id: Uuid,
    /// 1 for the order's first event, +1 for each next one.
    pub sequence: i32,
    pub created_at: DateTime<Utc>,
    /// Who made the change: a staff member, the gateway (its events), or
    /// the service itself (`system`: the workers, the purchase path).
    pub actor: crate::domain::actor::Actor,
    pub data: EventData,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventData {
    /// The order as it was right after the change.
    pub order: OrderView,
    /// For `payment.refunded`: who made the refund, `orderflow` or
    /// `gateway` (a refund made in the gateway's own dashboard).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<crate::domain::RefundSource>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    pub events: Vec<EventView>,
}

/// The public id of an event.
pub fn event_id(id: Uuid) -> String {
    format!("evt_{}", id.simple())
}

/// The event an `evt_…` id names, if it is one.
pub fn parse_event_id(raw: &str) -> Option<Uuid> {
    Uuid::try_parse(raw.strip_prefix("evt_")?).ok()
}

impl From<crate::db::events::Event> for EventView {
    fn from(e: crate::db::events::Event) -> Self {
        let source = (e.row.kind == crate::domain::event::EventType::PaymentRefunded.as_str())
            .then(|| {
                e.order
                    .refund_source
                    .unwrap_or(crate::domain::RefundSource::Orderflow)
            });
        EventView {
            id: event_id(e.row.id),
            kind: e.row.kind,
            order_id: e.row.order_id,
            sequence: e.row.sequence,
            created_at: e.row.created_at,
            actor: e
                .row
                .actor
                .and_then(|a| serde_json::from_value(a).ok())
                .unwrap_or_else(crate::domain::actor::Actor::system),
            data: EventData {
                source,
                order: OrderView::from(OrderWithItems {
                    order: e.order,
                    items: e.items,
                }),
            },
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AttentionView {
    pub reason: crate::domain::Attention,
    pub since: Option<DateTime<Utc>>,
}

impl From<OrderWithItems> for OrderView {
    fn from(o: OrderWithItems) -> Self {
        let OrderWithItems { order, items } = o;
        OrderView {
            id: order.id,
            status: order.status.as_str().to_owned(),
            customer: CustomerView {
                email: order.customer_email,
                name: order.customer_name,
            },
            items: items
                .into_iter()
                .map(|i| OrderItemView {
                    sku: i.sku,
                    name: i.name,
                    quantity: i.quantity,
                    unit_price_cents: i.unit_price_cents,
                    line_total_cents: i.line_total_cents,
                })
                .collect(),
            currency: order.currency,
            total_cents: order.total_cents,
            shipping_address: order.shipping_address,
            payment: payment_view(
                order.payment_intent_id,
                order.payment_status,
                order.decline_code,
                order.payment_action,
                (order.refund_id, order.refund_source),
                dispute_view(
                    order.dispute_id,
                    order.dispute_status,
                    order.dispute_reason,
                    order.dispute_due_by,
                ),
            ),
            delivery: DeliveryView {
                status: order.delivery_status.as_str().to_owned(),
                shipment_id: order.shipment_id,
                tracking_number: order.tracking_number,
                attempts: order.delivery_attempts,
                last_error: order.delivery_last_error,
                outcome_unknown: order.delivery_outcome_unknown,
            },
            attention: order.attention.map(|reason| AttentionView {
                reason,
                since: order.attention_since,
            }),
            created_at: order.created_at,
            updated_at: order.updated_at,
            stuck: None,
        }
    }
}

/// The payment as the order shows it: the action only while it is needed.
fn payment_view(
    intent_id: Option<String>,
    status: Option<String>,
    decline_code: Option<String>,
    action: Option<Value>,
    (refund_id, refund_source): (Option<String>, Option<crate::domain::RefundSource>),
    dispute: Option<DisputeView>,
) -> PaymentView {
    let action = action.filter(|_| status.as_deref() == Some(crate::db::orders::REQUIRES_ACTION));
    let field = |name: &str| {
        action
            .as_ref()
            .and_then(|a| a.get(name))
            .filter(|v| !v.is_null())
    };
    PaymentView {
        client_secret: field("client_secret")
            .and_then(Value::as_str)
            .map(str::to_owned),
        next_action: field("next_action").cloned(),
        intent_id,
        decline_code,
        refund: (refund_id.is_some() || refund_source.is_some()).then_some(RefundView {
            id: refund_id,
            source: refund_source,
        }),
        status,
        dispute,
    }
}

fn dispute_view(
    id: Option<String>,
    status: Option<String>,
    reason: Option<String>,
    evidence_due_by: Option<DateTime<Utc>>,
) -> Option<DisputeView> {
    Some(DisputeView {
        id: id?,
        status,
        reason,
        evidence_due_by,
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderList {
    pub orders: Vec<OrderView>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// The error envelope.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code, e.g. `validation_failed`.
    pub code: String,
    pub message: String,
    /// For `validation_failed`: every invalid field.
    pub fields: Option<Vec<crate::error::FieldError>>,
    /// For `payment_declined`.
    pub decline_code: Option<String>,
    /// For `payment_declined`: the order, `status` = `payment_failed`.
    pub order: Option<Box<OrderView>>,
}

// Request shapes, for the OpenAPI document. Handlers parse bodies through
// `domain::PurchaseRequest` so that every problem is reported at once.

#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct PurchaseBody {
    pub customer: CustomerBody,
    pub items: Vec<ItemBody>,
    /// 3 lowercase letters; must be the products' currency.
    pub currency: String,
    pub shipping_address: AddressBody,
    /// A gateway payment method, e.g. `pm_card_visa`.
    pub payment_method: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct CustomerBody {
    pub email: String,
    pub name: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct ItemBody {
    pub sku: String,
    /// 1 to 1000.
    pub quantity: i32,
}

#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct AddressBody {
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, upper case.
    pub country: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct NewProductBody {
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
    pub currency: String,
    pub active: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct ProductPatchBody {
    pub name: Option<String>,
    pub price_cents: Option<i64>,
    pub currency: Option<String>,
    pub active: Option<bool>,
}
