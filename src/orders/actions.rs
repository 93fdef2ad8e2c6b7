//! What ops do to an order: cancel it (a paid one is refunded), retry its
//! delivery, re-drive its unsettled money. Each is one locked transaction
//! in `db::orders` that also owes the job (outbox), then a wake-up push.

use actix_web::{web, HttpResponse};

use crate::db::{self, orders};
use crate::error::{ApiError, ConflictCode};
use crate::http::auth::OpsAuth;
use crate::http::orders::{order_view, parse_order_id};
use crate::http::views::OrderView;
use crate::http::AppState;

#[utoipa::path(
    post, path = "/api/v1/orders/{id}/cancel", tag = "ops", security(("ops_token" = [])),
    params(("id" = String, Path, description = "Order id (UUID)")),
    responses(
        (status = 200, description = "Cancelled; a paid order is refunded", body = OrderView),
        (status = 401, body = crate::http::views::ErrorBody),
        (status = 404, body = crate::http::views::ErrorBody),
        (status = 409, description = "invalid_state: shipped, being shipped, already cancelled or failed, or a delivery attempt's outcome is unknown", body = crate::http::views::ErrorBody),
    )
)]
#[tracing::instrument(name = "cancel", skip_all, fields(order.id = %path.as_str()))]
pub async fn cancel_order(
    _: OpsAuth,
    path: web::Path<String>,
    state: web::Data<AppState>,
    gateway: web::Data<crate::partners::payment::PaymentGateway>,
) -> Result<HttpResponse, ApiError> {
    use crate::db::{orders::CancelRefusal, outbox};
    let id = parse_order_id(&path)?;
    let cancelled = db::unit(&state.pool, move |c| orders::cancel(c, id)).await?;
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
                db::unit(&state.pool, move |c| {
                    c.build_transaction().run(|c| {
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
    Ok(HttpResponse::Ok().json(order_view(&state, id).await?))
}

#[utoipa::path(
    post, path = "/api/v1/orders/{id}/retry-delivery", tag = "ops", security(("ops_token" = [])),
    params(("id" = String, Path, description = "Order id (UUID)")),
    responses(
        (status = 202, description = "Delivery queued again", body = OrderView),
        (status = 401, body = crate::http::views::ErrorBody),
        (status = 404, body = crate::http::views::ErrorBody),
        (status = 409, description = "invalid_state: the delivery has not failed", body = crate::http::views::ErrorBody),
    )
)]
pub async fn retry_delivery(
    _: OpsAuth,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_order_id(&path)?;
    let requeued = db::unit(&state.pool, move |c| {
        crate::db::shipments::requeue_failed_delivery(c, id)
    })
    .await?;
    let order = order_view(&state, id).await?;
    if !requeued {
        return Err(ApiError::conflict(
            ConflictCode::InvalidState,
            "the delivery of this order has not failed",
        ));
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
    Ok(HttpResponse::Accepted().json(order))
}

#[utoipa::path(
    post, path = "/api/v1/orders/{id}/reconcile", tag = "ops", security(("ops_token" = [])),
    params(("id" = String, Path, description = "Order id (UUID)")),
    responses(
        (status = 202, description = "The unsettled payment (payment_pending) or refund (cancelled, not refunded) is tried again now, with a new 72 h window", body = OrderView),
        (status = 401, body = crate::http::views::ErrorBody),
        (status = 404, body = crate::http::views::ErrorBody),
        (status = 409, description = "invalid_state: neither its payment nor its refund is unsettled", body = crate::http::views::ErrorBody),
    )
)]
pub async fn reconcile(
    _: OpsAuth,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    use crate::db::outbox::OutboxKind;
    let id = parse_order_id(&path)?;
    let kind = db::unit(&state.pool, move |c| orders::redrive_money(c, id))
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
