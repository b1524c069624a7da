//! A response body that rewrites GigaChat's event stream into another
//! dialect's as it arrives: every upstream chunk is scanned into events,
//! each event becomes whatever the dialect sends for it, and the output is
//! flushed at once — nothing waits for the end of the answer.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

use crate::body::{BoxError, ProxyBody};
use crate::upstream::sse::SseScanner;
use crate::usage::{UsageCell, usage_in};

/// What a dialect does with GigaChat's events.
pub(crate) trait Translate: Send + Unpin + 'static {
    /// One upstream event's `data`: a GigaChat chunk, `[DONE]`, or the
    /// proxy's own `{"error": {...}}` when the upstream broke off. Appends
    /// what the client gets to `out`; returns `false` to end the stream now
    /// (the upstream answer is dropped, which cancels it).
    fn event(&mut self, data: &str, out: &mut BytesMut) -> bool;

    /// The stream is over (after `[DONE]`, an early `false`, or an upstream
    /// that ended without one): appends what closes the client's stream.
    /// Called exactly once.
    fn finish(&mut self, out: &mut BytesMut);
}

pub(crate) struct TranslatedStream<T> {
    /// `None` once the upstream is done with (ended, failed, or dropped
    /// early to cancel it).
    inner: Option<ProxyBody>,
    scanner: SseScanner,
    translate: T,
    usage: UsageCell,
    finished: bool,
}

impl<T: Translate> TranslatedStream<T> {
    /// `usage` receives GigaChat's usage as it passes (give the same cell
    /// to the route's `Answer`).
    pub fn new(inner: ProxyBody, translate: T, usage: UsageCell) -> Self {
        Self {
            inner: Some(inner),
            scanner: SseScanner::new(),
            translate,
            usage,
            finished: false,
        }
    }

    /// Feeds one upstream chunk; false when the translator ended the stream.
    fn feed(&mut self, chunk: &[u8], out: &mut BytesMut) -> bool {
        let mut go_on = true;
        let translate = &mut self.translate;
        let usage = &self.usage;
        self.scanner.feed(chunk, |event| {
            if !go_on {
                return;
            }
            if event.data.contains("\"usage\"")
                && let Some(found) = usage_in(event.data.as_bytes())
            {
                usage.set(found);
            }
            go_on = translate.event(&event.data, out);
        });
        go_on
    }
}

impl<T: Translate> Body for TranslatedStream<T> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.finished {
                return Poll::Ready(None);
            }
            let Some(inner) = this.inner.as_mut() else {
                this.finished = true;
                let mut out = BytesMut::new();
                this.translate.finish(&mut out);
                return if out.is_empty() {
                    Poll::Ready(None)
                } else {
                    Poll::Ready(Some(Ok(Frame::data(out.freeze()))))
                };
            };
            match Pin::new(inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                    // A body error is the upstream breaking off without the
                    // error event the SSE body normally sends: the
                    // translator's `finish` reports an unfinished answer.
                    this.inner = None;
                }
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let mut out = BytesMut::with_capacity(data.len() + 128);
                    if !this.feed(&data, &mut out) {
                        this.inner = None;
                        this.translate.finish(&mut out);
                        this.finished = true;
                    }
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
