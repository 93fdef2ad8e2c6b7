//! The payment simulator's events: every change it makes to an intent, a
//! refund or a dispute is told, in Stripe's shape and signed as Stripe signs
//! (`Stripe-Signature: t=…,v1=HMAC-SHA256(secret, "t." + body)`), to the URL
//! configured with `--payment-events-url` or `POST /_sim/events`. Knobs
//! make the delivery as rough as a real gateway's: duplicates, drops, a
//! delay, and a random extra delay that reorders events.

use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Events made while the simulator's state was locked, sent once it is not.
#[derive(Default)]
pub struct Outbox {
    next_id: u64,
    made: Vec<Value>,
}

impl Outbox {
    /// Records event `kind` about `object` (as it is now).
    pub fn push(&mut self, kind: &str, object: Value) {
        self.next_id += 1;
        self.made.push(json!({
            "id": format!("evt_sim{:012}", self.next_id), "object": "event",
            "type": kind, "created": now(), "livemode": false,
            "api_version": "2024-06-20", "data": {"object": object},
        }));
    }

    pub fn take(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.made)
    }
}

/// Where and how events are sent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SinkConfig {
    /// Where events are POSTed; none: they are only counted.
    pub url: Option<String>,
    /// The signing secret (`whsec_…`).
    #[serde(skip_serializing)]
    pub secret: Option<String>,
    /// Share of events sent twice.
    #[serde(default)]
    pub duplicate_rate: f64,
    /// Share of events never sent.
    #[serde(default)]
    pub drop_rate: f64,
    /// Delay before each send, milliseconds.
    #[serde(default)]
    pub delay_ms: u64,
    /// A random extra delay up to this, milliseconds: events overtake
    /// each other.
    #[serde(default)]
    pub reorder_ms: u64,
}

/// Sends events as configured; counts what it did.
#[derive(Default)]
pub struct Sink {
    config: Mutex<SinkConfig>,
    counts: Mutex<SinkCounts>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SinkCounts {
    pub made: u64,
    pub sent: u64,
    pub dropped: u64,
    pub failed: u64,
}

impl Sink {
    pub fn configure(&self, config: SinkConfig) {
        if let Ok(mut c) = self.config.lock() {
            *c = config;
        }
    }

    pub fn counts(&self) -> SinkCounts {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn count(&self, f: impl FnOnce(&mut SinkCounts)) {
        if let Ok(mut c) = self.counts.lock() {
            f(&mut c);
        }
    }

    /// Sends `events`, each on its own task (on the calling arbiter).
    pub fn send(self: &std::sync::Arc<Self>, events: Vec<Value>) {
        let Ok(config) = self.config.lock().map(|c| c.clone()) else {
            return;
        };
        for event in events {
            self.count(|c| c.made += 1);
            let (Some(url), Some(secret)) = (config.url.clone(), config.secret.clone()) else {
                continue;
            };
            let mut rng = rand::rng();
            if rng.random_bool(config.drop_rate.clamp(0.0, 1.0)) {
                self.count(|c| c.dropped += 1);
                continue;
            }
            let copies = if rng.random_bool(config.duplicate_rate.clamp(0.0, 1.0)) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                let extra = if config.reorder_ms > 0 {
                    rng.random_range(0..=config.reorder_ms)
                } else {
                    0
                };
                let delay = Duration::from_millis(config.delay_ms + extra);
                let (sink, url, secret) = (self.clone(), url.clone(), secret.clone());
                let body = event.to_string();
                actix_rt::spawn(async move {
                    actix_rt::time::sleep(delay).await;
                    let ok = post(&url, &secret, body).await;
                    sink.count(|c| if ok { c.sent += 1 } else { c.failed += 1 });
                });
            }
        }
    }
}

/// POSTs one signed event; whether it was answered 2xx.
async fn post(url: &str, secret: &str, body: String) -> bool {
    let secrets = [SecretString::from(secret.to_owned())];
    let signature = crate::webhooks::signature::sign_all(&secrets, now(), body.as_bytes());
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(5))
        .finish();
    client
        .post(url)
        .insert_header(("Content-Type", "application/json"))
        .insert_header(("Stripe-Signature", signature))
        .send_body(body)
        .await
        .is_ok_and(|r| r.status().is_success())
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}
