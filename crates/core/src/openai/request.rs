//! An OpenAI Chat Completions request translated into GigaChat's v1
//! `chat/completions` body.
//!
//! GigaChat's v1 differs where a straight copy fails: one `system` message
//! and only first (else 422), a single `function_call` per assistant message
//! whose result must follow as a `function` message holding a JSON object
//! (else 422), every call answered (else 422), `temperature` above zero,
//! `functions` instead of `tools`, uploaded file ids instead of inline
//! images, and a narrower JSON Schema dialect (`schema.rs`). Each rule here
//! turns what OpenAI clients send into what GigaChat accepts, or refuses the
//! request with a 400 that names the field, never a silent loss the user
//! would only notice in the answer.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value, json};

use super::config::OpenAiConfig;
use super::schema::try_normalise;
use super::{ChatPlan, ChatRequest, Upload};
use crate::error::Error;

/// GigaChat's own functions (v1 built-ins and v2 tools): a client tool of
/// the same name would be taken for the built-in, so it is renamed.
const BUILTIN_FUNCTIONS: [&str; 8] = [
    "text2image",
    "text2model3d",
    "get_file_content",
    "web_search",
    "code_interpreter",
    "image_generate",
    "url_content_extraction",
    "model_3d_generate",
];

/// The prefix a clashing tool name gets.
const RENAME_PREFIX: &str = "user_";

/// GigaChat reads at most ten images per request, and one per message.
const MAX_ATTACHMENTS: usize = 10;
const MAX_IMAGES_PER_MESSAGE: usize = 1;

/// What GigaChat's `files` accepts (its documented formats), by media type.
const MEDIA_TYPES: [(&str, &str); 24] = [
    ("image/jpeg", "jpg"),
    ("image/jpg", "jpg"),
    ("image/png", "png"),
    ("image/tiff", "tiff"),
    ("image/bmp", "bmp"),
    ("text/plain", "txt"),
    ("application/msword", "doc"),
    (
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "docx",
    ),
    ("application/pdf", "pdf"),
    ("application/epub+zip", "epub"),
    ("application/vnd.ms-powerpoint", "ppt"),
    (
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "pptx",
    ),
    ("audio/mpeg", "mp3"),
    ("audio/mp3", "mp3"),
    ("audio/mp4", "mp4"),
    ("audio/x-m4a", "m4a"),
    ("audio/m4a", "m4a"),
    ("audio/wav", "wav"),
    ("audio/x-wav", "wav"),
    ("audio/wave", "wav"),
    ("audio/webm", "weba"),
    ("audio/ogg", "ogg"),
    ("audio/x-ogg", "ogg"),
    ("audio/opus", "opus"),
];

const IMAGE_EXTENSIONS: [&str; 4] = ["jpg", "png", "tiff", "bmp"];

/// What `response_format: json_object` adds to the system message: GigaChat
/// has no JSON mode, and the AI SDK asks for it by default.
const JSON_OBJECT_INSTRUCTION: &str = "Answer with one valid JSON object and nothing else: no text before or after it, no Markdown code fences.";

/// The forced function's description when the schema gives none.
const STRUCTURED_OUTPUT_DESCRIPTION: &str =
    "Give the answer by calling this function: its arguments are the answer.";

const HINT_MESSAGES: &str = "Send `messages` as a non-empty array of {role, content} objects, as the OpenAI Chat Completions API defines it.";
const HINT_TOOLS: &str = "Send tools as [{\"type\":\"function\",\"function\":{\"name\",\"description\",\"parameters\"}}]; GigaChat's functions take an object JSON Schema.";
const HINT_TOOL_HISTORY: &str = "Each assistant tool call needs a later `tool` message with the same tool_call_id, and each `tool` message answers a call made earlier in the conversation.";
const HINT_PARAMETER: &str =
    "Fix or remove the parameter; see the proxy's README for the OpenAI fields it maps.";
const HINT_N: &str = "GigaChat returns one choice per request: send n=1 (or omit it) and make several requests for several answers.";
const HINT_MEDIA: &str = "Send images and files inline: an `image_url` part with a `data:<media type>;base64,…` URL, or a `file` part with `file_data` as such a data: URL.";
const HINT_REMOTE_URL: &str = "Download the image yourself and send it inline as `data:image/png;base64,…`: the proxy does not fetch remote URLs, as fetching arbitrary addresses from the server would let callers reach internal networks (SSRF).";
const HINT_AUDIO: &str = "GigaChat reads audio as an uploaded file: send it as a `file` part whose `file_data` is `data:audio/mpeg;base64,…` (mp3, wav, ogg, opus, m4a, mp4, weba).";
const HINT_ATTACHMENTS: &str = "GigaChat reads one image per message and at most 10 attachments per request: put each image in its own user message, and leave older images out of the history.";

fn invalid(
    message: impl Into<String>,
    param: impl Into<String>,
    code: &'static str,
    hint: &'static str,
) -> Error {
    Error::InvalidRequest {
        message: message.into(),
        param: Some(param.into()),
        code,
        hint,
    }
}

/// A request field; `null` counts as absent, as OpenAI's API reads it (the
/// Python SDK and LangChain send `null` for unset options).
fn field<'v>(object: &'v Map<String, Value>, name: &str) -> Option<&'v Value> {
    object.get(name).filter(|value| !value.is_null())
}

/// Translates an OpenAI Chat Completions request into GigaChat's v1 body,
/// the files to upload, and what the answer's translation needs to know.
pub(crate) fn translate(request: &Value, config: &OpenAiConfig) -> Result<ChatRequest, Error> {
    let Value::Object(request) = request else {
        return Err(Error::InvalidRequest {
            message: "the request body must be a JSON object".into(),
            param: None,
            code: "invalid_request",
            hint: HINT_MESSAGES,
        });
    };

    check_choice_count(request)?;
    let requested_model = match field(request, "model") {
        None => None,
        Some(Value::String(model)) => Some(model.as_str()),
        Some(_) => {
            return Err(invalid(
                "`model` must be a string",
                "model",
                "invalid_request",
                "Send the model name as a string, e.g. \"GigaChat-2-Max\".",
            ));
        }
    };
    let stream = bool_field(request, "stream")?.unwrap_or(false);
    let include_usage = stream
        && match field(request, "stream_options") {
            None => false,
            Some(Value::Object(options)) => bool_field(options, "include_usage")
                .map_err(|_| not_a("boolean", "stream_options.include_usage"))?
                .unwrap_or(false),
            Some(_) => return Err(not_a("object", "stream_options")),
        };

    let mut names = ToolNames::default();
    let tools = read_tools(request, &mut names)?;
    let structured = read_response_format(request, &tools, &names)?;
    let choice = read_tool_choice(request, &tools, &mut names)?;

    let mut system = Vec::new();
    let mut messages = Vec::new();
    let mut uploads = Vec::new();
    translate_messages(
        request,
        &mut names,
        &mut system,
        &mut messages,
        &mut uploads,
    )?;

    let mut body = Map::new();
    let gigachat_model = config.gigachat_model(requested_model);
    body.insert("model".into(), gigachat_model.into());

    // Functions and the call mode, structured output included.
    let mut functions: Vec<Value> = tools.iter().map(|tool| tool.function.clone()).collect();
    let mut function_call = match (&choice, functions.is_empty()) {
        (_, true) => None,
        (ToolChoice::Auto, false) => Some(json!("auto")),
        (ToolChoice::None, false) => Some(json!("none")),
        (ToolChoice::Named(name), false) => Some(json!({ "name": name })),
    };
    match &structured {
        Some(ResponseFormat::JsonObject) => system.push(JSON_OBJECT_INSTRUCTION.to_owned()),
        Some(ResponseFormat::Structured { name, function }) => {
            if tools.is_empty() || choice == ToolChoice::None {
                // Nothing else may be called: force the answer's function.
                functions.clear();
                function_call = Some(json!({ "name": name }));
            } else {
                // The model may call the client's tools first; the final
                // answer comes through the answer's function.
                system.push(format!(
                    "When you have the final answer, give it by calling the function `{name}` with the answer as its arguments, not as text."
                ));
                function_call = Some(match &choice {
                    ToolChoice::Named(tool) => json!({ "name": tool }),
                    _ => json!("auto"),
                });
            }
            functions.push(function.clone());
        }
        None => {}
    }

    if !system.is_empty() {
        messages.insert(
            0,
            json!({ "role": "system", "content": system.join("\n\n") }),
        );
        for upload in &mut uploads {
            upload.message += 1;
        }
    }
    body.insert("messages".into(), Value::Array(messages));
    if !functions.is_empty() {
        body.insert("functions".into(), Value::Array(functions));
    }
    if let Some(function_call) = function_call {
        body.insert("function_call".into(), function_call);
    }

    copy_sampling(request, &mut body)?;
    if stream {
        body.insert("stream".into(), Value::Bool(true));
    }
    copy_gigachat_extras(request, &mut body)?;

    let plan = ChatPlan {
        model: requested_model
            .filter(|model| !model.is_empty())
            .unwrap_or(&config.default_model)
            .to_owned(),
        include_usage,
        stop: read_stop(request)?,
        structured_output: match structured {
            Some(ResponseFormat::Structured { name, .. }) => Some(name),
            _ => None,
        },
        renamed_tools: names.renamed,
    };
    Ok(ChatRequest {
        body,
        uploads,
        plan,
    })
}

fn not_a(kind: &str, param: &str) -> Error {
    invalid(
        format!("`{param}` must be a {kind}"),
        param,
        "invalid_request",
        HINT_PARAMETER,
    )
}

