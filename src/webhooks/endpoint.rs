//! Registering an endpoint: what a registration or a change may say, and
//! the secret it gets (shown once).

use rand::Rng;
use serde_json::Value;

use super::guard;
use crate::domain::event::{EventType, ALL_EVENTS};
use crate::error::FieldError;

/// A registration (`POST`) or a change (`PATCH`, every field optional).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct EndpointInput {
    pub url: Option<url::Url>,
    pub events: Option<Vec<String>>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

const MAX_DESCRIPTION: usize = 500;

/// Parses a JSON body, collecting every field error. `creating` requires
/// `url` and `events`.
pub fn parse(body: &Value, creating: bool) -> Result<EndpointInput, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut input = EndpointInput::default();
    let Some(obj) = body.as_object() else {
        return Err(vec![FieldError::new("body", "must be a JSON object")]);
    };
    match obj.get("url") {
        None | Some(Value::Null) if creating => errors.push(FieldError::new("url", "is required")),
        None => {}
        Some(Value::String(s)) => match guard::check_shape(s) {
            Ok(u) => input.url = Some(u),
            Err(e) => errors.push(FieldError::new("url", e.to_string())),
        },
        Some(_) => errors.push(FieldError::new("url", "must be a string")),
    }
    match obj.get("events") {
        None | Some(Value::Null) if creating => {
            errors.push(FieldError::new("events", "is required"))
        }
        None => {}
        Some(v) => match events(v) {
            Ok(list) => input.events = Some(list),
            Err(e) => errors.push(e),
        },
    }
    match obj.get("description") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.chars().count() <= MAX_DESCRIPTION && !s.contains('\0') => {
            input.description = Some(s.clone())
        }
        Some(_) => errors.push(FieldError::new(
            "description",
            format!("must be a string of at most {MAX_DESCRIPTION} characters"),
        )),
    }
    match obj.get("enabled") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => input.enabled = Some(*b),
        Some(_) => errors.push(FieldError::new("enabled", "must be true or false")),
    }
    if errors.is_empty() {
        Ok(input)
    } else {
        Err(errors)
    }
}

/// A non-empty list of known event types, or `["*"]`.
fn events(v: &Value) -> Result<Vec<String>, FieldError> {
    let Some(items) = v.as_array() else {
        return Err(FieldError::new("events", "must be a list of event types"));
    };
    if items.is_empty() {
        return Err(FieldError::new(
            "events",
            "must name at least one event type",
        ));
    }
    let mut list = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Some(name) = item.as_str() else {
            return Err(FieldError::new(format!("events[{i}]"), "must be a string"));
        };
        if name != ALL_EVENTS && name.parse::<EventType>().is_err() {
            return Err(FieldError::new(
                format!("events[{i}]"),
                format!("unknown event type (known: {}, or \"*\")", known()),
            ));
        }
        if !list.iter().any(|n| n == name) {
            list.push(name.to_owned());
        }
    }
    Ok(list)
}

fn known() -> String {
    EventType::ALL
        .iter()
        .map(|t| t.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A fresh signing secret: `whsec_` and 32 random bytes in hex.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    format!("whsec_{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_registration_needs_a_url_and_known_events() {
        let ok = parse(
            &json!({"url": "https://shop.example/h", "events": ["order.paid", "order.paid"]}),
            true,
        )
        .unwrap();
        assert_eq!(ok.events, Some(vec!["order.paid".to_owned()]));
        let errs = parse(&json!({"url": "nope", "events": ["order.eaten"]}), true).unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["url", "events[0]"]);
        assert!(parse(&json!({"url": "https://x.example", "events": []}), true).is_err());
        assert!(parse(&json!({"events": ["*"]}), true).is_err());
        assert!(parse(&json!({"enabled": false}), false).is_ok());
        assert!(parse(&json!({"enabled": "no"}), false).is_err());
    }

    #[test]
    fn secrets_are_fresh_and_prefixed() {
        let (a, b) = (new_secret(), new_secret());
        assert!(a.starts_with("whsec_") && a.len() == 70);
        assert_ne!(a, b);
    }
}
