//! One partner HTTP call, the same for the three partners: the request's
//! timeout (connect to last byte), a cap on the answer's body, redirects
//! never followed, and one outcome vocabulary for metrics and logs
//! (`orderflow_partner_calls_total{partner, outcome}`):
//!
//! | outcome           | what happened                                  |
//! |-------------------|------------------------------------------------|
//! | `ok`              | a 2xx answer                                   |
//! | `client_error`    | a 4xx answer                                   |
//! | `server_error`    | a 5xx (or other non-2xx/4xx) answer            |
//! | `timeout`         | no complete answer within the partner timeout  |
//! | `transport_error` | connection refused, reset or broken            |
//!
//! What an answer *means* (a decline, a retryable error) is each client's.

use std::time::{Duration, Instant};

use awc::error::SendRequestError;
use awc::http::Method;
use serde_json::Value;
use url::Url;

use super::Partner;
use crate::metrics::PartnerMetrics;

/// The largest answer body read from a partner.
pub const BODY_LIMIT: usize = 1 << 20;

crate::domain::status::text_enum! {
    /// How a partner call ended, as metrics label it.
    Outcome {
        Ok => "ok",
        ClientError => "client_error",
        ServerError => "server_error",
        Timeout => "timeout",
        TransportError => "transport_error",
    }
}

/// An answer: its status, its body as JSON (`Null` when it is not JSON, as
/// localstripe's plain-text errors are), and its `Retry-After` in seconds.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub retry_after: Option<Duration>,
}

/// A call that got no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error("timed out")]
    Timeout,
    /// The request never reached the partner (connect refused, DNS): it
    /// surely had no effect.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The connection broke after the request was sent, or while the
    /// answer was read: it may have taken effect.
    #[error("transport error: {0}")]
    Transport(String),
}

impl CallError {
    /// Whether the request may have taken effect at the partner.
    pub fn outcome_unknown(&self) -> bool {
        !matches!(self, CallError::Unreachable(_))
    }
}

/// What a request carries.
pub enum Body<'a> {
    Empty,
    Json(&'a Value),
    Form(&'a [(&'a str, String)]),
}

/// One partner's HTTP endpoint: its awc client (per thread), base URL and
/// timeout, and the metrics its calls are counted in.
pub struct PartnerHttp {
    partner: Partner,
    client: awc::Client,
    base: Url,
    timeout: Duration,
    metrics: PartnerMetrics,
}

impl PartnerHttp {
    pub fn new(partner: Partner, base: Url, timeout: Duration, metrics: PartnerMetrics) -> Self {
        PartnerHttp {
            partner,
            client: super::http_client(timeout),
            base,
            timeout,
            metrics,
        }
    }

    /// A request to `path` (below the base URL), with the call's timeout.
    pub fn request(&self, method: Method, path: &str) -> awc::ClientRequest {
        let url = format!("{}{}", self.base.as_str().trim_end_matches('/'), path);
        self.client.request(method, url).timeout(self.timeout)
    }

    /// Sends `req` with `body` and reads the answer, within the timeout;
    /// counts the call under `op` and its outcome.
    pub async fn send(
        &self,
        op: &'static str,
        req: awc::ClientRequest,
        body: Body<'_>,
    ) -> Result<Reply, CallError> {
        let started = Instant::now();
        let exchange = async {
            let mut resp = match body {
                Body::Empty => req.send().await,
                Body::Json(v) => req.send_json(v).await,
                Body::Form(f) => req.send_form(&f).await,
            }
            .map_err(send_error)?;
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let bytes = resp
                .body()
                .limit(BODY_LIMIT)
                .await
                .map_err(|e| CallError::Transport(format!("reading the answer: {e}")))?;
            Ok(Reply {
                status: resp.status().as_u16(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                retry_after,
            })
        };
        let result = actix_rt::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(CallError::Timeout));
        let outcome = outcome(&result);
        let elapsed = started.elapsed();
        self.metrics
            .observe(self.partner.as_str(), outcome.as_str(), elapsed);
        tracing::debug!(
            partner = self.partner.as_str(),
            partner.op = op,
            partner.outcome = outcome.as_str(),
            elapsed_ms = elapsed.as_millis() as u64,
            "partner call"
        );
        result
    }
}

pub(crate) fn send_error(e: SendRequestError) -> CallError {
    match e {
        SendRequestError::Timeout => CallError::Timeout,
        SendRequestError::Connect(c) => CallError::Unreachable(c.to_string()),
        other => CallError::Transport(other.to_string()),
    }
}

/// The outcome label of a call's result.
pub fn outcome(result: &Result<Reply, CallError>) -> Outcome {
    status_outcome(result.as_ref().map(|r| r.status))
}

/// [`outcome`] of an answer's status, or of why none came.
pub fn status_outcome(result: Result<u16, &CallError>) -> Outcome {
    match result {
        Ok(s) if (200..300).contains(&s) => Outcome::Ok,
        Ok(s) if (400..500).contains(&s) => Outcome::ClientError,
        Ok(_) => Outcome::ServerError,
        Err(CallError::Timeout) => Outcome::Timeout,
        Err(_) => Outcome::TransportError,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16) -> Result<Reply, CallError> {
        Ok(Reply {
            status,
            body: Value::Null,
            retry_after: None,
        })
    }

    #[test]
    fn every_partner_call_gets_one_of_five_outcomes() {
        assert_eq!(outcome(&reply(201)), Outcome::Ok);
        assert_eq!(outcome(&reply(404)), Outcome::ClientError);
        assert_eq!(outcome(&reply(503)), Outcome::ServerError);
        assert_eq!(outcome(&reply(302)), Outcome::ServerError);
        assert_eq!(outcome(&Err(CallError::Timeout)), Outcome::Timeout);
        assert_eq!(
            outcome(&Err(CallError::Unreachable("refused".into()))),
            Outcome::TransportError
        );
        assert!(!CallError::Unreachable("refused".into()).outcome_unknown());
        assert!(CallError::Transport("reset".into()).outcome_unknown());
        assert!(CallError::Timeout.outcome_unknown());
    }
}
