//! What the operator sees of each request: one log line, written when the
//! answer is finished (for a stream: when its last byte went out, or when
//! the client left), so it can carry what only the end knows — the token
//! usage from a stream's last chunk, whether it completed, how long it took.
//!
//! The line never contains message content, credentials, tokens or
//! cookies: identities are hashed, and nothing from bodies is logged but
//! the model name and token counts.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::Method;
use http_body::{Body, Frame, SizeHint};
use sha2::{Digest, Sha256};

use crate::body::{BoxError, ProxyBody};
use crate::cache::CacheOutcome;
use crate::endpoint::Endpoint;
use crate::limits::{Guards, RateLimitOutcome};
use crate::upstream::sse::SseScanner;
use crate::usage::{Usage, UsageCell, usage_in};

/// Keeps the identity in logs linkable across requests without recording
/// who it is (an API key id, a user id, an IP address): 12 hex digits of
/// its SHA-256.
pub fn hashed_identity(key: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(key.as_bytes());
    let mut hex = String::with_capacity(12);
    for byte in &digest[..6] {
        hex.push(char::from(HEX[usize::from(byte >> 4)]));
        hex.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    hex
}

/// The fields of one request's log line, filled in as the request goes.
pub struct RequestLog {
    pub request_id: String,
    pub route: &'static str,
    pub method: Method,
    /// The kind of GigaChat call, once the API route has classified it.
    pub endpoint: Option<Endpoint>,
    started: Instant,
    pub status: u16,
    pub identity: Option<String>,
    pub model: Option<String>,
    pub stream: bool,
    pub upstream_ms: Option<f64>,
    pub retries: u32,
    pub rate_limit: RateLimitOutcome,
    pub error_code: Option<&'static str>,
    pub usage: Option<Usage>,
    /// The proxy's own time before the response headers.
    pub overhead_ms: Option<f64>,
    /// The response cache's outcome (`hit`/`miss`/`stored`), when it was
    /// consulted.
    pub cache: Option<CacheOutcome>,
    /// Also write a CloudWatch EMF metrics line (on Lambda).
    pub emf: bool,
    first_byte_ms: Option<f64>,
    completed: bool,
}

impl RequestLog {
    pub fn new(request_id: String, route: &'static str, method: Method) -> Self {
        Self {
            request_id,
            route,
            method,
            endpoint: None,
            started: Instant::now(),
            status: 0,
            identity: None,
            model: None,
            stream: false,
            upstream_ms: None,
            retries: 0,
            rate_limit: RateLimitOutcome::Off,
            error_code: None,
            usage: None,
            overhead_ms: None,
            cache: None,
            emf: false,
            first_byte_ms: None,
            completed: false,
        }
    }

    /// Records the caller for the access line, hashed (see
    /// [`hashed_identity`]); skipped when that line is filtered out.
    pub fn set_identity(&mut self, key: &str) {
        if tracing::enabled!(target: "gigachat_proxy::access", tracing::Level::INFO) {
            self.identity = Some(hashed_identity(key));
        }
    }

    pub fn elapsed_ms(&self) -> f64 {
        self.started.elapsed().as_micros() as f64 / 1000.0
    }
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        let total_ms = self.elapsed_ms();
        let sample = crate::metrics::Sample {
            route: self.route,
            endpoint: self.endpoint,
            status: self.status,
            total_secs: total_ms / 1000.0,
            upstream_secs: self.upstream_ms.map(|ms| ms / 1000.0),
            overhead_secs: self.overhead_ms.map(|ms| ms / 1000.0),
            first_byte_secs: self.first_byte_ms.map(|ms| ms / 1000.0),
            error_code: self.error_code,
            rate_limited: self.rate_limit == RateLimitOutcome::Limited,
            cache: self.cache,
            tokens: self.usage.map(|u| crate::metrics::TokenCount {
                input: u.prompt_tokens,
                output: u.completion_tokens,
            }),
            retries: self.retries,
            disconnected_stream: self.stream && !self.completed,
        };
        crate::metrics::record(&sample);
        if self.emf {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            // stdout, one line: CloudWatch reads EMF from the function's output.
            println!("{}", crate::metrics::emf_line(&sample, now_ms));
        }
        let (prompt_tokens, completion_tokens) = self.usage.map_or((None, None), |u| {
            (Some(u.prompt_tokens), Some(u.completion_tokens))
        });
        tracing::info!(
            target: "gigachat_proxy::access",
            request_id = %self.request_id,
            route = self.route,
            endpoint = self.endpoint.map(Endpoint::as_str),
            method = %self.method,
            status = self.status,
            latency_ms = total_ms,
            upstream_ms = self.upstream_ms,
            overhead_ms = self.overhead_ms,
            first_byte_ms = self.first_byte_ms,
            stream = self.stream,
            completed = self.completed,
            model = self.model.as_deref(),
            prompt_tokens,
            completion_tokens,
            identity = self.identity.as_deref(),
            retries = self.retries,
            rate_limit = self.rate_limit.as_str(),
            cache = self.cache.map(CacheOutcome::as_str),
            error = self.error_code,
            "request"
        );
    }
}

