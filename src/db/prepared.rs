//! The hot paths' statements (the purchase, deliveries) as hand-written
//! query fragments.
//!
//! Diesel prepares and caches a statement per connection only when it can
//! prove the SQL text is fixed; it never does for UPDATEs, multi-row INSERTs
//! or `sql_query`, so those are parsed and planned on every call (what that
//! cost the purchase is in docs/BENCHMARKS.md). Each type below writes one
//! fixed SQL text and declares a static query id, so Diesel prepares it once
//! per pooled connection and then only binds and executes. Statuses and
//! kinds are bound as parameters, never spelled in the SQL.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::query_builder::{AsQuery, AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{
    Array, BigInt, Bool, Double, Int2, Int4, Int8, Jsonb, Nullable, Text, Timestamptz,
    Uuid as SqlUuid,
};
use diesel::{PgConnection, QueryResult, RunQueryDsl};
use serde_json::Value;
use uuid::Uuid;

use super::models::{KeyState, OutboxKind};
use super::schema::orders;
use crate::domain::{DeliveryStatus, OrderStatus};

macro_rules! cached {
    ($t:ident) => {
        impl QueryId for $t<'_> {
            type QueryId = $t<'static>;
            const HAS_STATIC_QUERY_ID: bool = true;
        }
        impl RunQueryDsl<PgConnection> for $t<'_> {}
    };
}

/// Claims an Idempotency-Key for `order_id`, taking over an expired record.
/// Affects 1 row when claimed, 0 when a live record exists.
pub struct ClaimKey<'a> {
    pub key: &'a str,
    pub request_hash: &'a str,
    pub order_id: Uuid,
    pub retention_secs: i64,
}
cached!(ClaimKey);

impl QueryFragment<Pg> for ClaimKey<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("INSERT INTO idempotency_keys (key, request_hash, state, order_id, expires_at) VALUES (");
        out.push_bind_param::<Text, _>(&self.key)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&self.request_hash)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&KeyState::InProgress)?;
        out.push_sql(", ");
        out.push_bind_param::<SqlUuid, _>(&self.order_id)?;
        out.push_sql(", now() + make_interval(secs => ");
        out.push_bind_param::<BigInt, _>(&self.retention_secs)?;
        out.push_sql(
            ")) ON CONFLICT (key) DO UPDATE SET request_hash = EXCLUDED.request_hash, state = EXCLUDED.state, \
             order_id = EXCLUDED.order_id, response_status = NULL, response_body = NULL, locked_at = now(), \
             created_at = now(), expires_at = EXCLUDED.expires_at \
             WHERE idempotency_keys.expires_at <= now()",
        );
        Ok(())
    }
}

/// Inserts an order (status `payment_pending`) and all its lines, the lines
/// passed as parallel arrays so one SQL text serves any number of them.
pub struct InsertOrder<'a> {
    pub id: Uuid,
    pub status: OrderStatus,
    pub customer_email: &'a str,
    pub customer_name: &'a str,
    pub currency: &'a str,
    pub total_cents: i64,
    pub shipping_address: &'a Value,
    pub payment_method: &'a str,
    pub at: DateTime<Utc>,
    pub line_nos: Vec<i16>,
    pub skus: Vec<&'a str>,
    pub names: Vec<&'a str>,
    pub quantities: Vec<i32>,
    pub unit_prices: Vec<i64>,
    pub line_totals: Vec<i64>,
}
cached!(InsertOrder);

impl QueryFragment<Pg> for InsertOrder<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "WITH o AS (INSERT INTO orders (id, status, customer_email, customer_name, currency, total_cents, \
             shipping_address, payment_method, created_at, updated_at) VALUES (",
        );
        out.push_bind_param::<SqlUuid, _>(&self.id)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&self.status)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&self.customer_email)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&self.customer_name)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&self.currency)?;
        out.push_sql(", ");
        out.push_bind_param::<Int8, _>(&self.total_cents)?;
        out.push_sql(", ");
        out.push_bind_param::<Jsonb, _>(self.shipping_address)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&self.payment_method)?;
        out.push_sql(", ");
        out.push_bind_param::<Timestamptz, _>(&self.at)?;
        out.push_sql(", ");
        out.push_bind_param::<Timestamptz, _>(&self.at)?;
        out.push_sql(
            ") RETURNING id) INSERT INTO order_items (order_id, line_no, sku, name, quantity, unit_price_cents, \
             line_total_cents) SELECT o.id, l.* FROM o, unnest(",
        );
        out.push_bind_param::<Array<Int2>, _>(&self.line_nos)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.skus)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.names)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Int4>, _>(&self.quantities)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Int8>, _>(&self.unit_prices)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Int8>, _>(&self.line_totals)?;
        out.push_sql(") AS l");
        Ok(())
    }
}

