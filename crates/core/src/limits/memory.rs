//! The GCRA and the per-instance (in-memory) limiters.
//!
//! The GCRA (generic cell rate algorithm, as in `governor` and Redis-cell)
//! keeps one number per identity, the theoretical arrival time (TAT): the
//! moment the identity's bucket will be full again. Limit N per window W
//! gives an emission interval T = W / N and a burst tolerance L = N × T; a
//! request at `now` is admitted when `max(TAT, now) + T - now <= L`, and then
//! the TAT moves on by T. The Redis script does exactly the same arithmetic
//! on the same integers (microseconds), so switching backends changes
//! nothing but sharing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::config::Rate;
use super::info::RateLimitInfo;

/// One GCRA step. `tat_us` is the stored TAT (`None` for a fresh identity),
/// `now_us` the current time; both in microseconds on the same clock.
/// Returns whether the request is admitted and the TAT to store; the TAT is
/// clamped to `now + L` so a clock that stepped backwards costs at most one
/// window, never more.
pub(crate) fn gcra_step(tat_us: Option<u64>, now_us: u64, rate: Rate) -> (bool, u64) {
    let emission = rate.emission_us();
    let tolerance = rate.tolerance_us();
    let tat = tat_us
        .unwrap_or(now_us)
        .clamp(now_us, now_us.saturating_add(tolerance));
    let new_tat = tat.saturating_add(emission);
    if new_tat - now_us <= tolerance {
        (true, new_tat)
    } else {
        (false, tat)
    }
}

/// The `RateLimit-*` view of a GCRA decision. `ahead_us` is the stored TAT
/// minus now (how long until the bucket is full again); the Redis script
/// returns the same number, so both backends derive identical headers.
pub(crate) fn decision_info(rate: Rate, allowed: bool, ahead_us: u64) -> RateLimitInfo {
    let emission = rate.emission_us();
    let tolerance = rate.tolerance_us();
    let (remaining, retry_after_secs) = if allowed {
        (tolerance.saturating_sub(ahead_us) / emission, 0)
    } else {
        // The request would have pushed the TAT to ahead + T; it passes once
        // that is within the tolerance again.
        let wait_us = ahead_us.saturating_add(emission).saturating_sub(tolerance);
        (0, ceil_secs(wait_us).max(1))
    };
    RateLimitInfo {
        limit: rate.count,
        remaining: remaining.min(rate.count),
        reset_secs: ceil_secs(ahead_us),
        window_secs: rate.window_secs(),
        retry_after_secs,
    }
}

fn ceil_secs(us: u64) -> u64 {
    us.div_ceil(1_000_000)
}

/// A poisoned mutex only means another thread panicked while holding it;
/// the maps stay consistent (every update is a single insert or remove), so
/// the limiter keeps working rather than panicking in turn.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How many identities the in-memory rate limiter tracks at most.
pub(crate) const MAX_TRACKED_IDENTITIES: usize = 100_000;

/// Per-instance GCRA state: identity → TAT (µs since `origin`).
pub(crate) struct MemoryRates {
    origin: Instant,
    capacity: usize,
    tats: Mutex<HashMap<String, u64>>,
}

impl MemoryRates {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            origin: Instant::now(),
            capacity: capacity.max(2),
            tats: Mutex::new(HashMap::new()),
        }
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Checks and (when admitted) consumes one request.
    pub(crate) fn check(&self, identity: &str, rate: Rate) -> (bool, RateLimitInfo) {
        self.check_at(identity, rate, self.now_us())
    }

    pub(crate) fn check_at(
        &self,
        identity: &str,
        rate: Rate,
        now_us: u64,
    ) -> (bool, RateLimitInfo) {
        let mut tats = lock(&self.tats);
        let stored = tats.get(identity).copied();
        let (allowed, tat) = gcra_step(stored, now_us, rate);
        if allowed {
            if stored.is_none() && tats.len() >= self.capacity {
                evict(&mut tats, now_us, self.capacity);
            }
            if let Some(slot) = tats.get_mut(identity) {
                *slot = tat;
            } else {
                tats.insert(identity.to_owned(), tat);
            }
        }
        (allowed, decision_info(rate, allowed, tat - now_us))
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock(&self.tats).len()
    }
}

/// Makes room in a full map so a flood of fresh (e.g. spoofed) identities
/// cannot grow memory without bound. Entries whose TAT is past carry no
/// state (a fresh bucket is the same) and go first; if the map is still more
/// than three quarters full, the entries closest to a full bucket go until
/// half the capacity is left. Each sweep is O(n) and frees at least a
/// quarter of the capacity, so the cost per request stays O(1) amortized.
fn evict(tats: &mut HashMap<String, u64>, now_us: u64, capacity: usize) {
    tats.retain(|_, tat| *tat > now_us);
    if tats.len() <= capacity / 4 * 3 {
        return;
    }
    let keep = capacity / 2;
    let mut order: Vec<u64> = tats.values().copied().collect();
    let cut = order.len() - keep;
    let (_, threshold, _) = order.select_nth_unstable(cut);
    let threshold = *threshold;
    // Entries at or below the threshold are the least far ahead; ties may
    // remove a few more than `cut`, which is harmless.
    tats.retain(|_, tat| *tat > threshold);
}

/// Per-instance concurrent streams: identity → open streams. Only identities
/// with a stream open are present, so the map is bounded by the streams.
#[derive(Default)]
pub(crate) struct MemoryStreams {
    open: Mutex<HashMap<String, u64>>,
}

