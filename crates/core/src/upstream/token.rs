//! The GigaChat access token: one per process, fetched once, shared by all
//! requests, refreshed ahead of expiry, never fetched twice at once.
//!
//! GigaChat allows about 10 OAuth calls per second, and a cold serverless
//! instance receives its first requests all at once; without single-flight
//! every one of them would call OAuth and most would get 429.
//!
//! A transient failure of the exchange (a refused connection, 429, 5xx) is
//! retried by the refresh itself, with the API calls' rules
//! ([`super::retry`]) and within `GIGACHAT_TIMEOUT`, so one hiccup of the
//! OAuth service does not fail the request; a refusal of the key is final
//! at once. Waiters that queued behind a refresh share its outcome, retries
//! included, instead of each retrying. When a token GigaChat still accepts
//! is at hand (a refresh ahead of expiry), the refresh makes one attempt
//! and the request goes on with that token.
//!
//! With Redis configured, the instances also share the token (see
//! [`super::shared_token`]): a process whose token is stale first looks in
//! Redis, and only the instance that wins a lock calls OAuth (and retries),
//! while the others wait for the token it stores — or for the failure it
//! stores when its retries are spent, which they answer with rather than
//! all calling OAuth again at once. Any Redis failure falls back to the
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

use super::retry;
use super::shared_token::{self, Cause, Entry, Failure, Found, Lock, SharedToken};
use crate::config::{Config, RetryPolicy};
use crate::error::{Error, TransportCause};
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
    retry: RetryPolicy,
    current: RwLock<Option<Arc<UpstreamToken>>>,
    refresh: tokio::sync::Mutex<RefreshState>,
    /// Refreshes finished (either way), so a waiter can tell that the one
    /// it queued behind is over.
    refreshes: AtomicU64,
    attempts: AtomicU64,
    generation: AtomicU64,
    /// The token shared through Redis, when one is configured.
    shared: Option<SharedToken>,
    /// The fingerprint of the token GigaChat last answered 401 to: if Redis
    /// still holds that token it is deleted, never adopted again.
    rejected: Mutex<Option<[u8; 32]>>,
}

/// A failed OAuth attempt, with how long GigaChat asked to wait.
struct Failed {
    error: Error,
    retry_after: Option<Duration>,
}

