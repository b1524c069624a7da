//! `GET models` and `GET models/{id}`: GigaChat's model objects in OpenAI's
//! shape.
//!
//! GigaChat's list is already OpenAI's shape but for `created`, which
//! OpenAI's types require and GigaChat does not give. GigaChat's `type`
//! (`chat`, `embedder`, …) is kept: OpenAI clients ignore fields they do
//! not know, and UIs that pick a model can tell chat models from embedders
//! by it.
//!
//! The aliases of `GIGACHAT_PROXY_MODEL_ALIASES` are listed too, each as
//! the model it names, so UIs that offer the listed models offer the names
//! their users' code uses; an alias whose model GigaChat does not list is
//! left out, since calling it would fail.

use serde::{Deserialize, Serialize};

use super::config::OpenAiConfig;
use crate::error::Error;

/// `created` of every model. GigaChat tells no date; a constant keeps the
/// answer the same on every instance and cacheable, and 0 reads as
/// "unknown" rather than as a made-up date.
pub(crate) const CREATED: u64 = 0;

/// Who owns a model GigaChat does not say: GigaChat's own word for itself.
const DEFAULT_OWNER: &str = "salutedevices";

#[derive(Deserialize)]
struct GigaChatList<'a> {
    #[serde(borrow)]
    data: Vec<GigaChatModel<'a>>,
}

#[derive(Deserialize)]
struct GigaChatModel<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    owned_by: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default, rename = "type")]
    kind: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Serialize)]
struct OpenAiList<'a> {
    object: &'static str,
    data: Vec<OpenAiModel<'a>>,
}

#[derive(Serialize)]
struct OpenAiModel<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'a str,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'a str>,
}

impl<'a> GigaChatModel<'a> {
    /// This model in OpenAI's shape, under the name `id`.
    fn as_openai(&'a self, id: &'a str) -> OpenAiModel<'a> {
        OpenAiModel {
            id,
            object: "model",
            created: CREATED,
            owned_by: self.owned_by.as_deref().unwrap_or(DEFAULT_OWNER),
            kind: self.kind.as_deref(),
        }
    }
}

/// GigaChat's `GET models` answer → OpenAI's list, aliases included.
pub(crate) fn list(gigachat: &[u8], config: &OpenAiConfig) -> Result<Vec<u8>, Error> {
    let list: GigaChatList<'_> = serde_json::from_slice(gigachat).map_err(|_| unreadable())?;
    let mut data: Vec<OpenAiModel<'_>> = list
        .data
        .iter()
        .map(|model| model.as_openai(&model.id))
        .collect();
    for (alias, target) in &config.aliases {
        let shadowed = list.data.iter().any(|model| model.id == alias.as_str());
        if let Some(model) = list
            .data
            .iter()
            .find(|model| model.id == target.as_str())
            .filter(|_| !shadowed)
        {
            data.push(model.as_openai(alias));
        }
    }
    serde_json::to_vec(&OpenAiList {
        object: "list",
        data,
    })
    .map_err(|_| unreadable())
}

/// GigaChat's `GET models/{id}` answer → OpenAI's model object, named as
/// the client asked (`requested`, which may be an alias of the model
/// GigaChat was asked for).
pub(crate) fn model(gigachat: &[u8], requested: &str) -> Result<Vec<u8>, Error> {
    let model: GigaChatModel<'_> = serde_json::from_slice(gigachat).map_err(|_| unreadable())?;
    serde_json::to_vec(&model.as_openai(requested)).map_err(|_| unreadable())
}

fn unreadable() -> Error {
    Error::Internal("GigaChat's model list is not in the expected shape")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::{Value, json};

    const LIST: &str = r#"{"object":"list","data":[
        {"id":"GigaChat","object":"model","owned_by":"salutedevices","type":"chat"},
        {"id":"GigaChat-2-Max","object":"model","owned_by":"salutedevices","type":"chat"},
        {"id":"Embeddings","object":"model","type":"embedder"}]}"#;

    fn aliases(pairs: &[(&str, &str)]) -> OpenAiConfig {
        OpenAiConfig {
            aliases: pairs
                .iter()
                .map(|(a, m)| (a.to_string(), m.to_string()))
                .collect(),
            ..OpenAiConfig::default()
        }
    }

    #[test]
    fn the_list_gets_openai_fields_and_keeps_the_type() {
        let out: Value =
            serde_json::from_slice(&list(LIST.as_bytes(), &OpenAiConfig::default()).unwrap())
                .unwrap();
        assert_eq!(
            out,
            json!({"object": "list", "data": [
                {"id": "GigaChat", "object": "model", "created": 0, "owned_by": "salutedevices", "type": "chat"},
                {"id": "GigaChat-2-Max", "object": "model", "created": 0, "owned_by": "salutedevices", "type": "chat"},
                {"id": "Embeddings", "object": "model", "created": 0, "owned_by": "salutedevices", "type": "embedder"},
            ]})
        );
    }

    #[test]
    fn aliases_of_listed_models_are_listed_as_their_model() {
        let config = aliases(&[
            ("gpt-4o", "GigaChat-2-Max"),
            ("gpt-5", "GigaChat-9"),
            ("GigaChat", "GigaChat-2-Max"),
            ("text-embedding-3-small", "Embeddings"),
        ]);
        let out: Value = serde_json::from_slice(&list(LIST.as_bytes(), &config).unwrap()).unwrap();
        let ids: Vec<&str> = out["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        // An alias of an unlisted model is left out; one that shadows a
        // listed id is not listed twice.
        assert_eq!(
            ids,
            [
                "GigaChat",
                "GigaChat-2-Max",
                "Embeddings",
                "gpt-4o",
                "text-embedding-3-small"
            ]
        );
        assert_eq!(out["data"][3]["type"], "chat");
        assert_eq!(out["data"][4]["type"], "embedder");
    }

    #[test]
    fn one_model_is_named_as_asked() {
        let gigachat =
            br#"{"id":"GigaChat-2-Max","object":"model","owned_by":"salutedevices","type":"chat"}"#;
        let out: Value = serde_json::from_slice(&model(gigachat, "gpt-4o").unwrap()).unwrap();
        assert_eq!(
            out,
            json!({"id": "gpt-4o", "object": "model", "created": 0, "owned_by": "salutedevices", "type": "chat"})
        );
        assert!(model(b"[]", "x").is_err());
        assert!(
            list(
                br#"{"data":[{"object":"model"}]}"#,
                &OpenAiConfig::default()
            )
            .is_err()
        );
        assert!(list(b"{", &OpenAiConfig::default()).is_err());
    }
}
