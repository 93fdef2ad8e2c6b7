//! orderflow: an order-processing backend.
//!
//! The purchase path is sequential CRUD, so it is sync Diesel on an r2d2
//! pool, run on actix's blocking threads (`http`, `db`). Work that waits on
//! slow partners goes through apalis jobs on Redis (`jobs`). `sim` holds the
//! partner simulators; `cli` the subcommands of the one binary.

pub mod backoff;
pub mod board;
pub mod cli;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod gateway;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod orders;
pub mod partners;
pub mod priority;
pub mod serve;
pub mod sim;
pub mod staff;
pub mod telemetry;
pub mod webhooks;
pub mod worker;
