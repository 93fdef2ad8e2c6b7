//! The `serve` process' HTTP server: the route table (every endpoint, one
//! line each, to the room whose handler answers it), the OpenAPI document
//! built from the same handlers, and the middleware every response passes
//! through (request id, access log, metrics, error envelope).

pub mod openapi;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_request_identifier::{IdReuse, RequestIdentifier};
use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers, Logger};
use actix_web::{web, App, HttpResponse, HttpServer, ResponseError};
use actix_web_prom::{PrometheusMetrics, PrometheusMetricsBuilder};
use secrecy::ExposeSecret;

use crate::config::{required, Settings};
use crate::db::DbPool;
use crate::error::ApiError;
use crate::http::{auth, body, dashboard, gateway, health, orders, products, webhooks, AppState};
use crate::jobs::JobQueue;
use crate::metrics::Metrics;
use crate::partners::payment::{PaymentConfig, PaymentGateway};
use crate::staff::endpoints as staff;

/// A bound, not yet running, HTTP server.
pub struct Application {
    port: u16,
    server: Server,
}

impl Application {
    /// Binds `settings.bind_addr` (port 0 picks a free port) and builds the
    /// server. Needs `OPS_TOKEN` and `PAYMENT_GATEWAY_URL` to be set.
    pub fn build(
        settings: &Settings,
        pool: DbPool,
        queue: Arc<JobQueue>,
        metrics: &Metrics,
    ) -> anyhow::Result<Self> {
        let token = required(&settings.ops_token, "OPS_TOKEN", "serve")?;
        let payment_url = required(
            &settings.payment_gateway_url,
            "PAYMENT_GATEWAY_URL",
            "serve",
        )?;
        let listener = TcpListener::bind(settings.bind_addr)
            .map_err(|e| anyhow::anyhow!("BIND_ADDR: cannot bind {}: {e}", settings.bind_addr))?;
        let port = listener.local_addr()?.port();

        let state = web::Data::new(AppState {
            pool,
            ops_token_digest: auth::token_digest(token.expose_secret()),
            staff: crate::staff::cache::PrincipalCache::new(),
            idempotency_lease: settings.partner_timeout * 2 + Duration::from_secs(30),
            board_cache: crate::board::cache::BoardCache::new(
                Arc::clone(&queue),
                metrics.board_renders.clone(),
                settings.stuck,
            ),
            queue,
            stuck: settings.stuck,
            webhooks: settings.webhooks,
            secrets: Arc::new(settings.webhook_secrets.clone()),
            gateway_secrets: Arc::new(settings.gateway_webhook_secrets.clone()),
            job_kinds: &crate::worker::KINDS,
            scrape: health::Scrape::new(
                settings
                    .metrics_token
                    .as_ref()
                    .map(|t| auth::token_digest(t.expose_secret())),
                settings.metrics_read_every,
            ),
        });
        if settings.gateway_webhook_secrets.is_empty() {
            tracing::warn!("GATEWAY_WEBHOOK_SECRETS is not set: every gateway event is refused (400 invalid_signature)");
        }
        actix_rt::spawn(Arc::clone(&state.board_cache).watch());
        // Its own connection: polling on the request pool would keep one
        // connection always fresh, so it would skip its liveness test.
        let epoch_pool = crate::db::build_pool_sized(settings, "orderflow-staff-epoch", 1);
        actix_rt::spawn(Arc::clone(&state.staff).watch(epoch_pool));
        let payment = PaymentConfig {
            base_url: payment_url,
            api_key: settings.payment_api_key.clone(),
            timeout: settings.partner_timeout,
        };
        let prometheus = http_metrics(metrics)?;
        let metrics_data = web::Data::new(metrics.clone());
        let partner_metrics = metrics.partner.clone();

        let server = HttpServer::new(move || {
            // awc clients are per thread: one per worker, with its own pool.
            let gateway = web::Data::new(PaymentGateway::new(
                payment.clone(),
                partner_metrics.clone(),
            ));
            App::new()
                // Innermost: it sees the request id, and its refusals get
                // the envelope and the access log like any answer.
                .wrap(actix_web::middleware::from_fn(crate::staff::gate::gate))
                .wrap(ErrorHandlers::new().default_handler(envelope_plain_errors))
                .wrap(prometheus.clone())
                .wrap(RequestIdentifier::with_uuid().use_incoming_id(IdReuse::UseIncoming))
                // Outermost, so it sees the request id header set above.
                // `%U` is the path alone: no query string is ever logged
                // (and the Logger has no method key of its own).
                .wrap(
                    Logger::new(
                        "request_id=%{x-request-id}o client=%a principal=%{principal}xo \"%{method}xi %U\" %s %b %Dms",
                    )
                    .custom_request_replace("method", |req| req.method().to_string())
                    .custom_response_replace("principal", crate::staff::principal_name),
                )
                .app_data(state.clone())
                .app_data(metrics_data.clone())
                .app_data(gateway)
                .app_data(
                    web::PathConfig::default()
                        .error_handler(|e, _| ApiError::Malformed(e.to_string()).into()),
                )
                .app_data(web::QueryConfig::default().error_handler(|e, _| {
                    ApiError::Validation(vec![crate::error::FieldError::new(
                        "query",
                        e.to_string(),
                    )])
                    .into()
                }))
                .configure(routes)
                .default_service(web::to(|| async { ApiError::NotFound.error_response() }))
        })
        .workers(settings.http_workers)
        .backlog(2048)
        .shutdown_timeout(30)
        .listen(listener)?
        .run();
        Ok(Application { port, server })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server future; it stops gracefully on SIGTERM / SIGINT.
    pub fn server(self) -> Server {
        self.server
    }
}

/// The route table (docs/API.md).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(health::metrics))
        .route("/dashboard", web::get().to(dashboard::page))
        .route("/dashboard/app.js", web::get().to(dashboard::page_js))
        .route("/dashboard/app.css", web::get().to(dashboard::page_css))
        .service(
            web::scope("/api/v1")
                .route("/openapi.json", web::get().to(openapi::openapi_json))
                .service(
                    web::resource("/purchase")
                        .route(web::post().to(crate::orders::purchase::purchase)),
                )
                .service(
                    web::resource("/products")
                        .route(web::get().to(products::list_products))
                        .route(web::post().to(products::create_product)),
                )
                .service(
                    web::resource("/products/{sku}")
                        .route(web::patch().to(products::patch_product))
                        .route(web::delete().to(products::delete_product)),
                )
                .service(
                    web::resource("/session")
                        .route(web::post().to(staff::sign_in))
                        .route(web::get().to(staff::whoami))
                        .route(web::delete().to(staff::sign_out)),
                )
                .service(
                    web::resource("/staff")
                        .route(web::get().to(staff::list_staff))
                        .route(web::post().to(staff::create_staff)),
                )
                .service(
                    web::resource("/staff/{name}").route(web::delete().to(staff::revoke_staff)),
                )
                .service(web::resource("/audit").route(web::get().to(staff::list_audit)))
                .service(web::resource("/orders").route(web::get().to(orders::list_orders)))
                // Before /orders/{id}/…, so that "bulk" is not taken for an id.
                .service(
                    web::resource("/orders/bulk/cancel")
                        .route(web::post().to(crate::orders::actions::bulk_cancel)),
                )
                .service(
                    web::resource("/orders/bulk/retry-delivery")
                        .route(web::post().to(crate::orders::actions::bulk_retry_delivery)),
                )
                .service(web::resource("/orders/{id}").route(web::get().to(orders::get_order)))
                .service(
                    web::resource("/orders/{id}/events").route(web::get().to(orders::order_events)),
                )
                .service(
                    web::resource("/orders/{id}/webhook-deliveries")
                        .route(web::get().to(webhooks::order_deliveries)),
                )
                .service(
                    web::resource("/webhook-endpoints")
                        .route(web::get().to(webhooks::list_endpoints))
                        .route(web::post().to(webhooks::create_endpoint)),
                )
                .service(
                    web::resource("/webhook-endpoints/{id}")
                        .route(web::patch().to(webhooks::patch_endpoint))
                        .route(web::delete().to(webhooks::delete_endpoint)),
                )
                .service(
                    web::resource("/webhook-endpoints/{id}/rotate-secret")
                        .route(web::post().to(webhooks::rotate_secret)),
                )
                .service(
                    web::resource("/webhook-endpoints/{id}/deliveries")
                        .route(web::get().to(webhooks::endpoint_deliveries)),
                )
                .service(
                    web::resource("/webhook-endpoints/{id}/events/{event_id}/resend")
                        .route(web::post().to(webhooks::resend)),
                )
                .service(
                    web::resource("/orders/{id}/cancel")
                        .route(web::post().to(crate::orders::actions::cancel_order)),
                )
                .service(
                    web::resource("/orders/{id}/retry-delivery")
                        .route(web::post().to(crate::orders::actions::retry_delivery)),
                )
                .service(
                    web::resource("/orders/{id}/reconcile")
                        .route(web::post().to(crate::orders::actions::reconcile)),
                )
                .service(web::resource("/gateway/webhooks").route(web::post().to(gateway::receive)))
                .service(
                    web::resource("/gateway-events").route(web::get().to(gateway::list_events)),
                )
                .service(
                    web::resource("/gateway-events/{id}/replay")
                        .route(web::post().to(gateway::replay_event)),
                )
                .service(web::resource("/dashboard/orders").route(web::get().to(dashboard::orders)))
                .service(
                    web::resource("/dashboard/summary").route(web::get().to(dashboard::summary)),
                )
                .service(
                    web::resource("/dashboard/refresh").route(web::post().to(dashboard::refresh)),
                )
                .service(
                    web::resource("/dashboard/events").route(web::get().to(dashboard::events)),
                ),
        );
}

