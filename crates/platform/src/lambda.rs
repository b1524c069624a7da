//! AWS Lambda (`lambda_http`): Function URLs with
//! `InvokeMode: RESPONSE_STREAM` stream the body as it arrives; behind an
//! HTTP API (which buffers) set `GIGACHAT_PROXY_LAMBDA_STREAMING=false`.
//! The invoke mode and the runner must match: a streaming runner behind a
//! buffered invoke answers with an empty body.

use std::ffi::OsStr;

use gigachat_proxy_core::{BoxError, ClientAddr, ConfigError, Env, Proxy, ProxyBody};
use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt, Response, service_fn};

/// The variables the Lambda runtime sets; `lambda_http` panics without them,
/// so they are checked before choosing it.
pub fn detected() -> bool {
    ["AWS_LAMBDA_RUNTIME_API", "AWS_LAMBDA_FUNCTION_NAME"]
        .iter()
        .all(|name| std::env::var_os(name).is_some())
}

/// Chooses the runtime's response mode; it must match the function's
/// invoke mode (see the module docs).
pub const STREAMING_VARIABLE: &str = "GIGACHAT_PROXY_LAMBDA_STREAMING";

/// `true` (streaming, the default) or `false` (buffered), in the spellings
/// every switch of the proxy accepts (the core's reader): `true`/`false`,
/// `1`/`0`, `yes`/`no`, `on`/`off`, any case; blank counts as unset.
/// `None` is a value that is not UTF-8, which the reader would take for
/// unset: here it is an error, since guessing the mode hides the mistake.
pub fn parse_streaming(value: Option<&str>) -> Result<bool, ConfigError> {
    let Some(value) = value else {
        return Err(ConfigError::new(
            STREAMING_VARIABLE,
            "is not valid UTF-8: it must be true or false (also 1/0, yes/no, on/off; default true)",
        ));
    };
    let lookup = |_: &str| Some(value.to_owned());
    Env::new(&lookup).bool(STREAMING_VARIABLE, true)
}

/// The response mode for the switch's raw value (unset: streaming), and
/// the proxy to serve with. An unreadable switch is a configuration error
/// like any other: every request is answered `500 config_invalid` naming
/// the variable (the operator sees it in the first response and in the
/// log), served in the documented default mode. Guessing a mode instead
/// would hide the typo behind an empty or buffered body.
pub fn with_streaming_switch(proxy: Proxy, switch: Option<&OsStr>) -> (bool, Proxy) {
    let Some(value) = switch else {
        return (true, proxy);
    };
    match parse_streaming(value.to_str()) {
        Ok(streaming) => (streaming, proxy),
        Err(err) => (true, Proxy::misconfigured(err)),
    }
}

pub async fn run(proxy: Proxy) -> Result<(), BoxError> {
    let switch = std::env::var_os(STREAMING_VARIABLE);
    let (streaming, proxy) = with_streaming_switch(proxy, switch.as_deref());
    let service = service_fn(move |request: Request| {
        let proxy = proxy.clone();
        async move { handle(&proxy, request).await }
    });
    if streaming {
        lambda_http::run_with_streaming_response(service).await
    } else {
        lambda_http::run(service).await
    }
}

/// One event. API Gateway puts a non-default stage name in front of the
/// path (`/Prod/api/gigachat-api/…`); the routes are matched without it.
pub async fn handle(
    proxy: &Proxy,
    mut request: Request,
) -> Result<Response<ProxyBody>, lambda_http::Error> {
    if let Some(uri) = without_stage(&request) {
        *request.uri_mut() = uri;
    }
    if let Some(addr) = source_ip(&request) {
        request.extensions_mut().insert(ClientAddr(addr));
    }
    Ok(proxy.handle(request).await)
}

/// The caller's address as AWS saw it (not a header the client controls).
fn source_ip(request: &Request) -> Option<std::net::IpAddr> {
    let ip = match request.request_context_ref()? {
        RequestContext::ApiGatewayV2(context) => context.http.source_ip.as_deref(),
        RequestContext::ApiGatewayV1(context) => context.identity.source_ip.as_deref(),
        _ => None,
    }?;
    ip.parse().ok()
}

fn without_stage(request: &Request) -> Option<http::Uri> {
    let stage = match request.request_context_ref()? {
        RequestContext::ApiGatewayV2(context) => context.stage.as_deref(),
        RequestContext::ApiGatewayV1(context) => context.stage.as_deref(),
        _ => None,
    }
    .filter(|stage| *stage != "$default")?;
    let rest = request
        .uri()
        .path()
        .strip_prefix('/')?
        .strip_prefix(stage)?;
    if !rest.starts_with('/') {
        return None;
    }
    let path_and_query = match request.uri().query() {
        Some(query) => format!("{rest}?{query}"),
        None => rest.to_owned(),
    };
    path_and_query.parse().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn the_streaming_switch_reads_every_usual_spelling() {
        for off in [
            "false", "False", "FALSE", "0", "no", "No", "off", "OFF", " false ",
        ] {
            assert!(!parse_streaming(Some(off)).unwrap(), "{off:?}");
        }
        for on in ["true", "True", "TRUE", "1", "yes", "YES", "on", "On"] {
            assert!(parse_streaming(Some(on)).unwrap(), "{on:?}");
        }
        assert!(parse_streaming(Some("")).unwrap(), "blank is unset");
        assert!(parse_streaming(Some("  ")).unwrap(), "blank is unset");
    }

    #[test]
    fn an_unknown_value_is_an_error_naming_the_variable_not_the_value() {
        for bad in ["treu", "disabled", "enable", "ja"] {
            let err = parse_streaming(Some(bad)).unwrap_err();
            assert_eq!(err.variable, STREAMING_VARIABLE);
            assert!(!err.to_string().contains(bad), "{err}");
        }
        assert_eq!(
            parse_streaming(None).unwrap_err().variable,
            STREAMING_VARIABLE
        );
    }
}
