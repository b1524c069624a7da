//! Serverless entrypoints: the release `gigachat-api` binary started the
//! way AWS Lambda and Vercel start it, against the platform's side played
//! by the bench (`runtime_api.rs`). Cold start (spawn → first chat
//! answered, N fresh processes) and warm invocations one at a time (the
//! function process's CPU per invocation from /proc, wall latency, RSS),
//! with the local server's same calls next to them.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request};
use tokio::process::Command;

use crate::bench::{API_PATH, Bench};
use crate::client::{self, Sender};
use crate::procs::{self, Proc};
use crate::report::{Report, median, mib, ms, percentile};
use crate::runtime_api::{RuntimeApi, VercelIpc, function_url_event, wait_outcome};

const OAUTH_PATH: &str = "/api/gigachat-oauth";

/// How the function process is started and invoked.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Entry {
    /// `lambda_http` in response-streaming mode (the template's Function
    /// URL with `InvokeMode: RESPONSE_STREAM`).
    Lambda,
    /// `lambda_http` buffered (`GIGACHAT_PROXY_LAMBDA_STREAMING=false`, an
    /// API Gateway HTTP API in front).
    LambdaBuffered,
    /// `vercel_runtime` 2.x: its own HTTP server, announced over IPC.
    Vercel,
    /// The local server (`gigachat-proxy`), for comparison.
    Local,
}

impl Entry {
    fn name(self) -> &'static str {
        match self {
            Self::Lambda => "Lambda, response streaming (`gigachat-api`)",
            Self::LambdaBuffered => "Lambda, buffered (`gigachat-api`)",
            Self::Vercel => "Vercel (`gigachat-api`)",
            Self::Local => "Local server (`gigachat-proxy`)",
        }
    }

    /// What "ready" means for the entry: its first sign of having finished
    /// start-up.
    fn ready_is(self) -> &'static str {
        match self {
            Self::Lambda | Self::LambdaBuffered => "first `/next` poll",
            Self::Vercel => "IPC `server-started`",
            Self::Local => "\"listening\" line",
        }
    }
}

/// One running function instance (or local server).
struct Instance {
    entry: Entry,
    proc: Proc,
    spawned: Instant,
    /// Spawn → ready, when the entry reports it at start (Vercel, local);
    /// Lambda's comes from the runtime API's first poll.
    ready: Option<Duration>,
    api: Option<RuntimeApi>,
    ipc: Option<VercelIpc>,
    http: Option<Sender>,
    requests: u64,
}

/// A call's answer and how long it took (request handed over → last byte).
struct Answer {
    status: u16,
    body: Bytes,
    wall: Duration,
}

/// The environment every function instance gets: the harness's proxy
/// environment (emulator URLs and key, `RUST_LOG=warn`, upstream
/// concurrency off) and the deployed defaults' rate limits off, which would
/// otherwise refuse a bench's thousands of calls from one address.
fn function_env(b: &Bench) -> Vec<(String, String)> {
    let mut env = procs::proxy_env(b.emulator.addr, "warn");
    env.push(("GIGACHAT_PROXY_RATE_LIMIT".into(), "off".into()));
    env.push(("GIGACHAT_PROXY_RATE_LIMIT_ANONYMOUS".into(), "off".into()));
    if let Ok(path) = std::env::var("PATH") {
        env.push(("PATH".into(), path));
    }
    env.extend(procs::PROXY_ENV.get().into_iter().flatten().cloned());
    env
}

