//! The GigaChat access token shared through Redis, so N instances make one
//! OAuth call per token lifetime instead of N (GigaChat allows about 10 per
//! second per key, and a cold fleet starts all at once).
//!
//! Keys, under the limits' prefix:
//! - `{prefix}:v1:token:{credential fingerprint}:{scope}`: JSON
//!   `{"access_token","expires_at_ms"}`, expiring (`PX`) when the token
//!   should be refreshed (its expiry minus the buffer), so a token found
//!   here is fresh and its `PTTL` says for how long. When the lock holder's
//!   OAuth exchange failed for good (retries included), the same key holds
//!   `{"failed":{"kind",…}}` for [`FAILURE_TTL`] instead (`SET NX`, never
//!   over a token), so the instances that waited for it answer with its
//!   error rather than each calling OAuth again at once;
//! - the same key plus `:lock`: `SET NX PX 10000` with a random owner while
//!   one instance calls OAuth, extended by its owner before each retry, and
//!   released by a compare-and-delete script so a slow instance never frees
//!   a lock that expired and was taken by another.
//!
//! [`SharedToken::obtain`] runs the protocol for a refresh of
//! [`TokenManager`](super::token::TokenManager), which hands it the way to
//! fetch a token itself (the OAuth exchange with its retries). Every Redis
//! failure is logged here at most every 10 s, and the refresh then does what
//! it did before Redis existed: it fetches its own token.
//!
//! **Security.** The value is a live GigaChat access token (30 minutes):
//! anyone who can read this Redis can call GigaChat on the proxy's key until
//! it expires. Use a Redis that only the proxy can reach, with a password
//! and TLS (`rediss://`). The token is never logged, and the types holding
//! it print `***`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::Script;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::oauth::{Grant, describe_oauth_error};
use crate::error::{Error, TransportCause};
use crate::jitter;
use crate::redis::{SharedRedis, Unavailable, WARN_EVERY, WarnEvery};
use crate::secret::Secret;

/// How long a lock holder may take before another instance may try; an
/// OAuth call that takes longer than this is rare (and then two instances
/// call OAuth, which is still correct).
pub(crate) const LOCK_TTL: Duration = Duration::from_secs(10);

/// How long a failure of the lock holder stands for the whole fleet: long
/// enough for every waiter (polling at most every ~0.4 s) to see it, short
/// enough that the next requests soon try OAuth again.
pub(crate) const FAILURE_TTL: Duration = Duration::from_secs(2);

/// Waiting for another instance's OAuth call: the first look comes soon (an
/// OAuth call takes a few hundred ms), later ones back off to this.
const POLL_MIN: Duration = Duration::from_millis(25);
const POLL_MAX: Duration = Duration::from_millis(250);

/// KEYS[1] = the token key. Returns nil, or {value, PTTL in ms}, read
/// atomically so the TTL belongs to the value.
const READ_SCRIPT: &str = r"
local value = redis.call('GET', KEYS[1])
if not value then
  return false
end
return {value, redis.call('PTTL', KEYS[1])}
";

/// KEYS[1] = the lock; ARGV[1] = its owner; ARGV[2] = the new TTL in ms.
/// Extends only a lock that is still ours.
const EXTEND_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// KEYS[1] = a key; ARGV[1] = the value it must still hold. Deletes it only
/// then (releasing our lock; dropping the token a 401 was answered to but
/// not a newer one another instance stored meanwhile).
const COMPARE_AND_DELETE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

#[derive(Serialize, Deserialize)]
struct Stored<'a> {
    access_token: &'a str,
    expires_at_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct StoredFailure {
    failed: Failure,
}

/// What the token key holds.
#[derive(Debug)]
enum Entry {
    Token(Found),
    /// The last lock holder's OAuth exchange failed moments ago.
    Failed(Failure),
}

/// Why the lock holder's OAuth exchange failed: the kind of error and its
/// numbers only, never GigaChat's text, so every instance can answer with
/// the same error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Failure {
    Rejected { status: u16, code: Option<i64> },
    RateLimited,
    Failed { status: u16 },
    Malformed,
    Unreachable { cause: Cause },
    Timeout,
}

