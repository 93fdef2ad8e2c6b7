//! The gate every request passes before its handler: under `/api/v1`, it
//! finds who the request acts for (a bearer token: `OPS_TOKEN` or a staff
//! token; or the page's session cookie), checks the route's rule in
//! [`super::rules`], and audits every changing request, refused ones too.
//! A handler never checks a role itself.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage as _, ResponseError as _};

use super::audit::{Audit, Outcome};
use super::cache::Credential;
use super::rules::{self, Access};
use super::{session, token, Principal, Role, BOOTSTRAP_NAME};
use crate::db;
use crate::error::ApiError;
use crate::http::{auth, AppState};

const API: &str = "/api/v1";

/// The middleware (`actix_web::middleware::from_fn(gate)`).
pub async fn gate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    let Some(pattern) = api_pattern(&req) else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let access = rules::access(req.method(), &pattern);
    let (needed, action) = match access {
        Access::Public => return Ok(next.call(req).await?.map_into_boxed_body()),
        Access::Read(role) => (role, None),
        Access::Change(role, action) => (role, Some(action)),
    };
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return refuse(
            req,
            ApiError::Unexpected(anyhow::anyhow!("AppState missing")),
        );
    };
    let (principal, by_cookie) = match authenticate(&req, &state).await {
        Ok(Some(found)) => found,
        Ok(None) => return refuse(req, ApiError::Unauthorized),
        Err(e) => return refuse(req, e),
    };
    req.extensions_mut().insert(principal.clone());
    let audit = action.map(|action| {
        let audit = Audit::of_request(
            req.request(),
            principal.actor(),
            action,
            target(&req, &pattern),
        );
        req.extensions_mut().insert(audit.clone());
        audit
    });
    let refusal = if !principal.role.allows(needed) {
        Some(ApiError::Forbidden(format!(
            "this needs the {} role; {} has {}",
            needed.as_str(),
            principal.name,
            principal.role.as_str()
        )))
    } else if by_cookie && audit.is_some() && !session::same_origin(&req) {
        Some(ApiError::Forbidden(
            "a changing request made with the session cookie must come from the page's own origin"
                .into(),
        ))
    } else {
        None
    };
    if let Some(refusal) = refusal {
        if let Some(audit) = &audit {
            finish(&state, audit, 403).await;
        }
        return refuse(req, refusal);
    }
    let res = next.call(req).await?.map_into_boxed_body();
    if let Some(audit) = &audit {
        let status = res.status().as_u16();
        if !audit.written() || !res.status().is_success() {
            finish(&state, audit, status).await;
        }
    }
    Ok(res)
}

/// The route's pattern under `/api/v1` (`/orders/{id}/cancel`), if the
/// request is for one.
fn api_pattern(req: &ServiceRequest) -> Option<String> {
    let full = req.match_pattern()?;
    full.strip_prefix(API).map(str::to_owned)
}

fn refuse(
    req: ServiceRequest,
    e: ApiError,
) -> Result<ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    Ok(req.into_response(e.error_response()))
}

/// Writes the gate's entry; an entry that cannot be written is logged (the
/// answer has gone, or is going, to the client either way).
async fn finish(state: &AppState, audit: &Audit, status: u16) {
    let audit = audit.clone();
    let written = db::unit(&state.pool, move |c| {
        audit.record_request(c, Outcome::of_status(status))
    })
    .await;
    if let Err(e) = written {
        tracing::error!(error = %e, status, "audit entry not written");
    }
}

/// The principal of the request's credential, and whether it came by the
/// session cookie; `None` when there is none or it is unknown, revoked or
/// ended.
async fn authenticate(
    req: &ServiceRequest,
    state: &AppState,
) -> Result<Option<(Principal, bool)>, ApiError> {
    if let Some(bearer) = auth::bearer(req.request()) {
        return Ok(token_principal(state, bearer).await?.map(|p| (p, false)));
    }
    let Some(cookie) = req.cookie(session::COOKIE) else {
        return Ok(None);
    };
    let hash = token::hash(cookie.value());
    let found = state
        .staff
        .resolve(&state.pool, Credential::Session, hash)
        .await?;
    Ok(found.map(|p| (p, true)))
}

/// Who a presented token is: `OPS_TOKEN` (the bootstrap admin) or a live
/// staff token; `None` for anything else.
pub async fn token_principal(state: &AppState, token: &str) -> Result<Option<Principal>, ApiError> {
    if auth::matches(token, &state.ops_token_digest) {
        return Ok(Some(bootstrap()));
    }
    if !token.starts_with(token::TOKEN_PREFIX) {
        return Ok(None);
    }
    let hash = token::hash(token);
    Ok(state
        .staff
        .resolve(&state.pool, Credential::Token, hash)
        .await?)
}

/// The bootstrap admin, `OPS_TOKEN`.
pub fn bootstrap() -> Principal {
    Principal {
        name: BOOTSTRAP_NAME.into(),
        role: Role::Admin,
    }
}

/// The route's target: the value of its first path parameter (the order,
/// product, endpoint, gateway event or account). The router has not run
/// yet, so it is read from the path by the pattern's segments.
fn target(req: &ServiceRequest, pattern: &str) -> Option<String> {
    let at = pattern.split('/').position(|s| s.starts_with('{'))?;
    let path = req.path().strip_prefix(API)?;
    path.split('/').nth(at).map(str::to_owned)
}
