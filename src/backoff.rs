//! The one reconnect schedule: 0.25 s doubling to 10 s. Used wherever a
//! process waits for PostgreSQL or Redis to come (back): start-up checks,
//! migrations, the worker's Redis connection and its in-process restarts.

use std::time::Duration;

use rand::Rng;

pub const MIN: Duration = Duration::from_millis(250);
pub const MAX: Duration = Duration::from_secs(10);

/// Delays that double from [`MIN`] up to [`MAX`].
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: MIN }
    }
}

impl Backoff {
    /// The delay before the next try (and doubles the one after).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(MAX);
        d
    }

    /// [`Backoff::next_delay`] with jitter (50–100 %), so that many
    /// processes that lost the same server do not come back in step.
    pub fn next_jittered(&mut self) -> Duration {
        self.next_delay()
            .mul_f64(rand::rng().random_range(0.5..=1.0))
    }

    /// Back to the first delay (the server answered again).
    pub fn reset(&mut self) {
        self.next = MIN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_reset() {
        let mut b = Backoff::default();
        let ds: Vec<u64> = (0..8).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(ds, [250, 500, 1000, 2000, 4000, 8000, 10_000, 10_000]);
        b.reset();
        let j = b.next_jittered();
        assert!(j >= Duration::from_millis(125) && j <= MIN);
    }
}
