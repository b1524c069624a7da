//! Opening the sealed ids a call names, in its path, its query and its
//! body, for the call to go ahead with GigaChat's ids; an id that is not
//! the caller's refuses the call with the 404 of a missing object.

use super::*;

/// What kind of object an id names: the word of the 404 it gets when it
/// is not the caller's.
pub(super) const FILE: &str = "File";
pub(super) const THREAD: &str = "Thread";
pub(super) const ASSISTANT: &str = "Assistant";
pub(super) const BATCH: &str = "Batch";

impl Ownership {
    /// `POST batches?method=…` (a JSONL body) and `GET batches[?batch_id=]`:
    /// the `batch_id`s of the query and the objects the lines name are
    /// opened; any other batch call is the operator's.
    pub(super) fn check_batches(
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
        let (query, asked) = self.open_query(identity, query, &[("batch_id", BATCH)])?;
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

    /// A call of the assistants or the threads API, which opens what its
    /// row of [`STATEFUL_CALLS`] says.
    pub(super) fn check_stateful(
        &self,
        identity: &str,
        opens: Opens,
        query: Option<&str>,
        body: &Bytes,
    ) -> Result<Checked, Error> {
        match opens {
            Opens::Query(named, answer) => {
                let (query, asked) = self.open_query(identity, query, named)?;
                Ok(Checked {
                    path: None,
                    query,
                    body: None,
                    answer: answer.rewrite(asked),
                })
            }
            Opens::Body(answer) => {
                let mut checked = self.stateful_body(identity, query, body)?;
                checked.answer = answer.rewrite(checked.body.as_deref());
                Ok(checked)
            }
        }
    }

    /// A thread or assistant call with a JSON body: the body with every id
    /// it names opened, and a query that names none (these calls take no
    /// query, so one is refused rather than passed on unread). The answer
    /// is left for the caller to say.
    fn stateful_body(
        &self,
        identity: &str,
        query: Option<&str>,
        body: &Bytes,
    ) -> Result<Checked, Error> {
        if query.is_some_and(|query| !query.is_empty()) {
            return Err(Error::OperatorOnly);
        }
        let body = if body.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            let mut json: Value =
                serde_json::from_slice(body).map_err(|_| Error::OwnershipUnreadableBody)?;
            if !json.is_object() {
                return Err(Error::OwnershipUnreadableBody);
            }
            self.open_references(identity, &mut json)?;
            Some(
                serde_json::to_vec(&json)
                    .map(Bytes::from)
                    .map_err(|_| Error::OwnershipUnreadableBody)?,
            )
        };
        Ok(Checked {
            path: None,
            query: None,
            body,
            answer: AnswerRewrite::None,
        })
    }

