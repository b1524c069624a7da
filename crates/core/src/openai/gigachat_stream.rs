//! GigaChat's v1 chat stream read once for every dialect that streams it
//! as chunks (OpenAI's `chat.completion.chunk`s, the AI SDK's UI message
//! stream): the rules of the stream live here, each dialect only writes
//! its own framing of what was read.
//!
//! The rules: a chunk's text, reasoning and function call belong to the
//! answer only under the `assistant` role (GigaChat's own roles, such as
//! `function_in_progress` while a built-in runs, are its bookkeeping); a
//! function call arrives whole, in its own chunk or in the finish chunk;
//! the answer has finished at the first `finish_reason`, and nothing of a
//! later chunk is answer any more; the usage may come on the finish chunk
//! or after it and is told once; anything that is not JSON (a gateway's
//! keep-alive) is skipped, unreadable JSON and error objects end the
//! stream with an error; a stream that ends (or sends `[DONE]`) before a
//! finish is an error, never a silent stop; `data: [DONE]` is the last
//! thing written, and nothing follows it.

use std::borrow::Cow;

use bytes::BytesMut;
use http::StatusCode;
use serde::Deserialize;

use super::errors::safe_message;
use super::gigachat::{ChatChunk, ChatUsage, ChunkChoice, FunctionCall};
use super::stream_body::Translate;

/// What a dialect writes for what the reader found.
pub(crate) trait Framing: Send + Unpin + 'static {
    /// Every chunk that could be read, before its pieces: `created` is
    /// GigaChat's timestamp of it, if it gave one.
    fn chunk(&mut self, _created: Option<u64>) {}

    /// One choice of a chunk while the answer has not finished, with the
    /// usage known so far; says whether it finished the answer.
    fn piece(&mut self, piece: Piece<'_>, usage: Option<ChatUsage>, out: &mut BytesMut) -> Step;

    /// Called once after the answer finished, unless `piece` told the
    /// usage itself: as soon as GigaChat's usage is known, or when the
    /// stream closes without it (`None`).
    fn finished(&mut self, usage: Option<ChatUsage>, out: &mut BytesMut);

    /// The answer failed before it finished: writes the error event
    /// (whole, ending in a blank line). `data: [DONE]` follows it.
    fn fault(&mut self, fault: Fault, out: &mut BytesMut);
}

/// One choice of a chunk, as far as it is the answer.
#[derive(Debug, Default)]
pub(crate) struct Piece<'a> {
    pub index: u32,
    /// Never empty.
    pub reasoning: Option<Cow<'a, str>>,
    /// Never empty.
    pub text: Option<Cow<'a, str>>,
    pub call: Option<FunctionCall>,
    /// GigaChat's id of the call's state, to be echoed as the call's id.
    pub state_id: Option<String>,
    /// GigaChat's own reason, as it sent it.
    pub finish_reason: Option<Cow<'a, str>>,
}

impl<'a> Piece<'a> {
    fn of(choice: ChunkChoice<'a>) -> Self {
        let ChunkChoice {
            index,
            delta,
            finish_reason,
        } = choice;
        let foreign_role = delta
            .role
            .as_deref()
            .is_some_and(|role| role != "assistant");
        if foreign_role {
            return Piece {
                index,
                finish_reason,
                ..Piece::default()
            };
        }
        Piece {
            index,
            reasoning: delta.reasoning_content.filter(|text| !text.is_empty()),
            text: delta.content.filter(|text| !text.is_empty()),
            call: delta.function_call,
            state_id: delta.functions_state_id,
            finish_reason,
        }
    }
}

/// What a piece did to the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// The answer goes on.
    Continues,
    /// It finished; `usage_told` when the usage went out with the finish.
    Finished { usage_told: bool },
    /// The dialect ended the answer itself (a stop string): finished, and
    /// the upstream is to be dropped so that GigaChat stops generating.
    Cut { usage_told: bool },
}

/// Why an answer failed before it finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fault {
    /// A chunk that is JSON but no chunk the proxy can read.
    Malformed,
    /// The stream ended, or sent `[DONE]`, before any `finish_reason`.
    Incomplete,
    /// The proxy's own `{"error": {"message", "code"}}`: the upstream
    /// broke off or timed out. Both are made safe to show, and never empty.
    Proxy {
        message: Option<String>,
        code: Option<String>,
    },
    /// GigaChat's `{"status", "message"}` with an error status; the
    /// message made safe to show, never empty.
    Upstream {
        status: StatusCode,
        message: Option<String>,
    },
}

