//! `POST /api/v1/purchase` (docs/API.md): validate → record the order →
//! charge → mark it paid → trigger delivery.
//!
//! Two short units of work bracket the partner call, and no connection is
//! held while the gateway answers:
//!
//! ```text
//! unit 1 (tx): claim Idempotency-Key (with the new order's id) → check
//!              catalog → insert order (payment_pending) + items
//! gateway:     POST /v1/payment_intents, Idempotency-Key from the order id
//! unit 2 (one statement): conditional update to paid | payment_failed (or
//!              keep pending) + owe `deliver` + store the response on the key
//! redis:       push Deliver (a wake-up; the owed row is the truth)
//! ```
//!
//! If the database is unreachable, unit 1 fails and no payment is attempted
//! (503). If unit 2 fails after a charge, the order stays `payment_pending`
//! and the client gets 202: reconciliation settles it with the same gateway
//! key, so it is never charged twice.

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{SubsecRound, Utc};
use diesel::Connection;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::body::{fingerprint, json_object, BODY_LIMIT};
use super::views::OrderView;
use super::AppState;
use crate::db::idempotency::{self, Claim};
use crate::db::models::{OrderItemRow, OrderRow, OrderWithItems};
use crate::db::orders;
use crate::db::{self, products, DbError};
use crate::domain::{DeliveryStatus, OrderStatus, PurchaseRequest};
use crate::error::{ApiError, FieldError};
use crate::jobs::Deliver;
use crate::partners::payment::{Charge, ChargeOutcome, PaymentGateway};

