//! `/api/gigachat-api/{path}`: forward one call to GigaChat.
//!
//! In order: map the path, identify the caller, check their rate limit,
//! read the body (bounded), take a stream slot and an upstream slot, then
//! send — refreshing the token once on a 401 and retrying transient
//! failures while nothing has reached the client yet.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, header,
};
use http_body::Body as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde::Deserialize;

use super::Answer;
use crate::Proxy;
use crate::Ready;
use crate::body::{BoxError, ProxyBody};
use crate::error::Error;
use crate::observe::{RequestLog, Usage};
use crate::upstream::body::{BodyLimits, UpstreamBody};

const UPSTREAM_REQUEST_ID: HeaderName = HeaderName::from_static("x-upstream-request-id");
const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");
/// JSON answers up to this size are read whole before they are sent, to
/// catch an error object inside a 200 and to read the token usage; larger
/// ones (and everything else) stream through untouched.
const INSPECTED_JSON_MAX: u64 = 4 * 1024 * 1024;
/// How much of an SSE stream is read, at most, to see its first event.
const SSE_PEEK_MAX: usize = 64 * 1024;

pub(crate) async fn handle<B>(
    proxy: &Proxy,
    request: Request<B>,
    request_id: &HeaderValue,
    log: &mut RequestLog,
) -> Result<Answer, Error>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let ready = proxy.ready()?;
    let client_path = request
        .uri()
        .path()
        .strip_prefix(super::API_PREFIX)
        .unwrap_or_default();
    let url = ready.base.resolve(client_path, request.uri().query())?;
    let retryable = is_safe_to_repeat(request.method(), client_path);
    let client_ip = ready.access.client_ip(
        ready.config.platform,
        request.headers(),
        request.extensions().get::<crate::access::ClientAddr>(),
    );
    let identity = ready
        .access
        .identify(request.headers(), client_ip, &ready.sessions)
        .await?;
    log.set_identity(&identity.key);
    let limit = ready
        .limiter
        .check_request(&identity.key, identity.anonymous)
        .await?;
    if limit.is_some() {
        log.rate_limit = "allowed";
    }

    let (parts, body) = request.into_parts();
    // The body is read whole (within the limit) because a 401 or a
    // transient failure is answered by sending the same request again;
    // GigaChat request bodies are small next to the platform caps.
    let body = read_body(body, &parts.headers, ready.config.max_body_bytes).await?;
    let summary = RequestSummary::of(&parts.headers, &body);
    log.model = summary.model;
    // A cached answer skips the stream slot, the upstream slot and the
    // token; authentication and the rate limit above still apply. The
    // outcome travels in the response's extensions (`cache::CacheOutcome`).
    let cache_key = ready.cache.key(&parts, &url, &body, &identity.key);
    if let Some(key) = &cache_key
        && let Some(mut response) = ready.cache.lookup(key).await
    {
        if let Some(info) = limit {
            info.apply(response.headers_mut());
        }
        return Ok(Answer::from(response));
    }
    let lease = if summary.stream {
        ready.limiter.acquire_stream(&identity.key).await?
    } else {
        None
    };
    let permit = ready.limiter.acquire_upstream().await?;

    let mut headers = HeaderMap::with_capacity(12);
    crate::headers::forward_request_headers(&parts.headers, &mut headers);
    headers.insert(HeaderName::from_static("x-request-id"), request_id.clone());
    let outgoing = Outgoing {
        method: parts.method,
        url,
        headers,
        body,
        retryable,
    };
    let mut answer_bytes = None;
    let (mut response, sse) = forward(ready, &outgoing, log, &mut answer_bytes).await?;
    if let Some(key) = &cache_key {
        ready
            .cache
            .store(key, &mut response, sse, answer_bytes.as_ref())
            .await;
    }
    if let Some(info) = limit {
        info.apply(response.headers_mut());
    }
    Ok(Answer {
        response,
        sse,
        lease,
        permit,
    })
}

struct Outgoing {
    method: Method,
    url: Uri,
    headers: HeaderMap,
    body: Bytes,
    retryable: bool,
}

