//! The response cache: the model list for everyone for a short while, and,
//! when the operator opts in, exact repeats of a caller's non-streaming chat
//! request.
//!
//! What is cached, and why nothing else:
//! - `GET models` and `GET models/{id}` (with or without `v1/`), 200 only,
//!   shared by every caller: the list depends on the proxy's key, not on
//!   who asks. Every page load asks for it.
//! - `POST chat/completions` (v1 and v2) when `GIGACHAT_PROXY_CHAT_CACHE_TTL`
//!   is set, for JSON bodies that do not ask to stream, per caller identity
//!   (one user's answer is never served to another). Only complete answers:
//!   200, no error object, every v1 choice (or the v2 answer) finished with
//!   `stop` — never `length` (truncated), `blacklist`, `error` or
//!   `function_call`, which a repeat should not replay.
//!
//! Which of these a request is comes from its [`Endpoint`], classified once
//! by the API route; how its key is made, and what answer is complete
//! enough to store, is in `key.rs`.
//!
//! The entries live in this instance's memory, or in Redis under
//! `{prefix}:v1:cache:{sha256}` (with `PX` = the TTL) when `REDIS_URL` is
//! set, so all instances share them. A Redis that fails is a miss: the
//! cache never fails a request.
//!
//! A hit is answered before the upstream slot and the OAuth token are
//! taken, after authentication and the rate limit (a hit still counts as a
//! request). Answers carry `X-Cache: HIT` or `MISS`; requests that cannot be
//! cached carry neither.

pub(crate) mod config;
mod key;
mod memory;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Response, StatusCode, header};

use config::{CacheConfig, MEMORY_BUDGET_BYTES};

use crate::body::ProxyBody;
use crate::endpoint::Endpoint;
use crate::redis::{SharedRedis, Unavailable, WarnEvery};
use key::{CacheKey, Kind, canonical_chat_body};
use memory::MemoryStore;

pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
const HIT: HeaderValue = HeaderValue::from_static("HIT");
const MISS: HeaderValue = HeaderValue::from_static("MISS");

/// What the cache did for one request; `as_str` is the low-cardinality
/// label for the log line and metrics. The API route stores it in the
/// response's extensions (`response.extensions().get::<CacheOutcome>()`);
/// a response without one was not an API call that reached the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Answered from the cache; GigaChat was not called.
    Hit,
    /// Looked up, not found; the answer was not stored (not cacheable, or
    /// the store failed).
    Miss,
    /// Looked up, not found, and the answer was stored.
    Stored,
}

impl CacheOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Stored => "stored",
        }
    }
}

/// One cached answer: what the client needs to get an identical one.
#[derive(Clone)]
pub(crate) struct Entry {
    pub(crate) content_type: HeaderValue,
    pub(crate) body: Bytes,
}

/// Redis values start with this, so a value of another format (or version)
/// is a miss, not a garbled answer.
const ENTRY_MAGIC: &[u8; 4] = b"GPC1";

impl Entry {
    fn size(&self) -> usize {
        self.body.len() + self.content_type.len()
    }

    /// `GPC1`, the content type's length (u16, big-endian), the content
    /// type, the body.
    fn encode(&self) -> Vec<u8> {
        let content_type = self.content_type.as_bytes();
        let length = u16::try_from(content_type.len()).unwrap_or(0);
        let mut out = Vec::with_capacity(6 + content_type.len() + self.body.len());
        out.extend_from_slice(ENTRY_MAGIC);
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(&content_type[..usize::from(length)]);
        out.extend_from_slice(&self.body);
        out
    }

    fn decode(raw: Vec<u8>) -> Option<Entry> {
        let rest = raw.strip_prefix(ENTRY_MAGIC.as_slice())?;
        let (length, rest) = rest.split_first_chunk::<2>()?;
        let length = usize::from(u16::from_be_bytes(*length));
        let content_type = HeaderValue::from_bytes(rest.get(..length)?).ok()?;
        let body = Bytes::from(raw).slice(6 + length..);
        Some(Entry { content_type, body })
    }

    fn into_response(self) -> Response<ProxyBody> {
        let mut response = Response::new(crate::body::full(self.body));
        *response.status_mut() = StatusCode::OK;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, self.content_type);
        headers.insert(X_CACHE, HIT);
        response.extensions_mut().insert(CacheOutcome::Hit);
        response
    }
}

