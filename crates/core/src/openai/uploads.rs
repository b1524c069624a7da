//! Files inlined in OpenAI messages (`data:` URLs) → GigaChat file uploads
//! referenced in the message's `attachments`.
//!
//! OpenAI clients send the whole file again on every turn of a
//! conversation; uploading it each time would cost GigaChat storage and a
//! round trip per turn. So an upload is remembered for an hour by a digest
//! of the caller's identity, the media type and the bytes: in this
//! instance's memory (bounded), and in Redis too when one is configured, so
//! every instance finds it. The identity is part of the digest so one
//! caller cannot learn, from a faster answer, that another has sent the
//! same file. A Redis that fails is a miss: the file is uploaded again, and
//! the chat never fails for the cache's sake.
//!
//! The ids added here are GigaChat's raw ids, never shown to the client
//! (the answer does not name them). The route checks ownership of the ids
//! the client named *before* calling [`attach`], since ownership refuses
//! raw ids as no one's.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{ChatRequest, Upload};
use crate::Ready;
use crate::error::{Error, TransportCause};
use crate::redis::{SharedRedis, Unavailable, WarnEvery};

/// How long an uploaded file's id is reused (what gpt2giga keeps too):
/// long enough for a conversation, short enough that a file GigaChat has
/// dropped in the meantime is not referenced for long.
pub(crate) const REMEMBER_FOR: Duration = Duration::from_secs(3600);
/// Remembered ids in memory at most: an entry is ~150 bytes, so ~1.5 MB.
const MAX_REMEMBERED: usize = 10_000;
/// GigaChat's upload answer is a small JSON object; more is not read.
const ANSWER_MAX: usize = 64 * 1024;
/// GigaChat's error message is shown to the client up to this many chars.
const MESSAGE_MAX_CHARS: usize = 300;
/// A file name longer than this is cut (GigaChat needs only its extension).
const FILENAME_MAX_CHARS: usize = 200;
/// A file id longer than this, or with control characters, read back from
/// Redis or GigaChat is not used (GigaChat's ids are UUIDs).
const ID_MAX: usize = 256;

/// The remembered uploads, built once per process.
pub(crate) struct UploadCache {
    memory: RememberedIds,
    redis: Option<Arc<SharedRedis>>,
    warnings: WarnEvery,
}

impl UploadCache {
    pub(crate) fn new(redis: Option<Arc<SharedRedis>>) -> Self {
        Self {
            memory: RememberedIds::new(MAX_REMEMBERED, REMEMBER_FOR),
            redis,
            warnings: WarnEvery::new(crate::redis::WARN_EVERY),
        }
    }

    async fn get(&self, key: &[u8; 32]) -> Option<String> {
        if let Some(id) = self.memory.get(key, Instant::now()) {
            return Some(id);
        }
        let redis = self.redis.as_ref()?;
        let name = redis.key("upload", &hex(key));
        let name = name.as_str();
        let found = redis
            .run(|mut connection| async move {
                redis::cmd("GET")
                    .arg(name)
                    .query_async::<Option<String>>(&mut connection)
                    .await
            })
            .await;
        match found {
            Ok(id) => {
                let id = id.filter(|id| usable_id(id))?;
                self.memory.put(*key, &id, Instant::now());
                Some(id)
            }
            Err(err) => {
                self.warn(redis, "lookup", &err);
                None
            }
        }
    }

    async fn put(&self, key: &[u8; 32], id: &str) {
        self.memory.put(*key, id, Instant::now());
        let Some(redis) = &self.redis else {
            return;
        };
        let name = redis.key("upload", &hex(key));
        let name = name.as_str();
        let stored = redis
            .run(|mut connection| async move {
                redis::cmd("SET")
                    .arg(name)
                    .arg(id)
                    .arg("PX")
                    .arg(REMEMBER_FOR.as_millis() as u64)
                    .query_async::<()>(&mut connection)
                    .await
            })
            .await;
        if let Err(err) = stored {
            self.warn(redis, "store", &err);
        }
    }

