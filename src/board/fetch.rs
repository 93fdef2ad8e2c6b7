//! A refresh batch's partner fan-out: the due sources of its orders (an
//! unsettled payment's intent, a shipment, the skus' stock), asked
//! concurrently, within a per-partner call budget, a concurrency bound, and
//! unless the partner's circuit is open.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::rc::Rc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use futures_util::future::LocalBoxFuture;
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::merge::{asks, Answers, Asks};
use super::{BoardEntry, RefreshContext};
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

/// A per-partner call budget of this process: `per_sec` calls a second on
/// average, of which a run may spend what accrued over `window` (the run
/// interval). What is due beyond it waits for a later run, so the call rate
/// stays bounded whatever the number of active orders.
pub struct Budget {
    per_sec: f64,
    cap: f64,
    state: Mutex<HashMap<Partner, (f64, Instant)>>,
}

impl Budget {
    pub fn new(per_sec: u32, window: Duration) -> Self {
        let per_sec = f64::from(per_sec.max(1));
        Budget {
            per_sec,
            cap: per_sec * window.as_secs_f64().max(1.0),
            state: Mutex::new(HashMap::new()),
        }
    }

    /// Takes up to `want` calls of `partner`'s budget; returns how many.
    pub fn take(&self, partner: Partner, want: usize) -> usize {
        let Ok(mut state) = self.state.lock() else {
            return want;
        };
        let now = Instant::now();
        let (tokens, last) = state.entry(partner).or_insert((self.cap, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.per_sec).min(self.cap);
        *last = now;
        let granted = (want as f64).min(tokens.floor()).max(0.0) as usize;
        *tokens -= granted as f64;
        granted
    }
}

/// Asks the partners about the sources of `orders` that are due (all of
/// them when `force`), within the call budget unless forced; returns their
/// answers and each partner's tally.
pub async fn fetch(
    ctx: &RefreshContext,
    orders: &[OrderWithItems],
    previous: &HashMap<Uuid, BoardEntry>,
    force: bool,
) -> (Answers, Vec<(Partner, Tally)>) {
    let now = Utc::now();
    let due: Vec<(&OrderWithItems, Asks, Option<DateTime<Utc>>)> = orders
        .iter()
        .map(|o| {
            let prev = previous.get(&o.order.id);
            (o, asks(o, prev, now, force), prev.map(oldest_due))
        })
        .collect();
    // Each source's due orders, the longest overdue first (never asked:
    // first of all).
    let wanting = |wants: &dyn Fn(&Asks) -> bool| -> Vec<&OrderWithItems> {
        let mut asked: Vec<_> = due.iter().filter(|(_, a, _)| wants(a)).collect();
        asked.sort_by_key(|(_, _, since)| *since);
        asked.into_iter().map(|(o, _, _)| *o).collect()
    };
    let granted = |partner: Partner, calls: usize| {
        if force {
            calls
        } else {
            ctx.bounds.budget.take(partner, calls)
        }
    };
    let mut pay = wanting(&|a| a.payment);
    pay.truncate(granted(Partner::Payment, pay.len()));
    let mut ship = wanting(&|a| a.shipping);
    ship.truncate(granted(Partner::Shipping, ship.len()));
    // The warehouse answers 100 skus a call: the budget counts those calls,
    // and an order is asked when every one of its skus made it in.
    let stock_due = wanting(&|a| a.warehouse);
    let mut chunks = sku_chunks(&stock_due);
    chunks.truncate(granted(Partner::Warehouse, chunks.len()));
    let stock_orders: Vec<&OrderWithItems> = {
        let asked_skus: HashSet<&String> = chunks.iter().flatten().collect();
        stock_due
            .into_iter()
            .filter(|o| o.items.iter().all(|i| asked_skus.contains(&i.sku)))
            .collect()
    };
    let intents: Vec<String> = pay
        .iter()
        .filter_map(|o| o.order.payment_intent_id.clone())
        .collect();
    let shipments: Vec<String> = ship
        .iter()
        .filter_map(|o| o.order.shipment_id.clone())
        .collect();
    let payment = calls(ctx, Partner::Payment, intents, intent_status);
    let shipping = calls(ctx, Partner::Shipping, shipments, shipment);
    let warehouse = calls(ctx, Partner::Warehouse, chunks, stock);
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
        payment: pay.iter().map(|o| o.order.id).zip(payment).collect(),
        shipping: ship.iter().map(|o| o.order.id).zip(shipping).collect(),
        stock,
        warehouse_ok,
        stock_asked: stock_orders.iter().map(|o| o.order.id).collect(),
    };
    (answers, tallies)
}

/// The earliest time any source of an entry is due: the most overdue are
/// asked first (and orders the board has no entry for, `None`, before all).
fn oldest_due(e: &BoardEntry) -> DateTime<Utc> {
    [
        e.payment.due.next_at,
        e.shipping.due.next_at,
        e.warehouse.due.next_at,
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The skus of `orders`, de-duplicated, in chunks of the warehouse's batch size.
fn sku_chunks(orders: &[&OrderWithItems]) -> Vec<Vec<String>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_grants_what_accrued_up_to_a_window_per_partner() {
        let b = Budget::new(100, Duration::from_secs(2));
        assert_eq!(
            b.take(Partner::Shipping, 150),
            150,
            "a full window to start"
        );
        assert_eq!(b.take(Partner::Shipping, 150), 50);
        assert_eq!(b.take(Partner::Shipping, 10), 0, "spent");
        assert_eq!(b.take(Partner::Payment, 10), 10, "per partner");
        std::thread::sleep(Duration::from_millis(120));
        let refilled = b.take(Partner::Shipping, 1000);
        // 100/s for at least 120 ms (a sleep may overrun, never fall short).
        assert!(refilled >= 12, "{refilled}");
    }
}