/// Requests GigaChat answers without side effects, so a transient failure
/// can be retried: reads, and the POSTs that only compute (chat,
/// embeddings, token counts). Uploads and deletions are never repeated.
fn is_safe_to_repeat(method: &Method, client_path: &str) -> bool {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return true;
    }
    let path = client_path
        .strip_prefix("v1/")
        .or_else(|| client_path.strip_prefix("v2/"))
        .unwrap_or(client_path);
    *method == Method::POST && matches!(path, "chat/completions" | "embeddings" | "tokens/count")
}

/// What the proxy reads of a JSON request body: borrowed, nothing else
/// parsed (serde skips the messages without allocating them).
#[derive(Default)]
struct RequestSummary {
    model: Option<String>,
    stream: bool,
}

impl RequestSummary {
    fn of(headers: &HeaderMap, body: &[u8]) -> Self {
        #[derive(Deserialize)]
        struct Borrowed<'a> {
            #[serde(borrow)]
            model: Option<&'a str>,
            #[serde(default)]
            stream: bool,
        }
        let is_json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("json"));
        if !is_json || body.is_empty() {
            return Self::default();
        }
        match serde_json::from_slice::<Borrowed<'_>>(body) {
            Ok(found) => Self {
                model: found.model.filter(|m| m.len() <= 128).map(str::to_owned),
                stream: found.stream,
            },
            Err(_) => Self::default(),
        }
    }
}

/// What one upstream attempt came to.
enum Attempt {
    /// An answer to pass on.
    Done(Response<ProxyBody>, bool),
    /// A transient failure: retry if allowed, else pass `fallback` on.
    Transient {
        retry_after: Option<Duration>,
        fallback: Result<Response<ProxyBody>, Error>,
    },
}

