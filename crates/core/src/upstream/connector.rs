//! TCP connections to GigaChat: direct, or through the outbound proxy the
//! environment names (`HTTPS_PROXY` / `ALL_PROXY`, minus `NO_PROXY`), the
//! way curl, reqwest and the official Python SDK (httpx) read them.
//!
//! Corporate networks often allow the internet only through such a proxy;
//! the OAuth client (reqwest) already follows it, and the forwarding client
//! must take the same way or API calls would fail where tokens succeed.
//! HTTPS destinations go through an HTTP `CONNECT` tunnel, so TLS (and
//! GigaChat's certificate check) stays end to end. Plain-HTTP upstreams
//! (a local emulator) are always reached directly.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;

use crate::body::BoxError;

type Connecting = Pin<Box<dyn Future<Output = Result<TokioIo<TcpStream>, BoxError>> + Send>>;

#[derive(Clone)]
pub struct Connector {
    direct: HttpConnector,
    proxies: Arc<Matcher>,
}

impl Connector {
    /// Reads the proxy variables once, at start-up.
    pub fn from_env(direct: HttpConnector) -> Self {
        Self::new(direct, Matcher::from_env())
    }

    pub fn new(direct: HttpConnector, proxies: Matcher) -> Self {
        Self {
            direct,
            proxies: Arc::new(proxies),
        }
    }
}

impl Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // `HttpConnector` is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, destination: Uri) -> Self::Future {
        let mut direct = self.direct.clone();
        let intercept = match destination.scheme_str() {
            Some("https") => self.proxies.intercept(&destination),
            _ => None,
        };
        match intercept {
            Some(intercept) => {
                let mut tunnel = Tunnel::new(intercept.uri().clone(), direct);
                if let Some(auth) = intercept.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                Box::pin(async move { tunnel.call(destination).await.map_err(Into::into) })
            }
            None => Box::pin(async move { direct.call(destination).await.map_err(Into::into) }),
        }
    }
}
