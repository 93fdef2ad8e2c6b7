//! Runs partner calls for code that must stay `Send` (apalis jobs).
//!
//! awc is built on actix-rt: its clients and futures live on one thread. The
//! worker's job futures must be `Send` (apalis spawns them on tokio), so they
//! hand each call to this executor: a thread running an actix system with
//! one awc client per partner, where every call runs as its own local task.
//! Thousands of calls can wait at once; the channel only carries closures.

use std::rc::Rc;
use std::time::Duration;

use futures_util::future::LocalBoxFuture;
use tokio::sync::{mpsc, oneshot};
use url::Url;

use super::payment::{PaymentConfig, PaymentGateway};
use super::shipping::ShippingClient;
use super::warehouse::WarehouseClient;
use crate::config::{required, ConfigError, Settings};
use crate::metrics::PartnerMetrics;

/// The partner clients, owned by the executor thread.
pub struct Clients {
    pub payment: PaymentGateway,
    pub shipping: ShippingClient,
    /// Present when `WAREHOUSE_API_URL` is set.
    pub warehouse: Option<WarehouseClient>,
}

type Call<C> = Box<dyn FnOnce(Rc<C>) -> LocalBoxFuture<'static, ()> + Send>;

/// A thread running an actix system that owns clients `C`, and runs the
/// calls handed to it, each as its own local task.
pub struct LocalExecutor<C: 'static> {
    tx: mpsc::UnboundedSender<Call<C>>,
}

impl<C> Clone for LocalExecutor<C> {
    fn clone(&self) -> Self {
        LocalExecutor {
            tx: self.tx.clone(),
        }
    }
}

/// The partners' executor (payment, shipping, warehouse).
pub type PartnerExecutor = LocalExecutor<Clients>;

#[derive(Debug, thiserror::Error)]
#[error("the partner executor has stopped")]
pub struct ExecutorGone;

/// Where the partners are.
#[derive(Debug, Clone)]
pub struct PartnerConfig {
    pub payment: PaymentConfig,
    pub shipping_url: Url,
    pub warehouse_url: Option<Url>,
    pub timeout: Duration,
}

impl PartnerConfig {
    /// The partner URLs `by` needs, all three required.
    pub fn from_settings(settings: &Settings, by: &str) -> Result<Self, ConfigError> {
        Ok(PartnerConfig {
            payment: PaymentConfig {
                base_url: required(&settings.payment_gateway_url, "PAYMENT_GATEWAY_URL", by)?,
                api_key: settings.payment_api_key.clone(),
                timeout: settings.partner_timeout,
            },
            shipping_url: required(&settings.shipping_api_url, "SHIPPING_API_URL", by)?,
            warehouse_url: Some(required(
                &settings.warehouse_api_url,
                "WAREHOUSE_API_URL",
                by,
            )?),
            timeout: settings.partner_timeout,
        })
    }
}

impl PartnerExecutor {
    /// Starts the executor thread. It stops when every handle is dropped.
    pub fn start(config: PartnerConfig, metrics: PartnerMetrics) -> std::io::Result<Self> {
        Self::start_named(config, metrics, "partners", 0)
    }

    /// Starts an executor thread named `name` running at nice value `nice`
    /// (see [`crate::priority`]).
    pub fn start_named(
        config: PartnerConfig,
        metrics: PartnerMetrics,
        name: &str,
        nice: i32,
    ) -> std::io::Result<Self> {
        LocalExecutor::spawn(name, nice, move || Clients {
            payment: PaymentGateway::new(config.payment.clone(), metrics.clone()),
            shipping: ShippingClient::new(
                config.shipping_url.clone(),
                config.timeout,
                metrics.clone(),
            ),
            warehouse: config
                .warehouse_url
                .clone()
                .map(|url| WarehouseClient::new(url, config.timeout, metrics)),
        })
    }
}

impl<C: 'static> LocalExecutor<C> {
    /// Starts the thread `name` (at nice value `nice`), whose clients
    /// `make` builds there. It stops when every handle is dropped.
    pub fn spawn(
        name: &str,
        nice: i32,
        make: impl FnOnce() -> C + Send + 'static,
    ) -> std::io::Result<Self> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Call<C>>();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                crate::priority::lower_current_thread(nice);
                actix_rt::System::new().block_on(async move {
                    let clients = Rc::new(make());
                    while let Some(call) = rx.recv().await {
                        actix_rt::spawn(call(Rc::clone(&clients)));
                    }
                });
            })?;
        Ok(LocalExecutor { tx })
    }

    /// Runs `f` with the clients on the executor thread.
    pub async fn run<T, F>(&self, f: F) -> Result<T, ExecutorGone>
    where
        T: Send + 'static,
        F: FnOnce(Rc<C>) -> LocalBoxFuture<'static, T> + Send + 'static,
    {
        let (done, result) = oneshot::channel();
        let call: Call<C> = Box::new(move |clients| {
            Box::pin(async move {
                let _ = done.send(f(clients).await);
            })
        });
        self.tx.send(call).map_err(|_| ExecutorGone)?;
        result.await.map_err(|_| ExecutorGone)
    }
}
