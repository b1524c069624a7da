//! The GigaChat access token: one per process, fetched once, shared by all
//! requests, refreshed ahead of expiry, never fetched twice at once.
//!
//! GigaChat allows about 10 OAuth calls per second, and a cold serverless
//! instance receives its first requests all at once; without single-flight
//! every one of them would call OAuth and most would get 429. Waiters that
//! queued behind a failed refresh share its error instead of each retrying,
//! for the same reason.
//!
//! With Redis configured, the instances also share the token (see
//! [`super::shared_token`]): a process whose token is stale first looks in
//! Redis, and only the instance that wins a lock calls OAuth, while the
//! others wait for the token it stores. Any Redis failure falls back to the
//! process-local behaviour above, so Redis can only save OAuth calls, never
//! cost a request. Note that anyone who can read that Redis can read a live
//! GigaChat token: operators should use a private Redis over TLS
//! (`rediss://`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, header};
use reqwest::Url;
use serde::Deserialize;

use super::shared_token::{self, Found, SharedToken};
use crate::config::Config;
use crate::error::Error;
use crate::secret::Secret;
use crate::shared_redis::SharedRedis;

/// Waiting for another instance's OAuth call: the first look comes soon (an
/// OAuth call takes a few hundred ms), later ones back off to this.
const POLL_MIN: Duration = Duration::from_millis(25);
const POLL_MAX: Duration = Duration::from_millis(250);

/// An upstream access token, ready to be sent. `Debug` never shows it.
pub struct UpstreamToken {
    /// `Bearer <token>`, marked sensitive so hyper's debug output hides it.
    pub header: HeaderValue,
    /// Which fetch produced it; a 401 invalidates only the token it was
    /// answered to, so a burst of 401s triggers one refresh, not many.
    pub generation: u64,
    refresh_at: SystemTime,
    expires_at: SystemTime,
    /// Recognises this token in Redis after GigaChat rejected it.
    fingerprint: [u8; 32],
}

impl std::fmt::Debug for UpstreamToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamToken")
            .field("header", &"Bearer ***")
            .field("generation", &self.generation)
            .field("refresh_at", &self.refresh_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
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
    /// The token shared through Redis, when one is configured.
    shared: Option<SharedToken>,
    /// The fingerprint of the token GigaChat last answered 401 to: if Redis
    /// still holds that token it is deleted, never adopted again.
    rejected: Mutex<Option<[u8; 32]>>,
}

/// A token this process got from OAuth, with what Redis needs to share it.
struct Fetched {
    token: UpstreamToken,
    access_token: Secret<String>,
    expires_at_ms: u64,
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

impl std::fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenManager")
            .field("auth_host", &self.auth_host)
            .field("shared", &self.shared)
            .field("oauth_calls", &self.oauth_calls())
            .finish_non_exhaustive()
    }
}

impl TokenManager {
    /// A manager that shares its token through the configured Redis (if
    /// any) over a connection of its own.
    pub fn new(config: &Config, http: reqwest::Client) -> Result<Self, Error> {
        let redis = config
            .limits
            .redis
            .as_ref()
            .map(|redis| Arc::new(SharedRedis::new(redis)));
        Self::with_redis(config, http, redis)
    }

