//! CORS and end-user auth, black-box: the real proxy binary with the
//! relevant environment, in front of the emulator.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk, jwk::JwkSet};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const API_KEY: &str = "test-api-key-0123456789abcdef";
const JWT_SECRET: &str = "a-shared-hs256-secret-of-at-least-32-bytes!";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

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

fn hs256(claims: Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

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
    let good = json!({"sub": "alice", "iss": "https://auth.example.com/", "aud": "gigachat-proxy", "exp": now() + 600, "scope": "openid chat"});
    let call = |token: String| {
        s.http
            .post(chat_url(&s))
            .bearer_auth(token)
            .json(&chat("jwt", false))
            .send()
    };
    assert_eq!(call(hs256(good.clone())).await.unwrap().status(), 200);

    let mut cases: Vec<(&str, String, u16)> = Vec::new();
    let mut expired = good.clone();
    expired["exp"] = json!(now() - 3600);
    cases.push(("expired", hs256(expired), 401));
    let mut wrong_aud = good.clone();
    wrong_aud["aud"] = json!("someone-else");
    cases.push(("wrong aud", hs256(wrong_aud), 401));
    let mut wrong_iss = good.clone();
    wrong_iss["iss"] = json!("https://evil.example/");
    cases.push(("wrong iss", hs256(wrong_iss), 401));
    let mut future = good.clone();
    future["nbf"] = json!(now() + 3600);
    cases.push(("nbf in the future", hs256(future), 401));
    let mut no_sub = good.clone();
    no_sub.as_object_mut().unwrap().remove("sub");
    cases.push(("no sub", hs256(no_sub), 401));
    let bad_signature = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &good,
        &EncodingKey::from_secret(b"another-secret-another-secret-another"),
    )
    .unwrap();
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
    let mut no_scope = good.clone();
    no_scope["scope"] = json!("openid profile");
    cases.push(("missing scope", hs256(no_scope), 403));

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
    body: Arc<std::sync::Mutex<String>>,
}

/// A one-route HTTP server that serves whatever JWKS the test sets.
async fn jwks_server(set: &JwkSet) -> JwksServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().unwrap()
    );
    let fetches = Arc::new(AtomicUsize::new(0));
    let body = Arc::new(std::sync::Mutex::new(serde_json::to_string(set).unwrap()));
    let (count, served) = (Arc::clone(&fetches), Arc::clone(&body));
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let (count, served) = (Arc::clone(&count), Arc::clone(&served));
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                count.fetch_add(1, Ordering::SeqCst);
                let body = served.lock().unwrap().clone();
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    JwksServer { url, fetches, body }
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
        &json!({"sub": sub, "exp": now() + 600, "aud": "gigachat-proxy"}),
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
    assert!(
        jwks.fetches.load(Ordering::SeqCst) <= 3,
        "refetches are bounded"
    );

    // A token signed by the EC key but claiming the RSA key's kid fails.
    assert_eq!(
        call(signed(&ec, Algorithm::ES256, "rsa-1", "mallory"))
            .await
            .unwrap()
            .status(),
        401
    );
    // An HS256 token is not accepted when only a JWKS is configured (the
    // classic "use the public key as an HMAC secret" confusion).
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "x", "exp": now() + 60}),
        &EncodingKey::from_secret(b"whatever"),
    )
    .unwrap();
    assert_eq!(call(hs).await.unwrap().status(), 401);
    assert_eq!(s.emulator.stats().api_calls, 3);
}
