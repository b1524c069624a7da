//! The TLS settings' tests: parsing, errors that name the variable, and
//! real handshakes with what the settings produce.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use super::*;
use base64::Engine as _;
use gigachat_test_support::pki::{Ca, Leaf, unrelated_key_pem};
use gigachat_test_support::temp_dir::TempDir;
use rustls_pki_types::ServerName;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// The embedded root's published SHA-256 fingerprint, checked so a
/// corrupted or swapped file cannot ship.
const RUSSIAN_TRUSTED_ROOT_CA_SHA256: &str = "D2:6D:2D:02:31:B7:C3:9F:92:CC:73:85:12:BA:54:10:35:19:E4:40:5D:68:B5:BD:70:3E:97:88:CA:8E:CF:31";

#[test]
fn embedded_root_matches_the_published_fingerprint() {
    let pem = std::str::from_utf8(RUSSIAN_TRUSTED_ROOT_CA_PEM).unwrap();
    let b64: String = pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let fingerprint = Sha256::digest(&der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    assert_eq!(fingerprint, RUSSIAN_TRUSTED_ROOT_CA_SHA256);
    russian_trusted_root().unwrap();
}

/// A client CA, a client certificate from it for mTLS, and a `localhost`
/// server certificate from the same CA for handshakes.
struct Pki {
    ca: Ca,
    client: Leaf,
    server: Leaf,
}

fn pki() -> Pki {
    let ca = Ca::new("Test Client CA");
    Pki {
        client: ca.client_cert("gigachat-proxy test client"),
        server: ca.server_cert(&["localhost"]),
        ca,
    }
}

/// A `localhost` server with the test CA's certificate that accepts
/// only clients presenting a certificate from that CA (GigaChat's mTLS).
fn mtls_server(pki: &Pki) -> rustls::ServerConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut client_roots = rustls::RootCertStore::empty();
    client_roots.add(pki.ca.cert_der().clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(client_roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![pki.server.cert_der().clone()], pki.server.key_der())
        .unwrap()
}

/// A whole TLS handshake in memory between `client` (as the upstream
/// clients use it) and `server`; the server's view of it on success.
fn handshake(
    client: &Arc<rustls::ClientConfig>,
    server: rustls::ServerConfig,
) -> Result<rustls::ServerConnection, rustls::Error> {
    let name = ServerName::try_from("localhost").unwrap();
    let mut client = rustls::ClientConnection::new(client.clone(), name)?;
    let mut server = rustls::ServerConnection::new(Arc::new(server))?;
    for _ in 0..16 {
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(server);
        }
        let mut wire = Vec::new();
        client.write_tls(&mut wire).unwrap();
        let mut unread = &wire[..];
        while !unread.is_empty() {
            server.read_tls(&mut unread).unwrap();
            server.process_new_packets()?;
        }
        let mut wire = Vec::new();
        server.write_tls(&mut wire).unwrap();
        let mut unread = &wire[..];
        while !unread.is_empty() {
            client.read_tls(&mut unread).unwrap();
            client.process_new_packets()?;
        }
    }
    panic!("the handshake did not finish");
}

/// Both upstream clients build from every setting at once, and the
/// settings are in the TLS configuration they connect with: the extra
/// root is what makes the server trusted, the client certificate is
/// presented, and the insecure switch accepts an unknown server.
#[test]
fn the_upstream_client_builds_with_every_setting() {
    let pki = pki();
    let dir = TempDir::new("gigachat-tls");
    let ca = dir.write("ca.pem", pki.ca.cert_pem());
    let cert = dir.write("client.crt", pki.client.cert_pem());
    let key = dir.write("client.key", pki.client.key_pem());
    let mut config = crate::config::Config::from_lookup(crate::config::Platform::Local, |name| {
        (name == "GIGACHAT_CREDENTIALS").then(|| "Y2xpZW50OnNlY3JldA==".to_owned())
    })
    .unwrap();
    let every = parse(&[
        (CA_BUNDLE_FILE, &ca),
        (CERT_FILE, &cert),
        (KEY_FILE, &key),
        (VERIFY_SSL_CERTS, "false"),
    ])
    .unwrap();
    assert!(crate::upstream::client::build(&config, &every).is_ok());
    let _forwarding = crate::upstream::client::UpstreamClient::new(&config, &every);
    assert!(crate::upstream::client::build(&config, &config.tls).is_ok());
    config.tls = every.clone();
    assert!(crate::upstream::client::build(&config, &config.tls).is_ok());

    let client_cert = pki.client.cert_der().clone();
    let verified = parse(&[(CA_BUNDLE_FILE, &ca), (CERT_FILE, &cert), (KEY_FILE, &key)]).unwrap();
    let server = handshake(verified.client_config(), mtls_server(&pki))
        .expect("the extra root verifies the server, the identity satisfies it");
    assert_eq!(
        server.peer_certificates().unwrap().first(),
        Some(&client_cert),
        "the configured client certificate was presented"
    );

    let without_root = parse(&[(CERT_FILE, &cert), (KEY_FILE, &key)]).unwrap();
    assert!(
        handshake(without_root.client_config(), mtls_server(&pki)).is_err(),
        "without GIGACHAT_CA_BUNDLE_FILE the test CA is not trusted"
    );
    let without_identity = parse(&[(CA_BUNDLE_FILE, &ca)]).unwrap();
    assert!(
        handshake(without_identity.client_config(), mtls_server(&pki)).is_err(),
        "the server demands a client certificate"
    );
    let server = handshake(every.client_config(), mtls_server(&pki))
        .expect("GIGACHAT_VERIFY_SSL_CERTS=false accepts the server");
    assert_eq!(
        server.peer_certificates().unwrap().first(),
        Some(&client_cert)
    );
    let insecure = parse(&[
        (VERIFY_SSL_CERTS, "false"),
        (CERT_FILE, &cert),
        (KEY_FILE, &key),
    ])
    .unwrap();
    assert!(
        handshake(insecure.client_config(), mtls_server(&pki)).is_ok(),
        "no extra root needed when verification is off"
    );
}

