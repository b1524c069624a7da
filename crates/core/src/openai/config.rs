//! The OpenAI route's settings: which GigaChat model a request gets.

use crate::config::env::{ConfigError, Env};

pub const VAR_DEFAULT_MODEL: &str = "GIGACHAT_MODEL";
pub const VAR_MODEL_ALIASES: &str = "GIGACHAT_PROXY_MODEL_ALIASES";
pub const VAR_EMBEDDINGS_MODEL: &str = "GIGACHAT_PROXY_EMBEDDINGS_MODEL";

/// The chat model a request that names none gets: GigaChat's own default.
pub const DEFAULT_CHAT_MODEL: &str = "GigaChat";
/// The embeddings model a request that names none, or names one of
/// OpenAI's, gets: the one every GigaChat key may use.
pub const DEFAULT_EMBEDDINGS_MODEL: &str = "Embeddings";
/// OpenAI's embeddings models (`text-embedding-3-small`, `-ada-002`, …):
/// LangChain and the OpenAI SDKs' examples name them by default, and
/// GigaChat has none of them, so they go to the embeddings default.
const OPENAI_EMBEDDINGS_PREFIX: &str = "text-embedding-";

/// Longer than any GigaChat model id; bounds what a variable may hold.
const MAX_MODEL_NAME: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OpenAiConfig {
    /// `GIGACHAT_MODEL`, else [`DEFAULT_CHAT_MODEL`].
    pub default_model: String,
    /// `GIGACHAT_PROXY_EMBEDDINGS_MODEL`, else [`DEFAULT_EMBEDDINGS_MODEL`].
    pub embeddings_model: String,
    /// `GIGACHAT_PROXY_MODEL_ALIASES`: client name → GigaChat model, so code
    /// written for `gpt-4o` runs unchanged.
    pub aliases: Vec<(String, String)>,
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        Self {
            default_model: DEFAULT_CHAT_MODEL.to_owned(),
            embeddings_model: DEFAULT_EMBEDDINGS_MODEL.to_owned(),
            aliases: Vec::new(),
        }
    }
}

impl OpenAiConfig {
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let default_model = env
            .parse(VAR_DEFAULT_MODEL, model_name)?
            .unwrap_or_else(|| DEFAULT_CHAT_MODEL.to_owned());
        let embeddings_model = env
            .parse(VAR_EMBEDDINGS_MODEL, model_name)?
            .unwrap_or_else(|| DEFAULT_EMBEDDINGS_MODEL.to_owned());
        let aliases = env
            .parse(VAR_MODEL_ALIASES, parse_aliases)?
            .unwrap_or_default();
        Ok(Self {
            default_model,
            embeddings_model,
            aliases,
        })
    }

    /// The GigaChat model for the chat model a client named (or none).
    pub fn gigachat_model<'a>(&'a self, requested: Option<&'a str>) -> &'a str {
        match requested.filter(|m| !m.is_empty()) {
            None => &self.default_model,
            Some(name) => self.alias(name).unwrap_or(name),
        }
    }

    /// The GigaChat model for the embeddings model a client named (or
    /// none): an alias first, then OpenAI's model names to the default.
    pub fn gigachat_embeddings_model<'a>(&'a self, requested: Option<&'a str>) -> &'a str {
        match requested.filter(|m| !m.is_empty()) {
            None => &self.embeddings_model,
            Some(name) => match self.alias(name) {
                Some(model) => model,
                None if name.starts_with(OPENAI_EMBEDDINGS_PREFIX) => &self.embeddings_model,
                None => name,
            },
        }
    }

    fn alias(&self, name: &str) -> Option<&str> {
        self.aliases
            .iter()
            .find(|(alias, _)| alias == name)
            .map(|(_, model)| model.as_str())
    }
}

/// One model name: no spaces or control characters (GigaChat's ids have
/// none, and a space is more likely a paste mistake than a name).
fn model_name(value: &str) -> Result<String, String> {
    let value = value.trim();
    if value.is_empty()
        || value.len() > MAX_MODEL_NAME
        || value.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "must be a model name of at most {MAX_MODEL_NAME} characters without spaces"
        ));
    }
    Ok(value.to_owned())
}

