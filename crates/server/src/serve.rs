//! HTTP/1.1 and h2c on one port, one task per connection, graceful stop.
//!
//! Connections are where an unauthenticated client can hurt a server
//! without sending a single valid request, so each is bounded (see
//! [`crate::connections`]): at most `idle_timeout` without a request in
//! flight, from being accepted to its first request's head and between
//! requests, in HTTP/1.1 and h2c alike; at most `max_connections` open, the
//! longest-idle closed first to make room.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gigachat_proxy_core::{ClientAddr, Proxy};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::connections::{self, Admission, InFlightBody, LogThrottle, Registry, Slot};
use crate::cores::{self, Workers};
use crate::linger::{self, LentSocket};
use crate::site;

/// How long in-flight requests (streams included) get to finish after
/// SIGTERM before the process exits anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Repeated warnings (accept failures, a full server) are logged at most
/// this often, with how many were held back.
const WARNING_INTERVAL: Duration = Duration::from_secs(10);
/// After an accept failure (out of descriptors, say) the loop waits this
/// long before the next try, doubling up to [`MAX_ACCEPT_BACKOFF`]: retrying
/// at once would spin on a listener that stays readable.
const MIN_ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// What the server allows a client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// `GIGACHAT_PROXY_HEADER_TIMEOUT`: the longest a connection may go
    /// without a request in flight.
    pub idle_timeout: Duration,
    /// `GIGACHAT_PROXY_MAX_CONNECTIONS`: open client connections at most.
    pub max_connections: usize,
}

impl ConnectionLimits {
    /// The limits the options ask for, the connection cap derived from this
    /// process's descriptor limit unless it is set.
    pub fn from_options(options: &crate::Options) -> Self {
        Self {
            idle_timeout: options.header_timeout,
            max_connections: options
                .max_connections
                .unwrap_or_else(connections::default_max_connections),
        }
    }
}

pub struct Server {
    listener: TcpListener,
    proxy: Proxy,
    limits: ConnectionLimits,
    workers: usize,
}

