//! The body `useChat` posts — `{id, messages: UIMessage[], trigger,
//! messageId?, ...body}` — rewritten as an OpenAI Chat Completions request,
//! then translated for GigaChat by the OpenAI dialect's translator, so both
//! routes share one set of rules for roles, tools, schemas, files and tool
//! results.
//!
//! The UI message list is the SDK's own record of the chat, and it keeps
//! more than a model should see again: reasoning, sources, app data parts,
//! tool calls still waiting for their output. Those are left out; what a
//! model reads (text, files, answered tool calls) is carried. A refusal
//! names the UI request's own field (`messages[2].parts[1].url`), not the
//! Chat Completions one it was rewritten into.

use serde_json::{Map, Value, json};

use super::UiPlan;
use crate::error::Error;
use crate::openai::ChatRequest;
use crate::openai::config::OpenAiConfig;

const HINT_BODY: &str = "Post what `useChat` (DefaultChatTransport) sends: {id, messages: UIMessage[], trigger}, with your extra fields (model, system, temperature, maxOutputTokens, tools, toolChoice) in the transport's or sendMessage's `body`.";
const HINT_MESSAGES: &str = "Send `messages` as useChat keeps them: a non-empty array of UIMessage objects {id, role: \"system\" | \"user\" | \"assistant\", parts: [{type: \"text\", text}, …]}.";
const HINT_TOOLS: &str = "Send client-side tools in `body.tools` as {toolName: {description, inputSchema}}, where inputSchema is an object JSON Schema (or what the AI SDK's `jsonSchema()`/`zodSchema()` gives).";
const HINT_ZOD: &str = "A zod schema does not survive JSON: wrap it as `zodSchema(schema)` (from \"ai\") or send `z.toJSONSchema(schema)`.";
const HINT_TOOL_CHOICE: &str = "Send `toolChoice` as \"auto\", \"none\", \"required\" or {type: \"tool\", toolName: \"<one of body.tools>\"}.";
const HINT_REMOTE_URL: &str = "Send files inline as data: URLs (useChat's `sendMessage({ files })` with a FileList does this): the proxy does not fetch remote URLs, as fetching arbitrary addresses from the server would let callers reach internal networks (SSRF).";

/// Tool names and other client strings quoted in a refusal are cut to this
/// many characters, so a hostile name cannot blow up the error body.
const MAX_QUOTED_CHARS: usize = 64;

/// What a denied tool call answers when the client gave no reason: the AI
/// SDK's own wording, so the model reads the same either way.
const TOOL_DENIED: &str = "Tool call execution denied.";

fn invalid(
    message: String,
    param: Option<String>,
    code: &'static str,
    hint: &'static str,
) -> Error {
    Error::InvalidRequest {
        message,
        param,
        code,
        hint,
    }
}

/// A body field; `null` counts as absent (JSON.stringify keeps explicit
/// nulls a client sets).
fn field<'v>(object: &'v Map<String, Value>, name: &str) -> Option<&'v Value> {
    object.get(name).filter(|value| !value.is_null())
}

/// Translates a `useChat` request into GigaChat's v1 body (always
/// streamed: the answer is the UI message stream), the files to upload,
/// and what the answer's translation needs. `system_prompt` is the
/// operator's (`GIGACHAT_PROXY_CHAT_SYSTEM_PROMPT`): it comes first, before
/// anything the client sends, and nothing the client sends replaces it.
pub(crate) fn translate(
    request: &Value,
    config: &OpenAiConfig,
    system_prompt: Option<&str>,
) -> Result<(ChatRequest, UiPlan), Error> {
    let Value::Object(body) = request else {
        return Err(invalid(
            "the request body must be a JSON object".into(),
            None,
            "invalid_request",
            HINT_BODY,
        ));
    };
    let mut origins = Origins::default();
    let chat = chat_request(body, system_prompt, &mut origins)?;
    let translated =
        crate::openai::request::translate(&chat, config).map_err(|error| origins.rename(error))?;
    let plan = UiPlan {
        model: translated.plan.model.clone(),
        renamed_tools: translated.plan.renamed_tools.clone(),
    };
    Ok((translated, plan))
}

/// The Chat Completions request a UI request means.
fn chat_request(
    body: &Map<String, Value>,
    system_prompt: Option<&str>,
    origins: &mut Origins,
) -> Result<Value, Error> {
    let mut chat = Map::new();
    if let Some(model) = field(body, "model") {
        chat.insert("model".into(), model.clone());
    }
    if let Some(temperature) = field(body, "temperature") {
        chat.insert("temperature".into(), temperature.clone());
    }
    if let Some(limit) = field(body, "maxOutputTokens") {
        if limit.as_u64().is_none() {
            return Err(invalid(
                "`maxOutputTokens` must be a non-negative integer".into(),
                Some("maxOutputTokens".into()),
                "invalid_request",
                HINT_BODY,
            ));
        }
        chat.insert("max_tokens".into(), limit.clone());
    }
    if let Some(tools) = read_tools(body, origins)? {
        chat.insert("tools".into(), tools);
    }
    if let Some(choice) = read_tool_choice(body)? {
        chat.insert("tool_choice".into(), choice);
    }
    chat.insert("stream".into(), Value::Bool(true));

    let mut messages = Vec::new();
    if let Some(prompt) = system_prompt.filter(|prompt| !prompt.trim().is_empty()) {
        messages.push(json!({ "role": "system", "content": prompt }));
        origins.messages.push(Origin::Setting("system prompt"));
    }
    match field(body, "system") {
        None => {}
        Some(Value::String(system)) if system.trim().is_empty() => {}
        Some(Value::String(system)) => {
            messages.push(json!({ "role": "system", "content": system }));
            origins.messages.push(Origin::Setting("system"));
        }
        Some(_) => {
            return Err(invalid(
                "`system` must be a string".into(),
                Some("system".into()),
                "invalid_request",
                HINT_BODY,
            ));
        }
    }
    let settings = messages.len();
    translate_messages(body, &mut messages, origins)?;
    if messages.len() == settings {
        return Err(invalid(
            "`messages` holds no text, file or tool result to send".into(),
            Some("messages".into()),
            "invalid_request",
            HINT_MESSAGES,
        ));
    }
    chat.insert("messages".into(), Value::Array(messages));
    Ok(Value::Object(chat))
}

