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
        .connector(awc::Connector::new().limit(4096).timeout(timeout))
        .finish()
}
