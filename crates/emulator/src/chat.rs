//! Chat completions, v1 (reference §6–8) and v2 "primary" (§9): request
//! validation, the deterministic echo reply, and the exact wire bytes. Kept
//! free of I/O so the framing can be unit-tested byte for byte.

use bytes::Bytes;
use http::StatusCode;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::models;
use crate::util::count_tokens;

/// A refused chat request: status and the `message` of the error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChatError {
    pub status: StatusCode,
    pub message: String,
}

pub(crate) const INVALID_JSON: &str = "Your request contains invalid JSON syntax.";

fn bad_json() -> ChatError {
    ChatError {
        status: StatusCode::BAD_REQUEST,
        message: INVALID_JSON.to_owned(),
    }
}

fn invalid(detail: impl std::fmt::Display) -> ChatError {
    ChatError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        message: format!("Invalid params: {detail}"),
    }
}

fn no_such_model() -> ChatError {
    ChatError {
        status: StatusCode::NOT_FOUND,
        message: "No such model".to_owned(),
    }
}

/// Built-in functions the service knows without a schema.
const BUILTIN_FUNCTIONS: [&str; 3] = ["text2image", "text2model3d", "get_file_content"];

const V1_ROLES: [&str; 6] = [
    "system",
    "user",
    "assistant",
    "function",
    "search_result",
    "function_in_progress",
];

const V2_ROLES: [&str; 4] = ["system", "user", "assistant", "tool"];

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reply {
    Text(String),
    FunctionCall {
        name: String,
        arguments: Value,
        state_id: String,
    },
}

/// Everything needed to render an answer, decided once from the request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    pub model: String,
    pub stream: bool,
    pub reply: Reply,
    pub finish_reason: &'static str,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl Plan {
    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

/// Samplers share their ranges between v1 (top level) and v2 (`model_options`).
fn check_sampling(obj: &Map<String, Value>) -> Result<(), ChatError> {
    let number = |name: &str| -> Result<Option<f64>, ChatError> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| invalid(format!("{name} must be a number"))),
        }
    };
    if let Some(t) = number("temperature")?
        && t <= 0.0
    {
        return Err(invalid("temperature must be in range (0, +inf)"));
    }
    if let Some(p) = number("top_p")?
        && !(0.0..=1.0).contains(&p)
    {
        return Err(invalid("top_p must be in range [0, 1]"));
    }
    if let Some(r) = number("repetition_penalty")?
        && r <= 0.0
    {
        return Err(invalid("repetition_penalty must be in range (0, +inf)"));
    }
    if let Some(u) = number("update_interval")?
        && u < 0.0
    {
        return Err(invalid("update_interval must be in range [0, +inf)"));
    }
    Ok(())
}

fn max_tokens(obj: &Map<String, Value>) -> Result<Option<u64>, ChatError> {
    match obj.get("max_tokens") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => Ok(Some(n)),
            _ => Err(invalid("max_tokens must be a positive integer")),
        },
    }
}

fn stream_flag(obj: &Map<String, Value>) -> Result<bool, ChatError> {
    match obj.get("stream") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(invalid("stream must be a boolean")),
    }
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ChatError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(obj)) => Ok(obj),
        Ok(_) => Err(invalid("request body must be a JSON object")),
        Err(_) => Err(bad_json()),
    }
}

fn chat_model(obj: &Map<String, Value>) -> Result<String, ChatError> {
    let model = match obj.get("model") {
        None | Some(Value::Null) => return Err(invalid("model is required")),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(invalid("model must be a string")),
    };
    if !models::is_chat(&model) {
        return Err(no_such_model());
    }
    Ok(model)
}

fn messages(obj: &Map<String, Value>) -> Result<&Vec<Value>, ChatError> {
    match obj.get("messages") {
        None | Some(Value::Null) => Err(invalid("messages is required")),
        Some(Value::Array(m)) if m.is_empty() => Err(invalid("messages must not be empty")),
        Some(Value::Array(m)) => Ok(m),
        Some(_) => Err(invalid("messages must be an array")),
    }
}

fn role_of<'a>(msg: &'a Value, allowed: &[&str], idx: usize) -> Result<&'a str, ChatError> {
    let role = msg
        .get("role")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("messages[{idx}].role is required")))?;
    if !allowed.contains(&role) {
        return Err(invalid(format!("messages[{idx}].role '{role}' is unknown")));
    }
    if role == "system" && idx > 0 {
        return Err(invalid("system message must be the first message"));
    }
    Ok(role)
}

