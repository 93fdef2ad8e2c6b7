//! `POST /api/v1/purchase` (docs/API.md): validate → record the order →
//! charge → mark it paid → trigger delivery.
//!
//! Two short units of work bracket the partner call, and no connection is
//! held while the gateway answers:
//!
//! ```text
//! unit 1 (tx): claim Idempotency-Key (with the new order's id) → check
//!              catalog → insert order (payment_pending) + items
//! gateway:     POST /v1/payment_intents (unconfirmed), key from the order id
//! unit:        record the intent id on the order (see `pay`)
//! gateway:     POST /v1/payment_intents/{id}/confirm: the charge
//! unit 2:      conditional update to paid | payment_failed (or keep
//!              pending) RETURNING the order + owe `deliver`, one statement;
//!              with a key, the response is stored in the same transaction
//! redis:       push Deliver (a wake-up; the outbox row is the truth)
//! ```
//!
//! If the database is unreachable, unit 1 fails and no payment is attempted
//! (503). If unit 2 fails after a charge, the order stays `payment_pending`
//! and the client gets 202: reconciliation settles it with the same gateway
//! key, so it is never charged twice.

mod pay;
mod units;

use std::sync::Arc;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use diesel::Connection;
use serde_json::{json, Map, Value};

use super::Deliver;
use crate::db::models::OrderWithItems;
use crate::db::{self, DbError};
use crate::domain::{OrderStatus, PurchaseRequest};
use crate::error::{ApiError, ConflictCode};
use crate::http::body::{fingerprint, json_object, BODY_LIMIT};
use crate::http::views::OrderView;
use crate::http::AppState;
use crate::partners::payment::{ChargeOutcome, PaymentGateway};
use units::{create_order, raw_skus, record_charge, Started, Unit1Error};

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
                ConflictCode::InvalidState,
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
    let order = match early_answer(start(&state, key.clone(), body).await?)? {
        Ok(order) => order,
        Err(answer) => return Ok(answer),
    };
    tracing::Span::current().record("order.id", tracing::field::display(order.order.id));
    let outcome = if order.order.status == OrderStatus::PaymentPending {
        pay::charge(&state, &gateway, &order.order).await
    } else {
        None // resumed an order someone else already settled
    };
    let order_id = order.order.id;
    let (status, body, paid) = finish(&state, order, outcome, key).await;
    if paid {
        if let Err(e) = state.queue.push(Deliver { order_id }).await {
            tracing::warn!(error = %e, "delivery wake-up not pushed; the outbox sweeper will push it");
        }
    }
    Ok(respond(status, body, false))
}

/// Unit 1 in its own unit of work, rolled back if it would commit past its
/// deadline: a partition may have held the statements past the point where
/// the client was answered 503 ("no payment attempted"), and then the order
/// must not exist, or reconciliation would charge it.
async fn start(
    state: &AppState,
    key: Option<String>,
    body: Map<String, Value>,
) -> Result<Started, ApiError> {
    let hash = key.as_ref().map(|_| fingerprint(&body));
    let parsed = PurchaseRequest::parse(&body);
    let skus = raw_skus(&body);
    let raw_currency = body
        .get("currency")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let lease = state.idempotency_lease;
    db::unit_before_deadline(&state.pool, move |conn, deadline| {
        let k = key.as_deref().zip(hash.as_deref());
        let recorded = conn.transaction(|conn| {
            let started = create_order(conn, k, lease, parsed, &skus, raw_currency.as_deref())?;
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
    .map_err(ApiError::Validation)
}

/// The order to charge, or the answer an earlier request with the same key
/// decided.
fn early_answer(started: Started) -> Result<Result<OrderWithItems, HttpResponse>, ApiError> {
    match started {
        Started::New(order) | Started::Resumed(order) => Ok(Ok(order)),
        Started::Replay { status, body } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Ok(Err(respond(status, body, true)))
        }
        Started::Reused => Err(ApiError::conflict(
            ConflictCode::IdempotencyKeyReused,
            "this Idempotency-Key was used with a different request body",
        )),
        Started::InProgress => Err(ApiError::conflict(
            ConflictCode::RequestInProgress,
            "a request with this Idempotency-Key is still in progress; retry shortly",
        )),
    }
}

/// Unit 2 in its own unit of work. If it fails the charge may have
/// happened: the order stays payment_pending, the client gets 202, and
/// reconciliation settles it with the same gateway key.
async fn finish(
    state: &AppState,
    order: OrderWithItems,
    outcome: Option<ChargeOutcome>,
    key: Option<String>,
) -> (StatusCode, Value, bool) {
    let order = Arc::new(order);
    let settled = {
        let order = Arc::clone(&order);
        db::unit(&state.pool, move |conn| {
            record_charge(conn, &order, outcome.as_ref(), key.as_deref())
        })
        .await
    };
    settled.unwrap_or_else(|e| {
        tracing::error!(error = %e, "could not record the payment outcome; answering 202");
        let (status, body) = response_for((*order).clone());
        (status, body, false)
    })
}
