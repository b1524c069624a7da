//! What a public page may call through the proxy: which kinds of GigaChat
//! call are exposed, with which models, how long an answer may grow and
//! how much input one request may carry.
//!
//! One GigaChat key serves every visitor of a public deployment, so the
//! defaults there expose only what a chat page needs (and what ownership
//! isolates per user); the local server keeps everything open, because its
//! one user is the developer who owns the key.
//!
//! The body is judged as GigaChat will read it: whatever its
//! `Content-Type`, and with the last of duplicated keys winning. A body
//! the policy must read but cannot (not one complete JSON object) is
//! refused rather than passed on, since a more lenient parser upstream
//! could see in it what the check did not.

use std::fmt;

use bytes::Bytes;
use http::{HeaderName, Method};
use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};

use crate::config::env::{ConfigError, Env, Platform};
use crate::endpoint::Endpoint;

const ENDPOINTS: &str = "GIGACHAT_PROXY_ENDPOINTS";
const ALLOWED_MODELS: &str = "GIGACHAT_PROXY_ALLOWED_MODELS";
const MAX_TOKENS: &str = "GIGACHAT_PROXY_MAX_TOKENS";
const MAX_MESSAGES: &str = "GIGACHAT_PROXY_MAX_MESSAGES";
const MAX_INPUT_CHARS: &str = "GIGACHAT_PROXY_MAX_INPUT_CHARS";

/// The answer's header that says `max_tokens` was lowered, and to what.
pub(crate) const MAX_TOKENS_CLAMPED: HeaderName =
    HeaderName::from_static("x-gigachat-proxy-max-tokens-clamped");

/// Deployed defaults of the input bounds: far above what a person types
/// into a chat page (a long conversation, a pasted document), far below
/// what a script that fills the platform's body limit sends to spend the
/// key's tokens.
const DEPLOYED_MAX_MESSAGES: u32 = 100;
const DEPLOYED_MAX_INPUT_CHARS: u64 = 100_000;

/// A set of endpoint kinds, one bit per [`Endpoint::ALL`] index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EndpointSet(u32);

const _: () = assert!(Endpoint::ALL.len() <= 32);

const FILES: [Endpoint; 5] = [
    Endpoint::FilesList,
    Endpoint::FileUpload,
    Endpoint::FileInfo,
    Endpoint::FileContent,
    Endpoint::FileDelete,
];

/// What a public page needs: chat in both versions, the model list,
/// embeddings, token counts, and the files and threads ownership keeps
/// apart per user (a thread run is charged to the budget like a chat).
/// The balance, batches and anything the proxy does not know stay with the
/// operator, and so do assistants: ownership would keep them apart too,
/// but they are stored configuration a visitor seldom needs to write, each
/// persists under the operator's key with no per-user quota, so any cap
/// GigaChat puts on an account's assistants would be one visitor's to use
/// up for everyone.
const DEPLOYED_DEFAULT: [Endpoint; 12] = [
    Endpoint::Chat,
    Endpoint::ChatV2,
    Endpoint::Models,
    Endpoint::Model,
    Endpoint::Embeddings,
    Endpoint::TokensCount,
    Endpoint::FilesList,
    Endpoint::FileUpload,
    Endpoint::FileInfo,
    Endpoint::FileContent,
    Endpoint::FileDelete,
    Endpoint::Threads,
];

impl EndpointSet {
    const NONE: Self = Self(0);
    const ALL: Self = Self((1 << Endpoint::ALL.len()) - 1);

    fn of(kinds: &[Endpoint]) -> Self {
        kinds
            .iter()
            .fold(Self::NONE, |set, &kind| Self(set.0 | (1 << kind as u32)))
    }

    pub(crate) fn contains(self, kind: Endpoint) -> bool {
        self.0 & (1 << kind as u32) != 0
    }

    /// `all`, `none`, or a comma list of kind names ([`Endpoint::as_str`])
    /// and the group `files`.
    fn parse(value: &str) -> Result<Self, String> {
        let mut set = Self::NONE;
        let mut named = false;
        for name in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            named = true;
            let add = match name {
                "all" => Self::ALL,
                "none" => Self::NONE,
                "files" => Self::of(&FILES),
                _ => match Endpoint::ALL.iter().find(|kind| kind.as_str() == name) {
                    Some(&kind) => Self::of(&[kind]),
                    None => return Err(Self::expected()),
                },
            };
            set.0 |= add.0;
        }
        if named {
            Ok(set)
        } else {
            Err(Self::expected())
        }
    }

    fn expected() -> String {
        let names: Vec<&str> = Endpoint::ALL.iter().map(|kind| kind.as_str()).collect();
        format!(
            "must be `all`, `none` or a comma-separated list of: {}, files (all five file calls)",
            names.join(", ")
        )
    }
}

/// Where a call's answer length is set, if it has one the policy clamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MaxTokensAt {
    /// `max_tokens` at the top level: v1 chat, and thread runs.
    TopLevel,
    /// `model_options.max_tokens`: v2 chat.
    ModelOptions,
}

