//! `/api/gigachat-oauth`: GigaChat's OAuth answer shape, the proxy's token.
//!
//! Frontends (and SDKs) written against GigaChat's OAuth flow POST here and
//! get `{access_token, expires_at}`; the token is a short-lived proxy
//! session, never GigaChat's token and never the key. `Basic` credentials
//! are never passed on: in open mode they are ignored; when end-user auth is
//! required they must be one of the proxy's own API keys (the official SDKs
//! send their `credentials` setting that way), or the caller sends an API
//! key or a JWT as usual. The session names the minter, so its rate limit
//! follows it.

use http::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::admit::{Admitted, Purpose, admit};
use crate::Proxy;
use crate::body::{ProxyBody, json_response};
use crate::error::Error;

pub(crate) async fn handle<B>(
    proxy: &Proxy,
    request: &Request<B>,
    log: &mut crate::observe::RequestLog,
) -> Result<Response<ProxyBody>, Error> {
    if *request.method() != Method::POST {
        return Err(Error::MethodNotAllowed { allowed: "POST" });
    }
    let ready = proxy.ready()?;
    // Minting counts against the caller's budget like any request, so
    // fresh sessions cannot be farmed.
    let Admitted { identity, limits } = admit(ready, request, Purpose::Mint, log).await?;
    let subject = if identity.anonymous {
        crate::session::ANONYMOUS
    } else {
        identity.key.as_str()
    };
    let minted = ready.sessions.mint(subject, identity.token_budget)?;
    let mut response = json_response(
        StatusCode::OK,
        &json!({
            "access_token": minted.access_token.expose(),
            "expires_at": minted.expires_at_ms,
        }),
    );
    limits.apply(response.headers_mut());
    Ok(response)
}
