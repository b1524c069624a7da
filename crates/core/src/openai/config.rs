//! The OpenAI route's settings: which GigaChat model a request gets.

use crate::config::env::{ConfigError, Env};

pub const VAR_DEFAULT_MODEL: &str = "GIGACHAT_MODEL";
pub const VAR_MODEL_ALIASES: &str = "GIGACHAT_PROXY_MODEL_ALIASES";

/// The chat model a request that names none gets: GigaChat's own default.
pub const DEFAULT_CHAT_MODEL: &str = "GigaChat";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct OpenAiConfig {
    /// `GIGACHAT_MODEL`, else [`DEFAULT_CHAT_MODEL`].
    pub default_model: String,
    /// `GIGACHAT_PROXY_MODEL_ALIASES`: client name → GigaChat model, so code
    /// written for `gpt-4o` runs unchanged.
    pub aliases: Vec<(String, String)>,
}

impl OpenAiConfig {
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let default_model = env
            .get(VAR_DEFAULT_MODEL)
            .unwrap_or_else(|| DEFAULT_CHAT_MODEL.to_owned());
        let aliases = match env.get(VAR_MODEL_ALIASES) {
            None => Vec::new(),
            Some(list) => parse_aliases(&list)
                .map_err(|problem| ConfigError::new(VAR_MODEL_ALIASES, problem))?,
        };
        Ok(Self {
            default_model,
            aliases,
        })
    }

    /// The GigaChat model for the model a client named (or none).
    pub fn gigachat_model<'a>(&'a self, requested: Option<&'a str>) -> &'a str {
        match requested.filter(|m| !m.is_empty()) {
            None => &self.default_model,
            Some(name) => self
                .aliases
                .iter()
                .find(|(alias, _)| alias == name)
                .map_or(name, |(_, model)| model.as_str()),
        }
    }
}

/// `alias=Model,alias2=Model2`.
fn parse_aliases(list: &str) -> Result<Vec<(String, String)>, String> {
    let mut aliases = Vec::new();
    for pair in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((alias, model)) = pair.split_once('=') else {
            return Err("expected comma-separated `alias=GigaChat-model` pairs".into());
        };
        let (alias, model) = (alias.trim(), model.trim());
        if alias.is_empty() || model.is_empty() {
            return Err("an alias or a model name is empty".into());
        }
        aliases.push((alias.to_owned(), model.to_owned()));
    }
    Ok(aliases)
}