// ---------------------------------------------------------------- tools ---

/// `tools: {name: {description, inputSchema}}` as OpenAI's tool list.
fn read_tools(body: &Map<String, Value>, origins: &mut Origins) -> Result<Option<Value>, Error> {
    let tools = match field(body, "tools") {
        None => return Ok(None),
        Some(Value::Object(tools)) => tools,
        Some(_) => {
            return Err(invalid(
                "`tools` must be an object mapping each tool's name to {description, inputSchema}"
                    .into(),
                Some("tools".into()),
                "invalid_request",
                HINT_TOOLS,
            ));
        }
    };
    let mut out = Vec::with_capacity(tools.len());
    for (name, tool) in tools {
        let param = format!("tools.{}", quoted(name));
        let Value::Object(tool) = tool else {
            return Err(invalid(
                format!("`{param}` must be an object {{description, inputSchema}}"),
                Some(param),
                "invalid_request",
                HINT_TOOLS,
            ));
        };
        let mut function = Map::new();
        function.insert("name".into(), Value::String(name.clone()));
        if let Some(description) = field(tool, "description") {
            function.insert("description".into(), description.clone());
        }
        // `parameters` is the AI SDK 4 name of `inputSchema`.
        if let Some(schema) = field(tool, "inputSchema").or_else(|| field(tool, "parameters")) {
            function.insert(
                "parameters".into(),
                json_schema(schema, &format!("{param}.inputSchema"))?.clone(),
            );
        }
        out.push(json!({ "type": "function", "function": function }));
        origins.tools.push(param);
    }
    Ok(Some(Value::Array(out)))
}

/// The JSON Schema of a tool's input. The AI SDK's `jsonSchema()` and
/// `zodSchema()` serialise as `{"jsonSchema": {…}}`; a bare zod schema
/// serialises as its internals, which would read as a schema with no
/// properties and let the model call the tool with nothing, so it is
/// refused.
fn json_schema<'v>(schema: &'v Value, param: &str) -> Result<&'v Value, Error> {
    let Value::Object(object) = schema else {
        return Ok(schema);
    };
    if let Some(inner @ Value::Object(_)) = object.get("jsonSchema") {
        return Ok(inner);
    }
    if ["def", "_def", "~standard", "_zod"]
        .iter()
        .any(|key| object.contains_key(*key))
    {
        return Err(invalid(
            format!("`{param}` is a serialised zod schema, not a JSON Schema"),
            Some(param.to_owned()),
            "invalid_schema",
            HINT_ZOD,
        ));
    }
    Ok(schema)
}

/// `toolChoice` in the AI SDK's shape as OpenAI's `tool_choice`.
fn read_tool_choice(body: &Map<String, Value>) -> Result<Option<Value>, Error> {
    let refused = || {
        invalid(
            "`toolChoice` must be \"auto\", \"none\", \"required\" or {type: \"tool\", toolName}"
                .into(),
            Some("toolChoice".into()),
            "invalid_request",
            HINT_TOOL_CHOICE,
        )
    };
    match field(body, "toolChoice") {
        None => Ok(None),
        Some(Value::String(mode)) if matches!(mode.as_str(), "auto" | "none" | "required") => {
            Ok(Some(Value::String(mode.clone())))
        }
        Some(Value::Object(choice)) => {
            match (
                field(choice, "type").and_then(Value::as_str),
                field(choice, "toolName"),
            ) {
                (Some("tool"), Some(Value::String(name))) => Ok(Some(
                    json!({ "type": "function", "function": { "name": name } }),
                )),
                _ => Err(refused()),
            }
        }
        Some(_) => Err(refused()),
    }
}

// ------------------------------------------------------------- messages ---

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    System,
    User,
    Assistant,
}

/// Each UI message as one or more Chat Completions messages.
fn translate_messages(
    body: &Map<String, Value>,
    out: &mut Vec<Value>,
    origins: &mut Origins,
) -> Result<(), Error> {
    let messages = match field(body, "messages") {
        Some(Value::Array(messages)) if !messages.is_empty() => messages,
        Some(Value::Array(_)) => {
            return Err(invalid(
                "`messages` is empty".into(),
                Some("messages".into()),
                "invalid_request",
                HINT_MESSAGES,
            ));
        }
        None => {
            return Err(invalid(
                "`messages` is missing".into(),
                Some("messages".into()),
                "invalid_request",
                HINT_MESSAGES,
            ));
        }
        Some(_) => {
            return Err(invalid(
                "`messages` must be an array of UI messages".into(),
                Some("messages".into()),
                "invalid_request",
                HINT_MESSAGES,
            ));
        }
    };
    for (index, message) in messages.iter().enumerate() {
        let param = format!("messages[{index}]");
        let Value::Object(message) = message else {
            return Err(invalid(
                format!("`{param}` must be an object"),
                Some(param),
                "invalid_request",
                HINT_MESSAGES,
            ));
        };
        let role = match field(message, "role").and_then(Value::as_str) {
            Some("system") => Role::System,
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            _ => {
                return Err(invalid(
                    format!("`{param}.role` must be \"system\", \"user\" or \"assistant\""),
                    Some(format!("{param}.role")),
                    "invalid_request",
                    HINT_MESSAGES,
                ));
            }
        };
        let Some(Value::Array(parts)) = field(message, "parts") else {
            return Err(invalid(
                format!("`{param}.parts` must be an array of message parts"),
                Some(format!("{param}.parts")),
                "invalid_request",
                HINT_MESSAGES,
            ));
        };
        let mut typed = Vec::with_capacity(parts.len());
        for (position, part) in parts.iter().enumerate() {
            let part_type = part.get("type").and_then(Value::as_str).ok_or_else(|| {
                let part_param = format!("{param}.parts[{position}].type");
                invalid(
                    format!("`{part_param}` must be a string"),
                    Some(part_param),
                    "invalid_request",
                    HINT_MESSAGES,
                )
            })?;
            typed.push((position, part_type, part));
        }
        match role {
            Role::System => system_message(index, &typed, out, origins)?,
            Role::User => user_message(index, &typed, out, origins)?,
            Role::Assistant => assistant_message(index, &typed, out, origins)?,
        }
    }
    Ok(())
}

