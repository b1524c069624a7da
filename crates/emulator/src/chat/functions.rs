//! v1 function calling: the declared functions, the `function_call` mode,
//! and deterministic arguments that satisfy a function's schema.

use serde_json::{Map, Value};

use super::ChatError;
use super::validate::invalid;

/// Built-in functions the service knows without a schema.
const BUILTIN_FUNCTIONS: [&str; 3] = ["text2image", "text2model3d", "get_file_content"];

#[derive(Debug, Clone)]
pub(super) struct FunctionSpec {
    pub(super) name: String,
    pub(super) parameters: Option<Value>,
}

pub(super) enum FunctionMode {
    None,
    Auto,
    Named(String),
}

fn valid_function_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

pub(super) fn functions(obj: &Map<String, Value>) -> Result<Vec<FunctionSpec>, ChatError> {
    let list = match obj.get("functions") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(invalid("functions must be an array")),
    };
    let mut out = Vec::with_capacity(list.len());
    for (idx, f) in list.iter().enumerate() {
        let name = f
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("functions[{idx}].name is required")))?;
        if !valid_function_name(name) {
            return Err(invalid(format!(
                "functions[{idx}].name '{name}' is invalid"
            )));
        }
        let parameters = match f.get("parameters") {
            Some(p @ Value::Object(_)) => Some(p.clone()),
            None | Some(Value::Null) if BUILTIN_FUNCTIONS.contains(&name) => None,
            None | Some(Value::Null) => {
                return Err(invalid(format!("functions[{idx}].parameters is required")));
            }
            Some(_) => {
                return Err(invalid(format!(
                    "functions[{idx}].parameters must be an object"
                )));
            }
        };
        out.push(FunctionSpec {
            name: name.to_owned(),
            parameters,
        });
    }
    Ok(out)
}

pub(super) fn function_call_mode(
    obj: &Map<String, Value>,
    functions: &[FunctionSpec],
) -> Result<FunctionMode, ChatError> {
    let mode = match obj.get("function_call") {
        // GigaChat defaults to "auto" when functions are present.
        None | Some(Value::Null) => FunctionMode::Auto,
        Some(Value::String(s)) if s == "auto" => FunctionMode::Auto,
        Some(Value::String(s)) if s == "none" => FunctionMode::None,
        Some(Value::Object(o)) => match o.get("name").and_then(Value::as_str) {
            Some(name) => FunctionMode::Named(name.to_owned()),
            None => return Err(invalid("function_call.name is required")),
        },
        Some(_) => {
            return Err(invalid(
                "function_call must be \"none\", \"auto\" or {\"name\": ...}",
            ));
        }
    };
    if let FunctionMode::Named(name) = &mode
        && !functions.iter().any(|f| &f.name == name)
        && !BUILTIN_FUNCTIONS.contains(&name.as_str())
    {
        return Err(invalid(format!(
            "function_call.name '{name}' is not in functions"
        )));
    }
    if functions.is_empty() && !matches!(mode, FunctionMode::Named(_)) {
        return Ok(FunctionMode::None);
    }
    Ok(mode)
}

/// Deterministic arguments that satisfy a JSON schema, so a proxy's tool-call
/// translation can be asserted on: strings carry the user's last message.
pub(super) fn sample(schema: &Value, text: &str, depth: usize) -> Value {
    if depth > 8 {
        return Value::Null;
    }
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    let kind = match schema.get("type") {
        Some(Value::String(s)) => s.as_str(),
        // `["string","null"]`: take the first non-null member.
        Some(Value::Array(kinds)) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|k| *k != "null")
            .unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ => "string",
    };
    match kind {
        "object" => {
            let mut out = Map::new();
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (name, sub) in props {
                    out.insert(name.clone(), sample(sub, text, depth + 1));
                }
            }
            Value::Object(out)
        }
        "array" => Value::Array(Vec::new()),
        "integer" => Value::from(1),
        "number" => Value::from(1.5),
        "boolean" => Value::Bool(true),
        "null" => Value::Null,
        _ => Value::String(text.to_owned()),
    }
}
