//! Black-box TLS tests: the real `gigachat-proxy` binary in front of the
//! emulator served over HTTPS with a private CA minted at test time, the way
//! GigaChat serves with a certificate from the Russian Trusted Root CA that
//! ordinary trust stores lack.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;

use common::*;
use gigachat_emulator::{Credential, Emulator, EmulatorConfig, EmulatorTls};
use gigachat_test_support::pki::{Ca, Leaf};
use gigachat_test_support::temp_dir::TempDir;
use serde_json::Value;

/// The base64 body of a PEM block: what must never show up in a log.
fn pem_body(pem: &str) -> String {
    pem.lines()
        .filter(|line| !line.starts_with("-----"))
        .collect()
}

/// What a test needs: the CA GigaChat's stand-in chains to, and (for mTLS)
/// the CA the emulator checks client certificates against plus a client
/// certificate it issued, all as files.
struct Pki {
    dir: TempDir,
    server_cert: Leaf,
    client_ca: Ca,
    ca_file: String,
    client_cert_file: String,
    client_key_file: String,
    client_key_pem: String,
}

fn pki() -> Pki {
    let dir = TempDir::new("gigachat-proxy-tls");
    let server_ca = Ca::new("Test Russian Trusted Root CA");
    let server_cert = server_ca.server_cert(&["localhost"]);
    let client_ca = Ca::new("Test Client CA");
    let client = client_ca.client_cert("gigachat-proxy test client");
    Pki {
        ca_file: dir.write("ca.pem", server_ca.cert_pem()),
        client_cert_file: dir.write("client.crt", client.cert_pem()),
        client_key_file: dir.write("client.key", client.key_pem()),
        client_key_pem: client.key_pem().to_owned(),
        dir,
        server_cert,
        client_ca,
    }
}

struct TlsSetup {
    emulator: Emulator,
    proxy: ProxyProcess,
    credentials: String,
    http: reqwest::Client,
}

/// The emulator over HTTPS (requiring a client certificate when `mtls`), and
/// the proxy pointed at it with `extra_env`.
async fn setup_tls(pki: &Pki, mtls: bool, extra_env: &[(&str, &str)]) -> TlsSetup {
    let credentials = test_credentials();
    let emulator = Emulator::start_tls(
        EmulatorConfig {
            credentials: vec![Credential::new(credentials.as_str(), "GIGACHAT_API_PERS")],
            ..EmulatorConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
        EmulatorTls {
            cert_chain_pem: pki.server_cert.cert_pem().as_bytes().to_vec(),
            key_pem: pki.server_cert.key_pem().as_bytes().to_vec(),
            client_ca_pem: mtls.then(|| pki.client_ca.cert_pem().as_bytes().to_vec()),
        },
    )
    .await
    .unwrap();
    let (base, auth) = (emulator.base_url(), emulator.auth_url());
    assert!(base.starts_with("https://localhost:"), "{base}");
    let mut env = proxy_env(&base, &auth, &credentials);
    env.extend_from_slice(extra_env);
    let proxy = start_proxy(&env);
    TlsSetup {
        emulator,
        proxy,
        credentials,
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
    }
}

async fn post_chat(s: &TlsSetup, content: &str, stream: bool) -> (u16, String) {
    let response = s
        .http
        .post(s.proxy.url("/api/gigachat-api/chat/completions"))
        .json(&chat(content, stream))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

fn assert_chat_ok(status: u16, body: &str, content: &str) {
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        format!("Echo: {content}")
    );
}

fn assert_stream_ok(status: u16, body: &str, content: &str) {
    assert_eq!(status, 200, "{body}");
    let payloads = sse_data(body);
    let text = streamed_content(&payloads);
    assert_eq!(text, format!("Echo: {content}"));
}

/// A 502 that says TLS failed and what to set.
fn assert_tls_502(status: u16, body: &str) {
    assert_eq!(status, 502, "{body}");
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["code"], "upstream_unreachable", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("TLS certificate verification failed"),
        "{message}"
    );
    let hint = body["hint"].as_str().unwrap();
    assert!(hint.contains("GIGACHAT_CA_BUNDLE_FILE"), "{hint}");
    assert!(hint.contains("GIGACHAT_VERIFY_SSL_CERTS"), "{hint}");
}

