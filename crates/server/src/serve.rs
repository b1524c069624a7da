//! HTTP/1.1 and h2c on one port, one task per connection, graceful stop.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use gigachat_proxy_core::{ClientAddr, Proxy};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::site;

/// How long in-flight requests (streams included) get to finish after
/// SIGTERM before the process exits anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Server {
    listener: TcpListener,
    proxy: Proxy,
    header_timeout: Duration,
}

impl Server {
    pub async fn bind(
        host: &str,
        port: u16,
        proxy: Proxy,
        header_timeout: Duration,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind((host, port)).await?;
        Ok(Self {
            listener,
            proxy,
            header_timeout,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    pub async fn run_until_shutdown(self) {
        serve(
            self.listener,
            self.proxy,
            self.header_timeout,
            shutdown_signal(),
        )
        .await;
    }
}

/// Serves until `shutdown` resolves, then drains open connections.
pub async fn serve(
    listener: TcpListener,
    proxy: Proxy,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A client gets `header_timeout` to send a request's head, and a
    // keep-alive connection may sit idle that long between requests:
    // without it (hyper needs a timer for it) a client sending headers a
    // byte at a time could hold connections open forever. nginx's
    // `client_header_timeout` is 60 s, its `keepalive_timeout` 75 s.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small SSE events must not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        let service = service_fn(move |mut request: hyper::Request<Incoming>| {
            let proxy = proxy.clone();
            // The socket peer is the client address rate limits key on
            // (or the first trusted hop, see GIGACHAT_PROXY_TRUSTED_HOPS).
            request.extensions_mut().insert(ClientAddr(peer.ip()));
            async move {
                if request.method() == hyper::Method::GET && request.uri().path() == "/metrics" {
                    return Ok::<_, Infallible>(metrics_response(&proxy));
                }
                // The demo page (GET/HEAD on its exact paths); all else is the proxy's.
                if let Some(response) = site::respond(&request) {
                    tracing::debug!(path = request.uri().path(), "demo page asset");
                    return Ok::<_, Infallible>(response);
                }
                Ok::<_, Infallible>(proxy.handle(request).await)
            }
        });
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
        });
    }
    tracing::info!("shutting down: draining open connections");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections were still open after {DRAIN_TIMEOUT:?}; exiting anyway");
    }
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
    let mut response = hyper::Response::new(gigachat_proxy_core::body::full(proxy.metrics_text()));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
