//! Static API keys, compared in constant time.
//!
//! Keys are kept only as SHA-256 digests and every check hashes the
//! presented value and compares it with every stored digest without an
//! early exit, so neither timing nor a memory dump gives a key away.

use sha2::{Digest, Sha256};

use super::Identity;
use crate::config::env::ConfigError;
use crate::secret::Secret;

/// Shorter keys are guessable; the variable's error says so.
const MIN_KEY_LEN: usize = 16;

pub fn parse(value: Option<&str>) -> Result<Vec<Secret<String>>, ConfigError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let mut keys = Vec::new();
    for key in value.split(',').map(str::trim).filter(|k| !k.is_empty()) {
        if key.len() < MIN_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError {
                variable: "GIGACHAT_PROXY_API_KEYS",
                problem: format!(
                    "must be a comma-separated list of keys of at least {MIN_KEY_LEN} printable characters without spaces (e.g. `openssl rand -hex 24`)"
                ),
            });
        }
        keys.push(Secret::new(key.to_owned()));
    }
    Ok(keys)
}

pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

impl ApiKeys {
    pub fn new(keys: &[Secret<String>]) -> Self {
        Self {
            digests: keys
                .iter()
                .map(|k| Sha256::digest(k.expose().as_bytes()).into())
                .collect(),
        }
    }

    pub fn identify(&self, presented: &str) -> Option<Identity> {
        if self.digests.is_empty() {
            return None;
        }
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for stored in &self.digests {
            let difference = stored
                .iter()
                .zip(digest.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if difference == 0 {
                found = Some(stored);
            }
        }
        found.map(|stored| Identity {
            // A prefix of the digest names the key in logs and limits
            // without revealing it.
            key: format!(
                "key:{}",
                stored[..6]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            ),
            anonymous: false,
            token_budget: None,
            operator: false,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn keys_identify_without_revealing_themselves() {
        let keys = parse(Some("first-key-0123456789, second-key-0123456789")).unwrap();
        let api_keys = ApiKeys::new(&keys);
        let first = api_keys.identify("first-key-0123456789").unwrap();
        let second = api_keys.identify("second-key-0123456789").unwrap();
        assert_ne!(first.key, second.key);
        assert!(first.key.starts_with("key:") && first.key.len() == 16);
        assert!(!first.key.contains("first"));
        assert!(!first.anonymous);
        assert!(api_keys.identify("first-key-012345678").is_none());
        assert!(api_keys.identify("").is_none());
    }

    #[test]
    fn short_or_spaced_keys_are_refused_without_echo() {
        for bad in ["short", "has a space in it 0123456789"] {
            let err = parse(Some(bad)).unwrap_err();
            assert_eq!(err.variable, "GIGACHAT_PROXY_API_KEYS");
            assert!(!err.problem.contains(bad));
        }
        assert!(parse(None).unwrap().is_empty());
    }
}
