//! GigaChat's v1 chat stream as OpenAI's `chat.completion.chunk` stream,
//! chunk by chunk as it arrives.
//!
//! What OpenAI's clients insist on, and GigaChat's stream does not give:
//! an `id` on every chunk, `delta.role` only ever `"assistant"`, tool calls
//! with an `index`, an `id` and string arguments, `choices` always an array,
//! a `finish_reason` somewhere, usage exactly once (LangChain adds up every
//! usage it sees), `data: [DONE]` last, and an error event rather than a
//! stream that just stops. The stream's rules (finish, usage, errors,
//! breaking off) are the shared reader's (`gigachat_stream`); this is the
//! framing.
//!
//! Text is never held, except the few characters at its end that may be
//! the start of a `stop` string. A function call arrives whole in one
//! GigaChat chunk (its own, or the finish chunk) and goes out at once.

use std::borrow::Cow;

use bytes::{BufMut, BytesMut};
use serde::Serialize;

use super::ChatPlan;
use super::answer::{ToolCallOut, UsageOut, completion_id, first_stop, now, tool_call};
use super::errors::{client_status, upstream_code};
use super::gigachat::{self, ChatUsage};
use super::gigachat_stream::{Fault, Framing, GigaChatStream, Piece, Step};
use crate::error::openai_error_type;

/// The OpenAI chunk stream: GigaChat's stream read by the shared reader,
/// framed as `chat.completion.chunk`s.
pub(crate) type ChatChunks = GigaChatStream<ChatFraming>;

impl GigaChatStream<ChatFraming> {
    pub(crate) fn new(mut plan: ChatPlan, request_id: &str) -> Self {
        // An empty stop string would end every answer before it began;
        // OpenAI ignores one.
        plan.stop.retain(|stop| !stop.is_empty());
        GigaChatStream::reading(ChatFraming {
            plan,
            request_id: request_id.to_owned(),
            head: Vec::new(),
            role_sent: false,
            held: String::new(),
            calls: 0,
            structured: false,
        })
    }
}

pub(crate) struct ChatFraming {
    plan: ChatPlan,
    request_id: String,
    /// `{"id":…,"object":…,"created":…,"model":…,` — the start every chunk
    /// shares, written once when the first event says when it was created.
    head: Vec<u8>,
    role_sent: bool,
    /// Text not yet sent because its end may be the start of a stop string.
    held: String,
    /// Tool calls sent so far: the next one's `index`.
    calls: usize,
    /// The forced structured-output call came, as content.
    structured: bool,
}

impl ChatFraming {
    fn ensure_head(&mut self, created: Option<u64>) {
        if !self.head.is_empty() {
            return;
        }
        #[derive(Serialize)]
        struct Head<'a> {
            id: &'a str,
            object: &'static str,
            created: u64,
            model: &'a str,
        }
        let id = completion_id(&self.request_id);
        let head = Head {
            id: &id,
            object: "chat.completion.chunk",
            created: created.filter(|&created| created > 0).unwrap_or_else(now),
            model: &self.plan.model,
        };
        let mut bytes = serde_json::to_vec(&head).unwrap_or_default();
        // `{…}` becomes `{…,` for the chunk's own fields to follow.
        if bytes.pop() == Some(b'}') {
            bytes.push(b',');
            self.head = bytes;
        }
    }

    /// One `data:` line: the shared head, `choices` (one or none) and the
    /// usage field.
    fn write_chunk(&self, out: &mut BytesMut, choice: Option<&ChoiceOut<'_>>, usage: UsageField) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&self.head);
        out.extend_from_slice(b"\"choices\":[");
        if let Some(choice) = choice {
            put_json(out, choice);
        }
        out.extend_from_slice(b"]");
        match usage {
            UsageField::Omitted => {}
            UsageField::Null => out.extend_from_slice(b",\"usage\":null"),
            UsageField::Some(usage) => {
                out.extend_from_slice(b",\"usage\":");
                put_json(out, &UsageOut::from(usage));
            }
        }
        out.extend_from_slice(b"}\n\n");
    }

    /// The usage field of a chunk that does not carry the usage: OpenAI
    /// sends `null` on every chunk when usage was asked for.
    fn no_usage(&self) -> UsageField {
        if self.plan.include_usage {
            UsageField::Null
        } else {
            UsageField::Omitted
        }
    }

    /// Text held back for a stop string that never came: it is answer text.
    fn release_held(&mut self, out: &mut BytesMut) {
        if self.held.is_empty() {
            return;
        }
        let choice = ChoiceOut {
            index: 0,
            delta: DeltaOut {
                role: (!self.role_sent).then_some("assistant"),
                content: Some(&self.held),
                reasoning_content: None,
                tool_calls: None,
            },
            finish_reason: None,
            logprobs: None,
        };
        self.write_chunk(out, Some(&choice), self.no_usage());
        self.role_sent = true;
        self.held.clear();
    }
}

