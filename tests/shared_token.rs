//! The GigaChat access token shared through Redis, black-box: three proxy
//! processes (three serverless instances) and one `redis-server` in front
//! of the emulator, whose OAuth counter says how many tokens were fetched.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::routes::get_path;
use common::*;

/// One non-streaming chat call (never cached: chat caching is off by
/// default); returns the status.
async fn ask(http: &reqwest::Client, proxy: &ProxyProcess, text: &str) -> u16 {
    http.post(proxy.url("/api/gigachat-api/chat/completions"))
        .json(&chat(text, false))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The access token of the last API call the emulator received.
fn last_token(emulator: &gigachat_emulator::Emulator) -> String {
    upstream_tokens(emulator).pop().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_one_token_and_fall_back_without_redis() {
    let mut redis = RedisServer::start();
    let credentials = test_credentials();
    let emulator = start_emulator(&credentials, |_| {}).await;
    // A slow OAuth widens the window in which the instances could each
    // fetch their own token.
    emulator
        .faults()
        .set_oauth_delay(Duration::from_millis(300));
    let (base, auth) = (emulator.base_url(), emulator.auth_url());
    let redis_url = redis.url();
    let mut env = proxy_env(&base, &auth, &credentials);
    env.extend_from_slice(&[
        ("REDIS_URL", redis_url.as_str()),
        // The upstream guard would serialise the burst before it reaches
        // the token; this test is about the token.
        ("GIGACHAT_PROXY_UPSTREAM_CONCURRENCY", "off"),
    ]);
    let proxies = [start_proxy(&env), start_proxy(&env), start_proxy(&env)];
    let http = reqwest::Client::new();

    // A cold burst across all three instances: one OAuth call in all.
    let burst = (0..60).map(|i| {
        let (http, proxy) = (http.clone(), &proxies[i % 3]);
        async move { ask(&http, proxy, &format!("cold {i}")).await }
    });
    let statuses = futures_util::future::join_all(burst).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(
        emulator.stats().oauth_calls,
        1,
        "one OAuth call for the fleet"
    );
    let first_token = last_token(&emulator);
    assert!(upstream_tokens(&emulator).iter().all(|t| *t == first_token));

    // GigaChat rejects the token on instance 0: it fetches a new one…
    emulator.faults().fail_next_api_with_401(1);
    assert_eq!(ask(&http, &proxies[0], "after 401").await, 200);
    assert_eq!(emulator.stats().oauth_calls, 2);
    let second_token = last_token(&emulator);
    assert_ne!(second_token, first_token);

    // …and the others, rejected in turn, take it from Redis, no OAuth call.
    for proxy in &proxies[1..] {
        emulator.faults().fail_next_api_with_401(1);
        assert_eq!(ask(&http, proxy, "after 401 elsewhere").await, 200);
        assert_eq!(last_token(&emulator), second_token);
    }
    for round in 0..3 {
        for proxy in &proxies {
            assert_eq!(ask(&http, proxy, &format!("later {round}")).await, 200);
            assert_eq!(last_token(&emulator), second_token);
        }
    }
    assert_eq!(emulator.stats().oauth_calls, 2);

    // Redis goes away and every token is revoked: each instance fetches its
    // own (the behaviour without Redis), promptly.
    redis.kill();
    emulator.faults().set_oauth_delay(Duration::ZERO);
    emulator.faults().expire_all_tokens();
    for proxy in &proxies {
        let started = Instant::now();
        assert_eq!(ask(&http, proxy, "without redis").await, 200);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
    assert_eq!(emulator.stats().oauth_calls, 5);
    assert!(
        proxies[0]
            .wait_for_log("shared token store unavailable")
            .await,
        "the fallback is logged: {}",
        proxies[0].logs()
    );

    // No log line of any instance contains a GigaChat token (or the key).
    let mut secrets = upstream_tokens(&emulator);
    secrets.sort();
    secrets.dedup();
    assert_eq!(secrets.len(), 5);
    secrets.push(credentials.clone());
    for proxy in &proxies {
        assert_no_secret(&proxy.logs(), &secrets, "the proxy's logs");
    }
}

#[tokio::test]
async fn deep_health_proves_a_token_can_be_had() {
    let s = setup().await;
    let url = s.proxy.url("/api/gigachat-health");
    // Plain health never calls GigaChat.
    let plain: serde_json::Value = s.http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(plain["status"], "ok");
    assert!(plain.get("token").is_none());
    assert_eq!(s.emulator.stats().oauth_calls, 0);

    let mut answers = String::new();
    for query in ["?deep=1", "?deep=true"] {
        let response = s.http.get(format!("{url}{query}")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        let body: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["token"], "ok");
        assert_eq!(body["status"], "ok");
        answers.push_str(&text);
    }
    // The second deep check used the cached token.
    assert_eq!(s.emulator.stats().oauth_calls, 1);
    // One API call shows the emulator that token, for the leak check.
    let models = get_path(&s, "/api/gigachat-api/models", None).await;
    assert_eq!(models.status(), 200);
    assert_eq!(s.emulator.stats().oauth_calls, 1);
    let tokens = upstream_tokens(&s.emulator);
    assert_eq!(tokens.len(), 1);
    assert_no_secret(&answers, &tokens, "the health answers");
    assert_no_secret(&s.proxy.logs(), &tokens, "the proxy's logs");

    // OAuth refuses the key: 503 naming the error, never a token.
    let refused = setup().await;
    refused.emulator.faults().fail_next_oauth(401, 1);
    let response = get_path(&refused, "/api/gigachat-health?deep=1", None).await;
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["token"], "error");
    assert_eq!(body["code"], "upstream_auth_rejected");
    assert!(body["message"].as_str().unwrap().contains("OAuth"));
    assert_eq!(refused.emulator.stats().oauth_calls, 1);
}

/// Proxies sharing `redis` in front of `emulator`, retrying OAuth quickly.
fn fleet(
    n: usize,
    emulator: &gigachat_emulator::Emulator,
    credentials: &str,
    redis: &RedisServer,
    extra: &[(&str, &str)],
) -> Vec<ProxyProcess> {
    let quick_retries = [
        ("GIGACHAT_PROXY_UPSTREAM_CONCURRENCY", "off"),
        ("GIGACHAT_RETRY_BACKOFF_FACTOR", "0.05"),
    ];
    let env = [&quick_retries[..], extra].concat();
    proxies_sharing_redis(n, emulator, credentials, redis, &env)
}

/// Chat calls spread over the instances, all at once; their statuses.
async fn burst(proxies: &[ProxyProcess], calls: usize) -> Vec<u16> {
    let http = reqwest::Client::new();
    let calls = (0..calls).map(|i| {
        let (http, proxy) = (http.clone(), &proxies[i % proxies.len()]);
        async move { ask(&http, proxy, &format!("burst {i}")).await }
    });
    futures_util::future::join_all(calls).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_holder_retries_a_transient_oauth_failure_for_the_fleet() {
    let redis = RedisServer::start();
    let credentials = test_credentials();
    let emulator = start_emulator(&credentials, |_| {}).await;
    // Slow OAuth: the other instances are surely waiting on the lock while
    // its holder fails and retries.
    emulator
        .faults()
        .set_oauth_delay(Duration::from_millis(300));
    emulator.faults().fail_next_oauth(500, 1);
    let proxies = fleet(2, &emulator, &credentials, &redis, &[]);
    let statuses = burst(&proxies, 20).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let stats = emulator.stats();
    assert_eq!(
        (stats.oauth_calls, stats.oauth_failures),
        (2, 1),
        "the holder's failed call and its retry, for both instances"
    );
    let token = last_token(&emulator);
    assert!(upstream_tokens(&emulator).iter().all(|t| *t == token));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_oauth_failure_of_the_lock_holder_is_shared_not_repeated() {
    let redis = RedisServer::start();
    let credentials = test_credentials();
    let emulator = start_emulator(&credentials, |_| {}).await;
    emulator
        .faults()
        .set_oauth_delay(Duration::from_millis(300));
    emulator.faults().fail_next_oauth(503, 1000);
    let proxies = fleet(
        3,
        &emulator,
        &credentials,
        &redis,
        &[("GIGACHAT_MAX_RETRIES", "1")],
    );
    let http = reqwest::Client::new();
    let answers = (0..15).map(|i| {
        let (http, proxy) = (http.clone(), &proxies[i % 3]);
        async move {
            let response = http
                .post(proxy.url("/api/gigachat-api/chat/completions"))
                .json(&chat("doomed", false))
                .timeout(Duration::from_secs(20))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap();
            (status, body["code"].as_str().unwrap_or_default().to_owned())
        }
    });
    for (status, code) in futures_util::future::join_all(answers).await {
        assert_eq!((status, code.as_str()), (502, "upstream_auth_failed"));
    }
    // The holder's call and one retry; the waiting instances answered with
    // its error instead of taking the lock in turn (or all at once).
    assert_eq!(emulator.stats().oauth_calls, 2);
}