fn bool_field(object: &Map<String, Value>, name: &str) -> Result<Option<bool>, Error> {
    match field(object, name) {
        None => Ok(None),
        Some(Value::Bool(flag)) => Ok(Some(*flag)),
        Some(_) => Err(not_a("boolean", name)),
    }
}

/// `n > 1` is refused rather than ignored: the client would wait for
/// choices that never come.
fn check_choice_count(request: &Map<String, Value>) -> Result<(), Error> {
    match field(request, "n") {
        None => Ok(()),
        Some(n) if n.as_u64() == Some(1) => Ok(()),
        Some(n) if n.as_u64().is_some_and(|n| n > 1) => Err(invalid(
            "n > 1 is not supported: GigaChat returns one choice per request",
            "n",
            "unsupported_parameter",
            HINT_N,
        )),
        Some(_) => Err(invalid(
            "`n` must be a positive integer",
            "n",
            "invalid_request",
            HINT_N,
        )),
    }
}

/// Sampling options: `temperature: 0` (deterministic, which GigaChat
/// refuses as a temperature) becomes `top_p: 0`; `max_completion_tokens` is
/// the newer name of `max_tokens`, which wins when both are sent.
fn copy_sampling(request: &Map<String, Value>, body: &mut Map<String, Value>) -> Result<(), Error> {
    if let Some(top_p) = field(request, "top_p") {
        if !top_p.is_number() {
            return Err(not_a("number", "top_p"));
        }
        body.insert("top_p".into(), top_p.clone());
    }
    if let Some(temperature) = field(request, "temperature") {
        match temperature.as_f64() {
            Some(0.0) => {
                body.insert("top_p".into(), json!(0));
            }
            Some(t) if t > 0.0 => {
                body.insert("temperature".into(), temperature.clone());
            }
            _ => {
                return Err(invalid(
                    "`temperature` must be a number of at least 0",
                    "temperature",
                    "invalid_request",
                    HINT_PARAMETER,
                ));
            }
        }
    }
    for name in ["max_tokens", "max_completion_tokens"] {
        if let Some(limit) = field(request, name) {
            if limit.as_u64().is_none() {
                return Err(not_a("non-negative integer", name));
            }
            body.entry("max_tokens").or_insert_with(|| limit.clone());
        }
    }
    Ok(())
}

/// `stop`: a string or up to a few strings; cut by the answer's translation,
/// since GigaChat has no stop sequences.
fn read_stop(request: &Map<String, Value>) -> Result<Vec<String>, Error> {
    let strings = match field(request, "stop") {
        None => return Ok(Vec::new()),
        Some(Value::String(stop)) => vec![stop.clone()],
        Some(Value::Array(stops)) => {
            let mut strings = Vec::with_capacity(stops.len());
            for stop in stops {
                let Value::String(stop) = stop else {
                    return Err(not_a("string or an array of strings", "stop"));
                };
                strings.push(stop.clone());
            }
            strings
        }
        Some(_) => return Err(not_a("string or an array of strings", "stop")),
    };
    Ok(strings
        .into_iter()
        .filter(|stop| !stop.is_empty())
        .collect())
}

/// GigaChat's own options, top-level or in `extra_body` (what the Python
/// SDK's `extra_body=` merges into the body; some clients nest it), each of
/// the type GigaChat takes. The top-level one wins when both are sent.
/// `storage` (stateful threads) is not among them: the OpenAI answer has no
/// place for the thread id, so a thread could never be continued, and a
/// thread would hold the history the client sends again anyway.
fn copy_gigachat_extras(
    request: &Map<String, Value>,
    body: &mut Map<String, Value>,
) -> Result<(), Error> {
    type Check = fn(&Value) -> bool;
    const EXTRAS: [(&str, &str, Check); 6] = [
        ("repetition_penalty", "number", Value::is_number),
        ("profanity_check", "boolean", Value::is_boolean),
        ("update_interval", "number", Value::is_number),
        ("reasoning_effort", "string", Value::is_string),
        ("function_ranker", "object", Value::is_object),
        ("flags", "array", Value::is_array),
    ];
    let extra_body = match field(request, "extra_body") {
        None => None,
        Some(Value::Object(extra)) => Some(extra),
        Some(_) => return Err(not_a("object", "extra_body")),
    };
    for (name, kind, is_kind) in EXTRAS {
        let found = match field(request, name) {
            Some(value) => Some((value, Cow::Borrowed(name))),
            None => extra_body
                .and_then(|extra| field(extra, name))
                .map(|value| (value, Cow::Owned(format!("extra_body.{name}")))),
        };
        if let Some((value, param)) = found {
            if !is_kind(value) {
                return Err(not_a(kind, &param));
            }
            body.insert(name.into(), value.clone());
        }
    }
    // `reasoning: {effort}` (the Responses API's spelling) when
    // `reasoning_effort` is not given.
    if !body.contains_key("reasoning_effort")
        && let Some(effort) = field(request, "reasoning")
            .and_then(|reasoning| reasoning.get("effort"))
            .filter(|effort| effort.is_string())
    {
        body.insert("reasoning_effort".into(), effort.clone());
    }
    Ok(())
}

// ---------------------------------------------------------------- tools ---

/// A client tool as GigaChat gets it.
struct Tool {
    /// The name GigaChat sees (renamed when it clashes with a built-in).
    gigachat: String,
    function: Value,
}

/// Client tool name ↔ GigaChat function name.
#[derive(Default)]
struct ToolNames {
    /// Every name a client tool has, so a renamed one cannot clash with it.
    client: Vec<String>,
    /// (GigaChat name, client name) of renamed tools.
    renamed: Vec<(String, String)>,
}

impl ToolNames {
    fn is_builtin(name: &str) -> bool {
        BUILTIN_FUNCTIONS
            .iter()
            .any(|builtin| builtin.eq_ignore_ascii_case(name))
    }

    /// The GigaChat name of a client tool name, renaming (once, the same
    /// way each time) a name that is one of GigaChat's built-ins.
    fn gigachat(&mut self, client: &str) -> String {
        if !Self::is_builtin(client) {
            return client.to_owned();
        }
        if let Some((gigachat, _)) = self.renamed.iter().find(|(_, c)| c == client) {
            return gigachat.clone();
        }
        let mut renamed = format!("{RENAME_PREFIX}{client}");
        while self.taken(&renamed) {
            renamed.insert_str(0, RENAME_PREFIX);
        }
        self.renamed.push((renamed.clone(), client.to_owned()));
        renamed
    }

    fn taken(&self, name: &str) -> bool {
        Self::is_builtin(name)
            || self.client.iter().any(|client| client == name)
            || self.renamed.iter().any(|(gigachat, _)| gigachat == name)
    }
}

/// `tools` (and the legacy `functions`) as GigaChat `functions`, schemas
/// normalised.
fn read_tools(request: &Map<String, Value>, names: &mut ToolNames) -> Result<Vec<Tool>, Error> {
    let mut definitions: Vec<(&Map<String, Value>, String)> = Vec::new();
    match field(request, "tools") {
        None => {}
        Some(Value::Array(tools)) => {
            for (index, tool) in tools.iter().enumerate() {
                let param = format!("tools[{index}]");
                let Value::Object(tool) = tool else {
                    return Err(invalid(
                        format!("`{param}` must be an object"),
                        param,
                        "invalid_request",
                        HINT_TOOLS,
                    ));
                };
                match field(tool, "type").map(Value::as_str) {
                    None | Some(Some("function")) => {}
                    Some(_) => {
                        return Err(invalid(
                            format!(
                                "`{param}.type`: only function tools can be carried to GigaChat"
                            ),
                            format!("{param}.type"),
                            "unsupported_parameter",
                            HINT_TOOLS,
                        ));
                    }
                }
                let Some(Value::Object(function)) = field(tool, "function") else {
                    return Err(invalid(
                        format!("`{param}.function` must be an object"),
                        format!("{param}.function"),
                        "invalid_request",
                        HINT_TOOLS,
                    ));
                };
                definitions.push((function, format!("{param}.function")));
            }
        }
        Some(_) => return Err(not_a("array", "tools")),
    }
    if field(request, "tools").is_none() {
        match field(request, "functions") {
            None => {}
            Some(Value::Array(functions)) => {
                for (index, function) in functions.iter().enumerate() {
                    let param = format!("functions[{index}]");
                    let Value::Object(function) = function else {
                        return Err(invalid(
                            format!("`{param}` must be an object"),
                            param,
                            "invalid_request",
                            HINT_TOOLS,
                        ));
                    };
                    definitions.push((function, param));
                }
            }
            Some(_) => return Err(not_a("array", "functions")),
        }
    }

    for (function, param) in &definitions {
        match field(function, "name") {
            Some(Value::String(name)) if !name.is_empty() => names.client.push(name.clone()),
            _ => {
                return Err(invalid(
                    format!("`{param}.name` must be a non-empty string"),
                    format!("{param}.name"),
                    "invalid_request",
                    HINT_TOOLS,
                ));
            }
        }
    }
    let mut tools = Vec::with_capacity(definitions.len());
    for (function, param) in definitions {
        let client = function
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let gigachat = names.gigachat(client);
        let parameters = object_schema(
            field(function, "parameters"),
            &format!("{param}.parameters"),
        )?;
        let mut translated = Map::new();
        translated.insert("name".into(), gigachat.clone().into());
        if let Some(description) = field(function, "description").filter(|d| d.is_string()) {
            translated.insert("description".into(), description.clone());
        }
        translated.insert("parameters".into(), parameters);
        // GigaChat's own function fields, for clients that know them.
        if let Some(examples) = field(function, "few_shot_examples").filter(|e| e.is_array()) {
            translated.insert("few_shot_examples".into(), examples.clone());
        }
        if let Some(returns) = field(function, "return_parameters").filter(|r| r.is_object()) {
            translated.insert(
                "return_parameters".into(),
                object_schema(Some(returns), &format!("{param}.return_parameters"))?,
            );
        }
        tools.push(Tool {
            gigachat,
            function: Value::Object(translated),
        });
    }
    Ok(tools)
}

