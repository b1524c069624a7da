//! Real OpenAI-compatible clients against the proxy's
//! `/api/gigachat-openai/v1` route, the real binary in front of the
//! emulator: the `openai` npm SDK (7.x, and 6.x for its base64 embeddings
//! path), the `openai` Python SDK, the Vercel AI SDK (`ai` 7 and 5) with
//! `@ai-sdk/openai-compatible`, `@ai-sdk/openai` (Chat Completions and the
//! Responses API) and LangChain's `ChatOpenAI`/`OpenAIEmbeddings`.
//!
//! Each script in `tests/openai_clients/` runs its cases and prints one JSON
//! object; the assertions on what each client got back are here, so a
//! client that "works" with the wrong content fails. A failed case carries
//! the exact requests and answers it saw, printed with the failure.
//!
//! The packages come from `.ci/setup` (npm: `tests/openai_clients/
//! package-lock.json`; PyPI: `tests/openai_clients/requirements.txt` into
//! `.venv`); when they are missing or stale this test runs `.ci/setup`
//! itself. Only a missing Node.js outside CI skips the Node clients (with a
//! message saying so); under `CI=true` that is a failure.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use common::node::{CI_SETUP, node_packages_ready, repo_root};
use common::script::{Checks, PROXY_VARIABLES, ScriptRun, pointer, run_case_script};
use common::*;

/// One script's whole run; each makes a handful of calls to a local proxy.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);
/// The route every client is pointed at, as a user would set `baseURL`.
const ROUTE: &str = "/api/gigachat-openai/v1";
/// What each tool returns (support.mjs / support.py): the final answer of
/// every round trip must carry it.
const TOOL_MARKER: &str = "sunny-7f3a";
/// The emulator's deterministic reply to a user message.
fn echo(prompt: &str) -> String {
    format!("Echo: {prompt}")
}

const CLIENTS_DIR: &str = "tests/openai_clients";

fn clients_dir() -> PathBuf {
    repo_root().join(CLIENTS_DIR)
}

/// The scripts each run, so none is silently left out.
const NODE_SCRIPTS: [&str; 3] = ["ai_sdk.mjs", "ai_sdk_openai.mjs", "openai_npm.mjs"];
const PYTHON_SCRIPTS: [&str; 2] = ["langchain_clients.py", "openai_python.py"];

#[test]
fn every_client_script_is_run() {
    let mut node = Vec::new();
    let mut python = Vec::new();
    for entry in std::fs::read_dir(clients_dir()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.starts_with("support.") {
            continue;
        }
        if name.ends_with(".mjs") {
            node.push(name);
        } else if name.ends_with(".py") {
            python.push(name);
        }
    }
    node.sort();
    python.sort();
    assert_eq!(node, NODE_SCRIPTS);
    assert_eq!(python, PYTHON_SCRIPTS);
}

// ---- tools ------------------------------------------------------------------

fn python_clients() -> PathBuf {
    let _setup = CI_SETUP.lock().unwrap_or_else(|e| e.into_inner());
    python_importing("openai, langchain_openai, tiktoken")
}

// ---- running a script -------------------------------------------------------

/// Runs `program args` in `tests/openai_clients` with the proxy's route as
/// `OPENAI_BASE_URL`, stops it at [`SCRIPT_TIMEOUT`], and parses its JSON.
fn run_script(program: &Path, args: &[&str], proxy_url: &str) -> ScriptRun {
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(clients_dir())
        .env("OPENAI_BASE_URL", format!("{proxy_url}{ROUTE}"))
        // Open mode ignores it; the SDKs refuse to start without one.
        .env("OPENAI_API_KEY", "sk-test-open-mode")
        .env("AI_SDK_LOG_WARNINGS", "false")
        .env("NODE_NO_WARNINGS", "1");
    // Nothing from the developer's environment may steer the clients
    // elsewhere (another organisation's headers, a proxy for loopback).
    for name in [
        "OPENAI_ORG_ID",
        "OPENAI_PROJECT_ID",
        "OPENAI_BASE_URL_OVERRIDE",
    ]
    .into_iter()
    .chain(PROXY_VARIABLES)
    {
        command.env_remove(name);
    }
    run_case_script(command, &format!("{args:?}"), SCRIPT_TIMEOUT)
}

