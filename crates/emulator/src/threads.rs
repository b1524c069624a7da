//! `/threads`: the legacy stateful conversations, kept per emulator
//! instance: a thread holds its messages, optionally runs with an
//! assistant (its model, instructions and functions), and a run answers
//! like a v1 chat over the thread's history.
//!
//! The shapes are the official Python SDK's (`gigachat.models.threads`):
//! - `GET /threads[?assistants_ids=…&limit=&before=]` → `{"threads":[Thread…]}`;
//!   `POST /threads` (`{}`) → a new `Thread`; `POST /threads/retrieve`
//!   (`{"threads_ids":[…]}`) → `{"threads":[…]}`; `POST /threads/delete`
//!   (`{"thread_id"}`) → 200 (the SDK reads only the status; the emulator
//!   answers `{"thread_id","deleted":true}`).
//! - `POST /threads/messages` (`{thread_id?, model?, assistant_id?,
//!   messages}`) → `{thread_id, messages:[{message_id, created_at}]}`, a new
//!   thread when none is named; `GET /threads/messages?thread_id=&limit=&before=`
//!   → `{thread_id, messages:[ThreadMessage…]}`.
//! - `POST /threads/messages/run` (add, then run) and `POST
//!   /threads/messages/rerun` (answer the last user message again) →
//!   `ThreadCompletion`, or with `stream: true` v1-style `data:` events of
//!   `ThreadCompletionChunk`; `POST /threads/run` (`{thread_id,
//!   assistant_id?}`) → `{status, thread_id, created_at}` and `GET
//!   /threads/run?thread_id=` → `{status, thread_id, updated_at, model,
//!   messages}`. GigaChat runs these in the background; the emulator runs
//!   them at once, so the first status read is `ready`.
//!
//! An unknown thread is `404 Thread not found`, an unknown assistant
//! `404 Assistant not found`, a file the emulator does not have `404 File
//! not found`: a proxy that forwards the wrong id is seen.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::assistants::{bad_request, object, text};
use crate::chat::{self, ChatError};
use crate::state::{InflightGuard, Shared};
use crate::util::{Body, api_error, json as json_answer, now_secs};

#[derive(Debug, Clone)]
pub(crate) struct StoredThread {
    pub id: String,
    pub assistant_id: Option<String>,
    pub model: String,
    pub created_at: u64,
    pub updated_at: u64,
    pub messages: Vec<StoredMessage>,
    /// The messages the last run produced (`GET /threads/run`).
    pub last_run: Vec<StoredMessage>,
}

#[derive(Debug, Clone)]
pub(crate) struct StoredMessage {
    pub message_id: String,
    pub role: String,
    pub content: String,
    pub attachments: Vec<String>,
    pub function_call: Option<Value>,
    pub finish_reason: Option<String>,
    pub created_at: u64,
}

#[derive(Serialize)]
struct ThreadOut<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    assistant_id: Option<&'a str>,
    model: &'a str,
    created_at: u64,
    updated_at: u64,
    run_lock: bool,
    status: &'static str,
}

impl<'a> From<&'a StoredThread> for ThreadOut<'a> {
    fn from(thread: &'a StoredThread) -> Self {
        ThreadOut {
            id: &thread.id,
            assistant_id: thread.assistant_id.as_deref(),
            model: &thread.model,
            created_at: thread.created_at,
            updated_at: thread.updated_at,
            run_lock: false,
            status: "ready",
        }
    }
}

#[derive(Serialize)]
struct Attachment {
    file_id: String,
    name: String,
}

fn message_out(shared: &Shared, message: &StoredMessage) -> Value {
    let attachments: Vec<Attachment> = message
        .attachments
        .iter()
        .map(|id| Attachment {
            file_id: id.clone(),
            name: crate::files::find(shared, id).map_or_else(String::new, |f| f.filename),
        })
        .collect();
    let mut out = json!({
        "message_id": message.message_id,
        "role": message.role,
        "content": message.content,
        "attachments": attachments,
        "created_at": message.created_at,
    });
    if let Some(call) = &message.function_call {
        out["function_call"] = call.clone();
    }
    if let Some(reason) = &message.finish_reason {
        out["finish_reason"] = json!(reason);
    }
    out
}

fn thread_not_found() -> ChatError {
    ChatError {
        status: StatusCode::NOT_FOUND,
        message: "Thread not found".to_owned(),
    }
}

fn refused(error: &ChatError) -> Response<Body> {
    api_error(error.status, &error.message)
}