fn parse(vars: &[(&str, &str)]) -> Result<TlsConfig, ConfigError> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    TlsConfig::from_env(&Env::new(&|name| map.get(name).cloned()))
}

fn assert_error(result: Result<TlsConfig, ConfigError>, variable: &str, needle: &str) {
    let err = result.unwrap_err();
    assert_eq!(err.variable, variable, "{err}");
    assert!(err.problem.contains(needle), "{err}");
}

#[test]
fn defaults_verify_with_the_built_in_roots_only() {
    let config = parse(&[]).unwrap();
    assert!(config.verify());
    assert!(config.extra_roots.is_empty());
    assert!(config.client_chain.is_none());
    // Empty values count as unset, as elsewhere in the configuration.
    assert_eq!(
        parse(&[(CA_BUNDLE_FILE, " "), (CERT_FILE, "")]).unwrap(),
        config
    );
}

#[test]
fn verify_accepts_the_sdk_spellings() {
    for value in ["false", "False", "0", "no", "off"] {
        assert!(!parse(&[(VERIFY_SSL_CERTS, value)]).unwrap().verify());
    }
    for value in ["true", "TRUE", "1", "yes", "on"] {
        assert!(parse(&[(VERIFY_SSL_CERTS, value)]).unwrap().verify());
    }
    assert_error(
        parse(&[(VERIFY_SSL_CERTS, "secret-value-123")]),
        VERIFY_SSL_CERTS,
        "true or false",
    );
}

#[test]
fn ca_bundle_keeps_only_the_certificates() {
    let pki = pki();
    let dir = TempDir::new("gigachat-tls");
    let bundle = format!(
        "# comment lines are fine\n{}\n{}",
        pki.ca.cert_pem(),
        pki.client.cert_pem()
    );
    let path = dir.write("ca.pem", bundle);
    let config = parse(&[(CA_BUNDLE_FILE, &path)]).unwrap();
    assert_eq!(config.extra_roots.len(), 2);
    assert!(config.verify());
    // The bundle is not secret, but it is not dumped into logs either.
    let printed = format!("{config:?}");
    assert!(!printed.contains("BEGIN"), "{printed}");
}

#[test]
fn ca_bundle_errors_name_the_variable_not_the_path_or_contents() {
    let dir = TempDir::new("gigachat-tls");
    let missing = dir.path("secret-value-123.pem");
    let result = parse(&[(CA_BUNDLE_FILE, &missing)]);
    assert_error(result.clone(), CA_BUNDLE_FILE, "does not exist");
    assert!(!result.unwrap_err().to_string().contains("secret-value-123"));

    let not_pem = dir.write("not.pem", "secret-value-123 is not a certificate");
    let result = parse(&[(CA_BUNDLE_FILE, &not_pem)]);
    assert_error(result.clone(), CA_BUNDLE_FILE, "not a PEM file");
    assert!(!result.unwrap_err().to_string().contains("secret-value-123"));

    let key_only = dir.write("key.pem", pki().client.key_pem());
    assert_error(
        parse(&[(CA_BUNDLE_FILE, &key_only)]),
        CA_BUNDLE_FILE,
        "no PEM certificate",
    );

    let garbage = dir.write(
        "garbage.pem",
        "-----BEGIN CERTIFICATE-----\nc2VjcmV0LXZhbHVlLTEyMw==\n-----END CERTIFICATE-----\n",
    );
    assert_error(
        parse(&[(CA_BUNDLE_FILE, &garbage)]),
        CA_BUNDLE_FILE,
        "not a valid X.509",
    );

    assert_error(
        parse(&[(CA_BUNDLE_FILE, dir.root().to_str().unwrap())]),
        CA_BUNDLE_FILE,
        "cannot be read",
    );
}