/// `answer_bytes` receives the body of an answer that was read whole (see
/// [`inspect`]), for the response cache.
async fn forward(
    ready: &Ready,
    outgoing: &Outgoing,
    log: &mut RequestLog,
    answer_bytes: &mut Option<Bytes>,
) -> Result<(Response<ProxyBody>, bool), Error> {
    let config = &ready.config;
    let started = Instant::now();
    let deadline = started + config.timeout;
    let host = outgoing.url.host().unwrap_or_default();
    let mut refreshed_after_401 = false;
    let mut retries = 0u32;
    loop {
        let token = ready.tokens.token().await?;
        let mut request = Request::new(Full::new(outgoing.body.clone()));
        *request.method_mut() = outgoing.method.clone();
        *request.uri_mut() = outgoing.url.clone();
        let headers = request.headers_mut();
        headers.reserve(outgoing.headers.len() + 2);
        for (name, value) in &outgoing.headers {
            headers.append(name, value.clone());
        }
        headers.insert(header::AUTHORIZATION, token.header.clone());
        let send = ready.upstream.send(request);
        let remaining = deadline.saturating_duration_since(Instant::now());
        let attempt = match tokio::time::timeout(remaining, send).await {
            Err(_) => Attempt::Transient {
                retry_after: None,
                fallback: Err(Error::UpstreamTimeout {
                    stage: "waiting for the response headers",
                    seconds: config.timeout.as_secs(),
                }),
            },
            Ok(Err(err)) => {
                let error =
                    crate::upstream::forward_error(&err, "api", host, config.timeout.as_secs());
                // Only failures to connect are certain not to have reached
                // GigaChat; anything later may have been processed.
                if err.is_connect() {
                    Attempt::Transient {
                        retry_after: None,
                        fallback: Err(error),
                    }
                } else {
                    return Err(error);
                }
            }
            Ok(Ok(response))
                if response.status() == StatusCode::UNAUTHORIZED && !refreshed_after_401 =>
            {
                // The token expired or was revoked early: fetch a new one
                // and try once more; nothing has reached the client yet.
                tracing::info!(
                    generation = token.generation,
                    "GigaChat answered 401; refreshing the token and retrying once"
                );
                ready.tokens.invalidate(token.generation);
                refreshed_after_401 = true;
                continue;
            }
            Ok(Ok(response)) => {
                inspect(
                    ready,
                    response,
                    &log.request_id,
                    deadline,
                    &mut log.usage,
                    answer_bytes,
                )
                .await?
            }
        };
        match attempt {
            Attempt::Done(response, sse) => {
                log.upstream_ms = Some(started.elapsed().as_micros() as f64 / 1000.0);
                log.retries = retries;
                return Ok((response, sse));
            }
            Attempt::Transient {
                retry_after,
                fallback,
            } => {
                let delay = retry_after.unwrap_or_else(|| backoff(&config.retry, retries));
                let fits = Instant::now() + delay < deadline;
                if !outgoing.retryable || retries >= config.retry.max_retries || !fits {
                    log.upstream_ms = Some(started.elapsed().as_micros() as f64 / 1000.0);
                    log.retries = retries;
                    return fallback.map(|response| (response, false));
                }
                retries += 1;
                tracing::info!(
                    retry = retries,
                    delay_ms = delay.as_millis() as u64,
                    "retrying a transient GigaChat failure"
                );
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// `factor · 2ⁿ` plus up to 50% jitter, so instances that failed together
/// do not retry together.
fn backoff(policy: &crate::config::RetryPolicy, retry: u32) -> Duration {
    let base = policy.backoff_factor.saturating_mul(1u32 << retry.min(16));
    let jitter_permille = (uuid::Uuid::new_v4().as_u128() % 500) as u32;
    base + base.saturating_mul(jitter_permille) / 1000
}

/// Decides what an upstream answer is: GigaChat's status and body pass
/// through unchanged, except that an error object inside a 200 (a known
/// GigaChat quirk: `{"status":429,"message":"Too many requests"}` with HTTP
/// 200, in a JSON body or as a stream's first event) is answered with the
/// status it names, and transient statuses may be retried. A 200 JSON
/// answer read whole is also left in `answer_bytes` (a cheap `Bytes` clone).
async fn inspect(
    ready: &Ready,
    upstream: Response<Incoming>,
    request_id: &str,
    deadline: Instant,
    usage: &mut Option<Usage>,
    answer_bytes: &mut Option<Bytes>,
) -> Result<Attempt, Error> {
    let (parts, mut body) = upstream.into_parts();
    let status = parts.status;
    let retry_set = &ready.config.retry.on_status;
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .map_or(&[][..], HeaderValue::as_bytes)
        .trim_ascii_start();
    let sse = starts_with_ignore_case(content_type, b"text/event-stream");
    let is_json = content_type
        .windows(4)
        .any(|window| window.eq_ignore_ascii_case(b"json"));
    let headers = client_headers(&parts.headers, sse);
    let limits = BodyLimits {
        total: ready.config.total_timeout,
        idle: ready.config.stream_idle_timeout,
    };

    if retry_set.contains(&status.as_u16()) {
        let retry_after = retry_after(&parts.headers);
        let response = build(
            status,
            headers,
            UpstreamBody::new(body, sse, request_id.to_owned(), Vec::new(), limits).boxed(),
        );
        return Ok(Attempt::Transient {
            retry_after,
            fallback: Ok(response),
        });
    }
    if status == StatusCode::OK && sse {
        let mut prefix = Vec::new();
        let mut seen = 0usize;
        let mut scanner = crate::upstream::sse::SseScanner::new();
        let mut first_data: Option<String> = None;
        while first_data.is_none() && seen < SSE_PEEK_MAX {
            let remaining = deadline
                .saturating_duration_since(Instant::now())
                .max(ready.config.stream_idle_timeout);
            let chunk = match tokio::time::timeout(remaining, next_data(&mut body)).await {
                Ok(Some(Ok(chunk))) => chunk,
                // End, a broken stream or a stall: what was read is passed
                // on and the body reports the rest as usual.
                _ => break,
            };
            seen += chunk.len();
            scanner.feed(&chunk, |event| {
                if first_data.is_none() {
                    first_data = Some(event.data.into_owned());
                }
            });
            prefix.push(chunk);
        }
        if let Some(error) = first_data
            .as_deref()
            .and_then(|data| ErrorObject::of(data.as_bytes()))
        {
            return Ok(error_in_200(error, retry_set));
        }
        let body = UpstreamBody::new(body, true, request_id.to_owned(), prefix, limits).boxed();
        return Ok(Attempt::Done(build(status, headers, body), true));
    }
    let content_length = body.size_hint().exact();
    let small_json = is_json && content_length.is_none_or(|len| len <= INSPECTED_JSON_MAX);
    if status == StatusCode::OK && small_json {
        let remaining = deadline
            .saturating_duration_since(Instant::now())
            .max(ready.config.stream_idle_timeout);
        let bytes = match tokio::time::timeout(remaining, read_capped(&mut body)).await {
            Ok(Ok(Some(bytes))) => bytes,
            Ok(Ok(None)) => {
                // Larger than announced: stream the rest untouched.
                return Ok(Attempt::Done(
                    build(
                        status,
                        headers,
                        UpstreamBody::new(body, false, request_id.to_owned(), Vec::new(), limits)
                            .boxed(),
                    ),
                    false,
                ));
            }
            Ok(Err(_)) => {
                return Err(Error::UpstreamUnreachable {
                    stage: "api",
                    host: ready.base.host().to_owned(),
                    cause: crate::error::TransportCause::Other,
                });
            }
            Err(_) => {
                return Err(Error::UpstreamTimeout {
                    stage: "reading the answer",
                    seconds: ready.config.timeout.as_secs(),
                });
            }
        };
        // One parse for both questions: is it an error object, and what
        // did it cost.
        let read = AnswerFields::of(&bytes);
        if let Some(error) = read.error(&bytes) {
            return Ok(error_in_200(error, retry_set));
        }
        *usage = read.usage;
        *answer_bytes = Some(bytes.clone());
        return Ok(Attempt::Done(
            build(status, headers, crate::body::full(bytes)),
            false,
        ));
    }
    let body = UpstreamBody::new(body, sse, request_id.to_owned(), Vec::new(), limits).boxed();
    Ok(Attempt::Done(build(status, headers, body), sse))
}

fn starts_with_ignore_case(value: &[u8], prefix: &[u8]) -> bool {
    value
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// The next data chunk of a body (trailers skipped), `None` at its end.
async fn next_data(body: &mut Incoming) -> Option<Result<Bytes, hyper::Error>> {
    loop {
        match body.frame().await? {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    return Some(Ok(data));
                }
            }
            Err(err) => return Some(Err(err)),
        }
    }
}

/// Reads a body whole if it stays within [`INSPECTED_JSON_MAX`]; `None`
/// (with the bytes read so far lost) never happens for GigaChat's JSON
/// answers, which announce their length. A body that arrives in one chunk
/// (the usual case) is kept as it is, without a copy.
async fn read_capped(body: &mut Incoming) -> Result<Option<Bytes>, hyper::Error> {
    let mut first: Option<Bytes> = None;
    let mut collected = Vec::new();
    while let Some(chunk) = next_data(body).await {
        let chunk = chunk?;
        let so_far = first.as_ref().map_or(0, Bytes::len) + collected.len();
        if so_far + chunk.len() > INSPECTED_JSON_MAX as usize {
            return Ok(None);
        }
        match first.take() {
            None if collected.is_empty() => first = Some(chunk),
            None => collected.extend_from_slice(&chunk),
            Some(head) => {
                collected.extend_from_slice(&head);
                collected.extend_from_slice(&chunk);
            }
        }
    }
    Ok(Some(first.unwrap_or_else(|| Bytes::from(collected))))
}

/// What the proxy reads of a whole JSON answer, in one pass: the shape of
/// GigaChat's error object and the token usage.
#[derive(Deserialize, Default)]
struct AnswerFields {
    status: Option<u16>,
    message: Option<serde::de::IgnoredAny>,
    usage: Option<Usage>,
}

impl AnswerFields {
    fn of(json: &[u8]) -> Self {
        serde_json::from_slice(json).unwrap_or_default()
    }

    fn error(&self, json: &Bytes) -> Option<ErrorObject> {
        self.message.as_ref()?;
        let status = StatusCode::from_u16(self.status?)
            .ok()
            .filter(|s| s.is_client_error() || s.is_server_error())?;
        Some(ErrorObject {
            status,
            body: json.clone(),
        })
    }
}

struct ErrorObject {
    status: StatusCode,
    body: Bytes,
}

impl ErrorObject {
    /// `{"status": 4xx|5xx, "message": "…"}` where an answer should be.
    fn of(json: &[u8]) -> Option<Self> {
        AnswerFields::of(json).error(&Bytes::copy_from_slice(json))
    }
}

fn error_in_200(error: ErrorObject, retry_set: &[u16]) -> Attempt {
    tracing::warn!(
        status = error.status.as_u16(),
        "GigaChat answered 200 with an error object; answering with its status"
    );
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, crate::body::JSON);
    let response = build(error.status, headers, crate::body::full(error.body));
    if retry_set.contains(&error.status.as_u16()) {
        Attempt::Transient {
            retry_after: None,
            fallback: Ok(response),
        }
    } else {
        Attempt::Done(response, false)
    }
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds.min(60)))
}

