//! The cache key: which requests are one entry, and which answers an entry
//! may hold.
//!
//! The key is a SHA-256 over the proxy's credential fingerprint, the scope
//! (`global` or the identity), the method, the resolved upstream URL (so
//! `models` and `v1/models` are one entry, while `v1/` and `v2/` chat stay
//! apart) and the request body in canonical JSON (keys sorted, no
//! whitespace), so the same request written differently is the same entry.

use std::time::Duration;

use http::{HeaderMap, header};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Which answers a key may store, and for how long.
pub(crate) struct CacheKey {
    pub(super) digest: [u8; 32],
    pub(super) ttl: Duration,
    pub(super) kind: Kind,
}

impl CacheKey {
    /// `fields` are the proxy's credential fingerprint, the scope, the
    /// method, the upstream URL and the canonical body, in that order.
    pub(super) fn new(kind: Kind, ttl: Duration, fields: [&[u8]; 5]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"gigachat-proxy response cache v1\0");
        for field in fields {
            // Length-prefixed, so no two different tuples hash alike.
            hasher.update((field.len() as u64).to_be_bytes());
            hasher.update(field);
        }
        Self {
            digest: hasher.finalize().into(),
            ttl,
            kind,
        }
    }
}

/// The shape of answer a key stores, which decides when it is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Models,
    ChatV1,
    ChatV2,
}

impl Kind {
    /// Whether a 200 JSON answer is complete enough to be replayed.
    pub(super) fn accepts(self, body: &[u8]) -> bool {
        #[derive(Deserialize)]
        struct V1 {
            choices: Vec<Choice>,
        }
        #[derive(Deserialize)]
        struct Choice {
            finish_reason: Option<String>,
        }
        #[derive(Deserialize)]
        struct V2 {
            finish_reason: Option<String>,
        }
        match self {
            Kind::Models => serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok(),
            Kind::ChatV1 => serde_json::from_slice::<V1>(body).is_ok_and(|answer| {
                !answer.choices.is_empty()
                    && answer
                        .choices
                        .iter()
                        .all(|c| c.finish_reason.as_deref() == Some("stop"))
            }),
            Kind::ChatV2 => serde_json::from_slice::<V2>(body)
                .is_ok_and(|answer| answer.finish_reason.as_deref() == Some("stop")),
        }
    }
}

/// The chat request in canonical JSON, or `None` when it must not be
/// cached: not declared JSON, not a JSON object, or asking to stream (any
/// `stream` other than `false`/`null`: a streamed answer is never cached,
/// and an odd value is GigaChat's to judge).
pub(super) fn canonical_chat_body(headers: &HeaderMap, body: &[u8]) -> Option<Vec<u8>> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if !is_json {
        return None;
    }
    let value: Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object()?;
    if !matches!(
        object.get("stream"),
        None | Some(Value::Null | Value::Bool(false))
    ) {
        return None;
    }
    let mut out = Vec::with_capacity(body.len());
    write_canonical(&value, &mut out);
    Some(out)
}

/// Compact JSON with object keys sorted, whatever order serde_json's `Map`
/// keeps (with its `preserve_order` feature it would keep the client's).
/// Depth is bounded by serde_json's recursion limit on parsing.
fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut fields: Vec<(&String, &Value)> = map.iter().collect();
            fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (n, (name, field)) in fields.into_iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(Value::String(name.clone()).to_string().as_bytes());
                out.push(b':');
                write_canonical(field, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => out.extend_from_slice(scalar.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn headers(json: bool) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if json {
            headers.insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
        }
        headers
    }

    #[test]
    fn canonical_json_ignores_key_order_and_whitespace() {
        let headers = headers(true);
        let a = canonical_chat_body(
            &headers,
            br#"{"model":"GigaChat","messages":[{"role":"user","content":"hi \"x\""}],"temperature":0.5}"#,
        )
        .unwrap();
        let b = canonical_chat_body(
            &headers,
            b"{ \"temperature\" : 0.5,\n \"messages\": [ {\"content\":\"hi \\\"x\\\"\", \"role\":\"user\"} ],\"model\":\"GigaChat\" }",
        )
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(
            String::from_utf8(a).unwrap(),
            r#"{"messages":[{"content":"hi \"x\"","role":"user"}],"model":"GigaChat","temperature":0.5}"#
        );
    }

    #[test]
    fn streaming_odd_and_non_json_requests_are_not_cacheable() {
        let json = headers(true);
        assert!(canonical_chat_body(&json, br#"{"stream":true}"#).is_none());
        assert!(canonical_chat_body(&json, br#"{"stream":"yes"}"#).is_none());
        assert!(canonical_chat_body(&json, br#"{"stream":false}"#).is_some());
        assert!(canonical_chat_body(&json, br#"{"stream":null}"#).is_some());
        assert!(canonical_chat_body(&json, b"[1]").is_none());
        assert!(canonical_chat_body(&json, b"{not json").is_none());
        let form = headers(false);
        assert!(canonical_chat_body(&form, br#"{"model":"x"}"#).is_none());
    }

    #[test]
    fn only_complete_answers_are_accepted() {
        let stop = br#"{"choices":[{"message":{"content":"x"},"index":0,"finish_reason":"stop"}]}"#;
        assert!(Kind::ChatV1.accepts(stop));
        for reason in ["length", "blacklist", "error", "function_call"] {
            let body = format!(r#"{{"choices":[{{"index":0,"finish_reason":"{reason}"}}]}}"#);
            assert!(!Kind::ChatV1.accepts(body.as_bytes()), "{reason}");
        }
        let mixed = br#"{"choices":[{"finish_reason":"stop"},{"finish_reason":"length"}]}"#;
        assert!(!Kind::ChatV1.accepts(mixed));
        assert!(!Kind::ChatV1.accepts(br#"{"choices":[]}"#));
        assert!(!Kind::ChatV1.accepts(br#"{"status":429,"message":"x"}"#));
        assert!(Kind::ChatV2.accepts(br#"{"messages":[],"finish_reason":"stop"}"#));
        assert!(!Kind::ChatV2.accepts(br#"{"messages":[],"finish_reason":"length"}"#));
        assert!(Kind::Models.accepts(br#"{"object":"list","data":[]}"#));
        assert!(!Kind::Models.accepts(b"{truncated"));
    }
}
