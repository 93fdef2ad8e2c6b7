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

/// What the gateway said about a charge, or where an intent stands.
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
    /// The customer must authenticate (3-D Secure): `action` holds the
    /// gateway's `client_secret` and `next_action` for the storefront's SDK.
    RequiresAction {
        intent_id: String,
        action: Value,
    },
    /// Created, not confirmed: no money has moved.
    Unconfirmed {
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
    /// How this outcome is recorded on the order; `Unknown` (and an
    /// unconfirmed intent) settles nothing.
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
            ChargeOutcome::RequiresAction { intent_id, action } => {
                PaymentResult::Action { intent_id, action }
            }
            ChargeOutcome::Unconfirmed { intent_id } => PaymentResult::Unknown {
                intent_id: Some(intent_id),
                gateway_status: Some(REQUIRES_CONFIRMATION),
            },
            ChargeOutcome::Unknown {
                intent_id, status, ..
            } => PaymentResult::Unknown {
                intent_id: intent_id.as_deref(),
                gateway_status: status.as_deref(),
            },
        }
    }

    /// The intent this outcome names, if any.
    pub fn intent_id(&self) -> Option<&str> {
        match self {
            ChargeOutcome::Succeeded { intent_id, .. }
            | ChargeOutcome::RequiresAction { intent_id, .. }
            | ChargeOutcome::Unconfirmed { intent_id } => Some(intent_id),
            ChargeOutcome::Declined { intent_id, .. }
            | ChargeOutcome::Unknown { intent_id, .. } => intent_id.as_deref(),
        }
    }
}

/// The gateway status of an intent created and not yet confirmed.
pub const REQUIRES_CONFIRMATION: &str = "requires_confirmation";

/// The gateway status of an intent whose payment failed: it could still be
/// confirmed again with another method (or a retried authentication).
pub const REQUIRES_PAYMENT_METHOD: &str = "requires_payment_method";

/// Where an order's intent was looked for, and what was found.
#[derive(Debug, Clone, PartialEq)]
pub enum Located {
    /// The intent, read now.
    Found(ChargeOutcome),
    /// The gateway has no intent for the order: none was ever confirmed.
    None,
    /// The gateway could not be asked (timeout, 5xx): try again later.
    Unknown(String),
}

/// A refund the gateway accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundMade {
    pub id: String,
    /// `succeeded`, `pending`, … as the gateway spells it.
    pub status: String,
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

pub fn confirm_idempotency_key(order_id: Uuid) -> String {
    format!("orderflow-confirm-{order_id}")
}

