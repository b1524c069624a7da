//! Promises of README.md and docs/ that no other suite proves, black-box: the real proxy
//! binary against the emulator, or against a scripted upstream in this file
//! when the test must control GigaChat's side byte by byte (release each SSE
//! event only after the client got the previous one, answer `Retry-After`,
//! send an id of its own).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::routes::post_native_chat;
use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

// ---------- a scripted upstream ----------

/// One request as the scripted upstream read it.
#[derive(Clone, Debug)]
struct Received {
    at: Instant,
    head: String,
}

impl Received {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }
}

/// An HTTP/1.1 server on a random loopback port that hands the n-th
/// request's connection (0-based, after the request was read) to a script.
/// OAuth still goes to the emulator; only `GIGACHAT_BASE_URL` points here.
struct ScriptedUpstream {
    base_url: String,
    received: Arc<Mutex<Vec<Received>>>,
}

impl ScriptedUpstream {
    async fn start<F, Fut>(script: F) -> Self
    where
        F: Fn(usize, TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}/api/v1", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        let script = Arc::new(script);
        let count = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let (script, log, count) =
                    (Arc::clone(&script), Arc::clone(&log), Arc::clone(&count));
                tokio::spawn(async move {
                    let Some(request) = read_request(&mut stream).await else {
                        return;
                    };
                    let n = {
                        let mut log = log.lock().unwrap();
                        log.push(request);
                        count.fetch_add(1, Ordering::SeqCst)
                    };
                    script(n, stream).await;
                });
            }
        });
        Self { base_url, received }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// Reads one request head and its `Content-Length` body; `None` if the
/// connection closed first (the proxy's pool may open spare connections).
async fn read_request(stream: &mut TcpStream) -> Option<Received> {
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = stream.read(&mut buffer).await.ok()?;
        if n == 0 {
            return None;
        }
        bytes.extend_from_slice(&buffer[..n]);
    };
    let at = Instant::now();
    let head = String::from_utf8_lossy(&bytes[..head_end]).into_owned();
    let received = Received { at, head };
    let length: usize = received
        .header("content-length")
        .map_or(0, |v| v.parse().unwrap());
    while bytes.len() < head_end + length {
        let n = stream.read(&mut buffer).await.ok()?;
        if n == 0 {
            return None;
        }
        bytes.extend_from_slice(&buffer[..n]);
    }
    Some(received)
}