#[test]
fn client_identity_from_separate_or_combined_files() {
    let pki = pki();
    let dir = TempDir::new("gigachat-tls");
    let cert = dir.write("client.crt", pki.client.cert_pem());
    let key = dir.write("client.key", pki.client.key_pem());
    let config = parse(&[(CERT_FILE, &cert), (KEY_FILE, &key)]).unwrap();
    assert!(config.client_chain.is_some());
    // The key never shows in debug output.
    let printed = format!("{config:?}");
    assert!(printed.contains("***"), "{printed}");
    assert!(!printed.contains("PRIVATE"), "{printed}");

    let combined = dir.write("client.pem", pki.client.identity_pem());
    let config = parse(&[(CERT_FILE, &combined)]).unwrap();
    assert!(config.client_chain.is_some());

    // A password with an unencrypted key is harmless and ignored.
    let config = parse(&[
        (CERT_FILE, &cert),
        (KEY_FILE, &key),
        (KEY_FILE_PASSWORD, "pw"),
    ])
    .unwrap();
    assert!(config.client_chain.is_some());
}

#[test]
fn client_identity_errors() {
    let pki = pki();
    let dir = TempDir::new("gigachat-tls");
    let cert = dir.write("client.crt", pki.client.cert_pem());
    let key = dir.write("client.key", pki.client.key_pem());

    assert_error(
        parse(&[(CERT_FILE, &cert)]),
        KEY_FILE,
        "holds no private key",
    );
    assert_error(parse(&[(KEY_FILE, &key)]), CERT_FILE, "is not set");
    assert_error(
        parse(&[(KEY_FILE_PASSWORD, "pw")]),
        KEY_FILE_PASSWORD,
        "GIGACHAT_KEY_FILE is not",
    );
    assert_error(
        parse(&[(CERT_FILE, &key), (KEY_FILE, &key)]),
        CERT_FILE,
        "no PEM certificate",
    );
    assert_error(
        parse(&[(CERT_FILE, &cert), (KEY_FILE, &cert)]),
        KEY_FILE,
        "no unencrypted PEM private key",
    );
    let other = dir.write("other.key", unrelated_key_pem());
    assert_error(
        parse(&[(CERT_FILE, &cert), (KEY_FILE, &other)]),
        KEY_FILE,
        "does not match",
    );
    let missing = dir.path("missing.key");
    assert_error(
        parse(&[(CERT_FILE, &cert), (KEY_FILE, &missing)]),
        KEY_FILE,
        "does not exist",
    );

    let pkcs8_encrypted = dir.write(
        "enc.key",
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nc2VjcmV0LXZhbHVlLTEyMw==\n-----END ENCRYPTED PRIVATE KEY-----\n",
    );
    let result = parse(&[
        (CERT_FILE, &cert),
        (KEY_FILE, &pkcs8_encrypted),
        (KEY_FILE_PASSWORD, "secret-value-123"),
    ]);
    assert_error(result.clone(), KEY_FILE, "openssl pkey");
    assert!(!result.unwrap_err().to_string().contains("secret-value-123"));
    let legacy_encrypted = dir.write(
        "legacy.key",
        "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nc2VjcmV0\n-----END RSA PRIVATE KEY-----\n",
    );
    assert_error(
        parse(&[(CERT_FILE, &cert), (KEY_FILE, &legacy_encrypted)]),
        KEY_FILE,
        "encrypted",
    );
    // The client CA is not what a client presents, but it is a
    // certificate; only the key check tells them apart.
    let ca = dir.write("ca.crt", pki.ca.cert_pem());
    assert_error(
        parse(&[(CERT_FILE, &ca), (KEY_FILE, &key)]),
        KEY_FILE,
        "does not match",
    );
}

/// Real handshakes against the emulator over HTTPS: every way GigaChat's
/// certificate can fail is reported as a TLS problem, with a hint that
/// names the variables that fix it.
mod handshakes {
    use super::*;
    use crate::error::{Error, TransportCause};
    use gigachat_emulator::{Emulator, EmulatorConfig, EmulatorTls};
    use std::net::SocketAddr;

