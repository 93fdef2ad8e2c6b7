//! The subcommands of docs/API.md. `cargo run` with no arguments runs `dev`.

use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use diesel::prelude::*;
use secrecy::{ExposeSecret, SecretString};

use crate::config::{ConfigError, Settings};
use crate::db::{self, models::NewProduct};
use crate::jobs::JobQueue;
use crate::metrics::Metrics;
use crate::serve::Application;
use crate::sim::{self, SimArgs};

#[derive(Debug, Parser)]
#[command(name = "orderflow", version, about = "Order-processing backend")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending migrations (creating the database if missing) and exit.
    Migrate,
    /// Run the HTTP API.
    Serve,
    /// Run the job workers (delivery, payment reconciliation, refunds, the
    /// outbox sweep). Many processes may run against one Redis.
    Worker,
    /// Run the three partner simulators.
    Simulate(Box<SimArgs>),
    /// Everything in one process: migrations, simulators for unset partner
    /// URLs, the API and the workers; prints the URLs and the ops token.
    Dev,
    /// Staff accounts: named ops tokens with a role.
    #[command(subcommand)]
    Staff(StaffCommand),
}

#[derive(Debug, Subcommand)]
pub enum StaffCommand {
    /// Add an account; prints its token (oft_…) once on stdout.
    Add {
        name: String,
        /// viewer, operator, refunder or admin.
        #[arg(long)]
        role: String,
    },
    /// List the accounts (never their tokens).
    List,
    /// Revoke an account: its token and sessions stop working within 1 s on
    /// every serve.
    Revoke { name: String },
}

/// Runs the CLI; returns the process exit code (2 for configuration errors).
pub fn main() -> i32 {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Dev) {
        Command::Simulate(args) => with_settings(|s| run_simulate(s, *args)),
        Command::Migrate => with_settings(run_migrate),
        Command::Serve => with_settings(run_serve),
        Command::Worker => with_settings(run_worker),
        Command::Dev => with_settings(run_dev),
        Command::Staff(c) => Settings::from_env()
            .map_err(anyhow::Error::from)
            .and_then(|s| run_staff(&s, c)),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            if let Some(c) = e.downcast_ref::<ConfigError>() {
                eprintln!("{c}");
                2
            } else {
                tracing::error!(error = %format!("{e:#}"), "fatal");
                eprintln!("error: {e:#}");
                1
            }
        }
    }
}

fn with_settings(f: impl FnOnce(Settings) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    crate::telemetry::init(settings.log_format);
    f(settings)
}

/// `staff add | list | revoke`, straight on the database; each change is
/// audited with the actor `system`/`cli`. Prints nothing but the answer on
/// stdout (the token, or the list), so that scripts can read it.
fn run_staff(settings: &Settings, command: StaffCommand) -> anyhow::Result<()> {
    use crate::domain::actor::{Actor, ActorKind};
    use crate::staff::{audit::Audit, endpoints, store, Role};
    use anyhow::Context as _;
    let mut conn = PgConnection::establish(settings.database_url.expose_secret())
        .context("connecting to the database (run `orderflow migrate` first?)")?;
    let cli = Actor {
        kind: ActorKind::System,
        name: "cli".into(),
    };
    match command {
        StaffCommand::Add { name, role } => {
            let role: Role = role
                .parse()
                .map_err(|e: String| anyhow::anyhow!("--role: {e}"))?;
            endpoints::valid_name(&name).map_err(|e| anyhow::anyhow!("NAME: {e}"))?;
            let audit = Audit::new(cli, "staff.create", Some(name.clone()), None, None);
            let made = audit
                .run(&mut conn, |c| endpoints::add_account(c, &name, role, "cli"))?
                .map_err(|_| anyhow::anyhow!("an account named {name} exists or existed"))?;
            println!("{}", made.token);
            eprintln!(
                "added {name} ({}); the token above is shown only now",
                role.as_str()
            );
        }
        StaffCommand::List => {
            println!("{:<24} {:<9} {:<26} REVOKED", "NAME", "ROLE", "CREATED");
            for a in store::list(&mut conn)? {
                let revoked = a.revoked_at.map_or("-".to_owned(), |t| t.to_rfc3339());
                println!(
                    "{:<24} {:<9} {:<26} {revoked}",
                    a.name,
                    a.role,
                    a.created_at.to_rfc3339()
                );
            }
        }
        StaffCommand::Revoke { name } => {
            let audit = Audit::new(cli, "staff.revoke", Some(name.clone()), None, None);
            audit
                .run(&mut conn, |c| {
                    Ok(store::revoke(c, &name)?.then_some(()).ok_or(()))
                })?
                .map_err(|()| anyhow::anyhow!("no live account named {name}"))?;
            eprintln!("revoked {name}");
        }
    }
    Ok(())
}

