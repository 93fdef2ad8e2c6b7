//! Storefront simulator: a webhook receiver. `POST /webhooks` answers 200
//! (after the chaos knobs: latency, failures, hangs) and counts what it got;
//! `GET /webhooks/stats` says how many requests and distinct events. It
//! does not check signatures (docs/WEBHOOKS.md shows a receiver that does).

use std::collections::HashSet;
use std::sync::Mutex;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::Chaos;

#[derive(Default)]
pub struct StorefrontSim {
    received: Mutex<(u64, HashSet<String>)>,
}

impl StorefrontSim {
    /// Requests answered 2xx, and the distinct event ids among them.
    pub fn stats(&self) -> (u64, usize) {
        let r = self.received.lock().unwrap_or_else(|p| p.into_inner());
        (r.0, r.1.len())
    }
}

/// Takes the body as a receiver does (to verify it): actix-web closes a
/// connection whose request body was left unread, so without it every
/// delivery would open a new one.
async fn receive(
    req: HttpRequest,
    _body: web::Bytes,
    sim: web::Data<StorefrontSim>,
    chaos: web::Data<Chaos>,
) -> HttpResponse {
    if let Some(fail) = chaos.apply().await {
        return fail;
    }
    let id = req
        .headers()
        .get("orderflow-event-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut r = sim.received.lock().unwrap_or_else(|p| p.into_inner());
    r.0 += 1;
    r.1.insert(id);
    HttpResponse::Ok().finish()
}

async fn stats(sim: web::Data<StorefrontSim>) -> HttpResponse {
    let (received, distinct) = sim.stats();
    HttpResponse::Ok().json(json!({"received": received, "distinct": distinct}))
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/webhooks", web::post().to(receive))
        .route("/webhooks/stats", web::get().to(stats));
}
