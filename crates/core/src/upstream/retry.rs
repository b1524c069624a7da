//! When a transient GigaChat failure is tried again, and after how long: one
//! set of rules (`GIGACHAT_MAX_RETRIES`, `GIGACHAT_RETRY_BACKOFF_FACTOR`,
//! `Retry-After`) for the API calls and the OAuth exchange alike, so an
//! operator tunes one policy and both stay within `GIGACHAT_TIMEOUT`.

use std::time::{Duration, Instant};

use http::{HeaderMap, header};

use crate::config::RetryPolicy;
use crate::jitter;

/// The longest `Retry-After` honoured: a longer one would outlast any sane
/// `GIGACHAT_TIMEOUT`, and the deadline check then ends the retries anyway.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(60);

/// `factor · 2ⁿ` plus up to 50% jitter, so instances that failed together
/// do not retry together.
pub(crate) fn backoff(policy: &RetryPolicy, retry: u32) -> Duration {
    let base = policy.backoff_factor.saturating_mul(1u32 << retry.min(16));
    base.saturating_add(jitter::up_to(base / 2))
}

/// `Retry-After` in whole seconds (GigaChat does not send HTTP dates),
/// capped at [`RETRY_AFTER_MAX`].
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).min(RETRY_AFTER_MAX))
}

/// The wait before retry `retry` (0-based): what the server asked for, else
/// the backoff. `None` when that wait would not end before `deadline`: a
/// retry that cannot be answered in time only delays the error.
pub(crate) fn delay_before(
    policy: &RetryPolicy,
    retry: u32,
    retry_after: Option<Duration>,
    deadline: Instant,
) -> Option<Duration> {
    let delay = retry_after.unwrap_or_else(|| backoff(policy, retry));
    (Instant::now() + delay < deadline).then_some(delay)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use http::HeaderValue;

    use super::*;

    #[test]
    fn backoff_grows_and_stays_within_jitter() {
        let policy = RetryPolicy::default();
        for retry in 0..3 {
            let base = Duration::from_millis(500) * (1 << retry);
            let delay = backoff(&policy, retry);
            assert!(
                delay >= base && delay <= base + base / 2,
                "{retry}: {delay:?}"
            );
        }
    }

    #[test]
    fn retry_after_is_read_in_seconds_and_capped() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static(" 3 "));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("86400"));
        assert_eq!(retry_after(&headers), Some(RETRY_AFTER_MAX));
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn a_delay_must_end_before_the_deadline() {
        let policy = RetryPolicy::default();
        let soon = Instant::now() + Duration::from_millis(200);
        assert_eq!(
            delay_before(&policy, 0, Some(Duration::from_secs(1)), soon),
            None
        );
        assert_eq!(delay_before(&policy, 0, None, soon), None, "0.5 s backoff");
        let later = Instant::now() + Duration::from_secs(30);
        assert_eq!(
            delay_before(&policy, 0, Some(Duration::from_secs(1)), later),
            Some(Duration::from_secs(1)),
            "Retry-After wins over the backoff"
        );
        let delay = delay_before(&policy, 1, None, later).unwrap();
        assert!(delay >= Duration::from_secs(1), "{delay:?}");
    }
}
