//! Test harness: the real app on port 0 against the real PostgreSQL (a fresh
//! database per test, dropped afterwards) and the real Redis (a key prefix
//! per test, deleted afterwards), with the partner simulators on random ports.

use std::collections::HashMap;
use std::sync::Arc;

use awc::http::StatusCode;
use diesel::prelude::*;
use orderflow::config::Settings;
use orderflow::db::{self, DbPool};
use orderflow::jobs::JobQueue;
use orderflow::metrics::Metrics;
use orderflow::serve::Application;
use orderflow::sim::{self, SimArgs, Simulators};
use serde_json::{json, Value};
use uuid::Uuid;

pub const TOKEN: &str = "test-ops-token-0123456789";

pub fn pg_base() -> String {
    std::env::var("TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub struct TestApp {
    pub settings: Settings,
    pub base: String,
    pub db_name: String,
    pub redis_prefix: String,
    pub pool: DbPool,
    pub sims: Simulators,
    pub client: awc::Client,
}

/// Options for [`spawn_app_with`].
pub struct Opts {
    pub database_url: Option<String>,
    pub redis_url: Option<String>,
    pub partner_timeout_ms: u64,
    pub payment_url: Option<String>,
    pub ship_stage_secs: u64,
    pub statement_timeout_ms: u64,
    /// More settings, over the test defaults (e.g. `STUCK_PAID_SECS`).
    pub env: Vec<(&'static str, String)>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            database_url: None,
            redis_url: None,
            partner_timeout_ms: 2000,
            payment_url: None,
            ship_stage_secs: 30,
            statement_timeout_ms: 5000,
            env: Vec::new(),
        }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Opts::default()).await
}

