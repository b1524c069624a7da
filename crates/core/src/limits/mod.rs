//! Limits that protect the GigaChat quota: requests per window and
//! concurrent streams per end-user identity, and a guard on concurrent
//! requests per GigaChat credential. In memory per instance by default;
//! shared through Redis when one is configured, so N serverless instances
//! together admit no more than the limit.
//!
//! Both backends run the same GCRA on the same integers (see `memory`), so
//! switching changes nothing but sharing. When Redis does not answer within
//! its timeout, `GIGACHAT_PROXY_REDIS_FAILURE=open` falls back to this
//! instance's memory (the limits then hold per instance) and logs a warning
//! at most every 10 s; `closed` answers `503 limiter_unavailable`.

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

pub(crate) mod config;
mod memory;
mod redis_store;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

pub use crate::redis::FailureMode;
pub use config::{LimitsConfig, Rate};

use crate::error::Error;
use crate::redis::RedisConfig;
use memory::{MemoryRates, MemoryStreamLease, MemoryStreams};
use redis_store::{RedisLease, RedisStore, Unavailable};

/// The limiter: built once per process, cheap to clone (clones share
/// everything). Never connects in [`Limiter::new`]: Redis is connected on
/// first use and reconnected by itself, and no call waits on Redis longer
/// than `GIGACHAT_PROXY_REDIS_TIMEOUT_MS` per round trip.
#[derive(Clone)]
pub struct Limiter {
    inner: Arc<Inner>,
}

struct Inner {
    rate: Option<Rate>,
    anonymous_rate: Option<Rate>,
    max_streams: Option<u64>,
    upstream_concurrency: Option<u64>,
    upstream_queue_timeout: Duration,
    upstream_key: String,
    rates: MemoryRates,
    streams: Arc<MemoryStreams>,
    /// Also the fallback when Redis fails open.
    upstream: Option<Arc<Semaphore>>,
    redis: Option<Arc<RedisStore>>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

/// Polling for a shared upstream slot starts fast and backs off to this, so
/// a queued request costs Redis (billed per command on Upstash) a few
/// commands per second at most.
const UPSTREAM_POLL_MIN: Duration = Duration::from_millis(10);
const UPSTREAM_POLL_MAX: Duration = Duration::from_millis(200);

impl Limiter {
    /// Limits kept in this instance's memory.
    pub fn new(config: &LimitsConfig) -> Limiter {
        Self::build(config, None)
    }

    /// Limits shared through `redis` by every instance (falling back to
    /// this one's memory as `redis.failure` says). `credential_id` names
    /// the GigaChat key the upstream guard counts for (see
    /// `Config::credential_id`), so deployments with different keys can
    /// share one Redis without sharing a guard.
    pub fn shared(config: &LimitsConfig, redis: &RedisConfig, credential_id: &str) -> Limiter {
        Self::build(config, Some((redis, credential_id)))
    }

    fn build(config: &LimitsConfig, shared: Option<(&RedisConfig, &str)>) -> Limiter {
        let redis = shared.map(|(redis, _)| Arc::new(RedisStore::new(redis)));
        let upstream_key = match (&redis, shared) {
            (Some(store), Some((_, credential_id))) => store.key("upstream", credential_id),
            _ => String::new(),
        };
        let upstream = config.upstream_concurrency.map(|limit| {
            let permits = usize::try_from(limit)
                .unwrap_or(Semaphore::MAX_PERMITS)
                .min(Semaphore::MAX_PERMITS);
            Arc::new(Semaphore::new(permits))
        });
        Limiter {
            inner: Arc::new(Inner {
                rate: config.rate,
                anonymous_rate: config.anonymous_rate,
                max_streams: config.max_streams,
                upstream_concurrency: config.upstream_concurrency,
                upstream_queue_timeout: config.upstream_queue_timeout,
                upstream_key,
                rates: MemoryRates::new(memory::MAX_TRACKED_IDENTITIES),
                streams: Arc::new(MemoryStreams::default()),
                upstream,
                redis,
            }),
        }
    }

    /// `"redis"` when a Redis is configured, else `"memory"` (for health).
    pub fn backend(&self) -> &'static str {
        if self.inner.redis.is_some() {
            "redis"
        } else {
            "memory"
        }
    }

