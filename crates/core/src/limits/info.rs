//! What the limits tell the outside: the `RateLimit-*` headers of a
//! decision and the outcome the access line records. A leaf (it imports
//! nothing of the crate), so the error type can carry a refusal's headers
//! without depending on the limiter that made it.

use http::{HeaderMap, HeaderName, HeaderValue};

/// The state of one identity's request budget, as the `RateLimit-*`
/// headers (IETF draft) describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitInfo {
    /// Requests allowed per window.
    pub limit: u64,
    /// Requests still allowed right now.
    pub remaining: u64,
    /// Seconds until the budget is full again.
    pub reset_secs: u64,
    /// The window, in seconds.
    pub window_secs: u64,
    /// Seconds to wait before the next request can pass (0 when allowed).
    pub retry_after_secs: u64,
}

const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

impl RateLimitInfo {
    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(RATELIMIT_LIMIT, HeaderValue::from(self.limit));
        headers.insert(RATELIMIT_REMAINING, HeaderValue::from(self.remaining));
        headers.insert(RATELIMIT_RESET, HeaderValue::from(self.reset_secs));
        if let Ok(policy) = HeaderValue::try_from(format!("{};w={}", self.limit, self.window_secs))
        {
            headers.insert(RATELIMIT_POLICY, policy);
        }
        if self.retry_after_secs > 0 {
            headers.insert(
                http::header::RETRY_AFTER,
                HeaderValue::from(self.retry_after_secs),
            );
        }
    }
}

/// What the limits did with one request, for the access line's
/// `rate_limit` field and the `ratelimited_total` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RateLimitOutcome {
    /// No request limit applies to this caller (or the request was
    /// answered before the limits were consulted).
    Off,
    /// Within the caller's limits.
    Allowed,
    /// Refused by a rate or stream limit.
    Limited,
}

impl RateLimitOutcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RateLimitOutcome::Off => "off",
            RateLimitOutcome::Allowed => "allowed",
            RateLimitOutcome::Limited => "limited",
        }
    }
}
