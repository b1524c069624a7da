//! The OAuth exchange alone: one call that trades the authorization key for
//! an access token, and what its failures mean. Nothing is cached or retried
//! here; [`super::token`] decides when to call and whether to call again,
//! and [`super::shared_token`] whether another instance calls instead.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, header};
use reqwest::Url;
use serde::Deserialize;

use super::retry;
use crate::config::{Config, RetryPolicy};
use crate::error::{Error, TransportCause};
use crate::secret::Secret;

/// GigaChat's OAuth endpoint, called with the configured key and scope.
pub(crate) struct OAuth {
    http: reqwest::Client,
    url: Url,
    host: String,
    basic: HeaderValue,
    scope_body: Bytes,
    timeout: Duration,
    calls: AtomicU64,
}

/// An access token as GigaChat issued it (to this instance, or to another
/// that stored it in Redis), ready to be sent.
pub(crate) struct Grant {
    /// `Bearer <token>`, marked sensitive so hyper's debug output hides it.
    pub(crate) header: HeaderValue,
    /// Kept only while the token is handed to the other instances.
    pub(crate) access_token: Secret<String>,
    pub(crate) expires_at: SystemTime,
}

impl Grant {
    /// Fails only for a token that cannot be sent in a header.
    pub(crate) fn new(access_token: Secret<String>, expires_at: SystemTime) -> Result<Self, Error> {
        let mut header = HeaderValue::try_from(format!("Bearer {}", access_token.expose()))
            .map_err(|_| {
                Error::UpstreamAuthMalformed("the access token is not a valid header value")
            })?;
        header.set_sensitive(true);
        Ok(Self {
            header,
            access_token,
            expires_at,
        })
    }

    /// The expiry as Redis stores it: milliseconds since the epoch.
    pub(crate) fn expires_at_ms(&self) -> u64 {
        let since_epoch = self
            .expires_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
    }
}

/// A failed exchange, with how long GigaChat asked to wait.
pub(crate) struct Failed {
    pub(crate) error: Error,
    pub(crate) retry_after: Option<Duration>,
}

impl From<Error> for Failed {
    fn from(error: Error) -> Self {
        Self {
            error,
            retry_after: None,
        }
    }
}

#[derive(Deserialize)]
struct OAuthAnswer {
    #[serde(alias = "tok")]
    access_token: String,
    #[serde(alias = "exp")]
    expires_at: u64,
}

#[derive(Deserialize)]
struct OAuthError {
    code: Option<i64>,
    message: Option<String>,
}

impl OAuth {
    pub(crate) fn new(config: &Config, http: reqwest::Client) -> Result<Self, Error> {
        let mut basic = HeaderValue::try_from(format!("Basic {}", config.credentials.expose()))
            .map_err(|_| {
                Error::Config(crate::config::ConfigError {
                    variable: "GIGACHAT_CREDENTIALS",
                    problem: "contains characters not allowed in an HTTP header".into(),
                })
            })?;
        basic.set_sensitive(true);
        Ok(Self {
            http,
            host: config.auth_url.host_str().unwrap_or_default().to_owned(),
            url: config.auth_url.clone(),
            basic,
            scope_body: Bytes::from(format!("scope={}", config.scope.as_str())),
            timeout: config.timeout,
            calls: AtomicU64::new(0),
        })
    }

    /// The OAuth host, named in the errors of an unreachable endpoint.
    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    /// Number of OAuth calls made so far.
    pub(crate) fn calls(&self) -> u64 {
        self.calls.load(Ordering::Acquire)
    }

    /// One OAuth call, answered by `deadline` (counted in [`Self::calls`]
    /// and the `gigachat_proxy_oauth_refresh_total` metric).
    pub(crate) async fn exchange(&self, deadline: Instant) -> Result<Grant, Failed> {
        let result = self.call(deadline).await;
        crate::metrics::record_oauth(if result.is_ok() { "ok" } else { "error" });
        result
    }

    async fn call(&self, deadline: Instant) -> Result<Grant, Failed> {
        let timeout_secs = self.timeout.as_secs();
        let started = Instant::now();
        let remaining = deadline.saturating_duration_since(started);
        if remaining.is_zero() {
            return Err(Error::UpstreamTimeout {
                stage: "oauth",
                seconds: timeout_secs,
            }
            .into());
        }
        self.calls.fetch_add(1, Ordering::AcqRel);
        let request_uid = uuid::Uuid::new_v4().to_string();
        let response = self
            .http
            .post(self.url.clone())
            .header(header::AUTHORIZATION, self.basic.clone())
            .header("RqUID", request_uid)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .timeout(remaining)
            .body(self.scope_body.clone())
            .send()
            .await
            .map_err(|err| super::transport_error(&err, "oauth", &self.host, timeout_secs))?;
        let status = response.status();
        let retry_after = retry::retry_after(response.headers());
        let body = response
            .bytes()
            .await
            .map_err(|err| super::transport_error(&err, "oauth", &self.host, timeout_secs))?;
        if !status.is_success() {
            let err = oauth_error(status.as_u16(), &body);
            tracing::warn!(
                status = status.as_u16(),
                code = err.code(),
                "GigaChat OAuth refused a token"
            );
            return Err(Failed {
                error: err,
                retry_after,
            });
        }
        let answer: OAuthAnswer = serde_json::from_slice(&body).map_err(|_| {
            Error::UpstreamAuthMalformed("the answer has no access_token/expires_at")
        })?;
        let expires_at = UNIX_EPOCH + expires_at_duration(answer.expires_at);
        let grant = Grant::new(Secret::new(answer.access_token), expires_at)?;
        tracing::info!(
            oauth_ms = started.elapsed().as_millis() as u64,
            expires_in_s = expires_at
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                .as_secs(),
            "fetched a GigaChat access token"
        );
        Ok(grant)
    }
}