/// GigaChat's stream, read for the framing `F`.
pub(crate) struct GigaChatStream<F> {
    framing: F,
    /// The first usage GigaChat sent.
    usage: Option<ChatUsage>,
    /// A `finish_reason` came (or the framing cut the answer).
    finished: bool,
    usage_told: bool,
    /// `[DONE]` (and whatever had to precede it) has been written.
    closed: bool,
}

impl<F: Framing> GigaChatStream<F> {
    pub(crate) fn reading(framing: F) -> Self {
        Self {
            framing,
            usage: None,
            finished: false,
            usage_told: false,
            closed: false,
        }
    }

    /// Tells the usage once the answer finished: as soon as it is known,
    /// or `at_end` whether it is or not.
    fn tell_usage(&mut self, out: &mut BytesMut, at_end: bool) {
        if self.finished && !self.usage_told && (at_end || self.usage.is_some()) {
            self.framing.finished(self.usage, out);
            self.usage_told = true;
        }
    }

    /// Ends a finished answer with `[DONE]`, the usage told first; an
    /// answer that never finished ends with an error instead.
    fn close(&mut self, out: &mut BytesMut) {
        if self.closed {
            return;
        }
        if !self.finished {
            self.fail(Fault::Incomplete, out);
            return;
        }
        self.tell_usage(out, true);
        out.extend_from_slice(b"data: [DONE]\n\n");
        self.closed = true;
    }

    /// Ends the stream with the framing's error event and `[DONE]`. After
    /// a finished answer (an error while waiting for GigaChat's `[DONE]`)
    /// the answer stands and closes normally.
    fn fail(&mut self, fault: Fault, out: &mut BytesMut) {
        if self.closed {
            return;
        }
        if self.finished {
            self.close(out);
            return;
        }
        self.framing.fault(fault, out);
        out.extend_from_slice(b"data: [DONE]\n\n");
        self.closed = true;
    }
}

impl<F: Framing> Translate for GigaChatStream<F> {
    fn event(&mut self, data: &str, out: &mut BytesMut) -> bool {
        if self.closed {
            // Past GigaChat's `[DONE]`: the rest is read to its end (so the
            // connection can be reused) and ignored.
            return true;
        }
        let data = data.trim();
        if data == "[DONE]" {
            self.close(out);
            return true;
        }
        if !data.starts_with('{') {
            // Not a chunk (a keep-alive of some gateway, say): nothing of
            // the answer is in it.
            return true;
        }
        let Ok(chunk) = serde_json::from_str::<ChatChunk<'_>>(data) else {
            self.fail(Fault::Malformed, out);
            return false;
        };
        self.framing.chunk(chunk.created);
        if chunk.choices.is_empty() && chunk.usage.is_none() {
            if let Some(fault) = fault_in(data) {
                self.fail(fault, out);
                return false;
            }
            return true;
        }
        if self.usage.is_none() {
            self.usage = chunk.usage;
        }
        if !self.finished {
            for choice in chunk.choices {
                match self.framing.piece(Piece::of(choice), self.usage, out) {
                    Step::Continues => continue,
                    Step::Finished { usage_told } => {
                        self.finished = true;
                        self.usage_told = usage_told;
                        break;
                    }
                    Step::Cut { usage_told } => {
                        self.finished = true;
                        self.usage_told = usage_told;
                        // The upstream is dropped and `finish` closes the
                        // stream.
                        return false;
                    }
                }
            }
        }
        self.tell_usage(out, false);
        true
    }

    fn finish(&mut self, out: &mut BytesMut) {
        self.close(out);
    }
}

