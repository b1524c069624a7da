//! `/files*`: an in-memory store, per emulator instance.

use std::convert::Infallible;

use bytes::Bytes;
use http::StatusCode;
use serde::Serialize;

use crate::chat::{AttachedFile, ChatError, media_kind};
use crate::state::{Shared, StoredFile};
use crate::util::now_secs;

#[derive(Serialize)]
pub(crate) struct FileObject<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub bytes: usize,
    pub created_at: u64,
    pub filename: &'a str,
    pub purpose: &'a str,
    pub access_policy: &'static str,
}

impl<'a> From<&'a StoredFile> for FileObject<'a> {
    fn from(f: &'a StoredFile) -> Self {
        FileObject {
            id: &f.id,
            object: "file",
            bytes: f.content.len(),
            created_at: f.created_at,
            filename: &f.filename,
            purpose: &f.purpose,
            access_policy: "private",
        }
    }
}

#[derive(Serialize)]
pub(crate) struct FileList<'a> {
    pub data: Vec<FileObject<'a>>,
}

#[derive(Serialize)]
pub(crate) struct Deleted<'a> {
    pub id: &'a str,
    pub deleted: bool,
}

fn bad_request(detail: impl std::fmt::Display) -> ChatError {
    ChatError {
        status: StatusCode::BAD_REQUEST,
        message: format!("Invalid params: {detail}"),
    }
}

/// Parses the multipart upload (`file`, optional `purpose`) and stores it.
pub(crate) async fn upload(
    shared: &Shared,
    content_type: Option<&str>,
    body: Bytes,
) -> Result<StoredFile, ChatError> {
    let boundary = content_type
        .and_then(|ct| multer::parse_boundary(ct).ok())
        .ok_or_else(|| bad_request("expected multipart/form-data with a boundary"))?;
    let stream = futures_util::stream::once(async move { Ok::<_, Infallible>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut file: Option<(String, Bytes)> = None;
    let mut purpose: Option<String> = None;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(bad_request(format!("malformed multipart body: {e}"))),
        };
        match field.name() {
            Some("file") => {
                let name = field.file_name().unwrap_or("file").to_owned();
                let data = field
                    .bytes()
                    .await
                    .map_err(|e| bad_request(format!("malformed multipart body: {e}")))?;
                file = Some((name, data));
            }
            Some("purpose") => {
                let text = field
                    .text()
                    .await
                    .map_err(|e| bad_request(format!("malformed multipart body: {e}")))?;
                purpose = Some(text.trim().to_owned());
            }
            // Unknown parts are drained and ignored, like extra form fields.
            _ => {
                let _ = field.bytes().await;
            }
        }
    }
    let (filename, content) = file.ok_or_else(|| bad_request("file is required"))?;
    let purpose = purpose
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "general".to_owned());
    let stored = StoredFile {
        id: uuid::Uuid::new_v4().to_string(),
        filename,
        purpose,
        created_at: now_secs(),
        content,
    };
    crate::lock(&shared.files).push(stored.clone());
    Ok(stored)
}

pub(crate) fn find(shared: &Shared, id: &str) -> Option<StoredFile> {
    crate::lock(&shared.files)
        .iter()
        .find(|f| f.id == id)
        .cloned()
}

/// A stored file as a chat attachment sees it.
pub(crate) fn attached(shared: &Shared, id: &str) -> Option<AttachedFile> {
    crate::lock(&shared.files)
        .iter()
        .find(|f| f.id == id)
        .map(|f| AttachedFile {
            filename: f.filename.clone(),
            bytes: f.content.len(),
            kind: media_kind(&f.filename, &f.content),
        })
}

pub(crate) fn all(shared: &Shared) -> Vec<StoredFile> {
    crate::lock(&shared.files).clone()
}

pub(crate) fn delete(shared: &Shared, id: &str) -> bool {
    let mut files = crate::lock(&shared.files);
    let before = files.len();
    files.retain(|f| f.id != id);
    files.len() != before
}
