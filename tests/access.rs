//! CORS and end-user auth, black-box: the real proxy binary with the
//! relevant environment, in front of the emulator.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk, jwk::JwkSet};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const API_KEY: &str = "test-api-key-0123456789abcdef";
const JWT_SECRET: &str = "a-shared-hs256-secret-of-at-least-32-bytes!";

fn chat_url(s: &Setup) -> String {
    s.proxy.url("/api/gigachat-api/chat/completions")
}

// ---------------------------------------------------------------- CORS

#[tokio::test]
async fn preflight_from_an_allowed_origin_is_answered_before_auth() {
    let s = setup_with(
        |_| {},
        &[
            ("GIGACHAT_PROXY_ALLOWED_ORIGINS", "https://app.example.com"),
            ("GIGACHAT_PROXY_API_KEYS", API_KEY),
        ],
    )
    .await;
    let response = s
        .http
        .request(reqwest::Method::OPTIONS, chat_url(&s))
        .header("Origin", "https://app.example.com")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "content-type, x-request-id, authorization",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204, "no 401 for a preflight");
    let h = response.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    let allowed = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for needed in [
        "authorization",
        "content-type",
        "x-request-id",
        "x-session-id",
        "x-client-id",
        "x-api-key",
    ] {
        assert!(allowed.contains(needed), "{needed} in {allowed}");
    }
    assert_eq!(h["access-control-max-age"], "600");
    assert!(h["vary"].to_str().unwrap().contains("Origin"));
    assert_eq!(s.emulator.stats().api_calls, 0);
}

