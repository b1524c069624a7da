//! OpenAI's Responses API (`POST /v1/responses`) carried over GigaChat's
//! chat: the AI SDK's default `openai(model)` and LangChain's reasoning
//! options speak it, and a server that only speaks Chat Completions breaks
//! them. A Responses request is rewritten as a Chat Completions request and
//! goes through the same translation to GigaChat as `chat/completions`;
//! GigaChat's answer becomes a `response` object (here) or the Responses
//! event stream (`responses_stream`).
//!
//! Stateless: the proxy keeps no responses, so a request must carry the
//! whole conversation in `input`. `previous_response_id`, `conversation`
//! and references to earlier output items are refused with a 400 that says
//! so, rather than answered as if the history were empty.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::error::Error;
use crate::openai::ChatRequest;
use crate::openai::config::OpenAiConfig;
use crate::openai::gigachat::{self, ChatAnswer, ChatUsage, FunctionCall};

/// What the answer side of a Responses translation needs to know.
#[derive(Debug, Clone)]
pub(crate) struct ResponsesPlan {
    /// The model as the client named it (or the default), echoed back.
    pub model: String,
    /// The forced function that carries `text.format: json_schema`: its
    /// arguments are the answer's text.
    pub structured_output: Option<String>,
    /// GigaChat function name → the client's tool name.
    pub renamed_tools: Vec<(String, String)>,
    /// When the request arrived (Unix seconds): the response's `created_at`.
    pub created_at: u64,
    /// The request's settings a response object repeats (`instructions`,
    /// `tools`, `tool_choice`, `text`, …): clients and their type
    /// definitions expect every response to carry them.
    echo: Map<String, Value>,
}

/// The hint of every refusal that comes from the proxy keeping no state.
const STATELESS_HINT: &str = "This proxy keeps no responses: send the whole conversation in `input` (earlier turns as `message`, `function_call` and `function_call_output` items). With the AI SDK set `providerOptions: { openai: { store: false } }` so it sends earlier turns in full; `store` itself is ignored.";

/// Responses request → (GigaChat request, what its answer needs).
pub(crate) fn translate_request(
    request: &Value,
    config: &OpenAiConfig,
) -> Result<(ChatRequest, ResponsesPlan), Error> {
    let (chat, echo) = chat_request(request)?;
    let translated = crate::openai::request::translate(&chat, config)?;
    let plan = ResponsesPlan {
        model: translated.plan.model.clone(),
        structured_output: translated.plan.structured_output.clone(),
        renamed_tools: translated.plan.renamed_tools.clone(),
        created_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs()),
        echo,
    };
    Ok((translated, plan))
}

fn invalid(
    message: impl Into<String>,
    param: impl Into<Option<String>>,
    code: &'static str,
    hint: &'static str,
) -> Error {
    Error::InvalidRequest {
        message: message.into(),
        param: param.into(),
        code,
        hint,
    }
}

/// Fields of a Chat Completions request that mean the same in a Responses
/// request, and GigaChat's own extras a client may pass either way.
const PASSED_THROUGH: [&str; 10] = [
    "model",
    "temperature",
    "top_p",
    "stream",
    "repetition_penalty",
    "profanity_check",
    "update_interval",
    "reasoning_effort",
    "function_ranker",
    "flags",
];

/// A Responses request rewritten as a Chat Completions request, and the
/// settings its response objects repeat.
fn chat_request(request: &Value) -> Result<(Value, Map<String, Value>), Error> {
    let Some(request) = request.as_object() else {
        return Err(invalid(
            "the request body must be a JSON object",
            None,
            "invalid_request",
            "Send a Responses API request: {\"model\": …, \"input\": …}.",
        ));
    };
    refuse_stateful(request)?;

    let mut chat = Map::new();
    for field in PASSED_THROUGH {
        if let Some(value) = request.get(field).filter(|v| !v.is_null()) {
            chat.insert(field.to_owned(), value.clone());
        }
    }
    if let Some(extra) = request.get("extra_body").filter(|v| v.is_object()) {
        chat.insert("extra_body".to_owned(), extra.clone());
    }
    if let Some(limit) = request.get("max_output_tokens").filter(|v| !v.is_null()) {
        if limit.as_u64().is_none() {
            return Err(invalid(
                "`max_output_tokens` must be a non-negative integer",
                Some("max_output_tokens".to_owned()),
                "invalid_request",
                "Send the answer's token limit as an integer, or leave it out.",
            ));
        }
        chat.insert("max_tokens".to_owned(), limit.clone());
    }
    let reasoning = request.get("reasoning").filter(|v| !v.is_null());
    if let Some(effort) = reasoning
        .and_then(|r| r.get("effort"))
        .filter(|v| v.is_string())
    {
        chat.entry("reasoning_effort")
            .or_insert_with(|| effort.clone());
    }

    let mut messages = Vec::new();
    match request.get("instructions") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => messages.push(json!({"role": "system", "content": text})),
        Some(_) => {
            return Err(invalid(
                "`instructions` must be a string",
                Some("instructions".to_owned()),
                "invalid_request",
                "Put the system prompt in `instructions` as text, or as a `system` message in `input`.",
            ));
        }
    }
    match request.get("input") {
        Some(Value::String(text)) => messages.push(json!({"role": "user", "content": text})),
        Some(Value::Array(items)) => input_items(items, &mut messages)?,
        None | Some(Value::Null) => {
            return Err(invalid(
                "`input` is required",
                Some("input".to_owned()),
                "invalid_request",
                "Send the conversation in `input`: a string, or a list of message items.",
            ));
        }
        Some(_) => {
            return Err(invalid(
                "`input` must be a string or a list of items",
                Some("input".to_owned()),
                "invalid_request",
                "Send the conversation in `input`: a string, or a list of message items.",
            ));
        }
    }
    chat.insert("messages".to_owned(), Value::Array(messages));

    let (tools, names) = tools(request.get("tools"))?;
    let tool_choice = tool_choice(request.get("tool_choice"), &names)?;
    let tools = match &tool_choice {
        // `allowed_tools` narrows the list the model sees.
        Some(ToolChoice::Allowed { names: allowed, .. }) => tools
            .into_iter()
            .filter(|tool| {
                let name = tool.pointer("/function/name").and_then(Value::as_str);
                name.is_some_and(|name| allowed.iter().any(|a| a == name))
            })
            .collect(),
        _ => tools,
    };
    if !tools.is_empty() {
        chat.insert("tools".to_owned(), Value::Array(tools));
    }
    if let Some(choice) = &tool_choice {
        chat.insert("tool_choice".to_owned(), choice.chat());
    }

    let format = request
        .get("text")
        .and_then(|t| t.get("format"))
        .filter(|f| !f.is_null());
    if let Some(format) = format
        && let Some(response_format) = response_format(format)?
    {
        chat.insert("response_format".to_owned(), response_format);
    }

    let echo = echo(request, format, reasoning);
    Ok((Value::Object(chat), echo))
}

