//! Typed settings, read once at start-up from the environment (a `.env` file
//! may add to it) and passed down; nothing reads the environment later.
//!
//! Contract variables (docs/API.md): `DATABASE_URL`, `REDIS_URL`, `BIND_ADDR`,
//! `OPS_TOKEN`, `PAYMENT_GATEWAY_URL`, `PAYMENT_API_KEY`, `SHIPPING_API_URL`,
//! `WAREHOUSE_API_URL`, `PARTNER_TIMEOUT_MS`, `STATUS_REFRESH_INTERVAL_SECS`.
//!
//! Our own tuning knobs, all optional:
//! - `LOG_FORMAT` (`text` | `json`, default `text`)
//! - `DB_POOL_SIZE` (default 16): r2d2 connections per process
//! - `DB_CHECKOUT_TIMEOUT_MS` (default 2000): wait for a pooled connection
//!   before answering 503
//! - `DB_STATEMENT_TIMEOUT_MS` (default 5000): PostgreSQL `statement_timeout`
//! - `HTTP_WORKERS` (default: number of cores): actix worker threads
//! - `REDIS_PREFIX` (default `orderflow`): prefix of every Redis key, so several
//!   deployments (or tests) can share one Redis
//! - `WORKER_METRICS_ADDR` (default none): where `worker` serves its own metrics
//! - `METRICS_TOKEN` (default none): a bearer token `serve`'s `/metrics` asks for
//! - `METRICS_READ_EVERY_MS` (default 5000): how often a scrape reads the
//!   shared figures (queues, outbox lag, stuck orders) from Redis and PostgreSQL
//! - `REFRESH_PARTNER_CONCURRENCY` (default 1024): concurrent calls per partner
//!   during a status refresh, per worker process
//! - `REFRESH_CALLS_PER_SEC` (default 500): the status refresh's call budget
//!   per partner, per worker process (an on-demand refresh is not held to it)
//! - `SWEEP_GRACE_SECS` (default 30): how overdue an outbox item's next attempt
//!   must be before the sweeper pushes it again
//! - `STALE_PAYMENT_SECS` (default 60): a `payment_pending` order older than
//!   this is owed a reconciliation
//! - `JOB_MAX_ATTEMPTS` (default 8) and `JOB_RETRY_CAP_SECS` (default 120):
//!   attempt budget of deliveries, reconciliations and refunds, and the
//!   ceiling of their exponential backoff
//!
//! Webhooks and stuck orders (docs/API.md, "Order events, webhooks and stuck
//! orders"): `WEBHOOK_MAX_ATTEMPTS` (default 10), `WEBHOOK_ALLOW_PRIVATE_TARGETS`
//! (default false), `WEBHOOK_SECRETS_KEY` (32 bytes, 64 hex digits or
//! base64: the key webhook secrets are sealed with; unset, a development
//! key and a warning) and `WEBHOOK_SECRETS_KEY_PREVIOUS` (older keys, comma
//! separated, while the sweep seals again), `WEBHOOK_RETRY_BASE_MS` (default 30000: the first retry's
//! delay, doubling to a 1 h ceiling), `WEBHOOK_CONCURRENCY` (default 256:
//! requests in flight per endpoint), `WEBHOOK_HOST_CONNECTIONS` (512: requests
//! in flight to one host), `WEBHOOK_STALLED_AFTER_SECS` (60: when
//! the summary calls first deliveries stalled), `STUCK_PAYMENT_PENDING_SECS` (900),
//! `STUCK_PAID_SECS` (600), `STUCK_FULFILLING_SECS` (172800),
//! `GATEWAY_WEBHOOK_SECRETS` (the gateway's event signing secrets, comma
//! separated).

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

/// A setting that is missing or malformed. Its `Display` is the one line the
/// process prints before exiting with code 2.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

