//! GigaChat's error answers in OpenAI's error shape. The OpenAI SDKs read
//! `error.message` and branch on the status and `error.type`; the AI SDK
//! reads `error.message`. GigaChat's own `{"status", "message"}` would
//! reach their users as an opaque "unknown error".

use http::{HeaderValue, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::body::{ProxyBody, json_response};
use crate::error::openai_error_type;

/// The longest upstream message passed on, in characters: enough for any
/// GigaChat validation message, too little to carry a whole echoed body.
pub(crate) const MESSAGE_MAX_CHARS: usize = 500;

/// Words at least this long made only of token characters are replaced:
/// GigaChat has never echoed a credential, but a message that did must not
/// carry it on to a browser. Ids (a UUID is 36) stay readable.
const TOKEN_LIKE_MIN_CHARS: usize = 40;

const SHOULD_RETRY: http::HeaderName = http::HeaderName::from_static("x-should-retry");

/// The client's answer for a GigaChat error status and body.
pub(crate) fn from_upstream(
    status: StatusCode,
    body: &[u8],
    request_id: &str,
) -> Response<ProxyBody> {
    let mapped = client_status(status);
    let message = upstream_message(body).unwrap_or_else(|| {
        format!(
            "GigaChat answered HTTP {} with no error message",
            status.as_u16()
        )
    });
    let error = json!({
        "error": {
            "message": message,
            "type": openai_error_type(mapped),
            "param": null,
            "code": upstream_code(status),
            "hint": hint(status),
            "request_id": request_id,
        }
    });
    let mut response = json_response(mapped, &error);
    if !may_heal_soon(status) {
        response
            .headers_mut()
            .insert(SHOULD_RETRY, HeaderValue::from_static("false"));
    }
    response
}

/// The status the client gets: GigaChat's validation refusals (400, 413,
/// 422) all mean "this request as sent cannot succeed", which OpenAI's
/// clients know as 400 (`BadRequestError`, the one LangChain and the AI SDK
/// handle); the original status stays in `code`. Anything that is not an
/// error status is a broken answer, a 502.
pub(crate) fn client_status(upstream: StatusCode) -> StatusCode {
    match upstream.as_u16() {
        400 | 413 | 422 => StatusCode::BAD_REQUEST,
        400..=599 => upstream,
        _ => StatusCode::BAD_GATEWAY,
    }
}

/// `upstream_<status>`, the stable code naming GigaChat's status.
pub(crate) fn upstream_code(upstream: StatusCode) -> String {
    format!("upstream_{}", upstream.as_u16())
}

/// The OpenAI SDKs retry 408, 409, 429 and 5xx by themselves; any other
/// client error repeats identically, so they are told not to.
fn may_heal_soon(upstream: StatusCode) -> bool {
    !upstream.is_client_error() || matches!(upstream.as_u16(), 408 | 409 | 429)
}

pub(crate) fn hint(upstream: StatusCode) -> &'static str {
    match upstream.as_u16() {
        400 | 422 => {
            "GigaChat refused the request as the proxy translated it; change what its message names (a parameter value, the order of messages, a tool schema) and retry."
        }
        413 => "Send a shorter conversation or smaller attachments.",
        401 => {
            "GigaChat refused the proxy's access token; retry, and if it persists the operator should check GIGACHAT_CREDENTIALS and GIGACHAT_SCOPE."
        }
        402 => {
            "The GigaChat account's token package is used up; the operator must top it up in GigaChat Studio."
        }
        403 => "The proxy's GigaChat key may not make this call.",
        404 => "Check the model name: GET /api/gigachat-openai/v1/models lists the available ones.",
        408 | 429 => "GigaChat is busy or rate limiting the proxy's key; retry in a few seconds.",
        _ => "GigaChat failed; retry later, and report it with the request id if it persists.",
    }
}

/// GigaChat's `message` (or an OpenAI-shaped `error.message`, should a
/// gateway in between answer that way), bounded and with token-like words
/// replaced. Any other body is not echoed: an HTML error page helps nobody
/// and might carry what it should not.
pub(crate) fn upstream_message(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Nested {
        message: Option<String>,
    }
    #[derive(Deserialize)]
    struct Shape {
        message: Option<String>,
        error: Option<Nested>,
    }
    let shape: Shape = serde_json::from_slice(body).ok()?;
    let message = shape
        .message
        .or(shape.error.and_then(|nested| nested.message))?;
    let message = safe_message(&message);
    (!message.is_empty()).then_some(message)
}