/// A request that leans on state the proxy does not keep.
fn refuse_stateful(request: &Map<String, Value>) -> Result<(), Error> {
    for field in ["previous_response_id", "conversation"] {
        if request.get(field).is_some_and(|v| !v.is_null()) {
            return Err(invalid(
                format!(
                    "`{field}` is not supported: the proxy keeps no responses or conversations"
                ),
                Some(field.to_owned()),
                "previous_response_unsupported",
                STATELESS_HINT,
            ));
        }
    }
    if request.get("background").and_then(Value::as_bool) == Some(true) {
        return Err(invalid(
            "`background: true` is not supported: the proxy keeps no responses to poll",
            Some("background".to_owned()),
            "unsupported_parameter",
            "Leave `background` unset and read the answer from this request (use `stream: true` for long answers).",
        ));
    }
    if request.get("prompt").is_some_and(|v| !v.is_null()) {
        return Err(invalid(
            "`prompt` (stored prompt templates) is not supported",
            Some("prompt".to_owned()),
            "unsupported_parameter",
            "Send the prompt's text in `instructions` and `input` instead.",
        ));
    }
    Ok(())
}

/// `input` items → chat messages, in order.
fn input_items(items: &[Value], messages: &mut Vec<Value>) -> Result<(), Error> {
    for (i, item) in items.iter().enumerate() {
        let path = format!("input[{i}]");
        let Some(fields) = item.as_object() else {
            return Err(invalid(
                format!("`{path}` must be an object"),
                Some(path),
                "invalid_request",
                "Each `input` item is an object such as {\"role\": \"user\", \"content\": \"…\"}.",
            ));
        };
        match fields.get("type").and_then(Value::as_str) {
            None | Some("message") => messages.push(message(fields, &path)?),
            Some("function_call") => function_call(fields, &path, messages)?,
            Some("function_call_output") => messages.push(json!({
                "role": "tool",
                "tool_call_id": required_str(fields, "call_id", &path)?,
                "content": tool_output(fields.get("output"), &path)?,
            })),
            // Earlier reasoning is not sent back to GigaChat, which reads
            // only the conversation's text.
            Some("reasoning") => {}
            Some("item_reference") => {
                let id = fields.get("id").and_then(Value::as_str).unwrap_or_default();
                // Our reasoning items (`rs_…`) would be dropped anyway.
                if !id.starts_with("rs_") {
                    return Err(invalid(
                        format!(
                            "`{path}` references an earlier output item (`item_reference`), which this proxy does not keep"
                        ),
                        Some(path),
                        "previous_response_unsupported",
                        STATELESS_HINT,
                    ));
                }
            }
            Some(other) => {
                return Err(invalid(
                    format!("`{path}` is a `{other}` item, which GigaChat has no equivalent for"),
                    Some(path),
                    "unsupported_input_item",
                    "Send `message`, `function_call` and `function_call_output` items only.",
                ));
            }
        }
    }
    Ok(())
}

fn required_str<'a>(
    fields: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<&'a str, Error> {
    fields.get(key).and_then(Value::as_str).ok_or_else(|| {
        invalid(
            format!("`{path}.{key}` must be a string"),
            Some(format!("{path}.{key}")),
            "invalid_request",
            "Each item needs the fields the Responses API defines for its type.",
        )
    })
}

/// A `message` item (or the short `{role, content}` form).
fn message(fields: &Map<String, Value>, path: &str) -> Result<Value, Error> {
    let role = required_str(fields, "role", path)?;
    let content_path = format!("{path}.content");
    let content = match fields.get("content") {
        Some(Value::String(text)) => Value::String(text.clone()),
        Some(Value::Array(parts)) if role == "assistant" => {
            Value::String(text_of(parts, &content_path)?)
        }
        Some(Value::Array(parts)) => Value::Array(
            parts
                .iter()
                .enumerate()
                .map(|(j, part)| content_part(part, &format!("{content_path}[{j}]")))
                .collect::<Result<_, _>>()?,
        ),
        _ => {
            return Err(invalid(
                format!("`{content_path}` must be a string or a list of content parts"),
                Some(content_path),
                "invalid_request",
                "Send the message's content as text or as `input_text`/`input_image`/`input_file` parts.",
            ));
        }
    };
    match role {
        "user" | "assistant" | "system" | "developer" => {}
        _ => {
            return Err(invalid(
                format!("`{path}.role` must be user, assistant, system or developer"),
                Some(format!("{path}.role")),
                "invalid_request",
                "Use one of the roles user, assistant, system, developer.",
            ));
        }
    }
    Ok(json!({"role": role, "content": content}))
}

