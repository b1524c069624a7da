//! `/api/gigachat-chat`: the Vercel AI SDK's `useChat` talking to GigaChat
//! with no server code of the site's own (`DefaultChatTransport({ api:
//! '/api/gigachat-chat' })`).
//!
//! The `UIMessage` list is translated (`crate::ai_sdk`) into a GigaChat chat
//! and takes the OpenAI route's path from there (`prepare_chat`, then the
//! native pipeline in `send_call`): the same admission, policy, ownership,
//! uploads, token budget, slots and retries. GigaChat's stream becomes the
//! SDK's UI message stream chunk by chunk. Errors before the stream are a
//! JSON body that reads well as the `error.message` the SDK makes of it
//! (`Dialect::UiChat`); errors after it has started are an `error` chunk.

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;

use super::Answer;
use super::admit::{Admitted, Purpose, admit};
use super::api::{BodyChecks, Call, Caller, Forwarded, send_call};
use super::openai::{
    error_answer, for_gigachat, json_object, prepare_chat, stream_headers, unreadable_answer,
    upstream_path, whole_answer,
};
use super::request_body::RequestBody;
use crate::Proxy;
use crate::Ready;
use crate::ai_sdk::UiPlan;
use crate::ai_sdk::stream::UiChunks;
use crate::body::{BoxError, ProxyBody};
use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::observe::RequestLog;
use crate::openai::stream_body::TranslatedStream;
use crate::usage::UsageCell;

use super::CHAT_PATH;
const ALLOW_SEND: &str = "POST, OPTIONS";
const ALLOW_RESUME: &str = "GET, HEAD, OPTIONS";
/// What `useChat({ resume: true })` asks for on load, after `{chatId}/`.
const RESUME_SUFFIX: &str = "/stream";
/// Set by the SDK's own `toUIMessageStreamResponse()`; its clients do not
/// check it, proxies and tools in between may.
const UI_STREAM: http::HeaderName = http::HeaderName::from_static("x-vercel-ai-ui-message-stream");

/// What a path under the route asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operation {
    /// `POST /api/gigachat-chat`: the next answer of a chat.
    Send,
    /// `GET /api/gigachat-chat/{chatId}/stream`: reattach to a stream still
    /// running. The proxy keeps none (a stream lives as long as the
    /// request that started it), so the answer is always "nothing to
    /// resume", which the SDK reads from a 204.
    Resume,
}

impl Operation {
    fn of(path: &str) -> Option<Self> {
        if path == CHAT_PATH || path.strip_prefix(CHAT_PATH) == Some("/") {
            return Some(Operation::Send);
        }
        let chat_id = path
            .strip_prefix(CHAT_PATH)?
            .strip_prefix('/')?
            .strip_suffix(RESUME_SUFFIX)?;
        (!chat_id.is_empty() && !chat_id.contains('/')).then_some(Operation::Resume)
    }

    fn allow(self) -> &'static str {
        match self {
            Operation::Send => ALLOW_SEND,
            Operation::Resume => ALLOW_RESUME,
        }
    }
}

