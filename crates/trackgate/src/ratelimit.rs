//! Per-key request rate limits: a token bucket for each request key.

use dashmap::DashMap;
use std::time::{Duration, Instant};

/// Buckets are dropped wholesale past this many keys; a dropped bucket starts full again.
const MAX_BUCKETS: usize = 1_000_000;

pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: DashMap<String, Bucket>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// `per_second == 0` turns limiting off.
    pub fn new(per_second: f64, burst: f64) -> Self {
        RateLimiter {
            per_second,
            burst,
            buckets: DashMap::new(),
        }
    }

    /// Take one token for `key` at `now`; when none is left, how long until one is.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        if !self.buckets.contains_key(key) && self.buckets.len() >= MAX_BUCKETS {
            self.buckets.clear();
        }
        let mut b = self.buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.per_second).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refills() {
        let rl = RateLimiter::new(2.0, 3.0);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(rl.check("ACME/k1", t0).is_ok());
        }
        let wait = rl.check("ACME/k1", t0).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(500));
        assert!(rl.check("OTHER/k1", t0).is_ok(), "keys have their own buckets");
        assert!(rl.check("ACME/k1", t0 + Duration::from_millis(500)).is_ok());
        assert!(rl.check("ACME/k1", t0 + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn zero_is_off() {
        let rl = RateLimiter::new(0.0, 1.0);
        let t0 = Instant::now();
        for _ in 0..100 {
            assert!(rl.check("k", t0).is_ok());
        }
    }
}
