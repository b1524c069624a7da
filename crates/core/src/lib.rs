//! gigachat-proxy's core: everything between an `http::Request` from a
//! browser and GigaChat, with no knowledge of the platform it runs on.
//!
//! Build one [`Proxy`] per process at start-up and call [`Proxy::handle`]
//! for every request; the Vercel and Lambda adapters and the local server
//! are a few lines each around it. Data flows one way: platform event →
//! `http::Request` → `Proxy::handle` → GigaChat → streaming
//! `http::Response` → platform response.

mod access;
mod ai_sdk;
mod body;
mod cache;
mod config;
mod cors;
mod endpoint;
mod error;
// The translators' fuzz entry points (with their invariants' asserts) are
// built for the fuzz crate and the tests only, never into a proxy binary.
#[cfg(any(test, feature = "fuzzing"))]
mod fuzz_dialects;
mod headers;
mod jitter;
// `limits` and `redis` are public for `crates/core/tests/limits_redis.rs`,
// which drives the shared limiter against a real Redis from outside the
// crate.
mod limits;
mod metrics;
mod observe;
mod openai;
mod path;
mod redis;
mod routes;
mod secret;
mod session;
mod tenancy;
mod upstream;
mod usage;

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};

pub use access::ClientAddr;
pub use body::{BoxError, ProxyBody, empty as empty_body, full as full_body};
pub use config::env::{Env, whole_seconds};
pub use config::{Config, ConfigError, Platform, Scope, UpstreamKind};
use error::Error;

/// The limiter and its Redis settings, for the integration tests that run
/// them against a real `redis-server` (`crates/core/tests/limits_redis.rs`);
/// nothing outside the crate needs them otherwise.
#[doc(hidden)]
pub mod limits_for_tests {
    pub use crate::error::Error;
    pub use crate::limits::{FailureMode, Limiter, LimitsConfig, Rate};
    pub use crate::redis::RedisConfig;
}

/// What the fuzz targets (`fuzz/`) exercise directly: the parsers and
/// filters that see untrusted bytes. Not part of the supported surface.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::cors::{AllowedHosts, AllowedOrigins, Cors, CorsConfig, Verdict};
    #[cfg(feature = "fuzzing")]
    pub use crate::fuzz_dialects::{translate_answers, translate_requests};
    pub use crate::headers::{forward_request_headers, is_forwarded_to_client};
    pub use crate::path::UpstreamBase;
    pub use crate::upstream::body::sse_error_event;
    pub use crate::upstream::sse::SseScanner;
    pub use crate::usage::usage_in;
}

/// The proxy: configuration, the pooled upstream client, the shared token.
/// Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Proxy {
    state: Result<Arc<Ready>, Error>,
}

pub(crate) struct Ready {
    pub(crate) config: Config,
    /// The forwarding client (every API call); the token manager holds the
    /// OAuth one.
    pub(crate) upstream: upstream::client::UpstreamClient,
    pub(crate) tokens: upstream::token::TokenManager,
    pub(crate) sessions: session::SessionKeys,
    pub(crate) base: path::UpstreamBase,
    pub(crate) cors: cors::Cors,
    pub(crate) access: access::Access,
    pub(crate) limiter: limits::Limiter,
    pub(crate) cache: cache::ResponseCache,
    /// Shared with the streams it seals.
    pub(crate) ownership: Arc<tenancy::ownership::Ownership>,
    /// Files the OpenAI route uploaded, by content, to reuse their ids.
    pub(crate) uploads: openai::uploads::UploadCache,
}

impl Proxy {
    /// Reads the environment once. A bad configuration does not panic or
    /// exit: it is logged, and every request is answered with a JSON 500
    /// that names the variable, which is what an operator looking at a
    /// freshly deployed function needs to see.
    pub fn from_env(platform: Platform) -> Self {
        match Config::from_env(platform) {
            Ok(config) => Self::new(config),
            Err(err) => Self::misconfigured(err),
        }
    }

    pub fn new(config: Config) -> Self {
        let api = upstream::client::UpstreamClient::new(&config, &config.tls);
        let clients = upstream::client::build(&config, &config.tls).map(|http| (api, http));
        let state = clients.and_then(|(api, http)| {
            // One Redis connection for the cache and the shared token (the
            // limiter keeps its own); none when no Redis is configured.
            let shared = config
                .redis
                .as_ref()
                .map(|redis| Arc::new(crate::redis::SharedRedis::new(redis)));
            let tokens = upstream::token::TokenManager::new(&config, http.clone(), shared.clone())?;
            let limiter = match &config.redis {
                Some(redis) => {
                    limits::Limiter::shared(&config.limits, redis, &config.credential_id)
                }
                None => limits::Limiter::new(&config.limits),
            };
            Ok(Arc::new(Ready {
                cache: cache::ResponseCache::new(
                    &config.cache,
                    &config.credential_id,
                    shared.clone(),
                ),
                uploads: openai::uploads::UploadCache::new(shared.clone()),
                ownership: Arc::new(tenancy::ownership::Ownership::new(
                    &config.ownership,
                    &config.session_secret,
                    shared,
                )),
                cors: cors::Cors::new(config.cors.clone()),
                access: access::Access::new(&config.access)?,
                limiter,
                sessions: session::SessionKeys::new(
                    &config.session_secret,
                    config.session_ttl,
                    &config.access.session_binding(),
                ),
                base: path::UpstreamBase::new(&config.base_url),
                tokens,
                upstream: api,
                config,
            }))
        });
        if let Err(err) = &state {
            tracing::error!(error = %err, "gigachat-proxy cannot start serving");
        }
        Self { state }
    }

    pub fn misconfigured(err: ConfigError) -> Self {
        tracing::error!(variable = err.variable, error = %err, "gigachat-proxy is misconfigured; every request will get a 500 naming the variable");
        Self {
            state: Err(Error::Config(err)),
        }
    }

    /// The validated configuration, if it is valid.
    pub fn config(&self) -> Option<&Config> {
        self.state.as_ref().ok().map(|ready| &ready.config)
    }

    /// Answers one request. Never panics and never fails: every problem
    /// becomes a JSON error response.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<ProxyBody>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        routes::dispatch(self, request).await
    }

    /// Every metric in the Prometheus text format (the local server's
    /// `GET /metrics`).
    pub fn metrics_text(&self) -> String {
        metrics::render_prometheus()
    }

    pub(crate) fn ready(&self) -> Result<&Ready, Error> {
        self.state.as_deref().map_err(Clone::clone)
    }
}
