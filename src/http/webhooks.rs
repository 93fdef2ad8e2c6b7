//! The webhook endpoints API (ops): register, list, change, delete, the
//! delivery log, resend; and an order's deliveries for the page.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use super::body::{json_object, BODY_LIMIT};
use super::views::{event_id, parse_event_id};
use super::AppState;
use crate::db::delivery_log::{self, LogLine, LogOf};
use crate::db::webhooks::{self as store, EndpointChanges, EndpointRow, NewEndpoint};
use crate::db::{self};
use crate::error::{ApiError, FieldError};
use crate::staff::audit::Audit;
use crate::staff::Principal;
use crate::webhooks::{endpoint, endpoint_id, fanout, guard, parse_endpoint_id};

#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointHealth {
    pub last_success_at: Option<DateTime<Utc>>,
    pub failing_since: Option<DateTime<Utc>>,
    pub consecutive_failures: i32,
    /// Set while the endpoint's circuit is open: until then nothing is
    /// sent to it; then one attempt probes it.
    pub circuit_open_until: Option<DateTime<Utc>>,
}

/// An endpoint; `secret` only in the answers to a registration and a
/// rotation (no `Debug`: it may hold the secret).
#[derive(Serialize, ToSchema)]
pub struct EndpointView {
    /// `we_…`
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub description: String,
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub created_at: DateTime<Utc>,
    pub health: EndpointHealth,
}

impl EndpointView {
    fn of(row: EndpointRow, secret: Option<String>) -> Self {
        EndpointView {
            id: endpoint_id(row.id),
            events: row.event_types(),
            url: row.url,
            description: row.description,
            enabled: row.enabled,
            secret,
            created_at: row.created_at,
            health: EndpointHealth {
                last_success_at: row.last_success_at,
                failing_since: row.failing_since,
                consecutive_failures: row.consecutive_failures,
                circuit_open_until: row.circuit_until.filter(|t| *t > Utc::now()),
            },
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct EndpointList {
    pub endpoints: Vec<EndpointView>,
}

/// One line of a delivery log.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookDeliveryView {
    pub endpoint_id: String,
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub order_id: Uuid,
    pub attempt: i32,
    /// `pending | delivered | retrying | failed`
    pub status: String,
    pub response_status: Option<i16>,
    pub error: Option<String>,
    pub duration_ms: Option<i32>,
    pub attempted_at: Option<DateTime<Utc>>,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

impl From<LogLine> for WebhookDeliveryView {
    fn from(l: LogLine) -> Self {
        WebhookDeliveryView {
            endpoint_id: endpoint_id(l.endpoint_id),
            event_id: event_id(l.event_id),
            kind: l.kind,
            order_id: l.order_id,
            attempt: l.attempt,
            status: l.status.as_str().to_owned(),
            response_status: l.response_status,
            error: l.error,
            duration_ms: l.duration_ms,
            attempted_at: l.attempted_at,
            next_attempt_at: l.next_attempt_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookDeliveryList {
    pub deliveries: Vec<WebhookDeliveryView>,
}

#[derive(Debug, serde::Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct EndpointBody {
    pub url: String,
    /// Event types, or `["*"]`.
    pub events: Vec<String>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

/// Parses and checks a body: shape, then (for a new URL) the target.
async fn input(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    creating: bool,
) -> Result<endpoint::EndpointInput, ApiError> {
    let body: Map<String, Value> = json_object(req, payload, BODY_LIMIT).await?;
    let input = endpoint::parse(&Value::Object(body), creating).map_err(ApiError::Validation)?;
    if let Some(url) = &input.url {
        guard::check_target(url, state.webhooks.allow_private_targets)
            .await
            .map_err(|e| ApiError::Validation(vec![FieldError::new("url", e.to_string())]))?;
    }
    Ok(input)
}

fn known_endpoint(raw: &str) -> Result<Uuid, ApiError> {
    parse_endpoint_id(raw).ok_or(ApiError::NotFound)
}

#[utoipa::path(
    post, path = "/api/v1/webhook-endpoints", tag = "ops", security(("ops_token" = [])),
    request_body = EndpointBody,
    responses((status = 201, body = EndpointView), (status = 401), (status = 422, body = crate::http::views::ErrorBody))
)]
pub async fn create_endpoint(
    audit: Audit,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let input = input(&req, payload, &state, true).await?;
    let (Some(url), Some(events)) = (input.url, input.events) else {
        return Err(ApiError::Unexpected(anyhow::anyhow!(
            "required fields passed validation unset"
        )));
    };
    let (id, secret) = (Uuid::new_v4(), endpoint::new_secret());
    let new = NewEndpoint {
        id,
        url: url.to_string(),
        events,
        description: input.description.unwrap_or_default(),
        enabled: input.enabled.unwrap_or(true),
        secret: state.secrets.seal(id, &secret),
    };
    audit.set_target(endpoint_id(id));
    let row = db::unit(&state.pool, move |c| {
        audit.apply(c, |c| store::create(c, &new))
    })
    .await?;
    Ok(HttpResponse::Created().json(EndpointView::of(row, Some(secret))))
}

#[utoipa::path(
    get, path = "/api/v1/webhook-endpoints", tag = "ops", security(("ops_token" = [])),
    responses((status = 200, body = EndpointList), (status = 401))
)]
pub async fn list_endpoints(
    _: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let rows = db::unit(&state.pool, store::list).await?;
    Ok(HttpResponse::Ok().json(EndpointList {
        endpoints: rows
            .into_iter()
            .map(|r| EndpointView::of(r, None))
            .collect(),
    }))
}

#[utoipa::path(
    patch, path = "/api/v1/webhook-endpoints/{id}", tag = "ops", security(("ops_token" = [])),
    params(("id" = String, Path, description = "we_…")),
    request_body = EndpointBody,
    responses((status = 200, body = EndpointView), (status = 401), (status = 404), (status = 422))
)]
pub async fn patch_endpoint(
    audit: Audit,
    path: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = known_endpoint(&path)?;
    let input = input(&req, payload, &state, false).await?;
    let changes = EndpointChanges {
        url: input.url.map(|u| u.to_string()),
        events: input.events,
        description: input.description,
        enabled: input.enabled,
    };
    let row = db::unit(&state.pool, move |c| {
        audit.run(c, |c| Ok(store::update(c, id, &changes)?.ok_or(())))
    })
    .await?
    .map_err(|()| ApiError::NotFound)?;
    if input.enabled == Some(true) {
        wake(&state, id).await;
    }
    Ok(HttpResponse::Ok().json(EndpointView::of(row, None)))
}

