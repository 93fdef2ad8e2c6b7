//! Fault tests: worker processes killed or stopped mid-job, Redis stalls and
//! drops, PostgreSQL outages, a large owed backlog. They run one at a time (a process-wide lock)
//! because they start real processes and load the machine; still against the
//! real PostgreSQL and Redis, with a private database and key prefix each.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Each test runs on its own thread and runtime; holding the serialising
// std Mutex across awaits blocks only that test, which is the point.
#![allow(clippy::await_holding_lock)]

#[path = "../api/helpers.rs"]
#[allow(dead_code)]
mod helpers;
#[path = "../api/receiver.rs"]
#[allow(dead_code)]
mod receiver;

mod backlog;
mod harness;
mod moves;
mod nemesis;
mod outages;
mod payments;
mod processes;
mod soak;
mod webhooks;

/// Serialises the tests of this binary.
pub static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}