impl MaxTokensAt {
    /// The field of a call that sets its answer length: chat in either
    /// version, and the thread calls that run the model (`threads/run`,
    /// `threads/messages/run`, `threads/messages/rerun`).
    pub(crate) fn of(endpoint: Endpoint, method: &Method, client_path: &str) -> Option<Self> {
        match endpoint {
            Endpoint::Chat => Some(MaxTokensAt::TopLevel),
            Endpoint::ChatV2 => Some(MaxTokensAt::ModelOptions),
            Endpoint::Threads
                if *method == Method::POST
                    && matches!(client_path.rsplit('/').next(), Some("run" | "rerun")) =>
            {
                Some(MaxTokensAt::TopLevel)
            }
            _ => None,
        }
    }
}

/// The policy, read once at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PolicyConfig {
    endpoints: EndpointSet,
    /// `None`: any model.
    allowed_models: Option<Box<[Box<str>]>>,
    max_tokens: Option<u32>,
    max_messages: Option<u32>,
    max_input_chars: Option<u64>,
}

impl PolicyConfig {
    pub(crate) fn from_env(env: &Env<'_>, platform: Platform) -> Result<Self, ConfigError> {
        let deployed = platform != Platform::Local;
        let endpoints = env
            .parse(ENDPOINTS, EndpointSet::parse)?
            .unwrap_or(if deployed {
                EndpointSet::of(&DEPLOYED_DEFAULT)
            } else {
                EndpointSet::ALL
            });
        let allowed_models = env.parse(ALLOWED_MODELS, parse_models)?.flatten();
        let max_tokens = env.off_or(MAX_TOKENS, None, |value| {
            crate::config::env::count(value, 1..=u32::MAX)
        })?;
        let max_messages = env.off_or(
            MAX_MESSAGES,
            deployed.then_some(DEPLOYED_MAX_MESSAGES),
            |value| crate::config::env::count(value, 1..=u32::MAX),
        )?;
        let max_input_chars = env.off_or(
            MAX_INPUT_CHARS,
            deployed.then_some(DEPLOYED_MAX_INPUT_CHARS),
            |value| crate::config::env::count(value, 1..=u64::MAX),
        )?;
        Ok(Self {
            endpoints,
            allowed_models,
            max_tokens,
            max_messages,
            max_input_chars,
        })
    }

    /// Whether this kind of call is exposed to this caller. `operator`: the
    /// caller is one of the operator's identities, who may call anything.
    pub(crate) fn admit_endpoint(&self, endpoint: Endpoint, operator: bool) -> Result<(), Refusal> {
        if operator || self.endpoints.contains(endpoint) {
            Ok(())
        } else {
            Err(Refusal::EndpointNotAllowed {
                endpoint: endpoint.as_str(),
            })
        }
    }

    /// Judges a request body; returns the body to send, `max_tokens`
    /// lowered if it had to be (and to what). The original bytes are sent
    /// unless a clamp rewrites them.
    pub(crate) fn check_body(
        &self,
        endpoint: Endpoint,
        max_tokens_at: Option<MaxTokensAt>,
        body: Bytes,
    ) -> Result<Checked, Refusal> {
        let unchanged = |body| {
            Ok(Checked {
                body,
                clamped_to: None,
            })
        };
        // Calls that always carry a model and an input; threads and
        // assistants only when they have a body at all.
        let computes = matches!(
            endpoint,
            Endpoint::Chat | Endpoint::ChatV2 | Endpoint::Embeddings | Endpoint::TokensCount
        );
        let stateful = matches!(endpoint, Endpoint::Threads | Endpoint::Assistants)
            && !body.trim_ascii().is_empty();
        let clamp = self.max_tokens.zip(max_tokens_at);
        let Some(variable) = self.first_body_variable(clamp.is_some()) else {
            return unchanged(body);
        };
        if !(computes || stateful) {
            return unchanged(body);
        }
        let Some(facts) = BodyFacts::of(&body) else {
            return Err(Refusal::BodyNotJson { variable });
        };
        if let Some(allowed) = &self.allowed_models {
            let permitted = match &facts.model {
                Field::Str(model) => allowed.iter().any(|name| **name == **model),
                // Threads and assistants may take the model of the thread
                // or assistant; the calls that compute must name one.
                Field::Absent => !computes,
                Field::Other => false,
            };
            if !permitted {
                return Err(Refusal::ModelNotAllowed {
                    allowed: allowed.join(", "),
                });
            }
        }
        if let Some(limit) = self.max_messages
            && facts.messages > u64::from(limit)
        {
            return Err(Refusal::InputTooLarge {
                variable: MAX_MESSAGES,
                what: "messages",
                limit: u64::from(limit),
            });
        }
        if let Some(limit) = self.max_input_chars
            && facts.text_chars > limit
        {
            return Err(Refusal::InputTooLarge {
                variable: MAX_INPUT_CHARS,
                what: "characters of text",
                limit,
            });
        }
        if let Some((limit, at)) = clamp
            && !facts.max_tokens(at).within(limit)
        {
            return Ok(match rewrite_max_tokens(&body, at, limit) {
                Some(body) => Checked {
                    body,
                    clamped_to: Some(limit),
                },
                // Read by the facts above, so this does not happen.
                None => Checked {
                    body,
                    clamped_to: None,
                },
            });
        }
        unchanged(body)
    }

