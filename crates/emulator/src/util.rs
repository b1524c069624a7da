//! Small shared helpers: the response body type, JSON replies in the two
//! GigaChat error shapes, and the deterministic token arithmetic.

use std::convert::Infallible;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use serde::Serialize;

/// Every response body: buffered ones and SSE streams share one type so the
/// router can return either. The error type lets a stream abort the
/// connection on purpose (the mid-stream reset fault).
pub(crate) type Body = UnsyncBoxBody<Bytes, std::io::Error>;

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

pub(crate) fn empty() -> Body {
    full(Bytes::new())
}

pub(crate) const JSON_UTF8: &str = "application/json; charset=utf-8";

/// Serializes `value` into a response with the given content type. Falls back
/// to a 500 instead of panicking, although our own types always serialize.
pub(crate) fn json_with(
    status: StatusCode,
    content_type: &'static str,
    value: &impl Serialize,
) -> Response<Body> {
    let (status, bytes) = match serde_json::to_vec(value) {
        Ok(b) => (status, b),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            br#"{"status":500,"message":"Internal Server Error"}"#.to_vec(),
        ),
    };
    let mut resp = Response::new(full(bytes));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

pub(crate) fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    json_with(status, JSON_UTF8, value)
}

/// The API error shape `{"status":…,"message":…}`; field
/// order is fixed by the struct, not by serde_json's map ordering.
#[derive(Serialize)]
pub(crate) struct ApiError<'a> {
    pub status: u16,
    pub message: &'a str,
}

pub(crate) fn api_error(status: StatusCode, message: &str) -> Response<Body> {
    json(
        status,
        &ApiError {
            status: status.as_u16(),
            message,
        },
    )
}

/// GigaChat's wording for the statuses an injected fault may ask for.
pub(crate) fn status_message(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "Bad request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Permission denied",
        404 => "Not found",
        405 => "Method not allowed",
        408 => "Request timeout",
        413 => "Payload too large",
        422 => "Invalid params",
        429 => "Too many requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => status.canonical_reason().unwrap_or("Error"),
    }
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Deterministic stand-in for a tokenizer: one token per started group of
/// four characters, at least one, so tests can predict usage exactly.
pub(crate) fn count_tokens(text: &str) -> u64 {
    let chars = text.chars().count() as u64;
    chars.div_ceil(4).max(1)
}

pub(crate) fn char_count(text: &str) -> u64 {
    text.chars().count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_counting_is_chars_over_four_rounded_up() {
        assert_eq!(count_tokens(""), 1);
        assert_eq!(count_tokens("abcd"), 1);
        assert_eq!(count_tokens("abcde"), 2);
        // Characters, not bytes: Cyrillic is two bytes per char in UTF-8.
        assert_eq!(count_tokens("привет"), 2);
    }
}