fn oauth_error(status: u16, body: &[u8]) -> Error {
    let parsed: Option<OAuthError> = serde_json::from_slice(body).ok();
    let (code, message) = parsed.map(|e| (e.code, e.message)).unwrap_or((None, None));
    match status {
        429 => Error::UpstreamAuthRateLimited,
        400..=499 => Error::UpstreamAuthRejected {
            status,
            code,
            reason: describe_oauth_error(status, code, message.as_deref()),
        },
        _ => Error::UpstreamAuthFailed { status },
    }
}

/// Worth another attempt: a connection that was never made, or a status
/// in `GIGACHAT_RETRY_ON_STATUS_CODES` that does not refuse the key.
pub(crate) fn is_transient(error: &Error, policy: &RetryPolicy) -> bool {
    let retried = |status: u16| policy.on_status.contains(&status);
    match error {
        Error::UpstreamUnreachable {
            cause: TransportCause::Connect,
            ..
        } => true,
        Error::UpstreamAuthRateLimited => retried(429),
        Error::UpstreamAuthFailed { status } => retried(*status),
        Error::UpstreamAuthRejected { status, code, .. } => {
            !refuses_the_key(*status, *code) && retried(*status)
        }
        _ => false,
    }
}

/// GigaChat's refusals of the key itself (HTTP 400/401, codes 1, 4, 5, 6,
/// 7: wrong key, wrong scope, undecodable header): asking again cannot
/// change the answer and only spends the OAuth rate limit.
fn refuses_the_key(status: u16, code: Option<i64>) -> bool {
    matches!(status, 400 | 401) || matches!(code, Some(1 | 4..=7))
}

/// GigaChat documents `expires_at` in milliseconds, but older answers and
/// docs examples use seconds; anything below 10^12 cannot be a millisecond
/// timestamp after 2001, so it is read as seconds.
fn expires_at_duration(value: u64) -> Duration {
    if value < 1_000_000_000_000 {
        Duration::from_secs(value)
    } else {
        Duration::from_millis(value)
    }
}

/// A safe description of an OAuth refusal: the documented codes get a fixed
/// text; anything else gets only its status, since an unknown message could
/// quote what was sent.
pub(crate) fn describe_oauth_error(
    status: u16,
    code: Option<i64>,
    message: Option<&str>,
) -> String {
    let known = match code {
        Some(1) => "scope data format invalid",
        Some(4) => "Can't decode 'Authorization' header",
        Some(5) => "scope is empty",
        Some(6) => "credentials doesn't match db data",
        Some(7) => "scope from db not fully includes consumed scope",
        _ => "",
    };
    match (code, known.is_empty(), message) {
        (Some(code), false, _) => format!("HTTP {status}, code {code}: {known}"),
        (Some(code), true, _) => format!("HTTP {status}, code {code}"),
        (None, _, Some(m))
            if m.len() <= 80
                && m.chars()
                    .all(|c| c.is_ascii_alphanumeric() || " .,'-_".contains(c)) =>
        {
            format!("HTTP {status}: {m}")
        }
        _ => format!("HTTP {status}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn expires_at_accepts_milliseconds_and_seconds() {
        assert_eq!(
            expires_at_duration(1_739_784_663_483),
            Duration::from_millis(1_739_784_663_483)
        );
        assert_eq!(
            expires_at_duration(1_679_471_442),
            Duration::from_secs(1_679_471_442)
        );
    }

    #[test]
    fn oauth_errors_are_described_without_echoing_unknown_text() {
        assert_eq!(
            describe_oauth_error(401, Some(6), Some("credentials doesn't match db data")),
            "HTTP 401, code 6: credentials doesn't match db data"
        );
        assert_eq!(
            describe_oauth_error(400, Some(99), Some("Basic c2VjcmV0")),
            "HTTP 400, code 99"
        );
        assert_eq!(
            describe_oauth_error(400, None, Some("key=Y2xpZW50OnNlY3JldA==")),
            "HTTP 400"
        );
        assert_eq!(
            describe_oauth_error(400, None, Some("Bad request")),
            "HTTP 400: Bad request"
        );
    }

    /// The exchange's side of `token::tests::a_refusal_of_the_key_is_never_retried`.
    #[test]
    fn refusals_of_the_key_are_told_from_transient_failures() {
        assert!(refuses_the_key(400, Some(1)) && refuses_the_key(401, None));
        assert!(refuses_the_key(403, Some(4)) && !refuses_the_key(403, None));
        assert!(!refuses_the_key(429, Some(429)) && !refuses_the_key(500, None));
    }
}