    /// The variable of the first body check that is on, to name when the
    /// body cannot be read; `None` when no check reads the body.
    fn first_body_variable(&self, clamps: bool) -> Option<&'static str> {
        if self.allowed_models.is_some() {
            Some(ALLOWED_MODELS)
        } else if clamps {
            Some(MAX_TOKENS)
        } else if self.max_messages.is_some() {
            Some(MAX_MESSAGES)
        } else if self.max_input_chars.is_some() {
            Some(MAX_INPUT_CHARS)
        } else {
            None
        }
    }
}

/// A body the policy let through.
#[derive(Debug)]
pub(crate) struct Checked {
    pub(crate) body: Bytes,
    /// `Some(n)`: `max_tokens` was missing or above `n`, and is `n` now.
    pub(crate) clamped_to: Option<u32>,
}

/// Tells the client its `max_tokens` was lowered, and to what.
pub(crate) fn mark_clamped(headers: &mut http::HeaderMap, clamped_to: Option<u32>) {
    if let Some(limit) = clamped_to {
        headers.insert(MAX_TOKENS_CLAMPED, http::HeaderValue::from(limit));
    }
}

/// `None` when unset or `*` (any model).
fn parse_models(value: &str) -> Result<Option<Box<[Box<str>]>>, String> {
    let names: Vec<Box<str>> = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(Box::from)
        .collect();
    if names.iter().any(|name| &**name == "*") {
        return Ok(None);
    }
    if names.is_empty() {
        return Err("must be `*` or a comma-separated list of GigaChat model names such as GigaChat-2,GigaChat-2-Max (case-sensitive, as GET models lists them)".into());
    }
    Ok(Some(names.into_boxed_slice()))
}

/// Lowers `max_tokens` to `limit` when the body asks for more or does not
/// say (GigaChat's own default may be the model's maximum); `None` when it
/// already asks for at most `limit`, or is not a JSON object. Shared with
/// the token budget, which clamps to what remains of a budget.
pub(crate) fn clamp_max_tokens(body: &[u8], at: MaxTokensAt, limit: u32) -> Option<Bytes> {
    let facts = BodyFacts::of(body)?;
    if facts.max_tokens(at).within(limit) {
        return None;
    }
    rewrite_max_tokens(body, at, limit)
}

/// Sets `max_tokens` to `limit`. Duplicated keys collapse to their last
/// value, which is the one GigaChat reads.
fn rewrite_max_tokens(body: &[u8], at: MaxTokensAt, limit: u32) -> Option<Bytes> {
    let serde_json::Value::Object(mut object) = serde_json::from_slice(body).ok()? else {
        return None;
    };
    let target = match at {
        MaxTokensAt::TopLevel => &mut object,
        MaxTokensAt::ModelOptions => {
            let options = object
                .entry("model_options")
                .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
            if !options.is_object() {
                *options = serde_json::Value::Object(serde_json::Map::new());
            }
            options.as_object_mut()?
        }
    };
    target.insert("max_tokens".into(), serde_json::Value::from(limit));
    serde_json::to_vec(&object).ok().map(Bytes::from)
}

/// Why the policy refused a call; every refusal names the variable that
/// would let it through.
///
/// `pub` (in a crate-private module) because the crate's error type,
/// which is public, carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    EndpointNotAllowed {
        endpoint: &'static str,
    },
    ModelNotAllowed {
        /// The allowed models, comma-separated.
        allowed: String,
    },
    InputTooLarge {
        variable: &'static str,
        what: &'static str,
        limit: u64,
    },
    BodyNotJson {
        variable: &'static str,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::EndpointNotAllowed { endpoint } => write!(
                f,
                "this proxy does not expose `{endpoint}` calls to this caller ({ENDPOINTS})"
            ),
            Refusal::ModelNotAllowed { allowed } => write!(
                f,
                "this model is not allowed here; allowed: {allowed} ({ALLOWED_MODELS})"
            ),
            Refusal::InputTooLarge {
                variable,
                what,
                limit,
            } => write!(
                f,
                "the request has more than {limit} {what}, the limit of this proxy ({variable})"
            ),
            Refusal::BodyNotJson { variable } => write!(
                f,
                "the request body is not one JSON object, so it cannot be checked against {variable}"
            ),
        }
    }
}

