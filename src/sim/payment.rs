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
    created: i64,
    last_payment_error: Option<Value>,
    charge: Option<String>,
}

impl Intent {
    fn json(&self) -> Value {
        let mut metadata = serde_json::Map::new();
        if let Some(o) = &self.order_id {
            metadata.insert("order_id".into(), json!(o));
        }
        let next_action = (self.status == "requires_action").then(|| {
            json!({"type": "use_stripe_sdk", "use_stripe_sdk": {"type": "three_d_secure_redirect"}})
        });
        json!({
            "id": self.id, "object": "payment_intent", "amount": self.amount,
            "currency": self.currency, "status": self.status,
            "client_secret": format!("{}_secret_sim", self.id),
            "next_action": next_action, "last_payment_error": self.last_payment_error,
            "latest_charge": self.charge, "created": self.created,
            "payment_method": self.payment_method, "metadata": metadata,
            "livemode": false,
        })
    }
}

#[derive(Default)]
pub(super) struct State {
    next_id: u64,
    intents: HashMap<String, Intent>,
    /// key → (request fingerprint, status, body)
    idempotency: HashMap<String, (String, u16, Value)>,
    intents_by_order: HashMap<String, u32>,
    succeeded_by_order: HashMap<String, u32>,
    refunds_by_intent: HashMap<String, u32>,
    requests: u64,
    reads: u64,
    posts_without_key: u64,
    refunds: HashMap<String, Value>,
    disputes: HashMap<String, Value>,
    /// What the gateway tells of its changes (`super::payment_events`).
    pub(super) events: super::payment_events::Outbox,
    /// The next this many confirms are made, then answered 500 (a response
    /// lost after the charge).
    lose_confirm_responses: u32,
}

/// The simulator's state; tests read its counters directly or over HTTP.
#[derive(Default)]
pub struct PaymentSim {
    pub(super) state: Mutex<State>,
    pub(super) sink: std::sync::Arc<super::payment_events::Sink>,
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
    /// Every GET of an object or a search, failures included.
    pub reads: u64,
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
                reads: s.reads,
                posts_without_key: s.posts_without_key,
            },
            Err(_) => PaymentStats::default(),
        }
    }

    /// Sends every change's event to `url`, signed with `secret`.
    pub fn send_events_to(&self, url: &str, secret: &str) {
        self.sink.configure(super::payment_events::SinkConfig {
            url: Some(url.to_owned()),
            secret: Some(secret.to_owned()),
            ..Default::default()
        });
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
    if let Card::Unknown = card(&pm) {
        return error(
            StatusCode::BAD_REQUEST,
            json!({"error": {"type": "invalid_request_error", "code": "resource_missing", "param": "payment_method", "message": format!("No such PaymentMethod: '{pm}'")}}),
        );
    }
    state.next_id += 1;
    let id = format!("pi_sim{:012}", state.next_id);
    let intent = Intent {
        id: id.clone(),
        amount,
        currency: currency.to_owned(),
        status: "requires_confirmation".to_owned(),
        payment_method: pm,
        order_id: order_id.clone(),
        refunded: false,
        created: chrono::Utc::now().timestamp(),
        last_payment_error: None,
        charge: None,
    };
    if let Some(o) = &order_id {
        *state.intents_by_order.entry(o.clone()).or_default() += 1;
    }
    let body = intent.json();
    state.intents.insert(id.clone(), intent);
    state.events.push("payment_intent.created", body.clone());
    if confirm {
        return confirm_intent(state, &id);
    }
    (200, body)
}

