//! The model catalogue. The emulator answers every chat model the same
//! way; the list exists so model validation and `/models` behave like the
//! real service.

use serde::Serialize;

/// `(id, type)` in the order `/models` lists them.
pub(crate) const MODELS: &[(&str, &str)] = &[
    ("GigaChat", "chat"),
    ("GigaChat-2", "chat"),
    ("GigaChat-2-Pro", "chat"),
    ("GigaChat-2-Max", "chat"),
    ("GigaChat-Pro", "chat"),
    ("GigaChat-Max", "chat"),
    ("Embeddings", "embedder"),
    ("EmbeddingsGigaR", "embedder"),
    ("GigaChat-3-Ultra", "chat"),
];

#[derive(Serialize)]
pub(crate) struct Model<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub owned_by: &'static str,
    #[serde(rename = "type")]
    pub kind: &'a str,
}

#[derive(Serialize)]
pub(crate) struct ModelList<'a> {
    pub object: &'static str,
    pub data: Vec<Model<'a>>,
}

pub(crate) fn model(id: &str) -> Option<Model<'static>> {
    MODELS
        .iter()
        .find(|(m, _)| *m == id)
        .map(|(id, kind)| Model {
            id,
            object: "model",
            owned_by: "salutedevices",
            kind,
        })
}

pub(crate) fn list() -> ModelList<'static> {
    ModelList {
        object: "list",
        data: MODELS.iter().filter_map(|(id, _)| model(id)).collect(),
    }
}

pub(crate) fn is_chat(id: &str) -> bool {
    model(id).is_some_and(|m| m.kind == "chat")
}

pub(crate) fn is_embedder(id: &str) -> bool {
    model(id).is_some_and(|m| m.kind == "embedder")
}

/// The real service answers with a version suffix (`GigaChat:2.0.28.2`);
/// clients must not compare it to the requested id verbatim.
pub(crate) fn versioned(id: &str) -> String {
    format!("{id}:emulator")
}
