//! Ownership of GigaChat objects, per identity.
//!
//! Everything callers create at GigaChat lives under the operator's one
//! key, so GigaChat cannot tell one end user's file from another's. The
//! proxy does: every object id it hands to a caller (files, generated
//! images, threads, assistants, batches) is sealed as `s1~{sealed}`, a
//! deterministic authenticated encryption (AES-SIV) of the id with the
//! caller's identity as associated data, under a key derived from the
//! session secret, in unpadded base64url. Every use of an id (a
//! `files/{id}` path, a query parameter, an `attachments` entry, a v2
//! `files` part, a `thread_id` or `assistant_id` in a body) must decrypt
//! for the caller, and GigaChat gets the id it decrypts to. Anything that
//! does not (another caller's id, a made-up one, GigaChat's own) is
//! answered like an id that does not exist, so nobody learns whether
//! someone else's object exists.
//!
//! The id is encrypted, not only signed, because a model repeats text: a
//! caller who could read GigaChat's id out of someone else's sealed id
//! (from a shared link) could have a model print it as a generated image,
//! which is sealed for whoever asked. A sealed id gives another caller
//! nothing. The encryption is deterministic, so one object always seals to
//! the same string for one caller, which lists and the answer cache rely
//! on.
//!
//! The sealed id proves ownership by itself: it needs no shared store, so
//! it holds on serverless deployments with many instances and no Redis.
//! Only listing needs state (which ids are mine?): the ids an instance
//! sealed in answers are recorded, in its memory and in Redis when one is
//! configured, and a list (`GET files`, `GET assistants`, `GET threads`,
//! `GET batches`) keeps only the caller's.
//!
//! Calls that belong to nobody in particular (`balance`, anything the
//! proxy does not know) are for the operator's identities only.
//!
//! - `requests`: opening the ids a call names (paths, queries, bodies).
//! - `answers`: sealing what an answer hands out; keeping lists to the
//!   caller's objects.
//! - `stream`: the same for a streamed answer, event by event.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use aes_siv::siv::Aes128Siv;
use aes_siv::{KeyInit, Tag};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
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

mod answers;
mod requests;
mod stream;

use stream::SealedStream;

/// What every sealed id starts with: the format's version (a later
/// format gets another) and [`SEPARATOR`]. It and the base64url alphabet
/// are unreserved in URLs: a sealed id needs no escaping in a path or a
/// query.
pub(crate) const SEALED_PREFIX: &str = "s1~";
/// In every sealed id and in none of GigaChat's ids (UUIDs), so an id a
/// model repeats from a conversation is recognised as sealed already and
/// not sealed twice.
pub(crate) const SEPARATOR: char = '~';
/// AES-SIV's synthetic IV, which is also its authentication tag.
const SIV_BYTES: usize = 16;
/// The longest GigaChat id that seals to an id that opens (GigaChat's are
/// 36-character UUIDs). Bounding it bounds the work a made-up id costs.
const MAX_RAW_ID: usize = 256;
/// The first byte of what is encrypted: how the id is packed. A canonical
/// UUID (GigaChat's ids) as its 16 bytes keeps sealed ids short.
const PACKED_UUID: u8 = 0;
const PACKED_TEXT: u8 = 1;
const MAX_SEALED_BYTES: usize = SIV_BYTES + 1 + MAX_RAW_ID;
const MAX_SEALED_CHARS: usize = base64_len(MAX_SEALED_BYTES);
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
    /// A chat answer: generated files (`<img src>`, v2 `files` parts),
    /// the v2 `thread_id` and `assistant_id` are sealed and recorded.
    Chat,
    /// A created batch: its `id` is sealed and recorded.
    BatchCreated,
    /// `{"batches":[Batch…]}`: only the caller's batches, `id` and
    /// `output_file_id` sealed. `asked` holds the raw ids the query named
    /// (`batch_id`), which are the caller's whether or not this instance
    /// recorded them; with none asked, the caller's recorded batches.
    Batches { asked: Box<[String]> },
    /// A thread or assistant answer: every `thread_id`, `assistant_id` and
    /// `file_id` in it is sealed (threads and assistants recorded), and
    /// generated files in `content` are sealed and recorded.
    Stateful,
    /// A created thread (`POST threads`): its `id` too.
    ThreadCreated,
    /// `{"data":[Assistant…]}`: only the caller's assistants (recorded, or
    /// `asked` by a sealed id), sealed.
    Assistants { asked: Box<[String]> },
    /// `{"threads":[Thread…]}`: only the caller's threads (recorded, or
    /// `asked` by sealed ids), sealed.
    Threads { asked: Box<[String]> },
    /// A thread or assistant deleted: sealed like [`AnswerRewrite::Stateful`]
    /// and `raw` no longer listed.
    Removed { raw: Box<str> },
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
    /// The sealing key, derived once.
    key: aes_siv::Key<Aes128Siv>,
    /// Which instance this is in the process, for [`CIPHER`]: two may hold
    /// different keys (tests, embedders), so a thread's cipher is used for
    /// the instance that built it only.
    instance: u64,
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
        let key = sealing_key(session_secret.expose());
        Self {
            redis,
            enabled: config.enabled,
            admins: config.admins.iter().cloned().collect(),
            key,
            instance: NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed),
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
            Endpoint::Assistants | Endpoint::Threads => {
                let opens = requests::stateful_call(endpoint, method, client_path)
                    .ok_or(Error::OperatorOnly)?;
                return self.check_stateful(identity, opens, query, body);
            }
            Endpoint::Balance | Endpoint::Other => return Err(Error::OperatorOnly),
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
}