fn run_migrate(settings: Settings) -> anyhow::Result<()> {
    let applied = db::migrate(&settings);
    tracing::info!(migrations.applied = applied.len(), "database is up to date");
    Ok(())
}

/// Logs, with backoff, until PostgreSQL and Redis answer; the API serves
/// meanwhile (503 without the database; the outbox without Redis).
fn watch_dependencies(pool: db::DbPool, queue: Arc<JobQueue>) {
    actix_rt::spawn(async move {
        let mut backoff = crate::backoff::Backoff::default();
        loop {
            let delay = backoff.next_delay();
            let pg = db::unit(&pool, |conn| {
                diesel::sql_query("SELECT 1").execute(conn)?;
                Ok(())
            })
            .await;
            let redis = queue.ping().await;
            match (&pg, &redis) {
                (Ok(()), Ok(())) => {
                    tracing::info!("postgresql and redis are reachable");
                    return;
                }
                _ => {
                    if let Err(e) = &pg {
                        tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "postgresql unreachable at start; retrying");
                    }
                    if let Err(e) = &redis {
                        tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "redis unreachable at start; retrying");
                    }
                }
            }
            actix_rt::time::sleep(delay).await;
        }
    });
}

/// Adds this process' partner calls to the shared totals every second (so
/// any `serve` reports them), until the returned sender says stop.
fn share_partner_calls(
    metrics: &Metrics,
    queue: &Arc<JobQueue>,
) -> tokio::sync::watch::Sender<bool> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let partner = metrics.partner.clone();
    let queue = queue.clone();
    actix_rt::spawn(async move {
        let prefix = queue.prefix().to_owned();
        let connect = || {
            let queue = queue.clone();
            async move { queue.connection().await.ok() }
        };
        partner
            .flush_every(prefix, Duration::from_secs(1), connect, stopped)
            .await
    });
    stop
}

/// The last flush of this process' partner calls, after its server stopped.
async fn final_flush(metrics: &Metrics, queue: &JobQueue) {
    if let Ok(mut conn) = queue.connection().await {
        if let Err(e) = metrics.partner.flush(&mut conn, queue.prefix()).await {
            tracing::warn!(error = %e, "partner call metrics not flushed at exit");
        }
    }
}

fn run_serve(settings: Settings) -> anyhow::Result<()> {
    if settings.ops_token.is_none() {
        return Err(ConfigError {
            var: "OPS_TOKEN",
            message: "serve refuses to start without an ops token".into(),
        }
        .into());
    }
    if settings.payment_gateway_url.is_none() {
        return Err(ConfigError {
            var: "PAYMENT_GATEWAY_URL",
            message: "required by serve (dev starts a simulator instead)".into(),
        }
        .into());
    }
    actix_rt::System::new().block_on(async move {
        let pool = db::build_pool(&settings, "orderflow-serve");
        let queue = Arc::new(JobQueue::new(&settings)?);
        let metrics = Metrics::new()?;
        let app = Application::build(&settings, pool.clone(), queue.clone(), &metrics)?;
        tracing::info!(http.addr = %settings.bind_addr, "serving");
        settings.webhook_secrets.warn_if_development();
        let stop_flusher = share_partner_calls(&metrics, &queue);
        watch_dependencies(pool, queue.clone());
        app.server().await?;
        let _ = stop_flusher.send(true);
        final_flush(&metrics, &queue).await;
        tracing::info!("stopped");
        Ok(())
    })
}