#[tokio::test]
async fn allowed_origins_get_cors_headers_on_every_answer_streams_and_errors_included() {
    let s = setup_with(
        |_| {},
        &[("GIGACHAT_PROXY_ALLOWED_ORIGINS", "https://app.example.com")],
    )
    .await;
    let origin = "https://app.example.com";
    let stream = s
        .http
        .post(chat_url(&s))
        .header("Origin", origin)
        .json(&chat("cors stream", true))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["access-control-allow-origin"], origin);
    assert!(
        stream.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("X-Request-ID")
    );
    assert!(stream.text().await.unwrap().ends_with("data: [DONE]\n\n"));

    let upstream_error = s
        .http
        .post(chat_url(&s))
        .header("Origin", origin)
        .json(&json!({"model": "Nope", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(upstream_error.status(), 404);
    assert_eq!(
        upstream_error.headers()["access-control-allow-origin"],
        origin
    );

    let proxy_error = s
        .http
        .get(s.proxy.url("/api/gigachat-api/../x"))
        .header("Origin", origin)
        .send()
        .await
        .unwrap();
    assert_eq!(proxy_error.headers()["access-control-allow-origin"], origin);
}

#[tokio::test]
async fn disallowed_origins_are_refused_and_never_reflected() {
    let s = setup_with(
        |_| {},
        &[("GIGACHAT_PROXY_ALLOWED_ORIGINS", "https://app.example.com")],
    )
    .await;
    let preflight = s
        .http
        .request(reqwest::Method::OPTIONS, chat_url(&s))
        .header("Origin", "https://evil.example")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 403);
    assert!(
        preflight
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );

    let actual = s
        .http
        .post(chat_url(&s))
        .header("Origin", "https://evil.example")
        .json(&chat("x", false))
        .send()
        .await
        .unwrap();
    assert_eq!(actual.status(), 403);
    assert!(
        actual
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    let body: Value = actual.json().await.unwrap();
    assert_eq!(body["code"], "origin_not_allowed");
    assert_eq!(s.emulator.stats().api_calls, 0);

    // The site's own pages are always allowed, with no CORS headers.
    let host = s.proxy.addr();
    let same = s
        .http
        .post(chat_url(&s))
        .header("Origin", format!("http://{host}"))
        .json(&chat("x", false))
        .send()
        .await
        .unwrap();
    assert_eq!(same.status(), 200);
    assert!(same.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn the_local_server_allows_vite_on_localhost_by_default() {
    let s = setup().await;
    for (origin, allowed) in [
        ("http://localhost:5173", true),
        ("http://127.0.0.1:4173", true),
        ("https://evil.example", false),
    ] {
        let response = s
            .http
            .post(chat_url(&s))
            .header("Origin", origin)
            .json(&chat("vite", false))
            .send()
            .await
            .unwrap();
        if allowed {
            assert_eq!(response.status(), 200, "{origin}");
            assert_eq!(response.headers()["access-control-allow-origin"], origin);
        } else {
            assert_eq!(response.status(), 403, "{origin}");
            assert!(
                response
                    .headers()
                    .get("access-control-allow-origin")
                    .is_none()
            );
        }
    }
}

// ---------------------------------------------------------------- API keys

#[tokio::test]
async fn api_keys_are_required_once_configured() {
    let s = setup_with(|_| {}, &[("GIGACHAT_PROXY_API_KEYS", API_KEY)]).await;
    let none = s
        .http
        .post(chat_url(&s))
        .json(&chat("x", false))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 401);
    assert!(
        none.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    assert_eq!(
        none.json::<Value>().await.unwrap()["code"],
        "unauthenticated"
    );

    let wrong = s
        .http
        .post(chat_url(&s))
        .bearer_auth("test-api-key-0123456789abcdeX")
        .json(&chat("x", false))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    let bearer = s
        .http
        .post(chat_url(&s))
        .bearer_auth(API_KEY)
        .json(&chat("bearer", false))
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200);
    let header = s
        .http
        .post(chat_url(&s))
        .header("X-API-Key", API_KEY)
        .json(&chat("header", false))
        .send()
        .await
        .unwrap();
    assert_eq!(header.status(), 200);
    assert_eq!(s.emulator.stats().api_calls, 2);
    assert_no_secret(&s.proxy.logs(), &[API_KEY.to_owned()], "the proxy's logs");
    // The key never goes upstream.
    let recorded = format!("{:?}", s.emulator.recorded_requests());
    assert!(!recorded.contains(API_KEY));
}

#[tokio::test]
async fn sessions_are_minted_only_for_a_valid_credential_in_required_mode() {
    let s = setup_with(|_| {}, &[("GIGACHAT_PROXY_API_KEYS", API_KEY)]).await;
    let oauth = s.proxy.url("/api/gigachat-oauth");
    let anonymous = s.http.post(&oauth).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let forged = s
        .http
        .post(&oauth)
        .header("Authorization", "Basic bm90LWEta2V5")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);

    // The official SDKs send `credentials` as `Basic <value>` to the OAuth URL.
    let minted: Value = s
        .http
        .post(&oauth)
        .header("Authorization", format!("Basic {API_KEY}"))
        .header("RqUID", uuid::Uuid::new_v4().to_string())
        .form(&[("scope", "GIGACHAT_API_PERS")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = minted["access_token"].as_str().unwrap();
    let with_session = s
        .http
        .post(chat_url(&s))
        .bearer_auth(token)
        .json(&chat("session", false))
        .send()
        .await
        .unwrap();
    assert_eq!(with_session.status(), 200);
}

// ---------------------------------------------------------------- JWT (HS256)

#[tokio::test]
async fn hs256_jwts_are_checked_for_signature_expiry_issuer_audience_and_scope() {
    let s = setup_with(
        |_| {},
        &[
            ("GIGACHAT_PROXY_JWT_SECRET", JWT_SECRET),
            ("GIGACHAT_PROXY_JWT_ISSUER", "https://auth.example.com/"),
            ("GIGACHAT_PROXY_JWT_AUDIENCE", "gigachat-proxy"),
            ("GIGACHAT_PROXY_JWT_REQUIRED_SCOPE", "chat"),
        ],
    )
    .await;
    let good = json!({"sub": "alice", "iss": "https://auth.example.com/", "aud": "gigachat-proxy", "exp": unix_now() + 600, "scope": "openid chat"});
    let call = |token: String| {
        s.http
            .post(chat_url(&s))
            .bearer_auth(token)
            .json(&chat("jwt", false))
            .send()
    };
    assert_eq!(
        call(hs256_jwt(JWT_SECRET, &good)).await.unwrap().status(),
        200
    );

    let mut cases: Vec<(&str, String, u16)> = Vec::new();
    let mut expired = good.clone();
    expired["exp"] = json!(unix_now() - 3600);
    cases.push(("expired", hs256_jwt(JWT_SECRET, &expired), 401));
    let mut wrong_aud = good.clone();
    wrong_aud["aud"] = json!("someone-else");
    cases.push(("wrong aud", hs256_jwt(JWT_SECRET, &wrong_aud), 401));
    let mut wrong_iss = good.clone();
    wrong_iss["iss"] = json!("https://evil.example/");
    cases.push(("wrong iss", hs256_jwt(JWT_SECRET, &wrong_iss), 401));
    let mut future = good.clone();
    future["nbf"] = json!(unix_now() + 3600);
    cases.push(("nbf in the future", hs256_jwt(JWT_SECRET, &future), 401));
    let mut no_sub = good.clone();
    no_sub.as_object_mut().unwrap().remove("sub");
    cases.push(("no sub", hs256_jwt(JWT_SECRET, &no_sub), 401));
    let bad_signature = hs256_jwt("another-secret-another-secret-another", &good);
    cases.push(("bad signature", bad_signature, 401));
    // alg: none, with the good claims.
    use base64::Engine as _;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    cases.push((
        "alg none",
        format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            b64(&good)
        ),
        401,
    ));
    // RFC 7515 4.1.11: a `crit` extension the verifier does not understand
    // makes the token invalid, however good its signature.
    let mut critical = Header::new(Algorithm::HS256);
    critical.crit = Some(vec!["exp-ext".to_owned()]);
    let critical = jsonwebtoken::encode(
        &critical,
        &good,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    cases.push(("unknown crit extension", critical, 401));
    let mut no_scope = good.clone();
    no_scope["scope"] = json!("openid profile");
    cases.push(("missing scope", hs256_jwt(JWT_SECRET, &no_scope), 403));

    for (name, token, status) in cases {
        let response = call(token).await.unwrap();
        assert_eq!(response.status(), status, "{name}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["code"],
            if status == 401 {
                "unauthenticated"
            } else {
                "forbidden"
            },
            "{name}"
        );
    }
    assert_eq!(
        s.emulator.stats().api_calls,
        1,
        "only the good token reached GigaChat"
    );
}

// ---------------------------------------------------------------- JWT (JWKS)

struct JwksServer {
    url: String,
    fetches: Arc<AtomicUsize>,
    /// When each fetch arrived, in order.
    fetched_at: Arc<Mutex<Vec<Instant>>>,
    body: Arc<Mutex<String>>,
    /// The status it answers with: 200, or 500 for a failing provider.
    status: Arc<AtomicU16>,
    /// How long it waits before answering (a slow provider).
    delay_ms: Arc<AtomicU64>,
}

impl JwksServer {
    fn fetch_times(&self) -> Vec<Instant> {
        self.fetched_at.lock().unwrap().clone()
    }
}

/// A one-route HTTP server that serves whatever JWKS (or failure) the test
/// sets.
async fn jwks_server(set: &JwkSet) -> JwksServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().unwrap()
    );
    let server = JwksServer {
        url,
        fetches: Arc::new(AtomicUsize::new(0)),
        fetched_at: Arc::new(Mutex::new(Vec::new())),
        body: Arc::new(Mutex::new(serde_json::to_string(set).unwrap())),
        status: Arc::new(AtomicU16::new(200)),
        delay_ms: Arc::new(AtomicU64::new(0)),
    };
    let (count, times, served, status, delay) = (
        Arc::clone(&server.fetches),
        Arc::clone(&server.fetched_at),
        Arc::clone(&server.body),
        Arc::clone(&server.status),
        Arc::clone(&server.delay_ms),
    );
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let (count, times, served, status, delay) = (
                Arc::clone(&count),
                Arc::clone(&times),
                Arc::clone(&served),
                Arc::clone(&status),
                Arc::clone(&delay),
            );
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                times.lock().unwrap().push(Instant::now());
                count.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(delay.load(Ordering::SeqCst))).await;
                let status = status.load(Ordering::SeqCst);
                let body = if status == 200 {
                    served.lock().unwrap().clone()
                } else {
                    r#"{"error":"internal"}"#.to_owned()
                };
                let response = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    server
}

fn public_jwk(pem: &[u8], alg: Algorithm, kid: &str) -> (EncodingKey, Jwk) {
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(pem).unwrap(),
        _ => EncodingKey::from_ec_pem(pem).unwrap(),
    };
    let mut jwk = Jwk::from_encoding_key(&key, alg).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    (key, jwk)
}

