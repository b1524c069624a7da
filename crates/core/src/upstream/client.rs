//! The pooled HTTP clients to GigaChat, built once at start-up.
//!
//! Built once per process (never per request) so connections and TLS
//! sessions are reused across requests and across warm serverless
//! invocations. Both share one rustls configuration
//! ([`TlsConfig::client_config`]): GigaChat's OAuth host needs the same
//! Russian root and, for corporate keys, the same client certificate.
//!
//! - [`UpstreamClient`] forwards the API calls: hyper's pooled client
//!   directly, because everything reqwest adds per request (two URL parses,
//!   a redirect policy, its own future and body wrappers) measured as a
//!   fifth of the proxy's CPU time per call (`bench/results.md`).
//! - [`build`] gives the reqwest client for the cold path, the OAuth token
//!   exchange (which the deep health check also exercises), where its
//!   conveniences (forms, JSON) are worth more than microseconds.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::Config;
use crate::error::Error;

use super::connector::Connector;
use super::tls::{self, TlsConfig};

/// Idle pooled connections close after this long (GigaChat's own idle
/// timeout is longer; a dead pooled connection costs a retry, not an error).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
const USER_AGENT: &str = concat!("gigachat-proxy/", env!("CARGO_PKG_VERSION"));

type Pooled = Client<HttpsConnector<Connector>, Full<Bytes>>;

/// Gives each [`UpstreamClient`] its key in the per-thread pools.
static NEXT_CLIENT_ID: AtomicU64 = AtomicU64::new(0);
/// A thread keeps pools for at most this many clients (a process has one;
/// tests build many): the oldest is dropped first.
const POOLS_PER_THREAD: usize = 4;

thread_local! {
    /// The pools of this thread, when it runs a single-threaded runtime
    /// (the local server's workers): one per client, keyed by its id.
    static THREAD_POOLS: RefCell<Vec<(u64, Pooled)>> = const { RefCell::new(Vec::new()) };
}

/// The forwarding client: keep-alive pool, HTTP/2 where the host offers it
/// (ALPN), TCP_NODELAY so small SSE events are not held back. It never
/// follows redirects: one from GigaChat is never expected, and following
/// it could carry the request (and its body) somewhere unintended.
///
/// On a single-threaded runtime (the local server runs one per core) each
/// thread gets a pool of its own, so a request and its upstream connection's
/// task run on one thread and never wake each other across threads. On a
/// multi-threaded runtime (the serverless entry points) the one shared pool
/// is used: a warm invocation then finds the connection the last one left,
/// whichever thread it runs on.
#[derive(Clone)]
pub struct UpstreamClient {
    shared: Pooled,
    /// What a thread's own pool is built from: the shared one's settings.
    builder: hyper_util::client::legacy::Builder,
    connector: HttpsConnector<Connector>,
    id: u64,
    user_agent: HeaderValue,
}

impl UpstreamClient {
    pub fn new(config: &Config, tls: &TlsConfig) -> Self {
        let mut http = HttpConnector::new();
        // The scheme is the TLS layer's business (https, or http for a
        // local emulator).
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_keepalive(Some(TCP_KEEPALIVE));
        http.set_connect_timeout(Some(config.connect_timeout));
        warn_if_unverified(tls);
        // A copy of the shared configuration (its roots, verifier and
        // identity are behind `Arc`s): the connector sets its own ALPN.
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(rustls::ClientConfig::clone(tls.client_config()))
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(Connector::from_env(http));
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .http2_adaptive_window(true);
        let shared = builder.build(connector.clone());
        Self {
            shared,
            builder,
            connector,
            id: NEXT_CLIENT_ID.fetch_add(1, Ordering::Relaxed),
            user_agent: HeaderValue::from_static(USER_AGENT),
        }
    }

    /// This thread's pool when the thread runs a single-threaded runtime,
    /// else the shared one. A thread's pool is a copy of the shared client
    /// (same connector and settings) with an empty pool of its own.
    fn send_on_this_thread(
        &self,
        request: Request<Full<Bytes>>,
    ) -> hyper_util::client::legacy::ResponseFuture {
        let single_threaded = tokio::runtime::Handle::try_current().is_ok_and(|runtime| {
            runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread
        });
        if !single_threaded {
            return self.shared.request(request);
        }
        THREAD_POOLS.with(|pools| {
            let mut pools = pools.borrow_mut();
            if let Some((_, pool)) = pools.iter().find(|(id, _)| *id == self.id) {
                return pool.request(request);
            }
            if pools.len() >= POOLS_PER_THREAD {
                pools.remove(0);
            }
            let pool = self.builder.build(self.connector.clone());
            let response = pool.request(request);
            pools.push((self.id, pool));
            response
        })
    }

    /// Sends one request; resolves when the response headers are in (the
    /// body streams afterwards). The caller bounds the wait.
    pub async fn send(
        &self,
        mut request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
        request
            .headers_mut()
            .insert(header::USER_AGENT, self.user_agent.clone());
        self.send_on_this_thread(request).await
    }
}

/// The reqwest client of the OAuth token exchange, with `tls` (see
/// [`TlsConfig::client_config`]). Only the upstream clients get these
/// settings: nothing else in the process (the Redis limiter, JWKS fetches)
/// trusts the extra roots or skips verification.
pub fn build(config: &Config, tls: &TlsConfig) -> Result<reqwest::Client, Error> {
    apply_tls(reqwest::Client::builder(), tls)
        .connect_timeout(config.connect_timeout)
        // Longest silence between two reads: bounds a stalled answer.
        .read_timeout(config.stream_idle_timeout)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .tcp_nodelay(true)
        .tcp_keepalive(TCP_KEEPALIVE)
        .http2_adaptive_window(true)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(USER_AGENT)
        .build()
        .map_err(|_| Error::Internal("could not build the upstream HTTP client"))
}

/// The trust and identity settings of the upstream clients, apart from the
/// rest so tests can apply exactly these to a client of their own.
pub(crate) fn apply_tls(
    builder: reqwest::ClientBuilder,
    tls: &TlsConfig,
) -> reqwest::ClientBuilder {
    let mut config = rustls::ClientConfig::clone(tls.client_config());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    builder.use_preconfigured_tls(config)
}

fn warn_if_unverified(tls: &TlsConfig) {
    if !tls.verify() {
        tracing::warn!(
            variable = tls::VERIFY_SSL_CERTS,
            "GIGACHAT_VERIFY_SSL_CERTS=false: TLS certificate verification toward GigaChat is OFF. \
             Anyone on the network path can impersonate GigaChat and read the authorization key, \
             the access tokens and every prompt. Use GIGACHAT_CA_BUNDLE_FILE to trust a corporate \
             proxy's CA instead, and never run production like this."
        );
    }
}