/// [`crate::error::TransportCause`], in a form that can be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Cause {
    Tls,
    Connect,
    Other,
}

/// A token found in Redis.
struct Found {
    access_token: Secret<String>,
    expires_at_ms: u64,
    /// How long it stays fresh (the key's remaining TTL).
    fresh_for: Duration,
}

impl std::fmt::Debug for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Found")
            .field("access_token", &self.access_token)
            .field("expires_at_ms", &self.expires_at_ms)
            .field("fresh_for", &self.fresh_for)
            .finish()
    }
}

/// A held lock; released with [`SharedToken::release`] (or it expires).
#[derive(Debug)]
struct Lock {
    owner: String,
}

/// The lock, held by this instance while it fetches a token for every
/// instance: handed to the fetch so it can keep the lock through its waits.
pub(crate) struct Holding<'a> {
    shared: &'a SharedToken,
    lock: &'a Lock,
}

impl Holding<'_> {
    /// Keeps the lock ours through a wait of `wait` before a retry, so no
    /// other instance calls OAuth meanwhile.
    pub(crate) async fn extend_over(&self, wait: Duration) {
        self.shared.extend(self.lock, LOCK_TTL + wait).await;
    }
}

/// How an instance fetches a token itself: the OAuth exchange, with its
/// retries when the refresh can wait for them.
pub(crate) trait FetchToken: Sync {
    /// With `holding`, this instance fetches for every instance and keeps
    /// the lock through any wait before a retry.
    fn fetch(
        &self,
        holding: Option<Holding<'_>>,
    ) -> impl Future<Output = Result<Fresh, Error>> + Send;
}

/// A token and the moment it is due for refresh: one this instance
/// fetched, or one it adopted from Redis.
pub(crate) struct Fresh {
    pub(crate) grant: Grant,
    pub(crate) refresh_at: SystemTime,
}

pub(crate) struct SharedToken {
    redis: Arc<SharedRedis>,
    key: String,
    lock_key: String,
    read_script: Script,
    extend_script: Script,
    compare_and_delete: Script,
    warnings: WarnEvery,
    /// The OAuth host and `GIGACHAT_TIMEOUT`, for the errors this instance
    /// answers with on another instance's behalf.
    oauth_host: String,
    timeout: Duration,
}

impl std::fmt::Debug for SharedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedToken")
            .field("redis", &self.redis.redacted_url())
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// A one-way fingerprint of an access token, to recognise the token a 401
/// was answered to without keeping a second copy of it.
pub(crate) fn fingerprint(access_token: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(b"gigachat-proxy rejected token\0")
        .chain_update(access_token.as_bytes())
        .finalize()
        .into()
}

impl SharedToken {
    /// `credential_id` is the config's one-way fingerprint of the key; the
    /// scope is part of the key too, since a token is issued for one scope.
    pub(crate) fn new(
        redis: Arc<SharedRedis>,
        credential_id: &str,
        scope: &str,
        oauth_host: &str,
        timeout: Duration,
    ) -> Self {
        let key = redis.key("token", &format!("{credential_id}:{scope}"));
        Self {
            lock_key: format!("{key}:lock"),
            key,
            redis,
            read_script: Script::new(READ_SCRIPT),
            extend_script: Script::new(EXTEND_SCRIPT),
            compare_and_delete: Script::new(COMPARE_AND_DELETE_SCRIPT),
            warnings: WarnEvery::new(WARN_EVERY),
            oauth_host: oauth_host.to_owned(),
            timeout,
        }
    }