/// The `Allow` of a path of this route (`OPTIONS` without CORS).
pub(super) fn allow(path: &str) -> Result<&'static str, Error> {
    Operation::of(path)
        .map(Operation::allow)
        .ok_or(Error::RouteNotFound)
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
    let operation = Operation::of(request.uri().path()).ok_or(Error::RouteNotFound)?;
    let method = request.method();
    match operation {
        // Constant and stateless: no caller is identified, nothing is
        // spent, and the answer tells no one anything.
        Operation::Resume if method == Method::GET || method == Method::HEAD => {
            let mut response = Response::new(crate::body::empty());
            *response.status_mut() = StatusCode::NO_CONTENT;
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return Ok(Answer::from(response));
        }
        // A refused method costs no authentication, no rate-limit budget
        // and no body read.
        Operation::Resume => {
            return Err(Error::MethodNotAllowed {
                allowed: ALLOW_RESUME,
            });
        }
        Operation::Send if method != Method::POST => {
            return Err(Error::MethodNotAllowed {
                allowed: ALLOW_SEND,
            });
        }
        Operation::Send => {}
    }
    let ready = proxy.ready()?;
    log.endpoint = Some(Endpoint::Chat);
    // `DefaultChatTransport({ headers })` sends what the site puts there:
    // an end-user API key, a JWT or a proxy session, read as everywhere.
    let Admitted { identity, limits } = admit(ready, &request, Purpose::Call, log).await?;
    let operator = ready.ownership.is_operator(&identity);
    ready
        .config
        .policy
        .admit_endpoint(Endpoint::Chat, operator)?;
    let caller = Caller {
        identity: &identity,
        limits: &limits,
        operator,
    };
    let (mut parts, ()) = request.into_parts();
    let bytes = body
        .read(
            &parts.headers,
            ready.config.max_body_bytes,
            ready.config.body_timeout,
        )
        .await?;
    let system_prompt = ready.config.ui_chat.system_prompt.as_deref();
    let path = upstream_path(ready, "chat/completions");
    let (body, checks, plan) = if let Some((body, plan)) =
        crate::ai_sdk::plain_chat::translate(&bytes, &ready.config.openai, system_prompt)
    {
        // The common text-only chat, without a JSON tree; nothing to
        // upload, so the native path checks it as it does its own.
        drop(bytes);
        (body, BodyChecks::Pending, plan)
    } else {
        let json = parse_object(&bytes)?;
        drop(bytes);
        let (mut chat, plan) =
            crate::ai_sdk::request::translate(&json, &ready.config.openai, system_prompt)?;
        drop(json);
        let (body, checks) = prepare_chat(ready, &mut chat, caller, &path).await?;
        (body, checks, plan)
    };
    let url = ready.base.resolve(&path, None)?;
    // GigaChat gets the proxy's JSON and streams it back.
    for_gigachat(&mut parts.headers);
    let call = Call {
        endpoint: Endpoint::Chat,
        parts: &parts,
        path: &path,
        url,
        body,
        checks,
    };
    let forwarded = send_call(ready, call, caller, request_id, log).await?;
    answer(
        ready,
        forwarded,
        plan,
        request_id.to_str().unwrap_or_default(),
    )
    .await
}

/// A request body as the JSON object `DefaultChatTransport` sends.
fn parse_object(bytes: &[u8]) -> Result<Value, Error> {
    const HINT: &str = "Send the chat as one JSON object `{id, messages, ...body}`, as the AI SDK's DefaultChatTransport does (Content-Type: application/json).";
    json_object(bytes, HINT)
}

/// GigaChat's answer as the UI message stream, with the headers the native
/// route gives (limits, budget, clamp, upstream request id) kept.
async fn answer(
    ready: &Ready,
    forwarded: Forwarded,
    plan: UiPlan,
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
            upstream_error(status, bytes, request_id)
        })
        .await);
    }
    let body = if sse {
        body
    } else {
        // The translation always asks for a stream; a whole answer (from a
        // cache, or a gateway that ignores `stream`) is told as a stream
        // of one chunk, so the client reads the same protocol either way.
        let whole = whole_answer(ready, body, answer_bytes).await?;
        let events = as_stream_events(&whole).ok_or_else(|| unreadable_answer(ready))?;
        crate::body::full(events)
    };
    let usage = UsageCell::default();
    let stream =
        TranslatedStream::new(body, UiChunks::new(plan, request_id), usage.clone()).boxed();
    stream_headers(&mut parts.headers, "text/event-stream");
    parts
        .headers
        .insert(UI_STREAM, HeaderValue::from_static("v1"));
    // No `Connection: keep-alive`, which the SDK's own answer carries: an
    // HTTP/1.1 connection is kept alive without it, HTTP/2 and HTTP/3
    // forbid it (the front ends of Vercel and CloudFront speak those), and
    // whether a connection stays open is the server's call (the dispatcher
    // closes one whose request body was left unread).
    Ok(Answer {
        response: Response::from_parts(parts, stream),
        sse: true,
        guards,
        usage: Some(usage),
    })
}

