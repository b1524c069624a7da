//! The forwarding route under hostile or unusual input, black-box: the real
//! proxy binary in front of the emulator (for OAuth, and chat where it
//! suffices) or of a scripted fake GigaChat on a loopback port, for answers
//! the emulator never gives (a TRACE echo, a 4.7 MB chunked JSON, odd
//! response headers, a stream in answer to anything).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::routes::post_native_chat;
use common::*;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One request as the fake upstream received it.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

/// What the fake upstream writes back: pieces of a raw HTTP/1.1 answer, each
/// after its delay.
struct Reply {
    pieces: Vec<(Duration, Vec<u8>)>,
}

impl Reply {
    fn at_once(bytes: Vec<u8>) -> Self {
        Self {
            pieces: vec![(Duration::ZERO, bytes)],
        }
    }
}

/// A scripted GigaChat: answers every request with `script(request)` and
/// records what it received. Keeps connections alive, as GigaChat does.
struct FakeUpstream {
    addr: std::net::SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl FakeUpstream {
    async fn start(script: fn(&Received) -> Reply) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = Arc::clone(&log);
                tokio::spawn(serve_connection(stream, script, log));
            }
        });
        Self { addr, received }
    }

    /// The base URL the proxy is pointed at.
    fn base_url(&self) -> String {
        format!("http://{}/api/v1", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

async fn serve_connection(
    stream: TcpStream,
    script: fn(&Received) -> Reply,
    log: Arc<Mutex<Vec<Received>>>,
) {
    let mut stream = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let mut words = line.split_whitespace();
        let method = words.next().unwrap_or_default().to_owned();
        let path = words.next().unwrap_or_default().to_owned();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
        }
        let length: usize = headers
            .iter()
            .find(|(name, _)| name == "content-length")
            .and_then(|(_, value)| value.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if stream.read_exact(&mut body).await.is_err() {
            return;
        }
        let request = Received {
            method,
            path,
            headers,
        };
        let reply = script(&request);
        log.lock().unwrap().push(request);
        for (delay, piece) in reply.pieces {
            tokio::time::sleep(delay).await;
            if stream.get_mut().write_all(&piece).await.is_err() {
                return;
            }
        }
    }
}

/// A proxy whose OAuth goes to the emulator (returned alongside, to live as
/// long as the proxy) and whose API calls go to `upstream`.
async fn proxy_before(
    upstream: &FakeUpstream,
    extra_env: &[(&str, &str)],
) -> (ProxyProcess, gigachat_emulator::Emulator) {
    let credentials = test_credentials();
    let emulator = start_emulator(&credentials, |_| {}).await;
    let auth = emulator.auth_url();
    let base = upstream.base_url();
    let mut env = proxy_env(&base, &auth, &credentials);
    env.extend_from_slice(extra_env);
    (start_proxy(&env), emulator)
}

fn json_reply(body: &str, extra_headers: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra_headers}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

// ---- (8) methods ------------------------------------------------------------

/// What a hop that answers TRACE does: the request comes back as the body,
/// `Authorization` included.
fn echo_everything(request: &Received) -> Reply {
    let mut echo = format!("{} {} HTTP/1.1\r\n", request.method, request.path);
    for (name, value) in &request.headers {
        echo.push_str(&format!("{name}: {value}\r\n"));
    }
    Reply::at_once(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: message/http\r\nContent-Length: {}\r\n\r\n{echo}",
            echo.len()
        )
        .into_bytes(),
    )
}

#[tokio::test]
async fn trace_and_other_methods_are_refused_before_anything_reaches_gigachat() {
    let upstream = FakeUpstream::start(echo_everything).await;
    let key = "forwarding-test-key-0123456789";
    let (proxy, _oauth) = proxy_before(&upstream, &[("GIGACHAT_PROXY_API_KEYS", key)]).await;
    let http = reqwest::Client::new();
    let url = proxy.url("/api/gigachat-api/models");
    for method in ["TRACE", "PUT", "PATCH", "PROPFIND", "CONNECT-ISH"] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        // With a valid key and without: the method is refused before
        // authentication, so neither learns anything else.
        for with_key in [true, false] {
            let mut request = http.request(method.clone(), &url);
            if with_key {
                request = request.bearer_auth(key);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 405, "{method} with_key={with_key}");
            assert_eq!(
                response.headers()["allow"],
                "GET, HEAD, POST, DELETE, OPTIONS",
                "{method}"
            );
            let text = response.text().await.unwrap();
            assert!(!text.contains("Bearer"), "{method}: {text}");
            let body: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(body["code"], "method_not_allowed");
        }
    }
    assert!(
        upstream.received().is_empty(),
        "refused methods reached the upstream: {:?}",
        upstream.received()
    );
    // OPTIONS without an Origin names the same methods.
    let options = http
        .request(reqwest::Method::OPTIONS, &url)
        .send()
        .await
        .unwrap();
    assert_eq!(options.status(), 204);
    assert_eq!(
        options.headers()["allow"],
        "GET, HEAD, POST, DELETE, OPTIONS"
    );
    // The fake upstream does answer: an allowed method gets through, so the
    // empty record above means something.
    let get = http.get(&url).bearer_auth(key).send().await.unwrap();
    assert_eq!(get.status(), 200);
    let received = upstream.received();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].method, "GET");
}

