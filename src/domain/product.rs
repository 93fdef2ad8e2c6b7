//! A product request (create or patch), parsed from a JSON object with the
//! same field validator as the purchase: every error at once.

use serde_json::{Map, Value};

use super::fields::Fields;
use crate::error::FieldError;

/// Fields of a product request; on a patch, absent ones are `None`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProductRequest {
    pub sku: Option<String>,
    pub name: Option<String>,
    pub price_cents: Option<i64>,
    pub currency: Option<String>,
    pub active: Option<bool>,
}

/// The highest price a product may have, in cents. The lowest is 1: the
/// gateway cannot charge less than a cent, so a 0 price would make every
/// purchase of it fail.
pub const MAX_PRICE_CENTS: i64 = 10_000_000_000;

impl ProductRequest {
    /// A create (`sku`, `name`, `price_cents`, `currency` required) when
    /// `create`, else a patch (any field, `sku` ignored: it is the path's).
    pub fn parse(body: &Map<String, Value>, create: bool) -> Result<Self, Vec<FieldError>> {
        let mut p = Fields::default();
        let wanted = |key: &str| create || present(body, key);
        let sku = if create { sku(&mut p, body) } else { None };
        let name = wanted("name")
            .then(|| p.text(body, "name", "name", 200))
            .flatten();
        let currency = wanted("currency")
            .then(|| p.currency(body, "currency", "currency"))
            .flatten();
        let price_cents = wanted("price_cents")
            .then(|| p.whole(body, "price_cents", "price_cents", 1..=MAX_PRICE_CENTS))
            .flatten();
        let active = present(body, "active")
            .then(|| p.boolean(body, "active", "active"))
            .flatten();
        let request = ProductRequest {
            sku,
            name,
            price_cents,
            currency,
            active,
        };
        p.finish(Some(request))
    }
}

/// Whether `body` names `key` with a value (null counts as absent).
fn present(body: &Map<String, Value>, key: &str) -> bool {
    body.get(key).is_some_and(|v| !v.is_null())
}

/// 1–64 printable ASCII characters without spaces.
fn sku(p: &mut Fields, body: &Map<String, Value>) -> Option<String> {
    let s = p.string(body, "sku", "sku")?.trim();
    if !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_graphic()) {
        Some(s.to_owned())
    } else {
        p.fail(
            "sku",
            "must be 1–64 printable ASCII characters without spaces",
        );
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value, create: bool) -> Result<ProductRequest, Vec<String>> {
        let Value::Object(m) = v else { panic!() };
        ProductRequest::parse(&m, create)
            .map_err(|errs| errs.into_iter().map(|e| e.field).collect())
    }

    #[test]
    fn a_create_needs_every_field_and_reports_all_errors() {
        assert_eq!(
            parse(json!({}), true),
            Err(vec![
                "sku".into(),
                "name".into(),
                "currency".into(),
                "price_cents".into()
            ])
        );
        assert_eq!(
            parse(
                json!({"sku": "a b", "name": "\u{7}", "price_cents": 0, "currency": "EUR", "active": 1}),
                true
            ),
            Err(vec![
                "sku".into(),
                "name".into(),
                "currency".into(),
                "price_cents".into(),
                "active".into()
            ])
        );
        let ok = parse(
            json!({"sku": " MUG ", "name": "Mug", "price_cents": 1200, "currency": "eur"}),
            true,
        );
        assert_eq!(
            ok.map(|r| (r.sku, r.active)),
            Ok((Some("MUG".into()), None))
        );
    }

    #[test]
    fn a_patch_checks_only_what_it_names() {
        assert_eq!(parse(json!({}), false), Ok(ProductRequest::default()));
        assert_eq!(
            parse(
                json!({"price_cents": 5, "active": false, "sku": "ignored"}),
                false
            )
            .map(|r| (r.price_cents, r.active, r.sku)),
            Ok((Some(5), Some(false), None))
        );
        assert_eq!(
            parse(json!({"currency": "usd1"}), false),
            Err(vec!["currency".into()])
        );
    }
}
