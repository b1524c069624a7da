//! `/api/gigachat-budget`: the caller's token budget now (limit, used,
//! reserved, remaining, reset), so a UI can show a meter. Identified and
//! admitted like a GigaChat call, so a caller sees only their own budget.

use http::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::admit::{Admitted, Purpose, admit};
use crate::Proxy;
use crate::body::{ProxyBody, json_response};
use crate::error::Error;
use crate::observe::RequestLog;

pub(crate) async fn handle<B>(
    proxy: &Proxy,
    request: &Request<B>,
    log: &mut RequestLog,
) -> Result<Response<ProxyBody>, Error> {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return Err(Error::MethodNotAllowed {
            allowed: "GET, HEAD, OPTIONS",
        });
    }
    let ready = proxy.ready()?;
    let Admitted { identity, limits } = admit(ready, request, Purpose::Call, log).await?;
    let budget = ready
        .limiter
        .token_budget(&identity.key, identity.anonymous, identity.token_budget)
        .await?;
    let mut response = match budget {
        Some(info) => {
            let mut response = json_response(StatusCode::OK, &info.json());
            info.apply(response.headers_mut());
            response
        }
        // No budget applies to this caller: a UI hides its meter. The
        // fields stay (null) so a client reading `limit` needs no branch;
        // `enabled` says it outright.
        None => json_response(
            StatusCode::OK,
            &json!({"enabled": false, "limit": null, "used": null, "reserved": null, "remaining": null, "reset": null}),
        ),
    };
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    limits.apply(response.headers_mut());
    Ok(response)
}
