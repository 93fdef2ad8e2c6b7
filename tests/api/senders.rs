//! Webhook senders that must not wedge, go silent or send twice: a body
//! evicted from the cache before it is sent, a recorder that cannot write
//! for a while, a stale drainer past its lease, SIGTERM under steady
//! traffic.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use orderflow::db::webhooks::{self as store, AttemptRecord, DeliveryState, Pos, Source};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::*;
use crate::receiver::{register, Got, Mode, Receiver};

/// Every event in the database, by its public id (`evt_…`).
async fn all_events(app: &TestApp) -> BTreeSet<String> {
    app.db(|c| {
        diesel::sql_query("SELECT id FROM order_events")
            .load::<IdRow>(c)
            .expect("events")
    })
    .await
    .into_iter()
    .map(|r| orderflow::http::views::event_id(r.id))
    .collect()
}

#[derive(QueryableByName)]
struct IdRow {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    id: Uuid,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

async fn count(app: &TestApp, sql: &'static str) -> i64 {
    app.db(move |c| diesel::sql_query(sql).get_result::<Count>(c).expect(sql).n)
        .await
}

/// How many times each event was accepted by the receiver.
fn accepted_times(got: &[Got]) -> BTreeMap<String, usize> {
    let mut times = BTreeMap::new();
    for g in got.iter().filter(|g| g.accepted) {
        *times.entry(g.event_id.clone()).or_insert(0) += 1;
    }
    times
}

/// Waits until the receiver has accepted every event in the database and
/// each has its delivered row.
async fn wait_all_delivered(app: &TestApp, receiver: &Receiver, secs: u64) -> BTreeSet<String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let expected = all_events(app).await;
        let got: BTreeSet<String> = accepted_times(&receiver.got()).into_keys().collect();
        let rows = count(
            app,
            "SELECT count(DISTINCT event_id) AS n FROM webhook_deliveries WHERE status = 'delivered'",
        )
        .await;
        if !expected.is_empty() && expected.is_subset(&got) && rows as usize == expected.len() {
            return expected;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} events accepted, {rows} recorded delivered",
            expected.intersection(&got).count(),
            expected.len()
        );
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
}

fn assert_each_sent_once(receiver: &Receiver) {
    let twice: Vec<(String, usize)> = accepted_times(&receiver.got())
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    assert!(twice.is_empty(), "sent more than once: {twice:?}");
}

#[actix_rt::test]
async fn an_event_whose_body_is_evicted_before_it_is_sent_is_still_sent() {
    let app = spawn_app().await;
    let receiver = Receiver::start(Mode::Ok);
    register(&app, &receiver.url, &["*"]).await;
    // A cache of one body: every look that renders more evicts all but the
    // last before they are sent.
    let worker = app.start_worker(orderflow::worker::WorkerOptions {
        webhook_bodies: 1,
        ..fast_worker()
    });
    for _ in 0..6 {
        app.purchase(&visa(), None).await;
    }
    wait_all_delivered(&app, &receiver, 30).await;
    assert_each_sent_once(&receiver);
    worker.stop().unwrap();
}

