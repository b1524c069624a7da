//! `/api/gigachat-openai/v1/…`: OpenAI's API in front of GigaChat, for
//! code written against the `openai` SDKs, LangChain or the Vercel AI SDK.
//!
//! The request is translated (`crate::openai`) and then takes exactly the
//! native route's path (`api::send_call`): the same admission, the policy
//! judging the *translated* body, ownership, the cache, the token budget,
//! the slots, the retries; the answer is translated back on its way out,
//! streams chunk by chunk. Errors are answered in OpenAI's shape by the
//! dispatcher (`Route::OpenAi`'s dialect).

use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;

use super::Answer;
use super::admit::{Admitted, Purpose, admit};
use super::api::{BodyChecks, Call, Caller, Forwarded, send_call};
use super::request_body::RequestBody;
use crate::Proxy;
use crate::Ready;
use crate::body::{BoxError, ProxyBody};
use crate::endpoint::{ApiVersion, Endpoint};
use crate::error::Error;
use crate::limits::Guards;
use crate::observe::RequestLog;
use crate::openai::stream_body::TranslatedStream;
use crate::openai::{ChatPlan, ChatRequest};
use crate::tenancy::policy::{Checked, MaxTokensAt};
use crate::usage::UsageCell;

/// The version segment OpenAI's clients put in their base URL.
const V1_PREFIX: &str = "/api/gigachat-openai/v1/";
const ALLOW_POST: &str = "POST, OPTIONS";
const ALLOW_GET: &str = "GET, OPTIONS";
/// The longest GigaChat answer translated whole: far above any chat
/// answer, room for a long embeddings list (2048 inputs of 1024 floats).
const TRANSLATED_ANSWER_MAX: usize = 64 * 1024 * 1024;
/// The longest GigaChat error body read: its message is all that is kept.
const ERROR_BODY_MAX: usize = 64 * 1024;
const X_ACCEL_BUFFERING: http::HeaderName = http::HeaderName::from_static("x-accel-buffering");

/// What a path under `v1/` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operation<'p> {
    ChatCompletions,
    Responses,
    Embeddings,
    Models,
    /// `models/{id}`, the id as the client sent it.
    Model(&'p str),
}

impl<'p> Operation<'p> {
    fn of(path: &'p str) -> Option<Self> {
        let rest = path.strip_prefix(V1_PREFIX)?;
        Some(match rest {
            "chat/completions" => Operation::ChatCompletions,
            "responses" => Operation::Responses,
            "embeddings" => Operation::Embeddings,
            "models" => Operation::Models,
            _ => {
                let id = rest.strip_prefix("models/")?;
                if id.is_empty() || id.contains('/') {
                    return None;
                }
                Operation::Model(id)
            }
        })
    }

    fn method(self) -> Method {
        match self {
            Operation::Models | Operation::Model(_) => Method::GET,
            _ => Method::POST,
        }
    }

    fn allow(self) -> &'static str {
        match self {
            Operation::Models | Operation::Model(_) => ALLOW_GET,
            _ => ALLOW_POST,
        }
    }

    /// The kind of GigaChat call it becomes.
    fn endpoint(self) -> Endpoint {
        match self {
            Operation::ChatCompletions | Operation::Responses => Endpoint::Chat,
            Operation::Embeddings => Endpoint::Embeddings,
            Operation::Models => Endpoint::Models,
            Operation::Model(_) => Endpoint::Model,
        }
    }
}

/// The `Allow` of a path of this route (`OPTIONS` without CORS).
pub(super) fn allow(path: &str) -> Result<&'static str, Error> {
    Operation::of(path)
        .map(Operation::allow)
        .ok_or(Error::RouteNotFound)
}

/// What the answer's translation needs to know of the request.
enum Plan {
    Chat(ChatPlan),
    Responses(crate::openai::responses::ResponsesPlan),
    Embeddings(crate::openai::embeddings::EmbeddingsPlan),
    Models,
    /// The model id as the client named it, echoed.
    Model(String),
}