/// A GigaChat error status and body as the route's error: GigaChat's own
/// message (bounded, token-like words removed), what to do, its status.
fn upstream_error(status: StatusCode, body: &[u8], request_id: &str) -> Response<ProxyBody> {
    let status = if status.is_client_error() || status.is_server_error() {
        status
    } else {
        StatusCode::BAD_GATEWAY
    };
    let message = match crate::openai::errors::upstream_message(body) {
        Some(message) => format!(
            "GigaChat refused the request (HTTP {}): {message}",
            status.as_u16()
        ),
        None => format!(
            "GigaChat answered HTTP {} with no error message",
            status.as_u16()
        ),
    };
    crate::error::ui_chat_error(
        status,
        &message,
        &crate::openai::errors::upstream_code(status),
        crate::openai::errors::hint(status),
        request_id,
    )
}

/// A whole GigaChat chat answer as the event stream it would have been
/// sent as: one chunk whose `delta` is the answer's `message` (finish
/// reason and usage kept), then `[DONE]`. `None` if it is no chat answer.
fn as_stream_events(answer: &[u8]) -> Option<Bytes> {
    let mut chunk: Value = serde_json::from_slice(answer).ok()?;
    for choice in chunk.get_mut("choices")?.as_array_mut()? {
        let choice = choice.as_object_mut()?;
        let message = choice.remove("message")?;
        choice.insert("delta".to_owned(), message);
    }
    let mut events = b"data: ".to_vec();
    serde_json::to_writer(&mut events, &chunk).ok()?;
    events.extend_from_slice(b"\n\ndata: [DONE]\n\n");
    Some(Bytes::from(events))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn paths_name_their_operation_exactly() {
        assert_eq!(Operation::of("/api/gigachat-chat"), Some(Operation::Send));
        assert_eq!(Operation::of("/api/gigachat-chat/"), Some(Operation::Send));
        assert_eq!(
            Operation::of("/api/gigachat-chat/chat_1/stream"),
            Some(Operation::Resume)
        );
        for path in [
            "/api/gigachat-chatx",
            "/api/gigachat-chat//stream",
            "/api/gigachat-chat/a/b/stream",
            "/api/gigachat-chat/chat_1",
            "/api/gigachat-chat/chat_1/stream/",
            "/api/gigachat-chat/stream",
        ] {
            assert_eq!(Operation::of(path), None, "{path}");
        }
    }

    #[test]
    fn methods_and_allow_agree_with_cors() {
        for (path, method) in [
            ("/api/gigachat-chat", "POST"),
            ("/api/gigachat-chat/c/stream", "GET"),
        ] {
            let allow = allow(path).unwrap();
            assert!(allow.starts_with(method), "{allow}");
            assert!(crate::cors::ALLOW_METHODS.contains(method));
        }
    }

    #[test]
    fn only_json_objects_are_chats() {
        assert!(parse_object(br#"{"messages":[]}"#).is_ok());
        for body in [&b"[1]"[..], b"\"text\"", b"", b"{", b"null"] {
            let err = parse_object(body).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST);
            assert_eq!(err.code(), "invalid_json");
        }
    }

    #[test]
    fn a_whole_answer_becomes_one_chunk_and_done() {
        let answer = br#"{"choices":[{"message":{"role":"assistant","content":"Hi"},"index":0,"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#;
        let events = as_stream_events(answer).unwrap();
        let text = std::str::from_utf8(&events).unwrap();
        let (chunk, rest) = text
            .strip_prefix("data: ")
            .unwrap()
            .split_once("\n\n")
            .unwrap();
        assert_eq!(rest, "data: [DONE]\n\n");
        let chunk: Value = serde_json::from_str(chunk).unwrap();
        assert_eq!(chunk["choices"][0]["delta"]["content"], "Hi");
        assert_eq!(chunk["choices"][0]["finish_reason"], "stop");
        assert!(chunk["choices"][0].get("message").is_none());
        assert_eq!(chunk["usage"]["total_tokens"], 3);
        for not_a_chat in [&b"{}"[..], b"[]", b"{\"choices\":[{}]}", b"nope"] {
            assert!(as_stream_events(not_a_chat).is_none());
        }
    }
}
