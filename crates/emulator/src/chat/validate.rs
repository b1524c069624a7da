//! The request checks v1 and v2 share, and the refusals they answer with
//! (GigaChat's statuses and `Invalid params: …` messages).

use http::StatusCode;
use serde_json::{Map, Value};

use super::{ChatError, INVALID_JSON};
use crate::models;

fn bad_json() -> ChatError {
    ChatError {
        status: StatusCode::BAD_REQUEST,
        message: INVALID_JSON.to_owned(),
    }
}

pub(super) fn invalid(detail: impl std::fmt::Display) -> ChatError {
    ChatError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        message: format!("Invalid params: {detail}"),
    }
}

fn no_such_model() -> ChatError {
    ChatError {
        status: StatusCode::NOT_FOUND,
        message: "No such model".to_owned(),
    }
}

/// Samplers share their ranges between v1 (top level) and v2 (`model_options`).
pub(super) fn check_sampling(obj: &Map<String, Value>) -> Result<(), ChatError> {
    let number = |name: &str| -> Result<Option<f64>, ChatError> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| invalid(format!("{name} must be a number"))),
        }
    };
    if let Some(t) = number("temperature")?
        && t <= 0.0
    {
        return Err(invalid("temperature must be in range (0, +inf)"));
    }
    if let Some(p) = number("top_p")?
        && !(0.0..=1.0).contains(&p)
    {
        return Err(invalid("top_p must be in range [0, 1]"));
    }
    if let Some(r) = number("repetition_penalty")?
        && r <= 0.0
    {
        return Err(invalid("repetition_penalty must be in range (0, +inf)"));
    }
    if let Some(u) = number("update_interval")?
        && u < 0.0
    {
        return Err(invalid("update_interval must be in range [0, +inf)"));
    }
    Ok(())
}

pub(super) fn max_tokens(obj: &Map<String, Value>) -> Result<Option<u64>, ChatError> {
    match obj.get("max_tokens") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => Ok(Some(n)),
            _ => Err(invalid("max_tokens must be a positive integer")),
        },
    }
}

pub(super) fn stream_flag(obj: &Map<String, Value>) -> Result<bool, ChatError> {
    match obj.get("stream") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(invalid("stream must be a boolean")),
    }
}

pub(super) fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ChatError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(obj)) => Ok(obj),
        Ok(_) => Err(invalid("request body must be a JSON object")),
        Err(_) => Err(bad_json()),
    }
}

pub(super) fn chat_model(obj: &Map<String, Value>) -> Result<String, ChatError> {
    let model = match obj.get("model") {
        None | Some(Value::Null) => return Err(invalid("model is required")),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(invalid("model must be a string")),
    };
    if !models::is_chat(&model) {
        return Err(no_such_model());
    }
    Ok(model)
}

pub(super) fn messages(obj: &Map<String, Value>) -> Result<&Vec<Value>, ChatError> {
    match obj.get("messages") {
        None | Some(Value::Null) => Err(invalid("messages is required")),
        Some(Value::Array(m)) if m.is_empty() => Err(invalid("messages must not be empty")),
        Some(Value::Array(m)) => Ok(m),
        Some(_) => Err(invalid("messages must be an array")),
    }
}

pub(super) fn role_of<'a>(
    msg: &'a Value,
    allowed: &[&str],
    idx: usize,
) -> Result<&'a str, ChatError> {
    let role = msg
        .get("role")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("messages[{idx}].role is required")))?;
    if !allowed.contains(&role) {
        return Err(invalid(format!("messages[{idx}].role '{role}' is unknown")));
    }
    if role == "system" && idx > 0 {
        return Err(invalid("system message must be the first message"));
    }
    Ok(role)
}