/// The text of an assistant message's parts (`output_text`, `refusal`).
fn text_of(parts: &[Value], path: &str) -> Result<String, Error> {
    let mut text = String::new();
    for (j, part) in parts.iter().enumerate() {
        let piece = match part.get("type").and_then(Value::as_str) {
            Some("output_text" | "input_text" | "text") => part.get("text"),
            Some("refusal") => part.get("refusal"),
            _ => None,
        };
        let Some(piece) = piece.and_then(Value::as_str) else {
            return Err(invalid(
                format!("`{path}[{j}]` is not a text part"),
                Some(format!("{path}[{j}]")),
                "invalid_request",
                "An assistant message's content is text: `output_text` parts.",
            ));
        };
        text.push_str(piece);
    }
    Ok(text)
}

/// One content part of a user/system message → its Chat Completions form.
fn content_part(part: &Value, path: &str) -> Result<Value, Error> {
    let text = |key: &str| part.get(key).and_then(Value::as_str);
    match part.get("type").and_then(Value::as_str) {
        Some("input_text" | "output_text" | "text") => match text("text") {
            Some(t) => Ok(json!({"type": "text", "text": t})),
            None => Err(invalid(
                format!("`{path}.text` must be a string"),
                Some(format!("{path}.text")),
                "invalid_request",
                "A text part is {\"type\": \"input_text\", \"text\": \"…\"}.",
            )),
        },
        Some("input_image") => match text("image_url") {
            Some(url) => {
                let mut image = json!({"url": url});
                if let Some(detail) = text("detail") {
                    image["detail"] = json!(detail);
                }
                Ok(json!({"type": "image_url", "image_url": image}))
            }
            None => Err(invalid(
                format!("`{path}` names no `image_url`: images by `file_id` are not supported"),
                Some(path.to_owned()),
                "unsupported_parameter",
                "Send the image inline as a data: URL in `image_url` (data:image/png;base64,…).",
            )),
        },
        Some("input_file") => {
            if let Some(data) = text("file_data") {
                let mut file = json!({"file_data": data});
                if let Some(name) = text("filename") {
                    file["filename"] = json!(name);
                }
                Ok(json!({"type": "file", "file": file}))
            } else if text("file_url").is_some() {
                Err(invalid(
                    format!("`{path}.file_url` is refused: the proxy does not fetch remote files"),
                    Some(format!("{path}.file_url")),
                    "remote_url_refused",
                    "Send the file inline in `file_data` as a data: URL (data:application/pdf;base64,…).",
                ))
            } else {
                Err(invalid(
                    format!("`{path}` has no `file_data`: files by `file_id` are not supported"),
                    Some(path.to_owned()),
                    "unsupported_parameter",
                    "Send the file inline in `file_data` as a data: URL (data:application/pdf;base64,…).",
                ))
            }
        }
        other => Err(invalid(
            format!(
                "`{path}` is a `{}` part, which GigaChat cannot read",
                other.unwrap_or("untyped")
            ),
            Some(path.to_owned()),
            "unsupported_content",
            "Send `input_text`, `input_image` (data: URL) or `input_file` (data: URL) parts.",
        )),
    }
}

/// A `function_call` item joins the assistant turn before it (calls of one
/// turn are consecutive items), or starts one.
fn function_call(
    fields: &Map<String, Value>,
    path: &str,
    messages: &mut Vec<Value>,
) -> Result<(), Error> {
    let arguments = match fields.get("arguments") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Null) | None => "{}".to_owned(),
        Some(other) => other.to_string(),
    };
    let call = json!({
        "id": required_str(fields, "call_id", path)?,
        "type": "function",
        "function": {"name": required_str(fields, "name", path)?, "arguments": arguments},
    });
    if let Some(last) = messages.last_mut()
        && last.get("role").and_then(Value::as_str) == Some("assistant")
        && let Some(last) = last.as_object_mut()
    {
        match last.get_mut("tool_calls").and_then(Value::as_array_mut) {
            Some(calls) => calls.push(call),
            None => {
                last.insert("tool_calls".to_owned(), json!([call]));
            }
        }
        return Ok(());
    }
    messages.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
    Ok(())
}

/// A tool's result as the chat `tool` message's text.
fn tool_output(output: Option<&Value>, path: &str) -> Result<String, Error> {
    match output {
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(parts)) => text_of(parts, &format!("{path}.output")),
        _ => Err(invalid(
            format!("`{path}.output` must be a string"),
            Some(format!("{path}.output")),
            "invalid_request",
            "Send the tool's result as text (JSON text is kept as JSON).",
        )),
    }
}

