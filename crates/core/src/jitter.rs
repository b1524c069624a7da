//! Random jitter for waits, so instances that failed, polled or fetched a
//! token together do not all act again in the same instant.

use std::time::Duration;

/// A random duration in `[0, max)`, in steps of a millionth of `max`. The
/// randomness comes from a v4 UUID, whose generator the crate already has;
/// spreading waits needs no better.
pub(crate) fn up_to(max: Duration) -> Duration {
    let millionths = (uuid::Uuid::new_v4().as_u128() % 1_000_000) as f64;
    max.mul_f64(millionths / 1_000_000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_below_its_bound_and_varies() {
        let max = Duration::from_secs(1);
        let draws: Vec<Duration> = (0..100).map(|_| up_to(max)).collect();
        assert!(draws.iter().all(|d| *d < max), "{draws:?}");
        assert!(draws.iter().any(|d| *d != draws[0]), "{draws:?}");
        assert_eq!(up_to(Duration::ZERO), Duration::ZERO);
    }
}
