//! Path → handler, and what every answer gets on the way out (request id,
//! one log line).

pub mod api;
pub mod health;
pub mod oauth;

use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};

use crate::Proxy;
use crate::body::{BoxError, ProxyBody};
use crate::error::Error;

pub const API_PREFIX: &str = "/api/gigachat-api/";
pub const OAUTH_PATH: &str = "/api/gigachat-oauth";
pub const HEALTH_PATH: &str = "/api/gigachat-health";

const REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

pub(crate) async fn dispatch<B>(proxy: &Proxy, request: Request<B>) -> Response<ProxyBody>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let started = Instant::now();
    let request_id = request_id(&request);
    let method = request.method().clone();
    let path = request.uri().path();
    let (route, result) = if path == HEALTH_PATH || path == "/api/gigachat-health/" {
        ("health", health::handle(proxy, &request))
    } else if path == OAUTH_PATH || path == "/api/gigachat-oauth/" {
        ("oauth", oauth::handle(proxy, &request))
    } else if let Some(rest) = path.strip_prefix(API_PREFIX) {
        let rest = rest.to_owned();
        ("api", api::handle(proxy, request, &rest, &request_id).await)
    } else {
        ("none", Err(Error::RouteNotFound))
    };
    let request_id_text = request_id.to_str().unwrap_or_default();
    let mut response = match result {
        Ok(response) => response,
        Err(err) => {
            if err.status().is_server_error() {
                tracing::warn!(request_id = request_id_text, route, error = %err, "request failed");
            }
            err.into_response(request_id_text)
        }
    };
    tracing::info!(
        request_id = request_id_text,
        route,
        method = %method,
        status = response.status().as_u16(),
        latency_ms = started.elapsed().as_micros() as f64 / 1000.0,
        "request"
    );
    response.headers_mut().insert(REQUEST_ID, request_id);
    response
}

/// The client's `X-Request-ID` when it is a sane token (so logs on both
/// sides correlate), else a fresh uuid.
fn request_id<B>(request: &Request<B>) -> HeaderValue {
    request
        .headers()
        .get(&REQUEST_ID)
        .filter(|v| {
            let bytes = v.as_bytes();
            !bytes.is_empty()
                && bytes.len() <= 128
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
        })
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::try_from(uuid::Uuid::new_v4().to_string())
                .unwrap_or(HeaderValue::from_static("unknown"))
        })
}
