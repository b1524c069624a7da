//! SSE on the wire: the framing of one event (`data:` lines for v1, named
//! events for v2), the cuts of the split-writes fault, and the streaming
//! bodies that send the events.
//!
//! Streaming bodies: events are produced lazily by the body itself (no
//! producer task, no buffering): each event is its own body frame, the chunk
//! delay sits between frames, and dropping the body mid-way is how a client
//! disconnect becomes visible (`streams_cancelled`).

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use crate::state::{Counters, InflightGuard, Shared};
use crate::util::Body;

/// Pause between the pieces of a split event. A body that is immediately
/// ready again lets hyper coalesce frames into one write; a short pending
/// period forces a flush so the pieces really travel separately.
const SPLIT_GAP: Duration = Duration::from_millis(2);

/// Pause before the reset fault fires, for the same reason: without it hyper
/// may still hold the headers and the last events in its write buffer when
/// the connection is torn down, and the client would see no response at all
/// instead of a stream cut mid-way.
const ABORT_GAP: Duration = Duration::from_millis(20);

struct Step {
    delay: Duration,
    bytes: Bytes,
}

struct StreamState {
    steps: VecDeque<Step>,
    /// The reset fault: after the last step, fail the body so hyper aborts
    /// the connection without a terminating chunk.
    abort: bool,
    finished: bool,
    aborted: bool,
    /// How long the stream stays open after its last event (a fault).
    end_delay: Duration,
    shared: Arc<Shared>,
    _guard: InflightGuard,
}

impl Drop for StreamState {
    fn drop(&mut self) {
        if !self.finished && !self.aborted {
            Counters::bump(&self.shared.counters.streams_cancelled);
        }
    }
}

/// Lays out the frames and delays for one stream, applying the stream
/// faults as they are at this moment.
fn plan_steps(
    events: Vec<Bytes>,
    delay: Duration,
    split: bool,
    reset_after: Option<u64>,
) -> (VecDeque<Step>, bool) {
    let total = events.len();
    let keep = reset_after.map_or(total, |n| {
        usize::try_from(n).unwrap_or(usize::MAX).min(total)
    });
    let abort = keep < total;
    let mut steps = VecDeque::new();
    for (i, event) in events.into_iter().take(keep).enumerate() {
        let event_delay = if i == 0 { Duration::ZERO } else { delay };
        if split {
            for (j, piece) in split_event(&event).into_iter().enumerate() {
                steps.push_back(Step {
                    delay: if j == 0 { event_delay } else { SPLIT_GAP },
                    bytes: piece,
                });
            }
        } else {
            steps.push_back(Step {
                delay: event_delay,
                bytes: event,
            });
        }
    }
    (steps, abort)
}

pub(crate) fn stream_body(shared: Arc<Shared>, events: Vec<Bytes>, guard: InflightGuard) -> Body {
    let faults = &shared.faults;
    let (steps, abort) = plan_steps(
        events,
        faults.chunk_delay(shared.config.chunk_delay),
        faults.split_writes(),
        faults.reset_after(),
    );
    Counters::bump(&shared.counters.streams_started);
    let state = StreamState {
        steps,
        abort,
        finished: false,
        aborted: false,
        end_delay: faults.stream_end_delay(),
        shared,
        _guard: guard,
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        if let Some(step) = st.steps.pop_front() {
            if !step.delay.is_zero() {
                tokio::time::sleep(step.delay).await;
            }
            if st.steps.is_empty() && !st.abort {
                st.finished = true;
                Counters::bump(&st.shared.counters.streams_completed);
            }
            return Some((Ok(Frame::data(step.bytes)), st));
        }
        if st.abort && !st.aborted {
            st.aborted = true;
            tokio::time::sleep(ABORT_GAP).await;
            let err = io::Error::new(
                io::ErrorKind::ConnectionReset,
                "emulator fault: reset_stream_after_chunks",
            );
            return Some((Err(err), st));
        }
        if !st.end_delay.is_zero() {
            tokio::time::sleep(std::mem::take(&mut st.end_delay)).await;
        }
        None
    });
    StreamBody::new(stream).boxed_unsync()
}