    /// A new token for one refresh (the caller's refresh lock held): the
    /// one another instance stored, or, for the instance that wins the
    /// lock, one it fetches itself and stores for everyone (or its final
    /// failure, stored for the waiters). `rejected`: the fingerprint of the
    /// token GigaChat last answered 401 to, never adopted again. `patient`:
    /// wait for another instance's refresh; otherwise `None` when another
    /// instance is refreshing (the caller has a usable token). Any Redis
    /// failure means: fetch without a lock, as if no Redis were configured.
    pub(crate) async fn obtain(
        &self,
        rejected: Option<&[u8; 32]>,
        deadline: Instant,
        patient: bool,
        fetch: &impl FetchToken,
    ) -> Result<Option<Fresh>, Error> {
        match self.read(rejected).await {
            Ok(found) => {
                if let Some(settled) = found.and_then(|entry| self.settle(entry)) {
                    return settled.map(Some);
                }
            }
            Err(_) => return fetch.fetch(None).await.map(Some),
        }
        let mut pause = POLL_MIN;
        loop {
            match self.try_lock().await {
                Ok(Some(lock)) => {
                    return self
                        .fetch_for_everyone(lock, rejected, patient, fetch)
                        .await
                        .map(Some);
                }
                Ok(None) if !patient => return Ok(None),
                Ok(None) => {}
                Err(_) => return fetch.fetch(None).await.map(Some),
            }
            // Another instance is calling OAuth: wait for what it stores.
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let jittered = pause / 2 + jitter::up_to(pause);
            tokio::time::sleep(jittered.min(deadline - now)).await;
            pause = (pause * 2).min(POLL_MAX);
            match self.read(rejected).await {
                Ok(found) => {
                    if let Some(settled) = found.and_then(|entry| self.settle(entry)) {
                        return settled.map(Some);
                    }
                }
                Err(_) => return fetch.fetch(None).await.map(Some),
            }
        }
        // Fetching here now would be the stampede the lock prevents: the
        // holder is still retrying (it extends the lock), or died within the
        // lock's TTL.
        tracing::warn!(
            "no shared GigaChat token appeared within the timeout while another instance held the lock"
        );
        Err(waited_too_long(self.timeout))
    }

    /// With the lock held: a fetch for every instance, the token or the
    /// final failure stored for them, then the lock released.
    async fn fetch_for_everyone(
        &self,
        lock: Lock,
        rejected: Option<&[u8; 32]>,
        patient: bool,
        fetch: &impl FetchToken,
    ) -> Result<Fresh, Error> {
        // The previous holder may have stored its token (or its failure)
        // just before it let go of the lock.
        if let Ok(Some(settled)) = self
            .read(rejected)
            .await
            .map(|found| found.and_then(|entry| self.settle(entry)))
        {
            self.release(lock).await;
            return settled;
        }
        let fetched = fetch
            .fetch(Some(Holding {
                shared: self,
                lock: &lock,
            }))
            .await;
        match &fetched {
            Ok(fresh) => {
                let fresh_for = fresh
                    .refresh_at
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
                // A failure is logged by `publish`; this instance keeps its
                // token.
                let _ = self
                    .publish(
                        fresh.grant.access_token.expose(),
                        fresh.grant.expires_at_ms(),
                        fresh_for,
                    )
                    .await;
            }
            // One attempt ahead of expiry is not the fleet's verdict: an
            // instance without a usable token still tries in full.
            Err(err) if patient => {
                if let Some(failure) = Failure::of(err) {
                    self.publish_failure(failure).await;
                }
            }
            Err(_) => {}
        }
        self.release(lock).await;
        fetched
    }

    /// What an entry in Redis means for this refresh: a token to adopt, the
    /// error another instance's refresh ended with, or (`None`) nothing
    /// usable.
    fn settle(&self, entry: Entry) -> Option<Result<Fresh, Error>> {
        match entry {
            Entry::Token(found) => adopt(found).map(Ok),
            Entry::Failed(failure) => {
                tracing::warn!(
                    ?failure,
                    "another instance's GigaChat OAuth call failed moments ago; answering with its error"
                );
                Some(Err(failure.into_error(&self.oauth_host, self.timeout)))
            }
        }
    }