/// A setting `by` (a subcommand) cannot run without: its value, or an
/// error naming the variable.
pub fn required<T: Clone>(
    value: &Option<T>,
    var: &'static str,
    by: &str,
) -> Result<T, ConfigError> {
    value.clone().ok_or_else(|| ConfigError {
        var,
        message: format!("required by {by}"),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Everything the processes need, parsed.
#[derive(Debug, Clone)]
pub struct Settings {
    /// PostgreSQL URL; may hold a password, so it is never logged.
    pub database_url: SecretString,
    pub redis_url: SecretString,
    pub bind_addr: SocketAddr,
    /// Bearer token for the ops API. `serve` refuses to start without it.
    pub ops_token: Option<SecretString>,
    pub payment_gateway_url: Option<Url>,
    pub payment_api_key: SecretString,
    pub shipping_api_url: Option<Url>,
    pub warehouse_api_url: Option<Url>,
    /// Per-call timeout to any partner.
    pub partner_timeout: Duration,
    pub status_refresh_interval: Duration,
    pub log_format: LogFormat,
    pub db_pool_size: u32,
    pub db_checkout_timeout: Duration,
    pub db_statement_timeout: Duration,
    pub http_workers: usize,
    pub redis_prefix: String,
    /// Where a worker serves its own process metrics, if anywhere.
    pub worker_metrics_addr: Option<SocketAddr>,
    /// `METRICS_TOKEN`: when set, `serve`'s `/metrics` answers only
    /// `Authorization: Bearer` with it.
    pub metrics_token: Option<SecretString>,
    /// `METRICS_READ_EVERY_MS`: how long a scrape's PostgreSQL and Redis
    /// reads serve the scrapes after it.
    pub metrics_read_every: Duration,
    /// Concurrent calls per partner during a status refresh, per worker.
    pub refresh_partner_concurrency: usize,
    pub refresh_calls_per_sec: u32,
    /// `REFRESH_NICE`: the CPU priority (nice value, 0–19) of the threads
    /// that run status refreshes in `worker`, so that on a shared host
    /// `serve` and the deliveries win the cores; never raised; 0 keeps it.
    pub refresh_nice: i32,
    pub sweep_grace: Duration,
    pub stale_payment: Duration,
    pub job_max_attempts: i32,
    pub job_retry_cap: Duration,
    /// How long an unsettled payment or refund is retried
    /// (`PAYMENT_RETRY_WINDOW_SECS`), and when ops are told
    /// (`PAYMENT_RETRY_ATTENTION_SECS`).
    pub payment_retry_window: Duration,
    pub payment_retry_attention: Duration,
    /// Ceiling of the backoff between those retries (`PAYMENT_RETRY_CAP_SECS`).
    pub payment_retry_cap: Duration,
    /// How long a customer has to authenticate a payment
    /// (`PAYMENT_ACTION_TIMEOUT_SECS`).
    pub payment_action_timeout: Duration,
    pub webhooks: WebhookSettings,
    /// `WEBHOOK_SECRETS_KEY` (and `_PREVIOUS`): the keys webhook secrets
    /// are sealed with at rest.
    pub webhook_secrets: crate::webhooks::sealed::SecretsKeys,
    /// `GATEWAY_WEBHOOK_SECRETS`: the payment gateway's event signing
    /// secrets (several while one is rolled); none, and no event verifies.
    pub gateway_webhook_secrets: Vec<SecretString>,
    pub stuck: crate::domain::stuck::StuckRules,
}

/// How webhooks are delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookSettings {
    /// Attempts of one delivery before it is `failed`.
    pub max_attempts: i32,
    /// Whether an endpoint may target a loopback, private or link-local
    /// address (development and tests only).
    pub allow_private_targets: bool,
    /// The first retry's delay; each next one doubles, up to an hour.
    pub retry_base: Duration,
    /// Requests in flight per endpoint, per worker process.
    pub concurrency: usize,
    /// Requests in flight to one host (`host:port`), per worker process.
    pub host_connections: usize,
    /// When the summary calls the webhooks stalled: the oldest event an
    /// enabled endpoint has not tried, or the oldest open transaction
    /// holding the log's horizon, is at least this old.
    pub stalled_after: Duration,
}

impl WebhookSettings {
    fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<'_, F>) -> Result<Self, ConfigError> {
        Ok(WebhookSettings {
            max_attempts: env.bounded("WEBHOOK_MAX_ATTEMPTS", 10, 1, 100)? as i32,
            allow_private_targets: env.flag("WEBHOOK_ALLOW_PRIVATE_TARGETS")?,
            retry_base: env.millis("WEBHOOK_RETRY_BASE_MS", 30_000, 1, 3_600_000)?,
            concurrency: env.bounded("WEBHOOK_CONCURRENCY", 256, 1, 10_000)? as usize,
            host_connections: env.bounded("WEBHOOK_HOST_CONNECTIONS", 512, 1, 4096)? as usize,
            stalled_after: env.secs("WEBHOOK_STALLED_AFTER_SECS", 60, 1, 86_400)?,
        })
    }
}

fn stuck_rules<F: Fn(&str) -> Option<String>>(
    env: &Env<'_, F>,
) -> Result<crate::domain::stuck::StuckRules, ConfigError> {
    Ok(crate::domain::stuck::StuckRules {
        payment_pending: env.secs("STUCK_PAYMENT_PENDING_SECS", 900, 1, 31_536_000)?,
        paid: env.secs("STUCK_PAID_SECS", 600, 1, 31_536_000)?,
        fulfilling: env.secs("STUCK_FULFILLING_SECS", 172_800, 1, 31_536_000)?,
        awaiting_action: env.secs("PAYMENT_ACTION_TIMEOUT_SECS", 1800, 1, 604_800)?,
    })
}

impl Settings {
    /// Reads the process environment (after loading `.env` if present).
    pub fn from_env() -> Result<Self, ConfigError> {
        // A missing .env is normal; a malformed one is reported by the
        // variables it would have set.
        let _ = dotenvy::dotenv();
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds settings from any lookup, so tests need not touch the
    /// process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(&lookup);
        Ok(Settings {
            database_url: SecretString::from(env.url_string(
                "DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/orderflow",
                &["postgres", "postgresql"],
            )?),
            redis_url: SecretString::from(env.url_string(
                "REDIS_URL",
                "redis://127.0.0.1:6379",
                &["redis", "rediss", "redis+unix", "unix"],
            )?),
            bind_addr: env.parsed("BIND_ADDR", "127.0.0.1:8080")?,
            ops_token: env.optional_token("OPS_TOKEN")?,
            metrics_token: env.optional_token("METRICS_TOKEN")?,
            metrics_read_every: env.millis("METRICS_READ_EVERY_MS", 5000, 0, 600_000)?,
            payment_gateway_url: env.optional_http_url("PAYMENT_GATEWAY_URL")?,
            payment_api_key: SecretString::from(
                env.non_empty("PAYMENT_API_KEY", "sk_test_orderflow")?,
            ),
            shipping_api_url: env.optional_http_url("SHIPPING_API_URL")?,
            warehouse_api_url: env.optional_http_url("WAREHOUSE_API_URL")?,
            partner_timeout: env.millis("PARTNER_TIMEOUT_MS", 5000, 1, 600_000)?,
            status_refresh_interval: env.secs("STATUS_REFRESH_INTERVAL_SECS", 15, 1, 86_400)?,
            log_format: match env.get("LOG_FORMAT").as_deref() {
                None | Some("text") => LogFormat::Text,
                Some("json") => LogFormat::Json,
                Some(other) => {
                    return Err(ConfigError {
                        var: "LOG_FORMAT",
                        message: format!("expected `text` or `json`, got `{other}`"),
                    })
                }
            },
            db_pool_size: env.bounded("DB_POOL_SIZE", 16, 1, 1000)? as u32,
            db_checkout_timeout: env.millis("DB_CHECKOUT_TIMEOUT_MS", 2000, 1, 600_000)?,
            db_statement_timeout: env.millis("DB_STATEMENT_TIMEOUT_MS", 5000, 1, 3_600_000)?,
            http_workers: env.bounded(
                "HTTP_WORKERS",
                std::thread::available_parallelism()
                    .map(|n| n.get() as u64)
                    .unwrap_or(2),
                1,
                256,
            )? as usize,
            redis_prefix: {
                let p = env.non_empty("REDIS_PREFIX", "orderflow")?;
                if !p
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                {
                    return Err(ConfigError {
                        var: "REDIS_PREFIX",
                        message: "only letters, digits, '-', '_' and '.' are allowed".into(),
                    });
                }
                p
            },
            refresh_partner_concurrency: env.bounded(
                "REFRESH_PARTNER_CONCURRENCY",
                1024,
                1,
                100_000,
            )? as usize,
            refresh_nice: env.bounded("REFRESH_NICE", 10, 0, 19)? as i32,
            refresh_calls_per_sec: env.bounded("REFRESH_CALLS_PER_SEC", 500, 1, 1_000_000)? as u32,
            sweep_grace: env.secs("SWEEP_GRACE_SECS", 30, 0, 86_400)?,
            stale_payment: env.secs("STALE_PAYMENT_SECS", 60, 0, 86_400)?,
            job_max_attempts: env.bounded("JOB_MAX_ATTEMPTS", 8, 1, 1000)? as i32,
            job_retry_cap: env.secs("JOB_RETRY_CAP_SECS", 120, 1, 86_400)?,
            payment_retry_window: env.secs("PAYMENT_RETRY_WINDOW_SECS", 259_200, 1, 2_592_000)?,
            payment_retry_attention: env.secs(
                "PAYMENT_RETRY_ATTENTION_SECS",
                3600,
                1,
                2_592_000,
            )?,
            payment_retry_cap: env.secs("PAYMENT_RETRY_CAP_SECS", 600, 1, 86_400)?,
            payment_action_timeout: env.secs("PAYMENT_ACTION_TIMEOUT_SECS", 1800, 1, 604_800)?,
            webhooks: WebhookSettings::from_env(&env)?,
            webhook_secrets: crate::webhooks::sealed::SecretsKeys::from_config(
                env.get("WEBHOOK_SECRETS_KEY").as_deref(),
                env.get("WEBHOOK_SECRETS_KEY_PREVIOUS").as_deref(),
            )
            .map_err(|e| ConfigError {
                var: "WEBHOOK_SECRETS_KEY",
                message: e.to_string(),
            })?,
            gateway_webhook_secrets: env.token_list("GATEWAY_WEBHOOK_SECRETS")?,
            stuck: stuck_rules(&env)?,
            worker_metrics_addr: match env.get("WORKER_METRICS_ADDR") {
                None => None,
                Some(_) => Some(env.parsed("WORKER_METRICS_ADDR", "")?),
            },
        })
    }
}

struct Env<'a, F: Fn(&str) -> Option<String>>(&'a F);