impl Ownership {
    /// `s1~` and the base64url of the SIV and the encrypted id, with the
    /// identity as associated data: the same id seals to the same string
    /// for one identity, and to unrelated strings for two.
    pub(crate) fn seal(&self, identity: &str, raw: &str) -> String {
        let mut sealed = Vec::with_capacity(SIV_BYTES + 1 + raw.len());
        sealed.resize(SIV_BYTES, 0);
        match packed_uuid(raw) {
            Some(uuid) => {
                sealed.push(PACKED_UUID);
                sealed.extend_from_slice(&uuid);
            }
            None => {
                sealed.push(PACKED_TEXT);
                sealed.extend_from_slice(raw.as_bytes());
            }
        }
        let (siv, body) = sealed.split_at_mut(SIV_BYTES);
        match self
            .with_cipher(|cipher| cipher.encrypt_in_place_detached([identity.as_bytes()], body))
        {
            Ok(tag) => siv.copy_from_slice(&tag),
            // Fails only past 126 associated data items (one is used): an
            // impossible failure hands out an id that opens for no one.
            Err(_) => return SEALED_PREFIX.to_owned(),
        }
        let mut out = String::with_capacity(SEALED_PREFIX.len() + base64_len(sealed.len()));
        out.push_str(SEALED_PREFIX);
        URL_SAFE_NO_PAD.encode_string(&sealed, &mut out);
        out
    }

    /// The raw id of a sealed one, if it was sealed for this identity by
    /// this deployment and is untouched.
    pub(crate) fn open(&self, identity: &str, sealed: &str) -> Option<String> {
        let encoded = sealed.strip_prefix(SEALED_PREFIX)?;
        if encoded.len() > MAX_SEALED_CHARS {
            return None;
        }
        let mut bytes = [0u8; MAX_SEALED_BYTES];
        let len = URL_SAFE_NO_PAD.decode_slice(encoded, &mut bytes).ok()?;
        if len <= SIV_BYTES {
            return None;
        }
        let (siv, body) = bytes[..len].split_at_mut(SIV_BYTES);
        let tag = Tag::from(<[u8; SIV_BYTES]>::try_from(&*siv).ok()?);
        self.with_cipher(|cipher| {
            cipher.decrypt_in_place_detached([identity.as_bytes()], body, &tag)
        })
        .ok()?;
        match body.split_first()? {
            (&PACKED_UUID, packed) => {
                let packed: [u8; 16] = packed.try_into().ok()?;
                Some(uuid::Uuid::from_bytes(packed).hyphenated().to_string())
            }
            (&PACKED_TEXT, text) if !text.is_empty() => {
                std::str::from_utf8(text).ok().map(str::to_owned)
            }
            _ => None,
        }
    }