/// Responses' flat function tools → Chat Completions tools, and their
/// names. Built-in tools (web search, file search, …) run on OpenAI's side
/// and have no GigaChat equivalent.
fn tools(tools: Option<&Value>) -> Result<(Vec<Value>, Vec<String>), Error> {
    let Some(list) = tools.filter(|t| !t.is_null()) else {
        return Ok((Vec::new(), Vec::new()));
    };
    let Some(list) = list.as_array() else {
        return Err(invalid(
            "`tools` must be a list",
            Some("tools".to_owned()),
            "invalid_request",
            "Send tools as [{\"type\": \"function\", \"name\": …, \"parameters\": {…}}].",
        ));
    };
    let mut built_in = Vec::new();
    let mut chat = Vec::with_capacity(list.len());
    let mut names = Vec::with_capacity(list.len());
    for (i, tool) in list.iter().enumerate() {
        match tool.get("type").and_then(Value::as_str) {
            Some("function") => {
                let Some(name) = tool.get("name").and_then(Value::as_str) else {
                    return Err(invalid(
                        format!("`tools[{i}].name` must be a string"),
                        Some(format!("tools[{i}].name")),
                        "invalid_request",
                        "A function tool is {\"type\": \"function\", \"name\": …, \"parameters\": {…}}.",
                    ));
                };
                let mut function = Map::new();
                for key in ["name", "description", "parameters", "strict"] {
                    if let Some(value) = tool.get(key).filter(|v| !v.is_null()) {
                        function.insert(key.to_owned(), value.clone());
                    }
                }
                chat.push(json!({"type": "function", "function": function}));
                names.push(name.to_owned());
            }
            other => built_in.push(other.unwrap_or("untyped").to_owned()),
        }
    }
    if !built_in.is_empty() {
        return Err(invalid(
            format!(
                "tools of type {} are OpenAI's built-in tools, which GigaChat does not have",
                built_in.join(", ")
            ),
            Some("tools".to_owned()),
            "unsupported_tool",
            "Send only `function` tools; implement search and the like as your own function.",
        ));
    }
    Ok((chat, names))
}

enum ToolChoice {
    Mode(String),
    Function(String),
    /// `allowed_tools`: only these names, with the mode `auto`/`required`.
    Allowed {
        mode: String,
        names: Vec<String>,
    },
}

impl ToolChoice {
    fn chat(&self) -> Value {
        match self {
            ToolChoice::Mode(mode) | ToolChoice::Allowed { mode, .. } => json!(mode),
            ToolChoice::Function(name) => json!({"type": "function", "function": {"name": name}}),
        }
    }
}

fn tool_choice(choice: Option<&Value>, names: &[String]) -> Result<Option<ToolChoice>, Error> {
    let refuse = |what: String| {
        invalid(
            what,
            Some("tool_choice".to_owned()),
            "unsupported_parameter",
            "Use \"auto\", \"none\", \"required\", {\"type\": \"function\", \"name\": …} or {\"type\": \"allowed_tools\", …} naming function tools.",
        )
    };
    let Some(choice) = choice.filter(|c| !c.is_null()) else {
        return Ok(None);
    };
    if let Some(mode) = choice.as_str() {
        return match mode {
            "auto" | "none" | "required" => Ok(Some(ToolChoice::Mode(mode.to_owned()))),
            _ => Err(refuse(format!(
                "`tool_choice` \"{mode}\" is not one of auto, none, required"
            ))),
        };
    }
    match choice.get("type").and_then(Value::as_str) {
        Some("function") => match choice.get("name").and_then(Value::as_str) {
            Some(name) if names.iter().any(|n| n == name) => {
                Ok(Some(ToolChoice::Function(name.to_owned())))
            }
            _ => Err(refuse(
                "`tool_choice` names no function tool of this request".to_owned(),
            )),
        },
        Some("allowed_tools") => {
            let mode = choice.get("mode").and_then(Value::as_str).unwrap_or("auto");
            if mode != "auto" && mode != "required" {
                return Err(refuse(format!(
                    "`tool_choice.mode` \"{mode}\" is not auto or required"
                )));
            }
            let mut allowed = Vec::new();
            for tool in choice
                .get("tools")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                match (
                    tool.get("type").and_then(Value::as_str),
                    tool.get("name").and_then(Value::as_str),
                ) {
                    (Some("function"), Some(name)) => allowed.push(name.to_owned()),
                    _ => {
                        return Err(refuse(
                            "`tool_choice.tools` may name function tools only".to_owned(),
                        ));
                    }
                }
            }
            Ok(Some(ToolChoice::Allowed {
                mode: mode.to_owned(),
                names: allowed,
            }))
        }
        other => Err(refuse(format!(
            "`tool_choice` of type {} is for OpenAI's built-in tools",
            other.unwrap_or("untyped")
        ))),
    }
}

/// `text.format` → `response_format` (`None` for plain text).
fn response_format(format: &Value) -> Result<Option<Value>, Error> {
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let mut schema = Map::new();
            schema.insert(
                "name".to_owned(),
                format
                    .get("name")
                    .cloned()
                    .unwrap_or_else(|| json!("response")),
            );
            for key in ["schema", "strict", "description"] {
                if let Some(value) = format.get(key).filter(|v| !v.is_null()) {
                    schema.insert(key.to_owned(), value.clone());
                }
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": schema})))
        }
        other => Err(invalid(
            format!(
                "`text.format` of type {} is not supported",
                other.unwrap_or("untyped")
            ),
            Some("text.format".to_owned()),
            "unsupported_parameter",
            "Use {\"type\": \"text\"}, {\"type\": \"json_object\"} or {\"type\": \"json_schema\", \"name\": …, \"schema\": {…}}.",
        )),
    }
}

