//! `/api/gigachat-api/{path}`: forward one call to GigaChat.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::Proxy;
use crate::body::{BoxError, ProxyBody};
use crate::error::Error;
use crate::upstream::body::UpstreamBody;

const UPSTREAM_REQUEST_ID: HeaderName = HeaderName::from_static("x-upstream-request-id");
const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

pub(crate) async fn handle<B>(
    proxy: &Proxy,
    request: Request<B>,
    request_id: &HeaderValue,
) -> Result<Response<ProxyBody>, Error>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let ready = proxy.ready()?;
    let client_path = request
        .uri()
        .path()
        .strip_prefix(super::API_PREFIX)
        .unwrap_or_default();
    let url = ready.base.resolve(client_path, request.uri().query())?;
    let client_ip = ready.access.client_ip(
        ready.config.platform,
        request.headers(),
        request.extensions().get::<crate::access::ClientAddr>(),
    );
    let _identity = ready
        .access
        .identify(request.headers(), client_ip, &ready.sessions)
        .await?;

    let (parts, body) = request.into_parts();
    // The body is read whole (within the limit) because a 401 from GigaChat
    // is answered by refreshing the token and sending the same request
    // again; GigaChat request bodies are small next to the platform caps.
    let body = read_body(body, &parts.headers, ready.config.max_body_bytes).await?;

    let mut headers = HeaderMap::with_capacity(12);
    crate::headers::forward_request_headers(&parts.headers, &mut headers);
    headers.insert(HeaderName::from_static("x-request-id"), request_id.clone());

    let timeout = ready.config.timeout;
    let host = url.host_str().unwrap_or_default().to_owned();
    let mut retried_after_401 = false;
    loop {
        let token = ready.tokens.token().await?;
        let mut attempt_headers = headers.clone();
        attempt_headers.insert(header::AUTHORIZATION, token.header.clone());
        let send = ready
            .http
            .request(parts.method.clone(), url.clone())
            .headers(attempt_headers)
            .body(body.clone())
            .send();
        let response = match tokio::time::timeout(timeout, send).await {
            Err(_) => {
                return Err(Error::UpstreamTimeout {
                    stage: "waiting for the response headers",
                    seconds: timeout.as_secs(),
                });
            }
            Ok(Err(err)) => {
                return Err(crate::upstream::transport_error(
                    &err,
                    "api",
                    &host,
                    timeout.as_secs(),
                ));
            }
            Ok(Ok(response)) => response,
        };
        if response.status() == http::StatusCode::UNAUTHORIZED && !retried_after_401 {
            // The token expired or was revoked early: fetch a new one and
            // try once more; nothing has reached the client yet.
            tracing::info!(
                generation = token.generation,
                "GigaChat answered 401; refreshing the token and retrying once"
            );
            ready.tokens.invalidate(token.generation);
            retried_after_401 = true;
            continue;
        }
        return Ok(client_response(response, request_id));
    }
}

async fn read_body<B>(body: B, headers: &HeaderMap, limit: usize) -> Result<Bytes, Error>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(Error::BodyTooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => {
            Err(Error::BodyTooLarge { limit })
        }
        Err(_) => Err(Error::BodyUnreadable),
    }
}

/// GigaChat's status and body unchanged (a 422 `{status, message}` stays
/// that); headers filtered; SSE marked so no proxy or CDN buffers it.
fn client_response(upstream: reqwest::Response, request_id: &HeaderValue) -> Response<ProxyBody> {
    let status = upstream.status();
    let mut headers = HeaderMap::with_capacity(upstream.headers().len() + 3);
    for (name, value) in upstream.headers() {
        if crate::headers::is_forwarded_to_client(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Some(upstream_id) = upstream.headers().get("x-request-id") {
        headers.insert(UPSTREAM_REQUEST_ID, upstream_id.clone());
    }
    let sse = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
    if sse {
        headers.remove(header::CONTENT_LENGTH);
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(X_ACCEL_BUFFERING, HeaderValue::from_static("no"));
    }
    let request_id = request_id.to_str().unwrap_or_default().to_owned();
    let body = UpstreamBody::new(upstream, sse, request_id).boxed();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}
