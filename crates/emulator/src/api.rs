//! The GigaChat REST API proper: bearer auth, faults, the concurrency limit,
//! routing, and the headers every API response carries.

use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Version, header};

use crate::chat::{self, ChatError, Plan};
use crate::embeddings;
use crate::files::{self, Deleted, FileList, FileObject};
use crate::models;
use crate::oauth::SCOPES;
use crate::sse::stream_body;
use crate::state::{InflightGuard, Shared, TokenInfo};
use crate::util::{
    Body, JSON_UTF8, api_error, empty, full, json, now_ms, now_secs, status_message,
};

/// Which generation of the API a path belongs to; v2 answers with a
/// different `Server` and CORS origin in the recorded traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    V1,
    V2,
}

/// An API route after the version prefix has been stripped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// Segments after `/api/v1` or `/v1`.
    V1(Vec<String>),
    V2Chat,
    /// Anything else under a v2 prefix.
    V2Other,
}

impl Route {
    pub fn flavor(&self) -> Flavor {
        match self {
            Route::V1(_) => Flavor::V1,
            Route::V2Chat | Route::V2Other => Flavor::V2,
        }
    }
}

/// Maps a request path to an API route; `None` for non-API paths.
pub(crate) fn classify(path: &str) -> Option<Route> {
    if matches!(path, "/api/v2/chat/completions" | "/v2/chat/completions") {
        return Some(Route::V2Chat);
    }
    for prefix in ["/api/v1", "/v1"] {
        if let Some(rest) = path.strip_prefix(prefix)
            && (rest.is_empty() || rest.starts_with('/'))
        {
            let segments = rest
                .split('/')
                .skip(1)
                .map(str::to_owned)
                .collect::<Vec<_>>();
            return Some(Route::V1(segments));
        }
    }
    for prefix in ["/api/v2", "/v2"] {
        if let Some(rest) = path.strip_prefix(prefix)
            && (rest.is_empty() || rest.starts_with('/'))
        {
            return Some(Route::V2Other);
        }
    }
    None
}

/// What was received; the body may have been refused for its size.
pub(crate) enum Received {
    Body(Bytes),
    TooLarge,
}

/// Adds the headers every API response carries. Client-supplied ids are
/// echoed so a proxy's request correlation can be checked end to end.
fn decorate(resp: &mut Response<Body>, req: &HeaderMap, flavor: Flavor) {
    let id = |name: &str| {
        req.get(name)
            .filter(|v| !v.is_empty())
            .cloned()
            .or_else(|| HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).ok())
    };
    let h = resp.headers_mut();
    if let Some(v) = id("x-request-id") {
        h.insert("x-request-id", v);
    }
    if let Some(v) = id("x-session-id") {
        h.insert("x-session-id", v);
    }
    let (server, origin) = match flavor {
        Flavor::V1 => ("SynGX", "https://beta.saluteai.sberdevices.ru"),
        Flavor::V2 => ("nginx", "https://gigachat.sberdevices.ru"),
    };
    h.insert(header::SERVER, HeaderValue::from_static(server));
    if flavor == Flavor::V2
        && let Ok(v) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
    {
        h.insert("x-sp-crid", v);
    }
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static(origin),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
}

pub(crate) async fn handle(
    shared: Arc<Shared>,
    parts: Parts,
    received: Received,
    route: Route,
) -> Response<Body> {
    let guard = shared.enter_api();
    let flavor = route.flavor();
    let mut resp = answer(&shared, &parts, received, route, guard).await;
    decorate(&mut resp, &parts.headers, flavor);
    resp
}

fn chat_error(e: &ChatError) -> Response<Body> {
    api_error(e.status, &e.message)
}

/// Outcome of checking the bearer token.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Auth {
    Ok(TokenInfoRef),
    Missing,
    Unknown,
    Expired,
}

/// The parts of a token the API needs after authentication.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TokenInfoRef {
    pub key: String,
    pub scope: String,
}

