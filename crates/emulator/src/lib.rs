//! An offline stand-in for the GigaChat REST API.
//!
//! The real service is unreachable from development machines and CI, so the
//! proxy starts this in-process when no credentials are configured, and every
//! black-box test runs the proxy against it. It therefore aims to be faithful
//! on the wire (OAuth, the v1 and v2 API with files, batches, assistants and
//! legacy threads kept in memory, their headers and error shapes),
//! deterministic (replies echo the last user message and name its
//! attachments; a function is called when the request forces it or the
//! last user message names it; the answer after a function result quotes
//! that result; token counts are `ceil(chars / 4)`), strict where GigaChat
//! is (system message first, temperature above zero, every function call
//! answered by a JSON-object result, attachments that exist), fast (no sleeps unless a fault asks for one) and
//! observable (counters, recorded request headers, live fault switches, and an
//! HTTP control surface under `/_emulator/` for tests in other languages).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

mod api;
mod assistants;
mod batches;
mod chat;
mod control;
mod embeddings;
mod faults;
mod files;
mod images;
mod models;
mod oauth;
mod server;
mod sse;
mod state;
mod storage;
mod threads;
mod tls;
mod util;

pub use faults::{Faults, FunctionCallChunk};
pub use tls::EmulatorTls;

use state::Shared;

/// Base64 of `emulator-client-id:emulator-client-secret`: the authorization
/// key the default configuration accepts, so zero-config setups just work.
pub const DEFAULT_CREDENTIALS: &str = "ZW11bGF0b3ItY2xpZW50LWlkOmVtdWxhdG9yLWNsaWVudC1zZWNyZXQ=";

/// An authorization key the emulator accepts and the only scope it may request
/// (asking for another one is GigaChat's OAuth error code 7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub key: String,
    pub scope: String,
}

impl Credential {
    pub fn new(key: impl Into<String>, scope: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            scope: scope.into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Accepted authorization keys (the base64 "client_id:client_secret"
    /// string as given to GigaChat) and the scope each may request.
    pub credentials: Vec<Credential>,
    /// Lifetime of issued access tokens (GigaChat: 30 min).
    pub token_ttl: Duration,
    /// Delay between SSE chunks (0 by default).
    pub chunk_delay: Duration,
    /// Per-credential concurrent API requests; None = unlimited (default).
    /// GigaChat: 1 on PERS, 10 on B2B/CORP; excess → 429.
    pub concurrency_limit: Option<usize>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            credentials: vec![Credential::new(DEFAULT_CREDENTIALS, "GIGACHAT_API_PERS")],
            token_ttl: Duration::from_secs(30 * 60),
            chunk_delay: Duration::ZERO,
            concurrency_limit: None,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub oauth_calls: u64,
    pub oauth_failures: u64,
    pub api_calls: u64,
    pub streams_started: u64,
    pub streams_completed: u64,
    /// Body dropped before the last chunk was sent, i.e. the client went away.
    /// Streams cut by the `reset_stream_after_chunks` fault count in neither
    /// this nor `streams_completed`.
    pub streams_cancelled: u64,
    pub max_concurrent_api: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecordedRequest {
    pub method: String,
    /// Path with query.
    pub path: String,
    /// Lower-case names, values as received (lossy UTF-8), in arrival order.
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
}

impl RecordedRequest {
    /// The first value of a header, by case-insensitive name; a convenience
    /// for assertions such as "no cookie reached the upstream".
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Locks a mutex even if a previous holder panicked: the protected data are
/// plain collections that stay consistent, and the emulator must not panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running emulator. Dropping it stops the server in the background;
/// `shutdown` does the same and waits for it.
#[derive(Debug)]
pub struct Emulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    /// Serving HTTPS; the URLs then name `localhost`.
    tls: bool,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Emulator {
    /// Binds `addr` (use 127.0.0.1:0 for a random port) and serves in a
    /// spawned task until dropped or shut down.
    pub async fn start(config: EmulatorConfig, addr: SocketAddr) -> std::io::Result<Emulator> {
        Self::start_inner(config, addr, None).await
    }

    /// Like [`Emulator::start`], but over HTTPS with `tls` (HTTP/2 and
    /// HTTP/1.1 by ALPN). [`Emulator::base_url`] and
    /// [`Emulator::auth_url`] then name the host `localhost`, so a client's
    /// certificate name check is a real one: issue the server certificate
    /// for `localhost` and bind a loopback address.
    pub async fn start_tls(
        config: EmulatorConfig,
        addr: SocketAddr,
        tls: EmulatorTls,
    ) -> std::io::Result<Emulator> {
        let acceptor = tls.acceptor()?;
        Self::start_inner(config, addr, Some(acceptor)).await
    }

    async fn start_inner(
        config: EmulatorConfig,
        addr: SocketAddr,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> std::io::Result<Emulator> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(config));
        let (stop, stopped) = oneshot::channel();
        let https = tls.is_some();
        let task = tokio::spawn(server::serve(listener, Arc::clone(&shared), tls, stopped));
        tracing::debug!(%addr, https, "gigachat emulator started");
        Ok(Emulator {
            shared,
            addr,
            tls: https,
            stop: Some(stop),
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, or `https://localhost:PORT` over TLS.
    pub fn origin(&self) -> String {
        if self.tls {
            format!("https://localhost:{}", self.addr.port())
        } else {
            format!("http://{}", self.addr)
        }
    }

    /// The legacy-style API base; clients append `/chat/completions` etc.
    pub fn base_url(&self) -> String {
        format!("{}/api/v1", self.origin())
    }

    pub fn auth_url(&self) -> String {
        format!("{}/api/v2/oauth", self.origin())
    }

    /// Live switches, shared with the server task.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Zeroes the counters (`max_concurrent_api` restarts from the requests
    /// currently in flight).
    pub fn reset_stats(&self) {
        self.shared.reset_stats();
    }

    /// The last 1000 API and OAuth requests, oldest first.
    pub fn recorded_requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.recorded).iter().cloned().collect()
    }

    pub fn clear_recorded(&self) {
        lock(&self.shared.recorded).clear();
    }

    /// Stops accepting, lets in-flight responses finish (up to a few
    /// seconds), then returns.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
        {
            tracing::debug!(error = %e, "emulator server task ended abnormally");
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        // Dropping the sender wakes the server task, which shuts down on its own.
        self.stop.take();
    }
}