pub async fn spawn_app_with(opts: Opts) -> TestApp {
    let id = Uuid::new_v4().simple().to_string();
    let db_name = format!("orderflow_test_{id}");
    let redis_prefix = format!("test-{id}");
    let real_db_url = format!("{}/{db_name}", pg_base());

    // Arrange the database: created, migrated, seeded.
    {
        let url = real_db_url.clone();
        tokio::task::spawn_blocking(move || {
            db::create_database_if_missing(&url).expect("create test database");
            let mut conn = PgConnection::establish(&url).expect("connect test database");
            db::run_migrations(&mut conn).expect("migrate");
            use orderflow::db::schema::products::dsl as p;
            diesel::insert_into(p::products)
                .values(orderflow::cli::demo_catalog())
                .execute(&mut conn)
                .expect("seed");
            diesel::insert_into(p::products)
                .values(&vec![
                    (
                        p::sku.eq("OLD-1"),
                        p::name.eq("Discontinued"),
                        p::price_cents.eq(100),
                        p::currency.eq("usd"),
                        p::active.eq(false),
                    ),
                    (
                        p::sku.eq("EUR-1"),
                        p::name.eq("Euro thing"),
                        p::price_cents.eq(100),
                        p::currency.eq("eur"),
                        p::active.eq(true),
                    ),
                ])
                .execute(&mut conn)
                .expect("seed extra");
        })
        .await
        .expect("db setup");
    }

    let mut sim_args = SimArgs::ephemeral(7);
    sim_args.ship_stage_secs = opts.ship_stage_secs;
    let mut sims = sim::start(&sim_args).expect("simulators");
    for s in std::mem::take(&mut sims.servers) {
        actix_rt::spawn(s);
    }
    let payment_url = opts
        .payment_url
        .clone()
        .unwrap_or_else(|| sims.payment_url());
    let mut vars: HashMap<&str, String> = HashMap::from([
        (
            "DATABASE_URL",
            opts.database_url
                .clone()
                .unwrap_or_else(|| real_db_url.clone()),
        ),
        (
            "REDIS_URL",
            opts.redis_url.clone().unwrap_or_else(redis_url),
        ),
        ("REDIS_PREFIX", redis_prefix.clone()),
        ("BIND_ADDR", "127.0.0.1:0".into()),
        ("OPS_TOKEN", TOKEN.into()),
        ("PAYMENT_GATEWAY_URL", payment_url),
        ("SHIPPING_API_URL", sims.shipping_url()),
        ("WAREHOUSE_API_URL", sims.warehouse_url()),
        ("PARTNER_TIMEOUT_MS", opts.partner_timeout_ms.to_string()),
        ("HTTP_WORKERS", "2".into()),
        ("DB_POOL_SIZE", "8".into()),
        ("DB_CHECKOUT_TIMEOUT_MS", "1000".into()),
        (
            "DB_STATEMENT_TIMEOUT_MS",
            opts.statement_timeout_ms.to_string(),
        ),
        // The test receivers listen on 127.0.0.1; retries come fast.
        ("WEBHOOK_ALLOW_PRIVATE_TARGETS", "true".into()),
        ("WEBHOOK_RETRY_BASE_MS", "200".into()),
        // Each scrape reads afresh unless a test asks for the cache.
        ("METRICS_READ_EVERY_MS", "0".into()),
    ]);
    vars.extend(opts.env.iter().cloned());
    let settings = Settings::from_lookup(|k| vars.get(k).cloned()).expect("settings");
    if std::env::var_os("TEST_LOG").is_some() {
        orderflow::telemetry::init(settings.log_format);
    }
    let pool = db::build_pool(&settings, "orderflow-test");
    let queue = Arc::new(JobQueue::new(&settings).expect("queue"));
    let metrics = Metrics::new().expect("metrics");
    let app = Application::build(&settings, pool, queue, &metrics).expect("app");
    let base = format!("http://127.0.0.1:{}", app.port());
    actix_rt::spawn(app.server());

    // A pool on the real database for assertions, whatever the app uses.
    let assert_settings = Settings::from_lookup(|k| match k {
        "DATABASE_URL" => Some(real_db_url.clone()),
        "DB_POOL_SIZE" => Some("2".into()),
        _ => None,
    })
    .expect("assert settings");
    TestApp {
        settings: settings.clone(),
        base,
        db_name,
        redis_prefix,
        pool: db::build_pool(&assert_settings, "orderflow-test-assert"),
        sims,
        // Idle connections reused for less than the servers' 5 s keep-alive
        // (see `partners::IDLE_REUSE`): a request on one the server is
        // closing would be reset.
        client: awc::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .connector(awc::Connector::new().conn_keep_alive(orderflow::partners::IDLE_REUSE))
            .finish(),
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Close our own connections first, then force-drop the database.
        let name = self.db_name.clone();
        let prefix = self.redis_prefix.clone();
        let _ = std::thread::spawn(move || {
            if let Ok(mut conn) = PgConnection::establish(&format!("{}/postgres", pg_base())) {
                let _ =
                    diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .execute(&mut conn);
            }
            if let Ok(client) = redis::Client::open(redis_url()) {
                if let Ok(mut conn) = client.get_connection() {
                    let keys: Vec<String> = redis::cmd("KEYS")
                        .arg(format!("{prefix}*"))
                        .query(&mut conn)
                        .unwrap_or_default();
                    if !keys.is_empty() {
                        let _: Result<(), _> = redis::cmd("DEL").arg(keys).query(&mut conn);
                    }
                }
            }
        })
        .join();
    }
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: awc::http::header::HeaderMap,
    pub body: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
    pub fn fields(&self) -> Vec<String> {
        self.body["error"]["fields"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|f| f["field"].as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

async fn read(
    mut res: awc::ClientResponse<
        impl futures_util::Stream<Item = Result<actix_web::web::Bytes, awc::error::PayloadError>>
            + Unpin,
    >,
) -> Resp {
    let bytes = res.body().limit(10 << 20).await.expect("body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&bytes)}))
    };
    Resp {
        status: res.status(),
        headers: res.headers().clone(),
        body,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn purchase(&self, body: &Value, key: Option<&str>) -> Resp {
        let mut req = self.client.post(self.url("/api/v1/purchase"));
        if let Some(k) = key {
            req = req.insert_header(("Idempotency-Key", k));
        }
        read(req.send_json(body).await.expect("send")).await
    }

    pub async fn raw_post(&self, path: &str, content_type: Option<&str>, body: Vec<u8>) -> Resp {
        let mut req = self.client.post(self.url(path));
        if let Some(ct) = content_type {
            req = req.insert_header(("Content-Type", ct));
        }
        read(req.send_body(body).await.expect("send")).await
    }

    /// A card purchase that answered 201 (paid); its order id.
    pub async fn paid_order(&self) -> Uuid {
        let resp = self.purchase(&visa(), None).await;
        assert_eq!(resp.status, 201, "{}", resp.body);
        order_id(&resp)
    }

    pub async fn get(&self, path: &str) -> Resp {
        read(self.client.get(self.url(path)).send().await.expect("send")).await
    }

    pub async fn ops(&self, method: &str, path: &str, body: Option<&Value>) -> Resp {
        self.ops_with_token(method, path, body, Some(TOKEN)).await
    }

    pub async fn ops_with_token(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        token: Option<&str>,
    ) -> Resp {
        self.ops_at(&self.base, method, path, body, token).await
    }

    /// [`TestApp::ops_with_token`] against the serve at `base` (a replica).
    pub async fn ops_at(
        &self,
        base: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
        token: Option<&str>,
    ) -> Resp {
        let method = awc::http::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.client.request(method, format!("{base}{path}"));
        if let Some(t) = token {
            req = req.insert_header(("Authorization", format!("Bearer {t}")));
        }
        let res = match body {
            Some(b) => req.send_json(b).await,
            None => req.send().await,
        };
        read(res.expect("send")).await
    }

    /// A second `serve` on the same database and Redis (its own pool,
    /// caches and epoch watcher, as another replica has): its base URL.
    pub fn spawn_replica(&self) -> String {
        let pool = db::build_pool(&self.settings, "orderflow-test-replica");
        let queue = Arc::new(JobQueue::new(&self.settings).expect("queue"));
        let metrics = Metrics::new().expect("metrics");
        let app = Application::build(&self.settings, pool, queue, &metrics).expect("replica");
        let base = format!("http://127.0.0.1:{}", app.port());
        actix_rt::spawn(app.server());
        base
    }

    pub async fn set_shipping(&self, knobs: Value) {
        let res = self
            .client
            .post(format!("{}/_sim/config", self.sims.shipping_url()))
            .send_json(&knobs)
            .await
            .expect("sim config");
        assert!(res.status().is_success());
    }

    pub async fn set_payment(&self, knobs: Value) {
        self.payment_sim("/_sim/config", knobs).await;
    }

    /// The payment simulator makes the next `n` confirms, then answers 500
    /// (a response lost after the charge).
    #[allow(dead_code)]
    pub async fn sims_lose_confirms(&self, n: u32) {
        self.payment_sim(
            "/_sim/faults",
            serde_json::json!({"lose_confirm_responses": n}),
        )
        .await;
    }

    /// POSTs `body` to the payment simulator's `path` (its knobs, or what
    /// a person does at the gateway): its JSON answer, or null.
    pub async fn payment_sim(&self, path: &str, body: Value) -> Value {
        let mut res = self
            .client
            .post(format!("{}{path}", self.sims.payment_url()))
            .send_json(&body)
            .await
            .expect("payment sim");
        assert!(res.status().is_success(), "{path}: {}", res.status());
        res.json().await.unwrap_or(Value::Null)
    }

    /// Runs `f` on a connection to the test database.
    pub async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut PgConnection) -> T + Send + 'static,
    ) -> T {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.get().expect("assert connection");
            f(&mut conn)
        })
        .await
        .expect("db task")
    }

    /// Opens a transaction on a session of its own (as someone else's
    /// client would) and makes it take an id, holding the webhook log's
    /// horizon until [`HeldTransaction::commit`].
    #[allow(dead_code)]
    pub fn hold_transaction_id(&self) -> HeldTransaction {
        use diesel::connection::SimpleConnection;
        let url = format!("{}/{}", pg_base(), self.db_name);
        let mut conn = PgConnection::establish(&url).expect("connect");
        conn.batch_execute("BEGIN; SELECT pg_current_xact_id();")
            .expect("hold an id");
        HeldTransaction(conn)
    }

    /// Inserts `n` paid orders whose delivery is owed (owed since
    /// `created_at`, e.g. `now() - interval '1 hour'`), straight in SQL.
    pub async fn seed_paid_orders(&self, n: usize, created_at: &'static str) {
        self.db(move |c| {
            use diesel::connection::SimpleConnection;
            c.batch_execute(&format!(
                "INSERT INTO orders (id, status, customer_email, customer_name, currency, total_cents, shipping_address, payment_method, delivery_status) \
                 SELECT gen_random_uuid(), 'paid', 'a@example.com', 'A', 'usd', 100, '{{}}', 'pm_card_visa', 'queued' FROM generate_series(1, {n}); \
                 INSERT INTO outbox (kind, order_id, created_at) SELECT 'deliver', id, {created_at} FROM orders;"
            ))
            .expect("seed paid orders");
        })
        .await
    }

    /// Every one of `ids` has exactly one shipment at the simulator.
    #[allow(dead_code)]
    pub fn assert_shipped_once(&self, ids: &[Uuid]) {
        let stats = self.sims.shipping.stats();
        for id in ids {
            assert_eq!(
                stats.shipments_by_reference.get(&id.to_string()),
                Some(&1),
                "{id}"
            );
        }
    }

    /// The simulator made exactly `n` shipments, each for a different
    /// order: nothing shipped twice, nothing else shipped.
    #[allow(dead_code)]
    pub fn assert_all_shipped_once(&self, n: usize) {
        let stats = self.sims.shipping.stats();
        assert_eq!(stats.shipments_by_reference.len(), n, "orders shipped");
        let twice: Vec<_> = stats
            .shipments_by_reference
            .iter()
            .filter(|(_, &c)| c != 1)
            .collect();
        assert!(twice.is_empty(), "shipped more than once: {twice:?}");
    }

    pub async fn order_count(&self) -> i64 {
        self.db(|c| {
            use orderflow::db::schema::orders::dsl as o;
            o::orders.count().get_result::<i64>(c).expect("count")
        })
        .await
    }

    /// The text of `GET /metrics`.
    pub async fn metrics_text(&self) -> String {
        self.get_text(&self.url("/metrics")).await
    }

    /// The body of `GET url` as text.
    pub async fn get_text(&self, url: &str) -> String {
        let body = self
            .client
            .get(url)
            .send()
            .await
            .unwrap()
            .body()
            .await
            .unwrap();
        String::from_utf8_lossy(&body).into_owned()
    }

    /// Open connections to the test database whose application_name is `name`.
    pub async fn connections_named(&self, name: &'static str) -> i64 {
        self.db(move |c| {
            diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
                "(SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = ",
            ).bind::<diesel::sql_types::Text, _>(name).sql(")"))
            .get_result::<i64>(c)
            .expect("pg_stat_activity")
        })
        .await
    }

    pub async fn owed(&self, kind: &'static str, order: Uuid) -> bool {
        self.db(move |c| {
            use orderflow::db::schema::outbox::dsl as w;
            diesel::select(diesel::dsl::exists(w::outbox.find((kind, order))))
                .get_result::<bool>(c)
                .expect("owed")
        })
        .await
    }

    pub fn redis(&self) -> redis::Connection {
        redis::Client::open(redis_url())
            .expect("redis")
            .get_connection()
            .expect("redis conn")
    }
}