#[tokio::test]
async fn ca_bundle_file_makes_chat_and_stream_work_over_https() {
    let pki = pki();
    let s = setup_tls(&pki, false, &[("GIGACHAT_CA_BUNDLE_FILE", &pki.ca_file)]).await;
    let (status, body) = post_chat(&s, "hello over tls", false).await;
    assert_chat_ok(status, &body, "hello over tls");
    let (status, body) = post_chat(&s, "a streamed answer", true).await;
    assert_stream_ok(status, &body, "a streamed answer");
    // One token for both; the second call reused the pooled TLS connection.
    assert_eq!(s.emulator.stats().oauth_calls, 1);
    let logs = s.proxy.logs();
    assert!(
        !logs.contains("verification toward GigaChat is OFF"),
        "{logs}"
    );
    assert_no_secret(
        &logs,
        std::slice::from_ref(&s.credentials),
        "the proxy's logs",
    );
}

#[tokio::test]
async fn without_the_ca_the_tls_failure_is_a_502_that_says_what_to_set() {
    let pki = pki();
    let s = setup_tls(&pki, false, &[]).await;
    let (status, body) = post_chat(&s, "hello", false).await;
    assert_tls_502(status, &body);
    let (status, body) = post_chat(&s, "hello", true).await;
    assert_tls_502(status, &body);
    // The handshake failed before anything reached the emulator.
    let stats = s.emulator.stats();
    assert_eq!((stats.oauth_calls, stats.api_calls), (0, 0));
}

#[tokio::test]
async fn verify_false_works_without_the_ca_and_warns_at_start_up() {
    let pki = pki();
    let s = setup_tls(&pki, false, &[("GIGACHAT_VERIFY_SSL_CERTS", "false")]).await;
    // Logged while the proxy starts, before any request.
    assert!(
        s.proxy
            .wait_for_log("GIGACHAT_VERIFY_SSL_CERTS=false: TLS certificate verification toward GigaChat is OFF")
            .await,
        "{}",
        s.proxy.logs()
    );
    assert!(s.proxy.logs().contains("WARN"), "{}", s.proxy.logs());
    let (status, body) = post_chat(&s, "unverified", false).await;
    assert_chat_ok(status, &body, "unverified");
    let (status, body) = post_chat(&s, "unverified stream", true).await;
    assert_stream_ok(status, &body, "unverified stream");
}

#[tokio::test]
async fn mtls_needs_the_client_certificate_and_works_with_it() {
    let pki = pki();
    let without = setup_tls(&pki, true, &[("GIGACHAT_CA_BUNDLE_FILE", &pki.ca_file)]).await;
    // GigaChat's CertificateRequired alert comes after the client's half of
    // the TLS 1.3 handshake; over HTTP/2 hyper may report only a dead
    // connection, so the cause is TLS or "in transit", but always a 502.
    let (status, body) = post_chat(&without, "hello", false).await;
    assert_eq!(status, 502, "{body}");
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["code"], "upstream_unreachable", "{body}");
    assert!(
        json["message"]
            .as_str()
            .unwrap()
            .starts_with("could not reach GigaChat (oauth)"),
        "{body}"
    );
    assert_eq!(without.emulator.stats().oauth_calls, 0);

    let with = setup_tls(
        &pki,
        true,
        &[
            ("GIGACHAT_CA_BUNDLE_FILE", &pki.ca_file),
            ("GIGACHAT_CERT_FILE", &pki.client_cert_file),
            ("GIGACHAT_KEY_FILE", &pki.client_key_file),
        ],
    )
    .await;
    let (status, body) = post_chat(&with, "hello corp", false).await;
    assert_chat_ok(status, &body, "hello corp");
    let (status, body) = post_chat(&with, "a corp stream", true).await;
    assert_stream_ok(status, &body, "a corp stream");
    // The private key never reaches the logs.
    assert_no_secret(
        &with.proxy.logs(),
        &[pem_body(&pki.client_key_pem)],
        "the proxy's logs",
    );
}

