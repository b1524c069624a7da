//! A Redis connection as every Redis user here needs it — the limiter
//! (`limits/redis_store.rs`), the response cache and the shared upstream
//! token: the `REDIS_URL` / `KV_URL` settings ([`RedisConfig`]), a lazily
//! created multiplexed connection that reconnects by itself, every round
//! trip bounded by `GIGACHAT_PROXY_REDIS_TIMEOUT_MS`, and a throttle for
//! the warnings an outage produces (`WarnEvery`).
//!
//! What a failure means is each user's business: the limiter fails open
//! or closed as configured; for the cache and the shared token (pure
//! optimisations) it means "not found" and the request goes on as if no
//! Redis were configured. The URL and its password never appear in a log
//! or an error, only `scheme://host`: a Redis URL carries a password.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, RedisResult};

use crate::config::env::{ConfigError, Env};

/// Key prefix in a Redis that other applications may share.
pub(crate) const DEFAULT_REDIS_PREFIX: &str = "gigachat-proxy";
/// A Redis in the same region answers in about a millisecond and Upstash
/// across regions in tens; 250 ms is the most latency an unreachable Redis
/// may add to a request before the failure mode decides.
pub(crate) const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(250);

/// Redis URL variables, first match wins: the generic name, then what the
/// Vercel KV / Upstash integrations set.
pub(crate) const VAR_REDIS_URLS: [&str; 3] = ["REDIS_URL", "KV_URL", "UPSTASH_REDIS_URL"];
pub(crate) const VAR_REDIS_PREFIX: &str = "GIGACHAT_PROXY_REDIS_PREFIX";
pub(crate) const VAR_REDIS_TIMEOUT_MS: &str = "GIGACHAT_PROXY_REDIS_TIMEOUT_MS";
pub(crate) const VAR_REDIS_FAILURE: &str = "GIGACHAT_PROXY_REDIS_FAILURE";

/// What the limiter does when Redis cannot be reached within the timeout.
/// (The cache and the shared token need no choice: for them a failure is
/// a miss.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    /// Fall back to this instance's in-memory limiter (the limit then holds
    /// per instance instead of across all of them) and log a warning.
    Open,
    /// Refuse the request with `503 limiter_unavailable`.
    Closed,
}

/// The shared store of the limits, the cache and the upstream token.
#[derive(Clone)]
pub struct RedisConfig {
    /// Validated; holds the password, so it is never printed.
    pub(crate) client: redis::Client,
    /// `scheme://host` only, for logs and `Debug`.
    pub(crate) redacted: String,
    /// The variable the URL came from.
    pub(crate) source_variable: &'static str,
    pub(crate) prefix: String,
    /// Bounds every round trip to Redis.
    pub timeout: Duration,
    pub failure: FailureMode,
}

