//! Outlier detection (DestinationRule `outlierDetection`), as Envoy does it for Istio:
//! consecutive 5xx and consecutive gateway errors (502/503/504, connect failures) per
//! endpoint; the nth error ejects the endpoint for `base_ejection_time × times ejected`,
//! unless `max_ejection_percent` of the cluster is already out; it returns when the time is
//! up. When fewer than `min_health_percent` of the hosts are available, the load balancer
//! ignores ejections (Envoy's panic threshold; `lb::in_panic`). State is atomics only:
//! recording a result never takes a lock.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use trellis_model::config::OutlierDetection;

/// Envoy's cap on one ejection (max_ejection_time default).
const MAX_EJECTION: Duration = Duration::from_secs(300);

/// Milliseconds since the first call (monotonic), so deadlines fit in an atomic.
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// What one attempt against an endpoint came to, for outlier detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A response; its status.
    Status(u16),
    /// Connect failure, reset or timeout before a response: a gateway error.
    LocalFailure,
}

#[derive(Debug, Default)]
pub struct OutlierState {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    /// 0 = not ejected; otherwise `now_ms()` at which the endpoint returns.
    ejected_until: AtomicU64,
    times_ejected: AtomicU32,
    last_decay: AtomicU64,
}

impl OutlierState {
    pub fn is_ejected_at(&self, now: u64) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && now < until
    }

    pub fn is_ejected(&self) -> bool {
        self.is_ejected_at(now_ms())
    }

    /// Until when (ms, `now_ms` clock) the endpoint is ejected, if it is.
    pub fn ejected_until(&self) -> Option<u64> {
        let until = self.ejected_until.load(Ordering::Relaxed);
        (until != 0 && now_ms() < until).then_some(until)
    }

    pub fn times_ejected(&self) -> u32 {
        self.times_ejected.load(Ordering::Relaxed)
    }

    /// Records an outcome. Returns true when the thresholds say "eject now"; the caller
    /// checks the cluster-wide ejection budget and calls `eject`.
    pub fn record(&self, policy: &OutlierDetection, outcome: Outcome) -> bool {
        let (is_5xx, is_gateway) = match outcome {
            Outcome::Status(s) => (s >= 500, matches!(s, 502..=504)),
            Outcome::LocalFailure => (true, true),
        };
        if !is_5xx {
            self.consecutive_5xx.store(0, Ordering::Relaxed);
            self.consecutive_gateway.store(0, Ordering::Relaxed);
            self.decay(policy);
            return false;
        }
        let c5 = self.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
        let cg = if is_gateway {
            self.consecutive_gateway.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.consecutive_gateway.store(0, Ordering::Relaxed);
            0
        };
        let hit_5xx = policy.consecutive_5xx.is_some_and(|n| n > 0 && c5 >= n);
        let hit_gw = policy
            .consecutive_gateway_errors
            .is_some_and(|n| n > 0 && cg >= n);
        (hit_5xx || hit_gw) && !self.is_ejected()
    }

    /// Ejects for base × times ejected (capped at 300 s); resets the error counters.
    pub fn eject(&self, policy: &OutlierDetection) -> Duration {
        let times = self.times_ejected.fetch_add(1, Ordering::Relaxed) + 1;
        let d = policy
            .base_ejection_time
            .saturating_mul(times)
            .min(MAX_EJECTION.max(policy.base_ejection_time));
        self.ejected_until
            .store(now_ms() + d.as_millis() as u64, Ordering::Relaxed);
        self.consecutive_5xx.store(0, Ordering::Relaxed);
        self.consecutive_gateway.store(0, Ordering::Relaxed);
        d
    }

    /// A healthy endpoint's ejection multiplier decays by one per interval (Envoy).
    fn decay(&self, policy: &OutlierDetection) {
        if self.times_ejected.load(Ordering::Relaxed) == 0 {
            return;
        }
        let now = now_ms();
        let until = self.ejected_until.load(Ordering::Relaxed);
        let interval = policy.interval.as_millis().max(1) as u64;
        let last = self.last_decay.load(Ordering::Relaxed).max(until);
        if now >= last + interval
            && self
                .last_decay
                .compare_exchange(
                    self.last_decay.load(Ordering::Relaxed),
                    now,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            let _ = self
                .times_ejected
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| t.checked_sub(1));
        }
    }
}

/// Whether one more ejection fits the budget: Envoy ejects while the ejected share is below
/// `max_ejection_percent`, so with any percent above zero at least one host may go.
pub fn ejection_allowed(policy: &OutlierDetection, ejected: usize, total: usize) -> bool {
    total > 0 && (ejected * 100) < (policy.max_ejection_percent as usize) * total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> OutlierDetection {
        OutlierDetection {
            consecutive_5xx: Some(3),
            consecutive_gateway_errors: None,
            interval: Duration::from_secs(1),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_percent: 10,
            min_health_percent: 0,
        }
    }

    #[test]
    fn third_consecutive_5xx_ejects() {
        let p = policy();
        let s = OutlierState::default();
        assert!(!s.record(&p, Outcome::Status(500)));
        assert!(!s.record(&p, Outcome::Status(200)));
        assert!(!s.record(&p, Outcome::Status(500)));
        assert!(!s.record(&p, Outcome::Status(503)));
        assert!(s.record(&p, Outcome::LocalFailure));
        assert_eq!(s.eject(&p), Duration::from_secs(30));
        assert!(s.is_ejected());
        assert_eq!(s.eject(&p), Duration::from_secs(60));
    }

    #[test]
    fn budget() {
        let p = policy();
        assert!(ejection_allowed(&p, 0, 2), "one host may always go at 10%");
        assert!(!ejection_allowed(&p, 1, 2));
        assert!(ejection_allowed(&p, 1, 20));
        assert!(!ejection_allowed(&p, 2, 20));
    }
}