pub(super) async fn handle<B>(
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
    // Owned: the path outlives the request it came in (a model id is part
    // of the plan and the upstream path).
    let path = request.uri().path().to_owned();
    let operation = Operation::of(&path).ok_or(Error::RouteNotFound)?;
    // A refused method costs no authentication, no rate-limit budget and no
    // body read.
    if *request.method() != operation.method() {
        return Err(Error::MethodNotAllowed {
            allowed: operation.allow(),
        });
    }
    let ready = proxy.ready()?;
    let endpoint = operation.endpoint();
    log.endpoint = Some(endpoint);
    // The OpenAI SDKs send their `apiKey` as `Authorization: Bearer …`: an
    // end-user API key, JWT or session token, read as on the native route
    // (and ignored in open mode when it is none of those).
    let Admitted { identity, limits } = admit(ready, &request, Purpose::Call, log).await?;
    let operator = ready.ownership.is_operator(&identity);
    ready.config.policy.admit_endpoint(endpoint, operator)?;
    let caller = Caller {
        identity: &identity,
        limits: &limits,
        operator,
    };
    let (mut parts, ()) = request.into_parts();
    let request_id_text = request_id.to_str().unwrap_or_default();

    let (upstream_path, body, checks, plan) = match operation {
        Operation::Models => (
            upstream_path(ready, "models"),
            Bytes::new(),
            BodyChecks::Pending,
            Plan::Models,
        ),
        Operation::Model(id) => {
            let model = ready.config.openai.gigachat_model(Some(id));
            (
                upstream_path(ready, &format!("models/{model}")),
                Bytes::new(),
                BodyChecks::Pending,
                Plan::Model(id.to_owned()),
            )
        }
        Operation::ChatCompletions | Operation::Responses | Operation::Embeddings => {
            let bytes = body
                .read(
                    &parts.headers,
                    ready.config.max_body_bytes,
                    ready.config.body_timeout,
                )
                .await?;
            if operation == Operation::ChatCompletions
                && let Some((body, plan)) =
                    crate::openai::plain_chat::translate(&bytes, &ready.config.openai)
            {
                // The common text-only chat, without a JSON tree; nothing
                // to upload, so the native path checks it as it does its own.
                (
                    upstream_path(ready, "chat/completions"),
                    body,
                    BodyChecks::Pending,
                    Plan::Chat(plan),
                )
            } else {
                let json = parse_object(&bytes)?;
                drop(bytes);
                match operation {
                    Operation::Embeddings => {
                        let (body, plan) = crate::openai::embeddings::translate_request(
                            &json,
                            &ready.config.openai,
                        )?;
                        (
                            upstream_path(ready, "embeddings"),
                            Bytes::from(body),
                            BodyChecks::Pending,
                            Plan::Embeddings(plan),
                        )
                    }
                    Operation::Responses => {
                        let (mut chat, plan) = crate::openai::responses::translate_request(
                            &json,
                            &ready.config.openai,
                        )?;
                        let path = upstream_path(ready, "chat/completions");
                        let (body, checks) = prepare_chat(ready, &mut chat, caller, &path).await?;
                        (path, body, checks, Plan::Responses(plan))
                    }
                    _ => {
                        let mut chat =
                            crate::openai::request::translate(&json, &ready.config.openai)?;
                        let path = upstream_path(ready, "chat/completions");
                        let (body, checks) = prepare_chat(ready, &mut chat, caller, &path).await?;
                        (path, body, checks, Plan::Chat(chat.plan))
                    }
                }
            }
        }
    };
    let url = ready.base.resolve(&upstream_path, None)?;
    for_gigachat(&mut parts.headers);
    let call = Call {
        endpoint,
        parts: &parts,
        path: &upstream_path,
        url,
        body,
        checks,
    };
    let forwarded = send_call(ready, call, caller, request_id, log).await?;
    translate_answer(ready, forwarded, plan, request_id_text).await
}

