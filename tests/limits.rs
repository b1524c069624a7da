//! Rate limits and the upstream concurrency guard, black-box: real proxy
//! processes (three of them sharing a real `redis-server`, as three
//! serverless instances would) in front of the emulator.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::routes::post_native_chat;
use common::*;
use serde_json::Value;

#[tokio::test]
async fn per_ip_limits_answer_429_with_retry_after_and_ratelimit_headers() {
    let s = setup_with(|_| {}, &[("GIGACHAT_PROXY_RATE_LIMIT_ANONYMOUS", "3/min")]).await;
    let models = || s.http.get(s.proxy.url("/api/gigachat-api/models")).send();
    for remaining in [2, 1, 0] {
        let response = models().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["ratelimit-limit"], "3");
        assert_eq!(
            response.headers()["ratelimit-remaining"],
            remaining.to_string().as_str()
        );
    }
    let limited = models().await.unwrap();
    assert_eq!(limited.status(), 429);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    assert_eq!(limited.headers()["ratelimit-remaining"], "0");
    assert_eq!(limited.headers()["ratelimit-policy"], "3;w=60");
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");
    assert_eq!(s.emulator.stats().api_calls, 3);
    // A spoofed X-Forwarded-For does not buy a new budget.
    let spoofed = s
        .http
        .get(s.proxy.url("/api/gigachat-api/models"))
        .header("X-Forwarded-For", "198.51.100.77")
        .send()
        .await
        .unwrap();
    assert_eq!(spoofed.status(), 429);
}

