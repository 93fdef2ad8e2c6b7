//! Warehouse client (docs/API.md): stock for a batch of skus.

use std::time::Duration;

use awc::http::Method;
use serde::Deserialize;
use url::Url;

use super::call::{Body, PartnerHttp};
use super::Partner;
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
    http: PartnerHttp,
}

impl WarehouseClient {
    pub fn new(base: Url, timeout: Duration, metrics: PartnerMetrics) -> Self {
        Self {
            http: PartnerHttp::new(Partner::Warehouse, base, timeout, metrics),
        }
    }

    /// Stock of up to [`MAX_SKUS`] skus in one call.
    pub async fn stock(&self, skus: &[String]) -> Result<Vec<Stock>, WarehouseError> {
        let list: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("skus", &skus.join(","))
            .finish();
        let req = self.http.request(Method::GET, &format!("/v1/stock?{list}"));
        let reply = self
            .http
            .send("stock", req, Body::Empty)
            .await
            .map_err(|e| WarehouseError(e.to_string()))?;
        if !(200..300).contains(&reply.status) {
            return Err(WarehouseError(format!("status {}", reply.status)));
        }
        serde_json::from_value::<StockList>(reply.body)
            .map(|l| l.stock)
            .map_err(|e| WarehouseError(format!("unreadable stock: {e}")))
    }
}