pub(crate) fn authenticate(shared: &Shared, headers: &HeaderMap) -> Auth {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Auth::Missing;
    };
    let Some((scheme, token)) = value.trim().split_once(' ') else {
        return Auth::Missing;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Auth::Unknown;
    }
    let Some(TokenInfo {
        key,
        scope,
        expires_at_ms,
        epoch,
    }) = shared.lookup_token(token.trim())
    else {
        return Auth::Unknown;
    };
    if expires_at_ms <= now_ms() || epoch < shared.faults.token_epoch() {
        return Auth::Expired;
    }
    Auth::Ok(TokenInfoRef { key, scope })
}

async fn answer(
    shared: &Arc<Shared>,
    parts: &Parts,
    received: Received,
    route: Route,
    mut guard: InflightGuard,
) -> Response<Body> {
    if parts.method == Method::OPTIONS {
        let mut resp = Response::new(empty());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        return resp;
    }
    let delay = shared.faults.first_byte_delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let body = match received {
        Received::Body(b) => b,
        Received::TooLarge => return api_error(StatusCode::PAYLOAD_TOO_LARGE, "Payload too large"),
    };
    if shared.faults.take_api_401() {
        return api_error(StatusCode::UNAUTHORIZED, "Token has expired");
    }
    if let Some(status) = shared.faults.take_api_status() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return api_error(status, status_message(status));
    }
    let token = match authenticate(shared, &parts.headers) {
        Auth::Ok(t) => t,
        Auth::Missing | Auth::Unknown => {
            return api_error(StatusCode::UNAUTHORIZED, "Unauthorized");
        }
        Auth::Expired => return api_error(StatusCode::UNAUTHORIZED, "Token has expired"),
    };
    if !guard.claim_key(&token.key, shared.config.concurrency_limit) {
        return api_error(StatusCode::TOO_MANY_REQUESTS, "Too many requests");
    }
    let segments: Vec<&str> = match &route {
        Route::V1(s) => s.iter().map(String::as_str).collect(),
        Route::V2Chat => {
            return if parts.method == Method::POST {
                chat(shared, parts, &body, Flavor::V2, guard)
            } else {
                method_not_allowed()
            };
        }
        Route::V2Other => return not_found(),
    };
    let m = &parts.method;
    match (segments.as_slice(), m) {
        (["chat", "completions"], &Method::POST) => chat(shared, parts, &body, Flavor::V1, guard),
        (["models"], &Method::GET) => json(StatusCode::OK, &models::list()),
        (["models", id], &Method::GET) => match models::model(id) {
            Some(model) => json(StatusCode::OK, &model),
            None => api_error(StatusCode::NOT_FOUND, "No such model"),
        },
        (["embeddings"], &Method::POST) => match embeddings::embeddings(&body) {
            Ok(list) => json(StatusCode::OK, &list),
            Err(e) => chat_error(&e),
        },
        (["tokens", "count"], &Method::POST) => match embeddings::tokens_count(&body) {
            Ok(list) => json(StatusCode::OK, &list),
            Err(e) => chat_error(&e),
        },
        (["balance"], &Method::GET) => balance(&token.scope),
        (["files"], &Method::GET) => {
            let all = files::all(shared);
            json(
                StatusCode::OK,
                &FileList {
                    data: all.iter().map(FileObject::from).collect(),
                },
            )
        }
        (["files"], &Method::POST) => {
            let ct = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            match files::upload(shared, ct, body).await {
                Ok(f) => json(StatusCode::OK, &FileObject::from(&f)),
                Err(e) => chat_error(&e),
            }
        }
        (["files", id], &Method::GET) => match files::find(shared, id) {
            Some(f) => json(StatusCode::OK, &FileObject::from(&f)),
            None => file_not_found(),
        },
        (["files", id, "content"], &Method::GET) => match files::find(shared, id) {
            Some(f) => {
                let mut resp = Response::new(full(f.content));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                resp
            }
            None => file_not_found(),
        },
        (["files", id, "delete"], &Method::POST) => {
            if files::delete(shared, id) {
                json(StatusCode::OK, &Deleted { id, deleted: true })
            } else {
                file_not_found()
            }
        }
        (["batches"], &Method::POST) => {
            match crate::batches::method_of(parts.uri.query())
                .and_then(|method| crate::batches::create(shared, method, &body))
            {
                Ok(batch) => json(StatusCode::OK, &crate::batches::CreatedBatch::from(&batch)),
                Err(e) => chat_error(&e),
            }
        }
        (["batches"], &Method::GET) => {
            match crate::batches::status(shared, crate::batches::asked_id(parts.uri.query())) {
                Some(found) => json(StatusCode::OK, &crate::batches::list(&found)),
                None => api_error(StatusCode::NOT_FOUND, "Batch task not found"),
            }
        }
        (["assistants", ..], _) => assistant_call(shared, m, &segments, parts.uri.query(), &body),
        (["threads", ..], _) => {
            crate::threads::route(shared, m, &segments, parts.uri.query(), &body, guard)
        }
        (path, _) if known_path(path) => method_not_allowed(),
        _ => not_found(),
    }
}