    fn warn(&self, redis: &SharedRedis, operation: &'static str, err: &Unavailable) {
        if let Some(suppressed) = self.warnings.allow() {
            tracing::warn!(
                redis = redis.redacted_url(),
                operation,
                error = %err.0,
                suppressed,
                "the upload cache's Redis failed; uploading the file again"
            );
        }
    }
}

/// Uploads the request's inline files (or finds them uploaded before) and
/// adds their ids to the `attachments` of their messages, by `deadline`.
/// The file bytes are dropped as soon as each is handled.
pub(crate) async fn attach(
    ready: &Ready,
    identity_key: &str,
    request: &mut ChatRequest,
    deadline: Instant,
) -> Result<(), Error> {
    if request.uploads.is_empty() {
        return Ok(());
    }
    // Checked before anything is uploaded, so a translation bug costs no
    // upload.
    for upload in &request.uploads {
        message(&mut request.body, upload.message)?;
    }
    let namespace = [
        ready.config.credential_id.as_bytes(),
        ready.base.host().as_bytes(),
    ];
    for upload in std::mem::take(&mut request.uploads) {
        let key = upload_key(namespace, identity_key, &upload.media_type, &upload.data);
        let id = match ready.uploads.get(&key).await {
            Some(id) => id,
            None => {
                let id = send(ready, &upload, deadline).await?;
                ready.uploads.put(&key, &id).await;
                id
            }
        };
        push_attachment(message(&mut request.body, upload.message)?, id)?;
    }
    Ok(())
}

/// The digest an upload is remembered by: the deployment (credential and
/// GigaChat host: an id means nothing under another key), the caller, the
/// media type and the bytes, each length-prefixed so no two tuples hash
/// alike.
fn upload_key(
    namespace: [&[u8]; 2],
    identity_key: &str,
    media_type: &str,
    data: &[u8],
) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"gigachat-proxy upload v1\0");
    for field in [
        namespace[0],
        namespace[1],
        identity_key.as_bytes(),
        media_type.as_bytes(),
        data,
    ] {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field);
    }
    hasher.finalize().into()
}

fn message(
    body: &mut serde_json::Map<String, Value>,
    index: usize,
) -> Result<&mut serde_json::Map<String, Value>, Error> {
    body.get_mut("messages")
        .and_then(Value::as_array_mut)
        .and_then(|messages| messages.get_mut(index))
        .and_then(Value::as_object_mut)
        .ok_or(Error::Internal("an inline file names no message"))
}

fn push_attachment(message: &mut serde_json::Map<String, Value>, id: String) -> Result<(), Error> {
    let attachments = message
        .entry("attachments")
        .or_insert_with(|| Value::Array(Vec::new()));
    if attachments.is_null() {
        *attachments = Value::Array(Vec::new());
    }
    match attachments {
        Value::Array(ids) => {
            ids.push(Value::String(id));
            Ok(())
        }
        _ => Err(Error::InvalidRequest {
            message: "a message's `attachments` is not an array of file ids".into(),
            param: None,
            code: "invalid_attachments",
            hint: "Send files as content parts (`image_url` with a data: URL, or `file` with `file_data`), or `attachments` as an array of file ids.",
        }),
    }
}

