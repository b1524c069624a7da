//! `/api/gigachat-api/{path}`: forward one call to GigaChat.
//!
//! In order: refuse methods GigaChat does not use, map the path, identify
//! the caller, check their rate limit, read the body (bounded in size and
//! time), take a stream slot and an upstream slot, then send — refreshing
//! the token once on a 401 and retrying transient failures while nothing
//! has reached the client yet. An answer that turns out to be a stream takes
//! its stream slot then, if the body did not visibly ask for one.

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
use super::admit::{Admitted, Purpose, admit};
use super::request_body::RequestBody;
use crate::Proxy;
use crate::Ready;
use crate::access::Identity;
use crate::body::{BoxError, ProxyBody};
use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::limits::{Admission, Guards};
use crate::observe::RequestLog;
use crate::tenancy::ownership::AnswerRewrite;
use crate::tenancy::policy::{Checked, MaxTokensAt, mark_clamped};
use crate::upstream::body::{BodyLimits, UpstreamBody};
use crate::upstream::retry;
use crate::usage::Usage;

const UPSTREAM_REQUEST_ID: HeaderName = HeaderName::from_static("x-upstream-request-id");
const UPSTREAM_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");
const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");
/// JSON answers up to this size are read whole before they are sent, to
/// catch an error object inside a 200 and to read the token usage; larger
/// ones (and everything else) stream through untouched.
const INSPECTED_JSON_MAX: u64 = 4 * 1024 * 1024;
/// How much of an SSE stream is read, at most, to see its first event.
const SSE_PEEK_MAX: usize = 64 * 1024;

/// The `Allow` of this route's `405`s and of `OPTIONS`: the methods
/// forwarded, and `OPTIONS`, which the proxy answers itself.
pub(crate) const ALLOW: &str = "GET, HEAD, POST, DELETE, OPTIONS";

/// Whether a method is forwarded: GigaChat's API uses GET and POST (even
/// deletions are `POST files/{id}/delete`), and names DELETE in its CORS
/// `Access-Control-Allow-Methods`; HEAD is GET without the body. Anything
/// else reaches GigaChat with the proxy's token, and a hop that answers
/// TRACE echoes the request, token included, back to the client.
fn is_forwarded(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::POST | Method::DELETE
    )
}

pub(crate) async fn handle<B>(
    proxy: &Proxy,
    request: Request<()>,
    body: &mut RequestBody<'_, B>,
    request_id: &HeaderValue,
    log: &mut RequestLog,
) -> Result<Answer, Error>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    // Before anything else: a refused method costs no authentication, no
    // rate-limit budget and no body read.
    if !is_forwarded(request.method()) {
        return Err(Error::MethodNotAllowed { allowed: ALLOW });
    }
    let ready = proxy.ready()?;
    let client_path = request
        .uri()
        .path()
        .strip_prefix(super::API_PREFIX)
        .unwrap_or_default();
    let url = ready.base.resolve(client_path, request.uri().query())?;
    // The one classification of this call: retries, the cache, the log
    // line and the metrics all read this value.
    let endpoint = Endpoint::classify(request.method(), client_path, ready.base.default_version());
    log.endpoint = Some(endpoint);
    let Admitted { identity, limits } = admit(ready, &request, Purpose::Call, log).await?;
    // What this deployment exposes to a public page; the operator's
    // identities may call anything.
    let operator = ready.ownership.is_operator(&identity);
    ready.config.policy.admit_endpoint(endpoint, operator)?;

    let (parts, ()) = request.into_parts();
    // The body is read whole (within the limit) because a 401 or a
    // transient failure is answered by sending the same request again;
    // GigaChat request bodies are small next to the platform caps.
    let body = body
        .read(
            &parts.headers,
            ready.config.max_body_bytes,
            ready.config.body_timeout,
        )
        .await?;
    let call = Call {
        endpoint,
        parts: &parts,
        path: parts
            .uri
            .path()
            .strip_prefix(super::API_PREFIX)
            .unwrap_or_default(),
        url,
        body,
        checks: BodyChecks::Pending,
    };
    let caller = Caller {
        identity: &identity,
        limits: &limits,
        operator,
    };
    let forwarded = send_call(ready, call, caller, request_id, log).await?;
    Ok(Answer {
        response: forwarded.response,
        sse: forwarded.sse,
        guards: forwarded.guards,
        usage: None,
    })
}