#[actix_rt::test]
async fn a_recorder_that_cannot_write_for_a_while_records_later_and_sends_nothing_twice() {
    let app = spawn_app().await;
    let receiver = Receiver::start(Mode::Ok);
    register(&app, &receiver.url, &["*"]).await;
    let worker = app.start_worker(fast_worker());
    app.purchase(&visa(), None).await;
    wait_all_delivered(&app, &receiver, 20).await;
    // Every write of a first attempt fails while the check stands; the
    // drainer's looks (reads, and the lease's renewal) still work.
    app.db(|c| {
        c.batch_execute(
            "ALTER TABLE webhook_deliveries ADD CONSTRAINT test_no_writes CHECK (false) NOT VALID",
        )
        .expect("block writes")
    })
    .await;
    let blocked_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < blocked_until {
        app.purchase(&visa(), None).await;
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    app.db(|c| {
        c.batch_execute("ALTER TABLE webhook_deliveries DROP CONSTRAINT test_no_writes")
            .expect("unblock writes")
    })
    .await;
    for _ in 0..5 {
        app.purchase(&visa(), None).await;
    }
    wait_all_delivered(&app, &receiver, 60).await;
    assert_each_sent_once(&receiver);
    let rows = count(&app, "SELECT count(*) AS n FROM webhook_deliveries").await;
    assert_eq!(
        rows as usize,
        all_events(&app).await.len(),
        "one row per event"
    );
    worker.stop().unwrap();
}

/// A first attempt at `event` by whoever holds the lease as `task`.
fn first_attempt(event: Uuid) -> AttemptRecord {
    AttemptRecord {
        source: Source::Log(Pos {
            xact: 1,
            position: 1,
        }),
        event_id: event,
        attempt: 1,
        state: DeliveryState::Delivered,
        retry_in: Duration::ZERO,
        response_status: Some(200),
        error: None,
        duration_ms: 5,
        attempted_at: chrono::Utc::now(),
    }
}

#[actix_rt::test]
async fn a_drainer_whose_lease_passed_to_another_records_nothing() {
    let app = spawn_app().await;
    let (id, _) = register(&app, "https://example.com/hooks", &["*"]).await;
    let endpoint = orderflow::webhooks::parse_endpoint_id(&id).unwrap();
    let event = Uuid::new_v4();
    let (stale, live) = app
        .db(move |c| {
            let lease = Duration::from_millis(50);
            assert!(store::take_drain(c, endpoint, "stale", lease)
                .unwrap()
                .is_some());
            std::thread::sleep(Duration::from_millis(120));
            assert!(store::take_drain(c, endpoint, "live", lease)
                .unwrap()
                .is_some());
            let stale = store::record(c, endpoint, "stale", &[first_attempt(event)], None).unwrap();
            let live = store::record(c, endpoint, "live", &[first_attempt(event)], None).unwrap();
            (stale, live)
        })
        .await;
    assert!(!stale, "the stale drainer is told its lease is gone");
    assert!(live);
    let rows = count(&app, "SELECT count(*) AS n FROM webhook_deliveries").await;
    assert_eq!(rows, 1, "one row for the event, the live drainer's");
}

#[actix_rt::test]
async fn sigterm_under_steady_traffic_stops_the_worker_and_gives_the_lease_back() {
    let app = spawn_app().await;
    let receiver = Receiver::start(Mode::Ok);
    register(&app, &receiver.url, &["*"]).await;
    let worker = app.start_worker(fast_worker());
    for _ in 0..3 {
        app.purchase(&visa(), None).await;
    }
    // Purchases keep coming while the worker stops: its drainer always
    // finds more to send.
    let stopping = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        let asked = Instant::now();
        let stopped = worker.stop();
        (asked.elapsed(), stopped)
    });
    let traffic_until = Instant::now() + Duration::from_secs(15);
    while !stopping.is_finished() && Instant::now() < traffic_until {
        app.purchase(&visa(), None).await;
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        stopping.is_finished(),
        "the worker did not stop in 15 s of steady traffic"
    );
    let (took, stopped) = stopping.join().unwrap();
    stopped.unwrap();
    assert!(took < Duration::from_secs(10), "stopping took {took:?}");
    let held = count(
        &app,
        "SELECT count(*) AS n FROM webhook_endpoints WHERE drain_task IS NOT NULL",
    )
    .await;
    assert_eq!(held, 0, "the drain lease was given back");
    // The next worker goes on where it stopped: every event, once.
    let next = app.start_worker(fast_worker());
    wait_all_delivered(&app, &receiver, 30).await;
    assert_each_sent_once(&receiver);
    next.stop().unwrap();
}

