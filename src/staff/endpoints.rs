//! The staff, session and audit endpoints: `GET/POST /api/v1/staff`,
//! `DELETE /api/v1/staff/{name}`, `POST/GET/DELETE /api/v1/session` (the
//! page's sign-in, who am I, sign-out) and `GET /api/v1/audit`.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use serde_json::Value;

use super::audit::{Audit, Outcome};
use super::cache::Credential;
use super::store::{self, Account, AddRefusal, AuditFilter};
use super::{session, token, Principal, Role, BOOTSTRAP_NAME};
use crate::db;
use crate::domain::actor::Actor;
use crate::error::{ApiError, ConflictCode, FieldError};
use crate::http::body::{json_object, BODY_LIMIT};
use crate::http::query;
use crate::http::AppState;

/// A new account's name: what `staff add` and `POST /api/v1/staff` accept.
pub fn valid_name(name: &str) -> Result<(), String> {
    let ok_first = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok_rest = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
    if !(ok_first && ok_rest && name.len() <= 64) {
        return Err("1–64 of a-z, 0-9, '.', '_', '-', starting with a letter or digit".into());
    }
    if name == BOOTSTRAP_NAME {
        return Err(format!("{BOOTSTRAP_NAME} is the bootstrap admin's name"));
    }
    Ok(())
}

/// A new account and its token, shown this once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NewAccount {
    #[serde(flatten)]
    pub account: Account,
    /// `oft_…`: shown in this response only; only its hash is kept.
    pub token: String,
}

/// Adds an account (the CLI's `staff add` and `POST /api/v1/staff`).
pub fn add_account(
    conn: &mut diesel::PgConnection,
    name: &str,
    role: Role,
    by: &str,
) -> Result<Result<NewAccount, AddRefusal>, db::DbError> {
    let token = token::generate(token::TOKEN_PREFIX);
    Ok(store::add(conn, name, role, &token::hash(&token), by)?
        .map(|account| NewAccount { account, token }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StaffList {
    pub staff: Vec<Account>,
}

#[utoipa::path(
    get, path = "/api/v1/staff", tag = "staff", security(("ops_token" = [])),
    responses((status = 200, body = StaffList), (status = 401), (status = 403))
)]
pub async fn list_staff(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let staff = db::unit(&state.pool, store::list).await?;
    Ok(HttpResponse::Ok().json(StaffList { staff }))
}

#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
pub struct NewStaffBody {
    /// 1–64 of a-z, 0-9, `.`, `_`, `-`.
    pub name: String,
    /// viewer, operator, refunder or admin.
    pub role: String,
}

#[utoipa::path(
    post, path = "/api/v1/staff", tag = "staff", security(("ops_token" = [])),
    request_body = NewStaffBody,
    responses(
        (status = 201, description = "The account, with its token (shown once)", body = NewAccount),
        (status = 401), (status = 403),
        (status = 409, description = "staff_exists: the name is (or was) taken"),
        (status = 422),
    )
)]
pub async fn create_staff(
    audit: Audit,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = json_object(&req, payload, BODY_LIMIT).await?;
    let (name, role) = parse_new_staff(&body)?;
    audit.set_target(name.clone());
    let by = audit.actor().name.clone();
    let made = db::unit(&state.pool, move |c| {
        audit.run(c, |c| add_account(c, &name, role, &by))
    })
    .await?
    .map_err(|AddRefusal::NameTaken| {
        ApiError::conflict(
            ConflictCode::StaffExists,
            "an account of this name exists or existed",
        )
    })?;
    Ok(HttpResponse::Created().json(made))
}

