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
//!
//! A request meets the limits twice: [`Limiter::admit`] before its body is
//! read (the request rate), and [`Limiter::guards`] before it goes to
//! GigaChat (the slots it holds, as one [`Guards`] that the response body
//! keeps until it ends). A new kind of limit is checked in one of those two
//! and refuses with an `Error` variant of its own, so it touches this
//! module and `error.rs`, and no route.

pub(crate) mod budget;
pub(crate) mod config;
mod guards;
pub(crate) mod info;
mod memory;
mod redis_store;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use tokio::sync::Semaphore;
use tokio::time::Instant;

pub use crate::redis::FailureMode;
pub use config::{LimitsConfig, Rate};
pub(crate) use guards::Guards;
pub use guards::{StreamLease, UpstreamPermit};
pub use info::RateLimitInfo;
pub(crate) use info::RateLimitOutcome;

use crate::error::Error;
use crate::redis::RedisConfig;
use crate::tenancy::policy::{MaxTokensAt, clamp_max_tokens};
use memory::{MemoryRates, MemoryStreams};
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
    budgets: budget::BudgetConfig,
    /// Also the fallback when Redis fails open.
    memory_budgets: Arc<budget::MemoryBudgets>,
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
                budgets: config.budget,
                memory_budgets: Arc::new(budget::MemoryBudgets::default()),
            }),
        }
    }

    /// `"redis"` when a Redis is configured, else `"memory"` (for health).
    /// The configured budgets, identified then anonymous, as the health
    /// document shows them (`200000/d` or `off`).
    pub(crate) fn budgets_described(&self) -> (String, String) {
        let budgets = &self.inner.budgets;
        (
            budget::BudgetConfig::describe(budgets.identified),
            budget::BudgetConfig::describe(budgets.anonymous),
        )
    }

    pub fn backend(&self) -> &'static str {
        if self.inner.redis.is_some() {
            "redis"
        } else {
            "memory"
        }
    }

    /// Every limit a request must pass before its body is read, for the
    /// caller `identity` (an opaque key such as `key:ab12…`, `sub:alice`,
    /// `ip:203.0.113.7`; `anonymous` picks the anonymous rate).
    /// `Err(RateLimited)`: over a limit; `Err(LimiterUnavailable)`: Redis
    /// failed and the proxy fails closed.
    pub(crate) async fn admit(&self, identity: &str, anonymous: bool) -> Result<Admission, Error> {
        Ok(Admission {
            rate: self.check_request(identity, anonymous).await?,
        })
    }

    /// What a request must hold before it goes to GigaChat: a stream slot
    /// when its body asks for a stream, then an upstream slot — in that
    /// order, so a caller over their stream limit never waits in the
    /// upstream queue. A cached answer needs none of them.
    pub(crate) async fn guards(&self, identity: &str, stream: bool) -> Result<Guards, Error> {
        let stream = if stream {
            self.acquire_stream(identity).await?
        } else {
            None
        };
        let upstream = self.acquire_upstream().await?;
        Ok(Guards {
            stream,
            _upstream: upstream,
            budget: None,
        })
    }

    /// Reserves a billed call's estimated tokens against the caller's
    /// budget (see `budget`), lowering `max_tokens` in `body` when less is
    /// left than it asks for. `Ok(None)`: no budget applies to this call.
    /// `Err(TokenBudgetExceeded)`: the window is spent;
    /// `Err(LimiterUnavailable)`: Redis failed and the proxy fails closed.
    /// `own_budget`: the caller's own (from a JWT claim), if any.
    pub(crate) async fn reserve_tokens(
        &self,
        identity: &str,
        anonymous: bool,
        own_budget: Option<u64>,
        endpoint: crate::endpoint::Endpoint,
        body: &mut bytes::Bytes,
    ) -> Result<Option<budget::Reservation>, Error> {
        let inner = &self.inner;
        let Some(limit) = inner.budgets.for_caller(anonymous, own_budget) else {
            return Ok(None);
        };
        if !budget::is_billed(endpoint) {
            return Ok(None);
        }
        let estimate = budget::Estimate::of(endpoint, body);
        let now = budget::now_secs();
        let (granted, counters, window_end, store) = self
            .budget_step(identity, limit, estimate, now, true)
            .await?;
        let info = budget::BudgetInfo {
            limit: limit.tokens,
            used: counters.used,
            reserved: counters.reserved,
            window: limit.window,
            reset_at: window_end,
            reset_secs: window_end.saturating_sub(now),
            variable: budget::BudgetConfig::variable(anonymous),
        };
        let Some(output) = granted else {
            return Err(Error::TokenBudgetExceeded(info));
        };
        let mut clamped = None;
        // A grant beyond `u32::MAX` exceeds any answer GigaChat produces,
        // so clamping to `u32::MAX` keeps the answer within the grant.
        let output_limit = u32::try_from(output).unwrap_or(u32::MAX);
        let max_tokens_at = if endpoint == crate::endpoint::Endpoint::ChatV2 {
            MaxTokensAt::ModelOptions
        } else {
            MaxTokensAt::TopLevel
        };
        if output < estimate.output
            && let Some(rewritten) = clamp_max_tokens(body, max_tokens_at, output_limit)
        {
            *body = rewritten;
            clamped = Some(u64::from(output_limit));
        }
        Ok(Some(budget::Reservation::new(
            store,
            identity.to_owned(),
            counters.window_start,
            estimate.input.saturating_add(output),
            estimate.input,
            info,
            clamped,
        )))
    }

    /// The caller's budget now, for `GET /api/gigachat-budget`; `None`
    /// when no budget applies to them.
    pub(crate) async fn token_budget(
        &self,
        identity: &str,
        anonymous: bool,
        own_budget: Option<u64>,
    ) -> Result<Option<budget::BudgetInfo>, Error> {
        let Some(limit) = self.inner.budgets.for_caller(anonymous, own_budget) else {
            return Ok(None);
        };
        let now = budget::now_secs();
        let estimate = budget::Estimate {
            input: 0,
            output: 0,
        };
        let (_, counters, window_end, _) = self
            .budget_step(identity, limit, estimate, now, false)
            .await?;
        Ok(Some(budget::BudgetInfo {
            limit: limit.tokens,
            used: counters.used,
            reserved: counters.reserved,
            window: limit.window,
            reset_at: window_end,
            reset_secs: window_end.saturating_sub(now),
            variable: budget::BudgetConfig::variable(anonymous),
        }))
    }

    /// One budget step in Redis, or in memory (no Redis, or it failed
    /// open): the output granted (`None`: refused), the counters after
    /// it, the window's end and where to settle.
    async fn budget_step(
        &self,
        identity: &str,
        limit: budget::TokenBudget,
        estimate: budget::Estimate,
        now: u64,
        reserve: bool,
    ) -> Result<(Option<u64>, budget::Counters, u64, budget::Store), Error> {
        let inner = &self.inner;
        let shared = inner
            .shared(|redis| async move {
                let key = redis.key("budget", identity);
                let boundaries = limit.window.boundaries_around(now);
                let answer = redis
                    .reserve_budget(&key, limit.tokens, estimate, boundaries, reserve)
                    .await?;
                Ok((answer, key, Arc::clone(redis)))
            })
            .await?;
        if let Some((answer, key, redis)) = shared {
            return Ok((
                answer.reserved_ok.then_some(answer.output),
                answer.counters,
                answer.window_end,
                budget::Store::Redis(redis, key),
            ));
        }
        let memory = &inner.memory_budgets;
        let window_end = limit.window.bounds(now).1;
        let store = budget::Store::Memory(Arc::clone(memory));
        if !reserve {
            return Ok((None, memory.status(identity, limit, now), window_end, store));
        }
        let (decision, counters) = memory.reserve(identity, limit, estimate, now);
        let granted = match decision {
            budget::Decision::Reserve { output, .. } => Some(output),
            budget::Decision::Refuse => None,
        };
        Ok((granted, counters, window_end, store))
    }

    /// The answer is a stream: from here on it holds a stream slot, unless
    /// the request took one already (a body may ask for a stream in ways
    /// the proxy cannot see). Over the limit, the caller drops the answer,
    /// which cancels it.
    pub(crate) async fn hold_stream(
        &self,
        guards: &mut Guards,
        identity: &str,
    ) -> Result<(), Error> {
        if guards.stream.is_none() {
            guards.stream = self.acquire_stream(identity).await?;
        }
        Ok(())
    }

    /// One request by `identity`; `anonymous` picks the anonymous limit.
    /// `Ok(Some(info))`: allowed with a limit in force (send the
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
        let shared = inner
            .shared(
                |redis| async move { redis.check_rate(&redis.key("rate", identity), rate).await },
            )
            .await?;
        let (allowed, info) = match shared {
            Some((allowed, ahead_us)) => (allowed, memory::decision_info(rate, allowed, ahead_us)),
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
        let shared = inner
            .shared(|redis| async move {
                let key = redis.key("streams", identity);
                let id = lease_id();
                let granted = redis.try_acquire(&key, &id, limit).await?;
                Ok(granted.then(|| RedisLease::start(Arc::clone(redis), key, id)))
            })
            .await?;
        match shared {
            Some(Some(lease)) => return Ok(Some(StreamLease::in_redis(lease))),
            Some(None) => return Err(Error::TooManyStreams { limit }),
            None => {}
        }
        match inner.streams.try_acquire(identity, limit) {
            Some(lease) => Ok(Some(StreamLease::in_memory(lease))),
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
        if inner.redis.is_some() {
            let key = &inner.upstream_key;
            let id = &lease_id();
            let mut pause = UPSTREAM_POLL_MIN;
            // Polled until granted, or until Redis fails: then refused (fail
            // closed) or queued in memory below (fail open).
            while let Some(granted) = inner
                .shared(|redis| async move {
                    let granted = redis.try_acquire(key, id, limit).await?;
                    Ok(granted
                        .then(|| RedisLease::start(Arc::clone(redis), key.clone(), id.clone())))
                })
                .await?
            {
                if let Some(lease) = granted {
                    return Ok(Some(UpstreamPermit::in_redis(lease)));
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
            Ok(Ok(permit)) => Ok(Some(UpstreamPermit::in_memory(permit))),
            // The semaphore is never closed; treat it like a timeout anyway.
            Ok(Err(_)) | Err(_) => Err(busy(started)),
        }
    }
}

impl Inner {
    /// The one place where a Redis failure meets the failure mode: runs
    /// `op` on the shared store, if there is one. `Ok(Some)`: Redis
    /// answered; `Ok(None)`: decide in this instance's memory (no Redis, or
    /// it failed and the proxy fails open; the store has logged why);
    /// `Err(LimiterUnavailable)`: it failed and the proxy fails closed.
    async fn shared<'a, T, Fut>(
        &'a self,
        op: impl FnOnce(&'a Arc<RedisStore>) -> Fut,
    ) -> Result<Option<T>, Error>
    where
        Fut: Future<Output = Result<T, Unavailable>>,
    {
        let Some(redis) = &self.redis else {
            return Ok(None);
        };
        match op(redis).await {
            Ok(answer) => Ok(Some(answer)),
            Err(Unavailable) => match redis.failure {
                FailureMode::Open => Ok(None),
                FailureMode::Closed => Err(Error::LimiterUnavailable),
            },
        }
    }
}

/// What the limits said when they let a request in, for its answer's
/// `RateLimit-*` headers and the access line.
#[derive(Debug)]
pub(crate) struct Admission {
    rate: Option<RateLimitInfo>,
}

impl Admission {
    /// Adds the `RateLimit-*` headers, when a rate limit applies.
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        if let Some(info) = &self.rate {
            info.apply(headers);
        }
    }

    pub(crate) fn outcome(&self) -> RateLimitOutcome {
        if self.rate.is_some() {
            RateLimitOutcome::Allowed
        } else {
            RateLimitOutcome::Off
        }
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

    /// A Redis that refuses connections at once (port 1 on loopback).
    fn unreachable_redis(failure: FailureMode) -> RedisConfig {
        let mut redis = RedisConfig::from_url("redis://127.0.0.1:1").unwrap();
        redis.failure = failure;
        redis.timeout = Duration::from_millis(100);
        redis
    }

    fn assert_send_sync_static<T: Send + Sync + 'static>() {}

    #[test]
    fn leases_and_the_limiter_can_cross_tasks() {
        assert_send_sync_static::<StreamLease>();
        assert_send_sync_static::<UpstreamPermit>();
        assert_send_sync_static::<Guards>();
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
    async fn guards_take_what_applies_and_an_answered_stream_holds_a_slot() {
        let mut config = LimitsConfig::disabled();
        config.max_streams = Some(1);
        config.upstream_concurrency = Some(1);
        config.upstream_queue_timeout = Duration::from_secs(5);
        let limiter = Limiter::new(&config);
        let mut asked = limiter.guards("u", true).await.unwrap();
        // Asked for a stream: its slot is taken, and not a second time when
        // the answer streams.
        limiter.hold_stream(&mut asked, "u").await.unwrap();
        // The stream slot is checked before the upstream queue is joined:
        // over the stream limit, no wait.
        let started = Instant::now();
        assert!(matches!(
            limiter.guards("u", true).await,
            Err(Error::TooManyStreams { limit: 1 })
        ));
        assert!(started.elapsed() < Duration::from_secs(1));
        drop(asked);

        // A stream nobody asked for takes its slot when it is answered.
        let mut unasked = limiter.guards("v", false).await.unwrap();
        assert!(unasked.stream.is_none());
        limiter.hold_stream(&mut unasked, "v").await.unwrap();
        assert!(matches!(
            limiter.acquire_stream("v").await,
            Err(Error::TooManyStreams { limit: 1 })
        ));
        // The upstream slot is held as long as the guards are.
        assert!(matches!(
            limiter.acquire_upstream().await,
            Err(Error::UpstreamBusy { .. })
        ));
        drop(unasked);
        let _again = limiter.guards("v", true).await.unwrap();
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
    async fn token_budgets_reserve_per_caller_and_follow_the_redis_failure_mode() {
        use crate::endpoint::Endpoint;
        let mut config = LimitsConfig::disabled();
        config.budget.identified = Some(budget::TokenBudget::parse("100/d").unwrap());
        let chat = || bytes::Bytes::from_static(br#"{"max_tokens":70,"messages":[]}"#);
        let limiter = Limiter::new(&config);
        // Anonymous callers have no budget here; calls GigaChat does not
        // bill are never budgeted.
        assert!(
            limiter
                .reserve_tokens("ip:1", true, None, Endpoint::Chat, &mut chat())
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            limiter
                .reserve_tokens("sub:a", false, None, Endpoint::Models, &mut chat())
                .await
                .unwrap()
                .is_none()
        );
        let first = limiter
            .reserve_tokens("sub:a", false, None, Endpoint::Chat, &mut chat())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.clamped, None);
        // 81 of 100 held: the next one's 70 is lowered to what is left.
        let mut body = chat();
        let second = limiter
            .reserve_tokens("sub:a", false, None, Endpoint::Chat, &mut body)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(second.clamped, Some(8));
        assert!(
            std::str::from_utf8(&body)
                .unwrap()
                .contains(r#""max_tokens":8"#)
        );
        assert!(matches!(
            limiter
                .reserve_tokens("sub:a", false, None, Endpoint::Chat, &mut chat())
                .await,
            Err(Error::TokenBudgetExceeded(_))
        ));
        // Dropped unsettled (the request failed before an answer): refunded.
        drop((first, second));
        let info = limiter
            .token_budget("sub:a", false, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((info.used, info.reserved, info.remaining()), (0, 0, 100));

        let open = Limiter::shared(&config, &unreachable_redis(FailureMode::Open), "default");
        let closed = Limiter::shared(&config, &unreachable_redis(FailureMode::Closed), "default");
        let bound = Duration::from_secs(2);
        assert!(
            tokio::time::timeout(
                bound,
                open.reserve_tokens("sub:a", false, None, Endpoint::Chat, &mut chat())
            )
            .await
            .unwrap()
            .unwrap()
            .is_some()
        );
        assert!(matches!(
            tokio::time::timeout(
                bound,
                closed.reserve_tokens("sub:a", false, None, Endpoint::Chat, &mut chat())
            )
            .await
            .unwrap(),
            Err(Error::LimiterUnavailable)
        ));
        assert!(matches!(
            tokio::time::timeout(bound, closed.token_budget("sub:a", false, None))
                .await
                .unwrap(),
            Err(Error::LimiterUnavailable)
        ));
    }

    #[tokio::test]
    async fn an_unreachable_redis_follows_the_failure_mode() {
        let mut base = LimitsConfig::disabled();
        base.rate = Some(rate(1, 60));
        base.max_streams = Some(1);
        base.upstream_concurrency = Some(1);
        let open = Limiter::shared(&base, &unreachable_redis(FailureMode::Open), "default");
        let closed = Limiter::shared(&base, &unreachable_redis(FailureMode::Closed), "default");
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
