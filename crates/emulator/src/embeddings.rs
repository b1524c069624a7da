//! `POST /embeddings` and `POST /tokens/count`.

use http::StatusCode;
use serde::Serialize;
use serde_json::Value;

use crate::chat::{ChatError, INVALID_JSON};
use crate::models;
use crate::util::{char_count, count_tokens};

/// Dimension of the `Embeddings` model's vectors.
pub(crate) const DIMENSIONS: usize = 1024;

#[derive(Serialize)]
pub(crate) struct EmbeddingUsage {
    pub prompt_tokens: u64,
}

/// Field order as recorded: `object`, `index`, `embedding`, `usage`.
#[derive(Serialize)]
pub(crate) struct Embedding {
    pub object: &'static str,
    pub index: usize,
    pub embedding: Vec<f32>,
    pub usage: EmbeddingUsage,
}

#[derive(Serialize)]
pub(crate) struct EmbeddingList {
    pub object: &'static str,
    pub model: String,
    pub data: Vec<Embedding>,
}

#[derive(Serialize)]
pub(crate) struct TokenCount {
    pub object: &'static str,
    pub tokens: u64,
    pub characters: u64,
}

fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A unit vector that depends only on the text: equal texts embed equally,
/// so tests can compare vectors across calls and runs.
pub(crate) fn embed(text: &str) -> Vec<f32> {
    let mut state = fnv1a(text);
    let mut v: Vec<f64> = (0..DIMENSIONS)
        .map(|_| {
            // Knuth's MMIX LCG; the top 53 bits give a uniform [0,1).
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v.into_iter().map(|x| x as f32).collect()
}

fn invalid(detail: &str) -> ChatError {
    ChatError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        message: format!("Invalid params: {detail}"),
    }
}

/// Parses `{"model", "input": string | [string]}` shared by both endpoints.
fn parse(body: &[u8], embedder: bool) -> Result<(String, Vec<String>), ChatError> {
    let value: Value = serde_json::from_slice(body).map_err(|_| ChatError {
        status: StatusCode::BAD_REQUEST,
        message: INVALID_JSON.to_owned(),
    })?;
    let model = match value.get("model") {
        Some(Value::String(m)) => m.clone(),
        None | Some(Value::Null) => return Err(invalid("model is required")),
        Some(_) => return Err(invalid("model must be a string")),
    };
    let known = if embedder {
        models::is_embedder(&model)
    } else {
        models::model(&model).is_some()
    };
    if !known {
        return Err(ChatError {
            status: StatusCode::NOT_FOUND,
            message: "No such model".to_owned(),
        });
    }
    let input = match value.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid("input must contain only strings"))?,
        Some(Value::Array(_)) => return Err(invalid("input must not be empty")),
        None | Some(Value::Null) => return Err(invalid("input is required")),
        Some(_) => return Err(invalid("input must be a string or an array of strings")),
    };
    Ok((model, input))
}

pub(crate) fn embeddings(body: &[u8]) -> Result<EmbeddingList, ChatError> {
    let (model, input) = parse(body, true)?;
    let data = input
        .iter()
        .enumerate()
        .map(|(index, text)| Embedding {
            object: "embedding",
            index,
            embedding: embed(text),
            usage: EmbeddingUsage {
                prompt_tokens: count_tokens(text),
            },
        })
        .collect();
    Ok(EmbeddingList {
        object: "list",
        model,
        data,
    })
}

pub(crate) fn tokens_count(body: &[u8]) -> Result<Vec<TokenCount>, ChatError> {
    let (_, input) = parse(body, false)?;
    Ok(input
        .iter()
        .map(|text| TokenCount {
            object: "tokens",
            // An empty string costs nothing; only usage has a floor of one.
            tokens: if text.is_empty() {
                0
            } else {
                count_tokens(text)
            },
            characters: char_count(text),
        })
        .collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let a = embed("hello");
        assert_eq!(a.len(), DIMENSIONS);
        assert_eq!(a, embed("hello"));
        assert_ne!(a, embed("hello!"));
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3);
        // Pin the generator so an accidental change shows up here.
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn embeddings_shape_and_errors() {
        let list = embeddings(br#"{"model":"Embeddings","input":["a","bcdef"]}"#).unwrap();
        assert_eq!(list.data.len(), 2);
        assert_eq!(list.data[1].index, 1);
        assert_eq!(list.data[1].usage.prompt_tokens, 2);
        assert_eq!(
            embeddings(br#"{"model":"GigaChat","input":"a"}"#)
                .err()
                .unwrap()
                .status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            embeddings(b"{").err().unwrap().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            embeddings(br#"{"model":"Embeddings"}"#)
                .err()
                .unwrap()
                .status,
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }

    #[test]
    fn tokens_count_is_bare_array() {
        let out =
            tokens_count(r#"{"model":"GigaChat","input":["First text","", "привет"]}"#.as_bytes())
                .unwrap();
        let json = serde_json::to_string(&out).unwrap();
        assert_eq!(
            json,
            r#"[{"object":"tokens","tokens":3,"characters":10},{"object":"tokens","tokens":0,"characters":0},{"object":"tokens","tokens":2,"characters":6}]"#
        );
    }
}