fn parse_new_staff(body: &serde_json::Map<String, Value>) -> Result<(String, Role), ApiError> {
    let mut errors = Vec::new();
    let name = match body.get("name").and_then(Value::as_str) {
        Some(n) => match valid_name(n) {
            Ok(()) => Some(n.to_owned()),
            Err(why) => {
                errors.push(FieldError::new("name", why));
                None
            }
        },
        None => {
            errors.push(FieldError::new("name", "required, a string"));
            None
        }
    };
    let role = match body
        .get("role")
        .and_then(Value::as_str)
        .map(str::parse::<Role>)
    {
        Some(Ok(r)) => Some(r),
        Some(Err(why)) => {
            errors.push(FieldError::new("role", why));
            None
        }
        None => {
            errors.push(FieldError::new(
                "role",
                "required: viewer, operator, refunder or admin",
            ));
            None
        }
    };
    for key in body
        .keys()
        .filter(|k| !matches!(k.as_str(), "name" | "role"))
    {
        errors.push(FieldError::new(key.clone(), "unknown field"));
    }
    match (name, role) {
        (Some(n), Some(r)) if errors.is_empty() => Ok((n, r)),
        _ => Err(ApiError::Validation(errors)),
    }
}

#[utoipa::path(
    delete, path = "/api/v1/staff/{name}", tag = "staff", security(("ops_token" = [])),
    params(("name" = String, Path, description = "The account's name")),
    responses(
        (status = 204, description = "Revoked: its token and sessions stop working within 1 s on every serve"),
        (status = 401), (status = 403),
        (status = 404, description = "No live account of that name"),
    )
)]
pub async fn revoke_staff(
    audit: Audit,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner();
    if name.contains('\0') {
        return Err(ApiError::NotFound);
    }
    let revoked = db::unit(&state.pool, move |c| {
        audit.run(c, |c| Ok(store::revoke(c, &name)?.then_some(()).ok_or(())))
    })
    .await?;
    match revoked {
        Ok(()) => Ok(HttpResponse::NoContent().finish()),
        Err(()) => Err(ApiError::NotFound),
    }
}

/// Who a request acts for.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionView {
    pub name: String,
    pub role: Role,
}

impl From<&Principal> for SessionView {
    fn from(p: &Principal) -> Self {
        SessionView {
            name: p.name.clone(),
            role: p.role,
        }
    }
}

#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
pub struct SignInBody {
    /// `OPS_TOKEN` or a staff token.
    pub token: String,
}

#[utoipa::path(
    post, path = "/api/v1/session", tag = "staff",
    request_body = SignInBody,
    responses(
        (status = 200, description = "Signed in: the session cookie is set (HttpOnly, SameSite=Strict, Secure unless on loopback, 12 h)", body = SessionView),
        (status = 401, description = "The token is unknown or revoked"),
        (status = 422),
    )
)]
pub async fn sign_in(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = json_object(&req, payload, BODY_LIMIT).await?;
    let Some(presented) = body.get("token").and_then(Value::as_str) else {
        return Err(ApiError::Validation(vec![FieldError::new(
            "token",
            "required, a string",
        )]));
    };
    let principal = super::gate::token_principal(&state, presented)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    let id = token::generate(token::SESSION_PREFIX);
    let hash = token::hash(&id);
    let who = (principal.name != BOOTSTRAP_NAME).then(|| principal.name.clone());
    let audit = Audit::of_request(&req, principal.actor(), "session.start", None);
    let expires = chrono::Utc::now() + session::LIFETIME;
    db::unit(&state.pool, move |c| {
        audit.apply(c, |c| {
            store::start_session(c, &hash, who.as_deref(), expires)
        })
    })
    .await?;
    let host = req.connection_info().host().to_owned();
    Ok(HttpResponse::Ok()
        .cookie(session::cookie(&id, &host))
        .json(SessionView::from(&principal)))
}

#[utoipa::path(
    get, path = "/api/v1/session", tag = "staff", security(("ops_token" = [])),
    responses((status = 200, description = "Who this request acts for", body = SessionView), (status = 401))
)]
pub async fn whoami(principal: Principal) -> HttpResponse {
    HttpResponse::Ok().json(SessionView::from(&principal))
}

