//! Payment gateway simulator: the Stripe subset of docs/API.md.
//!
//! Stripe's test payment methods behave as in test mode; `Idempotency-Key`
//! replays the first response (`Idempotent-Replayed: true`) and rejects
//! different parameters with 400 `idempotency_error`, as Stripe does.
//! Counters: intents created per `metadata[order_id]`, refunds per intent.

use std::collections::HashMap;
use std::sync::Mutex;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use serde_json::{json, Value};

use super::Chaos;

#[derive(Debug, Clone, Serialize)]
struct Intent {
    id: String,
    amount: i64,
    currency: String,
    status: String,
    payment_method: String,
    order_id: Option<String>,
    refunded: bool,
}

impl Intent {
    fn json(&self) -> Value {
        let mut metadata = serde_json::Map::new();
        if let Some(o) = &self.order_id {
            metadata.insert("order_id".into(), json!(o));
        }
        json!({
            "id": self.id, "object": "payment_intent", "amount": self.amount,
            "currency": self.currency, "status": self.status,
            "payment_method": self.payment_method, "metadata": metadata,
            "livemode": false,
        })
    }
}

#[derive(Default)]
struct State {
    next_id: u64,
    intents: HashMap<String, Intent>,
    /// key → (request fingerprint, status, body)
    idempotency: HashMap<String, (String, u16, Value)>,
    intents_by_order: HashMap<String, u32>,
    succeeded_by_order: HashMap<String, u32>,
    refunds_by_intent: HashMap<String, u32>,
    requests: u64,
    posts_without_key: u64,
}

/// The simulator's state; tests read its counters directly or over HTTP.
#[derive(Default)]
pub struct PaymentSim {
    state: Mutex<State>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct PaymentStats {
    /// PaymentIntents created per order id (replays do not count).
    pub intents_by_order: HashMap<String, u32>,
    /// Successful charges per order id.
    pub succeeded_by_order: HashMap<String, u32>,
    pub refunds_by_intent: HashMap<String, u32>,
    /// Every POST (charges, intent cancels, refunds), replays and failures included.
    pub requests: u64,
    /// POSTs that came without an `Idempotency-Key`.
    pub posts_without_key: u64,
}

impl PaymentSim {
    /// Counts a POST (and whether it had no `Idempotency-Key`).
    fn count_post(&self, req: &HttpRequest) {
        if let Ok(mut s) = self.state.lock() {
            s.requests += 1;
            if !req.headers().contains_key("idempotency-key") {
                s.posts_without_key += 1;
            }
        }
    }

    pub fn stats(&self) -> PaymentStats {
        match self.state.lock() {
            Ok(s) => PaymentStats {
                intents_by_order: s.intents_by_order.clone(),
                succeeded_by_order: s.succeeded_by_order.clone(),
                refunds_by_intent: s.refunds_by_intent.clone(),
                requests: s.requests,
                posts_without_key: s.posts_without_key,
            },
            Err(_) => PaymentStats::default(),
        }
    }

    /// Successful charges for one order.
    pub fn charges_for(&self, order_id: &str) -> u32 {
        self.stats()
            .succeeded_by_order
            .get(order_id)
            .copied()
            .unwrap_or(0)
    }
}

enum Card {
    Succeeds,
    Declines(&'static str),
    RequiresAction,
    Unknown,
}

/// Stripe's test payment methods.
fn card(pm: &str) -> Card {
    match pm {
        "pm_card_chargeDeclined" | "pm_card_visa_chargeDeclined" | "pm_card_chargeCustomerFail" => {
            Card::Declines("generic_decline")
        }
        "pm_card_chargeDeclinedInsufficientFunds" => Card::Declines("insufficient_funds"),
        "pm_card_chargeDeclinedLostCard" => Card::Declines("lost_card"),
        "pm_card_chargeDeclinedStolenCard" => Card::Declines("stolen_card"),
        "pm_card_chargeDeclinedExpiredCard" => Card::Declines("expired_card"),
        "pm_card_authenticationRequired"
        | "pm_card_threeDSecure2Required"
        | "pm_card_threeDSecureRequired" => Card::RequiresAction,
        pm if pm.starts_with("pm_card_") => Card::Succeeds,
        _ => Card::Unknown,
    }
}

fn error(status: StatusCode, body: Value) -> (u16, Value) {
    (status.as_u16(), body)
}

fn authorized(req: &HttpRequest) -> bool {
    req.headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|k| k.starts_with("sk_") && k.len() > 5)
}

fn unauthorized() -> HttpResponse {
    HttpResponse::Unauthorized().json(
        json!({"error": {"type": "invalid_request_error", "message": "Invalid API Key provided"}}),
    )
}

fn reply((status, body): (u16, Value), replayed: bool) -> HttpResponse {
    let mut b = HttpResponse::build(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    );
    if replayed {
        b.insert_header(("Idempotent-Replayed", "true"));
    }
    b.json(body)
}

fn form(body: &[u8]) -> Result<Vec<(String, String)>, Box<HttpResponse>> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body).map_err(|e| {
        Box::new(HttpResponse::BadRequest().json(json!({"error": {"type": "invalid_request_error", "message": format!("bad form: {e}")}})))
    })
}

