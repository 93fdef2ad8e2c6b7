//! `orderflow simulate`: the three partner systems of docs/API.md, each on its
//! own port, for development, tests and benchmarks.
//!
//! Every simulator is async (actix-web, timers, no blocking), so thousands of
//! calls can wait at once and it is never the bottleneck. Shared knobs, set
//! by flags and changed at run time with `POST /_sim/config`:
//! latency ± jitter, a failure rate with its status (429 carries
//! `Retry-After`), and a hang rate (the call never answers, so the caller's
//! timeout fires). A seed makes the random choices reproducible.
//! `GET /_sim/stats` returns counters a test can read (charges per order,
//! shipments per reference); `GET /_sim/load` the calls answered at once
//! (now, and the most so far).

pub mod payment;
pub mod shipping;
pub mod warehouse;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{web, App, HttpResponse, HttpServer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Behaviour knobs of one simulator.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Knobs {
    pub latency_ms: u64,
    pub jitter_ms: u64,
    /// Share of calls (0–1) answered with `failure_status`.
    pub failure_rate: f64,
    pub failure_status: u16,
    /// Share of calls (0–1) that never answer.
    pub hang_rate: f64,
    /// Whether a POST that fails or hangs first does what it was asked (a
    /// partner that commits, then crashes or stalls before it answers).
    pub after_effect: bool,
    /// `Retry-After` seconds of a 429.
    pub retry_after_secs: u64,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            latency_ms: 0,
            jitter_ms: 0,
            failure_rate: 0.0,
            failure_status: 503,
            hang_rate: 0.0,
            after_effect: false,
            retry_after_secs: 1,
        }
    }
}

/// A partial update of [`Knobs`], the body of `POST /_sim/config`.
#[derive(Debug, Default, Deserialize)]
pub struct KnobsPatch {
    pub latency_ms: Option<u64>,
    pub jitter_ms: Option<u64>,
    pub failure_rate: Option<f64>,
    pub failure_status: Option<u16>,
    pub hang_rate: Option<f64>,
    pub after_effect: Option<bool>,
    pub retry_after_secs: Option<u64>,
}

/// Knobs plus the seeded random source, shared by one simulator's workers.
pub struct Chaos {
    knobs: RwLock<Knobs>,
    rng: Mutex<StdRng>,
    /// Calls being answered now (inside their latency), and the most seen
    /// at once since the last `GET /_sim/load?reset=true`.
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// Counts one call in flight until dropped.
struct InFlight<'a>(&'a Chaos);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What the chaos layer decided for one call.
enum Fate {
    Proceed,
    Fail(u16),
    Hang,
}

impl Chaos {
    pub fn new(knobs: Knobs, seed: u64) -> Self {
        Chaos {
            knobs: RwLock::new(knobs),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        }
    }

