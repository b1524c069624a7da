//! GigaChat's v1 chat answers as the translators read them: a whole answer
//! (`chat.completion`) and one stream chunk. Only the fields a translation
//! carries are read; anything else GigaChat adds is ignored, so a new field
//! upstream never breaks a client.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer};

/// A whole v1 chat answer.
#[derive(Deserialize, Debug, Default)]
pub(crate) struct ChatAnswer {
    #[serde(default)]
    pub choices: Vec<AnswerChoice>,
    pub created: Option<u64>,
    pub usage: Option<ChatUsage>,
}

#[derive(Deserialize, Debug, Default)]
pub(crate) struct AnswerChoice {
    #[serde(default)]
    pub index: u32,
    #[serde(default)]
    pub message: ChatMessage,
    pub finish_reason: Option<String>,
}

/// One v1 stream chunk (GigaChat labels it `chat.completion` too, and
/// sends no `id`).
#[derive(Deserialize, Debug, Default)]
pub(crate) struct ChatChunk<'a> {
    #[serde(default, borrow)]
    pub choices: Vec<ChunkChoice<'a>>,
    pub created: Option<u64>,
    pub usage: Option<ChatUsage>,
}

#[derive(Deserialize, Debug, Default)]
pub(crate) struct ChunkChoice<'a> {
    #[serde(default)]
    pub index: u32,
    #[serde(default, borrow)]
    pub delta: ChunkDelta<'a>,
    #[serde(default, borrow, deserialize_with = "borrowed_text")]
    pub finish_reason: Option<Cow<'a, str>>,
}

/// A chunk's delta: text arrives piece by piece, a function call whole.
#[derive(Deserialize, Debug, Default)]
pub(crate) struct ChunkDelta<'a> {
    #[serde(default, borrow, deserialize_with = "borrowed_text")]
    pub role: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "borrowed_text")]
    pub content: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "borrowed_text")]
    pub reasoning_content: Option<Cow<'a, str>>,
    pub function_call: Option<FunctionCall>,
    pub functions_state_id: Option<String>,
}

/// A string borrowed from the chunk unless it has escapes: serde borrows a
/// `Cow<str>` only when it is the field itself, and inside an `Option` it
/// would copy every piece of text of a stream.
#[derive(Deserialize)]
#[serde(transparent)]
struct BorrowedText<'a>(#[serde(borrow)] Cow<'a, str>);

fn borrowed_text<'de: 'a, 'a, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Cow<'a, str>>, D::Error> {
    Ok(Option::<BorrowedText<'a>>::deserialize(deserializer)?.map(|text| text.0))
}

/// An answer's message.
#[derive(Deserialize, Debug, Default)]
pub(crate) struct ChatMessage {
    pub content: Option<String>,
    pub reasoning_content: Option<String>,
    pub function_call: Option<FunctionCall>,
    pub functions_state_id: Option<String>,
}

/// GigaChat gives the arguments as a JSON object; some models have sent
/// them as a JSON string, which is read as it is.
#[derive(Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct FunctionCall {
    pub name: String,
    #[serde(default)]
    pub arguments: serde_json::Value,
}

impl FunctionCall {
    /// The arguments as OpenAI carries them: one JSON string (non-ASCII
    /// kept as it is, as GigaChat and OpenAI both do).
    pub fn arguments_string(&self) -> String {
        match &self.arguments {
            serde_json::Value::String(text) => text.clone(),
            serde_json::Value::Null => "{}".to_owned(),
            other => other.to_string(),
        }
    }
}

/// GigaChat's billed counts; `precached_prompt_tokens` were read from its
/// prompt cache and are not billed.
#[derive(Deserialize, Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChatUsage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    #[serde(default)]
    pub precached_prompt_tokens: u64,
}

/// OpenAI's `finish_reason` for GigaChat's (`stop`, `length`,
/// `function_call`, `blacklist`, `error`). `error` (invalid arguments of a
/// user function) has no OpenAI name; clients map unknown reasons to
/// "other".
pub(crate) fn finish_reason(gigachat: &str) -> &str {
    match gigachat {
        "function_call" => "tool_calls",
        "blacklist" => "content_filter",
        other => other,
    }
}

/// The id of a tool call: GigaChat's `functions_state_id` when it gave
/// one (so a client's tool result can be matched to the call), else one
/// derived from the request id and the call's position.
pub(crate) fn tool_call_id(state_id: Option<&str>, request_id: &str, position: usize) -> String {
    match state_id {
        Some(id) if !id.is_empty() => format!("call_{id}"),
        _ => format!("call_{request_id}_{position}"),
    }
}