/// Runs `op` under Stripe's idempotency rules for `key`.
fn idempotent(
    state: &mut State,
    key: Option<&str>,
    path: &str,
    params: &[(String, String)],
    op: impl FnOnce(&mut State) -> (u16, Value),
) -> HttpResponse {
    let Some(key) = key else {
        return reply(op(state), false);
    };
    let mut sorted = params.to_vec();
    sorted.sort();
    let fp = format!(
        "{path}?{}",
        serde_urlencoded::to_string(&sorted).unwrap_or_default()
    );
    if let Some((stored_fp, status, body)) = state.idempotency.get(key) {
        if *stored_fp != fp {
            return reply(
                error(
                    StatusCode::BAD_REQUEST,
                    json!({"error": {"type": "idempotency_error", "message": "Keys for idempotent requests can only be used with the same parameters they were first used with."}}),
                ),
                false,
            );
        }
        return reply((*status, body.clone()), true);
    }
    let out = op(state);
    state
        .idempotency
        .insert(key.to_owned(), (fp, out.0, out.1.clone()));
    reply(out, false)
}

fn create_intent(state: &mut State, params: &[(String, String)]) -> (u16, Value) {
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let Some(amount) = get("amount")
        .and_then(|a| a.parse::<i64>().ok())
        .filter(|a| *a > 0)
    else {
        return error(
            StatusCode::BAD_REQUEST,
            json!({"error": {"type": "invalid_request_error", "code": "parameter_invalid_integer", "param": "amount", "message": "Invalid positive integer"}}),
        );
    };
    let Some(currency) = get("currency").filter(|c| c.len() == 3) else {
        return error(
            StatusCode::BAD_REQUEST,
            json!({"error": {"type": "invalid_request_error", "code": "parameter_missing", "param": "currency", "message": "Missing required param: currency."}}),
        );
    };
    let pm = get("payment_method").unwrap_or_default().to_owned();
    let confirm = get("confirm") == Some("true");
    let order_id = get("metadata[order_id]").map(str::to_owned);
    let outcome = card(&pm);
    if let Card::Unknown = outcome {
        return error(
            StatusCode::BAD_REQUEST,
            json!({"error": {"type": "invalid_request_error", "code": "resource_missing", "param": "payment_method", "message": format!("No such PaymentMethod: '{pm}'")}}),
        );
    }
    state.next_id += 1;
    let id = format!("pi_sim{:012}", state.next_id);
    let status = match (&outcome, confirm) {
        (_, false) => "requires_confirmation",
        (Card::Succeeds, true) => "succeeded",
        (Card::Declines(_), true) => "requires_payment_method",
        (Card::RequiresAction, true) => "requires_action",
        (Card::Unknown, true) => "requires_payment_method",
    };
    let intent = Intent {
        id: id.clone(),
        amount,
        currency: currency.to_owned(),
        status: status.to_owned(),
        payment_method: pm,
        order_id: order_id.clone(),
        refunded: false,
    };
    if let Some(o) = &order_id {
        *state.intents_by_order.entry(o.clone()).or_default() += 1;
        if status == "succeeded" {
            *state.succeeded_by_order.entry(o.clone()).or_default() += 1;
        }
    }
    let body = intent.json();
    state.intents.insert(id, intent);
    match outcome {
        Card::Declines(code) if confirm => error(
            StatusCode::PAYMENT_REQUIRED,
            json!({"error": {"type": "card_error", "code": "card_declined", "decline_code": code,
                             "message": "Your card was declined.", "payment_intent": body}}),
        ),
        _ => (200, body),
    }
}

async fn post_intents(
    req: HttpRequest,
    body: web::Bytes,
    sim: web::Data<PaymentSim>,
    chaos: web::Data<Chaos>,
) -> HttpResponse {
    sim.count_post(&req);
    chaos
        .around(|| {
            with_form(&req, &body, &sim, |state, key, params| {
                idempotent(state, key, "/v1/payment_intents", params, |s| {
                    create_intent(s, params)
                })
            })
        })
        .await
}

