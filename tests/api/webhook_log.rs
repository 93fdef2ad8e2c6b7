//! The webhook log and the endpoints' cursors: an event is delivered even
//! when its transaction commits after later ones (they wait for it: the
//! log is read in commit order), a receiver that takes
//! only a rare type does not hold the log back, and the log is trimmed
//! behind every cursor.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::*;
use crate::receiver::{register, Got, Mode, Receiver};

fn fulfilling(o: &Value) -> bool {
    o["status"] == "fulfilling"
}

fn accepted_types(got: &[Got]) -> BTreeSet<(String, String)> {
    got.iter()
        .filter(|g| g.accepted)
        .map(|g| {
            let body = g.json();
            (
                body["data"]["order"]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                body["type"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

async fn log_entries(app: &TestApp) -> i64 {
    app.db(|c| {
        diesel::sql_query("SELECT count(*) AS n FROM webhook_log")
            .get_result::<Count>(c)
            .unwrap()
            .n
    })
    .await
}

#[actix_rt::test]
async fn an_event_whose_transaction_commits_after_later_ones_is_still_delivered() {
    let app = spawn_app().await;
    let receiver = Receiver::start(Mode::Ok);
    register(&app, &receiver.url, &["*"]).await;
    let worker = app.start_worker(fast_worker());
    let held = order_id(&app.purchase(&visa(), None).await);
    app.wait_order(held, 15, fulfilling).await;
    // A change of `held` (its event written by the trigger) whose
    // transaction stays open while later events commit and are sent.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let (commit_tx, commit_rx) = std::sync::mpsc::channel::<()>();
    let pool = app.pool.clone();
    let holder = std::thread::spawn(move || {
        let mut c = pool.get().expect("connection");
        c.batch_execute(&format!(
            "BEGIN; UPDATE orders SET status = 'shipped' WHERE id = '{held}'"
        ))
        .unwrap();
        ready_tx.send(()).unwrap();
        commit_rx.recv().unwrap();
        c.batch_execute("COMMIT").unwrap();
    });
    ready_rx.recv().unwrap();
    let mut later: Vec<Uuid> = Vec::new();
    for _ in 0..3 {
        later.push(order_id(&app.purchase(&visa(), None).await));
    }
    for id in &later {
        app.wait_order(*id, 15, fulfilling).await;
    }
    // The later events are committed and visible now; a reader that took
    // them would pass the held entry. Delivery waits for the held
    // transaction instead (the log's horizon), then sends everything.
    actix_rt::time::sleep(Duration::from_millis(500)).await;
    commit_tx.send(()).unwrap();
    holder.join().unwrap();
    receiver
        .wait_for(15, "every event, the one committed last too", |got| {
            let have = accepted_types(got);
            have.contains(&(held.to_string(), "order.shipped".into()))
                && later
                    .iter()
                    .all(|id| have.contains(&(id.to_string(), "order.fulfilling".into())))
        })
        .await;
    worker.stop().unwrap();
}

#[actix_rt::test]
async fn the_log_is_trimmed_behind_every_cursor_even_one_that_takes_a_rare_type() {
    let app = spawn_app().await;
    let busy = Receiver::start(Mode::Ok);
    let rare = Receiver::start(Mode::Ok);
    register(&app, &busy.url, &["*"]).await;
    register(&app, &rare.url, &["order.payment_failed"]).await;
    let worker = app.start_worker(fast_worker());
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(order_id(&app.purchase(&visa(), None).await));
    }
    for id in &ids {
        app.wait_order(*id, 15, fulfilling).await;
    }
    busy.wait_for(15, "every event", |got| accepted_types(got).len() == 12)
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = log_entries(&app).await;
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} log entries stay behind the cursors"
        );
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        rare.got().is_empty(),
        "the rare receiver gets only its type"
    );
    // It still gets its type after its cursor moved on, and only that.
    let declined = app
        .purchase(
            &purchase_body(&[("SKU-1", 1)], "pm_card_chargeDeclined"),
            None,
        )
        .await;
    let id = declined.body["error"]["order"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    rare.wait_for(15, "the decline", |got| {
        accepted_types(got) == BTreeSet::from([(id.clone(), "order.payment_failed".into())])
    })
    .await;
    worker.stop().unwrap();
}

/// The delivery log's retention is answered from an index, not a scan of
/// the whole table, and only one process purges at a time: a second one
/// that finds the purge taken skips its turn.
#[actix_rt::test]
async fn the_delivery_log_purge_uses_an_index_and_runs_in_one_process_at_a_time() {
    let app = spawn_app().await;
    let plan = app
        .db(|c| {
            c.batch_execute("SET enable_seqscan = off").expect("set");
            #[derive(QueryableByName)]
            struct Line {
                #[diesel(sql_type = diesel::sql_types::Text, column_name = "QUERY PLAN")]
                line: String,
            }
            let lines = diesel::sql_query(format!(
                "EXPLAIN {}",
                orderflow::db::delivery_log::PURGE_SETTLED
            ))
            .bind::<diesel::sql_types::Double, _>(3600.0)
            .bind::<diesel::sql_types::BigInt, _>(1000)
            .load::<Line>(c)
            .expect("explain");
            c.batch_execute("RESET enable_seqscan").expect("reset");
            lines
                .into_iter()
                .map(|l| l.line)
                .collect::<Vec<_>>()
                .join("\n")
        })
        .await;
    assert!(
        plan.contains("webhook_deliveries_settled_idx"),
        "the purge does not use its index:\n{plan}"
    );
    assert!(!plan.contains("Seq Scan on webhook_deliveries"), "{plan}");

    // Two old settled rows; a purge held elsewhere makes this one skip.
    app.db(|c| {
        c.batch_execute(
            "INSERT INTO webhook_endpoints (id, url, secret, events) \
               VALUES ('00000000-0000-0000-0000-00000000000a', 'https://shop.example/h', 'whsec_x', '{*}'); \
             INSERT INTO webhook_deliveries (endpoint_id, event_id, status, created_at) \
               SELECT '00000000-0000-0000-0000-00000000000a', gen_random_uuid(), 'delivered', \
                      now() - interval '8 days' FROM generate_series(1, 2)",
        )
        .expect("seed");
    })
    .await;
    let url = format!("{}/{}", pg_base(), app.db_name);
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let mut other = PgConnection::establish(&url).expect("connect");
        other
            .transaction::<_, diesel::result::Error, _>(|c| {
                orderflow::db::delivery_log::take_purge_turn(c)?;
                held_tx.send(()).ok();
                release_rx.recv().ok();
                Ok(())
            })
            .expect("hold");
    });
    held_rx.recv().expect("held");
    let skipped = app
        .db(|c| orderflow::db::delivery_log::purge_settled(c, Duration::from_secs(3600), 1000))
        .await
        .expect("purge");
    assert_eq!(skipped, 0, "another process holds the purge: skip");
    release_tx.send(()).expect("release");
    holder.join().expect("holder");
    let purged = app
        .db(|c| orderflow::db::delivery_log::purge_settled(c, Duration::from_secs(3600), 1000))
        .await
        .expect("purge");
    assert_eq!(purged, 2);
}