// ---- SSE framing: how an event's bytes are laid out and cut. ----

/// A v1 event: one `data:` line and the blank line that ends it.
pub(crate) fn data_event(json: &[u8]) -> Bytes {
    let mut ev = Vec::with_capacity(json.len() + 8);
    ev.extend_from_slice(b"data: ");
    ev.extend_from_slice(json);
    ev.extend_from_slice(b"\n\n");
    Bytes::from(ev)
}

/// A v2 event: `event: {name}` before the `data:` line.
pub(crate) fn named_event(name: &str, json: &[u8]) -> Bytes {
    let mut ev = Vec::with_capacity(json.len() + name.len() + 16);
    ev.extend_from_slice(b"event: ");
    ev.extend_from_slice(name.as_bytes());
    ev.extend_from_slice(b"\ndata: ");
    ev.extend_from_slice(json);
    ev.extend_from_slice(b"\n\n");
    Bytes::from(ev)
}

/// Where the split-writes fault cuts an event: right after the field name's
/// colon (so `": "` is split), inside every `": "` of the payload, in the
/// middle of the JSON, and between the two closing newlines. Byte offsets,
/// so a cut may land inside a multi-byte UTF-8 character, as TCP can.
fn split_points(event: &[u8]) -> Vec<usize> {
    let mut cuts = Vec::new();
    for (i, w) in event.windows(2).enumerate() {
        if w == b": " {
            cuts.push(i + 1);
        }
    }
    cuts.push(event.len() / 2);
    cuts.push(event.len().saturating_sub(1));
    cuts.retain(|&c| c > 0 && c < event.len());
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

fn split_event(event: &Bytes) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut start = 0;
    for cut in split_points(event) {
        out.push(event.slice(start..cut));
        start = cut;
    }
    out.push(event.slice(start..));
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn events() -> Vec<Bytes> {
        vec![
            Bytes::from_static(b"data: {\"a\":\"x: y\"}\n\n"),
            Bytes::from_static(b"data: {}\n\n"),
            Bytes::from_static(b"data: [DONE]\n\n"),
        ]
    }

    #[test]
    fn delays_sit_between_events_only() {
        let d = Duration::from_millis(50);
        let (steps, abort) = plan_steps(events(), d, false, None);
        assert!(!abort);
        let delays: Vec<_> = steps.iter().map(|s| s.delay).collect();
        assert_eq!(delays, [Duration::ZERO, d, d]);
    }

    #[test]
    fn reset_truncates_and_aborts() {
        let (steps, abort) = plan_steps(events(), Duration::ZERO, false, Some(1));
        assert!(abort);
        assert_eq!(steps.len(), 1);
        // Asking to reset after more events than exist is a normal stream.
        let (steps, abort) = plan_steps(events(), Duration::ZERO, false, Some(3));
        assert!(!abort);
        assert_eq!(steps.len(), 3);
    }

    #[test]
    fn split_keeps_bytes_and_order() {
        let (steps, _) = plan_steps(events(), Duration::ZERO, true, None);
        assert!(steps.len() >= 3 * 2);
        let joined: Vec<u8> = steps.iter().flat_map(|s| s.bytes.to_vec()).collect();
        let expected: Vec<u8> = events().iter().flat_map(|b| b.to_vec()).collect();
        assert_eq!(joined, expected);
    }

    #[test]
    fn split_cuts_inside_colon_space() {
        let ev = Bytes::from_static(b"data: {\"content\":\"a: b\"}\n\n");
        let parts = split_event(&ev);
        assert!(parts.len() >= 3);
        assert_eq!(parts.concat(), ev.to_vec());
        assert_eq!(&parts[0][..], b"data:");
        assert!(parts.iter().any(|p| p.starts_with(b" b")));
        assert_eq!(&parts.last().unwrap()[..], b"\n");
    }
}