/// A message part: (its index in `parts`, its `type`, the part).
type Part<'v> = (usize, &'v str, &'v Value);

fn text_of(part: &Value, param: impl Fn() -> String) -> Result<&str, Error> {
    match part.get("text") {
        Some(Value::String(text)) => Ok(text),
        _ => {
            let param = format!("{}.text", param());
            Err(invalid(
                format!("`{param}` must be a string"),
                Some(param),
                "invalid_request",
                HINT_MESSAGES,
            ))
        }
    }
}

/// A system message: its text parts joined, as the AI SDK joins them.
fn system_message(
    index: usize,
    parts: &[Part<'_>],
    out: &mut Vec<Value>,
    origins: &mut Origins,
) -> Result<(), Error> {
    let mut text = String::new();
    for &(position, part_type, part) in parts {
        if part_type == "text" {
            text.push_str(text_of(part, || {
                format!("messages[{index}].parts[{position}]")
            })?);
        }
    }
    if !text.is_empty() {
        out.push(json!({ "role": "system", "content": text }));
        origins.messages.push(Origin::Message {
            index,
            parts: Vec::new(),
            tool: false,
        });
    }
    Ok(())
}

/// A user message: text and file parts; anything else (app data, sources)
/// is the UI's and left out. A message left with nothing is not sent.
fn user_message(
    index: usize,
    parts: &[Part<'_>],
    out: &mut Vec<Value>,
    origins: &mut Origins,
) -> Result<(), Error> {
    let mut content = Vec::new();
    let mut positions = Vec::new();
    user_content(
        &format!("messages[{index}]"),
        parts,
        &mut content,
        &mut positions,
    )?;
    if !content.is_empty() {
        out.push(json!({ "role": "user", "content": content }));
        origins.messages.push(Origin::Message {
            index,
            parts: positions,
            tool: false,
        });
    }
    Ok(())
}

/// Text and file parts as OpenAI content parts; `prefix` names the field
/// holding `parts` in a refusal.
fn user_content(
    prefix: &str,
    parts: &[Part<'_>],
    content: &mut Vec<Value>,
    positions: &mut Vec<usize>,
) -> Result<(), Error> {
    for &(position, part_type, part) in parts {
        let part_param = || format!("{prefix}.parts[{position}]");
        match part_type {
            "text" => {
                let text = text_of(part, part_param)?;
                content.push(json!({ "type": "text", "text": text }));
            }
            "file" => content.push(file_part(part, part_param)?),
            _ => continue,
        }
        positions.push(position);
    }
    Ok(())
}

/// A `file` part as OpenAI's `file` part: its `data:` URL becomes an upload
/// (type checks and decoding are the OpenAI translator's). Remote URLs are
/// refused here, with the UI part's own field named.
fn file_part(part: &Value, param: impl Fn() -> String) -> Result<Value, Error> {
    let Some(Value::String(url)) = part.get("url") else {
        let param = format!("{}.url", param());
        return Err(invalid(
            format!("`{param}` must be a string (a data: URL)"),
            Some(param),
            "invalid_request",
            HINT_REMOTE_URL,
        ));
    };
    let scheme = url.get(..url.find(':').unwrap_or(0)).unwrap_or_default();
    if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") {
        let param = format!("{}.url", param());
        return Err(invalid(
            format!("`{param}`: remote URLs are not fetched by the proxy"),
            Some(param),
            "remote_url_refused",
            HINT_REMOTE_URL,
        ));
    }
    let mut file = Map::new();
    file.insert("file_data".into(), Value::String(url.clone()));
    if let Some(Value::String(filename)) = part.get("filename") {
        file.insert("filename".into(), Value::String(filename.clone()));
    }
    Ok(json!({ "type": "file", "file": file }))
}

/// An assistant message, one Chat Completions assistant message per step
/// (the parts between `step-start`s): the step's text, and each tool call
/// that has an outcome as a call plus a `tool` result. Calls still waiting
/// for output are left out (GigaChat refuses a call without a result), as
/// are reasoning, files the model made, sources and data parts. A
/// `steering-message` (a user turn the client put between two steps)
/// becomes a user message there.
fn assistant_message(
    index: usize,
    parts: &[Part<'_>],
    out: &mut Vec<Value>,
    origins: &mut Origins,
) -> Result<(), Error> {
    let mut step = Step::default();
    for &(position, part_type, part) in parts {
        let part_param = || format!("messages[{index}].parts[{position}]");
        match part_type {
            "text" => step.text.push_str(text_of(part, part_param)?),
            "step-start" => step.flush(index, out, origins),
            "steering-message" => {
                step.flush(index, out, origins);
                if let Some(Value::Array(inner)) = part.get("parts") {
                    let inner: Vec<Part<'_>> = inner
                        .iter()
                        .enumerate()
                        .filter_map(|(at, inner)| Some((at, inner.get("type")?.as_str()?, inner)))
                        .collect();
                    let mut content = Vec::new();
                    let mut ignored = Vec::new();
                    user_content(&part_param(), &inner, &mut content, &mut ignored)?;
                    if !content.is_empty() {
                        out.push(json!({ "role": "user", "content": content }));
                        origins.messages.push(Origin::Message {
                            index,
                            parts: vec![position; content.len()],
                            tool: false,
                        });
                    }
                }
            }
            "dynamic-tool" => match field_of(part, "toolName") {
                Some(Value::String(name)) => step.tool(name, position, part, part_param)?,
                _ => {
                    let param = format!("{}.toolName", part_param());
                    return Err(invalid(
                        format!("`{param}` must be a string"),
                        Some(param),
                        "invalid_request",
                        HINT_MESSAGES,
                    ));
                }
            },
            _ => {
                if let Some(name) = part_type.strip_prefix("tool-") {
                    step.tool(name, position, part, part_param)?;
                }
            }
        }
    }
    step.flush(index, out, origins);
    Ok(())
}

fn field_of<'v>(part: &'v Value, name: &str) -> Option<&'v Value> {
    part.get(name).filter(|value| !value.is_null())
}

/// One step of an assistant message, being collected.
#[derive(Default)]
struct Step {
    text: String,
    /// OpenAI tool calls and their `tool` results, with the UI part index.
    calls: Vec<(usize, Value, Value)>,
}

impl Step {
    /// A tool part: carried when it has an outcome.
    fn tool(
        &mut self,
        name: &str,
        position: usize,
        part: &Value,
        param: impl Fn() -> String,
    ) -> Result<(), Error> {
        if name.is_empty() {
            let param = format!("{}.type", param());
            return Err(invalid(
                format!("`{param}` names no tool: a tool part's type is `tool-<name>`"),
                Some(param),
                "invalid_request",
                HINT_MESSAGES,
            ));
        }
        let state = field_of(part, "state").and_then(Value::as_str);
        let output = match state {
            // A preliminary output is a streaming tool's progress, not
            // its result.
            Some("output-available")
                if field_of(part, "preliminary").and_then(Value::as_bool) != Some(true) =>
            {
                match field_of(part, "output") {
                    None => Value::Object(Map::new()),
                    Some(output @ (Value::Object(_) | Value::String(_))) => output.clone(),
                    Some(other) => json!({ "result": other }),
                }
            }
            Some("output-error") => {
                let error = field_of(part, "errorText")
                    .and_then(Value::as_str)
                    .unwrap_or("the tool failed");
                json!({ "error": error })
            }
            Some("output-denied") => {
                let reason = part
                    .get("approval")
                    .and_then(|approval| field_of(approval, "reason"))
                    .and_then(Value::as_str)
                    .unwrap_or(TOOL_DENIED);
                json!({ "error": reason })
            }
            _ => return Ok(()),
        };
        let succeeded = state == Some("output-available");
        // `rawInput` is what AI SDK 5 kept when the input was unreadable.
        let input = field_of(part, "input").or_else(|| field_of(part, "rawInput"));
        let arguments = match input {
            None => Value::Object(Map::new()),
            Some(Value::Object(_)) => input.cloned().unwrap_or_default(),
            Some(Value::String(text)) => match serde_json::from_str::<Value>(text) {
                Ok(object @ Value::Object(_)) => object,
                _ if succeeded => return Err(not_an_object_input(param)),
                _ => Value::Object(Map::new()),
            },
            // A call that failed may have failed on this very input; the
            // model reads the error, not the input.
            Some(_) if !succeeded => Value::Object(Map::new()),
            Some(_) => return Err(not_an_object_input(param)),
        };
        // The UI's call ids are the client's to choose; pairing is done
        // here, so a fresh id per call keeps duplicates from mismatching.
        let id = format!("call_{}", self.calls.len());
        self.calls.push((
            position,
            json!({ "id": id, "type": "function", "function": { "name": name, "arguments": arguments } }),
            json!({ "role": "tool", "tool_call_id": id, "content": output }),
        ));
        Ok(())
    }

    fn flush(&mut self, index: usize, out: &mut Vec<Value>, origins: &mut Origins) {
        let text = std::mem::take(&mut self.text);
        let calls = std::mem::take(&mut self.calls);
        if text.is_empty() && calls.is_empty() {
            return;
        }
        let mut message = Map::new();
        message.insert("role".into(), "assistant".into());
        message.insert("content".into(), Value::String(text));
        let mut tool_calls = Vec::with_capacity(calls.len());
        let mut results = Vec::with_capacity(calls.len());
        let mut positions = Vec::with_capacity(calls.len());
        for (position, call, result) in calls {
            tool_calls.push(call);
            results.push((position, result));
            positions.push(position);
        }
        if !tool_calls.is_empty() {
            message.insert("tool_calls".into(), Value::Array(tool_calls));
        }
        out.push(Value::Object(message));
        origins.messages.push(Origin::Message {
            index,
            parts: positions,
            tool: false,
        });
        for (position, result) in results {
            out.push(result);
            origins.messages.push(Origin::Message {
                index,
                parts: vec![position],
                tool: true,
            });
        }
    }
}

fn not_an_object_input(param: impl Fn() -> String) -> Error {
    let param = format!("{}.input", param());
    invalid(
        format!("`{param}` must be a JSON object: GigaChat takes a tool's input as one object"),
        Some(param),
        "invalid_tool_arguments",
        HINT_TOOLS,
    )
}

/// At most [`MAX_QUOTED_CHARS`] characters of a client string.
fn quoted(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((end, _)) => format!("{}…", text.get(..end).unwrap_or_default()),
        None => text.to_owned(),
    }
}

