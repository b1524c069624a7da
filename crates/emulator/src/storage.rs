//! v2 threads kept by the service (`storage`): the answer names the
//! thread (`thread_id`) the exchange was stored in, a new one when the
//! request asked for storage without naming one. The emulator keeps no
//! history; it only hands out and echoes thread ids, which is what a proxy
//! in front of it needs to check who may continue which thread. An
//! assistant a v2 request names must exist (`assistants.rs`).

use serde_json::Value;

use crate::state::Shared;

/// Whether a v2 request names an assistant (`assistant_id`, or in
/// `storage`) the emulator does not have: the service refuses it, and a
/// proxy that forwards a wrong id is seen.
pub(crate) fn names_unknown_assistant(shared: &Shared, request: &[u8]) -> bool {
    let Ok(request) = serde_json::from_slice::<Value>(request) else {
        return false;
    };
    [
        request.get("assistant_id"),
        request.pointer("/storage/assistant_id"),
    ]
    .into_iter()
    .flatten()
    .filter(|id| !id.is_null())
    .any(|id| {
        id.as_str()
            .is_none_or(|id| crate::assistants::find(shared, id).is_none())
    })
}

/// The answer with `thread_id` added when the request used `storage`.
pub(crate) fn with_thread(request: &[u8], answer: Vec<u8>) -> Vec<u8> {
    let Ok(request) = serde_json::from_slice::<Value>(request) else {
        return answer;
    };
    let thread = match request.get("storage") {
        Some(Value::Bool(true)) => None,
        Some(Value::Object(storage)) => storage.get("thread_id").and_then(Value::as_str),
        _ => return answer,
    };
    let Ok(mut json) = serde_json::from_slice::<Value>(&answer) else {
        return answer;
    };
    let thread = thread.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    if let Some(object) = json.as_object_mut() {
        object.insert("thread_id".to_owned(), Value::String(thread));
    }
    serde_json::to_vec(&json).unwrap_or(answer)
}