/// What unit 1 decided.
enum Started {
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
enum Unit1Error {
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

/// Reads and checks the `Idempotency-Key` header: 1–255 printable ASCII.
fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let mut values = req.headers().get_all("idempotency-key");
    let Some(v) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::InvalidIdempotencyKey);
    }
    let bytes = v.as_bytes();
    if bytes.is_empty() || bytes.len() > 255 || !bytes.iter().all(|b| (0x20..=0x7e).contains(b)) {
        return Err(ApiError::InvalidIdempotencyKey);
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// The skus named in the raw body, with their item index, for the catalog
/// check (done even when other fields are invalid, so every error shows).
fn raw_skus(body: &Map<String, Value>) -> Vec<(usize, String)> {
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
fn record(
    conn: &mut diesel::PgConnection,
    key: Option<(&str, &str)>,
    lease: std::time::Duration,
    parsed: Result<PurchaseRequest, Vec<FieldError>>,
    skus: &[(usize, String)],
    raw_currency: Option<&str>,
) -> Result<Started, Unit1Error> {
    let id = Uuid::new_v4();
    if let Some((key, hash)) = key {
        match idempotency::claim(conn, key, hash, id, lease)? {
            Claim::Claimed | Claim::TakenOver { order_id: None } => {}
            Claim::TakenOver { order_id: Some(id) } => {
                return match orders::find(conn, id)? {
                    Some(order) => Ok(Started::Resumed(order)),
                    None => Err(DbError::Other(anyhow::anyhow!(
                        "idempotency key points at a missing order"
                    ))
                    .into()),
                };
            }
            Claim::Reused => return Ok(Started::Reused),
            Claim::InProgress => return Ok(Started::InProgress),
            Claim::Completed { status, body } => return Ok(Started::Replay { status, body }),
        }
    }

    let mut errors = parsed.as_ref().err().cloned().unwrap_or_default();
    let wanted: Vec<String> = skus.iter().map(|(_, s)| s.clone()).collect();
    let catalog: HashMap<String, _> = products::find_by_skus(conn, &wanted)?
        .into_iter()
        .map(|p| (p.sku.clone(), p))
        .collect();
    for (i, sku) in skus {
        match catalog.get(sku) {
            None => errors.push(FieldError::new(
                format!("items[{i}].sku"),
                format!("unknown sku `{sku}`"),
            )),
            Some(p) if !p.active => errors.push(FieldError::new(
                format!("items[{i}].sku"),
                format!("`{sku}` is no longer sold"),
            )),
            Some(p) => {
                if let Some(c) = raw_currency.filter(|c| *c != p.currency && c.len() == 3) {
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
    let request = match parsed {
        Ok(r) if errors.is_empty() => r,
        _ => return Err(Unit1Error::Invalid(errors)),
    };

    let now = Utc::now().trunc_subsecs(6);
    let mut items = Vec::with_capacity(request.items.len());
    let mut total: i64 = 0;
    for (line_no, item) in request.items.iter().enumerate() {
        let product = catalog
            .get(&item.sku)
            .ok_or_else(|| DbError::Other(anyhow::anyhow!("catalog changed under us")))?;
        let line_total = product
            .price_cents
            .checked_mul(i64::from(item.quantity))
            .and_then(|t| {
                total = total.checked_add(t)?;
                Some(t)
            })
            .ok_or_else(|| {
                Unit1Error::Invalid(vec![FieldError::new(
                    "items",
                    "the order total is too large",
                )])
            })?;
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
    };
    orders::insert(conn, &order, &items)?;
    Ok(Started::New(OrderWithItems { order, items }))
}

/// The status and body the contract gives an order in this state.
pub fn response_for(order: OrderWithItems) -> (StatusCode, Value) {
    let status = order.order.status;
    let decline_code = order.order.decline_code.clone();
    let view = OrderView::from(order);
    match status {
        OrderStatus::PaymentPending => (StatusCode::ACCEPTED, json!(view)),
        OrderStatus::PaymentFailed => {
            let err = ApiError::PaymentDeclined {
                decline_code: decline_code.unwrap_or_else(|| "generic_decline".into()),
                message: "The payment was declined.".into(),
                order: json!(view),
            };
            (StatusCode::PAYMENT_REQUIRED, err.body())
        }
        OrderStatus::Cancelled => {
            let err = ApiError::conflict(
                "invalid_state",
                "the order was cancelled while it was being paid",
            );
            (StatusCode::CONFLICT, err.body())
        }
        _ => (StatusCode::CREATED, json!(view)),
    }
}

fn respond(status: StatusCode, body: Value, replayed: bool) -> HttpResponse {
    let mut b = HttpResponse::build(status);
    if status == StatusCode::ACCEPTED {
        if let Some(id) = body.get("id").and_then(Value::as_str) {
            b.insert_header((header::LOCATION, format!("/api/v1/orders/{id}")));
        }
    }
    if replayed {
        b.insert_header(("Idempotent-Replayed", "true"));
    }
    b.json(body)
}

/// How long before its deadline the purchase's first unit still commits.
const COMMIT_MARGIN: std::time::Duration = std::time::Duration::from_millis(250);

#[utoipa::path(
    post, path = "/api/v1/purchase", tag = "storefront",
    request_body = crate::http::views::PurchaseBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "1–255 printable ASCII; a retry with the same key and body within 24 h replays the first response")),
    responses(
        (status = 201, description = "Paid; delivery enqueued", body = OrderView),
        (status = 202, description = "Payment outcome unknown; settled later", body = OrderView),
        (status = 400, description = "Not a JSON object, or a malformed Idempotency-Key", body = crate::http::views::ErrorBody),
        (status = 402, description = "Payment declined", body = crate::http::views::ErrorBody),
        (status = 409, description = "idempotency_key_reused or request_in_progress", body = crate::http::views::ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = crate::http::views::ErrorBody),
        (status = 415, description = "Not application/json", body = crate::http::views::ErrorBody),
        (status = 422, description = "Invalid fields", body = crate::http::views::ErrorBody),
        (status = 503, description = "Database unreachable; no payment attempted", body = crate::http::views::ErrorBody),
    )
)]
#[tracing::instrument(name = "purchase", skip_all, fields(order.id = tracing::field::Empty))]
pub async fn purchase(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    gateway: web::Data<PaymentGateway>,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(&req)?;
    let body = json_object(&req, payload, BODY_LIMIT).await?;
    let hash = key.as_ref().map(|_| fingerprint(&body));
    let parsed = PurchaseRequest::parse(&body);
    let skus = raw_skus(&body);
    let raw_currency = body
        .get("currency")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let lease = state.idempotency_lease;

    let key1 = key.clone();
    let started = db::unit_before_deadline(&state.pool, move |conn, deadline| {
        let k = key1.as_deref().zip(hash.as_deref());
        let recorded = conn.transaction(|conn| {
            let started = record(conn, k, lease, parsed, &skus, raw_currency.as_deref())?;
            // A partition may have held the statements past the point
            // where the client was answered 503 ("no payment attempted"):
            // then the order must not exist, or reconciliation would charge it.
            if std::time::Instant::now() + COMMIT_MARGIN >= deadline {
                return Err(Unit1Error::Db(DbError::Unavailable(
                    "the database answered too late; rolled back".into(),
                )));
            }
            Ok(started)
        });
        match recorded {
            Ok(s) => Ok(Ok(s)),
            Err(Unit1Error::Invalid(fields)) => Ok(Err(fields)),
            Err(Unit1Error::Db(e)) => Err(e),
        }
    })
    .await?
    .map_err(ApiError::Validation)?;

    let order = match started {
        Started::Replay { status, body } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Ok(respond(status, body, true));
        }
        Started::Reused => {
            return Err(ApiError::conflict(
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request body",
            ))
        }
        Started::InProgress => {
            return Err(ApiError::conflict(
                "request_in_progress",
                "a request with this Idempotency-Key is still in progress; retry shortly",
            ))
        }
        Started::New(order) | Started::Resumed(order) => order,
    };
    tracing::Span::current().record("order.id", tracing::field::display(order.order.id));

    let outcome = if order.order.status == OrderStatus::PaymentPending {
        Some(
            gateway
                .charge(&Charge {
                    order_id: order.order.id,
                    amount_cents: order.order.total_cents,
                    currency: &order.order.currency,
                    payment_method: &order.order.payment_method,
                })
                .await,
        )
    } else {
        None // resumed an order someone else already settled
    };

    let order = Arc::new(order);
    let settled = {
        let order = Arc::clone(&order);
        let key = key.clone();
        db::unit(&state.pool, move |conn| {
            settle(conn, &order, outcome.as_ref(), key.as_deref())
        })
        .await
    };
    let (status, body, paid) = match settled {
        Ok(r) => r,
        Err(e) => {
            // The charge may have happened; the order stays payment_pending
            // and reconciliation settles it with the same gateway key.
            tracing::error!(error = %e, "could not record the payment outcome; answering 202");
            let (status, body) = response_for((*order).clone());
            (status, body, false)
        }
    };

    if paid {
        let order_id = order.order.id;
        if let Err(e) = state.queue.push(Deliver { order_id }).await {
            tracing::warn!(error = %e, "delivery wake-up not pushed; the owed-work sweeper will push it");
        }
    }
    Ok(respond(status, body, false))
}

/// Unit 2: record the charge outcome (owing delivery when paid) and store
/// the response on the key, answering from the order as the update returned
/// it. Without a key it is one statement; with one, a transaction of two.
/// Returns (status, body, paid now).
fn settle(
    conn: &mut diesel::PgConnection,
    order: &OrderWithItems,
    outcome: Option<&ChargeOutcome>,
    key: Option<&str>,
) -> Result<(StatusCode, Value, bool), DbError> {
    if let Some(ChargeOutcome::Unknown { reason, .. }) = outcome {
        tracing::warn!(payment.reason = %reason, "payment outcome unknown; order left payment_pending");
    }
    let id = order.order.id;
    let run = |conn: &mut diesel::PgConnection| {
        let updated = match outcome {
            Some(o) => orders::settle_payment(conn, id, &o.record())?,
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
            // answer with what is stored.
            None => orders::find(conn, id)?.ok_or(DbError::NotFound)?,
        };
        let (status, body) = response_for(now);
        if let Some(key) = key {
            idempotency::complete(conn, key, status.as_u16(), &body)?;
        }
        Ok::<_, DbError>((status, body, paid))
    };
    match key {
        Some(_) => conn.transaction(run),
        None => run(conn),
    }
}