impl Server {
    /// `workers`: threads serving connections (`None`: one per CPU).
    pub async fn bind(
        host: &str,
        port: u16,
        proxy: Proxy,
        limits: ConnectionLimits,
        workers: Option<usize>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind((host, port)).await?;
        Ok(Self {
            listener,
            proxy,
            limits,
            workers: workers.unwrap_or_else(cores::default_count),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    pub async fn run_until_shutdown(self) -> std::io::Result<()> {
        serve(
            self.listener,
            self.proxy,
            self.limits,
            self.workers,
            shutdown_signal(),
        )
        .await
    }
}

/// What every connection task shares.
pub(crate) struct Shared {
    proxy: Proxy,
    builder: auto::Builder<TokioExecutor>,
    idle_timeout: Duration,
}

/// Serves on `workers` threads until `shutdown` resolves, then drains open
/// connections. Fails only if the worker threads cannot be started.
pub async fn serve(
    listener: TcpListener,
    proxy: Proxy,
    limits: ConnectionLimits,
    workers: usize,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let idle_timeout = limits.idle_timeout;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // HTTP/1.1 gets no timer of hyper's: a connection is idle until a
    // request's head is complete, so the idle rule below already gives a
    // client `idle_timeout` to send a head (the first, or the next after an
    // answer), and one sending headers a byte at a time is cut off then.
    // hyper's own header timeout would arm and disarm a second timer for
    // every request (30 s by default: long enough for a slow mobile client
    // to send a head, short enough that idle sockets do not pile up against
    // the connection cap).
    // h2c: a ping after `idle_timeout` without a frame, and the connection
    // closed if the ping is not answered as long again, so a vanished
    // client's streams do not stay open. Idle h2c connections (no stream
    // open) are closed by the idle rule below, which hyper has no setting for.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(idle_timeout)
        .keep_alive_timeout(idle_timeout);
    let shared = Arc::new(Shared {
        proxy,
        builder,
        idle_timeout,
    });
    let registry = Registry::new(limits.max_connections);
    let mut workers = Workers::start(workers, &shared)?;
    tracing::info!(
        workers = workers.count(),
        "serving on one event loop per worker thread"
    );
    log_limits(&limits);
    let (stop, stopped) = watch::channel(());
    let mut accept_backoff = MIN_ACCEPT_BACKOFF;
    let mut accept_warnings = LogThrottle::new(WARNING_INTERVAL);
    let mut full_warnings = LogThrottle::new(WARNING_INTERVAL);
    let mut eviction_notes = LogThrottle::new(WARNING_INTERVAL);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                accept_backoff = MIN_ACCEPT_BACKOFF;
                accepted
            }
            Err(err) if is_one_connections_fault(&err) => {
                tracing::debug!(error = %err, "a connection failed before it was accepted");
                continue;
            }
            Err(err) => {
                // Out of file descriptors and the like: idle connections
                // give theirs back, and the loop waits before retrying.
                let evicted = registry.evict_idle_now();
                if let Some(held_back) = accept_warnings.allow() {
                    tracing::warn!(
                        error = %err,
                        closing_idle = evicted,
                        retry_in_ms = u64::try_from(accept_backoff.as_millis()).unwrap_or(u64::MAX),
                        similar_warnings_held_back = held_back,
                        "accept failed; raise the file-descriptor limit (ulimit -n) or lower GIGACHAT_PROXY_MAX_CONNECTIONS"
                    );
                }
                tokio::select! {
                    () = tokio::time::sleep(accept_backoff) => {}
                    () = &mut shutdown => break,
                }
                accept_backoff = (accept_backoff * 2).min(MAX_ACCEPT_BACKOFF);
                continue;
            }
        };
        match registry.admit() {
            Admission::Admitted { slot, evicted } => {
                if evicted > 0
                    && let Some(held_back) = eviction_notes.allow()
                {
                    tracing::info!(
                        limit = registry.limit(),
                        closing_idle = evicted,
                        similar_notes_held_back = held_back,
                        "at the connection limit: closing the longest-idle connections to make room"
                    );
                }
                workers.dispatch(stream, peer, slot, stopped.clone());
            }
            Admission::Full => {
                if let Some(held_back) = full_warnings.allow() {
                    tracing::warn!(
                        limit = registry.limit(),
                        similar_warnings_held_back = held_back,
                        "at the connection limit with every connection busy: answering 503; raise GIGACHAT_PROXY_MAX_CONNECTIONS if the machine can take more"
                    );
                }
                linger::refuse(stream, registry.limit());
            }
        }
    }
    tracing::info!("shutting down: draining open connections");
    // Only the connections' receivers may keep `stop` open now.
    drop(stopped);
    let _ = stop.send(());
    if tokio::time::timeout(DRAIN_TIMEOUT, stop.closed())
        .await
        .is_err()
    {
        tracing::warn!("some connections were still open after {DRAIN_TIMEOUT:?}; exiting anyway");
    }
    // The workers end once their last connection has (now, or at exit).
    drop(workers);
    Ok(())
}

fn log_limits(limits: &ConnectionLimits) {
    let descriptors = connections::descriptor_limit();
    tracing::info!(
        max_connections = limits.max_connections,
        idle_timeout_s = limits.idle_timeout.as_secs(),
        descriptor_limit = descriptors,
        "connection limits"
    );
    // Each busy client connection may need a second descriptor upstream.
    if let Some(descriptors) = descriptors
        && u64::try_from(limits.max_connections)
            .is_ok_and(|max| max.saturating_mul(2) > descriptors)
    {
        tracing::warn!(
            max_connections = limits.max_connections,
            descriptor_limit = descriptors,
            "GIGACHAT_PROXY_MAX_CONNECTIONS is over half the file-descriptor limit: busy connections may leave none for GigaChat or Redis; raise ulimit -n or lower the cap"
        );
    }
}

/// Errors of `accept` that concern only the connection being accepted
/// (it was reset before the server got to it): the next one is fine.
fn is_one_connections_fault(err: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        err.kind(),
        ErrorKind::ConnectionAborted
            | ErrorKind::ConnectionReset
            | ErrorKind::Interrupted
            | ErrorKind::WouldBlock
    )
}

/// How a connection's hyper side ended.
enum Ending {
    /// hyper finished it (the client closed, or hyper closed after an
    /// answer): the socket is closed politely, lingering if need be.
    Finished,
    /// The server closed it (idle, evicted, stopping): closed at once.
    Closed,
}

