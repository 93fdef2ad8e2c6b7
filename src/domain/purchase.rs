//! The purchase request, parsed from a JSON object.
//!
//! Parsing walks the whole object and collects every problem, so a client
//! learns about all of them at once (docs/API.md: `error.fields`). Checks that
//! need the catalog (sku exists and is active, currency matches) are done by
//! the purchase unit of work, which appends to the same list.

use serde::Serialize;
use serde_json::{Map, Value};

use super::country::is_iso3166_alpha2;
use super::fields::{type_name, Fields};
use crate::error::FieldError;

pub const MAX_ITEMS: usize = 100;
pub const MAX_QUANTITY: i64 = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Customer {
    pub email: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemRequest {
    pub sku: String,
    pub quantity: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Address {
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    pub country: String,
}

/// A structurally valid purchase. Every string is trimmed and within bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurchaseRequest {
    pub customer: Customer,
    pub items: Vec<ItemRequest>,
    pub currency: String,
    pub shipping_address: Address,
    pub payment_method: String,
}

impl PurchaseRequest {
    /// Parses the request object, or returns every field error found.
    pub fn parse(body: &Map<String, Value>) -> Result<Self, Vec<FieldError>> {
        let mut p = Fields::default();
        let customer = p.object(body, "customer", "customer").map(|c| {
            let email = p.email(c, "email", "customer.email");
            let name = p.text(c, "name", "customer.name", 200);
            (email, name)
        });
        let items = items(&mut p, body);
        let currency = p.currency(body, "currency", "currency");
        let address = p
            .object(body, "shipping_address", "shipping_address")
            .map(|a| {
                let line1 = p.text(a, "line1", "shipping_address.line1", 200);
                let line2 = p.optional_text(a, "line2", "shipping_address.line2", 200);
                let city = p.text(a, "city", "shipping_address.city", 100);
                let postal_code = p.text(a, "postal_code", "shipping_address.postal_code", 20);
                let country = p
                    .string(a, "country", "shipping_address.country")
                    .and_then(|c| {
                        if is_iso3166_alpha2(c) {
                            Some(c.to_owned())
                        } else {
                            p.fail(
                                "shipping_address.country",
                                "must be an ISO 3166-1 alpha-2 code in upper case, e.g. \"GB\"",
                            );
                            None
                        }
                    });
                (line1, line2, city, postal_code, country)
            });
        let payment_method = p
            .string(body, "payment_method", "payment_method")
            .and_then(|m| {
                let n = m.chars().count();
                if (1..=255).contains(&n) {
                    Some(m.to_owned())
                } else {
                    p.fail("payment_method", "must be 1 to 255 characters");
                    None
                }
            });

        match (customer, items, currency, address, payment_method) {
            (
                Some((Some(email), Some(name))),
                Some(items),
                Some(currency),
                Some((Some(line1), Some(line2), Some(city), Some(postal_code), Some(country))),
                Some(payment_method),
            ) if p.errors.is_empty() => Ok(PurchaseRequest {
                customer: Customer { email, name },
                items,
                currency,
                shipping_address: Address {
                    line1,
                    line2,
                    city,
                    postal_code,
                    country,
                },
                payment_method,
            }),
            _ => Err(p.errors),
        }
    }
}

/// The order's lines: 1 to [`MAX_ITEMS`], each a sku (once) and a quantity.
fn items(p: &mut Fields, body: &Map<String, Value>) -> Option<Vec<ItemRequest>> {
    let list = match p.field(body, "items", "items")? {
        Value::Array(a) => a,
        other => {
            p.fail(
                "items",
                format!("must be an array, not {}", type_name(other)),
            );
            return None;
        }
    };
    if list.is_empty() || list.len() > MAX_ITEMS {
        p.fail("items", format!("must hold 1 to {MAX_ITEMS} items"));
        return None;
    }
    let before = p.errors.len();
    let mut items = Vec::with_capacity(list.len());
    let mut seen = std::collections::HashSet::new();
    for (i, entry) in list.iter().enumerate() {
        let path = format!("items[{i}]");
        let Value::Object(item) = entry else {
            p.fail(
                &path,
                format!("must be an object, not {}", type_name(entry)),
            );
            continue;
        };
        let sku_path = format!("{path}.sku");
        let sku = p.string(item, "sku", &sku_path).and_then(|s| {
            if s.is_empty() || s.chars().count() > 64 {
                p.fail(&sku_path, "must be 1 to 64 characters");
                None
            } else if !seen.insert(s.to_owned()) {
                p.fail(&sku_path, "appears more than once; use quantity instead");
                None
            } else {
                Some(s.to_owned())
            }
        });
        let qty_path = format!("{path}.quantity");
        let quantity = match p.field(item, "quantity", &qty_path) {
            Some(Value::Number(n)) => match n.as_i64() {
                Some(q) if (1..=MAX_QUANTITY).contains(&q) => i32::try_from(q).ok(),
                Some(_) => {
                    p.fail(&qty_path, format!("must be between 1 and {MAX_QUANTITY}"));
                    None
                }
                None => {
                    p.fail(&qty_path, "must be a whole number");
                    None
                }
            },
            Some(other) => {
                p.fail(
                    &qty_path,
                    format!("must be a number, not {}", type_name(other)),
                );
                None
            }
            None => None,
        };
        if let (Some(sku), Some(quantity)) = (sku, quantity) {
            items.push(ItemRequest { sku, quantity });
        }
    }
    (p.errors.len() == before).then_some(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn valid() -> Value {
        json!({
            "customer": {"email": "ada@example.com", "name": "  Ada Lovelace "},
            "items": [{"sku": "SKU-1", "quantity": 2}],
            "currency": "usd",
            "shipping_address": {"line1": "1 Main St", "line2": null, "city": "London",
                                 "postal_code": "N1 9GU", "country": "GB"},
            "payment_method": "pm_card_visa"
        })
    }

    fn parse(v: &Value) -> Result<PurchaseRequest, Vec<FieldError>> {
        PurchaseRequest::parse(v.as_object().unwrap())
    }

    fn fields(v: &Value) -> Vec<String> {
        parse(v).unwrap_err().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn a_valid_request_parses_and_trims() {
        let p = parse(&valid()).unwrap();
        assert_eq!(p.customer.name, "Ada Lovelace");
        assert_eq!(
            p.items,
            vec![ItemRequest {
                sku: "SKU-1".into(),
                quantity: 2
            }]
        );
        assert_eq!(p.shipping_address.line2, None);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut v = valid();
        v["customer"]["email"] = json!("not-an-email");
        v["customer"]["name"] = json!("  ");
        v["items"] = json!([{"sku": "A", "quantity": 0}, {"sku": "A", "quantity": 1.5}, 7]);
        v["currency"] = json!("USD");
        v["shipping_address"]["country"] = json!("gb");
        v["shipping_address"]["postal_code"] = json!("x".repeat(21));
        v["payment_method"] = json!("");
        assert_eq!(
            fields(&v),
            vec![
                "customer.email",
                "customer.name",
                "items[0].quantity",
                "items[1].sku",
                "items[1].quantity",
                "items[2]",
                "currency",
                "shipping_address.postal_code",
                "shipping_address.country",
                "payment_method",
            ]
        );
    }

    #[test]
    fn missing_and_mistyped_fields_are_named() {
        let v = json!({"customer": "ada", "items": {}, "currency": 5});
        assert_eq!(
            fields(&v),
            vec![
                "customer",
                "items",
                "currency",
                "shipping_address",
                "payment_method"
            ]
        );
    }

    #[test]
    fn limits_are_inclusive() {
        let mut v = valid();
        v["customer"]["name"] = json!("n".repeat(200));
        v["items"] = json!((0..100)
            .map(|i| json!({"sku": format!("S{i}"), "quantity": 1000}))
            .collect::<Vec<_>>());
        v["payment_method"] = json!("p".repeat(255));
        assert!(parse(&v).is_ok());
        v["customer"]["name"] = json!("n".repeat(201));
        v["items"] = json!((0..101)
            .map(|i| json!({"sku": format!("S{i}"), "quantity": 1}))
            .collect::<Vec<_>>());
        v["payment_method"] = json!("p".repeat(256));
        assert_eq!(fields(&v), vec!["customer.name", "items", "payment_method"]);
    }

    #[test]
    fn control_characters_and_long_emails_are_rejected() {
        let mut v = valid();
        v["customer"]["name"] = json!("Ada\u{0007}");
        v["customer"]["email"] = json!(format!("{}@example.com", "a".repeat(250)));
        assert_eq!(fields(&v), vec!["customer.email", "customer.name"]);
    }
}
