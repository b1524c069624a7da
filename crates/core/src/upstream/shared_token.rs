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
//! [`TokenManager`](super::token::TokenManager) drives the protocol; this
//! module only speaks Redis. Every failure is reported as [`Unavailable`]
//! and logged here at most every 10 s; the caller then does what it did
//! before Redis existed (its own OAuth call).
//!
//! **Security.** The value is a live GigaChat access token (30 minutes):
//! anyone who can read this Redis can call GigaChat on the proxy's key until
//! it expires. Use a Redis that only the proxy can reach, with a password
//! and TLS (`rediss://`). The token is never logged, and the types holding
//! it print `***`.

use std::sync::Arc;
use std::time::Duration;

use redis::Script;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::secret::Secret;
use crate::shared_redis::{SharedRedis, Unavailable, WARN_EVERY, WarnEvery};

/// How long a lock holder may take before another instance may try; an
/// OAuth call that takes longer than this is rare (and then two instances
/// call OAuth, which is still correct).
pub(crate) const LOCK_TTL: Duration = Duration::from_secs(10);

/// How long a failure of the lock holder stands for the whole fleet: long
/// enough for every waiter (polling at most every ~0.4 s) to see it, short
/// enough that the next requests soon try OAuth again.
pub(crate) const FAILURE_TTL: Duration = Duration::from_secs(2);

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
pub(crate) enum Entry {
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
pub(crate) struct Found {
    pub(crate) access_token: Secret<String>,
    pub(crate) expires_at_ms: u64,
    /// How long it stays fresh (the key's remaining TTL).
    pub(crate) fresh_for: Duration,
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
pub(crate) struct Lock {
    owner: String,
}

pub(crate) struct SharedToken {
    redis: Arc<SharedRedis>,
    key: String,
    lock_key: String,
    read_script: Script,
    extend_script: Script,
    compare_and_delete: Script,
    warnings: WarnEvery,
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
    /// `credential_id` is the limits' one-way fingerprint of the key; the
    /// scope is part of the key too, since a token is issued for one scope.
    pub(crate) fn new(redis: Arc<SharedRedis>, credential_id: &str, scope: &str) -> Self {
        let key = redis.key("token", &format!("{credential_id}:{scope}"));
        Self {
            lock_key: format!("{key}:lock"),
            key,
            redis,
            read_script: Script::new(READ_SCRIPT),
            extend_script: Script::new(EXTEND_SCRIPT),
            compare_and_delete: Script::new(COMPARE_AND_DELETE_SCRIPT),
            warnings: WarnEvery::new(WARN_EVERY),
        }
    }

    /// The shared token, if one is stored and fresh, or the failure of the
    /// last lock holder. A stored token whose fingerprint is `rejected`
    /// (GigaChat answered 401 to it) is deleted — only if it is still the
    /// stored value — and reported as absent.
    pub(crate) async fn read(
        &self,
        rejected: Option<&[u8; 32]>,
    ) -> Result<Option<Entry>, Unavailable> {
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
    pub(crate) async fn try_lock(&self) -> Result<Option<Lock>, Unavailable> {
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
    pub(crate) async fn extend(&self, lock: &Lock, ttl: Duration) {
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
    pub(crate) async fn publish_failure(&self, failure: Failure) {
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
    pub(crate) async fn release(&self, lock: Lock) {
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
    pub(crate) async fn publish(
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

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn shared() -> SharedToken {
        let redis = Arc::new(crate::shared_redis::for_tests(
            "redis://:hunter2@127.0.0.1:1",
            Duration::from_millis(100),
        ));
        SharedToken::new(redis, "0123abcd", "GIGACHAT_API_PERS")
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
