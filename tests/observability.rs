//! What the operator sees: the per-request log line, metrics, timing
//! headers, and upstream cancellation when the client goes away.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::routes::{get_path, post_native_chat};
use common::*;
use futures_util::StreamExt;

/// The access-log lines (one per request) in the proxy's output.
fn request_lines(logs: &str) -> Vec<String> {
    logs.lines()
        .filter(|line| line.contains("gigachat_proxy::access"))
        .map(str::to_owned)
        .collect()
}

/// The metrics text once it holds every needle. Polled, because a sample is
/// recorded when an answer's body is finished, a little after the client
/// has read it; a needle still missing after five seconds fails the test.
async fn metrics_showing(s: &Setup, needles: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = get_path(s, "/metrics", None).await.text().await.unwrap();
        if needles.iter().all(|needle| text.contains(needle)) || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for needle in needles {
        assert!(text.contains(needle), "{needle} missing:\n{text}");
    }
    text
}

#[tokio::test]
async fn one_log_line_per_request_with_model_usage_and_a_hashed_identity() {
    let s = setup().await;
    let stream = post_native_chat(&s, &chat("count my tokens please", true)).await;
    let _ = stream.text().await.unwrap();
    let plain = post_native_chat(&s, &chat("and these too", false)).await;
    let _ = plain.text().await.unwrap();
    assert!(
        s.proxy
            .wait_for_log_count("gigachat_proxy::access", 2)
            .await,
        "{}",
        s.proxy.logs()
    );
    let lines = request_lines(&s.proxy.logs());
    assert_eq!(lines.len(), 2, "{lines:#?}");
    for line in &lines {
        assert!(line.contains("model=\"GigaChat\""), "{line}");
        assert!(line.contains("endpoint=\"chat\""), "{line}");
        assert!(
            line.contains("prompt_tokens="),
            "usage read from the answer: {line}"
        );
        assert!(line.contains("completion_tokens="), "{line}");
        assert!(line.contains("completed=true"), "{line}");
        assert!(line.contains("overhead_ms="), "{line}");
        assert!(line.contains("identity=\""), "{line}");
        assert!(
            !line.contains("127.0.0.1"),
            "the identity is hashed: {line}"
        );
        assert!(
            !line.contains("count my tokens"),
            "no message content: {line}"
        );
    }
    assert!(lines[0].contains("stream=true"));
}

/// The kind of call is named once, from method and path, in the JSON
/// access line and in the per-endpoint metric; a path the proxy refuses
/// before classifying it carries none.
#[tokio::test]
async fn each_call_is_logged_and_counted_under_its_kind() {
    let s = setup_with(|_| {}, &[("GIGACHAT_PROXY_LOG_FORMAT", "json")]).await;
    let api = |path: &str| s.proxy.url(&format!("/api/gigachat-api/{path}"));
    let v2_chat = serde_json::json!({
        "model": "GigaChat",
        "messages": [{"role": "user", "content": [{"text": "hi"}]}],
    });
    let count = serde_json::json!({"model": "GigaChat", "input": ["count these"]});
    let calls = [
        ("v1/models", None, "models", 200),
        ("models/GigaChat", None, "model", 200),
        ("v2/chat/completions", Some(&v2_chat), "chat_v2", 200),
        (
            "files/no-such-file/delete",
            Some(&count),
            "file_delete",
            404,
        ),
        ("tokens/count", Some(&count), "tokens_count", 200),
    ];
    for (path, body, _, status) in &calls {
        let request = match body {
            Some(body) => s.http.post(api(path)).json(body),
            None => s.http.get(api(path)),
        };
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), *status, "{path}");
        let _ = response.bytes().await.unwrap();
    }
    // Refused before it is classified (an encoded slash): no endpoint.
    let refused = s.http.get(api("models/a%2Fb")).send().await.unwrap();
    assert_eq!(refused.status(), 400);
    let sent = calls.len() + 1;
    assert!(
        s.proxy
            .wait_for_log_count("gigachat_proxy::access", sent)
            .await,
        "{}",
        s.proxy.stderr()
    );
    let mut endpoints: Vec<Option<String>> = s
        .proxy
        .stderr()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["target"] == "gigachat_proxy::access")
        .map(|line| line["fields"]["endpoint"].as_str().map(str::to_owned))
        .collect();
    let mut expected: Vec<Option<String>> = calls
        .iter()
        .map(|(_, _, kind, _)| Some((*kind).to_owned()))
        .collect();
    expected.push(None);
    // Each line is written when its answer is finished: compare as sets.
    endpoints.sort();
    expected.sort();
    assert_eq!(endpoints, expected, "{}", s.proxy.stderr());

    let needles = [
        "gigachat_proxy_endpoint_requests_total{endpoint=\"models\",status=\"2xx\"} 1",
        "gigachat_proxy_endpoint_requests_total{endpoint=\"chat_v2\",status=\"2xx\"} 1",
        "gigachat_proxy_endpoint_requests_total{endpoint=\"file_delete\",status=\"4xx\"} 1",
        "gigachat_proxy_endpoint_requests_total{endpoint=\"chat\",status=\"2xx\"} 0",
    ];
    metrics_showing(&s, &needles).await;
}

