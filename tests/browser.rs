//! The demo page (`public/`), CORS and the official npm SDK in real headless
//! Chromium: `tests/browser/*.test.mjs`, run by Node's test runner with
//! playwright-core driving Debian's Chromium, against the real proxy binary
//! in front of the emulator.
//!
//! Chromium (`/usr/bin/chromium`) and `tests/browser/node_modules` come from
//! `.ci/setup`; when either is missing (or node_modules is stale) this test
//! runs `.ci/setup` itself, so `cargo test --workspace` stays the one command.
//! Nothing here is skipped: a missing tool is a failure that says what to do.
//!
//! `DEMO_SCREENSHOT=/tmp/demo.png cargo test --test browser` also saves a
//! screenshot of the demo page mid-stream.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The whole Node run; each JS test has its own, shorter timeout.
const NODE_TIMEOUT: Duration = Duration::from_secs(300);
/// Between SSE events, so a test can watch a reply grow.
const CHUNK_DELAY: Duration = Duration::from_millis(150);

/// One Chromium at a time (the tests of this file run in parallel), and one
/// `.ci/setup` if the tools are missing.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn browser_dir() -> PathBuf {
    repo_root().join("tests/browser")
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

/// What is missing for the browser tests, in words; empty when all is there.
fn missing_tools() -> Vec<String> {
    let mut missing = Vec::new();
    if !chromium().is_file() {
        missing.push(format!("Chromium at {}", chromium().display()));
    }
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {
            let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            let major: u32 = version
                .trim_start_matches('v')
                .split('.')
                .next()
                .and_then(|m| m.parse().ok())
                .unwrap_or(0);
            if major < 20 {
                missing.push(format!(
                    "Node.js 20 or newer (found {version}; playwright-core needs 20)"
                ));
            }
        }
        _ => missing.push("Node.js (`node` on PATH)".into()),
    }
    let dir = browser_dir();
    let lock_is_newer = match (
        modified(&dir.join("package-lock.json")),
        modified(&dir.join("node_modules/.package-lock.json")),
    ) {
        (Some(lock), Some(installed)) => lock > installed,
        _ => true,
    };
    // Every pinned package (playwright-core, and the npm SDK with what
    // bundles it) at its pinned version.
    let pinned = json_file(&dir.join("package.json"))
        .and_then(|p| p["dependencies"].as_object().cloned())
        .unwrap_or_default();
    if pinned.is_empty() {
        missing.push("tests/browser/package.json with its dependencies".into());
    }
    for (name, version) in &pinned {
        let installed = json_file(&dir.join(format!("node_modules/{name}/package.json")))
            .and_then(|p| p["version"].as_str().map(str::to_owned));
        if lock_is_newer || installed.as_deref() != version.as_str() {
            missing.push(format!(
                "tests/browser/node_modules with {name} {} (found {}; `npm ci` there)",
                version.as_str().unwrap_or("?"),
                installed.as_deref().unwrap_or("none")
            ));
        }
    }
    missing
}

/// Runs `.ci/setup` if anything is missing, then insists that nothing is.
fn ensure_tools() {
    let missing = missing_tools();
    if missing.is_empty() {
        return;
    }
    eprintln!(
        "browser: missing {}; running .ci/setup (needs Debian's and npm's registries)",
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

/// The test files each run uses (each needs its own proxy configuration);
/// passed explicitly, since how `node --test DIR` finds files differs
/// between Node versions.
const DEMO_TESTS: &str = "demo.test.mjs";
const SDK_TESTS: &str = "sdk.test.mjs";
const BUDGET_TESTS: &str = "budget.test.mjs";

/// Every `tests/browser/*.test.mjs` belongs to one of the runs, so none is
/// silently left out.
#[test]
fn every_browser_test_file_is_run() {
    let mut files: Vec<String> = std::fs::read_dir(browser_dir())
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".test.mjs"))
        .collect();
    files.sort();
    assert_eq!(files, [BUDGET_TESTS, DEMO_TESTS, SDK_TESTS]);
}

struct NodeRun {
    success: bool,
    output: String,
}

/// `node --test` with a deadline: on timeout it gets SIGTERM (Playwright
/// closes Chromium on it), then SIGKILL; the output says so.
fn run_node(file: &str, env: &[(&str, String)]) -> NodeRun {
    let mut command = Command::new("node");
    command
        .args(["--test", "--test-reporter=spec", file])
        .current_dir(browser_dir())
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
            "\n[browser.rs] node --test was stopped after {NODE_TIMEOUT:?}\n"
        ));
    }
    NodeRun {
        success: status.success() && !timed_out,
        output,
    }
}