/// Routes `/threads/…`; `segments` start with `threads`.
pub(crate) fn route(
    shared: &Arc<Shared>,
    method: &Method,
    segments: &[&str],
    query: Option<&str>,
    body: &[u8],
    guard: InflightGuard,
) -> Response<Body> {
    let outcome = match (segments, method) {
        (["threads"], &Method::GET) => Ok(json_answer(StatusCode::OK, &list(shared, query))),
        (["threads"], &Method::POST) => create(shared, body).map(|thread| {
            json_answer(StatusCode::OK, &ThreadOut::from(&thread))
        }),
        (["threads", "retrieve"], &Method::POST) => retrieve(shared, body),
        (["threads", "delete"], &Method::POST) => delete(shared, body),
        (["threads", "messages"], &Method::GET) => messages(shared, query),
        (["threads", "messages"], &Method::POST) => add_messages(shared, body).map(|(id, added)| {
            json_answer(
                StatusCode::OK,
                &json!({
                    "thread_id": id,
                    "messages": added
                        .iter()
                        .map(|m| json!({"message_id": m.message_id, "created_at": m.created_at}))
                        .collect::<Vec<_>>(),
                }),
            )
        }),
        (["threads", "messages", "run"], &Method::POST) => {
            add_messages(shared, body).and_then(|(id, _)| run(shared, &id, body, guard, true))
        }
        (["threads", "messages", "rerun"], &Method::POST) => rerun(shared, body, guard),
        (["threads", "run"], &Method::POST) => object(body)
            .and_then(|object| {
                let id = text(&object, "thread_id")?
                    .ok_or_else(|| bad_request("thread_id is required"))?;
                if let Some(assistant) = text(&object, "assistant_id")? {
                    set_assistant(shared, &id, &assistant)?;
                }
                Ok(id)
            })
            .and_then(|id| run(shared, &id, body, guard, false)),
        (["threads", "run"], &Method::GET) => run_status(shared, query),
        (
            ["threads"]
            | ["threads", "retrieve" | "delete" | "messages" | "run"]
            | ["threads", "messages", "run" | "rerun"],
            _,
        ) => return crate::api::method_not_allowed(),
        _ => return crate::api::not_found(),
    };
    outcome.unwrap_or_else(|error| refused(&error))
}

/// The decoded values of a query parameter, in order.
fn query_values<'q>(query: Option<&'q str>, name: &'q str) -> impl Iterator<Item = String> + 'q {
    query
        .unwrap_or_default()
        .split('&')
        .filter_map(move |pair| {
            let (key, value) = pair.split_once('=')?;
            (key == name).then(|| percent_decoded(value))
        })
}

fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let value = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn number(query: Option<&str>, name: &str) -> Option<u64> {
    query_values(query, name).next()?.parse().ok()
}

fn list(shared: &Shared, query: Option<&str>) -> Value {
    let assistants: Vec<String> = query_values(query, "assistants_ids").collect();
    let before = number(query, "before");
    let threads = crate::lock(&shared.threads);
    let mut chosen: Vec<&StoredThread> = threads
        .iter()
        .filter(|thread| {
            assistants.is_empty()
                || thread
                    .assistant_id
                    .as_ref()
                    .is_some_and(|id| assistants.contains(id))
        })
        .filter(|thread| before.is_none_or(|before| thread.created_at < before))
        .collect();
    if let Some(limit) = number(query, "limit").and_then(|l| usize::try_from(l).ok()) {
        let skip = chosen.len().saturating_sub(limit);
        chosen.drain(..skip);
    }
    json!({"threads": chosen.into_iter().map(ThreadOut::from).collect::<Vec<_>>()})
}

fn new_thread(
    shared: &Shared,
    model: Option<String>,
    assistant: Option<String>,
) -> Result<StoredThread, ChatError> {
    let assistant = match assistant {
        Some(id) => {
            Some(crate::assistants::find(shared, &id).ok_or_else(crate::assistants::not_found)?)
        }
        None => None,
    };
    let now = now_secs();
    let thread = StoredThread {
        id: uuid::Uuid::new_v4().to_string(),
        model: model
            .or_else(|| assistant.as_ref().map(|a| a.model.clone()))
            .unwrap_or_else(|| "GigaChat".to_owned()),
        assistant_id: assistant.map(|a| a.id),
        created_at: now,
        updated_at: now,
        messages: Vec::new(),
        last_run: Vec::new(),
    };
    crate::lock(&shared.threads).push(thread.clone());
    Ok(thread)
}

