//! Warehouse simulator (docs/API.md): stock per sku, derived from the seed so
//! runs are reproducible. Every sku is known except those listed as unknown
//! through `POST /_sim/unknown_skus` (404 for them).

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::RwLock;

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde_json::{json, Value};

use super::Chaos;

pub struct WarehouseSim {
    seed: u64,
    unknown: RwLock<HashSet<String>>,
}

impl WarehouseSim {
    pub fn new(seed: u64) -> Self {
        WarehouseSim {
            seed,
            unknown: RwLock::new(HashSet::new()),
        }
    }

    fn stock(&self, sku: &str) -> Option<Value> {
        if self
            .unknown
            .read()
            .map(|u| u.contains(sku))
            .unwrap_or(false)
        {
            return None;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (self.seed, sku).hash(&mut h);
        let x = h.finish();
        let on_hand = (x % 500) as i64;
        let reserved = ((x >> 16) % 50) as i64;
        Some(
            json!({"sku": sku, "on_hand": on_hand, "reserved": reserved.min(on_hand),
                    "available": on_hand - reserved.min(on_hand), "updated_at": Utc::now().to_rfc3339()}),
        )
    }
}

async fn one(
    path: web::Path<String>,
    sim: web::Data<WarehouseSim>,
    chaos: web::Data<Chaos>,
) -> HttpResponse {
    if let Some(fail) = chaos.apply().await {
        return fail;
    }
    match sim.stock(&path) {
        Some(s) => HttpResponse::Ok().json(s),
        None => HttpResponse::NotFound()
            .json(json!({"error": {"code": "not_found", "message": "unknown sku"}})),
    }
}

async fn many(
    req: HttpRequest,
    sim: web::Data<WarehouseSim>,
    chaos: web::Data<Chaos>,
) -> HttpResponse {
    if let Some(fail) = chaos.apply().await {
        return fail;
    }
    let query: Vec<(String, String)> =
        serde_urlencoded::from_str(req.query_string()).unwrap_or_default();
    let skus: Vec<&str> = query
        .iter()
        .filter(|(k, _)| k == "skus")
        .flat_map(|(_, v)| v.split(','))
        .filter(|s| !s.is_empty())
        .collect();
    if skus.is_empty() || skus.len() > 100 {
        return HttpResponse::BadRequest().json(json!({"error": {"code": "invalid_request", "message": "skus: 1 to 100 comma-separated skus"}}));
    }
    let stock: Vec<Value> = skus.iter().filter_map(|s| sim.stock(s)).collect();
    HttpResponse::Ok().json(json!({"stock": stock}))
}

async fn set_unknown(sim: web::Data<WarehouseSim>, body: web::Json<Vec<String>>) -> HttpResponse {
    if let Ok(mut u) = sim.unknown.write() {
        *u = body.into_inner().into_iter().collect();
    }
    HttpResponse::NoContent().finish()
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/stock", web::get().to(many))
        .route("/v1/stock/{sku}", web::get().to(one))
        .route("/_sim/unknown_skus", web::post().to(set_unknown));
}