/// The `orders` columns in the schema's order, as [`OrderRow`] reads them.
///
/// [`OrderRow`]: super::models::OrderRow
const ORDER_COLUMNS: &str = "id, status, customer_email, customer_name, currency, total_cents, \
     shipping_address, payment_method, payment_intent_id, payment_status, decline_code, \
     delivery_status, shipment_id, tracking_number, delivery_attempts, delivery_last_error, \
     created_at, updated_at, delivery_outcome_unknown, attention, attention_since, event_seq, \
     status_since, payment_action, refund_id, refund_source, dispute_id, dispute_status, \
     dispute_reason, dispute_due_by";

/// Records a charge outcome on a `payment_pending` order, owes its delivery
/// when `owe_delivery`, and completes the Idempotency-Key `key` (if any)
/// with the updated row, all in one statement. Returns the order as
/// updated (one row), or no row when it had already left `payment_pending`
/// (then nothing changed).
pub struct SettlePayment<'a> {
    pub id: Uuid,
    pub status: OrderStatus,
    pub intent_id: Option<&'a str>,
    pub gateway_status: Option<&'a str>,
    pub decline_code: Option<&'a str>,
    pub delivery_status: Option<DeliveryStatus>,
    pub action: Option<&'a Value>,
    /// The order leaves `payment_pending`: its action and its
    /// `payment_unsettled` mark go with it.
    pub settles: bool,
    pub owe_delivery: bool,
    pub key: Option<&'a str>,
}
cached!(SettlePayment);

impl Query for SettlePayment<'_> {
    type SqlType = <orders::table as AsQuery>::SqlType;
}

impl QueryFragment<Pg> for SettlePayment<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("WITH o AS (UPDATE orders SET status = ");
        out.push_bind_param::<Text, _>(&self.status)?;
        out.push_sql(", payment_intent_id = COALESCE(");
        out.push_bind_param::<Nullable<Text>, _>(&self.intent_id)?;
        out.push_sql(", payment_intent_id), payment_status = COALESCE(");
        out.push_bind_param::<Nullable<Text>, _>(&self.gateway_status)?;
        out.push_sql(", payment_status), decline_code = ");
        out.push_bind_param::<Nullable<Text>, _>(&self.decline_code)?;
        out.push_sql(", delivery_status = COALESCE(");
        out.push_bind_param::<Nullable<Text>, _>(&self.delivery_status)?;
        out.push_sql(", delivery_status), payment_action = CASE WHEN ");
        out.push_bind_param::<Bool, _>(&self.settles)?;
        out.push_sql(" THEN NULL ELSE COALESCE(");
        out.push_bind_param::<Nullable<Jsonb>, _>(&self.action)?;
        out.push_sql(", payment_action) END, attention = CASE WHEN ");
        out.push_bind_param::<Bool, _>(&self.settles)?;
        out.push_sql(" THEN NULL ELSE attention END, attention_since = CASE WHEN ");
        out.push_bind_param::<Bool, _>(&self.settles)?;
        out.push_sql(" THEN NULL ELSE attention_since END, updated_at = now() WHERE id = ");
        out.push_bind_param::<SqlUuid, _>(&self.id)?;
        out.push_sql(" AND status = ");
        out.push_bind_param::<Text, _>(&OrderStatus::PaymentPending)?;
        out.push_sql(" RETURNING ");
        out.push_sql(ORDER_COLUMNS);
        out.push_sql("), w AS (INSERT INTO outbox (kind, order_id) SELECT ");
        out.push_bind_param::<Text, _>(&OutboxKind::Deliver)?;
        out.push_sql(", id FROM o WHERE ");
        out.push_bind_param::<Bool, _>(&self.owe_delivery)?;
        out.push_sql(" ON CONFLICT DO NOTHING), k AS (UPDATE idempotency_keys SET state = ");
        out.push_bind_param::<Text, _>(&KeyState::Completed)?;
        out.push_sql(", response_order = (SELECT to_jsonb(o) FROM o) WHERE key = ");
        out.push_bind_param::<Nullable<Text>, _>(&self.key)?;
        out.push_sql(" AND EXISTS (SELECT 1 FROM o)) SELECT ");
        out.push_sql(ORDER_COLUMNS);
        out.push_sql(" FROM o");
        Ok(())
    }
}

/// Completes an Idempotency-Key with the order its request answered from.
pub struct CompleteKey<'a> {
    pub key: &'a str,
    pub order: &'a Value,
}
cached!(CompleteKey);

impl QueryFragment<Pg> for CompleteKey<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("UPDATE idempotency_keys SET state = ");
        out.push_bind_param::<Text, _>(&KeyState::Completed)?;
        out.push_sql(", response_order = ");
        out.push_bind_param::<Jsonb, _>(self.order)?;
        out.push_sql(" WHERE key = ");
        out.push_bind_param::<Text, _>(&self.key)?;
        Ok(())
    }
}

/// Locks the orders of `ids` that await a shipment (`paid`, delivery
/// `queued` or `requested`), in id order (so two batches never deadlock),
/// and selects their ids.
pub struct LockDeliverable<'a> {
    pub ids: &'a [Uuid],
}
cached!(LockDeliverable);

