//! Path → handler, and what every answer gets on the way out (request id,
//! one log line, `Connection: close` when the request's body was left on
//! the connection).

mod admit;
pub mod api;
mod budget;
pub mod health;
pub mod oauth;
mod openai;
mod request_body;
mod ui_chat;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};

use crate::Proxy;
use crate::body::{BoxError, ProxyBody};
use crate::cache::CacheOutcome;
use crate::cors::{Cors, Verdict};
use crate::error::{Dialect, Error};
use crate::limits::{Guards, RateLimitOutcome};
use crate::observe::{RequestLog, TrackedBody};
use http_body_util::BodyExt;
use request_body::RequestBody;

pub const API_PREFIX: &str = "/api/gigachat-api/";
/// OpenAI's API (`baseURL` …`/api/gigachat-openai/v1`), translated.
pub const OPENAI_PREFIX: &str = "/api/gigachat-openai/";
/// The Vercel AI SDK's `useChat` (`DefaultChatTransport({ api })`).
pub const CHAT_PATH: &str = "/api/gigachat-chat";
pub const OAUTH_PATH: &str = "/api/gigachat-oauth";
pub const HEALTH_PATH: &str = "/api/gigachat-health";
pub const BUDGET_PATH: &str = "/api/gigachat-budget";

const REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");
const SERVER_TIMING: http::HeaderName = http::HeaderName::from_static("server-timing");
const PROXY_OVERHEAD: http::HeaderName = http::HeaderName::from_static("x-proxy-overhead-ms");
/// How much of an unread request body is discarded to keep the connection,
/// beyond the body limit (also the whole budget when the configuration is
/// broken and there is no limit to go by).
const UNREAD_BODY_BUDGET: usize = 1024 * 1024;