enum Store {
    Memory(MemoryStore),
    Redis(Arc<SharedRedis>),
}

/// Built once per process; shared by every request.
pub(crate) struct ResponseCache {
    config: CacheConfig,
    /// The proxy's credential fingerprint: two deployments with different
    /// GigaChat keys that share a Redis do not share entries.
    namespace: String,
    store: Store,
    warnings: WarnEvery,
}

impl ResponseCache {
    pub(crate) fn new(
        config: &CacheConfig,
        namespace: &str,
        redis: Option<Arc<SharedRedis>>,
    ) -> Self {
        let store = match redis {
            Some(redis) => Store::Redis(redis),
            None => Store::Memory(MemoryStore::new(config.max_entries, MEMORY_BUDGET_BYTES)),
        };
        Self {
            config: config.clone(),
            namespace: namespace.to_owned(),
            store,
            warnings: WarnEvery::new(crate::redis::WARN_EVERY),
        }
    }

    /// `"off"`, `"memory"` or `"redis"` (for health).
    pub(crate) fn backend(&self) -> &'static str {
        match &self.store {
            _ if !self.config.is_enabled() => "off",
            Store::Memory(_) => "memory",
            Store::Redis(_) => "redis",
        }
    }

    /// The key of a request that may be answered from the cache, or `None`.
    /// `endpoint` is the call's kind (classified once by the API route),
    /// `url` the upstream URL it resolved to, `identity` the caller's
    /// identity key.
    pub(crate) fn key(
        &self,
        parts: &http::request::Parts,
        endpoint: Endpoint,
        url: &http::Uri,
        body: &[u8],
        identity: &str,
    ) -> Option<CacheKey> {
        if !self.config.is_enabled() {
            return None;
        }
        let (kind, ttl, scope, canonical) = match endpoint {
            // `HEAD` is the same kind, but only a `GET` answer has the body
            // a later `GET` would need.
            Endpoint::Models | Endpoint::Model if parts.method == Method::GET => {
                if !body.is_empty() {
                    return None;
                }
                (Kind::Models, self.config.models_ttl?, "global", Vec::new())
            }
            Endpoint::Chat | Endpoint::ChatV2 => {
                let ttl = self.config.chat_ttl?;
                let kind = if endpoint == Endpoint::ChatV2 {
                    Kind::ChatV2
                } else {
                    Kind::ChatV1
                };
                (
                    kind,
                    ttl,
                    identity,
                    canonical_chat_body(&parts.headers, body)?,
                )
            }
            _ => return None,
        };
        Some(CacheKey::new(
            kind,
            ttl,
            [
                self.namespace.as_bytes(),
                scope.as_bytes(),
                parts.method.as_str().as_bytes(),
                url.to_string().as_bytes(),
                &canonical,
            ],
        ))
    }

    /// The cached answer for `key`, ready to send (`X-Cache: HIT`), or
    /// `None` on a miss or when the store fails.
    pub(crate) async fn lookup(&self, key: &CacheKey) -> Option<Response<ProxyBody>> {
        let entry = match &self.store {
            Store::Memory(memory) => memory.get(&key.digest, Instant::now()),
            Store::Redis(redis) => {
                let name = redis.key("cache", &hex(&key.digest));
                let name = name.as_str();
                let found = redis
                    .run(|mut connection| async move {
                        redis::cmd("GET")
                            .arg(name)
                            .query_async::<Option<Vec<u8>>>(&mut connection)
                            .await
                    })
                    .await;
                match found {
                    Ok(raw) => raw.and_then(Entry::decode),
                    Err(err) => {
                        self.warn(redis, "lookup", &err);
                        None
                    }
                }
            }
        };
        entry.map(Entry::into_response)
    }

    /// After a miss: marks the answer `X-Cache: MISS` and stores it if it is
    /// a complete, non-streaming 200 JSON answer. `body` is the answer's
    /// bytes when the proxy read them whole (small JSON answers); anything
    /// else (a stream, a large body) is not cached.
    pub(crate) async fn store(
        &self,
        key: &CacheKey,
        response: &mut Response<ProxyBody>,
        sse: bool,
        body: Option<&Bytes>,
    ) -> CacheOutcome {
        response.headers_mut().insert(X_CACHE, MISS);
        let outcome = self.try_store(key, response, sse, body).await;
        response.extensions_mut().insert(outcome);
        outcome
    }

    async fn try_store(
        &self,
        key: &CacheKey,
        response: &Response<ProxyBody>,
        sse: bool,
        body: Option<&Bytes>,
    ) -> CacheOutcome {
        let Some(body) = body else {
            return CacheOutcome::Miss;
        };
        let Some(content_type) = response
            .headers()
            .get(header::CONTENT_TYPE)
            .filter(|v| v.to_str().is_ok_and(|v| v.contains("json")))
        else {
            return CacheOutcome::Miss;
        };
        if sse
            || response.status() != StatusCode::OK
            || body.len() > self.config.max_entry_bytes
            || !key.kind.accepts(body)
        {
            return CacheOutcome::Miss;
        }
        let entry = Entry {
            content_type: content_type.clone(),
            body: body.clone(),
        };
        match &self.store {
            Store::Memory(memory) => {
                memory.put(key.digest, entry, key.ttl, Instant::now());
                CacheOutcome::Stored
            }
            Store::Redis(redis) => {
                let name = redis.key("cache", &hex(&key.digest));
                let (name, value) = (name.as_str(), entry.encode());
                let value = value.as_slice();
                let ttl_ms = u64::try_from(key.ttl.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1);
                let stored = redis
                    .run(|mut connection| async move {
                        redis::cmd("SET")
                            .arg(name)
                            .arg(value)
                            .arg("PX")
                            .arg(ttl_ms)
                            .query_async::<()>(&mut connection)
                            .await
                    })
                    .await;
                match stored {
                    Ok(()) => CacheOutcome::Stored,
                    Err(err) => {
                        self.warn(redis, "store", &err);
                        CacheOutcome::Miss
                    }
                }
            }
        }
    }

    fn warn(&self, redis: &SharedRedis, operation: &'static str, err: &Unavailable) {
        if let Some(suppressed) = self.warnings.allow() {
            tracing::warn!(
                redis = %redis.redacted_url(),
                operation,
                problem = %err.0,
                suppressed_warnings = suppressed,
                "response cache store unavailable; answering from GigaChat (cache miss)"
            );
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use http_body_util::BodyExt;
    use reqwest::Url;
    use std::time::Duration;

    const BASE: &str = "http://127.0.0.1:9/api/v1";

    fn cache(chat: bool) -> ResponseCache {
        let mut config = CacheConfig::disabled();
        config.models_ttl = Some(Duration::from_secs(60));
        config.chat_ttl = chat.then_some(Duration::from_secs(60));
        ResponseCache::new(&config, "cred", None)
    }

    fn parts(method: Method, path: &str, json: bool) -> http::request::Parts {
        let mut builder = http::Request::builder()
            .method(method)
            .uri(format!("/api/gigachat-api/{path}"));
        if json {
            builder = builder.header("content-type", "application/json");
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn key(
        cache: &ResponseCache,
        method: Method,
        path: &str,
        body: &str,
        who: &str,
    ) -> Option<[u8; 32]> {
        let base = crate::path::UpstreamBase::new(&Url::parse(BASE).unwrap());
        let url = base.resolve(path, None).unwrap();
        let endpoint = Endpoint::classify(&method, path, base.default_version());
        cache
            .key(
                &parts(method, path, true),
                endpoint,
                &url,
                body.as_bytes(),
                who,
            )
            .map(|k| k.digest)
    }

    #[test]
    fn keys_scope_chat_by_identity_and_models_globally() {
        let cache = cache(true);
        let body = r#"{"model":"GigaChat","messages":[]}"#;
        let alice = key(&cache, Method::POST, "chat/completions", body, "key:a").unwrap();
        let bob = key(&cache, Method::POST, "chat/completions", body, "key:b").unwrap();
        assert_ne!(alice, bob);
        assert_eq!(
            Some(alice),
            key(&cache, Method::POST, "v1/chat/completions", body, "key:a")
        );
        assert_ne!(
            Some(alice),
            key(&cache, Method::POST, "v2/chat/completions", body, "key:a")
        );
        let models = key(&cache, Method::GET, "models", "", "key:a").unwrap();
        assert_eq!(
            Some(models),
            key(&cache, Method::GET, "v1/models", "", "key:b")
        );
        assert_ne!(
            Some(models),
            key(&cache, Method::GET, "models/GigaChat", "", "key:a")
        );
        assert!(key(&cache, Method::GET, "models/GigaChat", "", "x").is_some());
    }

    #[test]
    fn only_the_cacheable_routes_get_keys() {
        let cache = cache(false);
        let body = r#"{"model":"GigaChat","messages":[]}"#;
        assert!(key(&cache, Method::POST, "chat/completions", body, "a").is_none());
        assert!(key(&cache, Method::GET, "models", "", "a").is_some());
        assert!(key(&cache, Method::HEAD, "models", "", "a").is_none());
        assert!(key(&cache, Method::POST, "embeddings", body, "a").is_none());
        assert!(key(&cache, Method::GET, "files", "", "a").is_none());
        assert!(key(&cache, Method::GET, "models/a/b", "", "a").is_none());
        let off = ResponseCache::new(&CacheConfig::disabled(), "cred", None);
        assert_eq!(off.backend(), "off");
        assert!(key(&off, Method::GET, "models", "", "a").is_none());
    }

    #[test]
    fn entries_survive_encoding() {
        let entry = Entry {
            content_type: HeaderValue::from_static("application/json; charset=utf-8"),
            body: Bytes::from_static(br#"{"a":1}"#),
        };
        let decoded = Entry::decode(entry.encode()).unwrap();
        assert_eq!(decoded.content_type, entry.content_type);
        assert_eq!(decoded.body, entry.body);
        assert!(Entry::decode(b"GPC2\0\0{}".to_vec()).is_none());
        assert!(Entry::decode(b"GPC1\0\x40ab".to_vec()).is_none());
    }

    #[tokio::test]
    async fn a_stored_answer_is_served_with_hit_and_others_are_not_stored() {
        let cache = cache(true);
        let body = r#"{"model":"GigaChat","messages":[]}"#;
        let base = crate::path::UpstreamBase::new(&Url::parse(BASE).unwrap());
        let url = base.resolve("chat/completions", None).unwrap();
        let request = parts(Method::POST, "chat/completions", true);
        let key = cache
            .key(&request, Endpoint::Chat, &url, body.as_bytes(), "a")
            .unwrap();
        assert!(cache.lookup(&key).await.is_none());

        let answer = |status: StatusCode, text: &'static str| {
            let mut response = Response::new(crate::body::full(text));
            *response.status_mut() = status;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            (response, Bytes::from_static(text.as_bytes()))
        };
        let truncated = r#"{"choices":[{"finish_reason":"length"}]}"#;
        let (mut response, bytes) = answer(StatusCode::OK, truncated);
        assert_eq!(
            cache.store(&key, &mut response, false, Some(&bytes)).await,
            CacheOutcome::Miss
        );
        assert_eq!(response.headers()[X_CACHE], "MISS");
        let complete = r#"{"choices":[{"finish_reason":"stop"}]}"#;
        let (mut response, bytes) = answer(StatusCode::NOT_FOUND, complete);
        assert_eq!(
            cache.store(&key, &mut response, false, Some(&bytes)).await,
            CacheOutcome::Miss
        );
        let (mut response, bytes) = answer(StatusCode::OK, complete);
        assert_eq!(
            cache.store(&key, &mut response, true, Some(&bytes)).await,
            CacheOutcome::Miss
        );
        assert_eq!(
            cache.store(&key, &mut response, false, None).await,
            CacheOutcome::Miss
        );
        assert!(cache.lookup(&key).await.is_none());
        assert_eq!(
            cache.store(&key, &mut response, false, Some(&bytes)).await,
            CacheOutcome::Stored
        );
        assert_eq!(
            response.extensions().get::<CacheOutcome>(),
            Some(&CacheOutcome::Stored)
        );
        let hit = cache.lookup(&key).await.unwrap();
        assert_eq!(hit.status(), StatusCode::OK);
        assert_eq!(hit.headers()[X_CACHE], "HIT");
        assert_eq!(hit.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(
            hit.extensions().get::<CacheOutcome>(),
            Some(&CacheOutcome::Hit)
        );
        let got = hit.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(got, complete.as_bytes());
    }
}
