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

mod chaos;
pub mod payment;
pub mod payment_events;
pub mod shipping;
pub mod storefront;
pub mod warehouse;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};

pub use chaos::{control_routes, Chaos, Knobs, KnobsPatch};

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
    /// The storefront's webhook receiver (`POST /webhooks`).
    #[arg(long, env = "SIM_STOREFRONT_ADDR", default_value = "127.0.0.1:8084")]
    pub storefront_addr: SocketAddr,
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
    /// Where the payment gateway sends its signed events (orderflow's
    /// `/api/v1/gateway/webhooks`); none: it sends none.
    #[arg(long, env = "SIM_PAYMENT_EVENTS_URL")]
    pub payment_events_url: Option<String>,
    /// The secret it signs them with (set the same in
    /// `GATEWAY_WEBHOOK_SECRETS`).
    #[arg(
        long,
        env = "SIM_PAYMENT_EVENTS_SECRET",
        default_value = "whsec_simulator"
    )]
    pub payment_events_secret: String,
}

impl SimArgs {
    /// Loopback, OS-chosen ports: for tests.
    pub fn ephemeral(seed: u64) -> Self {
        let any: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
        SimArgs {
            payment_addr: any,
            shipping_addr: any,
            warehouse_addr: any,
            storefront_addr: any,
            latency_ms: 0,
            jitter_ms: 0,
            failure_rate: 0.0,
            failure_status: 503,
            hang_rate: 0.0,
            seed,
            ship_stage_secs: 30,
            workers: 1,
            payment_events_url: None,
            payment_events_secret: "whsec_simulator".into(),
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
    pub storefront_addr: SocketAddr,
    pub payment: Arc<payment::PaymentSim>,
    pub shipping: Arc<shipping::ShippingSim>,
    pub warehouse: Arc<warehouse::WarehouseSim>,
    pub storefront: Arc<storefront::StorefrontSim>,
    pub payment_chaos: Arc<Chaos>,
    pub shipping_chaos: Arc<Chaos>,
    pub warehouse_chaos: Arc<Chaos>,
    pub storefront_chaos: Arc<Chaos>,
    pub servers: Vec<Server>,
}

impl Simulators {
    /// Where `partner`'s simulator listens: a new partner does not compile
    /// until it has one.
    pub fn url(&self, partner: crate::partners::Partner) -> String {
        use crate::partners::Partner;
        match partner {
            Partner::Payment => self.payment_url(),
            Partner::Shipping => self.shipping_url(),
            Partner::Warehouse => self.warehouse_url(),
        }
    }
    pub fn payment_url(&self) -> String {
        format!("http://{}", self.payment_addr)
    }
    pub fn shipping_url(&self) -> String {
        format!("http://{}", self.shipping_addr)
    }
    pub fn warehouse_url(&self) -> String {
        format!("http://{}", self.warehouse_addr)
    }
    /// Where the storefront simulator receives webhooks.
    pub fn storefront_url(&self) -> String {
        format!("http://{}/webhooks", self.storefront_addr)
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
    let warehouse_chaos = Arc::new(Chaos::new(knobs.clone(), args.seed.wrapping_add(2)));
    let storefront_chaos = Arc::new(Chaos::new(knobs, args.seed.wrapping_add(3)));
    let payment = Arc::new(payment::PaymentSim::default());
    if let Some(url) = &args.payment_events_url {
        payment.send_events_to(url, &args.payment_events_secret);
    }
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
    let storefront = Arc::new(storefront::StorefrontSim::default());
    let (storefront_addr, s4) = serve(
        args.storefront_addr,
        args.workers,
        storefront.clone(),
        storefront_chaos.clone(),
        storefront::routes,
    )?;
    Ok(Simulators {
        payment_addr,
        shipping_addr,
        warehouse_addr,
        storefront_addr,
        payment,
        shipping,
        warehouse,
        storefront,
        payment_chaos,
        shipping_chaos,
        warehouse_chaos,
        storefront_chaos,
        servers: vec![s1, s2, s3, s4],
    })
}