/// A valid purchase body for `items`.
/// The value of the metric line of `text` that starts with `name `.
#[allow(dead_code)]
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

pub fn purchase_body(items: &[(&str, i64)], payment_method: &str) -> Value {
    json!({
        "customer": {"email": "ada@example.com", "name": "Ada Lovelace"},
        "items": items.iter().map(|(s, q)| json!({"sku": s, "quantity": q})).collect::<Vec<_>>(),
        "currency": "usd",
        "shipping_address": {"line1": "1 Main St", "line2": null, "city": "London",
                             "postal_code": "N1 9GU", "country": "GB"},
        "payment_method": payment_method,
    })
}

pub fn visa() -> Value {
    purchase_body(&[("SKU-1", 2), ("SKU-3", 1)], "pm_card_visa")
}

pub fn order_id(resp: &Resp) -> Uuid {
    let v = if resp.body.get("id").is_some() {
        &resp.body["id"]
    } else {
        &resp.body["error"]["order"]["id"]
    };
    Uuid::parse_str(v.as_str().expect("order id")).expect("uuid")
}

impl TestApp {
    pub async fn raw_post_with_key(&self, path: &str, key: &str, body: Vec<u8>) -> Resp {
        let req = self
            .client
            .post(self.url(path))
            .insert_header(("Content-Type", "application/json"))
            .insert_header(("Idempotency-Key", key));
        read(req.send_body(body).await.expect("send")).await
    }
}