/// The request's settings as a response object repeats them.
fn echo(
    request: &Map<String, Value>,
    format: Option<&Value>,
    reasoning: Option<&Value>,
) -> Map<String, Value> {
    let field = |key: &str| request.get(key).cloned().unwrap_or(Value::Null);
    let mut echo = Map::new();
    echo.insert("background".to_owned(), json!(false));
    echo.insert("instructions".to_owned(), field("instructions"));
    echo.insert("max_output_tokens".to_owned(), field("max_output_tokens"));
    echo.insert(
        "metadata".to_owned(),
        request
            .get("metadata")
            .filter(|m| m.is_object())
            .cloned()
            .unwrap_or_else(|| json!({})),
    );
    echo.insert(
        "parallel_tool_calls".to_owned(),
        json!(
            request
                .get("parallel_tool_calls")
                .and_then(Value::as_bool)
                .unwrap_or(true)
        ),
    );
    echo.insert("previous_response_id".to_owned(), Value::Null);
    echo.insert(
        "reasoning".to_owned(),
        json!({
            "effort": reasoning.and_then(|r| r.get("effort")).cloned().unwrap_or(Value::Null),
            "summary": reasoning.and_then(|r| r.get("summary")).cloned().unwrap_or(Value::Null),
        }),
    );
    echo.insert("store".to_owned(), json!(false));
    echo.insert("temperature".to_owned(), field("temperature"));
    echo.insert(
        "text".to_owned(),
        json!({"format": format.cloned().unwrap_or_else(|| json!({"type": "text"}))}),
    );
    echo.insert(
        "tool_choice".to_owned(),
        request
            .get("tool_choice")
            .filter(|c| !c.is_null())
            .cloned()
            .unwrap_or_else(|| json!("auto")),
    );
    echo.insert(
        "tools".to_owned(),
        request
            .get("tools")
            .filter(|t| t.is_array())
            .cloned()
            .unwrap_or_else(|| json!([])),
    );
    echo.insert("top_p".to_owned(), field("top_p"));
    echo.insert("truncation".to_owned(), json!("disabled"));
    echo.insert("user".to_owned(), field("user"));
    echo
}

// ---------------------------------------------------------------------------
// Answer side, shared by the JSON answer and the event stream.

/// A response's `status` and `incomplete_details.reason` for GigaChat's
/// finish reason: a cut by length or by GigaChat's content filter leaves
/// the answer incomplete, as OpenAI reports it.
pub(crate) fn outcome(finish_reason: Option<&str>) -> (&'static str, Option<&'static str>) {
    match finish_reason {
        Some("length") => ("incomplete", Some("max_output_tokens")),
        Some("blacklist") => ("incomplete", Some("content_filter")),
        _ => ("completed", None),
    }
}

/// The `usage` of a response: GigaChat's billed counts, its prompt-cache
/// hits as `cached_tokens`. GigaChat does not count reasoning apart.
pub(crate) fn usage(usage: Option<&ChatUsage>) -> Value {
    match usage {
        None => Value::Null,
        Some(u) => json!({
            "input_tokens": u.prompt_tokens,
            "input_tokens_details": {"cached_tokens": u.precached_prompt_tokens},
            "output_tokens": u.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": u.total_tokens,
        }),
    }
}

/// A whole response object (the JSON answer, and the `response` of the
/// stream's lifecycle events).
pub(crate) fn response(
    plan: &ResponsesPlan,
    request_id: &str,
    status: &str,
    incomplete: Option<&str>,
    output: Vec<Value>,
    usage: Value,
) -> Value {
    let mut object = Map::with_capacity(plan.echo.len() + 10);
    object.insert("id".to_owned(), json!(format!("resp_{request_id}")));
    object.insert("object".to_owned(), json!("response"));
    object.insert("created_at".to_owned(), json!(plan.created_at));
    object.insert("status".to_owned(), json!(status));
    object.insert("error".to_owned(), Value::Null);
    object.insert(
        "incomplete_details".to_owned(),
        incomplete.map_or(Value::Null, |reason| json!({"reason": reason})),
    );
    object.insert("model".to_owned(), json!(plan.model));
    object.insert("output".to_owned(), Value::Array(output));
    object.insert("usage".to_owned(), usage);
    for (key, value) in &plan.echo {
        object.insert(key.clone(), value.clone());
    }
    Value::Object(object)
}

/// Output item ids are unique within a response (the `openai` SDKs'
/// stream accumulators check) and across responses (the request id).
pub(crate) fn item_id(prefix: &str, request_id: &str, index: usize) -> String {
    format!("{prefix}_{request_id}_{index}")
}

pub(crate) fn message_item(id: &str, status: &str, text: &str) -> Value {
    json!({
        "type": "message",
        "id": id,
        "status": status,
        "role": "assistant",
        "content": [output_text_part(text)],
    })
}

pub(crate) fn output_text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

/// GigaChat's reasoning as a reasoning item's summary, where the AI SDK and
/// LangChain read a reasoning model's thoughts.
pub(crate) fn reasoning_item(id: &str, text: &str) -> Value {
    json!({
        "type": "reasoning",
        "id": id,
        "summary": [{"type": "summary_text", "text": text}],
    })
}

pub(crate) fn function_call_item(
    id: &str,
    call_id: &str,
    name: &str,
    arguments: &str,
    status: &str,
) -> Value {
    json!({
        "type": "function_call",
        "id": id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    })
}

/// The client's name of a function GigaChat called.
pub(crate) fn tool_name<'a>(plan: &'a ResponsesPlan, gigachat_name: &'a str) -> &'a str {
    plan.renamed_tools
        .iter()
        .find(|(renamed, _)| renamed == gigachat_name)
        .map_or(gigachat_name, |(_, client)| client.as_str())
}

/// Whether a function call is the structured-output carrier, whose
/// arguments are the answer's text.
pub(crate) fn is_structured_output(plan: &ResponsesPlan, call: &FunctionCall) -> bool {
    plan.structured_output.as_deref() == Some(call.name.as_str())
}

