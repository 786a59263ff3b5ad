//! When to renew: at two thirds of the certificate's validity, made a little earlier by
//! jitter so that nodes issued together do not renew together, and with exponential
//! backoff after failures.

use std::time::Duration;

/// Fraction of the validity that jitter may move the renewal earlier by.
const JITTER_FRACTION: f64 = 0.05;

/// Returns how long to wait from `now` until renewal of a certificate valid from
/// `not_before` to `not_after` (all Unix seconds). `jitter` in `[0, 1)` moves the point
/// up to 5% of the validity earlier. Returns zero once the point has passed.
pub fn renewal_delay(not_before: i64, not_after: i64, now: i64, jitter: f64) -> Duration {
    let validity = (not_after - not_before).max(0) as f64;
    let offset = validity * (2.0 / 3.0 - JITTER_FRACTION * jitter.clamp(0.0, 1.0));
    let renew_at = not_before as f64 + offset;
    let wait = renew_at - now as f64;
    if wait <= 0.0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(wait)
    }
}

/// Exponential backoff with jitter between renewal attempts.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `initial` and doubles up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
        }
    }

    /// Returns the next delay, scaled by `0.5 + jitter / 2` with `jitter` in `[0, 1)`, so
    /// that failed nodes spread out their retries, and doubles the base for next time.
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let base = self.next;
        // Saturating, so that a huge --max-retry-delay cannot overflow the doubling.
        self.next = self.next.saturating_mul(2).min(self.max);
        let factor = 0.5 + jitter.clamp(0.0, 1.0) / 2.0;
        // Fallible: near Duration::MAX the float product can round above it.
        Duration::try_from_secs_f64(base.as_secs_f64() * factor).unwrap_or(base)
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_at_two_thirds_without_jitter() {
        let delay = renewal_delay(1000, 1000 + 3 * 3600, 1000, 0.0);
        assert_eq!(delay, Duration::from_secs(2 * 3600));
    }

    #[test]
    fn jitter_only_moves_renewal_earlier() {
        let early = renewal_delay(0, 3000, 0, 0.999);
        assert!(early < Duration::from_secs(2000));
        assert!(early >= Duration::from_secs(1850));
    }

    #[test]
    fn renewal_due_once_point_passed() {
        assert_eq!(renewal_delay(0, 3000, 2500, 0.0), Duration::ZERO);
        assert_eq!(renewal_delay(0, 3000, 4000, 0.0), Duration::ZERO);
    }

    #[test]
    fn backoff_doubles_to_max_and_resets() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(4));
        let delays: Vec<_> = (0..4).map(|_| backoff.next_delay(1.0)).collect();
        assert_eq!(delays, [1, 2, 4, 4].map(Duration::from_secs));
        backoff.reset();
        assert_eq!(backoff.next_delay(0.0), Duration::from_millis(500));
    }

    #[test]
    fn backoff_saturates_huge_delays() {
        let mut backoff = Backoff::new(Duration::MAX / 2 + Duration::from_secs(1), Duration::MAX);
        let first = backoff.next_delay(0.0);
        assert!(first >= Duration::MAX / 4, "{first:?}");
        let second = backoff.next_delay(1.0);
        assert!(second > first, "{second:?}");
    }
}
