//! A randomized fault run, Jepsen-style: purchases (retried under the same
//! Idempotency-Key until they get a definite answer), cancels and delivery
//! retries run without pause while a seeded nemesis picks faults at random:
//! Redis and PostgreSQL cuts and partitions (for serve and the workers
//! alike), a worker SIGKILLed and restarted, a shipping partner that
//! creates the shipment and then fails or hangs, a gateway that charges and
//! then hangs. A webhook receiver subscribed to every event answers 500
//! to every seventh request. Then everything heals, and a checker reads the
//! whole history from the API and the simulators' counters: money and goods
//! order by order, every order's timeline (gapless, `order.created` first,
//! the last `order.*` its status), and every event at the receiver.
//!
//! `NEMESIS_SECS` (default 40) sets the length, `NEMESIS_SEED` replays a
//! run (the seed is printed, and in every failure message).

use std::collections::HashMap;
use std::process::Child;
use std::rc::Rc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::harness::{self, Proxy};
use crate::helpers::*;

/// What the clients saw.
#[derive(Default)]
struct History {
    /// Keys whose purchase got a definite answer, and its order.
    definite: HashMap<String, Uuid>,
    /// Keys still without one.
    open: Vec<String>,
    /// Orders in the order they were answered.
    recent: Vec<Uuid>,
    server_errors: Vec<String>,
}

fn definite(status: u16) -> bool {
    matches!(status, 201 | 202 | 402)
}

fn order_of(resp: &Resp) -> Option<Uuid> {
    let id = resp.body["id"]
        .as_str()
        .or_else(|| resp.body["error"]["order"]["id"].as_str())?;
    id.parse().ok()
}

struct Fleet {
    workers: Vec<Child>,
    pg: Proxy,
    redis: Proxy,
}

impl Fleet {
    fn spawn(app: &TestApp, pg: &Proxy, redis: &Proxy) -> Child {
        let log = std::env::temp_dir().join(format!("orderflow-nemesis-{}.log", app.redis_prefix));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        harness::worker_command(app, &pg.database_url(&app_db(app)), &redis.redis_url())
            .env("RUST_LOG", "info")
            .env("LOG_FORMAT", "json")
            .stdout(out)
            .env("PARTNER_TIMEOUT_MS", "2000")
            .env("SWEEP_GRACE_SECS", "3")
            .env("STALE_PAYMENT_SECS", "3")
            .env("JOB_RETRY_CAP_SECS", "4")
            .env("WEBHOOK_RETRY_BASE_MS", "200")
            .spawn()
            .unwrap()
    }
}

/// The database the app's own URL names (the proxy forwards to it).
fn app_db(app: &TestApp) -> String {
    let url = secrecy::ExposeSecret::expose_secret(&app.settings.database_url).to_owned();
    url.rsplit('/').next().unwrap_or_default().to_owned()
}

async fn nemesis_step(rng: &mut StdRng, app: &TestApp, fleet: &mut Fleet, log: &mut Vec<String>) {
    let hold = Duration::from_millis(rng.random_range(1000..3500));
    let fault = rng.random_range(0..8);
    let name = match fault {
        0 => "redis cut",
        1 => "postgres cut",
        2 => "redis partition",
        3 => "postgres partition",
        4 => "worker SIGKILL",
        5 => "shipping fails after creating",
        6 => "shipping hangs after creating",
        _ => "gateway hangs after charging",
    };
    log.push(format!("{name} {}ms", hold.as_millis()));
    match fault {
        0 => fleet.redis.cut(),
        1 => fleet.pg.cut(),
        2 => fleet.redis.pause(),
        3 => fleet.pg.pause(),
        4 => {
            let i = rng.random_range(0..fleet.workers.len());
            harness::signal(&fleet.workers[i], "-KILL");
            let _ = fleet.workers[i].wait();
        }
        5 => {
            app.set_shipping(
                json!({"failure_rate": 0.5, "failure_status": 503, "after_effect": true}),
            )
            .await
        }
        6 => {
            app.set_shipping(json!({"hang_rate": 0.3, "after_effect": true}))
                .await
        }
        _ => {
            app.set_payment(json!({"hang_rate": 0.3, "after_effect": true}))
                .await
        }
    }
    actix_rt::time::sleep(hold).await;
    heal(app, fleet).await;
}