/// A function's schema normalised for GigaChat; its root must be an object
/// (GigaChat passes arguments as one object). No schema: no arguments.
fn object_schema(schema: Option<&Value>, param: &str) -> Result<Value, Error> {
    let Some(schema) = schema else {
        return Ok(json!({ "type": "object", "properties": {} }));
    };
    if !schema.is_object() {
        return Err(not_a("JSON Schema object", param));
    }
    let normalised = try_normalise(schema).map_err(|problem| {
        invalid(
            format!("`{param}`: {problem}"),
            param,
            "invalid_schema",
            "Simplify the schema: fewer nested or recursive $refs.",
        )
    })?;
    if normalised.get("type").and_then(Value::as_str) != Some("object") {
        return Err(invalid(
            format!(
                "`{param}` must describe an object (\"type\": \"object\"): GigaChat passes arguments as one JSON object"
            ),
            param,
            "invalid_schema",
            "Wrap the value in an object schema with one property.",
        ));
    }
    Ok(normalised)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ToolChoice {
    Auto,
    None,
    /// A forced call of this GigaChat function.
    Named(String),
}

/// `tool_choice` (or the legacy `function_call`) as GigaChat's call mode.
/// GigaChat has no "must call some function": `required` forces the one
/// tool when there is one, else it is `auto`.
fn read_tool_choice(
    request: &Map<String, Value>,
    tools: &[Tool],
    names: &mut ToolNames,
) -> Result<ToolChoice, Error> {
    let (choice, param) = match field(request, "tool_choice") {
        Some(choice) => (choice, "tool_choice"),
        None => match field(request, "function_call") {
            Some(choice) => (choice, "function_call"),
            None => return Ok(ToolChoice::Auto),
        },
    };
    let named = match choice {
        Value::String(mode) => match mode.as_str() {
            "auto" => return Ok(ToolChoice::Auto),
            "none" => return Ok(ToolChoice::None),
            "required" if param == "tool_choice" => match tools {
                [] => {
                    return Err(invalid(
                        "tool_choice \"required\" needs at least one tool in `tools`",
                        param,
                        "invalid_request",
                        HINT_TOOLS,
                    ));
                }
                [only] => return Ok(ToolChoice::Named(only.gigachat.clone())),
                _ => return Ok(ToolChoice::Auto),
            },
            _ => None,
        },
        Value::Object(choice) => choice
            .get("function")
            .and_then(|function| function.get("name"))
            .or_else(|| choice.get("name"))
            .and_then(Value::as_str),
        _ => None,
    };
    let Some(client) = named else {
        return Err(invalid(
            format!(
                "`{param}` must be \"none\", \"auto\", \"required\" or {{\"type\":\"function\",\"function\":{{\"name\":…}}}}"
            ),
            param,
            "invalid_request",
            HINT_TOOLS,
        ));
    };
    let gigachat = names.gigachat(client);
    if !tools.iter().any(|tool| tool.gigachat == gigachat) {
        return Err(invalid(
            format!("`{param}` names the function `{client}`, which is not among the tools"),
            param,
            "invalid_request",
            HINT_TOOLS,
        ));
    }
    Ok(ToolChoice::Named(gigachat))
}

enum ResponseFormat {
    JsonObject,
    /// `json_schema`, carried as a forced call of this function.
    Structured {
        name: String,
        function: Value,
    },
}

fn read_response_format(
    request: &Map<String, Value>,
    tools: &[Tool],
    names: &ToolNames,
) -> Result<Option<ResponseFormat>, Error> {
    let Some(format) = field(request, "response_format") else {
        return Ok(None);
    };
    let hint = "Send response_format as {\"type\":\"text\"}, {\"type\":\"json_object\"} or {\"type\":\"json_schema\",\"json_schema\":{\"name\",\"schema\"}}.";
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(ResponseFormat::JsonObject)),
        Some("json_schema") => {
            let Some(Value::Object(spec)) = format.get("json_schema") else {
                return Err(invalid(
                    "`response_format.json_schema` must be an object",
                    "response_format.json_schema",
                    "invalid_request",
                    hint,
                ));
            };
            let wanted = spec
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("response");
            let name = structured_output_name(wanted, tools, names);
            let parameters =
                object_schema(field(spec, "schema"), "response_format.json_schema.schema")?;
            let description = spec
                .get("description")
                .and_then(Value::as_str)
                .filter(|d| !d.is_empty())
                .unwrap_or(STRUCTURED_OUTPUT_DESCRIPTION);
            let function = json!({
                "name": name,
                "description": description,
                "parameters": parameters,
            });
            Ok(Some(ResponseFormat::Structured { name, function }))
        }
        _ => Err(invalid(
            "`response_format.type` must be \"text\", \"json_object\" or \"json_schema\"",
            "response_format.type",
            "invalid_request",
            hint,
        )),
    }
}

/// The answer function's name: the schema's name in the characters a
/// GigaChat function name may have, distinct from every tool and built-in.
fn structured_output_name(wanted: &str, tools: &[Tool], names: &ToolNames) -> String {
    let mut name: String = wanted
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        name.insert_str(0, "response_");
    }
    while ToolNames::is_builtin(&name)
        || tools.iter().any(|tool| tool.gigachat == name)
        || names.client.contains(&name)
    {
        name.insert_str(0, "answer_");
    }
    name
}

// ------------------------------------------------------------- messages ---