/// A request body as the JSON object every OpenAI call sends.
fn parse_object(bytes: &[u8]) -> Result<Value, Error> {
    json_object(
        bytes,
        "Send the request as one JSON object (Content-Type: application/json), as the OpenAI API expects.",
    )
}

/// A request body that must be one JSON object; `hint` says how the
/// dialect's clients send one.
pub(super) fn json_object(bytes: &[u8], hint: &'static str) -> Result<Value, Error> {
    // serde_json's messages name a position and what was expected, never
    // the input itself.
    let json: Value = serde_json::from_slice(bytes).map_err(|err| Error::InvalidRequest {
        message: format!("the request body is not valid JSON: {err}"),
        param: None,
        code: "invalid_json",
        hint,
    })?;
    if !json.is_object() {
        return Err(Error::InvalidRequest {
            message: "the request body must be a JSON object".into(),
            param: None,
            code: "invalid_json",
            hint,
        });
    }
    Ok(json)
}

/// The request headers as GigaChat gets them: the proxy's JSON, whatever
/// the client labelled its own body; the client's `Accept` was for its
/// dialect's answer.
pub(super) fn for_gigachat(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.remove(header::ACCEPT);
}

/// The GigaChat v1 path of a call, relative to the base URL: as it is when
/// the base is v1 (or names no version), under `v1/` when the base is
/// another version, since the translation speaks v1.
pub(super) fn upstream_path(ready: &Ready, path: &str) -> String {
    if ready.base.default_version() == ApiVersion::V1 {
        path.to_owned()
    } else {
        format!("v1/{path}")
    }
}

/// The translated chat body, ready for [`send_call`]. Files inlined in the
/// messages are uploaded and attached here; the policy and ownership judge
/// the body *before* that, for two reasons: a refused call should cost no
/// upload, and the attachments the proxy adds carry GigaChat's raw file
/// ids, which ownership refuses as no one's — while an id the client named
/// (sealed) must still be opened for this caller or refused.
pub(super) async fn prepare_chat(
    ready: &Ready,
    chat: &mut ChatRequest,
    caller: Caller<'_>,
    path: &str,
) -> Result<(Bytes, BodyChecks), Error> {
    if chat.uploads.is_empty() {
        return Ok((to_bytes(&chat.body)?, BodyChecks::Pending));
    }
    let checks = check_before_uploading(ready, chat, caller, path)?;
    let deadline = Instant::now() + ready.config.timeout;
    crate::openai::uploads::attach(ready, &caller.identity.key, chat, deadline).await?;
    Ok((to_bytes(&chat.body)?, checks))
}

/// The policy's and ownership's checks of a chat body with files still to
/// upload; the body is left with the client's sealed ids opened.
fn check_before_uploading(
    ready: &Ready,
    chat: &mut ChatRequest,
    caller: Caller<'_>,
    path: &str,
) -> Result<BodyChecks, Error> {
    // Inline files become GigaChat file uploads: what the deployment lets
    // a public page do with files applies.
    ready
        .config
        .policy
        .admit_endpoint(Endpoint::FileUpload, caller.operator)?;
    let Checked { body, clamped_to } = ready.config.policy.check_body(
        Endpoint::Chat,
        Some(MaxTokensAt::TopLevel),
        to_bytes(&chat.body)?,
    )?;
    let checked = ready.ownership.check_request(
        &caller.identity.key,
        caller.operator,
        Endpoint::Chat,
        path,
        &body,
    )?;
    let read_back = |bytes: &[u8]| {
        serde_json::from_slice(bytes)
            .map_err(|_| Error::Internal("the checked chat body could not be read back"))
    };
    if let Some(opened) = &checked.body {
        chat.body = read_back(opened)?;
    } else if clamped_to.is_some() {
        chat.body = read_back(&body)?;
    }
    Ok(BodyChecks::Done {
        clamped_to,
        answer: checked.answer,
    })
}

fn to_bytes(body: &serde_json::Map<String, Value>) -> Result<Bytes, Error> {
    serde_json::to_vec(body)
        .map(Bytes::from)
        .map_err(|_| Error::Internal("the translated request could not be written"))
}