impl Instance {
    async fn spawn(b: &Bench, entry: Entry, serial: usize) -> Result<Self> {
        let work = &b.args.work_dir;
        // Absolute: the process runs in the work directory.
        let api_bin = std::path::absolute(b.args.bin_dir.join("gigachat-api"))?;
        let log = std::fs::File::create(work.join(format!("serverless-{serial}.log")))?;
        let mut cmd = Command::new(&api_bin);
        cmd.env_clear()
            .envs(function_env(b))
            .current_dir(work)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        match entry {
            Entry::Lambda | Entry::LambdaBuffered => {
                let api = RuntimeApi::start().await?;
                cmd.envs([
                    ("AWS_LAMBDA_RUNTIME_API", api.addr.to_string()),
                    ("AWS_LAMBDA_FUNCTION_NAME", "bench".into()),
                    ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
                    ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256".into()),
                    ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/bench".into()),
                    ("AWS_LAMBDA_LOG_STREAM_NAME", "bench".into()),
                    ("AWS_REGION", "eu-central-1".into()),
                    ("AWS_DEFAULT_REGION", "eu-central-1".into()),
                    ("LAMBDA_TASK_ROOT", work.display().to_string()),
                    ("_HANDLER", "bootstrap".into()),
                    (
                        "GIGACHAT_PROXY_LAMBDA_STREAMING",
                        (entry == Entry::Lambda).to_string(),
                    ),
                ]);
                let spawned = Instant::now();
                let child = cmd
                    .spawn()
                    .with_context(|| format!("starting {}", api_bin.display()))?;
                Ok(Self {
                    entry,
                    proc: Proc {
                        child,
                        addr: api.addr,
                    },
                    spawned,
                    ready: None,
                    api: Some(api),
                    ipc: None,
                    http: None,
                    requests: 0,
                })
            }
            Entry::Vercel => {
                let mut ipc = VercelIpc::bind(&work.join(format!("vercel-ipc-{serial}.sock")))?;
                let port = procs::free_port()?;
                cmd.envs([
                    ("VERCEL", "1".to_owned()),
                    ("VERCEL_ENV", "production".into()),
                    ("VERCEL_REGION", "fra1".into()),
                    ("VERCEL_IPC_PATH", ipc.path.display().to_string()),
                    ("VERCEL_DEV_PORT", port.to_string()),
                ]);
                let spawned = Instant::now();
                let child = cmd
                    .spawn()
                    .with_context(|| format!("starting {}", api_bin.display()))?;
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                let mut proc = Proc { child, addr };
                let started = match ipc
                    .wait_for("server-started", Duration::from_secs(30))
                    .await
                {
                    Ok(m) => m,
                    Err(e) => {
                        proc.child.start_kill().ok();
                        return Err(e);
                    }
                };
                let ready = spawned.elapsed();
                if started["payload"]["httpPort"].as_u64() != Some(u64::from(port)) {
                    bail!("server-started names another port: {started}");
                }
                let http = client::connect(addr).await?;
                Ok(Self {
                    entry,
                    proc,
                    spawned,
                    ready: Some(ready),
                    api: None,
                    ipc: Some(ipc),
                    http: Some(http),
                    requests: 0,
                })
            }
            Entry::Local => {
                let (proc, spawned) = procs::spawn_proxy_timed(
                    &b.args.proxy_bin,
                    b.emulator.addr,
                    &work.join(format!("serverless-{serial}.log")),
                )
                .await?;
                let ready = spawned.elapsed();
                let http = client::connect(proc.addr).await?;
                Ok(Self {
                    entry,
                    proc,
                    spawned,
                    ready: Some(ready),
                    api: None,
                    ipc: None,
                    http: Some(http),
                    requests: 0,
                })
            }
        }
    }

    /// Spawn → ready: the first `/next` poll for Lambda.
    fn ready(&self) -> Option<Duration> {
        self.ready.or_else(|| {
            self.api
                .as_ref()?
                .first_poll()
                .map(|t| t.duration_since(self.spawned))
        })
    }

    /// One POST as the platform delivers it to the function.
    async fn call(&mut self, path: &str, headers: &[(&str, &str)], body: &Bytes) -> Result<Answer> {
        let entry = self.entry;
        self.call_inner(path, headers, body)
            .await
            .with_context(|| format!("{} {path}", entry.name()))
    }