    /// The shared token, if one is stored and fresh, or the failure of the
    /// last lock holder. A stored token whose fingerprint is `rejected`
    /// (GigaChat answered 401 to it) is deleted — only if it is still the
    /// stored value — and reported as absent.
    async fn read(&self, rejected: Option<&[u8; 32]>) -> Result<Option<Entry>, Unavailable> {
        let key = self.key.as_str();
        let found: Option<(String, i64)> = self
            .redis
            .run(|mut connection| async move {
                self.read_script
                    .key(key)
                    .invoke_async(&mut connection)
                    .await
            })
            .await
            .inspect_err(|err| self.warn("read", err))?;
        let Some((raw, pttl)) = found else {
            return Ok(None);
        };
        let raw = Secret::new(raw);
        let parsed: Option<Stored<'_>> = serde_json::from_str(raw.expose()).ok();
        if parsed.is_none()
            && let Ok(stored) = serde_json::from_str::<StoredFailure>(raw.expose())
        {
            // Without a TTL it cannot be ours, and would never go away.
            return Ok((pttl > 0).then_some(Entry::Failed(stored.failed)));
        }
        let usable = parsed.as_ref().filter(|stored| {
            !stored.access_token.is_empty()
                && rejected.is_none_or(|r| fingerprint(stored.access_token) != *r)
        });
        let Some(stored) = usable else {
            // Rejected by GigaChat, or not ours to understand: drop exactly
            // this value so the next holder of the lock stores a good one.
            self.delete_if(raw.expose()).await;
            return Ok(None);
        };
        // -1: no expiry (not written by us; treat as absent), -2: gone.
        let Ok(fresh_ms) = u64::try_from(pttl) else {
            return Ok(None);
        };
        Ok(Some(Entry::Token(Found {
            access_token: Secret::new(stored.access_token.to_owned()),
            expires_at_ms: stored.expires_at_ms,
            fresh_for: Duration::from_millis(fresh_ms),
        })))
    }

    /// `Some(lock)` when this instance may call OAuth for everyone.
    async fn try_lock(&self) -> Result<Option<Lock>, Unavailable> {
        let owner = uuid::Uuid::new_v4().simple().to_string();
        let (key, value) = (self.lock_key.as_str(), owner.as_str());
        let ttl_ms = duration_ms(LOCK_TTL);
        let set: Option<String> = self
            .redis
            .run(|mut connection| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(value)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async(&mut connection)
                    .await
            })
            .await
            .inspect_err(|err| self.warn("lock", err))?;
        Ok(set.map(|_| Lock { owner }))
    }

    /// Keeps the lock ours for `ttl` more while the OAuth exchange is
    /// retried, so no other instance calls OAuth meanwhile. A failure only
    /// means another instance may call too, which is still correct.
    async fn extend(&self, lock: &Lock, ttl: Duration) {
        let (key, owner) = (self.lock_key.as_str(), lock.owner.as_str());
        let ttl_ms = duration_ms(ttl);
        let _ = self
            .redis
            .run(|mut connection| async move {
                self.extend_script
                    .key(key)
                    .arg(owner)
                    .arg(ttl_ms)
                    .invoke_async::<i64>(&mut connection)
                    .await
            })
            .await
            .inspect_err(|err| self.warn("extend the lock", err));
    }

    /// Stores the lock holder's failure for [`FAILURE_TTL`], unless a token
    /// is stored (then the waiters take that instead). Called before the
    /// lock is released, so whoever takes it next sees the failure.
    async fn publish_failure(&self, failure: Failure) {
        let Ok(value) = serde_json::to_string(&StoredFailure { failed: failure }) else {
            return;
        };
        let (key, value) = (self.key.as_str(), value.as_str());
        let ttl_ms = duration_ms(FAILURE_TTL);
        let _ = self
            .redis
            .run(|mut connection| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(value)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async::<Option<String>>(&mut connection)
                    .await
            })
            .await
            .inspect_err(|err| self.warn("publish a failure", err));
    }

    /// Frees the lock if it is still ours; a failure leaves it to expire.
    async fn release(&self, lock: Lock) {
        let (key, owner) = (self.lock_key.as_str(), lock.owner.as_str());
        let _ = self
            .redis
            .run(|mut connection| async move {
                self.compare_and_delete
                    .key(key)
                    .arg(owner)
                    .invoke_async::<i64>(&mut connection)
                    .await
            })
            .await
            .inspect_err(|err| self.warn("unlock", err));
    }

    /// Stores a token fetched by this instance for the others, fresh for
    /// `fresh_for` (its refresh point).
    async fn publish(
        &self,
        access_token: &str,
        expires_at_ms: u64,
        fresh_for: Duration,
    ) -> Result<(), Unavailable> {
        let ttl_ms = duration_ms(fresh_for);
        if ttl_ms == 0 {
            return Ok(());
        }
        let value = Secret::new(
            serde_json::to_string(&Stored {
                access_token,
                expires_at_ms,
            })
            .unwrap_or_default(),
        );
        let (key, value) = (self.key.as_str(), value.expose().as_str());
        self.redis
            .run(|mut connection| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(value)
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async::<()>(&mut connection)
                    .await
            })
            .await
            .inspect_err(|err| self.warn("publish", err))
    }

    async fn delete_if(&self, value: &str) {
        let key = self.key.as_str();
        let _ = self
            .redis
            .run(|mut connection| async move {
                self.compare_and_delete
                    .key(key)
                    .arg(value)
                    .invoke_async::<i64>(&mut connection)
                    .await
            })
            .await
            .inspect_err(|err| self.warn("delete", err));
    }

    fn warn(&self, operation: &'static str, err: &Unavailable) {
        if let Some(suppressed) = self.warnings.allow() {
            tracing::warn!(
                redis = %self.redis.redacted_url(),
                operation,
                problem = %err.0,
                suppressed_warnings = suppressed,
                "shared token store unavailable; this instance fetches its own GigaChat token"
            );
        }
    }
}

