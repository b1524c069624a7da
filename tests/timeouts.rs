//! Every way GigaChat can be slow ends in a clear answer: a 504 JSON error
//! before the headers, a final SSE error event after a stream started. And
//! a transient failure of its OAuth exchange is retried within the same
//! `GIGACHAT_TIMEOUT`, so it costs the user time, not the request.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::routes::{get_path, post_native_chat};
use common::*;
use serde_json::Value;

#[tokio::test]
async fn no_headers_within_the_timeout_is_a_504() {
    let s = setup_with(
        |_| {},
        &[("GIGACHAT_TIMEOUT", "0.5"), ("GIGACHAT_MAX_RETRIES", "0")],
    )
    .await;
    // Warm the token first so only the API call is slow.
    assert_eq!(
        get_path(&s, "/api/gigachat-api/models", None)
            .await
            .status(),
        200
    );
    s.emulator
        .faults()
        .set_first_byte_delay(Duration::from_secs(3));
    let started = Instant::now();
    let response = get_path(&s, "/api/gigachat-api/models", None).await;
    assert_eq!(response.status(), 504);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "upstream_timeout");
    assert!(body["hint"].as_str().unwrap().contains("GIGACHAT_TIMEOUT"));
}

#[tokio::test]
async fn a_slow_oauth_answer_is_a_504_too() {
    let s = setup_with(|_| {}, &[("GIGACHAT_TIMEOUT", "0.5")]).await;
    s.emulator.faults().set_oauth_delay(Duration::from_secs(3));
    let started = Instant::now();
    let response = get_path(&s, "/api/gigachat-api/models", None).await;
    assert_eq!(response.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "upstream_timeout"
    );
}

#[tokio::test]
async fn a_stream_that_stalls_ends_with_an_error_event() {
    let s = setup_with(
        |c| c.chunk_delay = Duration::from_secs(2),
        &[("GIGACHAT_PROXY_STREAM_IDLE_TIMEOUT", "0.4")],
    )
    .await;
    let started = Instant::now();
    let response = post_native_chat(&s, &chat("slow slow slow", true)).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(1800),
        "{:?}",
        started.elapsed()
    );
    let payloads = sse_data(&text);
    assert!(
        payloads.len() >= 2,
        "the first event arrived before the stall: {text}"
    );
    let last: Value = serde_json::from_str(payloads.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_timeout", "{text}");
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("GIGACHAT_PROXY_STREAM_IDLE_TIMEOUT")
    );
}

#[tokio::test]
async fn a_stream_longer_than_the_total_timeout_is_cut_with_an_error_event() {
    let s = setup_with(
        |c| c.chunk_delay = Duration::from_millis(300),
        &[("GIGACHAT_PROXY_TOTAL_TIMEOUT", "0.7")],
    )
    .await;
    let response =
        post_native_chat(&s, &chat("one two three four five six seven eight", true)).await;
    let text = response.text().await.unwrap();
    let payloads = sse_data(&text);
    let last: Value = serde_json::from_str(payloads.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_timeout", "{text}");
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("GIGACHAT_PROXY_TOTAL_TIMEOUT")
    );
    assert!(!text.contains("[DONE]"));
}

