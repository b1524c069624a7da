//! SSE framing: `SseScanner` must find the same events however the stream
//! is cut into chunks (TCP delivers it cut anywhere: inside `\r\n`, inside
//! a UTF-8 character, inside `data:`), must not panic, and the proxy's own
//! mid-stream error event must read back as exactly one well-formed event.
//! `usage_in` runs on the whole input and on every event's data.
//!
//! Input: byte 0 (low 4 bits) is a number of cuts `k`; the next `2k` bytes
//! are chunk lengths (u16, little-endian); the rest is the stream.

#![no_main]

use gigachat_proxy_core::fuzzing::{SseScanner, sse_error_event, usage_in};
use libfuzzer_sys::fuzz_target;

type Event = (Option<String>, String);

fuzz_target!(|data: &[u8]| {
    let Some((&header, rest)) = data.split_first() else {
        return;
    };
    let cuts = usize::from(header & 0x0F);
    if rest.len() < 2 * cuts {
        return;
    }
    let (lengths, stream) = rest.split_at(2 * cuts);

    let _ = usage_in(stream);
    let (whole, gave_up) = scan([stream]);
    for (_, data) in &whole {
        let _ = usage_in(data.as_bytes());
    }

    let mut chunks = Vec::with_capacity(cuts + 1);
    let mut remaining = stream;
    for length in lengths.chunks_exact(2) {
        let length = usize::from(u16::from_le_bytes([length[0], length[1]])).min(remaining.len());
        let (chunk, tail) = remaining.split_at(length);
        chunks.push(chunk);
        remaining = tail;
    }
    chunks.push(remaining);
    let (chunked, chunked_gave_up) = scan(chunks.iter().copied());
    let (bytewise, bytewise_gave_up) = scan(stream.chunks(1));
    if !gave_up && !chunked_gave_up && !bytewise_gave_up {
        assert_eq!(chunked, whole, "cut into {chunks:?}");
        assert_eq!(bytewise, whole, "fed one byte at a time");
    }

    // The proxy's error event: exactly one event, JSON, fields round-trip.
    let message = String::from_utf8_lossy(stream);
    let request_id = String::from_utf8_lossy(lengths);
    let event = sse_error_event(&message, "upstream_stream_broken", &request_id);
    let (events, _) = scan([&event[..]]);
    assert_eq!(events.len(), 1, "{event:?} is not exactly one event");
    let (name, data) = &events[0];
    assert_eq!(name, &None, "{event:?} has an event name");
    let json: serde_json::Value = serde_json::from_str(data)
        .unwrap_or_else(|err| panic!("{event:?} does not carry JSON: {err}"));
    assert_eq!(json["error"]["message"].as_str(), Some(&*message));
    assert_eq!(
        json["error"]["code"].as_str(),
        Some("upstream_stream_broken")
    );
    assert_eq!(json["error"]["request_id"].as_str(), Some(&*request_id));
    assert_eq!(usage_in(data.as_bytes()), None);

    // Appended after a stream that ended on an event boundary, it is the
    // last event the client sees.
    if !gave_up && (stream.is_empty() || stream.ends_with(b"\n\n")) {
        let (after, _) = scan([stream, &event[..]]);
        assert_eq!(after.len(), whole.len() + 1);
        assert_eq!(after.last(), events.last());
    }
});

fn scan<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> (Vec<Event>, bool) {
    let mut scanner = SseScanner::new();
    let mut events = Vec::new();
    for chunk in chunks {
        scanner.feed(chunk, |event| {
            events.push((event.event.map(|e| e.into_owned()), event.data.into_owned()));
        });
    }
    (events, scanner.gave_up())
}
