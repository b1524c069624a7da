//! Ownership of GigaChat objects, per identity.
//!
//! Everything callers create at GigaChat lives under the operator's one
//! key, so GigaChat cannot tell one end user's file from another's. The
//! proxy does: every file id it hands to a caller is sealed as
//! `{id}~{tag}`, the tag an HMAC of the caller's identity and the id under
//! a key derived from the session secret, and every use of an id (a
//! `files/{id}` path, an `attachments` entry, a v2 `files` part) must carry
//! a tag that verifies for the caller. The tag is stripped before the call
//! reaches GigaChat. A missing or foreign tag is answered like an id that
//! does not exist, so nobody learns whether someone else's object exists.
//!
//! The sealed id proves ownership by itself: it needs no shared store, so
//! it holds on serverless deployments with many instances and no Redis.
//! Only listing needs state (which ids are mine?): the instance's memory
//! records the ids it sealed, so `GET files` lists what this instance saw
//! the caller create.
//!
//! Batches are sealed the same way: the `id` a batch is created with, the
//! `batch_id` it is asked for by (in the query) and the `output_file_id`
//! its results are downloaded by (as a file). The lines of a batch are
//! checked like chat bodies: every file, thread or assistant they name
//! must be the caller's.
//!
//! Calls that belong to nobody in particular (`balance`, threads and
//! assistants until they are sealed too, anything the proxy does not know)
//! are for the operator's identities only.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{Response, StatusCode, header};
use http_body_util::BodyExt;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::access::api_keys::ApiKeys;
use crate::access::{AccessConfig, AuthMode, Identity};
use crate::body::ProxyBody;
use crate::config::env::{ConfigError, Env, Platform};
use crate::endpoint::{Endpoint, split_version};
use crate::error::Error;
use crate::redis::SharedRedis;
use crate::secret::Secret;

/// Between an id and its tag. GigaChat's ids are UUIDs (hex and `-`), so
/// the last `~` always starts the tag; `~` is unreserved in URLs, so a
/// sealed id needs no escaping in a path.
pub(crate) const SEPARATOR: char = '~';
/// 96 bits of HMAC, as hex: unguessable, and short enough for a path.
const TAG_BYTES: usize = 12;
const TAG_LEN: usize = TAG_BYTES * 2;
/// The memory that lists objects is bounded: a record past either cap is
/// not kept (the object stays reachable by its sealed id, it only goes
/// missing from `GET files`).
const MAX_IDENTITIES: usize = 100_000;
const MAX_OBJECTS_PER_IDENTITY: usize = 10_000;

/// Everything but the characters no server reads as a separator or an
/// escape.
const QUERY_STRICT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

pub(crate) const VAR_OWNERSHIP: &str = "GIGACHAT_PROXY_OWNERSHIP";
pub(crate) const VAR_ADMIN_KEYS: &str = "GIGACHAT_PROXY_ADMIN_KEYS";
pub(crate) const VAR_ADMIN_SCOPE: &str = "GIGACHAT_PROXY_ADMIN_SCOPE";

#[derive(Debug, Clone)]
pub(crate) struct OwnershipConfig {
    enabled: bool,
    /// Identity keys (`key:…`, `sub:…`) allowed the operator-only calls.
    admins: Vec<String>,
}

impl OwnershipConfig {
    /// On by default wherever callers are told apart by a credential or the
    /// proxy is deployed; off on a local server in open mode, where the one
    /// developer is every caller.
    pub(crate) fn from_env(
        env: &Env<'_>,
        platform: Platform,
        access: &AccessConfig,
    ) -> Result<Self, ConfigError> {
        let default = access.mode == AuthMode::Required || platform != Platform::Local;
        let enabled = env.bool(VAR_OWNERSHIP, default)?;
        let known_keys = ApiKeys::new(&access.api_keys);
        let listed = env.get(VAR_ADMIN_KEYS).unwrap_or_default();
        let mut admins = Vec::new();
        for entry in listed
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
        {
            if let Some(subject) = entry.strip_prefix("sub:") {
                if subject.is_empty() {
                    return Err(ConfigError::new(
                        VAR_ADMIN_KEYS,
                        "has an empty `sub:` entry: name a JWT subject after `sub:`",
                    ));
                }
                admins.push(entry.to_owned());
                continue;
            }
            let identity = known_keys.identify(entry).ok_or_else(|| {
                ConfigError::new(
                    VAR_ADMIN_KEYS,
                    "lists a key that is not one of GIGACHAT_PROXY_API_KEYS: list operator API keys (each also in GIGACHAT_PROXY_API_KEYS) or `sub:<JWT subject>` entries, comma-separated",
                )
            })?;
            admins.push(identity.key);
        }
        Ok(Self { enabled, admins })
    }
}

/// What the answer to a checked call needs done to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AnswerRewrite {
    /// Passes through as it is.
    None,
    /// One file object (upload, info): its `id` is sealed and recorded.
    File,
    /// `{"data":[File…]}`: only the caller's files, sealed.
    FileList,
    /// `{"id","deleted"}`: the id is sealed and no longer listed.
    Deleted,
    /// A chat answer: generated files (`<img src>`, v2 `files` parts) are
    /// sealed and recorded.
    Chat,
    /// A created batch: its `id` is sealed and recorded.
    BatchCreated,
    /// `{"batches":[Batch…]}`: only the caller's batches, `id` and
    /// `output_file_id` sealed. `asked` holds the raw ids the query named
    /// (`batch_id`), which are the caller's whether or not this instance
    /// recorded them; with none asked, the caller's recorded batches.
    Batches { asked: Box<[String]> },
}

/// A call that may go ahead, with what changes on its way.
#[derive(Debug)]
pub(crate) struct Checked {
    /// The client path with sealed ids opened, when it had any.
    pub(crate) path: Option<String>,
    /// The query with sealed ids opened, when it had any.
    pub(crate) query: Option<String>,
    /// The body with sealed ids opened, when it is rewritten.
    pub(crate) body: Option<Bytes>,
    pub(crate) answer: AnswerRewrite,
}

impl Checked {
    fn pass() -> Self {
        Self {
            path: None,
            query: None,
            body: None,
            answer: AnswerRewrite::None,
        }
    }
}

pub(crate) struct Ownership {
    enabled: bool,
    admins: HashSet<String>,
    key: Vec<u8>,
    listed: Mutex<HashMap<String, HashSet<String>>>,
    /// Where lists are shared between instances, when configured.
    redis: Option<Arc<SharedRedis>>,
}

impl Ownership {
    pub(crate) fn new(
        config: &OwnershipConfig,
        session_secret: &Secret<Vec<u8>>,
        redis: Option<Arc<SharedRedis>>,
    ) -> Self {
        Self {
            redis,
            enabled: config.enabled,
            admins: config.admins.iter().cloned().collect(),
            key: tag_key(session_secret.expose()),
            listed: Mutex::new(HashMap::new()),
        }
    }

    /// Whether callers are kept apart (for the health document).
    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether an identity may make the operator-only calls: listed in
    /// `GIGACHAT_PROXY_ADMIN_KEYS`, or holding a JWT with
    /// `GIGACHAT_PROXY_ADMIN_SCOPE`.
    pub(crate) fn is_operator(&self, identity: &Identity) -> bool {
        identity.operator || self.admins.contains(&identity.key)
    }

    /// [`Ownership::check_call`] for a call whose query names no object
    /// (a chat the OpenAI route translated).
    pub(crate) fn check_request(
        &self,
        identity: &str,
        operator: bool,
        endpoint: Endpoint,
        client_path: &str,
        body: &Bytes,
    ) -> Result<Checked, Error> {
        self.check_call(
            identity,
            operator,
            endpoint,
            &http::Method::POST,
            client_path,
            None,
            body,
        )
    }

