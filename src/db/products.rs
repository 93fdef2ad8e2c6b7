//! Catalog queries.

use diesel::prelude::*;

use super::models::{NewProduct, ProductChanges, ProductRow};
use super::schema::products::dsl as p;
use super::DbError;

pub fn list(conn: &mut PgConnection) -> Result<Vec<ProductRow>, DbError> {
    Ok(p::products
        .select(ProductRow::as_select())
        .order(p::sku.asc())
        .load(conn)?)
}

pub fn find_by_skus(conn: &mut PgConnection, skus: &[String]) -> Result<Vec<ProductRow>, DbError> {
    Ok(p::products
        .filter(p::sku.eq_any(skus))
        .select(ProductRow::as_select())
        .load(conn)?)
}

/// Inserts a product; `None` when the sku is already taken.
pub fn insert(conn: &mut PgConnection, new: &NewProduct) -> Result<Option<ProductRow>, DbError> {
    Ok(diesel::insert_into(p::products)
        .values(new)
        .on_conflict_do_nothing()
        .returning(ProductRow::as_returning())
        .get_result(conn)
        .optional()?)
}

/// Applies `changes`; `None` when no product has that sku.
pub fn update(
    conn: &mut PgConnection,
    sku: &str,
    changes: &ProductChanges,
) -> Result<Option<ProductRow>, DbError> {
    Ok(diesel::update(p::products.find(sku))
        .set((changes, p::updated_at.eq(diesel::dsl::now)))
        .returning(ProductRow::as_returning())
        .get_result(conn)
        .optional()?)
}
