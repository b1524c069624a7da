//! A small incremental Server-Sent Events reader, used only to *look at* a
//! stream as it passes (token usage for logs and metrics, an error object
//! where a chunk should be); the bytes themselves are forwarded untouched.
//!
//! It follows the SSE spec where parsers commonly go wrong: events split
//! across TCP chunks (even inside `": "` or a UTF-8 character), `\r\n` and
//! `\r` line ends, `:` comment lines, multi-line `data:`, named `event:`s.
//! Memory is bounded: an event larger than [`MAX_EVENT_BYTES`] switches
//! inspection off for the rest of the stream instead of growing a buffer.

use std::borrow::Cow;

pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// One complete event.
#[derive(Debug, PartialEq, Eq)]
pub struct SseEvent<'a> {
    pub event: Option<Cow<'a, str>>,
    pub data: Cow<'a, str>,
}

#[derive(Default)]
pub struct SseScanner {
    /// Bytes of the event in progress (only the unfinished tail is kept).
    pending: Vec<u8>,
    /// Where in `pending` a line ending was last looked for.
    scanned: usize,
    overflowed: bool,
}

impl SseScanner {
    pub fn new() -> Self {
        Self::default()
    }

    /// True once an oversized event made the scanner give up.
    pub fn gave_up(&self) -> bool {
        self.overflowed
    }

    /// True when `chunk` can be skipped by a reader that only cares about
    /// events containing `needle`: nothing is pending from earlier chunks,
    /// the chunk ends exactly at an event boundary (so it leaves nothing
    /// pending either) and `needle` is not in it. The usual stream chunk is
    /// whole events, and this spares copying it.
    pub fn can_skip(&self, chunk: &[u8], needle: &[u8]) -> bool {
        self.pending.is_empty()
            && !self.overflowed
            && (chunk.ends_with(b"\n\n") || chunk.ends_with(b"\r\n\r\n"))
            && !chunk.windows(needle.len()).any(|window| window == needle)
    }

