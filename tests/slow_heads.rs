//! A client that sends a request head a byte at a time (slow loris) cannot
//! hold a connection: the head must be complete within
//! GIGACHAT_PROXY_HEADER_TIMEOUT, on a fresh connection and on one kept
//! alive after an answer, however steadily the bytes keep coming.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEAD: &[u8] = b"GET /api/gigachat-health HTTP/1.1\r\nHost: localhost\r\n";

/// Sends `HEAD` a byte every 100 ms, then header lines as long as the
/// server listens; returns how long the server took to close.
async fn trickle_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let filler = b"X-Slow: 1\r\n".repeat(1000);
    for byte in HEAD.iter().chain(filler.iter()) {
        if started.elapsed() > limit {
            return None;
        }
        if stream.write_all(&[*byte]).await.is_err() {
            return Some(started.elapsed());
        }
        // The end of the stream (or a reset) means the server gave up.
        let mut buf = [0u8; 64];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await
        {
            return Some(started.elapsed());
        }
    }
    None
}

#[tokio::test]
async fn a_head_sent_a_byte_at_a_time_is_cut_off_after_the_header_timeout() {
    let s = setup_with(|_| {}, &[("GIGACHAT_PROXY_HEADER_TIMEOUT", "1")]).await;
    let addr = s.proxy.addr();

    let mut fresh = TcpStream::connect(&addr).await.unwrap();
    let waited = trickle_until_closed(&mut fresh, Duration::from_secs(6))
        .await
        .expect("a head trickling in on a fresh connection was never cut off");
    assert!(
        waited >= Duration::from_millis(700),
        "closed after {waited:?}"
    );

    // The same after a complete request on a kept-alive connection.
    let mut reused = TcpStream::connect(&addr).await.unwrap();
    reused
        .write_all(b"GET /api/gigachat-health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    // The whole answer (head and body) is read before the next head starts.
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&answer).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("the health answer has a content-length");
            if body.len() >= length {
                break;
            }
        }
        let read = tokio::time::timeout(Duration::from_secs(5), reused.read(&mut buf))
            .await
            .expect("no answer")
            .unwrap();
        assert!(read > 0, "closed before answering");
        answer.extend(&buf[..read]);
    }
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let waited = trickle_until_closed(&mut reused, Duration::from_secs(6))
        .await
        .expect("a head trickling in after an answer was never cut off");
    assert!(waited <= Duration::from_secs(4), "closed after {waited:?}");
}