/// A count from the runner's summary (`ℹ tests 7` in the spec reporter,
/// `# tests 7` in TAP).
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

/// Asserts that a `node --test` run passed every test it ran, and that the
/// proxy logged no secret.
fn assert_run_passed(run: &NodeRun, logs: &str, credentials: &str) {
    assert!(
        run.success,
        "the browser tests failed:\n{}\n--- proxy logs ---\n{logs}",
        run.output
    );
    let tests = summary_count(&run.output, "tests").unwrap_or(0);
    let passed = summary_count(&run.output, "pass").unwrap_or(0);
    assert!(tests >= 1, "node ran no test:\n{}", run.output);
    assert_eq!(
        passed, tests,
        "not every browser test passed:\n{}",
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
    assert_no_secret(logs, &[credentials.to_owned()], "the proxy's logs");
}

/// Runs one browser test file under `node --test` against `proxy` in front
/// of `emulator` (`page_env` on top of their URLs and Chromium's path), and
/// asserts that every test passed and the proxy logged no secret.
async fn run_browser_tests(
    file: &'static str,
    proxy: &ProxyProcess,
    emulator: &gigachat_emulator::Emulator,
    credentials: &str,
    page_env: &[(&'static str, String)],
) {
    let mut node_env = vec![
        ("GIGACHAT_PROXY_URL", proxy.url.clone()),
        ("GIGACHAT_EMULATOR_URL", emulator_url(emulator)),
        ("CHROMIUM_PATH", chromium().display().to_string()),
    ];
    node_env.extend_from_slice(page_env);
    let run = tokio::task::spawn_blocking(move || run_node(file, &node_env))
        .await
        .unwrap();
    println!("{}", run.output);
    assert_run_passed(&run, &proxy.logs(), credentials);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_and_cors_in_headless_chromium() {
    let _browser = BROWSER.lock().await;
    tokio::task::spawn_blocking(ensure_tools).await.unwrap();

    let credentials = test_credentials();
    let emulator = start_emulator(&credentials, |c| c.chunk_delay = CHUNK_DELAY).await;
    let ports = free_ports(2);
    let allowed = format!("http://localhost:{}", ports[0]);
    let disallowed = format!("http://127.0.0.1:{}", ports[1]);
    let proxy = start_proxy_for(
        &emulator,
        &credentials,
        &[
            ("GIGACHAT_PROXY_ALLOWED_ORIGINS", allowed.as_str()),
            // The token-field test waits for a session token to expire.
            ("GIGACHAT_PROXY_SESSION_TTL", "1"),
            // The error test's 503 must reach the page, not be retried away.
            ("GIGACHAT_MAX_RETRIES", "0"),
        ],
    );

    let page_env = [
        ("GIGACHAT_TEST_CREDENTIALS", credentials.clone()),
        ("BROWSER_ALLOWED_ORIGIN", allowed.clone()),
        ("BROWSER_DISALLOWED_ORIGIN", disallowed.clone()),
    ];
    run_browser_tests(DEMO_TESTS, &proxy, &emulator, &credentials, &page_env).await;
    emulator.shutdown().await;
}

/// The official npm SDK, bundled for the browser, on a page of another
/// local origin (`http://localhost:PORT`, as a Vite dev server) calling the
/// proxy on `127.0.0.1` with the local server's defaults: its OAuth call
/// (`RqUID`) and API calls (`X-User-Agent`) pass the preflight, and a chat
/// and a stream work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_npm_sdk_calls_the_proxy_from_another_local_origin() {
    let _browser = BROWSER.lock().await;
    tokio::task::spawn_blocking(ensure_tools).await.unwrap();

    let credentials = test_credentials();
    let emulator = start_emulator(&credentials, |c| c.chunk_delay = CHUNK_DELAY).await;
    let proxy = start_proxy_for(&emulator, &credentials, &[]);

    run_browser_tests(SDK_TESTS, &proxy, &emulator, &credentials, &[]).await;
    emulator.shutdown().await;
}

/// The demo page with a token budget: the meter shows what is left and
/// goes down as answers are charged, and a spent budget reads as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_shows_the_token_budget_meter() {
    let _browser = BROWSER.lock().await;
    tokio::task::spawn_blocking(ensure_tools).await.unwrap();

    let credentials = test_credentials();
    let emulator = start_emulator(&credentials, |_| {}).await;
    let proxy = start_proxy_for(
        &emulator,
        &credentials,
        &[("GIGACHAT_PROXY_TOKEN_BUDGET_ANONYMOUS", "60/d")],
    );

    run_browser_tests(BUDGET_TESTS, &proxy, &emulator, &credentials, &[]).await;
    emulator.shutdown().await;
}

/// The page is served by the real binary at `/` with its headers, `HEAD`
/// has no body, and other methods and paths still reach the proxy core.
/// (No browser needed.)
#[tokio::test]
async fn the_demo_page_is_served_by_the_local_server() {
    let s = setup().await;
    let addr = s.proxy.addr();

    let page = s.http.get(s.proxy.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'self'") && csp.contains("connect-src 'self'"));
    let html = page.text().await.unwrap();
    assert!(html.contains("<script src=\"/app.js\" defer></script>"));

    for (path, content_type) in [
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
        ("/favicon.svg", "image/svg+xml"),
        ("/index.html", "text/html; charset=utf-8"),
    ] {
        let response = s.http.get(s.proxy.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["content-type"], content_type, "{path}");
        assert!(!response.bytes().await.unwrap().is_empty(), "{path}");
    }

    let (status, raw) = raw_request(
        &addr,
        "HEAD /app.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(body.is_empty(), "HEAD sent a body: {body}");
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_owned)
        })
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let js = s
        .http
        .get(s.proxy.url("/app.js"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(length, js.len());

    // Not the page: the proxy's JSON errors, as before.
    let post = s.http.post(s.proxy.url("/")).send().await.unwrap();
    assert!(post.status().is_client_error(), "{}", post.status());
    assert!(
        post.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    for path in ["/app.js/", "/APP.JS", "/favicon.ico", "/public/app.js"] {
        let response = s.http.get(s.proxy.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
}

/// On Vercel the same `public/` is the project's static output: every file
/// there is embedded in the local server (and only those), and `vercel.json`
/// serves them with the local server's headers.
#[test]
fn vercel_serves_the_same_page_with_the_same_headers() {
    use gigachat_proxy_server::site;

    let mut on_disk: Vec<String> = std::fs::read_dir(repo_root().join("public"))
        .unwrap()
        .map(|e| format!("/{}", e.unwrap().file_name().into_string().unwrap()))
        .collect();
    on_disk.sort();
    let mut embedded: Vec<String> = site::ASSETS
        .iter()
        .filter(|a| a.path != "/")
        .map(|a| a.path.to_owned())
        .collect();
    embedded.sort();
    assert_eq!(on_disk, embedded, "public/ and site::ASSETS differ");
    for asset in site::ASSETS {
        let file = if asset.path == "/" {
            "/index.html"
        } else {
            asset.path
        };
        let bytes = std::fs::read(repo_root().join(format!("public{file}"))).unwrap();
        assert_eq!(bytes, asset.body, "{file}");
    }

    let vercel = json_file(&repo_root().join("vercel.json")).unwrap();
    assert_eq!(vercel["outputDirectory"], "public");
    assert!(vercel["functions"]["api/**/*.rs"]["maxDuration"].is_number());
    assert_eq!(vercel["rewrites"][0]["destination"], "/api/gigachat-api");
    let rules = vercel["headers"].as_array().unwrap();
    for asset in site::ASSETS {
        let rule = rules
            .iter()
            .find(|rule| {
                let source = rule["source"].as_str().unwrap();
                source == asset.path
                    || (asset.path != "/"
                        && source.starts_with("/(")
                        && source
                            .trim_start_matches("/(")
                            .trim_end_matches(')')
                            .split('|')
                            .any(|alt| alt.replace("\\.", ".") == asset.path[1..]))
            })
            .unwrap_or_else(|| panic!("no vercel.json headers rule for {}", asset.path));
        let header = |name: &str| {
            rule["headers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|h| h["key"] == name)
                .and_then(|h| h["value"].as_str())
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(
            header("Content-Security-Policy"),
            site::CONTENT_SECURITY_POLICY
        );
        assert_eq!(header("X-Content-Type-Options"), "nosniff");
        assert_eq!(header("Cache-Control"), "no-cache");
    }
    let ignore = std::fs::read_to_string(repo_root().join(".vercelignore")).unwrap();
    assert!(
        !ignore
            .lines()
            .any(|l| l.trim_start_matches('/').starts_with("public")),
        ".vercelignore must not drop public/ (the static output, and the local server embeds it)"
    );
}
