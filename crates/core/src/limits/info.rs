//! What the limits tell the outside: the `RateLimit-*` headers of a
//! decision, the outcome the access line records, and the state of a token
//! budget (its UTC window, its `x-ratelimit-*-tokens` headers). A leaf (it imports
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

const LIMIT_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-limit-tokens");
const REMAINING_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
const RESET_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-reset-tokens");
const SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");

/// A fixed window, aligned to UTC so every caller's reset time is exact
/// and predictable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Hour,
    Day,
    /// Monday 00:00 UTC to the next Monday (ISO weeks).
    Week,
    /// The calendar month.
    Month,
}

impl Window {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Window::Hour => "hour",
            Window::Day => "day",
            Window::Week => "week",
            Window::Month => "month",
        }
    }

    /// The window as the budget variables spell it (`h`, `d`, `w`, `mo`).
    pub(crate) fn short(self) -> &'static str {
        match self {
            Window::Hour => "h",
            Window::Day => "d",
            Window::Week => "w",
            Window::Month => "mo",
        }
    }

    /// The window containing `now` (Unix seconds): `[start, end)`.
    pub(crate) fn bounds(self, now: u64) -> (u64, u64) {
        const DAY: u64 = 86_400;
        match self {
            Window::Hour => {
                let start = now - now % 3600;
                (start, start + 3600)
            }
            Window::Day => {
                let start = now - now % DAY;
                (start, start + DAY)
            }
            Window::Week => {
                let days = now / DAY;
                // 1970-01-01 was a Thursday: (days + 3) % 7 counts from Monday.
                let start = (days - (days + 3) % 7) * DAY;
                (start, start + 7 * DAY)
            }
            Window::Month => {
                let (year, month, _) = civil_from_days(now / DAY);
                let (next_year, next_month) = if month == 12 {
                    (year + 1, 1)
                } else {
                    (year, month + 1)
                };
                (
                    days_from_civil(year, month, 1) * DAY,
                    days_from_civil(next_year, next_month, 1) * DAY,
                )
            }
        }
    }

    /// The starts of the windows around `now`: the previous one, this one,
    /// the next two. Redis picks among them by its own clock, so the
    /// window is decided on one clock for every instance.
    pub(crate) fn boundaries_around(self, now: u64) -> [u64; 4] {
        let (start, end) = self.bounds(now);
        let (previous, _) = self.bounds(start.saturating_sub(1));
        let (_, after_next) = self.bounds(end);
        [previous, start, end, after_next]
    }
}

/// Days since 1970-01-01 → (year, month 1..=12, day 1..=31), proleptic
/// Gregorian; exact for every date the proxy can meet.
pub(crate) fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The inverse of [`civil_from_days`].
pub(crate) fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let yoe = year - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2026-11-30T00:00:00Z`, for the messages that name a reset time.
pub(crate) fn rfc3339(secs: u64) -> String {
    let (year, month, day) = civil_from_days(secs / 86_400);
    let rest = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// `3h12m0s`: the OpenAI spelling of `x-ratelimit-reset-tokens`.
pub(crate) fn duration_text(secs: u64) -> String {
    let (hours, minutes, seconds) = (secs / 3600, secs % 3600 / 60, secs % 60);
    if hours > 0 {
        format!("{hours}h{minutes}m{seconds}s")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

/// The state of one caller's budget, for headers, errors and the budget
/// route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetInfo {
    pub limit: u64,
    pub used: u64,
    pub reserved: u64,
    pub window: Window,
    /// When the window ends (Unix seconds).
    pub reset_at: u64,
    /// Seconds from now to `reset_at`.
    pub reset_secs: u64,
    /// Which variable sets it, for the refusal's hint.
    pub variable: &'static str,
}

impl BudgetInfo {
    /// When the window resets, in RFC 3339 (UTC).
    pub(crate) fn reset_text(&self) -> String {
        rfc3339(self.reset_at)
    }

    pub(crate) fn remaining(&self) -> u64 {
        self.limit
            .saturating_sub(self.used.saturating_add(self.reserved))
    }

    /// The OpenAI-style token headers (on every answer the budget admits,
    /// and on its refusal).
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(LIMIT_TOKENS, HeaderValue::from(self.limit));
        headers.insert(REMAINING_TOKENS, HeaderValue::from(self.remaining()));
        if let Ok(reset) = HeaderValue::try_from(duration_text(self.reset_secs)) {
            headers.insert(RESET_TOKENS, reset);
        }
    }

    /// The refusal's extra headers: when to come back, and (when that is
    /// more than a minute away) that an SDK should not retry on its own.
    pub(crate) fn apply_refusal(&self, headers: &mut HeaderMap) {
        self.apply(headers);
        headers.insert(
            http::header::RETRY_AFTER,
            HeaderValue::from(self.reset_secs.max(1)),
        );
        if self.reset_secs > 60 {
            headers.insert(SHOULD_RETRY, HeaderValue::from_static("false"));
        }
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "enabled": true,
            "limit": self.limit,
            "used": self.used,
            "reserved": self.reserved,
            "remaining": self.remaining(),
            "window": self.window.as_str(),
            "reset": rfc3339(self.reset_at),
            "reset_secs": self.reset_secs,
        })
    }
}
