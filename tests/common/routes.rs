//! Calling the JSON-in, SSE-out routes (`/api/gigachat-openai/v1`,
//! `/api/gigachat-chat`) of a [`Setup`] and reading what they answer.

use std::time::{Duration, Instant};

use gigachat_emulator::{Emulator, Stats};
use serde_json::Value;

use super::{Setup, sse_data};

/// POSTs `body` as JSON to the proxy's `path`, with `key` as the bearer
/// token when given.
pub async fn post_json(
    s: &Setup,
    path: &str,
    body: &Value,
    key: Option<&str>,
) -> reqwest::Response {
    let mut request = s.http.post(s.proxy.url(path)).json(body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap()
}

/// POSTs `body` to GigaChat's own chat route without a key, as a client of
/// an open proxy does.
pub async fn post_native_chat(s: &Setup, body: &Value) -> reqwest::Response {
    post_json(s, "/api/gigachat-api/chat/completions", body, None).await
}

/// GETs the proxy's `path`, with `key` as the bearer token when given.
pub async fn get_path(s: &Setup, path: &str, key: Option<&str>) -> reqwest::Response {
    let mut request = s.http.get(s.proxy.url(path));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap()
}

/// Sends the CORS preflight a page of `origin` sends before POSTing to
/// `path` with `request_headers` (a comma-separated list), asserts that it
/// lets the POST through, and returns its headers.
pub async fn assert_preflight_passes(
    s: &Setup,
    path: &str,
    origin: &str,
    request_headers: &str,
) -> reqwest::header::HeaderMap {
    let preflight = s
        .http
        .request(reqwest::Method::OPTIONS, s.proxy.url(path))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", request_headers)
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    let headers = preflight.headers().clone();
    assert_eq!(headers["access-control-allow-origin"], origin);
    assert!(
        headers["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    headers
}

/// The JSON chunks of an SSE stream ended by `[DONE]`, and whether `[DONE]`
/// came once, last.
pub fn chunks_of(body: &str) -> (Vec<Value>, bool) {
    let data = sse_data(body);
    let done_last = data.last().map(String::as_str) == Some("[DONE]")
        && data.iter().filter(|d| *d == "[DONE]").count() == 1;
    let chunks = data
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap_or_else(|_| panic!("not JSON: {d}")))
        .collect();
    (chunks, done_last)
}

/// The budget once every answer has been settled (a body is settled when
/// the server drops it, just after the client has read it).
pub async fn settled_budget(s: &Setup) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let budget: Value = s
            .http
            .get(s.proxy.url("/api/gigachat-budget"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if budget["reserved"] == 0 || Instant::now() > deadline {
            return budget;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// POSTs `form` (multipart) to GigaChat's own files route, with `key` as
/// the bearer token when given.
pub async fn post_files_form(
    s: &Setup,
    form: reqwest::multipart::Form,
    key: Option<&str>,
) -> reqwest::Response {
    let mut request = s.http.post(s.proxy.url("/api/gigachat-api/files"));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.multipart(form).send().await.unwrap()
}

/// Uploads `content` as `private.txt` through GigaChat's own files route
/// (`/api/gigachat-api/files`) with `key` as the bearer token, asserts it
/// was taken, and returns the file object the proxy answered with.
pub async fn upload_natively(s: &Setup, key: &str, content: &[u8]) -> Value {
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(content.to_vec())
                .file_name("private.txt")
                .mime_str("text/plain")
                .unwrap(),
        )
        .text("purpose", "general");
    let response = post_files_form(s, form, Some(key)).await;
    let status = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// How many file uploads reached the emulator.
pub fn uploads_seen(emulator: &Emulator) -> usize {
    emulator
        .recorded_requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/files"))
        .count()
}

/// The emulator's counters once it has seen a stream cancelled, or after
/// 10 s if it never does.
pub async fn stats_after_a_cancelled_stream(emulator: &Emulator) -> Stats {
    let deadline = Instant::now() + Duration::from_secs(10);
    while emulator.stats().streams_cancelled == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    emulator.stats()
}
