//! `GET /api/v1/orders/{id}` (public) and `GET /api/v1/orders` (ops).

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::views::{OrderList, OrderView};
use super::AppState;
use crate::db::{self, orders};
use crate::domain::search::Search;
use crate::domain::OrderStatus;
use crate::error::{ApiError, FieldError};
use crate::partners::payment::{GatewayError, PaymentGateway};
use crate::staff::Principal;

/// A path id that is not a UUID names no order: 404, like an unknown one.
pub fn parse_order_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound)
}

#[utoipa::path(
    get, path = "/api/v1/orders/{id}", tag = "storefront",
    params(("id" = String, Path, description = "Order id (UUID)")),
    responses(
        (status = 200, body = OrderView),
        (status = 404, description = "Unknown or malformed id", body = crate::http::views::ErrorBody),
    )
)]
pub async fn get_order(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_order_id(&path)?;
    Ok(HttpResponse::Ok().json(order_view(&state, id).await?))
}

/// Order `id` as the API shows it, read now; 404 if there is none.
pub async fn order_view(state: &AppState, id: Uuid) -> Result<OrderView, ApiError> {
    let order = db::unit(&state.pool, move |conn| orders::find(conn, id))
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(OrderView::from(order))
}

#[utoipa::path(
    get, path = "/api/v1/orders/{id}/events", tag = "ops", security(("ops_token" = [])),
    params(("id" = String, Path, description = "Order id (UUID)")),
    responses(
        (status = 200, body = crate::http::views::EventList),
        (status = 401, body = crate::http::views::ErrorBody),
        (status = 404, body = crate::http::views::ErrorBody),
    )
)]
pub async fn order_events(
    _: Principal,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_order_id(&path)?;
    let events = db::unit(&state.pool, move |c| crate::db::events::of_order(c, id))
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok().json(crate::http::views::EventList {
        events: events.into_iter().map(Into::into).collect(),
    }))
}

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;

/// Cursor text: `{created_at as µs since epoch}.{id}`; opaque to clients.
fn encode_cursor(c: &orders::Cursor) -> String {
    format!("{}.{}", c.created_at.timestamp_micros(), c.id.simple())
}

fn decode_cursor(s: &str) -> Option<orders::Cursor> {
    let (micros, id) = s.split_once('.')?;
    Some(orders::Cursor {
        created_at: DateTime::<Utc>::from_timestamp_micros(micros.parse().ok()?)?,
        id: Uuid::parse_str(id).ok()?,
    })
}

#[derive(Debug)]
struct ListQuery {
    status: Option<OrderStatus>,
    stuck: bool,
    disputed: bool,
    limit: i64,
    cursor: Option<orders::Cursor>,
    search: Option<Search>,
    created_from: Option<DateTime<Utc>>,
    created_to: Option<DateTime<Utc>>,
}

fn parse_list_query(query: &str) -> Result<ListQuery, ApiError> {
    let mut listing =
        super::query::Listing::parse(query, DEFAULT_LIMIT as usize, MAX_LIMIT as usize)?;
    let mut cursor = None;
    let (mut search, mut created_from, mut created_to) = (None, None, None);
    for (k, v) in &listing.rest {
        match k.as_str() {
            _ if v.is_empty() => {}
            "cursor" => match decode_cursor(v) {
                Some(c) => cursor = Some(c),
                None => listing.errors.push(FieldError::new(
                    "cursor",
                    "not a cursor from a previous page",
                )),
            },
            "q" => match Search::parse(v) {
                Ok(s) => search = Some(s),
                Err(why) => listing.errors.push(FieldError::new("q", why)),
            },
            "created_from" => created_from = instant("created_from", v, &mut listing.errors),
            "created_to" => created_to = instant("created_to", v, &mut listing.errors),
            _ => {}
        }
    }
    if !listing.errors.is_empty() {
        return Err(ApiError::Validation(listing.errors));
    }
    Ok(ListQuery {
        status: listing.status,
        stuck: listing.stuck,
        disputed: listing.disputed,
        limit: listing.limit as i64,
        cursor,
        search,
        created_from,
        created_to,
    })
}

