//! The fields of a gateway event (Stripe's shape) the inbox keeps; the
//! rest stays in the stored payload. Amounts and states are never taken
//! from here: processing reads the object from the gateway again.
//!
//! Read: `id` (`evt_…`), `type`, `data.object.id`, and the order it is
//! about: `data.object.metadata.order_id` (orderflow sets it on every
//! PaymentIntent), else found later by the object's PaymentIntent id.

use serde_json::Value;
use uuid::Uuid;

pub use crate::db::gateway_events::Received;

/// Why a verified body is not an event the inbox can store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a gateway event: {0}")]
pub struct NotAnEvent(pub &'static str);

const ID_MAX: usize = 255;

/// Reads `body` (already verified) as an event.
pub fn parse(body: &[u8]) -> Result<(Received, Value), NotAnEvent> {
    // JSONB cannot hold a NUL; no real event carries one.
    if body.windows(6).any(|w| w == b"\\u0000") {
        return Err(NotAnEvent("the body holds a NUL character"));
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|_| NotAnEvent("the body is not JSON"))?;
    let text = |v: &Value| v.as_str().map(str::to_owned);
    let id = text(&value["id"])
        .filter(|id| id.starts_with("evt_") && id.len() <= ID_MAX)
        .ok_or(NotAnEvent("`id` must be an `evt_…` string"))?;
    let kind = text(&value["type"])
        .filter(|t| !t.is_empty() && t.len() <= ID_MAX)
        .ok_or(NotAnEvent("`type` must be a string"))?;
    let object = &value["data"]["object"];
    let object_id = text(&object["id"]).filter(|o| o.len() <= ID_MAX);
    let order_id = object["metadata"]["order_id"]
        .as_str()
        .and_then(|o| Uuid::try_parse(o).ok());
    Ok((
        Received {
            id,
            kind,
            object_id,
            order_id,
        },
        value,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_gives_its_id_type_object_and_order() {
        let order = Uuid::new_v4();
        let body = serde_json::json!({
            "id": "evt_1", "type": "payment_intent.succeeded", "created": 1,
            "data": {"object": {"id": "pi_1", "metadata": {"order_id": order.to_string()}}}
        });
        let (got, _) = parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(
            got,
            Received {
                id: "evt_1".into(),
                kind: "payment_intent.succeeded".into(),
                object_id: Some("pi_1".into()),
                order_id: Some(order),
            }
        );
    }

    #[test]
    fn what_is_not_an_event_is_said_so() {
        assert!(parse(b"[]").is_err());
        assert!(parse(b"not json").is_err());
        assert!(parse(br#"{"id": "ch_1", "type": "x"}"#).is_err());
        assert!(parse(br#"{"id": "evt_1"}"#).is_err());
        assert!(parse(br#"{"id": "evt_1", "type": "a\u0000"}"#).is_err());
        let (got, _) = parse(br#"{"id": "evt_1", "type": "x", "data": {"object": {"metadata": {"order_id": "no"}}}}"#).unwrap();
        assert_eq!((got.object_id, got.order_id), (None, None));
    }
}
