//! Shared by the black-box tests: the emulator in-process (so a test can
//! flip its faults and read its counters) and the real `gigachat-proxy`
//! binary as a child process on a random port, its logs captured.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gigachat_emulator::{Credential, Emulator, EmulatorConfig};

pub mod chromium;
pub mod node;
pub mod routes;
pub mod script;
// Shared with the other crates' tests; re-exported so that `common::*`
// brings them along (a test file that uses neither would warn otherwise).
#[allow(unused_imports)]
pub use gigachat_test_support::{net::free_ports, redis_server::RedisServer};

/// A key that exists only in this test run: if it shows up in a log line or
/// a response, the test that sees it fails.
pub fn test_credentials() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .encode(format!("test-client:secret-{}", uuid::Uuid::new_v4()))
}

pub async fn start_emulator(
    credentials: &str,
    configure: impl FnOnce(&mut EmulatorConfig),
) -> Emulator {
    let mut config = EmulatorConfig {
        credentials: vec![Credential::new(credentials, "GIGACHAT_API_PERS")],
        ..EmulatorConfig::default()
    };
    configure(&mut config);
    Emulator::start(config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap()
}

pub struct ProxyProcess {
    child: Child,
    pub url: String,
    logs: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl ProxyProcess {
    /// Everything the process wrote to stdout and stderr so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// Only what it wrote to stderr: the log lines (stdout has the banner).
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits (bounded) until the output contains `needle`; output arrives
    /// through pipes, a little after the event that wrote it.
    pub async fn wait_for_log(&self, needle: &str) -> bool {
        for _ in 0..100 {
            if self.logs().contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub fn addr(&self) -> String {
        self.url.trim_start_matches("http://").to_owned()
    }

    /// Waits (bounded) until the output contains `needle` at least `count`
    /// times: e.g. one access-log line per request sent, so a check of
    /// "every line" sees the late ones too.
    pub async fn wait_for_log_count(&self, needle: &str, count: usize) -> bool {
        for _ in 0..250 {
            if self.logs().matches(needle).count() >= count {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// The process id, for sending it signals (`kill -TERM`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM (what a process manager or `docker stop` sends).
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM failed");
    }

    /// The exit status once the process has exited, polled up to `within`;
    /// `None` if it is still running then.
    pub async fn wait_for_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the local server binary with exactly `env` (plus PATH), on a
/// random port, and waits for its "listening on" line.
pub fn start_proxy(env: &[(&str, &str)]) -> ProxyProcess {
    start_proxy_on("127.0.0.1", env)
}

/// [`start_proxy`] listening on `host` (`--host`), e.g. `0.0.0.0`.
pub fn start_proxy_on(host: &str, env: &[(&str, &str)]) -> ProxyProcess {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gigachat-proxy"));
    command.args(["--host", host, "--port", "0"]);
    launch(command, "debug", env)
}

/// [`start_proxy`] with at most `descriptor_limit` open files (`ulimit -n`
/// through `sh`), to run out of descriptors quickly. It logs at `info`:
/// the debug lines of thousands of connections would slow the very process
/// whose responsiveness such a test measures.
pub fn start_proxy_with_descriptor_limit(
    descriptor_limit: u32,
    env: &[(&str, &str)],
) -> ProxyProcess {
    let mut command = Command::new("sh");
    command
        .args(["-c", r#"ulimit -n "$1" && shift && exec "$@""#, "sh"])
        .arg(descriptor_limit.to_string())
        .arg(env!("CARGO_BIN_EXE_gigachat-proxy"))
        .args(["--host", "127.0.0.1", "--port", "0"]);
    launch(command, "info", env)
}

/// Runs `command` (the proxy binary with its arguments) with exactly `env`
/// plus PATH and `RUST_LOG=log_filter`, and waits for its "listening on"
/// line.
fn launch(mut command: Command, log_filter: &str, env: &[(&str, &str)]) -> ProxyProcess {
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", log_filter)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The suite counts upstream calls, mostly with `GET models` as the
    // cheapest one, and the model-list cache (on by default) would answer
    // the repeats itself; the cache's own tests set the variable.
    if !env
        .iter()
        .any(|(name, _)| *name == "GIGACHAT_PROXY_MODELS_CACHE_TTL")
    {
        command.env("GIGACHAT_PROXY_MODELS_CACHE_TTL", "off");
    }
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("the gigachat-proxy binary starts");
    let logs = Arc::new(Mutex::new(String::new()));
    let (url_tx, url_rx) = std::sync::mpsc::channel::<String>();

    let stdout = child.stdout.take().unwrap();
    let stdout_logs = Arc::clone(&logs);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("gigachat-proxy listening on ") {
                let _ = url_tx.send(url.trim().to_owned());
            }
            let mut logs = stdout_logs.lock().unwrap();
            logs.push_str(&line);
            logs.push('\n');
        }
    });
    let stderr = child.stderr.take().unwrap();
    let stderr_logs = Arc::clone(&logs);
    let stderr_only = Arc::new(Mutex::new(String::new()));
    let stderr_only_writer = Arc::clone(&stderr_only);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            {
                let mut logs = stderr_logs.lock().unwrap();
                logs.push_str(&line);
                logs.push('\n');
            }
            let mut only = stderr_only_writer.lock().unwrap();
            only.push_str(&line);
            only.push('\n');
        }
    });
    let url = url_rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| {
            panic!(
                "the proxy did not start; its output:\n{}",
                logs.lock().unwrap()
            )
        });
    ProxyProcess {
        child,
        url,
        logs,
        stderr: stderr_only,
    }
}

/// The usual setup: an emulator that knows `credentials`, and a proxy that
/// uses them against it.
pub fn proxy_env<'a>(
    emulator_base: &'a str,
    emulator_auth: &'a str,
    credentials: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("GIGACHAT_CREDENTIALS", credentials),
        ("GIGACHAT_BASE_URL", emulator_base),
        ("GIGACHAT_AUTH_URL", emulator_auth),
    ]
}