    async fn call_inner(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
        body: &Bytes,
    ) -> Result<Answer> {
        self.requests += 1;
        if let Some(api) = &mut self.api {
            let event = function_url_event(path, headers, body);
            let sent = Instant::now();
            let pending = api.enqueue(event)?;
            let outcome = wait_outcome(pending).await?;
            let want = if self.entry == Entry::Lambda {
                "streaming"
            } else {
                ""
            };
            if outcome.mode != want {
                bail!("response mode {:?}, want {want:?}", outcome.mode);
            }
            let wall = outcome.finished.duration_since(sent);
            let reply = outcome.reply()?;
            return Ok(Answer {
                status: reply.status,
                body: reply.body,
                wall,
            });
        }
        // A connection left idle while the other entries ran may have been
        // closed by the server's idle rule: open a new one then.
        if self.http.as_ref().is_none_or(Sender::is_closed) {
            self.http = Some(client::connect(self.proc.addr).await?);
        }
        let Some(sender) = &mut self.http else {
            bail!("no connection to the function");
        };
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(hyper::header::HOST, self.proc.addr.to_string());
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request_id = self.requests.to_string();
        if self.entry == Entry::Vercel {
            // What Vercel's bridge adds in front of the caller's request.
            builder = builder
                .header("x-forwarded-host", "bench.vercel.app")
                .header("x-forwarded-proto", "https")
                .header("x-forwarded-for", "203.0.113.7")
                .header("x-real-ip", "203.0.113.7")
                .header("x-vercel-id", "fra1::bench")
                .header("x-vercel-internal-invocation-id", "bench")
                .header("x-vercel-internal-request-id", &request_id);
        }
        let request = builder.body(Full::new(body.clone()))?;
        let sent = Instant::now();
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        let wall = sent.elapsed();
        if let Some(ipc) = &mut self.ipc {
            let end = ipc.wait_for("end", Duration::from_secs(10)).await?;
            let id = &end["payload"]["context"]["requestId"];
            if id.as_u64().map(|n| n.to_string()).as_deref() != Some(request_id.as_str()) {
                bail!("IPC `end` for request {id}, want {request_id}");
            }
        }
        Ok(Answer { status, body, wall })
    }

    async fn stop(self) {
        self.proc.stop().await;
        if let Some(api) = self.api {
            if !api.init_errors().is_empty() {
                eprintln!("serverless: init errors {:?}", api.init_errors());
            }
            api.stop();
        }
    }
}

/// A chat call and what its answer must contain to count.
struct Call {
    name: &'static str,
    body: Bytes,
    /// A stream must end with `[DONE]`, a JSON answer carry `choices`.
    expect: &'static str,
}