impl<F: Fn(&str) -> Option<String>> Env<'_, F> {
    /// A set-but-blank variable counts as unset, like most twelve-factor tools.
    fn get(&self, var: &str) -> Option<String> {
        (self.0)(var)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// `true`/`false` (also `1`/`0`), default false.
    fn flag(&self, var: &'static str) -> Result<bool, ConfigError> {
        match self.get(var).as_deref() {
            None | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") => Ok(true),
            Some(other) => Err(ConfigError {
                var,
                message: format!("expected `true` or `false`, got `{other}`"),
            }),
        }
    }

    fn non_empty(&self, var: &'static str, default: &str) -> Result<String, ConfigError> {
        Ok(self.get(var).unwrap_or_else(|| default.to_owned()))
    }

    fn parsed<T: FromStr>(&self, var: &'static str, default: &str) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        let raw = self.non_empty(var, default)?;
        raw.parse().map_err(|e: T::Err| ConfigError {
            var,
            message: format!("cannot parse `{raw}`: {e}"),
        })
    }

    fn bounded(
        &self,
        var: &'static str,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<u64, ConfigError> {
        let v: u64 = self.parsed(var, &default.to_string())?;
        if v < min || v > max {
            return Err(ConfigError {
                var,
                message: format!("must be between {min} and {max}, got {v}"),
            });
        }
        Ok(v)
    }

    /// [`Env::bounded`] seconds.
    fn secs(
        &self,
        var: &'static str,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<Duration, ConfigError> {
        Ok(Duration::from_secs(self.bounded(var, default, min, max)?))
    }

    /// [`Env::bounded`] milliseconds.
    fn millis(
        &self,
        var: &'static str,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<Duration, ConfigError> {
        Ok(Duration::from_millis(self.bounded(var, default, min, max)?))
    }

    /// A URL whose scheme is one of `schemes`. The value itself is never
    /// echoed in the error, since it may carry a password.
    fn url_string(
        &self,
        var: &'static str,
        default: &str,
        schemes: &[&str],
    ) -> Result<String, ConfigError> {
        let raw = self.non_empty(var, default)?;
        let url = Url::parse(&raw).map_err(|e| ConfigError {
            var,
            message: format!("not a valid URL ({e})"),
        })?;
        if !schemes.contains(&url.scheme()) {
            return Err(ConfigError {
                var,
                message: format!("scheme must be one of {}", schemes.join(", ")),
            });
        }
        Ok(raw)
    }

    fn optional_http_url(&self, var: &'static str) -> Result<Option<Url>, ConfigError> {
        let Some(raw) = self.get(var) else {
            return Ok(None);
        };
        let url = Url::parse(&raw).map_err(|e| ConfigError {
            var,
            message: format!("not a valid URL ({e})"),
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(ConfigError {
                var,
                message: "must be an http:// or https:// URL with a host".into(),
            });
        }
        Ok(Some(url))
    }

    /// Comma-separated tokens, each as [`Env::optional_token`] wants it.
    fn token_list(&self, var: &'static str) -> Result<Vec<SecretString>, ConfigError> {
        let Some(raw) = self.get(var) else {
            return Ok(Vec::new());
        };
        raw.split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| token(var, t))
            .collect()
    }

    fn optional_token(&self, var: &'static str) -> Result<Option<SecretString>, ConfigError> {
        self.get(var).map(|raw| token(var, &raw)).transpose()
    }
}

