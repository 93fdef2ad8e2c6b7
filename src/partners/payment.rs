//! The payment adapter: a Stripe-compatible subset over awc (docs/API.md).
//!
//! Every charge for an order sends `Idempotency-Key: orderflow-charge-{order}`,
//! so a retry (a client retry, a takeover, reconciliation) can never charge
//! twice at a gateway that honours the key. Responses are parsed leniently:
//! unknown fields are ignored and optional ones may be missing (localstripe,
//! for one, sends no `decline_code` and embeds `latest_charge` as an object).

use std::time::Duration;

use awc::http::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use url::Url;
use uuid::Uuid;

use super::call::{Body, CallError, PartnerHttp};
use super::Partner;
use crate::metrics::PartnerMetrics;

/// What the gateway said about a charge.
#[derive(Debug, Clone, PartialEq)]
pub enum ChargeOutcome {
    Succeeded {
        intent_id: String,
        status: String,
    },
    Declined {
        intent_id: Option<String>,
        status: Option<String>,
        decline_code: String,
        message: String,
    },
    /// The customer must authenticate (3-D Secure); this backend has no
    /// customer session to do that, so the intent was cancelled.
    RequiresAction {
        intent_id: String,
    },
    /// No answer in time, or an answer that settles nothing: retry later
    /// with the same idempotency key.
    Unknown {
        intent_id: Option<String>,
        status: Option<String>,
        reason: String,
    },
}

impl ChargeOutcome {
    /// How this outcome is recorded on the order; `None` settles nothing.
    pub fn record(&self) -> crate::db::orders::PaymentResult<'_> {
        use crate::db::orders::PaymentResult;
        match self {
            ChargeOutcome::Succeeded { intent_id, status } => PaymentResult::Paid {
                intent_id,
                gateway_status: status,
            },
            ChargeOutcome::Declined {
                intent_id,
                status,
                decline_code,
                ..
            } => PaymentResult::Failed {
                intent_id: intent_id.as_deref(),
                gateway_status: status.as_deref(),
                decline_code,
            },
            ChargeOutcome::RequiresAction { intent_id } => PaymentResult::Failed {
                intent_id: Some(intent_id),
                gateway_status: Some("canceled"),
                decline_code: "authentication_required",
            },
            ChargeOutcome::Unknown {
                intent_id, status, ..
            } => PaymentResult::Unknown {
                intent_id: intent_id.as_deref(),
                gateway_status: status.as_deref(),
            },
        }
    }
}

/// A charge to make.
#[derive(Debug, Clone)]
pub struct Charge<'a> {
    pub order_id: Uuid,
    pub amount_cents: i64,
    pub currency: &'a str,
    pub payment_method: &'a str,
}

/// The charge of a recorded order.
pub fn charge_of(order: &crate::db::models::OrderRow) -> Charge<'_> {
    Charge {
        order_id: order.id,
        amount_cents: order.total_cents,
        currency: &order.currency,
        payment_method: &order.payment_method,
    }
}

/// Settings of the adapter; cheap to clone, `Send`, one per process.
#[derive(Debug, Clone)]
pub struct PaymentConfig {
    pub base_url: Url,
    pub api_key: SecretString,
    pub timeout: Duration,
}

/// The adapter. Holds an awc client, so build one per thread.
pub struct PaymentGateway {
    http: PartnerHttp,
    api_key: SecretString,
}

/// A failed call that did not settle anything.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("payment gateway timed out")]
    Timeout,
    #[error("payment gateway unreachable: {0}")]
    Transport(String),
    #[error("payment gateway answered {status}: {message}")]
    Status {
        status: u16,
        message: String,
        body: Value,
    },
}

impl From<CallError> for GatewayError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Timeout => GatewayError::Timeout,
            other => GatewayError::Transport(other.to_string()),
        }
    }
}

pub fn charge_idempotency_key(order_id: Uuid) -> String {
    format!("orderflow-charge-{order_id}")
}

pub fn refund_idempotency_key(order_id: Uuid) -> String {
    format!("orderflow-refund-{order_id}")
}