/// GigaChat's whole chat answer → a Responses `response` object.
pub(crate) fn response_object(
    gigachat: &[u8],
    plan: &ResponsesPlan,
    request_id: &str,
) -> Result<Vec<u8>, Error> {
    let answer: ChatAnswer = serde_json::from_slice(gigachat)
        .map_err(|_| Error::Internal("GigaChat's chat answer is not the JSON it documents"))?;
    let choice = answer.choices.into_iter().next().unwrap_or_default();
    let (status, incomplete) = outcome(choice.finish_reason.as_deref());
    let message = choice.message;

    let mut output = Vec::with_capacity(2);
    if let Some(reasoning) = message
        .reasoning_content
        .as_deref()
        .filter(|r| !r.is_empty())
    {
        output.push(reasoning_item(
            &item_id("rs", request_id, output.len()),
            reasoning,
        ));
    }
    let mut text = message.content.unwrap_or_default();
    let mut call = None;
    if let Some(function) = message.function_call {
        if is_structured_output(plan, &function) {
            text = function.arguments_string();
        } else {
            call = Some(function);
        }
    }
    if !text.is_empty() || call.is_none() {
        let id = item_id("msg", request_id, output.len());
        output.push(message_item(&id, status, &text));
    }
    if let Some(function) = call {
        let id = item_id("fc", request_id, output.len());
        let call_id = gigachat::tool_call_id(message.functions_state_id.as_deref(), request_id, 0);
        output.push(function_call_item(
            &id,
            &call_id,
            tool_name(plan, &function.name),
            &function.arguments_string(),
            "completed",
        ));
    }
    let object = response(
        plan,
        request_id,
        status,
        incomplete,
        output,
        usage(answer.usage.as_ref()),
    );
    serde_json::to_vec(&object).map_err(|_| Error::Internal("a response object did not serialize"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn chat(request: Value) -> Value {
        chat_request(&request).unwrap().0
    }

    fn refusal(request: Value) -> (String, Option<String>, &'static str) {
        match chat_request(&request) {
            Err(Error::InvalidRequest {
                message,
                param,
                code,
                ..
            }) => (message, param, code),
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn instructions_become_the_first_system_message_and_a_string_input_the_user_message() {
        let chat = chat(json!({"model": "GigaChat", "instructions": "Be brief", "input": "Hi"}));
        assert_eq!(
            chat["messages"],
            json!([
                {"role": "system", "content": "Be brief"},
                {"role": "user", "content": "Hi"},
            ])
        );
        assert_eq!(chat["model"], "GigaChat");
    }

    #[test]
    fn message_items_keep_roles_and_map_content_parts() {
        let chat = chat(json!({"input": [
            {"role": "developer", "content": "Rules"},
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "What is this?"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"},
                {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"},
            ]},
            {"type": "message", "role": "assistant", "content": [
                {"type": "output_text", "text": "A cat", "annotations": []},
                {"type": "output_text", "text": "."},
            ]},
        ]}));
        assert_eq!(
            chat["messages"],
            json!([
                {"role": "developer", "content": "Rules"},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
                    {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"}},
                ]},
                {"role": "assistant", "content": "A cat."},
            ])
        );
    }

    #[test]
    fn function_calls_join_one_assistant_turn_and_outputs_become_tool_messages() {
        let chat = chat(json!({"input": [
            {"role": "user", "content": "Weather in Moscow and Kazan?"},
            {"type": "function_call", "id": "fc_1", "call_id": "call_a", "name": "weather", "arguments": "{\"city\":\"Moscow\"}"},
            {"type": "function_call", "call_id": "call_b", "name": "weather", "arguments": {"city": "Kazan"}},
            {"type": "function_call_output", "call_id": "call_a", "output": "{\"t\":1}"},
            {"type": "function_call_output", "call_id": "call_b", "output": [{"type": "input_text", "text": "2"}]},
        ]}));
        assert_eq!(
            chat["messages"],
            json!([
                {"role": "user", "content": "Weather in Moscow and Kazan?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_a", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Moscow\"}"}},
                    {"id": "call_b", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Kazan\"}"}},
                ]},
                {"role": "tool", "tool_call_id": "call_a", "content": "{\"t\":1}"},
                {"role": "tool", "tool_call_id": "call_b", "content": "2"},
            ])
        );
    }

    #[test]
    fn a_call_after_assistant_text_joins_that_assistant_message() {
        let chat = chat(json!({"input": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Let me look."},
            {"type": "function_call", "call_id": "c1", "name": "look", "arguments": "{}"},
        ]}));
        assert_eq!(chat["messages"][1]["content"], "Let me look.");
        assert_eq!(chat["messages"][1]["tool_calls"][0]["id"], "c1");
        assert_eq!(chat["messages"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn earlier_reasoning_is_dropped_with_or_without_a_reference() {
        let chat = chat(json!({"input": [
            {"role": "user", "content": "Hi"},
            {"type": "reasoning", "id": "rs_x_0", "summary": [{"type": "summary_text", "text": "hm"}]},
            {"type": "item_reference", "id": "rs_x_0"},
            {"role": "user", "content": "Again"},
        ]}));
        assert_eq!(chat["messages"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn function_tools_are_nested_and_built_in_tools_refused_by_name() {
        let chat = chat(json!({"input": "x", "tools": [
            {"type": "function", "name": "weather", "description": "Weather", "parameters": {"type": "object"}, "strict": true},
        ]}));
        assert_eq!(
            chat["tools"],
            json!([{"type": "function", "function": {
                "name": "weather", "description": "Weather", "parameters": {"type": "object"}, "strict": true}}])
        );

        let (message, param, code) = refusal(json!({"input": "x", "tools": [
            {"type": "function", "name": "f"}, {"type": "web_search"}, {"type": "file_search"},
        ]}));
        assert_eq!(code, "unsupported_tool");
        assert_eq!(param.as_deref(), Some("tools"));
        assert!(message.contains("web_search, file_search"), "{message}");
    }

    #[test]
    fn tool_choice_maps_modes_named_functions_and_allowed_tools() {
        let tools = json!([{"type": "function", "name": "a"}, {"type": "function", "name": "b"}]);
        let with =
            |choice: Value| chat(json!({"input": "x", "tools": tools, "tool_choice": choice}));

        assert_eq!(with(json!("required"))["tool_choice"], "required");
        assert_eq!(
            with(json!({"type": "function", "name": "b"}))["tool_choice"],
            json!({"type": "function", "function": {"name": "b"}})
        );
        let allowed = with(json!({"type": "allowed_tools", "mode": "required",
                                   "tools": [{"type": "function", "name": "a"}]}));
        assert_eq!(allowed["tool_choice"], "required");
        assert_eq!(allowed["tools"].as_array().unwrap().len(), 1);
        assert_eq!(allowed["tools"][0]["function"]["name"], "a");

        let (_, _, code) = refusal(json!({"input": "x", "tools": tools,
                                          "tool_choice": {"type": "web_search_preview"}}));
        assert_eq!(code, "unsupported_parameter");
        let (_, _, code) = refusal(json!({"input": "x", "tools": tools,
                                          "tool_choice": {"type": "function", "name": "zzz"}}));
        assert_eq!(code, "unsupported_parameter");
    }

    #[test]
    fn sampling_limits_streaming_and_reasoning_map_to_chat_fields() {
        let chat = chat(json!({
            "input": "x", "model": "GigaChat-2-Max", "temperature": 0.3, "top_p": 0.9,
            "max_output_tokens": 50, "stream": true, "reasoning": {"effort": "high", "summary": "auto"},
            "repetition_penalty": 1.1, "store": true, "metadata": {"a": "b"}, "user": "u1",
        }));
        assert_eq!(chat["max_tokens"], 50);
        assert!(chat.get("max_output_tokens").is_none());
        assert_eq!(chat["temperature"], 0.3);
        assert_eq!(chat["top_p"], 0.9);
        assert_eq!(chat["stream"], true);
        assert_eq!(chat["reasoning_effort"], "high");
        assert_eq!(chat["repetition_penalty"], 1.1);
        // Responses-only settings do not reach the chat request.
        for absent in [
            "store",
            "metadata",
            "user",
            "reasoning",
            "input",
            "instructions",
        ] {
            assert!(chat.get(absent).is_none(), "{absent} leaked");
        }
    }

    #[test]
    fn text_format_becomes_response_format() {
        let schema = json!({"type": "object", "properties": {"n": {"type": "number"}}});
        let chat_schema = chat(json!({"input": "x", "text": {"format": {
            "type": "json_schema", "name": "answer", "schema": schema, "strict": true}}}));
        assert_eq!(
            chat_schema["response_format"],
            json!({"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": true}})
        );
        let chat_object = chat(json!({"input": "x", "text": {"format": {"type": "json_object"}}}));
        assert_eq!(
            chat_object["response_format"],
            json!({"type": "json_object"})
        );
        let plain =
            chat(json!({"input": "x", "text": {"format": {"type": "text"}, "verbosity": "low"}}));
        assert!(plain.get("response_format").is_none());
    }

    #[test]
    fn state_the_proxy_does_not_keep_is_refused_with_the_reason() {
        let (message, param, code) =
            refusal(json!({"input": "x", "previous_response_id": "resp_1"}));
        assert_eq!(code, "previous_response_unsupported");
        assert_eq!(param.as_deref(), Some("previous_response_id"));
        assert!(message.contains("keeps no responses"), "{message}");

        let (_, param, code) = refusal(json!({"input": [
            {"role": "user", "content": "Hi"}, {"type": "item_reference", "id": "msg_r_0"}]}));
        assert_eq!(code, "previous_response_unsupported");
        assert_eq!(param.as_deref(), Some("input[1]"));

        let (_, _, code) = refusal(json!({"input": "x", "conversation": "conv_1"}));
        assert_eq!(code, "previous_response_unsupported");
        let (_, _, code) = refusal(json!({"input": "x", "background": true}));
        assert_eq!(code, "unsupported_parameter");
    }

    #[test]
    fn remote_files_and_foreign_items_are_refused() {
        let (_, param, code) = refusal(json!({"input": [{"role": "user", "content": [
            {"type": "input_file", "file_url": "https://example.com/a.pdf"}]}]}));
        assert_eq!(code, "remote_url_refused");
        assert_eq!(param.as_deref(), Some("input[0].content[0].file_url"));

        let (_, _, code) = refusal(json!({"input": [{"role": "user", "content": [
            {"type": "input_image", "file_id": "file-1"}]}]}));
        assert_eq!(code, "unsupported_parameter");

        let (message, _, code) =
            refusal(json!({"input": [{"type": "computer_call_output", "call_id": "c"}]}));
        assert_eq!(code, "unsupported_input_item");
        assert!(message.contains("computer_call_output"), "{message}");

        let (_, param, _) = refusal(json!({"model": "GigaChat"}));
        assert_eq!(param.as_deref(), Some("input"));
        let (_, _, code) = refusal(json!(["not", "an", "object"]));
        assert_eq!(code, "invalid_request");
    }

    // ---- answer side ----

    fn plan_for(request: Value) -> ResponsesPlan {
        let config = OpenAiConfig {
            default_model: "GigaChat".to_owned(),
            aliases: Vec::new(),
            ..OpenAiConfig::default()
        };
        translate_request(&request, &config).unwrap().1
    }

    fn answer(gigachat: Value, plan: &ResponsesPlan) -> Value {
        let bytes = response_object(gigachat.to_string().as_bytes(), plan, "R1").unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn gigachat_answer(message: Value, finish: &str) -> Value {
        json!({
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "created": 1_764_441_600, "model": "GigaChat-2-Max:2.0", "object": "chat.completion",
            "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15, "precached_prompt_tokens": 4},
        })
    }

    #[test]
    fn a_text_answer_is_a_completed_response_with_one_message_and_usage() {
        let plan = plan_for(json!({"model": "gpt-4o", "instructions": "Be brief", "input": "Hi"}));
        let answer = answer(
            gigachat_answer(json!({"role": "assistant", "content": "Привет!"}), "stop"),
            &plan,
        );
        assert_eq!(answer["id"], "resp_R1");
        assert_eq!(answer["object"], "response");
        assert_eq!(answer["status"], "completed");
        assert_eq!(answer["incomplete_details"], Value::Null);
        assert_eq!(answer["error"], Value::Null);
        assert_eq!(answer["model"], "gpt-4o");
        assert!(answer["created_at"].as_u64().unwrap() > 1_700_000_000);
        assert_eq!(answer["instructions"], "Be brief");
        assert_eq!(answer["tools"], json!([]));
        assert_eq!(answer["tool_choice"], "auto");
        assert_eq!(answer["text"], json!({"format": {"type": "text"}}));
        assert_eq!(answer["parallel_tool_calls"], true);
        assert_eq!(
            answer["output"],
            json!([{"type": "message", "id": "msg_R1_0", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": "Привет!", "annotations": [], "logprobs": []}]}])
        );
        assert_eq!(
            answer["usage"],
            json!({"input_tokens": 12, "input_tokens_details": {"cached_tokens": 4},
                   "output_tokens": 3, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 15})
        );
    }

    #[test]
    fn a_cut_answer_is_incomplete_with_the_reason() {
        let plan = plan_for(json!({"input": "Hi"}));
        let long = answer(
            gigachat_answer(json!({"content": "Once upon"}), "length"),
            &plan,
        );
        assert_eq!(long["status"], "incomplete");
        assert_eq!(
            long["incomplete_details"],
            json!({"reason": "max_output_tokens"})
        );
        assert_eq!(long["output"][0]["status"], "incomplete");
        let filtered = answer(
            gigachat_answer(json!({"content": "No."}), "blacklist"),
            &plan,
        );
        assert_eq!(filtered["status"], "incomplete");
        assert_eq!(
            filtered["incomplete_details"],
            json!({"reason": "content_filter"})
        );
    }

    #[test]
    fn a_function_call_is_a_function_call_item_with_string_arguments() {
        let mut plan = plan_for(
            json!({"input": "Weather?", "tools": [{"type": "function", "name": "get_weather"}]}),
        );
        let answer_of = |plan: &ResponsesPlan| {
            answer(
                gigachat_answer(
                    json!({"role": "assistant", "content": "",
                           "function_call": {"name": "get_weather", "arguments": {"city": "Москва"}},
                           "functions_state_id": "019ed0c7"}),
                    "function_call",
                ),
                plan,
            )
        };
        let answer = answer_of(&plan);
        assert_eq!(answer["status"], "completed");
        assert_eq!(
            answer["output"],
            json!([{"type": "function_call", "id": "fc_R1_0", "call_id": "call_019ed0c7",
                    "name": "get_weather", "arguments": "{\"city\":\"Москва\"}", "status": "completed"}])
        );
        // A tool renamed on the way in (a GigaChat built-in's name) gets the client's name back.
        plan.renamed_tools = vec![("get_weather".to_owned(), "weather".to_owned())];
        assert_eq!(answer_of(&plan)["output"][0]["name"], "weather");
    }

    #[test]
    fn structured_output_arrives_as_the_message_text() {
        let mut plan = plan_for(json!({"input": "x", "text": {"format": {
            "type": "json_schema", "name": "answer", "schema": {"type": "object"}}}}));
        plan.structured_output = Some("answer".to_owned());
        let answer = answer(
            gigachat_answer(
                json!({"content": "", "function_call": {"name": "answer", "arguments": {"n": 1}}}),
                "function_call",
            ),
            &plan,
        );
        assert_eq!(answer["output"].as_array().unwrap().len(), 1);
        assert_eq!(answer["output"][0]["type"], "message");
        assert_eq!(answer["output"][0]["content"][0]["text"], "{\"n\":1}");
        assert_eq!(answer["text"]["format"]["type"], "json_schema");
    }

    #[test]
    fn reasoning_comes_first_as_a_reasoning_item_summary() {
        let plan = plan_for(json!({"input": "x"}));
        let answer = answer(
            gigachat_answer(
                json!({"content": "42", "reasoning_content": "Think."}),
                "stop",
            ),
            &plan,
        );
        assert_eq!(
            answer["output"][0],
            json!({"type": "reasoning", "id": "rs_R1_0", "summary": [{"type": "summary_text", "text": "Think."}]})
        );
        assert_eq!(answer["output"][1]["id"], "msg_R1_1");
        assert_eq!(answer["output"][1]["content"][0]["text"], "42");
    }

    #[test]
    fn an_unreadable_gigachat_answer_is_an_error_not_a_panic() {
        let plan = plan_for(json!({"input": "x"}));
        assert!(response_object(b"not json", &plan, "R1").is_err());
        // No choices: an empty completed message.
        let empty = answer(json!({"choices": []}), &plan);
        assert_eq!(empty["status"], "completed");
        assert_eq!(empty["output"][0]["content"][0]["text"], "");
        assert_eq!(empty["usage"], Value::Null);
    }
}
