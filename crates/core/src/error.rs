//! The one error type of the core, and the one place where an error becomes
//! an HTTP status and a JSON body.
//!
//! The body keeps GigaChat's own error shape, `{"status", "message"}`, so
//! clients written for GigaChat (the official SDKs among them) surface our
//! errors the way they surface GigaChat's, and adds `code` (stable, for
//! programs), `hint` (what to do, for people) and `request_id` (for logs).
//! No variant carries a credential, a token or a request body.

use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;

use crate::body::{ProxyBody, json_response};
use crate::config::env::ConfigError;
use crate::limits::info::{BudgetInfo, RateLimitInfo};

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("the proxy is misconfigured: {0}")]
    Config(#[from] ConfigError),

    #[error("no route for this path")]
    RouteNotFound,

    #[error("method not allowed on this route")]
    MethodNotAllowed { allowed: &'static str },

    #[error("invalid API path: {0}")]
    InvalidPath(&'static str),

    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },

    #[error("could not read the request body")]
    BodyUnreadable,

    #[error("the request body did not arrive within {seconds} s")]
    BodyTimeout { seconds: u64 },

    #[error("the proxy session token has expired")]
    SessionExpired,

    #[error("the proxy session token is invalid")]
    SessionInvalid,

    #[error("GigaChat OAuth refused the proxy's key: {reason}")]
    UpstreamAuthRejected {
        status: u16,
        code: Option<i64>,
        reason: String,
    },

    #[error("GigaChat OAuth is rate limiting the proxy")]
    UpstreamAuthRateLimited,

    #[error("GigaChat OAuth failed with HTTP {status}")]
    UpstreamAuthFailed { status: u16 },

    #[error("GigaChat OAuth answered something the proxy cannot use: {0}")]
    UpstreamAuthMalformed(&'static str),

    #[error("could not reach GigaChat ({stage}) at {host}: {cause}")]
    UpstreamUnreachable {
        stage: &'static str,
        host: String,
        cause: TransportCause,
    },

    #[error("GigaChat did not answer within {seconds} s ({stage})")]
    UpstreamTimeout { stage: &'static str, seconds: u64 },

    #[error("authentication required: {0}")]
    Unauthenticated(&'static str),

    #[error("access denied: {0}")]
    Forbidden(&'static str),

    /// The site's identity provider's key set could not be fetched, so a
    /// JWT cannot be checked either way: not the token's fault (no 401),
    /// and retried only after a cool-down.
    #[error("the signing keys of the site's identity provider (JWKS) cannot be fetched now")]
    JwksUnavailable { retry_after_secs: u64 },

    #[error("this origin is not allowed to call the proxy")]
    OriginNotAllowed,

    #[error("this server does not answer to the host name the request was sent to")]
    HostNotAllowed,

    #[error("rate limit exceeded: {} requests per {} s", .0.limit, .0.window_secs)]
    RateLimited(RateLimitInfo),

    #[error("too many concurrent streams for this user (limit {limit})")]
    TooManyStreams { limit: u64 },

    #[error(
        "token budget exhausted: {} tokens per {} for this caller; resets at {}",
        .0.limit,
        .0.window.as_str(),
        .0.reset_text()
    )]
    TokenBudgetExceeded(BudgetInfo),

    #[error(
        "GigaChat's concurrency limit for this key is in use; waited {waited_ms} ms for a free slot"
    )]
    UpstreamBusy { waited_ms: u64 },

    #[error("the rate limiter's store is unreachable and the proxy is set to fail closed")]
    LimiterUnavailable,

    /// An object id that is not the caller's (another user's, one without
    /// the proxy's tag, or none at all): the same answer for all, so the
    /// answer never tells whether someone else's object exists.
    #[error("{0} not found")]
    ObjectNotFound(&'static str),

    /// A call that belongs to no one user (the balance, listing or using
    /// objects the proxy does not yet attribute to their owner).
    #[error("this call is for the proxy's operators only")]
    OperatorOnly,

    /// With ownership on, a chat body must be JSON the proxy can read, to
    /// check every object it names.
    #[error("the request body is not a JSON object")]
    OwnershipUnreadableBody,

    /// What a public page may call (`tenancy::policy`): each refusal
    /// names the variable that would let the call through.
    #[error("{0}")]
    Policy(crate::tenancy::policy::Refusal),

    /// A request in an API dialect the proxy translates (OpenAI) that the
    /// translation cannot carry to GigaChat: a missing field, a parameter
    /// GigaChat has no equivalent for, a remote image URL.
    #[error("{message}")]
    InvalidRequest {
        message: String,
        /// The request field at fault (`messages[2].content`), when one is.
        param: Option<String>,
        /// A stable name: `invalid_request`, `unsupported_parameter`, …
        code: &'static str,
        /// What to do instead.
        hint: &'static str,
    },

    /// An attachment of a kind GigaChat does not read.
    #[error("{message}")]
    UnsupportedMedia { message: String },

    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl From<crate::tenancy::policy::Refusal> for Error {
    fn from(refusal: crate::tenancy::policy::Refusal) -> Self {
        Error::Policy(refusal)
    }
}

/// Why a connection to GigaChat failed, coarse enough to be safe to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportCause {
    Tls,
    Connect,
    Other,
}

impl std::fmt::Display for TransportCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TransportCause::Tls => "TLS certificate verification failed",
            TransportCause::Connect => "connection failed",
            TransportCause::Other => "the request failed in transit",
        })
    }
}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::Config(_) | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Error::RouteNotFound => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Error::InvalidPath(_) | Error::BodyUnreadable | Error::InvalidRequest { .. } => {
                StatusCode::BAD_REQUEST
            }
            Error::UnsupportedMedia { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Error::SessionExpired | Error::SessionInvalid => StatusCode::UNAUTHORIZED,
            Error::UpstreamAuthRejected { .. }
            | Error::UpstreamAuthFailed { .. }
            | Error::UpstreamAuthMalformed(_)
            | Error::UpstreamUnreachable { .. } => StatusCode::BAD_GATEWAY,
            Error::UpstreamAuthRateLimited => StatusCode::SERVICE_UNAVAILABLE,
            Error::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Error::Policy(refusal) => refusal.status(),
            Error::ObjectNotFound(_) => StatusCode::NOT_FOUND,
            Error::OperatorOnly => StatusCode::FORBIDDEN,
            Error::OwnershipUnreadableBody => StatusCode::BAD_REQUEST,
            Error::Forbidden(_) | Error::OriginNotAllowed | Error::HostNotAllowed => {
                StatusCode::FORBIDDEN
            }
            Error::JwksUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::RateLimited(_)
            | Error::TooManyStreams { .. }
            | Error::TokenBudgetExceeded(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::UpstreamBusy { .. } | Error::LimiterUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// Whether a limit on the caller refused the request (the access
    /// line's `rate_limit=limited`, the `ratelimited_total` metric); a busy
    /// upstream or a failed limiter store is no refusal of the caller.
    pub(crate) fn refused_by_a_limit(&self) -> bool {
        matches!(
            self,
            Error::RateLimited(_) | Error::TooManyStreams { .. } | Error::TokenBudgetExceeded(_)
        )
    }

    /// A stable machine-readable name; also the low-cardinality log label.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Config(_) => "config_invalid",
            Error::RouteNotFound => "not_found",
            Error::MethodNotAllowed { .. } => "method_not_allowed",
            Error::InvalidPath(_) => "invalid_path",
            Error::BodyTooLarge { .. } => "body_too_large",
            Error::BodyUnreadable => "body_unreadable",
            Error::BodyTimeout { .. } => "body_timeout",
            Error::SessionExpired => "session_expired",
            Error::SessionInvalid => "session_invalid",
            Error::UpstreamAuthRejected { .. } => "upstream_auth_rejected",
            Error::UpstreamAuthRateLimited => "upstream_auth_rate_limited",
            Error::UpstreamAuthFailed { .. } => "upstream_auth_failed",
            Error::UpstreamAuthMalformed(_) => "upstream_auth_malformed",
            Error::UpstreamUnreachable { .. } => "upstream_unreachable",
            Error::UpstreamTimeout { .. } => "upstream_timeout",
            Error::Internal(_) => "internal",
            Error::InvalidRequest { code, .. } => code,
            Error::UnsupportedMedia { .. } => "unsupported_media_type",
            Error::Unauthenticated(_) => "unauthenticated",
            Error::Forbidden(_) => "forbidden",
            Error::Policy(refusal) => refusal.code(),
            Error::ObjectNotFound(_) => "object_not_found",
            Error::OperatorOnly => "operator_only",
            Error::OwnershipUnreadableBody => "body_not_json",
            Error::JwksUnavailable { .. } => "jwks_unavailable",
            Error::OriginNotAllowed => "origin_not_allowed",
            Error::HostNotAllowed => "host_not_allowed",
            Error::RateLimited(_) => "rate_limited",
            Error::TooManyStreams { .. } => "too_many_streams",
            Error::TokenBudgetExceeded(_) => "token_budget_exceeded",
            Error::UpstreamBusy { .. } => "upstream_busy",
            Error::LimiterUnavailable => "limiter_unavailable",
        }
    }

    /// What the reader should do about it.
    pub fn hint(&self) -> String {
        match self {
            Error::Config(err) => format!(
                "Fix the environment variable {} of the proxy deployment and redeploy (see docs/configuration.md).",
                err.variable
            ),
            Error::RouteNotFound => "The proxy serves /api/gigachat-api/{GigaChat path}, /api/gigachat-oauth, /api/gigachat-health, /api/gigachat-budget, OpenAI's API at /api/gigachat-openai/v1/ (chat/completions, responses, embeddings, models, models/{id}; set the SDK's base URL to …/api/gigachat-openai/v1) and the AI SDK's useChat at /api/gigachat-chat (POST; GET /api/gigachat-chat/{chatId}/stream answers 204).".into(),
            Error::MethodNotAllowed { allowed } => format!("Use {allowed}."),
            Error::InvalidPath(_) => "Call /api/gigachat-api/ followed by a GigaChat API path such as chat/completions or v1/models; dot segments, empty segments, path parameters (`;`), encoded slashes and backslashes are refused.".into(),
            Error::BodyTooLarge { .. } => "Send a smaller body; the limit is GIGACHAT_PROXY_MAX_BODY_BYTES (the platform caps it too: Vercel 4.5 MB, Lambda 6 MB).".into(),
            Error::BodyUnreadable => "Retry the request; the connection broke while the body was being sent.".into(),
            Error::BodyTimeout { .. } => "Send the whole request body at once, promptly: the proxy waits GIGACHAT_PROXY_BODY_TIMEOUT seconds for it, then closes the connection. Retry on a better connection, or ask the operator to raise the limit.".into(),
            Error::SessionExpired => "Fetch a new token from /api/gigachat-oauth and retry.".into(),
            Error::SessionInvalid => "Send a token minted by this proxy's /api/gigachat-oauth, or no Authorization header.".into(),
            Error::UpstreamAuthRejected { code: Some(7), .. } => "The key's scope differs from GIGACHAT_SCOPE: set GIGACHAT_SCOPE to GIGACHAT_API_PERS, GIGACHAT_API_B2B or GIGACHAT_API_CORP as in GigaChat Studio.".into(),
            Error::UpstreamAuthRejected { code: Some(1 | 5), .. } => "Set GIGACHAT_SCOPE to GIGACHAT_API_PERS, GIGACHAT_API_B2B or GIGACHAT_API_CORP.".into(),
            Error::UpstreamAuthRejected { .. } => "Check GIGACHAT_CREDENTIALS: it must be the authorization key from GigaChat Studio (already base64 of client_id:client_secret), not the client secret and not encoded twice.".into(),
            Error::UpstreamAuthRateLimited => "GigaChat allows about 10 OAuth calls per second; retry in a few seconds.".into(),
            Error::UpstreamAuthFailed { .. } => "GigaChat's OAuth service failed; retry later.".into(),
            Error::UpstreamAuthMalformed(_) => "Check GIGACHAT_AUTH_URL points at GigaChat's OAuth endpoint (default https://ngw.devices.sberbank.ru:9443/api/v2/oauth).".into(),
            Error::UpstreamUnreachable { cause: TransportCause::Tls, .. } => "GigaChat's certificate chains to the Russian Trusted Root CA, which the proxy embeds. Behind a TLS-inspecting corporate proxy, set GIGACHAT_CA_BUNDLE_FILE to a PEM file with its CA; if GigaChat asks for a client certificate, set GIGACHAT_CERT_FILE and GIGACHAT_KEY_FILE; GIGACHAT_VERIFY_SSL_CERTS=false turns verification off (never in production). Check GIGACHAT_BASE_URL and GIGACHAT_AUTH_URL.".into(),
            Error::UpstreamUnreachable { .. } => "Check GIGACHAT_BASE_URL / GIGACHAT_AUTH_URL and the network path from this deployment to GigaChat, then retry. A corporate key may need a client certificate (GIGACHAT_CERT_FILE, GIGACHAT_KEY_FILE).".into(),
            Error::UpstreamTimeout { .. } => "Retry later, or raise GIGACHAT_TIMEOUT (seconds).".into(),
            Error::Internal(_) => "Retry; if it persists, report it with the request id.".into(),
            Error::InvalidRequest { hint, .. } => (*hint).into(),
            Error::UnsupportedMedia { .. } => "GigaChat reads images (jpeg, png, tiff, bmp), documents (txt, doc, docx, pdf, epub, ppt, pptx) and audio (mp3, mp4, m4a, wav, weba, ogg, opus); convert the file to one of those.".into(),
            Error::Unauthenticated(_) => "Send `Authorization: Bearer <API key, JWT or /api/gigachat-oauth token>` or `X-API-Key: <key>`.".into(),
            Error::Forbidden(_) => "This identity is valid but not allowed to use the proxy; ask the site's administrators for access.".into(),
            Error::JwksUnavailable { retry_after_secs } => format!("Retry in {retry_after_secs} s (Retry-After). The operator should check that GIGACHAT_PROXY_JWKS_URL is the identity provider's JWKS URL and that the provider answers it; the proxy logs why the last fetch failed."),
            Error::OriginNotAllowed => "Call the proxy from the site's own origin, or add this origin to GIGACHAT_PROXY_ALLOWED_ORIGINS.".into(),
            Error::HostNotAllowed => "A server listening on loopback answers only to localhost, 127.0.0.1, [::1] (or any IP address) and *.localhost, so a web page on a DNS name re-pointed at it (DNS rebinding) cannot use it. Open it by one of those, or add the name to GIGACHAT_PROXY_ALLOWED_HOSTS (comma-separated; `.example.com` for a domain and its subdomains).".into(),
            Error::RateLimited(info) => format!("Wait {} s (Retry-After) before the next request.", info.retry_after_secs.max(1)),
            Error::TooManyStreams { .. } => "Finish or cancel an open stream first, then retry.".into(),
            Error::TokenBudgetExceeded(info) => format!("Wait for the reset in {} s (Retry-After), or ask the operator to raise {}.", info.reset_secs.max(1), info.variable),
            Error::UpstreamBusy { .. } => "GigaChat allows only a few concurrent requests per key (1 on GIGACHAT_API_PERS); retry shortly.".into(),
            Error::LimiterUnavailable => "Retry shortly; the operator should check REDIS_URL.".into(),
            Error::Policy(refusal) => refusal.hint(),
            Error::ObjectNotFound(_) => "Use an id this proxy gave you for this identity (it ends in `~` and a tag): ids of other users' objects, and ids from before ownership was turned on, are not found.".into(),
            Error::OperatorOnly => "Only identities named in GIGACHAT_PROXY_ADMIN_KEYS (operator API keys, or `sub:<JWT subject>`), or holding a JWT whose scope includes GIGACHAT_PROXY_ADMIN_SCOPE, may make this call; an operator may also turn ownership off with GIGACHAT_PROXY_OWNERSHIP=off where every caller is trusted.".into(),
            Error::OwnershipUnreadableBody => "Send the request body as a JSON object (Content-Type: application/json).".into(),
        }
    }

    /// The single mapping from an error to what the client sees, in
    /// GigaChat's error shape.
    pub fn into_response(self, request_id: &str) -> Response<ProxyBody> {
        self.into_response_in(Dialect::GigaChat, request_id)
    }

    /// The same answer in the error shape of the API dialect the client
    /// speaks: OpenAI's clients read `error.message` and `error.type` and
    /// nothing else, GigaChat's read `status` and `message`.
    pub(crate) fn into_response_in(
        self,
        dialect: Dialect,
        request_id: &str,
    ) -> Response<ProxyBody> {
        let status = self.status();
        let mut response = match dialect {
            Dialect::UiChat => ui_chat_error(
                status,
                &self.to_string(),
                self.code(),
                &self.hint(),
                request_id,
            ),
            Dialect::GigaChat => json_response(
                status,
                &json!({
                    "status": status.as_u16(),
                    "message": self.to_string(),
                    "code": self.code(),
                    "hint": self.hint(),
                    "request_id": request_id,
                }),
            ),
            Dialect::OpenAi => json_response(
                status,
                &json!({
                    "error": {
                        "message": self.to_string(),
                        "type": openai_error_type(status),
                        "param": match &self {
                            Error::InvalidRequest { param, .. } => param.as_deref(),
                            _ => None,
                        },
                        "code": self.code(),
                        "hint": self.hint(),
                        "request_id": request_id,
                    }
                }),
            ),
        };
        match &self {
            Error::MethodNotAllowed { allowed } => {
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allowed));
            }
            Error::SessionExpired | Error::SessionInvalid => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(
                        r#"Bearer realm="gigachat-proxy", error="invalid_token""#,
                    ),
                );
            }
            Error::Unauthenticated(_) => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer realm="gigachat-proxy""#),
                );
            }
            Error::RateLimited(info) => info.apply(response.headers_mut()),
            Error::TokenBudgetExceeded(info) => info.apply_refusal(response.headers_mut()),
            Error::JwksUnavailable { retry_after_secs } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            Error::UpstreamAuthRateLimited
            | Error::TooManyStreams { .. }
            | Error::UpstreamBusy { .. }
            | Error::LimiterUnavailable => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        // The OpenAI SDKs retry 408, 409, 429 and 5xx on their own unless
        // told not to; a spent budget or a broken deployment does not heal
        // in the seconds their backoff waits.
        if dialect == Dialect::OpenAi && !self.may_heal_soon() {
            response
                .headers_mut()
                .insert(SHOULD_RETRY, HeaderValue::from_static("false"));
        }
        response
    }

    /// Whether sending the same request again shortly may succeed.
    fn may_heal_soon(&self) -> bool {
        matches!(
            self,
            Error::BodyUnreadable
                | Error::BodyTimeout { .. }
                | Error::UpstreamAuthRateLimited
                | Error::UpstreamAuthFailed { .. }
                | Error::UpstreamUnreachable { .. }
                | Error::UpstreamTimeout { .. }
                | Error::JwksUnavailable { .. }
                | Error::RateLimited(_)
                | Error::TooManyStreams { .. }
                | Error::UpstreamBusy { .. }
                | Error::LimiterUnavailable
                | Error::Internal(_)
        )
    }
}