async fn respond(stream: &mut TcpStream, status: u16, headers: &[(&str, &str)], body: &str) {
    let mut response = format!(
        "HTTP/1.1 {status} Scripted\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str("\r\n");
    response.push_str(body);
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn start_sse(stream: &mut TcpStream) {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
}

/// One HTTP chunk, flushed: it leaves this process at once.
async fn send_chunk(stream: &mut TcpStream, data: &str) {
    let chunk = format!("{:x}\r\n{data}\r\n", data.len());
    stream.write_all(chunk.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
}

async fn end_chunks(stream: &mut TcpStream) {
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let _ = stream.shutdown().await;
}

/// A v1 chat chunk whose content is `part-{k} `.
fn sse_event(k: usize) -> String {
    let chunk = json!({
        "choices": [{"delta": {"content": format!("part-{k} "), "role": "assistant"}, "index": 0}],
        "created": 1_700_000_000,
        "model": "GigaChat",
        "object": "chat.completion",
    });
    format!("data: {chunk}\n\n")
}

const MODELS: &str =
    r#"{"object":"list","data":[{"id":"GigaChat","object":"model","owned_by":"salutedevices"}]}"#;

/// The proxy in front of a scripted upstream (OAuth from the emulator).
async fn proxy_before(
    upstream: &ScriptedUpstream,
    extra_env: &[(&str, &str)],
) -> (gigachat_emulator::Emulator, ProxyProcess) {
    let credentials = test_credentials();
    let emulator = start_emulator(&credentials, |_| {}).await;
    let auth = emulator.auth_url();
    let mut env = proxy_env(&upstream.base_url, &auth, &credentials);
    env.extend_from_slice(extra_env);
    let proxy = start_proxy(&env);
    (emulator, proxy)
}

/// Reads from `body` into `text` until `needle` is in it, for at most 10 s.
async fn read_until<S>(body: &mut S, text: &mut String, needle: &str) -> bool
where
    S: futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin,
{
    let reading = async {
        while !text.contains(needle) {
            match body.next().await {
                Some(Ok(chunk)) => text.push_str(&String::from_utf8_lossy(&chunk)),
                Some(Err(_)) | None => return false,
            }
        }
        true
    };
    tokio::time::timeout(Duration::from_secs(10), reading)
        .await
        .unwrap_or(false)
}

// ---------- streaming ----------

/// "Every upstream chunk is sent on as soon as it arrives": upstream event
/// k+1 is written only after the client has received event k through the
/// proxy, so a proxy that held any event back would stall here. No timing.
#[tokio::test]
async fn streams_pass_through_chunk_by_chunk() {
    const EVENTS: usize = 6;
    let gate = Arc::new(Semaphore::new(0));
    let release = Arc::clone(&gate);
    let upstream = ScriptedUpstream::start(move |_, mut stream| {
        let gate = Arc::clone(&gate);
        async move {
            start_sse(&mut stream).await;
            send_chunk(&mut stream, &sse_event(0)).await;
            for k in 1..EVENTS {
                gate.acquire().await.unwrap().forget();
                send_chunk(&mut stream, &sse_event(k)).await;
            }
            gate.acquire().await.unwrap().forget();
            send_chunk(&mut stream, "data: [DONE]\n\n").await;
            end_chunks(&mut stream).await;
        }
    })
    .await;
    let (_emulator, proxy) = proxy_before(&upstream, &[]).await;
    let response = reqwest::Client::new()
        .post(proxy.url("/api/gigachat-api/chat/completions"))
        .json(&chat("stream it", true))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.bytes_stream();
    let mut text = String::new();
    for k in 0..EVENTS {
        assert!(
            read_until(&mut body, &mut text, &format!("part-{k} ")).await,
            "event {k} did not reach the client before upstream sent event {}: the proxy holds events back; got {text:?}",
            k + 1
        );
        assert!(!text.contains(&format!("part-{} ", k + 1)));
        release.add_permits(1);
    }
    assert!(
        read_until(&mut body, &mut text, "data: [DONE]").await,
        "{text}"
    );
    let payloads = sse_data(&text);
    assert_eq!(
        payloads.len(),
        EVENTS + 1,
        "no event merged or lost: {text}"
    );
    assert_eq!(upstream.received().len(), 1);
}

/// "Never retried once a byte went to the client": a stream that breaks
/// after its first events ends with the proxy's error event, and GigaChat
/// saw the chat request once, although the same request is retried when it
/// fails before anything was sent.
#[tokio::test]
async fn a_stream_that_breaks_after_its_first_bytes_is_not_retried() {
    let s = setup().await;
    let post = || {
        s.http
            .post(s.proxy.url("/api/gigachat-api/chat/completions"))
            .json(&chat("one two three four five six", true))
            .send()
    };
    // Control: before any byte went out, a transient failure is retried.
    s.emulator.faults().fail_next_api_with_status(503, 1);
    let response = post().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains("data: [DONE]"));
    assert_eq!(s.emulator.stats().api_calls, 2, "the 503 was retried");

    s.emulator.reset_stats();
    s.emulator.faults().reset_stream_after_chunks(Some(2));
    let response = post().await.unwrap();
    assert_eq!(response.status(), 200);
    let text = tokio::time::timeout(Duration::from_secs(10), response.text())
        .await
        .expect("the broken stream ends, no hang")
        .unwrap();
    let payloads = sse_data(&text);
    assert_eq!(payloads.len(), 3, "two events, then the error: {text}");
    let first: Value = serde_json::from_str(&payloads[0]).unwrap();
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant", "{text}");
    let last: Value = serde_json::from_str(&payloads[2]).unwrap();
    assert!(last["error"]["code"].is_string(), "an error event: {text}");
    assert!(!text.contains("[DONE]"));
    let stats = s.emulator.stats();
    assert_eq!(
        (stats.api_calls, stats.streams_started),
        (1, 1),
        "GigaChat saw the request once: {stats:?}"
    );
}

// ---------- retries ----------

/// "Honouring `Retry-After`, within `GIGACHAT_TIMEOUT`": a 503 asking for
/// 1 s is retried no sooner than that (the backoff alone would be ~10 ms);
/// one asking for more than the budget is passed on at once, as GigaChat
/// sent it.
#[tokio::test]
async fn upstream_retry_after_is_honoured_within_the_timeout() {
    let upstream = ScriptedUpstream::start(|n, mut stream| async move {
        match n {
            0 => {
                let body = r#"{"status":503,"message":"Service Unavailable"}"#;
                respond(&mut stream, 503, &[("Retry-After", "1")], body).await;
            }
            2 => {
                let body = r#"{"status":429,"message":"Too many requests"}"#;
                respond(&mut stream, 429, &[("Retry-After", "30")], body).await;
            }
            _ => respond(&mut stream, 200, &[], MODELS).await,
        }
    })
    .await;
    let (_emulator, proxy) = proxy_before(
        &upstream,
        &[
            ("GIGACHAT_RETRY_BACKOFF_FACTOR", "0.01"),
            ("GIGACHAT_TIMEOUT", "5"),
        ],
    )
    .await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let response = http
        .get(proxy.url("/api/gigachat-api/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let received = upstream.received();
    assert_eq!(received.len(), 2, "one retry");
    let waited = received[1].at - received[0].at;
    assert!(
        waited >= Duration::from_millis(990),
        "retried after {waited:?}, before the 1 s GigaChat asked for"
    );

    let started = Instant::now();
    let response = http
        .get(proxy.url("/api/gigachat-api/models"))
        .send()
        .await
        .expect("answered without waiting out the 30 s (the client gives up after 15 s)");
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "30");
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"status": 429, "message": "Too many requests"})
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a wait past GIGACHAT_TIMEOUT is not taken: {:?}",
        started.elapsed()
    );
    assert_eq!(upstream.received().len(), 3, "not retried");
}