/// A token or secret: at least 8 printable ASCII characters, no spaces.
fn token(var: &'static str, raw: &str) -> Result<SecretString, ConfigError> {
    if raw.len() < 8 || !raw.chars().all(|c| c.is_ascii_graphic()) {
        return Err(ConfigError {
            var,
            message: "must be at least 8 printable ASCII characters without spaces".into(),
        });
    }
    Ok(SecretString::from(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_match_the_contract() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.bind_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(s.partner_timeout, Duration::from_millis(5000));
        assert_eq!(s.status_refresh_interval, Duration::from_secs(15));
        assert!(s.ops_token.is_none());
        assert!(s.payment_gateway_url.is_none());
    }

    #[test]
    fn a_malformed_value_names_its_variable() {
        for (var, value) in [
            ("PARTNER_TIMEOUT_MS", "soon"),
            ("PARTNER_TIMEOUT_MS", "0"),
            ("BIND_ADDR", "localhost"),
            ("DATABASE_URL", "mysql://x/y"),
            ("PAYMENT_GATEWAY_URL", "ftp://gw"),
            ("OPS_TOKEN", "short"),
            ("LOG_FORMAT", "xml"),
        ] {
            let err = settings(&[(var, value)]).unwrap_err();
            assert_eq!(err.var, var);
            assert!(err.to_string().contains(var));
        }
    }

    #[test]
    fn a_database_password_is_not_echoed_in_errors() {
        let err = settings(&[("DATABASE_URL", "http://user:hunter2@db/x")]).unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
    }
}
