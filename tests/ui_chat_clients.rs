//! The Vercel AI SDK's own chat client against the proxy's
//! `/api/gigachat-chat` route: `DefaultChatTransport.sendMessages` and
//! `readUIMessageStream` from `ai` 7, 6 and 5 (what `useChat` runs inside
//! a browser), the real binary in front of the emulator.
//!
//! `tests/ai_sdk_ui/chat.mjs` runs its cases and prints one JSON object of
//! what the client saw: the chunks it parsed and validated, the message
//! snapshots a UI would render, the errors it reported. The assertions are
//! here, so a client that "works" with the wrong content fails; a failed
//! expectation prints the case with its exact requests and answers.
//!
//! The packages come from `.ci/setup` (`tests/ai_sdk_ui/package-lock.json`);
//! when they are missing or stale this test runs `.ci/setup` itself. Only a
//! missing Node.js outside CI skips (with a message saying so); under
//! `CI=true` that is a failure.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use common::node::{installed_npm_version, node_packages_ready, repo_root};
use common::script::{Checks, PROXY_VARIABLES, ScriptRun, pointer, run_case_script};
use common::*;

/// One script's whole run: seven cases, nine calls to a local proxy.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);
const ROUTE: &str = "/api/gigachat-chat";
/// The proxy requires this key, so a call without it is refused before
/// any stream starts.
const API_KEY: &str = "ui-chat-clients-key-0123456789abcdef";
/// The only model the proxy allows; the script asks for another once.
const ALLOWED_MODEL: &str = "GigaChat";
/// The marker in the client-side tool's output (chat.mjs `TOOL_OUTPUT`).
const TOOL_MARKER: &str = "tick-5e1b";
/// The 1×1 PNG the script attaches (chat.mjs `PNG_BASE64`).
const ATTACHMENT: &str = "pixel.png (70 bytes)";

/// The emulator's deterministic reply to a user message.
fn echo(prompt: &str) -> String {
    format!("Echo: {prompt}")
}

const CLIENTS_DIR: &str = "tests/ai_sdk_ui";

// ---- running the script -----------------------------------------------------

fn run_script(variant: &str, chat_url: &str, emulator_url: &str) -> ScriptRun {
    let mut command = Command::new("node");
    command
        .args(["chat.mjs", variant])
        .current_dir(repo_root().join(CLIENTS_DIR))
        .env("CHAT_URL", chat_url)
        .env("EMULATOR_URL", emulator_url)
        .env("CHAT_API_KEY", API_KEY)
        .env("NODE_NO_WARNINGS", "1");
    // A proxy for loopback in the developer's environment would steer the
    // client elsewhere.
    for name in PROXY_VARIABLES {
        command.env_remove(name);
    }
    run_case_script(command, &format!("chat.mjs {variant}"), SCRIPT_TIMEOUT)
}

// ---- assertions -------------------------------------------------------------

/// The chunk types of one answer with repeats folded (`text-delta` ×5 →
/// once), i.e. the protocol's sequence.
fn sequence(answer: &Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in answer["chunk_types"].as_array().into_iter().flatten() {
        let t = t.as_str().unwrap_or("?").to_owned();
        if out.last() != Some(&t) {
            out.push(t);
        }
    }
    out
}

/// `key` inside the answer at `at` (`""`: the case itself).
fn under(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_owned()
    } else {
        format!("{at}.{key}")
    }
}

/// One whole answer that ended well: no error reported or thrown, the
/// chunks in the protocol's order, `finish` with `finish_reason`, usage and
/// model in the message's metadata.
fn check_answer(
    c: &mut Checks,
    name: &str,
    case: &Value,
    at: &str,
    middle: &[&str],
    finish_reason: &str,
) {
    let answer = if at.is_empty() {
        case.clone()
    } else {
        pointer(case, at)
    };
    let prefix = |key: &str| under(at, key);
    c.eq(name, case, &prefix("errors"), json!([]));
    c.eq(name, case, &prefix("thrown"), Value::Null);
    let mut expected = vec!["start", "start-step"];
    expected.extend_from_slice(middle);
    expected.extend_from_slice(&["finish-step", "finish"]);
    let actual = sequence(&answer);
    c.check(name, actual == expected, || {
        format!(
            "{}: expected the chunks {expected:?}, got {actual:?}",
            prefix("chunk_types")
        )
    });
    c.eq(
        name,
        case,
        &prefix("finish.finishReason"),
        finish_reason.into(),
    );
    c.eq(name, case, &prefix("message.role"), "assistant".into());
    let usage = prefix("message.metadata.usage");
    for key in ["inputTokens", "outputTokens", "totalTokens"] {
        c.positive_integer(name, case, &format!("{usage}.{key}"));
    }
    let sum = pointer(case, &format!("{usage}.inputTokens"))
        .as_u64()
        .unwrap_or(0)
        + pointer(case, &format!("{usage}.outputTokens"))
            .as_u64()
            .unwrap_or(0);
    c.eq(name, case, &format!("{usage}.totalTokens"), sum.into());
    c.eq(
        name,
        case,
        &prefix("message.metadata.model"),
        ALLOWED_MODEL.into(),
    );
}

