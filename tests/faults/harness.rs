//! The fault harness: a TCP proxy in front of PostgreSQL or Redis that the
//! test controls, and real worker processes to kill. The shared servers
//! themselves are never touched.
//!
//! - `cut`: every open connection is reset (RST, as a server restart or a
//!   failover gives) and new ones are refused until `heal`;
//! - `pause`: a partition: nothing is forwarded in either direction, new
//!   connections are accepted and then stay silent, until `heal`;
//! - `slow`: every chunk is forwarded after a delay.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::TestApp;

#[derive(Default)]
struct Faults {
    paused: AtomicBool,
    refusing: AtomicBool,
    /// Bumped by a cut: connections born before it are reset.
    generation: AtomicU64,
    latency_ms: AtomicU64,
}

pub struct Proxy {
    port: u16,
    faults: Arc<Faults>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Proxy {
    /// A proxy to `upstream` (`host:port`), on a runtime of its own.
    pub fn start(upstream: &str) -> Proxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let faults = Arc::new(Faults::default());
        let (f, upstream) = (faults.clone(), upstream.to_owned());
        // SO_LINGER 0 makes a close a reset (what a crashed server or a
        // failover gives); with a zero timeout it never blocks on drop.
        #[allow(deprecated)]
        fn reset_on_close(s: &TcpStream) {
            let _ = s.set_linger(Some(Duration::ZERO));
        }
        runtime.spawn(async move {
            let listener = TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if f.refusing.load(Ordering::SeqCst) {
                    reset_on_close(&client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let born = f.generation.load(Ordering::SeqCst);
                reset_on_close(&client);
                reset_on_close(&server);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, f.clone(), born));
                tokio::spawn(pump(sr, cw, f.clone(), born));
            }
        });
        Proxy {
            port,
            faults,
            runtime: Some(runtime),
        }
    }

    /// A proxy in front of the shared PostgreSQL.
    pub fn postgres() -> Proxy {
        let base = crate::helpers::pg_base();
        Proxy::start(base.trim_start_matches("postgres://postgres@"))
    }

    /// A proxy in front of the shared Redis.
    pub fn redis() -> Proxy {
        Proxy::start(crate::helpers::redis_url().trim_start_matches("redis://"))
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `DATABASE_URL` for database `db` through this proxy.
    pub fn database_url(&self, db: &str) -> String {
        format!("postgres://postgres@{}/{db}", self.addr())
    }

    /// `REDIS_URL` through this proxy.
    pub fn redis_url(&self) -> String {
        format!("redis://{}", self.addr())
    }

    /// Resets every open connection and refuses new ones until `heal`.
    pub fn cut(&self) {
        self.faults.refusing.store(true, Ordering::SeqCst);
        self.faults.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Stops forwarding (a partition) until `heal`.
    pub fn pause(&self) {
        self.faults.paused.store(true, Ordering::SeqCst);
    }

    /// Delays every forwarded chunk by `ms`.
    pub fn slow(&self, ms: u64) {
        self.faults.latency_ms.store(ms, Ordering::SeqCst);
    }

    pub fn heal(&self) {
        self.faults.refusing.store(false, Ordering::SeqCst);
        self.faults.paused.store(false, Ordering::SeqCst);
        self.faults.latency_ms.store(0, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    faults: Arc<Faults>,
    born: u64,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let alive = |f: &Faults| f.generation.load(Ordering::SeqCst) == born;
    loop {
        let n = match tokio::time::timeout(Duration::from_millis(50), from.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => n,
            Err(_) if alive(&faults) => continue,
            Err(_) => return,
        };
        while faults.paused.load(Ordering::SeqCst) && alive(&faults) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let delay = faults.latency_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if !alive(&faults) || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Environment of an `orderflow worker` process for `app`, with its
/// database and Redis URLs given (a proxy's, or the app's own).
pub fn worker_command(app: &TestApp, database_url: &str, redis_url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orderflow"));
    cmd.arg("worker")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", database_url)
        .env("REDIS_URL", redis_url)
        .env("REDIS_PREFIX", &app.settings.redis_prefix)
        .env("PAYMENT_GATEWAY_URL", app.sims.payment_url())
        .env("SHIPPING_API_URL", app.sims.shipping_url())
        .env("WAREHOUSE_API_URL", app.sims.warehouse_url())
        .env("PARTNER_TIMEOUT_MS", "10000")
        // The test receivers listen on 127.0.0.1, a literal private address
        // the client refuses before each POST unless this is set.
        .env("WEBHOOK_ALLOW_PRIVATE_TARGETS", "true")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// An `orderflow worker` process on the app's own servers.
pub fn spawn_worker(app: &TestApp) -> Child {
    let s = &app.settings;
    worker_command(
        app,
        s.database_url.expose_secret(),
        s.redis_url.expose_secret(),
    )
    .spawn()
    .unwrap()
}

/// Sends `sig` (`-KILL`, `-TERM`) to the process.
pub fn signal(child: &Child, sig: &str) {
    Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
}

/// A private `redis-server` on a free port (for a real restart, which the
/// shared one must never get).
pub struct OwnRedis {
    pub port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    pub fn start() -> OwnRedis {
        let port = crate::helpers::free_port();
        let mut r = OwnRedis { port, child: None };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL, nothing kept) and starts it again.
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start");
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}