fn signed(key: &EncodingKey, alg: Algorithm, kid: &str, sub: &str) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(
        &header,
        &json!({"sub": sub, "exp": unix_now() + 600, "aud": "gigachat-proxy"}),
        key,
    )
    .unwrap()
}

#[tokio::test]
async fn rs256_and_es256_tokens_verify_against_a_jwks_that_is_cached_and_refetched_on_rotation() {
    let (rsa, rsa_jwk) = public_jwk(
        include_bytes!("fixtures/jwt-rs256.pem"),
        Algorithm::RS256,
        "rsa-1",
    );
    let (ec, ec_jwk) = public_jwk(
        include_bytes!("fixtures/jwt-es256.pem"),
        Algorithm::ES256,
        "ec-1",
    );
    let jwks = jwks_server(&JwkSet {
        keys: vec![rsa_jwk.clone()],
    })
    .await;
    let s = setup_with(
        |_| {},
        &[
            ("GIGACHAT_PROXY_JWKS_URL", jwks.url.as_str()),
            ("GIGACHAT_PROXY_JWT_AUDIENCE", "gigachat-proxy"),
        ],
    )
    .await;
    let call = |token: String| {
        s.http
            .get(s.proxy.url("/api/gigachat-api/models"))
            .bearer_auth(token)
            .send()
    };

    assert_eq!(
        call(signed(&rsa, Algorithm::RS256, "rsa-1", "alice"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        call(signed(&rsa, Algorithm::RS256, "rsa-1", "bob"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), 1, "the JWKS is cached");

    // Key rotation: the provider adds an ES256 key; a token naming it
    // triggers one refetch and then verifies.
    let rsa_jwk_served = rsa_jwk.clone();
    *jwks.body.lock().unwrap() = serde_json::to_string(&JwkSet {
        keys: vec![rsa_jwk, ec_jwk],
    })
    .unwrap();
    assert_eq!(
        call(signed(&ec, Algorithm::ES256, "ec-1", "carol"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), 2);

    // Unknown kids are refused, and do not make the proxy hammer the JWKS.
    for i in 0..5 {
        let response = call(signed(
            &ec,
            Algorithm::ES256,
            &format!("forged-{i}"),
            "mallory",
        ))
        .await
        .unwrap();
        assert_eq!(response.status(), 401);
    }
    // The documented promise (docs/configuration.md, GIGACHAT_PROXY_JWKS_URL): one refetch for the first unknown kid, then a
    // 30 s cool-down in which no unknown kid fetches again.
    assert_eq!(
        jwks.fetches.load(Ordering::SeqCst),
        3,
        "one refetch for the first unknown kid, none for the next four"
    );

    // A token signed by the EC key but claiming the RSA key's kid fails.
    assert_eq!(
        call(signed(&ec, Algorithm::ES256, "rsa-1", "mallory"))
            .await
            .unwrap()
            .status(),
        401
    );
    // The classic confusion: an HS256 token whose HMAC secret is the RSA
    // public key itself (as PEM, as DER, or the JWK the provider serves),
    // naming that key's kid, every claim valid. Anyone can compute these;
    // a verifier that keys HMAC with its public key would accept them.
    let rsa_public = rcgen::KeyPair::from_pem(include_str!("fixtures/jwt-rs256.pem")).unwrap();
    let public_bytes: [(&str, Vec<u8>); 3] = [
        ("SPKI PEM", rsa_public.public_key_pem().into_bytes()),
        (
            "SPKI DER",
            rcgen::PublicKeyData::subject_public_key_info(&rsa_public),
        ),
        ("served JWK", serde_json::to_vec(&rsa_jwk_served).unwrap()),
    ];
    for (encoding, secret) in public_bytes {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rsa-1".to_owned());
        let hs = jsonwebtoken::encode(
            &header,
            &json!({"sub": "mallory", "exp": unix_now() + 600, "aud": "gigachat-proxy"}),
            &EncodingKey::from_secret(&secret),
        )
        .unwrap();
        let response = call(hs).await.unwrap();
        assert_eq!(response.status(), 401, "HS256 keyed with the {encoding}");
    }
    assert_eq!(s.emulator.stats().api_calls, 3);
}

/// The RS256 fixture key (kid `rsa-1`) and a JWKS server publishing it.
async fn jwks_serving_the_rsa_key() -> (EncodingKey, JwksServer) {
    let (rsa, rsa_jwk) = public_jwk(
        include_bytes!("fixtures/jwt-rs256.pem"),
        Algorithm::RS256,
        "rsa-1",
    );
    let jwks = jwks_server(&JwkSet {
        keys: vec![rsa_jwk],
    })
    .await;
    (rsa, jwks)
}

#[tokio::test]
async fn a_failing_jwks_is_fetched_once_per_cool_down_with_backoff_and_answers_503() {
    let (rsa, jwks) = jwks_serving_the_rsa_key().await;
    jwks.status.store(500, Ordering::SeqCst);
    let s = setup_with(
        |_| {},
        &[
            ("GIGACHAT_PROXY_JWKS_URL", jwks.url.as_str()),
            ("GIGACHAT_PROXY_JWT_AUDIENCE", "gigachat-proxy"),
        ],
    )
    .await;
    let call = |sub: &str| {
        s.http
            .get(s.proxy.url("/api/gigachat-api/models"))
            .bearer_auth(signed(&rsa, Algorithm::RS256, "rsa-1", sub))
            .send()
    };
    let assert_unavailable = |response: &reqwest::Response| {
        assert_eq!(response.status(), 503, "no keys: not the token's fault");
        let retry_after: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=30).contains(&retry_after), "{retry_after}");
    };

    // Concurrent requests share one fetch.
    let responses =
        futures_util::future::join_all((0..8).map(|i| call(&format!("user-{i}")))).await;
    for response in responses {
        let response = response.unwrap();
        assert_unavailable(&response);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "jwks_unavailable");
        assert!(
            body["hint"]
                .as_str()
                .unwrap()
                .contains("GIGACHAT_PROXY_JWKS_URL")
        );
    }
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), 1, "one shared fetch");

    // Sequential requests keep coming; the provider is asked again only
    // after each cool-down, and the cool-down grows (1 s, then 2 s).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut requests = 0;
    while jwks.fetches.load(Ordering::SeqCst) < 3 {
        assert!(Instant::now() < deadline, "the JWKS is retried eventually");
        assert_unavailable(&call("alice").await.unwrap());
        requests += 1;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let times = jwks.fetch_times();
    assert_eq!(times.len(), 3);
    let (first_gap, second_gap) = (times[1] - times[0], times[2] - times[1]);
    assert!(
        first_gap >= Duration::from_millis(900),
        "{first_gap:?} after the first failure"
    );
    assert!(
        second_gap >= Duration::from_millis(1900),
        "{second_gap:?} after the second failure: the cool-down backs off"
    );
    assert!(requests > 20, "{requests} requests, 3 fetches");

    // The provider recovers: the next fetch after the cool-down finds the
    // key, and from then on the cache answers.
    jwks.status.store(200, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let response = call("alice").await.unwrap();
        if response.status() == 200 {
            break;
        }
        assert_unavailable(&response);
        assert!(Instant::now() < deadline, "the proxy recovers");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let fetches = jwks.fetches.load(Ordering::SeqCst);
    assert_eq!(call("bob").await.unwrap().status(), 200);
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), fetches, "cached");
    assert_no_secret(
        &s.proxy.logs(),
        std::slice::from_ref(&s.credentials),
        "the logs",
    );
}

