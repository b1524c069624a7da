//! `/assistants`: stored model configurations (model, instructions,
//! files, functions) that threads run with, kept per emulator instance.
//!
//! The shapes are the official Python SDK's (`gigachat.models.assistants`):
//! `POST /assistants` answers `{assistant_id, created_at}`; `GET
//! /assistants[?assistant_id=]` answers `{"data":[Assistant…]}`; `POST
//! /assistants/modify` answers the assistant; `POST /assistants/delete`
//! `{assistant_id, deleted}`; `POST /assistants/files/delete` `{file_id,
//! deleted}`. An unknown assistant is `404 Assistant not found` and a file
//! the emulator does not have `404 File not found`, so a proxy that
//! forwards the wrong id is seen.

use http::StatusCode;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::chat::ChatError;
use crate::state::Shared;
use crate::util::now_secs;

#[derive(Debug, Clone)]
pub(crate) struct StoredAssistant {
    pub id: String,
    pub model: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub instructions: Option<String>,
    pub file_ids: Vec<String>,
    pub functions: Option<Value>,
    pub metadata: Option<Value>,
    pub created_at: u64,
    pub updated_at: u64,
}

#[derive(Serialize)]
pub(crate) struct Created<'a> {
    assistant_id: &'a str,
    created_at: u64,
}

#[derive(Serialize)]
struct AttachedFile {
    file_id: String,
    name: String,
}

/// An assistant as the list and a modification answer it.
#[derive(Serialize)]
pub(crate) struct AssistantOut {
    model: String,
    assistant_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    instructions: Option<String>,
    created_at: u64,
    updated_at: u64,
    files: Vec<AttachedFile>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Value>,
    threads_count: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    functions: Option<Value>,
}

#[derive(Serialize)]
pub(crate) struct AssistantList {
    data: Vec<AssistantOut>,
}

#[derive(Serialize)]
pub(crate) struct Deleted<'a> {
    assistant_id: &'a str,
    deleted: bool,
}

#[derive(Serialize)]
pub(crate) struct FileDeleted<'a> {
    file_id: &'a str,
    deleted: bool,
}

pub(crate) fn bad_request(detail: &str) -> ChatError {
    ChatError {
        status: StatusCode::BAD_REQUEST,
        message: format!("Invalid params: {detail}"),
    }
}

pub(crate) fn not_found() -> ChatError {
    ChatError {
        status: StatusCode::NOT_FOUND,
        message: "Assistant not found".to_owned(),
    }
}

pub(crate) fn file_not_found() -> ChatError {
    ChatError {
        status: StatusCode::NOT_FOUND,
        message: "File not found".to_owned(),
    }
}

/// The body as a JSON object.
pub(crate) fn object(body: &[u8]) -> Result<Map<String, Value>, ChatError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(object),
        _ => Err(bad_request(crate::chat::INVALID_JSON)),
    }
}

/// A string field, absent or `null` as `None`; any other type refused.
pub(crate) fn text(object: &Map<String, Value>, key: &str) -> Result<Option<String>, ChatError> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(bad_request(&format!("{key} must be a string"))),
    }
}

/// `file_ids`: every one a file the emulator has.
fn file_ids(
    shared: &Shared,
    object: &Map<String, Value>,
) -> Result<Option<Vec<String>>, ChatError> {
    let ids = match object.get("file_ids") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(ids)) => ids,
        Some(_) => return Err(bad_request("file_ids must be an array of strings")),
    };
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let id = id
            .as_str()
            .ok_or_else(|| bad_request("file_ids must be an array of strings"))?;
        if crate::files::find(shared, id).is_none() {
            return Err(file_not_found());
        }
        out.push(id.to_owned());
    }
    Ok(Some(out))
}

fn optional(object: &Map<String, Value>, key: &str) -> Option<Value> {
    object.get(key).filter(|value| !value.is_null()).cloned()
}

pub(crate) fn create(shared: &Shared, body: &[u8]) -> Result<StoredAssistant, ChatError> {
    let object = object(body)?;
    let model = text(&object, "model")?.ok_or_else(|| bad_request("model is required"))?;
    let name = text(&object, "name")?.ok_or_else(|| bad_request("name is required"))?;
    let now = now_secs();
    let assistant = StoredAssistant {
        id: uuid::Uuid::new_v4().to_string(),
        model,
        name: Some(name),
        description: text(&object, "description")?,
        instructions: text(&object, "instructions")?,
        file_ids: file_ids(shared, &object)?.unwrap_or_default(),
        functions: optional(&object, "functions"),
        metadata: optional(&object, "metadata"),
        created_at: now,
        updated_at: now,
    };
    crate::lock(&shared.assistants).push(assistant.clone());
    Ok(assistant)
}

pub(crate) fn created(assistant: &StoredAssistant) -> Created<'_> {
    Created {
        assistant_id: &assistant.id,
        created_at: assistant.created_at,
    }
}

/// The assistant named by `assistant_id` in the body, for a change.
fn named(object: &Map<String, Value>) -> Result<String, ChatError> {
    text(object, "assistant_id")?.ok_or_else(|| bad_request("assistant_id is required"))
}

pub(crate) fn find(shared: &Shared, id: &str) -> Option<StoredAssistant> {
    crate::lock(&shared.assistants)
        .iter()
        .find(|assistant| assistant.id == id)
        .cloned()
}

