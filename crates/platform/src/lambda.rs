//! AWS Lambda (`lambda_http`): Function URLs with
//! `InvokeMode: RESPONSE_STREAM` stream the body as it arrives; behind an
//! HTTP API (which buffers) set `GIGACHAT_PROXY_LAMBDA_STREAMING=false`.
//! The invoke mode and the runner must match: a streaming runner behind a
//! buffered invoke answers with an empty body.

use gigachat_proxy_core::{BoxError, Proxy, ProxyBody};
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

/// One event. API Gateway prefixes the path with a non-default stage name;
/// the routes are matched on the path without it.
pub async fn handle(
    proxy: &Proxy,
    mut request: Request,
) -> Result<Response<ProxyBody>, lambda_http::Error> {
    let raw_path = request.raw_http_path();
    if !raw_path.is_empty() && raw_path != request.uri().path() {
        let path_and_query = match request.uri().query() {
            Some(query) => format!("{raw_path}?{query}"),
            None => raw_path.to_owned(),
        };
        if let Ok(uri) = path_and_query.parse() {
            *request.uri_mut() = uri;
        }
    }
    Ok(proxy.handle(request).await)
}
