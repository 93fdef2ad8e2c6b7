//! The storefront's side of the wire: one awc client on the webhook
//! executor's thread, connecting through the SSRF guard's resolver, never
//! following a redirect, reading at most 64 KiB of an answer, and holding
//! at most `WEBHOOK_HOST_CONNECTIONS` requests to one host (`host:port`)
//! at a time, so hosts that hang cannot take the connections of the rest.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

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
    hosts: HostLimits,
}

/// Requests in flight per host: a semaphore each, dropped once idle.
struct HostLimits {
    per_host: usize,
    open: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// Idle hosts' semaphores are dropped once this many are kept.
const HOSTS_KEPT: usize = 1024;

impl HostLimits {
    fn of(&self, host: &str) -> Arc<Semaphore> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.len() >= HOSTS_KEPT && !open.contains_key(host) {
            let per_host = self.per_host;
            open.retain(|_, s| s.available_permits() < per_host);
        }
        open.entry(host.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_host)))
            .clone()
    }
}

/// The `host:port` a URL names (the key of the per-host limit).
fn authority(url: &str) -> String {
    url.parse::<awc::http::Uri>()
        .ok()
        .and_then(|u| {
            let host = u.host()?.to_ascii_lowercase();
            let port = u.port_u16().unwrap_or(match u.scheme_str() {
                Some("http") => 80,
                _ => 443,
            });
            Some(format!("{host}:{port}"))
        })
        .unwrap_or_default()
}

/// One POST to make.
pub struct Post {
    pub url: String,
    pub event_id: String,
    pub signature: String,
    pub body: actix_web::web::Bytes,
}

impl WebhookClient {
    pub fn new(
        timeout: Duration,
        allow_private: bool,
        per_host: usize,
        metrics: PartnerMetrics,
    ) -> Self {
        let tcp = actix_tls::connect::Connector::new(actix_tls::connect::Resolver::custom(
            GuardedResolver { allow_private },
        ))
        .service();
        let connector = awc::Connector::new()
            .connector(tcp)
            .limit(4096)
            .timeout(timeout)
            .conn_keep_alive(crate::partners::IDLE_REUSE);
        WebhookClient {
            client: awc::Client::builder()
                .timeout(timeout)
                .disable_redirects()
                .connector(connector)
                .finish(),
            timeout,
            allow_private,
            metrics,
            hosts: HostLimits {
                per_host: per_host.max(1),
                open: Mutex::new(HashMap::new()),
            },
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
        let result = self.exchange(post).await;
        let outcome = status_outcome(result.as_ref().copied());
        self.metrics
            .observe(PARTNER_LABEL, outcome.as_str(), started.elapsed());
        result
    }

    /// The host's turn, waited for up to one timeout (no connection is
    /// opened without it), then the POST with a timeout of its own.
    async fn exchange(&self, post: Post) -> Result<u16, CallError> {
        let host = self.hosts.of(&authority(&post.url));
        let _turn = actix_rt::time::timeout(self.timeout, host.acquire_owned())
            .await
            .map_err(|_| CallError::Timeout)?
            .map_err(|_| CallError::Transport("webhook host limit closed".into()))?;
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
        actix_rt::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(CallError::Timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_per_host_and_port() {
        assert_eq!(
            authority("https://Shop.example/hooks?t=1"),
            "shop.example:443"
        );
        assert_eq!(authority("http://shop.example/a"), "shop.example:80");
        assert_eq!(authority("http://127.0.0.1:8080/a"), "127.0.0.1:8080");
        assert_eq!(authority("http://[::1]:9/a"), "[::1]:9");
    }

    #[test]
    fn idle_hosts_are_dropped_and_busy_ones_kept() {
        let limits = HostLimits {
            per_host: 2,
            open: Mutex::new(HashMap::new()),
        };
        let busy = limits.of("busy:443");
        let _held = busy.try_acquire().expect("a permit");
        for i in 0..HOSTS_KEPT {
            limits.of(&format!("h{i}:443"));
        }
        let open = limits.open.lock().unwrap();
        assert!(open.len() <= HOSTS_KEPT);
        assert!(open.contains_key("busy:443"));
    }
}
