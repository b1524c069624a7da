//! A whole GigaChat chat answer as OpenAI's `chat.completion`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::ChatPlan;
use super::gigachat::{self, ChatAnswer, ChatUsage, FunctionCall};
use crate::error::Error;

/// The translated answer's bytes.
pub(crate) fn chat_completion(
    gigachat: &[u8],
    plan: &ChatPlan,
    request_id: &str,
) -> Result<Vec<u8>, Error> {
    let answer: ChatAnswer = serde_json::from_slice(gigachat)
        .map_err(|_| Error::Internal("GigaChat's chat answer could not be read"))?;
    if answer.choices.is_empty() {
        return Err(Error::Internal("GigaChat's chat answer has no choices"));
    }
    let id = completion_id(request_id);
    let choices = answer
        .choices
        .into_iter()
        .map(|choice| translate_choice(choice, plan, request_id))
        .collect();
    let completion = Completion {
        id: &id,
        object: "chat.completion",
        created: answer.created.unwrap_or_else(now),
        model: &plan.model,
        choices,
        usage: answer.usage.map(UsageOut::from),
    };
    // About as long as GigaChat's answer: written without regrowing.
    let mut out = Vec::with_capacity(gigachat.len() + 256);
    serde_json::to_writer(&mut out, &completion)
        .map_err(|_| Error::Internal("the translated chat answer could not be written"))?;
    Ok(out)
}

/// `chatcmpl-` and the proxy's request id: the id a client shows is the
/// one the proxy's logs carry.
pub(crate) fn completion_id(request_id: &str) -> String {
    format!("chatcmpl-{request_id}")
}

/// Unix seconds, for an answer GigaChat sent without `created`.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// The client's name for a function GigaChat called: tools renamed because
/// they clash with GigaChat's built-ins get their own name back.
pub(crate) fn client_tool_name<'a>(plan: &'a ChatPlan, gigachat_name: &'a str) -> &'a str {
    plan.renamed_tools
        .iter()
        .find(|(renamed, _)| renamed == gigachat_name)
        .map_or(gigachat_name, |(_, original)| original.as_str())
}

/// Where the first of the stop strings begins in `text`, if any does.
pub(crate) fn first_stop(text: &str, stops: &[String]) -> Option<usize> {
    stops
        .iter()
        .filter(|stop| !stop.is_empty())
        .filter_map(|stop| text.find(stop.as_str()))
        .min()
}

fn translate_choice(
    choice: gigachat::AnswerChoice,
    plan: &ChatPlan,
    request_id: &str,
) -> ChoiceOut {
    let message = choice.message;
    let mut finish_reason = choice
        .finish_reason
        .as_deref()
        .map_or("stop", gigachat::finish_reason)
        .to_owned();
    let mut content = message.content;
    let mut tool_calls = Vec::new();
    if let Some(call) = message.function_call {
        if plan.structured_output.as_deref() == Some(call.name.as_str()) {
            content = Some(call.arguments_string());
            finish_reason = "stop".to_owned();
        } else {
            tool_calls.push(tool_call(
                &call,
                message.functions_state_id.as_deref(),
                plan,
                request_id,
                None,
            ));
            content = None;
        }
    } else if content.is_none() {
        content = Some(String::new());
    }
    if let Some(text) = content.as_mut()
        && let Some(cut) = first_stop(text, &plan.stop)
    {
        text.truncate(cut);
        finish_reason = "stop".to_owned();
    }
    ChoiceOut {
        index: choice.index,
        message: MessageOut {
            // GigaChat's own roles (`function_in_progress`, …) mean nothing
            // to an OpenAI client; the answer is always the assistant's.
            role: "assistant",
            content,
            refusal: None,
            tool_calls,
            reasoning_content: message.reasoning_content.filter(|text| !text.is_empty()),
        },
        finish_reason,
        logprobs: None,
    }
}

