//! The GigaChat access token: one per process, fetched once, shared by all
//! requests, refreshed ahead of expiry, never fetched twice at once.
//!
//! GigaChat allows about 10 OAuth calls per second, and a cold serverless
//! instance receives its first requests all at once; without single-flight
//! every one of them would call OAuth and most would get 429. Waiters that
//! queued behind a failed refresh share its error instead of each retrying,
//! for the same reason.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, header};
use reqwest::Url;
use serde::Deserialize;

use crate::config::Config;
use crate::error::Error;

/// An upstream access token, ready to be sent.
#[derive(Debug)]
pub struct UpstreamToken {
    /// `Bearer <token>`, marked sensitive so hyper's debug output hides it.
    pub header: HeaderValue,
    /// Which fetch produced it; a 401 invalidates only the token it was
    /// answered to, so a burst of 401s triggers one refresh, not many.
    pub generation: u64,
    refresh_at: SystemTime,
    expires_at: SystemTime,
}

impl UpstreamToken {
    fn is_fresh(&self, now: SystemTime) -> bool {
        now < self.refresh_at
    }

    fn is_usable(&self, now: SystemTime) -> bool {
        now < self.expires_at
    }
}

#[derive(Default)]
struct RefreshState {
    last_error: Option<Error>,
}

pub struct TokenManager {
    http: reqwest::Client,
    auth_url: Url,
    auth_host: String,
    basic: HeaderValue,
    scope_body: Bytes,
    buffer: Duration,
    timeout: Duration,
    current: RwLock<Option<Arc<UpstreamToken>>>,
    refresh: tokio::sync::Mutex<RefreshState>,
    attempts: AtomicU64,
    generation: AtomicU64,
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

impl TokenManager {
    pub fn new(config: &Config, http: reqwest::Client) -> Result<Self, Error> {
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
            auth_host: config.auth_url.host_str().unwrap_or_default().to_owned(),
            auth_url: config.auth_url.clone(),
            basic,
            scope_body: Bytes::from(format!("scope={}", config.scope.as_str())),
            buffer: config.token_expiry_buffer,
            timeout: config.timeout,
            current: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(RefreshState::default()),
            attempts: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        })
    }

    /// A token that is good for at least the expiry buffer.
    pub async fn token(&self) -> Result<Arc<UpstreamToken>, Error> {
        if let Some(token) = self
            .cached(SystemTime::now())
            .filter(|t| t.is_fresh(SystemTime::now()))
        {
            return Ok(token);
        }
        let attempts_seen = self.attempts.load(Ordering::Acquire);
        let mut state = self.refresh.lock().await;
        let now = SystemTime::now();
        let cached = self.cached(now);
        if let Some(token) = cached.as_ref().filter(|t| t.is_fresh(now)) {
            return Ok(Arc::clone(token));
        }
        if self.attempts.load(Ordering::Acquire) != attempts_seen
            && let Some(err) = &state.last_error
        {
            return match cached.filter(|t| t.is_usable(now)) {
                Some(token) => Ok(token),
                None => Err(err.clone()),
            };
        }
        self.attempts.fetch_add(1, Ordering::AcqRel);
        match self.fetch().await {
            Ok(token) => {
                let token = Arc::new(token);
                *self.current.write().unwrap_or_else(PoisonError::into_inner) =
                    Some(Arc::clone(&token));
                state.last_error = None;
                Ok(token)
            }
            Err(err) => {
                state.last_error = Some(err.clone());
                // A refresh ahead of expiry that failed still leaves a token
                // GigaChat accepts; use it rather than fail the request.
                match cached.filter(|t| t.is_usable(now)) {
                    Some(token) => {
                        tracing::warn!(error = %err, "token refresh failed; using the current token until it expires");
                        Ok(token)
                    }
                    None => Err(err),
                }
            }
        }
    }

    /// Forgets the token a 401 was answered to (and only that one).
    pub fn invalidate(&self, generation: u64) {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if current.as_ref().is_some_and(|t| t.generation == generation) {
            *current = None;
        }
    }

    /// Number of OAuth calls made so far.
    pub fn oauth_calls(&self) -> u64 {
        self.attempts.load(Ordering::Acquire)
    }

    fn cached(&self, _now: SystemTime) -> Option<Arc<UpstreamToken>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn fetch(&self) -> Result<UpstreamToken, Error> {
        let started = Instant::now();
        let request_uid = uuid::Uuid::new_v4().to_string();
        let timeout_secs = self.timeout.as_secs();
        let response = self
            .http
            .post(self.auth_url.clone())
            .header(header::AUTHORIZATION, self.basic.clone())
            .header("RqUID", request_uid)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .timeout(self.timeout)
            .body(self.scope_body.clone())
            .send()
            .await
            .map_err(|err| super::transport_error(&err, "oauth", &self.auth_host, timeout_secs))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|err| super::transport_error(&err, "oauth", &self.auth_host, timeout_secs))?;
        if !status.is_success() {
            let err = self.oauth_error(status.as_u16(), &body);
            tracing::warn!(
                status = status.as_u16(),
                code = err.code(),
                "GigaChat OAuth refused a token"
            );
            return Err(err);
        }
        let answer: OAuthAnswer = serde_json::from_slice(&body).map_err(|_| {
            Error::UpstreamAuthMalformed("the answer has no access_token/expires_at")
        })?;
        let mut bearer =
            HeaderValue::try_from(format!("Bearer {}", answer.access_token)).map_err(|_| {
                Error::UpstreamAuthMalformed("the access token is not a valid header value")
            })?;
        bearer.set_sensitive(true);

        let now = SystemTime::now();
        let expires_at = UNIX_EPOCH + expires_at_duration(answer.expires_at);
        let lifetime = expires_at.duration_since(now).unwrap_or_default();
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let refresh_at = now + refresh_after(lifetime, self.buffer);
        tracing::info!(
            oauth_ms = started.elapsed().as_millis() as u64,
            expires_in_s = lifetime.as_secs(),
            generation,
            "fetched a GigaChat access token"
        );
        Ok(UpstreamToken {
            header: bearer,
            generation,
            refresh_at,
            expires_at,
        })
    }

    fn oauth_error(&self, status: u16, body: &[u8]) -> Error {
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

/// How long a token is used before it is refreshed: the SDK's buffer ahead
/// of expiry, minus up to 10% jitter so a fleet of instances does not
/// refresh in the same second. Tokens too short-lived for the buffer (test
/// setups) are refreshed at half their life instead of on every request.
fn refresh_after(lifetime: Duration, buffer: Duration) -> Duration {
    let jitter_ms =
        (uuid::Uuid::new_v4().as_u128() % 1000) as u64 * buffer.as_millis() as u64 / 10_000;
    let early = buffer + Duration::from_millis(jitter_ms);
    if lifetime > early * 2 {
        lifetime - early
    } else {
        lifetime / 2
    }
}

/// A safe description of an OAuth refusal: the documented codes get a fixed
/// text; anything else gets only its status, since an unknown message could
/// quote what was sent.
fn describe_oauth_error(status: u16, code: Option<i64>, message: Option<&str>) -> String {
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
    fn refresh_happens_ahead_of_expiry() {
        let thirty_min = Duration::from_secs(1800);
        let buffer = Duration::from_secs(60);
        for _ in 0..100 {
            let after = refresh_after(thirty_min, buffer);
            assert!(after <= thirty_min - buffer, "{after:?}");
            assert!(
                after >= thirty_min - buffer - Duration::from_secs(6),
                "{after:?}"
            );
        }
        assert_eq!(
            refresh_after(Duration::from_secs(4), buffer),
            Duration::from_secs(2)
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
}