/// The key of the order's refund; after a refund that failed, a new key
/// (named after the failed refund), so a re-drive asks for a new refund
/// instead of replaying the failed one.
pub fn refund_idempotency_key(order_id: Uuid, after_failed: Option<&str>) -> String {
    match after_failed {
        None => format!("orderflow-refund-{order_id}"),
        Some(re) => format!("orderflow-refund-{order_id}-after-{re}"),
    }
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

    /// Creates the order's PaymentIntent, unconfirmed: no money moves
    /// until [`Self::confirm`], which needs the id this returns, so no intent
    /// is ever confirmed before its id is recorded on the order.
    #[tracing::instrument(name = "payment.create_intent", skip_all, fields(order.id = %charge.order_id))]
    pub async fn create_intent(&self, charge: &Charge<'_>) -> ChargeOutcome {
        let form = [
            ("amount", charge.amount_cents.to_string()),
            ("currency", charge.currency.to_owned()),
            ("payment_method", charge.payment_method.to_owned()),
            ("confirm", "false".to_owned()),
            ("metadata[order_id]", charge.order_id.to_string()),
        ];
        let key = charge_idempotency_key(charge.order_id);
        self.classified("create_intent", "/v1/payment_intents".into(), &form, &key)
            .await
    }

    /// Confirms the order's intent: this is the charge.
    #[tracing::instrument(name = "payment.confirm", skip_all, fields(order.id = %order_id))]
    pub async fn confirm(&self, order_id: Uuid, intent_id: &str) -> ChargeOutcome {
        let path = format!("/v1/payment_intents/{}/confirm", urlencode(intent_id));
        let key = confirm_idempotency_key(order_id);
        match self.classified("confirm_intent", path, &[], &key).await {
            ChargeOutcome::Unknown {
                intent_id: None,
                status,
                reason,
            } => ChargeOutcome::Unknown {
                intent_id: Some(intent_id.to_owned()),
                status,
                reason,
            },
            other => other,
        }
    }

    /// POSTs `form` with `key` and classifies the answer as a charge.
    async fn classified(
        &self,
        op: &'static str,
        path: String,
        form: &[(&str, String)],
        key: &str,
    ) -> ChargeOutcome {
        match self
            .call(op, Method::POST, &path, Some(form), Some(key))
            .await
        {
            Ok((status, body)) => classify_charge(status, &body),
            Err(e) => ChargeOutcome::Unknown {
                intent_id: None,
                status: None,
                reason: e.to_string(),
            },
        }
    }

    /// Finds the order's intent without ever creating or confirming one:
    /// by its recorded id, else by the gateway's search on
    /// `metadata[order_id]`. A gateway without search (localstripe answers
    /// 404) finds none, which is safe: an intent is confirmed only after its
    /// id is recorded, so an order without an id was never charged.
    pub async fn locate(&self, order_id: Uuid, intent_id: Option<&str>) -> Located {
        if let Some(pi) = intent_id {
            return match self.retrieve(pi).await {
                Ok(outcome) => Located::Found(outcome),
                Err(e) => Located::Unknown(e.to_string()),
            };
        }
        match self.search(order_id).await {
            Ok(Some(body)) => Located::Found(classify_charge(200, &body)),
            Ok(None) => Located::None,
            Err(e) => Located::Unknown(e.to_string()),
        }
    }

    /// The order's intent by `metadata[order_id]`: a succeeded one first,
    /// else the newest.
    async fn search(&self, order_id: Uuid) -> Result<Option<Value>, GatewayError> {
        let query = format!("metadata['order_id']:'{order_id}'");
        let path = format!("/v1/payment_intents/search?query={}", urlencode(&query));
        let (status, body) = self
            .call("search_intents", Method::GET, &path, None, None)
            .await?;
        if status == 404 || status == 400 {
            return Ok(None); // no search at this gateway
        }
        if status >= 300 {
            return Err(status_error(status, body));
        }
        let mut found: Vec<Value> = body
            .get("data")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        found.sort_by_key(|i| {
            let succeeded = str_field(i, "status").as_deref() == Some("succeeded");
            let created = i.get("created").and_then(Value::as_i64).unwrap_or(0);
            (succeeded, created)
        });
        Ok(found.pop())
    }

    /// GETs a PaymentIntent: (HTTP status, body) of a 2xx answer.
    async fn get_intent(&self, intent_id: &str) -> Result<(u16, Value), GatewayError> {
        let path = format!("/v1/payment_intents/{}", urlencode(intent_id));
        self.get("retrieve_intent", &path).await
    }

    /// GETs `path`: (HTTP status, body) of a 2xx answer.
    async fn get(&self, op: &'static str, path: &str) -> Result<(u16, Value), GatewayError> {
        let (status, body) = self.call(op, Method::GET, path, None, None).await?;
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

    /// Reads a PaymentIntent as the gateway wrote it.
    pub async fn intent(&self, intent_id: &str) -> Result<Value, GatewayError> {
        Ok(self.get_intent(intent_id).await?.1)
    }

    /// Reads a Refund as the gateway wrote it.
    pub async fn refund_object(&self, refund_id: &str) -> Result<Value, GatewayError> {
        let path = format!("/v1/refunds/{}", urlencode(refund_id));
        Ok(self.get("retrieve_refund", &path).await?.1)
    }

    /// Reads a Dispute as the gateway wrote it.
    pub async fn dispute(&self, dispute_id: &str) -> Result<Value, GatewayError> {
        let path = format!("/v1/disputes/{}", urlencode(dispute_id));
        Ok(self.get("retrieve_dispute", &path).await?.1)
    }

    /// Reads a Charge as the gateway wrote it.
    pub async fn charge_object(&self, charge_id: &str) -> Result<Value, GatewayError> {
        let path = format!("/v1/charges/{}", urlencode(charge_id));
        Ok(self.get("retrieve_charge", &path).await?.1)
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

    /// Cancels an intent that was not charged, and reads it again: the
    /// answer is where it stands (a confirm that won the race shows as
    /// succeeded).
    pub async fn cancel_intent(&self, intent_id: &str) -> Result<ChargeOutcome, GatewayError> {
        let path = format!("/v1/payment_intents/{}/cancel", urlencode(intent_id));
        let key = format!("orderflow-cancel-{intent_id}");
        let (status, body) = self
            .call("cancel_intent", Method::POST, &path, Some(&[]), Some(&key))
            .await?;
        if status >= 500 {
            return Err(status_error(status, body));
        }
        // A 4xx: it was already canceled or succeeded; read which.
        self.retrieve(intent_id).await
    }

    /// Refunds the whole intent, once per key.
    pub async fn refund(
        &self,
        order_id: Uuid,
        intent_id: &str,
        after_failed: Option<&str>,
    ) -> Result<RefundMade, GatewayError> {
        let form = [("payment_intent", intent_id.to_owned())];
        let key = refund_idempotency_key(order_id, after_failed);
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
        Ok(RefundMade {
            id: str_field(&body, "id").unwrap_or_default(),
            status: str_field(&body, "status").unwrap_or_else(|| "succeeded".into()),
        })
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