/// A stalled horizon shows: a transaction left open (here by someone
/// else's session) holds every first delivery back, and `/metrics` says
/// how old it is and how far behind the webhooks are. The service's own
/// sessions cannot be that transaction: PostgreSQL ends one idle in a
/// transaction after twice the statement timeout.
#[actix_rt::test]
async fn a_stalled_horizon_shows_in_the_metrics_and_our_own_sessions_cannot_stall_it() {
    let app = spawn_app_with(Opts {
        statement_timeout_ms: 300,
        env: vec![("WEBHOOK_STALLED_AFTER_SECS", "1".into())],
        ..Opts::default()
    })
    .await;
    let receiver = Receiver::start(Mode::Ok);
    register(&app, &receiver.url, &["order.created"]).await;
    let held = app.hold_transaction_id();
    app.purchase(&visa(), None).await;
    actix_rt::time::sleep(Duration::from_millis(1500)).await;
    let text = app.metrics_text().await;
    let value = |name: &str| metric_value(&text, name).unwrap_or_else(|| panic!("{name} missing"));
    assert!(
        value("orderflow_transaction_horizon_age_seconds") >= 1.0,
        "{text}"
    );
    assert!(value("orderflow_webhook_lag_seconds") >= 1.0, "{text}");
    // The summary says the same, and calls it stalled past its limit.
    let summary = app.ops("GET", "/api/v1/dashboard/summary", None).await.body;
    let hooks = &summary["webhooks"];
    assert!(
        hooks["horizon_age_seconds"].as_f64() >= Some(1.0),
        "{summary}"
    );
    assert!(hooks["lag_seconds"].as_f64() >= Some(1.0), "{summary}");
    assert_eq!(hooks["stalled"], true, "{summary}");
    held.commit();
    let worker = app.start_worker(fast_worker());
    receiver
        .wait_for(10, "the held event", |got| !got.is_empty())
        .await;
    // Once the attempt is recorded (its cursor moved), no longer stalled.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let summary = app.ops("GET", "/api/v1/dashboard/summary", None).await.body;
        if summary["webhooks"]["stalled"] == false {
            break;
        }
        assert!(Instant::now() < deadline, "still stalled: {summary}");
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    worker.stop().unwrap();

    // One of ours, left idle in a transaction, is ended by the server.
    let pool = orderflow::db::build_pool(&app.settings, "orderflow-test-idle");
    let ended = tokio::task::spawn_blocking(move || {
        let mut conn = pool.get().expect("checkout");
        conn.batch_execute("BEGIN; SELECT pg_current_xact_id();")
            .expect("begin");
        std::thread::sleep(Duration::from_millis(1500));
        conn.batch_execute("SELECT 1").is_err()
    })
    .await
    .expect("idle session");
    assert!(ended, "an idle transaction of ours outlived its timeout");
}

