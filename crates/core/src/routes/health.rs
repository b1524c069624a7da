//! `/api/gigachat-health`: is this deployment configured, and what does it
//! talk to. Never a secret. By default never an upstream call (so monitors
//! cannot burn OAuth quota); `?deep=1` also proves that a GigaChat token can
//! be had — the cached one when it is fresh, so a monitor polling it costs
//! one OAuth call per token lifetime, like any other request.

use http::{Method, Request, Response, StatusCode};
use serde_json::json;

use crate::Proxy;
use crate::body::{ProxyBody, json_response};
use crate::error::Error;

pub(crate) async fn handle<B>(
    proxy: &Proxy,
    request: &Request<B>,
) -> Result<Response<ProxyBody>, Error> {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return Err(Error::MethodNotAllowed { allowed: "GET" });
    }
    let ready = proxy.ready()?;
    let config = &ready.config;
    let (budget, budget_anonymous) = ready.limiter.budgets_described();
    let mut body = json!({
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
        "cache": ready.cache.backend(),
        "ownership": if ready.ownership.enabled() { "on" } else { "off" },
        "budget": budget,
        "budget_anonymous": budget_anonymous,
        "version": env!("CARGO_PKG_VERSION"),
    });
    if !wants_deep(request.uri().query()) {
        return Ok(json_response(StatusCode::OK, &body));
    }
    // The token itself never leaves `tokens`: only whether it could be had.
    match ready.tokens.token().await {
        Ok(_) => {
            body["token"] = json!("ok");
            Ok(json_response(StatusCode::OK, &body))
        }
        Err(err) => {
            body["status"] = json!("error");
            body["token"] = json!("error");
            body["code"] = json!(err.code());
            body["message"] = json!(err.to_string());
            body["hint"] = json!(err.hint());
            Ok(json_response(StatusCode::SERVICE_UNAVAILABLE, &body))
        }
    }
}

/// `deep`, `deep=1`, `deep=true` (or `yes`) in the query.
fn wants_deep(query: Option<&str>) -> bool {
    query.unwrap_or_default().split('&').any(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, "1"));
        name == "deep"
            && matches!(
                value.to_ascii_lowercase().as_str(),
                "" | "1" | "true" | "yes"
            )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_is_read_from_the_query() {
        for yes in ["deep=1", "deep=true", "deep=TRUE", "deep", "x=1&deep=yes"] {
            assert!(wants_deep(Some(yes)), "{yes}");
        }
        for no in ["", "deep=0", "deep=false", "deeper=1", "x=deep"] {
            assert!(!wants_deep(Some(no)), "{no}");
        }
        assert!(!wants_deep(None));
    }
}