impl RedisConfig {
    /// Reads the Redis variables; `None` when no URL variable is set (the
    /// prefix, timeout and failure mode are read only with a URL).
    pub(crate) fn from_env(env: &Env<'_>) -> Result<Option<RedisConfig>, ConfigError> {
        let Some((source, url)) = env.first(&VAR_REDIS_URLS) else {
            return Ok(None);
        };
        let mut redis = Self::validate(source, &url)?;
        if let Some(prefix) = env.parse(VAR_REDIS_PREFIX, |prefix| {
            if prefix.len() > 100 || prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
                Err("must be at most 100 characters without spaces or control characters".into())
            } else {
                Ok(prefix.to_owned())
            }
        })? {
            redis.prefix = prefix;
        }
        if let Some(timeout) = env.parse(VAR_REDIS_TIMEOUT_MS, |value| {
            crate::config::env::millis(value, 1..=60_000)
        })? {
            redis.timeout = timeout;
        }
        if let Some(failure) = env.parse(VAR_REDIS_FAILURE, |value| {
            match value.to_ascii_lowercase().as_str() {
                "open" => Ok(FailureMode::Open),
                "closed" => Ok(FailureMode::Closed),
                _ => Err("must be `open` or `closed`".into()),
            }
        })? {
            redis.failure = failure;
        }
        Ok(Some(redis))
    }

    /// A Redis URL with the default prefix, timeout and failure mode, as if
    /// it came from `REDIS_URL`: for tests and embeddings that do not read
    /// the environment.
    pub fn from_url(url: &str) -> Result<RedisConfig, ConfigError> {
        Self::validate(VAR_REDIS_URLS[0], url)
    }

    /// Validates a `redis://` or `rediss://` URL without connecting.
    fn validate(variable: &'static str, url: &str) -> Result<RedisConfig, ConfigError> {
        let invalid = || ConfigError::new(variable, "is not a valid redis:// or rediss:// URL");
        let url = url.trim();
        let parsed = reqwest::Url::parse(url).map_err(|_| invalid())?;
        if !matches!(parsed.scheme(), "redis" | "rediss") {
            return Err(ConfigError::new(
                variable,
                "must be a redis:// or rediss:// (TLS) URL; Upstash's REST URL (https://) is not supported, use its rediss:// URL",
            ));
        }
        let Some(host) = parsed.host_str().filter(|host| !host.is_empty()) else {
            return Err(ConfigError::new(variable, "has no host"));
        };
        let redacted = format!("{}://{host}", parsed.scheme());
        let client = redis::Client::open(url).map_err(|_| invalid())?;
        Ok(RedisConfig {
            client,
            redacted,
            source_variable: variable,
            prefix: DEFAULT_REDIS_PREFIX.to_owned(),
            timeout: DEFAULT_REDIS_TIMEOUT,
            failure: FailureMode::Open,
        })
    }

    /// `scheme://host` of the Redis URL: safe to log.
    pub(crate) fn redacted_url(&self) -> &str {
        &self.redacted
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.redacted)
            .field("source_variable", &self.source_variable)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("failure", &self.failure)
            .finish()
    }
}

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
#[allow(clippy::expect_used)]
pub(crate) fn for_tests(url: &str, timeout: Duration) -> SharedRedis {
    let mut config = RedisConfig::from_url(url).expect("a valid test Redis URL");
    config.timeout = timeout;
    SharedRedis::new(&config)
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

    fn redis(vars: &[(&str, &str)]) -> Result<Option<RedisConfig>, ConfigError> {
        let map: std::collections::HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        RedisConfig::from_env(&Env::new(&|name| map.get(name).cloned()))
    }

    #[test]
    fn redis_url_variables_in_order_and_settings() {
        assert!(redis(&[]).unwrap().is_none());
        let config = redis(&[
            ("KV_URL", "rediss://default:pw@kv.example:6379"),
            ("UPSTASH_REDIS_URL", "redis://other:6379"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(config.source_variable, "KV_URL");
        assert_eq!(config.redacted_url(), "rediss://kv.example");
        assert_eq!(config.prefix, DEFAULT_REDIS_PREFIX);
        assert_eq!(config.timeout, DEFAULT_REDIS_TIMEOUT);
        assert_eq!(config.failure, FailureMode::Open);

        let config = redis(&[
            ("REDIS_URL", "redis://127.0.0.1:6379/2"),
            ("KV_URL", "rediss://kv.example:6379"),
            (VAR_REDIS_PREFIX, "app1"),
            (VAR_REDIS_TIMEOUT_MS, "100"),
            (VAR_REDIS_FAILURE, "Closed"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(config.source_variable, "REDIS_URL");
        assert_eq!(config.prefix, "app1");
        assert_eq!(config.timeout, Duration::from_millis(100));
        assert_eq!(config.failure, FailureMode::Closed);
    }

    #[test]
    fn errors_name_the_variable_never_the_value() {
        let cases = [
            ("REDIS_URL", "secret-value-123"),
            ("REDIS_URL", "https://user:secret-value-123@host"),
            ("KV_URL", "redis://:secret-value-123@"),
            ("UPSTASH_REDIS_URL", "unix:///secret-value-123"),
            (VAR_REDIS_TIMEOUT_MS, "secret-value-123"),
            (VAR_REDIS_FAILURE, "secret-value-123"),
            (VAR_REDIS_PREFIX, "secret value-123"),
        ];
        for (variable, value) in cases {
            let mut vars = vec![(variable, value)];
            if variable.starts_with("GIGACHAT_PROXY_REDIS") {
                vars.push(("REDIS_URL", "redis://127.0.0.1:6379"));
            }
            let err = redis(&vars).unwrap_err();
            assert_eq!(err.variable, variable, "{err}");
            assert!(!err.to_string().contains("secret-value-123"), "{err}");
            assert!(err.to_string().starts_with(variable), "{err}");
        }
    }

    #[test]
    fn debug_output_hides_the_redis_password() {
        let config = redis(&[(
            "REDIS_URL",
            "rediss://user:hunter2-secret@redis.example:6380/0",
        )])
        .unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2-secret"), "{printed}");
        assert!(!printed.contains("user"), "{printed}");
        assert!(printed.contains("rediss://redis.example"), "{printed}");
    }

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
