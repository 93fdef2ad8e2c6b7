//! The payment gateway's events: the inbox it posts to (signature only, no
//! ops token) and the ops views of what arrived (`src/gateway/` says how).

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::db::{self, gateway_events as store};
use crate::error::{ApiError, FieldError};
use crate::gateway::{event, kind::Handled, verify, GatewayEventStatus, BODY_LIMIT};
use crate::staff::audit::Audit;
use crate::staff::Principal;

#[utoipa::path(
    post, path = "/api/v1/gateway/webhooks", tag = "gateway",
    params(("Stripe-Signature" = String, Header, description = "t=<unix>,v1=<hex>[,v1=<hex>…]")),
    responses(
        (status = 200, description = "Stored (or already stored: the same id again does nothing)"),
        (status = 400, description = "invalid_signature, or not an event", body = crate::http::views::ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = crate::http::views::ErrorBody),
        (status = 503, description = "The database is unavailable: the gateway sends it again")
    )
)]
pub async fn receive(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    metrics: web::Data<crate::metrics::Metrics>,
) -> Result<HttpResponse, ApiError> {
    let counted = |outcome: &str| metrics.gateway_events.with_label_values(&[outcome]).inc();
    let body = super::body::bytes(&req, payload, BODY_LIMIT)
        .await
        .inspect_err(|_| counted("invalid"))?;
    let header = req
        .headers()
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    // Verified before anything else: a forged event costs no database work.
    verify::check(
        header,
        &state.gateway_secrets,
        &body,
        Utc::now().timestamp(),
    )
    .map_err(|e| {
        counted("invalid");
        ApiError::InvalidSignature(refusal(&e).into())
    })?;
    let (received, value) = event::parse(&body).map_err(|e| {
        counted("invalid");
        ApiError::Malformed(e.to_string())
    })?;
    let handled = received.kind.parse::<Handled>().is_ok();
    let stored = db::unit(&state.pool, move |c| {
        store::insert_once(c, &received, &value, handled)
    })
    .await?;
    counted(if stored { "received" } else { "duplicate" });
    Ok(HttpResponse::Ok().json(serde_json::json!({"received": true, "duplicate": !stored})))
}

/// What the gateway's developer is told (never which secrets there are).
fn refusal(e: &crate::webhooks::signature::Refused) -> &'static str {
    use crate::webhooks::signature::Refused;
    match e {
        Refused::Malformed => "Stripe-Signature is missing or malformed (t=<unix>,v1=<hex>)",
        Refused::TooOld => "Stripe-Signature's t is more than 300 s from now",
        Refused::Mismatch => "no v1 in Stripe-Signature matches a configured secret",
    }
}

/// One inbox event, as ops see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct GatewayEventView {
    /// `evt_…`, the gateway's id.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub order_id: Option<String>,
    pub status: GatewayEventStatus,
    pub received_at: DateTime<Utc>,
    pub processed_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GatewayEventList {
    pub events: Vec<GatewayEventView>,
}

const LIST_DEFAULT: i64 = 50;
const LIST_MAX: i64 = 500;

/// `status` (one of the inbox's, empty = any) and `limit`.
fn list_query(query: &str) -> Result<(Option<GatewayEventStatus>, i64), ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).map_err(|e| {
        ApiError::Validation(vec![FieldError::new(
            "query",
            format!("malformed query string: {e}"),
        )])
    })?;
    let (mut status, mut limit, mut errors) = (None, LIST_DEFAULT, Vec::new());
    for (k, v) in pairs {
        match k.as_str() {
            "status" if v.is_empty() => {}
            "status" => match v.parse() {
                Ok(s) => status = Some(s),
                Err(_) => errors.push(FieldError::new(
                    "status",
                    "one of pending, processed, unmatched, ignored, failed",
                )),
            },
            "limit" => match v.parse::<i64>() {
                Ok(n) if (1..=LIST_MAX).contains(&n) => limit = n,
                _ => errors.push(FieldError::new(
                    "limit",
                    format!("must be an integer from 1 to {LIST_MAX}"),
                )),
            },
            _ => {}
        }
    }
    if errors.is_empty() {
        Ok((status, limit))
    } else {
        Err(ApiError::Validation(errors))
    }
}

#[utoipa::path(
    get, path = "/api/v1/gateway-events", tag = "ops", security(("ops_token" = [])),
    params(
        ("status" = Option<String>, Query, description = "pending | processed | unmatched | ignored | failed"),
        ("limit" = Option<i64>, Query, description = "1–500, default 50")
    ),
    responses((status = 200, body = GatewayEventList), (status = 401), (status = 422))
)]
pub async fn list_events(
    _: Principal,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (status, limit) = list_query(req.query_string())?;
    let rows = db::unit(&state.pool, move |c| store::list(c, status, limit)).await?;
    Ok(HttpResponse::Ok().json(GatewayEventList {
        events: rows
            .into_iter()
            .map(|r| GatewayEventView {
                id: r.id,
                kind: r.kind,
                order_id: r.order_id.map(|o| o.to_string()),
                status: r.status,
                received_at: r.received_at,
                processed_at: r.processed_at,
                error: r.error,
            })
            .collect(),
    }))
}

#[utoipa::path(
    post, path = "/api/v1/gateway-events/{id}/replay", tag = "ops", security(("ops_token" = [])),
    params(("id" = String, Path, description = "evt_…")),
    responses((status = 202), (status = 401), (status = 404))
)]
pub async fn replay_event(
    audit: Audit,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    db::unit(&state.pool, move |c| {
        audit.run(c, |c| Ok(store::replay(c, &id)?.then_some(()).ok_or(())))
    })
    .await?
    .map_err(|()| ApiError::NotFound)?;
    Ok(HttpResponse::Accepted().json(serde_json::json!({"status": "pending"})))
}
