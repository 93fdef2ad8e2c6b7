//! Warehouse client (docs/API.md): stock for a batch of skus.

use std::time::{Duration, Instant};

use serde::Deserialize;
use url::Url;

use crate::metrics::PartnerMetrics;

/// Most skus one batch request may name.
pub const MAX_SKUS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct Stock {
    pub sku: String,
    #[serde(default)]
    pub available: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct StockList {
    #[serde(default)]
    stock: Vec<Stock>,
}

#[derive(Debug, thiserror::Error)]
#[error("warehouse: {0}")]
pub struct WarehouseError(pub String);

pub struct WarehouseClient {
    client: awc::Client,
    base: Url,
    timeout: Duration,
    metrics: PartnerMetrics,
}

impl WarehouseClient {
    pub fn new(client: awc::Client, base: Url, timeout: Duration, metrics: PartnerMetrics) -> Self {
        Self {
            client,
            base,
            timeout,
            metrics,
        }
    }

    /// Stock of up to [`MAX_SKUS`] skus in one call.
    pub async fn stock(&self, skus: &[String]) -> Result<Vec<Stock>, WarehouseError> {
        let started = Instant::now();
        let list: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("skus", &skus.join(","))
            .finish();
        let url = format!(
            "{}/v1/stock?{list}",
            self.base.as_str().trim_end_matches('/')
        );
        let exchange = async {
            let mut resp = self
                .client
                .get(url)
                .timeout(self.timeout)
                .send()
                .await
                .map_err(|e| WarehouseError(e.to_string()))?;
            let body = resp
                .body()
                .limit(4 << 20)
                .await
                .map_err(|e| WarehouseError(e.to_string()))?;
            if !resp.status().is_success() {
                return Err(WarehouseError(format!("status {}", resp.status().as_u16())));
            }
            serde_json::from_slice::<StockList>(&body)
                .map(|l| l.stock)
                .map_err(|e| WarehouseError(format!("unreadable stock: {e}")))
        };
        let result = match actix_rt::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(WarehouseError("timed out".into())),
        };
        self.metrics.observe(
            "warehouse",
            if result.is_ok() { "ok" } else { "error" },
            started.elapsed(),
        );
        result
    }
}