/// Runs `op` on an authorized request's form and `Idempotency-Key`.
fn with_form(
    req: &HttpRequest,
    body: &[u8],
    sim: &PaymentSim,
    op: impl FnOnce(&mut State, Option<&str>, &[(String, String)]) -> HttpResponse,
) -> HttpResponse {
    if !authorized(req) {
        return unauthorized();
    }
    let params = match form(body) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let key = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok());
    let Ok(mut state) = sim.state.lock() else {
        return HttpResponse::InternalServerError().finish();
    };
    op(&mut state, key, &params)
}

async fn get_intent(
    req: HttpRequest,
    path: web::Path<String>,
    sim: web::Data<PaymentSim>,
    chaos: web::Data<Chaos>,
) -> HttpResponse {
    if let Some(fail) = chaos.apply().await {
        return fail;
    }
    if !authorized(&req) {
        return unauthorized();
    }
    let Ok(state) = sim.state.lock() else {
        return HttpResponse::InternalServerError().finish();
    };
    match state.intents.get(path.as_str()) {
        Some(i) => HttpResponse::Ok().json(i.json()),
        None => HttpResponse::NotFound().json(json!({"error": {"type": "invalid_request_error", "code": "resource_missing", "message": "No such payment_intent"}})),
    }
}

async fn cancel_intent(
    req: HttpRequest,
    path: web::Path<String>,
    sim: web::Data<PaymentSim>,
    chaos: web::Data<Chaos>,
) -> HttpResponse {
    sim.count_post(&req);
    chaos
        .around(|| {
            if !authorized(&req) {
                return unauthorized();
            }
            let Ok(mut state) = sim.state.lock() else {
                return HttpResponse::InternalServerError().finish();
            };
            match state.intents.get_mut(path.as_str()) {
                None => HttpResponse::NotFound().json(json!({"error": {"type": "invalid_request_error", "code": "resource_missing"}})),
                Some(i) if i.status == "succeeded" || i.status == "canceled" => HttpResponse::BadRequest()
                    .json(json!({"error": {"type": "invalid_request_error", "code": "payment_intent_unexpected_state"}})),
                Some(i) => {
                    i.status = "canceled".into();
                    HttpResponse::Ok().json(i.json())
                }
            }
        })
        .await
}

async fn post_refund(
    req: HttpRequest,
    body: web::Bytes,
    sim: web::Data<PaymentSim>,
    chaos: web::Data<Chaos>,
) -> HttpResponse {
    sim.count_post(&req);
    chaos
        .around(|| {
            with_form(&req, &body, &sim, |state, key, params| {
                let pi = params
                    .iter()
                    .find(|(k, _)| k == "payment_intent")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                idempotent(state, key, "/v1/refunds", params, |s| refund(s, &pi))
            })
        })
        .await
}

/// Refunds intent `pi` in full, once.
fn refund(s: &mut State, pi: &str) -> (u16, Value) {
    let Some(intent) = s.intents.get_mut(pi) else {
        return error(
            StatusCode::NOT_FOUND,
            json!({"error": {"type": "invalid_request_error", "code": "resource_missing"}}),
        );
    };
    if intent.status != "succeeded" {
        return error(
            StatusCode::BAD_REQUEST,
            json!({"error": {"type": "invalid_request_error", "message": "Cannot refund a failed payment."}}),
        );
    }
    if intent.refunded {
        return error(
            StatusCode::BAD_REQUEST,
            json!({"error": {"type": "invalid_request_error", "code": "charge_already_refunded", "message": "Charge has already been refunded."}}),
        );
    }
    intent.refunded = true;
    let amount = intent.amount;
    let currency = intent.currency.clone();
    *s.refunds_by_intent.entry(pi.to_owned()).or_default() += 1;
    s.next_id += 1;
    (
        200,
        json!({"id": format!("re_sim{:012}", s.next_id), "object": "refund", "amount": amount,
                 "currency": currency, "payment_intent": pi, "status": "succeeded"}),
    )
}

async fn stats(sim: web::Data<PaymentSim>) -> HttpResponse {
    HttpResponse::Ok().json(sim.stats())
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/payment_intents", web::post().to(post_intents))
        .route("/v1/payment_intents/{id}", web::get().to(get_intent))
        .route(
            "/v1/payment_intents/{id}/cancel",
            web::post().to(cancel_intent),
        )
        .route("/v1/refunds", web::post().to(post_refund))
        .route("/_sim/stats", web::get().to(stats));
}