impl Framing for ChatFraming {
    fn chunk(&mut self, created: Option<u64>) {
        self.ensure_head(created);
    }

    /// Translates one choice of a GigaChat chunk into one chunk (text,
    /// reasoning, a tool call and the finish together); a stop string in
    /// the text cuts the answer there.
    fn piece(&mut self, piece: Piece<'_>, usage: Option<ChatUsage>, out: &mut BytesMut) -> Step {
        let Piece {
            index,
            reasoning,
            mut text,
            call: function_call,
            state_id,
            finish_reason,
        } = piece;
        let mut call: Option<ToolCallOut> = None;
        if let Some(function_call) = function_call {
            if self.plan.structured_output.as_deref() == Some(function_call.name.as_str()) {
                self.structured = true;
                let arguments = function_call.arguments_string();
                text = Some(match text {
                    Some(before) => Cow::Owned(format!("{before}{arguments}")),
                    None => Cow::Owned(arguments),
                });
            } else {
                call = Some(tool_call(
                    &function_call,
                    state_id.as_deref(),
                    &self.plan,
                    &self.request_id,
                    Some(self.calls),
                ));
            }
        }

        // How much text goes out now, and whether a stop string ended it.
        let finishing = finish_reason.is_some();
        let (release, cut) = if self.plan.stop.is_empty() {
            (0, false)
        } else {
            if let Some(text) = text.as_deref() {
                self.held.push_str(text);
            }
            match first_stop(&self.held, &self.plan.stop) {
                Some(at) => (at, true),
                None if finishing => (self.held.len(), false),
                None => (
                    self.held.len() - stop_prefix_len(&self.held, &self.plan.stop),
                    false,
                ),
            }
        };
        let content = if self.plan.stop.is_empty() {
            text.as_deref()
        } else {
            self.held.get(..release)
        }
        .filter(|text| !text.is_empty());
        if cut {
            call = None;
        }
        let finish = if cut {
            Some("stop")
        } else {
            finish_reason.as_deref().map(|reason| match reason {
                "function_call" if self.structured && self.calls == 0 && call.is_none() => "stop",
                "function_call" | "stop" if self.calls > 0 || call.is_some() => "tool_calls",
                other => gigachat::finish_reason(other),
            })
        };

        let mut usage_told = false;
        if content.is_some() || reasoning.is_some() || call.is_some() || finish.is_some() {
            let usage = match (finish, usage) {
                (Some(_), Some(usage)) if !self.plan.include_usage => UsageField::Some(usage),
                _ => self.no_usage(),
            };
            let choice = ChoiceOut {
                index,
                delta: DeltaOut {
                    role: (!self.role_sent).then_some("assistant"),
                    content,
                    reasoning_content: reasoning.as_deref(),
                    tool_calls: call.as_ref().map(std::slice::from_ref),
                },
                finish_reason: finish,
                logprobs: None,
            };
            self.write_chunk(out, Some(&choice), usage);
            self.role_sent = true;
            usage_told = matches!(usage, UsageField::Some(_));
            if call.is_some() {
                self.calls += 1;
            }
        }
        if cut || !self.held.is_char_boundary(release) {
            self.held.clear();
        } else if release > 0 {
            self.held.drain(..release);
        }
        if cut {
            Step::Cut { usage_told }
        } else if finish.is_some() {
            Step::Finished { usage_told }
        } else {
            Step::Continues
        }
    }

