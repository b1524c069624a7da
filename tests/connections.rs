//! Connections that cost the server a descriptor and do nothing are bounded:
//! silent sockets and idle or half-sent h2c connections are closed after
//! GIGACHAT_PROXY_HEADER_TIMEOUT, the longest-idle ones make room at the
//! connection cap, a full server of busy connections answers 503, accept
//! failures are not logged in a flood, and a client that writes its whole
//! oversized body before reading still gets to read the 413.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEALTH: &str =
    "GET /api/gigachat-health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut frame = len.to_be_bytes()[1..].to_vec();
    frame.extend([kind, flags]);
    frame.extend(stream.to_be_bytes());
    frame.extend(payload);
    frame
}

/// The client's side of opening an h2c connection: the preface and an
/// empty SETTINGS frame, and then nothing.
fn h2c_hello() -> Vec<u8> {
    let mut hello = H2_PREFACE.to_vec();
    hello.extend(h2_frame(4, 0, 0, &[]));
    hello
}

/// `GET /api/gigachat-health` as an HPACK header block without Huffman
/// coding: `:method GET` and `:scheme http` from the static table, `:path`
/// and `:authority` as literals with an indexed name.
fn h2_health_headers() -> Vec<u8> {
    let mut block = vec![0x82, 0x86];
    for (index, value) in [(0x44u8, "/api/gigachat-health"), (0x41, "localhost")] {
        block.push(index);
        block.push(u8::try_from(value.len()).unwrap());
        block.extend(value.as_bytes());
    }
    block
}

/// Reads and discards until the server closes the connection (end of
/// input or a reset); `None` if it is still open after `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    let drained = tokio::time::timeout(limit, async {
        while let Ok(read) = stream.read(&mut buf).await {
            if read == 0 {
                break;
            }
        }
    })
    .await;
    drained.ok().map(|()| started.elapsed())
}

/// GET /api/gigachat-health over a new connection, in at most `limit`
/// (connecting included); the status, or 0 if nothing came in time.
async fn health_within(addr: &str, limit: Duration) -> u16 {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream.write_all(HEALTH.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let response = String::from_utf8_lossy(&response).into_owned();
        response.split_whitespace().nth(1)?.parse().ok()
    };
    tokio::time::timeout(limit, exchange)
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let s = setup_with(|_| {}, &[("GIGACHAT_PROXY_HEADER_TIMEOUT", "1")]).await;
    let addr = s.proxy.addr();

    let mut silent = TcpStream::connect(&addr).await.unwrap();
    // Part of the h2c preface: the server cannot even tell the protocol yet.
    let mut undecided = TcpStream::connect(&addr).await.unwrap();
    undecided.write_all(&H2_PREFACE[..16]).await.unwrap();
    let opened = Instant::now();

    for (name, stream) in [
        ("silent", &mut silent),
        ("part of a preface", &mut undecided),
    ] {
        closed_within(stream, Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("a {name} connection was still open after 5 s"));
        let waited = opened.elapsed();
        assert!(
            waited >= Duration::from_millis(700),
            "{name}: closed after {waited:?}"
        );
    }
    assert_eq!(health_within(&addr, Duration::from_secs(5)).await, 200);
}

/// One h2 frame: type, flags, stream id, payload; `None` once the
/// connection is closed.
async fn read_h2_frame(stream: &mut TcpStream) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    stream.read_exact(&mut head).await.ok()?;
    let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.ok()?;
    let id = u32::from_be_bytes([head[5] & 0x7f, head[6], head[7], head[8]]);
    Some((head[3], head[4], id, payload))
}

/// Behaves like a live h2 client that has nothing to ask (it answers the
/// server's PINGs, so keep-alive pings alone cannot end the connection)
/// until the server closes the connection; `None` if still open after `limit`.
async fn h2_closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let idle = async {
        while let Some((kind, flags, _, payload)) = read_h2_frame(stream).await {
            if kind == 6 && flags & 0x1 == 0 {
                let ack = h2_frame(6, 0x1, 0, &payload);
                if stream.write_all(&ack).await.is_err() {
                    break;
                }
            }
        }
    };
    tokio::time::timeout(limit, idle)
        .await
        .ok()
        .map(|()| started.elapsed())
}

