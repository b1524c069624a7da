//! `--check-health`: the container image's `HEALTHCHECK`. The runtime image
//! holds nothing but this binary (no shell, no curl), so the binary asks the
//! server running beside it for the health route itself, over loopback, at
//! the address and port that same `HOST`/`PORT` told the server to use.

use std::process::ExitCode;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A probe that hangs says nothing; the container runtime's own timeout
/// would report only "timed out", not which address failed to answer.
const DEADLINE: Duration = Duration::from_secs(5);

/// The route every deployment serves (the core's routes answer it).
const HEALTH_PATH: &str = "/api/gigachat-health";

/// The status line ends well within this; anything longer is not HTTP.
const MAX_HEAD: usize = 1024;

/// Exit status 0 when the health route answers `200`, else 1 with the reason
/// on stderr (Docker shows it in `docker inspect`).
pub async fn check_health(host: &str, port: u16) -> ExitCode {
    let target = loopback_for(host);
    let authority = if target.contains(':') {
        format!("[{target}]:{port}")
    } else {
        format!("{target}:{port}")
    };
    let url = format!("http://{authority}{HEALTH_PATH}");
    match tokio::time::timeout(DEADLINE, status_of(target, port, &authority)).await {
        Ok(Ok(200)) => {
            println!("healthy: {url} answered 200");
            ExitCode::SUCCESS
        }
        Ok(Ok(status)) => {
            eprintln!("unhealthy: {url} answered {status}");
            ExitCode::FAILURE
        }
        Ok(Err(err)) => {
            eprintln!("unhealthy: {url}: {err}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!(
                "unhealthy: {url} did not answer within {} s",
                DEADLINE.as_secs()
            );
            ExitCode::FAILURE
        }
    }
}

/// A wildcard address is where the server listens, not where it is reached.
fn loopback_for(host: &str) -> &str {
    match host.trim_start_matches('[').trim_end_matches(']') {
        "" | "0.0.0.0" => "127.0.0.1",
        "::" => "::1",
        other => other,
    }
}

async fn status_of(host: &str, port: u16, authority: &str) -> std::io::Result<u16> {
    let mut stream = tokio::net::TcpStream::connect((host, port)).await?;
    let request =
        format!("GET {HEALTH_PATH} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(128);
    let mut chunk = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < MAX_HEAD {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..read]);
    }
    status_code(&head).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the answer is not an HTTP/1.x response",
        )
    })
}

/// The code in an `HTTP/1.x NNN reason` status line.
fn status_code(head: &[u8]) -> Option<u16> {
    let end = head.iter().position(|&byte| byte == b'\n')?;
    let line = std::str::from_utf8(&head[..end]).ok()?;
    let mut parts = line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?.trim();
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn wildcards_become_loopback() {
        assert_eq!(loopback_for("0.0.0.0"), "127.0.0.1");
        assert_eq!(loopback_for("::"), "::1");
        assert_eq!(loopback_for("[::]"), "::1");
        assert_eq!(loopback_for("127.0.0.1"), "127.0.0.1");
        assert_eq!(loopback_for("10.1.2.3"), "10.1.2.3");
    }

    #[test]
    fn only_an_http_status_line_counts() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            status_code(b"HTTP/1.0 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(status_code(b"HTTP/1.1 200 OK"), None, "no line end yet");
        assert_eq!(status_code(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_code(b"HTTP/1.1 2000 OK\r\n"), None);
        assert_eq!(status_code(b""), None);
    }

    /// Serves one connection with `answer` (after reading the request head)
    /// and returns the port and what the probe sent.
    async fn one_shot(answer: &'static [u8]) -> (u16, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut chunk = [0u8; 512];
            while !request.ends_with(b"\r\n\r\n") {
                let read = stream.read(&mut chunk).await.unwrap();
                if read == 0 {
                    break;
                }
                request.extend_from_slice(&chunk[..read]);
            }
            stream.write_all(answer).await.unwrap();
            request
        });
        (port, served)
    }

    #[tokio::test]
    async fn healthy_only_on_200_from_the_health_route() {
        let (port, served) = one_shot(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
        assert_eq!(check_health("0.0.0.0", port).await, ExitCode::SUCCESS);
        let request = String::from_utf8(served.await.unwrap()).unwrap();
        assert!(
            request.starts_with("GET /api/gigachat-health HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            request.contains(&format!("Host: 127.0.0.1:{port}\r\n")),
            "{request}"
        );

        let (port, _served) = one_shot(b"HTTP/1.1 500 Internal Server Error\r\n\r\n").await;
        assert_eq!(check_health("127.0.0.1", port).await, ExitCode::FAILURE);

        let (port, _served) = one_shot(b"").await;
        assert_eq!(check_health("127.0.0.1", port).await, ExitCode::FAILURE);
    }

    #[tokio::test]
    async fn nothing_listening_is_unhealthy() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        assert_eq!(check_health("127.0.0.1", port).await, ExitCode::FAILURE);
    }
}