/// GigaChat's answer in OpenAI's shape, with the headers the native route
/// gives (limits, cache, clamp, upstream request id) kept.
async fn translate_answer(
    ready: &Ready,
    forwarded: Forwarded,
    plan: Plan,
    request_id: &str,
) -> Result<Answer, Error> {
    let Forwarded {
        response,
        sse,
        guards,
        answer_bytes,
    } = forwarded;
    let (mut parts, body) = response.into_parts();
    if !parts.status.is_success() {
        return Ok(error_answer(parts, body, guards, |status, bytes| {
            crate::openai::errors::from_upstream(status, bytes, request_id)
        })
        .await);
    }
    if sse {
        let usage = UsageCell::default();
        let body = match plan {
            Plan::Chat(plan) => TranslatedStream::new(
                body,
                crate::openai::chunks::ChatChunks::new(plan, request_id),
                usage.clone(),
            )
            .boxed(),
            Plan::Responses(plan) => TranslatedStream::new(
                body,
                crate::openai::responses_stream::ResponseEvents::new(plan, request_id),
                usage.clone(),
            )
            .boxed(),
            // GigaChat streams nothing else; passed on as it came.
            Plan::Embeddings(_) | Plan::Models | Plan::Model(_) => body,
        };
        stream_headers(&mut parts.headers, "text/event-stream; charset=utf-8");
        return Ok(Answer {
            response: Response::from_parts(parts, body),
            sse: true,
            guards,
            usage: Some(usage),
        });
    }
    // A JSON answer: read whole already unless it came from the cache or
    // was too large to inspect.
    let gigachat = whole_answer(ready, body, answer_bytes).await?;
    let translated = match &plan {
        Plan::Chat(plan) => crate::openai::answer::chat_completion(&gigachat, plan, request_id)?,
        Plan::Responses(plan) => {
            crate::openai::responses::response_object(&gigachat, plan, request_id)?
        }
        Plan::Embeddings(plan) => crate::openai::embeddings::translate_answer(&gigachat, plan)?,
        Plan::Models => crate::openai::models::list(&gigachat, &ready.config.openai)?,
        Plan::Model(requested) => crate::openai::models::model(&gigachat, requested)?,
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_TYPE, crate::body::JSON);
    Ok(Answer {
        response: Response::from_parts(parts, crate::body::full(translated)),
        sse: false,
        guards,
        usage: None,
    })
}

/// GigaChat's error answer (status and body) in the dialect's shape
/// (`to_error`), with the headers the call's answer carried.
pub(super) async fn error_answer(
    parts: http::response::Parts,
    body: ProxyBody,
    guards: Guards,
    to_error: impl FnOnce(StatusCode, &[u8]) -> Response<ProxyBody>,
) -> Answer {
    let bytes = read_whole(body, ERROR_BODY_MAX).await.unwrap_or_default();
    let error = to_error(parts.status, &bytes);
    Answer {
        response: merge_headers(parts, error),
        sse: false,
        guards,
        usage: None,
    }
}

/// A translated stream's headers: no length (it is written as it comes),
/// the dialect's `Content-Type`, and neither a browser nor a buffering
/// reverse proxy (nginx's `X-Accel-Buffering`) holding events back.
pub(super) fn stream_headers(headers: &mut HeaderMap, content_type: &'static str) {
    headers.remove(header::CONTENT_LENGTH);
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(X_ACCEL_BUFFERING, HeaderValue::from_static("no"));
}

/// A whole (not streamed) GigaChat answer: the bytes the native path read
/// already, else the body read now; an answer that broke off or is larger
/// than any translation takes is an unreadable upstream.
pub(super) async fn whole_answer(
    ready: &Ready,
    body: ProxyBody,
    answer_bytes: Option<Bytes>,
) -> Result<Bytes, Error> {
    let whole = match answer_bytes {
        Some(bytes) => {
            drop(body);
            Some(bytes)
        }
        None => read_whole(body, TRANSLATED_ANSWER_MAX).await,
    };
    whole.ok_or_else(|| unreadable_answer(ready))
}

