//! The purchase's two units of work: unit 1 claims the key, checks the
//! catalog and records the order; unit 2 records the charge's outcome.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use chrono::{SubsecRound, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::response_for;
use crate::db::idempotency::{self, KeyClaim, Replay};
use crate::db::models::{OrderItemRow, OrderRow, OrderWithItems, ProductRow};
use crate::db::{orders, products, DbError};
use crate::domain::{currency, DeliveryStatus, OrderStatus, PurchaseRequest};
use crate::error::FieldError;
use crate::partners::payment::ChargeOutcome;

/// What unit 1 decided.
pub(super) enum Started {
    /// A new order, recorded `payment_pending`: charge it.
    New(OrderWithItems),
    /// A takeover of a silent request's order: settle it.
    Resumed(OrderWithItems),
    Replay {
        status: u16,
        body: Value,
    },
    Reused,
    InProgress,
}

/// Errors that roll back unit 1.
pub(super) enum Unit1Error {
    Db(DbError),
    Invalid(Vec<FieldError>),
}

impl From<diesel::result::Error> for Unit1Error {
    fn from(e: diesel::result::Error) -> Self {
        Unit1Error::Db(e.into())
    }
}

impl From<DbError> for Unit1Error {
    fn from(e: DbError) -> Self {
        Unit1Error::Db(e)
    }
}

