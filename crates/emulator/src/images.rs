//! Generated images: GigaChat draws when `function_call` is `"auto"` and
//! the user asks for a picture, stores the image as a file of the key, and
//! answers with `<img src="<file_id>" fuse="true"/>` in the content. The
//! emulator draws on a v1 request (JSON or stream) whose last user message
//! starts with "draw" (any case), which is enough for clients and the proxy
//! to exercise the round trip: answer, file id, `files/{id}/content`.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::state::{Shared, StoredFile};
use crate::util::now_secs;

/// A 1×1 PNG: what the generated file's content is.
const PIXEL_PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0a, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x00, 0x01, 0x00, 0x00,
    0x05, 0x00, 0x01, 0x0d, 0x0a, 0x2d, 0xb4, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae,
    0x42, 0x60, 0x82,
];

/// Whether a (valid) v1 request asks for a picture.
pub(crate) fn asked(body: &[u8]) -> bool {
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    if request.get("function_call").and_then(Value::as_str) != Some("auto") {
        return false;
    }
    request
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|messages| {
            messages
                .iter()
                .rev()
                .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        })
        .and_then(|m| m.get("content").and_then(Value::as_str))
        .is_some_and(|text| text.trim_start().to_lowercase().starts_with("draw"))
}

/// Stores a new image; its file id.
fn store(shared: &Shared) -> String {
    let id = uuid::Uuid::new_v4().to_string();
    crate::lock(&shared.files).push(StoredFile {
        id: id.clone(),
        filename: format!("{id}.png"),
        purpose: "general".to_owned(),
        created_at: now_secs(),
        content: Bytes::from_static(PIXEL_PNG),
    });
    id
}

/// The same, as v1 stream events: the image tag arrives in one delta, the
/// usage in the last chunk, then `[DONE]`.
pub(crate) fn draw_events(shared: &Shared, created: u64) -> Vec<Bytes> {
    let id = store(shared);
    let chunk = |delta: Value, finish: Option<&str>| {
        let mut event = json!({
            "choices": [{"delta": delta, "index": 0}],
            "created": created,
            "model": "GigaChat:2.0.28.2",
            "object": "chat.completion",
        });
        if let Some(reason) = finish {
            event["choices"][0]["finish_reason"] = json!(reason);
            event["usage"] = json!({"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30, "precached_prompt_tokens": 0});
        }
        Bytes::from(format!("data: {event}\n\n"))
    };
    vec![
        chunk(
            json!({"content": "Here it is: ", "role": "assistant"}),
            None,
        ),
        chunk(
            json!({"content": format!("<img src=\"{id}\" fuse=\"true\"/>")}),
            None,
        ),
        chunk(json!({"content": ""}), Some("stop")),
        Bytes::from_static(b"data: [DONE]\n\n"),
    ]
}

/// Stores a new image and answers with it, in v1's non-stream shape.
pub(crate) fn draw(shared: &Shared, created: u64) -> Vec<u8> {
    let id = store(shared);
    let answer = json!({
        "choices": [{
            "message": {
                "content": format!("Here it is: <img src=\"{id}\" fuse=\"true\"/>"),
                "role": "assistant",
                "functions_state_id": uuid::Uuid::new_v4().to_string(),
            },
            "index": 0,
            "finish_reason": "stop",
        }],
        "created": created,
        "model": "GigaChat:2.0.28.2",
        "object": "chat.completion",
        "usage": {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30, "precached_prompt_tokens": 0},
    });
    serde_json::to_vec(&answer).unwrap_or_default()
}