#[utoipa::path(
    delete, path = "/api/v1/session", tag = "staff", security(("ops_token" = [])),
    responses((status = 204, description = "Signed out: the session ends and its cookie is removed"), (status = 401))
)]
pub async fn sign_out(
    audit: Audit,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if let Some(cookie) = req.cookie(session::COOKIE) {
        let hash = token::hash(cookie.value());
        state.staff.forget(Credential::Session, &hash);
        db::unit(&state.pool, move |c| {
            audit.apply(c, |c| store::end_session(c, &hash))
        })
        .await?;
    }
    let host = req.connection_info().host().to_owned();
    Ok(HttpResponse::NoContent()
        .cookie(session::removal(&host))
        .finish())
}

/// One entry of the audit trail.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditEntryView {
    pub at: chrono::DateTime<chrono::Utc>,
    pub actor: Actor,
    /// e.g. `order.cancel`, `product.update`, `staff.revoke`.
    pub action: String,
    /// The order id, sku, endpoint, gateway event or account acted on.
    pub target: Option<String>,
    pub request_id: Option<String>,
    pub client_ip: Option<String>,
    /// `succeeded` (2xx), `refused` (403) or `failed` (any other answer).
    pub outcome: Outcome,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditList {
    pub entries: Vec<AuditEntryView>,
    pub next_cursor: Option<String>,
}

#[utoipa::path(
    get, path = "/api/v1/audit", tag = "staff", security(("ops_token" = [])),
    params(
        ("actor" = Option<String>, Query, description = "Only this actor's entries (a staff name)"),
        ("target" = Option<String>, Query, description = "Only entries on this target (an order id, sku, endpoint id, …)"),
        ("limit" = Option<i64>, Query, description = "1–500, default 50"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses((status = 200, body = AuditList), (status = 401), (status = 403), (status = 422))
)]
pub async fn list_audit(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (filter, limit) = parse_audit_query(req.query_string())?;
    let mut rows = db::unit(&state.pool, move |c| {
        store::list_audit(c, filter, limit + 1)
    })
    .await?;
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|(id, _)| id.to_string())
    } else {
        None
    };
    let entries = rows
        .into_iter()
        .map(|(_, r)| AuditEntryView {
            at: r.at,
            actor: Actor {
                kind: r.actor_type,
                name: r.actor_name,
            },
            action: r.action,
            target: r.target,
            request_id: r.request_id,
            client_ip: r.client_ip,
            outcome: r.outcome,
        })
        .collect();
    Ok(HttpResponse::Ok().json(AuditList {
        entries,
        next_cursor,
    }))
}

fn parse_audit_query(query: &str) -> Result<(AuditFilter, i64), ApiError> {
    let pairs = query::pairs(query)?;
    let mut filter = AuditFilter::default();
    let mut limit = 50;
    let mut errors = Vec::new();
    for (k, v) in pairs {
        match k.as_str() {
            "actor" | "target" if v.contains('\0') => {
                errors.push(FieldError::new(k, "no NUL characters"))
            }
            "actor" if !v.is_empty() => filter.actor = Some(v),
            "target" if !v.is_empty() => filter.target = Some(v),
            "actor" | "target" => {}
            "limit" => match query::limit(&v, 500) {
                Ok(n) => limit = n as i64,
                Err(e) => errors.push(e),
            },
            "cursor" if v.is_empty() => {}
            "cursor" => match v.parse::<i64>() {
                Ok(n) if n > 0 => filter.before = Some(n),
                _ => errors.push(FieldError::new(
                    "cursor",
                    "not a cursor from a previous page",
                )),
            },
            _ => errors.push(FieldError::new(k, "unknown parameter")),
        }
    }
    if errors.is_empty() {
        Ok((filter, limit))
    } else {
        Err(ApiError::Validation(errors))
    }
}