impl PaymentGateway {
    pub fn new(config: PaymentConfig, metrics: PartnerMetrics) -> Self {
        Self {
            http: PartnerHttp::new(Partner::Payment, config.base_url, config.timeout, metrics),
            api_key: config.api_key,
        }
    }

    /// Sends one request with our key and returns (status, JSON body).
    async fn call(
        &self,
        op: &'static str,
        method: Method,
        path: &str,
        form: Option<&[(&str, String)]>,
        idempotency_key: Option<&str>,
    ) -> Result<(u16, Value), GatewayError> {
        let mut req = self.http.request(method, path).insert_header((
            "Authorization",
            format!("Bearer {}", self.api_key.expose_secret()),
        ));
        if let Some(key) = idempotency_key {
            req = req.insert_header(("Idempotency-Key", key));
        }
        let body = form.map_or(Body::Empty, Body::Form);
        let reply = self.http.send(op, req, body).await?;
        Ok((reply.status, reply.body))
    }

    /// Creates and confirms a PaymentIntent for the order.
    #[tracing::instrument(name = "payment.charge", skip_all, fields(order.id = %charge.order_id))]
    pub async fn charge(&self, charge: &Charge<'_>) -> ChargeOutcome {
        let form = [
            ("amount", charge.amount_cents.to_string()),
            ("currency", charge.currency.to_owned()),
            ("payment_method", charge.payment_method.to_owned()),
            ("confirm", "true".to_owned()),
            ("metadata[order_id]", charge.order_id.to_string()),
        ];
        let key = charge_idempotency_key(charge.order_id);
        let outcome = match self
            .call(
                "create_intent",
                Method::POST,
                "/v1/payment_intents",
                Some(&form),
                Some(&key),
            )
            .await
        {
            Ok((status, body)) => classify_charge(status, &body),
            Err(e) => ChargeOutcome::Unknown {
                intent_id: None,
                status: None,
                reason: e.to_string(),
            },
        };
        if let ChargeOutcome::RequiresAction { intent_id } = &outcome {
            // Nobody can complete the challenge; cancel so it can never be
            // captured behind the back of a failed order.
            if let Err(e) = self.cancel_intent(intent_id).await {
                tracing::warn!(error = %e, "could not cancel an intent that requires action");
            }
        }
        outcome
    }

    /// Where the order's payment stands at the gateway: the intent when its
    /// id is known, else the answer to a replay of the charge with the
    /// order's Idempotency-Key (the original charge if it was made).
    pub async fn current_state(
        &self,
        charge: &Charge<'_>,
        intent_id: Option<&str>,
    ) -> ChargeOutcome {
        match intent_id {
            Some(pi) => self
                .retrieve(pi)
                .await
                .unwrap_or_else(|e| ChargeOutcome::Unknown {
                    intent_id: Some(pi.to_owned()),
                    status: None,
                    reason: e.to_string(),
                }),
            None => self.charge(charge).await,
        }
    }

    /// GETs a PaymentIntent: (HTTP status, body) of a 2xx answer.
    async fn get_intent(&self, intent_id: &str) -> Result<(u16, Value), GatewayError> {
        let path = format!("/v1/payment_intents/{}", urlencode(intent_id));
        let (status, body) = self
            .call("retrieve_intent", Method::GET, &path, None, None)
            .await?;
        if status >= 300 {
            return Err(status_error(status, body));
        }
        Ok((status, body))
    }

    /// Reads a PaymentIntent as a charge outcome.
    pub async fn retrieve(&self, intent_id: &str) -> Result<ChargeOutcome, GatewayError> {
        let (status, body) = self.get_intent(intent_id).await?;
        Ok(classify_charge(status, &body))
    }

    /// The gateway status of an intent, as the gateway spells it.
    pub async fn intent_status(&self, intent_id: &str) -> Result<String, GatewayError> {
        let (status, body) = self.get_intent(intent_id).await?;
        str_field(&body, "status").ok_or_else(|| GatewayError::Status {
            status,
            message: "intent without status".into(),
            body,
        })
    }

