//! What GigaChat billed, read from an answer or a stream chunk. A leaf (it
//! imports nothing of the crate), so the access line, the token budget and
//! the routes can all read usage without depending on one another.

use serde::Deserialize;

/// Token usage, in either of GigaChat's shapes (v1 `prompt/completion`,
/// v2 `input/output`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    #[serde(alias = "input_tokens")]
    pub prompt_tokens: u64,
    #[serde(alias = "output_tokens")]
    pub completion_tokens: u64,
}

#[derive(Deserialize)]
struct WithUsage {
    usage: Option<Usage>,
}

/// Where a body that rewrites a stream (an API dialect the proxy
/// translates) leaves the usage it read from GigaChat's chunks, for the
/// access line and the token budget: the chunks the client gets may carry
/// it in another shape, or nested, or not at all.
#[derive(Clone, Default, Debug)]
pub struct UsageCell(std::sync::Arc<std::sync::OnceLock<Usage>>);

impl UsageCell {
    /// Keeps the first usage seen; GigaChat reports it once per answer.
    pub fn set(&self, usage: Usage) {
        let _ = self.0.set(usage);
    }

    pub fn get(&self) -> Option<Usage> {
        self.0.get().copied()
    }
}

/// Reads `usage` out of a JSON document (a chat answer or one stream chunk).
pub fn usage_in(json: &[u8]) -> Option<Usage> {
    serde_json::from_slice::<WithUsage>(json).ok()?.usage
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn usage_is_read_in_both_gigachat_shapes() {
        let v1 = br#"{"choices":[],"usage":{"prompt_tokens":17,"completion_tokens":3,"total_tokens":20,"precached_prompt_tokens":2}}"#;
        assert_eq!(
            usage_in(v1),
            Some(Usage {
                prompt_tokens: 17,
                completion_tokens: 3
            })
        );
        let v2 = br#"{"finish_reason":"stop","usage":{"input_tokens":19,"input_tokens_details":{"prompt_tokens":19,"cached_tokens":0},"output_tokens":2,"total_tokens":21}}"#;
        assert_eq!(
            usage_in(v2),
            Some(Usage {
                prompt_tokens: 19,
                completion_tokens: 2
            })
        );
        assert_eq!(usage_in(b"{\"choices\":[]}"), None);
        assert_eq!(usage_in(b"not json"), None);
    }
}