/// Confirms intent `id`: the charge, as its test card decides.
fn confirm_intent(state: &mut State, id: &str) -> (u16, Value) {
    let Some(intent) = state.intents.get_mut(id) else {
        return missing("payment_intent");
    };
    if intent.status != "requires_confirmation" {
        let body = intent.json();
        return error(
            StatusCode::BAD_REQUEST,
            json!({"error": {"type": "invalid_request_error", "code": "payment_intent_unexpected_state",
                             "message": format!("This PaymentIntent's status is {}.", intent.status),
                             "payment_intent": body}}),
        );
    }
    match card(&intent.payment_method) {
        Card::Succeeds => succeed(state, id),
        Card::RequiresAction => {
            intent.status = "requires_action".into();
            let body = intent.json();
            state
                .events
                .push("payment_intent.requires_action", body.clone());
            (200, body)
        }
        Card::Declines(code) => {
            decline(
                intent,
                "card_declined",
                Some(code),
                "Your card was declined.",
            );
            let body = intent.json();
            state
                .events
                .push("payment_intent.payment_failed", body.clone());
            error(
                StatusCode::PAYMENT_REQUIRED,
                json!({"error": {"type": "card_error", "code": "card_declined", "decline_code": code,
                                 "message": "Your card was declined.", "payment_intent": body}}),
            )
        }
        Card::Unknown => missing("payment_method"),
    }
}

fn decline(intent: &mut Intent, code: &str, decline_code: Option<&str>, message: &str) {
    intent.status = "requires_payment_method".into();
    intent.last_payment_error = Some(
        json!({"type": "card_error", "code": code, "decline_code": decline_code, "message": message}),
    );
}

/// The charge of intent `id` succeeds.
fn succeed(state: &mut State, id: &str) -> (u16, Value) {
    state.next_id += 1;
    let charge = format!("ch_sim{:012}", state.next_id);
    let Some(intent) = state.intents.get_mut(id) else {
        return missing("payment_intent");
    };
    intent.status = "succeeded".into();
    intent.charge = Some(charge);
    let body = intent.json();
    if let Some(o) = intent.order_id.clone() {
        *state.succeeded_by_order.entry(o).or_default() += 1;
    }
    state.events.push("payment_intent.succeeded", body.clone());
    (200, body)
}

fn missing(what: &str) -> (u16, Value) {
    error(
        StatusCode::NOT_FOUND,
        json!({"error": {"type": "invalid_request_error", "code": "resource_missing", "message": format!("No such {what}")}}),
    )
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

/// Runs `op` on an authorized request's form and `Idempotency-Key`, then
/// sends the events it made.
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
    sim.with(|state| op(state, key, &params))
}

impl PaymentSim {
    /// Runs `op` on the state, then sends the events it made.
    fn with(&self, op: impl FnOnce(&mut State) -> HttpResponse) -> HttpResponse {
        let (reply, events) = {
            let Ok(mut state) = self.state.lock() else {
                return HttpResponse::InternalServerError().finish();
            };
            let reply = op(&mut state);
            (reply, state.events.take())
        };
        self.sink.send(events);
        reply
    }
}

async fn get_intent(
    req: HttpRequest,
    path: web::Path<String>,
    sim: web::Data<PaymentSim>,
    chaos: web::Data<Chaos>,
) -> HttpResponse {
    read(&req, &sim, &chaos, |s| {
        s.intents.get(path.as_str()).map(Intent::json)
    })
    .await
}

/// A GET of one object, under the chaos knobs.
async fn read(
    req: &HttpRequest,
    sim: &PaymentSim,
    chaos: &Chaos,
    find: impl FnOnce(&State) -> Option<Value>,
) -> HttpResponse {
    if let Ok(mut s) = sim.state.lock() {
        s.reads += 1;
    }
    if let Some(fail) = chaos.apply().await {
        return fail;
    }
    if !authorized(req) {
        return unauthorized();
    }
    let Ok(state) = sim.state.lock() else {
        return HttpResponse::InternalServerError().finish();
    };
    match find(&state) {
        Some(v) => HttpResponse::Ok().json(v),
        None => reply(missing("object"), false),
    }
}

