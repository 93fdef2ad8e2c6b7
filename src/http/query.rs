//! The `status`, `stuck`, `disputed` and `limit` parameters shared by the listing
//! endpoints.

use crate::domain::OrderStatus;
use crate::error::{ApiError, FieldError};

/// A parsed listing query: its `status` filter and `limit`, the other
/// parameters for the caller, and every problem found so far.
pub struct Listing {
    pub status: Option<OrderStatus>,
    pub limit: usize,
    /// `stuck=true`: only stuck orders.
    pub stuck: bool,
    /// `disputed=true`: only orders with a chargeback.
    pub disputed: bool,
    pub rest: Vec<(String, String)>,
    pub errors: Vec<FieldError>,
}

impl Listing {
    /// Parses `status` (an order status, empty = none), `stuck` and `limit`
    /// (1..=`max`, default `default`). Only a malformed query string fails
    /// here; field problems are collected in `errors`.
    pub fn parse(query: &str, default: usize, max: usize) -> Result<Listing, ApiError> {
        let pairs = pairs(query)?;
        let mut q = Listing {
            status: None,
            limit: default,
            stuck: false,
            disputed: false,
            rest: Vec::new(),
            errors: Vec::new(),
        };
        for (k, v) in pairs {
            match k.as_str() {
                "status" if v.is_empty() => {}
                "status" => match v.parse::<OrderStatus>() {
                    Ok(s) => q.status = Some(s),
                    Err(_) => q
                        .errors
                        .push(FieldError::new("status", "not an order status")),
                },
                "limit" => match limit(&v, max) {
                    Ok(n) => q.limit = n,
                    Err(e) => q.errors.push(e),
                },
                "stuck" => q.stuck = flag("stuck", &v, &mut q.errors),
                "disputed" => q.disputed = flag("disputed", &v, &mut q.errors),
                _ => q.rest.push((k, v)),
            }
        }
        Ok(q)
    }
}

/// A query string's pairs, in order; a malformed one is a 422.
pub fn pairs(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str(query).map_err(|e| {
        ApiError::Validation(vec![FieldError::new(
            "query",
            format!("malformed query string: {e}"),
        )])
    })
}

/// A `limit` parameter: a whole number from 1 to `max`.
pub fn limit(value: &str, max: usize) -> Result<usize, FieldError> {
    match value.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(FieldError::new(
            "limit",
            format!("must be an integer from 1 to {max}"),
        )),
    }
}

/// A `true | false` parameter (empty is false).
fn flag(name: &str, value: &str, errors: &mut Vec<FieldError>) -> bool {
    match value {
        "true" => true,
        "false" | "" => false,
        _ => {
            errors.push(FieldError::new(name, "must be true or false"));
            false
        }
    }
}