/// Both routes that spend the caller's budget log what the limits did,
/// and a refusal is counted under the error code the proxy answered with.
#[tokio::test]
async fn limit_outcomes_are_logged_and_refusals_counted_by_code() {
    let s = setup_with(|_| {}, &[("GIGACHAT_PROXY_RATE_LIMIT_ANONYMOUS", "2/min")]).await;
    let minted = s
        .http
        .post(s.proxy.url("/api/gigachat-oauth"))
        .send()
        .await
        .unwrap();
    assert_eq!(minted.status(), 200);
    assert_eq!(minted.headers()["ratelimit-remaining"], "1");
    let _ = minted.bytes().await.unwrap();
    let models = || s.http.get(s.proxy.url("/api/gigachat-api/models")).send();
    let allowed = models().await.unwrap();
    assert_eq!(allowed.status(), 200);
    let _ = allowed.bytes().await.unwrap();
    let limited = models().await.unwrap();
    assert_eq!(limited.status(), 429);
    let _ = limited.bytes().await.unwrap();
    assert!(
        s.proxy
            .wait_for_log_count("gigachat_proxy::access", 3)
            .await,
        "{}",
        s.proxy.logs()
    );
    let lines = request_lines(&s.proxy.logs());
    let line = |route: &str, status: u16| {
        lines
            .iter()
            .find(|line| {
                line.contains(&format!("route=\"{route}\""))
                    && line.contains(&format!("status={status}"))
            })
            .unwrap_or_else(|| panic!("no {route} line with {status}: {lines:#?}"))
    };
    assert!(line("oauth", 200).contains("rate_limit=\"allowed\""));
    assert!(line("api", 200).contains("rate_limit=\"allowed\""));
    let refused = line("api", 429);
    assert!(refused.contains("rate_limit=\"limited\""), "{refused}");
    assert!(refused.contains("error=\"rate_limited\""), "{refused}");

    let needles = [
        "gigachat_proxy_errors_total{code=\"rate_limited\"} 1",
        "gigachat_proxy_ratelimited_total{route=\"api\"} 1",
    ];
    let text = metrics_showing(&s, &needles).await;
    assert!(!text.contains("upstream_errors_total"), "{text}");
}

#[tokio::test]
async fn metrics_and_timing_headers_report_the_proxys_own_cost() {
    let s = setup().await;
    // GigaChat takes 300 ms to answer: the proxy's own time must leave that out.
    s.emulator
        .faults()
        .set_first_byte_delay(Duration::from_millis(300));
    let response = post_native_chat(&s, &chat("metrics", false)).await;
    let timing = response.headers()["server-timing"]
        .to_str()
        .unwrap()
        .to_owned();
    let durations: Vec<(&str, f64)> = timing
        .split(", ")
        .map(|entry| {
            let (name, dur) = entry.split_once(";dur=").unwrap();
            (name, dur.parse().unwrap())
        })
        .collect();
    let [("proxy", proxy_ms), ("upstream", upstream_ms)] = durations[..] else {
        panic!("Server-Timing is `proxy;dur=…, upstream;dur=…`: {timing}");
    };
    let overhead: f64 = response.headers()["x-proxy-overhead-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(overhead, proxy_ms, "the header and Server-Timing agree");
    assert!(
        upstream_ms >= 300.0,
        "upstream;dur covers GigaChat's 300 ms: {timing}"
    );
    assert!(
        overhead > 0.0 && overhead < upstream_ms,
        "the overhead is the proxy's own time, without the upstream's: {timing}"
    );
    let _ = response.text().await.unwrap();
    // The sample is recorded when the answer's body is finished, which is a
    // little after the client has read it: poll for it.
    let needles = [
        "gigachat_proxy_requests_total{route=\"api\",status=\"2xx\"} 1",
        "gigachat_proxy_overhead_seconds_count{route=\"api\"} 1",
        "gigachat_proxy_upstream_duration_seconds_count{route=\"api\"} 1",
        "gigachat_proxy_tokens_output_total{route=\"api\"}",
    ];
    let metrics = get_path(&s, "/metrics", None).await;
    assert_eq!(metrics.status(), 200);
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = metrics_showing(&s, &needles).await;
    assert_no_secret(&text, std::slice::from_ref(&s.credentials), "the metrics");
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_cancels_the_upstream_request() {
    let s = setup_with(|c| c.chunk_delay = Duration::from_millis(200), &[]).await;
    let response = post_native_chat(
        &s,
        &chat("a long answer that the user will not wait for", true),
    )
    .await;
    let mut body = response.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    drop(body);
    let deadline = Instant::now() + Duration::from_secs(3);
    while s.emulator.stats().streams_cancelled == 0 {
        assert!(
            Instant::now() < deadline,
            "GigaChat kept streaming to nobody: {:?}",
            s.emulator.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.emulator.stats().streams_completed, 0);
    assert!(
        s.proxy.wait_for_log("completed=false").await,
        "{}",
        s.proxy.logs()
    );
    let metrics = get_path(&s, "/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains("gigachat_proxy_stream_disconnects_total{route=\"api\"} 1"),
        "{metrics}"
    );
}
