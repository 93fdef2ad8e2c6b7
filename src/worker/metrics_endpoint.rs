//! A worker's own `/metrics` (`WORKER_METRICS_ADDR`): this process' job and
//! partner-call metrics, served by actix-web on a thread of its own (the
//! worker's runtimes are tokio's; actix-web runs its own system).

use std::net::SocketAddr;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};

/// Binds `addr` and serves `registry` at `GET /metrics` until the returned
/// handle is stopped.
pub fn serve(addr: SocketAddr, registry: prometheus::Registry) -> anyhow::Result<ServerHandle> {
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| anyhow::anyhow!("WORKER_METRICS_ADDR: cannot bind {addr}: {e}"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("worker-metrics".into())
        .spawn(move || {
            let served = actix_rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(web::Data::new(registry.clone()))
                        .route("/metrics", web::get().to(metrics))
                })
                .workers(1)
                .disable_signals()
                .listen(listener)?
                .run();
                let _ = tx.send(server.handle());
                server.await
            });
            if let Err(e) = served {
                tracing::warn!(error = %e, "worker metrics endpoint stopped");
            }
        })?;
    let handle = rx
        .recv()
        .map_err(|_| anyhow::anyhow!("WORKER_METRICS_ADDR: the metrics endpoint did not start"))?;
    tracing::info!(metrics.addr = %addr, "worker metrics listening");
    Ok(handle)
}

async fn metrics(registry: web::Data<prometheus::Registry>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(crate::metrics::encode(&registry))
}
