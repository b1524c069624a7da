//! Vercel (`vercel_runtime` 2.x): a hyper server the platform forwards
//! requests to; several requests run concurrently in one process, so the
//! proxy (and its token cache) is shared.

use gigachat_proxy_core::Proxy;
use vercel_runtime::{Error, Request, Response, ResponseBody};

pub async fn run(proxy: Proxy) -> Result<(), Error> {
    vercel_runtime::run(vercel_runtime::service_fn(move |request: Request| {
        let proxy = proxy.clone();
        async move { handle(&proxy, request).await }
    }))
    .await
}

/// One request. The core's boxed body is `ResponseBody`'s own type, so a
/// stream passes through without a copy or a buffer.
pub async fn handle(proxy: &Proxy, request: Request) -> Result<Response<ResponseBody>, Error> {
    let (parts, body) = proxy.handle(request).await.into_parts();
    Ok(Response::from_parts(parts, ResponseBody(body)))
}
