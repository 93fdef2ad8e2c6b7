//! The HTTP API's shared parts (actix-web): the application state, ops
//! auth, body and query parsing, the wire types (`views`), and the
//! handlers of the resources that are not a feature room of their own.
//! The route table and the server are in `serve`.

pub mod auth;
pub mod body;
pub mod dashboard;
pub mod gateway;
pub mod health;
pub mod orders;
pub mod products;
pub mod query;
pub mod views;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use crate::db::DbPool;
use crate::jobs::JobQueue;

/// Shared by every worker of a `serve` process.
pub struct AppState {
    pub pool: DbPool,
    pub queue: Arc<JobQueue>,
    pub ops_token_digest: [u8; 32],
    /// Who each staff token and session is, cached (`staff::cache`).
    pub staff: Arc<crate::staff::cache::PrincipalCache>,
    /// How long an `in_progress` idempotency record may stay silent before a
    /// retry takes it over (a crashed request).
    pub idempotency_lease: Duration,
    /// The dashboard's micro-cache of rendered boards, and the board
    /// generation its event streams follow.
    pub board_cache: Arc<crate::board::cache::BoardCache>,
    /// When an order is stuck (`STUCK_*_SECS`).
    pub stuck: crate::domain::stuck::StuckRules,
    /// Webhook registration rules (`WEBHOOK_ALLOW_PRIVATE_TARGETS`).
    pub webhooks: crate::config::WebhookSettings,
    /// `/metrics`: its token, and when its shared figures were last read.
    pub scrape: health::Scrape,
    /// The keys webhook secrets are sealed with (`WEBHOOK_SECRETS_KEY`).
    pub secrets: Arc<crate::webhooks::sealed::SecretsKeys>,
    /// The gateway's event signing secrets (`GATEWAY_WEBHOOK_SECRETS`).
    pub gateway_secrets: Arc<Vec<secrecy::SecretString>>,
    /// The job kinds whose queues `/metrics` and the board report (the
    /// workers' list, `worker::KINDS`).
    pub job_kinds: &'static [&'static str],
}