/// A worker running in its own thread and runtime, as a separate process
/// would, against the same PostgreSQL, Redis and simulators as the app.
pub struct TestWorker {
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl TestWorker {
    /// Whether the worker ended (on its own, unless stopped). Used by the
    /// fault tests.
    #[allow(dead_code)]
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    pub fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.thread
            .take()
            .map(|t| t.join().expect("worker thread"))
            .unwrap_or(Ok(()))
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A port with nothing listening on it (yet).
#[allow(dead_code)]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A number from the environment (a test's length, a seed), or `default`.
#[allow(dead_code)]
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Worker options for tests: fast polling and retries; the sweeper inert
/// unless a test turns it on.
pub fn fast_worker() -> orderflow::worker::WorkerOptions {
    let defaults = orderflow::worker::WorkerOptions::default();
    orderflow::worker::WorkerOptions {
        poll: std::time::Duration::from_millis(50),
        retry: orderflow::jobs::RetryPolicy {
            max_attempts: 3,
            base: std::time::Duration::from_millis(50),
            cap: std::time::Duration::from_millis(300),
            ..defaults.retry
        },
        sweep_every: std::time::Duration::from_millis(200),
        refresh_every: None,
        sweep: orderflow::jobs::sweep::SweepPolicy {
            grace: std::time::Duration::from_secs(3600),
            stale_payment: std::time::Duration::from_secs(3600),
            ..defaults.sweep
        },
        ..defaults
    }
}

impl TestApp {
    pub fn start_worker(&self, opts: orderflow::worker::WorkerOptions) -> TestWorker {
        self.start_worker_with(self.settings.clone(), opts)
    }

    pub fn start_worker_with(
        &self,
        settings: Settings,
        opts: orderflow::worker::WorkerOptions,
    ) -> TestWorker {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(orderflow::worker::run(settings, opts, rx))
        });
        TestWorker {
            stop: tx,
            thread: Some(thread),
        }
    }