    /// The usage in its own `choices: []` chunk, if GigaChat sent it and
    /// it did not ride on the finish chunk.
    fn finished(&mut self, usage: Option<ChatUsage>, out: &mut BytesMut) {
        if let Some(usage) = usage {
            self.ensure_head(None);
            self.write_chunk(out, None, UsageField::Some(usage));
        }
    }

    /// An error event, the way OpenAI's clients read a failure in a
    /// stream; text held for a stop string goes out first, as the answer
    /// so far.
    fn fault(&mut self, fault: Fault, out: &mut BytesMut) {
        self.ensure_head(None);
        self.release_held(out);
        let failure = Failure::of(fault);
        #[derive(Serialize)]
        struct Event<'a> {
            error: ErrorOut<'a>,
        }
        #[derive(Serialize)]
        struct ErrorOut<'a> {
            message: &'a str,
            #[serde(rename = "type")]
            kind: &'a str,
            param: Option<()>,
            code: &'a str,
            request_id: &'a str,
        }
        out.extend_from_slice(b"data: ");
        put_json(
            out,
            &Event {
                error: ErrorOut {
                    message: &failure.message,
                    kind: failure.kind,
                    param: None,
                    code: &failure.code,
                    request_id: &self.request_id,
                },
            },
        );
        out.extend_from_slice(b"\n\n");
    }
}

/// The length of the longest end of `text` that is the start (not the
/// whole) of a stop string: that much must wait for the next chunk.
fn stop_prefix_len(text: &str, stops: &[String]) -> usize {
    let text = text.as_bytes();
    let mut longest = 0;
    for stop in stops {
        let stop = stop.as_bytes();
        let most = stop.len().saturating_sub(1).min(text.len());
        for len in (longest + 1..=most).rev() {
            if stop.starts_with(&text[text.len() - len..]) {
                longest = len;
                break;
            }
        }
    }
    longest
}

/// Serializes into the output buffer directly. Writing to memory cannot
/// fail, and the values are plain structs of strings and numbers.
fn put_json(out: &mut BytesMut, value: &impl Serialize) {
    let _ = serde_json::to_writer(out.writer(), value);
}

/// An error event's fields, in OpenAI's terms.
struct Failure {
    message: Cow<'static, str>,
    kind: &'static str,
    code: Cow<'static, str>,
}

impl Failure {
    fn of(fault: Fault) -> Self {
        match fault {
            Fault::Malformed => Failure {
                message: Cow::Borrowed(
                    "GigaChat sent a stream event the proxy cannot read; the answer is incomplete",
                ),
                kind: "server_error",
                code: Cow::Borrowed("upstream_malformed"),
            },
            Fault::Incomplete => Failure {
                message: Cow::Borrowed(
                    "GigaChat's answer ended before it finished (no finish_reason); the text so far is incomplete",
                ),
                kind: "server_error",
                code: Cow::Borrowed("upstream_incomplete"),
            },
            Fault::Proxy { message, code } => Failure {
                message: message
                    .map_or(Cow::Borrowed("the answer failed in the middle"), Cow::Owned),
                kind: "server_error",
                code: code.map_or(Cow::Borrowed("upstream_error"), Cow::Owned),
            },
            Fault::Upstream { status, message } => {
                Failure {
                    message: Cow::Owned(message.unwrap_or_else(|| {
                        format!("GigaChat failed with status {}", status.as_u16())
                    })),
                    kind: openai_error_type(client_status(status)),
                    code: Cow::Owned(upstream_code(status)),
                }
            }
        }
    }
}

#[derive(Clone, Copy)]
enum UsageField {
    Omitted,
    Null,
    Some(ChatUsage),
}

