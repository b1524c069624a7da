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

use std::path::PathBuf;
use std::time::Duration;

use common::chromium::{
    PLAYWRIGHT_DIR, assert_node_tests_passed, ensure_browser_tools, run_node_tests,
};
use common::node::{json_file, repo_root};
use common::routes::get_path;
use common::*;

/// The whole Node run; each JS test has its own, shorter timeout.
const NODE_TIMEOUT: Duration = Duration::from_secs(300);
/// Between SSE events, so a test can watch a reply grow.
const CHUNK_DELAY: Duration = Duration::from_millis(150);
/// playwright-core needs Node.js 20.
const MIN_NODE: (u32, u32) = (20, 0);

/// One Chromium at a time (the tests of this file run in parallel), and one
/// `.ci/setup` if the tools are missing.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn browser_dir() -> PathBuf {
    repo_root().join(PLAYWRIGHT_DIR)
}

/// Runs `.ci/setup` if anything is missing, then insists that nothing is.
fn ensure_tools() {
    ensure_browser_tools("browser", MIN_NODE, "playwright-core", &[]);
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
    ];
    node_env.extend_from_slice(page_env);
    let run = tokio::task::spawn_blocking(move || {
        run_node_tests(&browser_dir(), &[file], &node_env, NODE_TIMEOUT)
    })
    .await
    .unwrap();
    println!("{}", run.output);
    let logs = proxy.logs();
    assert_node_tests_passed(&run, 1, "the browser tests", &logs);
    assert_no_secret(&logs, &[credentials.to_owned()], "the proxy's logs");
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

    let page = get_path(&s, "/", None).await;
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
        let response = get_path(&s, path, None).await;
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
    let js = get_path(&s, "/app.js", None).await.bytes().await.unwrap();
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
        let response = get_path(&s, path, None).await;
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