/// A text answer: the reply growing in the UI in several steps, and the
/// whole of it in a `done` text part.
fn check_text_answer(c: &mut Checks, name: &str, case: &Value, at: &str, expected: &str) {
    let key = |k: &str| under(at, k);
    c.eq(name, case, &key("text"), expected.into());
    c.at_least(name, case, &key("text_deltas"), 2);
    let joined: String = pointer(case, &key("text_deltas"))
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    c.check(name, joined == expected, || {
        format!(
            "{}: the deltas make {joined:?}, not {expected:?}",
            key("text_deltas")
        )
    });
    c.at_least(name, case, &key("text_updates"), 2);
    let parts = pointer(case, &key("message.parts"));
    let text_part = parts
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["type"] == "text");
    c.check(
        name,
        text_part.is_some_and(|p| p["state"] == "done"),
        || {
            format!(
                "{}: expected a text part in state done, got {parts}",
                key("message.parts")
            )
        },
    );
}

/// The answer's HTTP exchange: the UI message stream's headers, ended by
/// `[DONE]` (`index` counts the case's requests).
fn check_wire(c: &mut Checks, name: &str, case: &Value, index: usize) {
    let at = |k: &str| format!("exchanges.{index}.{k}");
    c.eq(name, case, &at("status"), 200.into());
    c.contains(name, case, &at("headers.content-type"), "text/event-stream");
    c.eq(
        name,
        case,
        &at("headers.x-vercel-ai-ui-message-stream"),
        "v1".into(),
    );
    let body = pointer(case, &at("response"));
    c.check(
        name,
        body.as_str()
            .is_some_and(|b| b.ends_with("data: [DONE]\n\n")),
        || {
            format!(
                "{}: expected the stream to end with data: [DONE]",
                at("response")
            )
        },
    );
}

