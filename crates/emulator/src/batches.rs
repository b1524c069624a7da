//! `/batches`: asynchronous batch jobs, kept per emulator instance.
//!
//! `POST /batches?method=chat_completions|embedder` takes an
//! `application/octet-stream` JSONL body, one request per line, and
//! answers the new batch (`status: created`). GigaChat runs batches later;
//! the emulator runs them at once and reports them `completed` from the
//! first `GET /batches[?batch_id=]`, with the results in an output file
//! downloaded through `/files/{output_file_id}/content`. Unknown ids are
//! `404 Batch task not found`, as the service answers.
//!
//! A line is `{"key"?, "request": {…}}`, or the request itself; each
//! result line is `{"key", "response"}` or `{"key", "error":
//! {"status","message"}}`. A line naming a file the emulator does not
//! have fails, so a proxy that forwards the wrong file id is seen.

use bytes::Bytes;
use http::StatusCode;
use serde::Serialize;
use serde_json::{Value, json};

use crate::chat::{self, ChatError};
use crate::state::{Shared, StoredFile};
use crate::util::now_secs;

/// What a batch runs each line as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum BatchMethod {
    ChatCompletions,
    Embedder,
}

#[derive(Debug, Clone)]
pub(crate) struct StoredBatch {
    pub id: String,
    pub method: BatchMethod,
    pub created_at: u64,
    pub total: usize,
    pub failed: usize,
    pub output_file_id: String,
}

#[derive(Serialize)]
struct Counts {
    total: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    completed: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failed: Option<usize>,
}

/// A batch as the creation answers it.
#[derive(Serialize)]
pub(crate) struct CreatedBatch<'a> {
    id: &'a str,
    method: BatchMethod,
    request_counts: Counts,
    status: &'static str,
    created_at: u64,
    updated_at: u64,
}

/// A batch as its status answers it.
#[derive(Serialize)]
struct BatchStatus<'a> {
    id: &'a str,
    method: BatchMethod,
    request_counts: Counts,
    status: &'static str,
    created_at: u64,
    updated_at: u64,
    output_file_id: &'a str,
}

#[derive(Serialize)]
pub(crate) struct BatchList<'a> {
    batches: Vec<BatchStatus<'a>>,
}

impl<'a> From<&'a StoredBatch> for CreatedBatch<'a> {
    fn from(batch: &'a StoredBatch) -> Self {
        CreatedBatch {
            id: &batch.id,
            method: batch.method,
            request_counts: Counts {
                total: batch.total,
                completed: None,
                failed: None,
            },
            status: "created",
            created_at: batch.created_at,
            updated_at: batch.created_at,
        }
    }
}

impl<'a> From<&'a StoredBatch> for BatchStatus<'a> {
    fn from(batch: &'a StoredBatch) -> Self {
        BatchStatus {
            id: &batch.id,
            method: batch.method,
            request_counts: Counts {
                total: batch.total,
                completed: Some(batch.total - batch.failed),
                failed: Some(batch.failed),
            },
            status: "completed",
            created_at: batch.created_at,
            updated_at: batch.created_at,
            output_file_id: &batch.output_file_id,
        }
    }
}

fn bad_request(detail: &str) -> ChatError {
    ChatError {
        status: StatusCode::BAD_REQUEST,
        message: format!("Invalid params: {detail}"),
    }
}

/// The `method` query parameter of a creation.
pub(crate) fn method_of(query: Option<&str>) -> Result<BatchMethod, ChatError> {
    let method = query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("method="));
    match method {
        Some("chat_completions") => Ok(BatchMethod::ChatCompletions),
        Some("embedder") => Ok(BatchMethod::Embedder),
        _ => Err(bad_request("method must be chat_completions or embedder")),
    }
}

/// The `batch_id` query parameter of a status request, if any.
pub(crate) fn asked_id(query: Option<&str>) -> Option<&str> {
    query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("batch_id="))
}

