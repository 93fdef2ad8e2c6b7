//! Redis stalls and drops, and PostgreSQL outages, while deliveries run,
//! through a TCP proxy the test controls (so the shared servers themselves
//! are never touched).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::*;

/// A TCP proxy that can stall (stop forwarding) or drop every connection.
struct Proxy {
    port: u16,
    paused: Arc<AtomicBool>,
    refusing: Arc<AtomicBool>,
    generation: Arc<AtomicU64>,
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    paused: Arc<AtomicBool>,
    generation: Arc<AtomicU64>,
    born: u64,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match tokio::time::timeout(Duration::from_millis(100), from.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => n,
            Err(_) => {
                if generation.load(Ordering::SeqCst) != born {
                    return;
                }
                continue;
            }
        };
        while paused.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if generation.load(Ordering::SeqCst) != born || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Proxy {
    async fn start(rt: &tokio::runtime::Handle, upstream: String) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let paused = Arc::new(AtomicBool::new(false));
        let refusing = Arc::new(AtomicBool::new(false));
        let generation = Arc::new(AtomicU64::new(0));
        let (p, r, g) = (paused.clone(), refusing.clone(), generation.clone());
        rt.spawn(async move {
            let listener = TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if r.load(Ordering::SeqCst) {
                    continue; // dropped at once: "connection refused"-like
                }
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let born = g.load(Ordering::SeqCst);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, p.clone(), g.clone(), born));
                tokio::spawn(pump(sr, cw, p.clone(), g.clone(), born));
            }
        });
        Proxy {
            port,
            paused,
            refusing,
            generation,
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

async fn run_with_fault(fault: &str) {
    let app = spawn_app().await;
    app.client
        .post(format!("{}/_sim/config", app.sims.shipping_url()))
        .send_json(&json!({"latency_ms": 1000}))
        .await
        .unwrap();
    let proxy_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut settings = app.settings.clone();
    let proxy = if fault == "postgres" {
        let proxy = Proxy::start(
            proxy_rt.handle(),
            pg_base()
                .trim_start_matches("postgres://postgres@")
                .to_owned(),
        )
        .await;
        settings.database_url = secrecy::SecretString::from(format!(
            "postgres://postgres@{}/{}",
            proxy.addr(),
            app.db_name
        ));
        proxy
    } else {
        let proxy = Proxy::start(
            proxy_rt.handle(),
            redis_url().trim_start_matches("redis://").to_owned(),
        )
        .await;
        settings.redis_url = secrecy::SecretString::from(format!("redis://{}", proxy.addr()));
        proxy
    };
    let mut opts = fast_worker();
    opts.sweep.grace = Duration::from_secs(5);
    opts.sweep.repush_after = Duration::from_secs(5);

    let mut ids = Vec::new();
    for _ in 0..30 {
        ids.push(order_id(&app.purchase(&visa(), None).await));
    }
    let mut worker = app.start_worker_with(settings.clone(), opts.clone());
    actix_rt::time::sleep(Duration::from_millis(300)).await;

    match fault {
        "stall" => {
            proxy.paused.store(true, Ordering::SeqCst);
            actix_rt::time::sleep(Duration::from_millis(1500)).await;
            proxy.paused.store(false, Ordering::SeqCst);
        }
        _ => {
            proxy.refusing.store(true, Ordering::SeqCst);
            proxy.generation.fetch_add(1, Ordering::SeqCst);
            let down = if fault == "postgres" { 3 } else { 1 };
            actix_rt::time::sleep(Duration::from_secs(down)).await;
            proxy.refusing.store(false, Ordering::SeqCst);
        }
    }

    // Act as the supervisor: a worker that ended is restarted.
    let mut restarts = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(45);
    loop {
        let mut done = 0;
        for id in &ids {
            if app.get(&format!("/api/v1/orders/{id}")).await.body["status"] == "fulfilling" {
                done += 1;
            }
        }
        if done == ids.len() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{done}/{} delivered",
            ids.len()
        );
        if worker.is_finished() {
            restarts += 1;
            worker = app.start_worker_with(settings.clone(), opts.clone());
        }
        actix_rt::time::sleep(Duration::from_millis(250)).await;
    }
    if fault == "stall" {
        assert!(
            !worker.is_finished() && restarts == 0,
            "a 1.5 s stall must not end the worker"
        );
    }
    drop(worker);
    let stats = app.sims.shipping.stats();
    for id in &ids {
        assert_eq!(
            stats.shipments_by_reference.get(&id.to_string()),
            Some(&1),
            "{id}"
        );
    }
    eprintln!(
        "{fault}: all {} delivered once; worker restarts: {restarts}",
        ids.len()
    );
    proxy_rt.shutdown_background();
}

#[actix_rt::test]
async fn a_redis_stall_while_deliveries_run_is_survived_and_each_ships_once() {
    let _serial = crate::serial();
    run_with_fault("stall").await;
}

#[actix_rt::test]
async fn dropped_redis_connections_while_deliveries_run_still_ship_each_once() {
    let _serial = crate::serial();
    run_with_fault("drop").await;
}

#[actix_rt::test]
async fn postgres_down_while_deliveries_run_fails_jobs_retryably_and_each_ships_once() {
    let _serial = crate::serial();
    run_with_fault("postgres").await;
}