/// `POST files` of one file; GigaChat's file id. A 401 refreshes the token
/// and tries once more, as the forwarding does.
async fn send(ready: &Ready, upload: &Upload, deadline: Instant) -> Result<String, Error> {
    let url = ready.base.resolve("files", None)?;
    let boundary = format!("gigachat-proxy-{}", uuid::Uuid::new_v4().simple());
    let content_type = HeaderValue::try_from(format!("multipart/form-data; boundary={boundary}"))
        .map_err(|_| Error::Internal("could not write the upload's content type"))?;
    let body = Bytes::from(multipart_body(
        &boundary,
        &upload.filename,
        &upload.media_type,
        &upload.data,
    ));
    let host = ready.base.host();
    let seconds = ready.config.timeout.as_secs();
    let timed_out = || Error::UpstreamTimeout {
        stage: "uploading a file",
        seconds,
    };
    let mut refreshed_after_401 = false;
    loop {
        let token = ready.tokens.token_by(deadline).await?;
        let mut request = Request::new(Full::new(body.clone()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = url.clone();
        let headers = request.headers_mut();
        headers.insert(header::AUTHORIZATION, token.header.clone());
        headers.insert(header::CONTENT_TYPE, content_type.clone());
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let remaining = deadline.saturating_duration_since(Instant::now());
        let response = match tokio::time::timeout(remaining, ready.upstream.send(request)).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(err)) => {
                return Err(crate::upstream::forward_error(
                    &err,
                    "file upload",
                    host,
                    seconds,
                ));
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED && !refreshed_after_401 {
            ready.tokens.invalidate(token.generation);
            refreshed_after_401 = true;
            continue;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let answer = match tokio::time::timeout(
            remaining,
            Limited::new(response.into_body(), ANSWER_MAX).collect(),
        )
        .await
        {
            Err(_) => return Err(timed_out()),
            // Too long or broken off: judged by the status alone.
            Ok(Err(_)) => Bytes::new(),
            Ok(Ok(collected)) => collected.to_bytes(),
        };
        return outcome(status, &answer, &upload.filename, host);
    }
}

/// GigaChat's answer to an upload → the file id, or the error the client
/// sees: GigaChat's refusal (too large, a format it does not read) as a 400
/// with its message, its concurrency limit as busy, anything else as
/// GigaChat failing.
fn outcome(status: StatusCode, answer: &[u8], filename: &str, host: &str) -> Result<String, Error> {
    #[derive(Deserialize, Default)]
    struct Answer {
        id: Option<String>,
        status: Option<u16>,
        message: Option<String>,
    }
    let read: Answer = serde_json::from_slice(answer).unwrap_or_default();
    // GigaChat sometimes answers an error with HTTP 200 and the error's
    // status in the body.
    let status = match read.status.and_then(|s| StatusCode::from_u16(s).ok()) {
        Some(inner)
            if status.is_success()
                && read.message.is_some()
                && (inner.is_client_error() || inner.is_server_error()) =>
        {
            inner
        }
        _ => status,
    };
    if status.is_success() {
        return read
            .id
            .filter(|id| usable_id(id))
            .ok_or(Error::Internal("GigaChat's upload answer names no file id"));
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Err(Error::UpstreamBusy { waited_ms: 0 });
    }
    if status.is_client_error() {
        let said = read
            .message
            .as_deref()
            .map(|m| bounded(m, MESSAGE_MAX_CHARS))
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("refused").to_owned());
        return Err(Error::InvalidRequest {
            message: format!(
                "GigaChat refused the file `{}` (HTTP {}): {said}",
                bounded(filename, FILENAME_MAX_CHARS),
                status.as_u16()
            ),
            param: None,
            code: "upload_refused",
            hint: "GigaChat reads images (jpeg, png, tiff, bmp) up to 15 MB, documents (txt, doc, docx, pdf, epub, ppt, pptx) up to 40 MB and audio (mp3, mp4, m4a, wav, weba, ogg, opus) up to 35 MB, at most 10 files a request; send a file it reads.",
        });
    }
    Err(Error::UpstreamUnreachable {
        stage: "file upload: GigaChat failed",
        host: host.to_owned(),
        cause: TransportCause::Other,
    })
}

/// `multipart/form-data` with the file (its name and media type) and
/// `purpose=general`, the purpose GigaChat's chat attachments take.
fn multipart_body(boundary: &str, filename: &str, media_type: &str, data: &[u8]) -> Vec<u8> {
    let filename = form_filename(filename);
    let media_type = if is_media_type(media_type) {
        media_type
    } else {
        "application/octet-stream"
    };
    let mut body = Vec::with_capacity(data.len() + filename.len() + 2 * boundary.len() + 256);
    for piece in [
        "--",
        boundary,
        "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"",
        &filename,
        "\"\r\nContent-Type: ",
        media_type,
        "\r\n\r\n",
    ] {
        body.extend_from_slice(piece.as_bytes());
    }
    body.extend_from_slice(data);
    for piece in [
        "\r\n--",
        boundary,
        "\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\ngeneral\r\n--",
        boundary,
        "--\r\n",
    ] {
        body.extend_from_slice(piece.as_bytes());
    }
    body
}

/// A file name safe inside the quoted `filename="…"`: the quote, the
/// backslash and line breaks percent-encoded (as browsers do), other
/// control characters dropped, cut to a bounded length.
fn form_filename(name: &str) -> String {
    let mut safe = String::with_capacity(name.len().min(FILENAME_MAX_CHARS * 4));
    for c in name.chars().take(FILENAME_MAX_CHARS) {
        match c {
            '"' => safe.push_str("%22"),
            '\\' => safe.push_str("%5C"),
            '\r' => safe.push_str("%0D"),
            '\n' => safe.push_str("%0A"),
            c if c.is_control() => {}
            c => safe.push(c),
        }
    }
    if safe.trim().is_empty() {
        safe = "file".to_owned();
    }
    safe
}

/// `type/subtype` of token characters, nothing that could end the header.
fn is_media_type(value: &str) -> bool {
    let token = |part: &str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    value
        .split_once('/')
        .is_some_and(|(kind, sub)| token(kind) && token(sub))
}

fn usable_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= ID_MAX && !id.chars().any(char::is_control)
}

/// The first `max` characters of a text.
fn bounded(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// Ids in memory, bounded by a count. Every entry lives equally long, so
/// insertion order is expiry order: the oldest goes first, whether it
/// expired or the map is full.
struct RememberedIds {
    inner: Mutex<Remembered>,
    max: usize,
    ttl: Duration,
}

struct Remembered {
    ids: HashMap<[u8; 32], (String, Instant, u64)>,
    /// Insertion order; a key stored again leaves a stale pair behind,
    /// recognised by its sequence number.
    order: VecDeque<([u8; 32], u64)>,
    next_seq: u64,
}

impl RememberedIds {
    fn new(max: usize, ttl: Duration) -> Self {
        Self {
            inner: Mutex::new(Remembered {
                ids: HashMap::new(),
                order: VecDeque::new(),
                next_seq: 0,
            }),
            max: max.max(1),
            ttl,
        }
    }

    fn get(&self, key: &[u8; 32], now: Instant) -> Option<String> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let (id, expires, _) = inner.ids.get(key)?;
        if now < *expires {
            return Some(id.clone());
        }
        inner.ids.remove(key);
        None
    }

    fn put(&self, key: [u8; 32], id: &str, now: Instant) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.ids.remove(&key);
        while let Some(&(oldest, seq)) = inner.order.front() {
            let expires = inner
                .ids
                .get(&oldest)
                .filter(|(_, _, live)| *live == seq)
                .map(|(_, expires, _)| *expires);
            match expires {
                Some(expires) if inner.ids.len() < self.max && now < expires => break,
                Some(_) => {
                    inner.ids.remove(&oldest);
                }
                // A stale pair: its key was stored again or expired.
                None => {}
            }
            inner.order.pop_front();
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.order.push_back((key, seq));
        inner.ids.insert(key, (id.to_owned(), now + self.ttl, seq));
        // Stale pairs behind a live oldest entry pile up only if keys are
        // stored again and again; rebuild the order from the live entries
        // then, so it stays bounded whatever the pattern.
        if inner.order.len() > 2 * self.max + 16 {
            let mut live: Vec<([u8; 32], u64)> = inner
                .ids
                .iter()
                .map(|(k, (_, _, seq))| (*k, *seq))
                .collect();
            live.sort_unstable_by_key(|(_, seq)| *seq);
            inner.order = live.into();
        }
    }

    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        (inner.ids.len(), inner.order.len())
    }
}

#[cfg(test)]
mod tests;
