//! Per-source limit of failed redemptions, so that tokens cannot be guessed at speed.
//!
//! Each source gets a fixed window: after `max_failures` failed redemptions within
//! `window`, its further redemptions are rejected until the window ends. IPv6 sources are
//! grouped by /64, because one host usually controls a whole /64. Time is passed in, so
//! tests need no sleeping.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::policy::canonical_ip;

/// Number of sources tracked before expired windows are pruned.
const PRUNE_THRESHOLD: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

/// Failed-redemption counters by source.
#[derive(Debug)]
pub struct FailureLimiter {
    max_failures: u32,
    window: Duration,
    sources: HashMap<IpAddr, Window>,
}

impl FailureLimiter {
    /// Allows `max_failures` failed redemptions per source in each `window`.
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Self {
            max_failures,
            window,
            sources: HashMap::new(),
        }
    }

    /// Returns `Err(retry_after)` while `source` has used up its failures in the current
    /// window.
    pub fn check(&self, source: IpAddr, now: Instant) -> Result<(), Duration> {
        match self.sources.get(&source_key(source)) {
            Some(w) if w.failures >= self.max_failures && now < w.started + self.window => {
                Err(w.started + self.window - now)
            }
            _ => Ok(()),
        }
    }

    /// Counts one failed redemption from `source`.
    pub fn record_failure(&mut self, source: IpAddr, now: Instant) {
        if self.sources.len() >= PRUNE_THRESHOLD {
            let window = self.window;
            self.sources.retain(|_, w| now < w.started + window);
        }

        let entry = self.sources.entry(source_key(source)).or_insert(Window {
            started: now,
            failures: 0,
        });
        if now >= entry.started + self.window {
            *entry = Window {
                started: now,
                failures: 0,
            };
        }
        entry.failures = entry.failures.saturating_add(1);
    }
}

fn source_key(source: IpAddr) -> IpAddr {
    match canonical_ip(source) {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(prefix.into())
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_max_failures_until_window_ends() {
        let mut limiter = FailureLimiter::new(3, Duration::from_secs(60));
        let source: IpAddr = "192.0.2.7".parse().unwrap();
        let start = Instant::now();

        for _ in 0..3 {
            assert!(limiter.check(source, start).is_ok());
            limiter.record_failure(source, start);
        }
        let retry_after = limiter
            .check(source, start + Duration::from_secs(10))
            .unwrap_err();
        assert_eq!(retry_after, Duration::from_secs(50));
        assert!(limiter
            .check(source, start + Duration::from_secs(60))
            .is_ok());
    }

    #[test]
    fn sources_counted_separately() {
        let mut limiter = FailureLimiter::new(1, Duration::from_secs(60));
        let now = Instant::now();
        limiter.record_failure("192.0.2.1".parse().unwrap(), now);
        assert!(limiter.check("192.0.2.1".parse().unwrap(), now).is_err());
        assert!(limiter.check("192.0.2.2".parse().unwrap(), now).is_ok());
    }

    #[test]
    fn ipv6_grouped_by_slash_64() {
        let mut limiter = FailureLimiter::new(1, Duration::from_secs(60));
        let now = Instant::now();
        limiter.record_failure("2001:db8::1".parse().unwrap(), now);
        assert!(limiter
            .check("2001:db8::ffff".parse().unwrap(), now)
            .is_err());
        assert!(limiter
            .check("2001:db8:0:1::1".parse().unwrap(), now)
            .is_ok());
    }
}