/// One GigaChat call whose body has been read: what [`send_call`] needs of
/// it, whichever route (and API dialect) it came in by.
pub(super) struct Call<'a> {
    pub endpoint: Endpoint,
    /// The client's request line and headers: the method the call is made
    /// with, the headers forwarded, and what the cache key reads.
    pub parts: &'a http::request::Parts,
    /// The GigaChat path, relative to the base URL (`chat/completions`,
    /// `v1/models/GigaChat`), as the policy and ownership read it.
    pub path: &'a str,
    /// Where the call goes: `path` resolved against the base URL.
    pub url: Uri,
    pub body: Bytes,
    pub checks: BodyChecks,
}

/// Whether the body still needs the policy's and ownership's checks.
pub(super) enum BodyChecks {
    /// Run them here, on the body as it will be sent.
    Pending,
    /// The route ran them before it changed the body itself (the OpenAI
    /// route adds the ids of files it uploaded, which are GigaChat's raw
    /// ids: ownership would refuse them as no one's).
    Done {
        clamped_to: Option<u32>,
        answer: AnswerRewrite,
    },
}

/// Who is calling, as admitted.
#[derive(Clone, Copy)]
pub(super) struct Caller<'a> {
    pub identity: &'a Identity,
    pub limits: &'a Admission,
    pub operator: bool,
}

/// GigaChat's answer, ready for the client (or for a translation).
pub(super) struct Forwarded {
    pub response: Response<ProxyBody>,
    pub sse: bool,
    /// The limit slots the call holds until the answer's body ends.
    pub guards: Guards,
    /// The whole answer when it was read before being passed on (a small
    /// JSON answer); `None` for streams, large bodies and cache hits.
    pub answer_bytes: Option<Bytes>,
}