/// A GigaChat function call as OpenAI's tool call; `index` is the call's
/// position in a stream (a whole answer's calls carry none).
pub(super) fn tool_call(
    call: &FunctionCall,
    state_id: Option<&str>,
    plan: &ChatPlan,
    request_id: &str,
    index: Option<usize>,
) -> ToolCallOut {
    ToolCallOut {
        index,
        id: gigachat::tool_call_id(state_id, request_id, index.unwrap_or(0)),
        kind: "function",
        function: FunctionOut {
            name: client_tool_name(plan, &call.name).to_owned(),
            arguments: call.arguments_string(),
        },
    }
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<ChoiceOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageOut>,
}

#[derive(Serialize)]
struct ChoiceOut {
    index: u32,
    message: MessageOut,
    finish_reason: String,
    logprobs: Option<()>,
}

#[derive(Serialize)]
struct MessageOut {
    role: &'static str,
    /// `null` next to tool calls, as OpenAI sends it.
    content: Option<String>,
    refusal: Option<()>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<String>,
}

#[derive(Serialize)]
pub(super) struct ToolCallOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionOut,
}

#[derive(Serialize)]
pub(super) struct FunctionOut {
    name: String,
    arguments: String,
}

/// OpenAI's usage object. GigaChat's counts are the billed ones and are
/// kept as they are; the prompt tokens it read from its cache (not billed,
/// not in `prompt_tokens`) are reported as OpenAI's cached tokens.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct UsageOut {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: PromptDetails,
    completion_tokens_details: CompletionDetails,
}

#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
struct PromptDetails {
    cached_tokens: u64,
}

#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
struct CompletionDetails {
    reasoning_tokens: u64,
}

