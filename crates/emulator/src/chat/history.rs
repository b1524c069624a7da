//! v1 function-calling history: the rules GigaChat enforces on the calls
//! and results a client sends back, which is exactly where a translation
//! from another API's tool calls can go wrong.
//!
//! - An assistant `function_call` is one object `{name, arguments}`, with
//!   `arguments` a JSON object (not a string); a message holds at most one
//!   call, so several calls must travel as several messages.
//! - Every call is answered by the very next message, a `function`
//!   message naming the called function ("every assistant function call
//!   must have a result in history", as GigaChat words it).
//! - A `function` message answers the call right before it; one without a
//!   call is refused too (the service needs the call in history to pair
//!   the result with).
//! - The result is a JSON object serialized into `content` ("invalid
//!   function result … json string" otherwise).

use serde_json::{Map, Value};

use super::ChatError;
use super::validate::invalid;

/// GigaChat's words for a call left without its result.
const UNANSWERED: &str = "every assistant function call must have a result in history";

/// The name of the function an assistant message calls, after checking
/// the call's shape; `None` when the message calls nothing.
pub(super) fn called_function<'a>(
    msg: &'a Value,
    role: &str,
    idx: usize,
) -> Result<Option<&'a str>, ChatError> {
    let call = match msg.get("function_call") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(call)) => call,
        Some(Value::Array(_)) => {
            return Err(invalid(format!(
                "messages[{idx}].function_call must be an object: a message carries one call"
            )));
        }
        Some(_) => {
            return Err(invalid(format!(
                "messages[{idx}].function_call must be an object"
            )));
        }
    };
    if role != "assistant" {
        return Err(invalid(format!(
            "messages[{idx}].function_call is allowed only in assistant messages"
        )));
    }
    let name = call
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| invalid(format!("messages[{idx}].function_call.name is required")))?;
    match call.get("arguments") {
        None | Some(Value::Null | Value::Object(_)) => Ok(Some(name)),
        Some(_) => Err(invalid(format!(
            "messages[{idx}].function_call.arguments must be a JSON object"
        ))),
    }
}

/// Checks a `function` message against the call it answers (`pending`,
/// the name called by the previous message) and returns the function's
/// name and result.
pub(super) fn function_result<'a>(
    msg: &'a Value,
    content: &str,
    idx: usize,
    pending: Option<&str>,
) -> Result<(&'a str, Map<String, Value>), ChatError> {
    let Some(called) = pending else {
        return Err(invalid(format!(
            "messages[{idx}]: a function result must follow the assistant function call it answers"
        )));
    };
    let name = msg.get("name").and_then(Value::as_str).ok_or_else(|| {
        invalid(format!(
            "messages[{idx}].name is required for a function result"
        ))
    })?;
    if name != called {
        return Err(invalid(format!(
            "messages[{idx}].name '{name}' does not match the function called before it ('{called}')"
        )));
    }
    match serde_json::from_str::<Value>(content) {
        Ok(Value::Object(result)) => Ok((name, result)),
        _ => Err(invalid(format!(
            "invalid function result for function json string: messages[{idx}].content must be a JSON object serialized to a string"
        ))),
    }
}

/// The refusal for a call whose next message is not its result.
pub(super) fn unanswered() -> ChatError {
    invalid(UNANSWERED)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use http::StatusCode;
    use serde_json::json;

    use super::*;

    #[test]
    fn call_shapes() {
        let ok = json!({"function_call": {"name": "f", "arguments": {"a": 1}}});
        assert_eq!(called_function(&ok, "assistant", 1).unwrap(), Some("f"));
        let no_args = json!({"function_call": {"name": "f"}});
        assert_eq!(
            called_function(&no_args, "assistant", 1).unwrap(),
            Some("f")
        );
        assert_eq!(called_function(&json!({}), "assistant", 1).unwrap(), None);
        for (msg, role, says) in [
            (
                json!({"function_call": [{"name": "f", "arguments": {}}, {"name": "g", "arguments": {}}]}),
                "assistant",
                "a message carries one call",
            ),
            (
                json!({"function_call": {"name": "f", "arguments": "{\"a\":1}"}}),
                "assistant",
                "arguments must be a JSON object",
            ),
            (
                json!({"function_call": {"arguments": {}}}),
                "assistant",
                "name is required",
            ),
            (
                json!({"function_call": {"name": "f", "arguments": {}}}),
                "user",
                "only in assistant messages",
            ),
            (
                json!({"function_call": "f"}),
                "assistant",
                "must be an object",
            ),
        ] {
            let e = called_function(&msg, role, 3).unwrap_err();
            assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
            assert!(
                e.message.starts_with("Invalid params: messages[3]"),
                "{}",
                e.message
            );
            assert!(e.message.contains(says), "{}", e.message);
        }
    }

    #[test]
    fn results_must_answer_the_call_with_an_object() {
        let msg = json!({"role": "function", "name": "f"});
        let (name, result) = function_result(&msg, r#"{"t":5}"#, 2, Some("f")).unwrap();
        assert_eq!((name, Value::Object(result)), ("f", json!({"t": 5})));

        let e = function_result(&msg, r#"{"t":5}"#, 2, None).unwrap_err();
        assert!(e.message.contains("must follow"), "{}", e.message);
        let e = function_result(&msg, r#"{"t":5}"#, 2, Some("g")).unwrap_err();
        assert!(e.message.contains("does not match"), "{}", e.message);
        let e = function_result(&json!({"role": "function"}), "{}", 2, Some("f")).unwrap_err();
        assert!(e.message.contains("name is required"), "{}", e.message);
        for content in ["+5°C", "[1,2]", "\"text\"", "42", "null", ""] {
            let e = function_result(&msg, content, 2, Some("f")).unwrap_err();
            assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
            assert!(
                e.message.starts_with(
                    "Invalid params: invalid function result for function json string"
                ),
                "{content}: {}",
                e.message
            );
        }
        assert_eq!(
            unanswered().message,
            "Invalid params: every assistant function call must have a result in history"
        );
    }
}
