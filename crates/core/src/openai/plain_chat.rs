//! The common Chat Completions request — text messages of the system,
//! developer, user and assistant roles, and a few sampling options —
//! translated without a JSON tree: read into borrowed structs, written
//! straight as GigaChat's body.
//!
//! Most calls through the OpenAI route are this plain, and building a
//! `serde_json::Value` of the request, a second one of GigaChat's body and
//! serialising that cost more than the rest of the route together. Anything
//! this shape does not cover — another field, a content array, a tool
//! message, `null` content, a duplicated key (which serde's derive refuses)
//! — is left to the full translation (`request::translate`), so the fast
//! path only ever answers where the full translation would answer the
//! same: the bytes it writes are the ones the full translation serialises
//! (the fuzz target and the tests compare the two).

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use bytes::Bytes;
use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Number;

use super::ChatPlan;
use super::config::OpenAiConfig;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainRequest<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow)]
    messages: Vec<Object<PlainMessage<'a>>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    temperature: Option<Number>,
    #[serde(default)]
    top_p: Option<Number>,
    /// Numbers as written: the full translation sends them on as read.
    #[serde(default)]
    max_tokens: Option<Number>,
    #[serde(default)]
    max_completion_tokens: Option<Number>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainMessage<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
    #[serde(borrow)]
    content: Cow<'a, str>,
}

/// A struct read only from a JSON object: serde's derive also reads a
/// struct from an array (its fields by position), which the general path
/// refuses.
pub(crate) struct Object<T>(pub(crate) T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = Object<T>;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Object<T>, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(Object)
            }
        }
        deserializer.deserialize_map(ObjectVisitor(PhantomData))
    }
}

/// GigaChat's body, its keys in the order the full translation's map
/// serialises them (sorted).
#[derive(Serialize)]
struct GigaChatBody<'r> {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<&'r Number>,
    messages: Vec<MessageOut<'r>>,
    model: &'r str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<&'r Number>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<Number>,
}

#[derive(Serialize)]
struct MessageOut<'r> {
    content: Cow<'r, str>,
    role: &'static str,
}

