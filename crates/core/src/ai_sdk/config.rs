//! The `useChat` route's settings: the deployment's own system prompt.

use crate::config::env::{ConfigError, Env};

pub const VAR_SYSTEM_PROMPT: &str = "GIGACHAT_PROXY_CHAT_SYSTEM_PROMPT";

/// Far more than a system prompt needs; a longer value is more likely a
/// file pasted into the wrong variable, and every chat would pay for it in
/// tokens (and in `GIGACHAT_PROXY_MAX_INPUT_CHARS`).
const MAX_SYSTEM_PROMPT_CHARS: usize = 16_384;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct UiChatConfig {
    /// `GIGACHAT_PROXY_CHAT_SYSTEM_PROMPT`: put first in every conversation
    /// of the `useChat` route, whatever the client sends, so a public page
    /// cannot talk the deployment out of its instructions by replacing them.
    pub system_prompt: Option<String>,
}

impl UiChatConfig {
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            system_prompt: env.parse(VAR_SYSTEM_PROMPT, system_prompt)?,
        })
    }
}

/// Multi-line text (platforms' settings pages keep line breaks); other
/// control characters are a paste mistake GigaChat would choke on.
fn system_prompt(value: &str) -> Result<String, String> {
    if value.chars().count() > MAX_SYSTEM_PROMPT_CHARS {
        return Err(format!(
            "is longer than {MAX_SYSTEM_PROMPT_CHARS} characters: shorten the system prompt"
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(
            "contains control characters other than line breaks and tabs: paste it as plain text"
                .into(),
        );
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn read(value: Option<&str>) -> Result<UiChatConfig, ConfigError> {
        let lookup = |name: &str| {
            (name == VAR_SYSTEM_PROMPT)
                .then(|| value.map(str::to_owned))
                .flatten()
        };
        UiChatConfig::from_env(&Env::new(&lookup))
    }

    #[test]
    fn unset_or_blank_means_no_prompt() {
        assert_eq!(read(None).unwrap().system_prompt, None);
        assert_eq!(read(Some("  \n ")).unwrap().system_prompt, None);
    }

    #[test]
    fn a_multi_line_prompt_is_kept_trimmed() {
        let config = read(Some(
            "  You are the shop's assistant.\nAnswer in Russian.\n",
        ))
        .unwrap();
        assert_eq!(
            config.system_prompt.as_deref(),
            Some("You are the shop's assistant.\nAnswer in Russian.")
        );
    }

    #[test]
    fn refusals_name_the_variable_and_never_the_value() {
        let long = format!("secret-value {}", "x".repeat(MAX_SYSTEM_PROMPT_CHARS));
        for bad in [long.as_str(), "secret-value \u{0} here"] {
            let err = read(Some(bad)).unwrap_err();
            assert_eq!(err.variable, VAR_SYSTEM_PROMPT);
            assert!(!err.to_string().contains("secret-value"), "{err}");
        }
        let at_limit = "я".repeat(MAX_SYSTEM_PROMPT_CHARS);
        assert!(read(Some(&at_limit)).is_ok(), "the limit counts characters");
    }
}
