//! GigaChat's chat stream → the Responses API's event stream.
//!
//! Each event is `event: <type>` plus `data:` JSON carrying the same
//! `type` and a `sequence_number`. The order is the one OpenAI sends and
//! the `openai` SDKs' stream accumulators enforce: `response.created` first,
//! each output item opened (`output_item.added`, its content part added)
//! before its deltas and closed (`…done`) before the next one opens, and
//! `response.completed` (or `.incomplete`) last, with the whole response
//! and its usage. Text deltas go out as GigaChat's chunks arrive; the text
//! is also kept, because the `done` events and the final response repeat
//! it. An upstream failure becomes an `error` event, which every client
//! raises as an API error.

use std::fmt::Write as _;

use bytes::{BufMut, BytesMut};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::openai::gigachat::{self, ChatChunk, ChatUsage, FunctionCall};
use crate::openai::responses::{
    self, ResponsesPlan, function_call_item, item_id, message_item, output_text_part,
    reasoning_item,
};
use crate::openai::stream_body::Translate;

/// The output item whose deltas are arriving.
enum Open {
    Reasoning {
        index: usize,
        id: String,
        text: String,
    },
    Message {
        index: usize,
        id: String,
        text: String,
    },
}

pub(crate) struct ResponseEvents {
    plan: ResponsesPlan,
    request_id: String,
    sequence: u64,
    started: bool,
    open: Option<Open>,
    /// Finished output items, for the final response.
    output: Vec<Value>,
    calls: usize,
    finish_reason: Option<String>,
    usage: Option<ChatUsage>,
    /// The closing event (`completed`/`incomplete`/`error`) is out.
    over: bool,
}

/// The proxy's own event when the upstream broke off mid-answer.
#[derive(Deserialize)]
struct ProxyError {
    error: ProxyErrorBody,
}

#[derive(Deserialize)]
struct ProxyErrorBody {
    #[serde(default)]
    message: String,
    #[serde(default)]
    code: Option<String>,
}

impl ResponseEvents {
    pub fn new(plan: ResponsesPlan, request_id: &str) -> Self {
        Self {
            plan,
            request_id: request_id.to_owned(),
            sequence: 0,
            started: false,
            open: None,
            output: Vec::new(),
            calls: 0,
            finish_reason: None,
            usage: None,
            over: false,
        }
    }

    fn head(&mut self, out: &mut BytesMut, kind: &str) {
        head(&mut self.sequence, out, kind);
    }

    /// An event whose other fields are `fields`.
    fn emit(&mut self, out: &mut BytesMut, kind: &str, fields: Value) {
        self.head(out, kind);
        if let Value::Object(fields) = fields {
            for (key, value) in &fields {
                out.put_u8(b',');
                put_json(out, key);
                out.put_u8(b':');
                put_json(out, value);
            }
        }
        out.extend_from_slice(b"}\n\n");
    }

    fn lifecycle(&mut self, out: &mut BytesMut, kind: &str, response: Value) {
        self.emit(out, kind, json!({ "response": response }));
    }

    fn start(&mut self, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        let response = responses::response(
            &self.plan,
            &self.request_id,
            "in_progress",
            None,
            Vec::new(),
            Value::Null,
        );
        self.lifecycle(out, "response.created", response.clone());
        self.lifecycle(out, "response.in_progress", response);
    }

    fn next_index(&self) -> usize {
        self.output.len()
    }

    fn reasoning(&mut self, out: &mut BytesMut, text: &str) {
        if !matches!(self.open, Some(Open::Reasoning { .. })) {
            self.close(out, "completed");
            let index = self.next_index();
            let id = item_id("rs", &self.request_id, index);
            self.emit(
                out,
                "response.output_item.added",
                json!({"output_index": index, "item": {"type": "reasoning", "id": id, "summary": []}}),
            );
            self.emit(
                out,
                "response.reasoning_summary_part.added",
                json!({"item_id": id, "output_index": index, "summary_index": 0,
                       "part": {"type": "summary_text", "text": ""}}),
            );
            self.open = Some(Open::Reasoning {
                index,
                id,
                text: String::new(),
            });
        }
        if let Some(Open::Reasoning {
            index,
            id,
            text: kept,
        }) = &mut self.open
        {
            delta(
                &mut self.sequence,
                out,
                "response.reasoning_summary_text.delta",
                id,
                *index,
                "\"summary_index\":0",
                text,
            );
            kept.push_str(text);
        }
    }

