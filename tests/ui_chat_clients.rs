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

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

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

/// One `.ci/setup` at a time when packages are missing.
static SETUP: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn clients_dir() -> PathBuf {
    repo_root().join("tests/ai_sdk_ui")
}

fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn json_file(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn node_on_path() -> bool {
    Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
}

/// The installed version of `package` (an alias such as `ai5` included).
fn installed_version(package: &str) -> Option<String> {
    json_file(&clients_dir().join(format!("node_modules/{package}/package.json")))
        .and_then(|p| p["version"].as_str().map(str::to_owned))
}

/// What is missing of the pinned npm packages, in words; empty when all is
/// installed at the versions `package.json` pins.
fn missing_node_packages() -> Vec<String> {
    let dir = clients_dir();
    let lock_is_newer = match (
        modified(&dir.join("package-lock.json")),
        modified(&dir.join("node_modules/.package-lock.json")),
    ) {
        (Some(lock), Some(installed)) => lock > installed,
        _ => true,
    };
    if lock_is_newer {
        return vec!["tests/ai_sdk_ui/node_modules as package-lock.json pins it".into()];
    }
    let pinned = json_file(&dir.join("package.json"))
        .and_then(|p| p["dependencies"].as_object().cloned())
        .unwrap_or_default();
    if pinned.is_empty() {
        return vec!["tests/ai_sdk_ui/package.json with its dependencies".into()];
    }
    pinned
        .iter()
        .filter_map(|(name, spec)| {
            // "7.0.173", or an alias "npm:ai@5.0.277".
            let spec = spec.as_str().unwrap_or("?");
            let version = spec.rsplit('@').next().unwrap_or(spec);
            let installed = installed_version(name);
            (installed.as_deref() != Some(version)).then(|| {
                format!(
                    "tests/ai_sdk_ui/node_modules/{name} {version} (found {})",
                    installed.as_deref().unwrap_or("none")
                )
            })
        })
        .collect()
}

fn run_setup(why: &str) {
    eprintln!("ui_chat_clients: {why}; running .ci/setup (needs npm's registry)");
    let status = Command::new("bash")
        .arg(repo_root().join(".ci/setup"))
        .current_dir(repo_root())
        .status()
        .expect("bash runs .ci/setup");
    assert!(status.success(), ".ci/setup failed; see its output above");
}

/// `true` when Node.js and the pinned packages are there (running
/// `.ci/setup` if only the packages are missing); `false` to skip, which
/// only a machine without Node.js outside CI gets.
fn node_ready(test: &str) -> bool {
    let _setup = SETUP.lock().unwrap_or_else(|e| e.into_inner());
    if !node_on_path() {
        assert!(
            !under_ci(),
            "Node.js (`node` on PATH) is missing; .ci/setup installs it"
        );
        eprintln!(
            "SKIPPED {test}: Node.js is not on PATH (run `bash .ci/setup`); under CI=true this fails"
        );
        return false;
    }
    let missing = missing_node_packages();
    if !missing.is_empty() {
        run_setup(&format!("missing {}", missing.join(", ")));
        let missing = missing_node_packages();
        assert!(
            missing.is_empty(),
            "still missing after .ci/setup: {}",
            missing.join(", ")
        );
    }
    true
}

// ---- running the script -----------------------------------------------------

struct ScriptRun {
    cases: serde_json::Map<String, Value>,
    /// Everything it printed, for failure messages.
    output: String,
}

fn run_script(variant: &str, chat_url: &str, emulator_url: &str) -> ScriptRun {
    let mut command = Command::new("node");
    command
        .args(["chat.mjs", variant])
        .current_dir(clients_dir())
        .env("CHAT_URL", chat_url)
        .env("EMULATOR_URL", emulator_url)
        .env("CHAT_API_KEY", API_KEY)
        .env("NODE_NO_WARNINGS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // A proxy for loopback in the developer's environment would steer the
    // client elsewhere.
    for name in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        command.env_remove(name);
    }
    let mut child = command.spawn().expect("node starts chat.mjs");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = out.join().unwrap();
    let stderr = err.join().unwrap();
    let output = format!("--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}");
    let Some(status) = status else {
        panic!("chat.mjs {variant} was stopped after {SCRIPT_TIMEOUT:?}\n{output}");
    };
    assert!(
        status.success(),
        "chat.mjs {variant} exited with {status}\n{output}"
    );
    let cases = stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str::<Value>(line).ok())
        .and_then(|v| v["cases"].as_object().cloned())
        .unwrap_or_else(|| panic!("chat.mjs {variant} printed no JSON result\n{output}"));
    ScriptRun { cases, output }
}

