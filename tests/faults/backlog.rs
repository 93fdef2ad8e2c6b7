//! 20,000 outbox deliveries (as after a long Redis outage) all complete, with
//! no worker dying: the sweeper paces its pushes below apalis-redis 1.0's
//! fatal 8,000 due entries.

use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use redis::Commands;

use crate::helpers::*;

#[actix_rt::test]
async fn twenty_thousand_owed_deliveries_all_complete_without_a_worker_dying() {
    let _serial = crate::serial();
    const N: i64 = 20_000;
    let app = spawn_app().await;
    app.db(|c| {
        c.batch_execute(&format!(
            "INSERT INTO orders (id, status, customer_email, customer_name, currency, total_cents, shipping_address, \
               payment_method, payment_intent_id, payment_status, delivery_status) \
             SELECT gen_random_uuid(), 'paid', 'b@example.com', 'Backlog', 'usd', 1299, \
               '{{\"line1\": \"1 Main St\", \"city\": \"London\", \"postal_code\": \"N1\", \"country\": \"GB\"}}', \
               'pm_card_visa', 'pi_backlog', 'succeeded', 'queued' FROM generate_series(1, {N}); \
             INSERT INTO order_items SELECT id, 0, 'SKU-1', 'Analytical Engine T-shirt', 1, 1299, 1299 FROM orders; \
             INSERT INTO outbox (kind, order_id, created_at) SELECT 'deliver', id, now() - interval '1 hour' FROM orders;"
        ))
        .unwrap();
    })
    .await;

    let mut opts = fast_worker();
    opts.sweep.grace = Duration::ZERO;
    opts.sweep.repush_after = Duration::from_secs(120);
    opts.sweep.batch = 1000;
    let worker = app.start_worker(opts);
    let scheduled_key = format!("{}.deliver:scheduled", app.redis_prefix);
    let mut redis = app.redis();
    let started = Instant::now();
    let mut max_scheduled = 0usize;
    loop {
        let left: i64 = app
            .db(|c| {
                use diesel::prelude::*;
                use orderflow::db::schema::outbox::dsl as w;
                w::outbox.count().get_result(c).unwrap()
            })
            .await;
        max_scheduled = max_scheduled.max(redis.zcard(&scheduled_key).unwrap_or(0));
        if left == 0 {
            break;
        }
        assert!(
            !worker.is_finished(),
            "the worker died with {left} deliveries left"
        );
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "{left} deliveries left after 180 s"
        );
        actix_rt::time::sleep(Duration::from_millis(250)).await;
    }
    let took = started.elapsed();
    assert!(!worker.is_finished());
    worker.stop().unwrap();

    let fulfilling: i64 = app
        .db(|c| {
            use diesel::prelude::*;
            use orderflow::db::schema::orders::dsl as o;
            o::orders
                .filter(o::status.eq("fulfilling"))
                .count()
                .get_result(c)
                .unwrap()
        })
        .await;
    assert_eq!(fulfilling, N);
    app.assert_all_shipped_once(N as usize);
    assert!(
        max_scheduled < 8000,
        "scheduled set reached {max_scheduled}"
    );
    eprintln!("20,000 outbox deliveries drained in {took:?}; max scheduled {max_scheduled}");
}

#[actix_rt::test]
async fn purchases_while_no_worker_runs_then_two_workers_ship_each_once_and_none_dies() {
    use futures_util::StreamExt;
    let _serial = crate::serial();
    let n: usize = env_or("BACKLOG_PURCHASES", 8_500);
    let app = spawn_app().await;
    let scheduled_key = format!("{}.deliver:scheduled", app.redis_prefix);
    let mut redis = app.redis();
    // The workers are down for a deploy: purchases keep coming.
    let started = Instant::now();
    let statuses: Vec<u16> = futures_util::stream::iter(0..n)
        .map(|_| async { app.purchase(&visa(), None).await.status.as_u16() })
        .buffer_unordered(32)
        .collect()
        .await;
    let bought_in = started.elapsed();
    assert!(statuses.iter().all(|s| *s == 201), "every purchase is paid");
    let queued: usize = redis.zcard(&scheduled_key).unwrap();
    // The bound is soft by the pushes in flight when it is reached (one per
    // concurrent request); the hard limit is apalis' 8,000.
    assert!(
        queued <= orderflow::jobs::MAX_SCHEDULED + 64,
        "producers stop at the bound: {queued}"
    );

    let mut opts = fast_worker();
    opts.sweep.grace = Duration::ZERO;
    let workers = [app.start_worker(opts.clone()), app.start_worker(opts)];
    let drain = Instant::now();
    let mut max_scheduled = queued;
    loop {
        let owed: i64 = app
            .db(|c| {
                use diesel::prelude::*;
                use orderflow::db::schema::outbox::dsl as w;
                w::outbox.count().get_result(c).unwrap()
            })
            .await;
        max_scheduled = max_scheduled.max(redis.zcard(&scheduled_key).unwrap_or(0));
        if owed == 0 {
            break;
        }
        assert!(
            workers.iter().all(|w| !w.is_finished()),
            "a worker died with {owed} deliveries owed"
        );
        assert!(
            drain.elapsed() < Duration::from_secs(300),
            "{owed} deliveries owed after 300 s"
        );
        actix_rt::time::sleep(Duration::from_millis(250)).await;
    }
    let drained_in = drain.elapsed();
    for w in workers {
        assert!(!w.is_finished());
        w.stop().unwrap();
    }
    app.assert_all_shipped_once(n);
    assert!(
        max_scheduled < 8000,
        "scheduled set reached {max_scheduled}"
    );
    eprintln!(
        "backlog: {n} purchases in {bought_in:?} with no worker ({queued} wake-ups queued, the rest owed); \
         two workers drained it in {drained_in:?}; max scheduled {max_scheduled}"
    );
}