fn create(shared: &Shared, body: &[u8]) -> Result<StoredThread, ChatError> {
    let object = if body.is_empty() {
        Map::new()
    } else {
        object(body)?
    };
    new_thread(
        shared,
        text(&object, "model")?,
        text(&object, "assistant_id")?,
    )
}

fn find(shared: &Shared, id: &str) -> Result<StoredThread, ChatError> {
    crate::lock(&shared.threads)
        .iter()
        .find(|thread| thread.id == id)
        .cloned()
        .ok_or_else(thread_not_found)
}

fn retrieve(shared: &Shared, body: &[u8]) -> Result<Response<Body>, ChatError> {
    let object = object(body)?;
    let Some(Value::Array(ids)) = object.get("threads_ids") else {
        return Err(bad_request("threads_ids must be an array of strings"));
    };
    let ids: Vec<&str> = ids.iter().filter_map(Value::as_str).collect();
    let threads = crate::lock(&shared.threads);
    let found: Vec<ThreadOut<'_>> = threads
        .iter()
        .filter(|thread| ids.contains(&thread.id.as_str()))
        .map(ThreadOut::from)
        .collect();
    Ok(json_answer(StatusCode::OK, &json!({"threads": found})))
}

fn delete(shared: &Shared, body: &[u8]) -> Result<Response<Body>, ChatError> {
    let id =
        text(&object(body)?, "thread_id")?.ok_or_else(|| bad_request("thread_id is required"))?;
    let mut threads = crate::lock(&shared.threads);
    let before = threads.len();
    threads.retain(|thread| thread.id != id);
    if threads.len() == before {
        return Err(thread_not_found());
    }
    Ok(json_answer(
        StatusCode::OK,
        &json!({"thread_id": id, "deleted": true}),
    ))
}

fn messages(shared: &Shared, query: Option<&str>) -> Result<Response<Body>, ChatError> {
    let id = query_values(query, "thread_id")
        .next()
        .ok_or_else(|| bad_request("thread_id is required"))?;
    let thread = find(shared, &id)?;
    let before = number(query, "before");
    let mut chosen: Vec<&StoredMessage> = thread
        .messages
        .iter()
        .filter(|m| before.is_none_or(|before| m.created_at < before))
        .collect();
    if let Some(limit) = number(query, "limit").and_then(|l| usize::try_from(l).ok()) {
        let skip = chosen.len().saturating_sub(limit);
        chosen.drain(..skip);
    }
    let out: Vec<Value> = chosen.into_iter().map(|m| message_out(shared, m)).collect();
    Ok(json_answer(
        StatusCode::OK,
        &json!({"thread_id": thread.id, "messages": out}),
    ))
}

/// Adds the body's `messages` to its thread (a new one when it names
/// none): the thread's id and the messages added.
fn add_messages(shared: &Shared, body: &[u8]) -> Result<(String, Vec<StoredMessage>), ChatError> {
    let object = object(body)?;
    let Some(Value::Array(incoming)) = object.get("messages") else {
        return Err(bad_request("messages must be a non-empty array"));
    };
    if incoming.is_empty() {
        return Err(bad_request("messages must be a non-empty array"));
    }
    let now = now_secs();
    let mut added = Vec::with_capacity(incoming.len());
    for (index, message) in incoming.iter().enumerate() {
        let Some(message) = message.as_object() else {
            return Err(bad_request(&format!("messages[{index}] must be an object")));
        };
        let role = text(message, "role")?.unwrap_or_else(|| "user".to_owned());
        if !["system", "user", "assistant", "function"].contains(&role.as_str()) {
            return Err(bad_request(&format!("messages[{index}].role is unknown")));
        }
        let mut attachments = Vec::new();
        if let Some(Value::Array(ids)) = message.get("attachments") {
            for id in ids {
                let id = id.as_str().unwrap_or_default();
                if crate::files::find(shared, id).is_none() {
                    return Err(crate::assistants::file_not_found());
                }
                attachments.push(id.to_owned());
            }
        }
        added.push(StoredMessage {
            message_id: uuid::Uuid::new_v4().to_string(),
            role,
            content: text(message, "content")?.unwrap_or_default(),
            attachments,
            function_call: message
                .get("function_call")
                .filter(|v| !v.is_null())
                .cloned(),
            finish_reason: None,
            created_at: now,
        });
    }
    let id = match text(&object, "thread_id")? {
        Some(id) => {
            if let Some(assistant) = text(&object, "assistant_id")? {
                set_assistant(shared, &id, &assistant)?;
            }
            id
        }
        None => {
            new_thread(
                shared,
                text(&object, "model")?,
                text(&object, "assistant_id")?,
            )?
            .id
        }
    };
    let mut threads = crate::lock(&shared.threads);
    let thread = threads
        .iter_mut()
        .find(|thread| thread.id == id)
        .ok_or_else(thread_not_found)?;
    thread.messages.extend(added.iter().cloned());
    thread.updated_at = now;
    Ok((id, added))
}

