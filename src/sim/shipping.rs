//! Shipping partner simulator (docs/API.md). A shipment is keyed by its
//! `reference`: a second POST with the same reference answers 200 with the
//! same shipment, never a second one. Status advances with time:
//! label_created → in_transit → out_for_delivery → delivered, one stage per
//! `stage` interval, unless a test or a demo pins it with
//! `POST /_sim/shipments/{id}/status` `{"status": "in_transit"}`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use super::Chaos;

struct Shipment {
    id: String,
    reference: String,
    tracking_number: String,
    created: Instant,
    created_at: DateTime<Utc>,
    /// A stage set through `/_sim/shipments/{id}/status`; time no longer moves it.
    pinned: Option<&'static str>,
}

const STAGES: [&str; 4] = [
    "label_created",
    "in_transit",
    "out_for_delivery",
    "delivered",
];

#[derive(Default)]
struct State {
    next_id: u64,
    by_id: HashMap<String, Shipment>,
    id_by_reference: HashMap<String, String>,
    posts_by_reference: HashMap<String, u32>,
    arrivals_ms_by_reference: HashMap<String, Vec<u64>>,
}

pub struct ShippingSim {
    started: Instant,
    stage: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ShippingStats {
    /// Shipments that exist per reference (1 at most, by design).
    pub shipments_by_reference: HashMap<String, u32>,
    /// POSTs received per reference, retries included.
    pub posts_by_reference: HashMap<String, u32>,
    /// When each POST for a reference arrived (ms since the simulator
    /// started), failed and hung ones included.
    pub arrivals_ms_by_reference: HashMap<String, Vec<u64>>,
}

impl ShippingSim {
    pub fn new(stage: Duration) -> Self {
        ShippingSim {
            started: Instant::now(),
            stage: stage.max(Duration::from_millis(1)),
            state: Mutex::new(State::default()),
        }
    }

    pub fn stats(&self) -> ShippingStats {
        match self.state.lock() {
            Ok(s) => ShippingStats {
                shipments_by_reference: s.by_id.values().fold(HashMap::new(), |mut m, sh| {
                    *m.entry(sh.reference.clone()).or_default() += 1;
                    m
                }),
                posts_by_reference: s.posts_by_reference.clone(),
                arrivals_ms_by_reference: s.arrivals_ms_by_reference.clone(),
            },
            Err(_) => ShippingStats::default(),
        }
    }

    fn view(&self, s: &Shipment) -> Value {
        let stage = (s.created.elapsed().as_millis() / self.stage.as_millis().max(1)) as usize;
        let status = s.pinned.unwrap_or(STAGES[stage.min(3)]);
        let eta = s.created_at + chrono::Duration::days(3);
        json!({
            "id": s.id, "reference": s.reference, "status": status,
            "tracking_number": s.tracking_number, "eta": eta.to_rfc3339(),
            "updated_at": Utc::now().to_rfc3339(),
        })
    }
}

async fn create(
    body: web::Bytes,
    sim: web::Data<ShippingSim>,
    chaos: web::Data<Chaos>,
) -> HttpResponse {
    let reference = serde_json::from_slice::<Value>(&body).ok().and_then(|v| {
        v.get("reference")
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    if let (Some(r), Ok(mut state)) = (reference, sim.state.lock()) {
        let at = sim.started.elapsed().as_millis() as u64;
        state
            .arrivals_ms_by_reference
            .entry(r)
            .or_default()
            .push(at);
    }
    chaos.around(|| create_now(&body, &sim)).await
}

fn create_now(body: &[u8], sim: &ShippingSim) -> HttpResponse {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let Some(reference) = parsed
        .get("reference")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
    else {
        return HttpResponse::BadRequest().json(
            json!({"error": {"code": "invalid_request", "message": "reference is required"}}),
        );
    };
    if !parsed.get("address").is_some_and(Value::is_object)
        || !parsed.get("items").is_some_and(Value::is_array)
    {
        return HttpResponse::BadRequest().json(json!({"error": {"code": "invalid_request", "message": "address and items are required"}}));
    }
    let Ok(mut state) = sim.state.lock() else {
        return HttpResponse::InternalServerError().finish();
    };
    *state
        .posts_by_reference
        .entry(reference.to_owned())
        .or_default() += 1;
    if let Some(id) = state.id_by_reference.get(reference).cloned() {
        if let Some(s) = state.by_id.get(&id) {
            return HttpResponse::Ok().json(sim.view(s));
        }
    }
    state.next_id += 1;
    let n = state.next_id;
    let shipment = Shipment {
        id: format!("shp_sim{n:012}"),
        reference: reference.to_owned(),
        tracking_number: format!("TRK{n:010}"),
        created: Instant::now(),
        created_at: Utc::now(),
        pinned: None,
    };
    let body = sim.view(&shipment);
    state
        .id_by_reference
        .insert(reference.to_owned(), shipment.id.clone());
    state.by_id.insert(shipment.id.clone(), shipment);
    HttpResponse::Created().json(body)
}

async fn get(
    path: web::Path<String>,
    sim: web::Data<ShippingSim>,
    chaos: web::Data<Chaos>,
) -> HttpResponse {
    if let Some(fail) = chaos.apply().await {
        return fail;
    }
    let Ok(state) = sim.state.lock() else {
        return HttpResponse::InternalServerError().finish();
    };
    match state.by_id.get(path.as_str()) {
        Some(s) => HttpResponse::Ok().json(sim.view(s)),
        None => HttpResponse::NotFound()
            .json(json!({"error": {"code": "not_found", "message": "no such shipment"}})),
    }
}

/// `POST /_sim/shipments/{id}/status` `{"status": "<stage>"}`: pins the
/// shipment at that stage, so a test sees each stage for as long as it needs.
async fn pin(
    path: web::Path<String>,
    body: web::Bytes,
    sim: web::Data<ShippingSim>,
) -> HttpResponse {
    let wanted = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("status").and_then(Value::as_str).map(str::to_owned));
    let Some(stage) = wanted.and_then(|w| STAGES.iter().find(|s| **s == w).copied()) else {
        return HttpResponse::BadRequest().json(json!({"error": {"code": "invalid_request",
            "message": format!("status must be one of {}", STAGES.join(", "))}}));
    };
    let Ok(mut state) = sim.state.lock() else {
        return HttpResponse::InternalServerError().finish();
    };
    match state.by_id.get_mut(path.as_str()) {
        Some(s) => {
            s.pinned = Some(stage);
            HttpResponse::Ok().json(sim.view(s))
        }
        None => HttpResponse::NotFound()
            .json(json!({"error": {"code": "not_found", "message": "no such shipment"}})),
    }
}

async fn stats(sim: web::Data<ShippingSim>) -> HttpResponse {
    HttpResponse::Ok().json(sim.stats())
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/shipments", web::post().to(create))
        .route("/v1/shipments/{id}", web::get().to(get))
        .route("/_sim/shipments/{id}/status", web::post().to(pin))
        .route("/_sim/stats", web::get().to(stats));
}