// ------------------------------------------------- refusals, renamed ---

/// Where each Chat Completions message and tool came from in the UI
/// request, to name the UI field in a refusal of the OpenAI translator.
#[derive(Default)]
struct Origins {
    messages: Vec<Origin>,
    /// `tools[n]` → `tools.<name>`.
    tools: Vec<String>,
}

enum Origin {
    /// A body field or the operator's setting, not a UI message.
    Setting(&'static str),
    Message {
        /// Index into the UI `messages`.
        index: usize,
        /// The UI part behind each content part (user) or tool call
        /// (assistant), or behind the result (`tool`).
        parts: Vec<usize>,
        tool: bool,
    },
}

impl Origins {
    /// The OpenAI translator's refusal with the UI request's field names:
    /// its param, the param quoted in its message, and the hint where the
    /// hint described the Chat Completions shape.
    fn rename(&self, error: Error) -> Error {
        match error {
            Error::InvalidRequest {
                message,
                param: Some(param),
                code,
                hint,
            } => {
                let (renamed, area) = self.ui_param(&param);
                let hint = match (area, code) {
                    (Area::Messages, "invalid_request") => HINT_MESSAGES,
                    (Area::Tools, "invalid_request" | "unsupported_parameter") => HINT_TOOLS,
                    (Area::ToolChoice, _) => HINT_TOOL_CHOICE,
                    _ => hint,
                };
                Error::InvalidRequest {
                    message: message.replace(&param, &renamed),
                    param: Some(renamed),
                    code,
                    hint,
                }
            }
            Error::UnsupportedMedia { message } => {
                // "GigaChat does not read files of type `x` (messages[0]…)"
                let message = match (message.rfind('('), message.ends_with(')')) {
                    (Some(open), true) => {
                        let param = message.get(open + 1..message.len() - 1).unwrap_or_default();
                        let (renamed, _) = self.ui_param(param);
                        format!("{}({renamed})", message.get(..open).unwrap_or_default())
                    }
                    _ => message,
                };
                Error::UnsupportedMedia { message }
            }
            other => other,
        }
    }

