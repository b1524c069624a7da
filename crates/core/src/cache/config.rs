//! The response cache's settings, read once at start-up through the core's
//! config. Errors name the variable, never the value.

use std::time::Duration;

use crate::config::env::{self, ConfigError, Env};

pub const VAR_MODELS_TTL: &str = "GIGACHAT_PROXY_MODELS_CACHE_TTL";
pub const VAR_CHAT_TTL: &str = "GIGACHAT_PROXY_CHAT_CACHE_TTL";
pub const VAR_MAX_ENTRIES: &str = "GIGACHAT_PROXY_CACHE_MAX_ENTRIES";

/// The model list changes when Sber ships a model, not between two page
/// loads; a minute saves the call every page makes on start without
/// hiding a new model for long.
pub const DEFAULT_MODELS_TTL: Duration = Duration::from_secs(60);
/// Enough for the model list and a few hundred short chat answers per
/// instance, bounded further by [`MEMORY_BUDGET_BYTES`].
pub const DEFAULT_MAX_ENTRIES: usize = 1000;
/// Answers larger than this are passed on but not kept: a cache full of a
/// few huge answers helps nobody and costs a serverless instance its memory.
pub const MAX_ENTRY_BYTES: usize = 1024 * 1024;
/// The in-memory cache's total size, whatever the entry count: 1000 entries
/// of 1 MiB would be a gigabyte, more than many functions have.
pub const MEMORY_BUDGET_BYTES: usize = 64 * 1024 * 1024;
/// The longest TTL accepted (30 days); anything longer is a typo.
const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// What may be cached and for how long. `None` turns a kind off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// `GET models` and `GET models/{id}`; shared by every caller.
    pub models_ttl: Option<Duration>,
    /// Non-streaming chat completions, per caller identity. Off by default:
    /// a user who asks the same thing twice may want a different answer.
    pub chat_ttl: Option<Duration>,
    /// In-memory entries at most (Redis expires entries by their TTL).
    pub max_entries: usize,
    /// Larger answers are not cached.
    pub max_entry_bytes: usize,
}

impl CacheConfig {
    /// Reads the cache variables.
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let max_entries = env
            .count(VAR_MAX_ENTRIES, 1..=1_000_000)?
            .unwrap_or(DEFAULT_MAX_ENTRIES);
        Ok(Self {
            models_ttl: parse_ttl(env, VAR_MODELS_TTL, Some(DEFAULT_MODELS_TTL))?,
            chat_ttl: parse_ttl(env, VAR_CHAT_TTL, None)?,
            max_entries,
            max_entry_bytes: MAX_ENTRY_BYTES,
        })
    }

    /// Nothing cached.
    #[cfg(test)]
    pub fn disabled() -> Self {
        Self {
            models_ttl: None,
            chat_ttl: None,
            max_entries: DEFAULT_MAX_ENTRIES,
            max_entry_bytes: MAX_ENTRY_BYTES,
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.models_ttl.is_some() || self.chat_ttl.is_some()
    }
}

/// `off` (or `0`) turns it off; otherwise seconds, decimals allowed.
fn parse_ttl(
    env: &Env<'_>,
    variable: &'static str,
    default: Option<Duration>,
) -> Result<Option<Duration>, ConfigError> {
    let ttl = env.off_or(variable, default.map(Some), |value| {
        if value.parse::<f64>() == Ok(0.0) {
            return Ok(None);
        }
        let max = u32::try_from(MAX_TTL.as_secs()).unwrap_or(u32::MAX);
        env::positive_seconds(value, max)
            // Redis `PX` counts whole milliseconds.
            .map(|ttl| {
                Some(Duration::from_millis(
                    ttl.as_nanos().div_ceil(1_000_000) as u64
                ))
            })
            .map_err(|_| "must be `off` or a number of seconds up to 2592000 (30 days)".to_owned())
    })?;
    Ok(ttl.flatten())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> Result<CacheConfig, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        CacheConfig::from_env(&Env::new(&|name| map.get(name).cloned()))
    }

    #[test]
    fn defaults_cache_models_only() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.models_ttl, Some(Duration::from_secs(60)));
        assert_eq!(config.chat_ttl, None);
        assert_eq!(config.max_entries, 1000);
        assert_eq!(config.max_entry_bytes, 1024 * 1024);
        assert!(config.is_enabled());
        assert!(!CacheConfig::disabled().is_enabled());
    }

    #[test]
    fn ttls_parse_and_turn_off() {
        let config = parse(&[
            (VAR_MODELS_TTL, "OFF"),
            (VAR_CHAT_TTL, "1.5"),
            (VAR_MAX_ENTRIES, "10"),
        ])
        .unwrap();
        assert_eq!(config.models_ttl, None);
        assert_eq!(config.chat_ttl, Some(Duration::from_millis(1500)));
        assert_eq!(config.max_entries, 10);
        assert_eq!(parse(&[(VAR_MODELS_TTL, "0")]).unwrap().models_ttl, None);
    }

    #[test]
    fn errors_name_the_variable_never_the_value() {
        for (variable, value) in [
            (VAR_MODELS_TTL, "secret-value-123"),
            (VAR_CHAT_TTL, "-1"),
            (VAR_CHAT_TTL, "99999999"),
            (VAR_MAX_ENTRIES, "0"),
            (VAR_MAX_ENTRIES, "secret-value-123"),
        ] {
            let err = parse(&[(variable, value)]).unwrap_err();
            assert_eq!(err.variable, variable);
            assert!(!err.to_string().contains("secret-value-123"));
        }
    }
}
