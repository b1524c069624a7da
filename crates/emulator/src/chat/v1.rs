//! v1 chat: the request plan, the JSON answer and the `data:` event
//! sequence ending in `data: [DONE]`.

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value};

use super::attachments::{self, FileLookup, mention};
use super::functions::{FunctionMode, FunctionSpec, function_call_mode, functions, sample};
use super::history::{called_function, function_result, unanswered};
use super::reply::{echo, finish_text, pieces};
use super::validate::{
    chat_model, check_sampling, invalid, max_tokens, messages, parse_object, role_of, stream_flag,
};
use super::{ChatError, Plan, Reply, to_bytes};
use crate::faults::FunctionCallChunk;
use crate::models;
use crate::sse::data_event;
use crate::util::count_tokens;

const V1_ROLES: [&str; 6] = [
    "system",
    "user",
    "assistant",
    "function",
    "search_result",
    "function_in_progress",
];

/// The first JSON object written out in `text`, else `{"answer": <echo>}`.
fn json_answer(text: &str) -> String {
    for (start, _) in text.match_indices('{') {
        let mut objects = serde_json::Deserializer::from_str(&text[start..]).into_iter::<Value>();
        if let Some(Ok(object @ Value::Object(_))) = objects.next() {
            return object.to_string();
        }
    }
    serde_json::json!({ "answer": echo(text) }).to_string()
}

/// Validates a v1 request and decides the answer. `files` resolves the
/// ids of `attachments` in the emulator's file storage.
pub(crate) fn plan_v1(body: &[u8], files: FileLookup<'_>) -> Result<Plan, ChatError> {
    let obj = parse_object(body)?;
    let model = chat_model(&obj)?;
    let msgs = messages(&obj)?;
    let mut prompt_text = String::new();
    let mut last_user = String::new();
    let mut last_user_files = Vec::new();
    let mut asks_for_json = false;
    let mut last_role = "";
    // The function the previous message called, awaiting its result.
    let mut pending: Option<&str> = None;
    // The last message's function result, when it is one.
    let mut last_result = None;
    let mut images = 0;
    for (idx, msg) in msgs.iter().enumerate() {
        if !msg.is_object() {
            return Err(invalid(format!("messages[{idx}] must be an object")));
        }
        let role = role_of(msg, &V1_ROLES, idx)?;
        let content = match msg.get("content") {
            None | Some(Value::Null) => "",
            Some(Value::String(s)) => s.as_str(),
            Some(_) => {
                return Err(invalid(format!("messages[{idx}].content must be a string")));
            }
        };
        let called = called_function(msg, role, idx)?;
        last_result = None;
        if role == "function" {
            last_result = Some(function_result(msg, content, idx, pending.take())?);
        } else if pending.is_some() {
            return Err(unanswered());
        }
        pending = called;
        let attached = attachments::check_message(msg, idx, files, &mut images)?;
        prompt_text.push_str(content);
        if role == "system" && content.to_ascii_lowercase().contains("json") {
            asks_for_json = true;
        }
        if role == "user" {
            last_user = content.to_owned();
            last_user_files = attached;
        }
        last_role = role;
    }
    if pending.is_some() {
        return Err(unanswered());
    }
    check_sampling(&obj)?;
    let max_tokens = max_tokens(&obj)?;
    let stream = stream_flag(&obj)?;
    let functions = functions(&obj)?;
    let forced = function_call_mode(&obj, &functions)?;
    let schema = response_schema(&obj)?;

    let called = match forced {
        FunctionMode::None => None,
        // A built-in named without a declaration is called without a schema.
        FunctionMode::Named(name) => Some(
            functions
                .iter()
                .find(|f| f.name == name)
                .cloned()
                .unwrap_or(FunctionSpec {
                    name,
                    parameters: None,
                }),
        ),
        FunctionMode::Auto if last_role == "user" => functions
            .iter()
            .find(|f| last_user.contains(&f.name))
            .cloned(),
        FunctionMode::Auto => None,
    };
    let prompt_tokens = count_tokens(&prompt_text);
    if let Some(f) = called {
        let arguments = f
            .parameters
            .as_ref()
            .map_or_else(|| Value::Object(Map::new()), |p| sample(p, &last_user, 0));
        let completion_tokens = count_tokens(&arguments.to_string());
        return Ok(Plan {
            model,
            stream,
            reply: Reply::FunctionCall {
                name: f.name,
                arguments,
                state_id: uuid::Uuid::new_v4().to_string(),
            },
            finish_reason: "function_call",
            prompt_tokens,
            completion_tokens,
        });
    }
    let text = match (last_result, schema) {
        (_, Some(schema)) => sample(schema, &last_user, 0).to_string(),
        // The answer after a function result is built from that result, so
        // a tool round trip's final answer shows the tool's output.
        (Some((name, result)), None) => {
            format!("{name} returned {}", Value::Object(result))
        }
        // A model told to answer in JSON does: the object the user wrote
        // out, if any, else the echo wrapped in one.
        (None, None) if asks_for_json => json_answer(&last_user),
        (None, None) => format!("{}{}", echo(&last_user), mention(&last_user_files)),
    };
    let (reply, finish_reason, completion_tokens) = finish_text(text, max_tokens);
    Ok(Plan {
        model,
        stream,
        reply,
        finish_reason,
        prompt_tokens,
        completion_tokens,
    })
}