fn set_assistant(shared: &Shared, thread: &str, assistant: &str) -> Result<(), ChatError> {
    let assistant =
        crate::assistants::find(shared, assistant).ok_or_else(crate::assistants::not_found)?;
    let mut threads = crate::lock(&shared.threads);
    let thread = threads
        .iter_mut()
        .find(|stored| stored.id == thread)
        .ok_or_else(thread_not_found)?;
    thread.assistant_id = Some(assistant.id);
    Ok(())
}

/// The v1 chat request a run of `thread` is: the assistant's
/// instructions as the system prompt, the thread's history (the last
/// `limit` messages), and the run's options.
fn chat_request(shared: &Shared, thread: &StoredThread, options: &Map<String, Value>) -> Vec<u8> {
    let assistant = thread
        .assistant_id
        .as_deref()
        .and_then(|id| crate::assistants::find(shared, id));
    let mut messages = Vec::new();
    if let Some(instructions) = assistant.as_ref().and_then(|a| a.instructions.clone()) {
        messages.push(json!({"role": "system", "content": instructions}));
    }
    let limit = options
        .get("limit")
        .and_then(Value::as_u64)
        .and_then(|l| usize::try_from(l).ok())
        .unwrap_or(usize::MAX);
    let skip = thread.messages.len().saturating_sub(limit);
    for message in &thread.messages[skip..] {
        let mut out = json!({"role": message.role, "content": message.content});
        if !message.attachments.is_empty() {
            out["attachments"] = json!(message.attachments);
        }
        if let Some(call) = &message.function_call {
            out["function_call"] = call.clone();
        }
        messages.push(out);
    }
    let mut request = Map::new();
    request.insert("model".to_owned(), json!(thread.model));
    request.insert("messages".to_owned(), Value::Array(messages));
    for key in [
        "temperature",
        "top_p",
        "max_tokens",
        "repetition_penalty",
        "profanity_check",
        "flags",
        "function_call",
        "functions",
        "stream",
    ] {
        if let Some(value) = options.get(key).filter(|v| !v.is_null()) {
            request.insert(key.to_owned(), value.clone());
        }
    }
    if !request.contains_key("functions")
        && let Some(functions) = assistant.and_then(|a| a.functions)
    {
        request.insert("functions".to_owned(), functions);
    }
    serde_json::to_vec(&Value::Object(request)).unwrap_or_default()
}