// ---- (13) response headers ---------------------------------------------------

fn hop_headers(_: &Received) -> Reply {
    Reply::at_once(json_reply(
        r#"{"object":"list","data":[]}"#,
        "Connection: keep-alive, X-Backend-Route\r\nConnection: x-backend-secret\r\n\
         X-Backend-Route: pod-7.internal\r\nX-Backend-Secret: s3cr3t\r\n\
         Server: nginx/1.25.3\r\nX-Kept: yes\r\n",
    ))
}

#[tokio::test]
async fn headers_the_upstream_names_in_connection_and_its_server_stay_behind() {
    let upstream = FakeUpstream::start(hop_headers).await;
    let (proxy, _oauth) = proxy_before(&upstream, &[]).await;
    let response = reqwest::get(proxy.url("/api/gigachat-api/models"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["x-kept"], "yes", "{headers:?}");
    for dropped in ["x-backend-route", "x-backend-secret", "server"] {
        assert!(!headers.contains_key(dropped), "{dropped}: {headers:?}");
    }
    let raw = format!("{headers:?}");
    assert!(!raw.contains("s3cr3t") && !raw.contains("pod-7") && !raw.contains("nginx"));
}

// ---- (6) large chunked JSON ----------------------------------------------------

/// 4.7 MB of JSON, sent chunked (no `Content-Length`), as a long embeddings
/// list is.
fn large_json() -> Vec<u8> {
    let mut json = String::from(r#"{"object":"list","data":["#);
    let mut i = 0u64;
    while json.len() < 4_700_000 {
        if i > 0 {
            json.push(',');
        }
        json.push_str(&format!(
            r#"{{"object":"embedding","index":{i},"embedding":[0.{i:07},-0.5,0.25]}}"#
        ));
        i += 1;
    }
    json.push_str(r#"],"model":"Embeddings"}"#);
    json.into_bytes()
}

fn chunked_large_json(_: &Received) -> Reply {
    let mut raw =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    for chunk in large_json().chunks(64 * 1024) {
        raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        raw.extend_from_slice(chunk);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    Reply::at_once(raw)
}

#[tokio::test]
async fn a_large_chunked_json_answer_arrives_whole() {
    let upstream = FakeUpstream::start(chunked_large_json).await;
    let (proxy, _oauth) = proxy_before(&upstream, &[]).await;
    let response = reqwest::Client::new()
        .post(proxy.url("/api/gigachat-api/embeddings"))
        .json(&serde_json::json!({"model": "Embeddings", "input": ["a"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.bytes().await.unwrap();
    let expected = large_json();
    assert!(expected.len() > 4 * 1024 * 1024);
    assert_eq!(body.len(), expected.len());
    assert!(body[..] == expected[..], "the bytes differ");
}

// ---- (4) streams -------------------------------------------------------------

/// Answers anything with an SSE stream that stays open for a while.
fn stream_for_anything(_: &Received) -> Reply {
    let head =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
    let event = |text: &str| {
        let data = format!("data: {text}\n\n");
        format!("{:x}\r\n{data}\r\n", data.len()).into_bytes()
    };
    let mut first = head.to_vec();
    first.extend_from_slice(&event(r#"{"choices":[{"delta":{"content":"hi"}}]}"#));
    let mut last = event("[DONE]");
    last.extend_from_slice(b"0\r\n\r\n");
    Reply {
        pieces: vec![(Duration::ZERO, first), (Duration::from_secs(3), last)],
    }
}

#[tokio::test]
async fn whatever_streams_back_holds_a_stream_slot() {
    let upstream = FakeUpstream::start(stream_for_anything).await;
    let (proxy, _oauth) = proxy_before(&upstream, &ONE_STREAM_SLOT).await;
    let http = reqwest::Client::new();
    // A GET with no body at all: nothing in the request says "stream".
    let url = proxy.url("/api/gigachat-api/models");
    let first = http.get(&url).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["content-type"], "text/event-stream");
    let second = http.get(&url).send().await.unwrap();
    assert_eq!(second.status(), 429);
    assert_eq!(
        second.json::<Value>().await.unwrap()["code"],
        "too_many_streams"
    );
    // Once the first stream is over, its slot is free again.
    assert!(first.text().await.unwrap().contains("[DONE]"));
    let third = http.get(&url).send().await.unwrap();
    assert_eq!(third.status(), 200);
}

#[tokio::test]
async fn duplicated_keys_and_plain_text_bodies_cannot_open_uncounted_streams() {
    let s = setup_with_one_stream_slot().await;
    let url = s.proxy.url("/api/gigachat-api/chat/completions");
    let duplicated = r#"{"stream":false,"model":"GigaChat","messages":[{"role":"user","content":"one two three four five"}],"stream":true}"#;
    let plain_text = r#"{"model":"GigaChat","stream":true,"messages":[{"role":"user","content":"one two three four five"}]}"#;
    for (content_type, body) in [("application/json", duplicated), ("text/plain", plain_text)] {
        // Such a body streams (GigaChat reads it so), and takes the slot...
        let send_as_typed = || {
            s.http
                .post(&url)
                .header("content-type", content_type)
                .body(body)
                .send()
        };
        let first = send_as_typed().await.unwrap();
        assert_eq!(first.status(), 200, "{content_type}");
        assert_eq!(first.headers()["content-type"], "text/event-stream");
        // ...so an ordinary stream meanwhile is over the limit,
        let calls_before = s.emulator.stats().api_calls;
        let second = post_native_chat(&s, &chat("second", true)).await;
        assert_eq!(second.status(), 429, "{content_type}");
        // and so is another such body, refused before it is sent: its slot
        // is taken before GigaChat starts generating.
        let again = send_as_typed().await.unwrap();
        assert_eq!(again.status(), 429, "{content_type}");
        assert_eq!(
            again.json::<Value>().await.unwrap()["code"],
            "too_many_streams"
        );
        assert_eq!(s.emulator.stats().api_calls, calls_before, "{content_type}");
        assert!(first.text().await.unwrap().contains("[DONE]"));
    }
}

// ---- (7) bodies that never complete -----------------------------------------

#[tokio::test]
async fn a_body_that_never_completes_is_a_408_and_the_connection_closes() {
    let s = setup_with(|_| {}, &[("GIGACHAT_PROXY_BODY_TIMEOUT", "0.5")]).await;
    let addr = s.proxy.addr();
    let declared = format!(
        "POST /api/gigachat-api/chat/completions HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
    );
    let chunked = format!(
        "POST /api/gigachat-api/chat/completions HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{{\"a\":\r\n"
    );
    for request in [declared, chunked] {
        let started = Instant::now();
        // `raw_request` reads until the server closes (10 s at most).
        let (status, response) = raw_request(&addr, &request).await;
        assert_eq!(status, 408, "{response}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let lower = response.to_ascii_lowercase();
        assert!(lower.contains("connection: close"), "{response}");
        assert!(response.contains("\"code\":\"body_timeout\""), "{response}");
    }
    assert_eq!(s.emulator.stats().api_calls, 0);
}

// ---- (12) refusals before the body -----------------------------------------

#[tokio::test]
async fn a_refusal_before_the_body_leaves_a_pooled_connection_usable() {
    let key = "forwarding-pool-key-0123456789";
    let s = setup_with(|_| {}, &[("GIGACHAT_PROXY_API_KEYS", key)]).await;
    // One pooled connection, reused for every request.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let big = serde_json::json!({
        "model": "GigaChat",
        "messages": [{"role": "user", "content": "x".repeat(2 * 1024 * 1024)}],
    })
    .to_string();
    for round in 0..5 {
        let refused = http
            .post(s.proxy.url("/api/gigachat-api/chat/completions"))
            .header("content-type", "application/json")
            .body(big.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 401, "round {round}");
        let _ = refused.bytes().await;
        let next = http
            .get(s.proxy.url("/api/gigachat-api/models"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap_or_else(|err| panic!("round {round}: the next request failed: {err:?}"));
        assert_eq!(next.status(), 200, "round {round}");
    }
}

#[tokio::test]
async fn a_refusal_with_the_body_still_unsent_says_connection_close() {
    let key = "forwarding-expect-key-0123456789";
    let s = setup_with(|_| {}, &[("GIGACHAT_PROXY_API_KEYS", key)]).await;
    // The client waits for `100 Continue` before sending its body: the
    // answer comes first, and the connection cannot carry another request.
    let addr = s.proxy.addr();
    let request = format!(
        "POST /api/gigachat-api/chat/completions HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: application/json\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n"
    );
    let started = Instant::now();
    let (status, response) = raw_request(&addr, &request).await;
    assert_eq!(status, 401, "{response}");
    assert!(
        response.to_ascii_lowercase().contains("connection: close"),
        "{response}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}