/// `response_format`, as the v1 API takes it: `{"type": "json_schema",
/// "schema": {...}, "strict": bool}` with the schema at the top level (not
/// under OpenAI's `json_schema.schema`), or `{"type": "text"}`. The answer
/// is then a JSON document satisfying the schema.
fn response_schema(obj: &Map<String, Value>) -> Result<Option<&Value>, ChatError> {
    let format = match obj.get("response_format") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(format)) => format,
        Some(_) => return Err(invalid("response_format must be an object")),
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_schema") => match format.get("schema") {
            Some(schema @ Value::Object(_)) => Ok(Some(schema)),
            _ => Err(invalid(
                "response_format.schema is required and must be an object",
            )),
        },
        _ => Err(invalid(
            "response_format.type must be \"json_schema\" or \"text\"",
        )),
    }
}

// ---- v1 wire types: field order follows GigaChat's recorded answers. ----

#[derive(Serialize)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    precached_prompt_tokens: u64,
}

#[derive(Serialize)]
struct FunctionCallOut<'a> {
    name: &'a str,
    arguments: &'a Value,
}

#[derive(Serialize)]
struct MessageOut<'a> {
    content: &'a str,
    role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_call: Option<FunctionCallOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    functions_state_id: Option<&'a str>,
}

#[derive(Serialize)]
struct Choice<'a> {
    message: MessageOut<'a>,
    index: u32,
    finish_reason: &'a str,
}

#[derive(Serialize)]
struct Completion<'a> {
    choices: [Choice<'a>; 1],
    created: u64,
    model: &'a str,
    object: &'static str,
    usage: Usage,
}

#[derive(Serialize)]
struct Delta<'a> {
    content: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_call: Option<FunctionCallOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    functions_state_id: Option<&'a str>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    delta: Delta<'a>,
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    finish_reason: Option<&'a str>,
}

