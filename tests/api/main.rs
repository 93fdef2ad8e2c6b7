//! Integration tests: one binary, files mirror features. Every test runs the
//! real app against the real PostgreSQL and Redis (see `helpers`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod browser;
mod chains;
mod config;
mod dashboard;
mod events;
mod gateway;
mod hardening;
mod idempotency;
mod localstripe;
mod ops;
mod outages;
mod payments;
mod purchase;
mod receiver;
mod recipes;
mod senders;
mod simulators;
mod staff;
mod validation;
mod webhook_log;
mod webhooks;
mod workers;
