//! Every way GigaChat can be slow ends in a clear answer: a 504 JSON error
//! before the headers, a final SSE error event after a stream started.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

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
        s.http
            .get(s.proxy.url("/api/gigachat-api/models"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    s.emulator
        .faults()
        .set_first_byte_delay(Duration::from_secs(3));
    let started = Instant::now();
    let response = s
        .http
        .get(s.proxy.url("/api/gigachat-api/models"))
        .send()
        .await
        .unwrap();
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
    let response = s
        .http
        .get(s.proxy.url("/api/gigachat-api/models"))
        .send()
        .await
        .unwrap();
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
    let response = s
        .http
        .post(s.proxy.url("/api/gigachat-api/chat/completions"))
        .json(&chat("slow slow slow", true))
        .send()
        .await
        .unwrap();
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
    let response = s
        .http
        .post(s.proxy.url("/api/gigachat-api/chat/completions"))
        .json(&chat("one two three four five six seven eight", true))
        .send()
        .await
        .unwrap();
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
