//! A streamed answer sealed event by event.

use super::*;

/// A streamed chat answer on its way to the client, with the ids it hands
/// out sealed event by event. Only the event under way is held back (an
/// id must not be cut between two frames); every complete event goes out
/// as soon as it is complete, and an event longer than
/// [`MAX_HELD_EVENT`] goes out as it is.
pub(super) struct SealedStream {
    inner: ProxyBody,
    ownership: Arc<Ownership>,
    identity: String,
    /// The bytes of the event under way.
    pending: Vec<u8>,
    ended: bool,
}

const MAX_HELD_EVENT: usize = 256 * 1024;

impl SealedStream {
    pub(super) fn new(inner: ProxyBody, ownership: Arc<Ownership>, identity: String) -> Self {
        Self {
            inner,
            ownership,
            identity,
            pending: Vec::new(),
            ended: false,
        }
    }

    /// The complete events in `pending`, sealed, and the rest kept.
    fn take_complete(&mut self) -> Option<Bytes> {
        let end = last_event_end(&self.pending)
            .or_else(|| (self.pending.len() > MAX_HELD_EVENT).then_some(self.pending.len()))?;
        let rest = self.pending.split_off(end);
        let events = std::mem::replace(&mut self.pending, rest);
        Some(self.seal(events))
    }

    fn seal(&self, events: Vec<u8>) -> Bytes {
        let mut ledger = Ledger::default();
        let sealed = self
            .ownership
            .seal_event(&self.identity, &events, &mut ledger);
        // Streamed files are listed by this instance only (no await here).
        self.ownership.remember_in_memory(&self.identity, &ledger);
        Bytes::from(sealed.unwrap_or(events))
    }
}

/// Where the last complete SSE event in `bytes` ends (after its blank
/// line), in any of the line endings SSE allows.
pub(super) fn last_event_end(bytes: &[u8]) -> Option<usize> {
    (1..bytes.len()).rev().find_map(|at| {
        let blank = match (bytes[at - 1], bytes[at]) {
            (b'\n', b'\n') | (b'\r', b'\r') => true,
            (b'\r', b'\n') => at >= 3 && bytes[at - 3..at - 1] == *b"\r\n",
            _ => false,
        };
        blank.then_some(at + 1)
    })
}

impl http_body::Body for SealedStream {
    type Data = Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        use std::task::Poll;
        loop {
            if self.ended {
                if self.pending.is_empty() {
                    return Poll::Ready(None);
                }
                let events = std::mem::take(&mut self.pending);
                return Poll::Ready(Some(Ok(http_body::Frame::data(self.seal(events)))));
            }
            match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        self.pending.extend_from_slice(&data);
                        if let Some(events) = self.take_complete() {
                            return Poll::Ready(Some(Ok(http_body::Frame::data(events))));
                        }
                    }
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Poll::Ready(Some(Err(err))) => return Poll::Ready(Some(Err(err))),
                Poll::Ready(None) => self.ended = true,
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.pending.is_empty()
    }
}