/// A token another instance stored, if it is still good.
fn adopt(found: Found) -> Option<Fresh> {
    let now = SystemTime::now();
    let expires_at = UNIX_EPOCH + Duration::from_millis(found.expires_at_ms);
    if expires_at <= now || found.fresh_for.is_zero() {
        return None;
    }
    let refresh_at = (now + found.fresh_for).min(expires_at);
    let grant = Grant::new(found.access_token, expires_at).ok()?;
    tracing::info!(
        fresh_for_s = found.fresh_for.as_secs(),
        "using the GigaChat access token shared through Redis"
    );
    Some(Fresh { grant, refresh_at })
}

/// The error of a refresh that gave up waiting for another instance's.
pub(crate) fn waited_too_long(timeout: Duration) -> Error {
    Error::UpstreamTimeout {
        stage: "waiting for another instance's OAuth call",
        seconds: timeout.as_secs(),
    }
}

impl Failure {
    /// The part of an OAuth error another instance can answer with.
    fn of(error: &Error) -> Option<Self> {
        Some(match error {
            Error::UpstreamAuthRejected { status, code, .. } => Self::Rejected {
                status: *status,
                code: *code,
            },
            Error::UpstreamAuthRateLimited => Self::RateLimited,
            Error::UpstreamAuthFailed { status } => Self::Failed { status: *status },
            Error::UpstreamAuthMalformed(_) => Self::Malformed,
            Error::UpstreamUnreachable { cause, .. } => Self::Unreachable {
                cause: match cause {
                    TransportCause::Tls => Cause::Tls,
                    TransportCause::Connect => Cause::Connect,
                    TransportCause::Other => Cause::Other,
                },
            },
            Error::UpstreamTimeout { .. } => Self::Timeout,
            _ => return None,
        })
    }

