//! Clients of the partner systems (docs/API.md). Each is one struct with a base
//! URL and timeout from the settings, so the simulators, localstripe or the
//! real partner can stand behind it. All calls go through awc and never hold
//! a database connection.

pub mod call;
pub mod executor;
pub mod payment;
pub mod shipping;
pub mod warehouse;

use std::time::Duration;

crate::domain::status::text_enum! {
    /// The three partner systems, as metrics, health and limits name them.
    Partner {
        Payment => "payment",
        Shipping => "shipping",
        Warehouse => "warehouse",
    }
}

/// An awc client for partner calls. awc clients are per thread (not `Send`),
/// so each actix worker or job runtime builds its own.
fn http_client(timeout: Duration) -> awc::Client {
    awc::Client::builder()
        .timeout(timeout)
        .disable_redirects()
        .connector(
            awc::Connector::new()
                .limit(4096)
                .timeout(timeout)
                .conn_keep_alive(IDLE_REUSE),
        )
        .finish()
}

/// How long an idle pooled connection may be reused. awc keeps one for 15 s,
/// but many servers close an idle connection after 5 s (actix-web's and
/// Node's defaults, the simulators among them); a request sent on a
/// connection the server is closing at that moment is reset, and a reset
/// POST is an unknown outcome. Below 5 s, the client closes first.
pub const IDLE_REUSE: Duration = Duration::from_secs(4);