    /// A manager that shares its token through `redis` (`None`: this
    /// process only), so the proxy can use one connection for the token and
    /// the response cache.
    pub(crate) fn with_redis(
        config: &Config,
        http: reqwest::Client,
        redis: Option<Arc<SharedRedis>>,
    ) -> Result<Self, Error> {
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
            shared: redis.map(|redis| {
                SharedToken::new(redis, &config.limits.credential_id, config.scope.as_str())
            }),
            rejected: Mutex::new(None),
        })
    }

    /// A token that is good for at least the expiry buffer.
    pub async fn token(&self) -> Result<Arc<UpstreamToken>, Error> {
        if let Some(token) = self.cached().filter(|t| t.is_fresh(SystemTime::now())) {
            return Ok(token);
        }
        let attempts_seen = self.attempts.load(Ordering::Acquire);
        let mut state = self.refresh.lock().await;
        let now = SystemTime::now();
        let cached = self.cached();
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
        match self.obtain().await {
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

    /// Forgets the token a 401 was answered to (and only that one). The
    /// shared copy in Redis is dropped by the refresh that follows, and only
    /// if Redis still holds this very token (compare-and-delete), never a
    /// newer one another instance stored meanwhile — which the refresh then
    /// adopts instead of calling OAuth.
    pub fn invalidate(&self, generation: u64) {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(token) = current.as_ref().filter(|t| t.generation == generation) {
            *self.rejected.lock().unwrap_or_else(PoisonError::into_inner) = Some(token.fingerprint);
            *current = None;
        }
    }

    /// A new token, called with the refresh lock held: from OAuth, or, with
    /// Redis, from the instance that fetched it for everyone.
    async fn obtain(&self) -> Result<UpstreamToken, Error> {
        let Some(shared) = &self.shared else {
            return self.fetch().await.map(|fetched| fetched.token);
        };
        let rejected = *self.rejected.lock().unwrap_or_else(PoisonError::into_inner);
        let rejected = rejected.as_ref();
        // Each Redis failure below means: do what we did without Redis.
        match shared.read(rejected).await {
            Ok(found) => {
                if let Some(token) = found.and_then(|found| self.adopt(found)) {
                    return Ok(token);
                }
            }
            Err(_) => return self.fetch().await.map(|fetched| fetched.token),
        }
        let deadline = Instant::now() + self.timeout;
        let mut pause = POLL_MIN;
        loop {
            match shared.try_lock().await {
                Ok(Some(lock)) => {
                    // The previous holder may have stored its token just
                    // before it let go of the lock.
                    if let Ok(Some(token)) = shared
                        .read(rejected)
                        .await
                        .map(|found| found.and_then(|found| self.adopt(found)))
                    {
                        shared.release(lock).await;
                        return Ok(token);
                    }
                    let fetched = self.fetch().await;
                    if let Ok(fetched) = &fetched {
                        self.publish(shared, fetched).await;
                    }
                    shared.release(lock).await;
                    return fetched.map(|fetched| fetched.token);
                }
                Ok(None) => {}
                Err(_) => return self.fetch().await.map(|fetched| fetched.token),
            }
            // Another instance is calling OAuth: wait for what it stores.
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            tokio::time::sleep(pause.mul_f64(0.5 + jitter()).min(deadline - now)).await;
            pause = (pause * 2).min(POLL_MAX);
            match shared.read(rejected).await {
                Ok(found) => {
                    if let Some(token) = found.and_then(|found| self.adopt(found)) {
                        return Ok(token);
                    }
                }
                Err(_) => return self.fetch().await.map(|fetched| fetched.token),
            }
        }
        tracing::warn!(
            waited_ms = self.timeout.as_millis() as u64,
            "no shared GigaChat token appeared while another instance held the lock; fetching one here"
        );
        let fetched = self.fetch().await?;
        self.publish(shared, &fetched).await;
        Ok(fetched.token)
    }

    /// A token another instance stored, if it is still good.
    fn adopt(&self, found: Found) -> Option<UpstreamToken> {
        let now = SystemTime::now();
        let expires_at = UNIX_EPOCH + Duration::from_millis(found.expires_at_ms);
        if expires_at <= now || found.fresh_for.is_zero() {
            return None;
        }
        let refresh_at = (now + found.fresh_for).min(expires_at);
        let token = self
            .token_from(found.access_token.expose(), refresh_at, expires_at)
            .ok()?;
        tracing::info!(
            generation = token.generation,
            fresh_for_s = found.fresh_for.as_secs(),
            "using the GigaChat access token shared through Redis"
        );
        Some(token)
    }

    async fn publish(&self, shared: &SharedToken, fetched: &Fetched) {
        let fresh_for = fetched
            .token
            .refresh_at
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        // A failure is logged by `shared`; this instance keeps its token.
        let _ = shared
            .publish(
                fetched.access_token.expose(),
                fetched.expires_at_ms,
                fresh_for,
            )
            .await;
    }

    fn token_from(
        &self,
        access_token: &str,
        refresh_at: SystemTime,
        expires_at: SystemTime,
    ) -> Result<UpstreamToken, Error> {
        let mut bearer = HeaderValue::try_from(format!("Bearer {access_token}")).map_err(|_| {
            Error::UpstreamAuthMalformed("the access token is not a valid header value")
        })?;
        bearer.set_sensitive(true);
        Ok(UpstreamToken {
            header: bearer,
            generation: self.generation.fetch_add(1, Ordering::AcqRel) + 1,
            refresh_at,
            expires_at,
            fingerprint: shared_token::fingerprint(access_token),
        })
    }

    /// Number of OAuth calls made so far.
    pub fn oauth_calls(&self) -> u64 {
        self.attempts.load(Ordering::Acquire)
    }

    fn cached(&self) -> Option<Arc<UpstreamToken>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// One OAuth call (counted in [`Self::oauth_calls`] and the
    /// `gigachat_proxy_oauth_refresh_total` metric).
    async fn fetch(&self) -> Result<Fetched, Error> {
        let result = self.call_oauth().await;
        crate::metrics::record_oauth(if result.is_ok() { "ok" } else { "error" });
        result
    }

    async fn call_oauth(&self) -> Result<Fetched, Error> {
        self.attempts.fetch_add(1, Ordering::AcqRel);
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
        let access_token = Secret::new(answer.access_token);

        let now = SystemTime::now();
        let expires_in = expires_at_duration(answer.expires_at);
        let expires_at = UNIX_EPOCH + expires_in;
        let lifetime = expires_at.duration_since(now).unwrap_or_default();
        let refresh_at = now + refresh_after(lifetime, self.buffer);
        let token = self.token_from(access_token.expose(), refresh_at, expires_at)?;
        tracing::info!(
            oauth_ms = started.elapsed().as_millis() as u64,
            expires_in_s = lifetime.as_secs(),
            generation = token.generation,
            "fetched a GigaChat access token"
        );
        Ok(Fetched {
            token,
            access_token,
            expires_at_ms: u64::try_from(expires_in.as_millis()).unwrap_or(u64::MAX),
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

/// A number in [0, 1), so instances waiting on the same lock do not poll
/// Redis in lockstep.
fn jitter() -> f64 {
    (uuid::Uuid::new_v4().as_u128() % 1_000_000) as f64 / 1_000_000.0
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

    const KEY: &str = "ZW11bGF0b3ItY2xpZW50LWlkOmVtdWxhdG9yLWNsaWVudC1zZWNyZXQ=";

    async fn emulator() -> gigachat_emulator::Emulator {
        let config = gigachat_emulator::EmulatorConfig {
            credentials: vec![gigachat_emulator::Credential::new(KEY, "GIGACHAT_API_PERS")],
            ..gigachat_emulator::EmulatorConfig::default()
        };
        gigachat_emulator::Emulator::start(config, ([127, 0, 0, 1], 0).into())
            .await
            .unwrap()
    }

    fn manager(emulator: &gigachat_emulator::Emulator, extra: &[(&str, &str)]) -> TokenManager {
        let mut vars = vec![
            ("GIGACHAT_CREDENTIALS".to_owned(), KEY.to_owned()),
            ("GIGACHAT_AUTH_URL".to_owned(), emulator.auth_url()),
            ("GIGACHAT_BASE_URL".to_owned(), emulator.base_url()),
        ];
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let config = Config::from_lookup(crate::config::Platform::Local, |name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
        .unwrap();
        TokenManager::new(&config, reqwest::Client::new()).unwrap()
    }

    #[tokio::test]
    async fn debug_output_never_shows_the_token() {
        let emulator = emulator().await;
        let tokens = manager(&emulator, &[]);
        let token = tokens.token().await.unwrap();
        let value = token.header.to_str().unwrap().trim_start_matches("Bearer ");
        assert!(value.len() > 8);
        for printed in [format!("{token:?}"), format!("{tokens:?}")] {
            assert!(!printed.contains(value), "{printed}");
        }
    }

    #[tokio::test]
    async fn invalidate_forgets_only_the_rejected_generation() {
        let emulator = emulator().await;
        let tokens = manager(&emulator, &[]);
        let first = tokens.token().await.unwrap();
        tokens.invalidate(first.generation + 7);
        assert_eq!(tokens.token().await.unwrap().generation, first.generation);
        assert!(tokens.rejected.lock().unwrap().is_none());
        tokens.invalidate(first.generation);
        assert_eq!(
            *tokens.rejected.lock().unwrap(),
            Some(first.fingerprint),
            "the rejected token is remembered so Redis cannot hand it back"
        );
        let second = tokens.token().await.unwrap();
        assert!(second.generation > first.generation);
        assert_eq!(tokens.oauth_calls(), 2);
        assert_eq!(emulator.stats().oauth_calls, 2);
    }

    #[tokio::test]
    async fn an_unreachable_redis_costs_one_local_oauth_call_and_little_time() {
        let emulator = emulator().await;
        let tokens = Arc::new(manager(
            &emulator,
            &[
                ("REDIS_URL", "redis://127.0.0.1:1"),
                ("GIGACHAT_PROXY_REDIS_TIMEOUT_MS", "200"),
            ],
        ));
        assert!(tokens.shared.is_some());
        let started = Instant::now();
        let burst = (0..20).map(|_| {
            let tokens = Arc::clone(&tokens);
            tokio::spawn(async move { tokens.token().await.map(|t| t.generation) })
        });
        for result in futures_util::future::join_all(burst).await {
            assert_eq!(result.unwrap().unwrap(), 1);
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(emulator.stats().oauth_calls, 1);
    }
}
