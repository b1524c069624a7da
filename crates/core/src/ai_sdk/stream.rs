//! GigaChat's v1 chat stream as the AI SDK's UI message stream, chunk by
//! chunk as it arrives: `start`, `start-step`, reasoning and text blocks,
//! tool input, `finish-step`, `finish` (with usage), `data: [DONE]`.
//!
//! What `useChat` insists on, and GigaChat's stream does not give: a
//! `text-start` before the first `text-delta` of a block (without it AI SDK
//! 5 crashes and 6/7 throw), `text-end` before `finish-step` (which resets
//! the open blocks in 5 and 6), a `finishReason` from the closed list the
//! newer versions validate, a tool call's input as an object under the
//! client's own tool name, and an `error` chunk rather than a stream that
//! just stops. Text is never held: each delta goes out when it comes. The
//! stream's rules (finish, usage, errors, breaking off) are the shared
//! reader's (`openai::gigachat_stream`); this is the framing.

use bytes::{BufMut, BytesMut};
use serde::Serialize;
use serde_json::Value;

use super::UiPlan;
use crate::openai::gigachat::{self, ChatUsage, FunctionCall};
use crate::openai::gigachat_stream::{Fault, Framing, GigaChatStream, Piece, Step};

/// The UI message stream: GigaChat's stream read by the shared reader,
/// framed as the AI SDK's UI message chunks.
pub(crate) type UiChunks = GigaChatStream<UiFraming>;

impl GigaChatStream<UiFraming> {
    pub(crate) fn new(plan: UiPlan, request_id: &str) -> Self {
        GigaChatStream::reading(UiFraming::new(plan, request_id))
    }
}

pub(crate) struct UiFraming {
    plan: UiPlan,
    request_id: String,
    /// `start` and `start-step` have gone out.
    started: bool,
    open: Option<Block>,
    /// Blocks opened so far of each kind: the next one's id number.
    texts: usize,
    reasonings: usize,
    /// Tool calls sent so far.
    calls: usize,
    /// The reason of the answer's finish (`finish-step` sent); `finish`
    /// waits for the usage, or the end of the stream.
    finish_reason: &'static str,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    Reasoning,
}

impl UiFraming {
    fn new(plan: UiPlan, request_id: &str) -> Self {
        UiFraming {
            plan,
            request_id: request_id.to_owned(),
            started: false,
            open: None,
            texts: 0,
            reasonings: 0,
            calls: 0,
            finish_reason: "other",
        }
    }

    fn ensure_started(&mut self, out: &mut BytesMut) {
        if !self.started {
            out.extend_from_slice(
                b"data: {\"type\":\"start\"}\n\ndata: {\"type\":\"start-step\"}\n\n",
            );
            self.started = true;
        }
    }

    /// The id of the open block of `kind` (the last one opened).
    fn block_id(&self, kind: Block) -> BlockId {
        match kind {
            Block::Text => BlockId("txt", self.texts.saturating_sub(1)),
            Block::Reasoning => BlockId("reasoning", self.reasonings.saturating_sub(1)),
        }
    }

    /// Makes `kind` the open block, ending another one first.
    fn open_block(&mut self, kind: Block, out: &mut BytesMut) {
        if self.open == Some(kind) {
            return;
        }
        self.close_block(out);
        match kind {
            Block::Text => self.texts += 1,
            Block::Reasoning => self.reasonings += 1,
        }
        let start: &[u8] = match kind {
            Block::Text => b"data: {\"type\":\"text-start\",\"id\":\"",
            Block::Reasoning => b"data: {\"type\":\"reasoning-start\",\"id\":\"",
        };
        out.extend_from_slice(start);
        self.block_id(kind).put(out);
        out.extend_from_slice(b"\"}\n\n");
        self.open = Some(kind);
    }

    fn close_block(&mut self, out: &mut BytesMut) {
        let Some(kind) = self.open.take() else {
            return;
        };
        let end: &[u8] = match kind {
            Block::Text => b"data: {\"type\":\"text-end\",\"id\":\"",
            Block::Reasoning => b"data: {\"type\":\"reasoning-end\",\"id\":\"",
        };
        out.extend_from_slice(end);
        self.block_id(kind).put(out);
        out.extend_from_slice(b"\"}\n\n");
    }