    fn text(&mut self, out: &mut BytesMut, text: &str) {
        if !matches!(self.open, Some(Open::Message { .. })) {
            self.close(out, "completed");
            let index = self.next_index();
            let id = item_id("msg", &self.request_id, index);
            self.emit(
                out,
                "response.output_item.added",
                json!({"output_index": index, "item": {
                    "type": "message", "id": id, "status": "in_progress",
                    "role": "assistant", "content": []}}),
            );
            self.emit(
                out,
                "response.content_part.added",
                json!({"item_id": id, "output_index": index, "content_index": 0,
                       "part": output_text_part("")}),
            );
            self.open = Some(Open::Message {
                index,
                id,
                text: String::new(),
            });
        }
        if let Some(Open::Message {
            index,
            id,
            text: kept,
        }) = &mut self.open
            && !text.is_empty()
        {
            // `logprobs` is required by the `openai` SDK's delta type.
            delta(
                &mut self.sequence,
                out,
                "response.output_text.delta",
                id,
                *index,
                "\"content_index\":0,\"logprobs\":[]",
                text,
            );
            kept.push_str(text);
        }
    }

    /// Closes the item being streamed, if one is.
    fn close(&mut self, out: &mut BytesMut, status: &str) {
        match self.open.take() {
            None => {}
            Some(Open::Reasoning { index, id, text }) => {
                self.emit(
                    out,
                    "response.reasoning_summary_text.done",
                    json!({"item_id": id, "output_index": index, "summary_index": 0, "text": text}),
                );
                self.emit(
                    out,
                    "response.reasoning_summary_part.done",
                    json!({"item_id": id, "output_index": index, "summary_index": 0,
                           "part": {"type": "summary_text", "text": text}}),
                );
                let item = reasoning_item(&id, &text);
                self.emit(
                    out,
                    "response.output_item.done",
                    json!({"output_index": index, "item": item}),
                );
                self.output.push(item);
            }
            Some(Open::Message { index, id, text }) => {
                self.emit(
                    out,
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0,
                           "text": text, "logprobs": []}),
                );
                self.emit(
                    out,
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0,
                           "part": output_text_part(&text)}),
                );
                let item = message_item(&id, status, &text);
                self.emit(
                    out,
                    "response.output_item.done",
                    json!({"output_index": index, "item": item}),
                );
                self.output.push(item);
            }
        }
    }

    /// GigaChat sends a call whole: it goes out as one item at once.
    fn function_call(&mut self, out: &mut BytesMut, call: &FunctionCall, state_id: Option<&str>) {
        let arguments = call.arguments_string();
        if responses::is_structured_output(&self.plan, call) {
            self.text(out, &arguments);
            return;
        }
        self.close(out, "completed");
        let index = self.next_index();
        let id = item_id("fc", &self.request_id, index);
        let call_id = gigachat::tool_call_id(state_id, &self.request_id, self.calls);
        self.calls += 1;
        let name = responses::tool_name(&self.plan, &call.name).to_owned();
        self.emit(
            out,
            "response.output_item.added",
            json!({"output_index": index,
                   "item": function_call_item(&id, &call_id, &name, "", "in_progress")}),
        );
        self.emit(
            out,
            "response.function_call_arguments.delta",
            json!({"item_id": id, "output_index": index, "delta": arguments}),
        );
        self.emit(
            out,
            "response.function_call_arguments.done",
            json!({"item_id": id, "output_index": index, "name": name, "arguments": arguments}),
        );
        let item = function_call_item(&id, &call_id, &name, &arguments, "completed");
        self.emit(
            out,
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        );
        self.output.push(item);
    }

    fn chunk(&mut self, out: &mut BytesMut, chunk: ChatChunk<'_>) {
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage);
        }
        // GigaChat answers one choice.
        let Some(choice) = chunk.choices.into_iter().next() else {
            return;
        };
        if let Some(reason) = &choice.finish_reason {
            self.finish_reason = Some(reason.clone().into_owned());
        }
        let delta = choice.delta;
        // Any other role (`function_in_progress` while a built-in runs) is
        // GigaChat's bookkeeping, not the answer: only its finish counts.
        if delta
            .role
            .as_deref()
            .is_some_and(|role| role != "assistant")
        {
            return;
        }
        if let Some(reasoning) = delta.reasoning_content.as_deref().filter(|r| !r.is_empty()) {
            self.start(out);
            self.reasoning(out, reasoning);
        }
        if let Some(text) = delta.content.as_deref().filter(|t| !t.is_empty()) {
            self.start(out);
            self.text(out, text);
        }
        if let Some(call) = &delta.function_call {
            self.start(out);
            self.function_call(out, call, delta.functions_state_id.as_deref());
        }
    }

    fn fail(&mut self, out: &mut BytesMut, message: &str, code: &str) {
        self.over = true;
        self.open = None;
        // Both shapes clients read: OpenAI's documented flat fields, and
        // the nested `error` the `openai` SDKs and the AI SDK also raise.
        self.emit(
            out,
            "error",
            json!({
                "code": code,
                "message": message,
                "param": null,
                "error": {
                    "type": "server_error",
                    "code": code,
                    "message": message,
                    "param": null,
                    "request_id": self.request_id,
                },
            }),
        );
    }

    fn complete(&mut self, out: &mut BytesMut) {
        self.over = true;
        self.start(out);
        let (status, incomplete) = responses::outcome(self.finish_reason.as_deref());
        if self.open.is_none() && self.output.is_empty() {
            // An empty answer is still one (empty) message, as OpenAI sends.
            self.text(out, "");
        }
        self.close(out, status);
        let output = std::mem::take(&mut self.output);
        let response = responses::response(
            &self.plan,
            &self.request_id,
            status,
            incomplete,
            output,
            responses::usage(self.usage.as_ref()),
        );
        let kind = if incomplete.is_some() {
            "response.incomplete"
        } else {
            "response.completed"
        };
        self.lifecycle(out, kind, response);
    }
}