/// `messages` as GigaChat's: the leading system and developer texts go to
/// `system` (merged into the one first message by the caller), later ones
/// become user messages; tool calls become call/result pairs.
fn translate_messages(
    request: &Map<String, Value>,
    names: &mut ToolNames,
    system: &mut Vec<String>,
    out: &mut Vec<Value>,
    uploads: &mut Vec<Upload>,
) -> Result<(), Error> {
    let messages = match field(request, "messages") {
        Some(Value::Array(messages)) if !messages.is_empty() => messages,
        Some(Value::Array(_)) => {
            return Err(invalid(
                "`messages` is empty",
                "messages",
                "invalid_request",
                HINT_MESSAGES,
            ));
        }
        None => {
            return Err(invalid(
                "`messages` is missing",
                "messages",
                "invalid_request",
                HINT_MESSAGES,
            ));
        }
        Some(_) => return Err(not_a("non-empty array", "messages")),
    };

    let mut roles = Vec::with_capacity(messages.len());
    for (index, message) in messages.iter().enumerate() {
        let Value::Object(message) = message else {
            return Err(invalid(
                format!("`messages[{index}]` must be an object"),
                format!("messages[{index}]"),
                "invalid_request",
                HINT_MESSAGES,
            ));
        };
        let role = match field(message, "role") {
            Some(Value::String(role)) => role.as_str(),
            None => {
                return Err(invalid(
                    format!("`messages[{index}].role` is missing"),
                    format!("messages[{index}].role"),
                    "invalid_request",
                    HINT_MESSAGES,
                ));
            }
            Some(_) => return Err(not_a("string", &format!("messages[{index}].role"))),
        };
        let role = match role {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            "function" => Role::Function,
            _ => {
                return Err(invalid(
                    format!(
                        "`messages[{index}].role` must be system, developer, user, assistant, tool or function"
                    ),
                    format!("messages[{index}].role"),
                    "invalid_request",
                    HINT_MESSAGES,
                ));
            }
        };
        roles.push((message, role));
    }

    let mut answered = vec![false; roles.len()];
    let mut attachments = 0usize;
    let mut leading = true;
    for (index, &(message, role)) in roles.iter().enumerate() {
        let param = format!("messages[{index}]");
        if role != Role::System {
            leading = false;
        }
        match role {
            Role::System => {
                let text = text_content(message, &param)?;
                if leading {
                    if !text.is_empty() {
                        system.push(text);
                    }
                } else {
                    out.push(json!({ "role": "user", "content": text }));
                }
            }
            Role::User => {
                let translated =
                    user_message(message, &param, out.len(), uploads, &mut attachments)?;
                out.push(translated);
            }
            Role::Assistant => {
                assistant_message(message, index, &roles, &mut answered, names, out)?;
            }
            Role::Tool => {
                if !answered.get(index).copied().unwrap_or(false) {
                    return Err(invalid(
                        format!(
                            "`{param}` is a tool result with no earlier assistant tool call of its tool_call_id"
                        ),
                        format!("{param}.tool_call_id"),
                        "invalid_request",
                        HINT_TOOL_HISTORY,
                    ));
                }
            }
            Role::Function => {
                let Some(Value::String(name)) = field(message, "name") else {
                    return Err(invalid(
                        format!("`{param}.name` is missing: a function message names its function"),
                        format!("{param}.name"),
                        "invalid_request",
                        HINT_TOOL_HISTORY,
                    ));
                };
                let name = names.gigachat(name);
                out.push(function_result(&name, message, &param)?);
            }
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    System,
    User,
    Assistant,
    Tool,
    Function,
}

/// An assistant message: its text, and each tool call that got a result as
/// its own (call, result) pair in order, since GigaChat carries one call per
/// message and refuses a call without a result. Calls that never got one
/// (the client stopped, or the call was cancelled) are dropped.
fn assistant_message(
    message: &Map<String, Value>,
    index: usize,
    roles: &[(&Map<String, Value>, Role)],
    answered: &mut [bool],
    names: &mut ToolNames,
    out: &mut Vec<Value>,
) -> Result<(), Error> {
    let param = format!("messages[{index}]");
    let text = text_content(message, &param)?;
    let mut pairs: Vec<(Value, Value)> = Vec::new();

    match field(message, "tool_calls") {
        None => {}
        Some(Value::Array(calls)) => {
            // Results come after the call and before the next assistant turn.
            let later = roles
                .iter()
                .enumerate()
                .skip(index + 1)
                .take_while(|(_, (_, role))| *role != Role::Assistant);
            let results: Vec<(usize, &Map<String, Value>)> = later
                .filter(|(_, (_, role))| *role == Role::Tool)
                .map(|(position, (result, _))| (position, *result))
                .collect();
            for (call_index, call) in calls.iter().enumerate() {
                let call_param = format!("{param}.tool_calls[{call_index}]");
                let (id, client_name, arguments) = tool_call(call, &call_param)?;
                let Some(&(position, result)) = results.iter().find(|(position, result)| {
                    !answered.get(*position).copied().unwrap_or(true)
                        && result.get("tool_call_id").and_then(Value::as_str) == Some(id)
                }) else {
                    continue;
                };
                if let Some(slot) = answered.get_mut(position) {
                    *slot = true;
                }
                let name = names.gigachat(client_name);
                let result_param = format!("messages[{position}]");
                pairs.push((
                    json!({ "role": "assistant", "content": "", "function_call": { "name": name, "arguments": arguments } }),
                    function_result(&name, result, &result_param)?,
                ));
            }
        }
        Some(_) => return Err(not_a("array", &format!("{param}.tool_calls"))),
    }

    // The legacy single `function_call`, kept when its result follows.
    if field(message, "tool_calls").is_none()
        && let Some(call) = field(message, "function_call")
    {
        let call_param = format!("{param}.function_call");
        let Some(Value::String(client_name)) = call.get("name") else {
            return Err(invalid(
                format!("`{call_param}.name` must be a string"),
                format!("{call_param}.name"),
                "invalid_request",
                HINT_TOOL_HISTORY,
            ));
        };
        let arguments = call_arguments(call.get("arguments"), &format!("{call_param}.arguments"))?;
        let answered_next = roles
            .get(index + 1)
            .is_some_and(|(_, role)| *role == Role::Function);
        if answered_next {
            let name = names.gigachat(client_name);
            out.push(json!({ "role": "assistant", "content": text, "function_call": { "name": name, "arguments": arguments } }));
            return Ok(());
        }
    }

    if pairs.is_empty() {
        if !text.is_empty() {
            out.push(json!({ "role": "assistant", "content": text }));
        }
        return Ok(());
    }
    let mut text = Some(text);
    for (mut call, result) in pairs {
        if let Some(text) = text.take()
            && let Some(content) = call.get_mut("content")
        {
            *content = Value::String(text);
        }
        out.push(call);
        out.push(result);
    }
    Ok(())
}

/// One OpenAI tool call: (id, function name, arguments as an object).
fn tool_call<'m>(call: &'m Value, param: &str) -> Result<(&'m str, &'m str, Value), Error> {
    let Some(Value::String(id)) = call.get("id") else {
        return Err(invalid(
            format!("`{param}.id` must be a string"),
            format!("{param}.id"),
            "invalid_request",
            HINT_TOOL_HISTORY,
        ));
    };
    let Some(Value::String(name)) = call.get("function").and_then(|f| f.get("name")) else {
        return Err(invalid(
            format!("`{param}.function.name` must be a string"),
            format!("{param}.function.name"),
            "invalid_request",
            HINT_TOOL_HISTORY,
        ));
    };
    let arguments = call_arguments(
        call.get("function").and_then(|f| f.get("arguments")),
        &format!("{param}.function.arguments"),
    )?;
    Ok((id, name, arguments))
}

/// Call arguments as the JSON object GigaChat wants: OpenAI sends them as
/// a JSON string (empty for a call without arguments); an object is taken
/// as it is.
fn call_arguments(arguments: Option<&Value>, param: &str) -> Result<Value, Error> {
    let malformed = || {
        invalid(
            format!("`{param}` is not a JSON object in a string"),
            param,
            "invalid_tool_arguments",
            "Send the tool call's arguments exactly as the model produced them: a string holding a JSON object.",
        )
    };
    match arguments {
        None | Some(Value::Null) => Ok(Value::Object(Map::new())),
        Some(Value::Object(_)) => Ok(arguments.cloned().unwrap_or_default()),
        Some(Value::String(text)) if text.trim().is_empty() => Ok(Value::Object(Map::new())),
        Some(Value::String(text)) => match serde_json::from_str::<Value>(text) {
            Ok(object @ Value::Object(_)) => Ok(object),
            // A string holding the object's JSON (encoded twice).
            Ok(Value::String(inner)) => match serde_json::from_str::<Value>(&inner) {
                Ok(object @ Value::Object(_)) => Ok(object),
                _ => Err(malformed()),
            },
            _ => Err(malformed()),
        },
        Some(_) => Err(malformed()),
    }
}

/// A tool or function result as GigaChat's `function` message: the content
/// made a JSON object, as GigaChat refuses anything else.
fn function_result(name: &str, message: &Map<String, Value>, param: &str) -> Result<Value, Error> {
    let content = match field(message, "content") {
        Some(Value::Object(object)) => serde_json::to_string(object).unwrap_or_default(),
        Some(Value::String(text)) => json_object_text(text),
        Some(Value::Array(_)) => json_object_text(&text_content(message, param)?),
        Some(other) => json!({ "result": other }).to_string(),
        None => "{}".to_owned(),
    };
    Ok(json!({ "role": "function", "name": name, "content": content }))
}

/// A tool's output as a JSON object's text: an object stays as it is, JSON
/// encoded up to three times is decoded, any other value or plain text is
/// wrapped as `{"result": …}`; empty output is `{}`.
pub(crate) fn json_object_text(text: &str) -> String {
    if text.trim().is_empty() {
        return "{}".to_owned();
    }
    let mut value = Value::String(text.to_owned());
    for _ in 0..3 {
        let Value::String(encoded) = &value else {
            break;
        };
        match serde_json::from_str::<Value>(encoded.trim()) {
            Ok(decoded) => value = decoded,
            Err(_) => break,
        }
    }
    match value {
        Value::Object(object) => Value::Object(object).to_string(),
        other => json!({ "result": other }).to_string(),
    }
}

/// A non-user message's text: a string, or its text parts joined by
/// newlines. Images and files are read in user messages only.
fn text_content(message: &Map<String, Value>, param: &str) -> Result<String, Error> {
    match field(message, "content") {
        None => Ok(String::new()),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (index, part) in parts.iter().enumerate() {
                let part_param = format!("{param}.content[{index}]");
                match part_type(part, &part_param)? {
                    "text" | "input_text" | "output_text" => {
                        texts.push(part_text(part, "text", &part_param)?)
                    }
                    "refusal" => texts.push(part_text(part, "refusal", &part_param)?),
                    "image_url" | "file" | "input_audio" => {
                        return Err(invalid(
                            format!(
                                "`{part_param}`: only user messages may carry images, files or audio"
                            ),
                            part_param,
                            "invalid_request",
                            HINT_MEDIA,
                        ));
                    }
                    _ => return Err(unknown_part(&part_param)),
                }
            }
            Ok(texts.join("\n"))
        }
        Some(_) => Err(not_a(
            "string or an array of content parts",
            &format!("{param}.content"),
        )),
    }
}

fn part_type<'p>(part: &'p Value, param: &str) -> Result<&'p str, Error> {
    part.get("type").and_then(Value::as_str).ok_or_else(|| {
        invalid(
            format!("`{param}.type` is missing"),
            format!("{param}.type"),
            "invalid_request",
            HINT_MESSAGES,
        )
    })
}

fn part_text(part: &Value, key: &str, param: &str) -> Result<String, Error> {
    match part.get(key) {
        Some(Value::String(text)) => Ok(text.clone()),
        _ => Err(not_a("string", &format!("{param}.{key}"))),
    }
}

fn unknown_part(param: &str) -> Error {
    invalid(
        format!("`{param}.type` is not a content part GigaChat can read"),
        format!("{param}.type"),
        "unsupported_parameter",
        "Send text, image_url (data: URL) or file (file_data) parts.",
    )
}

