//! What a gateway answer means for a charge: pure, so it is unit tested on
//! recorded shapes from Stripe and localstripe.

use serde_json::Value;

use super::ChargeOutcome;

pub(super) fn str_field(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// Maps a create/retrieve response to an outcome. Pure, so it is unit tested
/// on recorded shapes from Stripe and localstripe.
pub fn classify_charge(status: u16, body: &Value) -> ChargeOutcome {
    match status {
        200..=299 => classify_intent(body),
        400..=499 => classify_refusal(status, body),
        _ => ChargeOutcome::Unknown {
            intent_id: None,
            status: None,
            reason: format!("gateway answered {status}"),
        },
    }
}

/// A PaymentIntent the gateway returned.
fn classify_intent(body: &Value) -> ChargeOutcome {
    let intent_id = str_field(body, "id").filter(|id| id.starts_with("pi_"));
    let intent_status = str_field(body, "status");
    match (intent_id, intent_status.as_deref()) {
        (Some(id), Some("succeeded")) => ChargeOutcome::Succeeded {
            intent_id: id,
            status: "succeeded".into(),
        },
        (Some(id), Some("requires_action" | "requires_source_action")) => {
            ChargeOutcome::RequiresAction {
                intent_id: id,
                action: serde_json::json!({
                    "client_secret": body.get("client_secret").cloned().unwrap_or(Value::Null),
                    "next_action": body.get("next_action").cloned().unwrap_or(Value::Null),
                }),
            }
        }
        (Some(id), Some("requires_confirmation")) => ChargeOutcome::Unconfirmed { intent_id: id },
        (Some(id), Some("requires_payment_method" | "canceled")) => {
            let err = body.get("last_payment_error").unwrap_or(&Value::Null);
            ChargeOutcome::Declined {
                intent_id: Some(id),
                status: intent_status,
                decline_code: str_field(err, "decline_code")
                    .or_else(|| str_field(err, "code"))
                    .unwrap_or_else(|| "generic_decline".into()),
                message: str_field(err, "message")
                    .unwrap_or_else(|| "The payment was declined.".into()),
            }
        }
        (id, s) => ChargeOutcome::Unknown {
            intent_id: id,
            status: intent_status.clone(),
            reason: format!("intent in state {}", s.unwrap_or("(none)")),
        },
    }
}

/// A 4xx. 402 is always a decline, with or without a decline_code. A 400
/// or 404 with a Stripe error object is a definite refusal too: a request
/// the gateway will never accept (a card error, an unknown payment method,
/// an amount or currency it cannot charge), so the payment fails instead
/// of staying pending forever. Auth, rate limits and idempotency conflicts
/// are ours, and unknown.
fn classify_refusal(status: u16, body: &Value) -> ChargeOutcome {
    let err = body.get("error").unwrap_or(&Value::Null);
    let err_type = str_field(err, "type").unwrap_or_default();
    let err_code = str_field(err, "code").unwrap_or_default();
    let is_decline = status == 402
        || err_type == "card_error"
        // localstripe: an unknown payment method is a JSON 404 without a
        // code (an unknown route is a plain-text 404).
        || (matches!(status, 400 | 404) && err.is_object());
    let is_ours = matches!(status, 401 | 403 | 409 | 429) || err_type == "idempotency_error";
    if !is_decline || is_ours {
        if matches!(status, 401 | 403) {
            tracing::error!(
                http.status = status,
                "payment gateway rejected our credentials; check PAYMENT_API_KEY"
            );
        }
        return ChargeOutcome::Unknown {
            intent_id: None,
            status: None,
            reason: format!("gateway answered {status} {err_type} {err_code}"),
        };
    }
    let intent = |field: &str| {
        err.pointer(&format!("/payment_intent/{field}"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    ChargeOutcome::Declined {
        intent_id: intent("id"),
        status: intent("status"),
        decline_code: str_field(err, "decline_code")
            .or_else(|| (!err_code.is_empty()).then(|| err_code.clone()))
            .or_else(|| (status != 402 && !err_type.is_empty()).then(|| err_type.clone()))
            .unwrap_or_else(|| "generic_decline".into()),
        message: str_field(err, "message").unwrap_or_else(|| "The payment was declined.".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_succeeded_intent_is_paid_even_with_embedded_charges() {
        let body = json!({"id": "pi_1", "object": "payment_intent", "status": "succeeded",
                          "latest_charge": {"id": "ch_1"}, "unknown": [1, 2]});
        assert_eq!(
            classify_charge(200, &body),
            ChargeOutcome::Succeeded {
                intent_id: "pi_1".into(),
                status: "succeeded".into()
            }
        );
    }

    #[test]
    fn a_stripe_decline_keeps_its_decline_code() {
        let body = json!({"error": {"type": "card_error", "code": "card_declined",
                                    "decline_code": "insufficient_funds", "message": "Your card has insufficient funds.",
                                    "payment_intent": {"id": "pi_9", "status": "requires_payment_method"}}});
        match classify_charge(402, &body) {
            ChargeOutcome::Declined {
                intent_id,
                decline_code,
                ..
            } => {
                assert_eq!(intent_id.as_deref(), Some("pi_9"));
                assert_eq!(decline_code, "insufficient_funds");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_localstripe_decline_without_decline_code_is_still_a_decline() {
        let body = json!({"error": {"type": "invalid_request_error", "code": "card_declined", "message": "Your card was declined."}});
        assert!(
            matches!(classify_charge(402, &body), ChargeOutcome::Declined { decline_code, .. } if decline_code == "card_declined")
        );
        assert!(
            matches!(classify_charge(402, &Value::Null), ChargeOutcome::Declined { decline_code, .. } if decline_code == "generic_decline")
        );
    }

    #[test]
    fn an_unknown_payment_method_is_a_decline() {
        let stripe = json!({"error": {"type": "invalid_request_error", "code": "resource_missing", "message": "No such PaymentMethod"}});
        let localstripe =
            json!({"error": {"message": "Not Found", "type": "invalid_request_error"}});
        assert!(matches!(
            classify_charge(400, &stripe),
            ChargeOutcome::Declined { .. }
        ));
        assert!(matches!(
            classify_charge(404, &localstripe),
            ChargeOutcome::Declined { .. }
        ));
        assert!(matches!(
            classify_charge(404, &Value::Null),
            ChargeOutcome::Unknown { .. }
        ));
    }

    #[test]
    fn a_request_the_gateway_will_never_accept_is_a_decline_with_its_code() {
        let amount = json!({"error": {"type": "invalid_request_error", "code": "amount_too_small",
                                      "message": "Amount must be at least 50 cents"}});
        let no_code =
            json!({"error": {"type": "invalid_request_error", "message": "Invalid integer: 0"}});
        assert!(
            matches!(classify_charge(400, &amount), ChargeOutcome::Declined { decline_code, .. } if decline_code == "amount_too_small")
        );
        assert!(
            matches!(classify_charge(400, &no_code), ChargeOutcome::Declined { decline_code, .. } if decline_code == "invalid_request_error")
        );
    }

    #[test]
    fn three_d_secure_requires_action() {
        let body = json!({"id": "pi_3", "status": "requires_action", "client_secret": "pi_3_secret_x",
                          "next_action": {"type": "use_stripe_sdk"}});
        assert_eq!(
            classify_charge(200, &body),
            ChargeOutcome::RequiresAction {
                intent_id: "pi_3".into(),
                action: json!({"client_secret": "pi_3_secret_x", "next_action": {"type": "use_stripe_sdk"}}),
            }
        );
        let unconfirmed = json!({"id": "pi_4", "status": "requires_confirmation"});
        assert_eq!(
            classify_charge(200, &unconfirmed),
            ChargeOutcome::Unconfirmed {
                intent_id: "pi_4".into()
            }
        );
    }

    #[test]
    fn server_errors_auth_errors_and_garbage_are_unknown_not_declines() {
        for (status, body) in [
            (500, Value::Null),
            (503, json!({"error": {"type": "api_error"}})),
            (429, json!({"error": {"type": "rate_limit_error"}})),
            (
                401,
                json!({"error": {"message": "Unauthorized", "type": "invalid_request_error"}}),
            ),
            (400, json!({"error": {"type": "idempotency_error"}})),
            (200, json!({"id": "pi_4", "status": "processing"})),
            (200, json!("not an intent")),
        ] {
            assert!(
                matches!(
                    classify_charge(status, &body),
                    ChargeOutcome::Unknown { .. }
                ),
                "{status} {body}"
            );
        }
    }
}
