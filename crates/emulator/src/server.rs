//! The accept loop and the top-level dispatch: body limits, recording, and
//! the split between OAuth, the API and the control surface.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::RecordedRequest;
use crate::api::{self, Received};
use crate::state::{Counters, Shared};
use crate::util::{Body, api_error};

/// Bodies above this are refused with 413, as the real API does.
pub(crate) const MAX_BODY: usize = 50 * 1024 * 1024;

/// Control requests are tiny JSON objects.
const MAX_CONTROL_BODY: usize = 1024 * 1024;

/// How long a graceful shutdown waits for in-flight streams before cutting.
const GRACE: Duration = Duration::from_secs(5);

enum ReadError {
    TooLarge,
    Broken,
}

async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, ReadError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(ReadError::TooLarge),
        Err(_) => Err(ReadError::Broken),
    }
}

fn declared_length(req: &Request<Incoming>) -> Option<usize> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn record(shared: &Shared, parts: &http::request::Parts, body_len: usize) {
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let headers = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    shared.record(RecordedRequest {
        method: parts.method.to_string(),
        path,
        headers,
        body_len,
    });
}

pub(crate) async fn dispatch(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    if path == "/_emulator" || path.starts_with("/_emulator/") {
        let (parts, body) = req.into_parts();
        return match read_body(body, MAX_CONTROL_BODY).await {
            Ok(bytes) => crate::control::handle(&shared, &parts.method, &path, &bytes),
            Err(ReadError::TooLarge) => {
                api_error(StatusCode::PAYLOAD_TOO_LARGE, "Payload too large")
            }
            Err(ReadError::Broken) => api_error(StatusCode::BAD_REQUEST, "Bad request"),
        };
    }

    let declared = declared_length(&req);
    let (parts, body) = req.into_parts();
    let received = if declared.is_some_and(|n| n > MAX_BODY) {
        Err(ReadError::TooLarge)
    } else {
        read_body(body, MAX_BODY).await
    };
    let (received, body_len) = match received {
        Ok(bytes) => {
            let len = bytes.len();
            (Received::Body(bytes), len)
        }
        Err(ReadError::TooLarge) => (Received::TooLarge, declared.unwrap_or(MAX_BODY)),
        // The client gave up mid-body; nobody will read the answer.
        Err(ReadError::Broken) => {
            record(&shared, &parts, 0);
            return api_error(StatusCode::BAD_REQUEST, "Bad request");
        }
    };
    record(&shared, &parts, body_len);

    if path == "/api/v2/oauth" {
        return match received {
            Received::Body(bytes) => crate::oauth::handle(shared, &parts, &bytes).await,
            Received::TooLarge => {
                Counters::bump(&shared.counters.oauth_calls);
                Counters::bump(&shared.counters.oauth_failures);
                crate::oauth::too_large()
            }
        };
    }
    match api::classify(&path) {
        Some(route) => {
            Counters::bump(&shared.counters.api_calls);
            api::handle(shared, parts, received, route).await
        }
        None => api::not_found(),
    }
}

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves until `stop` fires (or its sender is dropped), then shuts down
/// gracefully: idle keep-alive connections close at once, in-flight
/// responses get `GRACE` to finish. With `tls`, every connection is a TLS
/// one; the handshake runs in the connection's own task so a slow or broken
/// client never holds up the accept loop.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    mut stop: oneshot::Receiver<()>,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().keep_alive(true);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(%peer, error = %e, "set_nodelay failed");
                    }
                    let shared = Arc::clone(&shared);
                    let service = service_fn(move |req| {
                        let shared = Arc::clone(&shared);
                        async move { Ok::<_, Infallible>(dispatch(shared, req).await) }
                    });
                    let builder = builder.clone();
                    let watcher = graceful.watcher();
                    let tls = tls.clone();
                    connections.spawn(async move {
                        let result = match tls {
                            None => {
                                let conn = builder.serve_connection(TokioIo::new(stream), service);
                                watcher.watch(conn.into_owned()).await
                            }
                            Some(acceptor) => {
                                let stream = match tokio::time::timeout(
                                    HANDSHAKE_TIMEOUT,
                                    acceptor.accept(stream),
                                )
                                .await
                                {
                                    Ok(Ok(stream)) => stream,
                                    Ok(Err(e)) => {
                                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                        return;
                                    }
                                    Err(_) => {
                                        tracing::debug!(%peer, "TLS handshake timed out");
                                        return;
                                    }
                                };
                                let conn = builder.serve_connection(TokioIo::new(stream), service);
                                watcher.watch(conn.into_owned()).await
                            }
                        };
                        if let Err(e) = result {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    // E.g. EMFILE: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    if tokio::time::timeout(GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("graceful shutdown timed out; aborting connections");
    }
    connections.shutdown().await;
}
