//! The Netlify example (`examples/netlify`) served by Netlify's own CLI:
//! `netlify dev --offline` (netlify-cli as `tests/netlify/package-lock.json`
//! pins it) publishes the example's static page and proxies its one
//! `/api/gigachat-*` rewrite to the real proxy binary in front of the
//! emulator. The example is copied to a temporary directory with only the
//! rewrite's URL changed, so what is verified is the file a user deploys.
//!
//! What Netlify's proxy does on the way is what the assertions pin down:
//! streams pass event by event, the proxy sees the `Origin` and
//! `Sec-Fetch-Site` the browser sent, its own address as `Host`, and the
//! CLI's own connection as the client, whatever `X-Forwarded-For` says.
//! docs/deploying.md ("Netlify") tells users the settings that follow.
//!
//! `netlify dev` runs offline only without edge functions: with them it
//! fetches Deno and the edge runtime from the network on the first request
//! and exits when it cannot, `--offline` or not. The example has none, so
//! the CLI runs with `--internal-disable-edge-functions`.
//!
//! The packages come from `.ci/setup` (`npm ci` in `tests/netlify`); when
//! they are missing or stale this test runs `.ci/setup` itself. Only a
//! missing (or too old) Node.js outside CI skips, with a message saying so;
//! under `CI=true` that is a failure.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;

use common::chromium::{assert_node_tests_passed, ensure_browser_tools, run_node_tests};
use common::node::{missing_node, node_packages_ready, repo_root, under_ci};
use common::script::PROXY_VARIABLES;
use common::*;

const NETLIFY_DIR: &str = "tests/netlify";
const EXAMPLE_DIR: &str = "examples/netlify";
/// What the example's `netlify.toml` says where the user's proxy URL goes.
const PLACEHOLDER_URL: &str = "https://gigachat-proxy.example.com";
/// netlify-cli 26's own `engines`.
const MIN_NODE: (u32, u32) = (20, 12);
/// A first start on a busy 2-core machine loads ~1200 packages.
const NETLIFY_START_TIMEOUT: Duration = Duration::from_secs(120);
/// Between the emulator's SSE events, so a buffered stream is told apart.
const CHUNK_DELAY: Duration = Duration::from_millis(200);
const NODE_TIMEOUT: Duration = Duration::from_secs(180);
const TEST_FILES: [&str; 1] = ["netlify.test.mjs"];

/// Every `tests/netlify/*.test.mjs` is run, so none is silently left out.
#[test]
fn every_netlify_test_file_is_run() {
    let mut files: Vec<String> = std::fs::read_dir(repo_root().join(NETLIFY_DIR))
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".test.mjs"))
        .collect();
    files.sort();
    assert_eq!(files, TEST_FILES);
}

// ---- tools --------------------------------------------------------------------

/// `true` when Node.js (new enough for netlify-cli) and the pinned packages
/// are there, running `.ci/setup` if only the packages are missing; `false`
/// to skip, which only a machine without a usable Node.js outside CI gets.
fn netlify_ready(test: &str) -> bool {
    if let Some(missing) = missing_node(MIN_NODE, "netlify-cli 26") {
        assert!(!under_ci(), "missing {missing}; .ci/setup installs Node.js");
        eprintln!(
            "SKIPPED {test}: missing {missing} (run `bash .ci/setup`); under CI=true this fails"
        );
        return false;
    }
    node_packages_ready(test, &[NETLIFY_DIR])
}

// ---- the example site, pointed at the proxy under test -------------------------

/// A temporary directory that is removed with everything in it.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("gigachat-netlify-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "node_modules" || name == ".netlify" {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The example's `netlify.toml` with the one place a user edits set to
/// `proxy_url`.
fn netlify_toml_for(proxy_url: &str) -> String {
    let original =
        std::fs::read_to_string(repo_root().join(EXAMPLE_DIR).join("netlify.toml")).unwrap();
    assert_eq!(
        original.matches(PLACEHOLDER_URL).count(),
        1,
        "the proxy URL is written in exactly one place of examples/netlify/netlify.toml"
    );
    original.replace(PLACEHOLDER_URL, proxy_url)
}

// ---- netlify dev --------------------------------------------------------------

struct NetlifyDev {
    child: Child,
    /// `http://localhost:PORT`, the origin the CLI prints and pages load from.
    origin: String,
    output: Arc<Mutex<String>>,
    _dir: TempDir,
}

impl NetlifyDev {
    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin)
    }
}

