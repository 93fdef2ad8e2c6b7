//! Benchmark helper (used by `bench/deliveries`): pushes a Deliver job for
//! every order that owes a delivery, paced so the queue's scheduled set stays
//! under 4,000 entries (apalis-redis 1.0 workers die at 8,000).
//!
//! Environment: the usual `DATABASE_URL`, `REDIS_URL`, `REDIS_PREFIX`.

use std::time::Duration;

use diesel::prelude::*;
use orderflow::config::Settings;
use orderflow::db::schema::outbox::dsl as w;
use orderflow::jobs::{JobKind, JobQueue};
use orderflow::orders::Deliver;
use redis::AsyncCommands;
use secrecy::ExposeSecret;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let mut conn = PgConnection::establish(settings.database_url.expose_secret())?;
    let ids: Vec<uuid::Uuid> = w::outbox
        .filter(w::kind.eq("deliver"))
        .select(w::order_id)
        .load(&mut conn)?;
    let queue = JobQueue::new(&settings)?;
    let scheduled = format!("{}:scheduled", queue.queue_name::<Deliver>());
    let mut redis = queue.connection().await?;
    for chunk in ids.chunks(500) {
        loop {
            let n: usize = redis.zcard(&scheduled).await?;
            if n < 3500 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for id in chunk {
            let job = Deliver { order_id: *id };
            let task = job.task_id();
            queue.push_with(job, task, Duration::ZERO).await?;
        }
    }
    println!("enqueued {}", ids.len());
    Ok(())
}
