//! The client-bound body of a forwarded response: GigaChat's bytes, frame
//! by frame, as they arrive.
//!
//! Nothing is parsed or copied on the way; each upstream chunk becomes one
//! client frame, so an SSE event reaches the browser when GigaChat sends it.
//! What this adds is the ending: if the upstream connection breaks after an
//! SSE stream has started, the client gets a final `data: {"error": …}`
//! event and a clean end instead of a hang or a bare reset, which browsers'
//! `EventSource`/`fetch` readers report poorly.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use serde_json::json;

use crate::body::BoxError;

pub struct UpstreamBody {
    inner: reqwest::Body,
    sse: bool,
    finished: bool,
    request_id: String,
}

impl UpstreamBody {
    pub fn new(response: reqwest::Response, sse: bool, request_id: String) -> Self {
        Self {
            inner: reqwest::Body::from(response),
            sse,
            finished: false,
            request_id,
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
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(Some(Err(err))) => {
                self.finished = true;
                let (message, code) = if err.is_timeout() {
                    (
                        "GigaChat stopped sending in the middle of the answer (idle timeout)",
                        "upstream_timeout",
                    )
                } else {
                    (
                        "the connection to GigaChat broke in the middle of the answer",
                        "upstream_stream_broken",
                    )
                };
                tracing::warn!(request_id = %self.request_id, code, "upstream stream ended with an error");
                if self.sse {
                    Poll::Ready(Some(Ok(Frame::data(sse_error_event(
                        message,
                        code,
                        &self.request_id,
                    )))))
                } else {
                    // Without a framing of its own, a non-SSE body can only
                    // signal the failure by breaking off.
                    Poll::Ready(Some(Err(message.into())))
                }
            }
            Poll::Ready(None) => {
                self.finished = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.sse {
            SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}