#[derive(Serialize)]
struct Chunk<'a> {
    choices: [ChunkChoice<'a>; 1],
    created: u64,
    model: &'a str,
    object: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

fn usage(plan: &Plan) -> Usage {
    Usage {
        prompt_tokens: plan.prompt_tokens,
        completion_tokens: plan.completion_tokens,
        total_tokens: plan.total_tokens(),
        precached_prompt_tokens: 0,
    }
}

/// The non-stream v1 body.
pub(crate) fn v1_body(plan: &Plan, created: u64) -> Vec<u8> {
    let model = models::versioned(&plan.model);
    let message = match &plan.reply {
        Reply::Text(text) => MessageOut {
            content: text,
            role: "assistant",
            function_call: None,
            functions_state_id: None,
        },
        Reply::FunctionCall {
            name,
            arguments,
            state_id,
        } => MessageOut {
            content: "",
            role: "assistant",
            function_call: Some(FunctionCallOut { name, arguments }),
            functions_state_id: Some(state_id),
        },
    };
    to_bytes(&Completion {
        choices: [Choice {
            message,
            index: 0,
            finish_reason: plan.finish_reason,
        }],
        created,
        model: &model,
        object: "chat.completion",
        usage: usage(plan),
    })
}

/// The complete v1 event sequence, one `Bytes` per SSE event. A function
/// call goes where `shape` says: in the finish chunk or in its own chunk
/// before it.
pub(crate) fn v1_events(plan: &Plan, created: u64, shape: FunctionCallChunk) -> Vec<Bytes> {
    let model = models::versioned(&plan.model);
    let chunk = |delta: Delta<'_>, finish: Option<&str>, usage: Option<Usage>| {
        data_event(&to_bytes(&Chunk {
            choices: [ChunkChoice {
                delta,
                index: 0,
                finish_reason: finish,
            }],
            created,
            model: &model,
            object: "chat.completion",
            usage,
        }))
    };
    let mut events = Vec::new();
    let mut finish = Delta {
        content: "",
        role: None,
        function_call: None,
        functions_state_id: None,
    };
    match &plan.reply {
        Reply::Text(text) => {
            for (i, piece) in pieces(text).into_iter().enumerate() {
                events.push(chunk(
                    Delta {
                        content: piece,
                        role: (i == 0).then_some("assistant"),
                        function_call: None,
                        functions_state_id: None,
                    },
                    None,
                    None,
                ));
            }
        }
        Reply::FunctionCall {
            name,
            arguments,
            state_id,
        } => {
            let call = Delta {
                content: "",
                role: Some("assistant"),
                function_call: Some(FunctionCallOut { name, arguments }),
                functions_state_id: Some(state_id),
            };
            match shape {
                FunctionCallChunk::Finish => finish = call,
                FunctionCallChunk::Separate => events.push(chunk(call, None, None)),
            }
        }
    }
    events.push(chunk(finish, Some(plan.finish_reason), Some(usage(plan))));
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    events
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use http::StatusCode;

    use super::super::INVALID_JSON;
    use super::*;

    fn plan(body: &str) -> Result<Plan, ChatError> {
        plan_v1(body.as_bytes(), &|_| None)
    }

    #[test]
    fn validation_errors() {
        let e = plan("{not json").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.message, INVALID_JSON);
        let e = plan(r#"{"model":"Nope","messages":[{"role":"user","content":"x"}]}"#).unwrap_err();
        assert_eq!(
            (e.status, e.message.as_str()),
            (StatusCode::NOT_FOUND, "No such model")
        );
        for body in [
            r#"{"messages":[{"role":"user","content":"x"}]}"#,
            r#"{"model":"GigaChat"}"#,
            r#"{"model":"GigaChat","messages":[]}"#,
            r#"{"model":"GigaChat","messages":[{"role":"user","content":"x"}],"temperature":0}"#,
            r#"{"model":"GigaChat","messages":[{"role":"user","content":"x"}],"temperature":-1}"#,
            r#"{"model":"GigaChat","messages":[{"role":"user","content":"x"}],"top_p":1.5}"#,
            r#"{"model":"GigaChat","messages":[{"role":"wizard","content":"x"}]}"#,
        ] {
            let e = plan(body).unwrap_err();
            assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            assert!(e.message.starts_with("Invalid params: "), "{body}");
        }
        let e = plan(r#"{"model":"GigaChat","messages":[{"role":"user","content":"x"}],"repetition_penalty":0}"#).unwrap_err();
        assert_eq!(
            e.message,
            "Invalid params: repetition_penalty must be in range (0, +inf)"
        );
        for body in [
            r#"{"model":"GigaChat","messages":[{"role":"user","content":"x"},{"role":"system","content":"s"}]}"#,
            r#"{"model":"GigaChat","messages":[{"role":"system","content":"a"},{"role":"system","content":"b"}]}"#,
        ] {
            let e = plan(body).unwrap_err();
            assert_eq!(
                e.message,
                "Invalid params: system message must be the first message"
            );
        }
        // Embedding models are not chat models.
        let e = plan(r#"{"model":"Embeddings","messages":[{"role":"user","content":"x"}]}"#)
            .unwrap_err();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn echo_reply_and_usage() {
        let p = plan(r#"{"model":"GigaChat","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hello world"}]}"#).unwrap();
        assert_eq!(p.reply, Reply::Text("Echo: hello world".into()));
        assert_eq!(p.finish_reason, "stop");
        // "be briefhello world" = 19 chars → 5 tokens; reply 17 chars → 5.
        assert_eq!((p.prompt_tokens, p.completion_tokens), (5, 5));
        assert!(!p.stream);
    }

    #[test]
    fn a_system_message_asking_for_json_gets_json() {
        let p = plan(r#"{"model":"GigaChat","messages":[{"role":"system","content":"Answer with one valid JSON object."},{"role":"user","content":"Use this: {\"name\":\"Ada\",\"age\":36} please"}]}"#).unwrap();
        assert_eq!(p.reply, Reply::Text(r#"{"age":36,"name":"Ada"}"#.into()));
        let p = plan(r#"{"model":"GigaChat","messages":[{"role":"system","content":"reply in json"},{"role":"user","content":"hi {not json"}]}"#).unwrap();
        assert_eq!(
            p.reply,
            Reply::Text(r#"{"answer":"Echo: hi {not json"}"#.into())
        );
    }

    #[test]
    fn max_tokens_truncates_with_length() {
        let p = plan(r#"{"model":"GigaChat","messages":[{"role":"user","content":"hello world"}],"max_tokens":2}"#).unwrap();
        assert_eq!(p.reply, Reply::Text("Echo: he".into()));
        assert_eq!(p.finish_reason, "length");
        assert_eq!(p.completion_tokens, 2);
    }

    #[test]
    fn non_stream_body_exact() {
        let p =
            plan(r#"{"model":"GigaChat","messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        let body = String::from_utf8(v1_body(&p, 1768996171)).unwrap();
        assert_eq!(
            body,
            r#"{"choices":[{"message":{"content":"Echo: hi","role":"assistant"},"index":0,"finish_reason":"stop"}],"created":1768996171,"model":"GigaChat:emulator","object":"chat.completion","usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3,"precached_prompt_tokens":0}}"#
        );
    }

    #[test]
    fn sse_framing_exact() {
        let p = plan(r#"{"model":"GigaChat","messages":[{"role":"user","content":"hello world"}],"stream":true}"#).unwrap();
        assert!(p.stream);
        let events = v1_events(&p, 1768996176, FunctionCallChunk::Finish);
        let all: Vec<u8> = events.iter().flat_map(|b| b.to_vec()).collect();
        let expected = concat!(
            r#"data: {"choices":[{"delta":{"content":"Echo: ","role":"assistant"},"index":0}],"created":1768996176,"model":"GigaChat:emulator","object":"chat.completion"}"#,
            "\n\n",
            r#"data: {"choices":[{"delta":{"content":"hello "},"index":0}],"created":1768996176,"model":"GigaChat:emulator","object":"chat.completion"}"#,
            "\n\n",
            r#"data: {"choices":[{"delta":{"content":"world"},"index":0}],"created":1768996176,"model":"GigaChat:emulator","object":"chat.completion"}"#,
            "\n\n",
            r#"data: {"choices":[{"delta":{"content":""},"index":0,"finish_reason":"stop"}],"created":1768996176,"model":"GigaChat:emulator","object":"chat.completion","usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8,"precached_prompt_tokens":0}}"#,
            "\n\n",
            "data: [DONE]\n\n",
        );
        assert_eq!(String::from_utf8(all).unwrap(), expected);
        assert_eq!(events.len(), 5);
    }

    #[test]
    fn function_call_forced_and_auto() {
        let fns = r#""functions":[{"name":"weather_forecast","parameters":{"type":"object","properties":{"location":{"type":"string"},"num_days":{"type":"integer"},"unit":{"type":"string","enum":["c","f"]}}}}]"#;
        let body = format!(
            r#"{{"model":"GigaChat","messages":[{{"role":"user","content":"Манжерок"}}],{fns},"function_call":{{"name":"weather_forecast"}}}}"#
        );
        let p = plan(&body).unwrap();
        assert_eq!(p.finish_reason, "function_call");
        let Reply::FunctionCall {
            name,
            arguments,
            state_id,
        } = &p.reply
        else {
            panic!("expected a function call");
        };
        assert_eq!(name, "weather_forecast");
        assert_eq!(
            arguments,
            &serde_json::json!({"location":"Манжерок","num_days":1,"unit":"c"})
        );
        assert_eq!(state_id.len(), 36);
        let body: Value = serde_json::from_slice(&v1_body(&p, 1)).unwrap();
        assert!(body["choices"][0]["message"]["function_call"]["arguments"].is_object());
        assert_eq!(body["choices"][0]["message"]["content"], "");

        // "auto" calls only when the last user message names the function.
        let auto = format!(
            r#"{{"model":"GigaChat","messages":[{{"role":"user","content":"use weather_forecast"}}],{fns}}}"#
        );
        assert_eq!(plan(&auto).unwrap().finish_reason, "function_call");
        let plain = format!(
            r#"{{"model":"GigaChat","messages":[{{"role":"user","content":"hi"}}],{fns},"function_call":"auto"}}"#
        );
        assert_eq!(plan(&plain).unwrap().finish_reason, "stop");
        // After a function result the model answers in text.
        let after = format!(
            r#"{{"model":"GigaChat","messages":[{{"role":"user","content":"use weather_forecast"}},{{"role":"assistant","content":"","function_call":{{"name":"weather_forecast","arguments":{{}}}}}},{{"role":"function","name":"weather_forecast","content":"{{}}"}}],{fns}}}"#
        );
        assert_eq!(plan(&after).unwrap().finish_reason, "stop");
        let unknown = format!(
            r#"{{"model":"GigaChat","messages":[{{"role":"user","content":"x"}}],{fns},"function_call":{{"name":"nope"}}}}"#
        );
        assert_eq!(
            plan(&unknown).unwrap_err().status,
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }

    const WEATHER_FN: &str = r#"{"name":"weather_forecast","parameters":{"type":"object","properties":{"location":{"type":"string"}}}}"#;

    /// A request whose messages are `history` (JSON array items) with the
    /// weather function declared.
    fn with_history(history: &str) -> String {
        format!(r#"{{"model":"GigaChat","messages":[{history}],"functions":[{WEATHER_FN}]}}"#)
    }

    const ASK: &str = r#"{"role":"user","content":"weather_forecast in Paris?"}"#;
    const CALL: &str = r#"{"role":"assistant","content":"","function_call":{"name":"weather_forecast","arguments":{"location":"Paris"}},"functions_state_id":"0199e210-2f13-744c-8fe5-c9a19fe27db7"}"#;
    const RESULT: &str =
        r#"{"role":"function","name":"weather_forecast","content":"{\"temperature\":\"+5°C\"}"}"#;

    fn refused(body: &str) -> String {
        let e = plan(body).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        e.message
    }

    #[test]
    fn function_round_trip_answers_from_the_result() {
        let p = plan(&with_history(&format!("{ASK},{CALL},{RESULT}"))).unwrap();
        assert_eq!(p.finish_reason, "stop");
        assert_eq!(
            p.reply,
            Reply::Text(r#"weather_forecast returned {"temperature":"+5°C"}"#.into())
        );
        // Several calls travel as call/result pairs, in order.
        let p = plan(&with_history(&format!(
            "{ASK},{CALL},{RESULT},{CALL},{RESULT}"
        )))
        .unwrap();
        assert_eq!(p.finish_reason, "stop");
    }

    #[test]
    fn function_history_rules() {
        let unanswered =
            "Invalid params: every assistant function call must have a result in history";
        // A call left last, or followed by anything but its result.
        assert_eq!(refused(&with_history(&format!("{ASK},{CALL}"))), unanswered);
        assert_eq!(
            refused(&with_history(&format!("{ASK},{CALL},{ASK}"))),
            unanswered
        );
        // Two calls, then two results: the first call has no result next to it.
        assert_eq!(
            refused(&with_history(&format!(
                "{ASK},{CALL},{CALL},{RESULT},{RESULT}"
            ))),
            unanswered
        );
        // A result without its call.
        assert!(refused(&with_history(&format!("{ASK},{RESULT}"))).contains("must follow"));
        // A result that is not a JSON object.
        let text = r#"{"role":"function","name":"weather_forecast","content":"+5°C"}"#;
        assert!(
            refused(&with_history(&format!("{ASK},{CALL},{text}")))
                .starts_with("Invalid params: invalid function result for function json string")
        );
        // A result as an object rather than a string.
        let object = r#"{"role":"function","name":"weather_forecast","content":{"t":5}}"#;
        assert!(refused(&with_history(&format!("{ASK},{CALL},{object}"))).contains("string"));
        // Arguments as OpenAI's JSON string; several calls in one message.
        let string_args = r#"{"role":"assistant","content":"","function_call":{"name":"weather_forecast","arguments":"{\"location\":\"Paris\"}"}}"#;
        assert!(
            refused(&with_history(&format!("{ASK},{string_args},{RESULT}")))
                .contains("arguments must be a JSON object")
        );
        let two = r#"{"role":"assistant","content":"","function_call":[{"name":"weather_forecast","arguments":{}},{"name":"weather_forecast","arguments":{}}]}"#;
        assert!(refused(&with_history(&format!("{ASK},{two},{RESULT}"))).contains("one call"));
    }

    #[test]
    fn function_call_stream_shapes() {
        let body = format!(
            r#"{{"model":"GigaChat","stream":true,"messages":[{{"role":"user","content":"Paris"}}],"functions":[{WEATHER_FN}],"function_call":{{"name":"weather_forecast"}}}}"#
        );
        let mut p = plan(&body).unwrap();
        let Reply::FunctionCall { state_id, .. } = &mut p.reply else {
            panic!("expected a function call");
        };
        *state_id = "s".into();
        let text = |events: Vec<Bytes>| {
            String::from_utf8(events.iter().flat_map(|b| b.to_vec()).collect()).unwrap()
        };
        let call = r#"{"content":"","role":"assistant","function_call":{"name":"weather_forecast","arguments":{"location":"Paris"}},"functions_state_id":"s"}"#;
        let usage = r#""usage":{"prompt_tokens":2,"completion_tokens":5,"total_tokens":7,"precached_prompt_tokens":0}"#;
        assert_eq!(
            text(v1_events(&p, 7, FunctionCallChunk::Finish)),
            format!(
                "data: {{\"choices\":[{{\"delta\":{call},\"index\":0,\"finish_reason\":\"function_call\"}}],\"created\":7,\"model\":\"GigaChat:emulator\",\"object\":\"chat.completion\",{usage}}}\n\ndata: [DONE]\n\n"
            )
        );
        assert_eq!(
            text(v1_events(&p, 7, FunctionCallChunk::Separate)),
            format!(
                "data: {{\"choices\":[{{\"delta\":{call},\"index\":0}}],\"created\":7,\"model\":\"GigaChat:emulator\",\"object\":\"chat.completion\"}}\n\n\
                 data: {{\"choices\":[{{\"delta\":{{\"content\":\"\"}},\"index\":0,\"finish_reason\":\"function_call\"}}],\"created\":7,\"model\":\"GigaChat:emulator\",\"object\":\"chat.completion\",{usage}}}\n\ndata: [DONE]\n\n"
            )
        );
    }

    #[test]
    fn attachments_are_resolved_and_named() {
        let files = |id: &str| {
            (id == "f1").then(|| super::super::AttachedFile {
                filename: "cat.png".into(),
                bytes: 68,
                kind: super::super::attachments::MediaKind::Image,
            })
        };
        let body = r#"{"model":"GigaChat","messages":[{"role":"user","content":"what is it?","attachments":["f1"]}]}"#;
        let p = plan_v1(body.as_bytes(), &files).unwrap();
        assert_eq!(
            p.reply,
            Reply::Text("Echo: what is it? [attached: cat.png (68 bytes)]".into())
        );
        let unknown = r#"{"model":"GigaChat","messages":[{"role":"user","content":"x","attachments":["f2"]}]}"#;
        let e = plan_v1(unknown.as_bytes(), &files).unwrap_err();
        assert_eq!(
            (e.status, e.message.as_str()),
            (StatusCode::NOT_FOUND, "File not found")
        );
    }

    #[test]
    fn response_format_json_schema_answers_json() {
        let body = r#"{"model":"GigaChat","messages":[{"role":"user","content":"ok"}],"response_format":{"type":"json_schema","schema":{"type":"object","properties":{"answer":{"type":"string"},"n":{"type":"integer"}}},"strict":true}}"#;
        let p = plan(body).unwrap();
        assert_eq!(p.finish_reason, "stop");
        let Reply::Text(text) = &p.reply else {
            panic!("expected text");
        };
        let answer: Value = serde_json::from_str(text).unwrap();
        assert_eq!(answer, serde_json::json!({"answer":"ok","n":1}));
        // OpenAI's nesting (`json_schema.schema`) and `json_object` are not v1's.
        for format in [
            r#"{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object"}}}"#,
            r#"{"type":"json_object"}"#,
            r#""json""#,
        ] {
            let body = format!(
                r#"{{"model":"GigaChat","messages":[{{"role":"user","content":"ok"}}],"response_format":{format}}}"#
            );
            assert!(refused(&body).contains("response_format"), "{format}");
        }
        let text = r#"{"model":"GigaChat","messages":[{"role":"user","content":"ok"}],"response_format":{"type":"text"}}"#;
        assert_eq!(plan(text).unwrap().reply, Reply::Text("Echo: ok".into()));
    }
}