/// GigaChat's headers for the client: hop-by-hop ones, cookies and its
/// Sber-only CORS dropped; SSE marked so no proxy or CDN buffers it.
fn client_headers(upstream: &HeaderMap, sse: bool) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(upstream.len() + 3);
    for (name, value) in upstream {
        if crate::headers::is_forwarded_to_client(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Some(upstream_id) = upstream.get("x-request-id") {
        headers.insert(UPSTREAM_REQUEST_ID, upstream_id.clone());
    }
    if sse {
        headers.remove(header::CONTENT_LENGTH);
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(X_ACCEL_BUFFERING, HeaderValue::from_static("no"));
    }
    headers
}

fn build(status: StatusCode, headers: HeaderMap, body: ProxyBody) -> Response<ProxyBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

async fn read_body<B>(body: B, headers: &HeaderMap, limit: usize) -> Result<Bytes, Error>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = std::pin::pin!(body);
    if declared.is_some_and(|len| len > limit as u64) {
        drain(body.as_mut(), limit).await;
        return Err(Error::BodyTooLarge { limit });
    }
    let mut collected = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Err(Error::BodyUnreadable);
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if collected.len() + data.len() > limit {
            drain(body.as_mut(), limit).await;
            return Err(Error::BodyTooLarge { limit });
        }
        collected.extend_from_slice(&data);
    }
    Ok(Bytes::from(collected))
}

