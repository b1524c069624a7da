//! The response cache, black-box: real proxy processes in front of the
//! emulator, whose `api_calls` counter says whether GigaChat was asked; with
//! a real `redis-server` for the shared cache.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::routes::get_path;
use common::*;
use serde_json::{Value, json};

const KEY_ONE: &str = "cache-key-one-0123456789abcdef";
const KEY_TWO: &str = "cache-key-two-0123456789abcdef";

/// Status, `X-Cache` (if any) and body of one call.
struct Answer {
    status: u16,
    cache: Option<String>,
    content_type: Option<String>,
    body: String,
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    let response = request
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (status, cache, content_type) = (
        response.status().as_u16(),
        header("x-cache"),
        header("content-type"),
    );
    Answer {
        status,
        cache,
        content_type,
        body: response.text().await.unwrap(),
    }
}

async fn get(http: &reqwest::Client, proxy: &ProxyProcess, path: &str) -> Answer {
    send(http.get(proxy.url(&format!("/api/gigachat-api/{path}")))).await
}

async fn get_as(http: &reqwest::Client, proxy: &ProxyProcess, path: &str, key: &str) -> Answer {
    send(
        http.get(proxy.url(&format!("/api/gigachat-api/{path}")))
            .bearer_auth(key),
    )
    .await
}

/// A POST with the body exactly as given (key order and whitespace are the
/// caller's), as `key`.
async fn post(
    http: &reqwest::Client,
    proxy: &ProxyProcess,
    path: &str,
    key: &str,
    body: &str,
) -> Answer {
    send(
        http.post(proxy.url(&format!("/api/gigachat-api/{path}")))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body.to_owned()),
    )
    .await
}

#[tokio::test]
async fn the_model_list_is_cached_for_everyone_until_its_ttl() {
    let s = setup_with(|_| {}, &[("GIGACHAT_PROXY_MODELS_CACHE_TTL", "1")]).await;
    let first = get(&s.http, &s.proxy, "models").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.cache.as_deref(), Some("MISS"));
    assert_eq!(s.emulator.stats().api_calls, 1);

    // `v1/models` is the same resource; a second client gets the same bytes.
    let second = get(&s.http, &s.proxy, "v1/models").await;
    assert_eq!(second.status, 200);
    assert_eq!(second.cache.as_deref(), Some("HIT"));
    assert_eq!(second.body, first.body);
    assert_eq!(second.content_type, first.content_type);
    assert_eq!(
        s.emulator.stats().api_calls,
        1,
        "a hit must not call GigaChat"
    );

    // One model is its own entry.
    let model = get(&s.http, &s.proxy, "models/GigaChat").await;
    assert_eq!((model.status, model.cache.as_deref()), (200, Some("MISS")));
    assert_eq!(
        get(&s.http, &s.proxy, "models/GigaChat")
            .await
            .cache
            .as_deref(),
        Some("HIT")
    );
    assert_eq!(s.emulator.stats().api_calls, 2);
    // An unknown model (404) is never cached.
    for _ in 0..2 {
        let missing = get(&s.http, &s.proxy, "models/NoSuchModel").await;
        assert_eq!(
            (missing.status, missing.cache.as_deref()),
            (404, Some("MISS"))
        );
    }
    assert_eq!(s.emulator.stats().api_calls, 4);

    tokio::time::sleep(Duration::from_millis(1200)).await;
    let later = get(&s.http, &s.proxy, "models").await;
    assert_eq!(
        later.cache.as_deref(),
        Some("MISS"),
        "expired after its TTL"
    );
    assert_eq!(s.emulator.stats().api_calls, 5);
    assert_eq!(
        get(&s.http, &s.proxy, "models").await.cache.as_deref(),
        Some("HIT")
    );
    assert_eq!(s.emulator.stats().api_calls, 5);
}

#[tokio::test]
async fn the_model_cache_can_be_turned_off() {
    let s = setup_with(|_| {}, &[("GIGACHAT_PROXY_MODELS_CACHE_TTL", "off")]).await;
    for _ in 0..2 {
        let answer = get(&s.http, &s.proxy, "models").await;
        assert_eq!((answer.status, answer.cache), (200, None));
    }
    assert_eq!(s.emulator.stats().api_calls, 2);
    let health: Value = get_path(&s, "/api/gigachat-health", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(health["cache"], "off");
}

#[tokio::test]
async fn chat_is_not_cached_unless_the_operator_opts_in() {
    let s = setup_with(|_| {}, &[("GIGACHAT_PROXY_API_KEYS", KEY_ONE)]).await;
    let body = chat("same question", false).to_string();
    for _ in 0..2 {
        let answer = post(&s.http, &s.proxy, "chat/completions", KEY_ONE, &body).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.cache, None, "no X-Cache on an uncacheable request");
    }
    assert_eq!(s.emulator.stats().api_calls, 2);
}