// ---- assertions -------------------------------------------------------------

/// Collects every failed expectation of a run, so one report shows all of a
/// client's problems (with each failed case's wire exchanges) at once.
struct Checks<'a> {
    run: &'a ScriptRun,
    client: &'static str,
    failures: Vec<String>,
    shown: Vec<String>,
}

/// `a.b.0.c` into a JSON value (`Null` when absent).
fn pointer(value: &Value, path: &str) -> Value {
    let pointer = format!("/{}", path.replace('.', "/"));
    value.pointer(&pointer).cloned().unwrap_or(Value::Null)
}

impl<'a> Checks<'a> {
    fn new(client: &'static str, run: &'a ScriptRun) -> Self {
        Checks {
            run,
            client,
            failures: Vec::new(),
            shown: Vec::new(),
        }
    }

    /// The case's result; a case whose script code threw is a failure.
    fn case(&mut self, name: &str) -> Value {
        let case = self.run.cases.get(name).cloned().unwrap_or(Value::Null);
        if case.is_null() {
            self.fail(name, "the script did not run this case".into());
        } else if case["ok"] != true {
            self.fail(name, format!("the script failed: {}", case["error"]));
        }
        case
    }

    fn check(&mut self, name: &str, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.fail(name, what());
        }
    }

    fn eq(&mut self, name: &str, case: &Value, key: &str, expected: Value) {
        let actual = pointer(case, key);
        self.check(name, actual == expected, || {
            format!("{key}: expected {expected}, got {actual}")
        });
    }

    fn contains(&mut self, name: &str, case: &Value, key: &str, needle: &str) {
        let actual = pointer(case, key);
        self.check(
            name,
            actual.as_str().is_some_and(|s| s.contains(needle)),
            || format!("{key}: expected a string containing {needle:?}, got {actual}"),
        );
    }

    fn positive(&mut self, name: &str, case: &Value, key: &str) {
        let actual = pointer(case, key);
        self.check(name, actual.as_u64().is_some_and(|n| n > 0), || {
            format!("{key}: expected a positive integer, got {actual}")
        });
    }

    fn at_least(&mut self, name: &str, case: &Value, key: &str, min: usize) {
        let actual = pointer(case, key);
        let n = actual
            .as_array()
            .map(Vec::len)
            .or_else(|| actual.as_u64().and_then(|n| usize::try_from(n).ok()));
        self.check(name, n.is_some_and(|n| n >= min), || {
            format!("{key}: expected at least {min}, got {actual}")
        });
    }

    fn fail(&mut self, name: &str, what: String) {
        self.failures
            .push(format!("[{}/{name}] {what}", self.client));
        if !self.shown.iter().any(|n| n == name) {
            self.shown.push(name.to_owned());
        }
    }

    fn finish(self) {
        if self.failures.is_empty() {
            return;
        }
        let mut report = format!(
            "{} expectation(s) failed for {}:\n  {}\n",
            self.failures.len(),
            self.client,
            self.failures.join("\n  ")
        );
        for name in &self.shown {
            let case = self.run.cases.get(name).unwrap_or(&Value::Null);
            report.push_str(&format!(
                "\n=== case {name} ===\n{}\n",
                serde_json::to_string_pretty(case).unwrap()
            ));
        }
        let logged: String = self
            .run
            .output
            .lines()
            .filter(|line| !line.starts_with("{\"variant\""))
            .collect::<Vec<_>>()
            .join("\n");
        report.push_str(&format!("\n=== script output ===\n{logged}"));
        panic!("{report}");
    }
}

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
        c.positive(name, case, &format!("{usage}.{key}"));
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
    if !node_ready(variant) {
        return;
    }
    let version = installed_version(package).unwrap_or_default();
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
