//! AWS Lambda (`lambda_http`): Function URLs with
//! `InvokeMode: RESPONSE_STREAM` stream the body as it arrives; behind an
//! HTTP API (which buffers) set `GIGACHAT_PROXY_LAMBDA_STREAMING=false`.
//! The invoke mode and the runner must match: a streaming runner behind a
//! buffered invoke answers with an empty body.

use gigachat_proxy_core::{BoxError, ClientAddr, Proxy, ProxyBody};
use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt, Response, service_fn};

/// The variables the Lambda runtime sets; `lambda_http` panics without them,
/// so they are checked before choosing it.
pub fn detected() -> bool {
    ["AWS_LAMBDA_RUNTIME_API", "AWS_LAMBDA_FUNCTION_NAME"]
        .iter()
        .all(|name| std::env::var_os(name).is_some())
}

pub fn streaming_enabled() -> bool {
    !matches!(
        std::env::var("GIGACHAT_PROXY_LAMBDA_STREAMING")
            .as_deref()
            .map(str::trim),
        Ok("false" | "0" | "no" | "off")
    )
}

pub async fn run(proxy: Proxy) -> Result<(), BoxError> {
    let service = service_fn(move |request: Request| {
        let proxy = proxy.clone();
        async move { handle(&proxy, request).await }
    });
    if streaming_enabled() {
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