    /// Runs `run` with this thread's cipher for this instance, built (key
    /// schedule and all) on the thread's first call or when it last served
    /// another instance: no call waits for another, and none rebuilds the
    /// cipher while one instance serves the thread. A thread whose cipher
    /// cannot be had (it is ending, or the cipher is in use further up the
    /// stack) builds one for the call.
    fn with_cipher<T>(&self, mut run: impl FnMut(&mut Aes128Siv) -> T) -> T {
        let cached = CIPHER.try_with(|slot| {
            let mut slot = slot.try_borrow_mut().ok()?;
            let cipher = match &mut *slot {
                Some((instance, cipher)) if *instance == self.instance => cipher,
                slot => &mut slot.insert((self.instance, Aes128Siv::new(&self.key))).1,
            };
            Some(run(cipher))
        });
        match cached {
            Ok(Some(done)) => done,
            _ => run(&mut Aes128Siv::new(&self.key)),
        }
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

/// Numbers [`Ownership::instance`]: unique in the process.
static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The cipher this thread last sealed or opened with, and the instance
    /// whose key it holds. Building one (AES key schedule, CMAC subkeys)
    /// would add a quarter to every seal, and one cipher shared between
    /// threads makes them take turns at its lock, so each thread keeps its
    /// own.
    static CIPHER: RefCell<Option<(u64, Aes128Siv)>> = const { RefCell::new(None) };
}

/// What one answer created and deleted, for the lists.
#[derive(Debug, Default)]
struct Ledger {
    added: Vec<String>,
    removed: Vec<String>,
}

/// The Redis set of the raw ids one identity owns (files, threads,
/// assistants, batches: GigaChat's ids are UUIDs, so kinds never collide);
/// the identity enters as a digest (a JWT subject may be any string). The
/// key keeps the name it had when only files were listed, so sets recorded
/// then still list.
fn list_key(redis: &SharedRedis, identity: &str) -> String {
    let digest = Sha256::digest(identity.as_bytes());
    let mut id = String::with_capacity(32);
    for &byte in digest.iter().take(16) {
        id.push(char::from(HEX[usize::from(byte >> 4)]));
        id.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    redis.key("owned-files", &id)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The sealing key: the session secret narrowed to this one use, so a
/// sealed id says nothing about the secret and no session token is one. It
/// does not depend on who may call, so adding an API key keeps everyone's
/// objects. The label is this key's alone (the HMAC key of the earlier
/// `{id}~{tag}` format had another), so no key serves two uses.
fn sealing_key(secret: &[u8]) -> aes_siv::Key<Aes128Siv> {
    let digest = match <Hmac<Sha256> as Mac>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(b"gigachat-proxy object ownership sealing key v2 (AES-SIV)");
            mac.finalize().into_bytes()
        }
        // HMAC takes keys of any length.
        Err(_) => Sha256::digest(secret),
    };
    let mut key = aes_siv::Key::<Aes128Siv>::default();
    key.copy_from_slice(&digest);
    key
}

/// A canonical (lower-case, hyphenated) UUID as its 16 bytes; any other
/// spelling is sealed as text, so it opens to exactly what was sealed.
fn packed_uuid(raw: &str) -> Option<[u8; 16]> {
    if raw.len() != 36 {
        return None;
    }
    let uuid = uuid::Uuid::try_parse(raw).ok()?;
    let mut canonical = [0u8; 36];
    (*uuid.hyphenated().encode_lower(&mut canonical) == *raw).then(|| *uuid.as_bytes())
}

/// The length of `bytes` bytes in unpadded base64.
const fn base64_len(bytes: usize) -> usize {
    (bytes * 4).div_ceil(3)
}

#[cfg(test)]
mod tests;
