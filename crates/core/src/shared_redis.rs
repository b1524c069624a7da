//! A Redis connection as every Redis user here needs it — the limiter
//! (`limits/redis_store.rs`), the response cache and the shared upstream
//! token: the `REDIS_URL` / `KV_URL` settings ([`RedisConfig`]), a lazily
//! created multiplexed connection that reconnects by itself, every round
//! trip bounded by `GIGACHAT_PROXY_REDIS_TIMEOUT_MS`, and a throttle for
//! the warnings an outage produces ([`WarnEvery`]).
//!
//! What a failure means is each user's business: the limiter fails open
//! or closed as configured; for the cache and the shared token (pure
//! optimisations) it means "not found" and the request goes on as if no
//! Redis were configured. The URL and its password never appear in a log,
//! only `scheme://host`.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, RedisResult};

use crate::limits::RedisConfig;

/// Why a Redis operation gave no answer: a short description for the log,
/// never containing the URL (Redis errors carry no connection details).
#[derive(Debug)]
pub(crate) struct Unavailable(pub(crate) String);

pub(crate) struct SharedRedis {
    client: redis::Client,
    /// Created on first use (it needs a running Tokio runtime); it connects
    /// lazily and reconnects by itself.
    manager: Mutex<Option<ConnectionManager>>,
    redacted_url: String,
    /// `{prefix}:v1:`.
    prefix: String,
    timeout: Duration,
}

impl SharedRedis {
    /// Never connects: building the proxy must not wait on the network.
    pub(crate) fn new(config: &RedisConfig) -> Self {
        Self {
            client: config.client.clone(),
            manager: Mutex::new(None),
            redacted_url: config.redacted_url().to_owned(),
            prefix: format!("{}:v1:", config.prefix),
            timeout: config.timeout,
        }
    }

    /// `{prefix}:v1:{kind}:{id}`; `id` is always a short printable string
    /// here (a hex digest or a fingerprint).
    pub(crate) fn key(&self, kind: &str, id: &str) -> String {
        format!("{}{kind}:{id}", self.prefix)
    }

    /// `scheme://host` of the URL, safe to log.
    pub(crate) fn redacted_url(&self) -> &str {
        &self.redacted_url
    }

    fn connection(&self) -> RedisResult<ConnectionManager> {
        let mut slot = self.manager.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(manager) = slot.as_ref() {
            return Ok(manager.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let manager = ConnectionManager::new_lazy_with_config(self.client.clone(), config)?;
        *slot = Some(manager.clone());
        Ok(manager)
    }

    /// Runs `op` within the timeout; a dropped connection (an idle one the
    /// server or a NAT closed) is retried once on the reconnected manager
    /// inside the same budget. Every operation here is idempotent or
    /// harmless to repeat.
    pub(crate) async fn run<T, F, Fut>(&self, op: F) -> Result<T, Unavailable>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let attempt = async {
            let connection = self.connection()?;
            match op(connection.clone()).await {
                Err(err) if err.is_connection_dropped() => op(connection).await,
                result => result,
            }
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(Unavailable(describe(&err))),
            Err(_) => Err(Unavailable(format!(
                "no answer within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }
}

/// A store for unit tests: `url` with the default prefix, nothing
/// connected until first use.
#[cfg(test)]
#[allow(clippy::expect_used, clippy::panic)]
pub(crate) fn for_tests(url: &str, timeout: Duration) -> SharedRedis {
    let config = crate::limits::LimitsConfig::disabled()
        .with_redis(url, crate::limits::FailureMode::Open, timeout)
        .expect("a valid test Redis URL");
    match config.redis.as_ref() {
        Some(redis) => SharedRedis::new(redis),
        None => panic!("with_redis configures Redis"),
    }
}

/// A short description of a Redis error for the log. Redis errors carry no
/// connection details (the URL and password are never part of them).
fn describe(err: &RedisError) -> String {
    if err.is_timeout() {
        "timed out".into()
    } else if err.is_connection_refusal() {
        format!("connection refused: {err}")
    } else {
        err.to_string()
    }
}

/// At most one warning per period, counting the ones it swallowed, so a
/// Redis outage under load does not flood the logs.
pub(crate) struct WarnEvery {
    origin: Instant,
    every_ms: u64,
    /// Milliseconds since `origin` of the last warning, plus one (0 = never).
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl WarnEvery {
    pub(crate) fn new(every: Duration) -> Self {
        Self {
            origin: Instant::now(),
            every_ms: u64::try_from(every.as_millis()).unwrap_or(u64::MAX),
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(suppressed since the last one)` when a warning may be logged now.
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = u64::try_from(self.origin.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < self.every_ms {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if self
            .last
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

/// How often a failing Redis is reported, per feature.
pub(crate) const WARN_EVERY: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn warnings_are_throttled() {
        let throttle = WarnEvery::new(Duration::from_secs(3600));
        assert_eq!(throttle.allow(), Some(0));
        assert_eq!(throttle.allow(), None);
        assert_eq!(throttle.allow(), None);
        let throttle = WarnEvery::new(Duration::ZERO);
        assert_eq!(throttle.allow(), Some(0));
        assert_eq!(throttle.allow(), Some(0));
    }

    #[test]
    fn keys_use_the_limits_prefix_and_version() {
        let redis = for_tests("redis://:pw@127.0.0.1:1", Duration::from_millis(10));
        assert_eq!(redis.key("cache", "ab"), "gigachat-proxy:v1:cache:ab");
        assert_eq!(redis.redacted_url(), "redis://127.0.0.1");
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_unavailable_within_the_timeout() {
        let redis = for_tests("redis://127.0.0.1:1", Duration::from_millis(200));
        let started = Instant::now();
        let result: Result<Option<String>, _> = redis
            .run(|mut c| async move { redis::cmd("GET").arg("k").query_async(&mut c).await })
            .await;
        assert!(result.is_err());
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
