//! The Vercel AI SDK's UI dialect: `useChat` (its `DefaultChatTransport`)
//! posts the chat's `UIMessage` list and reads the answer as the SDK's "UI
//! message stream", so a React app can talk to GigaChat through the proxy
//! with no server code of its own holding the key.
//!
//! Translation only, on top of the OpenAI dialect: a UI request is rewritten
//! as a Chat Completions request and goes through the same translation to
//! GigaChat (roles, tools, schemas, files, tool results); GigaChat's stream
//! becomes UI message chunks as it arrives.

pub(crate) mod config;
pub(crate) mod plain_chat;
pub(crate) mod request;
pub(crate) mod stream;

/// What the answer's translation needs to know about the request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct UiPlan {
    /// The model as the client named it (or the default), reported in the
    /// `finish` chunk's metadata.
    pub model: String,
    /// GigaChat function name → the client's tool name, for tools renamed
    /// because their name is one of GigaChat's built-in functions: the
    /// client's `onToolCall` must see its own name.
    pub renamed_tools: Vec<(String, String)>,
}