/// GigaChat's body and the answer's plan for a plain request; `None` when
/// the request is not plain (or not valid), for the full translation to
/// read or refuse.
pub(crate) fn translate(bytes: &[u8], config: &OpenAiConfig) -> Option<(Bytes, ChatPlan)> {
    let Object(request): Object<PlainRequest<'_>> = serde_json::from_slice(bytes).ok()?;
    if request.messages.is_empty() {
        return None;
    }
    // Leading system (and developer) messages become the one system
    // message GigaChat takes, first; a later one is read as the user's.
    let mut system: Vec<&str> = Vec::new();
    let mut messages = Vec::with_capacity(request.messages.len() + 1);
    let mut leading = true;
    for Object(message) in &request.messages {
        let content = message.content.as_ref();
        match message.role.as_ref() {
            "system" | "developer" if leading => {
                if !content.is_empty() {
                    system.push(content);
                }
            }
            "system" | "developer" | "user" => {
                leading = false;
                messages.push(MessageOut {
                    content: Cow::Borrowed(content),
                    role: "user",
                });
            }
            "assistant" => {
                leading = false;
                if !content.is_empty() {
                    messages.push(MessageOut {
                        content: Cow::Borrowed(content),
                        role: "assistant",
                    });
                }
            }
            _ => return None,
        }
    }
    if !system.is_empty() {
        messages.insert(
            0,
            MessageOut {
                content: Cow::Owned(system.join("\n\n")),
                role: "system",
            },
        );
    }
    // `temperature: 0` (deterministic, which GigaChat refuses as a
    // temperature) becomes `top_p: 0`.
    let mut top_p = request.top_p.clone();
    let mut temperature = None;
    if let Some(value) = &request.temperature {
        match value.as_f64() {
            Some(0.0) => top_p = Some(Number::from(0u8)),
            Some(t) if t > 0.0 => temperature = Some(value),
            _ => return None,
        }
    }
    // `max_completion_tokens` is the newer name of `max_tokens`, which wins
    // when both are sent; both must be counts.
    let counts = [&request.max_tokens, &request.max_completion_tokens];
    if counts
        .iter()
        .any(|count| count.as_ref().is_some_and(|n| n.as_u64().is_none()))
    {
        return None;
    }
    let requested_model = request.model.as_deref();
    let body = GigaChatBody {
        max_tokens: request
            .max_tokens
            .as_ref()
            .or(request.max_completion_tokens.as_ref()),
        messages,
        model: config.gigachat_model(requested_model),
        stream: request.stream.unwrap_or(false),
        temperature,
        top_p,
    };
    // GigaChat's body is about as long as the request: written without
    // regrowing.
    let mut out = Vec::with_capacity(bytes.len() + 64);
    serde_json::to_writer(&mut out, &body).ok()?;
    let plan = ChatPlan {
        model: requested_model
            .filter(|model| !model.is_empty())
            .unwrap_or(&config.default_model)
            .to_owned(),
        ..ChatPlan::default()
    };
    Some((Bytes::from(out), plan))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::{Value, json};

    /// The full translation's body and plan, or `None` where it refuses.
    fn full(request: &[u8], config: &OpenAiConfig) -> Option<(Bytes, ChatPlan)> {
        let value: Value = serde_json::from_slice(request).ok()?;
        let chat = crate::openai::request::translate(&value, config).ok()?;
        assert!(chat.uploads.is_empty());
        Some((
            Bytes::from(serde_json::to_vec(&chat.body).unwrap()),
            chat.plan,
        ))
    }

    /// Where the fast path answers, the full translation answers the same
    /// bytes and plan.
    pub(crate) fn assert_same_as_full(request: &[u8], config: &OpenAiConfig) -> bool {
        let Some((fast, fast_plan)) = translate(request, config) else {
            return false;
        };
        let (slow, slow_plan) = full(request, config).unwrap_or_else(|| {
            panic!(
                "the fast path took a request the full translation refuses: {}",
                String::from_utf8_lossy(request)
            )
        });
        assert_eq!(
            String::from_utf8_lossy(&fast),
            String::from_utf8_lossy(&slow),
            "{}",
            String::from_utf8_lossy(request)
        );
        assert_eq!(format!("{fast_plan:?}"), format!("{slow_plan:?}"));
        true
    }

    fn config() -> OpenAiConfig {
        OpenAiConfig {
            default_model: "GigaChat-2".into(),
            aliases: vec![("gpt-4o".into(), "GigaChat-2-Max".into())],
            ..OpenAiConfig::default()
        }
    }

    #[test]
    fn plain_requests_are_written_as_the_full_translation_writes_them() {
        let config = config();
        let user = json!({"role": "user", "content": "При\"вет\n\u{2028}"});
        let messages = [
            json!([user]),
            json!([{"role": "system", "content": "a"}, {"role": "developer", "content": ""},
                   {"role": "developer", "content": "b"}, user, {"role": "assistant", "content": ""},
                   {"role": "assistant", "content": "ok"}, {"role": "system", "content": ""}, user]),
            json!([{"role": "system", "content": ""}]),
            json!([{"role": "assistant", "content": "first"}, {"role": "system", "content": "late"}]),
        ];
        let options = [
            json!({}),
            json!({"model": "gpt-4o", "stream": true}),
            json!({"model": "", "stream": false, "temperature": 0, "top_p": 0.5}),
            json!({"model": null, "stream": null, "temperature": null, "top_p": null, "max_tokens": null}),
            json!({"temperature": 0.70, "top_p": 1, "max_tokens": 10, "max_completion_tokens": 20}),
            json!({"temperature": 1, "max_completion_tokens": 20}),
            json!({"temperature": -0.0}),
            json!({"temperature": 1e-300, "top_p": -0.0, "max_tokens": 0}),
            json!({"model": "GigaChat-2-Max", "max_tokens": 18446744073709551615u64}),
        ];
        for messages in &messages {
            for options in &options {
                let mut request = options.clone();
                request["messages"] = messages.clone();
                let bytes = serde_json::to_vec(&request).unwrap();
                assert!(assert_same_as_full(&bytes, &config), "{request}");
            }
        }
    }

    #[test]
    fn anything_else_is_left_to_the_full_translation() {
        let config = config();
        for request in [
            // Duplicated keys: serde's derive refuses them, the full
            // translation keeps the last (as GigaChat does).
            &br#"{"messages":[{"role":"user","content":"a"}],"model":"x","model":"y"}"#[..],
            br#"{"messages":[{"role":"user","content":"a","content":"b"}]}"#,
            br#"{"messages":[{"role":"user","content":"a"}],"messages":[]}"#,
            // Fields and shapes the fast path does not read.
            br#"{"messages":[{"role":"user","content":"a"}],"n":1}"#,
            br#"{"messages":[{"role":"user","content":"a"}],"stream_options":{"include_usage":true}}"#,
            br#"{"messages":[{"role":"user","content":"a"}],"stop":"x"}"#,
            br#"{"messages":[{"role":"user","content":"a","name":"bob"}]}"#,
            br#"{"messages":[{"role":"user","content":[{"type":"text","text":"a"}]}]}"#,
            br#"{"messages":[{"role":"user","content":null}]}"#,
            br#"{"messages":[{"role":"tool","content":"a"}]}"#,
            // Requests the full translation refuses, with its own message.
            br#"{"messages":[]}"#,
            br#"{"messages":[{"role":"robot","content":"a"}]}"#,
            br#"{"messages":[{"role":"user","content":"a"}],"temperature":-1}"#,
            br#"{"messages":[{"role":"user","content":"a"}],"max_tokens":1.5}"#,
            br#"{"messages":[{"role":"user","content":"a"}],"max_tokens":-0}"#,
            br#"{"messages":[{"role":"user","content":"a"}],"max_completion_tokens":-1}"#,
            br#"{"messages":[{"role":"user","content":"a"}],"stream":"yes"}"#,
            br#"{"messages":[{"role":"user","content":"a"}]} x"#,
            br#"[{"role":"user","content":"a"}]"#,
            // Arrays where objects belong: serde's derive would read a
            // struct from one by position; the full translation refuses.
            br#"[null,[{"role":"user","content":"a"}]]"#,
            br#"{"messages":[["user","a"]]}"#,
        ] {
            assert!(
                translate(request, &config).is_none(),
                "{}",
                String::from_utf8_lossy(request)
            );
        }
        // The duplicated key's full translation is unchanged: the last wins.
        let (body, _) = full(
            br#"{"messages":[{"role":"user","content":"a"}],"model":"x","model":"y"}"#,
            &config,
        )
        .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap()["model"],
            "y"
        );
    }
}