/// How long the old secret stays valid after a rotation, by default and
/// at most.
const KEEP_OLD_DEFAULT_SECS: u64 = 86_400;
const KEEP_OLD_MAX_SECS: u64 = 30 * 86_400;

#[derive(Debug, serde::Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct RotateBody {
    /// Seconds the old secret stays valid (0–2592000, default 86400);
    /// until then every delivery carries a `v1` for each.
    pub expire_old_in_secs: Option<u64>,
}

/// How long the old secret stays valid: the body's `expire_old_in_secs`
/// (an empty body takes the default).
async fn keep_old(
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<std::time::Duration, ApiError> {
    let empty = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .is_none()
        && req
            .headers()
            .get(actix_web::http::header::CONTENT_LENGTH)
            .is_none_or(|v| v.as_bytes() == b"0");
    let secs = if empty {
        KEEP_OLD_DEFAULT_SECS
    } else {
        let body = json_object(req, payload, BODY_LIMIT).await?;
        match body.get("expire_old_in_secs") {
            None | Some(Value::Null) => KEEP_OLD_DEFAULT_SECS,
            Some(v) => v
                .as_u64()
                .filter(|n| *n <= KEEP_OLD_MAX_SECS)
                .ok_or_else(|| {
                    ApiError::Validation(vec![FieldError::new(
                        "expire_old_in_secs",
                        format!("must be a whole number of seconds, 0 to {KEEP_OLD_MAX_SECS}"),
                    )])
                })?,
        }
    };
    Ok(std::time::Duration::from_secs(secs))
}

#[utoipa::path(
    post, path = "/api/v1/webhook-endpoints/{id}/rotate-secret", tag = "ops", security(("ops_token" = [])),
    params(("id" = String, Path, description = "we_…")),
    request_body(content = RotateBody, description = "optional"),
    responses((status = 200, body = EndpointView), (status = 401), (status = 404), (status = 422, body = crate::http::views::ErrorBody))
)]
pub async fn rotate_secret(
    audit: Audit,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = known_endpoint(&path)?;
    let keep = keep_old(&req, payload).await?;
    let secret = endpoint::new_secret();
    let sealed = state.secrets.seal(id, &secret);
    let row = db::unit(&state.pool, move |c| {
        audit.run(c, |c| {
            Ok(store::rotate_secret(c, id, &sealed, keep)?.ok_or(()))
        })
    })
    .await?
    .map_err(|()| ApiError::NotFound)?;
    Ok(HttpResponse::Ok().json(EndpointView::of(row, Some(secret))))
}

