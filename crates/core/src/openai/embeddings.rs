//! `POST embeddings`: OpenAI's request to GigaChat's, GigaChat's answer to
//! OpenAI's.
//!
//! The two differ in three places: OpenAI accepts token ids (GigaChat only
//! text), reports usage once for the request (GigaChat per item), and may
//! ask for the vectors as base64 of float32 little-endian (both OpenAI SDKs
//! do by default; the npm SDK 6.x cannot read anything else).
//!
//! Answers are large (a thousand or more numbers per input, up to 2048
//! inputs), so the answer is read item by item into one output buffer,
//! never into a tree of JSON values.

use std::io::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::OpenAiConfig;
use crate::error::Error;

/// OpenAI's limit on the inputs of one request, which GigaChat's clients
/// (gpt2giga) keep too.
pub(crate) const MAX_INPUTS: usize = 2048;

/// What the answer's translation needs to know about the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EmbeddingsPlan {
    /// The model as the client named it (or the default), echoed back.
    pub model: String,
    /// `encoding_format: "base64"`.
    pub base64: bool,
}

/// GigaChat's request body.
#[derive(Serialize)]
struct GigaChatRequest<'a> {
    model: &'a str,
    input: Vec<&'a str>,
}

/// An OpenAI embeddings request → GigaChat's body, and the plan for its
/// answer. `dimensions` and `user` are dropped: GigaChat's vectors have
/// one size per model and it has no per-user field.
pub(crate) fn translate_request(
    request: &Value,
    config: &OpenAiConfig,
) -> Result<(Vec<u8>, EmbeddingsPlan), Error> {
    let Some(request) = request.as_object() else {
        return Err(invalid(
            "the request body must be a JSON object",
            None,
            "invalid_request",
            "Send {\"model\": \"…\", \"input\": \"text\" or [\"text\", …]}.",
        ));
    };
    let requested = match request.get("model") {
        None | Some(Value::Null) => None,
        Some(Value::String(model)) => Some(model.as_str()),
        Some(_) => {
            return Err(invalid(
                "`model` must be a string",
                Some("model"),
                "invalid_model",
                "Name a GigaChat embeddings model such as Embeddings, or leave `model` out for the proxy's default.",
            ));
        }
    };
    let model = config.gigachat_embeddings_model(requested);
    let base64 = match request.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(format)) if format == "float" => false,
        Some(Value::String(format)) if format == "base64" => true,
        Some(_) => {
            return Err(invalid(
                "`encoding_format` must be \"float\" or \"base64\"",
                Some("encoding_format"),
                "invalid_encoding_format",
                "Send encoding_format \"float\" or \"base64\", or leave it out.",
            ));
        }
    };
    let input = inputs(request.get("input"))?;
    let body = serde_json::to_vec(&GigaChatRequest { model, input })
        .map_err(|_| Error::Internal("could not write the embeddings request"))?;
    let plan = EmbeddingsPlan {
        model: requested
            .filter(|m| !m.is_empty())
            .unwrap_or(model)
            .to_owned(),
        base64,
    };
    Ok((body, plan))
}

