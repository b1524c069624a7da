//! The example React app (`examples/react-chat`, `useChat` from the Vercel
//! AI SDK against `/api/gigachat-chat`) built with its own `vite build`,
//! served by its own `vite preview` (whose proxy is the one `npm run dev`
//! uses) and driven in headless Chromium: `tests/react_chat/*.test.mjs`,
//! run by Node's test runner against the real proxy binary in front of the
//! emulator.
//!
//! Chromium, playwright-core (`tests/browser/node_modules`) and the
//! example's packages (`examples/react-chat/node_modules`) come from
//! `.ci/setup`; when any is missing or stale this test runs `.ci/setup`
//! itself, and then insists. Nothing is skipped: a missing tool is a
//! failure that says what to do.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The whole Node run (a Vite build and five chats); each JS test has its
/// own, shorter timeout.
const NODE_TIMEOUT: Duration = Duration::from_secs(300);
/// Between SSE events, so the test can watch a reply grow.
const CHUNK_DELAY: Duration = Duration::from_millis(150);
/// Vite 8 needs Node.js 20.19 or newer.
const MIN_NODE: (u32, u32) = (20, 19);
const TEST_FILES: [&str; 1] = ["react_chat.test.mjs"];

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chromium() -> PathBuf {
    std::env::var_os("GIGACHAT_PROXY_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

fn json_file(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// What `npm ci` in `dir` has not installed (or installed at another
/// version than `package.json` pins), in words.
fn missing_packages(dir: &str, sections: &[&str]) -> Vec<String> {
    let dir_path = repo_root().join(dir);
    let lock_is_newer = match (
        modified(&dir_path.join("package-lock.json")),
        modified(&dir_path.join("node_modules/.package-lock.json")),
    ) {
        (Some(lock), Some(installed)) => lock > installed,
        _ => true,
    };
    let manifest = json_file(&dir_path.join("package.json")).unwrap_or_default();
    let mut missing = Vec::new();
    for section in sections {
        let pinned = manifest[section].as_object().cloned().unwrap_or_default();
        if pinned.is_empty() {
            missing.push(format!("{dir}/package.json with its {section}"));
        }
        for (name, version) in &pinned {
            let installed = json_file(&dir_path.join(format!("node_modules/{name}/package.json")))
                .and_then(|p| p["version"].as_str().map(str::to_owned));
            if lock_is_newer || installed.as_deref() != version.as_str() {
                missing.push(format!(
                    "{dir}/node_modules with {name} {} (found {}; `npm ci` there)",
                    version.as_str().unwrap_or("?"),
                    installed.as_deref().unwrap_or("none")
                ));
            }
        }
    }
    missing
}

/// What is missing for this test, in words; empty when all is there.
fn missing_tools() -> Vec<String> {
    let mut missing = Vec::new();
    if !chromium().is_file() {
        missing.push(format!("Chromium at {}", chromium().display()));
    }
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {
            let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            let mut parts = version
                .trim_start_matches('v')
                .split('.')
                .map(|p| p.parse::<u32>().unwrap_or(0));
            let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
            if found < MIN_NODE {
                missing.push(format!(
                    "Node.js {}.{} or newer (found {version}; Vite needs it)",
                    MIN_NODE.0, MIN_NODE.1
                ));
            }
        }
        _ => missing.push("Node.js (`node` on PATH)".into()),
    }
    missing.extend(missing_packages("tests/browser", &["dependencies"]));
    missing.extend(missing_packages(
        "examples/react-chat",
        &["dependencies", "devDependencies"],
    ));
    missing
}

/// Runs `.ci/setup` if anything is missing, then insists that nothing is.
fn ensure_tools() {
    let missing = missing_tools();
    if missing.is_empty() {
        return;
    }
    eprintln!(
        "react_chat: missing {}; running .ci/setup (needs Debian's and npm's registries)",
        missing.join(", ")
    );
    let status = Command::new("bash")
        .arg(repo_root().join(".ci/setup"))
        .current_dir(repo_root())
        .status()
        .expect("bash runs .ci/setup");
    assert!(status.success(), ".ci/setup failed; see its output above");
    let missing = missing_tools();
    assert!(
        missing.is_empty(),
        "still missing after .ci/setup: {}",
        missing.join(", ")
    );
}

/// Every `tests/react_chat/*.test.mjs` is run, so none is silently left out.
#[test]
fn every_react_chat_test_file_is_run() {
    let mut files: Vec<String> = std::fs::read_dir(repo_root().join("tests/react_chat"))
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".test.mjs"))
        .collect();
    files.sort();
    assert_eq!(files, TEST_FILES);
}

struct NodeRun {
    success: bool,
    output: String,
}

/// `node --test` with a deadline: on timeout it gets SIGTERM (Playwright
/// closes Chromium on it), then SIGKILL; the output says so.
fn run_node(env: &[(&str, String)]) -> NodeRun {
    let mut command = Command::new("node");
    command
        .args(["--test", "--test-reporter=spec"])
        .args(TEST_FILES)
        .current_dir(repo_root().join("tests/react_chat"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("node starts");
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
    let deadline = Instant::now() + NODE_TIMEOUT;
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            timed_out = true;
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let grace = Instant::now() + Duration::from_secs(10);
            while child.try_wait().unwrap().is_none() && Instant::now() < grace {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut output = out.join().unwrap();
    output.push_str(&err.join().unwrap());
    if timed_out {
        output.push_str(&format!(
            "\n[react_chat.rs] node --test was stopped after {NODE_TIMEOUT:?}\n"
        ));
    }
    NodeRun {
        success: status.success() && !timed_out,
        output,
    }
}

/// A count from the runner's summary (`ℹ tests 5` in the spec reporter).
fn summary_count(output: &str, name: &str) -> Option<u64> {
    output.lines().rev().find_map(|line| {
        let line = line
            .trim()
            .trim_start_matches('ℹ')
            .trim_start_matches('#')
            .trim();
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_react_example_chats_through_the_proxy_in_headless_chromium() {
    tokio::task::spawn_blocking(ensure_tools).await.unwrap();

    let credentials = test_credentials();
    let emulator = start_emulator(&credentials, |c| c.chunk_delay = CHUNK_DELAY).await;
    // The error test's 503 must reach the page, not be retried away.
    let proxy = start_proxy_for(&emulator, &credentials, &[("GIGACHAT_MAX_RETRIES", "0")]);

    let node_env = vec![
        ("GIGACHAT_PROXY_URL", proxy.url.clone()),
        ("GIGACHAT_EMULATOR_URL", emulator_url(&emulator)),
        ("CHROMIUM_PATH", chromium().display().to_string()),
    ];
    let run = tokio::task::spawn_blocking(move || run_node(&node_env))
        .await
        .unwrap();
    println!("{}", run.output);
    let logs = proxy.logs();
    assert!(
        run.success,
        "the React example's browser tests failed:\n{}\n--- proxy logs ---\n{logs}",
        run.output
    );
    let tests = summary_count(&run.output, "tests").unwrap_or(0);
    assert!(tests >= 5, "node ran {tests} tests:\n{}", run.output);
    assert_eq!(
        summary_count(&run.output, "pass"),
        Some(tests),
        "not every test passed:\n{}",
        run.output
    );
    for name in ["fail", "skipped", "todo", "cancelled"] {
        assert_eq!(
            summary_count(&run.output, name),
            Some(0),
            "browser tests {name}:\n{}",
            run.output
        );
    }
    assert_no_secret(&logs, &[credentials], "the proxy's logs");
    emulator.shutdown().await;
}