pub(crate) async fn dispatch<B>(proxy: &Proxy, request: Request<B>) -> Response<ProxyBody>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let request_id = request_id(&request);
    let method = request.method().clone();
    let route = Route::of(request.uri().path());
    let version = request.version();
    let expects_continue = request_body::expects_continue(request.headers());
    // The body stays here: handlers borrow it, and what they leave unread is
    // dealt with below, before the answer goes out.
    let (parts, body) = request.into_parts();
    let body = std::pin::pin!(body);
    let mut body = RequestBody::new(body);
    let request = Request::from_parts(parts, ());
    let mut log = RequestLog::new(
        request_id.to_str().unwrap_or_default().to_owned(),
        route.name(),
        method.clone(),
    );
    // CORS comes first: a preflight carries no credentials, so it must be
    // answered before authentication and rate limits look at it.
    let cors = proxy.ready().ok().map(|ready| {
        let verdict = ready.cors.evaluate(request.uri(), request.headers());
        (&ready.cors, verdict)
    });
    let preflight = Cors::is_preflight(&method, request.headers());
    let result = match &cors {
        Some((_, Verdict::HostNotAllowed)) => Err(Error::HostNotAllowed),
        Some((_, Verdict::Denied)) => Err(Error::OriginNotAllowed),
        Some((cors, Verdict::Allowed(origin))) if preflight => {
            let mut response = Response::new(crate::body::empty());
            *response.status_mut() = StatusCode::NO_CONTENT;
            cors.apply_preflight(origin.clone(), response.headers_mut());
            Ok(Answer::from(response))
        }
        _ if method == Method::OPTIONS => {
            options_response(route, request.uri().path()).map(Answer::from)
        }
        _ => match route {
            // Boxed: their states are kilobytes, and hyper moves the future
            // they are part of once per request; a pointer moves for free.
            Route::Health => Box::pin(health::handle(proxy, &request))
                .await
                .map(Answer::from),
            Route::OAuth => Box::pin(oauth::handle(proxy, &request, &mut log))
                .await
                .map(Answer::from),
            Route::Budget => Box::pin(budget::handle(proxy, &request, &mut log))
                .await
                .map(Answer::from),
            Route::Api => {
                Box::pin(api::handle(
                    proxy,
                    request,
                    &mut body,
                    &request_id,
                    &mut log,
                ))
                .await
            }
            Route::OpenAi => {
                Box::pin(openai::handle(
                    proxy,
                    request,
                    &mut body,
                    &request_id,
                    &mut log,
                ))
                .await
            }
            Route::UiChat => {
                Box::pin(ui_chat::handle(
                    proxy,
                    request,
                    &mut body,
                    &request_id,
                    &mut log,
                ))
                .await
            }
            Route::None => Err(Error::RouteNotFound),
        },
    };
    let answer = match result {
        Ok(answer) => answer,
        Err(err) => {
            if err.status().is_server_error() {
                tracing::warn!(request_id = %log.request_id, route = route.name(), error = %err, "request failed");
            }
            log.error_code = Some(err.code());
            if err.refused_by_a_limit() {
                log.rate_limit = RateLimitOutcome::Limited;
            }
            Answer::from(err.into_response_in(route.dialect(), &log.request_id))
        }
    };
    let (mut parts, response_body) = answer.response.into_parts();
    log.cache = parts.extensions.get::<CacheOutcome>().copied();
    if let Some((cors, verdict)) = &cors
        && !preflight
    {
        cors.apply(verdict, &mut parts.headers);
    }
    parts.headers.insert(REQUEST_ID, request_id);
    // The proxy's own time so far, so users can check what it costs them
    // (`Server-Timing` shows in browsers' dev tools).
    // Both terms are whole microseconds; rounding keeps the difference so
    // in the log line (not 0.030000000000000027).
    let overhead_ms =
        ((log.elapsed_ms() - log.upstream_ms.unwrap_or(0.0)) * 1000.0).round() / 1000.0;
    log.overhead_ms = Some(overhead_ms);
    let timing = match log.upstream_ms {
        Some(upstream) => format!("proxy;dur={overhead_ms:.3}, upstream;dur={upstream:.3}"),
        None => format!("proxy;dur={overhead_ms:.3}"),
    };
    if let Ok(value) = HeaderValue::try_from(timing) {
        parts.headers.insert(SERVER_TIMING, value);
    }
    if let Ok(value) = HeaderValue::try_from(format!("{overhead_ms:.3}")) {
        parts.headers.insert(PROXY_OVERHEAD, value);
    }
    // After the timing above: discarding a refused body waits on the
    // client's upload, not on the proxy. HTTP/2 streams are independent of
    // each other; an HTTP/1 connection carries the next request only after
    // this one's body.
    if version <= Version::HTTP_11 {
        let budget = proxy
            .config()
            .map_or(UNREAD_BODY_BUDGET, |c| c.max_body_bytes)
            .saturating_add(UNREAD_BODY_BUDGET);
        if body.settle(expects_continue, budget).await {
            parts
                .headers
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
    log.emf = proxy
        .config()
        .is_some_and(|c| c.platform == crate::config::Platform::Lambda);
    log.status = parts.status.as_u16();
    log.stream = answer.sse;
    let body = TrackedBody::new(response_body, log, answer.sse, answer.guards, answer.usage);
    Response::from_parts(parts, body.boxed())
}

/// A handler's answer, with what must live as long as its body.
pub(crate) struct Answer {
    pub response: Response<ProxyBody>,
    pub sse: bool,
    /// The limit slots the request holds until its body ends.
    pub guards: Guards,
    /// Set when the body rewrites GigaChat's stream into another dialect:
    /// the usage is read there, not from the chunks the client gets.
    pub usage: Option<crate::usage::UsageCell>,
}

impl From<Response<ProxyBody>> for Answer {
    fn from(response: Response<ProxyBody>) -> Self {
        Self {
            response,
            sse: false,
            guards: Guards::default(),
            usage: None,
        }
    }
}

#[derive(Clone, Copy)]
enum Route {
    Health,
    OAuth,
    Api,
    OpenAi,
    UiChat,
    Budget,
    None,
}

impl Route {
    fn of(path: &str) -> Self {
        if path == HEALTH_PATH || path == "/api/gigachat-health/" {
            Route::Health
        } else if path == OAUTH_PATH || path == "/api/gigachat-oauth/" {
            Route::OAuth
        } else if path.starts_with(API_PREFIX) {
            Route::Api
        } else if path.starts_with(OPENAI_PREFIX) || path == "/api/gigachat-openai" {
            Route::OpenAi
        } else if path == CHAT_PATH || path.starts_with("/api/gigachat-chat/") {
            Route::UiChat
        } else if path == BUDGET_PATH || path == "/api/gigachat-budget/" {
            Route::Budget
        } else {
            Route::None
        }
    }

    fn name(self) -> &'static str {
        match self {
            Route::Health => "health",
            Route::OAuth => "oauth",
            Route::Api => "api",
            Route::OpenAi => "openai",
            Route::UiChat => "chat",
            Route::Budget => "budget",
            Route::None => "none",
        }
    }

    /// The error shape of the route's answers: the shape its clients read.
    fn dialect(self) -> Dialect {
        match self {
            Route::OpenAi => Dialect::OpenAi,
            Route::UiChat => Dialect::UiChat,
            _ => Dialect::GigaChat,
        }
    }
}

/// `OPTIONS` that is not a CORS preflight (no `Origin`): the methods the
/// route answers, the same list its `405`s name.
fn options_response(route: Route, path: &str) -> Result<Response<ProxyBody>, Error> {
    let allow = match route {
        Route::Api => api::ALLOW,
        Route::OpenAi => openai::allow(path)?,
        Route::UiChat => ui_chat::allow(path)?,
        Route::OAuth => "POST, OPTIONS",
        Route::Health | Route::Budget => "GET, HEAD, OPTIONS",
        Route::None => return Err(Error::RouteNotFound),
    };
    let mut response = Response::new(crate::body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
        .headers_mut()
        .insert(http::header::ALLOW, HeaderValue::from_static(allow));
    Ok(response)
}

/// The client's `X-Request-ID` when it is a sane token (so logs on both
/// sides correlate), else a fresh uuid.
fn request_id<B>(request: &Request<B>) -> HeaderValue {
    request
        .headers()
        .get(&REQUEST_ID)
        .filter(|v| {
            let bytes = v.as_bytes();
            !bytes.is_empty()
                && bytes.len() <= 128
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
        })
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::try_from(uuid::Uuid::new_v4().to_string())
                .unwrap_or(HeaderValue::from_static("unknown"))
        })
}