fn run_worker(settings: Settings) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutdown signal: finishing in-flight jobs");
            let _ = stop_tx.send(true);
        });
        let opts = crate::worker::WorkerOptions::from_settings(&settings);
        crate::worker::run(settings, opts, stop_rx).await
    })
}

fn run_simulate(_settings: Settings, args: SimArgs) -> anyhow::Result<()> {
    actix_rt::System::new().block_on(async move {
        let sims = sim::start(&args)?;
        println!("payment gateway:  {}", sims.payment_url());
        println!("shipping partner: {}", sims.shipping_url());
        println!("warehouse:        {}", sims.warehouse_url());
        println!("storefront (webhook receiver): {}", sims.storefront_url());
        let handles: Vec<_> = sims.servers.iter().map(|s| s.handle()).collect();
        let servers = futures_util::future::try_join_all(sims.servers);
        tokio::select! {
            r = servers => r.map(|_| ())?,
            _ = shutdown_signal() => {
                for h in handles {
                    h.stop(true).await;
                }
            }
        }
        Ok(())
    })
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The demo catalog that `dev` puts in an empty database.
pub fn demo_catalog() -> Vec<NewProduct> {
    [
        ("SKU-1", "Analytical Engine T-shirt", 1299),
        ("SKU-2", "Difference Engine mug", 899),
        ("SKU-3", "Punched-card notebook", 499),
        ("SKU-4", "Brass gear keyring", 699),
        ("SKU-5", "Jacquard loom poster", 1999),
    ]
    .into_iter()
    .map(|(sku, name, price)| NewProduct {
        sku: sku.into(),
        name: name.into(),
        price_cents: price,
        currency: "usd".into(),
        active: true,
    })
    .collect()
}

fn run_dev(mut settings: Settings) -> anyhow::Result<()> {
    db::migrate(&settings);
    seed_demo_catalog(&settings)?;
    let token_generated = settings.ops_token.is_none();
    if token_generated {
        use rand::Rng;
        let bytes: [u8; 24] = rand::rng().random();
        settings.ops_token = Some(SecretString::from(hex::encode(bytes)));
    }
    actix_rt::System::new().block_on(async move {
        let (sim_handles, storefront, payment_sim) = start_missing_partners(&mut settings)?;
        let pool = db::build_pool(&settings, "orderflow-dev");
        let queue = Arc::new(JobQueue::new(&settings)?);
        let metrics = Metrics::new()?;
        let app = Application::build(&settings, pool.clone(), queue.clone(), &metrics)?;
        let (stop_workers, stop_rx) = tokio::sync::watch::channel(false);
        let workers = start_dev_workers(settings.clone(), stop_rx)?;
        if let (Some(sim), Some(secret)) = (payment_sim, settings.gateway_webhook_secrets.first()) {
            let inbox = format!(
                "http://{}:{}/api/v1/gateway/webhooks",
                settings.bind_addr.ip(),
                app.port()
            );
            sim.send_events_to(&inbox, secret.expose_secret());
        }
        print_banner(&settings, app.port(), token_generated);
        if let Some(url) = storefront {
            println!("  a simulated storefront receives webhooks at {url}");
            if !settings.webhooks.allow_private_targets {
                println!("  (a local endpoint needs WEBHOOK_ALLOW_PRIVATE_TARGETS=true)");
            }
            println!();
        }
        let stop_flusher = share_partner_calls(&metrics, &queue);
        watch_dependencies(pool, queue.clone());
        app.server().await?;
        let _ = stop_flusher.send(true);
        final_flush(&metrics, &queue).await;
        let _ = stop_workers.send(true);
        let workers = tokio::task::spawn_blocking(move || workers.join()).await;
        if let Ok(Ok(Err(e))) = workers {
            tracing::error!(error = %format!("{e:#}"), "workers stopped with an error");
        }
        for h in sim_handles {
            h.stop(true).await;
        }
        Ok(())
    })
}

/// Puts the demo catalog in an empty database.
fn seed_demo_catalog(settings: &Settings) -> anyhow::Result<()> {
    use crate::db::schema::products::dsl as p;
    let mut conn = PgConnection::establish(settings.database_url.expose_secret())?;
    let count: i64 = p::products.count().get_result(&mut conn)?;
    if count == 0 {
        diesel::insert_into(p::products)
            .values(demo_catalog())
            .on_conflict_do_nothing()
            .execute(&mut conn)?;
        tracing::info!("seeded the demo catalog");
    }
    Ok(())
}

/// Servers to stop at exit, where the simulated storefront receives
/// webhooks (if the simulators run), and the payment simulator if orderflow
/// uses it (its events are pointed at the inbox once it listens).
type StartedSims = (
    Vec<actix_web::dev::ServerHandle>,
    Option<String>,
    Option<Arc<sim::payment::PaymentSim>>,
);

/// Starts the simulators for the partners whose URL is not set, and points
/// the settings at them.
fn start_missing_partners(settings: &mut Settings) -> anyhow::Result<StartedSims> {
    let needs_sim = settings.payment_gateway_url.is_none()
        || settings.shipping_api_url.is_none()
        || settings.warehouse_api_url.is_none();
    if !needs_sim {
        return Ok((Vec::new(), None, None));
    }
    let sims = sim::start(&SimArgs::ephemeral(42))?;
    let payment = settings.payment_gateway_url.is_none().then(|| {
        // The simulated gateway's events, signed with a secret of its own.
        if settings.gateway_webhook_secrets.is_empty() {
            use rand::Rng;
            let bytes: [u8; 24] = rand::rng().random();
            let secret = format!("whsec_{}", hex::encode(bytes));
            settings.gateway_webhook_secrets = vec![SecretString::from(secret)];
        }
        sims.payment.clone()
    });
    settings
        .payment_gateway_url
        .get_or_insert(sims.payment_url().parse()?);
    settings
        .shipping_api_url
        .get_or_insert(sims.shipping_url().parse()?);
    settings
        .warehouse_api_url
        .get_or_insert(sims.warehouse_url().parse()?);
    let storefront = sims.storefront_url();
    let handles = sims
        .servers
        .into_iter()
        .map(|s| {
            let handle = s.handle();
            actix_rt::spawn(s);
            handle
        })
        .collect();
    Ok((handles, Some(storefront), payment))
}

/// The workers, on their own runtime (apalis needs a tokio runtime with
/// `Send` futures; the API runs on actix's).
fn start_dev_workers(
    settings: Settings,
    stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<std::thread::JoinHandle<anyhow::Result<()>>> {
    std::thread::Builder::new()
        .name("workers".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let opts = crate::worker::WorkerOptions::from_settings(&settings);
            rt.block_on(crate::worker::run(settings, opts, stop))
        })
}

fn print_banner(settings: &Settings, port: u16, token_generated: bool) {
    let base = format!("http://{}:{port}", settings.bind_addr.ip());
    println!();
    println!("orderflow dev is running");
    println!("  dashboard:  {base}/dashboard");
    println!("  API:        {base}/api/v1/products");
    println!("  OpenAPI:    {base}/api/v1/openapi.json");
    println!("  metrics:    {base}/metrics");
    let show = |u: &Option<url::Url>| u.as_ref().map(|u| u.to_string()).unwrap_or_default();
    println!("  payment:    {}", show(&settings.payment_gateway_url));
    println!("  shipping:   {}", show(&settings.shipping_api_url));
    println!("  warehouse:  {}", show(&settings.warehouse_api_url));
    if let Some(t) = &settings.ops_token {
        let note = if token_generated {
            "  (generated; set OPS_TOKEN to fix it)"
        } else {
            ""
        };
        println!("  ops token:  {}{note}", t.expose_secret());
    }
    println!();
}