#[derive(Serialize)]
struct ChoiceOut<'a> {
    index: u32,
    delta: DeltaOut<'a>,
    finish_reason: Option<&'a str>,
    logprobs: Option<()>,
}

#[derive(Serialize)]
struct DeltaOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<&'a [ToolCallOut]>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::openai::gigachat_stream::recorded::{
        self, CALL_IN_FINISH, CALL_THEN_FINISH, RECORDED_TEXT, feed, parse_events, sse_events,
        text_chunk,
    };
    use crate::openai::stream_body::Translate;
    use crate::usage::Usage;
    use bytes::Bytes;
    use serde_json::{Value, json};

    fn plan() -> ChatPlan {
        ChatPlan {
            model: "gpt-4o".into(),
            ..ChatPlan::default()
        }
    }

    fn finish_chunk(reason: &str) -> String {
        json!({"choices": [{"delta": {"content": ""}, "index": 0, "finish_reason": reason}], "created": 5, "model": "GigaChat", "object": "chat.completion",
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7, "precached_prompt_tokens": 1}}).to_string()
    }

    fn translate(plan: ChatPlan, events: &[String]) -> (String, bool) {
        feed(ChatChunks::new(plan, "R"), events)
    }

    fn content(events: &[Value]) -> String {
        events
            .iter()
            .filter_map(|event| event["choices"][0]["delta"]["content"].as_str())
            .collect()
    }

    fn usages(events: &[Value]) -> Vec<&Value> {
        events
            .iter()
            .filter_map(|event| event.get("usage").filter(|usage| !usage.is_null()))
            .collect()
    }

    fn finish_reasons(events: &[Value]) -> Vec<&str> {
        events
            .iter()
            .filter_map(|event| event["choices"][0]["finish_reason"].as_str())
            .collect()
    }

    fn assert_well_formed(events: &[Value]) {
        assert_eq!(events.last().unwrap(), "[DONE]");
        for event in &events[..events.len() - 1] {
            if event.get("error").is_some() {
                continue;
            }
            assert_eq!(event["id"], "chatcmpl-R");
            assert_eq!(event["object"], "chat.completion.chunk");
            assert_eq!(event["model"], "gpt-4o");
            assert!(event["created"].as_u64().unwrap() > 0);
            assert!(event["choices"].is_array(), "{event}");
        }
        let roles: Vec<_> = events
            .iter()
            .filter_map(|event| event["choices"][0]["delta"].get("role"))
            .collect();
        assert!(roles.len() <= 1, "{roles:?}");
        assert!(roles.iter().all(|role| *role == "assistant"));
        if let Some(first) = events.first().filter(|e| e["choices"].get(0).is_some()) {
            assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
        }
    }

    #[test]
    fn a_recorded_text_stream_becomes_openai_chunks() {
        let (out, _) = translate(plan(), &sse_events(RECORDED_TEXT));
        let events = parse_events(&out);
        assert_well_formed(&events);
        assert_eq!(events.len(), 4, "{out}");
        assert_eq!(events[0]["created"], 1768996176);
        assert_eq!(
            events[0]["choices"][0],
            json!({"index": 0, "delta": {"role": "assistant", "content": "$1\\, 2\\, 3$  \n\n**Подробный разбор:"}, "finish_reason": null, "logprobs": null})
        );
        assert_eq!(
            content(&events),
            "$1\\, 2\\, 3$  \n\n**Подробный разбор:**\n- Начинаем счёт с единицы."
        );
        // Without include_usage the usage rides on the finish chunk.
        assert_eq!(events[2]["choices"][0]["finish_reason"], "stop");
        assert_eq!(events[2]["choices"][0]["delta"], json!({}));
        assert_eq!(
            events[2]["usage"],
            json!({"prompt_tokens": 17, "completion_tokens": 42, "total_tokens": 59,
                "prompt_tokens_details": {"cached_tokens": 2}, "completion_tokens_details": {"reasoning_tokens": 0}})
        );
        assert_eq!(usages(&events).len(), 1);
        assert!(events[0].get("usage").is_none());
    }

    #[test]
    fn include_usage_puts_usage_once_on_a_final_chunk_without_choices() {
        let plan = ChatPlan {
            include_usage: true,
            ..plan()
        };
        let (out, _) = translate(plan, &sse_events(RECORDED_TEXT));
        let events = parse_events(&out);
        assert_well_formed(&events);
        assert_eq!(events.len(), 5, "{out}");
        assert_eq!(usages(&events).len(), 1);
        assert_eq!(events[0]["usage"], Value::Null);
        assert_eq!(events[2]["usage"], Value::Null);
        assert_eq!(events[2]["choices"][0]["finish_reason"], "stop");
        assert_eq!(events[3]["choices"], json!([]));
        assert_eq!(events[3]["usage"]["total_tokens"], 59);
    }

    #[test]
    fn usage_goes_out_as_soon_as_the_answer_finishes() {
        // With include_usage, the usage chunk follows the finish chunk in
        // the same write, not only when GigaChat's [DONE] comes.
        let plan_with_usage = ChatPlan {
            include_usage: true,
            ..plan()
        };
        let mut chunks = ChatChunks::new(plan_with_usage, "R");
        let mut out = BytesMut::new();
        assert!(chunks.event(&text_chunk("hi"), &mut out));
        assert!(chunks.event(&finish_chunk("stop"), &mut out));
        let so_far = parse_events(std::str::from_utf8(&out).unwrap());
        assert_eq!(so_far.len(), 3);
        assert_eq!(so_far[2]["choices"], json!([]));
        assert_eq!(so_far[2]["usage"]["total_tokens"], 7);

        // Usage GigaChat sends after its finish chunk goes out when it
        // arrives, once.
        let finish =
            json!({"choices": [{"delta": {}, "index": 0, "finish_reason": "stop"}], "created": 5})
                .to_string();
        let usage = json!({"choices": [], "created": 5, "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}).to_string();
        let mut chunks = ChatChunks::new(plan(), "R");
        let mut out = BytesMut::new();
        for data in [text_chunk("hi"), finish, usage] {
            assert!(chunks.event(&data, &mut out));
        }
        let so_far = parse_events(std::str::from_utf8(&out).unwrap());
        assert_eq!(so_far.len(), 3);
        assert_eq!(so_far[2]["choices"], json!([]));
        assert_eq!(so_far[2]["usage"]["total_tokens"], 3);
        chunks.event("[DONE]", &mut out);
        chunks.finish(&mut out);
        let events = parse_events(std::str::from_utf8(&out).unwrap());
        assert_well_formed(&events);
        assert_eq!(usages(&events).len(), 1);
    }

    fn assert_tool_call(events: &[Value]) {
        let calls: Vec<_> = events
            .iter()
            .filter_map(|event| event["choices"][0]["delta"].get("tool_calls"))
            .collect();
        assert_eq!(
            calls,
            [
                &json!([{"index": 0, "id": "call_019ed0c7-f14d", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Москва\"}"}}])
            ]
        );
        assert_eq!(finish_reasons(events), ["tool_calls"]);
        assert_eq!(content(events), "");
        assert_eq!(usages(events).len(), 1);
    }

    #[test]
    fn a_function_call_in_its_own_chunk_becomes_a_tool_call() {
        let (out, _) = translate(plan(), &sse_events(CALL_THEN_FINISH));
        let events = parse_events(&out);
        assert_well_formed(&events);
        assert_tool_call(&events);
        // The call goes out when it arrives, the finish when it does.
        assert_eq!(events.len(), 3, "{out}");
        assert_eq!(events[0]["choices"][0]["finish_reason"], Value::Null);
    }

    #[test]
    fn a_function_call_in_the_finish_chunk_becomes_a_tool_call() {
        let (out, _) = translate(plan(), &sse_events(CALL_IN_FINISH));
        let events = parse_events(&out);
        assert_well_formed(&events);
        assert_tool_call(&events);
        assert_eq!(events.len(), 2, "{out}");
        assert_eq!(events[0]["choices"][0]["finish_reason"], "tool_calls");
    }

    #[test]
    fn a_call_without_a_state_id_and_a_renamed_tool() {
        let plan = ChatPlan {
            renamed_tools: vec![("user_web_search".into(), "web_search".into())],
            ..plan()
        };
        let call = json!({"choices": [{"delta": {"role": "assistant", "function_call": {"name": "user_web_search", "arguments": "{\"q\":1}"}}, "index": 0, "finish_reason": "function_call"}], "created": 5}).to_string();
        let (out, _) = translate(plan, &[call, "[DONE]".into()]);
        let events = parse_events(&out);
        let tool_call = &events[0]["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(tool_call["function"]["name"], "web_search");
        assert_eq!(tool_call["function"]["arguments"], "{\"q\":1}");
        assert_eq!(tool_call["id"], "call_R_0");
    }

    #[test]
    fn structured_output_arguments_become_content_in_both_shapes() {
        let plan = ChatPlan {
            structured_output: Some("get_weather".into()),
            ..plan()
        };
        for stream in [CALL_THEN_FINISH, CALL_IN_FINISH] {
            let (out, _) = translate(plan.clone(), &sse_events(stream));
            let events = parse_events(&out);
            assert_well_formed(&events);
            assert_eq!(content(&events), "{\"city\":\"Москва\"}");
            assert_eq!(finish_reasons(&events), ["stop"]);
            assert!(!out.contains("tool_calls"), "{out}");
        }
    }

    #[test]
    fn blacklist_is_content_filter_and_reasoning_passes() {
        let reasoning = json!({"choices": [{"delta": {"role": "assistant", "reasoning_content": "думаю"}, "index": 0}], "created": 5}).to_string();
        let (out, _) = translate(
            plan(),
            &[reasoning, finish_chunk("blacklist"), "[DONE]".into()],
        );
        let events = parse_events(&out);
        assert_well_formed(&events);
        assert_eq!(
            events[0]["choices"][0]["delta"]["reasoning_content"],
            "думаю"
        );
        assert_eq!(finish_reasons(&events), ["content_filter"]);
    }

    #[test]
    fn gigachats_internal_roles_never_reach_the_client() {
        let progress = json!({"choices": [{"delta": {"role": "function_in_progress", "content": "рисую…"}, "index": 0}], "created": 5}).to_string();
        let (out, _) = translate(
            plan(),
            &[
                progress,
                text_chunk("готово"),
                finish_chunk("stop"),
                "[DONE]".into(),
            ],
        );
        assert!(!out.contains("function_in_progress"), "{out}");
        let events = parse_events(&out);
        assert_well_formed(&events);
        assert_eq!(content(&events), "готово");
    }

    #[test]
    fn a_stop_string_split_across_chunks_cuts_the_answer_and_cancels_upstream() {
        let plan = ChatPlan {
            stop: vec!["END".into(), String::new()],
            ..plan()
        };
        let (out, stopped) = translate(
            plan,
            &[
                text_chunk("Hel"),
                text_chunk("lo E"),
                text_chunk("x E"),
                text_chunk("N"),
                text_chunk("D more"),
                finish_chunk("stop"),
            ],
        );
        assert!(stopped, "the upstream must be dropped");
        let events = parse_events(&out);
        assert_well_formed(&events);
        let pieces: Vec<_> = events
            .iter()
            .filter_map(|event| event["choices"][0]["delta"]["content"].as_str())
            .collect();
        // "E" is held until "x" shows it is no stop; " E" then "N" wait.
        assert_eq!(pieces, ["Hel", "lo ", "Ex "]);
        assert_eq!(finish_reasons(&events), ["stop"]);
        // GigaChat had sent no usage yet, so none is reported.
        assert!(usages(&events).is_empty());
    }

    #[test]
    fn a_stop_string_inside_one_chunk_with_include_usage() {
        let plan = ChatPlan {
            stop: vec!["\n\n".into()],
            include_usage: true,
            ..plan()
        };
        let (out, stopped) = translate(plan, &sse_events(RECORDED_TEXT));
        assert!(stopped);
        let events = parse_events(&out);
        assert_well_formed(&events);
        assert_eq!(content(&events), "$1\\, 2\\, 3$  ");
        assert_eq!(finish_reasons(&events), ["stop"]);
        assert!(usages(&events).is_empty());
        // The cut text and the finish go out in one chunk.
        assert_eq!(events.len(), 2, "{out}");
        assert_eq!(events[0]["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn held_text_is_released_at_the_finish() {
        let plan = ChatPlan {
            stop: vec!["END".into()],
            ..plan()
        };
        let (out, stopped) = translate(
            plan,
            &[text_chunk("The E"), finish_chunk("length"), "[DONE]".into()],
        );
        assert!(!stopped);
        let events = parse_events(&out);
        assert_eq!(content(&events), "The E");
        assert_eq!(finish_reasons(&events), ["length"]);
        assert_eq!(usages(&events).len(), 1);
    }

    #[test]
    fn the_proxys_error_event_becomes_an_openai_error_then_done() {
        let error = r#"{"error":{"message":"GigaChat stopped sending in the middle of the answer (GIGACHAT_PROXY_STREAM_IDLE_TIMEOUT)","code":"upstream_timeout","request_id":"R"}}"#;
        let (out, stopped) = translate(plan(), &[text_chunk("Hi"), error.into()]);
        assert!(stopped);
        let events = parse_events(&out);
        assert_well_formed(&events);
        assert_eq!(events.len(), 3, "{out}");
        assert_eq!(
            events[1],
            json!({"error": {"message": "GigaChat stopped sending in the middle of the answer (GIGACHAT_PROXY_STREAM_IDLE_TIMEOUT)",
                "type": "server_error", "param": null, "code": "upstream_timeout", "request_id": "R"}})
        );
    }

    #[test]
    fn a_gigachat_error_object_in_the_stream_becomes_an_openai_error() {
        let error = r#"{"status":429,"message":"Too many requests"}"#;
        let (out, stopped) = translate(plan(), &[error.into(), "[DONE]".into()]);
        assert!(stopped);
        let events = parse_events(&out);
        assert_eq!(
            events,
            [
                json!({"error": {"message": "Too many requests", "type": "rate_limit_error", "param": null, "code": "upstream_429", "request_id": "R"}}),
                json!("[DONE]")
            ]
        );
    }

    #[test]
    fn a_stream_that_breaks_off_ends_with_an_error_not_silence() {
        // No finish chunk, no [DONE]: the upstream body just ended.
        let (out, _) = translate(plan(), &[text_chunk("Hal")]);
        let events = parse_events(&out);
        assert_well_formed(&events);
        assert_eq!(events[1]["error"]["code"], "upstream_incomplete");
        // [DONE] without a finish chunk is no finished answer either.
        let (out, _) = translate(plan(), &[text_chunk("Hal"), "[DONE]".into()]);
        let events = parse_events(&out);
        assert_eq!(events[1]["error"]["code"], "upstream_incomplete");
        assert_eq!(events.len(), 3);
        // A finished answer whose [DONE] never came ends normally.
        let (out, _) = translate(plan(), &[text_chunk("Hal"), finish_chunk("stop")]);
        let events = parse_events(&out);
        assert!(out.find("error").is_none(), "{out}");
        assert_eq!(events.last().unwrap(), "[DONE]");
    }

    #[test]
    fn non_json_data_is_skipped_and_unreadable_json_is_an_error() {
        let (out, _) = translate(
            plan(),
            &[
                "ping".into(),
                text_chunk("a"),
                finish_chunk("stop"),
                "[DONE]".into(),
            ],
        );
        let events = parse_events(&out);
        assert_well_formed(&events);
        assert_eq!(content(&events), "a");
        let (out, stopped) = translate(plan(), &[text_chunk("a"), r#"{"choices":7}"#.into()]);
        assert!(stopped);
        let events = parse_events(&out);
        assert_eq!(events[1]["error"]["code"], "upstream_malformed");
        assert_eq!(events.last().unwrap(), "[DONE]");
    }

    #[test]
    fn nothing_follows_done() {
        let (out, _) = translate(
            plan(),
            &[
                text_chunk("a"),
                finish_chunk("stop"),
                "[DONE]".into(),
                text_chunk("late"),
            ],
        );
        assert!(out.ends_with("data: [DONE]\n\n"));
        assert!(!out.contains("late"));
        // Also after a [DONE] that ended an unfinished answer with an error.
        let (out, _) = translate(
            plan(),
            &[
                text_chunk("a"),
                "[DONE]".into(),
                text_chunk("late"),
                finish_chunk("stop"),
            ],
        );
        assert!(out.ends_with("data: [DONE]\n\n"), "{out}");
        assert!(!out.contains("late"), "{out}");
        assert_eq!(out.matches("[DONE]").count(), 1);
    }

    async fn through_stream(plan: ChatPlan, chunks: Vec<Bytes>) -> (String, Option<Usage>) {
        recorded::through_stream(ChatChunks::new(plan, "R"), chunks).await
    }

    #[tokio::test]
    async fn every_byte_split_of_a_recorded_stream_gives_the_same_output() {
        let cases = [
            (plan(), RECORDED_TEXT),
            (
                ChatPlan {
                    include_usage: true,
                    stop: vec!["счёт".into()],
                    ..plan()
                },
                RECORDED_TEXT,
            ),
            (plan(), CALL_THEN_FINISH),
            (
                ChatPlan {
                    include_usage: true,
                    ..plan()
                },
                CALL_IN_FINISH,
            ),
        ];
        for (plan, recorded) in cases {
            let bytes = Bytes::from_static(recorded.as_bytes());
            let (whole, whole_usage) = through_stream(plan.clone(), vec![bytes.clone()]).await;
            assert!(whole.ends_with("data: [DONE]\n\n"), "{whole}");
            assert!(!whole.contains("error"), "{whole}");
            assert!(whole_usage.is_some() || !plan.stop.is_empty());
            for split in 1..bytes.len() {
                let (out, usage) = through_stream(
                    plan.clone(),
                    vec![bytes.slice(..split), bytes.slice(split..)],
                )
                .await;
                assert_eq!(out, whole, "split at {split}");
                assert_eq!(usage, whole_usage, "split at {split}");
            }
            let singles = (0..bytes.len()).map(|i| bytes.slice(i..i + 1)).collect();
            assert_eq!(through_stream(plan, singles).await.0, whole);
        }
    }

    #[tokio::test]
    async fn an_upstream_that_breaks_off_mid_event_ends_with_an_error() {
        let cut = &RECORDED_TEXT[..RECORDED_TEXT.find("Начинаем").unwrap()];
        let (out, _) = through_stream(plan(), vec![Bytes::copy_from_slice(cut.as_bytes())]).await;
        let events = parse_events(&out);
        assert_well_formed(&events);
        assert_eq!(
            events[events.len() - 2]["error"]["code"],
            "upstream_incomplete"
        );
    }

    #[test]
    fn stop_prefixes_are_found_at_the_end_only() {
        let stops = ["END".to_owned(), "\n\n".to_owned()];
        assert_eq!(stop_prefix_len("abc", &stops), 0);
        assert_eq!(stop_prefix_len("abcE", &stops), 1);
        assert_eq!(stop_prefix_len("abcEN", &stops), 2);
        assert_eq!(stop_prefix_len("abc\n", &stops), 1);
        assert_eq!(stop_prefix_len("EN", &["ENEN".to_owned()]), 2);
        assert_eq!(stop_prefix_len("Пр", &["При".to_owned()]), "Пр".len());
        assert_eq!(stop_prefix_len("", &stops), 0);
    }
}
