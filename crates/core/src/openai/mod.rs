//! The OpenAI dialect: `/api/gigachat-openai/v1/…` speaks OpenAI's API to
//! the client and GigaChat's to GigaChat, so code written for the `openai`
//! SDKs, LangChain or the Vercel AI SDK works unchanged against GigaChat.
//!
//! Translation only: the route (`routes::openai`) runs the translated call
//! through the same admission, limits, ownership, cache and forwarding as
//! the native route. Requests are translated whole (they are small and
//! read whole anyway); answers stream through a translator chunk by chunk.

pub(crate) mod answer;
pub(crate) mod chunks;
pub(crate) mod config;
pub(crate) mod embeddings;
pub(crate) mod errors;
pub(crate) mod gigachat;
pub(crate) mod gigachat_stream;
pub(crate) mod models;
pub(crate) mod plain_chat;
pub(crate) mod request;
pub(crate) mod responses;
pub(crate) mod responses_stream;
pub(crate) mod schema;
pub(crate) mod stream_body;
pub(crate) mod uploads;

/// A chat request translated for GigaChat, and what the answer's
/// translation must know about the request it answers.
#[derive(Debug)]
pub(crate) struct ChatRequest {
    /// GigaChat's v1 `chat/completions` body. Files to upload are not in it
    /// yet: their ids are added to `messages[i].attachments` once uploaded.
    pub body: serde_json::Map<String, serde_json::Value>,
    pub uploads: Vec<Upload>,
    pub plan: ChatPlan,
}

/// An inline file (`data:` URL) of a message, to be uploaded to GigaChat's
/// `files` and referenced in that message's `attachments`.
#[derive(Debug)]
pub(crate) struct Upload {
    /// Index into the translated body's `messages`.
    pub message: usize,
    pub media_type: String,
    pub filename: String,
    /// The decoded bytes.
    pub data: Vec<u8>,
}

/// What the answer side of a chat translation needs to know.
#[derive(Debug, Default, Clone)]
pub(crate) struct ChatPlan {
    /// The model name as the client sent it (or the default), echoed on
    /// the answer and every chunk.
    pub model: String,
    /// `stream_options.include_usage`: usage in a final `choices: []`
    /// chunk rather than on the finish chunk.
    pub include_usage: bool,
    /// The answer is cut at the first of these, OpenAI's `stop`.
    pub stop: Vec<String>,
    /// `response_format: json_schema` is carried as a forced call of this
    /// function: its arguments become the message content and the finish
    /// reason `stop`.
    pub structured_output: Option<String>,
    /// GigaChat function name → the client's tool name, for tools renamed
    /// because their name is one of GigaChat's built-in functions.
    pub renamed_tools: Vec<(String, String)>,
}