    /// The query rebuilt with the ids of the `named` parameters opened, and
    /// those raw ids. Names and values are read decoded (`batch%5Fid` is
    /// `batch_id` to a server too) and the whole query is written back
    /// encoded strictly, so what GigaChat reads is exactly what was
    /// checked, whatever it takes for a separator (`;` included). A
    /// parameter repeated is checked every time.
    pub(super) fn open_query(
        &self,
        identity: &str,
        query: Option<&str>,
        named: &[(&str, &'static str)],
    ) -> Result<(Option<String>, Vec<String>), Error> {
        let Some(query) = query.filter(|query| !query.is_empty()) else {
            return Ok((None, Vec::new()));
        };
        let unreadable = named.first().map_or(FILE, |(_, kind)| kind);
        let decode = |text: &str| -> Result<String, Error> {
            let spaced = text.replace('+', " ");
            percent_decode_str(&spaced)
                .decode_utf8()
                .map(|text| text.into_owned())
                .map_err(|_| Error::ObjectNotFound(unreadable))
        };
        let mut rebuilt = String::with_capacity(query.len());
        let mut asked = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(name)?;
            let mut value = decode(value)?;
            if let Some((_, kind)) = named.iter().find(|(named, _)| *named == name) {
                value = self
                    .open(identity, &value)
                    .ok_or(Error::ObjectNotFound(kind))?;
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
    pub(super) fn open_batch_body(&self, identity: &str, body: &Bytes) -> Result<Bytes, Error> {
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

    /// Opens, in place, every id under a key that names an object, at any
    /// depth: files (`attachments`, `files`, `file_ids`, `file_id`: strings,
    /// or objects with `id`/`file_id`), threads (`thread_id`,
    /// `threads_ids`) and assistants (`assistant_id`, `assistants_ids`).
    /// `metadata` (the caller's free-form data), function declarations and
    /// function calls are text to GigaChat, which reads no object from
    /// them, so they are left as they are.
    pub(super) fn open_references(&self, identity: &str, value: &mut Value) -> Result<(), Error> {
        match value {
            Value::Array(items) => {
                for item in items {
                    self.open_references(identity, item)?;
                }
            }
            Value::Object(object) => {
                for (key, slot) in object.iter_mut() {
                    let kind = match key.as_str() {
                        "attachments" | "files" | "file_ids" | "file_id" => FILE,
                        "thread_id" | "threads_ids" => THREAD,
                        "assistant_id" | "assistants_ids" => ASSISTANT,
                        "metadata" | "functions" | "function_call" => continue,
                        _ => {
                            self.open_references(identity, slot)?;
                            continue;
                        }
                    };
                    self.open_slot(identity, slot, kind)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Opens the ids of one slot that names objects of `kind`: a string, a
    /// list of them, or (for files) objects with `id`/`file_id`; an object
    /// there is read for the keys it holds (a function's parameter schema
    /// may be called `files`). A number or a boolean names nothing the
    /// caller was given.
    fn open_slot(&self, identity: &str, slot: &mut Value, kind: &'static str) -> Result<(), Error> {
        match slot {
            Value::String(sealed) => {
                *sealed = self
                    .open(identity, sealed)
                    .ok_or(Error::ObjectNotFound(kind))?;
                Ok(())
            }
            Value::Array(items) => {
                for item in items {
                    match item {
                        Value::Object(object) if kind == FILE => {
                            for (key, inner) in object.iter_mut() {
                                if key == "id" || key == "file_id" {
                                    self.open_slot(identity, inner, FILE)?;
                                } else {
                                    self.open_references(identity, inner)?;
                                }
                            }
                        }
                        Value::Object(_) => self.open_references(identity, item)?,
                        other => self.open_slot(identity, other, kind)?,
                    }
                }
                Ok(())
            }
            Value::Object(_) => self.open_references(identity, slot),
            Value::Null => Ok(()),
            Value::Bool(_) | Value::Number(_) => Err(Error::ObjectNotFound(kind)),
        }
    }

    /// `[vN/]files/{sealed}[/…]` → the same path with the id opened.
    pub(super) fn open_file_path(
        &self,
        identity: &str,
        client_path: &str,
    ) -> Result<String, Error> {
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
        path.push_str(&raw);
        if !tail.is_empty() {
            path.push('/');
            path.push_str(tail);
        }
        Ok(path)
    }

    /// Opens every object a chat body names: v1 `attachments`, v2 `files`
    /// parts, the v2 thread (`storage.thread_id`) and assistant
    /// (`assistant_id`, `storage.assistant_id`). The body is parsed whole
    /// and sent as parsed, so what GigaChat reads is exactly what was
    /// checked (duplicated keys included: one reading, the last value, for
    /// both).
    pub(super) fn open_chat_body(&self, identity: &str, body: &Bytes) -> Result<Bytes, Error> {
        let mut json: Value =
            serde_json::from_slice(body).map_err(|_| Error::OwnershipUnreadableBody)?;
        let Some(top) = json.as_object_mut() else {
            return Err(Error::OwnershipUnreadableBody);
        };
        if let Some(assistant) = top.get_mut("assistant_id") {
            self.open_one(identity, assistant, ASSISTANT)?;
        }
        if let Some(storage) = top.get_mut("storage").and_then(Value::as_object_mut) {
            if let Some(thread) = storage.get_mut("thread_id") {
                self.open_one(identity, thread, THREAD)?;
            }
            if let Some(assistant) = storage.get_mut("assistant_id") {
                self.open_one(identity, assistant, ASSISTANT)?;
            }
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

    /// Opens one id in place: a string; `null` names nothing; anything
    /// else is refused as unknown.
    fn open_one(&self, identity: &str, slot: &mut Value, kind: &'static str) -> Result<(), Error> {
        match slot {
            Value::Null => Ok(()),
            Value::String(sealed) => {
                *sealed = self
                    .open(identity, sealed)
                    .ok_or(Error::ObjectNotFound(kind))?;
                Ok(())
            }
            _ => Err(Error::ObjectNotFound(kind)),
        }
    }

    /// Opens a list of file ids in place: strings (`attachments`) or, with
    /// `objects`, `{"id": …}` objects (v2 `files`); strings are accepted in
    /// both, anything else that is not `null` is refused as unknown.
    pub(super) fn open_id_list(
        &self,
        identity: &str,
        list: &mut Value,
        objects: bool,
    ) -> Result<(), Error> {
        let items = match list {
            Value::Null => return Ok(()),
            Value::Array(items) => items,
            _ => return Err(Error::ObjectNotFound(FILE)),
        };
        for item in items {
            let slot = match item {
                Value::Object(object) if objects => {
                    object.get_mut("id").ok_or(Error::ObjectNotFound(FILE))?
                }
                other => other,
            };
            if !slot.is_string() {
                return Err(Error::ObjectNotFound(FILE));
            }
            self.open_one(identity, slot, FILE)?;
        }
        Ok(())
    }
}

/// Where the ids of a call of the assistants or the threads API are, and
/// what its answer needs: its row of [`STATEFUL_CALLS`]. A call with no
/// row is the operator's.
pub(super) fn stateful_call(
    endpoint: Endpoint,
    method: &http::Method,
    client_path: &str,
) -> Option<Opens> {
    let verb = if *method == http::Method::GET || *method == http::Method::HEAD {
        Verb::Read
    } else if *method == http::Method::POST {
        Verb::Post
    } else {
        return None;
    };
    let path = split_version(client_path).1;
    STATEFUL_CALLS
        .iter()
        .find(|row| row.0 == endpoint && row.1 == verb && row.2 == path)
        .map(|&(.., opens)| opens)
}

/// How a call of the assistants and threads APIs is made: `HEAD` is `GET`
/// without the body, so it reads what `GET` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Read,
    Post,
}

/// Where a call's ids are, and what its answer needs.
#[derive(Clone, Copy)]
pub(super) enum Opens {
    /// The ids of the named query parameters (`(name, kind)`), every other
    /// parameter passed on as read.
    Query(&'static [(&'static str, &'static str)], QueryAnswer),
    /// Every id its JSON body names, anywhere; it takes no query.
    Body(BodyAnswer),
}

/// The answer to a read, from the ids its query asked for.
#[derive(Clone, Copy)]
pub(super) enum QueryAnswer {
    Stateful,
    /// A list of assistants, which may show the ones asked for.
    AssistantsAsked,
    /// A list of threads by assistant: it asks for no thread.
    ThreadsByAssistant,
}

impl QueryAnswer {
    fn rewrite(self, asked: Vec<String>) -> AnswerRewrite {
        match self {
            QueryAnswer::Stateful => AnswerRewrite::Stateful,
            QueryAnswer::AssistantsAsked => AnswerRewrite::Assistants {
                asked: asked.into_boxed_slice(),
            },
            QueryAnswer::ThreadsByAssistant => AnswerRewrite::Threads {
                asked: Box::new([]),
            },
        }
    }
}

/// The answer to a call with a body, from the body as opened.
#[derive(Clone, Copy)]
pub(super) enum BodyAnswer {
    Stateful,
    ThreadCreated,
    /// A list of the threads the body's `threads_ids` asks for: those are
    /// the caller's, so the list may show them.
    ThreadsAsked,
    /// A deletion of the object whose id is under this key: the raw id is
    /// kept to take it off the list once GigaChat confirms.
    Removed(&'static str),
}

impl BodyAnswer {
    fn rewrite(self, opened: Option<&[u8]>) -> AnswerRewrite {
        let json = || opened.and_then(|body| serde_json::from_slice::<Value>(body).ok());
        match self {
            BodyAnswer::Stateful => AnswerRewrite::Stateful,
            BodyAnswer::ThreadCreated => AnswerRewrite::ThreadCreated,
            BodyAnswer::ThreadsAsked => {
                let asked: Vec<String> = json()
                    .and_then(|json| match json.get("threads_ids") {
                        Some(Value::Array(ids)) => Some(
                            ids.iter()
                                .filter_map(Value::as_str)
                                .map(str::to_owned)
                                .collect(),
                        ),
                        _ => None,
                    })
                    .unwrap_or_default();
                AnswerRewrite::Threads {
                    asked: asked.into_boxed_slice(),
                }
            }
            BodyAnswer::Removed(key) => {
                match json().and_then(|json| json.get(key).and_then(Value::as_str).map(Box::from)) {
                    Some(raw) => AnswerRewrite::Removed { raw },
                    None => AnswerRewrite::Stateful,
                }
            }
        }
    }
}

/// Every call of the assistants and the threads API a caller may make,
/// by endpoint, verb and the path after the version: a call these APIs
/// gain is one row here.
const STATEFUL_CALLS: &[(Endpoint, Verb, &str, Opens)] = {
    use BodyAnswer::{Removed, ThreadCreated, ThreadsAsked};
    use Endpoint::{Assistants, Threads};
    use Opens::{Body, Query};
    use QueryAnswer::{AssistantsAsked, ThreadsByAssistant};
    use Verb::{Post, Read};
    const STATEFUL: Opens = Body(BodyAnswer::Stateful);
    const ASSISTANT_IDS: &[(&str, &str)] = &[("assistant_id", ASSISTANT)];
    const ASSISTANTS_IDS: &[(&str, &str)] = &[("assistants_ids", ASSISTANT)];
    const THREAD_ID: &[(&str, &str)] = &[("thread_id", THREAD)];
    &[
        (
            Assistants,
            Read,
            "assistants",
            Query(ASSISTANT_IDS, AssistantsAsked),
        ),
        (Assistants, Post, "assistants", STATEFUL),
        (Assistants, Post, "assistants/modify", STATEFUL),
        (Assistants, Post, "assistants/files/delete", STATEFUL),
        (
            Assistants,
            Post,
            "assistants/delete",
            Body(Removed("assistant_id")),
        ),
        (
            Threads,
            Read,
            "threads",
            Query(ASSISTANTS_IDS, ThreadsByAssistant),
        ),
        (
            Threads,
            Read,
            "threads/run",
            Query(THREAD_ID, QueryAnswer::Stateful),
        ),
        (
            Threads,
            Read,
            "threads/messages",
            Query(THREAD_ID, QueryAnswer::Stateful),
        ),
        (Threads, Post, "threads", Body(ThreadCreated)),
        (Threads, Post, "threads/retrieve", Body(ThreadsAsked)),
        (Threads, Post, "threads/delete", Body(Removed("thread_id"))),
        (Threads, Post, "threads/run", STATEFUL),
        (Threads, Post, "threads/messages", STATEFUL),
        (Threads, Post, "threads/messages/run", STATEFUL),
        (Threads, Post, "threads/messages/rerun", STATEFUL),
    ]
};

/// A batch body the proxy cannot check line by line; `line` 0 when the
/// body is not text at all.
pub(super) fn batch_line_error(line: usize) -> Error {
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