/// Everything between a read body and the answer: the policy's check of
/// the body, ownership, the cache, the token budget, the stream and
/// upstream slots, forwarding (retries and the 401 refresh included), the
/// sealing of what the answer hands out, and the limit headers.
pub(super) async fn send_call(
    ready: &Ready,
    call: Call<'_>,
    caller: Caller<'_>,
    request_id: &HeaderValue,
    log: &mut RequestLog,
) -> Result<Forwarded, Error> {
    let Call {
        endpoint,
        parts,
        path,
        mut url,
        body,
        checks,
    } = call;
    let Caller {
        identity,
        limits,
        operator,
    } = caller;
    let retryable = endpoint.safe_to_repeat(&parts.method);
    // The policy judges the body as GigaChat will read it, and may lower
    // its `max_tokens` (the answer's header says so).
    let (body, max_tokens_clamped_to) = match &checks {
        BodyChecks::Pending => {
            let max_tokens_at = MaxTokensAt::of(endpoint, &parts.method, path);
            let Checked { body, clamped_to } =
                ready
                    .config
                    .policy
                    .check_body(endpoint, max_tokens_at, body)?;
            (body, clamped_to)
        }
        BodyChecks::Done { clamped_to, .. } => (body, *clamped_to),
    };
    let summary = RequestSummary::of(&body);
    log.model = summary.model;
    // Ownership: the sealed object ids the call names are opened, or the
    // call is refused, before anything reaches GigaChat or the cache.
    let (body, answer_rewrite) = match checks {
        BodyChecks::Pending => {
            let checked = ready.ownership.check_call(
                &identity.key,
                operator,
                endpoint,
                &parts.method,
                path,
                parts.uri.query(),
                &body,
            )?;
            if checked.path.is_some() || checked.query.is_some() {
                url = ready.base.resolve(
                    checked.path.as_deref().unwrap_or(path),
                    checked.query.as_deref().or(parts.uri.query()),
                )?;
            }
            (checked.body.unwrap_or(body), checked.answer)
        }
        BodyChecks::Done { answer, .. } => (body, answer),
    };
    // A cached answer skips the stream slot, the upstream slot and the
    // token; authentication and the rate limit above still apply. The
    // outcome travels in the response's extensions (`cache::CacheOutcome`).
    let cache_key = ready.cache.key(parts, endpoint, &url, &body, &identity.key);
    if let Some(key) = &cache_key
        && let Some(mut response) = ready.cache.lookup(key).await
    {
        limits.apply(response.headers_mut());
        mark_clamped(response.headers_mut(), max_tokens_clamped_to);
        return Ok(Forwarded {
            response,
            sse: false,
            guards: Guards::default(),
            answer_bytes: None,
        });
    }
    // The token budget reserves this call's estimate before it waits for
    // any slot, so a spent caller is refused at once.
    let mut body = body;
    // A thread run costs what a chat does, and is written like a v1 chat
    // (`max_tokens` and `usage` at the top level): the budget charges it
    // as one, so threads are no way around a spent budget.
    let billed_as = match MaxTokensAt::of(endpoint, &parts.method, path) {
        Some(MaxTokensAt::TopLevel) if endpoint == Endpoint::Threads => Endpoint::Chat,
        _ => endpoint,
    };
    let reservation = ready
        .limiter
        .reserve_tokens(
            &identity.key,
            identity.anonymous,
            identity.token_budget,
            billed_as,
            &mut body,
        )
        .await?;
    let mut guards = ready.limiter.guards(&identity.key, summary.stream).await?;
    guards.hold_budget(reservation);

    let mut headers = HeaderMap::with_capacity(12);
    crate::headers::forward_request_headers(&parts.headers, &mut headers);
    headers.insert(HeaderName::from_static("x-request-id"), request_id.clone());
    let outgoing = Outgoing {
        method: parts.method.clone(),
        url,
        headers,
        body,
        retryable,
    };
    let mut answer_bytes = None;
    let (mut response, sse) = forward(ready, &outgoing, log, &mut answer_bytes).await?;
    // Embeddings report their usage per item; the budget and the log
    // count the sum.
    if endpoint == Endpoint::Embeddings
        && log.usage.is_none()
        && let Some(bytes) = &answer_bytes
    {
        log.usage = crate::limits::budget::embeddings_usage(bytes);
    }
    ready
        .ownership
        .seal_answer(
            &identity.key,
            answer_rewrite,
            &mut response,
            sse,
            &mut answer_bytes,
        )
        .await?;
    // GigaChat, not the summary, decides whether the answer streams (a body
    // may ask for a stream in ways the summary cannot see); whatever
    // streams back holds a slot. Over the limit, the upstream answer is
    // dropped, which cancels it.
    if sse {
        ready
            .limiter
            .hold_stream(&mut guards, &identity.key)
            .await?;
    }
    if let Some(key) = &cache_key {
        ready
            .cache
            .store(key, &mut response, sse, answer_bytes.as_ref())
            .await;
    }
    limits.apply(response.headers_mut());
    mark_clamped(response.headers_mut(), max_tokens_clamped_to);
    guards.apply_budget_headers(response.headers_mut());
    Ok(Forwarded {
        response,
        sse,
        guards,
        answer_bytes,
    })
}

struct Outgoing {
    method: Method,
    url: Uri,
    headers: HeaderMap,
    body: Bytes,
    retryable: bool,
}

/// What the proxy reads of a request body: the model (for the log) and
/// whether it asks for a stream (to take a stream slot before sending).
#[derive(Default)]
struct RequestSummary {
    model: Option<String>,
    stream: bool,
}

impl RequestSummary {
    /// Reads a JSON object body whatever its `Content-Type` says (GigaChat
    /// does not check it: a `text/plain` body that asks for a stream gets
    /// one). Every occurrence of
    /// a key counts: GigaChat keeps the last of duplicated keys, where
    /// serde's derive refuses the body, so a stream is assumed if any
    /// `stream` is anything but `false` or `null`. Nothing but those two
    /// values is kept; the messages are skipped without being allocated.
    fn of(body: &[u8]) -> Self {
        let mut summary = Self::default();
        if body.trim_ascii_start().first() != Some(&b'{') {
            return summary;
        }
        let mut json = serde_json::Deserializer::from_slice(body);
        // A body that breaks off keeps what was read before the break.
        let _ = serde::de::DeserializeSeed::deserialize(SummarySeed(&mut summary), &mut json);
        summary
    }
}

/// Visits the top-level object of a body, key by key, into a summary.
struct SummarySeed<'s>(&'s mut RequestSummary);