    fn delta(&mut self, kind: Block, delta: &str, out: &mut BytesMut) {
        self.ensure_started(out);
        self.open_block(kind, out);
        let start: &[u8] = match kind {
            Block::Text => b"data: {\"type\":\"text-delta\",\"id\":\"",
            Block::Reasoning => b"data: {\"type\":\"reasoning-delta\",\"id\":\"",
        };
        out.extend_from_slice(start);
        self.block_id(kind).put(out);
        out.extend_from_slice(b"\",\"delta\":");
        put_json_string(out, delta);
        out.extend_from_slice(b"}\n\n");
    }

    /// A GigaChat function call as the tool input chunks: the client's
    /// `onToolCall` fires on `tool-input-available`, under its own name.
    fn tool_call(&mut self, call: &FunctionCall, state_id: Option<&str>, out: &mut BytesMut) {
        self.ensure_started(out);
        self.close_block(out);
        let id = gigachat::tool_call_id(state_id, &self.request_id, self.calls);
        let name = self
            .plan
            .renamed_tools
            .iter()
            .find(|(renamed, _)| *renamed == call.name)
            .map_or(call.name.as_str(), |(_, client)| client.as_str());
        put_chunk(
            out,
            &ToolInputStart {
                kind: "tool-input-start",
                tool_call_id: &id,
                tool_name: name,
            },
        );
        let text = call.arguments_string();
        put_chunk(
            out,
            &ToolInputDelta {
                kind: "tool-input-delta",
                tool_call_id: &id,
                input_text_delta: &text,
            },
        );
        let parsed;
        let input = match &call.arguments {
            Value::Object(_) => Some(&call.arguments),
            Value::String(text) => {
                parsed = serde_json::from_str::<Value>(text).ok();
                parsed.as_ref().filter(|value| value.is_object())
            }
            _ => None,
        };
        match input {
            Some(input) => put_chunk(
                out,
                &ToolInputAvailable {
                    kind: "tool-input-available",
                    tool_call_id: &id,
                    tool_name: name,
                    input,
                },
            ),
            // The tool part ends in `output-error`; sent back, the model
            // reads why its call failed.
            None => put_chunk(
                out,
                &ToolInputError {
                    kind: "tool-input-error",
                    tool_call_id: &id,
                    tool_name: name,
                    input: &call.arguments,
                    error_text: "GigaChat gave this call arguments that are not a JSON object",
                },
            ),
        }
        self.calls += 1;
    }

    /// The AI SDK's reason for GigaChat's, from the list every version
    /// accepts (`unknown` fails validation in 6 and 7).
    fn finish_reason_of(&self, gigachat: &str) -> &'static str {
        match gigachat {
            "stop" | "function_call" if self.calls > 0 => "tool-calls",
            "stop" => "stop",
            "length" => "length",
            "blacklist" => "content-filter",
            "error" => "error",
            _ => "other",
        }
    }
}

impl Framing for UiFraming {
    fn piece(&mut self, piece: Piece<'_>, _usage: Option<ChatUsage>, out: &mut BytesMut) -> Step {
        if let Some(reasoning) = piece.reasoning.as_deref() {
            self.delta(Block::Reasoning, reasoning, out);
        }
        if let Some(text) = piece.text.as_deref() {
            self.delta(Block::Text, text, out);
        }
        if let Some(call) = &piece.call {
            self.tool_call(call, piece.state_id.as_deref(), out);
        }
        let Some(reason) = piece.finish_reason else {
            return Step::Continues;
        };
        self.ensure_started(out);
        self.close_block(out);
        out.extend_from_slice(b"data: {\"type\":\"finish-step\"}\n\n");
        self.finish_reason = self.finish_reason_of(&reason);
        Step::Finished { usage_told: false }
    }

    /// `finish`, with the usage in its metadata when GigaChat sent it.
    fn finished(&mut self, usage: Option<ChatUsage>, out: &mut BytesMut) {
        put_chunk(
            out,
            &Finish {
                kind: "finish",
                finish_reason: self.finish_reason,
                message_metadata: usage.map(|usage| Metadata {
                    usage: UsageOut {
                        input_tokens: usage.prompt_tokens,
                        output_tokens: usage.completion_tokens,
                        total_tokens: usage.total_tokens,
                    },
                    model: &self.plan.model,
                    request_id: &self.request_id,
                }),
            },
        );
    }