impl Drop for NetlifyDev {
    /// SIGTERM to the CLI's process group (it runs its exit hooks), then
    /// SIGKILL to whatever is left of it.
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

/// Copies the example with its rewrite pointed at `proxy_url`, starts
/// `netlify dev --offline` on `port` in it and waits (bounded) until the
/// page is served.
async fn start_netlify_dev(port: u16, proxy_url: &str) -> NetlifyDev {
    let dir = TempDir::new();
    let site = dir.0.join("site");
    copy_dir(&repo_root().join(EXAMPLE_DIR), &site);
    std::fs::write(site.join("netlify.toml"), netlify_toml_for(proxy_url)).unwrap();
    // Its own home: no login of the developer's is used, and the global
    // config turns telemetry off (the CLI has no variable for it).
    let home = dir.0.join("home");
    std::fs::create_dir_all(home.join(".config/netlify")).unwrap();
    std::fs::write(
        home.join(".config/netlify/config.json"),
        r#"{"telemetryDisabled": true}"#,
    )
    .unwrap();

    let static_port = free_ports(1)[0];
    let cli = repo_root()
        .join(NETLIFY_DIR)
        .join("node_modules/netlify-cli/bin/run.js");
    let mut command = Command::new("node");
    command
        .arg(cli)
        .args([
            "dev",
            "--offline",
            "--internal-disable-edge-functions",
            "--no-open",
            "--skip-gitignore",
        ])
        .args([
            "--port",
            &port.to_string(),
            "--staticServerPort",
            &static_port.to_string(),
        ])
        .current_dir(&site)
        .env("HOME", &home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("NO_UPDATE_NOTIFIER", "1")
        .env("BROWSER", "none")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so the drop ends whatever it started.
        .process_group(0);
    for name in
        PROXY_VARIABLES
            .iter()
            .chain(&["NETLIFY_AUTH_TOKEN", "NETLIFY_SITE_ID", "NETLIFY_API_URL"])
    {
        command.env_remove(name);
    }
    let mut child = command.spawn().expect("node runs netlify-cli");
    let output = Arc::new(Mutex::new(String::new()));
    for pipe in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let output = Arc::clone(&output);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut output = output.lock().unwrap();
                output.push_str(&line);
                output.push('\n');
            }
        });
    }
    let mut netlify = NetlifyDev {
        child,
        origin: format!("http://localhost:{port}"),
        output,
        _dir: dir,
    };
    let http = reqwest::Client::new();
    let deadline = Instant::now() + NETLIFY_START_TIMEOUT;
    loop {
        if let Ok(response) = http.get(netlify.url("/")).send().await
            && response.status() == 200
            && response
                .text()
                .await
                .unwrap_or_default()
                .contains("<title>GigaChat on Netlify</title>")
        {
            return netlify;
        }
        if let Ok(Some(status)) = netlify.child.try_wait() {
            panic!(
                "netlify dev exited ({status}) before serving the site:\n{}",
                netlify.output()
            );
        }
        assert!(
            Instant::now() < deadline,
            "netlify dev did not serve the site within {NETLIFY_START_TIMEOUT:?}:\n{}",
            netlify.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The emulator (SSE events `CHUNK_DELAY` apart), the proxy with a
/// deployment's defaults (`GIGACHAT_PROXY_PLATFORM=container`: same-origin
/// only, per-address limits) plus `proxy_settings`, and `netlify dev`
/// whose rewrite points at it. `proxy_settings` gets the site's origin.
struct Stack {
    emulator: gigachat_emulator::Emulator,
    proxy: ProxyProcess,
    netlify: NetlifyDev,
    http: reqwest::Client,
}

async fn start_stack(proxy_settings: impl FnOnce(&str) -> Vec<(&'static str, String)>) -> Stack {
    let credentials = test_credentials();
    let emulator = start_emulator(&credentials, |c| c.chunk_delay = CHUNK_DELAY).await;
    let port = free_ports(1)[0];
    let settings = proxy_settings(&format!("http://localhost:{port}"));
    let (base, auth) = (emulator.base_url(), emulator.auth_url());
    let mut env = proxy_env(&base, &auth, &credentials);
    env.push(("GIGACHAT_PROXY_PLATFORM", "container"));
    env.extend(settings.iter().map(|(name, value)| (*name, value.as_str())));
    let proxy = start_proxy(&env);
    let netlify = start_netlify_dev(port, &proxy.url).await;
    Stack {
        emulator,
        proxy,
        netlify,
        http: reqwest::Client::new(),
    }
}

impl Stack {
    fn context(&self) -> String {
        format!(
            "--- netlify dev ---\n{}\n--- proxy ---\n{}",
            self.netlify.output(),
            self.proxy.logs()
        )
    }

    /// POSTs `body` as JSON to `path` on the site, through `netlify dev`.
    async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.netlify.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// GETs `path` on the site, through `netlify dev`, and reads the
    /// answer as JSON.
    async fn get_json(&self, path: &str) -> Value {
        get_json(&self.http, self.netlify.url(path)).await
    }

    /// The hashed identity the proxy logged for the request `request_id`:
    /// the client address it resolved, for an anonymous caller.
    async fn logged_identity(&self, request_id: &str) -> String {
        let needle = format!("request_id={request_id} ");
        assert!(
            self.proxy.wait_for_log(&needle).await,
            "no log line for {request_id}:\n{}",
            self.context()
        );
        let logs = self.proxy.logs();
        let line = logs.lines().find(|line| line.contains(&needle)).unwrap();
        let start = line
            .find("identity=\"")
            .unwrap_or_else(|| panic!("no identity in {line}"))
            + "identity=\"".len();
        line[start..].split('"').next().unwrap().to_owned()
    }
}

// ---- through the rewrite ----------------------------------------------------------

/// A chat, a stream and every other route of the proxy go through the
/// example's one rule; the stream reaches the client event by event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_stream_and_every_route_go_through_the_netlify_rewrite() {
    if !tokio::task::spawn_blocking(|| netlify_ready("netlify chat"))
        .await
        .unwrap()
    {
        return;
    }
    let s = start_stack(|_| Vec::new()).await;

    let response = s
        .post_json(
            "/api/gigachat-api/chat/completions",
            &chat("hello from netlify", false),
        )
        .await;
    assert_eq!(response.status(), 200, "{}", s.context());
    assert!(
        response.headers().contains_key("x-request-id"),
        "the proxy answered: {:?}",
        response.headers()
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Echo: hello from netlify"
    );

    // The stream: events CHUNK_DELAY apart upstream must reach the client
    // spread out as well, not all at once when the answer ends.
    let started = Instant::now();
    let response = s
        .post_json(
            "/api/gigachat-api/chat/completions",
            &chat("one two three four five", true),
        )
        .await;
    assert_eq!(response.status(), 200, "{}", s.context());
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    // When each event arrived (by the chunk that carried its `data: `).
    let mut arrivals = Vec::new();
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        let events = chunk.windows(6).filter(|w| w == b"data: ").count();
        arrivals.extend(std::iter::repeat_n(started.elapsed(), events));
        body.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(body).unwrap();
    let payloads = sse_data(&text);
    let content = streamed_content(&payloads);
    assert_eq!(content, "Echo: one two three four five");
    assert!(payloads.len() >= 6, "{payloads:?}");
    let distinct_arrivals = arrivals
        .windows(2)
        .filter(|w| w[1] - w[0] >= CHUNK_DELAY / 2)
        .count();
    assert!(
        distinct_arrivals >= 4,
        "events arrived at {arrivals:?}: netlify dev buffered the stream"
    );

    // The other routes, and a query string, through the same rule.
    let health: Value = s.get_json("/api/gigachat-health?deep=1").await;
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["platform"], "container", "{health}");
    assert_eq!(
        health["token"], "ok",
        "the query string reached the proxy: {health}"
    );
    let models: Value = s.get_json("/api/gigachat-openai/v1/models").await;
    assert_eq!(models["object"], "list", "{models}");
    let budget: Value = s.get_json("/api/gigachat-budget").await;
    assert_eq!(budget["enabled"], false, "{budget}");
    let ui_chat = s.post_json("/api/gigachat-chat", &serde_json::json!({
            "id": "netlify-chat",
            "trigger": "submit-message",
            "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "useChat via netlify"}]}],
        })).await;
    assert_eq!(ui_chat.status(), 200, "{}", s.context());
    assert_eq!(ui_chat.headers()["x-vercel-ai-ui-message-stream"], "v1");
    assert!(
        ui_chat.text().await.unwrap().contains("useChat"),
        "the reply came through"
    );
    let session = s
        .http
        .post(s.netlify.url("/api/gigachat-oauth"))
        .send()
        .await
        .unwrap();
    assert_eq!(session.status(), 200, "{}", s.context());
    assert!(session.json::<Value>().await.unwrap()["access_token"].is_string());
    assert!(
        s.emulator.stats().streams_completed >= 2,
        "{:?}",
        s.emulator.stats()
    );
}

/// What the proxy sees behind `netlify dev`: its own address as `Host`
/// (the CLI rewrites it), the browser's `Origin` and `Sec-Fetch-Site`
/// unchanged, and the CLI's connection as the client, whatever
/// `X-Forwarded-For` the visitor sends (the CLI adds no entry of its own).
/// With the settings docs/deploying.md gives: the site's origin listed,
/// no trusted hops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_netlify_the_proxy_sees_the_page_origin_and_no_forwarded_client() {
    if !tokio::task::spawn_blocking(|| netlify_ready("netlify origins"))
        .await
        .unwrap()
    {
        return;
    }
    // The settings docs/deploying.md gives for a proxy behind Netlify.
    let s = start_stack(|site_origin| {
        vec![
            ("GIGACHAT_PROXY_ALLOWED_ORIGINS", site_origin.to_owned()),
            ("GIGACHAT_PROXY_TRUSTED_HOPS", "0".to_owned()),
        ]
    })
    .await;
    let site_origin = s.netlify.origin.clone();
    let models = s.netlify.url("/api/gigachat-api/models");
    let get = |origin: &str, fetch_site: Option<&str>| {
        let mut request = s.http.get(&models).header("Origin", origin);
        if let Some(site) = fetch_site {
            request = request.header("Sec-Fetch-Site", site);
        }
        request.send()
    };

    // A modern browser on the site: same-origin by Sec-Fetch-Site, which
    // Netlify passes on; nothing to allow.
    let response = get(&site_origin, Some("same-origin")).await.unwrap();
    assert_eq!(response.status(), 200, "{}", s.context());
    assert!(
        !response
            .headers()
            .contains_key("access-control-allow-origin"),
        "{:?}",
        response.headers()
    );

    // A browser without Fetch Metadata sends only Origin; the Host the
    // proxy sees is its own, so the site counts as another origin and
    // passes because it is listed.
    let response = get(&site_origin, None).await.unwrap();
    assert_eq!(response.status(), 200, "{}", s.context());
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        site_origin.as_str()
    );
    let proxy_origin = s.proxy.url.clone();
    let response = get(&proxy_origin, None).await.unwrap();
    assert_eq!(response.status(), 200, "{}", s.context());
    assert!(
        !response
            .headers()
            .contains_key("access-control-allow-origin"),
        "Host at the proxy is the proxy's own address: {:?}",
        response.headers()
    );

    // Another site's page, through the rewrite: its Origin arrives as sent.
    let response = get("https://elsewhere.example", Some("cross-site"))
        .await
        .unwrap();
    assert_eq!(response.status(), 403, "{}", s.context());
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "origin_not_allowed"
    );

    // The client address: through Netlify, with or without a forged
    // X-Forwarded-For, it is the CLI's own (loopback) connection, the same
    // address a direct call from this machine has.
    for (request_id, forwarded_for, url) in [
        ("netlify-forged", Some("203.0.113.9"), models.clone()),
        ("netlify-plain", None, models.clone()),
        ("direct", None, s.proxy.url("/api/gigachat-api/models")),
    ] {
        let mut request = s.http.get(&url).header("X-Request-ID", request_id);
        if let Some(address) = forwarded_for {
            request = request.header("X-Forwarded-For", address);
        }
        assert_eq!(
            request.send().await.unwrap().status(),
            200,
            "{}",
            s.context()
        );
    }
    let forged = s.logged_identity("netlify-forged").await;
    let plain = s.logged_identity("netlify-plain").await;
    let direct = s.logged_identity("direct").await;
    assert_eq!(
        forged,
        direct,
        "a visitor's X-Forwarded-For chose the client address:\n{}",
        s.context()
    );
    assert_eq!(plain, direct, "{}", s.context());
}

