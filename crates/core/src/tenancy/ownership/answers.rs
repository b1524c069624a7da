//! Sealing what an answer hands out, and keeping lists to the caller's objects.

use super::*;

impl Ownership {
    /// Seals what a checked call's answer hands out, when GigaChat
    /// answered 200: a JSON body the proxy read whole is rewritten, a
    /// stream (chat, thread runs) is sealed event by event. A list that
    /// cannot be read is not passed on, since it would name everyone's
    /// objects.
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
            if matches!(rewrite, AnswerRewrite::Chat | AnswerRewrite::Stateful) {
                let body = std::mem::replace(response.body_mut(), crate::body::empty());
                *response.body_mut() =
                    SealedStream::new(body, Arc::clone(self), identity.to_owned()).boxed();
            }
            return Ok(());
        }
        let owned = match &rewrite {
            AnswerRewrite::FileList => self.owned(identity).await,
            AnswerRewrite::Batches { asked } if asked.is_empty() => self.owned(identity).await,
            AnswerRewrite::Assistants { .. } | AnswerRewrite::Threads { .. } => {
                self.owned(identity).await
            }
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
            None if matches!(rewrite, AnswerRewrite::Assistants { .. }) => Err(Error::Internal(
                "GigaChat's assistant list could not be read to keep only the caller's assistants",
            )),
            None if matches!(rewrite, AnswerRewrite::Threads { .. }) => Err(Error::Internal(
                "GigaChat's thread list could not be read to keep only the caller's threads",
            )),
            None => Ok(()),
        }
    }

    /// Rewrites a whole 200 JSON answer for the caller; `None` when the
    /// answer is not what the call should answer (then the caller must not
    /// get it as it is if it could list others' objects).
    pub(super) fn rewrite_answer(
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
            && !contains(answer, b"\"assistant_id\"")
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
                // The thread the call started or continued (`storage`),
                // and the assistant it used, are the caller's.
                for key in ["thread_id", "assistant_id"] {
                    if let Some(raw) = json
                        .get_mut(key)
                        .and_then(|slot| self.seal_field(identity, slot))
                    {
                        ledger.added.push(raw);
                    }
                }
                self.seal_chat_answer(identity, &mut json, ledger);
            }
            AnswerRewrite::Stateful => self.seal_references(identity, &mut json, ledger),
            AnswerRewrite::ThreadCreated => {
                let raw = self.seal_field(identity, json.get_mut("id")?)?;
                ledger.added.push(raw);
                self.seal_references(identity, &mut json, ledger);
            }
            AnswerRewrite::Removed { raw } => {
                self.seal_references(identity, &mut json, ledger);
                // What the deletion names is gone, not created.
                ledger.added.clear();
                ledger.removed.push(raw.to_string());
            }
            AnswerRewrite::Assistants { asked } => {
                self.keep_owned(&mut json, "data", "assistant_id", owned, asked)?;
                self.seal_references(identity, &mut json, ledger);
            }
            AnswerRewrite::Threads { asked } => {
                let threads = self.keep_owned(&mut json, "threads", "id", owned, asked)?;
                for thread in threads.iter_mut() {
                    self.seal_field(identity, thread.get_mut("id")?)?;
                }
                self.seal_references(identity, &mut json, ledger);
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

    /// Keeps, of the list under `list`, the objects whose `id_key` the
    /// caller owns or asked for by a sealed id; `None` when the answer has
    /// no such list.
    fn keep_owned<'j>(
        &self,
        json: &'j mut Value,
        list: &str,
        id_key: &str,
        owned: &HashSet<String>,
        asked: &[String],
    ) -> Option<&'j mut Vec<Value>> {
        let items = json.get_mut(list)?.as_array_mut()?;
        items.retain(|item| {
            item.get(id_key)
                .and_then(Value::as_str)
                .is_some_and(|id| owned.contains(id) || asked.iter().any(|asked| asked == id))
        });
        Some(items)
    }

    /// Seals, at any depth of a thread or assistant answer, every
    /// `thread_id` and `assistant_id` (recorded: an answer names only the
    /// caller's, since every id the call named was opened for the caller),
    /// every `file_id` (recorded when it was uploaded or generated), and
    /// the files the model generated in `content` (recorded).
    ///
    /// Only the model's own messages are read for generated files: a
    /// message the caller wrote comes back as written, and a file id typed
    /// into it must not become the caller's. `metadata`, function
    /// declarations and function calls are text to GigaChat, never an
    /// object it reads, so nothing in them is sealed (nor opened in
    /// requests).
    pub(super) fn seal_references(&self, identity: &str, value: &mut Value, ledger: &mut Ledger) {
        self.seal_references_in(identity, value, false, ledger);
    }

    fn seal_references_in(
        &self,
        identity: &str,
        value: &mut Value,
        by_model: bool,
        ledger: &mut Ledger,
    ) {
        match value {
            Value::Array(items) => {
                for item in items {
                    self.seal_references_in(identity, item, by_model, ledger);
                }
            }
            Value::Object(object) => {
                let by_model = match object.get("role").and_then(Value::as_str) {
                    Some(role) => role == "assistant",
                    None => by_model,
                };
                for (key, slot) in object.iter_mut() {
                    match (key.as_str(), slot) {
                        ("thread_id" | "assistant_id", slot) => {
                            if let Some(raw) = self.seal_field(identity, slot) {
                                ledger.added.push(raw);
                            }
                        }
                        ("file_id", slot) => {
                            self.seal_field(identity, slot);
                        }
                        ("content", Value::String(content)) => {
                            if by_model {
                                *content = self.seal_media(identity, content, ledger);
                            }
                        }
                        ("metadata" | "functions" | "function_call", _) => {}
                        // A streamed chunk's delta is the model's.
                        ("delta", slot) => self.seal_references_in(identity, slot, true, ledger),
                        (_, slot) => self.seal_references_in(identity, slot, by_model, ledger),
                    }
                }
            }
            _ => {}
        }
    }

    /// Seals the files a batch names (its results, and its input where
    /// GigaChat names one) and records them, so the owner downloads the
    /// results through `files/{id}/content` and finds them in `GET files`.
    pub(super) fn seal_batch_files(&self, identity: &str, batch: &mut Value, ledger: &mut Ledger) {
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
    pub(super) fn seal_event(
        &self,
        identity: &str,
        event: &[u8],
        ledger: &mut Ledger,
    ) -> Option<Vec<u8>> {
        if !contains(event, b"src=")
            && !contains(event, b"cover=")
            && !contains(event, b"\"files\"")
            && !contains(event, b"\"thread_id\"")
            && !contains(event, b"\"assistant_id\"")
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
            for key in ["thread_id", "assistant_id"] {
                if let Some(raw) = json
                    .get_mut(key)
                    .and_then(|slot| self.seal_field(identity, slot))
                {
                    ledger.added.push(raw);
                }
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
    pub(super) fn seal_chat_answer(&self, identity: &str, json: &mut Value, ledger: &mut Ledger) {
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
    pub(super) fn seal_media(&self, identity: &str, content: &str, ledger: &mut Ledger) -> String {
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
    pub(super) fn seal_field(&self, identity: &str, slot: &mut Value) -> Option<String> {
        let Value::String(raw) = slot else {
            return None;
        };
        let raw = std::mem::take(raw);
        *slot = Value::String(self.seal(identity, &raw));
        Some(raw)
    }
}
