//! Chat completions, v1 and v2 "primary": request validation, the
//! deterministic echo reply, and the exact wire bytes. Kept free of I/O so
//! the answers can be unit-tested byte for byte; the SSE framing of the
//! events lives in `sse.rs`.
//!
//! - `validate.rs`: the checks v1 and v2 share (JSON object, model,
//!   messages, roles, samplers, `max_tokens`, `stream`) and the refusals;
//! - `functions.rs`: v1 function calling (declarations, `function_call`,
//!   sample arguments);
//! - `history.rs`: v1 function calls and results sent back in `messages`
//!   (one call per message, each answered by a JSON-object result);
//! - `attachments.rs`: v1 `attachments` (file ids, image limits);
//! - `reply.rs`: the deterministic echo reply, its truncation and its cut
//!   into stream pieces;
//! - `v1.rs`, `v2.rs`: each flavour's request plan and wire types.

use http::StatusCode;
use serde::Serialize;
use serde_json::Value;

mod attachments;
mod functions;
mod history;
mod reply;
mod v1;
mod v2;
mod validate;

pub(crate) use attachments::{AttachedFile, media_kind};
pub(crate) use v1::{plan_v1, v1_body, v1_events};
pub(crate) use v2::{plan_v2, v2_body, v2_events};

/// A refused chat request: status and the `message` of the error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChatError {
    pub status: StatusCode,
    pub message: String,
}

pub(crate) const INVALID_JSON: &str = "Your request contains invalid JSON syntax.";

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

fn to_bytes(value: &impl Serialize) -> Vec<u8> {
    // Our wire types contain only strings, numbers and `Value`s, which
    // always serialize; an empty object is a harmless fallback.
    serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec())
}