    /// Checks a call before it is forwarded: opens the sealed ids it uses
    /// in its path, query and body (refusing any that is not the caller's)
    /// and says what its answer needs. Operators and a proxy with ownership
    /// off pass unchanged.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn check_call(
        &self,
        identity: &str,
        operator: bool,
        endpoint: Endpoint,
        method: &http::Method,
        client_path: &str,
        query: Option<&str>,
        body: &Bytes,
    ) -> Result<Checked, Error> {
        if !self.enabled || operator {
            return Ok(Checked::pass());
        }
        let answer = match endpoint {
            Endpoint::Embeddings | Endpoint::TokensCount | Endpoint::Models | Endpoint::Model => {
                return Ok(Checked::pass());
            }
            Endpoint::Chat | Endpoint::ChatV2 => {
                return Ok(Checked {
                    path: None,
                    query: None,
                    body: Some(self.open_chat_body(identity, body)?),
                    answer: AnswerRewrite::Chat,
                });
            }
            Endpoint::Batches => {
                return self.check_batches(identity, method, client_path, query, body);
            }
            Endpoint::FileUpload => AnswerRewrite::File,
            Endpoint::FilesList => AnswerRewrite::FileList,
            Endpoint::FileInfo => AnswerRewrite::File,
            Endpoint::FileContent => AnswerRewrite::None,
            Endpoint::FileDelete => AnswerRewrite::Deleted,
            Endpoint::Balance | Endpoint::Threads | Endpoint::Assistants | Endpoint::Other => {
                return Err(Error::OperatorOnly);
            }
        };
        let path = match endpoint {
            Endpoint::FileInfo | Endpoint::FileContent | Endpoint::FileDelete => {
                Some(self.open_file_path(identity, client_path)?)
            }
            _ => None,
        };
        Ok(Checked {
            path,
            query: None,
            body: None,
            answer,
        })
    }

    /// `POST batches?method=…` (a JSONL body) and `GET batches[?batch_id=]`:
    /// the `batch_id`s of the query and the objects the lines name are
    /// opened; any other batch call is the operator's.
    fn check_batches(
        &self,
        identity: &str,
        method: &http::Method,
        client_path: &str,
        query: Option<&str>,
        body: &Bytes,
    ) -> Result<Checked, Error> {
        if split_version(client_path).1 != "batches" {
            return Err(Error::OperatorOnly);
        }
        let (query, asked) = self.open_batch_query(identity, query)?;
        match *method {
            http::Method::POST => Ok(Checked {
                path: None,
                query,
                body: Some(self.open_batch_body(identity, body)?),
                answer: AnswerRewrite::BatchCreated,
            }),
            http::Method::GET | http::Method::HEAD => Ok(Checked {
                path: None,
                query,
                body: None,
                answer: AnswerRewrite::Batches {
                    asked: asked.into_boxed_slice(),
                },
            }),
            _ => Err(Error::OperatorOnly),
        }
    }

    /// The query rebuilt with every `batch_id` opened, and the raw ids.
    /// Names and values are read decoded (`batch%5Fid` is `batch_id` to a
    /// server too) and the whole query is written back encoded strictly,
    /// so what GigaChat reads is exactly what was checked, whatever it
    /// takes for a separator (`;` included).
    fn open_batch_query(
        &self,
        identity: &str,
        query: Option<&str>,
    ) -> Result<(Option<String>, Vec<String>), Error> {
        let Some(query) = query.filter(|query| !query.is_empty()) else {
            return Ok((None, Vec::new()));
        };
        let decode = |text: &str| -> Result<String, Error> {
            let spaced = text.replace('+', " ");
            percent_decode_str(&spaced)
                .decode_utf8()
                .map(|text| text.into_owned())
                .map_err(|_| Error::ObjectNotFound("Batch"))
        };
        let mut rebuilt = String::with_capacity(query.len());
        let mut asked = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(name)?;
            let mut value = decode(value)?;
            if name == "batch_id" {
                value = self
                    .open(identity, &value)
                    .ok_or(Error::ObjectNotFound("Batch"))?
                    .to_owned();
                asked.push(value.clone());
            }
            if !rebuilt.is_empty() {
                rebuilt.push('&');
            }
            rebuilt.extend(utf8_percent_encode(&name, QUERY_STRICT));
            rebuilt.push('=');
            rebuilt.extend(utf8_percent_encode(&value, QUERY_STRICT));
        }
        Ok((Some(rebuilt), asked))
    }

    /// Opens what every line of a JSONL batch names (files, threads,
    /// assistants), wherever in the line it is: a batch line's shape is
    /// GigaChat's to define, so any key that carries an object id is
    /// checked rather than only the places a chat body has them. Each line
    /// is sent as parsed, so GigaChat reads what was checked.
    fn open_batch_body(&self, identity: &str, body: &Bytes) -> Result<Bytes, Error> {
        let text = std::str::from_utf8(body).map_err(|_| batch_line_error(0))?;
        let mut out = String::with_capacity(body.len() + body.len() / 8);
        for (index, line) in text.split('\n').enumerate() {
            if index > 0 {
                out.push('\n');
            }
            if line.trim().is_empty() {
                out.push_str(line);
                continue;
            }
            let mut json: Value =
                serde_json::from_str(line).map_err(|_| batch_line_error(index + 1))?;
            if !json.is_object() {
                return Err(batch_line_error(index + 1));
            }
            self.open_references(identity, &mut json)?;
            let written = serde_json::to_string(&json).map_err(|_| batch_line_error(index + 1))?;
            // Characters some line readers end a line at, escaped so one
            // checked line stays one line to any reader.
            for c in written.chars() {
                match c {
                    '\u{85}' => out.push_str("\\u0085"),
                    '\u{2028}' => out.push_str("\\u2028"),
                    '\u{2029}' => out.push_str("\\u2029"),
                    c => out.push(c),
                }
            }
        }
        Ok(Bytes::from(out))
    }

    /// Opens, in place, every id under a key that names an object:
    /// `attachments`, `files`, `file_ids`, `file_id` (files; strings, or
    /// objects with `id`/`file_id`), `thread_id`; `assistant_id` is not
    /// sealed yet, so it is the operator's.
    fn open_references(&self, identity: &str, value: &mut Value) -> Result<(), Error> {
        match value {
            Value::Array(items) => {
                for item in items {
                    self.open_references(identity, item)?;
                }
            }
            Value::Object(object) => {
                for (key, slot) in object.iter_mut() {
                    match (key.as_str(), slot) {
                        ("attachments" | "files" | "file_ids" | "file_id", slot) => {
                            self.open_file_references(identity, slot)?;
                        }
                        ("thread_id", Value::String(sealed)) => {
                            *sealed = self
                                .open(identity, sealed)
                                .ok_or(Error::ObjectNotFound("Thread"))?
                                .to_owned();
                        }
                        ("assistant_id", Value::Null) => {}
                        ("assistant_id", _) => return Err(Error::OperatorOnly),
                        (_, slot) => self.open_references(identity, slot)?,
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn open_file_references(&self, identity: &str, slot: &mut Value) -> Result<(), Error> {
        match slot {
            Value::String(sealed) => {
                *sealed = self
                    .open(identity, sealed)
                    .ok_or(Error::ObjectNotFound("File"))?
                    .to_owned();
                Ok(())
            }
            Value::Array(items) => {
                for item in items {
                    match item {
                        Value::Object(object) => {
                            for key in ["id", "file_id"] {
                                if let Some(id) = object.get_mut(key) {
                                    self.open_file_references(identity, id)?;
                                }
                            }
                            for (key, inner) in object.iter_mut() {
                                if key != "id" && key != "file_id" {
                                    self.open_references(identity, inner)?;
                                }
                            }
                        }
                        other => self.open_file_references(identity, other)?,
                    }
                }
                Ok(())
            }
            Value::Object(_) => self.open_references(identity, slot),
            Value::Null => Ok(()),
            _ => Err(Error::ObjectNotFound("File")),
        }
    }

    /// `[vN/]files/{sealed}[/…]` → the same path with the id opened.
    fn open_file_path(&self, identity: &str, client_path: &str) -> Result<String, Error> {
        let (_, rest) = split_version(client_path);
        let prefix = &client_path[..client_path.len() - rest.len()];
        let after = rest
            .strip_prefix("files/")
            .ok_or(Error::ObjectNotFound("File"))?;
        let (sealed, tail) = after
            .split_once('/')
            .map_or((after, ""), |(id, tail)| (id, tail));
        let raw = self
            .open(identity, sealed)
            .ok_or(Error::ObjectNotFound("File"))?;
        let mut path = String::with_capacity(client_path.len());
        path.push_str(prefix);
        path.push_str("files/");
        path.push_str(raw);
        if !tail.is_empty() {
            path.push('/');
            path.push_str(tail);
        }
        Ok(path)
    }

    /// Opens every file reference of a chat body (v1 `attachments`, v2
    /// `files` parts) and refuses thread and assistant references, which
    /// are not sealed yet. The body is parsed whole and sent as parsed, so
    /// what GigaChat reads is exactly what was checked (duplicated keys
    /// included: one reading, the last value, for both).
    fn open_chat_body(&self, identity: &str, body: &Bytes) -> Result<Bytes, Error> {
        let mut json: Value =
            serde_json::from_slice(body).map_err(|_| Error::OwnershipUnreadableBody)?;
        let Some(top) = json.as_object_mut() else {
            return Err(Error::OwnershipUnreadableBody);
        };
        let named = |object: &serde_json::Map<String, Value>, key: &str| {
            object.get(key).is_some_and(|id| !id.is_null())
        };
        let assistant = top
            .get("storage")
            .and_then(Value::as_object)
            .is_some_and(|storage| named(storage, "assistant_id"));
        if assistant || named(top, "assistant_id") {
            return Err(Error::OperatorOnly);
        }
        if let Some(thread) = top
            .get_mut("storage")
            .and_then(Value::as_object_mut)
            .and_then(|storage| storage.get_mut("thread_id"))
            .filter(|id| !id.is_null())
        {
            let Value::String(sealed) = thread else {
                return Err(Error::ObjectNotFound("Thread"));
            };
            let raw = self
                .open(identity, sealed)
                .ok_or(Error::ObjectNotFound("Thread"))?
                .to_owned();
            *sealed = raw;
        }
        if let Some(messages) = top.get_mut("messages").and_then(Value::as_array_mut) {
            for message in messages.iter_mut().filter_map(Value::as_object_mut) {
                if let Some(attachments) = message.get_mut("attachments") {
                    self.open_id_list(identity, attachments, false)?;
                }
                if let Some(parts) = message.get_mut("content").and_then(Value::as_array_mut) {
                    for part in parts.iter_mut().filter_map(Value::as_object_mut) {
                        if let Some(files) = part.get_mut("files") {
                            self.open_id_list(identity, files, true)?;
                        }
                    }
                }
            }
        }
        serde_json::to_vec(&json)
            .map(Bytes::from)
            .map_err(|_| Error::OwnershipUnreadableBody)
    }

    /// Opens a list of ids in place: strings (`attachments`) or, with
    /// `objects`, `{"id": …}` objects (v2 `files`); strings are accepted in
    /// both, anything else that is not `null` is refused as unknown.
    fn open_id_list(&self, identity: &str, list: &mut Value, objects: bool) -> Result<(), Error> {
        let items = match list {
            Value::Null => return Ok(()),
            Value::Array(items) => items,
            _ => return Err(Error::ObjectNotFound("File")),
        };
        for item in items {
            let slot = match item {
                Value::Object(object) if objects => {
                    object.get_mut("id").ok_or(Error::ObjectNotFound("File"))?
                }
                other => other,
            };
            let Value::String(sealed) = slot else {
                return Err(Error::ObjectNotFound("File"));
            };
            let raw = self
                .open(identity, sealed)
                .ok_or(Error::ObjectNotFound("File"))?
                .to_owned();
            *sealed = raw;
        }
        Ok(())
    }

    /// Seals what a checked call's answer hands out, when GigaChat
    /// answered 200 with a JSON body the proxy read whole. A stream passes
    /// as it is: an image id inside streamed content stays unsealed, which
    /// makes it unusable, never someone else's. A file list that cannot be
    /// read is not passed on, since it would name everyone's files.
    pub(crate) async fn seal_answer(
        self: &Arc<Self>,
        identity: &str,
        rewrite: AnswerRewrite,
        response: &mut Response<ProxyBody>,
        sse: bool,
        answer_bytes: &mut Option<Bytes>,
    ) -> Result<(), Error> {
        if rewrite == AnswerRewrite::None || response.status() != StatusCode::OK {
            return Ok(());
        }
        if sse {
            if rewrite == AnswerRewrite::Chat {
                let body = std::mem::replace(response.body_mut(), crate::body::empty());
                *response.body_mut() = SealedStream {
                    inner: body,
                    ownership: Arc::clone(self),
                    identity: identity.to_owned(),
                    pending: Vec::new(),
                    ended: false,
                }
                .boxed();
            }
            return Ok(());
        }
        let owned = match &rewrite {
            AnswerRewrite::FileList => self.owned(identity).await,
            AnswerRewrite::Batches { asked } if asked.is_empty() => self.owned(identity).await,
            _ => HashSet::new(),
        };
        let mut ledger = Ledger::default();
        let sealed = answer_bytes
            .as_ref()
            .and_then(|bytes| self.rewrite_answer(identity, &rewrite, bytes, &owned, &mut ledger));
        self.remember(identity, &ledger).await;
        match sealed {
            Some(bytes) => {
                response.headers_mut().remove(header::CONTENT_LENGTH);
                *response.body_mut() = crate::body::full(bytes.clone());
                *answer_bytes = Some(bytes);
                Ok(())
            }
            // A `HEAD` (GigaChat answers it without a body): nothing to
            // filter, and the length of the unfiltered list is not the
            // caller's to know.
            None if answer_bytes.as_ref().is_some_and(Bytes::is_empty) => {
                response.headers_mut().remove(header::CONTENT_LENGTH);
                Ok(())
            }
            None if rewrite == AnswerRewrite::FileList => Err(Error::Internal(
                "GigaChat's file list could not be read to keep only the caller's files",
            )),
            None if matches!(rewrite, AnswerRewrite::Batches { .. }) => Err(Error::Internal(
                "GigaChat's batch list could not be read to keep only the caller's batches",
            )),
            None => Ok(()),
        }
    }

    /// Rewrites a whole 200 JSON answer for the caller; `None` when the
    /// answer is not what the call should answer (then the caller must not
    /// get it as it is if it could list others' objects).
    fn rewrite_answer(
        &self,
        identity: &str,
        rewrite: &AnswerRewrite,
        answer: &[u8],
        owned: &HashSet<String>,
        ledger: &mut Ledger,
    ) -> Option<Bytes> {
        // Most chat answers name no file: they pass without a parse.
        if *rewrite == AnswerRewrite::Chat
            && !contains(answer, b"src=")
            && !contains(answer, b"cover=")
            && !contains(answer, b"\"files\"")
            && !contains(answer, b"\"thread_id\"")
        {
            return None;
        }
        let mut json: Value = serde_json::from_slice(answer).ok()?;
        match rewrite {
            AnswerRewrite::None => return None,
            AnswerRewrite::File => {
                let raw = self.seal_field(identity, json.get_mut("id")?)?;
                ledger.added.push(raw);
            }
            AnswerRewrite::Deleted => {
                let raw = self.seal_field(identity, json.get_mut("id")?)?;
                ledger.removed.push(raw);
            }
            AnswerRewrite::FileList => {
                let data = json.get_mut("data")?.as_array_mut()?;
                data.retain(|file| {
                    file.get("id")
                        .and_then(Value::as_str)
                        .is_some_and(|id| owned.contains(id))
                });
                for file in data.iter_mut() {
                    self.seal_field(identity, file.get_mut("id")?)?;
                }
            }
            AnswerRewrite::Chat => {
                // A thread the call started or continued (`storage`) is
                // the caller's; threads are not listed, so not recorded.
                if let Some(thread) = json.get_mut("thread_id") {
                    self.seal_field(identity, thread);
                }
                self.seal_chat_answer(identity, &mut json, ledger);
            }
            AnswerRewrite::BatchCreated => {
                let raw = self.seal_field(identity, json.get_mut("id")?)?;
                ledger.added.push(raw);
                self.seal_batch_files(identity, &mut json, ledger);
            }
            AnswerRewrite::Batches { asked } => {
                let batches = json.get_mut("batches")?.as_array_mut()?;
                batches.retain(|batch| {
                    batch.get("id").and_then(Value::as_str).is_some_and(|id| {
                        owned.contains(id) || asked.iter().any(|asked| asked == id)
                    })
                });
                for batch in batches.iter_mut() {
                    self.seal_field(identity, batch.get_mut("id")?)?;
                    self.seal_batch_files(identity, batch, ledger);
                }
            }
        }
        serde_json::to_vec(&json).ok().map(Bytes::from)
    }

    /// Seals the files a batch names (its results, and its input where
    /// GigaChat names one) and records them, so the owner downloads the
    /// results through `files/{id}/content` and finds them in `GET files`.
    fn seal_batch_files(&self, identity: &str, batch: &mut Value, ledger: &mut Ledger) {
        for key in ["output_file_id", "input_file_id"] {
            if let Some(raw) = batch
                .get_mut(key)
                .and_then(|slot| self.seal_field(identity, slot))
            {
                ledger.added.push(raw);
            }
        }
    }

    /// Seals one event of a streamed chat answer: the generated files in
    /// its `data:` JSON (a v1 delta's content, v2 `files` parts) and the
    /// `thread_id`. An event that names none passes as it is, unparsed.
    fn seal_event(&self, identity: &str, event: &[u8], ledger: &mut Ledger) -> Option<Vec<u8>> {
        if !contains(event, b"src=")
            && !contains(event, b"cover=")
            && !contains(event, b"\"files\"")
            && !contains(event, b"\"thread_id\"")
        {
            return None;
        }
        let text = std::str::from_utf8(event).ok()?;
        let mut out = String::with_capacity(event.len() + 64);
        let mut changed = false;
        for line in text.split_inclusive('\n') {
            let Some(data) = line.strip_prefix("data:") else {
                out.push_str(line);
                continue;
            };
            let ending = &data[data.trim_end_matches(['\r', '\n']).len()..];
            let Ok(mut json) = serde_json::from_str::<Value>(data.trim()) else {
                out.push_str(line);
                continue;
            };
            if let Some(thread) = json.get_mut("thread_id") {
                self.seal_field(identity, thread);
            }
            if let Some(choices) = json.get_mut("choices").and_then(Value::as_array_mut) {
                for choice in choices {
                    if let Some(Value::String(content)) = choice
                        .get_mut("delta")
                        .and_then(|delta| delta.get_mut("content"))
                    {
                        *content = self.seal_media(identity, content, ledger);
                    }
                }
            }
            self.seal_chat_answer(identity, &mut json, ledger);
            out.push_str("data: ");
            out.push_str(&json.to_string());
            out.push_str(ending);
            changed = true;
        }
        changed.then(|| out.into_bytes())
    }

    /// Seals the generated files of a chat answer: `<img src="…">` and
    /// `<video cover="…" src="…">` in v1 content, `files` parts in v2.
    fn seal_chat_answer(&self, identity: &str, json: &mut Value, ledger: &mut Ledger) {
        if let Some(choices) = json.get_mut("choices").and_then(Value::as_array_mut) {
            for choice in choices {
                if let Some(Value::String(content)) = choice
                    .get_mut("message")
                    .and_then(|message| message.get_mut("content"))
                {
                    *content = self.seal_media(identity, content, ledger);
                }
            }
        }
        if let Some(messages) = json.get_mut("messages").and_then(Value::as_array_mut) {
            for message in messages {
                if let Some(parts) = message.get_mut("content").and_then(Value::as_array_mut) {
                    for part in parts {
                        if let Some(files) = part.get_mut("files").and_then(Value::as_array_mut) {
                            for file in files {
                                let slot = match file {
                                    Value::Object(object) => object.get_mut("id"),
                                    other => Some(other),
                                };
                                if let Some(raw) = slot.and_then(|s| self.seal_field(identity, s)) {
                                    ledger.added.push(raw);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Content with the file id of every `src="…"` and `cover="…"` sealed.
    fn seal_media(&self, identity: &str, content: &str, ledger: &mut Ledger) -> String {
        let mut out = String::with_capacity(content.len());
        let mut rest = content;
        while let Some((at, attribute)) = ["src=\"", "cover=\""]
            .iter()
            .filter_map(|attribute| rest.find(attribute).map(|at| (at, *attribute)))
            .min_by_key(|(at, _)| *at)
        {
            let start = at + attribute.len();
            out.push_str(&rest[..start]);
            rest = &rest[start..];
            let Some(end) = rest.find('"') else { break };
            let raw = &rest[..end];
            if raw.is_empty() || raw.contains(SEPARATOR) || raw.contains(['/', ':']) {
                out.push_str(raw);
            } else {
                out.push_str(&self.seal(identity, raw));
                ledger.added.push(raw.to_owned());
            }
            rest = &rest[end..];
        }
        out.push_str(rest);
        out
    }

    /// Seals the string in `slot`; returns the raw id it held.
    fn seal_field(&self, identity: &str, slot: &mut Value) -> Option<String> {
        let Value::String(raw) = slot else {
            return None;
        };
        let raw = std::mem::take(raw);
        *slot = Value::String(self.seal(identity, &raw));
        Some(raw)
    }

    /// `{raw}~{tag}`.
    pub(crate) fn seal(&self, identity: &str, raw: &str) -> String {
        let mut sealed = String::with_capacity(raw.len() + 1 + TAG_LEN);
        sealed.push_str(raw);
        sealed.push(SEPARATOR);
        sealed.push_str(&self.tag(identity, raw));
        sealed
    }

    /// The raw id of a sealed one, if its tag is the caller's.
    pub(crate) fn open<'s>(&self, identity: &str, sealed: &'s str) -> Option<&'s str> {
        let (raw, tag) = sealed.rsplit_once(SEPARATOR)?;
        if raw.is_empty() || tag.len() != TAG_LEN {
            return None;
        }
        let expected = self.tag(identity, raw);
        let difference = expected
            .bytes()
            .zip(tag.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        (difference == 0).then_some(raw)
    }

    fn tag(&self, identity: &str, raw: &str) -> String {
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.key) {
            Ok(mac) => mac,
            // HMAC takes keys of any length; an impossible failure seals
            // nothing that would ever open.
            Err(_) => return String::new(),
        };
        for part in [identity.as_bytes(), raw.as_bytes()] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        let digest = mac.finalize().into_bytes();
        let mut tag = String::with_capacity(TAG_LEN);
        for &byte in digest.iter().take(TAG_BYTES) {
            tag.push(char::from(HEX[usize::from(byte >> 4)]));
            tag.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        tag
    }

    /// Records what an answer created and deleted: in this instance's
    /// memory always, and in Redis when one is configured, so every
    /// instance lists it. A Redis failure is logged and costs only the
    /// listing on other instances: the sealed ids work everywhere anyway.
    async fn remember(&self, identity: &str, ledger: &Ledger) {
        if ledger.added.is_empty() && ledger.removed.is_empty() {
            return;
        }
        self.remember_in_memory(identity, ledger);
        let Some(redis) = &self.redis else { return };
        let key = list_key(redis, identity);
        let outcome = redis
            .run(|mut connection| {
                let mut pipe = ::redis::pipe();
                if !ledger.added.is_empty() {
                    pipe.cmd("SADD").arg(&key).arg(&ledger.added).ignore();
                }
                if !ledger.removed.is_empty() {
                    pipe.cmd("SREM").arg(&key).arg(&ledger.removed).ignore();
                }
                async move { pipe.query_async::<()>(&mut connection).await }
            })
            .await;
        if let Err(err) = outcome {
            tracing::warn!(error = %err.0, "could not record object ownership in Redis; other instances will not list it");
        }
    }

    fn remember_in_memory(&self, identity: &str, ledger: &Ledger) {
        let mut listed = self.listed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(owned) = listed.get_mut(identity) {
            for raw in &ledger.removed {
                owned.remove(raw);
            }
        }
        if ledger.added.is_empty()
            || (!listed.contains_key(identity) && listed.len() >= MAX_IDENTITIES)
        {
            return;
        }
        let owned = listed.entry(identity.to_owned()).or_default();
        for raw in &ledger.added {
            if owned.len() < MAX_OBJECTS_PER_IDENTITY {
                owned.insert(raw.clone());
            }
        }
    }

    /// The raw ids an identity owns: Redis's set and this instance's
    /// memory together (both hold only the caller's own ids).
    async fn owned(&self, identity: &str) -> HashSet<String> {
        let mut owned = self.owned_in_memory(identity);
        if let Some(redis) = &self.redis {
            let key = list_key(redis, identity);
            let members = redis
                .run(|mut connection| {
                    let key = key.clone();
                    async move {
                        ::redis::cmd("SMEMBERS")
                            .arg(&key)
                            .query_async::<Vec<String>>(&mut connection)
                            .await
                    }
                })
                .await;
            match members {
                Ok(members) => owned.extend(members),
                Err(err) => {
                    tracing::warn!(error = %err.0, "could not read object ownership from Redis; listing what this instance recorded");
                }
            }
        }
        owned
    }

    fn owned_in_memory(&self, identity: &str) -> HashSet<String> {
        let listed = self.listed.lock().unwrap_or_else(|p| p.into_inner());
        listed.get(identity).cloned().unwrap_or_default()
    }
}

/// A batch body the proxy cannot check line by line; `line` 0 when the
/// body is not text at all.
fn batch_line_error(line: usize) -> Error {
    Error::InvalidRequest {
        message: if line == 0 {
            "the batch is not UTF-8 text".to_owned()
        } else {
            format!("line {line} of the batch is not a JSON object")
        },
        param: (line > 0).then(|| format!("line {line}")),
        code: "batch_not_jsonl",
        hint: "Send a batch as JSONL (one JSON object per line), naming only files, threads and assistants this proxy gave you.",
    }
}

/// What one answer created and deleted, for the lists.
#[derive(Debug, Default)]
struct Ledger {
    added: Vec<String>,
    removed: Vec<String>,
}

/// The Redis set of one identity's files; the identity enters as a digest
/// (a JWT subject may be any string).
fn list_key(redis: &SharedRedis, identity: &str) -> String {
    let digest = Sha256::digest(identity.as_bytes());
    let mut id = String::with_capacity(32);
    for &byte in digest.iter().take(16) {
        id.push(char::from(HEX[usize::from(byte >> 4)]));
        id.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    redis.key("owned-files", &id)
}

/// A streamed chat answer on its way to the client, with the ids it hands
/// out sealed event by event. Only the event under way is held back (an
/// id must not be cut between two frames); every complete event goes out
/// as soon as it is complete, and an event longer than
/// [`MAX_HELD_EVENT`] goes out as it is.
struct SealedStream {
    inner: ProxyBody,
    ownership: Arc<Ownership>,
    identity: String,
    /// The bytes of the event under way.
    pending: Vec<u8>,
    ended: bool,
}

const MAX_HELD_EVENT: usize = 256 * 1024;

impl SealedStream {
    /// The complete events in `pending`, sealed, and the rest kept.
    fn take_complete(&mut self) -> Option<Bytes> {
        let end = last_event_end(&self.pending)
            .or_else(|| (self.pending.len() > MAX_HELD_EVENT).then_some(self.pending.len()))?;
        let rest = self.pending.split_off(end);
        let events = std::mem::replace(&mut self.pending, rest);
        Some(self.seal(events))
    }

    fn seal(&self, events: Vec<u8>) -> Bytes {
        let mut ledger = Ledger::default();
        let sealed = self
            .ownership
            .seal_event(&self.identity, &events, &mut ledger);
        // Streamed files are listed by this instance only (no await here).
        self.ownership.remember_in_memory(&self.identity, &ledger);
        Bytes::from(sealed.unwrap_or(events))
    }
}

/// Where the last complete SSE event in `bytes` ends (after its blank
/// line), in any of the line endings SSE allows.
fn last_event_end(bytes: &[u8]) -> Option<usize> {
    (1..bytes.len()).rev().find_map(|at| {
        let blank = match (bytes[at - 1], bytes[at]) {
            (b'\n', b'\n') | (b'\r', b'\r') => true,
            (b'\r', b'\n') => at >= 3 && bytes[at - 3..at - 1] == *b"\r\n",
            _ => false,
        };
        blank.then_some(at + 1)
    })
}

impl http_body::Body for SealedStream {
    type Data = Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        use std::task::Poll;
        loop {
            if self.ended {
                if self.pending.is_empty() {
                    return Poll::Ready(None);
                }
                let events = std::mem::take(&mut self.pending);
                return Poll::Ready(Some(Ok(http_body::Frame::data(self.seal(events)))));
            }
            match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        self.pending.extend_from_slice(&data);
                        if let Some(events) = self.take_complete() {
                            return Poll::Ready(Some(Ok(http_body::Frame::data(events))));
                        }
                    }
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Poll::Ready(Some(Err(err))) => return Poll::Ready(Some(Err(err))),
                Poll::Ready(None) => self.ended = true,
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.pending.is_empty()
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The tag key: the session secret narrowed to this one use, so a tag says
/// nothing about the secret and no session token is a tag. It does not
/// depend on who may call, so adding an API key keeps everyone's objects.
fn tag_key(secret: &[u8]) -> Vec<u8> {
    match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(b"gigachat-proxy object ownership tag key v1");
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => secret.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    const ALICE: &str = "key:aaaaaaaaaaaa";
    const BOB: &str = "key:bbbbbbbbbbbb";
    const ID: &str = "c757a9c5-1b2d-4f1e-9d7a-0123456789ab";

    fn ownership() -> Ownership {
        Ownership::new(
            &OwnershipConfig {
                enabled: true,
                admins: vec!["sub:root".into()],
            },
            &Secret::new(vec![7; 32]),
            None,
        )
    }

    #[test]
    fn operators_are_listed_keys_or_holders_of_the_admin_scope() {
        let own = ownership();
        let who = |key: &str, operator: bool| Identity {
            key: key.into(),
            anonymous: false,
            token_budget: None,
            operator,
        };
        assert!(own.is_operator(&who("sub:root", false)));
        assert!(own.is_operator(&who(ALICE, true)));
        assert!(!own.is_operator(&who(ALICE, false)));
    }

    /// An answer rewritten and its records kept, as `seal_answer` does
    /// without Redis.
    /// A `HEAD` of a list gets GigaChat's empty body: answered (never a
    /// 500), and without the length of everyone's list.
    #[tokio::test]
    async fn a_head_of_a_list_is_answered_without_its_length() {
        let own = Arc::new(ownership());
        for rewrite in [
            AnswerRewrite::FileList,
            AnswerRewrite::Batches {
                asked: Box::default(),
            },
        ] {
            let mut response = Response::new(crate::body::empty());
            response.headers_mut().insert(
                header::CONTENT_LENGTH,
                http::HeaderValue::from_static("5120"),
            );
            let mut answer = Some(Bytes::new());
            own.seal_answer(ALICE, rewrite, &mut response, false, &mut answer)
                .await
                .unwrap();
            assert!(response.headers().get(header::CONTENT_LENGTH).is_none());
        }
        // A body that is not a list still fails closed.
        let mut response = Response::new(crate::body::empty());
        let mut answer = Some(Bytes::from_static(b"<html>"));
        assert!(
            own.seal_answer(
                ALICE,
                AnswerRewrite::FileList,
                &mut response,
                false,
                &mut answer
            )
            .await
            .is_err()
        );
    }

    fn rewrite(own: &Ownership, identity: &str, rewrite: AnswerRewrite, answer: &[u8]) -> Value {
        let mut ledger = Ledger::default();
        let owned = own.owned_in_memory(identity);
        let bytes = own
            .rewrite_answer(identity, &rewrite, answer, &owned, &mut ledger)
            .unwrap();
        own.remember_in_memory(identity, &ledger);
        serde_json::from_slice(&bytes).unwrap()
    }

    fn config(platform: Platform, vars: &[(&str, &str)]) -> Result<OwnershipConfig, ConfigError> {
        let lookup = |name: &str| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        };
        let env = Env::new(&lookup);
        let access = AccessConfig::from_env(&env).unwrap();
        OwnershipConfig::from_env(&env, platform, &access)
    }

    #[test]
    fn ownership_is_on_where_callers_are_many_and_admins_are_known_keys() {
        const KEY: (&str, &str) = ("GIGACHAT_PROXY_API_KEYS", "operator-key-0123456789");
        assert!(!config(Platform::Local, &[]).unwrap().enabled);
        assert!(config(Platform::Local, &[KEY]).unwrap().enabled);
        assert!(config(Platform::Vercel, &[]).unwrap().enabled);
        assert!(
            !config(Platform::Lambda, &[(VAR_OWNERSHIP, "off")])
                .unwrap()
                .enabled
        );
        let admins = config(
            Platform::Local,
            &[KEY, (VAR_ADMIN_KEYS, "operator-key-0123456789, sub:alice")],
        )
        .unwrap()
        .admins;
        assert_eq!(admins.len(), 2);
        assert!(admins[0].starts_with("key:") && admins[1] == "sub:alice");
        for bad in ["not-a-configured-key-0123", "sub:"] {
            let err = config(Platform::Local, &[KEY, (VAR_ADMIN_KEYS, bad)]).unwrap_err();
            assert_eq!(err.variable, VAR_ADMIN_KEYS);
            assert!(
                !err.problem.contains(bad) || bad == "sub:",
                "{}",
                err.problem
            );
        }
    }

    #[test]
    fn a_sealed_id_opens_only_for_its_owner_and_only_untouched() {
        let own = ownership();
        let sealed = own.seal(ALICE, ID);
        assert!(sealed.starts_with(ID) && sealed.contains(SEPARATOR));
        assert_eq!(own.open(ALICE, &sealed), Some(ID));
        assert_eq!(own.open(BOB, &sealed), None, "another identity");
        assert_eq!(own.open(ALICE, ID), None, "no tag");
        assert_eq!(
            own.open(ALICE, &sealed[..sealed.len() - 1]),
            None,
            "truncated"
        );
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 1;
        tampered[last] = if tampered[last] == b'0' { b'1' } else { b'0' };
        assert_eq!(
            own.open(ALICE, std::str::from_utf8(&tampered).unwrap()),
            None
        );
        // The tag of one id does not open another.
        let (_, tag) = sealed.rsplit_once(SEPARATOR).unwrap();
        assert_eq!(own.open(ALICE, &format!("{ID}x~{tag}")), None);
        // Separators in odd places.
        for odd in [
            format!("~{tag}"),
            format!("{sealed}~"),
            format!("{ID}~~{tag}"),
            format!("{ID}~{tag}~{tag}"),
            "~".to_owned(),
            String::new(),
        ] {
            assert_eq!(own.open(ALICE, &odd), None, "{odd}");
        }
        // Another secret (another deployment) does not open it either.
        let other = Ownership::new(
            &OwnershipConfig {
                enabled: true,
                admins: vec![],
            },
            &Secret::new(vec![8; 32]),
            None,
        );
        assert_eq!(other.open(ALICE, &sealed), None);
    }

    #[test]
    fn file_paths_open_for_the_owner_and_are_not_found_for_others() {
        let own = ownership();
        let sealed = own.seal(ALICE, ID);
        let body = Bytes::new();
        for (path, expected) in [
            (format!("files/{sealed}"), format!("files/{ID}")),
            (
                format!("v1/files/{sealed}/content"),
                format!("v1/files/{ID}/content"),
            ),
            (
                format!("files/{sealed}/delete"),
                format!("files/{ID}/delete"),
            ),
        ] {
            let method = if path.ends_with("delete") {
                http::Method::POST
            } else {
                http::Method::GET
            };
            let endpoint = Endpoint::classify(&method, &path, crate::endpoint::ApiVersion::V1);
            let checked = own
                .check_request(ALICE, false, endpoint, &path, &body)
                .unwrap();
            assert_eq!(checked.path.as_deref(), Some(expected.as_str()));
            assert!(matches!(
                own.check_request(BOB, false, endpoint, &path, &body),
                Err(Error::ObjectNotFound("File"))
            ));
        }
        let raw = format!("files/{ID}");
        assert!(matches!(
            own.check_request(ALICE, false, Endpoint::FileInfo, &raw, &body),
            Err(Error::ObjectNotFound("File"))
        ));
        // The operator passes unchanged.
        let checked = own
            .check_request("sub:root", true, Endpoint::FileInfo, &raw, &body)
            .unwrap();
        assert!(checked.path.is_none());
    }

    #[test]
    fn chat_bodies_carry_only_the_callers_files() {
        let own = ownership();
        let sealed = own.seal(ALICE, ID);
        let v1 = Bytes::from(
            serde_json::json!({"model":"GigaChat","messages":[{"role":"user","content":"x","attachments":[sealed]}]})
                .to_string(),
        );
        let opened = own
            .check_request(ALICE, false, Endpoint::Chat, "chat/completions", &v1)
            .unwrap()
            .body
            .unwrap();
        let opened: Value = serde_json::from_slice(&opened).unwrap();
        assert_eq!(opened["messages"][0]["attachments"][0], ID);
        assert!(matches!(
            own.check_request(BOB, false, Endpoint::Chat, "chat/completions", &v1),
            Err(Error::ObjectNotFound("File"))
        ));
        let v2 = Bytes::from(
            serde_json::json!({"messages":[{"role":"user","content":[{"text":"x"},{"files":[{"id":sealed}]}]}]})
                .to_string(),
        );
        let opened = own
            .check_request(ALICE, false, Endpoint::ChatV2, "v2/chat/completions", &v2)
            .unwrap()
            .body
            .unwrap();
        let opened: Value = serde_json::from_slice(&opened).unwrap();
        assert_eq!(opened["messages"][0]["content"][1]["files"][0]["id"], ID);
        assert!(
            own.check_request(BOB, false, Endpoint::ChatV2, "v2/chat/completions", &v2)
                .is_err()
        );
        // A duplicated key is read once, the last one, and sent that way.
        let duplicated = Bytes::from(format!(
            r#"{{"messages":[{{"role":"user","content":"x","attachments":["{sealed}"],"attachments":["{ID}"]}}]}}"#
        ));
        assert!(
            own.check_request(
                ALICE,
                false,
                Endpoint::Chat,
                "chat/completions",
                &duplicated
            )
            .is_err()
        );
        // Threads: a sealed one opens for its owner only.
        let thread = own.seal(ALICE, "thread-1");
        let continued = Bytes::from(format!(
            r#"{{"storage":{{"thread_id":"{thread}"}},"messages":[]}}"#
        ));
        let opened = own
            .check_request(
                ALICE,
                false,
                Endpoint::ChatV2,
                "v2/chat/completions",
                &continued,
            )
            .unwrap()
            .body
            .unwrap();
        let opened: Value = serde_json::from_slice(&opened).unwrap();
        assert_eq!(opened["storage"]["thread_id"], "thread-1");
        for foreign in [
            continued,
            Bytes::from_static(br#"{"storage":{"thread_id":"thread-1"},"messages":[]}"#),
            Bytes::from_static(br#"{"storage":{"thread_id":7},"messages":[]}"#),
        ] {
            assert!(matches!(
                own.check_request(
                    BOB,
                    false,
                    Endpoint::ChatV2,
                    "v2/chat/completions",
                    &foreign
                ),
                Err(Error::ObjectNotFound("Thread"))
            ));
        }
        for refused in [
            &br#"{"storage":{"assistant_id":"a"},"messages":[]}"#[..],
            br#"{"assistant_id":"a","messages":[]}"#,
        ] {
            assert!(matches!(
                own.check_request(
                    ALICE,
                    false,
                    Endpoint::ChatV2,
                    "v2/chat/completions",
                    &Bytes::from_static(refused)
                ),
                Err(Error::OperatorOnly)
            ));
        }
        assert!(matches!(
            own.check_request(
                ALICE,
                false,
                Endpoint::Chat,
                "chat/completions",
                &Bytes::from_static(b"{bad")
            ),
            Err(Error::OwnershipUnreadableBody)
        ));
    }

    #[test]
    fn stream_events_end_at_a_blank_line_in_any_line_ending() {
        assert_eq!(last_event_end(b"data: a\n\ndata: b"), Some(9));
        assert_eq!(last_event_end(b"data: a\r\n\r\n"), Some(11));
        assert_eq!(last_event_end(b"data: a\r\rdata"), Some(9));
        assert_eq!(last_event_end(b"data: a\ndata: b\r\n"), None);
        assert_eq!(last_event_end(b""), None);
        let own = ownership();
        let mut ledger = Ledger::default();
        let event =
            b"data: {\"choices\":[{\"delta\":{\"content\":\"<img src=\\\"f-1\\\"/>\"}}]}\r\n\r\n";
        let sealed = own.seal_event(ALICE, event, &mut ledger).unwrap();
        let sealed = String::from_utf8(sealed).unwrap();
        assert!(
            sealed.ends_with("\r\n\r\n") && sealed.contains('~'),
            "{sealed}"
        );
        assert_eq!(ledger.added, ["f-1"]);
        assert!(
            own.seal_event(ALICE, b"data: {\"choices\":[]}\n\n", &mut ledger)
                .is_none()
        );
    }

    #[test]
    fn answers_are_sealed_and_lists_hold_only_the_callers_files() {
        let own = ownership();
        let upload = format!(r#"{{"id":"{ID}","object":"file"}}"#);
        let uploaded = rewrite(&own, ALICE, AnswerRewrite::File, upload.as_bytes());
        assert_eq!(own.open(ALICE, uploaded["id"].as_str().unwrap()), Some(ID));
        let list = format!(r#"{{"data":[{{"id":"{ID}"}},{{"id":"someone-else"}}]}}"#);
        let mine = rewrite(&own, ALICE, AnswerRewrite::FileList, list.as_bytes());
        assert_eq!(mine["data"].as_array().unwrap().len(), 1);
        assert_eq!(mine["data"][0]["id"], uploaded["id"]);
        let theirs = rewrite(&own, BOB, AnswerRewrite::FileList, list.as_bytes());
        assert!(theirs["data"].as_array().unwrap().is_empty());
        let image = r#"{"choices":[{"message":{"role":"assistant","content":"Here <img src=\"img-1\" fuse=\"true\"/> done"}}]}"#;
        let chat = rewrite(&own, BOB, AnswerRewrite::Chat, image.as_bytes());
        let content = chat["choices"][0]["message"]["content"].as_str().unwrap();
        let sealed = content
            .split("src=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(own.open(BOB, sealed), Some("img-1"));
        assert!(content.ends_with("fuse=\"true\"/> done"));
        assert!(own.owned_in_memory(BOB).contains("img-1"));
        let threaded = rewrite(
            &own,
            BOB,
            AnswerRewrite::Chat,
            br#"{"thread_id":"t-9","messages":[]}"#,
        );
        assert_eq!(
            own.open(BOB, threaded["thread_id"].as_str().unwrap()),
            Some("t-9")
        );
        // A deletion takes the file off the list.
        let deleted = format!(r#"{{"id":"{ID}","deleted":true}}"#);
        rewrite(&own, ALICE, AnswerRewrite::Deleted, deleted.as_bytes());
        let mine = rewrite(&own, ALICE, AnswerRewrite::FileList, list.as_bytes());
        assert!(mine["data"].as_array().unwrap().is_empty());
    }

    fn batch_call(
        own: &Ownership,
        identity: &str,
        method: http::Method,
        query: Option<&str>,
        body: &[u8],
    ) -> Result<Checked, Error> {
        own.check_call(
            identity,
            false,
            Endpoint::Batches,
            &method,
            "batches",
            query,
            &Bytes::copy_from_slice(body),
        )
    }

    #[test]
    fn batch_queries_open_for_the_owner_only_and_are_sent_as_checked() {
        let own = ownership();
        let sealed = own.seal(ALICE, ID);
        let query = format!("batch_id={sealed}");
        let checked = batch_call(&own, ALICE, http::Method::GET, Some(&query), b"").unwrap();
        assert_eq!(
            checked.query.as_deref(),
            Some(format!("batch_id={ID}").as_str())
        );
        assert_eq!(
            checked.answer,
            AnswerRewrite::Batches {
                asked: vec![ID.to_owned()].into_boxed_slice()
            }
        );
        // The tag encoded the way some clients encode `~` opens too.
        let encoded = format!("batch_id={}", sealed.replace('~', "%7E"));
        let checked = batch_call(&own, ALICE, http::Method::GET, Some(&encoded), b"").unwrap();
        assert_eq!(
            checked.query.as_deref(),
            Some(format!("batch_id={ID}").as_str())
        );
        // Another identity, the raw id, an encoded name, a duplicate: none
        // reaches GigaChat.
        for foreign in [
            (BOB, query.clone()),
            (ALICE, format!("batch_id={ID}")),
            (ALICE, format!("batch%5Fid={ID}")),
            (ALICE, format!("batch_id={sealed}&batch_id={ID}")),
            (ALICE, "batch_id=".to_owned()),
            (ALICE, "batch_id=%FF".to_owned()),
        ] {
            assert!(
                matches!(
                    batch_call(&own, foreign.0, http::Method::GET, Some(&foreign.1), b""),
                    Err(Error::ObjectNotFound("Batch"))
                ),
                "{foreign:?}"
            );
        }
        // A separator the proxy does not split at is sent encoded, so no
        // server can read a `batch_id` in it.
        let checked = batch_call(
            &own,
            ALICE,
            http::Method::GET,
            Some(&format!("x=1;batch_id={ID}")),
            b"",
        )
        .unwrap();
        assert_eq!(
            checked.query.as_deref(),
            Some(format!("x=1%3Bbatch_id%3D{ID}").as_str())
        );
        // The list asks for no batch: the caller's recorded ones answer.
        let listed = batch_call(&own, ALICE, http::Method::GET, None, b"").unwrap();
        assert_eq!(
            listed.answer,
            AnswerRewrite::Batches {
                asked: Box::new([])
            }
        );
        assert!(listed.query.is_none());
        // Calls GigaChat's batch API does not have are the operator's.
        assert!(matches!(
            batch_call(&own, ALICE, http::Method::DELETE, None, b""),
            Err(Error::OperatorOnly)
        ));
        assert!(matches!(
            own.check_call(
                ALICE,
                false,
                Endpoint::Batches,
                &http::Method::GET,
                "batches/x",
                None,
                &Bytes::new()
            ),
            Err(Error::OperatorOnly)
        ));
        // The operator passes unchanged.
        let operator = own
            .check_call(
                "sub:root",
                true,
                Endpoint::Batches,
                &http::Method::GET,
                "batches",
                Some(&format!("batch_id={ID}")),
                &Bytes::new(),
            )
            .unwrap();
        assert!(operator.query.is_none() && operator.answer == AnswerRewrite::None);
    }

    #[test]
    fn batch_lines_carry_only_the_callers_objects() {
        let own = ownership();
        let sealed = own.seal(ALICE, ID);
        let thread = own.seal(ALICE, "thread-1");
        let body = format!(
            "{}\n\n{}\r\n{}\n",
            serde_json::json!({"key": "1", "request": {"model": "GigaChat", "messages": [
                {"role": "user", "content": "x\u{2028}y", "attachments": [sealed]}]}}),
            serde_json::json!({"key": "2", "request": {"messages": [
                {"role": "user", "content": [{"text": "x"}, {"files": [{"id": sealed}]}]}],
                "storage": {"thread_id": thread}}}),
            serde_json::json!({"key": "3", "request": {"model": "Embeddings", "input": ["a"],
                "functions": [{"name": "f", "parameters": {"properties": {"files": {"type": "array"}}}}]}}),
        );
        let checked = batch_call(
            &own,
            ALICE,
            http::Method::POST,
            Some("method=chat_completions"),
            body.as_bytes(),
        )
        .unwrap();
        assert_eq!(checked.answer, AnswerRewrite::BatchCreated);
        assert_eq!(checked.query.as_deref(), Some("method=chat_completions"));
        let sent = String::from_utf8(checked.body.unwrap().to_vec()).unwrap();
        let lines: Vec<&str> = sent.split('\n').collect();
        assert_eq!(lines.len(), 5, "{sent}");
        assert!(lines[1].is_empty() && lines[4].is_empty());
        // A line separator inside a string is escaped: one line stays one.
        assert!(lines[0].contains("\\u2028") && !lines[0].contains('\u{2028}'));
        let first: Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(first["request"]["messages"][0]["attachments"][0], ID);
        assert_eq!(first["request"]["messages"][0]["content"], "x\u{2028}y");
        let second: Value = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(
            second["request"]["messages"][0]["content"][1]["files"][0]["id"],
            ID
        );
        assert_eq!(second["request"]["storage"]["thread_id"], "thread-1");
        // Another identity, or a raw id anywhere a file is named, is the
        // 404 of a missing file.
        assert!(matches!(
            batch_call(&own, BOB, http::Method::POST, None, body.as_bytes()),
            Err(Error::ObjectNotFound("File"))
        ));
        for foreign in [
            format!(r#"{{"request":{{"messages":[{{"attachments":["{ID}"]}}]}}}}"#),
            format!(r#"{{"body":{{"file_ids":["{ID}"]}}}}"#),
            format!(r#"{{"request":{{"files":[{{"file_id":"{ID}"}}]}}}}"#),
            r#"{"request":{"messages":[{"attachments":[7]}]}}"#.to_owned(),
        ] {
            assert!(
                matches!(
                    batch_call(&own, ALICE, http::Method::POST, None, foreign.as_bytes()),
                    Err(Error::ObjectNotFound("File"))
                ),
                "{foreign}"
            );
        }
        assert!(matches!(
            batch_call(
                &own,
                BOB,
                http::Method::POST,
                None,
                format!(r#"{{"request":{{"storage":{{"thread_id":"{thread}"}}}}}}"#).as_bytes()
            ),
            Err(Error::ObjectNotFound("Thread"))
        ));
        assert!(matches!(
            batch_call(
                &own,
                ALICE,
                http::Method::POST,
                None,
                br#"{"request":{"assistant_id":"a"}}"#
            ),
            Err(Error::OperatorOnly)
        ));
        for (unreadable, line) in [
            (&b"{\"a\":1}\n{bad"[..], Some("line 2")),
            (b"[1]", Some("line 1")),
            (b"{\"a\":1}\r{\"b\":2}", Some("line 1")),
            (b"\xff", None),
        ] {
            match batch_call(&own, ALICE, http::Method::POST, None, unreadable) {
                Err(Error::InvalidRequest { param, code, .. }) => {
                    assert_eq!(param.as_deref(), line);
                    assert_eq!(code, "batch_not_jsonl");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn batch_answers_are_sealed_and_lists_hold_only_the_callers_batches() {
        let own = ownership();
        let created = rewrite(
            &own,
            ALICE,
            AnswerRewrite::BatchCreated,
            br#"{"id":"b-1","method":"chat_completions","request_counts":{"total":2},"status":"created"}"#,
        );
        let sealed = created["id"].as_str().unwrap().to_owned();
        assert_eq!(own.open(ALICE, &sealed), Some("b-1"));
        assert_eq!(created["request_counts"]["total"], 2);
        let list = br#"{"batches":[{"id":"b-1","status":"completed","output_file_id":"out-1"},{"id":"b-2","output_file_id":"out-2"}]}"#;
        let listed = |identity: &str, asked: &[&str]| {
            rewrite(
                &own,
                identity,
                AnswerRewrite::Batches {
                    asked: asked.iter().map(|id| (*id).to_owned()).collect(),
                },
                list,
            )
        };
        let mine = listed(ALICE, &[]);
        let batches = mine["batches"].as_array().unwrap();
        assert_eq!(batches.len(), 1, "{mine}");
        assert_eq!(batches[0]["id"], sealed.as_str());
        let output = batches[0]["output_file_id"].as_str().unwrap();
        assert_eq!(own.open(ALICE, output), Some("out-1"));
        assert_eq!(own.open(BOB, output), None);
        // The results are the owner's file: listed, and downloadable.
        assert!(own.owned_in_memory(ALICE).contains("out-1"));
        let path = format!("files/{output}/content");
        let checked = own
            .check_request(ALICE, false, Endpoint::FileContent, &path, &Bytes::new())
            .unwrap();
        assert_eq!(checked.path.as_deref(), Some("files/out-1/content"));
        assert!(listed(BOB, &[])["batches"].as_array().unwrap().is_empty());
        // A batch asked for by its sealed id is the caller's even where
        // this instance has no record of it (another instance created it).
        let asked = listed(BOB, &["b-2"]);
        assert_eq!(asked["batches"].as_array().unwrap().len(), 1, "{asked}");
        assert_eq!(
            own.open(BOB, asked["batches"][0]["id"].as_str().unwrap()),
            Some("b-2")
        );
        // A list that cannot be read is not passed on.
        let mut ledger = Ledger::default();
        assert!(
            own.rewrite_answer(
                ALICE,
                &AnswerRewrite::Batches {
                    asked: Box::new([])
                },
                br#"{"data":[]}"#,
                &HashSet::new(),
                &mut ledger
            )
            .is_none()
        );
    }
}