async fn ui_chat(variant: &'static str, package: &str, major: &str) {
    if !node_packages_ready(variant, &[CLIENTS_DIR]) {
        return;
    }
    let version = installed_npm_version(CLIENTS_DIR, package).unwrap_or_default();
    assert!(
        version.starts_with(&format!("{major}.")),
        "tests/ai_sdk_ui/node_modules/{package} is {version}, not ai {major}.x"
    );
    let s = setup_with(
        |_| {},
        &[
            ("GIGACHAT_PROXY_API_KEYS", API_KEY),
            ("GIGACHAT_PROXY_ALLOWED_MODELS", ALLOWED_MODEL),
        ],
    )
    .await;
    let chat_url = s.proxy.url(ROUTE);
    let emulator = emulator_url(&s.emulator);
    let run = tokio::task::spawn_blocking(move || run_script(variant, &chat_url, &emulator))
        .await
        .unwrap();
    assert_no_secret(
        &s.proxy.logs(),
        &[s.credentials.clone(), API_KEY.to_owned()],
        "the proxy's logs",
    );
    let mut c = Checks::new(variant, &run);

    // (a) Text streams in as several deltas; finish reason, usage, model.
    let name = "text";
    let case = c.case(name);
    let expected = echo(case["prompt"].as_str().unwrap_or_default());
    check_answer(
        &mut c,
        name,
        &case,
        "",
        &["text-start", "text-delta", "text-end"],
        "stop",
    );
    check_text_answer(&mut c, name, &case, "", &expected);
    check_wire(&mut c, name, &case, 0);

    // (b) A client-side tool: the call arrives as `input-available` with
    // the input the model chose, and the output sent back produces the
    // final answer, continuing the same assistant message.
    let name = "tool_round_trip";
    let case = c.case(name);
    let prompt = case["prompt"].clone();
    check_answer(
        &mut c,
        name,
        &case,
        "first",
        &[
            "tool-input-start",
            "tool-input-delta",
            "tool-input-available",
        ],
        "tool-calls",
    );
    let call_type = pointer(&case, "call.type");
    c.check(
        name,
        call_type == "tool-get_time"
            || (call_type == "dynamic-tool" && pointer(&case, "call.toolName") == "get_time"),
        || {
            format!(
                "call.type: expected tool-get_time (or a get_time dynamic-tool), got {call_type}"
            )
        },
    );
    c.eq(name, &case, "call.state", "input-available".into());
    // The emulator fills a call's string arguments with the user's text.
    c.eq(name, &case, "call.input", json!({ "zone": prompt }));
    c.check(
        name,
        pointer(&case, "call.toolCallId")
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        || "call.toolCallId: expected an id".into(),
    );
    check_answer(
        &mut c,
        name,
        &case,
        "second",
        &["text-start", "text-delta", "text-end"],
        "stop",
    );
    c.contains(name, &case, "second.text", "get_time returned");
    c.contains(name, &case, "second.text", TOOL_MARKER);
    // The answer continues the assistant message that holds the call, as
    // useChat shows it: the answered call, then the text.
    let parts = pointer(&case, "second.message.parts");
    let kinds: Vec<(String, String)> = parts
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["type"] != "step-start")
        .map(|p| {
            let kind = p["type"].as_str().unwrap_or("?").to_owned();
            let state = p["state"].as_str().unwrap_or("?").to_owned();
            (kind, state)
        })
        .collect();
    c.check(
        name,
        kinds.len() == 2
            && kinds[0].0 == call_type.as_str().unwrap_or("?")
            && kinds[0].1 == "output-available"
            && kinds[1] == ("text".to_owned(), "done".to_owned()),
        || format!("second.message.parts: expected the answered call then the text, got {parts}"),
    );
    check_wire(&mut c, name, &case, 0);
    check_wire(&mut c, name, &case, 1);

    // (c) A file part reaches GigaChat as an uploaded attachment.
    let name = "file";
    let case = c.case(name);
    let expected = format!(
        "{} [attached: {ATTACHMENT}]",
        echo(case["prompt"].as_str().unwrap_or_default())
    );
    check_answer(
        &mut c,
        name,
        &case,
        "",
        &["text-start", "text-delta", "text-end"],
        "stop",
    );
    c.eq(name, &case, "text", expected.into());

    // (d) GigaChat's connection breaks mid-answer: the text so far stays,
    // and the chat ends in an error a person can read.
    let name = "broken_stream";
    let case = c.case(name);
    let full = echo(case["prompt"].as_str().unwrap_or_default());
    let partial = pointer(&case, "text");
    c.check(
        name,
        partial
            .as_str()
            .is_some_and(|t| !t.is_empty() && t.len() < full.len() && full.starts_with(t)),
        || format!("text: expected the start of {full:?} before the break, got {partial}"),
    );
    c.contains(name, &case, "errors.0.message", "GigaChat");
    c.contains(
        name,
        &case,
        "errors.0.message",
        "broke in the middle of the answer",
    );
    c.eq(name, &case, "errors.1", Value::Null);
    c.contains(
        name,
        &case,
        "thrown.message",
        "broke in the middle of the answer",
    );
    let sequence = sequence(&case);
    c.check(
        name,
        sequence.last().is_some_and(|t| t == "error") && !sequence.iter().any(|t| t == "finish"),
        || format!("chunk_types: expected the stream to end with an error chunk, got {sequence:?}"),
    );

    // (e) Refusals before any stream: `sendMessages` throws, and the
    // message useChat shows carries the proxy's sentence.
    let name = "refused_model";
    let case = c.case(name);
    c.eq(name, &case, "threw", true.into());
    c.contains(name, &case, "error.message", "model is not allowed here");
    c.contains(
        name,
        &case,
        "error.message",
        "GIGACHAT_PROXY_ALLOWED_MODELS",
    );
    c.eq(name, &case, "exchanges.0.status", 403.into());

    let name = "missing_auth";
    let case = c.case(name);
    c.eq(name, &case, "threw", true.into());
    c.contains(name, &case, "error.message", "no credential was sent");
    c.contains(name, &case, "error.message", "Authorization: Bearer");
    c.eq(name, &case, "exchanges.0.status", 401.into());

    // `useChat({resume: true})`: nothing to resume, so no stream.
    let name = "resume";
    let case = c.case(name);
    c.eq(name, &case, "stream_is_null", true.into());
    c.eq(name, &case, "exchanges.0.status", 204.into());
    c.finish();

    s.emulator.shutdown().await;
}

/// `ai` 7.x (ESM only): the chat transport against `/api/gigachat-chat`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ai_sdk_7_chat_transport_chats_through_the_proxy() {
    ui_chat("ai7", "ai", "7").await;
}

/// `ai` 6.x: the same cases; its chunk schema refuses unknown finish
/// reasons.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ai_sdk_6_chat_transport_chats_through_the_proxy() {
    ui_chat("ai6", "ai6", "6").await;
}

/// `ai` 5.x: the same cases; it crashes on a text delta before its start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ai_sdk_5_chat_transport_chats_through_the_proxy() {
    ui_chat("ai5", "ai5", "5").await;
}