    /// Polls the order until `done` holds for it, or panics after `secs`.
    pub async fn wait_order(&self, id: Uuid, secs: u64, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let o = self.get(&format!("/api/v1/orders/{id}")).await.body;
            if done(&o) {
                return o;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "order never reached the state: {o}"
            );
            actix_rt::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Polls an endpoint's delivery log until `done` holds for its lines,
    /// or panics after `secs`. A receiver has an event before the worker
    /// records the answer, so a test that saw the receiver get it waits
    /// here for the log too.
    #[allow(dead_code)]
    pub async fn wait_delivery_log(
        &self,
        endpoint: &str,
        secs: u64,
        done: impl Fn(&[Value]) -> bool,
    ) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        let path = format!("/api/v1/webhook-endpoints/{endpoint}/deliveries?limit=500");
        loop {
            let log = self.ops("GET", &path, None).await;
            assert_eq!(log.status, 200, "{}", log.body);
            let lines = log.body["deliveries"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if done(&lines) {
                return log.body;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the delivery log never settled: {}",
                log.body
            );
            actix_rt::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// A transaction holding an id, from [`TestApp::hold_transaction_id`].
pub struct HeldTransaction(PgConnection);

impl HeldTransaction {
    #[allow(dead_code)]
    pub fn commit(mut self) {
        use diesel::connection::SimpleConnection;
        self.0.batch_execute("COMMIT").expect("commit");
    }
}
