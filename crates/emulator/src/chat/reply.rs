//! The deterministic reply: an echo of the last user message, cut to
//! `max_tokens`, and split into the pieces a stream hands out.

use super::Reply;
use crate::util::count_tokens;

/// Cuts the reply to `max_tokens` (4 characters per token, as counted).
pub(super) fn finish_text(text: String, max_tokens: Option<u64>) -> (Reply, &'static str, u64) {
    let tokens = count_tokens(&text);
    match max_tokens {
        Some(limit) if limit < tokens => {
            let keep = usize::try_from(limit.saturating_mul(4)).unwrap_or(usize::MAX);
            let cut: String = text.chars().take(keep).collect();
            (Reply::Text(cut), "length", limit)
        }
        _ => (Reply::Text(text), "stop", tokens),
    }
}

pub(super) fn echo(last_user: &str) -> String {
    format!("Echo: {last_user}")
}

/// Splits a reply into word-sized pieces, each keeping its trailing
/// whitespace, the way the real stream hands out a few tokens per event.
pub(super) fn pieces(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut prev_ws = false;
    for (i, c) in text.char_indices() {
        let ws = c.is_whitespace();
        if prev_ws && !ws {
            out.push(&text[start..i]);
            start = i;
        }
        prev_ws = ws;
    }
    if start < text.len() || out.is_empty() {
        out.push(&text[start..]);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn pieces_keep_trailing_whitespace() {
        assert_eq!(pieces("Echo: hello world"), ["Echo: ", "hello ", "world"]);
        assert_eq!(pieces("a  b\nc "), ["a  ", "b\n", "c "]);
        assert_eq!(pieces(""), [""]);
        assert_eq!(pieces("Echo: ").concat(), "Echo: ");
    }
}