#[tokio::test]
async fn chat_answers_are_cached_per_identity_for_the_exact_request() {
    let s = setup_with(
        |_| {},
        &[
            ("GIGACHAT_PROXY_CHAT_CACHE_TTL", "60"),
            ("GIGACHAT_PROXY_API_KEYS", &format!("{KEY_ONE},{KEY_TWO}")),
            ("GIGACHAT_PROXY_RATE_LIMIT", "6/min"),
        ],
    )
    .await;
    let body = r#"{"model":"GigaChat","messages":[{"role":"user","content":"Сколько будет 2+2?"}],"temperature":0.3}"#;
    let same = "{\n  \"temperature\": 0.3,\n  \"messages\": [ { \"content\": \"Сколько будет 2+2?\", \"role\": \"user\" } ],\n  \"model\": \"GigaChat\"\n}";
    let first = post(&s.http, &s.proxy, "chat/completions", KEY_ONE, body).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.cache.as_deref(), Some("MISS"));
    let content: Value = serde_json::from_str(&first.body).unwrap();
    assert_eq!(content["choices"][0]["finish_reason"], "stop");

    // Keys in another order, other whitespace, the v1 prefix: one request.
    let again = post(&s.http, &s.proxy, "v1/chat/completions", KEY_ONE, same).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.cache.as_deref(), Some("HIT"));
    assert_eq!(again.body, first.body, "the very same answer");
    assert_eq!(s.emulator.stats().api_calls, 1);

    // Another user never gets the first user's answer.
    let other = post(&s.http, &s.proxy, "chat/completions", KEY_TWO, body).await;
    assert_eq!((other.status, other.cache.as_deref()), (200, Some("MISS")));
    assert_eq!(s.emulator.stats().api_calls, 2);

    // A different question is a different entry.
    let different = body.replace("2+2", "3+3");
    let answer = post(&s.http, &s.proxy, "chat/completions", KEY_ONE, &different).await;
    assert_eq!(answer.cache.as_deref(), Some("MISS"));
    assert_eq!(s.emulator.stats().api_calls, 3);

    // A hit still counts against the caller's rate limit (6/min: three
    // requests so far for KEY_ONE).
    for _ in 0..3 {
        let hit = post(&s.http, &s.proxy, "chat/completions", KEY_ONE, body).await;
        assert_eq!((hit.status, hit.cache.as_deref()), (200, Some("HIT")));
    }
    let limited = post(&s.http, &s.proxy, "chat/completions", KEY_ONE, body).await;
    assert_eq!(limited.status, 429);
    assert_eq!(s.emulator.stats().api_calls, 3);

    // v2 chat is cached too, apart from v1.
    let v2 = json!({"model": "GigaChat", "messages": [{"role": "user", "content": [{"text": "Сколько будет 2+2?"}]}]})
        .to_string();
    let first = post(&s.http, &s.proxy, "v2/chat/completions", KEY_TWO, &v2).await;
    assert_eq!((first.status, first.cache.as_deref()), (200, Some("MISS")));
    let again = post(&s.http, &s.proxy, "v2/chat/completions", KEY_TWO, &v2).await;
    assert_eq!((again.status, again.cache.as_deref()), (200, Some("HIT")));
    assert_eq!(again.body, first.body);
    assert_eq!(s.emulator.stats().api_calls, 4);
}