#[tokio::test]
async fn an_idle_h2c_connection_is_closed_before_and_after_a_request() {
    let s = setup_with(|_| {}, &[("GIGACHAT_PROXY_HEADER_TIMEOUT", "1")]).await;
    let addr = s.proxy.addr();

    // Preface and SETTINGS, then nothing.
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    idle.write_all(&h2c_hello()).await.unwrap();
    let waited = h2_closed_within(&mut idle, Duration::from_secs(5))
        .await
        .expect("an idle h2c connection was still open after 5 s");
    assert!(
        waited >= Duration::from_millis(700),
        "closed after {waited:?}"
    );

    // One request served, then idle.
    let mut used = TcpStream::connect(&addr).await.unwrap();
    let mut request = h2c_hello();
    request.extend(h2_frame(1, 0x4 | 0x1, 1, &h2_health_headers()));
    used.write_all(&request).await.unwrap();
    let mut got_headers = false;
    let answered = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some((kind, flags, stream, _)) = read_h2_frame(&mut used).await {
            got_headers |= stream == 1 && kind == 1;
            if stream == 1 && (kind == 0 || kind == 1) && flags & 0x1 != 0 {
                return true;
            }
        }
        false
    })
    .await;
    assert!(
        answered == Ok(true) && got_headers,
        "no h2 answer to the health request"
    );
    let waited = h2_closed_within(&mut used, Duration::from_secs(5))
        .await
        .expect("an h2c connection idle after its request was still open after 5 s");
    assert!(
        waited >= Duration::from_millis(700),
        "closed after {waited:?}"
    );
}

#[tokio::test]
async fn an_h2_header_block_that_never_ends_is_cut_off() {
    let s = setup_with(|_| {}, &[("GIGACHAT_PROXY_HEADER_TIMEOUT", "1")]).await;
    let mut stream = TcpStream::connect(s.proxy.addr()).await.unwrap();
    let mut request = h2c_hello();
    // HEADERS without END_HEADERS: a CONTINUATION frame should follow, and never does.
    request.extend(h2_frame(1, 0x1, 1, &h2_health_headers()[..2]));
    stream.write_all(&request).await.unwrap();
    let waited = closed_within(&mut stream, Duration::from_secs(5))
        .await
        .expect("a half-sent h2 header block held the connection for 5 s");
    assert!(
        waited >= Duration::from_millis(700),
        "closed after {waited:?}"
    );
}

/// [`busy_connection_awaiting_its_body`] with the first bytes of the body
/// sent: the proxy is reading a body that never ends.
async fn busy_connection(addr: &str) -> TcpStream {
    let mut stream = busy_connection_awaiting_its_body(addr).await;
    stream.write_all(b"{\"model\"").await.unwrap();
    stream
}