fn http_metrics(metrics: &Metrics) -> anyhow::Result<PrometheusMetrics> {
    PrometheusMetricsBuilder::new("orderflow")
        .registry(metrics.registry.clone())
        .mask_unmatched_patterns("UNMATCHED")
        .buckets(&[
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ])
        .build()
        .map_err(|e| anyhow::anyhow!("building HTTP metrics: {e}"))
}

/// Gives error responses that actix produced itself (405 from a resource,
/// a body-less 404) the contract's envelope. Ours are JSON already.
fn envelope_plain_errors<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let err = match status.as_u16() {
        404 => ApiError::NotFound,
        405 => ApiError::MethodNotAllowed,
        413 => ApiError::PayloadTooLarge {
            limit: body::BODY_LIMIT,
        },
        415 => ApiError::UnsupportedMediaType,
        503 => ApiError::Unavailable(format!("{status}")),
        s if s < 500 => ApiError::Malformed(
            status
                .canonical_reason()
                .unwrap_or("bad request")
                .to_owned(),
        ),
        _ => ApiError::Unexpected(anyhow::anyhow!("{status} from a lower layer")),
    };
    let (req, old) = res.into_parts();
    let mut new = HttpResponse::build(status)
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ))
        .body(err.body().to_string());
    // Keep headers set by the inner layers (Allow, request id, …).
    for (name, value) in old.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            new.headers_mut().insert(name.clone(), value.clone());
        }
    }
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(req, new)
            .map_into_boxed_body()
            .map_into_right_body(),
    ))
}