/// Runs the thread: the reply is added to it and answered as a
/// `ThreadCompletion` (streamed when asked), or, for `POST /threads/run`
/// (`completion: false`), as the run's status.
fn run(
    shared: &Arc<Shared>,
    id: &str,
    body: &[u8],
    guard: InflightGuard,
    completion: bool,
) -> Result<Response<Body>, ChatError> {
    let options = object(body)?;
    let thread = find(shared, id)?;
    let request = chat_request(shared, &thread, &options);
    let plan = chat::plan_v1(&request, &|file| crate::files::attached(shared, file))?;
    let created = now_secs();
    let answer: Value =
        serde_json::from_slice(&chat::v1_body(&plan, created)).unwrap_or(Value::Null);
    let choice = &answer["choices"][0];
    let message = StoredMessage {
        message_id: uuid::Uuid::new_v4().to_string(),
        role: "assistant".to_owned(),
        content: choice["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        attachments: Vec::new(),
        function_call: choice["message"].get("function_call").cloned(),
        finish_reason: choice["finish_reason"].as_str().map(str::to_owned),
        created_at: created,
    };
    {
        let mut threads = crate::lock(&shared.threads);
        let stored = threads
            .iter_mut()
            .find(|stored| stored.id == id)
            .ok_or_else(thread_not_found)?;
        stored.messages.push(message.clone());
        stored.last_run = vec![message.clone()];
        stored.updated_at = created;
    }
    if !completion && !plan.stream {
        return Ok(json_answer(
            StatusCode::OK,
            &json!({"status": "in_progress", "thread_id": id, "created_at": created}),
        ));
    }
    let fields = |mut chunk: Value| {
        if let Some(object) = chunk.as_object_mut() {
            object.insert(
                "object".to_owned(),
                json!(if plan.stream {
                    "thread.completion.chunk"
                } else {
                    "thread.completion"
                }),
            );
            object.insert("thread_id".to_owned(), json!(id));
            object.insert("message_id".to_owned(), json!(message.message_id));
            if !object.contains_key("usage") {
                object.insert("usage".to_owned(), answer["usage"].clone());
            }
        }
        chunk
    };
    if plan.stream {
        let events = chat::v1_events(&plan, created, shared.faults.function_call_chunk())
            .into_iter()
            .map(|event| thread_event(event, &fields))
            .collect();
        return Ok(crate::api::event_stream(
            crate::sse::stream_body(Arc::clone(shared), events, guard),
            false,
        ));
    }
    let mut out = json!({
        "model": answer["model"],
        "created": created,
        "usage": answer["usage"],
        "message": choice["message"],
        "finish_reason": choice["finish_reason"],
    });
    out = fields(out);
    Ok(json_answer(StatusCode::OK, &out))
}

/// A v1 chat event as a thread's: its `data:` JSON with the thread's
/// fields; `[DONE]` as it is.
fn thread_event(event: Bytes, fields: &dyn Fn(Value) -> Value) -> Bytes {
    let json = event
        .strip_prefix(b"data: ")
        .map(|rest| rest.trim_ascii_end())
        .and_then(|data| serde_json::from_slice::<Value>(data).ok());
    match json {
        Some(chunk) => {
            crate::sse::data_event(&serde_json::to_vec(&fields(chunk)).unwrap_or_default())
        }
        None => event,
    }
}

/// `POST /threads/messages/rerun`: the last answer is dropped and the
/// thread runs again.
fn rerun(
    shared: &Arc<Shared>,
    body: &[u8],
    guard: InflightGuard,
) -> Result<Response<Body>, ChatError> {
    let id =
        text(&object(body)?, "thread_id")?.ok_or_else(|| bad_request("thread_id is required"))?;
    {
        let mut threads = crate::lock(&shared.threads);
        let thread = threads
            .iter_mut()
            .find(|thread| thread.id == id)
            .ok_or_else(thread_not_found)?;
        while thread
            .messages
            .last()
            .is_some_and(|m| m.role == "assistant")
        {
            thread.messages.pop();
        }
    }
    run(shared, &id, body, guard, true)
}

fn run_status(shared: &Shared, query: Option<&str>) -> Result<Response<Body>, ChatError> {
    let id = query_values(query, "thread_id")
        .next()
        .ok_or_else(|| bad_request("thread_id is required"))?;
    let thread = find(shared, &id)?;
    let messages: Vec<Value> = thread
        .last_run
        .iter()
        .map(|m| message_out(shared, m))
        .collect();
    Ok(json_answer(
        StatusCode::OK,
        &json!({
            "status": "ready",
            "thread_id": thread.id,
            "updated_at": thread.updated_at,
            "model": thread.model,
            "messages": messages,
        }),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_read_decoded_and_repeated() {
        let query = Some("assistants_ids=a%2Db&assistants_ids=c&limit=2");
        assert_eq!(
            query_values(query, "assistants_ids").collect::<Vec<_>>(),
            ["a-b", "c"]
        );
        assert_eq!(number(query, "limit"), Some(2));
        assert_eq!(number(None, "limit"), None);
    }

    #[test]
    fn a_thread_keeps_its_messages_and_runs_over_them() {
        let shared = Shared::new(crate::EmulatorConfig::default());
        let (id, added) = add_messages(
            &shared,
            br#"{"model":"GigaChat","messages":[{"role":"user","content":"hello"}]}"#,
        )
        .unwrap();
        assert_eq!(added.len(), 1);
        let thread = find(&shared, &id).unwrap();
        let request: Value =
            serde_json::from_slice(&chat_request(&shared, &thread, &Map::new())).unwrap();
        assert_eq!(request["messages"][0]["content"], "hello");
        assert_eq!(
            add_messages(
                &shared,
                br#"{"thread_id":"nope","messages":[{"role":"user","content":"x"}]}"#
            )
            .unwrap_err()
            .message,
            "Thread not found"
        );
        assert_eq!(list(&shared, None)["threads"][0]["id"], id.as_str());
        assert!(
            list(&shared, Some("assistants_ids=other"))["threads"]
                .as_array()
                .unwrap()
                .is_empty()
        );
    }
}