/// "On a 401 the token is dropped, a new one fetched (once for all
/// concurrent requests)": every token is revoked, eight chats hit the 401
/// at once, and GigaChat's OAuth is called exactly once more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_401s_cause_exactly_one_token_refresh() {
    const CONCURRENT: usize = 8;
    let s = setup_with(
        |_| {},
        // GigaChat's one-request limit for personal keys would queue them.
        &[("GIGACHAT_PROXY_UPSTREAM_CONCURRENCY", "off")],
    )
    .await;
    let post = |content: String| {
        s.http
            .post(s.proxy.url("/api/gigachat-api/chat/completions"))
            .json(&chat(&content, false))
            .send()
    };
    assert_eq!(post("warm up".into()).await.unwrap().status(), 200);
    assert_eq!(s.emulator.stats().oauth_calls, 1);
    let old_token = upstream_tokens(&s.emulator).pop().unwrap();

    s.emulator.faults().expire_all_tokens();
    // GigaChat answers (here: its 401s) after 500 ms, so all eight are sent
    // with the revoked token before the first 401 comes back, and a slow
    // OAuth answer keeps the refresh open while the other 401s arrive.
    s.emulator
        .faults()
        .set_first_byte_delay(Duration::from_millis(500));
    s.emulator
        .faults()
        .set_oauth_delay(Duration::from_millis(300));
    let answers =
        futures_util::future::join_all((0..CONCURRENT).map(|i| post(format!("request {i}")))).await;
    for (i, answer) in answers.into_iter().enumerate() {
        let answer = answer.unwrap();
        assert_eq!(answer.status(), 200, "request {i}");
        let body: Value = answer.json().await.unwrap();
        assert_eq!(
            body["choices"][0]["message"]["content"],
            format!("Echo: request {i}")
        );
    }
    let rejected = upstream_tokens(&s.emulator)
        .iter()
        .filter(|token| **token == old_token)
        .count();
    assert!(
        rejected > CONCURRENT / 2 + 1,
        "most of the eight met the revoked token at once: {rejected} (with the warm-up)"
    );
    assert_eq!(
        s.emulator.stats().oauth_calls,
        2,
        "one refresh for all eight 401s"
    );
}

// ---------- headers ----------

