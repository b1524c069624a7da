//! The shared limiter against a real `redis-server` that each test starts on
//! a free loopback port (no persistence, killed on drop). Several `Limiter`s
//! on one Redis stand for several serverless instances of one deployment.
//!
//! Redis failures in tests 1–4 would silently fall back to memory in the
//! default fail-open mode and blur what is tested, so those tests fail
//! closed: a Redis problem shows up as `LimiterUnavailable`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use gigachat_proxy_core::limits_for_tests::{
    Error, FailureMode, Limiter, LimitsConfig, Rate, RedisConfig,
};
use gigachat_test_support::redis_server::RedisServer;

/// A generous per-round-trip timeout for the correctness tests: the machine
/// may be busy compiling, and a spurious timeout must not look like a bug.
const SLOW_OK: Duration = Duration::from_secs(3);

/// A client connection to `server`, for reading what the limiter wrote.
async fn redis_connection(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

fn per_minute(count: u64) -> Rate {
    Rate {
        count,
        window: Duration::from_secs(60),
    }
}

/// The limits under test and the Redis they are shared through; the tests
/// set the limits as fields (`limits.rate = …`) through `DerefMut`.
#[derive(Debug)]
struct Shared {
    limits: LimitsConfig,
    redis: RedisConfig,
}

impl std::ops::Deref for Shared {
    type Target = LimitsConfig;
    fn deref(&self) -> &LimitsConfig {
        &self.limits
    }
}

impl std::ops::DerefMut for Shared {
    fn deref_mut(&mut self) -> &mut LimitsConfig {
        &mut self.limits
    }
}

fn config(url: &str, failure: FailureMode, timeout: Duration) -> Shared {
    let mut redis = RedisConfig::from_url(url).unwrap();
    redis.failure = failure;
    redis.timeout = timeout;
    Shared {
        limits: LimitsConfig::disabled(),
        redis,
    }
}

/// One instance of the proxy's limiter on the shared Redis.
fn instance(shared: &Shared) -> Limiter {
    Limiter::shared(&shared.limits, &shared.redis, "default")
}

/// Polls `check` every 20 ms until it is true or `within` has passed.
async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// (1) + (2)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_admit_exactly_the_limit_under_a_concurrent_burst() {
    let server = RedisServer::start();
    let mut limits = config(&server.url(), FailureMode::Closed, SLOW_OK);
    limits.rate = Some(per_minute(10));
    let instances: Vec<Limiter> = (0..3).map(|_| instance(&limits)).collect();
    assert!(instances.iter().all(|limiter| limiter.backend() == "redis"));

    let mut burst = Vec::new();
    for limiter in &instances {
        for _ in 0..20 {
            let limiter = limiter.clone();
            burst.push(tokio::spawn(async move {
                limiter.check_request("key:shared", false).await
            }));
        }
    }
    let (mut allowed, mut denied) = (Vec::new(), Vec::new());
    for task in burst {
        match task.await.unwrap() {
            Ok(Some(info)) => allowed.push(info),
            Err(Error::RateLimited(info)) => denied.push(info),
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!(allowed.len(), 10, "admitted {} of 60", allowed.len());
    assert_eq!(denied.len(), 50);
    let mut remaining: Vec<u64> = allowed.iter().map(|info| info.remaining).collect();
    remaining.sort_unstable();
    assert_eq!(remaining, (0..10).collect::<Vec<_>>());
    for info in &denied {
        assert_eq!(info.limit, 10);
        assert_eq!(info.remaining, 0);
        assert!((1..=6).contains(&info.retry_after_secs), "{info:?}");
        assert!(info.reset_secs <= 60 && info.reset_secs >= 59, "{info:?}");
    }

    // (2) Another identity has its own budget, on every instance.
    for limiter in &instances {
        let info = limiter
            .check_request("key:other", false)
            .await
            .unwrap()
            .unwrap();
        assert!(info.remaining >= 7);
    }
    assert!(matches!(
        instances[2].check_request("key:shared", false).await,
        Err(Error::RateLimited(_))
    ));

    // The bucket key is versioned and expires when the bucket is full again.
    let mut connection = redis_connection(&server).await;
    let ttl: i64 = redis::cmd("PTTL")
        .arg("gigachat-proxy:v1:rate:key:shared")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!((50_000..=60_000).contains(&ttl), "PTTL {ttl}");
}

#[tokio::test]
async fn the_rate_is_earned_back_on_the_servers_clock() {
    let server = RedisServer::start();
    let mut limits = config(&server.url(), FailureMode::Closed, SLOW_OK);
    // 2 per 400 ms: T = 200 ms.
    limits.rate = Some(Rate {
        count: 2,
        window: Duration::from_millis(400),
    });
    let a = instance(&limits);
    let b = instance(&limits);
    assert!(a.check_request("sub:x", false).await.unwrap().is_some());
    assert!(b.check_request("sub:x", false).await.unwrap().is_some());
    assert!(matches!(
        a.check_request("sub:x", false).await,
        Err(Error::RateLimited(info)) if info.retry_after_secs == 1
    ));
    // One request comes back after T; poll instead of assuming a speed.
    assert!(
        eventually(Duration::from_secs(3), || async {
            b.check_request("sub:x", false).await.is_ok()
        })
        .await
    );
}

// (3)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_streams_are_capped_across_instances() {
    let server = RedisServer::start();
    let mut limits = config(&server.url(), FailureMode::Closed, SLOW_OK);
    limits.max_streams = Some(2);
    let (a, b, c) = (instance(&limits), instance(&limits), instance(&limits));
    let first = a.acquire_stream("sub:alice").await.unwrap().unwrap();
    let _second = b.acquire_stream("sub:alice").await.unwrap().unwrap();
    assert!(matches!(
        c.acquire_stream("sub:alice").await,
        Err(Error::TooManyStreams { limit: 2 })
    ));
    // Someone else is not affected.
    let _bob = c.acquire_stream("sub:bob").await.unwrap().unwrap();

    let mut connection = redis_connection(&server).await;
    let ttl: i64 = redis::cmd("PTTL")
        .arg("gigachat-proxy:v1:streams:sub:alice")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!((1..=30_000).contains(&ttl), "PTTL {ttl}");

    drop(first); // releases asynchronously
    let third = std::sync::Mutex::new(None);
    let granted = eventually(Duration::from_secs(3), || async {
        match c.acquire_stream("sub:alice").await {
            Ok(Some(lease)) => {
                *third.lock().unwrap() = Some(lease);
                true
            }
            Err(Error::TooManyStreams { .. }) => false,
            other => panic!("unexpected {other:?}"),
        }
    })
    .await;
    assert!(granted, "the dropped lease was never released");
    assert!(matches!(
        a.acquire_stream("sub:alice").await,
        Err(Error::TooManyStreams { limit: 2 })
    ));
}

// (4)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_guard_is_shared_and_queues() {
    let server = RedisServer::start();
    let mut limits = config(&server.url(), FailureMode::Closed, SLOW_OK);
    limits.upstream_concurrency = Some(1);
    limits.upstream_queue_timeout = Duration::from_secs(10);
    let a = instance(&limits);
    let b = instance(&limits);

    let held = a.acquire_upstream().await.unwrap().unwrap();
    let waiting = {
        let b = b.clone();
        tokio::spawn(async move { b.acquire_upstream().await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "the second instance got a slot while the only one was held"
    );
    drop(held);
    let second = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the queued request never got the freed slot")
        .unwrap()
        .unwrap()
        .unwrap();

    // While the second holds it, a short queue gives up with UpstreamBusy.
    limits.upstream_queue_timeout = Duration::from_millis(400);
    let impatient = instance(&limits);
    match impatient.acquire_upstream().await {
        Err(Error::UpstreamBusy { waited_ms }) => {
            assert!((400..5_000).contains(&waited_ms), "{waited_ms}")
        }
        other => panic!("expected UpstreamBusy, got {other:?}"),
    }
    drop(second);
    assert!(
        eventually(Duration::from_secs(3), || async {
            matches!(impatient.acquire_upstream().await, Ok(Some(_)))
        })
        .await
    );
}

/// The answers of one limiter once Redis is gone, each bounded so a hang
/// fails the test instead of stalling it.
async fn after_outage(limiter: &Limiter) -> [Result<bool, String>; 3] {
    let bound = Duration::from_secs(1);
    let started = Instant::now();
    let rate = tokio::time::timeout(bound, limiter.check_request("ip:203.0.113.7", true))
        .await
        .expect("check_request hung")
        .map(|info| info.is_some())
        .map_err(|err| err.code().to_owned());
    let stream = tokio::time::timeout(bound, limiter.acquire_stream("ip:203.0.113.7"))
        .await
        .expect("acquire_stream hung")
        .map(|lease| lease.is_some())
        .map_err(|err| err.code().to_owned());
    let upstream = tokio::time::timeout(bound, limiter.acquire_upstream())
        .await
        .expect("acquire_upstream hung")
        .map(|permit| permit.is_some())
        .map_err(|err| err.code().to_owned());
    assert!(started.elapsed() < Duration::from_secs(3));
    [rate, stream, upstream]
}

fn outage_limits(url: &str, failure: FailureMode) -> Shared {
    let mut limits = config(url, failure, Duration::from_millis(400));
    limits.anonymous_rate = Some(per_minute(5));
    limits.max_streams = Some(2);
    limits.upstream_concurrency = Some(1);
    limits.upstream_queue_timeout = Duration::from_secs(5);
    limits
}

// (5)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_test_follows_the_failure_mode_promptly() {
    let mut server = RedisServer::start();
    let open = instance(&outage_limits(&server.url(), FailureMode::Open));
    let closed = instance(&outage_limits(&server.url(), FailureMode::Closed));
    // Both are connected and working before the outage.
    assert_eq!(after_outage(&open).await, [Ok(true), Ok(true), Ok(true)]);
    assert_eq!(after_outage(&closed).await, [Ok(true), Ok(true), Ok(true)]);

    server.kill();
    assert_eq!(after_outage(&open).await, [Ok(true), Ok(true), Ok(true)]);
    let unavailable = Err("limiter_unavailable".to_owned());
    assert_eq!(
        after_outage(&closed).await,
        [unavailable.clone(), unavailable.clone(), unavailable]
    );
}

// (5, the harder case) Redis still accepts connections but never answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_never_hangs_a_request() {
    let mut server = RedisServer::start();
    let open = instance(&outage_limits(&server.url(), FailureMode::Open));
    let closed = instance(&outage_limits(&server.url(), FailureMode::Closed));
    assert_eq!(after_outage(&open).await, [Ok(true), Ok(true), Ok(true)]);
    assert_eq!(after_outage(&closed).await, [Ok(true), Ok(true), Ok(true)]);

    server.freeze();
    assert_eq!(after_outage(&open).await, [Ok(true), Ok(true), Ok(true)]);
    let unavailable = Err("limiter_unavailable".to_owned());
    assert_eq!(
        after_outage(&closed).await,
        [unavailable.clone(), unavailable.clone(), unavailable]
    );
    server.thaw();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limiter_reconnects_after_redis_comes_back() {
    let mut server = RedisServer::start();
    let port = server.port();
    let limits = outage_limits(&server.url(), FailureMode::Closed);
    let limiter = instance(&limits);
    assert!(limiter.check_request("ip:1", true).await.is_ok());
    server.kill();
    assert!(matches!(
        limiter.check_request("ip:1", true).await,
        Err(Error::LimiterUnavailable)
    ));
    let _server = RedisServer::start_on(port, None);
    assert!(
        eventually(Duration::from_secs(10), || async {
            limiter.check_request("ip:1", true).await.is_ok()
        })
        .await,
        "the limiter never used the restarted Redis"
    );
}

// (6)
#[tokio::test]
async fn a_password_in_the_url_works_and_is_never_printed() {
    let server = RedisServer::start_with_password("pw-s3cret-value");
    let url = server.url();
    assert!(url.contains("pw-s3cret-value"));
    let mut limits = config(&url, FailureMode::Closed, SLOW_OK);
    limits.rate = Some(per_minute(1));
    let printed = format!("{limits:?}");
    assert!(!printed.contains("pw-s3cret-value"), "{printed}");
    assert!(printed.contains("redis://127.0.0.1"), "{printed}");

    let limiter = instance(&limits);
    assert!(format!("{limiter:?}").contains("redis"));
    assert!(
        limiter
            .check_request("sub:a", false)
            .await
            .unwrap()
            .is_some()
    );
    assert!(matches!(
        limiter.check_request("sub:a", false).await,
        Err(Error::RateLimited(_))
    ));

    // A wrong password is a Redis failure like any other, not a hang.
    let wrong = format!("redis://:wrong@127.0.0.1:{}", server.port());
    let mut limits = config(&wrong, FailureMode::Closed, Duration::from_millis(500));
    limits.rate = Some(per_minute(1));
    let answer = tokio::time::timeout(
        Duration::from_secs(2),
        instance(&limits).check_request("sub:a", false),
    )
    .await
    .unwrap();
    assert!(
        matches!(answer, Err(Error::LimiterUnavailable)),
        "{answer:?}"
    );
}