pub struct Setup {
    pub emulator: Emulator,
    pub proxy: ProxyProcess,
    pub credentials: String,
    pub http: reqwest::Client,
}

pub async fn setup_with(
    configure: impl FnOnce(&mut EmulatorConfig),
    extra_env: &[(&str, &str)],
) -> Setup {
    let credentials = test_credentials();
    let emulator = start_emulator(&credentials, configure).await;
    let (base, auth) = (emulator.base_url(), emulator.auth_url());
    let mut env = proxy_env(&base, &auth, &credentials);
    env.extend_from_slice(extra_env);
    let proxy = start_proxy(&env);
    Setup {
        emulator,
        proxy,
        credentials,
        http: reqwest::Client::new(),
    }
}

pub async fn setup() -> Setup {
    setup_with(|_| {}, &[]).await
}

pub fn chat(content: &str, stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": "GigaChat",
        "stream": stream,
        "messages": [{"role": "user", "content": content}],
    })
}

/// GETs `url` with `http` and reads the answer as JSON.
pub async fn get_json(http: &reqwest::Client, url: String) -> serde_json::Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

/// The `data:` payloads of an SSE body.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| event.lines().find_map(|line| line.strip_prefix("data: ")))
        .map(str::to_owned)
        .collect()
}

/// The text a chat completions stream spelled out: the `delta.content`s of
/// its `data:` payloads, which must end with `[DONE]`.
pub fn streamed_content(payloads: &[String]) -> String {
    assert_eq!(
        payloads.last().map(String::as_str),
        Some("[DONE]"),
        "{payloads:?}"
    );
    payloads[..payloads.len() - 1]
        .iter()
        .map(|p| {
            serde_json::from_str::<serde_json::Value>(p).unwrap()["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect()
}

/// Sends bytes exactly as given (no client-side path normalization, which
/// reqwest and every browser do) and returns the status code and the raw
/// response.
pub async fn raw_request(addr: &str, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}

/// [`raw_request`] of a bare `GET target` (sent as written, so a test can
/// name paths a client would normalise), closing the connection after.
pub async fn raw_get(addr: &str, target: &str) -> (u16, String) {
    raw_request(
        addr,
        &format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// A request head the proxy accepts, whose body then never comes: the
/// connection stays busy (a request in flight) for as long as the client
/// holds it. With `Expect: 100-continue` the client knows when the proxy
/// started reading the body, so the request is surely in flight on return.
pub async fn busy_connection_awaiting_its_body(addr: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"POST /api/gigachat-api/chat/completions HTTP/1.1\r\nHost: localhost\r\n\
              Content-Type: application/json\r\nContent-Length: 1000\r\n\
              Expect: 100-continue\r\n\r\n",
        )
        .await
        .unwrap();
    let mut seen = Vec::new();
    let continued = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 256];
        while !String::from_utf8_lossy(&seen).contains("100 Continue\r\n\r\n") {
            let read = stream.read(&mut buf).await.unwrap();
            assert!(read > 0, "closed: {}", String::from_utf8_lossy(&seen));
            seen.extend(&buf[..read]);
        }
    })
    .await;
    assert!(
        continued.is_ok(),
        "no 100 Continue: {}",
        String::from_utf8_lossy(&seen)
    );
    stream
}

/// Everything the server writes to a new connection that finds it full,
/// up to its closing that connection (bounded: 5 s).
pub async fn answer_to_a_connection_over_the_cap(addr: &str) -> String {
    use tokio::io::AsyncReadExt;
    let mut refused = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), refused.read_to_end(&mut answer))
        .await
        .expect("a connection over the cap was neither answered nor closed")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// Upstream access tokens the emulator saw (from recorded Authorization