async fn heal(app: &TestApp, fleet: &mut Fleet) {
    fleet.redis.heal();
    fleet.pg.heal();
    let calm = json!({"failure_rate": 0.0, "hang_rate": 0.0, "after_effect": false});
    app.set_shipping(calm.clone()).await;
    app.set_payment(calm).await;
    for w in fleet.workers.iter_mut() {
        if w.try_wait().unwrap().is_some() {
            *w = Fleet::spawn(app, &fleet.pg, &fleet.redis);
        }
    }
}

/// One purchase under `key`, retried until a definite answer or `give_up`.
async fn purchase_until_definite(app: &TestApp, key: &str, give_up: Instant) -> Option<Resp> {
    let body = visa();
    loop {
        let resp = app.purchase(&body, Some(key)).await;
        if definite(resp.status.as_u16()) {
            return Some(resp);
        }
        if Instant::now() >= give_up {
            return None;
        }
        actix_rt::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn purchaser(app: Rc<TestApp>, history: Rc<Mutex<History>>, until: Instant, n: usize) {
    let mut i = 0;
    while Instant::now() < until {
        i += 1;
        let key = format!("nemesis-{n}-{i}");
        let give_up = Instant::now() + Duration::from_secs(15);
        let resp = purchase_until_definite(&app, &key, give_up).await;
        let mut h = history.lock().unwrap();
        match resp.as_ref().and_then(order_of) {
            Some(id) => {
                h.definite.insert(key, id);
                h.recent.push(id);
            }
            None => h.open.push(key),
        }
    }
}

async fn meddler(app: Rc<TestApp>, history: Rc<Mutex<History>>, until: Instant, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    while Instant::now() < until {
        actix_rt::time::sleep(Duration::from_millis(rng.random_range(100..400))).await;
        let ids: Vec<Uuid> = history.lock().unwrap().recent.clone();
        if ids.is_empty() {
            continue;
        }
        // Mostly the newest orders, whose delivery is under way: where a
        // cancel races a shipment.
        let from = if rng.random_bool(0.8) {
            ids.len().saturating_sub(8)
        } else {
            0
        };
        let id = ids[rng.random_range(from..ids.len())];
        let action = if rng.random_bool(0.7) {
            "cancel"
        } else {
            "retry-delivery"
        };
        let resp = app
            .ops("POST", &format!("/api/v1/orders/{id}/{action}"), None)
            .await;
        if resp.status.as_u16() >= 500 && resp.status.as_u16() != 503 {
            history
                .lock()
                .unwrap()
                .server_errors
                .push(format!("{action} {id}: {} {}", resp.status, resp.body));
        }
    }
}

/// Every order, through the ops listing.
async fn all_orders(app: &TestApp) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/orders?limit=500&cursor={c}"),
            None => "/api/v1/orders?limit=500".to_owned(),
        };
        let page = app.ops("GET", &path, None).await;
        assert_eq!(page.status, 200, "{}", page.body);
        out.extend(page.body["orders"].as_array().cloned().unwrap_or_default());
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
}

async fn owed_count(app: &TestApp) -> i64 {
    app.db(|c| {
        use diesel::prelude::*;
        use orderflow::db::schema::outbox::dsl as w;
        w::outbox.count().get_result(c).unwrap()
    })
    .await
}