    /// The error this instance answers with for another's failure.
    fn into_error(self, oauth_host: &str, timeout: Duration) -> Error {
        match self {
            Self::Rejected { status, code } => Error::UpstreamAuthRejected {
                status,
                code,
                reason: describe_oauth_error(status, code, None),
            },
            Self::RateLimited => Error::UpstreamAuthRateLimited,
            Self::Failed { status } => Error::UpstreamAuthFailed { status },
            Self::Malformed => {
                Error::UpstreamAuthMalformed("the answer has no usable access_token/expires_at")
            }
            Self::Unreachable { cause } => Error::UpstreamUnreachable {
                stage: "oauth",
                host: oauth_host.to_owned(),
                cause: match cause {
                    Cause::Tls => TransportCause::Tls,
                    Cause::Connect => TransportCause::Connect,
                    Cause::Other => TransportCause::Other,
                },
            },
            Self::Timeout => Error::UpstreamTimeout {
                stage: "oauth",
                seconds: timeout.as_secs(),
            },
        }
    }
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn shared() -> SharedToken {
        let redis = Arc::new(crate::redis::for_tests(
            "redis://:hunter2@127.0.0.1:1",
            Duration::from_millis(100),
        ));
        SharedToken::new(
            redis,
            "0123abcd",
            "GIGACHAT_API_PERS",
            "ngw.devices.sberbank.ru",
            Duration::from_secs(30),
        )
    }

    #[test]
    fn keys_follow_the_layout() {
        let shared = shared();
        assert_eq!(
            shared.key,
            "gigachat-proxy:v1:token:0123abcd:GIGACHAT_API_PERS"
        );
        assert_eq!(shared.lock_key, format!("{}:lock", shared.key));
        let printed = format!("{shared:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
    }

    #[test]
    fn found_tokens_print_redacted() {
        let found = Found {
            access_token: Secret::new("eyJ-secret-token".into()),
            expires_at_ms: 1,
            fresh_for: Duration::from_secs(1),
        };
        assert!(!format!("{found:?}").contains("secret"));
    }

    #[test]
    fn failures_are_stored_without_text_and_read_back() {
        let failures = [
            Failure::Rejected {
                status: 401,
                code: Some(6),
            },
            Failure::RateLimited,
            Failure::Failed { status: 503 },
            Failure::Malformed,
            Failure::Unreachable {
                cause: Cause::Connect,
            },
            Failure::Timeout,
        ];
        for failure in failures {
            let json = serde_json::to_string(&StoredFailure { failed: failure }).unwrap();
            assert!(
                serde_json::from_str::<Stored<'_>>(&json).is_err(),
                "never taken for a token: {json}"
            );
            let back: StoredFailure = serde_json::from_str(&json).unwrap();
            assert_eq!(back.failed, failure);
        }
        assert_eq!(
            serde_json::to_string(&StoredFailure {
                failed: Failure::Rejected {
                    status: 401,
                    code: Some(6)
                }
            })
            .unwrap(),
            r#"{"failed":{"kind":"rejected","status":401,"code":6}}"#
        );
    }

    #[test]
    fn every_oauth_failure_can_be_shared_and_read_back() {
        let (host, timeout) = ("ngw.devices.sberbank.ru", Duration::from_secs(30));
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
                host: host.to_owned(),
                cause: TransportCause::Connect,
            },
            Error::UpstreamTimeout {
                stage: "oauth",
                seconds: timeout.as_secs(),
            },
        ];
        for error in errors {
            let failure = Failure::of(&error).unwrap();
            let back = failure.into_error(host, timeout);
            assert_eq!(back.to_string(), error.to_string());
            assert_eq!(back.code(), error.code());
        }
        assert!(Failure::of(&Error::RouteNotFound).is_none());
    }

    #[test]
    fn fingerprints_differ_per_token() {
        assert_eq!(fingerprint("a"), fingerprint("a"));
        assert_ne!(fingerprint("a"), fingerprint("b"));
    }

    #[test]
    fn the_lock_is_released_only_by_its_owner() {
        assert!(COMPARE_AND_DELETE_SCRIPT.contains("redis.call('GET', KEYS[1]) == ARGV[1]"));
        assert!(READ_SCRIPT.contains("PTTL"));
        assert!(EXTEND_SCRIPT.contains("redis.call('GET', KEYS[1]) == ARGV[1]"));
    }

    #[tokio::test]
    async fn an_unreachable_redis_reports_unavailable_quickly() {
        let shared = shared();
        let started = std::time::Instant::now();
        assert!(shared.read(None).await.is_err());
        assert!(shared.try_lock().await.is_err());
        assert!(
            shared
                .publish("t", 1, Duration::from_secs(1))
                .await
                .is_err()
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
