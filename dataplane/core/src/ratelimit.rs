//! A token bucket driven by the caller's clock.

/// Allows `burst` events at once and `per_second` on average; a rate of 0 allows none.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    per_second: u64,
    /// Capacity and fill level in nanotokens (tokens times 10^9), so refills are exact
    /// integer arithmetic for any elapsed nanoseconds.
    capacity: u64,
    level: u64,
    last_ns: u64,
}

const NANOS_PER_SECOND: u64 = 1_000_000_000;

impl TokenBucket {
    pub fn new(per_second: u32, burst: u32) -> Self {
        let capacity = u64::from(burst) * NANOS_PER_SECOND;
        TokenBucket {
            per_second: u64::from(per_second),
            capacity,
            level: capacity,
            last_ns: 0,
        }
    }

    /// Takes one token if available at `now_ns`.
    #[inline]
    pub fn try_take(&mut self, now_ns: u64) -> bool {
        if self.per_second == 0 {
            return false;
        }
        let elapsed = now_ns.saturating_sub(self.last_ns);
        self.last_ns = self.last_ns.max(now_ns);
        let refill = elapsed.saturating_mul(self.per_second);
        self.level = self.level.saturating_add(refill).min(self.capacity);
        if self.level >= NANOS_PER_SECOND {
            self.level -= NANOS_PER_SECOND;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_rate() {
        let mut bucket = TokenBucket::new(10, 3);
        assert!(bucket.try_take(0));
        assert!(bucket.try_take(0));
        assert!(bucket.try_take(0));
        assert!(!bucket.try_take(0));
        // 10 per second: one token every 100 ms.
        assert!(!bucket.try_take(99_999_999));
        assert!(bucket.try_take(100_000_000));
        assert!(!bucket.try_take(100_000_000));
    }

    #[test]
    fn bucket_caps_at_burst() {
        let mut bucket = TokenBucket::new(1000, 2);
        let later = 3600 * NANOS_PER_SECOND;
        assert!(bucket.try_take(later));
        assert!(bucket.try_take(later));
        assert!(!bucket.try_take(later));
    }

    #[test]
    fn bucket_zero_rate_denies() {
        let mut bucket = TokenBucket::new(0, 5);
        assert!(!bucket.try_take(0));
        assert!(!bucket.try_take(u64::MAX));
    }

    #[test]
    fn bucket_ignores_clock_going_back() {
        let mut bucket = TokenBucket::new(1, 1);
        assert!(bucket.try_take(5 * NANOS_PER_SECOND));
        assert!(!bucket.try_take(NANOS_PER_SECOND));
        assert!(bucket.try_take(6 * NANOS_PER_SECOND));
    }
}