/// headers), for leak checks.
pub fn upstream_tokens(emulator: &Emulator) -> Vec<String> {
    emulator
        .recorded_requests()
        .into_iter()
        .flat_map(|r| r.headers)
        .filter(|(name, _)| name == "authorization")
        .filter_map(|(_, value)| value.strip_prefix("Bearer ").map(str::to_owned))
        .collect()
}

pub fn assert_no_secret(haystack: &str, secrets: &[String], what: &str) {
    for secret in secrets {
        assert!(!secret.is_empty());
        assert!(
            !haystack.contains(secret.as_str()),
            "a secret leaked into {what}"
        );
    }
}

/// The emulator's root URL (its control surface is under `/_emulator/`).
pub fn emulator_url(emulator: &Emulator) -> String {
    format!("http://{}", emulator.addr())
}

/// An HS256 JWT over `claims`, signed as an identity provider sharing
/// `secret` with the proxy would sign it.
pub fn hs256_jwt(secret: &str, claims: &serde_json::Value) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// Seconds since the Unix epoch: the clock a JWT's `exp` and `nbf` count in.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// One open stream per caller, with the upstream guard off so that only the
/// stream cap can refuse a call.
pub const ONE_STREAM_SLOT: [(&str, &str); 2] = [
    ("GIGACHAT_PROXY_MAX_STREAMS", "1"),
    ("GIGACHAT_PROXY_UPSTREAM_CONCURRENCY", "off"),
];

/// A proxy with [`ONE_STREAM_SLOT`] before an emulator whose chunks are
/// slow enough that a stream is still open when the next call comes.
pub async fn setup_with_one_stream_slot() -> Setup {
    setup_with(
        |c| c.chunk_delay = Duration::from_millis(300),
        &ONE_STREAM_SLOT,
    )
    .await
}

/// A proxy in front of `emulator` that signs in with `credentials` (which
/// the emulator may or may not know), `extra_env` on top.
pub fn start_proxy_for(
    emulator: &Emulator,
    credentials: &str,
    extra_env: &[(&str, &str)],
) -> ProxyProcess {
    let (base, auth) = (emulator.base_url(), emulator.auth_url());
    let mut env = proxy_env(&base, &auth, credentials);
    env.extend_from_slice(extra_env);
    start_proxy(&env)
}

/// `n` proxy instances in front of `emulator` that share `redis`, as
/// serverless instances of one deployment would, each with `extra_env`.
pub fn proxies_sharing_redis(
    n: usize,
    emulator: &Emulator,
    credentials: &str,
    redis: &RedisServer,
    extra_env: &[(&str, &str)],
) -> Vec<ProxyProcess> {
    let (base, auth, redis_url) = (emulator.base_url(), emulator.auth_url(), redis.url());
    let mut env = proxy_env(&base, &auth, credentials);
    env.push(("REDIS_URL", redis_url.as_str()));
    env.extend_from_slice(extra_env);
    (0..n).map(|_| start_proxy(&env)).collect()
}

/// A Python that can import `modules` (as in `import gigachat, pytest`):
/// `$GIGACHAT_PROXY_PYTHON` when set, else the repo's `.venv`, which
/// `.ci/setup` makes when it lacks them, so that `cargo test` alone runs
/// every test on a fresh machine.
pub fn python_importing(modules: &str) -> std::path::PathBuf {
    let imports = |python: &std::path::Path| {
        Command::new(python)
            .args(["-c", &format!("import {modules}")])
            .output()
            .is_ok_and(|out| out.status.success())
    };
    if let Some(python) = std::env::var_os("GIGACHAT_PROXY_PYTHON") {
        let python = std::path::PathBuf::from(python);
        assert!(
            imports(&python),
            "GIGACHAT_PROXY_PYTHON={} cannot import {modules}: run `bash .ci/setup`",
            python.display()
        );
        return python;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python");
    if !imports(&python) {
        eprintln!(".venv cannot import {modules} yet; running .ci/setup (needs PyPI)");
        let status = Command::new("bash")
            .arg(root.join(".ci/setup"))
            .current_dir(root)
            .status()
            .expect("bash runs .ci/setup");
        assert!(status.success(), ".ci/setup failed; see its output above");
    }
    assert!(
        imports(&python),
        "{} still cannot import {modules} after .ci/setup",
        python.display()
    );
    python
}