/// Routes `/assistants/…`; `segments` start with `assistants`.
fn assistant_call(
    shared: &Shared,
    method: &Method,
    segments: &[&str],
    query: Option<&str>,
    body: &[u8],
) -> Response<Body> {
    use crate::assistants as a;
    let outcome = match (segments, method) {
        (["assistants"], &Method::GET) => {
            let asked = query
                .unwrap_or_default()
                .split('&')
                .find_map(|pair| pair.strip_prefix("assistant_id="));
            a::list(shared, asked).map(|list| json(StatusCode::OK, &list))
        }
        (["assistants"], &Method::POST) => {
            a::create(shared, body).map(|made| json(StatusCode::OK, &a::created(&made)))
        }
        (["assistants", "modify"], &Method::POST) => {
            a::modify(shared, body).map(|changed| json(StatusCode::OK, &a::out(shared, &changed)))
        }
        (["assistants", "delete"], &Method::POST) => {
            a::delete(shared, body).map(|id| json(StatusCode::OK, &a::deleted(&id)))
        }
        (["assistants", "files", "delete"], &Method::POST) => {
            a::delete_file(shared, body).map(|id| json(StatusCode::OK, &a::file_deleted(&id)))
        }
        (
            ["assistants"]
            | ["assistants", "modify" | "delete"]
            | ["assistants", "files", "delete"],
            _,
        ) => return method_not_allowed(),
        _ => return not_found(),
    };
    outcome.unwrap_or_else(|error| chat_error(&error))
}

fn known_path(segments: &[&str]) -> bool {
    matches!(
        segments,
        ["chat", "completions"]
            | ["models"]
            | ["models", _]
            | ["embeddings"]
            | ["tokens", "count"]
            | ["balance"]
            | ["files"]
            | ["files", _]
            | ["files", _, "content" | "delete"]
            | ["batches"]
    )
}

pub(crate) fn not_found() -> Response<Body> {
    api_error(StatusCode::NOT_FOUND, "Not found")
}

pub(crate) fn method_not_allowed() -> Response<Body> {
    api_error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
}

fn file_not_found() -> Response<Body> {
    api_error(StatusCode::NOT_FOUND, "File not found")
}

#[derive(serde::Serialize)]
struct BalanceItem {
    usage: &'static str,
    value: u64,
}

#[derive(serde::Serialize)]
struct Balance {
    balance: [BalanceItem; 2],
}

/// Prepaid scopes see a balance; pay-as-you-go (CORP) has none and gets 403.
fn balance(scope: &str) -> Response<Body> {
    if scope == SCOPES[2] {
        return api_error(StatusCode::FORBIDDEN, "Permission denied");
    }
    json(
        StatusCode::OK,
        &Balance {
            balance: [
                BalanceItem {
                    usage: "GigaChat",
                    value: 900_000,
                },
                BalanceItem {
                    usage: "embeddings",
                    value: 9_999_967,
                },
            ],
        },
    )
}

fn raw_json(bytes: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(full(bytes));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_UTF8));
    resp
}

pub(crate) fn event_stream(body: Body, keep_alive: bool) -> Response<Body> {
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    if keep_alive {
        // Recorded on v2 streams. A hop-by-hop header a proxy must not
        // forward; only meaningful (and only legal) on HTTP/1.x.
        h.insert("keep-alive", HeaderValue::from_static("timeout=15"));
    }
    resp
}