    /// One request by `identity` (an opaque key such as `key:ab12…`,
    /// `sub:alice`, `ip:203.0.113.7`); `anonymous` picks the anonymous
    /// limit. `Ok(Some(info))`: allowed with a limit in force (send the
    /// `RateLimit-*` headers); `Ok(None)`: no limit applies;
    /// `Err(RateLimited)`: over the limit; `Err(LimiterUnavailable)`: Redis
    /// failed and the proxy fails closed.
    pub async fn check_request(
        &self,
        identity: &str,
        anonymous: bool,
    ) -> Result<Option<RateLimitInfo>, Error> {
        let inner = &self.inner;
        let rate = if anonymous {
            inner.anonymous_rate
        } else {
            inner.rate
        };
        let Some(rate) = rate else {
            return Ok(None);
        };
        let (allowed, info) = match &inner.redis {
            Some(redis) => match redis.check_rate(&redis.key("rate", identity), rate).await {
                Ok((allowed, ahead_us)) => {
                    (allowed, memory::decision_info(rate, allowed, ahead_us))
                }
                Err(Unavailable) => {
                    fail_mode(redis)?;
                    inner.rates.check(identity, rate)
                }
            },
            None => inner.rates.check(identity, rate),
        };
        if allowed {
            Ok(Some(info))
        } else {
            Err(Error::RateLimited(info))
        }
    }

    /// A slot for one stream of `identity`, held until the lease is dropped
    /// (when the response body ends or is dropped). `Ok(None)`: unlimited.
    pub async fn acquire_stream(&self, identity: &str) -> Result<Option<StreamLease>, Error> {
        let inner = &self.inner;
        let Some(limit) = inner.max_streams else {
            return Ok(None);
        };
        if let Some(redis) = &inner.redis {
            let key = redis.key("streams", identity);
            let id = lease_id();
            match redis.try_acquire(&key, &id, limit).await {
                Ok(true) => {
                    let lease = RedisLease::start(Arc::clone(redis), key, id);
                    return Ok(Some(StreamLease {
                        _inner: LeaseInner::Redis(lease),
                    }));
                }
                Ok(false) => return Err(Error::TooManyStreams { limit }),
                Err(Unavailable) => fail_mode(redis)?,
            }
        }
        match inner.streams.try_acquire(identity, limit) {
            Some(lease) => Ok(Some(StreamLease {
                _inner: LeaseInner::Memory(lease),
            })),
            None => Err(Error::TooManyStreams { limit }),
        }
    }

    /// A slot for one request to GigaChat; waits (queues) up to the queue
    /// timeout. Held until dropped (for a stream: until its body ends).
    /// `Ok(None)`: no guard configured; `Err(UpstreamBusy)`: no slot freed
    /// up in time.
    pub async fn acquire_upstream(&self) -> Result<Option<UpstreamPermit>, Error> {
        let inner = &self.inner;
        let (Some(limit), Some(semaphore)) = (inner.upstream_concurrency, &inner.upstream) else {
            return Ok(None);
        };
        let started = Instant::now();
        let deadline = started + inner.upstream_queue_timeout;
        if let Some(redis) = &inner.redis {
            let id = lease_id();
            let mut pause = UPSTREAM_POLL_MIN;
            loop {
                match redis.try_acquire(&inner.upstream_key, &id, limit).await {
                    Ok(true) => {
                        let lease =
                            RedisLease::start(Arc::clone(redis), inner.upstream_key.clone(), id);
                        return Ok(Some(UpstreamPermit {
                            _inner: PermitInner::Redis(lease),
                        }));
                    }
                    Ok(false) => {}
                    Err(Unavailable) => {
                        fail_mode(redis)?;
                        break;
                    }
                }
                let now = Instant::now();
                if now >= deadline {
                    return Err(busy(started));
                }
                // Jitter spreads the instances' retries so they do not poll
                // in lockstep; the pause grows so a long queue stays cheap.
                let jittered = pause / 2 + crate::jitter::up_to(pause);
                tokio::time::sleep(jittered.min(deadline - now)).await;
                pause = (pause * 2).min(UPSTREAM_POLL_MAX);
            }
        }
        // In memory: the semaphore is FIFO, so requests are served in order.
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, Arc::clone(semaphore).acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Some(UpstreamPermit {
                _inner: PermitInner::Memory(permit),
            })),
            // The semaphore is never closed; treat it like a timeout anyway.
            Ok(Err(_)) | Err(_) => Err(busy(started)),
        }
    }
}

