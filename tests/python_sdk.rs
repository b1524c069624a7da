//! The official GigaChat Python SDK (PyPI `gigachat`) as a real client of
//! the proxy: `tests/python/test_sdk.py`, run by pytest against the real
//! proxy binary in front of the emulator.
//!
//! The SDK lives in the repo's `.venv`, made by `.ci/setup`; when it is
//! missing this test runs `.ci/setup` itself, so `cargo test --workspace`
//! stays the one command that runs every test on a fresh machine.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_works_through_the_proxy() {
    let python = tokio::task::spawn_blocking(|| python_importing("gigachat, pytest"))
        .await
        .unwrap();
    let s = setup().await;
    let proxy_url = s.proxy.url.clone();
    let emulator_url = format!("http://{}", s.emulator.addr());
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .args([
                "-m",
                "pytest",
                "tests/python",
                "-q",
                "-p",
                "no:cacheprovider",
                "-rA",
            ])
            .current_dir(repo_root())
            .env("GIGACHAT_PROXY_URL", proxy_url)
            .env("GIGACHAT_EMULATOR_URL", emulator_url)
            .output()
            .expect("pytest starts")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}\n{stderr}");
    assert!(
        output.status.success(),
        "the SDK tests failed:\n{stdout}\n{stderr}"
    );
    // Every test function in the file ran and passed: a test pytest did
    // not collect (renamed, shadowed, deselected) fails here.
    let defined = std::fs::read_to_string(repo_root().join("tests/python/test_sdk.py"))
        .unwrap()
        .lines()
        .filter(|line| line.starts_with("def test_") || line.starts_with("async def test_"))
        .count();
    let passed: usize = stdout
        .lines()
        .rev()
        .find_map(|line| {
            let before = line
                .split(" passed")
                .next()
                .filter(|_| line.contains(" passed"))?;
            before
                .rsplit(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("pytest ran no test:\n{stdout}"));
    assert!(defined > 0);
    assert!(
        passed >= defined,
        "pytest passed {passed} tests, the file defines {defined}:\n{stdout}"
    );
    assert!(
        !stdout.contains(" skipped"),
        "no SDK test may be skipped:\n{stdout}"
    );
    assert_no_secret(
        &s.proxy.logs(),
        std::slice::from_ref(&s.credentials),
        "the proxy's logs",
    );
}
