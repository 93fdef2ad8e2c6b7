//! The payment adapter: a Stripe-compatible subset over awc (docs/API.md).
//!
//! Every charge for an order sends `Idempotency-Key: orderflow-charge-{order}`,
//! so a retry (a client retry, a takeover, reconciliation) can never charge
//! twice at a gateway that honours the key. Responses are parsed leniently:
//! unknown fields are ignored and optional ones may be missing (localstripe,
//! for one, sends no `decline_code` and embeds `latest_charge` as an object).

mod classify;

use std::time::Duration;

use awc::http::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use url::Url;
use uuid::Uuid;

pub use classify::classify_charge;
use classify::str_field;

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
    pub fn payment_result(&self) -> crate::db::orders::PaymentResult<'_> {
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
            .call("cancel_intent", Method::POST, &path, Some(&[]), Some(&key))
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
