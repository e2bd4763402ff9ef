//! A token bucket per client address for requests without valid credentials. Their refusals are
//! audited (fail closed), so without a limit one connection could write the audit collection
//! full and turn every later request into a 503. Over the limit a request gets 429: the first of
//! a run is audited, the rest are counted in a metric.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Most addresses tracked at once; beyond it, new addresses share one bucket (memory stays
/// bounded under a spoofed-source flood; a proxy in front shows as one address anyway).
const MAX_ADDRESSES: usize = 10_000;

/// What the limiter says about one anonymous request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Within the limit: handle (and audit) it.
    Allowed,
    /// Over the limit; `first` is true for the first refusal since the address was last allowed
    /// (that one is audited, the others only counted).
    Refused {
        /// Whether this starts a run of refusals.
        first: bool,
    },
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
    refusing: bool,
}

/// Per-address token buckets.
#[derive(Debug)]
pub struct AnonymousLimiter {
    /// Tokens added per second.
    rate: f64,
    /// Bucket size.
    burst: f64,
    buckets: Mutex<HashMap<Option<IpAddr>, Bucket>>,
}

impl AnonymousLimiter {
    /// `rate` requests per second with bursts of `burst`.
    pub fn new(rate: f64, burst: u32) -> Self {
        Self { rate: rate.max(0.0), burst: f64::from(burst), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes a token for `addr` at `now`.
    pub fn admit(&self, addr: IpAddr, now: Instant) -> Admission {
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut key = Some(addr);
        if !buckets.contains_key(&key) && buckets.len() >= MAX_ADDRESSES {
            // Forget addresses whose bucket has refilled: they lose nothing.
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|k, b| k.is_none() || b.tokens + rate * now.saturating_duration_since(b.at).as_secs_f64() < burst);
            if buckets.len() >= MAX_ADDRESSES {
                key = None;
            }
        }
        let b = buckets.entry(key).or_insert(Bucket { tokens: self.burst, at: now, refusing: false });
        b.tokens = (b.tokens + self.rate * now.saturating_duration_since(b.at).as_secs_f64()).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            b.refusing = false;
            Admission::Allowed
        } else {
            let first = !b.refusing;
            b.refusing = true;
            Admission::Refused { first }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_then_refusals_then_refill() {
        let l = AnonymousLimiter::new(1.0, 2);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let t = Instant::now();
        assert_eq!(l.admit(a, t), Admission::Allowed);
        assert_eq!(l.admit(a, t), Admission::Allowed);
        assert_eq!(l.admit(a, t), Admission::Refused { first: true });
        assert_eq!(l.admit(a, t), Admission::Refused { first: false });
        assert_eq!(l.admit(b, t), Admission::Allowed, "addresses have their own buckets");
        assert_eq!(l.admit(a, t + Duration::from_secs(1)), Admission::Allowed, "one token per second");
        assert_eq!(l.admit(a, t + Duration::from_secs(1)), Admission::Refused { first: true });
    }

    #[test]
    fn a_zero_rate_never_refills() {
        let l = AnonymousLimiter::new(0.0, 1);
        let a: IpAddr = [10, 0, 0, 1].into();
        let t = Instant::now();
        assert_eq!(l.admit(a, t), Admission::Allowed);
        assert_eq!(l.admit(a, t + Duration::from_secs(3600)), Admission::Refused { first: true });
    }
}
