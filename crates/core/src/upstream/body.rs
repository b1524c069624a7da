//! The client-bound body of a forwarded response: GigaChat's bytes, frame
//! by frame, as they arrive.
//!
//! Nothing is parsed or copied on the way; each upstream chunk becomes one
//! client frame, so an SSE event reaches the browser when GigaChat sends it.
//! What this adds is the ending: if the upstream connection breaks, stalls
//! past the idle timeout, or the whole answer outlives the total timeout
//! after an SSE stream has started, the client gets a final
//! `data: {"error": …}` event and a clean end instead of a hang or a bare
//! reset, which browsers' `fetch` readers report poorly.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use serde_json::json;
use tokio::time::{Instant, Sleep};

use crate::body::BoxError;

pub struct UpstreamBody {
    /// Chunks already read (to look at the first event) and not yet sent.
    prefix: VecDeque<Bytes>,
    inner: Incoming,
    sse: bool,
    finished: bool,
    request_id: String,
    /// The answer must be complete by then (`GIGACHAT_PROXY_TOTAL_TIMEOUT`).
    deadline: Instant,
    /// Longest silence between two chunks (`GIGACHAT_PROXY_STREAM_IDLE_TIMEOUT`).
    idle: Duration,
    /// One timer for both limits: it fires at the earlier of the deadline
    /// and the last chunk plus `idle`, and is moved on after every chunk.
    timer: Pin<Box<Sleep>>,
    overdue: bool,
}

/// The limits an answer's body is read under.
#[derive(Clone, Copy)]
pub struct BodyLimits {
    pub total: Duration,
    pub idle: Duration,
}

impl UpstreamBody {
    pub fn new(
        response: Incoming,
        sse: bool,
        request_id: String,
        prefix: Vec<Bytes>,
        limits: BodyLimits,
    ) -> Self {
        let now = Instant::now();
        let deadline = now + limits.total;
        Self {
            prefix: prefix.into(),
            inner: response,
            sse,
            finished: false,
            request_id,
            deadline,
            idle: limits.idle,
            timer: Box::pin(tokio::time::sleep_until((now + limits.idle).min(deadline))),
            overdue: false,
        }
    }

    fn fail(
        &mut self,
        message: &'static str,
        code: &'static str,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.finished = true;
        tracing::warn!(request_id = %self.request_id, code, "upstream answer ended with an error");
        if self.sse {
            // The break may have come in the middle of an event: a blank
            // line first ends it, so the error arrives as an event of its
            // own (extra blank lines between events are ignored by readers).
            let mut bytes = b"\n\n".to_vec();
            bytes.extend_from_slice(&sse_error_event(message, code, &self.request_id));
            Poll::Ready(Some(Ok(Frame::data(Bytes::from(bytes)))))
        } else {
            // Without a framing of its own, a non-SSE body can only signal
            // the failure by breaking off.
            Poll::Ready(Some(Err(message.into())))
        }
    }
}

/// The last event of a stream whose upstream broke off.
pub fn sse_error_event(message: &str, code: &str, request_id: &str) -> Bytes {
    let event = json!({
        "error": {
            "message": message,
            "code": code,
            "request_id": request_id,
        }
    });
    let mut bytes = b"data: ".to_vec();
    // A `Value` always serializes.
    bytes.extend(serde_json::to_vec(&event).unwrap_or_default());
    bytes.extend_from_slice(b"\n\n");
    Bytes::from(bytes)
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.finished {
            return Poll::Ready(None);
        }
        if let Some(chunk) = self.prefix.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if self.overdue {
            return self.fail(
                "the answer took longer than GIGACHAT_PROXY_TOTAL_TIMEOUT",
                "upstream_timeout",
            );
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let now = Instant::now();
                if now >= self.deadline {
                    // Data kept coming past the deadline: this chunk goes
                    // out, the next poll ends the answer.
                    self.overdue = true;
                } else {
                    let next = (now + self.idle).min(self.deadline);
                    self.timer.as_mut().reset(next);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(_))) => self.fail(
                "the connection to GigaChat broke in the middle of the answer",
                "upstream_stream_broken",
            ),
            Poll::Ready(None) => {
                self.finished = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                if self.timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                if Instant::now() >= self.deadline {
                    self.fail(
                        "the answer took longer than GIGACHAT_PROXY_TOTAL_TIMEOUT",
                        "upstream_timeout",
                    )
                } else {
                    self.fail(
                        "GigaChat stopped sending in the middle of the answer (GIGACHAT_PROXY_STREAM_IDLE_TIMEOUT)",
                        "upstream_timeout",
                    )
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished || (self.prefix.is_empty() && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        if self.sse || !self.prefix.is_empty() {
            SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}