/// Cuts the reply to `max_tokens` (4 characters per token, as counted).
fn finish_text(text: String, max_tokens: Option<u64>) -> (Reply, &'static str, u64) {
    let tokens = count_tokens(&text);
    match max_tokens {
        Some(limit) if limit < tokens => {
            let keep = usize::try_from(limit.saturating_mul(4)).unwrap_or(usize::MAX);
            let cut: String = text.chars().take(keep).collect();
            (Reply::Text(cut), "length", limit)
        }
        _ => (Reply::Text(text), "stop", tokens),
    }
}

fn echo(last_user: &str) -> String {
    format!("Echo: {last_user}")
}

/// Validates a v1 request and decides the answer.
pub(crate) fn plan_v1(body: &[u8]) -> Result<Plan, ChatError> {
    let obj = parse_object(body)?;
    let model = chat_model(&obj)?;
    let msgs = messages(&obj)?;
    let mut prompt_text = String::new();
    let mut last_user = String::new();
    let mut last_role = "";
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
        prompt_text.push_str(content);
        if role == "user" {
            last_user = content.to_owned();
        }
        last_role = role;
    }
    check_sampling(&obj)?;
    let max_tokens = max_tokens(&obj)?;
    let stream = stream_flag(&obj)?;
    let functions = functions(&obj)?;
    let forced = function_call_mode(&obj, &functions)?;

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
    let (reply, finish_reason, completion_tokens) = finish_text(echo(&last_user), max_tokens);
    Ok(Plan {
        model,
        stream,
        reply,
        finish_reason,
        prompt_tokens,
        completion_tokens,
    })
}

#[derive(Debug, Clone)]
struct FunctionSpec {
    name: String,
    parameters: Option<Value>,
}

enum FunctionMode {
    None,
    Auto,
    Named(String),
}

fn valid_function_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn functions(obj: &Map<String, Value>) -> Result<Vec<FunctionSpec>, ChatError> {
    let list = match obj.get("functions") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(invalid("functions must be an array")),
    };
    let mut out = Vec::with_capacity(list.len());
    for (idx, f) in list.iter().enumerate() {
        let name = f
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("functions[{idx}].name is required")))?;
        if !valid_function_name(name) {
            return Err(invalid(format!(
                "functions[{idx}].name '{name}' is invalid"
            )));
        }
        let parameters = match f.get("parameters") {
            Some(p @ Value::Object(_)) => Some(p.clone()),
            None | Some(Value::Null) if BUILTIN_FUNCTIONS.contains(&name) => None,
            None | Some(Value::Null) => {
                return Err(invalid(format!("functions[{idx}].parameters is required")));
            }
            Some(_) => {
                return Err(invalid(format!(
                    "functions[{idx}].parameters must be an object"
                )));
            }
        };
        out.push(FunctionSpec {
            name: name.to_owned(),
            parameters,
        });
    }
    Ok(out)
}

fn function_call_mode(
    obj: &Map<String, Value>,
    functions: &[FunctionSpec],
) -> Result<FunctionMode, ChatError> {
    let mode = match obj.get("function_call") {
        // GigaChat defaults to "auto" when functions are present.
        None | Some(Value::Null) => FunctionMode::Auto,
        Some(Value::String(s)) if s == "auto" => FunctionMode::Auto,
        Some(Value::String(s)) if s == "none" => FunctionMode::None,
        Some(Value::Object(o)) => match o.get("name").and_then(Value::as_str) {
            Some(name) => FunctionMode::Named(name.to_owned()),
            None => return Err(invalid("function_call.name is required")),
        },
        Some(_) => {
            return Err(invalid(
                "function_call must be \"none\", \"auto\" or {\"name\": ...}",
            ));
        }
    };
    if let FunctionMode::Named(name) = &mode
        && !functions.iter().any(|f| &f.name == name)
        && !BUILTIN_FUNCTIONS.contains(&name.as_str())
    {
        return Err(invalid(format!(
            "function_call.name '{name}' is not in functions"
        )));
    }
    if functions.is_empty() && !matches!(mode, FunctionMode::Named(_)) {
        return Ok(FunctionMode::None);
    }
    Ok(mode)
}

/// Deterministic arguments that satisfy a JSON schema, so a proxy's tool-call
/// translation can be asserted on: strings carry the user's last message.
fn sample(schema: &Value, text: &str, depth: usize) -> Value {
    if depth > 8 {
        return Value::Null;
    }
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    let kind = match schema.get("type") {
        Some(Value::String(s)) => s.as_str(),
        // `["string","null"]`: take the first non-null member.
        Some(Value::Array(kinds)) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|k| *k != "null")
            .unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ => "string",
    };
    match kind {
        "object" => {
            let mut out = Map::new();
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (name, sub) in props {
                    out.insert(name.clone(), sample(sub, text, depth + 1));
                }
            }
            Value::Object(out)
        }
        "array" => Value::Array(Vec::new()),
        "integer" => Value::from(1),
        "number" => Value::from(1.5),
        "boolean" => Value::Bool(true),
        "null" => Value::Null,
        _ => Value::String(text.to_owned()),
    }
}

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

