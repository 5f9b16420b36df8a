//! Failed authentications, throttled per client address (HTTPS) or per login name (the embedded
//! MQTT broker, which does not tell its login hook the client's address).
//!
//! Each address has a bucket of `security.auth_failures_per_minute` failures that refills
//! steadily. While its bucket is empty, every further failure from it is answered only after
//! `security.auth_failure_delay_ms`: guessing slows to what the per-address connection cap allows
//! in that time. Successes are never delayed or refused, so a device whose own signatures are valid
//! keeps working even behind the same address (a carrier's NAT) as a client that fails. An episode
//! is logged once when an address goes over and once when it has been quiet for a minute.

use crate::config::AuthThrottle;
use crate::metrics::Metrics;
use dashmap::DashMap;
use std::fmt::Display;
use std::hash::Hash;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Addresses tracked at most; past it the table is emptied (every address starts with a full
/// bucket again), so an attacker with many addresses cannot grow memory.
const MAX_ADDRESSES: usize = 100_000;

struct Bucket {
    tokens: f64,
    at: Instant,
    /// Failures answered late in the running episode; `None` outside an episode.
    throttled: Option<u64>,
}

pub struct FailureThrottle<K> {
    settings: AuthThrottle,
    buckets: DashMap<K, Bucket>,
    metrics: Metrics,
}

impl<K: Hash + Eq + Display> FailureThrottle<K> {
    pub fn new(settings: AuthThrottle, metrics: Metrics) -> Self {
        FailureThrottle {
            settings,
            buckets: DashMap::new(),
            metrics,
        }
    }

    fn per_second(&self) -> f64 {
        f64::from(self.settings.per_minute) / 60.0
    }

    /// An authentication from `who` failed over `transport`: how long to wait before answering.
    pub fn failed(&self, who: K, transport: &'static str) -> Duration {
        self.failed_at(who, transport, Instant::now())
    }

    fn failed_at(&self, ip: K, transport: &'static str, now: Instant) -> Duration {
        self.metrics.auth_failures.with_label_values(&[transport]).inc();
        if !self.buckets.contains_key(&ip) && self.buckets.len() >= MAX_ADDRESSES {
            self.buckets.clear();
        }
        let burst = f64::from(self.settings.per_minute);
        let mut b = self.buckets.entry(ip).or_insert(Bucket {
            tokens: burst,
            at: now,
            throttled: None,
        });
        b.tokens = (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * self.per_second()).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Duration::ZERO;
        }
        self.metrics.auth_throttled.with_label_values(&[transport]).inc();
        match &mut b.throttled {
            Some(n) => *n += 1,
            None => {
                tracing::warn!(client = %b.key(), transport, per_minute = self.settings.per_minute, "authentication failures over the limit; answering them late");
                b.throttled = Some(1);
            }
        }
        self.settings.delay
    }

    /// End the episodes of addresses that have been quiet long enough to refill their bucket, and
    /// forget them.
    fn sweep(&self, now: Instant) {
        let burst = f64::from(self.settings.per_minute);
        let per_second = self.per_second();
        self.buckets.retain(|ip, b| {
            let refilled = b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_second >= burst;
            if refilled && let Some(n) = b.throttled {
                tracing::info!(client = %ip, throttled = n, "authentication failure episode over");
            }
            !refilled
        });
    }

    /// Sweep every `every` until `stop`.
    pub async fn run_sweeper(&self, every: Duration, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => self.sweep(Instant::now()),
                _ = stop.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::IpAddr;

    fn throttle(per_minute: u32) -> FailureThrottle<IpAddr> {
        FailureThrottle::new(
            AuthThrottle {
                per_minute,
                delay: Duration::from_secs(1),
            },
            Metrics::new(),
        )
    }

    #[test]
    fn failures_past_the_budget_are_delayed_per_address_and_refill() {
        let t = throttle(60);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..60 {
            assert_eq!(t.failed_at(a, "https", t0), Duration::ZERO);
        }
        assert_eq!(t.failed_at(a, "https", t0), Duration::from_secs(1));
        assert_eq!(
            t.failed_at(b, "https", t0),
            Duration::ZERO,
            "another address has its own budget"
        );
        assert_eq!(
            t.failed_at(a, "https", t0 + Duration::from_secs(1)),
            Duration::ZERO,
            "one per second refills"
        );
        assert_eq!(t.metrics.auth_failures.with_label_values(&["https"]).get(), 63);
        assert_eq!(t.metrics.auth_throttled.with_label_values(&["https"]).get(), 1);
    }

    #[test]
    fn quiet_addresses_are_forgotten() {
        let t = throttle(60);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..61 {
            t.failed_at(a, "mqtt", t0);
        }
        t.sweep(t0 + Duration::from_secs(30));
        assert_eq!(t.buckets.len(), 1, "still refilling");
        t.sweep(t0 + Duration::from_secs(61));
        assert!(t.buckets.is_empty());
    }
}