#[cfg(test)]
mod tests {
    /// The routes the table above serves under `/api/v1`, read from this
    /// file's own text: `(method, path)` for each `.route(web::m()` after a
    /// `web::resource("…")`.
    fn api_routes() -> Vec<(String, String)> {
        let src = include_str!("mod.rs");
        let table = &src[src
            .find("web::scope(\"/api/v1\")")
            .expect("the /api/v1 scope")..];
        let table = &table[..table.find("#[cfg(test)]").unwrap_or(table.len())];
        let mut routes = Vec::new();
        for chunk in table.split("web::resource(\"").skip(1) {
            let path = &chunk[..chunk.find('"').expect("a closing quote")];
            for part in chunk.split(".route(web::").skip(1) {
                let method = &part[..part.find('(').expect("a method call")];
                routes.push((method.to_owned(), format!("/api/v1{path}")));
            }
        }
        routes
    }

    #[test]
    fn every_route_of_the_table_has_an_access_rule() {
        let missing: Vec<_> = api_routes()
            .into_iter()
            .filter(|(m, p)| {
                let method = actix_web::http::Method::from_bytes(m.to_uppercase().as_bytes())
                    .expect("a method");
                let path = p.strip_prefix("/api/v1").expect("under /api/v1");
                crate::staff::rules::rule(&method, path).is_none()
            })
            .collect();
        assert!(
            missing.is_empty(),
            "routes without a rule in staff::rules: {missing:?}"
        );
    }

    #[test]
    fn the_openapi_document_has_every_route_of_the_table() {
        use utoipa::OpenApi;
        let doc = serde_json::to_value(super::openapi::ApiDoc::openapi()).expect("a document");
        let routes = api_routes();
        assert!(routes.len() >= 20, "the table was not read: {routes:?}");
        let missing: Vec<_> = routes
            .iter()
            .filter(|(m, p)| doc["paths"][p.as_str()][m.as_str()].is_null())
            .collect();
        assert!(
            missing.is_empty(),
            "routes missing from OpenAPI: {missing:?}"
        );
    }
}