impl<'de> serde::de::DeserializeSeed<'de> for SummarySeed<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, json: D) -> Result<(), D::Error> {
        json.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for SummarySeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<TopLevelKey>()? {
            match key {
                TopLevelKey::Model => {
                    self.0.model = map
                        .next_value::<Loose<Option<String>>>()?
                        .0
                        .filter(|m| m.len() <= 128);
                }
                TopLevelKey::Stream => {
                    if map.next_value::<Loose<bool>>()?.0 {
                        self.0.stream = true;
                    }
                }
                TopLevelKey::Other => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// A top-level key, compared without allocating (escaped keys such as
/// `"str\u0065am"` included: serde_json hands them over unescaped).
enum TopLevelKey {
    Model,
    Stream,
    Other,
}

impl<'de> Deserialize<'de> for TopLevelKey {
    fn deserialize<D: serde::Deserializer<'de>>(json: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl serde::de::Visitor<'_> for KeyVisitor {
            type Value = TopLevelKey;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<TopLevelKey, E> {
                Ok(match key {
                    "model" => TopLevelKey::Model,
                    "stream" => TopLevelKey::Stream,
                    _ => TopLevelKey::Other,
                })
            }
        }
        json.deserialize_identifier(KeyVisitor)
    }
}

/// A value of any JSON type, read as `T` the lenient way (see
/// [`Lenient`]). Never fails on a well-formed value, so one odd value does
/// not hide the keys after it.
struct Loose<T>(T);

/// How a summary field reads whatever JSON value it is given.
trait Lenient: Sized {
    fn from_json(value: Scalar<'_>) -> Self;
}

impl Lenient for bool {
    /// Only `false` and `null` are certainly not a stream.
    fn from_json(value: Scalar<'_>) -> Self {
        match value {
            Scalar::Bool(flag) => flag,
            Scalar::Null => false,
            Scalar::Str(_) | Scalar::Other => true,
        }
    }
}

impl Lenient for Option<String> {
    /// A model that is not a string is no model.
    fn from_json(value: Scalar<'_>) -> Self {
        match value {
            Scalar::Str(text) => Some(text.to_owned()),
            _ => None,
        }
    }
}

/// A JSON value as [`Lenient`] sees it.
enum Scalar<'v> {
    Null,
    Bool(bool),
    Str(&'v str),
    /// A number, an array or an object.
    Other,
}

impl<'de, T: Lenient> Deserialize<'de> for Loose<T> {
    fn deserialize<D: serde::Deserializer<'de>>(json: D) -> Result<Self, D::Error> {
        json.deserialize_any(LooseVisitor(std::marker::PhantomData))
            .map(Loose)
    }
}

struct LooseVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: Lenient> serde::de::Visitor<'de> for LooseVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<T, E> {
        Ok(T::from_json(Scalar::Null))
    }
    fn visit_none<E>(self) -> Result<T, E> {
        Ok(T::from_json(Scalar::Null))
    }
    fn visit_bool<E>(self, value: bool) -> Result<T, E> {
        Ok(T::from_json(Scalar::Bool(value)))
    }
    fn visit_str<E>(self, value: &str) -> Result<T, E> {
        Ok(T::from_json(Scalar::Str(value)))
    }
    fn visit_i64<E>(self, _: i64) -> Result<T, E> {
        Ok(T::from_json(Scalar::Other))
    }
    fn visit_u64<E>(self, _: u64) -> Result<T, E> {
        Ok(T::from_json(Scalar::Other))
    }
    fn visit_f64<E>(self, _: f64) -> Result<T, E> {
        Ok(T::from_json(Scalar::Other))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<T, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(T::from_json(Scalar::Other))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        while map
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        Ok(T::from_json(Scalar::Other))
    }
}