/// `alias=Model,alias2=Model2`; an alias named twice is refused, since
/// which of its models was meant cannot be told.
fn parse_aliases(list: &str) -> Result<Vec<(String, String)>, String> {
    let mut aliases: Vec<(String, String)> = Vec::new();
    for pair in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((alias, model)) = pair.split_once('=') else {
            return Err("expected comma-separated `alias=GigaChat-model` pairs".into());
        };
        let (alias, model) = (alias.trim(), model.trim());
        if alias.is_empty() || model.is_empty() {
            return Err("an alias or a model name is empty".into());
        }
        let alias = model_name(alias).map_err(|_| "an alias has spaces or is too long")?;
        let model = model_name(model).map_err(|_| "a model name has spaces or is too long")?;
        if aliases.iter().any(|(known, _)| *known == alias) {
            return Err("names one alias twice".into());
        }
        aliases.push((alias, model));
    }
    Ok(aliases)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<OpenAiConfig, ConfigError> {
        let map: std::collections::HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        OpenAiConfig::from_env(&Env::new(&|name| map.get(name).cloned()))
    }

    #[test]
    fn defaults_are_gigachat_and_embeddings() {
        let config = config(&[]).unwrap();
        assert_eq!(config, OpenAiConfig::default());
        assert_eq!(config.gigachat_model(None), "GigaChat");
        assert_eq!(config.gigachat_model(Some("")), "GigaChat");
        assert_eq!(
            config.gigachat_model(Some("GigaChat-2-Max")),
            "GigaChat-2-Max"
        );
        assert_eq!(config.gigachat_embeddings_model(None), "Embeddings");
        assert_eq!(
            config.gigachat_embeddings_model(Some("EmbeddingsGigaR")),
            "EmbeddingsGigaR"
        );
    }

    #[test]
    fn variables_set_the_defaults_trimmed() {
        let config = config(&[
            (VAR_DEFAULT_MODEL, " GigaChat-2-Pro "),
            (VAR_EMBEDDINGS_MODEL, "EmbeddingsGigaR\n"),
        ])
        .unwrap();
        assert_eq!(config.gigachat_model(None), "GigaChat-2-Pro");
        assert_eq!(config.gigachat_embeddings_model(None), "EmbeddingsGigaR");
    }

    #[test]
    fn aliases_map_names_and_openai_embeddings_go_to_the_default() {
        let config = config(&[
            (
                VAR_MODEL_ALIASES,
                " gpt-4o = GigaChat-2-Max, gpt-4o-mini=GigaChat-2,,text-embedding-3-large=EmbeddingsGigaR",
            ),
            (VAR_EMBEDDINGS_MODEL, "Embeddings-2"),
        ])
        .unwrap();
        assert_eq!(config.gigachat_model(Some("gpt-4o")), "GigaChat-2-Max");
        assert_eq!(config.gigachat_model(Some("gpt-4o-mini")), "GigaChat-2");
        assert_eq!(config.gigachat_model(Some("gpt-4")), "gpt-4");
        // An alias wins over the `text-embedding-*` rule.
        assert_eq!(
            config.gigachat_embeddings_model(Some("text-embedding-3-large")),
            "EmbeddingsGigaR"
        );
        assert_eq!(
            config.gigachat_embeddings_model(Some("text-embedding-3-small")),
            "Embeddings-2"
        );
        assert_eq!(
            config.gigachat_embeddings_model(Some("text-embedding-ada-002")),
            "Embeddings-2"
        );
        assert_eq!(
            config.gigachat_embeddings_model(Some("GigaEmbeddings-3B-2025-09")),
            "GigaEmbeddings-3B-2025-09"
        );
        // The chat side does not rewrite OpenAI's embeddings names.
        assert_eq!(
            config.gigachat_model(Some("text-embedding-3-small")),
            "text-embedding-3-small"
        );
    }

    #[test]
    fn bad_values_name_the_variable_never_the_value() {
        let cases = [
            (VAR_MODEL_ALIASES, "secret-value-123"),
            (VAR_MODEL_ALIASES, "secret-value-123="),
            (VAR_MODEL_ALIASES, "=secret-value-123"),
            (VAR_MODEL_ALIASES, "a b=secret-value-123"),
            (VAR_MODEL_ALIASES, "a=secret-value-123,a=GigaChat"),
            (VAR_DEFAULT_MODEL, "secret value-123"),
            (VAR_EMBEDDINGS_MODEL, "secret\u{1}value-123"),
        ];
        for (variable, value) in cases {
            let err = config(&[(variable, value)]).unwrap_err();
            assert_eq!(err.variable, variable, "{value}: {err}");
            assert!(!err.to_string().contains("secret"), "{err}");
        }
        let long = "m".repeat(MAX_MODEL_NAME + 1);
        assert_eq!(
            config(&[(VAR_DEFAULT_MODEL, &long)]).unwrap_err().variable,
            VAR_DEFAULT_MODEL
        );
    }
}
