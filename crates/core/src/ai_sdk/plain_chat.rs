//! The common `useChat` request — `{id, messages, trigger, messageId?}`
//! whose messages hold only text parts — translated without a JSON tree:
//! read into borrowed structs, written straight as GigaChat's body.
//!
//! The general translation parses the body into a `serde_json::Value`,
//! rewrites it as a second tree (a Chat Completions request), translates
//! that into a third (GigaChat's body) and serialises it: more CPU than the
//! rest of a streamed answer's request side together. Anything this shape
//! does not cover — a body option (`model`, `system`, `tools`, …), another
//! part type, another message or part field, a duplicated key (which
//! serde's derive refuses, while the general path keeps the last), an
//! array where an object belongs — is left to the general translation
//! (`request::translate`), so the fast path only answers where that one
//! answers the same: the bytes written here are the ones it serialises
//! (the tests and the fuzz target compare the two).

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::UiPlan;
use crate::openai::config::OpenAiConfig;
use crate::openai::plain_chat::Object;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainUiRequest<'a> {
    #[serde(borrow)]
    messages: Vec<Object<PlainUiMessage<'a>>>,
    /// Read by the SDK's own server helpers, not by the translation: only
    /// checked to be JSON the general path would also accept.
    #[serde(default, rename = "id")]
    _id: Option<Skipped>,
    #[serde(default, rename = "trigger")]
    _trigger: Option<Skipped>,
    #[serde(default, rename = "messageId")]
    _message_id: Option<Skipped>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainUiMessage<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
    #[serde(borrow)]
    parts: Vec<Object<TextPart<'a>>>,
    #[serde(default, rename = "id")]
    _id: Option<Skipped>,
    #[serde(default, rename = "metadata")]
    _metadata: Option<Skipped>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TextPart<'a> {
    #[serde(borrow, rename = "type")]
    part_type: Cow<'a, str>,
    #[serde(borrow)]
    text: Cow<'a, str>,
    /// `streaming` or `done` while the SDK builds the message: the text is
    /// what counts.
    #[serde(default, rename = "state")]
    _state: Option<Skipped>,
    #[serde(default, rename = "providerMetadata")]
    _provider_metadata: Option<Skipped>,
}

/// A value read and dropped, checked as strictly as a `Value` is read
/// (numbers in range, strings valid UTF-8 without lone surrogates):
/// `IgnoredAny` skips without those checks, so a body the general path
/// refuses as invalid JSON could pass here.
struct Skipped;

impl<'de> Deserialize<'de> for Skipped {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SkippedVisitor)
    }
}

struct SkippedVisitor;