    fn ui_param(&self, param: &str) -> (String, Area) {
        if let Some(rest) = param.strip_prefix("messages[") {
            return (
                self.message_param(rest)
                    .unwrap_or_else(|| "messages".into()),
                Area::Messages,
            );
        }
        if let Some(rest) = param.strip_prefix("tools[") {
            let renamed = index_and_rest(rest).and_then(|(index, rest)| {
                let base = self.tools.get(index)?;
                Some(match rest {
                    _ if rest.starts_with(".function.parameters") => format!("{base}.inputSchema"),
                    _ => base.clone(),
                })
            });
            return (renamed.unwrap_or_else(|| "tools".into()), Area::Tools);
        }
        match param {
            "tool_choice" => ("toolChoice".into(), Area::ToolChoice),
            "max_tokens" => ("maxOutputTokens".into(), Area::Other),
            other => (other.to_owned(), Area::Other),
        }
    }

    /// `messages[k]…` (without `messages[`) as the UI field.
    fn message_param(&self, rest: &str) -> Option<String> {
        let (at, rest) = index_and_rest(rest)?;
        let (index, parts, tool) = match self.messages.get(at)? {
            Origin::Setting(name) => return Some((*name).to_owned()),
            Origin::Message { index, parts, tool } => (*index, parts, *tool),
        };
        let base = format!("messages[{index}]");
        if tool {
            let part = parts.first()?;
            return Some(match rest {
                ".content" => format!("{base}.parts[{part}].output"),
                _ => format!("{base}.parts[{part}]"),
            });
        }
        let nested = rest
            .strip_prefix(".content[")
            .or_else(|| rest.strip_prefix(".tool_calls["));
        let Some(nested) = nested else {
            return Some(base);
        };
        let Some((position, inner)) = index_and_rest(nested) else {
            return Some(base);
        };
        let Some(part) = parts.get(position) else {
            return Some(base);
        };
        let field = if inner.starts_with(".file") || inner.starts_with(".image_url") {
            ".url"
        } else if inner.starts_with(".function.arguments") {
            ".input"
        } else if inner.starts_with(".text") {
            ".text"
        } else {
            ""
        };
        Some(format!("{base}.parts[{part}]{field}"))
    }
}

#[derive(Clone, Copy)]
enum Area {
    Messages,
    Tools,
    ToolChoice,
    Other,
}

/// `12]rest` → (12, `rest`).
fn index_and_rest(text: &str) -> Option<(usize, &str)> {
    let (digits, rest) = text.split_once(']')?;
    Some((digits.parse().ok()?, rest))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// A 1×1 PNG.
    const PNG: &str = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

    fn config() -> OpenAiConfig {
        OpenAiConfig::default()
    }

    fn ok(request: Value) -> (ChatRequest, UiPlan) {
        translate(&request, &config(), None).unwrap()
    }

    fn messages(request: Value) -> Value {
        ok(request).0.body["messages"].clone()
    }

    /// (status, code, param, message) of a refusal.
    fn refused(request: Value) -> (u16, String, Option<String>, String) {
        let error = translate(&request, &config(), None).unwrap_err();
        let status = error.status().as_u16();
        let code = error.code().to_string();
        match error {
            Error::InvalidRequest { message, param, .. } => (status, code, param, message),
            Error::UnsupportedMedia { message } => (status, code, None, message),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn user(text: &str) -> Value {
        json!({"id": "u", "role": "user", "parts": [{"type": "text", "text": text}]})
    }

    fn chat(messages: Value) -> Value {
        json!({"id": "chat_1", "messages": messages, "trigger": "submit-message"})
    }

    #[test]
    fn the_body_use_chat_sends_becomes_a_streamed_gigachat_request() {
        // The body DefaultChatTransport sends (identical in ai 5, 6, 7).
        let request: Value = serde_json::from_str(r#"{"model":"GigaChat","id":"chat_1","messages":[{"id":"u1","role":"user","parts":[{"type":"text","text":"Привет"}]}],"trigger":"submit-message"}"#).unwrap();
        let (translated, plan) = ok(request);
        assert_eq!(
            Value::Object(translated.body),
            json!({"model": "GigaChat", "messages": [{"role": "user", "content": "Привет"}], "stream": true})
        );
        assert!(translated.uploads.is_empty());
        assert_eq!(
            plan,
            UiPlan {
                model: "GigaChat".into(),
                renamed_tools: vec![]
            }
        );
        // No model: the configured default, streamed all the same.
        let (translated, plan) = ok(chat(json!([user("hi")])));
        assert_eq!(translated.body["model"], "GigaChat");
        assert_eq!(translated.body["stream"], true);
        assert_eq!(plan.model, "GigaChat");
    }

    #[test]
    fn the_server_prompt_comes_first_then_the_body_system_then_ui_system_messages() {
        let request = json!({"id": "c", "system": "Отвечай кратко.", "messages": [
            {"id": "s", "role": "system", "parts": [{"type": "text", "text": "Ты "}, {"type": "text", "text": "бот."}]},
            user("hi"),
            {"id": "s2", "role": "system", "parts": [{"type": "text", "text": "later"}]},
        ]});
        let (translated, _) = translate(&request, &config(), Some("SERVER RULES")).unwrap();
        assert_eq!(
            translated.body["messages"],
            json!([
                {"role": "system", "content": "SERVER RULES\n\nОтвечай кратко.\n\nТы бот."},
                {"role": "user", "content": "hi"},
                // A system message after the conversation began cannot
                // take the place of the first one.
                {"role": "user", "content": "later"},
            ])
        );
        // Without a server prompt the client's own system leads.
        assert_eq!(
            messages(request)[0]["content"],
            "Отвечай кратко.\n\nТы бот."
        );
        // A blank server prompt is no prompt.
        let (translated, _) = translate(&chat(json!([user("hi")])), &config(), Some("  ")).unwrap();
        assert_eq!(
            translated.body["messages"],
            json!([{"role": "user", "content": "hi"}])
        );
        let (status, _, param, _) = refused(json!({"system": ["x"], "messages": [user("hi")]}));
        assert_eq!((status, param.as_deref()), (400, Some("system")));
    }

    #[test]
    fn assistant_messages_split_at_steps_with_answered_tool_calls_and_ui_only_parts_dropped() {
        let request = chat(json!([
            user("погода?"),
            {"id": "a1", "role": "assistant", "parts": [
                {"type": "step-start"},
                {"type": "reasoning", "text": "думаю"},
                {"type": "text", "text": "Сейчас "},
                {"type": "text", "text": "узнаю."},
                {"type": "tool-get_weather", "toolCallId": "x", "state": "output-available",
                    "input": {"city": "Москва"}, "output": {"temp": 3}},
                {"type": "tool-get_time", "toolCallId": "y", "state": "input-available", "input": {}},
                {"type": "tool-get_weather", "toolCallId": "x", "state": "output-error",
                    "input": {"city": "Тула"}, "errorText": "нет связи"},
                {"type": "step-start"},
                {"type": "source-url", "sourceId": "s", "url": "https://example.com"},
                {"type": "data-weather", "data": {"a": 1}},
                {"type": "dynamic-tool", "toolName": "lookup", "toolCallId": "z", "state": "output-available",
                    "input": {"q": "x"}, "output": "plain text"},
                {"type": "tool-stream", "toolCallId": "p", "state": "output-available", "preliminary": true,
                    "input": {}, "output": {"partial": true}},
                {"type": "step-start"},
                {"type": "text", "text": "Готово."},
            ]},
            user("спасибо"),
        ]));
        assert_eq!(
            messages(request),
            json!([
                {"role": "user", "content": "погода?"},
                {"role": "assistant", "content": "Сейчас узнаю.", "function_call": {"name": "get_weather", "arguments": {"city": "Москва"}}},
                {"role": "function", "name": "get_weather", "content": "{\"temp\":3}"},
                {"role": "assistant", "content": "", "function_call": {"name": "get_weather", "arguments": {"city": "Тула"}}},
                {"role": "function", "name": "get_weather", "content": "{\"error\":\"нет связи\"}"},
                {"role": "assistant", "content": "", "function_call": {"name": "lookup", "arguments": {"q": "x"}}},
                {"role": "function", "name": "lookup", "content": "{\"result\":\"plain text\"}"},
                {"role": "assistant", "content": "Готово."},
                {"role": "user", "content": "спасибо"},
            ])
        );
    }

    #[test]
    fn tool_outputs_of_every_json_type_become_objects() {
        let with_output = |output: Value| {
            chat(
                json!([user("q"), {"id": "a", "role": "assistant", "parts": [
                {"type": "tool-f", "toolCallId": "1", "state": "output-available", "input": {}, "output": output}]}]),
            )
        };
        for (output, content) in [
            (json!([1, 2]), "{\"result\":[1,2]}"),
            (json!(7), "{\"result\":7}"),
            (json!("{\"a\":1}"), "{\"a\":1}"),
            (Value::Null, "{}"),
        ] {
            assert_eq!(
                messages(with_output(output.clone()))[2]["content"],
                content,
                "{output}"
            );
        }
        // A denied call answers with the reason, or the SDK's wording.
        let denied = chat(
            json!([user("q"), {"id": "a", "role": "assistant", "parts": [
            {"type": "tool-f", "toolCallId": "1", "state": "output-denied", "input": {}, "approval": {"id": "x", "approved": false}}]}]),
        );
        assert_eq!(
            messages(denied)[2]["content"],
            "{\"error\":\"Tool call execution denied.\"}"
        );
        // Input as a JSON string (as some stores keep it) is read.
        let stringly = chat(
            json!([user("q"), {"id": "a", "role": "assistant", "parts": [
            {"type": "tool-f", "toolCallId": "1", "state": "output-available", "input": "{\"a\":1}", "output": {}}]}]),
        );
        assert_eq!(
            messages(stringly)[1]["function_call"]["arguments"],
            json!({"a": 1})
        );
    }

    #[test]
    fn tool_input_that_is_no_object_is_refused_unless_the_call_failed() {
        let part = |state: &str| {
            chat(
                json!([user("q"), {"id": "a", "role": "assistant", "parts": [
                {"type": "text", "text": "x"},
                {"type": "tool-f", "toolCallId": "1", "state": state, "input": [1], "output": {}, "errorText": "bad"}]}]),
            )
        };
        let (status, code, param, _) = refused(part("output-available"));
        assert_eq!((status, code.as_str()), (400, "invalid_tool_arguments"));
        assert_eq!(param.as_deref(), Some("messages[1].parts[1].input"));
        assert_eq!(
            messages(part("output-error"))[1]["function_call"]["arguments"],
            json!({})
        );
        let (_, _, param, _) = refused(chat(
            json!([user("q"), {"id": "a", "role": "assistant", "parts": [
            {"type": "tool-", "state": "output-available", "input": {}}]}]),
        ));
        assert_eq!(param.as_deref(), Some("messages[1].parts[0].type"));
    }

    #[test]
    fn a_steering_message_between_steps_becomes_a_user_turn() {
        let request = chat(
            json!([user("q"), {"id": "a", "role": "assistant", "parts": [
                {"type": "text", "text": "one"},
                {"type": "steering-message", "parts": [{"type": "text", "text": "also this"}]},
                {"type": "text", "text": "two"},
            ]}]),
        );
        assert_eq!(
            messages(request),
            json!([
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "one"},
                {"role": "user", "content": "also this"},
                {"role": "assistant", "content": "two"},
            ])
        );
    }

    #[test]
    fn file_parts_become_uploads_and_remote_urls_are_refused_like_on_the_openai_route() {
        let request = chat(json!([{"id": "u", "role": "user", "parts": [
            {"type": "text", "text": "Что на картинке?"},
            {"type": "file", "mediaType": "image/png", "filename": "cat.png", "url": PNG},
            {"type": "data-note", "data": 1},
        ]}]));
        let (translated, _) = translate(&request, &config(), Some("rules")).unwrap();
        assert_eq!(
            translated.body["messages"][1],
            json!({"role": "user", "content": "Что на картинке?"})
        );
        assert_eq!(translated.uploads.len(), 1);
        let upload = &translated.uploads[0];
        assert_eq!(
            (
                upload.message,
                upload.media_type.as_str(),
                upload.filename.as_str()
            ),
            (1, "image/png", "cat.png")
        );
        assert_eq!(upload.data.len(), 70);

        for url in ["https://example.com/cat.png", "HTTP://10.0.0.1/x"] {
            let (status, code, param, message) = refused(chat(
                json!([{"id": "u", "role": "user", "parts": [
                {"type": "text", "text": "x"}, {"type": "file", "mediaType": "image/png", "url": url}]}]),
            ));
            assert_eq!((status, code.as_str()), (400, "remote_url_refused"));
            assert_eq!(param.as_deref(), Some("messages[0].parts[1].url"));
            assert!(message.contains("messages[0].parts[1].url"), "{message}");
        }
    }

    #[test]
    fn refusals_of_the_shared_translator_name_the_ui_field() {
        // A file type GigaChat cannot read: 415 naming the UI part.
        let (status, code, _, message) = refused(chat(
            json!([user("a"), {"id": "u", "role": "user", "parts": [
            {"type": "data-x", "data": 1},
            {"type": "file", "mediaType": "application/zip", "url": "data:application/zip;base64,UEsDBA=="}]}]),
        ));
        assert_eq!((status, code.as_str()), (415, "unsupported_media_type"));
        assert!(message.ends_with("(messages[1].parts[1].url)"), "{message}");
        // Broken base64.
        let (_, code, param, message) =
            refused(chat(json!([{"id": "u", "role": "user", "parts": [
            {"type": "file", "mediaType": "image/png", "url": "data:image/png;base64,@@@"}]}])));
        assert_eq!(code, "invalid_data_url");
        assert_eq!(param.as_deref(), Some("messages[0].parts[0].url"));
        assert!(
            message.starts_with("`messages[0].parts[0].url`"),
            "{message}"
        );
        // A tool schema whose root is no object.
        let (_, code, param, _) = refused(json!({"messages": [user("q")],
            "tools": {"weather": {"inputSchema": {"type": "string"}}}}));
        assert_eq!(code, "invalid_schema");
        assert_eq!(param.as_deref(), Some("tools.weather.inputSchema"));
        // toolChoice naming a tool that is not there.
        let (_, _, param, message) = refused(json!({"messages": [user("q")],
            "tools": {"a": {}}, "toolChoice": {"type": "tool", "toolName": "b"}}));
        assert_eq!(param.as_deref(), Some("toolChoice"));
        assert!(message.contains("`toolChoice`"), "{message}");
        // A bad temperature keeps its name.
        let (_, _, param, _) = refused(json!({"messages": [user("q")], "temperature": -1}));
        assert_eq!(param.as_deref(), Some("temperature"));
    }

    #[test]
    fn tools_become_functions_with_unwrapped_schemas_and_built_in_names_renamed() {
        let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
        let request = json!({"messages": [user("q")], "tools": {
            "get_weather": {"description": "Погода", "inputSchema": schema},
            // What `jsonSchema()` / `zodSchema()` serialise to.
            "wrapped": {"inputSchema": {"jsonSchema": schema}},
            "web_search": {"description": "client search", "inputSchema": {"type": "object", "properties": {}}},
            "bare": {},
        }});
        let (translated, plan) = ok(request);
        let functions = translated.body["functions"].as_array().unwrap();
        let by_name = |name: &str| {
            functions
                .iter()
                .find(|f| f["name"] == name)
                .unwrap()
                .clone()
        };
        assert_eq!(by_name("get_weather")["description"], "Погода");
        assert_eq!(
            by_name("get_weather")["parameters"]["properties"]["city"]["type"],
            "string"
        );
        assert_eq!(
            by_name("wrapped")["parameters"]["properties"]["city"]["type"],
            "string"
        );
        assert_eq!(
            by_name("bare")["parameters"],
            json!({"type": "object", "properties": {}})
        );
        assert_eq!(by_name("user_web_search")["description"], "client search");
        assert_eq!(
            plan.renamed_tools,
            [("user_web_search".to_owned(), "web_search".to_owned())]
        );
        assert_eq!(translated.body["function_call"], "auto");

        // A bare zod schema, serialised, is refused rather than read as "no arguments".
        let (_, code, param, _) = refused(json!({"messages": [user("q")], "tools": {
            "z": {"inputSchema": {"def": {"type": "object", "shape": {}}, "type": "object"}}}}));
        assert_eq!(code, "invalid_schema");
        assert_eq!(param.as_deref(), Some("tools.z.inputSchema"));
        for tools in [json!([]), json!({"t": "x"})] {
            let (status, _, param, _) = refused(json!({"messages": [user("q")], "tools": tools}));
            assert_eq!(status, 400);
            assert!(param.unwrap().starts_with("tools"));
        }
    }

    #[test]
    fn tool_choice_in_the_ai_sdk_shape_maps_to_function_call() {
        let with = |choice: Value| {
            let request =
                json!({"messages": [user("q")], "tools": {"a": {}, "b": {}}, "toolChoice": choice});
            ok(request).0.body.get("function_call").cloned()
        };
        assert_eq!(with(json!("auto")), Some(json!("auto")));
        assert_eq!(with(json!("none")), Some(json!("none")));
        assert_eq!(
            with(json!({"type": "tool", "toolName": "b"})),
            Some(json!({"name": "b"}))
        );
        // GigaChat has no "call some tool": with several it is auto.
        assert_eq!(with(json!("required")), Some(json!("auto")));
        for bad in [
            json!("any"),
            json!({"type": "function", "toolName": "a"}),
            json!(3),
        ] {
            let (status, _, param, _) =
                refused(json!({"messages": [user("q")], "tools": {"a": {}}, "toolChoice": bad}));
            assert_eq!((status, param.as_deref()), (400, Some("toolChoice")));
        }
    }

    #[test]
    fn max_output_tokens_and_temperature_are_carried() {
        let (translated, _) =
            ok(json!({"messages": [user("q")], "maxOutputTokens": 100, "temperature": 0.5}));
        assert_eq!(translated.body["max_tokens"], 100);
        assert_eq!(translated.body["temperature"], 0.5);
        let (status, _, param, _) =
            refused(json!({"messages": [user("q")], "maxOutputTokens": "many"}));
        assert_eq!((status, param.as_deref()), (400, Some("maxOutputTokens")));
    }

    #[test]
    fn only_allowlisted_body_fields_reach_gigachat() {
        let (translated, _) = ok(
            json!({"id": "c", "trigger": "regenerate-message", "messageId": "m",
            "messages": [user("q")], "stream": false, "profanity_check": false, "functions": [{"name": "x"}],
            "userSettings": {"theme": "dark"}, "top_p": 0.1}),
        );
        assert_eq!(
            Value::Object(translated.body),
            json!({"model": "GigaChat", "messages": [{"role": "user", "content": "q"}], "stream": true})
        );
    }

    #[test]
    fn malformed_messages_are_refused_with_their_field() {
        for (request, expected) in [
            (json!({"id": "c"}), "messages"),
            (json!({"messages": []}), "messages"),
            (json!({"messages": {"0": user("q")}}), "messages"),
            (json!({"messages": "hi"}), "messages"),
            (json!({"messages": [user("q"), 7]}), "messages[1]"),
            (
                json!({"messages": [{"role": "tool", "parts": []}]}),
                "messages[0].role",
            ),
            (
                json!({"messages": [{"role": "user", "content": "hi"}]}),
                "messages[0].parts",
            ),
            (
                json!({"messages": [{"role": "user", "parts": [{"text": "x"}]}]}),
                "messages[0].parts[0].type",
            ),
            (
                json!({"messages": [{"role": "user", "parts": [{"type": "text", "text": 5}]}]}),
                "messages[0].parts[0].text",
            ),
            (
                json!({"messages": [{"role": "user", "parts": [{"type": "file"}]}]}),
                "messages[0].parts[0].url",
            ),
            (
                json!({"messages": [{"role": "assistant", "parts": [{"type": "dynamic-tool", "state": "output-available"}]}]}),
                "messages[0].parts[0].toolName",
            ),
            // Nothing a model could read.
            (
                json!({"messages": [{"role": "user", "parts": [{"type": "data-x", "data": 1}]}]}),
                "messages",
            ),
        ] {
            let (status, _, param, _) = refused(request.clone());
            assert_eq!(
                (status, param.as_deref()),
                (400, Some(expected)),
                "{request}"
            );
        }
        let (status, _, param, _) = refused(json!([user("q")]));
        assert_eq!((status, param), (400, None));
    }

    #[test]
    fn hostile_input_is_refused_or_carried_without_panicking() {
        // Deep nesting, as deep as the JSON parser admits, in every place
        // that holds client JSON.
        let depth = 120;
        let deep = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        let deep_object = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        let body = format!(
            r#"{{"messages":[{{"role":"user","parts":[{{"type":"text","text":"q"}},{{"type":"data-x","data":{deep}}}]}},
            {{"role":"assistant","parts":[{{"type":"tool-f","state":"output-available","input":{deep_object},"output":{deep}}}]}}],
            "tools":{{"f":{{"inputSchema":{deep_object}}}}}}}"#
        );
        let request: Value = serde_json::from_str(&body).unwrap();
        let _ = translate(&request, &config(), None);
        // Thousands of parts and messages.
        let parts: Vec<Value> = (0..5000)
            .map(|i| json!({"type": "text", "text": i.to_string()}))
            .collect();
        let many: Vec<Value> = (0..2000).map(|_| user("x")).collect();
        let (translated, _) = ok(json!({"messages": [{"role": "user", "parts": parts}]}));
        assert!(
            translated.body["messages"][0]["content"]
                .as_str()
                .unwrap()
                .ends_with("4999")
        );
        assert_eq!(
            messages(json!({"messages": many}))
                .as_array()
                .unwrap()
                .len(),
            2000
        );
        // A huge tool name is cut in the refusal.
        let name = "n".repeat(100_000);
        let (_, _, param, message) = refused(json!({"messages": [user("q")], "tools": {name: 1}}));
        assert!(param.unwrap().len() < 100 && message.len() < 300);
    }
}