/// `event: <type>` and the data line up to its first field.
fn head(sequence: &mut u64, out: &mut BytesMut, kind: &str) {
    let number = *sequence;
    *sequence += 1;
    // Writing into memory cannot fail.
    let _ = write!(
        out,
        "event: {kind}\ndata: {{\"type\":\"{kind}\",\"sequence_number\":{number}"
    );
}

/// A text delta, written without building a JSON tree: the hot path.
fn delta(
    sequence: &mut u64,
    out: &mut BytesMut,
    kind: &str,
    item_id: &str,
    output_index: usize,
    part: &str,
    delta: &str,
) {
    head(sequence, out, kind);
    let _ = write!(
        out,
        ",\"item_id\":\"{item_id}\",\"output_index\":{output_index},{part},\"delta\":"
    );
    put_json(out, delta);
    out.extend_from_slice(b"}\n\n");
}

fn put_json<T: serde::Serialize + ?Sized>(out: &mut BytesMut, value: &T) {
    // Writing into memory cannot fail, and strings and `Value`s always
    // serialize.
    let _ = serde_json::to_writer(out.writer(), value);
}

impl Translate for ResponseEvents {
    fn event(&mut self, data: &str, out: &mut BytesMut) -> bool {
        if self.over {
            return false;
        }
        let data = data.trim();
        if data == "[DONE]" {
            // The answer is over: the client need not wait for the upstream
            // connection to close. Without a finish it is not whole, and
            // saying "completed" would hide a cut answer.
            self.finish(out);
            return true;
        }
        if data.starts_with("{\"error\"")
            && let Ok(ProxyError { error }) = serde_json::from_str::<ProxyError>(data)
        {
            let code = error.code.unwrap_or_else(|| "upstream_error".to_owned());
            self.fail(out, &error.message, &code);
            return false;
        }
        // Anything that is not a chunk (a field GigaChat added at the top
        // level, a keep-alive) has nothing to translate.
        if let Ok(chunk) = serde_json::from_str::<ChatChunk<'_>>(data) {
            self.chunk(out, chunk);
        }
        true
    }

    fn finish(&mut self, out: &mut BytesMut) {
        if self.over {
            return;
        }
        if self.finish_reason.is_some() {
            self.complete(out);
        } else {
            self.fail(
                out,
                "GigaChat's answer ended before it was complete",
                "upstream_incomplete",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::openai::config::OpenAiConfig;

    fn plan(request: Value) -> ResponsesPlan {
        let config = OpenAiConfig {
            default_model: "GigaChat".to_owned(),
            ..OpenAiConfig::default()
        };
        responses::translate_request(&request, &config).unwrap().1
    }

    /// Feeds upstream events one by one; returns what went out after each
    /// (the last entry is `finish`'s output) and whether each was accepted.
    fn run(plan: ResponsesPlan, upstream: &[&str]) -> (Vec<String>, Vec<bool>) {
        let mut translator = ResponseEvents::new(plan, "R1");
        let mut outputs = Vec::new();
        let mut accepted = Vec::new();
        for data in upstream {
            let mut out = BytesMut::new();
            let go_on = translator.event(data, &mut out);
            accepted.push(go_on);
            outputs.push(String::from_utf8(out.to_vec()).unwrap());
            if !go_on {
                break;
            }
        }
        let mut out = BytesMut::new();
        translator.finish(&mut out);
        outputs.push(String::from_utf8(out.to_vec()).unwrap());
        (outputs, accepted)
    }

    /// Parses SSE events, checking that each `event:` names its data's
    /// `type` and that sequence numbers count up from 0.
    fn events(text: &str) -> Vec<Value> {
        let mut events = Vec::new();
        for block in text.split("\n\n").filter(|b| !b.is_empty()) {
            let (name, data) = block.split_once('\n').unwrap();
            let name = name.strip_prefix("event: ").unwrap();
            let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(data["type"], name, "event name and type differ");
            assert_eq!(data["sequence_number"], events.len(), "sequence numbers");
            events.push(data);
        }
        events
    }

    fn types(events: &[Value]) -> Vec<&str> {
        events.iter().map(|e| e["type"].as_str().unwrap()).collect()
    }

    /// The rules the `openai` SDK's stream accumulator enforces (it throws
    /// on any break): `response.created` first; items appended at their
    /// index with unique ids; parts appended at their index; deltas aimed
    /// at an existing item of the right type by id; `…done` keeps the
    /// item's identity; the final response holds exactly the finished items.
    fn check_protocol(events: &[Value]) {
        assert_eq!(events[0]["type"], "response.created");
        let response_id = events[0]["response"]["id"].clone();
        let mut items: Vec<Value> = Vec::new();
        let mut done = Vec::new();
        for event in &events[1..] {
            let kind = event["type"].as_str().unwrap();
            if let Some(response) = event.get("response") {
                assert_eq!(response["id"], response_id, "response identity changed");
            }
            let index = event["output_index"].as_u64().map(|i| i as usize);
            match kind {
                "response.output_item.added" => {
                    assert_eq!(index, Some(items.len()), "item not appended");
                    let id = &event["item"]["id"];
                    assert!(id.as_str().is_some_and(|id| !id.is_empty()));
                    assert!(items.iter().all(|item| &item["id"] != id), "duplicate id");
                    items.push(event["item"].clone());
                }
                "response.output_item.done" => {
                    let item = &items[index.unwrap()];
                    assert_eq!(item["id"], event["item"]["id"]);
                    assert_eq!(item["type"], event["item"]["type"]);
                    assert_eq!(item.get("call_id"), event["item"].get("call_id"));
                    done.push(event["item"].clone());
                }
                "response.content_part.added" => {
                    let item = &mut items[index.unwrap()];
                    assert_eq!(item["id"], event["item_id"]);
                    let content = item["content"].as_array_mut().unwrap();
                    assert_eq!(event["content_index"], content.len(), "part not appended");
                    content.push(event["part"].clone());
                }
                "response.reasoning_summary_part.added" => {
                    let item = &mut items[index.unwrap()];
                    assert_eq!(item["id"], event["item_id"]);
                    let summary = item["summary"].as_array_mut().unwrap();
                    assert_eq!(
                        event["summary_index"],
                        summary.len(),
                        "summary not appended"
                    );
                    summary.push(event["part"].clone());
                }
                "response.output_text.delta"
                | "response.output_text.done"
                | "response.content_part.done" => {
                    let item = &items[index.unwrap()];
                    assert_eq!(item["type"], "message");
                    assert_eq!(item["id"], event["item_id"]);
                    let part = event["content_index"].as_u64().unwrap() as usize;
                    assert!(part < item["content"].as_array().unwrap().len());
                }
                "response.reasoning_summary_text.delta"
                | "response.reasoning_summary_text.done"
                | "response.reasoning_summary_part.done" => {
                    let item = &items[index.unwrap()];
                    assert_eq!(item["type"], "reasoning");
                    assert_eq!(item["id"], event["item_id"]);
                }
                "response.function_call_arguments.delta"
                | "response.function_call_arguments.done" => {
                    let item = &items[index.unwrap()];
                    assert_eq!(item["type"], "function_call");
                    assert_eq!(item["id"], event["item_id"]);
                }
                "response.in_progress" => assert!(items.is_empty()),
                "response.completed" | "response.incomplete" => {
                    assert_eq!(done.len(), items.len(), "unfinished items");
                    assert_eq!(event["response"]["output"], Value::Array(done.clone()));
                }
                "error" => {}
                other => panic!("an event type clients do not know: {other}"),
            }
        }
    }

    const USAGE: &str = r#""usage":{"prompt_tokens":10,"completion_tokens":4,"total_tokens":14,"precached_prompt_tokens":2}"#;

    fn content(text: &str) -> String {
        format!(
            r#"{{"choices":[{{"delta":{{"role":"assistant","content":"{text}"}},"index":0}}],"created":1,"model":"GigaChat"}}"#
        )
    }

    fn finish(reason: &str) -> String {
        format!(
            r#"{{"choices":[{{"delta":{{"content":""}},"index":0,"finish_reason":"{reason}"}}],"created":1,"model":"GigaChat",{USAGE}}}"#
        )
    }

    #[test]
    fn text_streams_as_it_arrives_and_completes_with_the_whole_response() {
        let plan = plan(json!({"model": "gpt-4o", "input": "Hi", "stream": true}));
        let (outputs, _) = run(
            plan,
            &[&content("При"), &content("вет"), &finish("stop"), "[DONE]"],
        );
        // The first chunk already produced its delta: nothing waits.
        let first = events(&outputs[0]);
        assert_eq!(
            types(&first),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
            ]
        );
        assert_eq!(first[0]["response"]["status"], "in_progress");
        assert_eq!(first[0]["response"]["model"], "gpt-4o");
        assert_eq!(first[4]["delta"], "При");
        assert!(outputs[1].contains(r#""delta":"вет""#));
        // `[DONE]` completes the response at once.
        assert!(outputs[3].contains("event: response.completed"));
        assert!(outputs[4].is_empty(), "finish repeated the ending");

        let all = events(&outputs.concat());
        check_protocol(&all);
        assert_eq!(
            types(&all[5..]),
            [
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        assert_eq!(all[6]["text"], "Привет");
        let response = &all[9]["response"];
        assert_eq!(response["status"], "completed");
        assert_eq!(response["id"], "resp_R1");
        assert_eq!(response["output"][0]["content"][0]["text"], "Привет");
        assert_eq!(response["usage"]["input_tokens"], 10);
        assert_eq!(
            response["usage"]["input_tokens_details"]["cached_tokens"],
            2
        );
        assert_eq!(response["usage"]["output_tokens"], 4);
        assert_eq!(response["usage"]["total_tokens"], 14);
    }

    #[test]
    fn text_with_quotes_and_newlines_is_escaped() {
        let plan = plan(json!({"input": "x"}));
        let (outputs, _) = run(plan, &[&content(r#"a \"q\"\nb"#), &finish("stop")]);
        let all = events(&outputs.concat());
        check_protocol(&all);
        assert_eq!(all[4]["delta"], "a \"q\"\nb");
    }

    fn call_chunk(finish_reason: Option<&str>) -> String {
        let finish = finish_reason.map_or(String::new(), |r| format!(r#","finish_reason":"{r}""#));
        let usage = if finish_reason.is_some() {
            format!(",{USAGE}")
        } else {
            String::new()
        };
        format!(
            r#"{{"choices":[{{"delta":{{"role":"assistant","content":"","function_call":{{"name":"get_weather","arguments":{{"city":"Москва"}}}},"functions_state_id":"st1"}},"index":0{finish}}}],"created":1{usage}}}"#
        )
    }

    fn check_function_call(all: &[Value]) {
        check_protocol(all);
        assert_eq!(
            types(all),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        assert_eq!(all[2]["item"]["arguments"], "");
        assert_eq!(all[2]["item"]["call_id"], "call_st1");
        assert_eq!(all[3]["delta"], r#"{"city":"Москва"}"#);
        assert_eq!(all[4]["arguments"], r#"{"city":"Москва"}"#);
        let item = &all[6]["response"]["output"][0];
        assert_eq!(item["type"], "function_call");
        assert_eq!(item["name"], "get_weather");
        assert_eq!(item["call_id"], "call_st1");
        assert_eq!(item["arguments"], r#"{"city":"Москва"}"#);
        assert_eq!(item["status"], "completed");
        assert_eq!(all[6]["response"]["status"], "completed");
    }

    #[test]
    fn a_function_call_in_the_finish_chunk_is_one_function_call_item() {
        let plan =
            plan(json!({"input": "x", "tools": [{"type": "function", "name": "get_weather"}]}));
        let (outputs, _) = run(plan, &[&call_chunk(Some("function_call")), "[DONE]"]);
        check_function_call(&events(&outputs.concat()));
    }

    #[test]
    fn a_function_call_in_its_own_chunk_is_one_function_call_item() {
        let plan =
            plan(json!({"input": "x", "tools": [{"type": "function", "name": "get_weather"}]}));
        let (outputs, _) = run(
            plan,
            &[&call_chunk(None), &finish("function_call"), "[DONE]"],
        );
        check_function_call(&events(&outputs.concat()));
    }

    #[test]
    fn text_then_a_call_closes_the_message_before_the_call_opens() {
        let plan =
            plan(json!({"input": "x", "tools": [{"type": "function", "name": "get_weather"}]}));
        let (outputs, _) = run(
            plan,
            &[&content("Checking."), &call_chunk(Some("function_call"))],
        );
        let all = events(&outputs.concat());
        check_protocol(&all);
        let output = &all.last().unwrap()["response"]["output"];
        assert_eq!(output[0]["type"], "message");
        assert_eq!(output[0]["id"], "msg_R1_0");
        assert_eq!(output[1]["type"], "function_call");
        assert_eq!(output[1]["id"], "fc_R1_1");
    }

    #[test]
    fn structured_output_streams_as_message_text() {
        let mut plan = plan(json!({"input": "x"}));
        plan.structured_output = Some("get_weather".to_owned());
        let (outputs, _) = run(plan, &[&call_chunk(Some("function_call"))]);
        let all = events(&outputs.concat());
        check_protocol(&all);
        assert!(!types(&all).contains(&"response.function_call_arguments.delta"));
        let last = all.last().unwrap();
        assert_eq!(last["type"], "response.completed");
        assert_eq!(
            last["response"]["output"][0]["content"][0]["text"],
            r#"{"city":"Москва"}"#
        );
    }

    #[test]
    fn a_length_cut_ends_with_response_incomplete() {
        let plan = plan(json!({"input": "x", "max_output_tokens": 3}));
        let (outputs, _) = run(plan, &[&content("Once"), &finish("length"), "[DONE]"]);
        let all = events(&outputs.concat());
        check_protocol(&all);
        let last = all.last().unwrap();
        assert_eq!(last["type"], "response.incomplete");
        assert_eq!(last["response"]["status"], "incomplete");
        assert_eq!(
            last["response"]["incomplete_details"]["reason"],
            "max_output_tokens"
        );
        assert_eq!(last["response"]["output"][0]["status"], "incomplete");
        assert_eq!(last["response"]["max_output_tokens"], 3);
    }

    #[test]
    fn reasoning_streams_as_a_summary_before_the_message() {
        let plan = plan(json!({"input": "x"}));
        let thought =
            r#"{"choices":[{"delta":{"reasoning_content":"Hmm"},"index":0}],"created":1}"#;
        let (outputs, _) = run(plan, &[thought, thought, &content("42"), &finish("stop")]);
        let all = events(&outputs.concat());
        check_protocol(&all);
        assert_eq!(
            types(&all[2..6]),
            [
                "response.output_item.added",
                "response.reasoning_summary_part.added",
                "response.reasoning_summary_text.delta",
                "response.reasoning_summary_text.delta",
            ]
        );
        let output = &all.last().unwrap()["response"]["output"];
        assert_eq!(output[0]["summary"][0]["text"], "HmmHmm");
        assert_eq!(output[1]["content"][0]["text"], "42");
    }

    #[test]
    fn an_upstream_error_event_becomes_an_error_event_and_ends_the_stream() {
        let plan = plan(json!({"input": "x"}));
        let broke = r#"{"error":{"message":"GigaChat stopped answering","code":"upstream_idle_timeout","request_id":"R1"}}"#;
        let (outputs, accepted) = run(plan, &[&content("Hi"), broke, &content("late")]);
        assert_eq!(
            accepted,
            [true, false],
            "the stream goes on after the error"
        );
        let all = events(&outputs.concat());
        check_protocol(&all);
        let last = all.last().unwrap();
        assert_eq!(last["type"], "error");
        assert_eq!(last["message"], "GigaChat stopped answering");
        assert_eq!(last["code"], "upstream_idle_timeout");
        assert_eq!(last["error"]["message"], "GigaChat stopped answering");
        assert_eq!(last["error"]["type"], "server_error");
        assert!(!types(&all).contains(&"response.completed"));
    }

    #[test]
    fn an_upstream_that_ends_without_finishing_is_an_error_not_a_completion() {
        let plan = plan(json!({"input": "x"}));
        let (outputs, _) = run(plan, &[&content("Hi")]);
        let all = events(&outputs.concat());
        let last = all.last().unwrap();
        assert_eq!(last["type"], "error");
        assert_eq!(last["code"], "upstream_incomplete");
        assert!(!types(&all).contains(&"response.completed"));
    }

    #[test]
    fn done_without_a_finish_is_an_error_not_a_completion() {
        let plan = plan(json!({"input": "x"}));
        let (outputs, _) = run(plan, &[&content("Hi"), "[DONE]"]);
        let all = events(&outputs.concat());
        let last = all.last().unwrap();
        assert_eq!(last["type"], "error");
        assert_eq!(last["code"], "upstream_incomplete");
        assert!(!types(&all).contains(&"response.completed"));
    }

    #[test]
    fn gigachats_own_roles_are_not_the_answer() {
        let plan = plan(json!({"input": "draw"}));
        let busy = r#"{"choices":[{"delta":{"role":"function_in_progress","content":"рисую"},"index":0}],"created":1,"model":"GigaChat"}"#;
        let (outputs, _) = run(plan, &[busy, &content("Done"), &finish("stop"), "[DONE]"]);
        let all = events(&outputs.concat());
        check_protocol(&all);
        let completed = all.last().unwrap();
        assert_eq!(completed["type"], "response.completed");
        assert_eq!(
            completed["response"]["output"][0]["content"][0]["text"],
            "Done"
        );
        assert!(!outputs.concat().contains("рисую"));
    }

    #[test]
    fn an_empty_answer_is_still_one_empty_message() {
        let plan = plan(json!({"input": "x"}));
        let (outputs, _) = run(plan, &["not json", &finish("stop"), "[DONE]"]);
        assert!(outputs[0].is_empty(), "an unreadable event produced output");
        let all = events(&outputs.concat());
        check_protocol(&all);
        let last = all.last().unwrap();
        assert_eq!(last["type"], "response.completed");
        assert_eq!(last["response"]["output"][0]["content"][0]["text"], "");
    }
}