/// A user message: text parts joined, inline images and files turned into
/// uploads for this message, file ids already uploaded kept as attachments.
fn user_message(
    message: &Map<String, Value>,
    param: &str,
    position: usize,
    uploads: &mut Vec<Upload>,
    attachments: &mut usize,
) -> Result<Value, Error> {
    let parts = match field(message, "content") {
        Some(Value::Array(parts)) => parts,
        _ => return Ok(json!({ "role": "user", "content": text_content(message, param)? })),
    };
    let mut texts = Vec::new();
    let mut file_ids = Vec::new();
    let mut images = 0usize;
    for (index, part) in parts.iter().enumerate() {
        let part_param = format!("{param}.content[{index}]");
        let media = match part_type(part, &part_param)? {
            "text" | "input_text" => {
                texts.push(part_text(part, "text", &part_param)?);
                continue;
            }
            "image_url" => {
                let url = match part.get("image_url") {
                    Some(Value::Object(image)) => image.get("url").and_then(Value::as_str),
                    Some(Value::String(url)) => Some(url.as_str()),
                    _ => None,
                };
                let url_param = format!("{part_param}.image_url.url");
                let Some(url) = url else {
                    return Err(not_a("string", &url_param));
                };
                inline_media(url, None, &url_param)?
            }
            "file" => {
                let Some(Value::Object(file)) = part.get("file") else {
                    return Err(not_a("object", &format!("{part_param}.file")));
                };
                let filename = file.get("filename").and_then(Value::as_str);
                match (field(file, "file_data"), field(file, "file_id")) {
                    (Some(Value::String(data)), _) => {
                        inline_media(data, filename, &format!("{part_param}.file.file_data"))?
                    }
                    (None, Some(Value::String(id))) => {
                        // A file already in GigaChat's storage (uploaded
                        // through the native route): referenced as it is.
                        file_ids.push(Value::String(id.clone()));
                        *attachments += 1;
                        check_attachment_count(*attachments, &part_param)?;
                        continue;
                    }
                    _ => {
                        return Err(invalid(
                            format!(
                                "`{part_param}.file` needs `file_data` (a data: URL) or `file_id`"
                            ),
                            format!("{part_param}.file"),
                            "invalid_request",
                            HINT_MEDIA,
                        ));
                    }
                }
            }
            "input_audio" => {
                return Err(invalid(
                    format!("`{part_param}`: input_audio parts are not supported"),
                    format!("{part_param}.type"),
                    "unsupported_parameter",
                    HINT_AUDIO,
                ));
            }
            _ => return Err(unknown_part(&part_param)),
        };
        if media.media_type.starts_with("image/") {
            images += 1;
            if images > MAX_IMAGES_PER_MESSAGE {
                return Err(invalid(
                    format!("`{part_param}`: GigaChat reads one image per message"),
                    part_param,
                    "too_many_attachments",
                    HINT_ATTACHMENTS,
                ));
            }
        }
        *attachments += 1;
        check_attachment_count(*attachments, &part_param)?;
        uploads.push(Upload {
            message: position,
            media_type: media.media_type,
            filename: media.filename,
            data: media.data,
        });
    }
    let mut translated = json!({ "role": "user", "content": texts.join("\n") });
    if !file_ids.is_empty()
        && let Some(object) = translated.as_object_mut()
    {
        object.insert("attachments".into(), Value::Array(file_ids));
    }
    Ok(translated)
}

fn check_attachment_count(count: usize, param: &str) -> Result<(), Error> {
    if count > MAX_ATTACHMENTS {
        return Err(invalid(
            format!("`{param}`: more than {MAX_ATTACHMENTS} images and files in one request"),
            param,
            "too_many_attachments",
            HINT_ATTACHMENTS,
        ));
    }
    Ok(())
}

struct InlineMedia {
    media_type: String,
    filename: String,
    data: Vec<u8>,
}

/// Base64 as encoders write it: padded or not, wrapped in lines or not.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A `data:` URL's media type and bytes (or, for `file_data`, bare base64
/// with the type read from the file name). Remote URLs are refused: the
/// proxy fetches nothing on a caller's behalf.
fn inline_media(source: &str, filename: Option<&str>, param: &str) -> Result<InlineMedia, Error> {
    let bad_url = |why: &str| {
        invalid(
            format!("`{param}`: {why}"),
            param,
            "invalid_data_url",
            HINT_MEDIA,
        )
    };
    let starts_with = |prefix: &str| {
        source
            .as_bytes()
            .get(..prefix.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(prefix.as_bytes()))
    };
    if starts_with("http://") || starts_with("https://") {
        return Err(invalid(
            format!("`{param}`: remote URLs are not fetched by the proxy"),
            param,
            "remote_url_refused",
            HINT_REMOTE_URL,
        ));
    }
    let (media_type, data) = if starts_with("data:") {
        let rest = source.get(5..).unwrap_or_default();
        let Some((header, payload)) = rest.split_once(',') else {
            return Err(bad_url("a data: URL needs a comma before its data"));
        };
        let mut header_parts = header.split(';');
        let media_type = header_parts
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let is_base64 = header_parts.any(|part| part.trim().eq_ignore_ascii_case("base64"));
        let data = if is_base64 {
            decode_base64(payload).ok_or_else(|| bad_url("its data is not valid base64"))?
        } else {
            percent_decode_str(payload).collect()
        };
        let media_type = if media_type.is_empty() {
            filename
                .and_then(media_type_of_name)
                .unwrap_or_default()
                .to_owned()
        } else {
            media_type
        };
        (media_type, data)
    } else if let Some(media_type) = filename.and_then(media_type_of_name) {
        // `file_data` as bare base64 (as some clients send it).
        let data =
            decode_base64(source).ok_or_else(|| bad_url("not a data: URL nor valid base64"))?;
        (media_type.to_owned(), data)
    } else {
        return Err(bad_url(
            "expected a data: URL such as data:image/png;base64,…",
        ));
    };
    let Some(extension) = extension_of(&media_type) else {
        let shown: String = media_type.chars().take(100).collect();
        return Err(Error::UnsupportedMedia {
            message: format!("GigaChat does not read files of type `{shown}` ({param})"),
        });
    };
    if data.is_empty() {
        return Err(bad_url("the file is empty"));
    }
    Ok(InlineMedia {
        filename: clean_filename(filename, extension),
        media_type,
        data,
    })
}

fn decode_base64(payload: &str) -> Option<Vec<u8>> {
    let payload = payload.trim();
    let compact: Cow<'_, str> = if payload.bytes().any(|b| b.is_ascii_whitespace()) {
        Cow::Owned(
            payload
                .chars()
                .filter(|c| !c.is_ascii_whitespace())
                .collect(),
        )
    } else {
        Cow::Borrowed(payload)
    };
    BASE64
        .decode(compact.as_bytes())
        .or_else(|_| {
            general_purpose::URL_SAFE_NO_PAD.decode(compact.trim_end_matches('=').as_bytes())
        })
        .ok()
}

fn extension_of(media_type: &str) -> Option<&'static str> {
    MEDIA_TYPES
        .iter()
        .find(|(known, _)| *known == media_type)
        .map(|(_, extension)| *extension)
}

fn media_type_of_name(filename: &str) -> Option<&'static str> {
    let (_, extension) = filename.rsplit_once('.')?;
    let extension = extension.to_ascii_lowercase();
    let extension = match extension.as_str() {
        "jpeg" => "jpg",
        "tif" => "tiff",
        other => other,
    };
    MEDIA_TYPES
        .iter()
        .find(|(_, known)| *known == extension)
        .map(|(media_type, _)| *media_type)
}

