//! v2 "primary" chat: `messages[].content` is a list of parts, samplers
//! live in `model_options`, and streams use named events.

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value};

use super::reply::{echo, finish_text, pieces};
use super::validate::{
    chat_model, check_sampling, invalid, max_tokens, messages, parse_object, role_of, stream_flag,
};
use super::{ChatError, Plan, Reply, to_bytes};
use crate::models;
use crate::sse::named_event;
use crate::util::count_tokens;

const V2_ROLES: [&str; 4] = ["system", "user", "assistant", "tool"];

/// Validates a v2 request (`messages[].content` is a list of parts,
/// samplers live in `model_options`).
pub(crate) fn plan_v2(body: &[u8]) -> Result<Plan, ChatError> {
    let obj = parse_object(body)?;
    let model = chat_model(&obj)?;
    let msgs = messages(&obj)?;
    let mut prompt_text = String::new();
    let mut last_user = String::new();
    for (idx, msg) in msgs.iter().enumerate() {
        if !msg.is_object() {
            return Err(invalid(format!("messages[{idx}] must be an object")));
        }
        let role = role_of(msg, &V2_ROLES, idx)?;
        let text = match msg.get("content") {
            None | Some(Value::Null) => String::new(),
            // Lenient: a bare string is taken as one text part.
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => {
                let mut text = String::new();
                for part in parts {
                    if !part.is_object() {
                        return Err(invalid(format!(
                            "messages[{idx}].content parts must be objects"
                        )));
                    }
                    if let Some(t) = part.get("text").and_then(Value::as_str) {
                        text.push_str(t);
                    }
                }
                text
            }
            Some(_) => {
                return Err(invalid(format!("messages[{idx}].content must be an array")));
            }
        };
        prompt_text.push_str(&text);
        if role == "user" {
            last_user = text;
        }
    }
    let options = match obj.get("model_options") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(o)) => o.clone(),
        Some(_) => return Err(invalid("model_options must be an object")),
    };
    check_sampling(&options)?;
    let max_tokens = max_tokens(&options)?;
    let stream = stream_flag(&obj)?;
    let (reply, finish_reason, completion_tokens) = finish_text(echo(&last_user), max_tokens);
    Ok(Plan {
        model,
        stream,
        reply,
        finish_reason,
        prompt_tokens: count_tokens(&prompt_text),
        completion_tokens,
    })
}

// ---- v2 wire types. ----

#[derive(Serialize)]
struct V2Text<'a> {
    text: &'a str,
}

#[derive(Serialize)]
struct V2Message<'a> {
    role: &'static str,
    content: [V2Text<'a>; 1],
}

#[derive(Serialize)]
struct V2InputDetails {
    prompt_tokens: u64,
    cached_tokens: u64,
}

#[derive(Serialize)]
struct V2Usage {
    input_tokens: u64,
    input_tokens_details: V2InputDetails,
    output_tokens: u64,
    total_tokens: u64,
}

#[derive(Serialize)]
struct V2Response<'a> {
    model: &'a str,
    created_at: u64,
    messages: [V2Message<'a>; 1],
    finish_reason: &'a str,
    usage: V2Usage,
}

#[derive(Serialize)]
struct V2Delta<'a> {
    model: &'a str,
    created_at: u64,
    messages: [V2Message<'a>; 1],
}

#[derive(Serialize)]
struct V2Done<'a> {
    model: &'a str,
    created_at: u64,
    finish_reason: &'a str,
    usage: V2Usage,
}

fn v2_usage(plan: &Plan) -> V2Usage {
    V2Usage {
        input_tokens: plan.prompt_tokens,
        input_tokens_details: V2InputDetails {
            prompt_tokens: plan.prompt_tokens,
            cached_tokens: 0,
        },
        output_tokens: plan.completion_tokens,
        total_tokens: plan.total_tokens(),
    }
}

fn reply_text(plan: &Plan) -> &str {
    match &plan.reply {
        Reply::Text(t) => t,
        Reply::FunctionCall { .. } => "",
    }
}

pub(crate) fn v2_body(plan: &Plan, created: u64) -> Vec<u8> {
    let model = models::versioned(&plan.model);
    to_bytes(&V2Response {
        model: &model,
        created_at: created,
        messages: [V2Message {
            role: "assistant",
            content: [V2Text {
                text: reply_text(plan),
            }],
        }],
        finish_reason: plan.finish_reason,
        usage: v2_usage(plan),
    })
}

/// v2 streams use named events and end with `response.message.done`; there
/// is no `[DONE]` terminator.
pub(crate) fn v2_events(plan: &Plan, created: u64) -> Vec<Bytes> {
    let model = models::versioned(&plan.model);
    let mut events: Vec<Bytes> = pieces(reply_text(plan))
        .into_iter()
        .map(|piece| {
            named_event(
                "response.message.delta",
                &to_bytes(&V2Delta {
                    model: &model,
                    created_at: created,
                    messages: [V2Message {
                        role: "assistant",
                        content: [V2Text { text: piece }],
                    }],
                }),
            )
        })
        .collect();
    events.push(named_event(
        "response.message.done",
        &to_bytes(&V2Done {
            model: &model,
            created_at: created,
            finish_reason: plan.finish_reason,
            usage: v2_usage(plan),
        }),
    ));
    events
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use http::StatusCode;

    use super::*;

    #[test]
    fn v2_shapes() {
        let p = plan_v2(br#"{"model":"GigaChat-3-Ultra","messages":[{"role":"user","content":[{"text":"hi"}]}],"model_options":{"temperature":0.5}}"#).unwrap();
        let body = String::from_utf8(v2_body(&p, 1780321855)).unwrap();
        assert_eq!(
            body,
            r#"{"model":"GigaChat-3-Ultra:emulator","created_at":1780321855,"messages":[{"role":"assistant","content":[{"text":"Echo: hi"}]}],"finish_reason":"stop","usage":{"input_tokens":1,"input_tokens_details":{"prompt_tokens":1,"cached_tokens":0},"output_tokens":2,"total_tokens":3}}"#
        );
        let events = v2_events(&p, 7);
        assert_eq!(events.len(), 3);
        assert_eq!(
            &events[0][..],
            &b"event: response.message.delta\ndata: {\"model\":\"GigaChat-3-Ultra:emulator\",\"created_at\":7,\"messages\":[{\"role\":\"assistant\",\"content\":[{\"text\":\"Echo: \"}]}]}\n\n"[..]
        );
        assert!(events[2].starts_with(b"event: response.message.done\ndata: {"));
        assert!(!events.iter().any(|e| e.windows(6).any(|w| w == b"[DONE]")));
        let e = plan_v2(br#"{"model":"GigaChat","messages":[{"role":"user","content":[{"text":"x"}]}],"model_options":{"temperature":0}}"#).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
    }
}