/// `GET /v1/payment_intents/search?query=metadata['order_id']:'…'`: the
/// one query the adapter asks.
async fn search_intents(
    req: HttpRequest,
    query: web::Query<HashMap<String, String>>,
    sim: web::Data<PaymentSim>,
    chaos: web::Data<Chaos>,
) -> HttpResponse {
    let wanted = query
        .get("query")
        .and_then(|q| q.strip_prefix("metadata['order_id']:'"))
        .and_then(|q| q.strip_suffix('\''))
        .map(str::to_owned);
    let Some(order) = wanted else {
        return reply(
            error(
                StatusCode::BAD_REQUEST,
                json!({"error": {"type": "invalid_request_error", "message": "unsupported search query"}}),
            ),
            false,
        );
    };
    read(&req, &sim, &chaos, |s| {
        let data: Vec<Value> = s
            .intents
            .values()
            .filter(|i| i.order_id.as_deref() == Some(order.as_str()))
            .map(Intent::json)
            .collect();
        Some(json!({"object": "search_result", "data": data, "has_more": false}))
    })
    .await
}

async fn post_confirm(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    sim: web::Data<PaymentSim>,
    chaos: web::Data<Chaos>,
) -> HttpResponse {
    sim.count_post(&req);
    let route = format!("/v1/payment_intents/{}/confirm", path.as_str());
    chaos
        .around(|| {
            with_form(&req, &body, &sim, |state, key, params| {
                let answer = idempotent(state, key, &route, params, |s| confirm_intent(s, &path));
                if state.lose_confirm_responses > 0 {
                    state.lose_confirm_responses -= 1;
                    return HttpResponse::InternalServerError().finish();
                }
                answer
            })
        })
        .await
}

#[derive(Debug, serde::Deserialize)]
struct Faults {
    /// The next this many confirms are made, then answered 500.
    #[serde(default)]
    lose_confirm_responses: u32,
    /// Forget every Idempotency-Key, as the gateway does after 24 h.
    #[serde(default)]
    forget_idempotency_keys: bool,
}

/// `POST /_sim/faults`: faults of the payment gateway's own making.
async fn faults(body: web::Json<Faults>, sim: web::Data<PaymentSim>) -> HttpResponse {
    sim.with(|s| {
        s.lose_confirm_responses = body.lose_confirm_responses;
        if body.forget_idempotency_keys {
            s.idempotency.clear();
        }
        HttpResponse::NoContent().finish()
    })
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
            sim.with(|state| match state.intents.get_mut(path.as_str()) {
                None => reply(missing("payment_intent"), false),
                Some(i) if i.status == "succeeded" || i.status == "canceled" => HttpResponse::BadRequest()
                    .json(json!({"error": {"type": "invalid_request_error", "code": "payment_intent_unexpected_state"}})),
                Some(i) => {
                    i.status = "canceled".into();
                    let body = i.json();
                    state.events.push("payment_intent.canceled", body.clone());
                    HttpResponse::Ok().json(body)
                }
            })
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
        return missing("payment_intent");
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
    let (amount, currency, charge) = (
        intent.amount,
        intent.currency.clone(),
        intent.charge.clone(),
    );
    *s.refunds_by_intent.entry(pi.to_owned()).or_default() += 1;
    s.next_id += 1;
    let refund = json!({"id": format!("re_sim{:012}", s.next_id), "object": "refund", "amount": amount,
                        "currency": currency, "charge": charge, "payment_intent": pi,
                        "status": "succeeded", "failure_reason": null, "metadata": {}});
    s.refunds.insert(
        refund["id"].as_str().unwrap_or_default().to_owned(),
        refund.clone(),
    );
    if let Some(c) = charge_json(s, pi) {
        s.events.push("charge.refunded", c);
    }
    (200, refund)
}