impl MemoryStreams {
    /// Takes a slot when fewer than `limit` streams are open.
    pub(crate) fn try_acquire(
        self: &Arc<Self>,
        identity: &str,
        limit: u64,
    ) -> Option<MemoryStreamLease> {
        let mut open = lock(&self.open);
        let count = open.entry(identity.to_owned()).or_insert(0);
        if *count >= limit {
            if *count == 0 {
                open.remove(identity);
            }
            return None;
        }
        *count += 1;
        Some(MemoryStreamLease {
            streams: Arc::clone(self),
            identity: identity.to_owned(),
        })
    }

    #[cfg(test)]
    pub(crate) fn open(&self, identity: &str) -> u64 {
        lock(&self.open).get(identity).copied().unwrap_or(0)
    }
}

/// One open stream in memory; dropping it frees the slot.
pub(crate) struct MemoryStreamLease {
    streams: Arc<MemoryStreams>,
    identity: String,
}

impl Drop for MemoryStreamLease {
    fn drop(&mut self) {
        let mut open = lock(&self.streams.open);
        if let Some(count) = open.get_mut(&self.identity) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.identity);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::time::Duration;

    const MIN_10: Rate = Rate {
        count: 10,
        window: Duration::from_secs(60),
    };
    const T: u64 = 6_000_000; // 60 s / 10

    #[test]
    fn burst_is_admitted_then_the_next_is_denied_with_the_right_retry_after() {
        let rates = MemoryRates::new(100);
        let now = 1_000_000_000;
        for i in 0..10 {
            let (allowed, info) = rates.check_at("a", MIN_10, now);
            assert!(allowed, "request {i} denied");
            assert_eq!(info.remaining, 9 - i);
            assert_eq!(info.limit, 10);
            assert_eq!(info.window_secs, 60);
            assert_eq!(info.retry_after_secs, 0);
            assert_eq!(info.reset_secs, 6 * (i + 1));
        }
        let (allowed, info) = rates.check_at("a", MIN_10, now);
        assert!(!allowed);
        assert_eq!(info.remaining, 0);
        assert_eq!(info.retry_after_secs, 6);
        assert_eq!(info.reset_secs, 60);
        // A denial consumes nothing: still exactly T to wait.
        let (allowed, info) = rates.check_at("a", MIN_10, now + 1_500_000);
        assert!(!allowed);
        assert_eq!(info.retry_after_secs, 5); // 4.5 s rounded up
    }

    #[test]
    fn one_request_is_earned_back_every_emission_interval() {
        let rates = MemoryRates::new(100);
        let now = 5_000_000;
        for _ in 0..10 {
            assert!(rates.check_at("a", MIN_10, now).0);
        }
        assert!(!rates.check_at("a", MIN_10, now + T - 1).0);
        let (allowed, info) = rates.check_at("a", MIN_10, now + T);
        assert!(allowed);
        assert_eq!(info.remaining, 0);
        assert!(!rates.check_at("a", MIN_10, now + T).0);
        // After a whole window the full burst is back.
        let later = now + T + 60_000_000;
        for i in 0..10 {
            assert!(rates.check_at("a", MIN_10, later).0, "request {i} denied");
        }
        assert!(!rates.check_at("a", MIN_10, later).0);
    }

    #[test]
    fn identities_have_separate_budgets() {
        let rates = MemoryRates::new(100);
        for _ in 0..10 {
            assert!(rates.check_at("a", MIN_10, 0).0);
        }
        assert!(!rates.check_at("a", MIN_10, 0).0);
        assert!(rates.check_at("b", MIN_10, 0).0);
    }

    #[test]
    fn a_backwards_clock_costs_at_most_one_window() {
        let (allowed, tat) = gcra_step(Some(u64::MAX / 2), 0, MIN_10);
        assert!(!allowed);
        let info = decision_info(MIN_10, allowed, tat);
        assert_eq!(info.reset_secs, 60);
        assert_eq!(info.retry_after_secs, 6);
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_identities() {
        let capacity = 1_000;
        let rates = MemoryRates::new(capacity);
        // Entries that expire (TAT in the past) are dropped first.
        for i in 0..capacity {
            assert!(rates.check_at(&format!("old{i}"), MIN_10, 0).0);
        }
        assert_eq!(rates.len(), capacity);
        assert!(rates.check_at("late", MIN_10, 10 * T).0);
        assert_eq!(rates.len(), 1);
        // A flood of live identities within one window never exceeds the cap.
        for i in 0..(20 * capacity as u64) {
            assert!(rates.check_at(&format!("ip:{i}"), MIN_10, 10 * T + i).0);
            assert!(rates.len() <= capacity);
        }
        // A live, heavily used identity outlives the fresh ones.
        let now = 10 * T + 20 * capacity as u64;
        for _ in 0..10 {
            assert!(rates.check_at("heavy", MIN_10, now).0);
        }
        for i in 0..(2 * capacity as u64) {
            rates.check_at(&format!("flood:{i}"), MIN_10, now + i);
        }
        assert!(!rates.check_at("heavy", MIN_10, now + 2 * capacity as u64).0);
    }

    #[test]
    fn stream_slots_are_released_on_drop() {
        let streams = Arc::new(MemoryStreams::default());
        let a = streams.try_acquire("u", 2).unwrap();
        let b = streams.try_acquire("u", 2).unwrap();
        assert!(streams.try_acquire("u", 2).is_none());
        assert!(streams.try_acquire("v", 2).is_some());
        drop(a);
        assert_eq!(streams.open("u"), 1);
        let c = streams.try_acquire("u", 2).unwrap();
        drop(b);
        drop(c);
        assert_eq!(streams.open("u"), 0);
        assert!(lock(&streams.open).is_empty());
    }
}