/// An error object where a chunk should be: the proxy's own
/// `{"error": {"message", "code", …}}` or GigaChat's `{"status",
/// "message"}` with an error status.
fn fault_in(data: &str) -> Option<Fault> {
    #[derive(Deserialize)]
    struct ErrorEvent<'a> {
        #[serde(borrow)]
        error: Option<ErrorBody<'a>>,
        status: Option<u16>,
        #[serde(borrow)]
        message: Option<Cow<'a, str>>,
    }
    #[derive(Deserialize)]
    struct ErrorBody<'a> {
        #[serde(borrow)]
        message: Option<Cow<'a, str>>,
        #[serde(borrow)]
        code: Option<Cow<'a, str>>,
    }
    fn shown(text: Option<&str>) -> Option<String> {
        text.map(safe_message).filter(|text| !text.is_empty())
    }
    let event: ErrorEvent<'_> = serde_json::from_str(data).ok()?;
    if let Some(error) = event.error {
        return Some(Fault::Proxy {
            message: shown(error.message.as_deref()),
            code: shown(error.code.as_deref()),
        });
    }
    let status = StatusCode::from_u16(event.status?)
        .ok()
        .filter(|status| status.is_client_error() || status.is_server_error())?;
    Some(Fault::Upstream {
        status,
        message: shown(event.message.as_deref()),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    /// Records what the reader hands a framing, one line each.
    #[derive(Default)]
    struct Recorder {
        /// What `piece` says when a piece has a finish reason.
        finish_step: Option<Step>,
        /// Cut the answer at the first piece whose text is this.
        cut_at: Option<&'static str>,
        seen: Vec<String>,
    }

    impl Framing for Recorder {
        fn chunk(&mut self, created: Option<u64>) {
            self.seen.push(format!("chunk {created:?}"));
        }

        fn piece(
            &mut self,
            piece: Piece<'_>,
            usage: Option<ChatUsage>,
            out: &mut BytesMut,
        ) -> Step {
            out.extend_from_slice(b"data: {}\n\n");
            self.seen.push(format!(
                "piece {} r={:?} t={:?} call={:?} state={:?} finish={:?} usage={}",
                piece.index,
                piece.reasoning,
                piece.text,
                piece.call.as_ref().map(|call| call.name.as_str()),
                piece.state_id,
                piece.finish_reason,
                usage.map_or(0, |usage| usage.total_tokens),
            ));
            if self.cut_at.is_some() && piece.text.as_deref() == self.cut_at {
                return Step::Cut { usage_told: false };
            }
            match piece.finish_reason {
                Some(_) => self
                    .finish_step
                    .unwrap_or(Step::Finished { usage_told: false }),
                None => Step::Continues,
            }
        }

        fn finished(&mut self, usage: Option<ChatUsage>, out: &mut BytesMut) {
            out.extend_from_slice(b"data: {}\n\n");
            self.seen.push(format!(
                "usage {}",
                usage.map_or(0, |usage| usage.total_tokens)
            ));
        }

        fn fault(&mut self, fault: Fault, out: &mut BytesMut) {
            out.extend_from_slice(b"data: {}\n\n");
            self.seen.push(format!("fault {fault:?}"));
        }
    }

    fn read(framing: Recorder, events: &[String]) -> (Vec<String>, String, bool) {
        let mut stream = GigaChatStream::reading(framing);
        let (out, stopped) = recorded::feed_into(&mut stream, events);
        (stream.framing.seen, out, stopped)
    }

    fn chunk(delta: serde_json::Value, finish: Option<&str>) -> String {
        json!({"choices": [{"delta": delta, "index": 0, "finish_reason": finish}], "created": 5})
            .to_string()
    }

    fn usage(total: u64) -> String {
        json!({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": total}}).to_string()
    }

    /// A chunk's text is read where it lies (no copy per piece of text)
    /// unless it has escapes, which must be read as JSON reads them.
    #[test]
    fn text_without_escapes_is_borrowed_from_the_chunk() {
        let data = r#"{"choices":[{"delta":{"content":"Привет","reasoning_content":"думаю","role":"assistant"},"index":0,"finish_reason":"stop"}]}"#;
        let chunk: ChatChunk<'_> = serde_json::from_str(data).unwrap();
        let choice = &chunk.choices[0];
        for text in [
            &choice.delta.content,
            &choice.delta.reasoning_content,
            &choice.delta.role,
            &choice.finish_reason,
        ] {
            assert!(matches!(text, Some(Cow::Borrowed(_))), "{text:?}");
        }
        let escaped = r#"{"choices":[{"delta":{"content":"a\n\"b\"","role":null}}]}"#;
        let chunk: ChatChunk<'_> = serde_json::from_str(escaped).unwrap();
        assert_eq!(chunk.choices[0].delta.content.as_deref(), Some("a\n\"b\""));
        assert_eq!(chunk.choices[0].delta.role, None);
        assert_eq!(chunk.choices[0].finish_reason, None);
    }

    #[test]
    fn foreign_roles_keep_only_their_finish_and_empty_text_is_none() {
        let (seen, _, _) = read(
            Recorder::default(),
            &[
                chunk(
                    json!({"role": "function_in_progress", "content": "рисую", "function_call": {"name": "f"}}),
                    None,
                ),
                chunk(
                    json!({"role": "assistant", "content": "", "reasoning_content": ""}),
                    None,
                ),
                chunk(
                    json!({"role": "function_in_progress", "content": "x"}),
                    Some("stop"),
                ),
                "[DONE]".into(),
            ],
        );
        assert_eq!(
            seen,
            [
                "chunk Some(5)",
                "piece 0 r=None t=None call=None state=None finish=None usage=0",
                "chunk Some(5)",
                "piece 0 r=None t=None call=None state=None finish=None usage=0",
                "chunk Some(5)",
                "piece 0 r=None t=None call=None state=None finish=Some(\"stop\") usage=0",
                "usage 0",
            ]
        );
    }

    #[test]
    fn a_call_comes_with_its_state_id_in_either_shape() {
        let call = json!({"role": "assistant", "function_call": {"name": "f", "arguments": {}}, "functions_state_id": "s1"});
        let (seen, _, _) = read(
            Recorder::default(),
            &[chunk(call.clone(), Some("function_call")), "[DONE]".into()],
        );
        assert_eq!(
            seen[1],
            "piece 0 r=None t=None call=Some(\"f\") state=Some(\"s1\") finish=Some(\"function_call\") usage=0"
        );
        let (seen, _, _) = read(
            Recorder::default(),
            &[
                chunk(call, None),
                chunk(json!({}), Some("function_call")),
                "[DONE]".into(),
            ],
        );
        assert_eq!(
            seen[1],
            "piece 0 r=None t=None call=Some(\"f\") state=Some(\"s1\") finish=None usage=0"
        );
        assert_eq!(
            seen[3],
            "piece 0 r=None t=None call=None state=None finish=Some(\"function_call\") usage=0"
        );
    }

    #[test]
    fn usage_after_the_finish_is_told_once_when_it_comes_and_never_before() {
        let (seen, out, _) = read(
            Recorder::default(),
            &[
                usage(3),
                chunk(json!({"content": "a"}), None),
                chunk(json!({}), Some("stop")),
                usage(9),
                usage(11),
                chunk(json!({"content": "late"}), None),
                "[DONE]".into(),
            ],
        );
        // The first usage stands; it is told after the finish, once.
        assert_eq!(
            seen.iter()
                .filter(|line| line.starts_with("usage"))
                .collect::<Vec<_>>(),
            ["usage 3"]
        );
        assert_eq!(seen.iter().position(|line| line == "usage 3"), Some(5));
        // Nothing of a chunk after the finish is answer.
        assert!(!seen.iter().any(|line| line.contains("late")), "{seen:?}");
        assert!(out.ends_with("data: [DONE]\n\n"));
        // Usage the finish carried is not told again.
        let (seen, _, _) = read(
            Recorder {
                finish_step: Some(Step::Finished { usage_told: true }),
                ..Recorder::default()
            },
            &[chunk(json!({}), Some("stop")), usage(4), "[DONE]".into()],
        );
        assert!(
            !seen.iter().any(|line| line.starts_with("usage")),
            "{seen:?}"
        );
    }

    #[test]
    fn a_second_choice_after_a_finish_is_not_answer() {
        let both = json!({"choices": [
            {"delta": {"content": "a"}, "index": 0, "finish_reason": "stop"},
            {"delta": {"content": "b"}, "index": 1}]})
        .to_string();
        let (seen, _, _) = read(Recorder::default(), &[both, "[DONE]".into()]);
        assert!(!seen.iter().any(|line| line.contains("\"b\"")), "{seen:?}");
    }

    #[test]
    fn a_cut_drops_the_upstream_and_closes_as_finished() {
        let (seen, out, stopped) = read(
            Recorder {
                cut_at: Some("END"),
                ..Recorder::default()
            },
            &[
                chunk(json!({"content": "END"}), None),
                chunk(json!({"content": "more"}), Some("stop")),
            ],
        );
        assert!(stopped);
        assert_eq!(seen.last().unwrap(), "usage 0");
        assert!(!out.contains("more"));
        assert_eq!(out.matches("[DONE]").count(), 1);
    }

    #[test]
    fn errors_and_unfinished_answers_end_with_one_fault_then_done() {
        let cases: [(Vec<String>, &str); 6] = [
            (
                vec![chunk(json!({"content": "a"}), None)],
                "fault Incomplete",
            ),
            (
                vec![chunk(json!({"content": "a"}), None), "[DONE]".into()],
                "fault Incomplete",
            ),
            (vec![r#"{"choices":7}"#.into()], "fault Malformed"),
            (
                vec![r#"{"error":{"message":"broke off","code":"upstream_timeout"}}"#.into()],
                r#"fault Proxy { message: Some("broke off"), code: Some("upstream_timeout") }"#,
            ),
            (
                vec![r#"{"error":{"message":""}}"#.into()],
                "fault Proxy { message: None, code: None }",
            ),
            (
                vec![r#"{"status":429}"#.into()],
                "fault Upstream { status: 429, message: None }",
            ),
        ];
        for (events, fault) in cases {
            let (seen, out, _) = read(Recorder::default(), &events);
            assert_eq!(seen.last().unwrap(), fault, "{events:?}");
            assert_eq!(
                seen.iter().filter(|line| line.starts_with("fault")).count(),
                1
            );
            assert!(out.ends_with("data: {}\n\ndata: [DONE]\n\n"), "{out}");
            assert_eq!(out.matches("[DONE]").count(), 1);
        }
        // A status that is no error, and a keep-alive, are not faults.
        let (seen, out, _) = read(
            Recorder::default(),
            &[
                r#"{"status":200,"message":"ok"}"#.into(),
                "ping".into(),
                chunk(json!({}), Some("stop")),
            ],
        );
        assert!(
            !seen.iter().any(|line| line.starts_with("fault")),
            "{seen:?}"
        );
        assert!(out.ends_with("data: [DONE]\n\n"));
    }

    #[test]
    fn an_error_after_the_finish_lets_the_answer_stand() {
        let (seen, out, stopped) = read(
            Recorder::default(),
            &[
                chunk(json!({}), Some("stop")),
                r#"{"error":{"message":"idle"}}"#.into(),
                chunk(json!({"content": "late"}), None),
            ],
        );
        assert!(stopped);
        assert!(
            !seen.iter().any(|line| line.starts_with("fault")),
            "{seen:?}"
        );
        assert_eq!(seen.last().unwrap(), "usage 0");
        assert_eq!(out.matches("[DONE]").count(), 1);
    }

    #[test]
    fn error_messages_are_made_safe_to_show() {
        let secret = format!(
            r#"{{"status":401,"message":"bad token {}"}}"#,
            "A".repeat(64)
        );
        match fault_in(&secret) {
            Some(Fault::Upstream { status, message }) => {
                assert_eq!(status, StatusCode::UNAUTHORIZED);
                assert!(!message.unwrap().contains(&"A".repeat(64)));
            }
            other => panic!("{other:?}"),
        }
    }
}

/// GigaChat streams as recorded, and the ways of feeding them to a
/// translator, for the tests of every dialect that reads them.
#[cfg(test)]
pub(crate) mod recorded {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use bytes::{Bytes, BytesMut};
    use http_body::Frame;
    use http_body_util::{BodyExt, StreamBody};
    use serde_json::Value;

    use crate::body::{BoxError, ProxyBody};
    use crate::openai::stream_body::{Translate, TranslatedStream};
    use crate::usage::{Usage, UsageCell};

    /// GigaChat's v1 stream as recorded (the SDK's cassette): multi-byte
    /// text, so splits land inside characters, and usage on the finish.
    pub(crate) const RECORDED_TEXT: &str = concat!(
        "data: {\"choices\":[{\"delta\":{\"content\":\"$1\\\\, 2\\\\, 3$  \\n\\n**Подробный разбор:\",\"role\":\"assistant\"},\"index\":0}],\"created\":1768996176,\"model\":\"GigaChat:2.0.28.2\",\"object\":\"chat.completion\"}\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"**\\n- Начинаем счёт с единицы.\"},\"index\":0}],\"created\":1768996176,\"model\":\"GigaChat:2.0.28.2\",\"object\":\"chat.completion\"}\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"\"},\"index\":0,\"finish_reason\":\"stop\"}],\"created\":1768996176,\"model\":\"GigaChat:2.0.28.2\",\"object\":\"chat.completion\",\"usage\":{\"prompt_tokens\":17,\"completion_tokens\":42,\"total_tokens\":59,\"precached_prompt_tokens\":2}}\n\n",
        "data: [DONE]\n\n",
    );

    /// The emulator's shape: the call in its own chunk, then the finish.
    pub(crate) const CALL_THEN_FINISH: &str = concat!(
        "data: {\"choices\":[{\"delta\":{\"content\":\"\",\"role\":\"assistant\",\"function_call\":{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Москва\"}},\"functions_state_id\":\"019ed0c7-f14d\"},\"index\":0}],\"created\":1764441600,\"model\":\"GigaChat-2-Max\",\"object\":\"chat.completion\"}\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"\"},\"index\":0,\"finish_reason\":\"function_call\"}],\"created\":1764441600,\"model\":\"GigaChat-2-Max\",\"object\":\"chat.completion\",\"usage\":{\"prompt_tokens\":120,\"completion_tokens\":18,\"total_tokens\":138,\"precached_prompt_tokens\":0}}\n\n",
        "data: [DONE]\n\n",
    );

    /// The other shape GigaChat has sent (and gpt2giga and LiteLLM
    /// expect): the call in the finish chunk.
    pub(crate) const CALL_IN_FINISH: &str = concat!(
        "data: {\"choices\":[{\"delta\":{\"content\":\"\",\"role\":\"assistant\",\"function_call\":{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Москва\"}},\"functions_state_id\":\"019ed0c7-f14d\"},\"index\":0,\"finish_reason\":\"function_call\"}],\"created\":1764441600,\"model\":\"GigaChat-2-Max\",\"object\":\"chat.completion\",\"usage\":{\"prompt_tokens\":120,\"completion_tokens\":18,\"total_tokens\":138,\"precached_prompt_tokens\":0}}\n\n",
        "data: [DONE]\n\n",
    );

    /// A text chunk without usage.
    pub(crate) fn text_chunk(content: &str) -> String {
        serde_json::json!({"choices": [{"delta": {"content": content}, "index": 0}], "created": 5, "model": "GigaChat", "object": "chat.completion"}).to_string()
    }

    /// The `data:` of each event of an SSE text.
    pub(crate) fn sse_events(sse: &str) -> Vec<String> {
        sse.split("\n\n")
            .filter_map(|event| event.strip_prefix("data: "))
            .map(str::to_owned)
            .collect()
    }

    /// The `data:` payloads of an SSE text: JSON, or the string `[DONE]`.
    pub(crate) fn parse_events(sse: &str) -> Vec<Value> {
        assert!(sse.ends_with("\n\n"), "{sse:?}");
        sse.split("\n\n")
            .filter(|event| !event.is_empty())
            .map(|event| {
                let data = event.strip_prefix("data: ").unwrap();
                if data == "[DONE]" {
                    Value::String("[DONE]".into())
                } else {
                    serde_json::from_str(data).unwrap()
                }
            })
            .collect()
    }

    /// Feeds events' data straight to the translator (as `TranslatedStream`
    /// does), stopping where it asks to; returns the output and whether it
    /// asked to stop.
    pub(crate) fn feed(mut translator: impl Translate, events: &[String]) -> (String, bool) {
        feed_into(&mut translator, events)
    }

    /// [`feed`], the translator kept for a look at it afterwards.
    pub(crate) fn feed_into(translator: &mut impl Translate, events: &[String]) -> (String, bool) {
        let mut out = BytesMut::new();
        let mut stopped = false;
        for data in events {
            if !translator.event(data, &mut out) {
                stopped = true;
                break;
            }
        }
        translator.finish(&mut out);
        (String::from_utf8(out.to_vec()).unwrap(), stopped)
    }

    /// The translator's output when the upstream body arrives in these
    /// chunks, and the usage the route would log.
    pub(crate) async fn through_stream(
        translator: impl Translate,
        chunks: Vec<Bytes>,
    ) -> (String, Option<Usage>) {
        let frames = chunks
            .into_iter()
            .map(|chunk| Ok::<_, BoxError>(Frame::data(chunk)));
        let body: ProxyBody = StreamBody::new(futures_util::stream::iter(frames)).boxed();
        let usage = UsageCell::default();
        let stream = TranslatedStream::new(body, translator, usage.clone());
        let bytes = stream.collect().await.unwrap().to_bytes();
        (String::from_utf8(bytes.to_vec()).unwrap(), usage.get())
    }
}
