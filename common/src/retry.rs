//! The one retry policy type: exponential backoff with jitter, a cap on each delay and on
//! the number of attempts. Callers ask an error whether it is transient and this policy how
//! long to wait; nothing else decides retries.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Total attempts, the first included.
    pub max_attempts: u32,
    pub initial_delay: Duration,
    pub max_delay: Duration,
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            jitter: true,
        }
    }
}

/// The delays of one run of attempts, as [`RetryPolicy::delays`] makes them.
pub type Delays = backon::ExponentialBackoff;

impl RetryPolicy {
    /// The delays to wait before the 2nd, 3rd, … attempt: `max_attempts - 1` of them.
    pub fn delays(&self) -> Delays {
        let mut builder = ExponentialBuilder::default()
            .with_min_delay(self.initial_delay)
            .with_max_delay(self.max_delay)
            .with_factor(2.0)
            .with_max_times(self.max_attempts.saturating_sub(1) as usize);
        if self.jitter {
            builder = builder.with_jitter();
        }
        builder.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stop() {
        let p = RetryPolicy {
            max_attempts: 5,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
            jitter: false,
        };
        // backon computes in floating point; whole milliseconds are what matter.
        let d: Vec<u128> = p.delays().map(|d| d.as_millis()).collect();
        assert_eq!(d, [100, 200, 300, 300]);
        let once = RetryPolicy {
            max_attempts: 1,
            ..p
        };
        assert_eq!(once.delays().count(), 0);
    }

    #[test]
    fn jitter_stays_within_twice_the_delay() {
        let p = RetryPolicy {
            jitter: true,
            ..RetryPolicy::default()
        };
        for d in p.delays() {
            assert!(d <= p.max_delay * 2);
        }
    }
}