pub(crate) async fn serve_connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    mut stopped: watch::Receiver<()>,
) {
    // Small SSE events must not wait for Nagle's algorithm.
    let _ = stream.set_nodelay(true);
    let connection = slot.connection();
    let (socket, mut returned) = LentSocket::new(stream);
    let service = service_fn(|mut request: hyper::Request<Incoming>| {
        // Counted from here (the head has arrived) until the response's
        // last byte is written.
        let in_flight = connection.request_started();
        let proxy = shared.proxy.clone();
        // The socket peer is the client address rate limits key on
        // (or the first trusted hop, see GIGACHAT_PROXY_TRUSTED_HOPS).
        request.extensions_mut().insert(ClientAddr(peer.ip()));
        async move {
            let response =
                if request.method() == hyper::Method::GET && request.uri().path() == "/metrics" {
                    metrics_response(&proxy)
                } else if let Some(response) = site::respond(&request) {
                    // The demo page (GET/HEAD on its exact paths); all else is the proxy's.
                    tracing::debug!(path = request.uri().path(), "demo page asset");
                    response
                } else {
                    // Boxed so the route's state is freed once the answer's
                    // head is out: hyper keeps the slot of this service
                    // future allocated for the connection's whole life, so
                    // inline it would hold ~5.5 KiB per open stream that
                    // nothing uses while the body streams.
                    Box::pin(proxy.handle(request)).await
                };
            Ok::<_, Infallible>(response.map(|body| InFlightBody::new(body, in_flight)))
        }
    });
    let ending = {
        let conn = shared
            .builder
            .serve_connection_with_upgrades(TokioIo::new(socket), service);
        tokio::pin!(conn);
        let idle_timeout = shared.idle_timeout;
        let mut check_at = tokio::time::Instant::now() + idle_timeout;
        let mut stopping = false;
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(error = %err, "connection ended with an error");
                    }
                    break if stopping { Ending::Closed } else { Ending::Finished };
                }
                () = connection.evicted() => {
                    conn.as_mut().graceful_shutdown();
                    if connection.idle_deadline(idle_timeout).is_some() {
                        poll_once(conn.as_mut()).await;
                        break Ending::Closed;
                    }
                    // A request started after the registry looked: it may
                    // finish (hyper closes after it); the idle rule still applies.
                    stopping = true;
                }
                () = tokio::time::sleep_until(check_at) => {
                    match connection.idle_deadline(idle_timeout) {
                        // A request in flight: its own timeouts bound it.
                        None => check_at = tokio::time::Instant::now() + idle_timeout,
                        Some(deadline) if deadline > tokio::time::Instant::now() => {
                            check_at = deadline;
                        }
                        Some(_) => {
                            tracing::debug!(%peer, "closing a connection idle for {idle_timeout:?}");
                            conn.as_mut().graceful_shutdown();
                            poll_once(conn.as_mut()).await;
                            break Ending::Closed;
                        }
                    }
                }
                _ = stopped.changed(), if !stopping => {
                    conn.as_mut().graceful_shutdown();
                    if connection.idle_deadline(idle_timeout).is_some() {
                        poll_once(conn.as_mut()).await;
                        break Ending::Closed;
                    }
                    // Finish what is in flight; the drain timeout bounds it.
                    stopping = true;
                }
            }
        }
    };
    // hyper has let go of the socket by now (the connection is dropped).
    if let (Ending::Finished, Ok(stream)) = (ending, returned.try_recv()) {
        let interrupt = async {
            tokio::select! {
                () = connection.evicted() => {}
                _ = stopped.changed() => {}
            }
        };
        linger::close(stream, interrupt).await;
    }
    drop(slot);
}

/// Polls a connection being closed once, so hyper can write what a polite
/// close needs (an h2 GOAWAY) before it is dropped; an idle connection has
/// nothing else to finish.
async fn poll_once<F: Future>(mut future: std::pin::Pin<&mut F>) {
    std::future::poll_fn(|cx| {
        let _ = future.as_mut().poll(cx);
        std::task::Poll::Ready(())
    })
    .await;
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// Prometheus scrape endpoint. Counts and timings only: no identities, no
/// content, no secrets, so it needs no protection beyond the network's.
fn metrics_response(proxy: &Proxy) -> hyper::Response<gigachat_proxy_core::ProxyBody> {
    let mut response = hyper::Response::new(gigachat_proxy_core::full_body(proxy.metrics_text()));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