/// How the chunk that carries the token usage is recognised.
const USAGE_FIELD: &[u8] = b"\"usage\"";

/// The response body as sent: the inner body, plus what must live exactly
/// as long as it does — the log line and the slots the limits hold for the
/// request ([`Guards`]) — and, for SSE, an inspector that picks the token
/// usage out of the chunks as they pass.
pub struct TrackedBody {
    inner: ProxyBody,
    log: RequestLog,
    sse: Option<SseScanner>,
    guards: Guards,
    /// Body bytes passed to the client, counted only while a token budget
    /// needs them (what a broken stream is charged).
    sent_bytes: Option<u64>,
    /// Where a translating body leaves GigaChat's usage (then the chunks
    /// passing here are not scanned).
    usage_cell: Option<UsageCell>,
}

impl TrackedBody {
    pub(crate) fn new(
        inner: ProxyBody,
        log: RequestLog,
        sse: bool,
        guards: Guards,
        usage_cell: Option<UsageCell>,
    ) -> Self {
        Self {
            inner,
            log,
            sse: (sse && usage_cell.is_none()).then(SseScanner::new),
            sent_bytes: guards.has_budget().then_some(0),
            guards,
            usage_cell,
        }
    }
}

impl TrackedBody {
    /// Settles the token budget with how the answer ended (once: the
    /// reservation is taken).
    fn settle_budget(&mut self) {
        if let Some(usage) = self.usage_cell.as_ref().and_then(UsageCell::get) {
            self.log.usage = Some(usage);
        }
        let finish = crate::limits::budget::Finish {
            status: self.log.status,
            usage: self.log.usage,
            sent_bytes: self.sent_bytes.unwrap_or(0),
        };
        if let Some(charged) = self.guards.settle_budget(&finish) {
            crate::metrics::record_tokens_charged(self.log.route, charged);
        }
    }
}

impl Drop for TrackedBody {
    /// Settles the token budget if `[DONE]` did not (before the fields, and
    /// so the log line, are dropped).
    fn drop(&mut self) {
        self.settle_budget();
    }
}

/// The last event of a GigaChat, OpenAI or `useChat` stream. A client
/// stops reading there and may ask for its budget at once, before the
/// upstream connection has closed and the body is dropped: the answer is
/// settled when this passes, so the budget it reads is already charged.
const STREAM_END: &[u8] = b"data: [DONE]\n\n";

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                // hyper stops polling a body that says it has ended.
                if this.inner.is_end_stream() {
                    this.log.completed = true;
                }
                if let (Some(sent), Some(data)) = (&mut this.sent_bytes, frame.data_ref()) {
                    *sent = sent.saturating_add(data.len() as u64);
                }
                if this.log.first_byte_ms.is_none() {
                    this.log.first_byte_ms = Some(this.log.elapsed_ms());
                }
                if let (Some(scanner), Some(data)) = (&mut this.sse, frame.data_ref())
                    && !scanner.can_skip(data, USAGE_FIELD)
                {
                    let usage = &mut this.log.usage;
                    scanner.feed(data, |event| {
                        // Only the chunk that carries usage is parsed.
                        if event.data.contains("\"usage\"")
                            && let Some(found) = usage_in(event.data.as_bytes())
                        {
                            *usage = Some(found);
                        }
                    });
                }
                if this.guards.has_budget()
                    && frame
                        .data_ref()
                        .is_some_and(|data| data.ends_with(STREAM_END))
                {
                    this.settle_budget();
                }
            }
            Poll::Ready(None) => this.log.completed = true,
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn identities_are_hashed() {
        let hashed = hashed_identity("ip:203.0.113.7");
        assert_eq!(hashed.len(), 12);
        assert!(hashed.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(!hashed.contains("203"));
        assert_eq!(hashed, hashed_identity("ip:203.0.113.7"));
        assert_ne!(hashed, hashed_identity("ip:203.0.113.8"));
    }
}