/// The charge of intent `pi`, as Stripe shows one.
fn charge_json(s: &State, pi: &str) -> Option<Value> {
    let i = s.intents.get(pi)?;
    let id = i.charge.clone()?;
    Some(
        json!({"id": id, "object": "charge", "amount": i.amount, "currency": i.currency,
                "payment_intent": i.id, "paid": true, "status": "succeeded",
                "refunded": i.refunded, "amount_refunded": if i.refunded { i.amount } else { 0 },
                "disputed": s.disputes.values().any(|d| d["payment_intent"] == i.id.as_str())}),
    )
}

async fn get_refund(
    req: HttpRequest,
    path: web::Path<String>,
    sim: web::Data<PaymentSim>,
    chaos: web::Data<Chaos>,
) -> HttpResponse {
    read(&req, &sim, &chaos, |s| {
        s.refunds.get(path.as_str()).cloned()
    })
    .await
}

async fn get_dispute(
    req: HttpRequest,
    path: web::Path<String>,
    sim: web::Data<PaymentSim>,
    chaos: web::Data<Chaos>,
) -> HttpResponse {
    read(&req, &sim, &chaos, |s| {
        s.disputes.get(path.as_str()).cloned()
    })
    .await
}

async fn get_charge(
    req: HttpRequest,
    path: web::Path<String>,
    sim: web::Data<PaymentSim>,
    chaos: web::Data<Chaos>,
) -> HttpResponse {
    read(&req, &sim, &chaos, |s| {
        let pi = s
            .intents
            .values()
            .find(|i| i.charge.as_deref() == Some(path.as_str()))?;
        charge_json(s, &pi.id)
    })
    .await
}

#[derive(Debug, serde::Deserialize)]
struct Authenticate {
    success: bool,
}

/// `POST /_sim/payment_intents/{id}/authenticate {"success": bool}`: the
/// customer completes (or fails) 3-D Secure.
async fn authenticate(
    path: web::Path<String>,
    body: web::Json<Authenticate>,
    sim: web::Data<PaymentSim>,
) -> HttpResponse {
    sim.with(|s| {
        let Some(intent) = s.intents.get_mut(path.as_str()) else {
            return reply(missing("payment_intent"), false);
        };
        if intent.status != "requires_action" {
            return reply(error(StatusCode::BAD_REQUEST, json!({"error": {"type": "invalid_request_error", "code": "payment_intent_unexpected_state"}})), false);
        }
        if body.success {
            return reply(succeed(s, &path), false);
        }
        decline(
            intent,
            "payment_intent_authentication_failure",
            None,
            "The provided PaymentMethod has failed authentication.",
        );
        let json = intent.json();
        s.events.push("payment_intent.payment_failed", json.clone());
        HttpResponse::Ok().json(json)
    })
}

/// `POST /_sim/payment_intents/{id}/refund`: a person refunds the charge in
/// the gateway's own dashboard.
async fn dashboard_refund(path: web::Path<String>, sim: web::Data<PaymentSim>) -> HttpResponse {
    sim.with(|s| reply(refund(s, &path), false))
}

/// `POST /_sim/refunds/{id}/fail`: a refund the gateway accepted fails later.
async fn fail_refund(path: web::Path<String>, sim: web::Data<PaymentSim>) -> HttpResponse {
    sim.with(|s| {
        let Some(r) = s.refunds.get_mut(path.as_str()) else {
            return reply(missing("refund"), false);
        };
        r["status"] = json!("failed");
        r["failure_reason"] = json!("expired_or_canceled_card");
        let (refund, pi) = (
            r.clone(),
            r["payment_intent"].as_str().unwrap_or_default().to_owned(),
        );
        if let Some(i) = s.intents.get_mut(&pi) {
            i.refunded = false;
        }
        s.events.push("refund.updated", refund.clone());
        HttpResponse::Ok().json(refund)
    })
}

#[derive(Debug, serde::Deserialize)]
struct OpenDispute {
    #[serde(default = "fraudulent")]
    reason: String,
}

fn fraudulent() -> String {
    "fraudulent".into()
}