/// The client's file name without directories or control characters, at
/// most 128 characters; a generic name when none is left.
fn clean_filename(filename: Option<&str>, extension: &str) -> String {
    let base = filename
        .and_then(|name| name.rsplit(['/', '\\']).next())
        .unwrap_or_default();
    let cleaned: String = base
        .chars()
        .filter(|c| !c.is_control() && *c != '"')
        .take(128)
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.');
    if cleaned.is_empty() {
        let kind = if IMAGE_EXTENSIONS.contains(&extension) {
            "image"
        } else {
            "file"
        };
        format!("{kind}.{extension}")
    } else {
        cleaned.to_owned()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use base64::engine::general_purpose::STANDARD;

    fn config() -> OpenAiConfig {
        OpenAiConfig {
            default_model: "GigaChat-2".into(),
            aliases: vec![("gpt-4o".into(), "GigaChat-2-Max".into())],
            ..OpenAiConfig::default()
        }
    }

    fn ok(request: Value) -> ChatRequest {
        translate(&request, &config()).unwrap()
    }

    fn body(request: Value) -> Value {
        Value::Object(ok(request).body)
    }

    /// (status, code, param) of a refused request.
    fn refused(request: Value) -> (u16, String, Option<String>) {
        match translate(&request, &config()) {
            Ok(translated) => panic!("expected a refusal, got {:?}", translated.body),
            Err(error) => {
                let param = match &error {
                    Error::InvalidRequest { param, .. } => param.clone(),
                    _ => None,
                };
                (error.status().as_u16(), error.code().to_owned(), param)
            }
        }
    }

    fn user(text: &str) -> Value {
        json!({ "role": "user", "content": text })
    }

    fn weather_tool(name: &str) -> Value {
        json!({ "type": "function", "function": {
            "name": name, "description": "Погода",
            "parameters": { "type": "object", "properties": { "city": { "type": "string" } }, "required": ["city"] }
        }})
    }

    fn call(id: &str, name: &str, arguments: &str) -> Value {
        json!({ "id": id, "type": "function", "function": { "name": name, "arguments": arguments } })
    }

    #[test]
    fn developer_and_leading_system_texts_merge_into_one_first_system_message() {
        let translated = body(json!({ "messages": [
            { "role": "system", "content": "Be brief." },
            { "role": "developer", "content": [{ "type": "text", "text": "Answer in Russian." }] },
            user("Hi"),
        ]}));
        assert_eq!(
            translated["messages"],
            json!([
                { "role": "system", "content": "Be brief.\n\nAnswer in Russian." },
                { "role": "user", "content": "Hi" },
            ])
        );
    }

    #[test]
    fn a_later_system_or_developer_message_becomes_a_user_message() {
        let translated = body(json!({ "messages": [
            user("Hi"),
            { "role": "assistant", "content": "Hello" },
            { "role": "developer", "content": "Reminder: be brief." },
            { "role": "system", "content": "Another." },
        ]}));
        let messages = translated["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 4);
        assert!(messages.iter().all(|m| m["role"] != "system"));
        assert_eq!(
            messages[2],
            json!({ "role": "user", "content": "Reminder: be brief." })
        );
        assert_eq!(
            messages[3],
            json!({ "role": "user", "content": "Another." })
        );
    }

    #[test]
    fn text_parts_are_joined_with_newlines_and_names_dropped() {
        let translated = body(json!({ "messages": [
            { "role": "user", "name": "alice", "content": [
                { "type": "text", "text": "first" }, { "type": "text", "text": "second" }
            ]},
            { "role": "assistant", "content": [{ "type": "text", "text": "a" }, { "type": "refusal", "refusal": "b" }] },
        ]}));
        assert_eq!(
            translated["messages"][0],
            json!({ "role": "user", "content": "first\nsecond" })
        );
        assert_eq!(
            translated["messages"][1],
            json!({ "role": "assistant", "content": "a\nb" })
        );
    }

    #[test]
    fn every_call_of_a_parallel_batch_becomes_its_own_call_and_result_pair_in_order() {
        let translated = body(json!({
            "tools": [weather_tool("get_weather"), weather_tool("get_time")],
            "messages": [
                user("Weather and time in Moscow and Paris?"),
                { "role": "assistant", "content": "Let me check.", "tool_calls": [
                    call("call_1", "get_weather", r#"{"city":"Москва"}"#),
                    call("call_2", "get_weather", r#"{"city":"Paris"}"#),
                    call("call_3", "get_time", "{}"),
                ]},
                // Results in another order than the calls: pairs follow the calls.
                { "role": "tool", "tool_call_id": "call_3", "content": "12:00" },
                { "role": "tool", "tool_call_id": "call_1", "content": "+5°C" },
                { "role": "tool", "tool_call_id": "call_2", "content": "{\"temp\": 7}" },
            ]
        }));
        let messages = &translated["messages"];
        assert_eq!(messages.as_array().unwrap().len(), 7);
        assert_eq!(
            messages[1],
            json!({ "role": "assistant", "content": "Let me check.",
                    "function_call": { "name": "get_weather", "arguments": { "city": "Москва" } } })
        );
        assert_eq!(
            messages[2],
            json!({ "role": "function", "name": "get_weather", "content": "{\"result\":\"+5°C\"}" })
        );
        assert_eq!(
            messages[3],
            json!({ "role": "assistant", "content": "",
                    "function_call": { "name": "get_weather", "arguments": { "city": "Paris" } } })
        );
        assert_eq!(
            messages[4],
            json!({ "role": "function", "name": "get_weather", "content": "{\"temp\":7}" })
        );
        assert_eq!(
            messages[5]["function_call"],
            json!({ "name": "get_time", "arguments": {} })
        );
        assert_eq!(
            messages[6],
            json!({ "role": "function", "name": "get_time", "content": "{\"result\":\"12:00\"}" })
        );
    }

    #[test]
    fn tool_results_become_json_objects() {
        let cases = [
            (json!("{\"a\":1}"), "{\"a\":1}"),
            // JSON encoded twice and three times.
            (json!("\"{\\\"a\\\":1}\""), "{\"a\":1}"),
            (
                json!(json!(json!({ "a": 1 }).to_string()).to_string()),
                "{\"a\":1}",
            ),
            (json!("plain text"), "{\"result\":\"plain text\"}"),
            (json!("42"), "{\"result\":42}"),
            (json!("[1,2]"), "{\"result\":[1,2]}"),
            (json!("null"), "{\"result\":null}"),
            (json!("  "), "{}"),
            (json!({ "already": "object" }), "{\"already\":\"object\"}"),
            (
                json!([{ "type": "text", "text": "part" }]),
                "{\"result\":\"part\"}",
            ),
        ];
        for (content, expected) in cases {
            let translated = body(json!({ "messages": [
                user("q"),
                { "role": "assistant", "tool_calls": [call("c", "f", "{}")] },
                { "role": "tool", "tool_call_id": "c", "content": content.clone() },
            ]}));
            assert_eq!(
                translated["messages"][2]["content"], expected,
                "content {content}"
            );
            let parsed: Value = serde_json::from_str(expected).unwrap();
            assert!(parsed.is_object());
        }
    }

    #[test]
    fn calls_that_never_got_a_result_are_dropped() {
        let translated = body(json!({ "messages": [
            user("q"),
            { "role": "assistant", "content": "Checking.", "tool_calls": [
                call("answered", "f", "{\"x\":1}"), call("abandoned", "g", "{}"),
            ]},
            { "role": "tool", "tool_call_id": "answered", "content": "ok" },
            { "role": "assistant", "content": null, "tool_calls": [call("never", "f", "{}")] },
            user("next question"),
        ]}));
        let messages = translated["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 4, "{messages:?}");
        assert_eq!(messages[1]["function_call"]["name"], "f");
        assert_eq!(messages[2]["role"], "function");
        assert_eq!(messages[3], user("next question"));
        assert!(!translated.to_string().contains("\"g\""));

        // Text of an assistant turn whose calls all went unanswered stays.
        let translated = body(json!({ "messages": [
            user("q"),
            { "role": "assistant", "content": "Let me look.", "tool_calls": [call("x", "f", "{}")] },
            user("never mind"),
        ]}));
        assert_eq!(
            translated["messages"][1],
            json!({ "role": "assistant", "content": "Let me look." })
        );
    }

    #[test]
    fn a_tool_result_without_an_earlier_call_is_refused() {
        let (status, code, param) = refused(json!({ "messages": [
            user("q"),
            { "role": "tool", "tool_call_id": "ghost", "content": "x" },
        ]}));
        assert_eq!((status, code.as_str()), (400, "invalid_request"));
        assert_eq!(param.as_deref(), Some("messages[1].tool_call_id"));
    }

    #[test]
    fn legacy_function_role_and_function_call_are_accepted() {
        let translated = body(json!({
            "functions": [{ "name": "get_weather", "parameters": { "type": "object", "properties": {} } }],
            "function_call": { "name": "get_weather" },
            "messages": [
                user("q"),
                { "role": "assistant", "content": null, "function_call": { "name": "get_weather", "arguments": "{\"city\":\"Omsk\"}" } },
                { "role": "function", "name": "get_weather", "content": "sunny" },
            ]
        }));
        assert_eq!(
            translated["function_call"],
            json!({ "name": "get_weather" })
        );
        assert_eq!(translated["functions"][0]["name"], "get_weather");
        assert_eq!(
            translated["messages"][1]["function_call"],
            json!({ "name": "get_weather", "arguments": { "city": "Omsk" } })
        );
        assert_eq!(
            translated["messages"][2],
            json!({ "role": "function", "name": "get_weather", "content": "{\"result\":\"sunny\"}" })
        );
    }

    #[test]
    fn tools_become_functions_with_normalised_schemas() {
        let translated = body(json!({
            "messages": [user("q")],
            "tools": [{ "type": "function", "function": {
                "name": "book", "description": "Book a room", "strict": true,
                "parameters": {
                    "type": "object",
                    "properties": {
                        "guest": { "$ref": "#/$defs/Guest" },
                        "nights": { "type": ["integer", "null"] },
                        "size": { "enum": ["s", "m", 3] },
                    },
                    "$defs": { "Guest": { "type": "object", "properties": { "name": { "type": "string", "format": "email" } } } }
                }
            }}, { "type": "function", "function": { "name": "no_args" } }]
        }));
        assert_eq!(
            translated["functions"],
            json!([{
                "name": "book", "description": "Book a room",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "guest": { "type": "object", "properties": { "name": { "type": "string" } } },
                        "nights": { "type": "integer" },
                        "size": { "type": "string", "enum": ["s", "m"] },
                    }
                }
            }, { "name": "no_args", "parameters": { "type": "object", "properties": {} } }])
        );
        assert_eq!(translated["function_call"], "auto");
    }

    #[test]
    fn a_tool_schema_whose_root_is_not_an_object_is_refused() {
        let (status, code, param) = refused(
            json!({ "messages": [user("q")], "tools": [{ "type": "function",
            "function": { "name": "f", "parameters": { "type": "array", "items": { "type": "string" } } } }] }),
        );
        assert_eq!((status, code.as_str()), (400, "invalid_schema"));
        assert_eq!(param.as_deref(), Some("tools[0].function.parameters"));
    }

    #[test]
    fn a_tool_named_like_a_gigachat_builtin_is_renamed_everywhere_and_recorded() {
        let translated = ok(json!({
            "tools": [weather_tool("web_search"), weather_tool("user_web_search"), weather_tool("text2image")],
            "tool_choice": { "type": "function", "function": { "name": "web_search" } },
            "messages": [
                user("q"),
                { "role": "assistant", "tool_calls": [call("a", "web_search", "{}"), call("b", "get_file_content", "{}")] },
                { "role": "tool", "tool_call_id": "a", "content": "found" },
                { "role": "tool", "tool_call_id": "b", "content": "file" },
            ]
        }));
        let body = Value::Object(translated.body);
        let names: Vec<&str> = body["functions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        // `user_web_search` is a client tool already: the rename avoids it.
        assert_eq!(
            names,
            ["user_user_web_search", "user_web_search", "user_text2image"]
        );
        assert_eq!(
            body["function_call"],
            json!({ "name": "user_user_web_search" })
        );
        assert_eq!(
            body["messages"][1]["function_call"]["name"],
            "user_user_web_search"
        );
        assert_eq!(body["messages"][2]["name"], "user_user_web_search");
        assert_eq!(
            body["messages"][3]["function_call"]["name"],
            "user_get_file_content"
        );
        assert_eq!(
            translated.plan.renamed_tools,
            vec![
                ("user_user_web_search".to_owned(), "web_search".to_owned()),
                ("user_text2image".to_owned(), "text2image".to_owned()),
                (
                    "user_get_file_content".to_owned(),
                    "get_file_content".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn tool_choice_maps_to_function_call() {
        let with = |choice: Value, tools: Vec<Value>| {
            body(json!({ "messages": [user("q")], "tools": tools, "tool_choice": choice }))["function_call"].clone()
        };
        let one = vec![weather_tool("a")];
        let two = vec![weather_tool("a"), weather_tool("b")];
        assert_eq!(with(json!("none"), one.clone()), json!("none"));
        assert_eq!(with(json!("auto"), one.clone()), json!("auto"));
        assert_eq!(with(Value::Null, one.clone()), json!("auto"));
        assert_eq!(
            with(
                json!({ "type": "function", "function": { "name": "b" } }),
                two.clone()
            ),
            json!({ "name": "b" })
        );
        assert_eq!(with(json!("required"), one.clone()), json!({ "name": "a" }));
        assert_eq!(with(json!("required"), two.clone()), json!("auto"));
        // No tools: no function call mode at all.
        assert_eq!(with(json!("auto"), vec![]), Value::Null);

        let (status, _, param) = refused(json!({ "messages": [user("q")], "tools": two,
            "tool_choice": { "type": "function", "function": { "name": "c" } } }));
        assert_eq!((status, param.as_deref()), (400, Some("tool_choice")));
        let (status, _, param) =
            refused(json!({ "messages": [user("q")], "tool_choice": "required" }));
        assert_eq!((status, param.as_deref()), (400, Some("tool_choice")));
    }

    #[test]
    fn json_schema_response_format_becomes_a_forced_function() {
        let translated = ok(json!({
            "messages": [user("Give me a recipe")],
            "response_format": { "type": "json_schema", "json_schema": {
                "name": "recipe-v2", "strict": true,
                "schema": { "type": "object", "properties": { "title": { "type": "string" } }, "required": ["title"], "additionalProperties": false }
            }}
        }));
        assert_eq!(
            translated.plan.structured_output.as_deref(),
            Some("recipe_v2")
        );
        let body = Value::Object(translated.body);
        assert_eq!(body["function_call"], json!({ "name": "recipe_v2" }));
        assert_eq!(body["functions"].as_array().unwrap().len(), 1);
        assert_eq!(body["functions"][0]["name"], "recipe_v2");
        assert_eq!(
            body["functions"][0]["parameters"],
            json!({ "type": "object", "properties": { "title": { "type": "string" } }, "required": ["title"], "additionalProperties": false })
        );
        assert!(body.get("response_format").is_none());
    }

    #[test]
    fn json_schema_with_tools_lets_the_model_call_tools_first() {
        let translated = ok(json!({
            "messages": [user("q")],
            "tools": [weather_tool("get_weather")],
            "response_format": { "type": "json_schema", "json_schema": { "name": "get_weather",
                "schema": { "type": "object", "properties": {} } } }
        }));
        // The schema's name clashes with the tool: the answer function gets its own.
        assert_eq!(
            translated.plan.structured_output.as_deref(),
            Some("answer_get_weather")
        );
        let body = Value::Object(translated.body);
        assert_eq!(body["function_call"], "auto");
        let names: Vec<&str> = body["functions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["get_weather", "answer_get_weather"]);
        assert_eq!(body["messages"][0]["role"], "system");
        assert!(
            body["messages"][0]["content"]
                .as_str()
                .unwrap()
                .contains("`answer_get_weather`")
        );
    }

    #[test]
    fn json_object_response_format_adds_a_system_instruction() {
        let translated =
            body(json!({ "messages": [user("q")], "response_format": { "type": "json_object" } }));
        assert_eq!(
            translated["messages"][0],
            json!({ "role": "system", "content": JSON_OBJECT_INSTRUCTION })
        );
        assert_eq!(translated["messages"][1], user("q"));
        assert!(translated.get("response_format").is_none());

        let translated = body(
            json!({ "messages": [{ "role": "system", "content": "Be brief." }, user("q")],
            "response_format": { "type": "json_object" } }),
        );
        assert_eq!(
            translated["messages"][0]["content"],
            format!("Be brief.\n\n{JSON_OBJECT_INSTRUCTION}")
        );
        assert_eq!(translated["messages"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn temperature_zero_becomes_top_p_zero() {
        let translated = body(json!({ "messages": [user("q")], "temperature": 0, "top_p": 0.9 }));
        assert_eq!(translated["top_p"], json!(0));
        assert!(translated.get("temperature").is_none());
        let translated = body(json!({ "messages": [user("q")], "temperature": 0.7, "top_p": 0.9 }));
        assert_eq!(
            (
                translated["temperature"].clone(),
                translated["top_p"].clone()
            ),
            (json!(0.7), json!(0.9))
        );
        let (status, _, param) = refused(json!({ "messages": [user("q")], "temperature": -1 }));
        assert_eq!((status, param.as_deref()), (400, Some("temperature")));
    }

    #[test]
    fn max_completion_tokens_becomes_max_tokens_and_max_tokens_wins() {
        let translated = body(json!({ "messages": [user("q")], "max_completion_tokens": 512 }));
        assert_eq!(translated["max_tokens"], 512);
        assert!(translated.get("max_completion_tokens").is_none());
        let translated = body(
            json!({ "messages": [user("q")], "max_completion_tokens": 512, "max_tokens": 100 }),
        );
        assert_eq!(translated["max_tokens"], 100);
    }

    #[test]
    fn stop_goes_to_the_plan_not_upstream() {
        let translated = ok(json!({ "messages": [user("q")], "stop": "END" }));
        assert_eq!(translated.plan.stop, ["END"]);
        assert!(!translated.body.contains_key("stop"));
        let translated = ok(json!({ "messages": [user("q")], "stop": ["a", "", "b"] }));
        assert_eq!(translated.plan.stop, ["a", "b"]);
        let (status, _, param) = refused(json!({ "messages": [user("q")], "stop": [1] }));
        assert_eq!((status, param.as_deref()), (400, Some("stop")));
    }

    #[test]
    fn more_than_one_choice_is_refused() {
        let (status, code, param) = refused(json!({ "messages": [user("q")], "n": 2 }));
        assert_eq!(
            (status, code.as_str(), param.as_deref()),
            (400, "unsupported_parameter", Some("n"))
        );
        let translated = body(json!({ "messages": [user("q")], "n": 1 }));
        assert!(translated.get("n").is_none());
    }

    #[test]
    fn stream_and_include_usage_go_to_the_plan() {
        let translated = ok(
            json!({ "messages": [user("q")], "stream": true, "stream_options": { "include_usage": true } }),
        );
        assert!(translated.plan.include_usage);
        assert_eq!(translated.body["stream"], true);
        assert!(!translated.body.contains_key("stream_options"));
        let translated = ok(json!({ "messages": [user("q")], "stream": true }));
        assert_eq!(translated.body["stream"], true);
        assert!(!translated.plan.include_usage);
        let translated =
            ok(json!({ "messages": [user("q")], "stream_options": { "include_usage": true } }));
        assert!(!translated.plan.include_usage);
        assert!(!translated.body.contains_key("stream"));
    }

    #[test]
    fn gigachat_extras_pass_through_and_unknown_fields_are_dropped() {
        let translated = body(json!({
            "messages": [user("q")],
            "repetition_penalty": 1.1,
            "profanity_check": false,
            "reasoning_effort": "high",
            "flags": ["x"],
            "extra_body": { "update_interval": 0.5, "function_ranker": { "enabled": true }, "repetition_penalty": 9, "storage": { "is_stateful": true } },
            "storage": { "thread_id": "t" },
            "user": "u-1", "seed": 7, "logit_bias": {}, "parallel_tool_calls": true, "metadata": {}, "frequency_penalty": 0.2,
        }));
        let mut expected = json!({
            "model": "GigaChat-2", "messages": [user("q")],
            "repetition_penalty": 1.1, "profanity_check": false, "reasoning_effort": "high", "flags": ["x"],
            "update_interval": 0.5, "function_ranker": { "enabled": true },
        });
        assert_eq!(translated, expected);

        let translated = body(json!({ "messages": [user("q")], "reasoning": { "effort": "low" } }));
        expected =
            json!({ "model": "GigaChat-2", "messages": [user("q")], "reasoning_effort": "low" });
        assert_eq!(translated, expected);

        let (status, _, param) =
            refused(json!({ "messages": [user("q")], "extra_body": { "profanity_check": "no" } }));
        assert_eq!(
            (status, param.as_deref()),
            (400, Some("extra_body.profanity_check"))
        );
    }

    #[test]
    fn the_model_is_mapped_upstream_and_echoed_as_the_client_sent_it() {
        let translated = ok(json!({ "model": "gpt-4o", "messages": [user("q")] }));
        assert_eq!(translated.body["model"], "GigaChat-2-Max");
        assert_eq!(translated.plan.model, "gpt-4o");
        let translated = ok(json!({ "model": "GigaChat-2-Pro", "messages": [user("q")] }));
        assert_eq!(
            (
                translated.body["model"].as_str(),
                translated.plan.model.as_str()
            ),
            (Some("GigaChat-2-Pro"), "GigaChat-2-Pro")
        );
        let translated = ok(json!({ "messages": [user("q")] }));
        assert_eq!(
            (
                translated.body["model"].as_str(),
                translated.plan.model.as_str()
            ),
            (Some("GigaChat-2"), "GigaChat-2")
        );
    }

    #[test]
    fn inline_images_and_files_become_uploads_of_their_message() {
        let png = b"\x89PNG\r\n\x1a\nfake";
        let pdf = b"%PDF-1.4 fake";
        let translated = ok(json!({
            "response_format": { "type": "json_object" },
            "messages": [
                user("first"),
                { "role": "user", "content": [
                    { "type": "text", "text": "What is on it?" },
                    { "type": "image_url", "image_url": { "url": format!("data:image/PNG;base64,{}", STANDARD.encode(png)) } },
                    { "type": "file", "file": { "filename": "../../etc/report.pdf", "file_data": format!("data:application/pdf;base64,{}", STANDARD.encode(pdf)) } },
                ]},
                { "role": "user", "content": [
                    { "type": "file", "file": { "filename": "notes.txt", "file_data": STANDARD.encode("hello") } },
                    { "type": "file", "file": { "file_id": "file-123~tag" } },
                ]},
            ]
        }));
        // The system instruction is message 0, so the user turns are 1..=3.
        let uploads: Vec<(usize, &str, &str, &[u8])> = translated
            .uploads
            .iter()
            .map(|u| {
                (
                    u.message,
                    u.media_type.as_str(),
                    u.filename.as_str(),
                    u.data.as_slice(),
                )
            })
            .collect();
        assert_eq!(
            uploads,
            vec![
                (2, "image/png", "image.png", &png[..]),
                (2, "application/pdf", "report.pdf", &pdf[..]),
                (3, "text/plain", "notes.txt", &b"hello"[..]),
            ]
        );
        assert_eq!(
            translated.body["messages"][2],
            json!({ "role": "user", "content": "What is on it?" })
        );
        assert_eq!(
            translated.body["messages"][3]["attachments"],
            json!(["file-123~tag"])
        );
    }

    #[test]
    fn a_media_type_gigachat_does_not_read_is_refused_with_415() {
        let (status, code, _) = refused(json!({ "messages": [{ "role": "user", "content": [
            { "type": "image_url", "image_url": { "url": "data:image/svg+xml;base64,PHN2Zz4=" } }
        ]}]}));
        assert_eq!((status, code.as_str()), (415, "unsupported_media_type"));
    }

    #[test]
    fn remote_urls_are_refused_not_fetched() {
        for url in ["https://example.com/cat.png", "HTTP://10.0.0.1/x.png"] {
            let (status, code, param) =
                refused(json!({ "messages": [{ "role": "user", "content": [
                    { "type": "image_url", "image_url": { "url": url } }
                ]}]}));
            assert_eq!((status, code.as_str()), (400, "remote_url_refused"));
            assert_eq!(
                param.as_deref(),
                Some("messages[0].content[0].image_url.url")
            );
        }
    }

    #[test]
    fn audio_input_and_malformed_data_urls_are_refused() {
        let (status, code, _) = refused(json!({ "messages": [{ "role": "user", "content": [
            { "type": "input_audio", "input_audio": { "data": "AAAA", "format": "wav" } }
        ]}]}));
        assert_eq!((status, code.as_str()), (400, "unsupported_parameter"));
        let (status, code, _) = refused(json!({ "messages": [{ "role": "user", "content": [
            { "type": "image_url", "image_url": { "url": "data:image/png;base64,!!!not base64!!!" } }
        ]}]}));
        assert_eq!((status, code.as_str()), (400, "invalid_data_url"));
        let (status, _, param) = refused(json!({ "messages": [{ "role": "system", "content": [
            { "type": "image_url", "image_url": { "url": "data:image/png;base64,AAAA" } }
        ]}, user("q")]}));
        assert_eq!(
            (status, param.as_deref()),
            (400, Some("messages[0].content[0]"))
        );
    }

    #[test]
    fn one_image_per_message_and_ten_attachments_per_request() {
        let image = json!({ "type": "image_url", "image_url": { "url": "data:image/jpeg;base64,/9j/4AAQ" } });
        let (status, code, param) = refused(
            json!({ "messages": [{ "role": "user", "content": [image.clone(), image.clone()] }] }),
        );
        assert_eq!((status, code.as_str()), (400, "too_many_attachments"));
        assert_eq!(param.as_deref(), Some("messages[0].content[1]"));

        let ten: Vec<Value> = (0..10)
            .map(|_| json!({ "role": "user", "content": [image.clone()] }))
            .collect();
        assert_eq!(ok(json!({ "messages": ten })).uploads.len(), 10);
        let eleven: Vec<Value> = (0..11)
            .map(|_| json!({ "role": "user", "content": [image.clone()] }))
            .collect();
        let (status, code, param) = refused(json!({ "messages": eleven }));
        assert_eq!((status, code.as_str()), (400, "too_many_attachments"));
        assert_eq!(param.as_deref(), Some("messages[10].content[0]"));
    }

    #[test]
    fn malformed_messages_are_refused_naming_the_field() {
        let cases = [
            (json!({}), "messages"),
            (json!({ "messages": [] }), "messages"),
            (json!({ "messages": "hi" }), "messages"),
            (json!({ "messages": null }), "messages"),
            (json!({ "messages": [42] }), "messages[0]"),
            (
                json!({ "messages": [user("q"), { "content": "no role" }] }),
                "messages[1].role",
            ),
            (
                json!({ "messages": [{ "role": "robot", "content": "x" }] }),
                "messages[0].role",
            ),
            (
                json!({ "messages": [{ "role": "user", "content": [{ "text": "no type" }] }] }),
                "messages[0].content[0].type",
            ),
            (json!({ "model": 5, "messages": [user("q")] }), "model"),
            (
                json!({ "messages": [user("q"), { "role": "assistant", "tool_calls": [call("c", "f", "{not json")] },
                    { "role": "tool", "tool_call_id": "c", "content": "x" }] }),
                "messages[1].tool_calls[0].function.arguments",
            ),
            (
                json!({ "messages": [user("q"), { "role": "assistant", "tool_calls": [call("c", "f", "[1,2]")] }] }),
                "messages[1].tool_calls[0].function.arguments",
            ),
        ];
        for (request, expected) in cases {
            let (status, _, param) = refused(request.clone());
            assert_eq!(
                (status, param.as_deref()),
                (400, Some(expected)),
                "{request}"
            );
        }
        let (status, _, param) = refused(json!([user("q")]));
        assert_eq!((status, param), (400, None));
    }

    #[test]
    fn null_options_count_as_absent() {
        let translated = body(
            json!({ "messages": [user("q")], "model": null, "temperature": null, "stop": null,
            "n": null, "tools": null, "tool_choice": null, "response_format": null, "max_tokens": null, "stream": null }),
        );
        assert_eq!(
            translated,
            json!({ "model": "GigaChat-2", "messages": [user("q")] })
        );
    }

    #[test]
    fn hostile_input_is_refused_or_translated_never_a_panic() {
        // Nesting as deep as serde_json parses (128 levels), in every place
        // a value is read.
        let deep =
            serde_json::from_str::<Value>(&format!("{}1{}", "[".repeat(120), "]".repeat(120)))
                .unwrap();
        let deep_object = serde_json::from_str::<Value>(&format!(
            "{}1{}",
            "{\"a\":".repeat(120),
            "}".repeat(120)
        ))
        .unwrap();
        let nasty = [
            deep.clone(),
            deep_object.clone(),
            json!(null),
            json!("x"),
            json!(1),
            json!({}),
            json!([]),
        ];
        for value in &nasty {
            for request in [
                json!({ "messages": value }),
                json!({ "messages": [value] }),
                json!({ "messages": [{ "role": "user", "content": value }] }),
                json!({ "messages": [{ "role": "user", "content": [value] }] }),
                json!({ "messages": [{ "role": "user", "content": [{ "type": "image_url", "image_url": value }] }] }),
                json!({ "messages": [{ "role": "user", "content": [{ "type": "file", "file": value }] }] }),
                json!({ "messages": [user("q"), { "role": "assistant", "tool_calls": value }] }),
                json!({ "messages": [user("q"), { "role": "assistant", "tool_calls": [value] }] }),
                json!({ "messages": [user("q"), { "role": "assistant", "tool_calls": [{ "id": "c", "function": { "name": "f", "arguments": value } }] },
                    { "role": "tool", "tool_call_id": "c", "content": value }] }),
                json!({ "messages": [user("q"), { "role": "assistant", "function_call": value }, { "role": "function", "name": "f", "content": value }] }),
                json!({ "messages": [user("q")], "tools": value }),
                json!({ "messages": [user("q")], "tools": [value] }),
                json!({ "messages": [user("q")], "tools": [{ "type": "function", "function": { "name": "f", "parameters": value } }] }),
                json!({ "messages": [user("q")], "tools": [weather_tool("f")], "tool_choice": value }),
                json!({ "messages": [user("q")], "response_format": value }),
                json!({ "messages": [user("q")], "response_format": { "type": "json_schema", "json_schema": { "schema": value } } }),
                json!({ "messages": [user("q")], "stop": value, "n": value }),
                json!({ "messages": [user("q")], "temperature": value, "max_tokens": value, "top_p": value }),
                json!({ "messages": [user("q")], "extra_body": value, "reasoning": value, "stream_options": value }),
            ] {
                let _ = translate(&request, &config());
            }
        }
        // Odd strings where URLs and arguments go: multi-byte characters at
        // the cut points, lone prefixes.
        for url in [
            "",
            "d",
            "data:",
            "data:,",
            "dataé:",
            "ééééééééé",
            "data:image/png;base64",
            "https:",
            "data:;base64,AAAA",
        ] {
            let request = json!({ "messages": [{ "role": "user", "content": [{ "type": "image_url", "image_url": { "url": url } }] }] });
            let _ = translate(&request, &config());
        }
        // Many messages and many calls stay linear enough to finish.
        let mut messages = vec![user("q")];
        let calls: Vec<Value> = (0..2_000)
            .map(|i| call(&format!("c{i}"), "f", "{}"))
            .collect();
        messages.push(json!({ "role": "assistant", "tool_calls": calls }));
        messages.extend(
            (0..2_000).map(
                |i| json!({ "role": "tool", "tool_call_id": format!("c{i}"), "content": "ok" }),
            ),
        );
        messages.extend((0..20_000).map(|_| user("more")));
        let translated = ok(json!({ "messages": messages }));
        assert_eq!(
            translated.body["messages"].as_array().unwrap().len(),
            1 + 4_000 + 20_000
        );
    }
}
