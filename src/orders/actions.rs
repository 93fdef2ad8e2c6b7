//! What ops do to an order: cancel it (a paid one is refunded), retry its
//! delivery, re-drive its unsettled money, and the bulk forms of cancel and
//! retry. Each is one locked transaction in `db::orders` that also owes the
//! job (outbox) and writes its audit entry, then a wake-up push.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::db::events::act_as;
use crate::db::{self, orders};
use crate::error::{ApiError, ConflictCode, FieldError};
use crate::http::body::{json_object, BODY_LIMIT};
use crate::http::orders::{order_view, parse_order_id};
use crate::http::views::OrderView;
use crate::http::AppState;
use crate::partners::payment::PaymentGateway;
use crate::staff::audit::{Audit, Outcome};

#[utoipa::path(
    post, path = "/api/v1/orders/{id}/cancel", tag = "ops", security(("ops_token" = [])),
    params(("id" = String, Path, description = "Order id (UUID)")),
    responses(
        (status = 200, description = "Cancelled; a paid order is refunded", body = OrderView),
        (status = 401, body = crate::http::views::ErrorBody),
        (status = 403, description = "forbidden: needs the refunder role", body = crate::http::views::ErrorBody),
        (status = 404, body = crate::http::views::ErrorBody),
        (status = 409, description = "invalid_state: shipped, being shipped, already cancelled or failed, or a delivery attempt's outcome is unknown", body = crate::http::views::ErrorBody),
    )
)]
#[tracing::instrument(name = "cancel", skip_all, fields(order.id = %path.as_str()))]
pub async fn cancel_order(
    audit: Audit,
    path: web::Path<String>,
    state: web::Data<AppState>,
    gateway: web::Data<PaymentGateway>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_order_id(&path)?;
    cancel(&state, &gateway, &audit, id).await?;
    Ok(HttpResponse::Ok().json(order_view(&state, id).await?))
}

/// Cancels order `id` as `audit`'s actor (its entry written with the change).
async fn cancel(
    state: &AppState,
    gateway: &PaymentGateway,
    audit: &Audit,
    id: Uuid,
) -> Result<(), ApiError> {
    use crate::db::{orders::CancelRefusal, outbox};
    let a = audit.clone();
    let cancelled = db::unit(&state.pool, move |c| {
        a.run_on(c, Some(id.to_string()), |c| orders::cancel(c, id))
    })
    .await?;
    let cancelled = match cancelled {
        Ok(c) => c,
        Err(CancelRefusal::NotFound) => return Err(ApiError::NotFound),
        Err(CancelRefusal::InvalidState) => {
            return Err(ApiError::conflict(
                ConflictCode::InvalidState,
                "only payment_pending orders, and paid orders whose shipment is not being created, can be cancelled",
            ))
        }
        Err(CancelRefusal::DeliveryOutcomeUnknown) => {
            return Err(ApiError::conflict(
                ConflictCode::InvalidState,
                "the last delivery attempt got no answer, so the shipment may exist; \
                 the order can be cancelled once a delivery attempt learns the outcome \
                 (retry the delivery if it failed)",
            ))
        }
    };
    // A paid order is refunded now when the gateway answers; otherwise (and
    // for a payment_pending order, whose charge may still succeed) the owed
    // refund is settled by the refund job, with the same Idempotency-Key.
    let mut settled = false;
    if let (true, Some(intent)) = (cancelled.was_paid, cancelled.intent_id.as_deref()) {
        match gateway.refund(id, intent, None).await {
            Ok(refund) => {
                let intent = intent.to_owned();
                let actor = audit.actor().clone();
                db::unit(&state.pool, move |c| {
                    c.build_transaction().run(|c| {
                        act_as(c, &actor)?;
                        orders::record_refund(c, id, &intent, &refund.id)?;
                        outbox::done(c, outbox::OutboxKind::Refund, id)
                    })
                })
                .await?;
                settled = true;
            }
            Err(e) => {
                tracing::warn!(error = %e, "inline refund failed; the refund job will retry it")
            }
        }
    }
    if !settled {
        if let Err(e) = state
            .queue
            .push(crate::orders::Refund { order_id: id })
            .await
        {
            tracing::warn!(error = %e, "refund wake-up not pushed; the sweeper will push it");
        }
    }
    Ok(())
}

