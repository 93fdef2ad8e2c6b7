//! Catalog: `GET /api/v1/products` (public) and the ops create / patch /
//! delete. Delete makes a product inactive: past orders still name it.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{Map, Value};

use super::auth::OpsAuth;
use super::body::{json_object, BODY_LIMIT};
use super::views::{ProductList, ProductView};
use super::AppState;
use crate::db::models::{NewProduct, ProductChanges};
use crate::db::{self, products};
use crate::error::{ApiError, FieldError};

#[utoipa::path(get, path = "/api/v1/products", tag = "storefront", responses((status = 200, body = ProductList)))]
pub async fn list_products(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let rows = db::unit(&state.pool, products::list).await?;
    Ok(HttpResponse::Ok().json(ProductList {
        products: rows.into_iter().map(ProductView::from).collect(),
    }))
}

/// A sku from a path: one that no product can have (a NUL, which
/// PostgreSQL cannot store) is not found without asking the database.
fn known_sku(sku: String) -> Result<String, ApiError> {
    if sku.contains('\0') {
        Err(ApiError::NotFound)
    } else {
        Ok(sku)
    }
}

/// Field checks shared by create and patch; `required` for create.
struct ProductFields {
    sku: Option<String>,
    name: Option<String>,
    price_cents: Option<i64>,
    currency: Option<String>,
    active: Option<bool>,
}

fn parse_product(body: &Map<String, Value>, required: bool) -> Result<ProductFields, ApiError> {
    let mut errors = Vec::new();
    let mut text = |key: &str, max: usize, check: fn(&str) -> bool, what: &str| -> Option<String> {
        match body.get(key) {
            None | Some(Value::Null) => {
                if required {
                    errors.push(FieldError::new(key, "is required"));
                }
                None
            }
            Some(Value::String(s))
                if !s.trim().is_empty() && s.chars().count() <= max && check(s) =>
            {
                Some(s.trim().to_owned())
            }
            Some(_) => {
                errors.push(FieldError::new(key, what.to_owned()));
                None
            }
        }
    };
    let sku = if required {
        text(
            "sku",
            64,
            |s| s.chars().all(|c| c.is_ascii_graphic()),
            "must be 1–64 printable ASCII characters without spaces",
        )
    } else {
        None
    };
    let name = text(
        "name",
        200,
        |s| !s.chars().any(char::is_control),
        "must be 1–200 characters without control characters",
    );
    let currency = text(
        "currency",
        3,
        |s| s.len() == 3 && s.bytes().all(|b| b.is_ascii_lowercase()),
        "must be 3 lowercase letters",
    );
    let price_cents = match body.get("price_cents") {
        None | Some(Value::Null) => {
            if required {
                errors.push(FieldError::new("price_cents", "is required"));
            }
            None
        }
        Some(v) => match v.as_i64() {
            // The gateway cannot charge less than a cent, so a 0 price
            // would make every purchase of it fail.
            Some(n) if (1..=10_000_000_000).contains(&n) => Some(n),
            _ => {
                errors.push(FieldError::new(
                    "price_cents",
                    "must be a whole number of cents from 1 to 10000000000",
                ));
                None
            }
        },
    };
    let active = match body.get("active") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            errors.push(FieldError::new("active", "must be a boolean"));
            None
        }
    };
    if errors.is_empty() {
        Ok(ProductFields {
            sku,
            name,
            price_cents,
            currency,
            active,
        })
    } else {
        Err(ApiError::Validation(errors))
    }
}

#[utoipa::path(
    post, path = "/api/v1/products", tag = "ops", security(("ops_token" = [])),
    request_body = crate::http::views::NewProductBody,
    responses((status = 201, body = ProductView), (status = 401), (status = 409, description = "sku_exists"), (status = 422))
)]
pub async fn create_product(
    _: OpsAuth,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = json_object(&req, payload, BODY_LIMIT).await?;
    let f = parse_product(&body, true)?;
    let (Some(sku), Some(name), Some(price_cents), Some(currency)) =
        (f.sku, f.name, f.price_cents, f.currency)
    else {
        return Err(ApiError::Unexpected(anyhow::anyhow!(
            "required fields passed validation unset"
        )));
    };
    let new = NewProduct {
        sku,
        name,
        price_cents,
        currency,
        active: f.active.unwrap_or(true),
    };
    let row = db::unit(&state.pool, move |conn| products::insert(conn, &new))
        .await?
        .ok_or_else(|| ApiError::conflict("sku_exists", "a product with this sku exists"))?;
    Ok(HttpResponse::Created().json(ProductView::from(row)))
}

#[utoipa::path(
    patch, path = "/api/v1/products/{sku}", tag = "ops", security(("ops_token" = [])),
    params(("sku" = String, Path)),
    request_body = crate::http::views::ProductPatchBody,
    responses((status = 200, body = ProductView), (status = 401), (status = 404), (status = 422))
)]
pub async fn patch_product(
    _: OpsAuth,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = json_object(&req, payload, BODY_LIMIT).await?;
    let f = parse_product(&body, false)?;
    let changes = ProductChanges {
        name: f.name,
        price_cents: f.price_cents,
        currency: f.currency,
        active: f.active,
    };
    let sku = known_sku(path.into_inner())?;
    let row = db::unit(&state.pool, move |conn| {
        products::update(conn, &sku, &changes)
    })
    .await?
    .ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok().json(ProductView::from(row)))
}

#[utoipa::path(
    delete, path = "/api/v1/products/{sku}", tag = "ops", security(("ops_token" = [])),
    params(("sku" = String, Path)),
    responses((status = 204, description = "Now inactive"), (status = 401), (status = 404))
)]
pub async fn delete_product(
    _: OpsAuth,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let sku = known_sku(path.into_inner())?;
    let changes = ProductChanges {
        active: Some(false),
        ..ProductChanges::default()
    };
    db::unit(&state.pool, move |conn| {
        products::update(conn, &sku, &changes)
    })
    .await?
    .ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::NoContent().finish())
}