/// What a Redis failure means for the request: `Ok` to fall back to this
/// instance's memory (fail open), `Err` to refuse it (fail closed).
fn fail_mode(redis: &RedisStore) -> Result<(), Error> {
    match redis.failure {
        FailureMode::Open => Ok(()),
        FailureMode::Closed => Err(Error::LimiterUnavailable),
    }
}

fn busy(started: Instant) -> Error {
    Error::UpstreamBusy {
        waited_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

/// A random lease id: 128 bits, so two instances never collide.
fn lease_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// One open stream's slot; dropping it frees the slot (in Redis: a spawned
/// `ZREM`; without a runtime the lease expires by itself).
pub struct StreamLease {
    _inner: LeaseInner,
}

// The fields are held only for their `Drop`, which frees the slot.
#[allow(dead_code)]
enum LeaseInner {
    Memory(MemoryStreamLease),
    Redis(RedisLease),
}

/// One upstream request's slot; dropping it frees the slot.
pub struct UpstreamPermit {
    _inner: PermitInner,
}

#[allow(dead_code)]
enum PermitInner {
    Memory(OwnedSemaphorePermit),
    Redis(RedisLease),
}

impl std::fmt::Debug for StreamLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self._inner {
            LeaseInner::Memory(_) => "StreamLease(memory)",
            LeaseInner::Redis(_) => "StreamLease(redis)",
        })
    }
}

impl std::fmt::Debug for UpstreamPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self._inner {
            PermitInner::Memory(_) => "UpstreamPermit(memory)",
            PermitInner::Redis(_) => "UpstreamPermit(redis)",
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn rate(count: u64, secs: u64) -> Rate {
        Rate {
            count,
            window: Duration::from_secs(secs),
        }
    }

    fn assert_send_sync_static<T: Send + Sync + 'static>() {}

    #[test]
    fn leases_and_the_limiter_can_cross_tasks() {
        assert_send_sync_static::<StreamLease>();
        assert_send_sync_static::<UpstreamPermit>();
        assert_send_sync_static::<Limiter>();
    }

    #[test]
    fn new_needs_no_runtime_and_does_not_connect() {
        let mut redis = RedisConfig::from_url("redis://127.0.0.1:1").unwrap();
        redis.timeout = Duration::from_millis(50);
        let limiter = Limiter::shared(&LimitsConfig::disabled(), &redis, "default");
        assert_eq!(limiter.backend(), "redis");
        assert_eq!(Limiter::new(&LimitsConfig::disabled()).backend(), "memory");
    }