/// Starts an emulator and a proxy (open mode, defaults), runs the script and
/// checks that the proxy logged no secret.
async fn run_against_proxy(program: PathBuf, args: Vec<&'static str>) -> ScriptRun {
    let s = setup().await;
    let proxy_url = s.proxy.url.clone();
    let run = tokio::task::spawn_blocking(move || run_script(&program, &args, &proxy_url))
        .await
        .unwrap();
    assert_no_secret(
        &s.proxy.logs(),
        std::slice::from_ref(&s.credentials),
        "the proxy's logs",
    );
    s.emulator.shutdown().await;
    run
}

/// [`run_against_proxy`] for `node args` once Node.js and the pinned
/// packages are there (running `.ci/setup` if only the packages are
/// missing); `None` to skip, which only a machine without Node.js outside
/// CI gets.
async fn run_node_client(test: &str, args: Vec<&'static str>) -> Option<ScriptRun> {
    if !node_packages_ready(test, &[CLIENTS_DIR]) {
        return None;
    }
    Some(run_against_proxy(PathBuf::from("node"), args).await)
}

// ---- assertions -------------------------------------------------------------

fn prompt_of(case: &Value, key: &str) -> String {
    case[key].as_str().unwrap_or_default().to_owned()
}

/// Checks that `case[key]` is the emulator's echo of `case[prompt_key]`,
/// the prompt the script sent.
fn check_echo(c: &mut Checks, name: &str, case: &Value, key: &str, prompt_key: &str) {
    c.eq(name, case, key, echo(&prompt_of(case, prompt_key)).into());
}

/// Embedding facts (support.mjs/support.py `vectorFacts`) of the texts
/// ["first text", "second text", "first text"]: three unit vectors of the
/// emulator's dimension, equal texts equal, different texts different.
fn check_vectors(c: &mut Checks, name: &str, case: &Value) {
    c.eq(name, case, "count", 3.into());
    c.eq(name, case, "all_numbers", true.into());
    c.eq(name, case, "first_equals_third", true.into());
    c.eq(name, case, "first_equals_second", false.into());
    let dims = pointer(case, "dimensions");
    c.check(
        name,
        dims.as_array()
            .is_some_and(|d| d.len() == 3 && d.iter().all(|n| n == 1024)),
        || format!("dimensions: expected [1024, 1024, 1024], got {dims}"),
    );
    let norms = pointer(case, "norms");
    c.check(
        name,
        norms.as_array().is_some_and(|n| {
            n.len() == 3
                && n.iter()
                    .all(|x| x.as_f64().is_some_and(|x| (x - 1.0).abs() < 1e-3))
        }),
        || format!("norms: expected unit vectors, got {norms}"),
    );
}

/// The calls of the `openai` SDKs (npm and Python print the same keys).
fn check_openai_sdk(c: &mut Checks) {
    let chat = c.case("chat");
    let prompt = prompt_of(&chat, "prompt");
    c.eq("chat", &chat, "content", echo(&prompt).into());
    c.eq("chat", &chat, "role", "assistant".into());
    c.eq("chat", &chat, "finish_reason", "stop".into());
    c.eq("chat", &chat, "object", "chat.completion".into());
    c.eq("chat", &chat, "model", "GigaChat".into());
    c.eq("chat", &chat, "choices", 1.into());
    c.contains("chat", &chat, "id", "chatcmpl-");
    c.positive("chat", &chat, "usage.prompt_tokens");
    c.positive("chat", &chat, "usage.completion_tokens");
    let total = chat["usage"]["prompt_tokens"].as_u64().unwrap_or(0)
        + chat["usage"]["completion_tokens"].as_u64().unwrap_or(0);
    c.eq("chat", &chat, "usage.total_tokens", total.into());

    let stream = c.case("stream");
    let prompt = prompt_of(&stream, "prompt");
    c.eq("stream", &stream, "text", echo(&prompt).into());
    // Usage exactly once, on a last chunk whose `choices` is `[]`.
    c.eq("stream", &stream, "usage_chunks", 1.into());
    c.eq("stream", &stream, "usage_chunk_is_last", true.into());
    c.eq(
        "stream",
        &stream,
        "usage_chunk_choices",
        Value::Array(vec![]),
    );
    c.positive("stream", &stream, "usage.prompt_tokens");
    c.positive("stream", &stream, "usage.completion_tokens");
    c.eq(
        "stream",
        &stream,
        "finish_reasons",
        serde_json::json!(["stop"]),
    );
    c.eq("stream", &stream, "roles", serde_json::json!(["assistant"]));
    c.eq(
        "stream",
        &stream,
        "objects",
        serde_json::json!(["chat.completion.chunk"]),
    );
    c.eq("stream", &stream, "models", serde_json::json!(["GigaChat"]));
    let ids = pointer(&stream, "ids");
    c.check(
        "stream",
        ids.as_array().is_some_and(|ids| {
            ids.len() == 1
                && ids[0]
                    .as_str()
                    .is_some_and(|id| id.starts_with("chatcmpl-"))
        }),
        || format!("ids: expected one chatcmpl- id on every chunk, got {ids}"),
    );
    let chunks = pointer(&stream, "chunk_count");
    c.check("stream", chunks.as_u64().is_some_and(|n| n >= 3), || {
        format!("chunk_count: expected the answer in several chunks, got {chunks}")
    });

    let tools = c.case("tools");
    check_tool_call_round_trip(c, "tools", &tools);
    let tools_stream = c.case("tools_stream");
    check_tool_call_round_trip(c, "tools_stream", &tools_stream);

    let embeddings = c.case("embeddings");
    check_vectors(c, "embeddings", &embeddings);
    c.eq("embeddings", &embeddings, "object", "list".into());
    c.eq(
        "embeddings",
        &embeddings,
        "indexes",
        serde_json::json!([0, 1, 2]),
    );
    c.eq(
        "embeddings",
        &embeddings,
        "float_equals_default",
        true.into(),
    );
    c.positive("embeddings", &embeddings, "usage.prompt_tokens");
    let prompt_tokens = pointer(&embeddings, "usage.prompt_tokens");
    c.eq(
        "embeddings",
        &embeddings,
        "usage.total_tokens",
        prompt_tokens,
    );
}