    /// Feeds the next chunk and calls `on_event` for every event it
    /// completes.
    pub fn feed(&mut self, chunk: &[u8], mut on_event: impl FnMut(SseEvent<'_>)) {
        if self.overflowed {
            return;
        }
        if self.pending.is_empty() {
            // The usual stream chunk is whole events: they are read where
            // they lie, and only an unfinished tail is copied.
            let mut rest = chunk;
            while let Some((event_len, separator_len, one_line)) = find_event_end(rest, 0) {
                if let Some(event) = parse_event(&rest[..event_len], one_line) {
                    on_event(event);
                }
                rest = &rest[event_len + separator_len..];
            }
            if rest.is_empty() {
                return;
            }
            self.pending.extend_from_slice(rest);
            self.scanned = self.pending.len().saturating_sub(3);
            self.give_up_if_oversized();
            return;
        }
        self.pending.extend_from_slice(chunk);
        loop {
            let Some(end) = find_event_end(&self.pending, self.scanned) else {
                self.scanned = self.pending.len().saturating_sub(3);
                break;
            };
            // Resumed past `scanned`, the search may have missed a line
            // end: the event is read by the general rules.
            let (event_len, separator_len, _) = end;
            if let Some(event) = parse_event(&self.pending[..event_len], false) {
                on_event(event);
            }
            self.pending.drain(..event_len + separator_len);
            self.scanned = 0;
        }
        self.give_up_if_oversized();
    }

    fn give_up_if_oversized(&mut self) {
        if self.pending.len() > MAX_EVENT_BYTES {
            self.overflowed = true;
            self.pending = Vec::new();
        }
    }
}

/// Finds the blank line that ends an event: returns (event length,
/// separator length, whether the event is one line with no line end
/// between `from` and its end). Line ends may be `\n`, `\r\n` or `\r`.
fn find_event_end(bytes: &[u8], from: usize) -> Option<(usize, usize, bool)> {
    let mut i = from;
    let mut one_line = true;
    while i < bytes.len() {
        let (first_len, ok) = match bytes[i] {
            b'\n' => (1, true),
            b'\r' if bytes.get(i + 1) == Some(&b'\n') => (2, true),
            // A lone `\r` at the very end may be the first half of `\r\n`.
            b'\r' if i + 1 == bytes.len() => return None,
            b'\r' => (1, true),
            _ => (0, false),
        };
        if ok {
            let next = i + first_len;
            let second_len = match bytes.get(next) {
                Some(b'\n') => 1,
                Some(b'\r') if bytes.get(next + 1) == Some(&b'\n') => 2,
                Some(b'\r') if next + 1 == bytes.len() => return None,
                Some(b'\r') => 1,
                _ => 0,
            };
            if second_len > 0 {
                return Some((i, first_len + second_len, one_line));
            }
            // A single line end at position 0 (a stream starting with a
            // blank line) also ends an (empty) event.
            if i == 0 {
                return Some((0, first_len, one_line));
            }
            one_line = false;
            i = next;
        } else {
            i += 1;
        }
    }
    None
}

/// One event's fields; `one_line` when the caller knows `block` has no
/// line end.
fn parse_event(block: &[u8], one_line: bool) -> Option<SseEvent<'_>> {
    // The usual event is one `data:` line of valid UTF-8: its value is
    // borrowed as it is.
    if one_line
        && let Ok(line) = std::str::from_utf8(block)
        && let Some(value) = line.strip_prefix("data:")
    {
        return Some(SseEvent {
            event: None,
            data: Cow::Borrowed(value.strip_prefix(' ').unwrap_or(value)),
        });
    }
    let text = String::from_utf8_lossy(block);
    let mut event: Option<String> = None;
    let mut data: Option<String> = None;
    for line in text.split(['\n', '\r']) {
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => event = Some(value.to_owned()),
            "data" => match &mut data {
                Some(existing) => {
                    existing.push('\n');
                    existing.push_str(value);
                }
                None => data = Some(value.to_owned()),
            },
            _ => {}
        }
    }
    let data = data?;
    Some(SseEvent {
        event: event.map(Cow::Owned),
        data: Cow::Owned(data),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn collect(chunks: &[&[u8]]) -> Vec<(Option<String>, String)> {
        let mut scanner = SseScanner::new();
        let mut events = Vec::new();
        for chunk in chunks {
            scanner.feed(chunk, |e| {
                events.push((e.event.map(|s| s.into_owned()), e.data.into_owned()))
            });
        }
        events
    }

    const GIGACHAT_V1: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"a: b\",\"role\":\"assistant\"},\"index\":0}]}\n\ndata: {\"usage\":{\"prompt_tokens\":1}}\n\ndata: [DONE]\n\n";

    #[test]
    fn only_whole_events_without_the_needle_are_skipped() {
        let mut scanner = SseScanner::new();
        assert!(scanner.can_skip(b"data: {\"a\":1}\n\n", b"usage"));
        assert!(scanner.can_skip(b"data: 1\r\n\r\ndata: 2\r\n\r\n", b"usage"));
        assert!(!scanner.can_skip(b"data: {\"usage\":1}\n\n", b"usage"));
        // Ends inside an event: the rest comes with the next chunk.
        assert!(!scanner.can_skip(b"data: {\"a\":1}\n", b"usage"));
        scanner.feed(b"data: {\"us", |_| {});
        // Something is pending, so even a harmless-looking chunk must be fed.
        assert!(!scanner.can_skip(b"age\":1}\n\n", b"zzz"));
        let mut seen = Vec::new();
        scanner.feed(b"age\":1}\n\n", |event| seen.push(event.data.into_owned()));
        assert_eq!(seen, ["{\"usage\":1}"]);
    }

    #[test]
    fn whole_stream_in_one_chunk() {
        let events = collect(&[GIGACHAT_V1.as_bytes()]);
        assert_eq!(events.len(), 3);
        assert_eq!(events[2].1, "[DONE]");
        assert!(events[0].1.contains("\"a: b\""));
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let bytes = GIGACHAT_V1.as_bytes();
        let whole = collect(&[bytes]);
        for split in 0..bytes.len() {
            assert_eq!(
                collect(&[&bytes[..split], &bytes[split..]]),
                whole,
                "split at {split}"
            );
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(collect(&singles), whole);
    }

    #[test]
    fn named_events_comments_crlf_and_multiline_data() {
        let text = ": keep-alive\r\n\r\nevent: response.message.delta\r\ndata: {\"x\":1}\r\n\r\ndata: line one\ndata: line two\n\nevent: response.message.done\rdata: {}\r\r: a trailing comment\n\n";
        let events = collect(&[text.as_bytes()]);
        assert_eq!(
            events,
            vec![
                (Some("response.message.delta".into()), "{\"x\":1}".into()),
                (None, "line one\nline two".into()),
                (Some("response.message.done".into()), "{}".into()),
            ]
        );
    }

    /// One-line `data:` events are read by a shortcut; it must give what
    /// the general rules give for the same event among others.
    #[test]
    fn one_line_data_events_read_as_the_general_rules_read_them() {
        for (event, data) in [
            ("data: x", "x"),
            ("data:x", "x"),
            ("data:  two spaces", " two spaces"),
            ("data:", ""),
            ("data: ", ""),
            ("data: a: b", "a: b"),
        ] {
            let alone = format!("{event}\n\n");
            // After a comment line the event is read by the general rules.
            let general = format!(": c\n{event}\n\n");
            assert_eq!(
                collect(&[alone.as_bytes()]),
                [(None, data.to_owned())],
                "{event:?}"
            );
            assert_eq!(
                collect(&[general.as_bytes()]),
                [(None, data.to_owned())],
                "{event:?}"
            );
        }
        // Not data, or more than one line: the general rules decide.
        assert_eq!(collect(&[b"dat: x\n\n"]), []);
        assert_eq!(
            collect(&[b"data: a\rdata: b\n\n"]),
            [(None, "a\nb".to_owned())]
        );
    }

    #[test]
    fn a_multibyte_character_split_across_chunks_survives() {
        let text = "data: Привет\n\n".as_bytes();
        let events = collect(&[&text[..8], &text[8..]]);
        assert_eq!(events, vec![(None, "Привет".into())]);
    }

    #[test]
    fn oversized_events_switch_inspection_off() {
        let mut scanner = SseScanner::new();
        let big = vec![b'x'; MAX_EVENT_BYTES + 10];
        let mut count = 0;
        scanner.feed(b"data: ", |_| count += 1);
        scanner.feed(&big, |_| count += 1);
        scanner.feed(b"\n\ndata: after\n\n", |_| count += 1);
        assert!(scanner.gave_up());
        assert_eq!(count, 0);
    }
}