#[tokio::test]
async fn authenticated_identities_have_their_own_budgets() {
    let s = setup_with(
        |_| {},
        &[
            (
                "GIGACHAT_PROXY_API_KEYS",
                "key-one-0123456789abcdef,key-two-0123456789abcdef",
            ),
            ("GIGACHAT_PROXY_RATE_LIMIT", "2/min"),
        ],
    )
    .await;
    let call = |key: &'static str| {
        s.http
            .get(s.proxy.url("/api/gigachat-api/models"))
            .bearer_auth(key)
            .send()
    };
    for _ in 0..2 {
        assert_eq!(
            call("key-one-0123456789abcdef").await.unwrap().status(),
            200
        );
    }
    assert_eq!(
        call("key-one-0123456789abcdef").await.unwrap().status(),
        429
    );
    assert_eq!(
        call("key-two-0123456789abcdef").await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn concurrent_streams_per_identity_are_capped() {
    let s = setup_with_one_stream_slot().await;
    let first = post_native_chat(&s, &chat("long stream one two", true)).await;
    assert_eq!(first.status(), 200);
    let second = post_native_chat(&s, &chat("second", true)).await;
    assert_eq!(second.status(), 429);
    assert_eq!(
        second.json::<Value>().await.unwrap()["code"],
        "too_many_streams"
    );
    // Non-streaming calls are not streams.
    let plain = post_native_chat(&s, &chat("plain", false)).await;
    assert_eq!(plain.status(), 200);
    // When the first stream ends, its slot is free again.
    let _ = first.text().await.unwrap();
    let third = post_native_chat(&s, &chat("third", true)).await;
    assert_eq!(third.status(), 200);
}

#[tokio::test]
async fn the_upstream_guard_queues_instead_of_letting_gigachat_answer_429() {
    // GigaChat allows one concurrent request on a personal key; the
    // emulator enforces the same and would answer 429.
    let s = setup_with(
        |c| {
            c.chunk_delay = Duration::from_millis(150);
            c.concurrency_limit = Some(1);
        },
        &[("GIGACHAT_PROXY_UPSTREAM_QUEUE_TIMEOUT", "10")],
    )
    .await;
    let url = s.proxy.url("/api/gigachat-api/chat/completions");
    let requests = (0..3).map(|i| {
        let http = s.http.clone();
        let url = url.clone();
        async move {
            let response = http
                .post(url)
                .json(&chat(&format!("queued {i}"), true))
                .send()
                .await
                .unwrap();
            let status = response.status();
            (status, response.text().await.unwrap())
        }
    });
    let results = futures_util::future::join_all(requests).await;
    for (status, body) in &results {
        assert_eq!(*status, 200, "{body}");
        assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    }
    assert_eq!(s.emulator.stats().max_concurrent_api, 1);

    // With a queue timeout shorter than a stream, the waiter gets a clear 503.
    let s = setup_with(
        |c| c.chunk_delay = Duration::from_millis(300),
        &[("GIGACHAT_PROXY_UPSTREAM_QUEUE_TIMEOUT", "0.3")],
    )
    .await;
    let first = post_native_chat(&s, &chat("one two three four", true)).await;
    let waiter = post_native_chat(&s, &chat("waiter", false)).await;
    assert_eq!(waiter.status(), 503);
    assert!(waiter.headers().contains_key("retry-after"));
    assert_eq!(
        waiter.json::<Value>().await.unwrap()["code"],
        "upstream_busy"
    );
    drop(first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_sharing_redis_admit_no_more_than_the_limit() {
    let mut redis = RedisServer::start();
    let credentials = test_credentials();
    let emulator = start_emulator(&credentials, |_| {}).await;
    let proxies = proxies_sharing_redis(
        3,
        &emulator,
        &credentials,
        &redis,
        &[
            ("GIGACHAT_PROXY_API_KEYS", "shared-user-key-0123456789"),
            ("GIGACHAT_PROXY_RATE_LIMIT", "10/min"),
            ("GIGACHAT_PROXY_UPSTREAM_CONCURRENCY", "off"),
            ("GIGACHAT_PROXY_REDIS_FAILURE", "closed"),
        ],
    );
    let http = reqwest::Client::new();
    let burst = (0..45).map(|i| {
        let http = http.clone();
        let url = proxies[i % 3].url("/api/gigachat-api/models");
        async move {
            http.get(url)
                .bearer_auth("shared-user-key-0123456789")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    let statuses = futures_util::future::join_all(burst).await;
    let allowed = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(allowed, 10, "{statuses:?}");
    assert_eq!(limited, 35, "{statuses:?}");
    assert_eq!(emulator.stats().api_calls, 10);

    // Redis goes away: fail closed answers 503 promptly, never hangs.
    redis.kill();
    let started = Instant::now();
    let response = http
        .get(proxies[0].url("/api/gigachat-api/models"))
        .bearer_auth("shared-user-key-0123456789")
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "limiter_unavailable"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_failing_open_keeps_serving_with_local_limits() {
    // A password in the URL, as managed Redis URLs carry one: the failure
    // warning names the server, and must not print the password.
    let password = format!("redis-password-{}", uuid::Uuid::new_v4().simple());
    let mut redis = RedisServer::start_with_password(&password);
    let credentials = test_credentials();
    let emulator = start_emulator(&credentials, |_| {}).await;
    let (base, auth) = (emulator.base_url(), emulator.auth_url());
    let redis_url = redis.url();
    let mut env = proxy_env(&base, &auth, &credentials);
    env.extend_from_slice(&[
        ("GIGACHAT_PROXY_RATE_LIMIT_ANONYMOUS", "100/min"),
        ("REDIS_URL", redis_url.as_str()),
    ]);
    let proxy = start_proxy(&env);
    let http = reqwest::Client::new();
    let health: Value = get_json(&http, proxy.url("/api/gigachat-health")).await;
    assert_eq!(health["limits"], "redis");
    assert_eq!(
        http.get(proxy.url("/api/gigachat-api/models"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(
        redis.key_count() > 0,
        "the limiter authenticated with the URL's password and counted in Redis"
    );
    redis.kill();
    let started = Instant::now();
    let response = http
        .get(proxy.url("/api/gigachat-api/models"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        proxy.wait_for_log("fail open").await,
        "the failure is logged: {}",
        proxy.logs()
    );
    assert!(redis_url.contains(&format!(":{password}@")));
    assert_no_secret(&proxy.logs(), &[password], "the proxy's logs");
}