/// Every assistant, or the one asked for; unknown → 404.
pub(crate) fn list(shared: &Shared, asked: Option<&str>) -> Result<AssistantList, ChatError> {
    let all: Vec<StoredAssistant> = crate::lock(&shared.assistants).clone();
    let chosen: Vec<&StoredAssistant> = match asked {
        Some(id) => {
            let found: Vec<_> = all.iter().filter(|a| a.id == id).collect();
            if found.is_empty() {
                return Err(not_found());
            }
            found
        }
        None => all.iter().collect(),
    };
    Ok(AssistantList {
        data: chosen.into_iter().map(|a| out(shared, a)).collect(),
    })
}

pub(crate) fn out(shared: &Shared, assistant: &StoredAssistant) -> AssistantOut {
    let threads_count = crate::lock(&shared.threads)
        .iter()
        .filter(|thread| thread.assistant_id.as_deref() == Some(assistant.id.as_str()))
        .count();
    AssistantOut {
        model: assistant.model.clone(),
        assistant_id: assistant.id.clone(),
        name: assistant.name.clone(),
        description: assistant.description.clone(),
        instructions: assistant.instructions.clone(),
        created_at: assistant.created_at,
        updated_at: assistant.updated_at,
        files: assistant
            .file_ids
            .iter()
            .map(|id| AttachedFile {
                file_id: id.clone(),
                name: crate::files::find(shared, id).map_or_else(String::new, |f| f.filename),
            })
            .collect(),
        metadata: assistant.metadata.clone(),
        threads_count,
        functions: assistant.functions.clone(),
    }
}

/// `POST /assistants/modify`: the fields given replace the stored ones.
pub(crate) fn modify(shared: &Shared, body: &[u8]) -> Result<StoredAssistant, ChatError> {
    let object = object(body)?;
    let id = named(&object)?;
    let name = text(&object, "name")?;
    let description = text(&object, "description")?;
    let instructions = text(&object, "instructions")?;
    let files = file_ids(shared, &object)?;
    let mut assistants = crate::lock(&shared.assistants);
    let assistant = assistants
        .iter_mut()
        .find(|assistant| assistant.id == id)
        .ok_or_else(not_found)?;
    if name.is_some() {
        assistant.name = name;
    }
    if description.is_some() {
        assistant.description = description;
    }
    if instructions.is_some() {
        assistant.instructions = instructions;
    }
    if let Some(files) = files {
        assistant.file_ids = files;
    }
    if let Some(functions) = optional(&object, "functions") {
        assistant.functions = Some(functions);
    }
    if let Some(metadata) = optional(&object, "metadata") {
        assistant.metadata = Some(metadata);
    }
    assistant.updated_at = now_secs();
    Ok(assistant.clone())
}

/// `POST /assistants/delete`: the raw id of the assistant deleted.
pub(crate) fn delete(shared: &Shared, body: &[u8]) -> Result<String, ChatError> {
    let id = named(&object(body)?)?;
    let mut assistants = crate::lock(&shared.assistants);
    let before = assistants.len();
    assistants.retain(|assistant| assistant.id != id);
    if assistants.len() == before {
        return Err(not_found());
    }
    Ok(id)
}

pub(crate) fn deleted(id: &str) -> Deleted<'_> {
    Deleted {
        assistant_id: id,
        deleted: true,
    }
}

/// `POST /assistants/files/delete`: takes a file off an assistant.
pub(crate) fn delete_file(shared: &Shared, body: &[u8]) -> Result<String, ChatError> {
    let object = object(body)?;
    let id = named(&object)?;
    let file = text(&object, "file_id")?.ok_or_else(|| bad_request("file_id is required"))?;
    let mut assistants = crate::lock(&shared.assistants);
    let assistant = assistants
        .iter_mut()
        .find(|assistant| assistant.id == id)
        .ok_or_else(not_found)?;
    let before = assistant.file_ids.len();
    assistant.file_ids.retain(|attached| *attached != file);
    if assistant.file_ids.len() == before {
        return Err(file_not_found());
    }
    assistant.updated_at = now_secs();
    Ok(file)
}

pub(crate) fn file_deleted(id: &str) -> FileDeleted<'_> {
    FileDeleted {
        file_id: id,
        deleted: true,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn an_assistant_is_created_listed_changed_and_deleted() {
        let shared = Shared::new(crate::EmulatorConfig::default());
        assert_eq!(
            create(&shared, br#"{"name":"n"}"#).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            create(
                &shared,
                br#"{"model":"GigaChat","name":"n","file_ids":["nope"]}"#
            )
            .unwrap_err()
            .message,
            "File not found"
        );
        let made = create(&shared, br#"{"model":"GigaChat","name":"n"}"#).unwrap();
        let answer = serde_json::to_value(created(&made)).unwrap();
        assert_eq!(answer["assistant_id"], made.id.as_str());
        let listed = serde_json::to_value(list(&shared, None).unwrap()).unwrap();
        assert_eq!(listed["data"][0]["assistant_id"], made.id.as_str());
        assert_eq!(listed["data"][0]["threads_count"], 0);
        assert!(list(&shared, Some("other")).is_err());
        let body = format!(
            r#"{{"assistant_id":"{}","instructions":"be brief"}}"#,
            made.id
        );
        let changed = modify(&shared, body.as_bytes()).unwrap();
        assert_eq!(changed.instructions.as_deref(), Some("be brief"));
        assert_eq!(changed.name.as_deref(), Some("n"));
        let body = format!(r#"{{"assistant_id":"{}"}}"#, made.id);
        assert_eq!(delete(&shared, body.as_bytes()).unwrap(), made.id);
        assert_eq!(
            delete(&shared, body.as_bytes()).unwrap_err().status,
            StatusCode::NOT_FOUND
        );
    }
}