    pub async fn cancel_intent(&self, intent_id: &str) -> Result<(), GatewayError> {
        let path = format!("/v1/payment_intents/{}/cancel", urlencode(intent_id));
        let key = format!("orderflow-cancel-{intent_id}");
        let (status, body) = self
            .call(
                "cancel_intent",
                Method::POST,
                &path,
                Some(&[]),
                Some(&key),
            )
            .await?;
        if status >= 300 {
            return Err(status_error(status, body));
        }
        Ok(())
    }

    /// Refunds the whole intent, once per order (idempotency key).
    pub async fn refund(&self, order_id: Uuid, intent_id: &str) -> Result<String, GatewayError> {
        let form = [("payment_intent", intent_id.to_owned())];
        let key = refund_idempotency_key(order_id);
        let (status, body) = self
            .call(
                "refund",
                Method::POST,
                "/v1/refunds",
                Some(&form),
                Some(&key),
            )
            .await?;
        if status >= 300 {
            return Err(status_error(status, body));
        }
        Ok(str_field(&body, "id").unwrap_or_default())
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn str_field(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn status_error(status: u16, body: Value) -> GatewayError {
    let message = body
        .pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or("no error message")
        .to_owned();
    GatewayError::Status {
        status,
        message,
        body,
    }
}

/// Maps a create/retrieve response to an outcome. Pure, so it is unit tested
/// on recorded shapes from Stripe and localstripe.
pub fn classify_charge(status: u16, body: &Value) -> ChargeOutcome {
    let intent_id = str_field(body, "id").filter(|id| id.starts_with("pi_"));
    let intent_status = str_field(body, "status");
    match status {
        200..=299 => match (intent_id, intent_status.as_deref()) {
            (Some(id), Some("succeeded")) => ChargeOutcome::Succeeded {
                intent_id: id,
                status: "succeeded".into(),
            },
            (Some(id), Some("requires_action" | "requires_source_action")) => {
                ChargeOutcome::RequiresAction { intent_id: id }
            }
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
        },
        // 402 is always a decline, with or without a decline_code. A 400 or
        // 404 with a Stripe error object is a definite refusal too: a
        // request the gateway will never accept (a card error, an unknown
        // payment method, an amount or currency it cannot charge), so the
        // payment fails instead of staying pending forever. Auth, rate
        // limits and idempotency conflicts are ours, and unknown.
        400..=499 => {
            let err = body.get("error").unwrap_or(&Value::Null);
            let err_type = str_field(err, "type").unwrap_or_default();
            let err_code = str_field(err, "code").unwrap_or_default();
            let is_decline = status == 402
                || err_type == "card_error"
                // localstripe: an unknown payment method is a JSON 404
                // without a code (an unknown route is a plain-text 404).
                || (matches!(status, 400 | 404) && err.is_object());
            let is_ours =
                matches!(status, 401 | 403 | 409 | 429) || err_type == "idempotency_error";
            if is_decline && !is_ours {
                ChargeOutcome::Declined {
                    intent_id: err
                        .pointer("/payment_intent/id")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    status: err
                        .pointer("/payment_intent/status")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    decline_code: str_field(err, "decline_code")
                        .or_else(|| (!err_code.is_empty()).then(|| err_code.clone()))
                        .or_else(|| {
                            (status != 402 && !err_type.is_empty()).then(|| err_type.clone())
                        })
                        .unwrap_or_else(|| "generic_decline".into()),
                    message: str_field(err, "message")
                        .unwrap_or_else(|| "The payment was declined.".into()),
                }
            } else {
                if matches!(status, 401 | 403) {
                    tracing::error!(
                        http.status = status,
                        "payment gateway rejected our credentials; check PAYMENT_API_KEY"
                    );
                }
                ChargeOutcome::Unknown {
                    intent_id: None,
                    status: None,
                    reason: format!("gateway answered {status} {err_type} {err_code}"),
                }
            }
        }
        _ => ChargeOutcome::Unknown {
            intent_id: None,
            status: None,
            reason: format!("gateway answered {status}"),
        },
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
        let body = json!({"id": "pi_3", "status": "requires_action", "next_action": {"type": "use_stripe_sdk"}});
        assert_eq!(
            classify_charge(200, &body),
            ChargeOutcome::RequiresAction {
                intent_id: "pi_3".into()
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
