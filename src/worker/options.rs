//! The tuning of one worker process, from the defaults and the environment.

use std::time::Duration;

use crate::config::Settings;
use crate::jobs::sweep::SweepPolicy;
use crate::jobs::vacuum::VacuumPolicy;
use crate::jobs::RetryPolicy;

/// Tuning of one worker process.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub heartbeat: Duration,
    pub missed_heartbeats: usize,
    pub poll: Duration,
    pub deliver_concurrency: usize,
    pub payment_concurrency: usize,
    pub sweep_every: Duration,
    pub sweep: SweepPolicy,
    pub retry: RetryPolicy,
    /// What the Redis vacuum removes ([`VacuumPolicy`])...
    pub vacuum: VacuumPolicy,
    /// ...and how often it runs.
    pub vacuum_every: Duration,
    /// Scheduled status refresh period (`STATUS_REFRESH_INTERVAL_SECS`);
    /// `None` leaves only on-demand refreshes.
    pub refresh_every: Option<Duration>,
    /// Concurrent calls per partner during a status refresh, per process.
    pub partner_concurrency: usize,
    /// The refresh's call budget per partner, per process
    /// (`REFRESH_CALLS_PER_SEC`).
    pub partner_calls_per_sec: u32,
    /// Nice value of the threads that run status refreshes
    /// (`REFRESH_NICE`, see [`crate::priority`]).
    pub refresh_nice: i32,
    /// Rendered webhook bodies the process keeps for its drainers
    /// ([`crate::webhooks::bodies`]).
    pub webhook_bodies: usize,
    /// How the gateway's events are processed ([`crate::gateway::process`]).
    pub gateway_events: crate::gateway::process::Processing,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            heartbeat: Duration::from_secs(5),
            missed_heartbeats: 2,
            poll: Duration::from_millis(200),
            deliver_concurrency: 512,
            payment_concurrency: 64,
            sweep_every: Duration::from_secs(5),
            sweep: SweepPolicy::default(),
            retry: RetryPolicy::default(),
            vacuum: VacuumPolicy::default(),
            vacuum_every: Duration::from_secs(15),
            refresh_every: Some(Duration::from_secs(15)),
            partner_concurrency: 1024,
            partner_calls_per_sec: 500,
            refresh_nice: 10,
            webhook_bodies: crate::webhooks::bodies::CAPACITY,
            gateway_events: crate::gateway::process::Processing::default(),
        }
    }
}

impl WorkerOptions {
    /// The defaults with what the environment sets (`worker` and `dev`).
    pub fn from_settings(settings: &Settings) -> Self {
        let defaults = WorkerOptions::default();
        WorkerOptions {
            refresh_every: Some(settings.status_refresh_interval),
            partner_concurrency: settings.refresh_partner_concurrency,
            partner_calls_per_sec: settings.refresh_calls_per_sec,
            refresh_nice: settings.refresh_nice,
            sweep: SweepPolicy {
                grace: settings.sweep_grace,
                // A push that was lost (Redis went down with it) is pushed
                // again as late as a wake-up is.
                repush_after: settings.sweep_grace.max(Duration::from_secs(5)),
                // Never shorter than a purchase can take (two gateway calls):
                // a poll must not race the purchase's create-record-confirm.
                stale_payment: settings
                    .stale_payment
                    .max(settings.partner_timeout * 2 + Duration::from_secs(5)),
                ..defaults.sweep
            },
            retry: RetryPolicy {
                max_attempts: settings.job_max_attempts,
                cap: settings.job_retry_cap,
                // An attempt is a partner call or two: a job that holds one
                // longer was lost with its worker.
                lease: settings.partner_timeout * 2 + Duration::from_secs(10),
                settle: crate::jobs::SettleWindow {
                    attention_after: settings.payment_retry_attention,
                    give_up_after: settings.payment_retry_window,
                    cap: settings.payment_retry_cap,
                },
                action_timeout: settings.payment_action_timeout,
                ..defaults.retry
            },
            gateway_events: crate::gateway::process::Processing {
                lease: settings.partner_timeout * 2 + Duration::from_secs(10),
                ..defaults.gateway_events
            },
            ..defaults
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_sets_the_refresh_of_worker_and_dev() {
        let env = [
            ("STATUS_REFRESH_INTERVAL_SECS", "7"),
            ("REFRESH_PARTNER_CONCURRENCY", "33"),
            ("REFRESH_NICE", "4"),
        ];
        let settings = Settings::from_lookup(|k| {
            env.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
        .expect("settings");
        let opts = WorkerOptions::from_settings(&settings);
        assert_eq!(opts.refresh_every, Some(Duration::from_secs(7)));
        assert_eq!(opts.partner_concurrency, 33);
        assert_eq!(opts.refresh_nice, 4);
    }
}