/// An `openai` SDK tools round trip: the first answer is one `get_weather`
/// call (`finish_reason: "tool_calls"`, an id, JSON arguments naming the
/// city), the second, after the tool's result, is text that uses it.
fn check_tool_call_round_trip(c: &mut Checks, name: &str, case: &Value) {
    c.eq(name, case, "first_finish_reason", "tool_calls".into());
    let calls = pointer(case, "tool_calls");
    c.check(name, calls.as_array().is_some_and(|a| a.len() == 1), || {
        format!("tool_calls: expected exactly one call, got {calls}")
    });
    c.eq(name, case, "tool_calls.0.type", "function".into());
    c.eq(
        name,
        case,
        "tool_calls.0.function.name",
        "get_weather".into(),
    );
    c.non_empty_string(name, case, "tool_calls.0.id");
    // The emulator fills a call's string arguments with the user's text.
    c.eq(name, case, "arguments.city", case["prompt"].clone());
    c.eq(name, case, "final_finish_reason", "stop".into());
    c.contains(name, case, "final_content", TOOL_MARKER);
    let again = pointer(case, "final_tool_calls");
    c.check(
        name,
        again.is_null() || again.as_array().is_some_and(Vec::is_empty),
        || format!("final_tool_calls: expected none after the result, got {again}"),
    );
}

/// A structured answer to the schema `{name: string, age: integer}`: the
/// emulator fills a schema (a forced function call or `response_format`)
/// with the user's text for strings and 1 for integers, so the object shows
/// that the schema and the prompt both arrived.
fn check_person(c: &mut Checks, name: &str, case: &Value) {
    let prompt = prompt_of(case, "prompt");
    c.eq(
        name,
        case,
        "object",
        serde_json::json!({"name": prompt, "age": 1}),
    );
}

/// The AI SDK's usage: both counts reported.
fn check_ai_usage(c: &mut Checks, name: &str, case: &Value, key: &str) {
    c.positive(name, case, &format!("{key}.inputTokens"));
    c.positive(name, case, &format!("{key}.outputTokens"));
}

/// A round trip through the AI SDK's tool loop: step 1 calls `get_weather`
/// (which ran once), step 2 answers text that uses its output.
fn check_ai_round_trip(c: &mut Checks, name: &str, case: &Value) {
    let steps = pointer(case, "steps");
    c.check(name, steps.as_array().is_some_and(|s| s.len() == 2), || {
        format!("steps: expected a tool step then a text step, got {steps}")
    });
    c.eq(
        name,
        case,
        "steps.0.tool_calls",
        serde_json::json!(["get_weather"]),
    );
    c.eq(name, case, "steps.0.finish_reason", "tool-calls".into());
    c.eq(name, case, "steps.1.finish_reason", "stop".into());
    c.eq(name, case, "executed.0.city", case["prompt"].clone());
    c.eq(name, case, "executed.1", Value::Null);
    c.contains(name, case, "text", TOOL_MARKER);
    c.eq(name, case, "finish_reason", "stop".into());
}

