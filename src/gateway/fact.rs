//! What the gateway says now about an event's object: read again from the
//! gateway (never the event's own copy), reduced to the facts orderflow
//! records. Pure over the gateway's JSON, so unit tested on its shapes.
//!
//! Fields read (Stripe's names): PaymentIntent `id`, `status`,
//! `metadata.order_id`, `client_secret`, `next_action`,
//! `last_payment_error`; Charge `payment_intent`, `refunded`; Refund `id`,
//! `status`, `payment_intent`; Dispute `id`, `payment_intent`, `status`,
//! `reason`, `evidence_details.due_by`. A charge, refund or dispute names
//! its order through its intent, read too.

use chrono::DateTime;
use serde_json::Value;
use uuid::Uuid;

pub use crate::db::orders::Dispute;
use crate::partners::payment::{classify_charge, ChargeOutcome};

/// A fact about one order's money.
#[derive(Debug, Clone, PartialEq)]
pub enum Fact {
    /// Where the PaymentIntent stands.
    Intent(ChargeOutcome),
    /// The charge was refunded in full (by orderflow or someone else).
    Refunded,
    /// A refund failed after the gateway had accepted it.
    RefundFailed { refund_id: String },
    /// A refund that is fine (pending or succeeded): nothing to record.
    RefundFine,
    /// A dispute as it stands.
    Dispute(Dispute),
    /// Nothing to record (a charge not refunded, say).
    Nothing,
}

/// The fact and whose it is: the order (from the intent's metadata) if the
/// object says, and the intent that finds the order otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct Read {
    pub fact: Fact,
    pub order_id: Option<Uuid>,
    pub intent_id: Option<String>,
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// The order a PaymentIntent names in its metadata.
pub fn order_of(intent: &Value) -> Option<Uuid> {
    intent["metadata"]["order_id"]
        .as_str()
        .and_then(|s| Uuid::try_parse(s).ok())
}

/// A PaymentIntent as read now.
pub fn intent(body: &Value) -> Read {
    Read {
        order_id: order_of(body),
        intent_id: text(body, "id"),
        fact: Fact::Intent(classify_charge(200, body)),
    }
}

/// A Charge as read now.
pub fn charge(body: &Value) -> Read {
    let refunded = body.get("refunded").and_then(Value::as_bool) == Some(true);
    Read {
        order_id: None,
        intent_id: text(body, "payment_intent"),
        fact: if refunded {
            Fact::Refunded
        } else {
            Fact::Nothing
        },
    }
}

/// A Refund as read now.
pub fn refund(body: &Value) -> Read {
    let fact = match (text(body, "status").as_deref(), text(body, "id")) {
        (Some("failed" | "canceled"), Some(id)) => Fact::RefundFailed { refund_id: id },
        _ => Fact::RefundFine,
    };
    Read {
        order_id: None,
        intent_id: text(body, "payment_intent"),
        fact,
    }
}

/// A Dispute as read now.
pub fn dispute(body: &Value) -> Read {
    let due_by = body["evidence_details"]["due_by"]
        .as_i64()
        .and_then(|t| DateTime::from_timestamp(t, 0));
    let fact = match (text(body, "id"), text(body, "status")) {
        (Some(id), Some(status)) => Fact::Dispute(Dispute {
            id,
            status,
            reason: text(body, "reason"),
            due_by,
        }),
        _ => Fact::Nothing,
    };
    Read {
        order_id: None,
        intent_id: text(body, "payment_intent"),
        fact,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_intent_names_its_order_and_its_state() {
        let order = Uuid::new_v4();
        let read = intent(&json!({"id": "pi_1", "status": "succeeded",
                                  "metadata": {"order_id": order.to_string()}}));
        assert_eq!(read.order_id, Some(order));
        assert!(matches!(
            read.fact,
            Fact::Intent(ChargeOutcome::Succeeded { .. })
        ));
    }

    #[test]
    fn a_failed_refund_a_refunded_charge_and_a_dispute_are_facts() {
        assert_eq!(
            refund(&json!({"id": "re_1", "status": "failed", "payment_intent": "pi_1"})).fact,
            Fact::RefundFailed {
                refund_id: "re_1".into()
            }
        );
        assert_eq!(
            refund(&json!({"id": "re_1", "status": "succeeded"})).fact,
            Fact::RefundFine
        );
        assert_eq!(
            charge(&json!({"refunded": true, "payment_intent": "pi_1"})).fact,
            Fact::Refunded
        );
        assert_eq!(charge(&json!({"refunded": false})).fact, Fact::Nothing);
        let d = dispute(
            &json!({"id": "dp_1", "status": "needs_response", "reason": "fraudulent",
                                "payment_intent": "pi_1", "evidence_details": {"due_by": 1_800_000_000}}),
        );
        assert_eq!(d.intent_id.as_deref(), Some("pi_1"));
        let Fact::Dispute(d) = d.fact else { panic!() };
        assert_eq!(d.due_by.map(|t| t.timestamp()), Some(1_800_000_000));
    }
}
