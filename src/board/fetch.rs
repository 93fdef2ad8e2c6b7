//! A refresh batch's partner fan-out: every order's payment intent and
//! shipment, and the batch's skus at the warehouse, asked concurrently,
//! within a per-partner concurrency bound and unless the partner's circuit
//! is open.

use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

use futures_util::future::LocalBoxFuture;
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::merge::Answers;
use super::RefreshContext;
use crate::db::models::OrderWithItems;
use crate::partners::executor::Clients;
use crate::partners::shipping::Shipment;
use crate::partners::warehouse::{Stock, MAX_SKUS};
use crate::partners::Partner;

/// Concurrent calls per partner for the status refresh, per process.
pub struct Limits {
    payment: Semaphore,
    shipping: Semaphore,
    warehouse: Semaphore,
}

impl Limits {
    pub fn new(per_partner: usize) -> Self {
        Limits {
            payment: Semaphore::new(per_partner),
            shipping: Semaphore::new(per_partner),
            warehouse: Semaphore::new(per_partner),
        }
    }

    fn of(&self, partner: Partner) -> &Semaphore {
        match partner {
            Partner::Payment => &self.payment,
            Partner::Shipping => &self.shipping,
            Partner::Warehouse => &self.warehouse,
        }
    }
}

/// One partner's outcomes in a batch, for its health and its breaker.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub ok: u64,
    pub failed: u64,
}

impl Tally {
    fn of<T>(results: &[Result<T, String>]) -> Tally {
        let ok = results.iter().filter(|r| r.is_ok()).count() as u64;
        Tally {
            ok,
            failed: results.len() as u64 - ok,
        }
    }
}

/// Asks the three partners about `orders`; returns their answers and each
/// partner's tally.
pub async fn fetch(
    ctx: &RefreshContext,
    orders: &[OrderWithItems],
) -> (Answers, Vec<(Partner, Tally)>) {
    let (payment_ids, intents): (Vec<Uuid>, Vec<String>) = orders
        .iter()
        .filter_map(|o| Some((o.order.id, o.order.payment_intent_id.clone()?)))
        .unzip();
    let (shipping_ids, shipments): (Vec<Uuid>, Vec<String>) = orders
        .iter()
        .filter_map(|o| Some((o.order.id, o.order.shipment_id.clone()?)))
        .unzip();
    let payment = calls(ctx, Partner::Payment, intents, intent_status);
    let shipping = calls(ctx, Partner::Shipping, shipments, shipment);
    let warehouse = calls(ctx, Partner::Warehouse, sku_chunks(orders), stock);
    let (payment, shipping, warehouse) = futures_util::join!(payment, shipping, warehouse);
    let tallies = vec![
        (Partner::Payment, Tally::of(&payment)),
        (Partner::Shipping, Tally::of(&shipping)),
        (Partner::Warehouse, Tally::of(&warehouse)),
    ];
    let mut stock = HashMap::new();
    let mut warehouse_ok = true;
    for r in warehouse {
        match r {
            Ok(items) => stock.extend(items.into_iter().map(|s| (s.sku, s.available))),
            Err(_) => warehouse_ok = false,
        }
    }
    let answers = Answers {
        payment: payment_ids.into_iter().zip(payment).collect(),
        shipping: shipping_ids.into_iter().zip(shipping).collect(),
        stock,
        warehouse_ok,
    };
    (answers, tallies)
}

/// The batch's skus, de-duplicated, in chunks of the warehouse's batch size.
fn sku_chunks(orders: &[OrderWithItems]) -> Vec<Vec<String>> {
    let skus: Vec<String> = orders
        .iter()
        .flat_map(|o| o.items.iter().map(|i| i.sku.clone()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    skus.chunks(MAX_SKUS).map(<[String]>::to_vec).collect()
}

fn intent_status(
    p: Rc<Clients>,
    intent: String,
) -> LocalBoxFuture<'static, Result<String, String>> {
    Box::pin(async move {
        p.payment
            .intent_status(&intent)
            .await
            .map_err(|e| e.to_string())
    })
}

fn shipment(p: Rc<Clients>, id: String) -> LocalBoxFuture<'static, Result<Shipment, String>> {
    Box::pin(async move {
        p.shipping
            .get_shipment(&id)
            .await
            .map_err(|e| e.to_string())
    })
}

fn stock(p: Rc<Clients>, skus: Vec<String>) -> LocalBoxFuture<'static, Result<Vec<Stock>, String>> {
    Box::pin(async move {
        match &p.warehouse {
            Some(w) => w.stock(&skus).await.map_err(|e| e.to_string()),
            None => Err("WAREHOUSE_API_URL is not set".to_owned()),
        }
    })
}

/// One partner call: the clients and one argument in, the answer or the
/// error's text out.
type PartnerCall<A, T> = fn(Rc<Clients>, A) -> LocalBoxFuture<'static, Result<T, String>>;

/// Calls `partner` once per argument with `call`, each call within that
/// partner's concurrency bound and unless its circuit is open. All of them
/// go to the partner executor as one message and come back as one answer,
/// in the arguments' order (a hop per call between the job's thread and the
/// executor's would cost two thread wake-ups each).
async fn calls<A, T>(
    ctx: &RefreshContext,
    partner: Partner,
    args: Vec<A>,
    call: PartnerCall<A, T>,
) -> Vec<Result<T, String>>
where
    A: Send + 'static,
    T: Send + 'static,
{
    let n = args.len();
    if n == 0 {
        return Vec::new();
    }
    let bounds = ctx.bounds.clone();
    let run = ctx
        .jobs
        .partners
        .run(move |clients| {
            Box::pin(async move {
                futures_util::future::join_all(args.into_iter().map(|arg| {
                    let (clients, bounds) = (Rc::clone(&clients), bounds.clone());
                    async move {
                        if !bounds.breakers.allow(partner) {
                            return Err(format!("{partner}: circuit open"));
                        }
                        let _permit = bounds
                            .limits
                            .of(partner)
                            .acquire()
                            .await
                            .map_err(|e| e.to_string())?;
                        call(clients, arg).await
                    }
                }))
                .await
            })
        })
        .await;
    match run {
        Ok(results) => results,
        Err(e) => (0..n).map(|_| Err(e.to_string())).collect(),
    }
}
