//! Catalog: `GET /api/v1/products` (public) and the ops create / patch /
//! delete. Delete makes a product inactive: past orders still name it.

use actix_web::{web, HttpRequest, HttpResponse};

use super::body::{json_object, BODY_LIMIT};
use super::views::{ProductList, ProductView};
use super::AppState;
use crate::db::models::{NewProduct, ProductChanges};
use crate::db::{self, products};
use crate::domain::product::ProductRequest;
use crate::error::ApiError;
use crate::staff::audit::Audit;

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

#[utoipa::path(
    post, path = "/api/v1/products", tag = "ops", security(("ops_token" = [])),
    request_body = crate::http::views::NewProductBody,
    responses((status = 201, body = ProductView), (status = 401), (status = 409, description = "sku_exists"), (status = 422))
)]
pub async fn create_product(
    audit: Audit,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = json_object(&req, payload, BODY_LIMIT).await?;
    let f = ProductRequest::parse(&body, true).map_err(ApiError::Validation)?;
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
    audit.set_target(new.sku.clone());
    let row = db::unit(&state.pool, move |conn| {
        audit.run(conn, |c| Ok(products::insert(c, &new)?.ok_or(())))
    })
    .await?
    .map_err(|()| {
        ApiError::conflict(
            crate::error::ConflictCode::SkuExists,
            "a product with this sku exists",
        )
    })?;
    Ok(HttpResponse::Created().json(ProductView::from(row)))
}

#[utoipa::path(
    patch, path = "/api/v1/products/{sku}", tag = "ops", security(("ops_token" = [])),
    params(("sku" = String, Path)),
    request_body = crate::http::views::ProductPatchBody,
    responses((status = 200, body = ProductView), (status = 401), (status = 404), (status = 422))
)]
pub async fn patch_product(
    audit: Audit,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = json_object(&req, payload, BODY_LIMIT).await?;
    let f = ProductRequest::parse(&body, false).map_err(ApiError::Validation)?;
    let changes = ProductChanges {
        name: f.name,
        price_cents: f.price_cents,
        currency: f.currency,
        active: f.active,
    };
    let sku = known_sku(path.into_inner())?;
    let row = db::unit(&state.pool, move |conn| {
        audit.run(conn, |c| Ok(products::update(c, &sku, &changes)?.ok_or(())))
    })
    .await?
    .map_err(|()| ApiError::NotFound)?;
    Ok(HttpResponse::Ok().json(ProductView::from(row)))
}

#[utoipa::path(
    delete, path = "/api/v1/products/{sku}", tag = "ops", security(("ops_token" = [])),
    params(("sku" = String, Path)),
    responses((status = 204, description = "Now inactive"), (status = 401), (status = 404))
)]
pub async fn delete_product(
    audit: Audit,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let sku = known_sku(path.into_inner())?;
    let changes = ProductChanges {
        active: Some(false),
        ..ProductChanges::default()
    };
    db::unit(&state.pool, move |conn| {
        audit.run(conn, |c| Ok(products::update(c, &sku, &changes)?.ok_or(())))
    })
    .await?
    .map_err(|()| ApiError::NotFound)?;
    Ok(HttpResponse::NoContent().finish())
}