const IN_200_ERROR: &[u8] = br#"{"status":429,"message":"Too many requests"}"#;

fn chat(
    shared: &Arc<Shared>,
    parts: &Parts,
    body: &[u8],
    flavor: Flavor,
    guard: InflightGuard,
) -> Response<Body> {
    if flavor == Flavor::V2 && crate::storage::names_unknown_assistant(shared, body) {
        return api_error(StatusCode::NOT_FOUND, "Assistant not found");
    }
    let planned = match flavor {
        Flavor::V1 => chat::plan_v1(body, &|id| files::attached(shared, id)),
        Flavor::V2 => chat::plan_v2(body),
    };
    let plan: Plan = match planned {
        Ok(p) => p,
        Err(e) => return chat_error(&e),
    };
    if shared.faults.take_error_in_200() {
        // The quirk: an error object where a completion should be, with
        // status 200. Streams carry it as their only `data:` event.
        return if plan.stream {
            let mut ev = b"data: ".to_vec();
            ev.extend_from_slice(IN_200_ERROR);
            ev.extend_from_slice(b"\n\n");
            event_stream(full(ev), false)
        } else {
            raw_json(IN_200_ERROR.to_vec())
        };
    }
    let created = now_secs();
    let http1 = parts.version < Version::HTTP_2;
    match (flavor, plan.stream) {
        (Flavor::V1, false) if crate::images::asked(body) => {
            raw_json(crate::images::draw(shared, created))
        }
        (Flavor::V1, false) => raw_json(chat::v1_body(&plan, created)),
        (Flavor::V2, false) => raw_json(crate::storage::with_thread(
            body,
            chat::v2_body(&plan, created),
        )),
        (Flavor::V1, true) if crate::images::asked(body) => event_stream(
            stream_body(
                Arc::clone(shared),
                crate::images::draw_events(shared, created),
                guard,
            ),
            false,
        ),
        (Flavor::V1, true) => event_stream(
            stream_body(
                Arc::clone(shared),
                chat::v1_events(&plan, created, shared.faults.function_call_chunk()),
                guard,
            ),
            false,
        ),
        (Flavor::V2, true) => event_stream(
            stream_body(Arc::clone(shared), chat::v2_events(&plan, created), guard),
            http1,
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn classify_paths() {
        assert_eq!(
            classify("/api/v1/chat/completions"),
            Some(Route::V1(vec!["chat".into(), "completions".into()]))
        );
        assert_eq!(
            classify("/v1/models"),
            Some(Route::V1(vec!["models".into()]))
        );
        assert_eq!(classify("/v2/chat/completions"), Some(Route::V2Chat));
        assert_eq!(classify("/api/v2/chat/completions"), Some(Route::V2Chat));
        assert_eq!(classify("/api/v2/models"), Some(Route::V2Other));
        assert_eq!(classify("/v1x/models"), None);
        assert_eq!(classify("/"), None);
        assert_eq!(
            classify("/api/v1/models/"),
            Some(Route::V1(vec!["models".into(), String::new()]))
        );
    }

    #[test]
    fn bearer_auth_outcomes() {
        let shared = Shared::new(crate::EmulatorConfig::default());
        let mut h = HeaderMap::new();
        assert_eq!(authenticate(&shared, &h), Auth::Missing);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer nope"),
        );
        assert_eq!(authenticate(&shared, &h), Auth::Unknown);
        shared.store_token(
            "live".into(),
            TokenInfo {
                key: "k".into(),
                scope: "GIGACHAT_API_PERS".into(),
                expires_at_ms: now_ms() + 60_000,
                epoch: 0,
            },
        );
        shared.store_token(
            "old".into(),
            TokenInfo {
                key: "k".into(),
                scope: "GIGACHAT_API_PERS".into(),
                expires_at_ms: now_ms().saturating_sub(1),
                epoch: 0,
            },
        );
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer live"),
        );
        assert!(matches!(authenticate(&shared, &h), Auth::Ok(_)));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer old"),
        );
        assert_eq!(authenticate(&shared, &h), Auth::Expired);
        shared.faults.expire_all_tokens();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer live"),
        );
        assert_eq!(authenticate(&shared, &h), Auth::Expired);
    }
}