/// What one upstream attempt came to.
enum Attempt {
    /// An answer to pass on.
    Done(Response<ProxyBody>, bool),
    /// A transient failure: retry if allowed, else pass `fallback` on
    /// (with whether its body is a stream).
    Transient {
        retry_after: Option<Duration>,
        fallback: Result<(Response<ProxyBody>, bool), Error>,
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
        // OAuth retries spend this request's own `GIGACHAT_TIMEOUT` budget.
        let token = ready.tokens.token_by(deadline).await?;
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
                let delay = (outgoing.retryable && retries < config.retry.max_retries)
                    .then(|| retry::delay_before(&config.retry, retries, retry_after, deadline))
                    .flatten();
                let Some(delay) = delay else {
                    log.upstream_ms = Some(started.elapsed().as_micros() as f64 / 1000.0);
                    log.retries = retries;
                    return fallback;
                };
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
        let retry_after = retry::retry_after(&parts.headers);
        let response = build(
            status,
            headers,
            UpstreamBody::new(body, sse, request_id.to_owned(), Vec::new(), limits).boxed(),
        );
        return Ok(Attempt::Transient {
            retry_after,
            fallback: Ok((response, sse)),
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
            Ok(Ok(Capped::Whole(bytes))) => bytes,
            Ok(Ok(Capped::Larger(read))) => {
                // Larger than the inspection reads (a long embeddings list
                // sent chunked): what was read goes first, the rest streams
                // through untouched.
                return Ok(Attempt::Done(
                    build(
                        status,
                        headers,
                        UpstreamBody::new(body, false, request_id.to_owned(), read, limits).boxed(),
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

/// What [`read_capped`] came to.
enum Capped {
    /// The whole body, within [`INSPECTED_JSON_MAX`].
    Whole(Bytes),
    /// The chunks read before the body outgrew the cap; the rest is unread.
    Larger(Vec<Bytes>),
}

/// Reads a body whole if it stays within [`INSPECTED_JSON_MAX`], else
/// stops as soon as it does not and hands back what it read, which must
/// still reach the client. A body that arrives in one chunk (the usual
/// case) is kept as it is, without a copy.
async fn read_capped(body: &mut Incoming) -> Result<Capped, hyper::Error> {
    let mut chunks = Vec::new();
    let mut len = 0usize;
    while let Some(chunk) = next_data(body).await {
        let chunk = chunk?;
        len += chunk.len();
        chunks.push(chunk);
        if len > INSPECTED_JSON_MAX as usize {
            return Ok(Capped::Larger(chunks));
        }
    }
    if chunks.len() <= 1 {
        return Ok(Capped::Whole(chunks.pop().unwrap_or_default()));
    }
    let mut whole = Vec::with_capacity(len);
    for chunk in &chunks {
        whole.extend_from_slice(chunk);
    }
    Ok(Capped::Whole(Bytes::from(whole)))
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
            fallback: Ok((response, false)),
        }
    } else {
        Attempt::Done(response, false)
    }
}

/// GigaChat's headers for the client: hop-by-hop ones (those its
/// `Connection` names too), cookies, `Server` and its Sber-only CORS
/// dropped; SSE marked so no proxy or CDN buffers it.
fn client_headers(upstream: &HeaderMap, sse: bool) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(upstream.len() + 3);
    crate::headers::forward_response_headers(upstream, &mut headers);
    if let Some(upstream_id) = upstream.get("x-request-id")
        && !crate::headers::is_named_in_connection(upstream, &UPSTREAM_ID_HEADER)
    {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

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
    fn request_summary_reads_model_and_stream() {
        let summary = RequestSummary::of(
            br#"{"messages":[{"role":"user","content":"x"}],"model":"GigaChat-2","stream":true}"#,
        );
        assert_eq!(summary.model.as_deref(), Some("GigaChat-2"));
        assert!(summary.stream);
        let summary = RequestSummary::of(b"{not json");
        assert!(!summary.stream && summary.model.is_none());
        let summary = RequestSummary::of(br#"{"model":"GigaChat","stream":false}"#);
        assert!(!summary.stream);
        assert!(!RequestSummary::of(br#"{"stream":null}"#).stream);
        assert!(!RequestSummary::of(b"--x\r\nContent-Disposition: form-data").stream);
    }

    #[test]
    fn any_way_of_asking_for_a_stream_counts() {
        for body in [
            // GigaChat keeps the last of duplicated keys.
            &br#"{"stream":false,"model":"GigaChat","stream":true}"#[..],
            br#"{"stream":true,"stream":false}"#,
            br#" {"str\u0065am":true}"#,
            br#"{"stream":"true"}"#,
            br#"{"stream":1}"#,
            br#"{"model":{"nested":[1,2]},"stream":true}"#,
            // Broken after the key: what was read counts.
            br#"{"stream":true,"messages":[{"#,
        ] {
            assert!(
                RequestSummary::of(body).stream,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let summary = RequestSummary::of(br#"{"model":"A","model":"B"}"#);
        assert_eq!(summary.model.as_deref(), Some("B"));
    }

    #[test]
    fn preflights_allow_exactly_the_forwarded_methods() {
        assert_eq!(crate::cors::ALLOW_METHODS, ALLOW);
    }
}