#[tokio::test]
async fn concurrent_requests_share_one_slow_jwks_fetch_whether_it_succeeds_or_fails() {
    let (rsa, jwks) = jwks_serving_the_rsa_key().await;
    jwks.delay_ms.store(1000, Ordering::SeqCst);
    let env = [
        ("GIGACHAT_PROXY_JWKS_URL", jwks.url.as_str()),
        ("GIGACHAT_PROXY_JWT_AUDIENCE", "gigachat-proxy"),
    ];
    let s = setup_with(|_| {}, &env).await;
    let concurrent = |proxy: &ProxyProcess| {
        futures_util::future::join_all((0..6).map(|i| {
            s.http
                .get(proxy.url("/api/gigachat-api/models"))
                .bearer_auth(signed(&rsa, Algorithm::RS256, "rsa-1", &format!("u{i}")))
                .send()
        }))
    };

    // A cold cache: every request waits for the one fetch and uses its keys.
    for response in concurrent(&s.proxy).await {
        assert_eq!(response.unwrap().status(), 200);
    }
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), 1);

    // A fresh instance while the provider fails slowly: still one fetch.
    // Before, each waiting request made its own fetch after the previous
    // one failed: six in a row, the last caller waiting for all of them.
    jwks.status.store(500, Ordering::SeqCst);
    let fresh = instance(&s, &env);
    for response in concurrent(&fresh).await {
        assert_eq!(response.unwrap().status(), 503);
    }
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), 2);
}