impl Refusal {
    pub(crate) fn status(&self) -> http::StatusCode {
        match self {
            Refusal::EndpointNotAllowed { .. } | Refusal::ModelNotAllowed { .. } => {
                http::StatusCode::FORBIDDEN
            }
            Refusal::InputTooLarge { .. } => http::StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::BodyNotJson { .. } => http::StatusCode::BAD_REQUEST,
        }
    }

    pub(crate) fn code(&self) -> &'static str {
        match self {
            Refusal::EndpointNotAllowed { .. } => "endpoint_not_allowed",
            Refusal::ModelNotAllowed { .. } => "model_not_allowed",
            Refusal::InputTooLarge { .. } => "input_too_large",
            Refusal::BodyNotJson { .. } => "body_not_json",
        }
    }

    pub(crate) fn hint(&self) -> String {
        match self {
            Refusal::EndpointNotAllowed { endpoint } => format!(
                "Operators may call it with a key named in GIGACHAT_PROXY_ADMIN_KEYS (or a JWT with GIGACHAT_PROXY_ADMIN_SCOPE); to expose it to every caller, add `{endpoint}` to {ENDPOINTS} (or set it to `all`) and redeploy."
            ),
            Refusal::ModelNotAllowed { allowed } => format!(
                "Send \"model\" with one of: {allowed}. The operator can change the list in {ALLOWED_MODELS}."
            ),
            Refusal::InputTooLarge { variable, .. } => format!(
                "Send a shorter conversation or text; the operator can raise {variable} (or set it to `off`)."
            ),
            Refusal::BodyNotJson { variable } => format!(
                "Send the body as one JSON object (UTF-8, no trailing data); {variable} is checked against what GigaChat will read."
            ),
        }
    }
}

/// A field as GigaChat will read it: its last occurrence.
#[derive(Debug, Default, PartialEq)]
enum Field<T> {
    #[default]
    Absent,
    Str(T),
    /// Present, but not a string.
    Other,
}

/// A requested answer length, as GigaChat will read it.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum Tokens {
    /// Not there, or `null`: GigaChat's default applies.
    #[default]
    Missing,
    /// A whole number (or a float with no fraction).
    Whole(u64),
    /// Anything else: a string, a fraction, a negative number, an object.
    Other,
}

impl Tokens {
    fn within(self, limit: u32) -> bool {
        matches!(self, Tokens::Whole(n) if n <= u64::from(limit))
    }
}

/// What the policy reads of a body, in one pass without building it.
#[derive(Debug, Default)]
struct BodyFacts {
    model: Field<String>,
    /// Elements of the last top-level `messages` array.
    messages: u64,
    /// Characters of every string value anywhere in the body (every
    /// occurrence of a duplicated key counts: never less than GigaChat
    /// reads).
    text_chars: u64,
    max_tokens: Tokens,
    /// In the last top-level `model_options` object.
    options_max_tokens: Tokens,
}

impl BodyFacts {
    /// `None` unless the body is exactly one JSON object.
    fn of(body: &[u8]) -> Option<Self> {
        let mut facts = Self::default();
        let mut json = serde_json::Deserializer::from_slice(body);
        DeserializeSeed::deserialize(TopLevel(&mut facts), &mut json).ok()?;
        json.end().ok()?;
        Some(facts)
    }

    fn max_tokens(&self, at: MaxTokensAt) -> Tokens {
        match at {
            MaxTokensAt::TopLevel => self.max_tokens,
            MaxTokensAt::ModelOptions => self.options_max_tokens,
        }
    }
}

/// The top-level object.
struct TopLevel<'f>(&'f mut BodyFacts);

impl<'de> DeserializeSeed<'de> for TopLevel<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, json: D) -> Result<(), D::Error> {
        json.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TopLevel<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let facts = self.0;
        while let Some(key) = map.next_key::<Key>()? {
            if key == Key::ModelOptions {
                // A later `model_options` replaces an earlier one, whatever
                // it is.
                facts.options_max_tokens = Tokens::Missing;
            }
            let mut value = Value::default();
            map.next_value_seed(Walk {
                chars: &mut facts.text_chars,
                value: &mut value,
                options: (key == Key::ModelOptions).then_some(&mut facts.options_max_tokens),
                keep_text: key == Key::Model,
            })?;
            match key {
                Key::Model => {
                    facts.model = match value.text {
                        Some(text) => Field::Str(text),
                        None if value.null => Field::Absent,
                        None => Field::Other,
                    }
                }
                Key::Messages => facts.messages = value.elements,
                Key::MaxTokens => {
                    facts.max_tokens = if value.null {
                        Tokens::Missing
                    } else {
                        value.tokens
                    }
                }
                Key::ModelOptions | Key::Other => {}
            }
        }
        Ok(())
    }
}

/// A key the policy reads, compared without allocating (escaped spellings
/// such as `"m\u006fdel"` included: serde_json hands them over unescaped).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Key {
    Model,
    Messages,
    MaxTokens,
    ModelOptions,
    Other,
}

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(json: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Key, E> {
                Ok(match key {
                    "model" => Key::Model,
                    "messages" => Key::Messages,
                    "max_tokens" => Key::MaxTokens,
                    "model_options" => Key::ModelOptions,
                    _ => Key::Other,
                })
            }
        }
        json.deserialize_identifier(KeyVisitor)
    }
}