/// A literal private address that got in while private targets were
/// allowed (or straight into the table) is not POSTed to by a worker that
/// forbids them: a resolver never sees a literal IP, so the client checks
/// it before each send, and the attempt is recorded as failed.
#[actix_rt::test]
async fn a_worker_that_forbids_private_targets_never_posts_to_a_literal_one() {
    let app = spawn_app().await;
    let receiver = Receiver::start(Mode::Ok);
    assert!(receiver.url.starts_with("http://127.0.0.1:"));
    register(&app, &receiver.url, &["*"]).await;
    let mut strict = app.settings.clone();
    strict.webhooks.allow_private_targets = false;
    let worker = app.start_worker_with(strict, fast_worker());
    let id = order_id(&app.purchase(&visa(), None).await);
    let deadline = Instant::now() + Duration::from_secs(20);
    while count(
        &app,
        "SELECT count(*) AS n FROM webhook_deliveries WHERE status <> 'delivered'",
    )
    .await
        == 0
    {
        assert!(Instant::now() < deadline, "no failed attempt recorded");
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    let delivered = count(
        &app,
        "SELECT count(*) AS n FROM webhook_deliveries WHERE status = 'delivered'",
    )
    .await;
    worker.stop().unwrap();
    assert_eq!(
        receiver.started(),
        0,
        "order {id}: a request reached 127.0.0.1"
    );
    assert_eq!(delivered, 0);
}

/// Disabling pauses an endpoint: the log keeps what it subscribes to while
/// it is off (for the retention), the trim does not take it, and enabled
/// again it gets every event it missed, in order, once. Entries older than
/// the retention are trimmed even behind a paused endpoint.
#[actix_rt::test]
async fn disabling_pauses_and_enabling_delivers_the_backlog_within_retention() {
    let app = spawn_app().await;
    let receiver = Receiver::start(Mode::Ok);
    let (endpoint, _) = register(&app, &receiver.url, &["order.created"]).await;
    let path = format!("/api/v1/webhook-endpoints/{endpoint}");
    let worker = app.start_worker(fast_worker());
    let before = order_id(&app.purchase(&visa(), None).await);
    receiver
        .wait_for(10, "the first order's event", |got| got.len() == 1)
        .await;
    let off = app
        .ops("PATCH", &path, Some(&json!({"enabled": false})))
        .await;
    assert_eq!(off.status, 200, "{}", off.body);
    // An old entry: past the retention, it may go even while paused.
    let stale = order_id(&app.purchase(&visa(), None).await);
    app.db(move |c| {
        diesel::sql_query(
            "UPDATE webhook_log l SET created_at = now() - interval '8 days' \
             FROM order_events e WHERE e.id = l.event_id AND e.order_id = $1",
        )
        .bind::<diesel::sql_types::Uuid, _>(stale)
        .execute(c)
        .expect("age the entry")
    })
    .await;
    let mut missed = Vec::new();
    for _ in 0..5 {
        missed.push(order_id(&app.purchase(&visa(), None).await));
    }
    let last = missed[missed.len() - 1];
    // The other processes' trim and idle-cursor passes run as they would.
    let (kept, stale_kept) = app
        .db(move |c| {
            store::advance_idle_cursors(c).expect("advance");
            store::trim_log(c, 10_000).expect("trim");
            let mut created = |order: Uuid| {
                diesel::sql_query(
                    "SELECT count(*) AS n FROM webhook_log l JOIN order_events e \
                     ON e.id = l.event_id WHERE e.order_id = $1 AND l.type = 'order.created'",
                )
                .bind::<diesel::sql_types::Uuid, _>(order)
                .get_result::<Count>(c)
                .expect("count")
                .n
            };
            (created(last), created(stale))
        })
        .await;
    assert_eq!(kept, 1, "the trim keeps what a paused endpoint missed");
    assert_eq!(stale_kept, 0, "an entry past the retention is trimmed");
    actix_rt::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.got().len(), 1, "nothing while disabled");

    let on = app
        .ops("PATCH", &path, Some(&json!({"enabled": true})))
        .await;
    assert_eq!(on.status, 200, "{}", on.body);
    receiver
        .wait_for(15, "the missed events", |got| got.len() == 1 + missed.len())
        .await;
    actix_rt::time::sleep(Duration::from_millis(500)).await;
    worker.stop().unwrap();
    let orders: Vec<String> = receiver
        .got()
        .iter()
        .map(|g| g.json()["order_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    let mut expected = vec![before.to_string()];
    expected.extend(missed.iter().map(Uuid::to_string));
    assert_eq!(orders, expected, "every missed event, in order, once");
}

/// Twenty endpoints on one host that hangs, beside a healthy one: the
/// hanging host never holds more than `WEBHOOK_HOST_CONNECTIONS`
/// connections, each of its endpoints opens its circuit after a few
/// failures (its drainer gives its slot back and no wake-up takes it until
/// the probe), and the healthy endpoint gets every event meanwhile. (How
/// fast its first attempts stay beside them is measured in bench/webhooks,
/// `BLACKHOLES=20`.)
#[actix_rt::test]
async fn twenty_endpoints_on_a_hanging_host_hold_few_connections_and_open_their_circuits() {
    let app = spawn_app_with(Opts {
        env: vec![
            ("WEBHOOK_HOST_CONNECTIONS", "4".into()),
            ("PARTNER_TIMEOUT_MS", "1000".into()),
        ],
        ..Opts::default()
    })
    .await;
    let hole = crate::receiver::BlackHole::start();
    let mut dead = Vec::new();
    for i in 0..20 {
        let (id, _) = register(&app, &format!("{}/hooks/{i}", hole.url), &["*"]).await;
        dead.push(orderflow::webhooks::parse_endpoint_id(&id).unwrap());
    }
    let receiver = Receiver::start(Mode::Ok);
    register(&app, &receiver.url, &["*"]).await;
    let worker = app.start_worker(fast_worker());
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        app.purchase(&visa(), None).await;
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    }
    wait_all_delivered(&app, &receiver, 30).await;
    assert!(hole.accepted() > 0, "the hanging host was tried");
    assert!(
        hole.most_at_once() <= 4,
        "the hanging host held {} connections at once",
        hole.most_at_once()
    );
    let first_dead = dead[0];
    let opened = app
        .db(move |c| {
            use orderflow::db::schema::webhook_endpoints::dsl as w;
            w::webhook_endpoints
                .filter(w::id.eq_any(dead))
                .filter(w::circuit_until.is_not_null())
                .count()
                .get_result::<i64>(c)
                .expect("circuits")
        })
        .await;
    assert_eq!(opened, 20, "every hanging endpoint opened its circuit");
    worker.stop().unwrap();

    // An open circuit shows in the API, and a resend (ops asking for a
    // send now) closes it.
    let probe = first_dead;
    app.db(move |c| {
        diesel::sql_query(
            "UPDATE webhook_endpoints SET circuit_until = now() + interval '1 hour' WHERE id = $1",
        )
        .bind::<diesel::sql_types::Uuid, _>(probe)
        .execute(c)
        .expect("open");
    })
    .await;
    let path = format!(
        "/api/v1/webhook-endpoints/{}",
        orderflow::webhooks::endpoint_id(probe)
    );
    let circuit = || async {
        let list = app.ops("GET", "/api/v1/webhook-endpoints", None).await.body;
        let id = orderflow::webhooks::endpoint_id(probe);
        list["endpoints"]
            .as_array()
            .and_then(|all| all.iter().find(|e| e["id"] == id.as_str()))
            .map(|e| e["health"]["circuit_open_until"].clone())
            .expect("the endpoint")
    };
    let open = circuit().await;
    assert!(!open.is_null(), "{open}");
    let event = all_events(&app).await.into_iter().next().expect("an event");
    let resend = app
        .ops("POST", &format!("{path}/events/{event}/resend"), None)
        .await;
    assert!(
        resend.status.is_success(),
        "{} {}",
        resend.status,
        resend.body
    );
    let closed = circuit().await;
    assert!(closed.is_null(), "{closed}");
}