/// `input` as texts: a string or an array of strings, each non-empty.
fn inputs(input: Option<&Value>) -> Result<Vec<&str>, Error> {
    let items = match input {
        Some(Value::String(text)) => {
            if text.is_empty() {
                return Err(empty_input("input"));
            }
            return Ok(vec![text.as_str()]);
        }
        Some(Value::Array(items)) => items,
        None | Some(Value::Null) => {
            return Err(invalid(
                "`input` is required",
                Some("input"),
                "missing_input",
                "Send `input` as a string or an array of strings.",
            ));
        }
        Some(_) => return Err(not_text("input")),
    };
    if items.is_empty() {
        return Err(invalid(
            "`input` must not be an empty array",
            Some("input"),
            "empty_input",
            "Send at least one text to embed.",
        ));
    }
    if items.len() > MAX_INPUTS {
        return Err(invalid(
            format!(
                "`input` has {} items; at most {MAX_INPUTS} are allowed",
                items.len()
            ),
            Some("input"),
            "too_many_inputs",
            "Split the texts into requests of at most 2048 items.",
        ));
    }
    // Token ids (`[1, 2]` or `[[1, 2], [3]]`) are what LangChain's
    // OpenAIEmbeddings sends by default; GigaChat reads only text.
    if items.iter().any(|item| item.is_number() || item.is_array()) {
        return Err(invalid(
            "`input` holds token ids; GigaChat embeds text only. With LangChain's OpenAIEmbeddings, set check_embedding_ctx_length=False so it sends the texts.",
            Some("input"),
            "token_ids_unsupported",
            "Send the texts themselves. With LangChain's OpenAIEmbeddings, set check_embedding_ctx_length=False so it sends text instead of tiktoken token ids.",
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(index, item)| match item {
            Value::String(text) if text.is_empty() => Err(empty_input(&format!("input[{index}]"))),
            Value::String(text) => Ok(text.as_str()),
            _ => Err(not_text(&format!("input[{index}]"))),
        })
        .collect()
}

fn empty_input(param: &str) -> Error {
    invalid(
        format!("`{param}` is an empty string"),
        Some(param),
        "empty_input",
        "Leave out empty texts: an embedding of nothing means nothing.",
    )
}

fn not_text(param: &str) -> Error {
    invalid(
        format!("`{param}` must be a string or an array of strings"),
        Some(param),
        "invalid_input",
        "Send `input` as a string or an array of strings.",
    )
}

fn invalid(
    message: impl Into<String>,
    param: Option<&str>,
    code: &'static str,
    hint: &'static str,
) -> Error {
    Error::InvalidRequest {
        message: message.into(),
        param: param.map(str::to_owned),
        code,
        hint,
    }
}

/// GigaChat's answer
/// (`{"object":"list","model","data":[{"object","embedding","index","usage":{"prompt_tokens"}}]}`)
/// → OpenAI's (`{"object":"list","data":[{"object","index","embedding"}],"model","usage"}`),
/// the vectors as numbers or, when the plan says so, base64 of float32
/// little-endian; usage is the sum of the items' usage.
pub(crate) fn translate_answer(gigachat: &[u8], plan: &EmbeddingsPlan) -> Result<Vec<u8>, Error> {
    // Base64 of float32 takes ~5.3 bytes a number where GigaChat's text
    // takes ~20; numbers are written back about as long as they came.
    let capacity = if plan.base64 {
        gigachat.len() / 3 + 256
    } else {
        gigachat.len() + 256
    };
    let mut out = Vec::with_capacity(capacity);
    out.extend_from_slice(br#"{"object":"list","data":["#);
    let prompt_tokens = if plan.base64 {
        write_items::<PackedF32>(gigachat, &mut out)?
    } else {
        write_items::<NumberList>(gigachat, &mut out)?
    };
    out.extend_from_slice(br#"],"model":"#);
    serde_json::to_writer(&mut out, &plan.model).map_err(|_| unreadable())?;
    write!(
        out,
        r#","usage":{{"prompt_tokens":{prompt_tokens},"total_tokens":{prompt_tokens}}}}}"#
    )
    .map_err(|_| unreadable())?;
    Ok(out)
}

#[derive(Deserialize)]
#[serde(bound = "E: Deserialize<'de>")]
struct Answer<E> {
    data: Vec<Item<E>>,
}

#[derive(Deserialize)]
#[serde(bound = "E: Deserialize<'de>")]
struct Item<E> {
    embedding: E,
    index: Option<u64>,
    usage: Option<ItemUsage>,
}

#[derive(Deserialize)]
struct ItemUsage {
    #[serde(default)]
    prompt_tokens: u64,
}

/// A vector in its OpenAI encoding, written into the answer as is.
trait Encoded {
    fn write(&self, out: &mut Vec<u8>);
}

/// Writes the items of `data` and returns their summed prompt tokens.
fn write_items<E>(gigachat: &[u8], out: &mut Vec<u8>) -> Result<u64, Error>
where
    E: Encoded + for<'de> Deserialize<'de>,
{
    let answer: Answer<E> = serde_json::from_slice(gigachat).map_err(|_| unreadable())?;
    let mut prompt_tokens = 0u64;
    for (position, item) in answer.data.iter().enumerate() {
        if position > 0 {
            out.push(b',');
        }
        let index = item.index.unwrap_or(position as u64);
        write!(
            out,
            r#"{{"object":"embedding","index":{index},"embedding":"#
        )
        .map_err(|_| unreadable())?;
        item.embedding.write(out);
        out.push(b'}');
        if let Some(usage) = &item.usage {
            prompt_tokens = prompt_tokens.saturating_add(usage.prompt_tokens);
        }
    }
    Ok(prompt_tokens)
}

fn unreadable() -> Error {
    Error::Internal("GigaChat's embeddings answer is not in the expected shape")
}

/// A vector as JSON number text (`[0.1,-0.2]`), read straight into its
/// text: no list of floats in between. Each number is written in the
/// shortest form that reads back to the same double, so no precision is
/// lost on the way.
struct NumberList(Vec<u8>);

impl Encoded for NumberList {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
}

impl<'de> Deserialize<'de> for NumberList {
    fn deserialize<D: Deserializer<'de>>(json: D) -> Result<Self, D::Error> {
        struct Numbers;
        impl<'de> Visitor<'de> for Numbers {
            type Value = NumberList;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of numbers")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NumberList, A::Error> {
                let mut text = Vec::with_capacity(seq.size_hint().unwrap_or(1024) * 12 + 2);
                text.push(b'[');
                let mut first = true;
                while let Some(number) = seq.next_element::<f64>()? {
                    if !first {
                        text.push(b',');
                    }
                    first = false;
                    serde_json::to_writer(&mut text, &number).map_err(serde::de::Error::custom)?;
                }
                text.push(b']');
                Ok(NumberList(text))
            }
        }
        json.deserialize_seq(Numbers)
    }
}

/// A vector as base64 of its float32 values, little-endian (what the
/// OpenAI SDKs decode with a `Float32Array` / `numpy.frombuffer`).
struct PackedF32(Vec<u8>);

impl Encoded for PackedF32 {
    fn write(&self, out: &mut Vec<u8>) {
        out.push(b'"');
        let start = out.len();
        out.resize(
            start + base64::encoded_len(self.0.len(), true).unwrap_or(0),
            0,
        );
        let written = BASE64.encode_slice(&self.0, &mut out[start..]).unwrap_or(0);
        out.truncate(start + written);
        out.push(b'"');
    }
}

impl<'de> Deserialize<'de> for PackedF32 {
    fn deserialize<D: Deserializer<'de>>(json: D) -> Result<Self, D::Error> {
        struct Floats;
        impl<'de> Visitor<'de> for Floats {
            type Value = PackedF32;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of numbers")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PackedF32, A::Error> {
                let mut packed = Vec::with_capacity(seq.size_hint().unwrap_or(1024) * 4);
                while let Some(number) = seq.next_element::<f64>()? {
                    packed.extend_from_slice(&(number as f32).to_le_bytes());
                }
                Ok(PackedF32(packed))
            }
        }
        json.deserialize_seq(Floats)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    fn translate(request: Value) -> Result<(Value, EmbeddingsPlan), Error> {
        translate_request(&request, &OpenAiConfig::default())
            .map(|(body, plan)| (serde_json::from_slice(&body).unwrap(), plan))
    }

    fn refusal(request: Value) -> (String, Option<String>, &'static str, &'static str) {
        match translate(request).unwrap_err() {
            Error::InvalidRequest {
                message,
                param,
                code,
                hint,
            } => (message, param, code, hint),
            other => panic!("expected InvalidRequest, got {other:?}"),
        }
    }

    #[test]
    fn a_string_or_strings_become_gigachat_input() {
        let (body, plan) = translate(json!({"model": "Embeddings", "input": "привет"})).unwrap();
        assert_eq!(body, json!({"model": "Embeddings", "input": ["привет"]}));
        assert_eq!(
            plan,
            EmbeddingsPlan {
                model: "Embeddings".into(),
                base64: false
            }
        );
        let (body, plan) = translate(json!({
            "model": "text-embedding-3-small",
            "input": ["a", "b"],
            "encoding_format": "base64",
            "dimensions": 256,
            "user": "u1",
        }))
        .unwrap();
        // OpenAI's model names go to the embeddings default; `dimensions`
        // and `user` are not sent; the client's name is echoed.
        assert_eq!(body, json!({"model": "Embeddings", "input": ["a", "b"]}));
        assert_eq!(plan.model, "text-embedding-3-small");
        assert!(plan.base64);
        let (body, plan) = translate(json!({"input": "x", "encoding_format": "float"})).unwrap();
        assert_eq!(body["model"], "Embeddings");
        assert_eq!(plan.model, "Embeddings");
        assert!(!plan.base64);
    }

    #[test]
    fn token_ids_are_refused_naming_the_langchain_switch() {
        for input in [json!([1, 2, 3]), json!([[1, 2], [3]]), json!(["text", [1]])] {
            let (message, param, code, hint) = refusal(json!({"model": "m", "input": input}));
            assert_eq!(code, "token_ids_unsupported");
            assert_eq!(param.as_deref(), Some("input"));
            assert!(message.contains("token ids"), "{message}");
            // The SDKs show the message, not the hint.
            assert!(
                message.contains("check_embedding_ctx_length=False"),
                "{message}"
            );
            assert!(hint.contains("check_embedding_ctx_length=False"), "{hint}");
        }
        // The 400 reaches the client with the switch in its OpenAI body.
        let err = translate(json!({"input": [[1]]})).unwrap_err();
        assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
        assert!(err.hint().contains("check_embedding_ctx_length=False"));
    }

    #[test]
    fn empty_missing_oversized_and_odd_inputs_are_refused_with_their_param() {
        let cases = [
            (json!({"input": ""}), "input", "empty_input"),
            (json!({"input": []}), "input", "empty_input"),
            (json!({"input": ["a", ""]}), "input[1]", "empty_input"),
            (json!({}), "input", "missing_input"),
            (json!({"input": null}), "input", "missing_input"),
            (json!({"input": {"text": "a"}}), "input", "invalid_input"),
            (json!({"input": ["a", null]}), "input[1]", "invalid_input"),
            (json!({"input": ["a", true]}), "input[1]", "invalid_input"),
            (
                json!({"input": vec!["a"; MAX_INPUTS + 1]}),
                "input",
                "too_many_inputs",
            ),
            (json!({"input": "a", "model": 5}), "model", "invalid_model"),
            (
                json!({"input": "a", "encoding_format": "float16"}),
                "encoding_format",
                "invalid_encoding_format",
            ),
            (
                json!({"input": "a", "encoding_format": 1}),
                "encoding_format",
                "invalid_encoding_format",
            ),
        ];
        for (request, expected_param, expected_code) in cases {
            let (_, param, code, _) = refusal(request.clone());
            assert_eq!(param.as_deref(), Some(expected_param), "{request}");
            assert_eq!(code, expected_code, "{request}");
        }
        assert!(translate(json!({"input": vec!["a"; MAX_INPUTS]})).is_ok());
        assert!(matches!(
            translate(json!(["a"])).unwrap_err(),
            Error::InvalidRequest { param: None, .. }
        ));
    }

    const ANSWER: &str = r#"{"object":"list","model":"Embeddings","data":[
        {"object":"embedding","embedding":[0.5,-1.25,3],"index":0,"usage":{"prompt_tokens":3}},
        {"usage":{"prompt_tokens":4},"index":1,"embedding":[1e-3, 0.1],"object":"embedding"}]}"#;

    #[test]
    fn answers_carry_float_vectors_the_echoed_model_and_summed_usage() {
        let plan = EmbeddingsPlan {
            model: "text-embedding-3-small".into(),
            base64: false,
        };
        let out: Value =
            serde_json::from_slice(&translate_answer(ANSWER.as_bytes(), &plan).unwrap()).unwrap();
        assert_eq!(
            out,
            json!({
                "object": "list",
                "data": [
                    {"object": "embedding", "index": 0, "embedding": [0.5, -1.25, 3.0]},
                    {"object": "embedding", "index": 1, "embedding": [0.001, 0.1]},
                ],
                "model": "text-embedding-3-small",
                "usage": {"prompt_tokens": 7, "total_tokens": 7},
            })
        );
    }

    #[test]
    fn base64_answers_are_float32_little_endian() {
        let plan = EmbeddingsPlan {
            model: "Embeddings".into(),
            base64: true,
        };
        let out: Value =
            serde_json::from_slice(&translate_answer(ANSWER.as_bytes(), &plan).unwrap()).unwrap();
        let decode = |index: usize| -> Vec<f32> {
            let text = out["data"][index]["embedding"].as_str().unwrap();
            BASE64
                .decode(text)
                .unwrap()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect()
        };
        assert_eq!(decode(0), vec![0.5f32, -1.25, 3.0]);
        assert_eq!(decode(1), vec![0.001f32, 0.1]);
        // 0.5f32 little-endian is 00 00 00 3f.
        assert!(
            out["data"][0]["embedding"]
                .as_str()
                .unwrap()
                .starts_with("AAAAP")
        );
        assert_eq!(out["usage"], json!({"prompt_tokens": 7, "total_tokens": 7}));
        assert_eq!(out["model"], "Embeddings");
    }

    #[test]
    fn a_large_answer_round_trips_and_odd_answers_are_errors() {
        let vector: Vec<f64> = (0..1024).map(|i| (i as f64 - 512.0) / 777.0).collect();
        let answer = json!({"object": "list", "data": [
            {"embedding": vector, "index": 0, "usage": {"prompt_tokens": 2}}
        ]});
        let plan = EmbeddingsPlan {
            model: "m".into(),
            base64: false,
        };
        let bytes = serde_json::to_vec(&answer).unwrap();
        let out: Value = serde_json::from_slice(&translate_answer(&bytes, &plan).unwrap()).unwrap();
        let numbers = out["data"][0]["embedding"].as_array().unwrap();
        assert_eq!(numbers.len(), vector.len());
        for (got, sent) in numbers.iter().zip(&vector) {
            // serde_json's default float parsing may be off by an ulp; the
            // numbers are written in their shortest exact form.
            let got = got.as_f64().unwrap();
            assert!((got - sent).abs() <= 1e-15, "{got} != {sent}");
        }
        for odd in [
            &br#"{"data":[{"embedding":"x"}]}"#[..],
            br#"{"data":[{"embedding":[1,"2"]}]}"#,
            br#"{"data":{}}"#,
            br#"{"status":500,"message":"oops"}"#,
            b"not json",
        ] {
            assert!(
                translate_answer(odd, &plan).is_err(),
                "{}",
                String::from_utf8_lossy(odd)
            );
        }
        // No items, no usage: an empty list with zero usage.
        let out: Value =
            serde_json::from_slice(&translate_answer(br#"{"data":[]}"#, &plan).unwrap()).unwrap();
        assert_eq!(out["data"], json!([]));
        assert_eq!(out["usage"]["total_tokens"], 0);
    }
}