    async fn emulator(cert: Leaf, client_ca: Option<&Ca>) -> Emulator {
        Emulator::start_tls(
            EmulatorConfig::default(),
            SocketAddr::from(([127, 0, 0, 1], 0)),
            EmulatorTls {
                cert_chain_pem: cert.cert_pem().as_bytes().to_vec(),
                key_pem: cert.key_pem().as_bytes().to_vec(),
                client_ca_pem: client_ca.map(|ca| ca.cert_pem().as_bytes().to_vec()),
            },
        )
        .await
        .unwrap()
    }

    fn tls(extra_root: Option<&Ca>, verify: bool, identity: Option<&Leaf>) -> TlsConfig {
        let extra_roots = extra_root
            .map(|ca| ca.cert_der().clone())
            .into_iter()
            .collect();
        let identity = identity.map(|leaf| files::ClientIdentity {
            chain: vec![leaf.cert_der().clone()],
            key: leaf.key_der(),
            key_variable: KEY_FILE,
        });
        TlsConfig::from_parts(verify, extra_roots, identity).unwrap()
    }

    /// A GET of the emulator's model list through the upstream client:
    /// `Ok(status)` or the classified transport error.
    async fn get_models(emulator: &Emulator, tls: &TlsConfig) -> Result<u16, Error> {
        // The production client (`client::build`) honours
        // HTTPS_PROXY, which a test machine may set; these requests
        // stay on loopback.
        let client = crate::upstream::client::apply_tls(reqwest::Client::builder().no_proxy(), tls)
            .build()
            .unwrap();
        client
            .get(format!("{}/models", emulator.base_url()))
            .send()
            .await
            .map(|response| response.status().as_u16())
            .map_err(|err| crate::upstream::transport_error(&err, "api", "localhost", 30))
    }

    fn assert_tls_failure(result: Result<u16, Error>) {
        let err = result.expect_err("the handshake must fail");
        assert!(
            matches!(
                err,
                Error::UpstreamUnreachable {
                    cause: TransportCause::Tls,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.status(), http::StatusCode::BAD_GATEWAY);
        assert!(err.to_string().contains("TLS"), "{err}");
        let hint = err.hint();
        assert!(hint.contains(CA_BUNDLE_FILE), "{hint}");
        assert!(hint.contains(VERIFY_SSL_CERTS), "{hint}");
    }

    #[tokio::test]
    async fn unknown_issuer_is_a_tls_failure_and_the_bundle_fixes_it() {
        let ca = Ca::new("Test Russian Trusted Root CA");
        let emulator = emulator(ca.server_cert(&["localhost"]), None).await;
        // 401: the TLS part worked and the emulator answered (no token).
        assert_tls_failure(get_models(&emulator, &tls(None, true, None)).await);
        assert_eq!(
            get_models(&emulator, &tls(Some(&ca), true, None))
                .await
                .unwrap(),
            401
        );
        assert_eq!(
            get_models(&emulator, &tls(None, false, None))
                .await
                .unwrap(),
            401
        );
    }

    #[tokio::test]
    async fn expired_certificate_is_a_tls_failure() {
        let ca = Ca::new("Test Russian Trusted Root CA");
        let emulator = emulator(ca.expired_server_cert(&["localhost"]), None).await;
        assert_tls_failure(get_models(&emulator, &tls(Some(&ca), true, None)).await);
    }

    #[tokio::test]
    async fn name_mismatch_is_a_tls_failure() {
        let ca = Ca::new("Test Russian Trusted Root CA");
        let emulator = emulator(ca.server_cert(&["gigachat.example"]), None).await;
        assert_tls_failure(get_models(&emulator, &tls(Some(&ca), true, None)).await);
    }

    #[tokio::test]
    async fn missing_client_certificate_fails_and_the_identity_fixes_it() {
        let ca = Ca::new("Test Russian Trusted Root CA");
        let client_ca = Ca::new("Test Client CA");
        let client = client_ca.client_cert("gigachat-proxy-client");
        let emulator = emulator(ca.server_cert(&["localhost"]), Some(&client_ca)).await;
        // The server's CertificateRequired alert arrives after the
        // client's half of the TLS 1.3 handshake; whether hyper passes
        // it on (Tls) or only reports a dead connection (Other) is a
        // race, so either is accepted, but never a success.
        let err = get_models(&emulator, &tls(Some(&ca), true, None))
            .await
            .expect_err("the server requires a client certificate");
        assert!(matches!(err, Error::UpstreamUnreachable { .. }), "{err:?}");
        assert_eq!(
            get_models(&emulator, &tls(Some(&ca), true, Some(&client)))
                .await
                .unwrap(),
            401
        );
    }
}