#[utoipa::path(
    post, path = "/api/v1/orders/{id}/retry-delivery", tag = "ops", security(("ops_token" = [])),
    params(("id" = String, Path, description = "Order id (UUID)")),
    responses(
        (status = 202, description = "Delivery queued again", body = OrderView),
        (status = 401, body = crate::http::views::ErrorBody),
        (status = 403, description = "forbidden: needs the operator role", body = crate::http::views::ErrorBody),
        (status = 404, body = crate::http::views::ErrorBody),
        (status = 409, description = "invalid_state: the delivery has not failed", body = crate::http::views::ErrorBody),
    )
)]
pub async fn retry_delivery(
    audit: Audit,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_order_id(&path)?;
    retry(&state, &audit, id).await?;
    Ok(HttpResponse::Accepted().json(order_view(&state, id).await?))
}

/// Queues the failed delivery of order `id` again, as `audit`'s actor.
async fn retry(state: &AppState, audit: &Audit, id: Uuid) -> Result<(), ApiError> {
    let a = audit.clone();
    let requeued = db::unit(&state.pool, move |c| {
        a.run_on(c, Some(id.to_string()), |c| {
            Ok(
                match crate::db::shipments::requeue_failed_delivery(c, id)? {
                    true => Ok(()),
                    false => Err(orders::exists(c, id)?),
                },
            )
        })
    })
    .await?;
    match requeued {
        Ok(()) => {}
        Err(false) => return Err(ApiError::NotFound),
        Err(true) => {
            return Err(ApiError::conflict(
                ConflictCode::InvalidState,
                "the delivery of this order has not failed",
            ))
        }
    }
    let stamp = chrono::Utc::now().timestamp_millis();
    let job = crate::orders::Deliver { order_id: id };
    if let Err(e) = state
        .queue
        .push_with(
            job,
            format!("deliver-{id}-m{stamp}"),
            std::time::Duration::ZERO,
        )
        .await
    {
        tracing::warn!(error = %e, "delivery wake-up not pushed; the sweeper will push it");
    }
    Ok(())
}

#[utoipa::path(
    post, path = "/api/v1/orders/{id}/reconcile", tag = "ops", security(("ops_token" = [])),
    params(("id" = String, Path, description = "Order id (UUID)")),
    responses(
        (status = 202, description = "The unsettled payment (payment_pending) or refund (cancelled, not refunded) is tried again now, with a new 72 h window", body = OrderView),
        (status = 401, body = crate::http::views::ErrorBody),
        (status = 403, description = "forbidden: needs the operator role", body = crate::http::views::ErrorBody),
        (status = 404, body = crate::http::views::ErrorBody),
        (status = 409, description = "invalid_state: neither its payment nor its refund is unsettled", body = crate::http::views::ErrorBody),
    )
)]
pub async fn reconcile(
    audit: Audit,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    use crate::db::outbox::OutboxKind;
    let id = parse_order_id(&path)?;
    let kind = db::unit(&state.pool, move |c| {
        audit.run(c, |c| orders::redrive_money(c, id))
    })
    .await?
    .map_err(|refusal| match refusal {
        orders::RedriveRefusal::NotFound => ApiError::NotFound,
        orders::RedriveRefusal::NothingOwed => ApiError::conflict(
            ConflictCode::InvalidState,
            "only a payment_pending order, or a cancelled one not yet refunded, has money to settle",
        ),
    })?;
    let pushed = match kind {
        OutboxKind::Refund => {
            state
                .queue
                .push_fresh(crate::orders::Refund { order_id: id }, "m")
                .await
        }
        _ => {
            state
                .queue
                .push_fresh(crate::orders::ReconcilePayment { order_id: id }, "m")
                .await
        }
    };
    if let Err(e) = pushed {
        tracing::warn!(error = %e, "re-drive wake-up not pushed; the sweeper will push it");
    }
    Ok(HttpResponse::Accepted().json(order_view(&state, id).await?))
}

/// The most ids one bulk request takes.
pub const BULK_MAX: usize = 100;