/// GigaChat's answer could not be read (or not as what was asked for).
pub(super) fn unreadable_answer(ready: &Ready) -> Error {
    Error::UpstreamUnreachable {
        stage: "reading the answer",
        host: ready.base.host().to_owned(),
        cause: crate::error::TransportCause::Other,
    }
}

/// An answer body read whole, up to `limit` bytes, within the timeouts
/// the upstream body enforces itself; `None` if it broke off or is larger.
/// (`http_body_util::Limited` would do, but its bound on the body's error
/// type keeps the route's future from being provably `Send`.)
pub(super) async fn read_whole(mut body: ProxyBody, limit: usize) -> Option<Bytes> {
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.ok()?.into_data() else {
            continue;
        };
        len += data.len();
        if len > limit {
            return None;
        }
        chunks.push(data);
    }
    if chunks.len() <= 1 {
        return Some(chunks.pop().unwrap_or_default());
    }
    let mut whole = Vec::with_capacity(len);
    for chunk in &chunks {
        whole.extend_from_slice(chunk);
    }
    Some(Bytes::from(whole))
}

/// `error` (status, body, its own headers) with the headers the call's
/// answer carried that it lacks: the rate-limit and budget headers, the
/// upstream request id, `Retry-After`.
pub(super) fn merge_headers(
    upstream: http::response::Parts,
    error: Response<ProxyBody>,
) -> Response<ProxyBody> {
    let (mut parts, body) = error.into_parts();
    for (name, value) in &upstream.headers {
        if name != header::CONTENT_TYPE
            && name != header::CONTENT_LENGTH
            && !parts.headers.contains_key(name)
        {
            parts.headers.append(name.clone(), value.clone());
        }
    }
    parts.extensions = upstream.extensions;
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn paths_name_their_operation_exactly() {
        fn of(path: &str) -> Option<Operation<'_>> {
            Operation::of(path)
        }
        assert_eq!(
            of("/api/gigachat-openai/v1/chat/completions"),
            Some(Operation::ChatCompletions)
        );
        assert_eq!(
            of("/api/gigachat-openai/v1/responses"),
            Some(Operation::Responses)
        );
        assert_eq!(
            of("/api/gigachat-openai/v1/embeddings"),
            Some(Operation::Embeddings)
        );
        assert_eq!(
            of("/api/gigachat-openai/v1/models"),
            Some(Operation::Models)
        );
        assert_eq!(
            of("/api/gigachat-openai/v1/models/GigaChat-2-Max"),
            Some(Operation::Model("GigaChat-2-Max"))
        );
        for path in [
            "/api/gigachat-openai/chat/completions",
            "/api/gigachat-openai/v1/chat/completions/",
            "/api/gigachat-openai/v1/models/",
            "/api/gigachat-openai/v1/models/a/b",
            "/api/gigachat-openai/v1/completions",
            "/api/gigachat-openai/v2/chat/completions",
            "/api/gigachat-openai",
        ] {
            assert_eq!(of(path), None, "{path}");
        }
    }

    #[test]
    fn methods_and_allow_agree() {
        for path in [
            "chat/completions",
            "responses",
            "embeddings",
            "models",
            "models/x",
        ] {
            let path = format!("{V1_PREFIX}{path}");
            let operation = Operation::of(&path).unwrap();
            assert!(operation.allow().starts_with(operation.method().as_str()));
            // Every method the route takes passes a CORS preflight.
            assert!(crate::cors::ALLOW_METHODS.contains(operation.method().as_str()));
        }
    }

    #[test]
    fn only_json_objects_are_requests() {
        assert!(parse_object(br#"{"model":"x"}"#).is_ok());
        for body in [&b"[1]"[..], b"\"text\"", b"", b"{", b"null"] {
            let err = parse_object(body).unwrap_err();
            assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
            assert_eq!(err.code(), "invalid_json");
        }
    }
}
