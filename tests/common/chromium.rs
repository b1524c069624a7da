//! Headless Chromium driven by playwright-core from Node's test runner:
//! `*.test.mjs` files that import `tests/browser/support.mjs`
//! (`launchBrowser()` reads `CHROMIUM_PATH`, which [`run_node_tests`] sets).
//! Chromium and `tests/browser/node_modules` come from `.ci/setup`; these
//! tests never skip: a missing tool is a failure that says what to do.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::node::{ensure_installed, missing_node, missing_npm_packages};
use super::script::run_until;

/// Where playwright-core (and `support.mjs`) live.
pub const PLAYWRIGHT_DIR: &str = "tests/browser";

/// `$GIGACHAT_PROXY_CHROMIUM`, else Debian's Chromium.
pub fn chromium() -> PathBuf {
    std::env::var_os("GIGACHAT_PROXY_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// What is missing for a browser test, in words (empty when all is there):
/// Chromium, Node.js `min_node` (which `needed_by` requires), the packages
/// of [`PLAYWRIGHT_DIR`], and `npm_dirs`' own (directory, `package.json`
/// sections).
pub fn missing_browser_tools(
    min_node: (u32, u32),
    needed_by: &str,
    npm_dirs: &[(&str, &[&str])],
) -> Vec<String> {
    let mut missing = Vec::new();
    if !chromium().is_file() {
        missing.push(format!("Chromium at {}", chromium().display()));
    }
    missing.extend(missing_node(min_node, needed_by));
    missing.extend(missing_npm_packages(PLAYWRIGHT_DIR, &["dependencies"]));
    for (dir, sections) in npm_dirs {
        missing.extend(missing_npm_packages(dir, sections));
    }
    missing
}

/// [`missing_browser_tools`], running `.ci/setup` once if anything is
/// missing and then insisting that nothing is. Blocking.
pub fn ensure_browser_tools(
    test: &str,
    min_node: (u32, u32),
    needed_by: &str,
    npm_dirs: &[(&str, &[&str])],
) {
    ensure_installed(test, || {
        missing_browser_tools(min_node, needed_by, npm_dirs)
    });
}

pub struct NodeTestRun {
    /// Exited by itself, with success.
    pub success: bool,
    /// stdout then stderr, and a line saying so if it was stopped.
    pub output: String,
}

/// `node --test --test-reporter=spec FILES` in `dir` with `env` and
/// `CHROMIUM_PATH`, stopped after `timeout` (SIGTERM, on which Playwright
/// closes Chromium, then SIGKILL). Blocking.
pub fn run_node_tests(
    dir: &Path,
    files: &[&str],
    env: &[(&str, String)],
    timeout: Duration,
) -> NodeTestRun {
    let mut command = Command::new("node");
    command
        .args(["--test", "--test-reporter=spec"])
        .args(files)
        .current_dir(dir)
        .env("CHROMIUM_PATH", chromium());
    for (name, value) in env {
        command.env(name, value);
    }
    let finished = run_until(command, timeout);
    let mut output = finished.stdout.clone();
    output.push_str(&finished.stderr);
    if finished.status.is_none() {
        output.push_str(&format!(
            "\n[{files:?}] node --test was stopped after {timeout:?}\n"
        ));
    }
    NodeTestRun {
        success: finished.success(),
        output,
    }
}

/// A count from the runner's summary (`ℹ tests 7` in the spec reporter,
/// `# tests 7` in TAP).
pub fn summary_count(output: &str, name: &str) -> Option<u64> {
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

/// Asserts that `run` succeeded, ran at least `min_tests` tests and passed
/// every one (none failed, skipped, todo or cancelled); `what` names the
/// tests and `logs` (the proxy's) is shown when the run failed.
pub fn assert_node_tests_passed(run: &NodeTestRun, min_tests: u64, what: &str, logs: &str) {
    assert!(
        run.success,
        "{what} failed:\n{}\n--- proxy logs ---\n{logs}",
        run.output
    );
    let tests = summary_count(&run.output, "tests").unwrap_or(0);
    assert!(
        tests >= min_tests,
        "node ran {tests} tests:\n{}",
        run.output
    );
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
            "{what} {name}:\n{}",
            run.output
        );
    }
}