#[tokio::test]
async fn connection_refused_is_retried_then_answered_502() {
    // Nothing listens on the base URL: a connect error, retried, then 502.
    let credentials = test_credentials();
    let emulator = start_emulator(&credentials, |_| {}).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_base = format!("http://{}/api/v1", dead.local_addr().unwrap());
    drop(dead);
    let auth = emulator.auth_url();
    let mut env = proxy_env(&dead_base, &auth, &credentials);
    env.push(("GIGACHAT_RETRY_BACKOFF_FACTOR", "0.05"));
    let proxy = start_proxy(&env);
    let response = reqwest::Client::new()
        .get(proxy.url("/api/gigachat-api/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "upstream_unreachable");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("connection failed"),
        "{body}"
    );
    assert!(proxy.wait_for_log("retry=2").await, "{}", proxy.logs());
}

/// The OAuth retries' log line (the proxy logs at debug in these tests).
const OAUTH_RETRY_LOG: &str = "retrying a transient GigaChat OAuth failure";

async fn chat_status(s: &Setup, text: &str) -> (u16, Value) {
    let response = s
        .http
        .post(s.proxy.url("/api/gigachat-api/chat/completions"))
        .json(&chat(text, false))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Polls the emulator's OAuth counter until it reaches `calls` (bounded),
/// and says when it saw it.
async fn when_oauth_calls_reach(emulator: &gigachat_emulator::Emulator, calls: u64) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(10);
    while emulator.stats().oauth_calls < calls {
        assert!(
            Instant::now() < deadline,
            "{calls} OAuth calls never came: {:?}",
            emulator.stats()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Instant::now()
}

#[tokio::test]
async fn one_oauth_500_is_retried_and_every_waiting_request_succeeds() {
    let s = setup_with(
        |_| {},
        &[
            ("GIGACHAT_RETRY_BACKOFF_FACTOR", "0.05"),
            // The upstream guard would serialise the burst before it
            // reaches the token; this test is about the token.
            ("GIGACHAT_PROXY_UPSTREAM_CONCURRENCY", "off"),
        ],
    )
    .await;
    s.emulator.faults().fail_next_oauth(500, 1);
    let (status, body) = chat_status(&s, "first").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(s.emulator.stats().oauth_calls, 2, "one failure, one retry");

    // Again, cold, with ten requests waiting on the one refresh: they all
    // get the retried token.
    s.emulator.faults().expire_all_tokens();
    s.emulator.faults().fail_next_oauth(500, 1);
    s.emulator
        .faults()
        .set_oauth_delay(Duration::from_millis(200));
    s.emulator.reset_stats();
    let burst = (0..10).map(|i| chat_status(&s, if i % 2 == 0 { "even" } else { "odd" }));
    for (status, body) in futures_util::future::join_all(burst).await {
        assert_eq!(status, 200, "{body}");
    }
    let stats = s.emulator.stats();
    assert_eq!(
        (stats.oauth_calls, stats.oauth_failures),
        (2, 1),
        "single-flight shares the retried result"
    );
    assert!(s.proxy.wait_for_log(OAUTH_RETRY_LOG).await);
}

#[tokio::test]
async fn a_refused_key_is_not_retried() {
    let credentials = test_credentials();
    let emulator = start_emulator(&credentials, |_| {}).await;
    let wrong = test_credentials();
    let proxy = start_proxy_for(
        &emulator,
        &wrong,
        &[("GIGACHAT_RETRY_BACKOFF_FACTOR", "0.05")],
    );
    let response = reqwest::Client::new()
        .post(proxy.url("/api/gigachat-api/chat/completions"))
        .json(&chat("x", false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "upstream_auth_rejected");
    assert!(
        body["message"].as_str().unwrap().contains("code 6"),
        "{body}"
    );
    assert_eq!(emulator.stats().oauth_calls, 1);
    assert!(!proxy.logs().contains(OAUTH_RETRY_LOG), "{}", proxy.logs());
}

#[tokio::test]
async fn an_oauth_429_is_retried_after_its_retry_after() {
    let s = setup_with(|_| {}, &[("GIGACHAT_RETRY_BACKOFF_FACTOR", "0.05")]).await;
    s.emulator
        .faults()
        .fail_next_oauth_with_retry_after(429, 1, Some(1));
    let request = tokio::spawn({
        let (http, url) = (
            s.http.clone(),
            s.proxy.url("/api/gigachat-api/chat/completions"),
        );
        async move {
            http.post(url)
                .json(&chat("patience", false))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    let first = when_oauth_calls_reach(&s.emulator, 1).await;
    let second = when_oauth_calls_reach(&s.emulator, 2).await;
    assert_eq!(request.await.unwrap(), 200);
    // The backoff alone would wait 50-75 ms; GigaChat asked for 1 s.
    assert!(
        second - first >= Duration::from_millis(900),
        "the retry came {:?} after the 429",
        second - first
    );
    assert_eq!(s.emulator.stats().oauth_calls, 2);
}

#[tokio::test]
async fn oauth_retries_end_by_the_timeout_with_the_last_error() {
    let s = setup_with(
        |_| {},
        &[
            ("GIGACHAT_TIMEOUT", "1.5"),
            ("GIGACHAT_MAX_RETRIES", "10"),
            ("GIGACHAT_RETRY_BACKOFF_FACTOR", "0.1"),
        ],
    )
    .await;
    s.emulator.faults().fail_next_oauth(503, 1000);
    let started = Instant::now();
    let (status, body) = chat_status(&s, "never").await;
    let elapsed = started.elapsed();
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["code"], "upstream_auth_failed");
    assert!(elapsed < Duration::from_millis(2500), "{elapsed:?}");
    assert!(
        s.emulator.stats().oauth_calls >= 3,
        "{:?}",
        s.emulator.stats()
    );
}

#[tokio::test]
async fn a_refused_oauth_connection_is_retried() {
    // The proxy starts before anything listens on the emulator's port: its
    // first OAuth call is refused, and the emulator comes up during the
    // backoff (0.5-0.75 s).
    let credentials = test_credentials();
    let port = free_ports(1)[0];
    let base = format!("http://127.0.0.1:{port}/api/v1");
    let auth = format!("http://127.0.0.1:{port}/api/v2/oauth");
    let proxy = start_proxy(&proxy_env(&base, &auth, &credentials));
    let request = tokio::spawn({
        let url = proxy.url("/api/gigachat-api/chat/completions");
        async move {
            reqwest::Client::new()
                .post(url)
                .json(&chat("late", false))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    assert!(
        proxy.wait_for_log(OAUTH_RETRY_LOG).await,
        "{}",
        proxy.logs()
    );
    let config = gigachat_emulator::EmulatorConfig {
        credentials: vec![gigachat_emulator::Credential::new(
            credentials.as_str(),
            "GIGACHAT_API_PERS",
        )],
        ..gigachat_emulator::EmulatorConfig::default()
    };
    let emulator = gigachat_emulator::Emulator::start(
        config,
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
    )
    .await
    .unwrap();
    assert_eq!(request.await.unwrap(), 200, "{}", proxy.logs());
    assert_eq!(emulator.stats().oauth_calls, 1);
    assert!(
        proxy.logs().contains("connection failed"),
        "{}",
        proxy.logs()
    );
}