#[utoipa::path(
    delete, path = "/api/v1/webhook-endpoints/{id}", tag = "ops", security(("ops_token" = [])),
    params(("id" = String, Path, description = "we_…")),
    responses((status = 204), (status = 401), (status = 404))
)]
pub async fn delete_endpoint(
    audit: Audit,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = known_endpoint(&path)?;
    db::unit(&state.pool, move |c| {
        audit.run(c, |c| Ok(store::delete(c, id)?.then_some(()).ok_or(())))
    })
    .await?
    .map_err(|()| ApiError::NotFound)?;
    Ok(HttpResponse::NoContent().finish())
}

const LOG_DEFAULT: usize = 50;
const LOG_MAX: usize = 500;

#[utoipa::path(
    get, path = "/api/v1/webhook-endpoints/{id}/deliveries", tag = "ops", security(("ops_token" = [])),
    params(("id" = String, Path, description = "we_…"), ("limit" = Option<i64>, Query, description = "1–500, default 50")),
    responses((status = 200, body = WebhookDeliveryList), (status = 401), (status = 404), (status = 422))
)]
pub async fn endpoint_deliveries(
    _: Principal,
    path: web::Path<String>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = known_endpoint(&path)?;
    let limit = log_limit(req.query_string())?;
    let lines = db::unit(&state.pool, move |c| {
        store::find(c, id)?
            .map(|_| delivery_log::log(c, LogOf::Endpoint(id), limit))
            .transpose()
    })
    .await?
    .ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok().json(WebhookDeliveryList {
        deliveries: lines.into_iter().map(Into::into).collect(),
    }))
}

fn log_limit(query: &str) -> Result<i64, ApiError> {
    let q = super::query::Listing::parse(query, LOG_DEFAULT, LOG_MAX)?;
    if q.errors.is_empty() {
        Ok(q.limit as i64)
    } else {
        Err(ApiError::Validation(q.errors))
    }
}

#[utoipa::path(
    get, path = "/api/v1/orders/{id}/webhook-deliveries", tag = "ops", security(("ops_token" = [])),
    params(("id" = String, Path, description = "Order id (UUID)")),
    responses((status = 200, body = WebhookDeliveryList), (status = 401), (status = 404))
)]
pub async fn order_deliveries(
    _: Principal,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = super::orders::parse_order_id(&path)?;
    let lines = db::unit(&state.pool, move |c| {
        crate::db::orders::exists(c, id)?
            .then(|| delivery_log::log(c, LogOf::Order(id), LOG_MAX as i64))
            .transpose()
    })
    .await?
    .ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok().json(WebhookDeliveryList {
        deliveries: lines.into_iter().map(Into::into).collect(),
    }))
}

#[utoipa::path(
    post, path = "/api/v1/webhook-endpoints/{id}/events/{event_id}/resend", tag = "ops", security(("ops_token" = [])),
    params(("id" = String, Path, description = "we_…"), ("event_id" = String, Path, description = "evt_…")),
    responses(
        (status = 202, description = "A new delivery of the event is queued"),
        (status = 401), (status = 403), (status = 404),
        (status = 422, description = "validation_failed: the endpoint does not subscribe to the event's type"),
    )
)]
pub async fn resend(
    audit: Audit,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (endpoint, event) = path.into_inner();
    let endpoint = known_endpoint(&endpoint)?;
    let event = parse_event_id(&event).ok_or(ApiError::NotFound)?;
    db::unit(&state.pool, move |c| {
        audit.run(c, |c| store::resend(c, endpoint, event))
    })
    .await?
    .map_err(|refusal| match refusal {
        store::ResendRefusal::NotFound => ApiError::NotFound,
        store::ResendRefusal::NotSubscribed => ApiError::Validation(vec![FieldError::new(
            "event_id",
            "the endpoint does not subscribe to this event's type",
        )]),
    })?;
    wake(&state, endpoint).await;
    Ok(HttpResponse::Accepted().json(serde_json::json!({"status": "pending"})))
}

/// Wakes the endpoint's drainer now; if Redis is down, the sweep does.
async fn wake(state: &AppState, endpoint_id: Uuid) {
    fanout::wake(&state.queue, &[endpoint_id], "h").await;
}