#[tokio::test]
async fn streams_errors_and_truncated_answers_are_never_cached() {
    let s = setup_with(
        |_| {},
        &[
            ("GIGACHAT_PROXY_CHAT_CACHE_TTL", "60"),
            ("GIGACHAT_PROXY_API_KEYS", KEY_ONE),
        ],
    )
    .await;
    let mut calls = 0;
    // A stream: not even looked up.
    let stream = chat("stream me", true).to_string();
    for _ in 0..2 {
        let answer = post(&s.http, &s.proxy, "chat/completions", KEY_ONE, &stream).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.cache, None);
        assert!(answer.body.contains("data: [DONE]"));
        calls += 1;
        assert_eq!(s.emulator.stats().api_calls, calls);
    }
    // An upstream error: looked up, never stored.
    let unknown =
        json!({"model": "NoSuchModel", "messages": [{"role": "user", "content": "x"}]}).to_string();
    for _ in 0..2 {
        let answer = post(&s.http, &s.proxy, "chat/completions", KEY_ONE, &unknown).await;
        assert_eq!(
            (answer.status, answer.cache.as_deref()),
            (404, Some("MISS"))
        );
        calls += 1;
        assert_eq!(s.emulator.stats().api_calls, calls);
    }
    // A truncated answer (finish_reason "length").
    let truncated = json!({"model": "GigaChat", "max_tokens": 1,
        "messages": [{"role": "user", "content": "a long question that gets cut off"}]})
    .to_string();
    for _ in 0..2 {
        let answer = post(&s.http, &s.proxy, "chat/completions", KEY_ONE, &truncated).await;
        assert_eq!(
            (answer.status, answer.cache.as_deref()),
            (200, Some("MISS"))
        );
        let content: Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(content["choices"][0]["finish_reason"], "length");
        calls += 1;
        assert_eq!(s.emulator.stats().api_calls, calls);
    }
    // A transient failure is not stored either; the retry's answer is.
    s.emulator.faults().fail_next_api_with_status(500, 1);
    let flaky = chat("flaky", false).to_string();
    let answer = post(&s.http, &s.proxy, "chat/completions", KEY_ONE, &flaky).await;
    assert_eq!(
        (answer.status, answer.cache.as_deref()),
        (200, Some("MISS"))
    );
    let again = post(&s.http, &s.proxy, "chat/completions", KEY_ONE, &flaky).await;
    assert_eq!((again.status, again.cache.as_deref()), (200, Some("HIT")));
    assert_eq!(again.body, answer.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_the_cache_through_redis_and_survive_its_loss() {
    let mut redis = RedisServer::start();
    let credentials = test_credentials();
    let emulator = start_emulator(&credentials, |_| {}).await;
    let (base, auth) = (emulator.base_url(), emulator.auth_url());
    let redis_url = redis.url();
    let keys = format!("{KEY_ONE},{KEY_TWO}");
    let mut env = proxy_env(&base, &auth, &credentials);
    env.extend_from_slice(&[
        ("REDIS_URL", redis_url.as_str()),
        ("GIGACHAT_PROXY_MODELS_CACHE_TTL", "60"),
        ("GIGACHAT_PROXY_CHAT_CACHE_TTL", "60"),
        ("GIGACHAT_PROXY_API_KEYS", &keys),
    ]);
    let a = start_proxy(&env);
    let b = start_proxy(&env);
    let http = reqwest::Client::new();
    let health: Value = get_json(&http, b.url("/api/gigachat-health")).await;
    assert_eq!(health["cache"], "redis");

    let stored = get_as(&http, &a, "models", KEY_ONE).await;
    assert_eq!(
        (stored.status, stored.cache.as_deref()),
        (200, Some("MISS"))
    );
    assert_eq!(emulator.stats().api_calls, 1);
    let shared = get_as(&http, &b, "v1/models", KEY_TWO).await;
    assert_eq!(
        (shared.status, shared.cache.as_deref()),
        (200, Some("HIT")),
        "B answers from what A stored"
    );
    assert_eq!(shared.body, stored.body);
    assert_eq!(emulator.stats().api_calls, 1);
    // B answered without a GigaChat token of its own. The needle is the
    // one a token fetch or adoption logs; A's fetch shows it is still what
    // those lines say, so a renamed message cannot make this pass.
    const TOKEN_LOGGED: &str = "GigaChat access token";
    assert!(
        a.wait_for_log(TOKEN_LOGGED).await,
        "A logs the token it fetched for its miss: {}",
        a.logs()
    );
    assert!(
        !b.logs().contains(TOKEN_LOGGED),
        "a hit needs no token: {}",
        b.logs()
    );

    let body = chat("shared question", false).to_string();
    let first = post(&http, &b, "chat/completions", KEY_ONE, &body).await;
    assert_eq!((first.status, first.cache.as_deref()), (200, Some("MISS")));
    let second = post(&http, &a, "chat/completions", KEY_ONE, &body).await;
    assert_eq!((second.status, second.cache.as_deref()), (200, Some("HIT")));
    assert_eq!(second.body, first.body);
    assert_eq!(emulator.stats().api_calls, 2);

    // Redis goes away: every answer still comes, promptly, from GigaChat.
    redis.kill();
    for path in ["models", "models"] {
        let started = Instant::now();
        let answer = get_as(&http, &a, path, KEY_ONE).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.cache.as_deref(), Some("MISS"));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
    let started = Instant::now();
    let answer = post(&http, &a, "chat/completions", KEY_ONE, &body).await;
    assert_eq!(
        (answer.status, answer.cache.as_deref()),
        (200, Some("MISS"))
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(emulator.stats().api_calls, 5);
    assert!(
        a.wait_for_log("response cache store unavailable").await,
        "the outage is logged: {}",
        a.logs()
    );
    let warnings = a.logs().matches("response cache store unavailable").count();
    assert_eq!(warnings, 1, "throttled to one warning per 10 s");
    assert!(!a.logs().contains(&credentials) && !b.logs().contains(&credentials));
}