/// An RFC 3339 instant parameter.
fn instant(name: &str, v: &str, errors: &mut Vec<FieldError>) -> Option<DateTime<Utc>> {
    match DateTime::parse_from_rfc3339(v) {
        Ok(t) => Some(t.with_timezone(&Utc)),
        Err(_) => {
            errors.push(FieldError::new(
                name,
                "an RFC 3339 instant, e.g. 2026-12-01T00:00:00Z",
            ));
            None
        }
    }
}

/// Fills in the order a searched intent id's intent names, asking the
/// gateway (an intent it does not know finds nothing).
async fn resolve(search: Search, gateway: &PaymentGateway) -> Result<Search, ApiError> {
    let Search::Intent { intent, .. } = search else {
        return Ok(search);
    };
    let order = match gateway.intent(&intent).await {
        Ok(body) => crate::gateway::fact::order_of(&body),
        Err(GatewayError::Status { status, .. }) if (400..500).contains(&status) => None,
        Err(e) => {
            return Err(ApiError::Unavailable(format!(
                "searching by a payment intent id asks the gateway: {e}"
            )))
        }
    };
    Ok(Search::Intent { intent, order })
}

#[utoipa::path(
    get, path = "/api/v1/orders", tag = "ops", security(("ops_token" = [])),
    params(
        ("status" = Option<String>, Query, description = "Only orders in this status"),
        ("stuck" = Option<bool>, Query, description = "true: only stuck orders"),
        ("disputed" = Option<bool>, Query, description = "true: only orders with a chargeback (dispute)"),
        ("q" = Option<String>, Query, description = "An order id or its prefix (≥ 8 hex digits), a customer email (case-insensitive, whole), a tracking number, or a payment intent id (pi_…)"),
        ("created_from" = Option<String>, Query, description = "RFC 3339: only orders created at or after"),
        ("created_to" = Option<String>, Query, description = "RFC 3339: only orders created before"),
        ("limit" = Option<i64>, Query, description = "1–500, default 50"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, body = OrderList),
        (status = 401, body = crate::http::views::ErrorBody),
        (status = 422, body = crate::http::views::ErrorBody),
    )
)]
pub async fn list_orders(
    _: Principal,
    req: HttpRequest,
    state: web::Data<AppState>,
    gateway: web::Data<PaymentGateway>,
) -> Result<HttpResponse, ApiError> {
    let q = parse_list_query(req.query_string())?;
    let search = match q.search {
        Some(s) => Some(resolve(s, &gateway).await?),
        None => None,
    };
    let filter = orders::ListFilter {
        status: q.status,
        stuck: q.stuck.then_some(state.stuck),
        disputed: q.disputed,
        search,
        created_from: q.created_from,
        created_to: q.created_to,
    };
    // Fetch one extra row to know whether another page exists.
    let mut page = db::unit(&state.pool, move |conn| {
        orders::list(conn, filter, q.cursor, q.limit + 1)
    })
    .await?;
    let next_cursor = if page.len() as i64 > q.limit {
        page.truncate(q.limit as usize);
        page.last().map(|o| {
            encode_cursor(&orders::Cursor {
                created_at: o.order.created_at,
                id: o.order.id,
            })
        })
    } else {
        None
    };
    let rules = state.stuck;
    Ok(HttpResponse::Ok().json(OrderList {
        orders: page
            .into_iter()
            .map(|o| {
                let (status, since) = (o.order.status, o.order.status_since);
                OrderView::from(o).judged(&rules, status, since)
            })
            .collect(),
        next_cursor,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_rejected() {
        let c = orders::Cursor {
            created_at: DateTime::<Utc>::from_timestamp_micros(1_795_600_000_123_456).unwrap(),
            id: Uuid::new_v4(),
        };
        assert_eq!(decode_cursor(&encode_cursor(&c)), Some(c));
        for bad in [
            "",
            "abc",
            "1.",
            ".x",
            "1.not-a-uuid",
            "99999999999999999999.00000000000000000000000000000000",
        ] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
    }

    #[test]
    fn list_query_reports_every_bad_parameter() {
        match parse_list_query("status=lost&limit=501&cursor=zzz") {
            Err(ApiError::Validation(f)) => {
                let names: Vec<_> = f.iter().map(|e| e.field.as_str()).collect();
                assert_eq!(names, ["status", "limit", "cursor"]);
            }
            other => panic!("{other:?}"),
        }
        let q = parse_list_query("status=paid&limit=500").unwrap();
        assert_eq!((q.status, q.limit), (Some(OrderStatus::Paid), 500));
    }
}