/// What [`Walk`] saw of one value.
#[derive(Default)]
struct Value {
    null: bool,
    /// The string, if the value is one and [`Walk::keep_text`] says so.
    text: Option<String>,
    tokens: Tokens,
    /// Elements, if the value is an array.
    elements: u64,
}

/// Walks a value of any shape, counting the characters of its strings.
/// `options`: this is a `model_options` value, whose `max_tokens` to read.
struct Walk<'a> {
    chars: &'a mut u64,
    value: &'a mut Value,
    options: Option<&'a mut Tokens>,
    /// Whether a string value is kept (`model`'s only).
    keep_text: bool,
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, json: D) -> Result<(), D::Error> {
        json.deserialize_any(self)
    }
}

/// Counts the characters of every string below a value.
struct Count<'a>(&'a mut u64);

impl<'de> DeserializeSeed<'de> for Count<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, json: D) -> Result<(), D::Error> {
        let mut ignored = Value::default();
        json.deserialize_any(Walk {
            chars: self.0,
            value: &mut ignored,
            options: None,
            keep_text: false,
        })
    }
}

/// Strings longer than this are not kept: no model name is that long, so
/// such a `model` is refused by an allow-list as not a name at all.
const MODEL_NAME_MAX: usize = 256;

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.value.null = true;
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        self.value.null = true;
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        self.value.tokens = Tokens::Other;
        Ok(())
    }
    fn visit_u64<E>(self, n: u64) -> Result<(), E> {
        self.value.tokens = Tokens::Whole(n);
        Ok(())
    }
    fn visit_i64<E>(self, n: i64) -> Result<(), E> {
        self.value.tokens = u64::try_from(n).map_or(Tokens::Other, Tokens::Whole);
        Ok(())
    }
    fn visit_f64<E>(self, n: f64) -> Result<(), E> {
        self.value.tokens = if n.is_finite() && n >= 0.0 && n.fract() == 0.0 && n < 1e18 {
            Tokens::Whole(n as u64)
        } else {
            Tokens::Other
        };
        Ok(())
    }
    fn visit_str<E>(self, text: &str) -> Result<(), E> {
        *self.chars = self.chars.saturating_add(text.chars().count() as u64);
        self.value.tokens = Tokens::Other;
        if self.keep_text && text.len() <= MODEL_NAME_MAX {
            self.value.text = Some(text.to_owned());
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.value.tokens = Tokens::Other;
        let mut elements = 0u64;
        while seq.next_element_seed(Count(&mut *self.chars))?.is_some() {
            elements += 1;
        }
        self.value.elements = elements;
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.value.tokens = Tokens::Other;
        let mut options = self.options;
        while let Some(key) = map.next_key::<Key>()? {
            match options.as_deref_mut() {
                Some(tokens) if key == Key::MaxTokens => {
                    let mut value = Value::default();
                    map.next_value_seed(Walk {
                        chars: &mut *self.chars,
                        value: &mut value,
                        options: None,
                        keep_text: false,
                    })?;
                    *tokens = if value.null {
                        Tokens::Missing
                    } else {
                        value.tokens
                    };
                }
                _ => map.next_value_seed(Count(&mut *self.chars))?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn config(platform: Platform, vars: &[(&str, &str)]) -> Result<PolicyConfig, ConfigError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let lookup = move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        PolicyConfig::from_env(&Env::new(&lookup), platform)
    }

    fn check(policy: &PolicyConfig, endpoint: Endpoint, body: &str) -> Result<Checked, Refusal> {
        let at = MaxTokensAt::of(endpoint, &Method::POST, "chat/completions");
        policy.check_body(endpoint, at, Bytes::copy_from_slice(body.as_bytes()))
    }

    fn json(bytes: &Bytes) -> serde_json::Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn the_local_server_exposes_everything_and_checks_no_body() {
        let local = config(Platform::Local, &[]).unwrap();
        for kind in Endpoint::ALL {
            assert!(local.admit_endpoint(kind, false).is_ok(), "{kind:?}");
        }
        let body = r#"{"model":"Anything","messages":[],"max_tokens":999999} trailing"#;
        let checked = check(&local, Endpoint::Chat, body).unwrap();
        assert_eq!(checked.body, body.as_bytes());
        assert_eq!(checked.clamped_to, None);
    }

    #[test]
    fn deployments_expose_what_a_chat_page_needs_and_keep_the_rest_for_operators() {
        for platform in [Platform::Vercel, Platform::Lambda] {
            let deployed = config(platform, &[]).unwrap();
            for kind in Endpoint::ALL {
                let exposed = DEPLOYED_DEFAULT.contains(&kind);
                assert_eq!(
                    deployed.admit_endpoint(kind, false).is_ok(),
                    exposed,
                    "{kind:?}"
                );
                assert!(deployed.admit_endpoint(kind, true).is_ok(), "{kind:?}");
            }
            for kind in [
                Endpoint::Balance,
                Endpoint::Assistants,
                Endpoint::Batches,
                Endpoint::Other,
            ] {
                let refusal = deployed.admit_endpoint(kind, false).unwrap_err();
                assert_eq!(refusal.code(), "endpoint_not_allowed");
                assert_eq!(refusal.status(), http::StatusCode::FORBIDDEN);
                assert!(refusal.to_string().contains(ENDPOINTS));
                assert!(refusal.hint().contains(ENDPOINTS));
            }
            assert_eq!(deployed.max_messages, Some(DEPLOYED_MAX_MESSAGES));
            assert_eq!(deployed.max_input_chars, Some(DEPLOYED_MAX_INPUT_CHARS));
            assert_eq!(deployed.max_tokens, None);
            assert_eq!(deployed.allowed_models, None);
        }
    }

    #[test]
    fn endpoint_lists_take_kind_names_groups_all_and_none() {
        let policy = config(Platform::Vercel, &[(ENDPOINTS, " chat , files,balance ")]).unwrap();
        assert!(policy.admit_endpoint(Endpoint::Chat, false).is_ok());
        assert!(policy.admit_endpoint(Endpoint::Balance, false).is_ok());
        for kind in FILES {
            assert!(policy.admit_endpoint(kind, false).is_ok());
        }
        assert!(policy.admit_endpoint(Endpoint::ChatV2, false).is_err());
        assert!(policy.admit_endpoint(Endpoint::Models, false).is_err());
        let all = config(Platform::Lambda, &[(ENDPOINTS, "all")]).unwrap();
        assert_eq!(all.endpoints, EndpointSet::ALL);
        let none = config(Platform::Local, &[(ENDPOINTS, "none")]).unwrap();
        assert!(none.admit_endpoint(Endpoint::Chat, false).is_err());
        for bad in ["chat,bogus", ",,", "Chat", "file"] {
            let err = config(Platform::Local, &[(ENDPOINTS, bad)]).unwrap_err();
            assert_eq!(err.variable, ENDPOINTS, "{bad}");
            assert!(err.problem.contains("chat_v2"), "{}", err.problem);
        }
    }

    #[test]
    fn numbers_are_validated_and_off_turns_a_deployed_default_off() {
        let policy = config(
            Platform::Vercel,
            &[
                (MAX_MESSAGES, "off"),
                (MAX_INPUT_CHARS, "OFF"),
                (MAX_TOKENS, "512"),
            ],
        )
        .unwrap();
        assert_eq!(policy.max_messages, None);
        assert_eq!(policy.max_input_chars, None);
        assert_eq!(policy.max_tokens, Some(512));
        for variable in [MAX_TOKENS, MAX_MESSAGES, MAX_INPUT_CHARS] {
            for bad in ["0", "-1", "many", "1.5"] {
                let err = config(Platform::Local, &[(variable, bad)]).unwrap_err();
                assert_eq!(err.variable, variable, "{bad}");
            }
        }
        let any = config(Platform::Vercel, &[(ALLOWED_MODELS, "GigaChat, *")]).unwrap();
        assert_eq!(any.allowed_models, None);
        let err = config(Platform::Vercel, &[(ALLOWED_MODELS, " , ")]).unwrap_err();
        assert_eq!(err.variable, ALLOWED_MODELS);
    }

    #[test]
    fn models_outside_the_list_are_refused_as_gigachat_will_read_them() {
        let policy = config(
            Platform::Local,
            &[(ALLOWED_MODELS, "GigaChat-2, GigaChat-2-Max")],
        )
        .unwrap();
        for body in [
            r#"{"model":"GigaChat-2","messages":[]}"#,
            r#"{"model":"GigaChat-2-Pro","model":"GigaChat-2-Max"}"#,
            r#"{"m\u006fdel":"GigaChat-2"}"#,
        ] {
            assert!(check(&policy, Endpoint::Chat, body).is_ok(), "{body}");
        }
        for body in [
            r#"{"model":"GigaChat-2-Pro"}"#,
            // GigaChat keeps the last of duplicated keys.
            r#"{"model":"GigaChat-2","model":"GigaChat-2-Pro"}"#,
            r#"{"model":"gigachat-2"}"#,
            r#"{"messages":[]}"#,
            r#"{"model":null}"#,
            r#"{"model":["GigaChat-2"]}"#,
            r#"{"model":"GigaChat-2 "}"#,
        ] {
            let refusal = check(&policy, Endpoint::Embeddings, body).unwrap_err();
            assert_eq!(refusal.code(), "model_not_allowed", "{body}");
            assert_eq!(refusal.status(), http::StatusCode::FORBIDDEN);
            assert!(refusal.to_string().contains("GigaChat-2, GigaChat-2-Max"));
            assert!(refusal.to_string().contains(ALLOWED_MODELS));
        }
        let long = format!(r#"{{"model":"{}"}}"#, "G".repeat(MODEL_NAME_MAX + 1));
        assert!(check(&policy, Endpoint::TokensCount, &long).is_err());
        // Threads may take the thread's model; a model they name counts.
        assert!(check(&policy, Endpoint::Threads, r#"{"thread_id":"t"}"#).is_ok());
        assert!(check(&policy, Endpoint::Threads, "").is_ok());
        assert!(check(&policy, Endpoint::Threads, r#"{"model":"Other"}"#).is_err());
        // Calls without a model are not read.
        assert!(check(&policy, Endpoint::FileUpload, "--boundary").is_ok());
    }

    #[test]
    fn a_body_that_cannot_be_read_is_refused_naming_the_check() {
        let policy = config(Platform::Vercel, &[]).unwrap();
        for body in [
            "",
            "[]",
            r#"{"model":"GigaChat"} {"model":"Other"}"#,
            r#"{"model":"GigaChat","#,
            r#"{"model":"GigaChat",}"#,
            "\u{feff}{}",
        ] {
            let refusal = check(&policy, Endpoint::Chat, body).unwrap_err();
            assert_eq!(refusal.code(), "body_not_json", "{body:?}");
            assert_eq!(refusal.status(), http::StatusCode::BAD_REQUEST);
            assert!(refusal.to_string().contains(MAX_MESSAGES), "{refusal}");
        }
    }

    #[test]
    fn input_bounds_count_the_last_messages_and_every_string() {
        let policy = config(
            Platform::Local,
            &[(MAX_MESSAGES, "2"), (MAX_INPUT_CHARS, "10")],
        )
        .unwrap();
        let ok = r#"{"model":"GigaChat","messages":[{"role":"user","content":"привет"}]}"#;
        // "GigaChat" (8) is a string too: the model name counts.
        assert!(check(&policy, Endpoint::Chat, ok).is_err());
        let policy = config(
            Platform::Local,
            &[(MAX_MESSAGES, "2"), (MAX_INPUT_CHARS, "24")],
        )
        .unwrap();
        // 8 + 4 + 6 = 18 characters (not bytes: Cyrillic is two each).
        assert!(check(&policy, Endpoint::Chat, ok).is_ok());
        let three = r#"{"messages":[{},{},{}]}"#;
        let refusal = check(&policy, Endpoint::Chat, three).unwrap_err();
        assert_eq!(refusal.code(), "input_too_large");
        assert_eq!(refusal.status(), http::StatusCode::PAYLOAD_TOO_LARGE);
        assert!(refusal.to_string().contains(MAX_MESSAGES));
        // The last `messages` is what GigaChat reads.
        assert!(
            check(
                &policy,
                Endpoint::Chat,
                r#"{"messages":[{},{},{}],"messages":[{}]}"#
            )
            .is_ok()
        );
        assert!(
            check(
                &policy,
                Endpoint::Chat,
                r#"{"messages":[{}],"messages":[{},{},{}]}"#
            )
            .is_err()
        );
        // Every string anywhere counts, nested and escaped, in every copy.
        for body in [
            r#"{"input":["0123456789","0123456789","01234"]}"#,
            r#"{"functions":[{"description":{"deep":["0123456789012345678901234"]}}]}"#,
            r#"{"x":"0123456789abcd","x":"0123456789abcd"}"#,
            r#"{"x":"\u0041\u0041\u0041\u0041\u0041\u0041\u0041\u0041\u0041\u0041\u0041\u0041\u0041\u0041\u0041\u0041\u0041\u0041\u0041\u0041\u0041\u0041\u0041\u0041\u0041"}"#,
        ] {
            let refusal = check(&policy, Endpoint::Embeddings, body).unwrap_err();
            assert!(refusal.to_string().contains(MAX_INPUT_CHARS), "{body}");
        }
    }

    #[test]
    fn max_tokens_is_clamped_when_larger_or_missing_and_left_alone_otherwise() {
        let policy = config(Platform::Local, &[(MAX_TOKENS, "100")]).unwrap();
        for body in [
            r#"{"model":"GigaChat","max_tokens":100}"#,
            r#"{"model":"GigaChat","max_tokens":5}"#,
            r#"{"model":"GigaChat","max_tokens":100.0}"#,
            r#"{"max_tokens":1000,"max_tokens":7}"#,
        ] {
            let checked = check(&policy, Endpoint::Chat, body).unwrap();
            assert_eq!(checked.clamped_to, None, "{body}");
            assert_eq!(checked.body, body.as_bytes(), "the original bytes, {body}");
        }
        for body in [
            r#"{"model":"GigaChat","max_tokens":101}"#,
            r#"{"model":"GigaChat"}"#,
            r#"{"model":"GigaChat","max_tokens":null}"#,
            r#"{"model":"GigaChat","max_tokens":"5"}"#,
            r#"{"model":"GigaChat","max_tokens":1e30}"#,
            r#"{"model":"GigaChat","max_tokens":18446744073709551615}"#,
            r#"{"model":"GigaChat","max_tokens":5,"max_tokens":5000}"#,
            r#"{"model":"GigaChat","m\u0061x_tokens":5000}"#,
        ] {
            let checked = check(&policy, Endpoint::Chat, body).unwrap();
            assert_eq!(checked.clamped_to, Some(100), "{body}");
            let sent = json(&checked.body);
            assert_eq!(sent["max_tokens"], 100, "{body}");
            assert_eq!(sent["model"], "GigaChat");
        }
        // Other calls keep their bytes.
        let body = r#"{"model":"Embeddings","input":["x"]}"#;
        assert_eq!(
            check(&policy, Endpoint::Embeddings, body).unwrap().body,
            body.as_bytes()
        );
    }

    #[test]
    fn v2_chat_is_clamped_in_model_options() {
        let policy = config(Platform::Local, &[(MAX_TOKENS, "64")]).unwrap();
        let within =
            r#"{"model":"GigaChat-2","model_options":{"temperature":0.5,"max_tokens":10}}"#;
        let checked = check(&policy, Endpoint::ChatV2, within).unwrap();
        assert_eq!(checked.clamped_to, None);
        assert_eq!(checked.body, within.as_bytes());
        for body in [
            r#"{"model":"GigaChat-2","messages":[]}"#,
            r#"{"model":"GigaChat-2","model_options":{"temperature":0.5,"max_tokens":1000}}"#,
            // A top-level max_tokens is not where v2 reads it.
            r#"{"model":"GigaChat-2","max_tokens":10}"#,
            // The last model_options is the one GigaChat reads.
            r#"{"model_options":{"max_tokens":10},"model_options":{"temperature":1}}"#,
            r#"{"model_options":{"max_tokens":10},"model_options":null}"#,
            r#"{"model_options":"fast"}"#,
        ] {
            let checked = check(&policy, Endpoint::ChatV2, body).unwrap();
            assert_eq!(checked.clamped_to, Some(64), "{body}");
            assert_eq!(
                json(&checked.body)["model_options"]["max_tokens"],
                64,
                "{body}"
            );
        }
        let checked = check(
            &policy,
            Endpoint::ChatV2,
            r#"{"model_options":{"temperature":0.5,"max_tokens":1000}}"#,
        )
        .unwrap();
        assert_eq!(json(&checked.body)["model_options"]["temperature"], 0.5);
    }

    #[test]
    fn clamp_max_tokens_is_reusable_on_its_own() {
        assert_eq!(
            clamp_max_tokens(br#"{"max_tokens":5}"#, MaxTokensAt::TopLevel, 10),
            None
        );
        let clamped = clamp_max_tokens(br#"{"max_tokens":50}"#, MaxTokensAt::TopLevel, 10).unwrap();
        assert_eq!(json(&clamped)["max_tokens"], 10);
        assert_eq!(
            clamp_max_tokens(b"not json", MaxTokensAt::TopLevel, 10),
            None
        );
        assert_eq!(clamp_max_tokens(b"[1]", MaxTokensAt::TopLevel, 10), None);
        // The last of duplicated keys is the one GigaChat reads.
        let duplicated = clamp_max_tokens(
            br#"{"max_tokens":1,"max_tokens":900,"model":"m"}"#,
            MaxTokensAt::TopLevel,
            40,
        )
        .unwrap();
        assert_eq!(json(&duplicated)["max_tokens"], 40);
        assert_eq!(json(&duplicated)["model"], "m");
        let v2 = clamp_max_tokens(br#"{"model":"m"}"#, MaxTokensAt::ModelOptions, 5).unwrap();
        assert_eq!(json(&v2)["model_options"]["max_tokens"], 5);
    }

    #[test]
    fn only_thread_runs_and_chat_have_an_answer_length() {
        let post = Method::POST;
        assert_eq!(
            MaxTokensAt::of(Endpoint::Chat, &post, "chat/completions"),
            Some(MaxTokensAt::TopLevel)
        );
        assert_eq!(
            MaxTokensAt::of(Endpoint::ChatV2, &post, "v2/chat/completions"),
            Some(MaxTokensAt::ModelOptions)
        );
        for path in [
            "threads/run",
            "threads/messages/run",
            "v1/threads/messages/rerun",
        ] {
            assert_eq!(
                MaxTokensAt::of(Endpoint::Threads, &post, path),
                Some(MaxTokensAt::TopLevel),
                "{path}"
            );
        }
        assert_eq!(
            MaxTokensAt::of(Endpoint::Threads, &post, "threads/messages"),
            None
        );
        assert_eq!(
            MaxTokensAt::of(Endpoint::Threads, &Method::GET, "threads/run"),
            None
        );
        assert_eq!(
            MaxTokensAt::of(Endpoint::Embeddings, &post, "embeddings"),
            None
        );
    }
}