// ---- the clients --------------------------------------------------------------

async fn openai_npm(variant: &'static str) {
    let Some(run) = run_node_client(variant, vec!["openai_npm.mjs", variant]).await else {
        return;
    };
    let mut c = Checks::new(variant, &run);
    check_openai_sdk(&mut c);
    c.finish();
}

/// openai npm 7.x: chat, a stream with `include_usage` (usage once, on a
/// `choices: []` chunk), a tools round trip (JSON and streamed through the
/// SDK's stream helper) and embeddings (its default base64, and float).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_npm_sdk_7_works_through_the_proxy() {
    openai_npm("openai7").await;
}

/// openai npm 6.x: the same; its embeddings decode base64 unconditionally,
/// so a float answer to its default request would break it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_npm_sdk_6_works_through_the_proxy() {
    openai_npm("openai6").await;
}

/// The `openai` Python SDK: the same calls (its stream helper for the
/// streamed round trip).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_sdk_works_through_the_proxy() {
    let python = tokio::task::spawn_blocking(python_clients).await.unwrap();
    let run = run_against_proxy(python, vec!["openai_python.py"]).await;
    let mut c = Checks::new("openai-python", &run);
    check_openai_sdk(&mut c);
    c.finish();
}

async fn ai_sdk(variant: &'static str) {
    let Some(run) = run_node_client(variant, vec!["ai_sdk.mjs", variant]).await else {
        return;
    };
    let mut c = Checks::new(variant, &run);

    let name = "generate_text";
    let case = c.case(name);
    check_echo(&mut c, name, &case, "text", "prompt");
    c.eq(name, &case, "finish_reason", "stop".into());
    c.eq(name, &case, "response_model", "GigaChat".into());
    check_ai_usage(&mut c, name, &case, "usage");

    let name = "stream_text";
    let case = c.case(name);
    let expected = echo(&prompt_of(&case, "prompt"));
    c.eq(name, &case, "text", expected.clone().into());
    c.eq(name, &case, "final_text", expected.into());
    c.eq(name, &case, "finish_reason", "stop".into());
    let parts = pointer(&case, "parts");
    c.check(name, parts.as_u64().is_some_and(|n| n >= 2), || {
        format!("parts: expected the text in several deltas, got {parts}")
    });
    // Only streamed usage (include_usage) fills these.
    check_ai_usage(&mut c, name, &case, "usage");

    let name = "tools_required";
    let case = c.case(name);
    c.eq(name, &case, "finish_reason", "tool-calls".into());
    c.eq(name, &case, "tool_calls.0.toolName", "get_weather".into());
    c.eq(name, &case, "tool_calls.1", Value::Null);
    c.non_empty_string(name, &case, "tool_calls.0.toolCallId");
    c.eq(
        name,
        &case,
        "tool_calls.0.input.city",
        case["prompt"].clone(),
    );
    c.eq(
        name,
        &case,
        "tool_results.0.output.forecast",
        TOOL_MARKER.into(),
    );
    c.eq(name, &case, "executed.0.city", case["prompt"].clone());

    let name = "tools_round_trip";
    let case = c.case(name);
    check_ai_round_trip(&mut c, name, &case);
    check_ai_usage(&mut c, name, &case, "total_usage");

    // json_object: the schema is not sent, the prompt names the object to
    // answer, and the emulator answers it.
    let name = "generate_object_json";
    let case = c.case(name);
    c.eq(
        name,
        &case,
        "object",
        serde_json::json!({"name": "Ada Lovelace", "age": 36}),
    );
    c.eq(name, &case, "finish_reason", "stop".into());
    // json_schema: the object comes from the schema (see `check_person`).
    let name = "generate_object_structured";
    let case = c.case(name);
    check_person(&mut c, name, &case);
    c.eq(name, &case, "finish_reason", "stop".into());

    let name = "embed_many";
    let case = c.case(name);
    check_vectors(&mut c, name, &case);
    c.positive(name, &case, "usage.tokens");
    c.finish();
}

/// `ai` 7 with `@ai-sdk/openai-compatible` 3: generateText, streamText (usage
/// from the stream), tools with toolChoice "required" and a full tool loop,
/// generateObject in json_object mode and with supportsStructuredOutputs
/// (json_schema), embedMany.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ai_sdk_7_with_openai_compatible_works_through_the_proxy() {
    ai_sdk("ai7").await;
}

/// `ai` 5 with `@ai-sdk/openai-compatible` 1: the same calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ai_sdk_5_with_openai_compatible_works_through_the_proxy() {
    ai_sdk("ai5").await;
}

