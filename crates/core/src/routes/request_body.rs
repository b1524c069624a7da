//! The client's request body, held by the dispatcher while a handler runs.
//!
//! A handler may answer without reading the body (401, 405, 413, 429, or a
//! route that takes no body). On HTTP/1.1 those bytes still sit between
//! this request and the connection's next one: the server then closes the
//! connection after the answer, and a pooled client that was not told so
//! sends its next request into a closing socket (a broken pipe). So before
//! the answer goes out the dispatcher discards what is left, bounded in
//! bytes and time, and when it cannot — the body is too long, stalled or
//! broken, or the client waits for `100 Continue` before sending it — the
//! answer says `Connection: close`.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, header};
use http_body_util::BodyExt;

use crate::body::BoxError;
use crate::error::Error;

/// How long the rest of a refused body is read before giving up on the
/// connection: a client that has the body ready sends it in far less.
const DISCARD_TIME: Duration = Duration::from_secs(2);

pub(crate) struct RequestBody<'a, B> {
    body: Pin<&'a mut B>,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not read to its end, perhaps not at all.
    Pending,
    /// Read to its end: the connection can carry the next request.
    Ended,
    /// Given up on (stalled or broken): the connection must close.
    Abandoned,
}

impl<'a, B> RequestBody<'a, B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    pub(crate) fn new(body: Pin<&'a mut B>) -> Self {
        let state = if body.is_end_stream() {
            State::Ended
        } else {
            State::Pending
        };
        Self { body, state }
    }

    /// The whole body: at most `limit` bytes, arriving within `timeout`
    /// (counted from this call, so a client cannot hold the connection and
    /// the buffer by sending a byte now and then).
    pub(crate) async fn read(
        &mut self,
        headers: &HeaderMap,
        limit: usize,
        timeout: Duration,
    ) -> Result<Bytes, Error> {
        if self.state == State::Ended {
            return Ok(Bytes::new());
        }
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit as u64) {
            // Left unread: the dispatcher discards it (bounded) so the
            // client, still sending, can read the 413.
            return Err(Error::BodyTooLarge { limit });
        }
        let body = &mut self.body;
        let state = &mut self.state;
        let read = async {
            let mut first: Option<Bytes> = None;
            let mut collected = Vec::new();
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else {
                    *state = State::Abandoned;
                    return Err(Error::BodyUnreadable);
                };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                let so_far = first.as_ref().map_or(0, Bytes::len) + collected.len();
                if so_far + data.len() > limit {
                    return Err(Error::BodyTooLarge { limit });
                }
                // A body that arrives in one frame (the usual case) is kept
                // as it is, without a copy.
                match first.take() {
                    None if collected.is_empty() => first = Some(data),
                    None => collected.extend_from_slice(&data),
                    Some(head) => {
                        collected.extend_from_slice(&head);
                        collected.extend_from_slice(&data);
                    }
                }
            }
            *state = State::Ended;
            Ok(first.unwrap_or_else(|| Bytes::from(collected)))
        };
        match tokio::time::timeout(timeout, read).await {
            Ok(result) => result,
            Err(_) => {
                self.state = State::Abandoned;
                Err(Error::BodyTimeout {
                    seconds: whole_seconds_up(timeout),
                })
            }
        }
    }

    /// Before an answer: discards what the handler left unread, up to
    /// `budget` bytes and [`DISCARD_TIME`] (nothing when the client waits
    /// for `100 Continue`, see [`expects_continue`]). Returns whether the
    /// connection must close after the answer because the body did not end.
    pub(crate) async fn settle(&mut self, expects_continue: bool, budget: usize) -> bool {
        if self.state == State::Pending && !expects_continue {
            let body = &mut self.body;
            let state = &mut self.state;
            let discard = async {
                let mut discarded = 0usize;
                loop {
                    match body.frame().await {
                        None => {
                            *state = State::Ended;
                            return;
                        }
                        Some(Ok(frame)) => {
                            discarded += frame.data_ref().map_or(0, Bytes::len);
                            if discarded > budget {
                                return;
                            }
                        }
                        Some(Err(_)) => return,
                    }
                }
            };
            let _ = tokio::time::timeout(DISCARD_TIME, discard).await;
        }
        self.state != State::Ended
    }
}

/// A client that sent `Expect: 100-continue` has not sent the body yet and
/// waits to be asked; reading would ask it to send a body nobody needs.
pub(crate) fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

fn whole_seconds_up(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use http_body_util::{Full, StreamBody};

    #[tokio::test]
    async fn a_read_body_leaves_the_connection_open() {
        let mut full = Full::new(Bytes::from_static(b"{\"a\":1}"));
        let mut body = RequestBody::new(Pin::new(&mut full));
        let bytes = body
            .read(&HeaderMap::new(), 100, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(&bytes[..], b"{\"a\":1}");
        assert!(!body.settle(false, 0).await);
    }

    #[tokio::test]
    async fn an_unread_body_is_discarded_within_the_budget() {
        let mut full = Full::new(Bytes::from(vec![b'x'; 1000]));
        let mut body = RequestBody::new(Pin::new(&mut full));
        assert!(!body.settle(false, 2000).await);
        let mut full = Full::new(Bytes::from(vec![b'x'; 1000]));
        let mut body = RequestBody::new(Pin::new(&mut full));
        assert!(body.settle(false, 10).await);
        let mut full = Full::new(Bytes::from(vec![b'x'; 10]));
        let mut body = RequestBody::new(Pin::new(&mut full));
        let mut expect = HeaderMap::new();
        expect.insert(header::EXPECT, "100-Continue".parse().unwrap());
        assert!(body.settle(expects_continue(&expect), 2000).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_arriving_is_a_408_and_closes() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, BoxError>>(1);
        tx.send(Ok(http_body::Frame::data(Bytes::from_static(b"{"))))
            .await
            .unwrap();
        let mut stream = StreamBody::new(tokio_stream_from(rx));
        let mut body = RequestBody::new(Pin::new(&mut stream));
        let err = body
            .read(&HeaderMap::new(), 100, Duration::from_millis(1500))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::BodyTimeout { seconds: 2 }), "{err:?}");
        assert!(body.settle(false, 100).await);
        drop(tx);
    }

    fn tokio_stream_from<T>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}
