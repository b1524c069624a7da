//! `POST /api/v2/oauth`: the authorization-key flow.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use http::request::Parts;
use http::{HeaderValue, Method, Response, StatusCode, header};
use serde::Serialize;

use crate::state::{Counters, Shared, TokenInfo};
use crate::util::{Body, json_with, now_ms, status_message};

pub(crate) const SCOPES: [&str; 3] = ["GIGACHAT_API_PERS", "GIGACHAT_API_B2B", "GIGACHAT_API_CORP"];

/// OAuth errors use `{code,message}`, not the API's `{status,message}`.
#[derive(Serialize)]
struct OauthError<'a> {
    code: u16,
    message: &'a str,
}

#[derive(Serialize)]
struct OauthSuccess<'a> {
    access_token: &'a str,
    expires_at: u64,
}

/// Why an OAuth request was refused: HTTP status, GigaChat code, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub status: StatusCode,
    pub code: u16,
    pub message: &'static str,
}

const fn refusal(status: StatusCode, code: u16, message: &'static str) -> Refusal {
    Refusal {
        status,
        code,
        message,
    }
}

pub(crate) const BAD_RQUID: Refusal = refusal(
    StatusCode::BAD_REQUEST,
    400,
    "RqUID header is missing or invalid",
);
pub(crate) const CANT_DECODE: Refusal = refusal(
    StatusCode::UNAUTHORIZED,
    4,
    "Can't decode 'Authorization' header",
);
pub(crate) const UNKNOWN_KEY: Refusal = refusal(
    StatusCode::UNAUTHORIZED,
    6,
    "credentials doesn't match db data",
);
pub(crate) const SCOPE_EMPTY: Refusal = refusal(StatusCode::BAD_REQUEST, 5, "scope is empty");
pub(crate) const SCOPE_INVALID: Refusal =
    refusal(StatusCode::BAD_REQUEST, 1, "scope data format invalid");
pub(crate) const SCOPE_MISMATCH: Refusal = refusal(
    StatusCode::UNAUTHORIZED,
    7,
    "scope from db not fully includes consumed scope",
);