/// The skus named in the raw body, with their item index, for the catalog
/// check (done even when other fields are invalid, so every error shows).
pub(super) fn raw_skus(body: &Map<String, Value>) -> Vec<(usize, String)> {
    body.get("items")
        .and_then(Value::as_array)
        // Over the limit, the count is the one error worth reporting.
        .filter(|items| items.len() <= crate::domain::purchase::MAX_ITEMS)
        .map(|items| {
            items
                .iter()
                .enumerate()
                .filter_map(|(i, it)| Some((i, it.get("sku")?.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// Unit 1: claim the key, check the catalog, record the order.
pub(super) fn create_order(
    conn: &mut diesel::PgConnection,
    key: Option<(&str, &str)>,
    lease: std::time::Duration,
    parsed: Result<PurchaseRequest, Vec<FieldError>>,
    skus: &[(usize, String)],
    raw_currency: Option<&str>,
) -> Result<Started, Unit1Error> {
    let id = Uuid::new_v4();
    if let Some((key, hash)) = key {
        if let Some(earlier) = claim_key(conn, key, hash, id, lease)? {
            return Ok(earlier);
        }
    }
    let mut errors = parsed.as_ref().err().cloned().unwrap_or_default();
    let catalog = check_catalog(conn, skus, raw_currency, &mut errors)?;
    let request = match parsed {
        Ok(r) if errors.is_empty() => r,
        _ => return Err(Unit1Error::Invalid(errors)),
    };
    let order = new_order(id, request, &catalog)?;
    orders::insert(conn, &order.order, &order.items)?;
    Ok(Started::New(order))
}

/// Claims the Idempotency-Key for the new order `id`; `Some` when an
/// earlier request with the key decides the answer instead.
fn claim_key(
    conn: &mut diesel::PgConnection,
    key: &str,
    hash: &str,
    id: Uuid,
    lease: std::time::Duration,
) -> Result<Option<Started>, Unit1Error> {
    Ok(match idempotency::claim(conn, key, hash, id, lease)? {
        KeyClaim::Claimed | KeyClaim::TakenOver { order_id: None } => None,
        KeyClaim::TakenOver { order_id: Some(id) } => match orders::find(conn, id)? {
            Some(order) => Some(Started::Resumed(order)),
            None => {
                return Err(DbError::Other(anyhow::anyhow!(
                    "idempotency key points at a missing order"
                ))
                .into())
            }
        },
        KeyClaim::Reused => Some(Started::Reused),
        KeyClaim::InProgress => Some(Started::InProgress),
        KeyClaim::Completed(Replay::Rendered { status, body }) => {
            Some(Started::Replay { status, body })
        }
        KeyClaim::Completed(Replay::Order(order)) => {
            let items = orders::items_of(conn, &[order.id])?;
            let (status, body) = response_for(OrderWithItems {
                order: *order,
                items,
            });
            Some(Started::Replay {
                status: status.as_u16(),
                body,
            })
        }
    })
}

/// The catalog's products for `skus`; adds an error for each unknown or
/// retired sku, and for a currency that is not the products' own.
fn check_catalog(
    conn: &mut diesel::PgConnection,
    skus: &[(usize, String)],
    raw_currency: Option<&str>,
    errors: &mut Vec<FieldError>,
) -> Result<HashMap<String, ProductRow>, DbError> {
    let wanted: Vec<String> = skus.iter().map(|(_, s)| s.clone()).collect();
    let catalog: HashMap<String, ProductRow> = products::find_by_skus(conn, &wanted)?
        .into_iter()
        .map(|p| (p.sku.clone(), p))
        .collect();
    for (i, sku) in skus {
        let field = || format!("items[{i}].sku");
        match catalog.get(sku) {
            None => errors.push(FieldError::new(field(), format!("unknown sku `{sku}`"))),
            Some(p) if !p.active => errors.push(FieldError::new(
                field(),
                format!("`{sku}` is no longer sold"),
            )),
            Some(p) => {
                let other = raw_currency.filter(|c| currency::is_code(c) && *c != p.currency);
                if let Some(c) = other {
                    if !errors.iter().any(|e| e.field == "currency") {
                        errors.push(FieldError::new(
                            "currency",
                            format!("`{c}` is not the products' currency `{}`", p.currency),
                        ));
                    }
                }
            }
        }
    }
    Ok(catalog)
}

/// The order row and its lines, priced from the catalog.
fn new_order(
    id: Uuid,
    request: PurchaseRequest,
    catalog: &HashMap<String, ProductRow>,
) -> Result<OrderWithItems, Unit1Error> {
    let too_large = || {
        Unit1Error::Invalid(vec![FieldError::new(
            "items",
            "the order total is too large",
        )])
    };
    let mut items = Vec::with_capacity(request.items.len());
    let mut total: i64 = 0;
    for (line_no, item) in request.items.iter().enumerate() {
        let product = catalog
            .get(&item.sku)
            .ok_or_else(|| DbError::Other(anyhow::anyhow!("catalog changed under us")))?;
        let line_total = product
            .price_cents
            .checked_mul(i64::from(item.quantity))
            .ok_or_else(too_large)?;
        total = total.checked_add(line_total).ok_or_else(too_large)?;
        items.push(OrderItemRow {
            order_id: id,
            line_no: line_no as i16,
            sku: product.sku.clone(),
            name: product.name.clone(),
            quantity: item.quantity,
            unit_price_cents: product.price_cents,
            line_total_cents: line_total,
        });
    }
    let address =
        serde_json::to_value(&request.shipping_address).map_err(|e| DbError::Other(e.into()))?;
    let now = Utc::now().trunc_subsecs(6);
    let order = OrderRow {
        id,
        status: OrderStatus::PaymentPending,
        customer_email: request.customer.email,
        customer_name: request.customer.name,
        currency: request.currency,
        total_cents: total,
        shipping_address: address,
        payment_method: request.payment_method,
        payment_intent_id: None,
        payment_status: None,
        decline_code: None,
        delivery_status: DeliveryStatus::NotRequested,
        shipment_id: None,
        tracking_number: None,
        delivery_attempts: 0,
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
    };
    Ok(OrderWithItems { order, items })
}

/// Unit 2: record the charge outcome (owing delivery when paid) and
/// complete the key, one statement, answering from the order as the update
/// returned it (and as a replay will). Returns (status, body, paid now).
pub(super) fn record_charge(
    conn: &mut diesel::PgConnection,
    order: &OrderWithItems,
    outcome: Option<&ChargeOutcome>,
    key: Option<&str>,
) -> Result<(StatusCode, Value, bool), DbError> {
    if let Some(ChargeOutcome::Unknown { reason, .. }) = outcome {
        tracing::warn!(payment.reason = %reason, "payment outcome unknown; order left payment_pending");
    }
    let id = order.order.id;
    let updated = match outcome {
        Some(o) => orders::settle_payment(conn, id, &o.payment_result(), key)?,
        None => None,
    };
    let paid = updated
        .as_ref()
        .is_some_and(|r| r.status == OrderStatus::Paid);
    let now = match updated {
        Some(row) => OrderWithItems {
            order: row,
            items: order.items.clone(),
        },
        // Settled by someone else meanwhile (or resumed after settling):
        // answer with what is stored, and complete the key with it.
        None => {
            let current = orders::find(conn, id)?.ok_or(DbError::NotFound)?;
            if let Some(key) = key {
                idempotency::complete(conn, key, &current.order)?;
            }
            current
        }
    };
    let (status, body) = response_for(now);
    Ok((status, body, paid))
}