    #[tokio::test]
    async fn no_limits_means_none() {
        let limiter = Limiter::new(&LimitsConfig::disabled());
        assert_eq!(limiter.check_request("ip:1", true).await.unwrap(), None);
        assert!(limiter.acquire_stream("ip:1").await.unwrap().is_none());
        assert!(limiter.acquire_upstream().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn anonymous_identities_get_the_anonymous_limit() {
        let mut config = LimitsConfig::disabled();
        config.rate = Some(rate(5, 60));
        config.anonymous_rate = Some(rate(2, 60));
        let limiter = Limiter::new(&config);
        for _ in 0..2 {
            limiter.check_request("ip:1", true).await.unwrap().unwrap();
        }
        match limiter.check_request("ip:1", true).await {
            Err(Error::RateLimited(info)) => {
                assert_eq!(info.limit, 2);
                assert_eq!(info.remaining, 0);
                assert_eq!(info.retry_after_secs, 30);
            }
            other => panic!("expected RateLimited, got {other:?}"),
        }
        let info = limiter
            .check_request("sub:a", false)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((info.limit, info.remaining), (5, 4));

        config.anonymous_rate = None;
        let limiter = Limiter::new(&config);
        assert_eq!(limiter.check_request("ip:1", true).await.unwrap(), None);
    }

    #[tokio::test]
    async fn stream_slots_are_capped_and_freed_on_drop() {
        let mut config = LimitsConfig::disabled();
        config.max_streams = Some(2);
        let limiter = Limiter::new(&config);
        let first = limiter.acquire_stream("u").await.unwrap().unwrap();
        let _second = limiter.acquire_stream("u").await.unwrap().unwrap();
        assert!(matches!(
            limiter.acquire_stream("u").await,
            Err(Error::TooManyStreams { limit: 2 })
        ));
        // Another identity has its own slots.
        let _other = limiter.acquire_stream("v").await.unwrap().unwrap();
        // A lease moved into another task and dropped there frees the slot.
        tokio::spawn(async move { drop(first) }).await.unwrap();
        let _third = limiter.acquire_stream("u").await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn upstream_requests_queue_then_time_out() {
        let mut config = LimitsConfig::disabled();
        config.upstream_concurrency = Some(1);
        config.upstream_queue_timeout = Duration::from_secs(5);
        let limiter = Limiter::new(&config);
        let first = limiter.acquire_upstream().await.unwrap().unwrap();

        // The second waits in the queue while the first is held...
        let queued = {
            let limiter = limiter.clone();
            tokio::spawn(async move { limiter.acquire_upstream().await })
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!queued.is_finished());
        // ...and gets the slot as soon as it is freed.
        drop(first);
        let second = queued.await.unwrap().unwrap().unwrap();

        // With the slot held, the next one gives up after the queue timeout.
        let started = Instant::now();
        match limiter.acquire_upstream().await {
            Err(Error::UpstreamBusy { waited_ms }) => assert!(waited_ms >= 5_000, "{waited_ms}"),
            other => panic!("expected UpstreamBusy, got {other:?}"),
        }
        assert!(started.elapsed() >= Duration::from_secs(5));
        drop(second);
        assert!(limiter.acquire_upstream().await.unwrap().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn upstream_queue_is_first_come_first_served() {
        let mut config = LimitsConfig::disabled();
        config.upstream_concurrency = Some(1);
        let limiter = Limiter::new(&config);
        let held = limiter.acquire_upstream().await.unwrap().unwrap();
        let (order_tx, mut order_rx) = tokio::sync::mpsc::unbounded_channel();
        for n in 0..3 {
            let limiter = limiter.clone();
            let order_tx = order_tx.clone();
            tokio::spawn(async move {
                let permit = limiter.acquire_upstream().await.unwrap().unwrap();
                order_tx.send(n).unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
                drop(permit);
            });
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        drop(held);
        let mut order = Vec::new();
        for _ in 0..3 {
            order.push(order_rx.recv().await.unwrap());
        }
        assert_eq!(order, [0, 1, 2]);
    }

    #[tokio::test]
    async fn an_unreachable_redis_follows_the_failure_mode() {
        // Port 1 on loopback refuses connections at once.
        let mut base = LimitsConfig::disabled();
        base.rate = Some(rate(1, 60));
        base.max_streams = Some(1);
        base.upstream_concurrency = Some(1);
        let redis = |failure| {
            let mut redis = RedisConfig::from_url("redis://127.0.0.1:1").unwrap();
            redis.failure = failure;
            redis.timeout = Duration::from_millis(100);
            redis
        };
        let open = Limiter::shared(&base, &redis(FailureMode::Open), "default");
        let closed = Limiter::shared(&base, &redis(FailureMode::Closed), "default");
        let bound = Duration::from_secs(2);

        // Open: the per-instance limits still apply.
        assert!(
            tokio::time::timeout(bound, open.check_request("a", false))
                .await
                .unwrap()
                .unwrap()
                .is_some()
        );
        assert!(matches!(
            tokio::time::timeout(bound, open.check_request("a", false))
                .await
                .unwrap(),
            Err(Error::RateLimited(_))
        ));
        let lease = tokio::time::timeout(bound, open.acquire_stream("a"))
            .await
            .unwrap()
            .unwrap();
        assert!(lease.is_some());
        let permit = tokio::time::timeout(bound, open.acquire_upstream())
            .await
            .unwrap()
            .unwrap();
        assert!(permit.is_some());

        assert!(matches!(
            tokio::time::timeout(bound, closed.check_request("a", false))
                .await
                .unwrap(),
            Err(Error::LimiterUnavailable)
        ));
        assert!(matches!(
            tokio::time::timeout(bound, closed.acquire_stream("a"))
                .await
                .unwrap(),
            Err(Error::LimiterUnavailable)
        ));
        assert!(matches!(
            tokio::time::timeout(bound, closed.acquire_upstream())
                .await
                .unwrap(),
            Err(Error::LimiterUnavailable)
        ));
    }
}