/// `@ai-sdk/openai`: `openai.chat(model)` (Chat Completions, which always
/// asks for streamed usage) and the default `openai(model)` (the Responses
/// API): text, a stream and a tool loop each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ai_sdk_openai_provider_chat_and_responses_work_through_the_proxy() {
    let Some(run) = run_node_client("ai_sdk_openai", vec!["ai_sdk_openai.mjs"]).await else {
        return;
    };
    let mut c = Checks::new("@ai-sdk/openai", &run);
    for api in ["chat", "responses"] {
        let name = format!("{api}_generate_text");
        let case = c.case(&name);
        check_echo(&mut c, &name, &case, "text", "prompt");
        c.eq(&name, &case, "finish_reason", "stop".into());
        check_ai_usage(&mut c, &name, &case, "usage");

        let name = format!("{api}_stream_text");
        let case = c.case(&name);
        check_echo(&mut c, &name, &case, "text", "prompt");
        c.eq(&name, &case, "finish_reason", "stop".into());
        let parts = pointer(&case, "parts");
        c.check(&name, parts.as_u64().is_some_and(|n| n >= 2), || {
            format!("parts: expected the text in several deltas, got {parts}")
        });
        check_ai_usage(&mut c, &name, &case, "usage");

        let name = format!("{api}_tools_round_trip");
        let case = c.case(&name);
        check_ai_round_trip(&mut c, &name, &case);
    }

    let name = "responses_multi_turn";
    let case = c.case(name);
    check_echo(&mut c, name, &case, "first_text", "first_prompt");
    check_echo(&mut c, name, &case, "text", "prompt");
    // The default `store: true` sends an `item_reference`: a 400 that says
    // to set `store: false`, not a retry or an opaque failure.
    c.eq(name, &case, "default_store.ok", false.into());
    c.eq(name, &case, "default_store.statusCode", "400".into());
    c.contains(name, &case, "default_store.responseBody", "store: false");
    c.finish();
}

/// LangChain: `ChatOpenAI` invoke and stream, `bind_tools` with a round
/// trip, `with_structured_output` (default json_schema, and
/// function_calling), `OpenAIEmbeddings` with
/// `check_embedding_ctx_length=False`, and its default (token ids) getting
/// a 400 that names that setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn langchain_openai_works_through_the_proxy() {
    let python = tokio::task::spawn_blocking(python_clients).await.unwrap();
    let run = run_against_proxy(python, vec!["langchain_clients.py"]).await;
    let mut c = Checks::new("langchain", &run);

    let name = "chat";
    let case = c.case(name);
    check_echo(&mut c, name, &case, "content", "prompt");
    c.eq(name, &case, "finish_reason", "stop".into());
    check_echo(&mut c, name, &case, "stream_content", "stream_prompt");
    c.positive(name, &case, "usage.input_tokens");
    c.positive(name, &case, "usage.output_tokens");

    let name = "bind_tools";
    let case = c.case(name);
    c.eq(name, &case, "tool_calls.0.name", "get_weather".into());
    c.eq(name, &case, "tool_calls.1", Value::Null);
    c.non_empty_string(name, &case, "tool_calls.0.id");
    c.eq(
        name,
        &case,
        "tool_calls.0.args.city",
        case["prompt"].clone(),
    );
    c.eq(name, &case, "first_finish_reason", "tool_calls".into());
    c.contains(name, &case, "final_content", TOOL_MARKER);
    c.eq(name, &case, "final_tool_calls", Value::Array(vec![]));
    c.eq(name, &case, "final_finish_reason", "stop".into());

    for name in ["structured_default", "structured_function_calling"] {
        let case = c.case(name);
        c.eq(name, &case, "type", "Person".into());
        check_person(&mut c, name, &case);
    }

    let name = "embeddings";
    let case = c.case(name);
    check_vectors(&mut c, name, &case);
    c.eq(name, &case, "query_equals_first", true.into());

    let name = "embeddings_default";
    let case = c.case(name);
    c.eq(name, &case, "raised", "BadRequestError".into());
    c.eq(name, &case, "status", 400.into());
    c.eq(name, &case, "type", "invalid_request_error".into());
    c.contains(name, &case, "message", "check_embedding_ctx_length=False");
    c.contains(
        name,
        &case,
        "error_text",
        "check_embedding_ctx_length=False",
    );
    // It really was LangChain's token-id path that got the 400.
    c.eq(name, &case, "sent_token_ids", true.into());
    c.finish();
}
