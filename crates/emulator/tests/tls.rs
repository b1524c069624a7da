//! The emulator over HTTPS: the same service behind rustls, with ALPN h2 and
//! http/1.1, a certificate name check against `localhost`, and optional
//! client-certificate auth.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;

use gigachat_emulator::{DEFAULT_CREDENTIALS, Emulator, EmulatorConfig, EmulatorTls};
use gigachat_test_support::pki::Ca;
use serde_json::{Value, json};

async fn start(server: &Ca, client_ca: Option<&Ca>) -> Emulator {
    let leaf = server.server_cert(&["localhost"]);
    Emulator::start_tls(
        EmulatorConfig::default(),
        SocketAddr::from(([127, 0, 0, 1], 0)),
        EmulatorTls {
            cert_chain_pem: leaf.cert_pem().as_bytes().to_vec(),
            key_pem: leaf.key_pem().as_bytes().to_vec(),
            client_ca_pem: client_ca.map(|ca| ca.cert_pem().as_bytes().to_vec()),
        },
    )
    .await
    .unwrap()
}

fn client(ca: &Ca) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.cert_pem().as_bytes()).unwrap())
}

async fn chat(emulator: &Emulator, client: &reqwest::Client) -> reqwest::Result<reqwest::Response> {
    let token: Value = client
        .post(emulator.auth_url())
        .header("RqUID", "6f0b1291-c7f3-43c6-bb2e-9f3efb2dc98e")
        .header("Authorization", format!("Basic {DEFAULT_CREDENTIALS}"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("scope=GIGACHAT_API_PERS")
        .send()
        .await?
        .json()
        .await?;
    client
        .post(format!("{}/chat/completions", emulator.base_url()))
        .bearer_auth(token["access_token"].as_str().unwrap())
        .json(&json!({"model": "GigaChat", "messages": [{"role": "user", "content": "over tls"}]}))
        .send()
        .await
}

#[tokio::test]
async fn serves_https_on_localhost_with_h2_and_http1() {
    let ca = Ca::new("Test Russian Trusted Root CA");
    let emulator = start(&ca, None).await;
    assert!(emulator.base_url().starts_with("https://localhost:"));
    assert!(emulator.auth_url().starts_with("https://localhost:"));

    let h2 = client(&ca).build().unwrap();
    let response = chat(&emulator, &h2).await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "Echo: over tls");

    let http1 = client(&ca).http1_only().build().unwrap();
    let response = chat(&emulator, &http1).await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    assert_eq!(response.status(), 200);
    assert_eq!(emulator.stats().oauth_calls, 2);
}

#[tokio::test]
async fn an_untrusted_client_fails_the_handshake() {
    let ca = Ca::new("Test Russian Trusted Root CA");
    let emulator = start(&ca, None).await;
    let stranger = client(&Ca::new("Some Other CA")).build().unwrap();
    let err = chat(&emulator, &stranger).await.unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    // Nothing reached the service.
    assert_eq!(emulator.stats().oauth_calls, 0);
}

#[tokio::test]
async fn mtls_requires_a_client_certificate_from_the_client_ca() {
    let ca = Ca::new("Test Russian Trusted Root CA");
    let client_ca = Ca::new("Test Client CA");
    let emulator = start(&ca, Some(&client_ca)).await;

    let anonymous = client(&ca).build().unwrap();
    assert!(chat(&emulator, &anonymous).await.is_err());

    let identity = Ca::new("Rogue Client CA")
        .client_cert("client")
        .identity_pem();
    let rogue = client(&ca)
        .identity(reqwest::Identity::from_pem(identity.as_bytes()).unwrap())
        .build()
        .unwrap();
    assert!(chat(&emulator, &rogue).await.is_err());
    assert_eq!(emulator.stats().oauth_calls, 0);

    let identity = client_ca.client_cert("client").identity_pem();
    let trusted = client(&ca)
        .identity(reqwest::Identity::from_pem(identity.as_bytes()).unwrap())
        .build()
        .unwrap();
    assert_eq!(chat(&emulator, &trusted).await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_broken_certificate_is_an_error_not_a_panic() {
    let err = Emulator::start_tls(
        EmulatorConfig::default(),
        SocketAddr::from(([127, 0, 0, 1], 0)),
        EmulatorTls {
            cert_chain_pem: b"not pem".to_vec(),
            key_pem: b"not pem".to_vec(),
            client_ca_pem: None,
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}