    /// The most calls this simulator answered at once since the last reset.
    fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    /// Starts a new measurement of [`Chaos::max_in_flight`].
    fn reset_max_in_flight(&self) {
        self.max_in_flight
            .store(self.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    pub fn knobs(&self) -> Knobs {
        self.knobs.read().map(|k| k.clone()).unwrap_or_default()
    }

    pub fn set(&self, patch: &KnobsPatch) -> Result<Knobs, String> {
        let mut k = self.knobs.write().map_err(|_| "lock poisoned".to_owned())?;
        let mut next = k.clone();
        if let Some(v) = patch.latency_ms {
            next.latency_ms = v;
        }
        if let Some(v) = patch.jitter_ms {
            next.jitter_ms = v;
        }
        if let Some(v) = patch.failure_rate {
            next.failure_rate = v;
        }
        if let Some(v) = patch.failure_status {
            next.failure_status = v;
        }
        if let Some(v) = patch.hang_rate {
            next.hang_rate = v;
        }
        if let Some(v) = patch.after_effect {
            next.after_effect = v;
        }
        if let Some(v) = patch.retry_after_secs {
            next.retry_after_secs = v;
        }
        if !(0.0..=1.0).contains(&next.failure_rate) || !(0.0..=1.0).contains(&next.hang_rate) {
            return Err("rates must be between 0 and 1".into());
        }
        if !(400..=599).contains(&next.failure_status) {
            return Err("failure_status must be a 4xx or 5xx status".into());
        }
        *k = next.clone();
        Ok(next)
    }

    fn decide(&self) -> (Duration, Fate, Knobs) {
        let k = self.knobs();
        let Ok(mut rng) = self.rng.lock() else {
            return (Duration::ZERO, Fate::Proceed, k);
        };
        let jitter = if k.jitter_ms > 0 {
            rng.random_range(0..=2 * k.jitter_ms)
        } else {
            0
        };
        let delay = (k.latency_ms + jitter).saturating_sub(k.jitter_ms);
        let roll: f64 = rng.random();
        let fate = if roll < k.hang_rate {
            Fate::Hang
        } else if roll < k.hang_rate + k.failure_rate {
            Fate::Fail(k.failure_status)
        } else {
            Fate::Proceed
        };
        (Duration::from_millis(delay), fate, k)
    }

    /// Waits the configured latency; returns a failure response if this call
    /// is to fail, and never returns if it is to hang.
    pub async fn apply(&self) -> Option<HttpResponse> {
        self.answer(None::<fn() -> HttpResponse>).await
    }

    /// As [`Chaos::apply`] for a call with an effect (a POST): `effect`
    /// runs when the call proceeds, and also before its failure or hang when
    /// `after_effect` is set.
    pub async fn around(&self, effect: impl FnOnce() -> HttpResponse) -> HttpResponse {
        match self.answer(Some(effect)).await {
            Some(resp) => resp,
            None => HttpResponse::InternalServerError().finish(),
        }
    }

    async fn answer(&self, effect: Option<impl FnOnce() -> HttpResponse>) -> Option<HttpResponse> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let _counted = InFlight(self);
        let (delay, fate, knobs) = self.decide();
        if !delay.is_zero() {
            actix_rt::time::sleep(delay).await;
        }
        let proceeds = matches!(fate, Fate::Proceed);
        let done = match effect {
            Some(effect) if proceeds || knobs.after_effect => Some(effect()),
            _ => None,
        };
        match fate {
            Fate::Proceed => done,
            Fate::Hang => {
                std::future::pending::<()>().await;
                None
            }
            Fate::Fail(status) => {
                let code = actix_web::http::StatusCode::from_u16(status)
                    .unwrap_or(actix_web::http::StatusCode::SERVICE_UNAVAILABLE);
                let mut b = HttpResponse::build(code);
                if status == 429 {
                    b.insert_header(("Retry-After", knobs.retry_after_secs.to_string()));
                }
                Some(
                    b.json(json!({"error": {"type": "api_error", "message": "simulated failure"}})),
                )
            }
        }
    }
}

#[derive(Deserialize)]
struct LoadQuery {
    #[serde(default)]
    reset: bool,
}

/// `GET /_sim/load`: calls in flight now and the most at once so far
/// (`?reset=true` starts a new maximum after reading it).
async fn get_load(chaos: web::Data<Chaos>, q: web::Query<LoadQuery>) -> HttpResponse {
    let body = json!({"in_flight": chaos.in_flight.load(Ordering::SeqCst), "max_in_flight": chaos.max_in_flight()});
    if q.reset {
        chaos.reset_max_in_flight();
    }
    HttpResponse::Ok().json(body)
}

async fn get_config(chaos: web::Data<Chaos>) -> HttpResponse {
    HttpResponse::Ok().json(chaos.knobs())
}

async fn set_config(chaos: web::Data<Chaos>, body: web::Json<KnobsPatch>) -> HttpResponse {
    match chaos.set(&body) {
        Ok(k) => HttpResponse::Ok().json(k),
        Err(e) => HttpResponse::UnprocessableEntity()
            .json(json!({"error": {"code": "validation_failed", "message": e}})),
    }
}

/// Mounts `GET/POST /_sim/config`.
pub fn control_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/_sim/load", web::get().to(get_load))
        .route("/_sim/config", web::get().to(get_config))
        .route("/_sim/config", web::post().to(set_config));
}

/// Flags of `orderflow simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Where the payment gateway listens.
    #[arg(long, env = "SIM_PAYMENT_ADDR", default_value = "127.0.0.1:8081")]
    pub payment_addr: SocketAddr,
    /// Where the shipping partner listens.
    #[arg(long, env = "SIM_SHIPPING_ADDR", default_value = "127.0.0.1:8082")]
    pub shipping_addr: SocketAddr,
    /// Where the warehouse listens.
    #[arg(long, env = "SIM_WAREHOUSE_ADDR", default_value = "127.0.0.1:8083")]
    pub warehouse_addr: SocketAddr,
    /// Latency of every call, in milliseconds (all three partners).
    #[arg(long, env = "SIM_LATENCY_MS", default_value_t = 0)]
    pub latency_ms: u64,
    /// Uniform jitter around the latency, ± milliseconds.
    #[arg(long, env = "SIM_JITTER_MS", default_value_t = 0)]
    pub jitter_ms: u64,
    /// Share of calls that fail with --failure-status.
    #[arg(long, env = "SIM_FAILURE_RATE", default_value_t = 0.0)]
    pub failure_rate: f64,
    #[arg(long, env = "SIM_FAILURE_STATUS", default_value_t = 503)]
    pub failure_status: u16,
    /// Share of calls that never answer.
    #[arg(long, env = "SIM_HANG_RATE", default_value_t = 0.0)]
    pub hang_rate: f64,
    /// Seed of the random choices.
    #[arg(long, env = "SIM_SEED", default_value_t = 42)]
    pub seed: u64,
    /// Seconds between shipment stages (label_created → in_transit →
    /// out_for_delivery → delivered).
    #[arg(long, env = "SIM_SHIP_STAGE_SECS", default_value_t = 30)]
    pub ship_stage_secs: u64,
    /// Worker threads per simulator.
    #[arg(long, env = "SIM_WORKERS", default_value_t = 1)]
    pub workers: usize,
}