/// `POST /_sim/payment_intents/{id}/dispute {"reason"}`: the cardholder's
/// bank opens a chargeback, evidence due in 7 days.
async fn open_dispute(
    path: web::Path<String>,
    body: web::Json<OpenDispute>,
    sim: web::Data<PaymentSim>,
) -> HttpResponse {
    sim.with(|s| {
        let Some(i) = s.intents.get(path.as_str()).filter(|i| i.charge.is_some()) else {
            return reply(missing("charge"), false);
        };
        let (amount, currency, charge, pi) =
            (i.amount, i.currency.clone(), i.charge.clone(), i.id.clone());
        s.next_id += 1;
        let due_by = chrono::Utc::now().timestamp() + 7 * 86_400;
        let dispute = json!({"id": format!("dp_sim{:012}", s.next_id), "object": "dispute",
                             "amount": amount, "currency": currency, "charge": charge,
                             "payment_intent": pi, "reason": body.reason,
                             "status": "needs_response", "evidence_details": {"due_by": due_by}});
        s.disputes.insert(
            dispute["id"].as_str().unwrap_or_default().to_owned(),
            dispute.clone(),
        );
        s.events.push("charge.dispute.created", dispute.clone());
        HttpResponse::Ok().json(dispute)
    })
}

#[derive(Debug, serde::Deserialize)]
struct CloseDispute {
    status: String,
}

/// `POST /_sim/disputes/{id}/close {"status": "won" | "lost"}`.
async fn close_dispute(
    path: web::Path<String>,
    body: web::Json<CloseDispute>,
    sim: web::Data<PaymentSim>,
) -> HttpResponse {
    sim.with(|s| {
        let Some(d) = s.disputes.get_mut(path.as_str()) else {
            return reply(missing("dispute"), false);
        };
        d["status"] = json!(body.status);
        let dispute = d.clone();
        s.events.push("charge.dispute.closed", dispute.clone());
        HttpResponse::Ok().json(dispute)
    })
}

async fn stats(sim: web::Data<PaymentSim>) -> HttpResponse {
    HttpResponse::Ok().json(sim.stats())
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/payment_intents", web::post().to(post_intents))
        .route("/v1/payment_intents/search", web::get().to(search_intents))
        .route("/v1/payment_intents/{id}", web::get().to(get_intent))
        .route(
            "/v1/payment_intents/{id}/confirm",
            web::post().to(post_confirm),
        )
        .route(
            "/v1/payment_intents/{id}/cancel",
            web::post().to(cancel_intent),
        )
        .route("/v1/refunds", web::post().to(post_refund))
        .route("/v1/refunds/{id}", web::get().to(get_refund))
        .route("/v1/charges/{id}", web::get().to(get_charge))
        .route("/v1/disputes/{id}", web::get().to(get_dispute))
        .route(
            "/_sim/payment_intents/{id}/authenticate",
            web::post().to(authenticate),
        )
        .route(
            "/_sim/payment_intents/{id}/refund",
            web::post().to(dashboard_refund),
        )
        .route(
            "/_sim/payment_intents/{id}/dispute",
            web::post().to(open_dispute),
        )
        .route("/_sim/refunds/{id}/fail", web::post().to(fail_refund))
        .route("/_sim/disputes/{id}/close", web::post().to(close_dispute))
        .route("/_sim/faults", web::post().to(faults))
        .route("/_sim/events", web::post().to(configure_events))
        .route("/_sim/events", web::get().to(event_counts))
        .route("/_sim/stats", web::get().to(stats));
}

/// `POST /_sim/events`: where and how events are sent.
async fn configure_events(
    sim: web::Data<PaymentSim>,
    body: web::Json<super::payment_events::SinkConfig>,
) -> HttpResponse {
    sim.sink.configure(body.into_inner());
    HttpResponse::NoContent().finish()
}

/// `GET /_sim/events`: what was made, sent, dropped.
async fn event_counts(sim: web::Data<PaymentSim>) -> HttpResponse {
    HttpResponse::Ok().json(sim.sink.counts())
}
