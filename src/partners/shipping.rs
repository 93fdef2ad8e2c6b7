//! Shipping partner client (docs/API.md) over awc.
//!
//! `create_shipment` sends `reference` = order id and an `Idempotency-Key`
//! derived from it: the partner never makes two shipments for one order,
//! however often a retry calls it.

use std::time::Duration;

use awc::http::Method;
use serde::Deserialize;
use serde_json::{json, Value};
use url::Url;
use uuid::Uuid;

use super::call::{Body, CallError, PartnerHttp};
use super::Partner;
use crate::metrics::PartnerMetrics;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Shipment {
    pub id: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub tracking_number: Option<String>,
    #[serde(default)]
    pub eta: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ShippingError {
    /// Timeouts, transport errors, 5xx and 429: worth retrying, after
    /// `retry_after` when the partner said so.
    #[error("shipping partner unavailable: {message}")]
    Retryable {
        message: String,
        retry_after: Option<Duration>,
        /// Whether the request may have taken effect (no answer, a 5xx, a
        /// connection lost after sending): a create may have made the
        /// shipment. False when it surely did not (refused connection, 429).
        outcome_unknown: bool,
    },
    /// A 4xx that cannot succeed on retry.
    #[error("shipping partner refused: {message}")]
    Permanent { message: String },
}

pub struct ShippingClient {
    http: PartnerHttp,
}

impl From<CallError> for ShippingError {
    fn from(e: CallError) -> Self {
        ShippingError::Retryable {
            outcome_unknown: e.outcome_unknown(),
            message: e.to_string(),
            retry_after: None,
        }
    }
}

impl ShippingClient {
    pub fn new(base: Url, timeout: Duration, metrics: PartnerMetrics) -> Self {
        Self {
            http: PartnerHttp::new(Partner::Shipping, base, timeout, metrics),
        }
    }

    /// Creates (or finds) the shipment of `order_id`.
    pub async fn create_shipment(
        &self,
        order_id: Uuid,
        address: &Value,
        items: &[(String, i32)],
    ) -> Result<Shipment, ShippingError> {
        let body = json!({
            "reference": order_id.to_string(),
            "address": address,
            "items": items.iter().map(|(sku, q)| json!({"sku": sku, "quantity": q})).collect::<Vec<_>>(),
        });
        let req = self
            .http
            .request(Method::POST, "/v1/shipments")
            .insert_header(("Idempotency-Key", format!("orderflow-ship-{order_id}")));
        let reply = self
            .http
            .send("create_shipment", req, Body::Json(&body))
            .await?;
        classify(reply.status, reply.body, reply.retry_after)
    }

    pub async fn get_shipment(&self, id: &str) -> Result<Shipment, ShippingError> {
        let path: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
        let req = self
            .http
            .request(Method::GET, &format!("/v1/shipments/{path}"));
        let reply = self.http.send("get_shipment", req, Body::Empty).await?;
        classify(reply.status, reply.body, reply.retry_after)
    }
}

fn classify(
    status: u16,
    body: Value,
    retry_after: Option<Duration>,
) -> Result<Shipment, ShippingError> {
    let message = || {
        body.pointer("/error/message")
            .and_then(Value::as_str)
            .map(|m| format!("{status}: {m}"))
            .unwrap_or_else(|| format!("status {status}"))
    };
    match status {
        200..=299 => serde_json::from_value(body.clone()).map_err(|e| ShippingError::Retryable {
            message: format!("unreadable shipment: {e}"),
            retry_after: None,
            outcome_unknown: true,
        }),
        408 | 425 | 429 => Err(ShippingError::Retryable {
            message: message(),
            retry_after,
            outcome_unknown: false,
        }),
        500..=599 => Err(ShippingError::Retryable {
            message: message(),
            retry_after,
            outcome_unknown: true,
        }),
        _ => Err(ShippingError::Permanent { message: message() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_for_retry() {
        let ok = classify(
            201,
            json!({"id": "shp_1", "status": "label_created", "tracking_number": "T", "extra": 1}),
            None,
        );
        assert_eq!(ok.unwrap().id, "shp_1");
        assert!(matches!(
            classify(429, Value::Null, Some(Duration::from_secs(3))),
            Err(ShippingError::Retryable { retry_after: Some(d), .. }) if d == Duration::from_secs(3)
        ));
        assert!(matches!(
            classify(503, Value::Null, None),
            Err(ShippingError::Retryable { .. })
        ));
        assert!(matches!(
            classify(400, json!({"error": {"message": "bad"}}), None),
            Err(ShippingError::Permanent { .. })
        ));
        assert!(matches!(
            classify(200, json!({"no": "id"}), None),
            Err(ShippingError::Retryable { .. })
        ));
    }
}