/// `{"ids": ["…", …]}`: 1 to [`BULK_MAX`] strings; repeated ids count once.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
pub struct BulkBody {
    pub ids: Vec<String>,
}

/// One id's answer in a bulk action.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BulkResult {
    pub id: String,
    /// What the single action would have answered: 200 or 202, 404, 409.
    pub status: u16,
    /// The single action's `error` (`code`, `message`), or null.
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BulkResults {
    pub results: Vec<BulkResult>,
}

async fn bulk_ids(req: &HttpRequest, payload: web::Payload) -> Result<Vec<String>, ApiError> {
    let body = json_object(req, payload, BODY_LIMIT).await?;
    let bad = |m: &str| ApiError::Validation(vec![FieldError::new("ids", m)]);
    let ids = body
        .get("ids")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("required: an array of order ids"))?;
    if ids.is_empty() || ids.len() > BULK_MAX {
        return Err(bad(&format!("1 to {BULK_MAX} order ids")));
    }
    if let Some(key) = body.keys().find(|k| k.as_str() != "ids") {
        return Err(ApiError::Validation(vec![FieldError::new(
            key.clone(),
            "unknown field",
        )]));
    }
    let mut out: Vec<String> = Vec::with_capacity(ids.len());
    for id in ids {
        let id = id
            .as_str()
            .ok_or_else(|| bad("every id must be a string"))?;
        if !out.iter().any(|seen| seen == id) {
            out.push(id.to_owned());
        }
    }
    Ok(out)
}

/// Runs `one` for each id, and turns its answer into a result; a refused id
/// gets its own audit entry (an accepted one's is written with its change).
async fn bulk<F, Fut>(
    state: &AppState,
    audit: &Audit,
    ids: Vec<String>,
    ok: u16,
    one: F,
) -> Result<HttpResponse, ApiError>
where
    F: Fn(Uuid) -> Fut,
    Fut: std::future::Future<Output = Result<(), ApiError>>,
{
    use actix_web::ResponseError as _;
    let mut results = Vec::with_capacity(ids.len());
    for raw in ids {
        let done = match parse_order_id(&raw) {
            Ok(id) => one(id).await,
            Err(e) => Err(e),
        };
        let result = match done {
            Ok(()) => BulkResult {
                id: raw,
                status: ok,
                error: None,
            },
            Err(e @ (ApiError::Unavailable(_) | ApiError::Unexpected(_))) => return Err(e),
            Err(e) => {
                let status = e.status_code().as_u16();
                let (a, target) = (audit.clone(), raw.clone());
                db::unit(&state.pool, move |c| {
                    a.record(c, Some(target), Outcome::of_status(status))
                })
                .await?;
                BulkResult {
                    id: raw,
                    status,
                    error: Some(e.body()["error"].clone()),
                }
            }
        };
        results.push(result);
    }
    Ok(HttpResponse::Ok().json(BulkResults { results }))
}

#[utoipa::path(
    post, path = "/api/v1/orders/bulk/cancel", tag = "ops", security(("ops_token" = [])),
    request_body = BulkBody,
    responses(
        (status = 200, description = "Each id's answer (200, 404 or 409), each audited", body = BulkResults),
        (status = 401), (status = 403), (status = 422), (status = 503),
    )
)]
pub async fn bulk_cancel(
    audit: Audit,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    gateway: web::Data<PaymentGateway>,
) -> Result<HttpResponse, ApiError> {
    let ids = bulk_ids(&req, payload).await?;
    bulk(&state, &audit, ids, 200, |id| {
        cancel(&state, &gateway, &audit, id)
    })
    .await
}

#[utoipa::path(
    post, path = "/api/v1/orders/bulk/retry-delivery", tag = "ops", security(("ops_token" = [])),
    request_body = BulkBody,
    responses(
        (status = 200, description = "Each id's answer (202, 404 or 409), each audited", body = BulkResults),
        (status = 401), (status = 403), (status = 422), (status = 503),
    )
)]
pub async fn bulk_retry_delivery(
    audit: Audit,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let ids = bulk_ids(&req, payload).await?;
    bulk(&state, &audit, ids, 202, |id| retry(&state, &audit, id)).await
}