const SHOULD_RETRY: http::HeaderName = http::HeaderName::from_static("x-should-retry");

/// The error shape a route answers in.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Dialect {
    GigaChat,
    OpenAi,
    /// The AI SDK's `useChat` (`/api/gigachat-chat`).
    UiChat,
}

/// An error as the AI SDK's `useChat` shows it: the SDK makes the whole
/// body text the error's `message`, so the body leads with one readable
/// sentence (what went wrong, then what to do) and the fields programs
/// read follow. The hint is in that sentence, not in a field of its own: a
/// second copy would double what the chat page prints.
pub(crate) fn ui_chat_error(
    status: StatusCode,
    message: &str,
    code: &str,
    hint: &str,
    request_id: &str,
) -> Response<ProxyBody> {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        message: String,
        code: &'a str,
        status: u16,
        request_id: &'a str,
    }
    let mut sentence = String::with_capacity(message.len() + hint.len() + 2);
    let mut chars = message.trim_end_matches('.').chars();
    sentence.extend(
        chars
            .next()
            .map(|first| first.to_uppercase())
            .into_iter()
            .flatten(),
    );
    sentence.push_str(chars.as_str());
    sentence.push_str(". ");
    sentence.push_str(hint);
    let body = Body {
        message: sentence,
        code,
        status: status.as_u16(),
        request_id,
    };
    // Serializing plain strings and a number cannot fail.
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let mut response = Response::new(crate::body::full(bytes));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, crate::body::JSON);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// OpenAI's `error.type` for a status, the one field its clients branch on.
pub(crate) fn openai_error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_denied_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        500..=599 => "server_error",
        _ => "invalid_request_error",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use http_body_util::BodyExt;

    async fn body_json(response: Response<ProxyBody>) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn config_errors_are_500_and_name_the_variable() {
        let err = Error::Config(ConfigError {
            variable: "GIGACHAT_CREDENTIALS",
            problem: "is not set".into(),
        });
        let response = err.into_response("req-1");
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = body_json(response).await;
        assert_eq!(body["status"], 500);
        assert_eq!(body["code"], "config_invalid");
        assert_eq!(body["request_id"], "req-1");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("GIGACHAT_CREDENTIALS")
        );
        assert!(
            body["hint"]
                .as_str()
                .unwrap()
                .contains("GIGACHAT_CREDENTIALS")
        );
    }

    #[tokio::test]
    async fn every_variant_maps_to_a_json_body_with_a_hint() {
        let errors = [
            Error::RouteNotFound,
            Error::MethodNotAllowed { allowed: "POST" },
            Error::InvalidPath("dot segment"),
            Error::BodyTooLarge { limit: 10 },
            Error::BodyUnreadable,
            Error::BodyTimeout { seconds: 60 },
            Error::SessionExpired,
            Error::SessionInvalid,
            Error::UpstreamAuthRejected {
                status: 401,
                code: Some(6),
                reason: "x".into(),
            },
            Error::UpstreamAuthRateLimited,
            Error::UpstreamAuthMalformed("no token"),
            Error::UpstreamAuthFailed { status: 500 },
            Error::UpstreamUnreachable {
                stage: "oauth",
                host: "h".into(),
                cause: TransportCause::Tls,
            },
            Error::UpstreamTimeout {
                stage: "first byte",
                seconds: 30,
            },
            Error::Internal("x"),
            Error::Unauthenticated("no credentials"),
            Error::Forbidden("missing scope"),
            Error::JwksUnavailable {
                retry_after_secs: 2,
            },
            Error::OriginNotAllowed,
            Error::HostNotAllowed,
            Error::RateLimited(RateLimitInfo {
                limit: 5,
                remaining: 0,
                reset_secs: 12,
                window_secs: 60,
                retry_after_secs: 12,
            }),
            Error::TooManyStreams { limit: 2 },
            Error::TokenBudgetExceeded(BudgetInfo {
                limit: 100,
                used: 100,
                reserved: 0,
                window: crate::limits::info::Window::Day,
                reset_at: 86_400,
                reset_secs: 3600,
                variable: "GIGACHAT_PROXY_TOKEN_BUDGET",
            }),
            Error::UpstreamBusy { waited_ms: 100 },
            Error::LimiterUnavailable,
            Error::Policy(crate::tenancy::policy::Refusal::EndpointNotAllowed {
                endpoint: "balance",
            }),
            Error::ObjectNotFound("File"),
            Error::OperatorOnly,
            Error::OwnershipUnreadableBody,
        ];
        for err in errors {
            let status = err.status();
            let code = err.code();
            let response = err.into_response("r");
            assert_eq!(response.status(), status);
            assert_eq!(
                response.headers()[header::CONTENT_TYPE],
                "application/json; charset=utf-8"
            );
            let body = body_json(response).await;
            assert_eq!(body["status"], status.as_u16());
            assert_eq!(body["code"], code);
            assert!(!body["hint"].as_str().unwrap().is_empty());
        }
    }

    #[test]
    fn rate_limited_answers_carry_retry_after_and_ratelimit_headers() {
        let info = RateLimitInfo {
            limit: 5,
            remaining: 0,
            reset_secs: 12,
            window_secs: 60,
            retry_after_secs: 12,
        };
        let response = Error::RateLimited(info).into_response("r");
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let headers = response.headers();
        assert_eq!(headers["retry-after"], "12");
        assert_eq!(headers["ratelimit-limit"], "5");
        assert_eq!(headers["ratelimit-remaining"], "0");
        assert_eq!(headers["ratelimit-reset"], "12");
        assert_eq!(headers["ratelimit-policy"], "5;w=60");
    }

    /// `useChat` shows the raw body as the error's message: it must open
    /// with the sentence a person reads, and keep the fields programs read.
    #[tokio::test]
    async fn use_chat_errors_lead_with_one_readable_sentence() {
        let response = Error::TokenBudgetExceeded(BudgetInfo {
            limit: 100,
            used: 100,
            reserved: 0,
            window: crate::limits::info::Window::Day,
            reset_at: 86_400,
            reset_secs: 3600,
            variable: "GIGACHAT_PROXY_TOKEN_BUDGET",
        })
        .into_response_in(Dialect::UiChat, "r-7");
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()["retry-after"], "3600");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(
            text.starts_with(r#"{"message":"Token budget exhausted: "#),
            "{text}"
        );
        let body: serde_json::Value = serde_json::from_str(text).unwrap();
        let message = body["message"].as_str().unwrap();
        assert!(message.contains("; resets at "), "{message}");
        assert!(
            message.ends_with("or ask the operator to raise GIGACHAT_PROXY_TOKEN_BUDGET."),
            "{message}"
        );
        assert_eq!(body["code"], "token_budget_exceeded");
        assert_eq!(body["status"], 429);
        assert_eq!(body["request_id"], "r-7");
        assert!(
            body.get("hint").is_none() && body.get("error").is_none(),
            "{body}"
        );
    }

    #[test]
    fn statuses_are_the_conventional_ones() {
        assert_eq!(
            Error::BodyTooLarge { limit: 1 }.status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(Error::SessionExpired.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            Error::UpstreamAuthRejected {
                status: 401,
                code: Some(6),
                reason: String::new()
            }
            .status(),
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(
            Error::UpstreamTimeout {
                stage: "x",
                seconds: 1
            }
            .status(),
            StatusCode::GATEWAY_TIMEOUT
        );
    }
}