impl Query for LockDeliverable<'_> {
    type SqlType = SqlUuid;
}

impl QueryFragment<Pg> for LockDeliverable<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("SELECT id FROM orders WHERE id = ANY(");
        out.push_bind_param::<Array<SqlUuid>, _>(&self.ids)?;
        out.push_sql(") AND status = ");
        out.push_bind_param::<Text, _>(&OrderStatus::Paid)?;
        out.push_sql(" AND delivery_status IN (");
        out.push_bind_param::<Text, _>(&DeliveryStatus::Queued)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&DeliveryStatus::Requested)?;
        out.push_sql(") ORDER BY id FOR UPDATE");
        Ok(())
    }
}

/// Claims the attempts of `kind` for the (order, task) pairs (see
/// [`super::outbox::claim`]): granted when due or already the task's.
/// Selects (order id, task, attempts) of each granted claim.
pub struct ClaimMany<'a> {
    pub kind: OutboxKind,
    pub ids: &'a [Uuid],
    pub tasks: &'a [&'a str],
    pub lease_secs: f64,
}
cached!(ClaimMany);

impl Query for ClaimMany<'_> {
    type SqlType = (SqlUuid, Nullable<Text>, Int4);
}

impl QueryFragment<Pg> for ClaimMany<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "UPDATE outbox o SET attempts = o.attempts + CASE WHEN o.attempt_task = t.task THEN 0 ELSE 1 END, \
             attempt_task = t.task, next_attempt_at = now() + make_interval(secs => ",
        );
        out.push_bind_param::<Double, _>(&self.lease_secs)?;
        out.push_sql(") FROM unnest(");
        out.push_bind_param::<Array<SqlUuid>, _>(&self.ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.tasks)?;
        out.push_sql(") AS t(id, task) WHERE o.kind = ");
        out.push_bind_param::<Text, _>(&self.kind)?;
        out.push_sql(
            " AND o.order_id = t.id AND (o.next_attempt_at <= clock_timestamp() OR o.attempt_task = t.task) \
             RETURNING o.order_id, o.attempt_task, o.attempts",
        );
        Ok(())
    }
}

/// Starts a delivery attempt on each of `ids` (already locked and checked):
/// delivery `requested`, attempt counted. Selects (id, attempt, address).
pub struct StartDeliveries<'a> {
    pub ids: &'a [Uuid],
}
cached!(StartDeliveries);

impl Query for StartDeliveries<'_> {
    type SqlType = (SqlUuid, Int4, Jsonb);
}

impl QueryFragment<Pg> for StartDeliveries<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("UPDATE orders SET delivery_status = ");
        out.push_bind_param::<Text, _>(&DeliveryStatus::Requested)?;
        out.push_sql(
            ", delivery_attempts = delivery_attempts + 1, updated_at = now() WHERE id = ANY(",
        );
        out.push_bind_param::<Array<SqlUuid>, _>(&self.ids)?;
        out.push_sql(") RETURNING id, delivery_attempts, shipping_address");
        Ok(())
    }
}

/// Records the shipments the partner created: each `paid` order of `ids`
/// moves to `fulfilling` with its shipment id and tracking number. Selects
/// the ids of the orders that moved.
pub struct RecordShipments<'a> {
    pub ids: &'a [Uuid],
    pub shipment_ids: &'a [&'a str],
    pub tracking: &'a [Option<&'a str>],
}
cached!(RecordShipments);

impl Query for RecordShipments<'_> {
    type SqlType = SqlUuid;
}

impl QueryFragment<Pg> for RecordShipments<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("UPDATE orders o SET status = ");
        out.push_bind_param::<Text, _>(&OrderStatus::Fulfilling)?;
        out.push_sql(", delivery_status = ");
        out.push_bind_param::<Text, _>(&DeliveryStatus::Requested)?;
        out.push_sql(
            ", shipment_id = t.shipment_id, tracking_number = t.tracking, delivery_last_error = NULL, \
             delivery_outcome_unknown = false, updated_at = now() FROM unnest(",
        );
        out.push_bind_param::<Array<SqlUuid>, _>(&self.ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.shipment_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.tracking)?;
        out.push_sql(") AS t(id, shipment_id, tracking) WHERE o.id = t.id AND o.status = ");
        out.push_bind_param::<Text, _>(&OrderStatus::Paid)?;
        out.push_sql(" RETURNING o.id");
        Ok(())
    }
}

/// Deletes the outbox rows of `kind` for `ids` (done, or moot).
pub struct DropOutbox<'a> {
    pub kind: OutboxKind,
    pub ids: &'a [Uuid],
}
cached!(DropOutbox);

impl QueryFragment<Pg> for DropOutbox<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("DELETE FROM outbox WHERE kind = ");
        out.push_bind_param::<Text, _>(&self.kind)?;
        out.push_sql(" AND order_id = ANY(");
        out.push_bind_param::<Array<SqlUuid>, _>(&self.ids)?;
        out.push_sql(")");
        Ok(())
    }
}
