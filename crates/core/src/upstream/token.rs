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
//!
//! The exchange itself is [`super::oauth`]; this module decides when to
//! call it, how often to try, and how long its token is used.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use http::HeaderValue;

use super::oauth::{self, Grant, OAuth};
use super::retry;
use super::shared_token::{self, FetchToken, Fresh, Holding, SharedToken};
use crate::config::{Config, RetryPolicy};
use crate::error::Error;
use crate::jitter;
use crate::redis::SharedRedis;

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
    oauth: OAuth,
    buffer: Duration,
    timeout: Duration,
    retry: RetryPolicy,
    current: RwLock<Option<Arc<UpstreamToken>>>,
    refresh: tokio::sync::Mutex<RefreshState>,
    /// Refreshes finished (either way), so a waiter can tell that the one
    /// it queued behind is over.
    refreshes: AtomicU64,
    generation: AtomicU64,
    /// The token shared through Redis, when one is configured.
    shared: Option<SharedToken>,
    /// The fingerprint of the token GigaChat last answered 401 to: if Redis
    /// still holds that token it is deleted, never adopted again.
    rejected: Mutex<Option<[u8; 32]>>,
}

impl std::fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenManager")
            .field("auth_host", &self.oauth.host())
            .field("shared", &self.shared)
            .field("oauth_calls", &self.oauth_calls())
            .finish_non_exhaustive()
    }
}

impl TokenManager {
    /// A manager that shares its token through `redis` (`None`: this
    /// process only), so the proxy can use one connection for the token and
    /// the response cache.
    pub(crate) fn new(
        config: &Config,
        http: reqwest::Client,
        redis: Option<Arc<SharedRedis>>,
    ) -> Result<Self, Error> {
        let oauth = OAuth::new(config, http)?;
        let shared = redis.map(|redis| {
            SharedToken::new(
                redis,
                &config.credential_id,
                config.scope.as_str(),
                oauth.host(),
                config.timeout,
            )
        });
        Ok(Self {
            oauth,
            buffer: config.token_expiry_buffer,
            timeout: config.timeout,
            retry: config.retry.clone(),
            current: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(RefreshState::default()),
            refreshes: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            shared,
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
            Ok(Some(fresh)) => {
                let token = Arc::new(self.mint(fresh));
                *self.current.write().unwrap_or_else(PoisonError::into_inner) =
                    Some(Arc::clone(&token));
                state.last_error = None;
                Ok(token)
            }
            // Another instance is refreshing; only a refresh that had a
            // usable token at hand is told so.
            Ok(None) => {
                state.last_error = None;
                usable.ok_or_else(|| shared_token::waited_too_long(self.timeout))
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

    /// Number of OAuth calls made so far.
    pub fn oauth_calls(&self) -> u64 {
        self.oauth.calls()
    }

    /// A new token, called with the refresh lock held: from OAuth, or, with
    /// Redis, from the instance that fetched it for everyone. `patient`:
    /// retry transient failures and wait for another instance's refresh;
    /// otherwise one attempt, and `None` when another instance is
    /// refreshing (the caller has a usable token).
    async fn obtain(&self, deadline: Instant, patient: bool) -> Result<Option<Fresh>, Error> {
        let refresh = Refresh {
            tokens: self,
            deadline,
            patient,
        };
        let Some(shared) = &self.shared else {
            return refresh.fetch(None).await.map(Some);
        };
        let rejected = *self.rejected.lock().unwrap_or_else(PoisonError::into_inner);
        shared
            .obtain(rejected.as_ref(), deadline, patient, &refresh)
            .await
    }

    /// When a token just fetched is due for refresh.
    fn schedule(&self, grant: Grant) -> Fresh {
        let now = SystemTime::now();
        let lifetime = grant.expires_at.duration_since(now).unwrap_or_default();
        Fresh {
            refresh_at: now + refresh_after(lifetime, self.buffer),
            grant,
        }
    }

    /// The token this process uses from now on, numbered for
    /// [`Self::invalidate`].
    fn mint(&self, fresh: Fresh) -> UpstreamToken {
        UpstreamToken {
            fingerprint: shared_token::fingerprint(fresh.grant.access_token.expose()),
            header: fresh.grant.header,
            generation: self.generation.fetch_add(1, Ordering::AcqRel) + 1,
            refresh_at: fresh.refresh_at,
            expires_at: fresh.grant.expires_at,
        }
    }

    fn cached(&self) -> Option<Arc<UpstreamToken>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// One refresh's way to fetch a token itself: the OAuth exchange, and when
/// `patient`, retries of its transient failures by the API calls' rules
/// until `deadline`.
struct Refresh<'a> {
    tokens: &'a TokenManager,
    deadline: Instant,
    patient: bool,
}

impl FetchToken for Refresh<'_> {
    async fn fetch(&self, holding: Option<Holding<'_>>) -> Result<Fresh, Error> {
        let Self {
            tokens,
            deadline,
            patient,
        } = *self;
        let mut retries = 0u32;
        loop {
            let failed = match tokens.oauth.exchange(deadline).await {
                Ok(grant) => return Ok(tokens.schedule(grant)),
                Err(failed) => failed,
            };
            let delay = (patient
                && retries < tokens.retry.max_retries
                && oauth::is_transient(&failed.error, &tokens.retry))
            .then(|| retry::delay_before(&tokens.retry, retries, failed.retry_after, deadline))
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
            // The lock, when this instance holds it, stays ours meanwhile.
            if let Some(holding) = &holding {
                holding.extend_over(delay).await;
            }
            tokio::time::sleep(delay).await;
        }
    }
}

/// How long a token is used before it is refreshed: the SDK's buffer ahead
/// of expiry, minus up to 10% jitter so a fleet of instances does not
/// refresh in the same second. Tokens too short-lived for the buffer (test
/// setups) are refreshed at half their life instead of on every request.
fn refresh_after(lifetime: Duration, buffer: Duration) -> Duration {
    let early = buffer + jitter::up_to(buffer / 10);
    if lifetime > early * 2 {
        lifetime - early
    } else {
        lifetime / 2
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::error::TransportCause;

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
        let redis = config
            .redis
            .as_ref()
            .map(|redis| Arc::new(SharedRedis::new(redis)));
        TokenManager::new(&config, reqwest::Client::new(), redis).unwrap()
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
        // Which refusals are the key's: `oauth::tests::refusals_of_the_key_are_told_from_transient_failures`.
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
        let access_token = first.header.to_str().unwrap().trim_start_matches("Bearer ");
        let due = tokens.mint(Fresh {
            grant: Grant::new(
                crate::secret::Secret::new(access_token.to_owned()),
                now + Duration::from_secs(60),
            )
            .unwrap(),
            refresh_at: now - Duration::from_secs(1),
        });
        *tokens.current.write().unwrap() = Some(Arc::new(due));
        emulator.faults().fail_next_oauth(500, 10);
        let kept = tokens.token().await.unwrap();
        assert_eq!(kept.header, first.header);
        assert_eq!(emulator.stats().oauth_calls, 2, "no retries");
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
