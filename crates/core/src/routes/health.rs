//! `/api/gigachat-health`: is this deployment configured, and what does it
//! talk to. Never a secret, never an upstream call (so monitors cannot burn
//! OAuth quota).

use http::{Method, Request, Response, StatusCode};
use serde_json::json;

use crate::Proxy;
use crate::body::{ProxyBody, json_response};
use crate::error::Error;

pub(crate) fn handle<B>(proxy: &Proxy, request: &Request<B>) -> Result<Response<ProxyBody>, Error> {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return Err(Error::MethodNotAllowed { allowed: "GET" });
    }
    let ready = proxy.ready()?;
    let config = &ready.config;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "status": "ok",
            "config": "valid",
            "upstream": config.upstream_kind.as_str(),
            "scope": config.scope.as_str(),
            "platform": config.platform.as_str(),
            "auth": match ready.access.mode() {
                crate::access::AuthMode::Open => "open",
                crate::access::AuthMode::Required => "required",
            },
            "limits": ready.limiter.backend(),
            "version": env!("CARGO_PKG_VERSION"),
        }),
    ))
}