/// A page on the netlify-dev origin (the example's own index.html and
/// app.js) streams a reply in headless Chromium, calling only its own
/// origin; the proxy takes it as same-origin with no origin listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_on_the_netlify_origin_streams_a_reply_in_chromium() {
    if !tokio::task::spawn_blocking(|| netlify_ready("netlify chromium"))
        .await
        .unwrap()
    {
        return;
    }
    tokio::task::spawn_blocking(|| {
        ensure_browser_tools(
            "netlify chromium",
            MIN_NODE,
            "netlify-cli 26",
            &[(NETLIFY_DIR, &["dependencies"])],
        );
    })
    .await
    .unwrap();
    let s = start_stack(|_| Vec::new()).await;
    let node_env = vec![
        ("NETLIFY_SITE_URL", s.netlify.origin.clone()),
        ("GIGACHAT_PROXY_URL", s.proxy.url.clone()),
        ("GIGACHAT_EMULATOR_URL", emulator_url(&s.emulator)),
        ("CHUNK_DELAY_MS", CHUNK_DELAY.as_millis().to_string()),
    ];
    let run = tokio::task::spawn_blocking(move || {
        run_node_tests(
            &repo_root().join(NETLIFY_DIR),
            &TEST_FILES,
            &node_env,
            NODE_TIMEOUT,
        )
    })
    .await
    .unwrap();
    println!("{}", run.output);
    assert_node_tests_passed(&run, 2, "the Netlify example's browser tests", &s.context());
}