#[tokio::test]
async fn broken_tls_settings_are_config_errors_naming_the_variable() {
    let pki = pki();
    let marker = format!("secret-value-{}", uuid::Uuid::new_v4());
    let missing = pki.dir.path(&format!("{marker}.pem"));
    let not_pem = pki
        .dir
        .write("not-pem.pem", format!("{marker} is not a certificate"));
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![("GIGACHAT_CA_BUNDLE_FILE", &missing)],
            "GIGACHAT_CA_BUNDLE_FILE",
        ),
        (
            vec![("GIGACHAT_CA_BUNDLE_FILE", &not_pem)],
            "GIGACHAT_CA_BUNDLE_FILE",
        ),
        (
            vec![("GIGACHAT_CERT_FILE", &pki.client_cert_file)],
            "GIGACHAT_KEY_FILE",
        ),
        (
            vec![("GIGACHAT_KEY_FILE", &pki.client_key_file)],
            "GIGACHAT_CERT_FILE",
        ),
        (
            vec![("GIGACHAT_VERIFY_SSL_CERTS", &marker)],
            "GIGACHAT_VERIFY_SSL_CERTS",
        ),
    ];
    for (env, variable) in cases {
        let s = setup_tls(&pki, false, &env).await;
        for url in [
            s.proxy.url("/api/gigachat-health"),
            s.proxy.url("/api/gigachat-api/models"),
        ] {
            let response = s.http.get(url).send().await.unwrap();
            assert_eq!(response.status(), 500);
            let body = response.text().await.unwrap();
            let json: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(json["code"], "config_invalid", "{body}");
            assert!(
                json["message"].as_str().unwrap().contains(variable),
                "{variable}: {body}"
            );
            assert!(!body.contains(&marker), "{body}");
            assert!(!body.contains(pki.dir.root().to_str().unwrap()), "{body}");
        }
        let logs = s.proxy.logs();
        assert!(!logs.contains(&marker), "{logs}");
        assert_no_secret(&logs, &[pem_body(&pki.client_key_pem)], "the proxy's logs");
        assert_eq!(s.emulator.stats().oauth_calls, 0);
    }
}

/// A minimal HTTP `CONNECT` proxy, like a corporate egress proxy: records
/// each request line and pipes the tunnel's bytes both ways.
async fn connect_proxy() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorded = std::sync::Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let recorded = std::sync::Arc::clone(&recorded);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if client.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let line = head.lines().next().unwrap_or_default().to_owned();
                recorded.lock().unwrap().push(line.clone());
                let target = line.split_whitespace().nth(1).unwrap_or_default();
                let target = target.replace("localhost", "127.0.0.1");
                let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await else {
                    let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                    return;
                };
                let _ = client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (url, seen)
}

#[tokio::test]
async fn https_proxy_from_the_environment_carries_both_oauth_and_api_calls() {
    let pki = pki();
    let (egress, tunnels) = connect_proxy().await;
    let s = setup_tls(
        &pki,
        false,
        &[
            ("GIGACHAT_CA_BUNDLE_FILE", &pki.ca_file),
            ("HTTPS_PROXY", &egress),
        ],
    )
    .await;
    let (status, body) = post_chat(&s, "through the egress proxy", false).await;
    assert_chat_ok(status, &body, "through the egress proxy");
    let (status, body) = post_chat(&s, "streamed through it", true).await;
    assert_stream_ok(status, &body, "streamed through it");
    let port = s.emulator.addr().port();
    let tunnels = tunnels.lock().unwrap().clone();
    // The OAuth client and the forwarding client keep separate pools, so a
    // tunnel each: two tunnels prove the API call took the proxy too.
    assert_eq!(tunnels.len(), 2, "{tunnels:?}");
    for line in &tunnels {
        assert_eq!(line, &format!("CONNECT localhost:{port} HTTP/1.1"));
    }

    // NO_PROXY exempts the host: nothing goes through the proxy.
    let (egress, tunnels) = connect_proxy().await;
    let s = setup_tls(
        &pki,
        false,
        &[
            ("GIGACHAT_CA_BUNDLE_FILE", &pki.ca_file),
            ("HTTPS_PROXY", &egress),
            ("NO_PROXY", "localhost"),
        ],
    )
    .await;
    let (status, body) = post_chat(&s, "straight to it", false).await;
    assert_chat_ok(status, &body, "straight to it");
    assert!(tunnels.lock().unwrap().is_empty());
}
