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

use std::time::Duration;

use common::chromium::{assert_node_tests_passed, ensure_browser_tools, run_node_tests};
use common::node::repo_root;
use common::*;

/// The whole Node run (a Vite build and five chats); each JS test has its
/// own, shorter timeout.
const NODE_TIMEOUT: Duration = Duration::from_secs(300);
/// Between SSE events, so the test can watch a reply grow.
const CHUNK_DELAY: Duration = Duration::from_millis(150);
/// Vite 8 needs Node.js 20.19 or newer.
const MIN_NODE: (u32, u32) = (20, 19);
const TEST_FILES: [&str; 1] = ["react_chat.test.mjs"];

/// Runs `.ci/setup` if anything is missing, then insists that nothing is.
fn ensure_tools() {
    ensure_browser_tools(
        "react_chat",
        MIN_NODE,
        "Vite",
        &[("examples/react-chat", &["dependencies", "devDependencies"])],
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
    ];
    let run = tokio::task::spawn_blocking(move || {
        run_node_tests(
            &repo_root().join("tests/react_chat"),
            &TEST_FILES,
            &node_env,
            NODE_TIMEOUT,
        )
    })
    .await
    .unwrap();
    println!("{}", run.output);
    let logs = proxy.logs();
    assert_node_tests_passed(&run, 5, "the React example's browser tests", &logs);
    assert_no_secret(&logs, &[credentials], "the proxy's logs");
    emulator.shutdown().await;
}