#[tokio::test]
async fn at_the_connection_cap_idle_connections_make_room_and_busy_ones_get_a_503() {
    let s = setup_with(|_| {}, &[("GIGACHAT_PROXY_MAX_CONNECTIONS", "2")]).await;
    let addr = s.proxy.addr();

    // Two silent connections fill the server; a health check still gets
    // through, and the older silent one makes room (long before the
    // default 30 s header timeout).
    let mut oldest = TcpStream::connect(&addr).await.unwrap();
    let _newer = TcpStream::connect(&addr).await.unwrap();
    assert_eq!(health_within(&addr, Duration::from_secs(2)).await, 200);
    assert!(
        closed_within(&mut oldest, Duration::from_secs(2))
            .await
            .is_some(),
        "the longest-idle connection was not closed to make room"
    );

    // Two requests in flight fill it with busy connections: a newcomer
    // gets a 503 that says why, and nobody's request is cut.
    let first = busy_connection(&addr).await;
    let _second = busy_connection(&addr).await;
    let answer = answer_to_a_connection_over_the_cap(&addr).await;
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    let body: serde_json::Value =
        serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["status"], 503);
    assert_eq!(body["code"], "too_many_connections");
    assert!(
        body["hint"]
            .as_str()
            .unwrap()
            .contains("GIGACHAT_PROXY_MAX_CONNECTIONS")
    );
    assert!(body["request_id"].as_str().is_some_and(|id| !id.is_empty()));

    // When a busy connection ends, its place is free again.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = health_within(&addr, Duration::from_secs(2)).await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {status} after a place was freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_client_that_writes_its_whole_oversized_body_first_still_reads_the_413() {
    let s = setup_with(|_| {}, &[("GIGACHAT_PROXY_MAX_BODY_BYTES", "1000")]).await;
    let mut stream = TcpStream::connect(s.proxy.addr()).await.unwrap();
    // Well over the limit plus the 1 MiB the proxy itself reads past it,
    // and over what the loopback socket buffers take in (about 6 MiB here),
    // which would otherwise hide a close that resets the answer away.
    let body_len = 1000 + 16 * 1024 * 1024;
    let exchange = async {
        stream
            .write_all(
                format!(
                    "POST /api/gigachat-api/chat/completions HTTP/1.1\r\nHost: localhost\r\n\
                     Content-Type: application/json\r\nContent-Length: {body_len}\r\n\r\n"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        // Like Python's urllib: the whole body first, then the answer.
        let chunk = vec![b' '; 64 * 1024];
        let mut written = 0;
        while written < body_len {
            let part = chunk.len().min(body_len - written);
            stream
                .write_all(&chunk[..part])
                .await
                .unwrap_or_else(|err| panic!("the body broke off after {written} bytes: {err}"));
            written += part;
        }
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .await
            .unwrap_or_else(|err| panic!("the answer could not be read: {err}"));
        String::from_utf8_lossy(&answer).into_owned()
    };
    let answer = tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .expect("no answer within 20 s");
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
    assert!(answer.contains("body_too_large"), "{answer}");
}

/// This test process needs `needed` descriptors for its client sockets:
/// raises its own soft limit (up to the hard one) if it is lower.
fn ensure_descriptors(needed: u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .unwrap();
    let mut values = line.split_whitespace();
    let soft = values.next().unwrap();
    if soft == "unlimited" || soft.parse::<u64>().unwrap() >= needed {
        return;
    }
    let raised = Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={needed}:"))
        .status();
    assert!(
        raised.is_ok_and(|status| status.success()),
        "this test needs {needed} file descriptors: run it after `ulimit -n {needed}`"
    );
}

#[tokio::test]
async fn floods_of_silent_and_idle_h2c_connections_do_not_lock_out_health() {
    const EACH: usize = 2000;
    ensure_descriptors(2 * EACH as u64 + 1000);
    let credentials = test_credentials();
    let emulator = start_emulator(&credentials, |_| {}).await;
    let (base, auth) = (emulator.base_url(), emulator.auth_url());
    // The defaults, on a machine with 512 descriptors for the process.
    let proxy = start_proxy_with_descriptor_limit(512, &proxy_env(&base, &auth, &credentials));

    let hello = h2c_hello();
    let mut held = Vec::with_capacity(2 * EACH);
    for index in 0..2 * EACH {
        let Ok(Ok(mut stream)) =
            tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(&proxy.addr())).await
        else {
            break;
        };
        if index >= EACH {
            // The server may already have closed it to make room.
            let _ = stream.write_all(&hello).await;
        }
        held.push(stream);
    }

    let started = Instant::now();
    let status = health_within(&proxy.addr(), Duration::from_secs(1)).await;
    assert_eq!(
        status,
        200,
        "health did not answer within 1 s of {} held connections ({:?}); logs:\n{}",
        held.len(),
        started.elapsed(),
        proxy.logs()
    );
    assert_eq!(held.len(), 2 * EACH, "connecting stalled");
}

#[tokio::test]
async fn accept_failures_are_logged_once_per_interval_not_in_a_flood() {
    let credentials = test_credentials();
    let emulator = start_emulator(&credentials, |_| {}).await;
    let (base, auth) = (emulator.base_url(), emulator.auth_url());
    let mut env = proxy_env(&base, &auth, &credentials);
    // A cap above what the descriptors allow, so accept itself fails.
    env.push(("GIGACHAT_PROXY_MAX_CONNECTIONS", "1000"));
    let proxy = start_proxy_with_descriptor_limit(48, &env);

    // Busy connections (requests in flight, bodies pending) use up the
    // descriptors; the rest wait in the listen backlog, so every accept
    // the server tries fails.
    let mut held = Vec::new();
    for _ in 0..80 {
        let mut stream = TcpStream::connect(&proxy.addr()).await.unwrap();
        let _ = stream
            .write_all(
                b"POST /api/gigachat-api/chat/completions HTTP/1.1\r\nHost: localhost\r\n\
                  Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
            )
            .await;
        held.push(stream);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !proxy.logs().contains("accept failed") {
        assert!(
            Instant::now() < deadline,
            "the server never ran out of descriptors; logs:\n{}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A window in which the old loop logged forty warnings.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let logs = proxy.logs();
    let warnings = logs.matches("accept failed").count();
    assert!(warnings <= 2, "{warnings} accept warnings in 2 s:\n{logs}");
}