    /// An `error` chunk: useChat's status becomes `error`, `error.message`
    /// this text; the `[DONE]` after it the SDK ignores, but it tells any
    /// other reader the stream ended on purpose. A block left open stays
    /// open: its text is incomplete.
    fn fault(&mut self, fault: Fault, out: &mut BytesMut) {
        let message = match fault {
            Fault::Malformed => {
                "GigaChat sent a stream event the proxy cannot read; the answer is incomplete"
                    .to_owned()
            }
            Fault::Incomplete => "GigaChat's answer ended before it finished; the text so far is incomplete. Send the message again.".to_owned(),
            // useChat shows it as the error's message, so it is prose, not
            // JSON.
            Fault::Proxy { message, .. } => {
                message.unwrap_or_else(|| "The answer failed in the middle".to_owned())
            }
            Fault::Upstream { status, message } => match message {
                Some(message) => {
                    format!("GigaChat failed with status {}: {message}", status.as_u16())
                }
                None => format!("GigaChat failed with status {}", status.as_u16()),
            },
        };
        let text = format!("{message} (request id {})", self.request_id);
        put_chunk(
            out,
            &ErrorChunk {
                kind: "error",
                error_text: &text,
            },
        );
    }
}

/// One `data:` line, the JSON serialised straight into the output.
/// Writing to memory cannot fail, and the values are plain structs of
/// strings, numbers and already-parsed JSON.
fn put_chunk(out: &mut BytesMut, chunk: &impl Serialize) {
    out.extend_from_slice(b"data: ");
    let _ = serde_json::to_writer(out.writer(), chunk);
    out.extend_from_slice(b"\n\n");
}

/// A JSON string, quoted and escaped as serde_json writes one.
fn put_json_string(out: &mut BytesMut, text: &str) {
    let _ = serde_json::to_writer(out.writer(), text);
}