impl SimArgs {
    /// Loopback, OS-chosen ports: for tests.
    pub fn ephemeral(seed: u64) -> Self {
        let any: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
        SimArgs {
            payment_addr: any,
            shipping_addr: any,
            warehouse_addr: any,
            latency_ms: 0,
            jitter_ms: 0,
            failure_rate: 0.0,
            failure_status: 503,
            hang_rate: 0.0,
            seed,
            ship_stage_secs: 30,
            workers: 1,
        }
    }

    fn knobs(&self) -> Knobs {
        Knobs {
            latency_ms: self.latency_ms,
            jitter_ms: self.jitter_ms,
            failure_rate: self.failure_rate,
            failure_status: self.failure_status,
            hang_rate: self.hang_rate,
            ..Knobs::default()
        }
    }
}

/// The three running simulators: their addresses, state and servers.
pub struct Simulators {
    pub payment_addr: SocketAddr,
    pub shipping_addr: SocketAddr,
    pub warehouse_addr: SocketAddr,
    pub payment: Arc<payment::PaymentSim>,
    pub shipping: Arc<shipping::ShippingSim>,
    pub warehouse: Arc<warehouse::WarehouseSim>,
    pub payment_chaos: Arc<Chaos>,
    pub shipping_chaos: Arc<Chaos>,
    pub warehouse_chaos: Arc<Chaos>,
    pub servers: Vec<Server>,
}

impl Simulators {
    pub fn payment_url(&self) -> String {
        format!("http://{}", self.payment_addr)
    }
    pub fn shipping_url(&self) -> String {
        format!("http://{}", self.shipping_addr)
    }
    pub fn warehouse_url(&self) -> String {
        format!("http://{}", self.warehouse_addr)
    }
}

fn serve<S: Send + Sync + 'static>(
    addr: SocketAddr,
    workers: usize,
    sim: Arc<S>,
    chaos: Arc<Chaos>,
    routes: fn(&mut web::ServiceConfig),
) -> anyhow::Result<(SocketAddr, Server)> {
    let listener = TcpListener::bind(addr)
        .map_err(|e| anyhow::anyhow!("simulator cannot bind {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let sim = web::Data::from(sim);
    let chaos = web::Data::from(chaos);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(sim.clone())
            .app_data(chaos.clone())
            .configure(control_routes)
            .configure(routes)
    })
    .workers(workers)
    .backlog(4096)
    .max_connection_rate(4096)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)?
    .run();
    Ok((bound, server))
}

/// Binds and builds the three simulators; run (spawn or await) `servers`.
pub fn start(args: &SimArgs) -> anyhow::Result<Simulators> {
    let knobs = args.knobs();
    let payment_chaos = Arc::new(Chaos::new(knobs.clone(), args.seed));
    let shipping_chaos = Arc::new(Chaos::new(knobs.clone(), args.seed.wrapping_add(1)));
    let warehouse_chaos = Arc::new(Chaos::new(knobs, args.seed.wrapping_add(2)));
    let payment = Arc::new(payment::PaymentSim::default());
    let shipping = Arc::new(shipping::ShippingSim::new(Duration::from_secs(
        args.ship_stage_secs,
    )));
    let warehouse = Arc::new(warehouse::WarehouseSim::new(args.seed));
    let (payment_addr, s1) = serve(
        args.payment_addr,
        args.workers,
        payment.clone(),
        payment_chaos.clone(),
        payment::routes,
    )?;
    let (shipping_addr, s2) = serve(
        args.shipping_addr,
        args.workers,
        shipping.clone(),
        shipping_chaos.clone(),
        shipping::routes,
    )?;
    let (warehouse_addr, s3) = serve(
        args.warehouse_addr,
        args.workers,
        warehouse.clone(),
        warehouse_chaos.clone(),
        warehouse::routes,
    )?;
    Ok(Simulators {
        payment_addr,
        shipping_addr,
        warehouse_addr,
        payment,
        shipping,
        warehouse,
        payment_chaos,
        shipping_chaos,
        warehouse_chaos,
        servers: vec![s1, s2, s3],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_makes_the_same_choices() {
        let knobs = Knobs {
            latency_ms: 100,
            jitter_ms: 50,
            failure_rate: 0.3,
            failure_status: 500,
            hang_rate: 0.1,
            ..Knobs::default()
        };
        let a = Chaos::new(knobs.clone(), 7);
        let b = Chaos::new(knobs, 7);
        for _ in 0..100 {
            let (da, fa, _) = a.decide();
            let (db, fb, _) = b.decide();
            assert_eq!(da, db);
            assert!(da >= Duration::from_millis(50) && da <= Duration::from_millis(150));
            assert_eq!(std::mem::discriminant(&fa), std::mem::discriminant(&fb));
        }
    }

    #[test]
    fn knobs_are_validated() {
        let c = Chaos::new(Knobs::default(), 1);
        assert!(c
            .set(&KnobsPatch {
                failure_rate: Some(1.5),
                ..Default::default()
            })
            .is_err());
        assert!(c
            .set(&KnobsPatch {
                failure_status: Some(200),
                ..Default::default()
            })
            .is_err());
        let k = c
            .set(&KnobsPatch {
                latency_ms: Some(20),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(k.latency_ms, 20);
    }
}