/// The database moved to a cluster whose transaction ids are younger than
/// the log's (a dump and restore, a logical replica, a blue/green switch):
/// seen from the data, every stored id and cursor sorts far past the new
/// cluster's ids, which is what the shift below makes of this one. No
/// event is lost and none sent twice: a write shifts the log below itself
/// first, and the sweep does the same for old entries no write follows.
#[actix_rt::test]
async fn a_database_moved_to_a_cluster_with_younger_ids_sends_every_event_once() {
    let app = spawn_app().await;
    let receiver = Receiver::start(Mode::Ok);
    register(&app, &receiver.url, &["*"]).await;
    let worker = app.start_worker(fast_worker());
    let first = order_id(&app.purchase(&visa(), None).await);
    app.wait_order(first, 15, fulfilling).await;
    wait_all_sent(&app, &receiver, &[first]).await;
    worker.stop().unwrap();

    // Bought before the move, sent after it: their events wait in the log.
    // Bought at once, as a shop's traffic is, they shift nothing: every
    // entry still holds its own transaction's id.
    let body = visa();
    let buys = (0..8).map(|_| app.purchase(&body, None));
    let owed: Vec<Uuid> = futures_util::future::join_all(buys)
        .await
        .iter()
        .map(order_id)
        .collect();
    let shifted = app
        .db(|c| {
            count_of(
                c,
                "SELECT count(*) AS n FROM webhook_log l JOIN order_events e ON e.id = l.event_id \
                 WHERE l.xact % 4294967296 <> e.xmin::text::bigint",
            )
        })
        .await;
    assert_eq!(shifted, 0, "the log was shifted with no move");
    app.db(move_to_younger_cluster).await;
    // The next write shifts the log below its own entries.
    let after = order_id(&app.purchase(&visa(), None).await);
    let moved = app
        .db(|c| {
            count_of(
                c,
                "SELECT count(*) AS n FROM webhook_endpoints \
                 WHERE cursor_xact >= pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
            )
        })
        .await;
    assert_eq!(moved, 0, "the purchase left every cursor below the horizon");
    let worker = app.start_worker(fast_worker());
    let mut all = owed.clone();
    all.extend([first, after]);
    for &id in &all {
        app.wait_order(id, 15, fulfilling).await;
    }
    wait_all_sent(&app, &receiver, &all).await;
    worker.stop().unwrap();

    // Old entries no write follows: the sweep's guard shifts them.
    let last = order_id(&app.purchase(&visa(), None).await);
    app.db(move_to_younger_cluster).await;
    let shift = app
        .db(|c| orderflow::db::webhooks::rebase_if_moved(c).expect("rebase"))
        .await;
    assert!(shift < 0, "shifted down, by {shift}");
    let again = app
        .db(|c| orderflow::db::webhooks::rebase_if_moved(c).expect("rebase"))
        .await;
    assert_eq!(again, 0, "once shifted, the log is where it belongs");
    let worker = app.start_worker(fast_worker());
    app.wait_order(last, 15, fulfilling).await;
    all.push(last);
    wait_all_sent(&app, &receiver, &all).await;
    worker.stop().unwrap();

    let mut times: std::collections::HashMap<String, usize> = Default::default();
    for g in receiver.got().iter().filter(|g| g.accepted) {
        *times.entry(g.event_id.clone()).or_default() += 1;
    }
    assert!(
        times.values().all(|&n| n == 1),
        "an event sent twice: {times:?}"
    );
}

/// What a database restored into a cluster 10^9 ids younger looks like.
fn move_to_younger_cluster(c: &mut PgConnection) {
    c.batch_execute(
        "UPDATE webhook_log SET xact = xact + 1000000000; \
         UPDATE webhook_endpoints SET cursor_xact = cursor_xact + 1000000000;",
    )
    .expect("move");
}

fn count_of(c: &mut PgConnection, sql: &str) -> i64 {
    diesel::sql_query(sql)
        .get_result::<Count>(c)
        .expect("count")
        .n
}

/// Waits until the receiver has accepted every event of `orders`.
async fn wait_all_sent(app: &TestApp, receiver: &Receiver, orders: &[Uuid]) {
    let ids = orders.to_vec();
    let events: BTreeSet<String> = app
        .db(move |c| {
            use orderflow::db::schema::order_events::dsl as e;
            e::order_events
                .filter(e::order_id.eq_any(ids))
                .select(e::id)
                .load::<Uuid>(c)
                .expect("events")
        })
        .await
        .into_iter()
        .map(orderflow::http::views::event_id)
        .collect();
    receiver
        .wait_for(20, "every event of the orders", |got| {
            let sent: BTreeSet<&str> = got
                .iter()
                .filter(|g| g.accepted)
                .map(|g| g.event_id.as_str())
                .collect();
            events.iter().all(|e| sent.contains(e.as_str()))
        })
        .await;
}