impl From<ChatUsage> for UsageOut {
    fn from(usage: ChatUsage) -> Self {
        Self {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            total_tokens: usage.total_tokens,
            prompt_tokens_details: PromptDetails {
                cached_tokens: usage.precached_prompt_tokens,
            },
            // GigaChat does not count reasoning tokens apart.
            completion_tokens_details: CompletionDetails {
                reasoning_tokens: 0,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::{Value, json};

    fn plan() -> ChatPlan {
        ChatPlan {
            model: "gpt-4o".into(),
            ..ChatPlan::default()
        }
    }

    fn translate(gigachat: Value, plan: &ChatPlan) -> Value {
        let bytes = chat_completion(gigachat.to_string().as_bytes(), plan, "R1").unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn text_answer(content: &str, finish: &str) -> Value {
        json!({
            "choices": [{"message": {"content": content, "role": "assistant"}, "index": 0, "finish_reason": finish}],
            "created": 1768996171, "model": "GigaChat:2.0.28.2", "object": "chat.completion",
            "usage": {"prompt_tokens": 17, "completion_tokens": 3, "total_tokens": 20, "precached_prompt_tokens": 2}
        })
    }

    #[test]
    fn a_text_answer_has_openais_shape() {
        let out = translate(text_answer("Hello.", "stop"), &plan());
        assert_eq!(
            out,
            json!({
                "id": "chatcmpl-R1", "object": "chat.completion", "created": 1768996171, "model": "gpt-4o",
                "choices": [{"index": 0, "logprobs": null, "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "Hello.", "refusal": null}}],
                "usage": {"prompt_tokens": 17, "completion_tokens": 3, "total_tokens": 20,
                    "prompt_tokens_details": {"cached_tokens": 2},
                    "completion_tokens_details": {"reasoning_tokens": 0}}
            })
        );
    }

    #[test]
    fn a_function_call_becomes_a_tool_call_with_string_arguments() {
        let gigachat = json!({
            "choices": [{"message": {"role": "assistant", "content": "",
                "function_call": {"name": "get_weather", "arguments": {"city": "Москва"}},
                "functions_state_id": "019ed0c7-f14d-7cae-8dc6-ff8d01d617e4"},
                "index": 0, "finish_reason": "function_call"}],
            "created": 1764441600, "model": "GigaChat-2-Max:2.0.28.2", "object": "chat.completion",
            "usage": {"prompt_tokens": 120, "completion_tokens": 18, "total_tokens": 138, "precached_prompt_tokens": 0}
        });
        let out = translate(gigachat, &plan());
        let choice = &out["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], Value::Null);
        assert_eq!(
            choice["message"]["tool_calls"],
            json!([{"id": "call_019ed0c7-f14d-7cae-8dc6-ff8d01d617e4", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Москва\"}"}}])
        );
    }

    #[test]
    fn a_call_without_a_state_id_gets_an_id_from_the_request() {
        let gigachat = json!({"choices": [{"message": {"role": "assistant", "content": "",
            "function_call": {"name": "f", "arguments": {}}}, "index": 0, "finish_reason": "function_call"}]});
        let out = translate(gigachat, &plan());
        assert_eq!(
            out["choices"][0]["message"]["tool_calls"][0]["id"],
            "call_R1_0"
        );
        assert_eq!(
            out["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            "{}"
        );
    }

    #[test]
    fn renamed_tools_get_their_names_back() {
        let plan = ChatPlan {
            renamed_tools: vec![("user_web_search".into(), "web_search".into())],
            ..plan()
        };
        let gigachat = json!({"choices": [{"message": {"role": "assistant", "content": "",
            "function_call": {"name": "user_web_search", "arguments": {"q": "x"}}},
            "index": 0, "finish_reason": "function_call"}]});
        let out = translate(gigachat, &plan);
        assert_eq!(
            out["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
            "web_search"
        );
    }

    #[test]
    fn structured_output_arguments_become_the_content() {
        let plan = ChatPlan {
            structured_output: Some("answer".into()),
            ..plan()
        };
        let gigachat = json!({"choices": [{"message": {"role": "assistant", "content": "",
            "function_call": {"name": "answer", "arguments": {"name": "Ада", "age": 36}}},
            "index": 0, "finish_reason": "function_call"}]});
        let out = translate(gigachat, &plan);
        let choice = &out["choices"][0];
        assert_eq!(choice["finish_reason"], "stop");
        assert!(choice["message"].get("tool_calls").is_none());
        let content: Value =
            serde_json::from_str(choice["message"]["content"].as_str().unwrap()).unwrap();
        assert_eq!(content, json!({"name": "Ада", "age": 36}));
    }

    #[test]
    fn content_is_cut_at_the_first_stop_string() {
        let plan = ChatPlan {
            stop: vec!["END".into(), "\n\n".into(), String::new()],
            ..plan()
        };
        let out = translate(text_answer("one two\n\nthree END", "length"), &plan);
        assert_eq!(out["choices"][0]["message"]["content"], "one two");
        assert_eq!(out["choices"][0]["finish_reason"], "stop");
        // No stop string in the text: the finish reason is GigaChat's.
        let out = translate(text_answer("one two", "length"), &plan);
        assert_eq!(out["choices"][0]["message"]["content"], "one two");
        assert_eq!(out["choices"][0]["finish_reason"], "length");
    }

    #[test]
    fn finish_reasons_are_mapped_and_internal_roles_never_leak() {
        let mut gigachat = text_answer("нельзя", "blacklist");
        gigachat["choices"][0]["message"]["role"] = json!("function_in_progress");
        let out = translate(gigachat, &plan());
        assert_eq!(out["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(out["choices"][0]["message"]["role"], "assistant");
    }

    #[test]
    fn reasoning_is_passed_and_a_missing_created_is_now() {
        let gigachat = json!({"choices": [{"message": {"role": "assistant", "content": "4",
            "reasoning_content": "2+2"}, "index": 0, "finish_reason": "stop"}]});
        let before = now();
        let out = translate(gigachat, &plan());
        assert_eq!(out["choices"][0]["message"]["reasoning_content"], "2+2");
        assert!(out["created"].as_u64().unwrap() >= before);
        assert!(out.get("usage").is_none());
    }

    #[test]
    fn unreadable_answers_are_errors() {
        assert!(chat_completion(b"not json", &plan(), "R").is_err());
        assert!(chat_completion(b"{\"choices\":[]}", &plan(), "R").is_err());
        assert!(chat_completion(b"{\"choices\":7}", &plan(), "R").is_err());
    }
}