fn check(answer: &Answer, call: &Call) -> Result<()> {
    if answer.status != 200 {
        bail!(
            "{}: status {}: {}",
            call.name,
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
    }
    let text = String::from_utf8_lossy(&answer.body);
    if !text.contains(call.expect) {
        bail!("{}: no {:?} in the answer: {text}", call.name, call.expect);
    }
    Ok(())
}

/// One warm row's results.
#[derive(Default)]
struct Warm {
    /// CPU µs per invocation, per round.
    cpu_us: Vec<f64>,
    wall: Vec<Duration>,
    rss_kib: u64,
}

pub async fn run(b: &Bench, rep: &mut Report) -> Result<()> {
    let quick = b.args.quick;
    let cold_runs = if quick { 3 } else { 10 };
    // 1,000 calls a round: /proc/<pid>/stat counts 10 ms ticks, so the CPU
    // per call is known to 10 µs.
    let (warmup, per_round, rounds) = if quick { (50, 300, 1) } else { (100, 1000, 3) };
    let mut serial = 0;
    let mut next_serial = || {
        serial += 1;
        serial
    };

    // A session token as a deployed page holds one: minted by the function
    // (`POST /api/gigachat-oauth`); every instance accepts it (the session
    // secret is derived from the shared key).
    let mut minter = Instance::spawn(b, Entry::Lambda, next_serial()).await?;
    let minted = minter
        .call(
            OAUTH_PATH,
            &[("content-type", "application/x-www-form-urlencoded")],
            &Bytes::from_static(b"scope=GIGACHAT_API_PERS"),
        )
        .await?;
    minter.stop().await;
    if minted.status != 200 {
        bail!(
            "minting a session: {}: {}",
            minted.status,
            String::from_utf8_lossy(&minted.body)
        );
    }
    let session: serde_json::Value = serde_json::from_slice(&minted.body)?;
    let bearer = format!(
        "Bearer {}",
        session["access_token"]
            .as_str()
            .context("no access_token in the session answer")?
    );
    let headers = [
        ("content-type", "application/json"),
        ("authorization", bearer.as_str()),
    ];
    let calls = [
        Call {
            name: "JSON chat",
            body: b.body.clone(),
            expect: "\"choices\"",
        },
        Call {
            name: "streamed chat",
            body: b.stream_body.clone(),
            expect: "[DONE]",
        },
    ];

    // Cold start: fresh processes, interleaved, the JSON chat first.
    let cold_entries = [Entry::Lambda, Entry::Vercel, Entry::Local];
    let mut ready: Vec<Vec<Duration>> = vec![Vec::new(); cold_entries.len()];
    let mut first: Vec<Vec<Duration>> = vec![Vec::new(); cold_entries.len()];
    let mut oauth_rt = Vec::new();
    for _ in 0..cold_runs {
        for (i, entry) in cold_entries.iter().enumerate() {
            let mut inst = Instance::spawn(b, *entry, next_serial()).await?;
            let answer = inst.call(API_PATH, &headers, &calls[0].body).await;
            let answered = inst.spawned.elapsed();
            let up = inst.ready();
            inst.stop().await;
            check(&answer?, &calls[0])?;
            first[i].push(answered);
            ready[i].push(up.unwrap_or_default());
        }
        oauth_rt.push(client::oauth(b.emulator.addr).await?.1);
    }
    let oauth = median(oauth_rt);

    // Warm: one instance per entry, invoked one call at a time.
    let warm_entries = [
        Entry::Lambda,
        Entry::LambdaBuffered,
        Entry::Vercel,
        Entry::Local,
    ];
    let mut instances = Vec::new();
    for entry in warm_entries {
        instances.push(Instance::spawn(b, entry, next_serial()).await?);
    }
    let mut warm: Vec<Vec<Warm>> = (0..warm_entries.len())
        .map(|_| (0..calls.len()).map(|_| Warm::default()).collect())
        .collect();
    for (c, call) in calls.iter().enumerate() {
        for inst in &mut instances {
            for _ in 0..warmup {
                check(&inst.call(API_PATH, &headers, &call.body).await?, call)?;
            }
        }
        for _ in 0..rounds {
            for (i, inst) in instances.iter_mut().enumerate() {
                // One call outside the count, on a fresh connection if the
                // idle one was closed meanwhile.
                check(&inst.call(API_PATH, &headers, &call.body).await?, call)?;
                let pid = inst.proc.pid();
                let cpu0 = procs::cpu_seconds(pid);
                for _ in 0..per_round {
                    let answer = inst.call(API_PATH, &headers, &call.body).await?;
                    check(&answer, call)?;
                    warm[i][c].wall.push(answer.wall);
                }
                let cpu = procs::cpu_seconds(pid) - cpu0;
                warm[i][c].cpu_us.push(cpu * 1e6 / f64::from(per_round));
            }
        }
        for (i, inst) in instances.iter().enumerate() {
            warm[i][c].rss_kib = procs::status_kib(inst.proc.pid(), "VmRSS").unwrap_or(0);
        }
    }
    for inst in instances {
        inst.stop().await;
    }

    rep.line(&format!(
        "### Serverless entrypoints: cold start (median of {cold_runs} fresh processes each, interleaved; empty token cache)"
    ));
    rep.line("");
    rep.line("The release `gigachat-api` started as each platform starts it, the platform's side played by the bench: a fake Lambda Runtime API (`AWS_LAMBDA_RUNTIME_API`; the event, a Function URL payload 2.0, is waiting when the process starts) and Vercel's IPC socket (`VERCEL_IPC_PATH`; the request is sent after `server-started`). The call is the JSON chat with a session token minted by the function beforehand, so the first answer includes the function's OAuth round trip to the emulator.");
    rep.line("");
    rep.line("| Entrypoint | Spawn → ready | Spawn → first chat answered (max) | OAuth round trip (emulator, new connection) | First answer minus OAuth |");
    rep.line("|---|---:|---:|---:|---:|");
    let mut cold_first = Vec::new();
    for (i, entry) in cold_entries.iter().enumerate() {
        let f = median(first[i].clone());
        let max = first[i].iter().max().copied().unwrap_or_default();
        rep.line(&format!(
            "| {} | {} ms ({}) | {} ms ({} ms) | {} ms | {} ms |",
            entry.name(),
            ms(median(ready[i].clone())),
            entry.ready_is(),
            ms(f),
            ms(max),
            ms(oauth),
            ms(f.saturating_sub(oauth)),
        ));
        cold_first.push(f);
    }
    rep.line("");
    rep.line(&format!(
        "### Serverless entrypoints: warm invocations one at a time ({rounds} round(s) of {per_round} sequential calls per entrypoint, interleaved, after {warmup} warm-up calls)"
    ));
    rep.line("");
    rep.line("One invocation at a time, as Lambda gives an instance (Vercel's and the local server's connection: one keep-alive connection). CPU = utime + stime of the function process from `/proc/<pid>/stat` over a round, per call; wall = event handed over (Lambda: queued for the waiting `/next` poll; others: request sent) → last byte of the answer; RSS = `VmRSS` after the row.");
    rep.line("");
    rep.line("| Entrypoint | Call | CPU µs / call (median; each round) | Wall p50 ms | Wall p99 ms | RSS after |");
    rep.line("|---|---|---:|---:|---:|---:|");
    for (i, entry) in warm_entries.iter().enumerate() {
        for (c, call) in calls.iter().enumerate() {
            let w = &mut warm[i][c];
            w.wall.sort();
            let mut sorted = w.cpu_us.clone();
            sorted.sort_by(f64::total_cmp);
            let med = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
            let each: Vec<String> = w.cpu_us.iter().map(|v| format!("{v:.0}")).collect();
            rep.line(&format!(
                "| {} | {} | {med:.0} ({}) | {} | {} | {} |",
                entry.name(),
                call.name,
                each.join(", "),
                ms(percentile(&w.wall, 50.0)),
                ms(percentile(&w.wall, 99.0)),
                mib(w.rss_kib),
            ));
        }
    }
    rep.line("");
    for (i, entry) in cold_entries.iter().enumerate() {
        if *entry == Entry::Local {
            continue;
        }
        let extra = cold_first[i].saturating_sub(oauth);
        rep.target(
            &format!("Cold start, {}", entry.name()),
            "≤ 20 ms + one OAuth round trip (the local server's cold-start target; no earlier serverless measurement)",
            format!(
                "{} ms − OAuth {} ms = {} ms (local server in the same run: {} ms)",
                ms(cold_first[i]),
                ms(oauth),
                ms(extra),
                ms(cold_first
                    .last()
                    .copied()
                    .unwrap_or_default()
                    .saturating_sub(oauth)),
            ),
            Some(extra <= Duration::from_millis(20)),
        );
    }
    Ok(())
}