/// A message fit to pass on: at most [`MESSAGE_MAX_CHARS`] characters,
/// control characters made spaces, token-like words replaced.
pub(crate) fn safe_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(MESSAGE_MAX_CHARS + 3));
    let mut chars = 0usize;
    for (i, word) in message.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
            chars += 1;
        }
        let token_like = word.chars().count() >= TOKEN_LIKE_MIN_CHARS
            && word
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._~+/=".contains(c));
        let word = if token_like { "[redacted]" } else { word };
        for c in word.chars() {
            if chars >= MESSAGE_MAX_CHARS {
                out.push('…');
                return out.trim().to_owned();
            }
            out.push(if c.is_control() { ' ' } else { c });
            chars += 1;
        }
    }
    out.trim().to_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use http_body_util::BodyExt;

    async fn answer(status: u16, body: &str) -> (StatusCode, http::HeaderMap, serde_json::Value) {
        let response = from_upstream(
            StatusCode::from_u16(status).unwrap(),
            body.as_bytes(),
            "req-9",
        );
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn a_422_becomes_a_400_invalid_request_with_gigachats_message() {
        let (status, headers, body) = answer(
            422,
            r#"{"status":422,"message":"Invalid params: system message must be the first message"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(headers["x-should-retry"], "false");
        assert_eq!(headers["content-type"], "application/json; charset=utf-8");
        let error = &body["error"];
        assert_eq!(
            error["message"],
            "Invalid params: system message must be the first message"
        );
        assert_eq!(error["type"], "invalid_request_error");
        assert_eq!(error["param"], serde_json::Value::Null);
        assert_eq!(error["code"], "upstream_422");
        assert_eq!(error["request_id"], "req-9");
        assert!(!error["hint"].as_str().unwrap().is_empty());
    }

    #[tokio::test]
    async fn validation_statuses_become_400_and_others_keep_theirs() {
        for (upstream, expected, kind, retry_false) in [
            (400, 400, "invalid_request_error", true),
            (413, 400, "invalid_request_error", true),
            (422, 400, "invalid_request_error", true),
            (401, 401, "authentication_error", true),
            (402, 402, "invalid_request_error", true),
            (403, 403, "permission_denied_error", true),
            (404, 404, "not_found_error", true),
            (408, 408, "invalid_request_error", false),
            (409, 409, "invalid_request_error", false),
            (429, 429, "rate_limit_error", false),
            (500, 500, "server_error", false),
            (503, 503, "server_error", false),
            (200, 502, "server_error", false),
        ] {
            let (status, headers, body) = answer(upstream, r#"{"status":1,"message":"m"}"#).await;
            assert_eq!(status.as_u16(), expected, "{upstream}");
            assert_eq!(body["error"]["type"], kind, "{upstream}");
            assert_eq!(body["error"]["code"], format!("upstream_{upstream}"));
            assert_eq!(
                headers.get("x-should-retry").is_some(),
                retry_false,
                "{upstream}"
            );
        }
    }

    #[tokio::test]
    async fn a_body_that_is_not_gigachats_json_is_not_echoed() {
        let (status, _, body) =
            answer(502, "<html><body>Bad gateway at nginx 1.2.3</body></html>").await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        let message = body["error"]["message"].as_str().unwrap();
        assert_eq!(message, "GigaChat answered HTTP 502 with no error message");
        let (_, _, body) = answer(429, r#"{"status":429,"message":""}"#).await;
        assert_eq!(
            body["error"]["message"],
            "GigaChat answered HTTP 429 with no error message"
        );
        let (_, _, body) = answer(400, r#"{"error":{"message":"nested"}}"#).await;
        assert_eq!(body["error"]["message"], "nested");
    }

    #[tokio::test]
    async fn long_messages_are_bounded_and_token_like_words_are_replaced() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJlc2lnbmF0dXJl";
        let body = serde_json::json!({
            "status": 401,
            "message": format!("Token {jwt} has expired; id 019ed0c7-f14d-7cae-8dc6-ff8d01d617e4"),
        })
        .to_string();
        let (_, _, answer_body) = answer(401, &body).await;
        let message = answer_body["error"]["message"].as_str().unwrap();
        assert!(!message.contains("eyJ"), "{message}");
        assert_eq!(
            message,
            "Token [redacted] has expired; id 019ed0c7-f14d-7cae-8dc6-ff8d01d617e4"
        );

        let long = "слово ".repeat(1000);
        let body = serde_json::json!({"status": 422, "message": long}).to_string();
        let (_, _, answer_body) = answer(422, &body).await;
        let message = answer_body["error"]["message"].as_str().unwrap();
        assert!(
            message.chars().count() <= MESSAGE_MAX_CHARS + 1,
            "{}",
            message.len()
        );
        assert!(message.ends_with('…'));
    }

    #[test]
    fn control_characters_do_not_pass() {
        assert_eq!(safe_message("a\nb\u{0}c"), "a b c");
    }
}