fn oauth_response(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    let mut resp = json_with(status, "application/json", value);
    let h = resp.headers_mut();
    h.insert(header::SERVER, HeaderValue::from_static("SynGX"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, max-age=0, must-revalidate"),
    );
    resp
}

fn refuse(r: &Refusal) -> Response<Body> {
    oauth_response(
        r.status,
        &OauthError {
            code: r.code,
            message: r.message,
        },
    )
}

/// The SPEC pattern is 36 characters of hex digits and dashes.
pub(crate) fn valid_rquid(value: &str) -> bool {
    value.len() == 36 && value.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// Extracts the authorization key from `Basic <key>` or `Bearer <key>` and
/// checks it is base64 of something containing ':' (client_id:secret).
pub(crate) fn parse_authorization(value: Option<&str>) -> Result<String, Refusal> {
    let value = value.ok_or(CANT_DECODE)?.trim();
    let (scheme, key) = value.split_once(' ').ok_or(CANT_DECODE)?;
    if !scheme.eq_ignore_ascii_case("basic") && !scheme.eq_ignore_ascii_case("bearer") {
        return Err(CANT_DECODE);
    }
    let key = key.trim();
    let decoded = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(key).ok())
        .ok_or(CANT_DECODE)?;
    if !decoded.contains(&b':') {
        return Err(CANT_DECODE);
    }
    Ok(key.to_owned())
}

/// Reads `scope` from an `application/x-www-form-urlencoded` body.
pub(crate) fn form_value(body: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    text.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Validates everything but the fault switches and the rate limit; returns
/// the credential's key and the granted scope.
pub(crate) fn check(
    shared: &Shared,
    parts: &Parts,
    body: &[u8],
) -> Result<(String, String), Refusal> {
    let rquid = parts
        .headers
        .get("rquid")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !valid_rquid(rquid) {
        return Err(BAD_RQUID);
    }
    let auth = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let key = parse_authorization(auth)?;
    let credential = shared
        .config
        .credentials
        .iter()
        .find(|c| c.key == key)
        .ok_or(UNKNOWN_KEY)?;
    let scope = form_value(body, "scope").unwrap_or_default();
    let scope = scope.trim();
    if scope.is_empty() {
        return Err(SCOPE_EMPTY);
    }
    if !SCOPES.contains(&scope) {
        return Err(SCOPE_INVALID);
    }
    if scope != credential.scope {
        return Err(SCOPE_MISMATCH);
    }
    Ok((credential.key.clone(), credential.scope.clone()))
}

/// A JWE look-alike: five base64url segments with a realistic header. It is
/// opaque to clients, so only its shape and unpredictability matter.
pub(crate) fn mint_token() -> String {
    let header = URL_SAFE_NO_PAD
        .encode(br#"{"enc":"A256CBC-HS512","alg":"RSA-OAEP-256","cty":"jwt","typ":"JWT"}"#);
    let segment = |n: usize| {
        let mut bytes = Vec::with_capacity(n * 16);
        for _ in 0..n {
            bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        }
        URL_SAFE_NO_PAD.encode(bytes)
    };
    format!(
        "{header}.{}.{}.{}.{}",
        segment(16),
        segment(1),
        segment(40),
        segment(2)
    )
}

fn rate_limited(shared: &Shared, key: &str, per_second: u32) -> bool {
    let mut windows = crate::lock(&shared.oauth_window);
    let window = windows.entry(key.to_owned()).or_default();
    let now = Instant::now();
    while window
        .front()
        .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
    {
        window.pop_front();
    }
    if window.len() >= per_second as usize {
        return true;
    }
    window.push_back(now);
    false
}

pub(crate) fn too_large() -> Response<Body> {
    oauth_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        &OauthError {
            code: 413,
            message: "Payload too large",
        },
    )
}

pub(crate) async fn handle(shared: Arc<Shared>, parts: &Parts, body: &[u8]) -> Response<Body> {
    Counters::bump(&shared.counters.oauth_calls);
    let resp = answer(&shared, parts, body).await;
    if resp.status() != StatusCode::OK {
        Counters::bump(&shared.counters.oauth_failures);
    }
    resp
}

async fn answer(shared: &Shared, parts: &Parts, body: &[u8]) -> Response<Body> {
    let delay = shared.faults.oauth_delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some((status, retry_after)) = shared.faults.take_oauth_failure() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = oauth_response(
            status,
            &OauthError {
                code: status.as_u16(),
                message: status_message(status),
            },
        );
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        return resp;
    }
    if parts.method != Method::POST {
        let status = StatusCode::METHOD_NOT_ALLOWED;
        return oauth_response(
            status,
            &OauthError {
                code: status.as_u16(),
                message: status_message(status),
            },
        );
    }
    let (key, scope) = match check(shared, parts, body) {
        Ok(ok) => ok,
        Err(r) => return refuse(&r),
    };
    if let Some(limit) = shared.faults.oauth_rate_limit()
        && rate_limited(shared, &key, limit)
    {
        return oauth_response(
            StatusCode::TOO_MANY_REQUESTS,
            &OauthError {
                code: 429,
                message: "Too many requests",
            },
        );
    }
    let ttl_ms = u64::try_from(shared.config.token_ttl.as_millis()).unwrap_or(u64::MAX);
    let expires_at_ms = now_ms().saturating_add(ttl_ms);
    let token = mint_token();
    shared.store_token(
        token.clone(),
        TokenInfo {
            key,
            scope,
            expires_at_ms,
            epoch: shared.faults.token_epoch(),
        },
    );
    oauth_response(
        StatusCode::OK,
        &OauthSuccess {
            access_token: &token,
            expires_at: expires_at_ms,
        },
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::{Credential, DEFAULT_CREDENTIALS, EmulatorConfig};

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().method("POST").uri("/api/v2/oauth");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn shared() -> Shared {
        let mut cfg = EmulatorConfig::default();
        let b2b = STANDARD.encode("b2b-id:b2b-secret");
        cfg.credentials
            .push(Credential::new(b2b, "GIGACHAT_API_B2B"));
        Shared::new(cfg)
    }

    const RQ: &str = "6f0b1291-c7f3-43c6-bb2e-9f3efb2dc98e";

    #[test]
    fn rquid_shape() {
        assert!(valid_rquid(RQ));
        assert!(!valid_rquid("not-a-uuid"));
        assert!(!valid_rquid(&RQ.replace('6', "g")));
        assert!(!valid_rquid(&format!("{RQ}0")));
    }

    #[test]
    fn authorization_schemes_and_decoding() {
        let basic = format!("Basic {DEFAULT_CREDENTIALS}");
        let bearer = format!("Bearer {DEFAULT_CREDENTIALS}");
        assert_eq!(
            parse_authorization(Some(&basic)).unwrap(),
            DEFAULT_CREDENTIALS
        );
        assert_eq!(
            parse_authorization(Some(&bearer)).unwrap(),
            DEFAULT_CREDENTIALS
        );
        assert_eq!(parse_authorization(None), Err(CANT_DECODE));
        assert_eq!(
            parse_authorization(Some("Basic !!!not base64")),
            Err(CANT_DECODE)
        );
        // Valid base64 but no ':' inside: a secret sent instead of the key.
        let no_colon = format!("Basic {}", STANDARD.encode("just-a-secret"));
        assert_eq!(parse_authorization(Some(&no_colon)), Err(CANT_DECODE));
        assert_eq!(
            parse_authorization(Some(&format!("Digest {DEFAULT_CREDENTIALS}"))),
            Err(CANT_DECODE)
        );
    }

    #[test]
    fn error_codes_in_order() {
        let s = shared();
        let auth = format!("Basic {DEFAULT_CREDENTIALS}");
        let ok = parts(&[("RqUID", RQ), ("Authorization", &auth)]);
        assert_eq!(
            check(&s, &ok, b"scope=GIGACHAT_API_PERS").unwrap().1,
            "GIGACHAT_API_PERS"
        );
        assert_eq!(
            check(
                &s,
                &parts(&[("Authorization", &auth)]),
                b"scope=GIGACHAT_API_PERS"
            ),
            Err(BAD_RQUID)
        );
        assert_eq!(check(&s, &ok, b""), Err(SCOPE_EMPTY));
        assert_eq!(check(&s, &ok, b"scope="), Err(SCOPE_EMPTY));
        assert_eq!(check(&s, &ok, b"scope=FOO"), Err(SCOPE_INVALID));
        assert_eq!(
            check(&s, &ok, b"scope=GIGACHAT_API_B2B"),
            Err(SCOPE_MISMATCH)
        );
        let other = format!("Basic {}", STANDARD.encode("who:me"));
        let unknown = parts(&[("RqUID", RQ), ("Authorization", &other)]);
        assert_eq!(
            check(&s, &unknown, b"scope=GIGACHAT_API_PERS"),
            Err(UNKNOWN_KEY)
        );
    }

    #[test]
    fn form_decoding() {
        assert_eq!(
            form_value(b"a=1&scope=GIGACHAT%5FAPI_PERS", "scope").as_deref(),
            Some("GIGACHAT_API_PERS")
        );
        assert_eq!(form_value(b"scope", "scope").as_deref(), Some(""));
        assert_eq!(form_value(b"x=%zz%", "x").as_deref(), Some("%zz%"));
        assert_eq!(form_value(b"other=1", "scope"), None);
    }

    #[tokio::test]
    async fn injected_failures_carry_retry_after_when_asked() {
        let s = shared();
        let auth = format!("Basic {DEFAULT_CREDENTIALS}");
        let ok = parts(&[("RqUID", RQ), ("Authorization", &auth)]);
        let body = b"scope=GIGACHAT_API_PERS";
        s.faults.fail_next_oauth_with_retry_after(429, 1, Some(3));
        let refused = answer(&s, &ok, body).await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.headers()[header::RETRY_AFTER], "3");
        s.faults.fail_next_oauth(500, 1);
        let failed = answer(&s, &ok, body).await;
        assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(failed.headers().get(header::RETRY_AFTER).is_none());
        assert_eq!(answer(&s, &ok, body).await.status(), StatusCode::OK);
    }

    #[test]
    fn token_looks_like_jwe() {
        let t = mint_token();
        assert!(t.starts_with("eyJ"));
        assert_eq!(t.split('.').count(), 5);
        assert!(t.len() > 200);
        assert_ne!(t, mint_token());
    }
}