impl<'de> Visitor<'de> for SkippedVisitor {
    type Value = Skipped;
    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Skipped, E> {
        Ok(Skipped)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Skipped, E> {
        Ok(Skipped)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Skipped, E> {
        Ok(Skipped)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Skipped, E> {
        Ok(Skipped)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Skipped, E> {
        Ok(Skipped)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Skipped, E> {
        Ok(Skipped)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skipped, A::Error> {
        while seq.next_element::<Skipped>()?.is_some() {}
        Ok(Skipped)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skipped, A::Error> {
        while map.next_key::<Skipped>()?.is_some() {
            map.next_value::<Skipped>()?;
        }
        Ok(Skipped)
    }
}

/// A message of GigaChat's body: (role, content).
type MessageOut<'a> = (&'static str, Cow<'a, str>);

/// GigaChat's body and the answer's plan for a plain `useChat` request;
/// `None` when the request is not plain (or not valid), for the general
/// translation to read or refuse. `system_prompt` is the operator's, first
/// as on the general path.
pub(crate) fn translate(
    bytes: &[u8],
    config: &OpenAiConfig,
    system_prompt: Option<&str>,
) -> Option<(Bytes, UiPlan)> {
    let Object(request) = serde_json::from_slice::<Object<PlainUiRequest<'_>>>(bytes).ok()?;
    if request.messages.is_empty() {
        return None;
    }
    // Leading system text becomes the one system message GigaChat takes,
    // first; a system message after the conversation started is read as
    // the user's (the Chat Completions translation's rule).
    let mut system: Vec<Cow<'_, str>> = Vec::new();
    if let Some(prompt) = system_prompt.filter(|prompt| !prompt.trim().is_empty()) {
        system.push(Cow::Borrowed(prompt));
    }
    let mut messages: Vec<MessageOut<'_>> = Vec::with_capacity(request.messages.len() + 1);
    let mut leading = true;
    let mut carried = false;
    for Object(message) in &request.messages {
        let mut texts = Vec::with_capacity(message.parts.len());
        for Object(part) in &message.parts {
            if part.part_type != "text" {
                return None;
            }
            texts.push(part.text.as_ref());
        }
        match message.role.as_ref() {
            // System and assistant text parts are joined as they are
            // (the AI SDK's way), a user's with a line break (a content
            // array's, in the Chat Completions translation).
            "system" => {
                let text = joined(&texts, "");
                if text.is_empty() {
                    continue;
                }
                carried = true;
                if leading {
                    system.push(text);
                } else {
                    messages.push(("user", text));
                }
            }
            "user" => {
                if texts.is_empty() {
                    continue;
                }
                carried = true;
                leading = false;
                messages.push(("user", joined(&texts, "\n")));
            }
            "assistant" => {
                let text = joined(&texts, "");
                if text.is_empty() {
                    continue;
                }
                carried = true;
                leading = false;
                messages.push(("assistant", text));
            }
            _ => return None,
        }
    }
    // Nothing a model could read: the general path's refusal.
    if !carried {
        return None;
    }
    if !system.is_empty() {
        messages.insert(0, ("system", joined(&system, "\n\n")));
    }
    let model = config.gigachat_model(None);
    // GigaChat's body is about as long as the request: written without
    // regrowing. Keys in the order the general path's map serialises them
    // (sorted), strings escaped by the same serialiser.
    let mut out = Vec::with_capacity(bytes.len() + 64);
    out.extend_from_slice(b"{\"messages\":[");
    for (index, (role, content)) in messages.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"content\":");
        serde_json::to_writer(&mut out, content.as_ref()).ok()?;
        out.extend_from_slice(b",\"role\":\"");
        out.extend_from_slice(role.as_bytes());
        out.extend_from_slice(b"\"}");
    }
    out.extend_from_slice(b"],\"model\":");
    serde_json::to_writer(&mut out, model).ok()?;
    out.extend_from_slice(b",\"stream\":true}");
    let plan = UiPlan {
        model: config.default_model.clone(),
        renamed_tools: Vec::new(),
    };
    Some((Bytes::from(out), plan))
}

/// `texts` joined by `separator`, borrowed when there is one.
fn joined<'a>(
    texts: &[impl AsRef<str> + Into<Cow<'a, str>> + Clone],
    separator: &str,
) -> Cow<'a, str> {
    match texts {
        [] => Cow::Borrowed(""),
        [one] => one.clone().into(),
        _ => {
            let mut text = String::new();
            for (index, piece) in texts.iter().enumerate() {
                if index > 0 {
                    text.push_str(separator);
                }
                text.push_str(piece.as_ref());
            }
            Cow::Owned(text)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::{Value, json};

    /// The general translation's body and plan, or `None` where it refuses.
    fn general(
        request: &[u8],
        config: &OpenAiConfig,
        prompt: Option<&str>,
    ) -> Option<(Bytes, UiPlan)> {
        let value: Value = serde_json::from_slice(request).ok()?;
        let (chat, plan) = super::super::request::translate(&value, config, prompt).ok()?;
        assert!(chat.uploads.is_empty());
        Some((Bytes::from(serde_json::to_vec(&chat.body).unwrap()), plan))
    }

    /// Where the fast path answers, the general translation answers the
    /// same bytes and plan; whether the fast path answered.
    fn same_as_general(request: &[u8], config: &OpenAiConfig, prompt: Option<&str>) -> bool {
        let Some((fast, fast_plan)) = translate(request, config, prompt) else {
            return false;
        };
        let (slow, slow_plan) = general(request, config, prompt).unwrap_or_else(|| {
            panic!(
                "the fast path took a request the general translation refuses: {}",
                String::from_utf8_lossy(request)
            )
        });
        assert_eq!(
            String::from_utf8_lossy(&fast),
            String::from_utf8_lossy(&slow),
            "{} (prompt {prompt:?})",
            String::from_utf8_lossy(request)
        );
        assert_eq!(fast_plan, slow_plan);
        true
    }

    fn config() -> OpenAiConfig {
        OpenAiConfig {
            default_model: "GigaChat-2".into(),
            aliases: vec![("gpt-4o".into(), "GigaChat-2-Max".into())],
            ..OpenAiConfig::default()
        }
    }

    fn message(role: &str, texts: &[&str]) -> Value {
        let parts: Vec<Value> = texts
            .iter()
            .map(|text| json!({"type": "text", "text": text}))
            .collect();
        json!({"id": "m", "role": role, "parts": parts})
    }

    #[test]
    fn a_plain_chat_is_written_as_gigachat_reads_it() {
        let request =
            json!({"id": "c", "messages": [message("user", &["q"])], "trigger": "submit-message"});
        let (body, plan) = translate(request.to_string().as_bytes(), &config(), None).unwrap();
        assert_eq!(
            &body[..],
            br#"{"messages":[{"content":"q","role":"user"}],"model":"GigaChat-2","stream":true}"#
        );
        assert_eq!(plan.model, "GigaChat-2");
    }

    #[test]
    fn plain_chats_are_written_as_the_general_translation_writes_them() {
        let config = config();
        let hostile = "При\"вет\\\n\t\u{0}\u{1f}\u{7f}\u{2028}\u{2029}🦀</script>";
        let chats = [
            json!([message("user", &[hostile])]),
            json!([
                message("user", &["a", "", hostile]),
                message("assistant", &["o", "k"]),
                message("user", &[""])
            ]),
            json!([
                message("system", &["a", "b"]),
                message("system", &[""]),
                message("system", &["c"]),
                message("user", &[]),
                message("system", &["still leading"]),
                message("user", &["q"]),
                message("assistant", &["", ""]),
                message("system", &["late"]),
                message("assistant", &["x"]),
                message("system", &[]),
                message("user", &["y"])
            ]),
            json!([
                message("assistant", &["first"]),
                message("system", &["late"])
            ]),
            json!([message("system", &["only a system message"])]),
            json!([{"role": "user", "parts": [{"type": "text", "text": "q", "state": "done",
                   "providerMetadata": {"x": [1, 2.5, null, true, "\u{2028}"]}}],
                   "metadata": {"createdAt": 1}, "id": null}]),
        ];
        let bodies = [
            json!({}),
            json!({"id": "c", "trigger": "submit-message", "messageId": "m"}),
            json!({"id": null, "trigger": "regenerate-message", "messageId": null}),
            json!({"id": {"nested": [{"a": 1e300}]}, "trigger": 7}),
        ];
        let mut answered = 0;
        for chat in &chats {
            for body in &bodies {
                let mut request = body.clone();
                request["messages"] = chat.clone();
                let bytes = serde_json::to_vec(&request).unwrap();
                for prompt in [None, Some("rules\n"), Some(" \n"), Some(hostile)] {
                    assert!(same_as_general(&bytes, &config, prompt), "{request}");
                    answered += 1;
                }
            }
        }
        assert_eq!(answered, chats.len() * bodies.len() * 4);
        // Escapes in the request (read into owned strings), whitespace
        // around every token.
        for request in [
            &br#"{"messages":[{"role":"user","parts":[{"type":"text","text":"\u00e9\ud83e\udd80\"\/\b\f\r\u2028"}]}]}"#[..],
            br#" { "messages" : [ { "role" : "user" , "parts" : [ { "type" : "\u0074ext" , "text" : "" } ] } ] } "#,
            br#"{"messages":[{"role":"\u0073ystem","parts":[{"type":"text","text":"s"}]},{"role":"user","parts":[{"text":"a","type":"text"},{"text":"b","type":"text"}]}]}"#,
        ] {
            for prompt in [None, Some("rules")] {
                assert!(
                    same_as_general(request, &config, prompt),
                    "{}",
                    String::from_utf8_lossy(request)
                );
            }
        }
    }

    #[test]
    fn anything_else_is_left_to_the_general_translation() {
        let config = config();
        let user = r#"{"role":"user","parts":[{"type":"text","text":"a"}]}"#;
        let requests = [
            // Duplicated keys: serde's derive refuses them, the general
            // path keeps the last (as GigaChat does).
            format!(r#"{{"messages":[{user}],"messages":[{user},{user}]}}"#),
            format!(r#"{{"messages":[{user}],"id":"a","id":"b"}}"#),
            r#"{"messages":[{"role":"system","role":"user","parts":[{"type":"text","text":"a"}]}]}"#.into(),
            r#"{"messages":[{"role":"user","parts":[{"type":"text","text":"a","text":"b"}]}]}"#.into(),
            r#"{"messages":[{"role":"user","parts":[{"type":"data-x","type":"text","text":"a"}]}]}"#.into(),
            // Body options the general path reads, even as null.
            format!(r#"{{"messages":[{user}],"model":"gpt-4o"}}"#),
            format!(r#"{{"messages":[{user}],"model":null}}"#),
            format!(r#"{{"messages":[{user}],"system":"s"}}"#),
            format!(r#"{{"messages":[{user}],"temperature":0}}"#),
            format!(r#"{{"messages":[{user}],"maxOutputTokens":10}}"#),
            format!(r#"{{"messages":[{user}],"tools":{{}}}}"#),
            format!(r#"{{"messages":[{user}],"toolChoice":"auto"}}"#),
            format!(r#"{{"messages":[{user}],"extra":1}}"#),
            // Other parts and fields.
            r#"{"messages":[{"role":"user","parts":[{"type":"file","mediaType":"image/png","url":"data:image/png;base64,AAAA"}]}]}"#.into(),
            r#"{"messages":[{"role":"user","parts":[{"type":"text","text":"a"},{"type":"data-x","data":1}]}]}"#.into(),
            r#"{"messages":[{"role":"assistant","parts":[{"type":"step-start"},{"type":"text","text":"a"}]}]}"#.into(),
            r#"{"messages":[{"role":"assistant","parts":[{"type":"reasoning","text":"hm"},{"type":"text","text":"a"}]}]}"#.into(),
            r#"{"messages":[{"role":"user","content":"a","parts":[{"type":"text","text":"a"}]}]}"#.into(),
            r#"{"messages":[{"role":"user","parts":[{"type":"text","text":"a","extra":1}]}]}"#.into(),
            // Arrays where the general path wants objects.
            format!(r#"[[{user}]]"#),
            r#"{"messages":[["user",[{"type":"text","text":"a"}]]]}"#.into(),
            r#"{"messages":[{"role":"user","parts":[["text","a"]]}]}"#.into(),
            // JSON the general path refuses to read at all.
            format!(r#"{{"messages":[{user}],"id":1e400}}"#),
            format!(r#"{{"messages":[{user}],"id":"\ud800"}}"#),
            format!(r#"{{"messages":[{user}],"id":{{"a":[1e999]}}}}"#),
            format!(r#"{{"messages":[{user}]}} x"#),
            // Requests the general path refuses, with its own message.
            r#"{"messages":[]}"#.into(),
            r#"{"messages":[{"role":"user","parts":[]}]}"#.into(),
            r#"{"messages":[{"role":"assistant","parts":[{"type":"text","text":""}]}]}"#.into(),
            r#"{"messages":[{"role":"tool","parts":[{"type":"text","text":"a"}]}]}"#.into(),
            r#"{"messages":[{"role":"user","parts":[{"type":"text","text":5}]}]}"#.into(),
            r#"{"messages":[{"role":"user","parts":[{"type":"text","text":null}]}]}"#.into(),
            r#"{"messages":[{"role":null,"parts":[{"type":"text","text":"a"}]}]}"#.into(),
            r#"{"messages":[{"role":"user","parts":null}]}"#.into(),
            r#"{"messages":null}"#.into(),
        ];
        for request in &requests {
            for prompt in [None, Some("rules")] {
                assert!(
                    translate(request.as_bytes(), &config, prompt).is_none(),
                    "{request}"
                );
            }
        }
        // What the general path makes of a duplicated key: the last wins.
        let (body, _) = general(
            br#"{"messages":[{"role":"user","parts":[{"type":"text","text":"a","text":"b"}]}]}"#,
            &config,
            None,
        )
        .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap()["messages"][0]["content"],
            "b"
        );
        // Out-of-range numbers and lone surrogates are not JSON to it.
        for request in &requests[22..25] {
            assert!(
                serde_json::from_slice::<Value>(request.as_bytes()).is_err(),
                "{request}"
            );
        }
    }
}