/// Reads and discards the rest of an oversized body (bounded in bytes and
/// time) so the client, still sending, can read the 413 instead of seeing
/// the connection close under it.
async fn drain<B>(mut body: std::pin::Pin<&mut B>, limit: usize)
where
    B: http_body::Body<Data = Bytes>,
{
    let budget = limit.saturating_add(1024 * 1024);
    let discard = async {
        let mut discarded = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            discarded += frame.data_ref().map_or(0, Bytes::len);
            if discarded > budget {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), discard).await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn only_side_effect_free_calls_are_repeated() {
        assert!(is_safe_to_repeat(&Method::GET, "files/abc/content"));
        assert!(is_safe_to_repeat(&Method::POST, "chat/completions"));
        assert!(is_safe_to_repeat(&Method::POST, "v2/chat/completions"));
        assert!(is_safe_to_repeat(&Method::POST, "v1/embeddings"));
        assert!(!is_safe_to_repeat(&Method::POST, "files"));
        assert!(!is_safe_to_repeat(&Method::POST, "files/abc/delete"));
        assert!(!is_safe_to_repeat(&Method::DELETE, "files/abc"));
    }

    #[test]
    fn error_objects_are_recognised_only_in_their_shape() {
        let found = ErrorObject::of(br#"{"status":429,"message":"Too many requests"}"#).unwrap();
        assert_eq!(found.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(ErrorObject::of(br#"{"choices":[],"usage":{}}"#).is_none());
        assert!(ErrorObject::of(br#"{"status":200,"message":"Function is valid"}"#).is_none());
        assert!(ErrorObject::of(br#"[{"object":"tokens","tokens":2}]"#).is_none());
        assert!(ErrorObject::of(b"data").is_none());
    }

    #[test]
    fn request_summary_reads_model_and_stream_only_from_json() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let summary = RequestSummary::of(
            &headers,
            br#"{"messages":[{"role":"user","content":"x"}],"model":"GigaChat-2","stream":true}"#,
        );
        assert_eq!(summary.model.as_deref(), Some("GigaChat-2"));
        assert!(summary.stream);
        let summary = RequestSummary::of(&headers, b"{not json");
        assert!(!summary.stream && summary.model.is_none());
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("multipart/form-data; boundary=x"),
        );
        assert!(!RequestSummary::of(&headers, br#"{"stream":true}"#).stream);
    }

    #[test]
    fn backoff_grows_and_stays_within_jitter() {
        let policy = crate::config::RetryPolicy::default();
        for retry in 0..3 {
            let base = Duration::from_millis(500) * (1 << retry);
            let delay = backoff(&policy, retry);
            assert!(
                delay >= base && delay <= base + base / 2,
                "{retry}: {delay:?}"
            );
        }
    }
}