#[actix_rt::test]
async fn random_faults_under_purchases_and_cancels_never_lose_or_double_money_or_goods() {
    let _serial = crate::serial();
    let secs: u64 = env_or("NEMESIS_SECS", 40);
    let seed: u64 = std::env::var("NEMESIS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("nemesis: seed {seed} (NEMESIS_SEED={seed} replays it), {secs} s");
    let owner = spawn_app().await;
    let (pg, redis) = (Proxy::postgres(), Proxy::redis());
    let app = Rc::new(
        spawn_app_with(Opts {
            database_url: Some(pg.database_url(&owner.db_name)),
            redis_url: Some(redis.redis_url()),
            ..Opts::default()
        })
        .await,
    );
    let receiver = crate::receiver::Receiver::start(crate::receiver::Mode::FailEvery(7));
    crate::receiver::register(&app, &receiver.url, &["*"]).await;
    let mut fleet = Fleet {
        workers: Vec::new(),
        pg,
        redis,
    };
    for _ in 0..2 {
        fleet
            .workers
            .push(Fleet::spawn(&app, &fleet.pg, &fleet.redis));
    }
    let history = Rc::new(Mutex::new(History::default()));
    let until = Instant::now() + Duration::from_secs(secs);
    let clients: Vec<_> = (0..4)
        .map(|n| actix_rt::spawn(purchaser(app.clone(), history.clone(), until, n)))
        .chain(std::iter::once(actix_rt::spawn(meddler(
            app.clone(),
            history.clone(),
            until,
            seed,
        ))))
        .collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut faults = Vec::new();
    while Instant::now() < until {
        nemesis_step(&mut rng, &app, &mut fleet, &mut faults).await;
        actix_rt::time::sleep(Duration::from_millis(rng.random_range(500..2500))).await;
    }
    heal(&app, &mut fleet).await;
    for c in clients {
        c.await.unwrap();
    }
    // Healed: the open purchases are retried under their keys until definite.
    let open = std::mem::take(&mut history.lock().unwrap().open);
    for key in open {
        let resp = purchase_until_definite(&app, &key, Instant::now() + Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("seed {seed}: {key} never got a definite answer"));
        let id = order_of(&resp).unwrap();
        history.lock().unwrap().definite.insert(key, id);
    }
    // Quiescence: nothing owed, nothing pending.
    let deadline = Instant::now() + Duration::from_secs(180);
    let orders = loop {
        // Nothing owed first, then the orders: an attempt in flight holds
        // its outbox row until it has recorded its outcome, so the listing
        // read after it is final (read before it, an order could still be
        // mid-delivery).
        let owed = owed_count(&owner).await;
        let orders = all_orders(&app).await;
        let pending = orders
            .iter()
            .filter(|o| o["status"] == "payment_pending")
            .count();
        if pending == 0 && owed == 0 {
            break orders;
        }
        assert!(
            Instant::now() < deadline,
            "seed {seed}: not settled: {pending} payment_pending, {owed} owed; faults {faults:?}"
        );
        heal(&app, &mut fleet).await;
        actix_rt::time::sleep(Duration::from_secs(1)).await;
    };
    check(seed, &app, &history.lock().unwrap(), &orders, &faults);
    // The status refresh still moves orders on (fulfilling → shipped →
    // delivered): the timelines are read against a listing taken with the
    // workers stopped, so neither can move under the other.
    stop_workers(&mut fleet);
    check_timelines(seed, &owner, &all_orders(&app).await).await;
    for _ in 0..2 {
        fleet
            .workers
            .push(Fleet::spawn(&app, &fleet.pg, &fleet.redis));
    }
    check_webhooks(seed, &owner, &receiver).await;
    stop_workers(&mut fleet);
}

fn stop_workers(fleet: &mut Fleet) {
    for mut w in fleet.workers.drain(..) {
        harness::signal(&w, "-TERM");
        let _ = w.wait();
    }
}

/// Every order's timeline: sequences 1..n with no gap, `order.created`
/// first, and the last `order.*` event names the order's status. Read in
/// one query (tens of thousands of orders; the events API is what the API
/// tests check).
async fn check_timelines(seed: u64, owner: &TestApp, orders: &[Value]) {
    let rows: Vec<(Uuid, i32, String)> = owner
        .db(|c| {
            use diesel::prelude::*;
            use orderflow::db::schema::order_events::dsl as e;
            e::order_events
                .select((e::order_id, e::sequence, e::type_))
                .order((e::order_id, e::sequence))
                .load(c)
                .unwrap()
        })
        .await;
    let mut timelines: HashMap<Uuid, Vec<(i32, String)>> = HashMap::new();
    for (order, sequence, kind) in rows {
        timelines.entry(order).or_default().push((sequence, kind));
    }
    let mut events = 0;
    for o in orders {
        let id: Uuid = o["id"].as_str().and_then(|i| i.parse().ok()).unwrap();
        let timeline = timelines.remove(&id).unwrap_or_default();
        events += timeline.len();
        let sequences: Vec<i32> = timeline.iter().map(|(s, _)| *s).collect();
        let gapless: Vec<i32> = (1..=timeline.len() as i32).collect();
        assert_eq!(sequences, gapless, "seed {seed}: {id}'s timeline has a gap");
        assert_eq!(
            timeline.first().map(|(_, t)| t.as_str()),
            Some("order.created"),
            "seed {seed}: {id}"
        );
        let last_order_event = timeline
            .iter()
            .rev()
            .map(|(_, t)| t.as_str())
            .find(|t| t.starts_with("order.") && *t != "order.created")
            .unwrap_or("order.payment_pending");
        assert_eq!(
            last_order_event,
            format!("order.{}", o["status"].as_str().unwrap_or_default()),
            "seed {seed}: {id}'s timeline ends elsewhere than its status: {timeline:?}"
        );
    }
    assert!(
        timelines.is_empty(),
        "seed {seed}: events of orders not listed"
    );
    eprintln!(
        "nemesis: {} timelines checked, {events} events",
        orders.len()
    );
}

/// Every event reached the receiver subscribed to `*` (it fails now and
/// then, so some only on a retry).
async fn check_webhooks(seed: u64, owner: &TestApp, receiver: &crate::receiver::Receiver) {
    let all: std::collections::BTreeSet<String> = owner
        .db(|c| {
            use diesel::prelude::*;
            use orderflow::db::schema::order_events::dsl as e;
            e::order_events.select(e::id).load::<Uuid>(c).unwrap()
        })
        .await
        .into_iter()
        .map(orderflow::http::views::event_id)
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let got: std::collections::BTreeSet<String> = receiver
            .got()
            .into_iter()
            .filter(|g| g.accepted)
            .map(|g| g.event_id)
            .collect();
        let missing: Vec<&String> = all.difference(&got).collect();
        if missing.is_empty() {
            eprintln!(
                "nemesis: {} events, every one at the receiver ({} requests, {} accepted)",
                all.len(),
                receiver.started(),
                receiver.got().iter().filter(|g| g.accepted).count()
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "seed {seed}: {} of {} events never reached the receiver, e.g. {:?}",
            missing.len(),
            all.len(),
            &missing[..missing.len().min(5)]
        );
        actix_rt::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The checker: money and goods, order by order.
fn check(seed: u64, app: &TestApp, history: &History, orders: &[Value], faults: &[String]) {
    let pay = app.sims.payment.stats();
    let ship = app.sims.shipping.stats();
    let ctx = format!("seed {seed}, faults {faults:?}");
    assert!(
        history.server_errors.is_empty(),
        "{ctx}: {:?}",
        history.server_errors
    );
    let by_id: HashMap<String, &Value> = orders
        .iter()
        .map(|o| (o["id"].as_str().unwrap_or_default().to_owned(), o))
        .collect();
    for (key, id) in &history.definite {
        assert!(
            by_id.contains_key(&id.to_string()),
            "{ctx}: {key}'s order {id} is missing"
        );
    }
    let mut tally: HashMap<&str, usize> = HashMap::new();
    for o in orders {
        let id = o["id"].as_str().unwrap_or_default();
        let status = o["status"].as_str().unwrap_or_default();
        *tally.entry(status).or_default() += 1;
        let charges = pay.succeeded_by_order.get(id).copied().unwrap_or(0);
        let shipments = ship.shipments_by_reference.get(id).copied().unwrap_or(0);
        let refunds = o["payment"]["intent_id"]
            .as_str()
            .and_then(|pi| pay.refunds_by_intent.get(pi).copied())
            .unwrap_or(0);
        assert!(charges <= 1 && shipments <= 1 && refunds <= 1, "{ctx}: {o}");
        match status {
            "fulfilling" | "shipped" | "delivered" => assert!(
                charges == 1 && shipments == 1 && refunds == 0,
                "{ctx}: fulfilled but charged {charges}, shipped {shipments}, refunded {refunds}: {o}"
            ),
            "cancelled" => assert!(
                shipments == 0 && refunds == charges,
                "{ctx}: cancelled but shipped {shipments}, charged {charges}, refunded {refunds}: {o}"
            ),
            "payment_failed" => assert!(charges == 0 && shipments == 0, "{ctx}: {o}"),
            // A delivery that used up its attempts waits for ops: charged,
            // maybe shipped if the last answer never came, never refunded.
            "paid" => assert!(
                o["delivery"]["status"] == "failed"
                    && charges == 1
                    && refunds == 0
                    && (shipments == 0 || o["delivery"]["outcome_unknown"] == true),
                "{ctx}: paid and left: {o}"
            ),
            other => panic!("{ctx}: order left {other}: {o}"),
        }
    }
    eprintln!(
        "nemesis: {} orders checked ({tally:?}); {} faults: {faults:?}",
        orders.len(),
        faults.len()
    );
}
