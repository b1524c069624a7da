//! `/api/gigachat-oauth`: GigaChat's OAuth answer shape, the proxy's token.
//!
//! Frontends (and SDKs) written against GigaChat's OAuth flow POST here and
//! get `{access_token, expires_at}`; the token is a short-lived proxy
//! session, never GigaChat's token and never the key. Whatever `Basic`
//! credentials the client sends are ignored: keys live only in the server's
//! environment.

use http::{Method, Request, Response, StatusCode};
use serde_json::json;

use crate::Proxy;
use crate::body::{ProxyBody, json_response};
use crate::error::Error;

pub(crate) fn handle<B>(proxy: &Proxy, request: &Request<B>) -> Result<Response<ProxyBody>, Error> {
    if *request.method() != Method::POST {
        return Err(Error::MethodNotAllowed { allowed: "POST" });
    }
    let ready = proxy.ready()?;
    let minted = ready.sessions.mint()?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "access_token": minted.access_token.expose(),
            "expires_at": minted.expires_at_ms,
        }),
    ))
}