/// `txt-0`, `reasoning-1`: the id of a block, which needs no escaping.
#[derive(Clone, Copy)]
struct BlockId(&'static str, usize);

impl BlockId {
    /// Writes the id (unquoted) without formatting machinery: ids are
    /// written for every delta, and this is the most frequent write.
    fn put(self, out: &mut BytesMut) {
        out.extend_from_slice(self.0.as_bytes());
        out.put_u8(b'-');
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut number = self.1;
        loop {
            at -= 1;
            // `number % 10` is below 10, so the cast keeps it whole.
            digits[at] = b'0' + (number % 10) as u8;
            number /= 10;
            if number == 0 {
                break;
            }
        }
        out.extend_from_slice(&digits[at..]);
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolInputStart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    tool_call_id: &'a str,
    tool_name: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolInputDelta<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    tool_call_id: &'a str,
    input_text_delta: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolInputAvailable<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    tool_call_id: &'a str,
    tool_name: &'a str,
    input: &'a Value,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolInputError<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    tool_call_id: &'a str,
    tool_name: &'a str,
    input: &'a Value,
    error_text: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Finish<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    finish_reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_metadata: Option<Metadata<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Metadata<'a> {
    usage: UsageOut,
    model: &'a str,
    request_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UsageOut {
    input_tokens: u64,
    output_tokens: u64,
    total_tokens: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorChunk<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error_text: &'a str,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::openai::gigachat_stream::recorded::{
        self, CALL_IN_FINISH, CALL_THEN_FINISH, RECORDED_TEXT, feed, parse_events as parse_chunks,
        sse_events, text_chunk,
    };
    use crate::openai::stream_body::Translate;
    use crate::usage::Usage;
    use bytes::Bytes;
    use serde_json::json;

    /// The reference's canonical text answer, byte for byte (what
    /// `streamText(…).toUIMessageStreamResponse()` sends in ai 5, 6, 7).
    const CANONICAL_TEXT: &str = concat!(
        "data: {\"type\":\"start\"}\n\n",
        "data: {\"type\":\"start-step\"}\n\n",
        "data: {\"type\":\"text-start\",\"id\":\"txt-0\"}\n\n",
        "data: {\"type\":\"text-delta\",\"id\":\"txt-0\",\"delta\":\"При\"}\n\n",
        "data: {\"type\":\"text-delta\",\"id\":\"txt-0\",\"delta\":\"вет!\"}\n\n",
        "data: {\"type\":\"text-end\",\"id\":\"txt-0\"}\n\n",
        "data: {\"type\":\"finish-step\"}\n\n",
        "data: {\"type\":\"finish\",\"finishReason\":\"stop\"}\n\n",
        "data: [DONE]\n\n",
    );

    /// The reference's canonical reasoning plus tool call, byte for byte.
    const CANONICAL_TOOL: &str = concat!(
        "data: {\"type\":\"start\"}\n\n",
        "data: {\"type\":\"start-step\"}\n\n",
        "data: {\"type\":\"reasoning-start\",\"id\":\"reasoning-0\"}\n\n",
        "data: {\"type\":\"reasoning-delta\",\"id\":\"reasoning-0\",\"delta\":\"Нужна погода\"}\n\n",
        "data: {\"type\":\"reasoning-end\",\"id\":\"reasoning-0\"}\n\n",
        "data: {\"type\":\"tool-input-start\",\"toolCallId\":\"call_1\",\"toolName\":\"get_weather\"}\n\n",
        "data: {\"type\":\"tool-input-delta\",\"toolCallId\":\"call_1\",\"inputTextDelta\":\"{\\\"city\\\":\\\"Москва\\\"}\"}\n\n",
        "data: {\"type\":\"tool-input-available\",\"toolCallId\":\"call_1\",\"toolName\":\"get_weather\",\"input\":{\"city\":\"Москва\"}}\n\n",
        "data: {\"type\":\"finish-step\"}\n\n",
        "data: {\"type\":\"finish\",\"finishReason\":\"tool-calls\"}\n\n",
        "data: [DONE]\n\n",
    );

    fn plan() -> UiPlan {
        UiPlan {
            model: "GigaChat-2-Max".into(),
            renamed_tools: Vec::new(),
        }
    }

    fn reasoning_chunk(reasoning: &str) -> String {
        json!({"choices": [{"delta": {"role": "assistant", "reasoning_content": reasoning}, "index": 0}], "created": 5}).to_string()
    }

    /// A finish chunk without usage.
    fn finish_chunk(reason: &str) -> String {
        json!({"choices": [{"delta": {"content": ""}, "index": 0, "finish_reason": reason}], "created": 5}).to_string()
    }

    fn usage_chunk() -> String {
        json!({"choices": [], "created": 5, "usage": {"prompt_tokens": 14, "completion_tokens": 3, "total_tokens": 17, "precached_prompt_tokens": 0}}).to_string()
    }

    fn translate(plan: UiPlan, events: &[String]) -> (String, bool) {
        feed(UiChunks::new(plan, "R"), events)
    }

    fn types(chunks: &[Value]) -> Vec<&str> {
        chunks
            .iter()
            .map(|chunk| chunk["type"].as_str().unwrap_or("[DONE]"))
            .collect()
    }

    /// What every stream must hold to: `[DONE]` last and once; each delta
    /// inside its block's start and end; every block closed before
    /// `finish-step`; at most one `finish`, with an allowed reason.
    fn assert_well_formed(chunks: &[Value]) {
        assert_eq!(chunks.last().unwrap(), "[DONE]");
        assert_eq!(chunks.iter().filter(|c| *c == "[DONE]").count(), 1);
        let mut open: Vec<String> = Vec::new();
        let mut finishes = 0;
        for chunk in chunks {
            let kind = chunk["type"].as_str().unwrap_or("[DONE]");
            let id = chunk["id"].as_str().unwrap_or_default().to_owned();
            match kind {
                "text-start" | "reasoning-start" => {
                    assert!(!open.contains(&id), "{id} opened twice");
                    open.push(id);
                }
                "text-delta" | "reasoning-delta" => {
                    assert!(open.contains(&id), "{kind} {id} outside its block")
                }
                "text-end" | "reasoning-end" => {
                    assert!(open.contains(&id), "{kind} {id} never started");
                    open.retain(|o| *o != id);
                }
                "finish-step" => assert!(open.is_empty(), "finish-step with {open:?} open"),
                "finish" => {
                    finishes += 1;
                    let reason = chunk["finishReason"].as_str().unwrap();
                    assert!(
                        [
                            "stop",
                            "length",
                            "content-filter",
                            "tool-calls",
                            "error",
                            "other"
                        ]
                        .contains(&reason),
                        "{reason}"
                    );
                }
                _ => {}
            }
        }
        assert!(finishes <= 1);
    }

    #[test]
    fn a_text_answer_is_the_canonical_stream_byte_for_byte() {
        let (out, stopped) = translate(
            plan(),
            &[
                text_chunk("При"),
                text_chunk("вет!"),
                finish_chunk("stop"),
                "[DONE]".into(),
            ],
        );
        assert!(!stopped);
        assert_eq!(out, CANONICAL_TEXT);
    }

    #[test]
    fn reasoning_and_a_tool_call_are_the_canonical_stream_byte_for_byte() {
        let call = json!({"choices": [{"delta": {"role": "assistant", "content": "",
            "function_call": {"name": "get_weather", "arguments": {"city": "Москва"}}, "functions_state_id": "1"}, "index": 0}], "created": 5}).to_string();
        let (out, _) = translate(
            plan(),
            &[
                reasoning_chunk("Нужна погода"),
                call,
                finish_chunk("function_call"),
                "[DONE]".into(),
            ],
        );
        assert_eq!(out, CANONICAL_TOOL);
    }

    #[test]
    fn usage_rides_in_the_finish_metadata() {
        let (out, _) = translate(plan(), &sse_events(RECORDED_TEXT));
        let chunks = parse_chunks(&out);
        assert_well_formed(&chunks);
        assert_eq!(
            types(&chunks),
            [
                "start",
                "start-step",
                "text-start",
                "text-delta",
                "text-delta",
                "text-end",
                "finish-step",
                "finish",
                "[DONE]"
            ]
        );
        assert!(out.contains(concat!(
            "data: {\"type\":\"finish\",\"finishReason\":\"stop\",\"messageMetadata\":",
            "{\"usage\":{\"inputTokens\":17,\"outputTokens\":42,\"totalTokens\":59},\"model\":\"GigaChat-2-Max\",\"requestId\":\"R\"}}\n\n",
            "data: [DONE]\n\n"
        )), "{out}");
        let text: String = chunks
            .iter()
            .filter_map(|chunk| chunk["delta"].as_str())
            .collect();
        assert_eq!(
            text,
            "$1\\, 2\\, 3$  \n\n**Подробный разбор:**\n- Начинаем счёт с единицы."
        );
    }

    #[test]
    fn usage_after_the_finish_chunk_is_waited_for_and_sent_once() {
        let mut chunks = UiChunks::new(plan(), "R");
        let mut out = BytesMut::new();
        assert!(chunks.event(&text_chunk("hi"), &mut out));
        assert!(chunks.event(&finish_chunk("length"), &mut out));
        let so_far = String::from_utf8(out.to_vec()).unwrap();
        assert!(
            so_far.ends_with("data: {\"type\":\"finish-step\"}\n\n"),
            "{so_far}"
        );
        assert!(chunks.event(&usage_chunk(), &mut out));
        let so_far = String::from_utf8(out.to_vec()).unwrap();
        assert!(so_far.ends_with("{\"type\":\"finish\",\"finishReason\":\"length\",\"messageMetadata\":{\"usage\":{\"inputTokens\":14,\"outputTokens\":3,\"totalTokens\":17},\"model\":\"GigaChat-2-Max\",\"requestId\":\"R\"}}\n\n"), "{so_far}");
        chunks.event(&usage_chunk(), &mut out);
        chunks.event("[DONE]", &mut out);
        chunks.finish(&mut out);
        let all = parse_chunks(std::str::from_utf8(&out).unwrap());
        assert_well_formed(&all);
        assert_eq!(types(&all).iter().filter(|t| **t == "finish").count(), 1);
    }

    fn assert_tool_call(out: &str) {
        let chunks = parse_chunks(out);
        assert_well_formed(&chunks);
        assert_eq!(
            chunks[2..5],
            [
                json!({"type": "tool-input-start", "toolCallId": "call_019ed0c7-f14d", "toolName": "get_weather"}),
                json!({"type": "tool-input-delta", "toolCallId": "call_019ed0c7-f14d", "inputTextDelta": "{\"city\":\"Москва\"}"}),
                json!({"type": "tool-input-available", "toolCallId": "call_019ed0c7-f14d", "toolName": "get_weather", "input": {"city": "Москва"}}),
            ]
        );
        assert_eq!(chunks[6]["finishReason"], "tool-calls");
        assert_eq!(chunks[6]["messageMetadata"]["usage"]["totalTokens"], 138);
        assert!(!out.contains("dynamic"), "{out}");
        assert!(!out.contains("text-"), "{out}");
    }

    #[test]
    fn a_function_call_in_its_own_chunk_becomes_tool_input() {
        let (out, _) = translate(plan(), &sse_events(CALL_THEN_FINISH));
        assert_tool_call(&out);
    }

    #[test]
    fn a_function_call_in_the_finish_chunk_becomes_tool_input() {
        let (out, _) = translate(plan(), &sse_events(CALL_IN_FINISH));
        assert_tool_call(&out);
    }

    #[test]
    fn a_renamed_tool_goes_back_under_the_clients_name_and_string_arguments_are_parsed() {
        let plan = UiPlan {
            renamed_tools: vec![("user_web_search".into(), "web_search".into())],
            ..plan()
        };
        let call = json!({"choices": [{"delta": {"role": "assistant", "function_call": {"name": "user_web_search", "arguments": "{\"q\":1}"}}, "index": 0, "finish_reason": "function_call"}], "created": 5}).to_string();
        let (out, _) = translate(plan, &[call, "[DONE]".into()]);
        let chunks = parse_chunks(&out);
        assert_well_formed(&chunks);
        assert_eq!(chunks[2]["toolName"], "web_search");
        // No state id: one derived from the request id and position.
        assert_eq!(chunks[2]["toolCallId"], "call_R_0");
        assert_eq!(chunks[3]["inputTextDelta"], "{\"q\":1}");
        assert_eq!(
            chunks[4],
            json!({"type": "tool-input-available", "toolCallId": "call_R_0", "toolName": "web_search", "input": {"q": 1}})
        );
    }

    #[test]
    fn arguments_that_are_no_object_become_a_tool_input_error() {
        let call = json!({"choices": [{"delta": {"role": "assistant", "function_call": {"name": "f", "arguments": "not json"}}, "index": 0, "finish_reason": "function_call"}], "created": 5}).to_string();
        let (out, _) = translate(plan(), &[call, "[DONE]".into()]);
        let chunks = parse_chunks(&out);
        assert_well_formed(&chunks);
        assert_eq!(chunks[4]["type"], "tool-input-error");
        assert_eq!(chunks[4]["input"], "not json");
        assert!(
            chunks[4]["errorText"]
                .as_str()
                .unwrap()
                .contains("not a JSON object")
        );
        assert!(!out.contains("tool-input-available"));
    }

    #[test]
    fn reasoning_is_closed_before_text_and_text_before_reasoning() {
        let (out, _) = translate(
            plan(),
            &[
                reasoning_chunk("думаю"),
                text_chunk("ответ"),
                reasoning_chunk("ещё"),
                text_chunk("всё"),
                finish_chunk("stop"),
                "[DONE]".into(),
            ],
        );
        let chunks = parse_chunks(&out);
        assert_well_formed(&chunks);
        let sequence: Vec<String> = chunks
            .iter()
            .map(|c| {
                format!(
                    "{} {}",
                    c["type"].as_str().unwrap_or("[DONE]"),
                    c["id"].as_str().unwrap_or("")
                )
            })
            .collect();
        assert_eq!(
            sequence,
            [
                "start ",
                "start-step ",
                "reasoning-start reasoning-0",
                "reasoning-delta reasoning-0",
                "reasoning-end reasoning-0",
                "text-start txt-0",
                "text-delta txt-0",
                "text-end txt-0",
                "reasoning-start reasoning-1",
                "reasoning-delta reasoning-1",
                "reasoning-end reasoning-1",
                "text-start txt-1",
                "text-delta txt-1",
                "text-end txt-1",
                "finish-step ",
                "finish ",
                "[DONE] ",
            ]
        );
    }

    #[test]
    fn finish_reasons_come_only_from_the_allowed_list() {
        for (gigachat, ui) in [
            ("stop", "stop"),
            ("length", "length"),
            ("blacklist", "content-filter"),
            ("error", "error"),
            ("function_call", "other"),
            ("unknown", "other"),
            ("something_new", "other"),
        ] {
            let (out, _) = translate(
                plan(),
                &[text_chunk("a"), finish_chunk(gigachat), "[DONE]".into()],
            );
            let chunks = parse_chunks(&out);
            assert_well_formed(&chunks);
            let finish = chunks.iter().find(|c| c["type"] == "finish").unwrap();
            assert_eq!(finish["finishReason"], ui, "{gigachat}");
        }
        // `stop` after a call is a tool-calls finish.
        let call = json!({"choices": [{"delta": {"function_call": {"name": "f", "arguments": {}}}, "index": 0}], "created": 5}).to_string();
        let (out, _) = translate(plan(), &[call, finish_chunk("stop"), "[DONE]".into()]);
        assert!(out.contains("\"finishReason\":\"tool-calls\""), "{out}");
    }

    #[test]
    fn an_empty_answer_still_starts_and_finishes() {
        let (out, _) = translate(plan(), &[finish_chunk("stop"), "[DONE]".into()]);
        assert_eq!(
            out,
            "data: {\"type\":\"start\"}\n\ndata: {\"type\":\"start-step\"}\n\ndata: {\"type\":\"finish-step\"}\n\ndata: {\"type\":\"finish\",\"finishReason\":\"stop\"}\n\ndata: [DONE]\n\n"
        );
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
        assert!(!out.contains("рисую"), "{out}");
        assert!(out.contains("\"delta\":\"готово\""), "{out}");
    }

    #[test]
    fn the_proxys_error_event_becomes_a_readable_error_chunk_then_done() {
        let error = r#"{"error":{"message":"GigaChat stopped sending in the middle of the answer (GIGACHAT_PROXY_STREAM_IDLE_TIMEOUT)","code":"upstream_timeout","request_id":"R"}}"#;
        let (out, stopped) = translate(
            plan(),
            &[text_chunk("Hi"), error.into(), finish_chunk("stop")],
        );
        assert!(stopped);
        assert!(out.ends_with(concat!(
            "data: {\"type\":\"text-delta\",\"id\":\"txt-0\",\"delta\":\"Hi\"}\n\n",
            "data: {\"type\":\"error\",\"errorText\":\"GigaChat stopped sending in the middle of the answer (GIGACHAT_PROXY_STREAM_IDLE_TIMEOUT) (request id R)\"}\n\n",
            "data: [DONE]\n\n"
        )), "{out}");
        assert!(!out.contains("finish"), "{out}");
    }

    #[test]
    fn a_gigachat_error_object_becomes_a_sentence_not_json() {
        let error = r#"{"status":429,"message":"Too many requests"}"#;
        let (out, stopped) = translate(plan(), &[error.into(), "[DONE]".into()]);
        assert!(stopped);
        assert_eq!(
            out,
            "data: {\"type\":\"error\",\"errorText\":\"GigaChat failed with status 429: Too many requests (request id R)\"}\n\ndata: [DONE]\n\n"
        );
    }

    #[test]
    fn a_stream_that_breaks_off_ends_with_an_error_not_silence() {
        for events in [
            vec![text_chunk("Hal")],
            vec![text_chunk("Hal"), "[DONE]".into()],
        ] {
            let (out, _) = translate(plan(), &events);
            let chunks = parse_chunks(&out);
            assert_well_formed(&chunks);
            let last = &chunks[chunks.len() - 2];
            assert_eq!(last["type"], "error", "{out}");
            assert!(
                last["errorText"]
                    .as_str()
                    .unwrap()
                    .contains("ended before it finished")
            );
            assert!(!out.contains("\"type\":\"finish"), "{out}");
        }
        // A finished answer whose [DONE] never came ends normally.
        let (out, _) = translate(plan(), &[text_chunk("Hal"), finish_chunk("stop")]);
        assert!(!out.contains("error"), "{out}");
        assert!(out.ends_with("data: [DONE]\n\n"));
        // An error after the answer finished leaves the answer standing.
        let error = r#"{"error":{"message":"late","code":"upstream_timeout"}}"#;
        let (out, _) = translate(
            plan(),
            &[text_chunk("Hal"), finish_chunk("stop"), error.into()],
        );
        assert!(!out.contains("error"), "{out}");
        assert!(
            out.ends_with("\"finishReason\":\"stop\"}\n\ndata: [DONE]\n\n"),
            "{out}"
        );
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
        assert_well_formed(&parse_chunks(&out));
        assert!(!out.contains("error"));
        let (out, stopped) = translate(plan(), &[text_chunk("a"), r#"{"choices":7}"#.into()]);
        assert!(stopped);
        let chunks = parse_chunks(&out);
        assert_eq!(chunks[chunks.len() - 2]["type"], "error");
        assert_eq!(chunks.last().unwrap(), "[DONE]");
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
                usage_chunk(),
            ],
        );
        assert!(out.ends_with("data: [DONE]\n\n"));
        assert!(!out.contains("late") && !out.contains("usage"), "{out}");
        assert_eq!(out.matches("[DONE]").count(), 1);
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
        assert!(
            !out.contains("late") && !out.contains("finish-step"),
            "{out}"
        );
        assert_eq!(out.matches("[DONE]").count(), 1);
    }

    #[test]
    fn hostile_text_is_escaped_into_valid_json() {
        let nasty = "\"}\n\ndata: {\"type\":\"finish\"}\u{0}\u{2028}";
        let (out, _) = translate(
            plan(),
            &[text_chunk(nasty), finish_chunk("stop"), "[DONE]".into()],
        );
        let chunks = parse_chunks(&out);
        assert_well_formed(&chunks);
        assert_eq!(chunks[3]["delta"], nasty);
    }

    /// The block chunks are framed by hand (they are the hot path); each
    /// must be the bytes serde_json writes for the chunk as a struct, for
    /// any text and any block number.
    #[test]
    fn hand_framed_block_chunks_are_the_bytes_serde_writes() {
        #[derive(Serialize)]
        struct BlockOut<'a> {
            #[serde(rename = "type")]
            kind: &'a str,
            id: String,
        }
        #[derive(Serialize)]
        struct DeltaOut<'a> {
            #[serde(rename = "type")]
            kind: &'a str,
            id: String,
            delta: &'a str,
        }
        fn data(chunk: &impl Serialize) -> String {
            format!("data: {}\n\n", serde_json::to_string(chunk).unwrap())
        }
        let texts = [
            "Привет",
            "\"}\n\ndata: {\"type\":\"finish\"}",
            "\u{0}\u{1f}\u{7f}\u{2028}\u{2029}\\ \t\r",
            "🙂 emoji",
        ];
        for (kind, prefix, number) in [
            (Block::Text, "txt", 0),
            (Block::Text, "txt", 9),
            (Block::Reasoning, "reasoning", 10),
            (Block::Reasoning, "reasoning", 12_345),
        ] {
            let mut framing = UiFraming::new(plan(), "R");
            framing.started = true;
            match kind {
                Block::Text => framing.texts = number,
                Block::Reasoning => framing.reasonings = number,
            }
            let id = format!("{prefix}-{number}");
            let name = |suffix: &str| {
                format!("{}-{suffix}", if prefix == "txt" { "text" } else { prefix })
            };
            for text in texts {
                let mut out = BytesMut::new();
                framing.delta(kind, text, &mut out);
                framing.close_block(&mut out);
                let expected = [
                    data(&BlockOut {
                        kind: &name("start"),
                        id: id.clone(),
                    }),
                    data(&DeltaOut {
                        kind: &name("delta"),
                        id: id.clone(),
                        delta: text,
                    }),
                    data(&BlockOut {
                        kind: &name("end"),
                        id: id.clone(),
                    }),
                ]
                .concat();
                assert_eq!(std::str::from_utf8(&out).unwrap(), expected);
                // The next block of this kind is the next number.
                match kind {
                    Block::Text => framing.texts = number,
                    Block::Reasoning => framing.reasonings = number,
                }
            }
        }
    }

    async fn through_stream(plan: UiPlan, chunks: Vec<Bytes>) -> (String, Option<Usage>) {
        recorded::through_stream(UiChunks::new(plan, "R"), chunks).await
    }

    #[tokio::test]
    async fn every_byte_split_of_a_recorded_stream_gives_the_same_output() {
        for recorded in [RECORDED_TEXT, CALL_THEN_FINISH, CALL_IN_FINISH] {
            let bytes = Bytes::from_static(recorded.as_bytes());
            let (whole, whole_usage) = through_stream(plan(), vec![bytes.clone()]).await;
            assert!(whole.ends_with("data: [DONE]\n\n"), "{whole}");
            assert!(!whole.contains("error"), "{whole}");
            assert!(whole_usage.is_some());
            assert_well_formed(&parse_chunks(&whole));
            for split in 1..bytes.len() {
                let (out, usage) =
                    through_stream(plan(), vec![bytes.slice(..split), bytes.slice(split..)]).await;
                assert_eq!(out, whole, "split at {split}");
                assert_eq!(usage, whole_usage, "split at {split}");
            }
            let singles = (0..bytes.len()).map(|i| bytes.slice(i..i + 1)).collect();
            assert_eq!(through_stream(plan(), singles).await.0, whole);
        }
    }

    #[tokio::test]
    async fn an_upstream_that_breaks_off_mid_event_ends_with_an_error() {
        let cut = &RECORDED_TEXT[..RECORDED_TEXT.find("Начинаем").unwrap()];
        let (out, _) = through_stream(plan(), vec![Bytes::copy_from_slice(cut.as_bytes())]).await;
        let chunks = parse_chunks(&out);
        assert_well_formed(&chunks);
        assert_eq!(chunks[chunks.len() - 2]["type"], "error");
    }
}