/// "GigaChat's own id comes back as `X-Upstream-Request-ID`", next to the
/// proxy's `X-Request-ID` (the client's, which GigaChat also received).
#[tokio::test]
async fn gigachats_request_id_comes_back_as_x_upstream_request_id() {
    let upstream_id = format!("gigachat-{}", uuid::Uuid::new_v4());
    let id = upstream_id.clone();
    let upstream = ScriptedUpstream::start(move |_, mut stream| {
        let id = id.clone();
        async move { respond(&mut stream, 200, &[("X-Request-ID", &id)], MODELS).await }
    })
    .await;
    let (_emulator, proxy) = proxy_before(&upstream, &[]).await;
    let response = reqwest::Client::new()
        .get(proxy.url("/api/gigachat-api/models"))
        .header("X-Request-ID", "client-request-0001")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "client-request-0001");
    assert_eq!(
        response.headers()["x-upstream-request-id"],
        upstream_id.as_str()
    );
    assert_eq!(
        upstream.received()[0].header("x-request-id").as_deref(),
        Some("client-request-0001"),
        "GigaChat got the same id"
    );
}

// ---------- the local server ----------

/// "It serves HTTP/1.1 and h2c": a client that speaks only HTTP/2 over
/// cleartext gets a chat answer and a stream.
#[tokio::test]
async fn the_local_server_speaks_h2c() {
    let s = setup().await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2
        .post(s.proxy.url("/api/gigachat-api/chat/completions"))
        .json(&chat("over h2c", false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "Echo: over h2c");

    let response = h2
        .post(s.proxy.url("/api/gigachat-api/chat/completions"))
        .json(&chat("a stream over h2c", true))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let text = response.text().await.unwrap();
    let payloads = sse_data(&text);
    let content = streamed_content(&payloads);
    assert_eq!(content, "Echo: a stream over h2c");
}

/// "Shuts down gracefully on SIGTERM (open streams get 10 s to finish)":
/// a stream that is mid-way when SIGTERM arrives still ends normally, the
/// server takes no new connection, and the process then exits cleanly.
#[tokio::test]
async fn sigterm_lets_open_streams_finish_then_exits() {
    let mut s = setup_with(|c| c.chunk_delay = Duration::from_millis(250), &[]).await;
    let response = post_native_chat(&s, &chat("one two three four five six seven", true)).await;
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut text = String::new();
    assert!(read_until(&mut body, &mut text, "\n\n").await, "{text}");

    s.proxy.terminate();
    assert!(
        s.proxy.wait_for_log("shutting down").await,
        "{}",
        s.proxy.logs()
    );
    let fresh = reqwest::Client::new()
        .get(s.proxy.url("/api/gigachat-health"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(
        fresh.is_err(),
        "no new request is served while draining: {fresh:?}"
    );
    assert!(
        s.proxy.wait_for_exit(Duration::ZERO).await.is_none(),
        "the process waits for the open stream"
    );

    assert!(
        read_until(&mut body, &mut text, "data: [DONE]").await,
        "the stream was cut: {text}"
    );
    assert!(!text.contains("\"error\""), "{text}");
    assert!(body.next().await.is_none());
    let content: String = sse_data(&text)
        .iter()
        .filter(|p| p.as_str() != "[DONE]")
        .filter_map(|p| {
            serde_json::from_str::<Value>(p).unwrap()["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(content, "Echo: one two three four five six seven");
    assert_eq!(s.emulator.stats().streams_completed, 1);
    let status = s
        .proxy
        .wait_for_exit(Duration::from_secs(5))
        .await
        .expect("the process exits once the stream is done");
    assert!(status.success(), "{status:?}");
}

// ---------- logs ----------

/// "Never in a log: message content, the key, access or session tokens,
/// cookies", in the JSON format of Vercel and Lambda, at the most verbose
/// level, over every line (not only the access line): chat, a stream, a 401
/// retry, upstream errors, the OAuth route and its session token, end-user
/// keys right and wrong, h2c, and a key GigaChat refuses.
#[tokio::test]
async fn json_logs_carry_no_secret_and_no_message_content_on_any_line() {
    let sentinel = format!("message-content-{}", uuid::Uuid::new_v4().simple());
    let api_key = format!("end-user-key-{}", uuid::Uuid::new_v4().simple());
    let wrong_key = format!("wrong-user-key-{}", uuid::Uuid::new_v4().simple());
    let cookie = format!("cookie-{}", uuid::Uuid::new_v4().simple());
    let json_logs = [("GIGACHAT_PROXY_LOG_FORMAT", "json"), ("RUST_LOG", "trace")];
    let mut env = json_logs.to_vec();
    env.push(("GIGACHAT_PROXY_API_KEYS", api_key.as_str()));
    let s = setup_with(|_| {}, &env).await;

    let h1 = s.http.clone();
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let mut sent = 0;
    let mut session_tokens = Vec::new();
    let minted: Value = h1
        .post(s.proxy.url("/api/gigachat-oauth"))
        .bearer_auth(&api_key)
        .header("Cookie", format!("sid={cookie}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    sent += 1;
    let session = minted["access_token"].as_str().unwrap().to_owned();
    session_tokens.push(session.clone());
    s.emulator.faults().fail_next_api_with_401(1);
    for (client, bearer, path, body, status) in [
        (
            &h1,
            &api_key,
            "chat/completions",
            Some(chat(&sentinel, false)),
            200,
        ),
        (
            &h1,
            &session,
            "chat/completions",
            Some(chat(&sentinel, true)),
            200,
        ),
        (
            &h2,
            &api_key,
            "chat/completions",
            Some(chat(&sentinel, true)),
            200,
        ),
        (
            &h1,
            &wrong_key,
            "chat/completions",
            Some(chat(&sentinel, false)),
            401,
        ),
        (&h1, &api_key, "models/NoSuchModel", None, 404),
        (
            &h1,
            &api_key,
            "chat/completions",
            Some(
                json!({"model": "GigaChat", "messages": [{"role": "nobody", "content": sentinel}]}),
            ),
            422,
        ),
    ] {
        let url = s.proxy.url(&format!("/api/gigachat-api/{path}"));
        let request = match body {
            Some(body) => client.post(url).json(&body),
            None => client.get(url),
        };
        let response = request
            .bearer_auth(bearer)
            .header("Cookie", format!("sid={cookie}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{path}");
        let text = response.text().await.unwrap();
        if status == 200 {
            assert!(text.contains(&sentinel), "the reply echoes the content");
        }
        sent += 1;
    }
    assert!(
        s.proxy
            .wait_for_log_count("gigachat_proxy::access", sent)
            .await,
        "{}",
        s.proxy.stderr()
    );

    // A key GigaChat's OAuth refuses, in a second instance.
    let refused_key = test_credentials();
    let (base, auth) = (s.emulator.base_url(), s.emulator.auth_url());
    let mut refused_env = proxy_env(&base, &auth, &refused_key);
    refused_env.extend_from_slice(&json_logs);
    let refused = start_proxy(&refused_env);
    let response = h1
        .post(refused.url("/api/gigachat-api/chat/completions"))
        .json(&chat(&sentinel, false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "upstream_auth_rejected"
    );
    assert!(
        refused
            .wait_for_log_count("gigachat_proxy::access", 1)
            .await
    );

    let mut secrets = upstream_tokens(&s.emulator);
    assert!(secrets.len() >= 2, "the 401 retry fetched a second token");
    secrets.extend(session_tokens);
    secrets.extend([
        s.credentials.clone(),
        refused_key,
        api_key,
        wrong_key,
        cookie,
        sentinel,
    ]);
    for (instance, logs) in [("main", s.proxy.stderr()), ("refused", refused.stderr())] {
        let lines: Vec<&str> = logs.lines().collect();
        let mut access_lines = 0;
        for line in &lines {
            let parsed: Value = serde_json::from_str(line)
                .unwrap_or_else(|_| panic!("{instance}: a log line that is not JSON: {line}"));
            assert!(parsed["level"].is_string(), "{line}");
            if parsed["target"] == "gigachat_proxy::access" {
                access_lines += 1;
            }
        }
        assert!(access_lines >= 1, "{instance}: {logs}");
        assert!(
            lines.len() > 10,
            "{instance}: trace logging is on: {} lines",
            lines.len()
        );
        assert_no_secret(
            &logs,
            &secrets,
            &format!("the {instance} instance's JSON logs"),
        );
    }
}