// ------------------------------------------------ sessions across instances

/// Another proxy instance on the same GigaChat key (and emulator) as `s`.
fn instance(s: &Setup, extra_env: &[(&str, &str)]) -> ProxyProcess {
    let (base, auth) = (s.emulator.base_url(), s.emulator.auth_url());
    let mut env = proxy_env(&base, &auth, &s.credentials);
    env.extend_from_slice(extra_env);
    start_proxy(&env)
}

async fn mint(http: &reqwest::Client, proxy: &ProxyProcess, api_key: Option<&str>) -> String {
    let mut request = http.post(proxy.url("/api/gigachat-oauth"));
    if let Some(key) = api_key {
        request = request.header("X-API-Key", key);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

async fn models_status(http: &reqwest::Client, proxy: &ProxyProcess, token: &str) -> u16 {
    http.get(proxy.url("/api/gigachat-api/models"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn an_anonymous_session_from_an_open_instance_does_not_pass_a_required_one() {
    const SESSION_SECRET: &str = "an-explicit-session-secret-of-32-chars-or-more";
    let s = setup().await;
    for explicit_secret in [false, true] {
        let secret: &[(&str, &str)] = if explicit_secret {
            &[("GIGACHAT_PROXY_SESSION_SECRET", SESSION_SECRET)]
        } else {
            &[]
        };
        // A developer's `cargo run` (open) and the deployment (required),
        // on the same GigaChat key.
        let open = instance(&s, secret);
        let mut required_env = vec![("GIGACHAT_PROXY_API_KEYS", API_KEY)];
        required_env.extend_from_slice(secret);
        let required = instance(&s, &required_env);

        let anonymous = mint(&s.http, &open, None).await;
        assert_eq!(models_status(&s.http, &open, &anonymous).await, 200);
        assert_eq!(
            models_status(&s.http, &required, &anonymous).await,
            401,
            "explicit session secret: {explicit_secret}"
        );
        // The required instance's own sessions still work.
        let keyed = mint(&s.http, &required, Some(API_KEY)).await;
        assert_eq!(models_status(&s.http, &required, &keyed).await, 200);
    }
}

#[tokio::test]
async fn sessions_pass_only_instances_that_accept_the_same_credentials() {
    let s = setup().await;
    let api_keys = instance(&s, &[("GIGACHAT_PROXY_API_KEYS", API_KEY)]);
    // Another warm instance of the same deployment.
    let twin = instance(&s, &[("GIGACHAT_PROXY_API_KEYS", API_KEY)]);
    // Same GigaChat key, but end users sign in with JWTs only.
    let jwt_only = instance(&s, &[("GIGACHAT_PROXY_JWT_SECRET", JWT_SECRET)]);
    // The deployment after the key was revoked (replaced by another):
    // sessions minted with the revoked key must die with it.
    let revoked = instance(
        &s,
        &[("GIGACHAT_PROXY_API_KEYS", "another-key-0123456789abcdef")],
    );

    let token = mint(&s.http, &api_keys, Some(API_KEY)).await;
    assert_eq!(models_status(&s.http, &api_keys, &token).await, 200);
    assert_eq!(models_status(&s.http, &twin, &token).await, 200);
    assert_eq!(models_status(&s.http, &jwt_only, &token).await, 401);
    assert_eq!(models_status(&s.http, &revoked, &token).await, 401);
}