// ---- v1 wire types: field order follows the recorded traffic (§7, §8). ----

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

fn to_bytes(value: &impl Serialize) -> Vec<u8> {
    // Our wire types contain only strings, numbers and `Value`s, which
    // always serialize; an empty object is a harmless fallback.
    serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec())
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

/// Splits a reply into word-sized pieces, each keeping its trailing
/// whitespace, the way the real stream hands out a few tokens per event.
pub(crate) fn pieces(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut prev_ws = false;
    for (i, c) in text.char_indices() {
        let ws = c.is_whitespace();
        if prev_ws && !ws {
            out.push(&text[start..i]);
            start = i;
        }
        prev_ws = ws;
    }
    if start < text.len() || out.is_empty() {
        out.push(&text[start..]);
    }
    out
}

fn data_event(json: &[u8]) -> Bytes {
    let mut ev = Vec::with_capacity(json.len() + 8);
    ev.extend_from_slice(b"data: ");
    ev.extend_from_slice(json);
    ev.extend_from_slice(b"\n\n");
    Bytes::from(ev)
}

/// The complete v1 event sequence, one `Bytes` per SSE event.
pub(crate) fn v1_events(plan: &Plan, created: u64) -> Vec<Bytes> {
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
        } => events.push(chunk(
            Delta {
                content: "",
                role: Some("assistant"),
                function_call: Some(FunctionCallOut { name, arguments }),
                functions_state_id: Some(state_id),
            },
            None,
            None,
        )),
    }
    events.push(chunk(
        Delta {
            content: "",
            role: None,
            function_call: None,
            functions_state_id: None,
        },
        Some(plan.finish_reason),
        Some(usage(plan)),
    ));
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    events
}

// ---- v2 wire types (§9). ----

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

fn named_event(name: &str, json: &[u8]) -> Bytes {
    let mut ev = Vec::with_capacity(json.len() + name.len() + 16);
    ev.extend_from_slice(b"event: ");
    ev.extend_from_slice(name.as_bytes());
    ev.extend_from_slice(b"\ndata: ");
    ev.extend_from_slice(json);
    ev.extend_from_slice(b"\n\n");
    Bytes::from(ev)
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

/// Where the split-writes fault cuts an event: right after the field name's
/// colon (so `": "` is split), inside every `": "` of the payload, in the
/// middle of the JSON, and between the two closing newlines. Byte offsets,
/// so a cut may land inside a multi-byte UTF-8 character, as TCP can.
pub(crate) fn split_points(event: &[u8]) -> Vec<usize> {
    let mut cuts = Vec::new();
    for (i, w) in event.windows(2).enumerate() {
        if w == b": " {
            cuts.push(i + 1);
        }
    }
    cuts.push(event.len() / 2);
    cuts.push(event.len().saturating_sub(1));
    cuts.retain(|&c| c > 0 && c < event.len());
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

pub(crate) fn split_event(event: &Bytes) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut start = 0;
    for cut in split_points(event) {
        out.push(event.slice(start..cut));
        start = cut;
    }
    out.push(event.slice(start..));
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn plan(body: &str) -> Result<Plan, ChatError> {
        plan_v1(body.as_bytes())
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
        let events = v1_events(&p, 1768996176);
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
            r#"{{"model":"GigaChat","messages":[{{"role":"user","content":"use weather_forecast"}},{{"role":"function","name":"weather_forecast","content":"{{}}"}}],{fns}}}"#
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

    #[test]
    fn pieces_keep_trailing_whitespace() {
        assert_eq!(pieces("Echo: hello world"), ["Echo: ", "hello ", "world"]);
        assert_eq!(pieces("a  b\nc "), ["a  ", "b\n", "c "]);
        assert_eq!(pieces(""), [""]);
        assert_eq!(pieces("Echo: ").concat(), "Echo: ");
    }

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

    #[test]
    fn split_cuts_inside_colon_space() {
        let ev = Bytes::from_static(b"data: {\"content\":\"a: b\"}\n\n");
        let parts = split_event(&ev);
        assert!(parts.len() >= 3);
        assert_eq!(parts.concat(), ev.to_vec());
        assert_eq!(&parts[0][..], b"data:");
        assert!(parts.iter().any(|p| p.starts_with(b" b")));
        assert_eq!(&parts.last().unwrap()[..], b"\n");
    }
}
