//! The storefront's side of the wire: one awc client on the webhook
//! executor's thread, connecting through the SSRF guard's resolver, never
//! following a redirect, reading at most 64 KiB of an answer.

use std::time::{Duration, Instant};

use awc::http::header::CONTENT_TYPE;

use super::guard::{literal_target_allowed, GuardedResolver};
use crate::metrics::PartnerMetrics;
use crate::partners::call::{send_error, status_outcome, CallError};

/// The label of webhook calls in the partner-call metrics.
pub const PARTNER_LABEL: &str = "webhook";

const ANSWER_LIMIT: usize = 64 << 10;

pub struct WebhookClient {
    client: awc::Client,
    timeout: Duration,
    allow_private: bool,
    metrics: PartnerMetrics,
}

/// One POST to make.
pub struct Post {
    pub url: String,
    pub event_id: String,
    pub signature: String,
    pub body: actix_web::web::Bytes,
}

impl WebhookClient {
    pub fn new(timeout: Duration, allow_private: bool, metrics: PartnerMetrics) -> Self {
        let tcp = actix_tls::connect::Connector::new(actix_tls::connect::Resolver::custom(
            GuardedResolver { allow_private },
        ))
        .service();
        let connector = awc::Connector::new()
            .connector(tcp)
            .limit(4096)
            .timeout(timeout);
        WebhookClient {
            client: awc::Client::builder()
                .timeout(timeout)
                .disable_redirects()
                .connector(connector)
                .finish(),
            timeout,
            allow_private,
            metrics,
        }
    }

    /// Sends `post`; the answer's status, or why none came. The URL is
    /// never logged (it may carry a token in its query).
    pub async fn send(&self, post: Post) -> Result<u16, CallError> {
        if !literal_target_allowed(&post.url, self.allow_private) {
            return Err(CallError::Unreachable(
                "the endpoint's address is not public".into(),
            ));
        }
        let started = Instant::now();
        let exchange = async {
            let mut resp = self
                .client
                .post(post.url.as_str())
                .timeout(self.timeout)
                .insert_header((CONTENT_TYPE, "application/json"))
                .insert_header(("Orderflow-Event-Id", post.event_id.as_str()))
                .insert_header(("Orderflow-Signature", post.signature.as_str()))
                .send_body(post.body)
                .await
                .map_err(send_error)?;
            // Read (a little of) the answer so the connection can be reused.
            let _ = resp.body().limit(ANSWER_LIMIT).await;
            Ok(resp.status().as_u16())
        };
        let result = actix_rt::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(CallError::Timeout));
        let outcome = status_outcome(result.as_ref().copied());
        self.metrics
            .observe(PARTNER_LABEL, outcome.as_str(), started.elapsed());
        result
    }
}