/// Runs every line and stores the batch and its results.
pub(crate) fn create(
    shared: &Shared,
    method: BatchMethod,
    body: &[u8],
) -> Result<StoredBatch, ChatError> {
    let text = std::str::from_utf8(body).map_err(|_| bad_request("the batch is not UTF-8"))?;
    let created_at = now_secs();
    let mut output = Vec::new();
    let mut total = 0;
    let mut failed = 0;
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let Ok(Value::Object(mut object)) = serde_json::from_str::<Value>(line) else {
            return Err(bad_request(chat::INVALID_JSON));
        };
        total += 1;
        let key = object
            .get("key")
            .cloned()
            .unwrap_or_else(|| json!(total.to_string()));
        let request = match object.remove("request") {
            Some(request) => request,
            None => Value::Object(object),
        };
        let request = serde_json::to_vec(&request).unwrap_or_default();
        let result = match method {
            BatchMethod::ChatCompletions => {
                chat::plan_v1(&request, &|id| crate::files::attached(shared, id))
                    .map(|plan| chat::v1_body(&plan, created_at))
            }
            BatchMethod::Embedder => crate::embeddings::embeddings(&request)
                .and_then(|list| serde_json::to_vec(&list).map_err(|_| bad_request("embeddings"))),
        };
        let line = match result {
            Ok(answer) => {
                let response: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
                json!({"key": key, "response": response})
            }
            Err(error) => {
                failed += 1;
                json!({"key": key, "error": {"status": error.status.as_u16(), "message": error.message}})
            }
        };
        output.extend_from_slice(line.to_string().as_bytes());
        output.push(b'\n');
    }
    if total == 0 {
        return Err(bad_request("the batch has no requests"));
    }
    let id = uuid::Uuid::new_v4().to_string();
    let output_file = StoredFile {
        id: uuid::Uuid::new_v4().to_string(),
        filename: format!("batch_{id}_output.jsonl"),
        purpose: "batch".to_owned(),
        created_at,
        content: Bytes::from(output),
    };
    let batch = StoredBatch {
        id,
        method,
        created_at,
        total,
        failed,
        output_file_id: output_file.id.clone(),
    };
    crate::lock(&shared.files).push(output_file);
    crate::lock(&shared.batches).push(batch.clone());
    Ok(batch)
}

/// Every batch, or the one asked for; `None` when it does not exist.
pub(crate) fn status(shared: &Shared, asked: Option<&str>) -> Option<Vec<StoredBatch>> {
    let batches = crate::lock(&shared.batches);
    match asked {
        None => Some(batches.clone()),
        Some(id) => batches
            .iter()
            .find(|batch| batch.id == id)
            .map(|batch| vec![batch.clone()]),
    }
}

pub(crate) fn list(batches: &[StoredBatch]) -> BatchList<'_> {
    BatchList {
        batches: batches.iter().map(BatchStatus::from).collect(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_runs_every_line_and_fails_the_ones_naming_missing_files() {
        let shared = Shared::new(crate::EmulatorConfig::default());
        let body = concat!(
            r#"{"key":"a","request":{"model":"GigaChat","messages":[{"role":"user","content":"hi"}]}}"#,
            "\n\n",
            r#"{"key":"b","request":{"model":"GigaChat","messages":[{"role":"user","content":"x","attachments":["nope"]}]}}"#,
            "\n",
        );
        let batch = create(&shared, BatchMethod::ChatCompletions, body.as_bytes()).unwrap();
        assert_eq!((batch.total, batch.failed), (2, 1));
        let output = crate::files::find(&shared, &batch.output_file_id).unwrap();
        let lines: Vec<Value> = std::str::from_utf8(&output.content)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines[0]["key"], "a");
        assert!(lines[0]["response"]["choices"].is_array());
        assert_eq!(lines[1]["error"]["status"], 404);
        let created = serde_json::to_value(CreatedBatch::from(&batch)).unwrap();
        assert_eq!(created["status"], "created");
        assert_eq!(created["method"], "chat_completions");
        assert_eq!(created["request_counts"], json!({"total": 2}));
        let found = status(&shared, Some(&batch.id)).unwrap();
        let listed = serde_json::to_value(list(&found)).unwrap();
        assert_eq!(listed["batches"][0]["status"], "completed");
        assert_eq!(
            listed["batches"][0]["request_counts"],
            json!({"total": 2, "completed": 1, "failed": 1})
        );
        assert!(status(&shared, Some("missing")).is_none());
        assert!(create(&shared, BatchMethod::Embedder, b"{bad").is_err());
        assert!(create(&shared, BatchMethod::Embedder, b"\n").is_err());
        assert_eq!(
            method_of(Some("method=embedder")).unwrap(),
            BatchMethod::Embedder
        );
        assert!(method_of(Some("method=other")).is_err());
        assert_eq!(asked_id(Some("x=1&batch_id=b")), Some("b"));
    }
}
