//! Logging: structured `tracing` output, JSON when `LOG_FORMAT=json`.
//! `RUST_LOG` overrides the default filter. Nothing here logs secrets:
//! settings hold them as `SecretString`, whose Debug output is redacted.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,actix_server=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    // try_init: tests may initialise more than once.
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