impl From<Error> for Failed {
    fn from(error: Error) -> Self {
        Self {
            error,
            retry_after: None,
        }
    }
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
            retry: config.retry.clone(),
            current: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(RefreshState::default()),
            refreshes: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            shared: redis.map(|redis| {
                SharedToken::new(redis, &config.limits.credential_id, config.scope.as_str())
            }),
            rejected: Mutex::new(None),
        })
    }

    /// A token that is good for at least the expiry buffer, within
    /// `GIGACHAT_TIMEOUT` from now.
    pub async fn token(&self) -> Result<Arc<UpstreamToken>, Error> {
        self.token_by(Instant::now() + self.timeout).await
    }

    /// [`Self::token`], giving up at `deadline`: a caller that also has to
    /// make its own call within `GIGACHAT_TIMEOUT` passes its deadline, so
    /// OAuth retries spend the same budget.
    pub async fn token_by(&self, deadline: Instant) -> Result<Arc<UpstreamToken>, Error> {
        if let Some(token) = self.cached().filter(|t| t.is_fresh(SystemTime::now())) {
            return Ok(token);
        }
        let refreshes_seen = self.refreshes.load(Ordering::Acquire);
        let mut state = self.refresh.lock().await;
        let now = SystemTime::now();
        let cached = self.cached();
        if let Some(token) = cached.as_ref().filter(|t| t.is_fresh(now)) {
            return Ok(Arc::clone(token));
        }
        let usable = cached.filter(|t| t.is_usable(now));
        if self.refreshes.load(Ordering::Acquire) != refreshes_seen
            && let Some(err) = &state.last_error
        {
            return match usable {
                Some(token) => Ok(token),
                None => Err(err.clone()),
            };
        }
        // With a token GigaChat still accepts, a failed refresh costs the
        // request nothing: one attempt, and a later request tries again.
        let patient = usable.is_none();
        let outcome = self.obtain(deadline, patient).await;
        self.refreshes.fetch_add(1, Ordering::AcqRel);
        match outcome {
            Ok(Some(token)) => {
                let token = Arc::new(token);
                *self.current.write().unwrap_or_else(PoisonError::into_inner) =
                    Some(Arc::clone(&token));
                state.last_error = None;
                Ok(token)
            }
            // Another instance is refreshing; only a refresh that had a
            // usable token at hand is told so.
            Ok(None) => {
                state.last_error = None;
                usable.ok_or_else(|| self.waited_too_long())
            }
            Err(err) => {
                state.last_error = Some(err.clone());
                // A refresh ahead of expiry that failed still leaves a token
                // GigaChat accepts; use it rather than fail the request.
                match usable {
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
    /// Redis, from the instance that fetched it for everyone. `patient`:
    /// retry transient failures and wait for another instance's refresh;
    /// otherwise one attempt, and `None` when another instance is
    /// refreshing (the caller has a usable token).
    async fn obtain(
        &self,
        deadline: Instant,
        patient: bool,
    ) -> Result<Option<UpstreamToken>, Error> {
        let Some(shared) = &self.shared else {
            return self.fetch_here(deadline, patient).await;
        };
        let rejected = *self.rejected.lock().unwrap_or_else(PoisonError::into_inner);
        let rejected = rejected.as_ref();
        // Each Redis failure below means: do what we did without Redis.
        match shared.read(rejected).await {
            Ok(found) => {
                if let Some(settled) = found.and_then(|entry| self.settle(entry)) {
                    return settled.map(Some);
                }
            }
            Err(_) => {
                return self.fetch_here(deadline, patient).await;
            }
        }
        let mut pause = POLL_MIN;
        loop {
            match shared.try_lock().await {
                Ok(Some(lock)) => {
                    return self
                        .fetch_for_everyone(shared, lock, rejected, deadline, patient)
                        .await
                        .map(Some);
                }
                Ok(None) if !patient => return Ok(None),
                Ok(None) => {}
                Err(_) => {
                    return self.fetch_here(deadline, patient).await;
                }
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
                    if let Some(settled) = found.and_then(|entry| self.settle(entry)) {
                        return settled.map(Some);
                    }
                }
                Err(_) => {
                    return self.fetch_here(deadline, patient).await;
                }
            }
        }
        // Fetching here now would be the stampede the lock prevents: the
        // holder is still retrying (it extends the lock), or died within the
        // lock's TTL.
        tracing::warn!(
            "no shared GigaChat token appeared within the timeout while another instance held the lock"
        );
        Err(self.waited_too_long())
    }

    /// OAuth for this instance only (no Redis, or Redis failed).
    async fn fetch_here(
        &self,
        deadline: Instant,
        patient: bool,
    ) -> Result<Option<UpstreamToken>, Error> {
        let fetched = self.fetch(deadline, patient, None).await?;
        Ok(Some(fetched.token))
    }

    /// With the lock held: OAuth (retried) for every instance, the token or
    /// the final failure stored for them, then the lock released.
    async fn fetch_for_everyone(
        &self,
        shared: &SharedToken,
        lock: Lock,
        rejected: Option<&[u8; 32]>,
        deadline: Instant,
        patient: bool,
    ) -> Result<UpstreamToken, Error> {
        // The previous holder may have stored its token (or its failure)
        // just before it let go of the lock.
        if let Ok(Some(settled)) = shared
            .read(rejected)
            .await
            .map(|found| found.and_then(|entry| self.settle(entry)))
        {
            shared.release(lock).await;
            return settled;
        }
        let fetched = self.fetch(deadline, patient, Some((shared, &lock))).await;
        match &fetched {
            Ok(fetched) => self.publish(shared, fetched).await,
            // One attempt ahead of expiry is not the fleet's verdict: an
            // instance without a usable token still tries in full.
            Err(err) if patient => {
                if let Some(failure) = failure_of(err) {
                    shared.publish_failure(failure).await;
                }
            }
            Err(_) => {}
        }
        shared.release(lock).await;
        fetched.map(|fetched| fetched.token)
    }

    /// What an entry in Redis means for this refresh: a token to adopt, the
    /// error another instance's refresh ended with, or (`None`) nothing
    /// usable.
    fn settle(&self, entry: Entry) -> Option<Result<UpstreamToken, Error>> {
        match entry {
            Entry::Token(found) => self.adopt(found).map(Ok),
            Entry::Failed(failure) => {
                tracing::warn!(
                    ?failure,
                    "another instance's GigaChat OAuth call failed moments ago; answering with its error"
                );
                Some(Err(self.error_of(failure)))
            }
        }
    }

    /// The error this instance answers with for another's failure.
    fn error_of(&self, failure: Failure) -> Error {
        match failure {
            Failure::Rejected { status, code } => Error::UpstreamAuthRejected {
                status,
                code,
                reason: describe_oauth_error(status, code, None),
            },
            Failure::RateLimited => Error::UpstreamAuthRateLimited,
            Failure::Failed { status } => Error::UpstreamAuthFailed { status },
            Failure::Malformed => {
                Error::UpstreamAuthMalformed("the answer has no usable access_token/expires_at")
            }
            Failure::Unreachable { cause } => Error::UpstreamUnreachable {
                stage: "oauth",
                host: self.auth_host.clone(),
                cause: match cause {
                    Cause::Tls => TransportCause::Tls,
                    Cause::Connect => TransportCause::Connect,
                    Cause::Other => TransportCause::Other,
                },
            },
            Failure::Timeout => Error::UpstreamTimeout {
                stage: "oauth",
                seconds: self.timeout.as_secs(),
            },
        }
    }

    fn waited_too_long(&self) -> Error {
        Error::UpstreamTimeout {
            stage: "waiting for another instance's OAuth call",
            seconds: self.timeout.as_secs(),
        }
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

    /// The OAuth exchange: one call, and when `patient`, retries of its
    /// transient failures by the API calls' rules until `deadline`. With
    /// `lock`, the shared lock is kept ours across the waits.
    async fn fetch(
        &self,
        deadline: Instant,
        patient: bool,
        lock: Option<(&SharedToken, &Lock)>,
    ) -> Result<Fetched, Error> {
        let mut retries = 0u32;
        loop {
            let failed = match self.attempt(deadline).await {
                Ok(fetched) => return Ok(fetched),
                Err(failed) => failed,
            };
            let delay = (patient
                && retries < self.retry.max_retries
                && self.is_transient(&failed.error))
            .then(|| retry::delay_before(&self.retry, retries, failed.retry_after, deadline))
            .flatten();
            let Some(delay) = delay else {
                return Err(failed.error);
            };
            retries += 1;
            tracing::info!(
                retry = retries,
                delay_ms = delay.as_millis() as u64,
                error = %failed.error,
                "retrying a transient GigaChat OAuth failure"
            );
            if let Some((shared, lock)) = lock {
                shared.extend(lock, shared_token::LOCK_TTL + delay).await;
            }
            tokio::time::sleep(delay).await;
        }
    }

    /// Worth another attempt: a connection that was never made, or a status
    /// in `GIGACHAT_RETRY_ON_STATUS_CODES` that does not refuse the key.
    fn is_transient(&self, error: &Error) -> bool {
        let retried = |status: u16| self.retry.on_status.contains(&status);
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

    /// One OAuth call (counted in [`Self::oauth_calls`] and the
    /// `gigachat_proxy_oauth_refresh_total` metric).
    async fn attempt(&self, deadline: Instant) -> Result<Fetched, Failed> {
        let result = self.call_oauth(deadline).await;
        crate::metrics::record_oauth(if result.is_ok() { "ok" } else { "error" });
        result
    }

    async fn call_oauth(&self, deadline: Instant) -> Result<Fetched, Failed> {
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
        self.attempts.fetch_add(1, Ordering::AcqRel);
        let request_uid = uuid::Uuid::new_v4().to_string();
        let response = self
            .http
            .post(self.auth_url.clone())
            .header(header::AUTHORIZATION, self.basic.clone())
            .header("RqUID", request_uid)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .timeout(remaining)
            .body(self.scope_body.clone())
            .send()
            .await
            .map_err(|err| super::transport_error(&err, "oauth", &self.auth_host, timeout_secs))?;
        let status = response.status();
        let retry_after = retry::retry_after(response.headers());
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
            return Err(Failed {
                error: err,
                retry_after,
            });
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

/// GigaChat's refusals of the key itself (HTTP 400/401, codes 1, 4, 5, 6,
/// 7: wrong key, wrong scope, undecodable header): asking again cannot
/// change the answer and only spends the OAuth rate limit.
fn refuses_the_key(status: u16, code: Option<i64>) -> bool {
    matches!(status, 400 | 401) || matches!(code, Some(1 | 4..=7))
}

/// The part of an OAuth error another instance can answer with.
fn failure_of(error: &Error) -> Option<Failure> {
    Some(match error {
        Error::UpstreamAuthRejected { status, code, .. } => Failure::Rejected {
            status: *status,
            code: *code,
        },
        Error::UpstreamAuthRateLimited => Failure::RateLimited,
        Error::UpstreamAuthFailed { status } => Failure::Failed { status: *status },
        Error::UpstreamAuthMalformed(_) => Failure::Malformed,
        Error::UpstreamUnreachable { cause, .. } => Failure::Unreachable {
            cause: match cause {
                TransportCause::Tls => Cause::Tls,
                TransportCause::Connect => Cause::Connect,
                TransportCause::Other => Cause::Other,
            },
        },
        Error::UpstreamTimeout { .. } => Failure::Timeout,
        _ => return None,
    })
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
        // `extra` first: it overrides the defaults that follow.
        let mut vars: Vec<(String, String)> = extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        vars.extend([
            ("GIGACHAT_CREDENTIALS".to_owned(), KEY.to_owned()),
            ("GIGACHAT_AUTH_URL".to_owned(), emulator.auth_url()),
            ("GIGACHAT_BASE_URL".to_owned(), emulator.base_url()),
        ]);
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

    /// Retries of the OAuth exchange with short waits.
    const QUICK_RETRIES: [(&str, &str); 1] = [("GIGACHAT_RETRY_BACKOFF_FACTOR", "0.02")];

    #[tokio::test]
    async fn a_transient_oauth_failure_is_retried_once_for_all_waiters() {
        let emulator = emulator().await;
        emulator.faults().fail_next_oauth(500, 1);
        emulator.faults().set_oauth_delay(Duration::from_millis(50));
        let tokens = Arc::new(manager(&emulator, &QUICK_RETRIES));
        let burst = (0..10).map(|_| {
            let tokens = Arc::clone(&tokens);
            tokio::spawn(async move { tokens.token().await.map(|t| t.generation) })
        });
        for result in futures_util::future::join_all(burst).await {
            assert_eq!(result.unwrap().unwrap(), 1);
        }
        assert_eq!(emulator.stats().oauth_calls, 2, "one failure, one retry");
        assert_eq!(emulator.stats().oauth_failures, 1);
    }

    #[tokio::test]
    async fn a_refused_connection_is_retried() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let auth_url = format!("http://{}/api/v2/oauth", closed.local_addr().unwrap());
        drop(closed);
        let emulator = emulator().await;
        let tokens = manager(
            &emulator,
            &[
                ("GIGACHAT_AUTH_URL", &auth_url),
                ("GIGACHAT_RETRY_BACKOFF_FACTOR", "0.02"),
            ],
        );
        let err = tokens.token().await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::UpstreamUnreachable {
                    cause: TransportCause::Connect,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(tokens.oauth_calls(), 3, "the call and two retries");
    }

    #[tokio::test]
    async fn a_refusal_of_the_key_is_never_retried() {
        let emulator = emulator().await;
        let other_key = "b3RoZXItY2xpZW50Om90aGVyLXNlY3JldA==";
        // Even an operator who lists 400 and 401 as transient does not make
        // the proxy spend the OAuth rate limit on a wrong key or scope.
        let config = [
            ("GIGACHAT_CREDENTIALS", other_key),
            ("GIGACHAT_RETRY_ON_STATUS_CODES", "400,401,429,500"),
            ("GIGACHAT_RETRY_BACKOFF_FACTOR", "0.02"),
        ];
        let tokens = manager(&emulator, &config);
        let err = tokens.token().await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::UpstreamAuthRejected {
                    status: 401,
                    code: Some(6),
                    ..
                }
            ),
            "{err:?}"
        );
        let scope = manager(
            &emulator,
            &[
                ("GIGACHAT_SCOPE", "GIGACHAT_API_CORP"),
                ("GIGACHAT_RETRY_ON_STATUS_CODES", "400,401,429,500"),
            ],
        );
        let err = scope.token().await.unwrap_err();
        assert!(
            matches!(err, Error::UpstreamAuthRejected { code: Some(7), .. }),
            "{err:?}"
        );
        assert_eq!(emulator.stats().oauth_calls, 2, "one call each");
        assert!(refuses_the_key(400, Some(1)) && refuses_the_key(401, None));
        assert!(refuses_the_key(403, Some(4)) && !refuses_the_key(403, None));
        assert!(!refuses_the_key(429, Some(429)) && !refuses_the_key(500, None));
    }

    #[tokio::test]
    async fn a_retry_after_that_outlasts_the_timeout_ends_the_retries() {
        let emulator = emulator().await;
        emulator
            .faults()
            .fail_next_oauth_with_retry_after(429, 5, Some(5));
        let tokens = manager(&emulator, &[("GIGACHAT_TIMEOUT", "2")]);
        let started = Instant::now();
        let err = tokens.token().await.unwrap_err();
        assert!(matches!(err, Error::UpstreamAuthRateLimited), "{err:?}");
        assert_eq!(emulator.stats().oauth_calls, 1);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn retries_stop_at_the_deadline_with_the_last_error() {
        let emulator = emulator().await;
        emulator.faults().fail_next_oauth(503, 1000);
        let tokens = manager(
            &emulator,
            &[
                ("GIGACHAT_TIMEOUT", "1"),
                ("GIGACHAT_MAX_RETRIES", "10"),
                ("GIGACHAT_RETRY_BACKOFF_FACTOR", "0.05"),
            ],
        );
        let started = Instant::now();
        let err = tokens.token().await.unwrap_err();
        assert!(
            matches!(err, Error::UpstreamAuthFailed { status: 503 }),
            "{err:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        // 0.05 + 0.1 + 0.2 + 0.4 s of waits fit in 1 s at most.
        let calls = emulator.stats().oauth_calls;
        assert!((3..=5).contains(&calls), "{calls}");
    }

    #[tokio::test]
    async fn a_refresh_ahead_of_expiry_makes_one_attempt_and_keeps_the_token() {
        let emulator = emulator().await;
        let tokens = manager(&emulator, &QUICK_RETRIES);
        let first = tokens.token().await.unwrap();
        // Due for refresh, still accepted by GigaChat for a minute.
        let now = SystemTime::now();
        let due = tokens
            .token_from(
                first.header.to_str().unwrap().trim_start_matches("Bearer "),
                now - Duration::from_secs(1),
                now + Duration::from_secs(60),
            )
            .unwrap();
        *tokens.current.write().unwrap() = Some(Arc::new(due));
        emulator.faults().fail_next_oauth(500, 10);
        let kept = tokens.token().await.unwrap();
        assert_eq!(kept.header, first.header);
        assert_eq!(emulator.stats().oauth_calls, 2, "no retries");
    }

    #[test]
    fn every_oauth_failure_can_be_shared_and_read_back() {
        let config = Config::from_lookup(crate::config::Platform::Local, |name| {
            (name == "GIGACHAT_CREDENTIALS").then(|| KEY.to_owned())
        })
        .unwrap();
        let tokens = TokenManager::new(&config, reqwest::Client::new()).unwrap();
        let errors = [
            Error::UpstreamAuthRejected {
                status: 401,
                code: Some(6),
                reason: describe_oauth_error(401, Some(6), None),
            },
            Error::UpstreamAuthRateLimited,
            Error::UpstreamAuthFailed { status: 502 },
            Error::UpstreamUnreachable {
                stage: "oauth",
                host: tokens.auth_host.clone(),
                cause: TransportCause::Connect,
            },
            Error::UpstreamTimeout {
                stage: "oauth",
                seconds: config.timeout.as_secs(),
            },
        ];
        for error in errors {
            let failure = failure_of(&error).unwrap();
            let back = tokens.error_of(failure);
            assert_eq!(back.to_string(), error.to_string());
            assert_eq!(back.code(), error.code());
        }
        assert!(failure_of(&Error::RouteNotFound).is_none());
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
