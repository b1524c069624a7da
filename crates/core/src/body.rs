//! The response body type shared by every route and every platform adapter.
//!
//! A boxed `http_body::Body` of `Bytes` with a boxed error: it drops straight
//! into `vercel_runtime::ResponseBody`, `lambda_http`'s streaming and
//! buffered runners, and hyper's server, so no adapter copies a stream.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ProxyBody = BoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

pub(crate) const JSON: HeaderValue = HeaderValue::from_static("application/json; charset=utf-8");

/// A JSON answer that no cache may keep (errors, tokens, health).
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<ProxyBody> {
    // Serializing a `Value` cannot fail; an empty body would still be a
    // well-formed answer if it somehow did.
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(full(bytes));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, JSON);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
