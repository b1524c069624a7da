//! `gigachat-bench`: the benchmark driver behind `bash bench/run.sh`.
//!
//! Starts the standalone emulator, the release proxy and an nginx
//! `proxy_pass` doing the same forwarding, measures every row with the same
//! payload on the same machine, and writes a markdown report. See
//! bench/README.md for what each row means and how it is measured.

mod client;
mod procs;
mod wrk;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use hyper::StatusCode;

use client::Target;

/// The one user message of every row (15 words: the emulator echoes it as
/// 16 content events plus the usage event and `[DONE]`).
const PROMPT: &str =
    "Напиши короткое стихотворение о весеннем утре в большом городе, где шумят машины и поют птицы";

const API_PATH: &str = "/api/gigachat-api/chat/completions";
const DIRECT_PATH: &str = "/api/v1/chat/completions";

struct Args {
    proxy_bin: PathBuf,
    emulator_bin: PathBuf,
    bin_dir: PathBuf,
    bench_dir: PathBuf,
    work_dir: PathBuf,
    wrk: PathBuf,
    nginx: PathBuf,
    out: PathBuf,
    quick: bool,
    sections: Vec<String>,
    notes: Vec<String>,
    proxy_env: Vec<(String, String)>,
    arm64_bin: Option<PathBuf>,
}

impl Args {
    fn parse() -> Result<Self> {
        let mut args = Self {
            proxy_bin: "target/release/gigachat-proxy".into(),
            emulator_bin: "target/release/gigachat-emulator".into(),
            bin_dir: "target/release".into(),
            bench_dir: "bench".into(),
            work_dir: std::env::temp_dir().join("gigachat-bench"),
            wrk: "wrk".into(),
            nginx: "nginx".into(),
            out: "bench/results.md".into(),
            quick: false,
            sections: Vec::new(),
            notes: Vec::new(),
            proxy_env: Vec::new(),
            arm64_bin: None,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            if flag == "--quick" {
                args.quick = true;
                continue;
            }
            let value = it.next().with_context(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--proxy-bin" => args.proxy_bin = value.into(),
                "--emulator-bin" => args.emulator_bin = value.into(),
                "--bin-dir" => args.bin_dir = value.into(),
                "--bench-dir" => args.bench_dir = value.into(),
                "--work-dir" => args.work_dir = value.into(),
                "--wrk" => args.wrk = value.into(),
                "--nginx" => args.nginx = value.into(),
                "--out" => args.out = value.into(),
                "--sections" => {
                    args.sections = value.split(',').map(|s| s.trim().to_owned()).collect();
                }
                "--note" => args.notes.push(value),
                "--arm64-bin" => args.arm64_bin = Some(value.into()),
                "--proxy-env" => {
                    let (k, v) = value
                        .split_once('=')
                        .with_context(|| format!("--proxy-env {value}: expected KEY=VALUE"))?;
                    args.proxy_env.push((k.to_owned(), v.to_owned()));
                }
                other => bail!("unknown argument {other}"),
            }
        }
        Ok(args)
    }

    fn wants(&self, section: &str) -> bool {
        self.sections.is_empty() || self.sections.iter().any(|s| s == section)
    }
}

fn chat_body(stream: bool) -> Bytes {
    let mut body = serde_json::json!({
        "model": "GigaChat",
        "messages": [{"role": "user", "content": PROMPT}],
    });
    if stream {
        body["stream"] = serde_json::Value::Bool(true);
    }
    Bytes::from(body.to_string())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn signed_ms(a: Duration, b: Duration) -> String {
    format!("{:+.2}", (a.as_secs_f64() - b.as_secs_f64()) * 1e3)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    percentile(&v, 50.0)
}

fn cmd_line(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s.lines().next().unwrap_or_default().trim().to_owned()
        })
        .unwrap_or_else(|_| "?".to_owned())
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_owned();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or_else(
            || "?".to_owned(),
            |k| format!("{:.1} GiB", k as f64 / 1048576.0),
        );
    let kernel = cmd_line("uname", &["-r"]);
    format!("{cores} cores ({model}), {mem} RAM, Linux {kernel}")
}

/// A proxy variant row: label, `RUST_LOG`, extra environment.
type Variant<'a> = (String, &'a str, Vec<(&'a str, &'a str)>);

/// The three ways a chat call reaches the emulator.
struct Targets {
    direct: Target,
    nginx: Target,
    proxy: Target,
}

struct Report {
    out: String,
    targets: Vec<(String, String, String, Option<bool>)>,
}

impl Report {
    fn line(&mut self, s: &str) {
        self.out.push_str(s);
        self.out.push('\n');
        println!("{s}");
    }

    fn target(&mut self, name: &str, goal: &str, measured: String, met: Option<bool>) {
        self.targets
            .push((name.to_owned(), goal.to_owned(), measured, met));
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse()?;
    std::fs::create_dir_all(&args.work_dir)?;
    let _ = procs::PROXY_ENV.set(args.proxy_env.clone());
    let load_start = procs::loadavg();
    let started_at = cmd_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let commit = cmd_line("git", &["rev-parse", "--short", "HEAD"]);
    let dirty = !cmd_line("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();

    let (warm, measure) = if args.quick {
        (Duration::from_secs(1), Duration::from_secs(3))
    } else {
        (Duration::from_secs(2), Duration::from_secs(10))
    };
    let mut rep = Report {
        out: String::new(),
        targets: Vec::new(),
    };

    let emulator =
        procs::start_emulator(&args.emulator_bin, &args.work_dir.join("emulator.log")).await?;
    let (token, _) = client::oauth(emulator.addr).await?;
    let body = chat_body(false);
    let stream_body = chat_body(true);
    let body_file = args.work_dir.join("body.json");
    std::fs::write(&body_file, &body)?;

    let proxy = procs::start_proxy(
        &args.proxy_bin,
        emulator.addr,
        "warn",
        &args.work_dir.join("proxy.log"),
        &[],
    )
    .await?;
    let nginx = match procs::start_nginx(
        &args.nginx,
        &args.bench_dir.join("nginx.conf.template"),
        &args.work_dir.join("nginx"),
        emulator.addr,
        &token,
    )
    .await
    {
        Ok(n) => Some(n),
        Err(e) => {
            eprintln!("nginx could not start: {e:#}");
            None
        }
    };
    let t = Targets {
        direct: Target {
            addr: emulator.addr,
            path: DIRECT_PATH.to_owned(),
            auth: Some(format!("Bearer {token}")),
        },
        nginx: Target {
            addr: nginx.as_ref().map_or(emulator.addr, |n| n.proc.addr),
            path: API_PATH.to_owned(),
            auth: None,
        },
        proxy: Target {
            addr: proxy.addr,
            path: API_PATH.to_owned(),
            auth: None,
        },
    };

    // Every target answers the same call with the same reply.
    let mut replies = Vec::new();
    for (name, target) in [
        ("direct", &t.direct),
        ("nginx", &t.nginx),
        ("proxy", &t.proxy),
    ] {
        if name == "nginx" && nginx.is_none() {
            continue;
        }
        let mut sender = client::connect(target.addr).await?;
        let (status, answer) = client::post(&mut sender, target, body.clone()).await?;
        if status != StatusCode::OK {
            bail!("{name}: {status}: {}", String::from_utf8_lossy(&answer));
        }
        let v: serde_json::Value = serde_json::from_slice(&answer)?;
        replies.push(v["choices"][0]["message"]["content"].clone());
    }
    if replies.windows(2).any(|w| w[0] != w[1]) {
        bail!("the targets answered differently: {replies:?}");
    }

    rep.line("## Results");
    rep.line("");
    rep.line(&format!(
        "Machine: {}. Load generator, emulator and proxy on the same machine. {started_at}, commit {commit}{}.",
        machine(),
        if dirty { " (with uncommitted changes)" } else { "" }
    ));
    rep.line(&format!(
        "Load average (1/5/15 min) at the start: {load_start}. Tools: {}, {}, {}.",
        cmd_line(&args.wrk.display().to_string(), &["-v"])
            .split(" [")
            .next()
            .unwrap_or_default(),
        cmd_line(&args.nginx.display().to_string(), &["-v"]).replace("nginx version: ", ""),
        cmd_line("rustc", &["-V"]),
    ));
    for note in &args.notes {
        rep.line(note);
    }
    for (k, v) in &args.proxy_env {
        rep.line(&format!("Extra proxy environment for this run: `{k}={v}`."));
    }
    rep.line("");
    rep.line(&format!(
        "Payload (every row): `{}` ({} bytes; `\"stream\":true` added for the streaming rows). \
         Proxy: `RUST_LOG=warn`, `GIGACHAT_PROXY_UPSTREAM_CONCURRENCY=off`, local defaults otherwise \
         (open access, no rate limits), against the standalone emulator (zero delay, \
         one fixed echo reply). nginx: `bench/nginx.conf.template`.",
        String::from_utf8_lossy(&body),
        body.len()
    ));
    rep.line("");

    // ---------------------------------------------------------------- throughput
    let mut c32 = (None, None);
    if args.wants("throughput") {
        rep.line(&format!(
            "### Non-streaming chat, closed loop (wrk, {} s per row after a {} s warm-up)",
            measure.as_secs(),
            warm.as_secs()
        ));
        rep.line("");
        rep.line("CPU columns: cores used by the emulator and by the process in the middle, that process's CPU time per request, and the whole machine's busy share (wrk and the rest of the machine use the remainder). New TCP: connections opened on the machine during the row (wrk's own plus any the middle opens upstream).");
        rep.line("");
        rep.line("| Concurrency | Path | Requests/s | p50 ms | p99 ms | Errors | CPU emulator | CPU middle | Middle µs/request | Machine busy | New TCP |");
        rep.line("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let script = args.bench_dir.join("wrk.lua");
        let row = async |name: &str,
                         target: &Target,
                         conns: usize,
                         mid: Option<u32>|
               -> Result<(String, f64)> {
            wrk::run(&args.wrk, &script, &body_file, target, conns, warm).await?;
            let cpu = procs::CpuWindow::start(emulator.pid(), mid);
            let r = wrk::run(&args.wrk, &script, &body_file, target, conns, measure).await?;
            let used = cpu.finish();
            let line = format!(
                "| {conns} | {name} | {:.0} | {} | {} | {} | {:.2} | {} | {} | {:.0} % | {} |",
                r.rps(),
                ms(r.p50),
                ms(r.p99),
                r.errors,
                used.emu,
                if mid.is_some() {
                    format!("{:.2}", used.mid)
                } else {
                    "–".to_owned()
                },
                if mid.is_some() && r.requests > 0 {
                    format!("{:.1}", used.mid_seconds * 1e6 / r.requests as f64)
                } else {
                    "–".to_owned()
                },
                used.machine_pct,
                used.opens,
            );
            Ok::<_, anyhow::Error>((line, r.rps()))
        };
        // The target row (concurrency 32) is measured in three interleaved
        // rounds (direct, nginx, proxy, direct, …) and the median round of
        // each path is shown: on a shared 2-core machine one 10 s sample
        // can be ±15 % off, and interleaving spreads any drift over all
        // three paths alike.
        let mut rounds_note = Vec::new();
        for conns in [1usize, 32, 128] {
            let rounds = if conns == 32 { 3 } else { 1 };
            let paths = [
                ("direct to emulator", &t.direct, None),
                (
                    "nginx proxy_pass",
                    &t.nginx,
                    nginx.as_ref().map(|n| n.proc.pid()),
                ),
                ("gigachat-proxy", &t.proxy, Some(proxy.pid())),
            ];
            let mut runs: Vec<Vec<(String, f64)>> = vec![Vec::new(); paths.len()];
            for _ in 0..rounds {
                for (i, (name, target, mid)) in paths.iter().enumerate() {
                    if name.starts_with("nginx") && nginx.is_none() {
                        continue;
                    }
                    runs[i].push(row(name, target, conns, *mid).await?);
                }
            }
            for (i, (name, _, _)) in paths.iter().enumerate() {
                let mut path_runs = runs[i].clone();
                if path_runs.is_empty() {
                    rep.line(&format!(
                        "| {conns} | {name} | could not run: nginx did not start | | | | | | | | |"
                    ));
                    continue;
                }
                path_runs.sort_by(|x, y| x.1.total_cmp(&y.1));
                let (line, rps) = path_runs[path_runs.len() / 2].clone();
                if rounds > 1 {
                    let all: Vec<String> = runs[i].iter().map(|r| format!("{:.0}", r.1)).collect();
                    rounds_note.push(format!("{name} {}", all.join(", ")));
                }
                if conns == 32 {
                    if name.starts_with("nginx") {
                        c32.0 = Some(rps);
                    } else if name.starts_with("gigachat") {
                        c32.1 = Some(rps);
                    }
                }
                rep.line(&line);
            }
        }
        // A variant of the proxy at concurrency 32, a fresh process: the
        // default `info` level (one access line per request, to a file).
        let variants: Vec<Variant> = vec![(
            "gigachat-proxy, `RUST_LOG=info` (access log to a file)".to_owned(),
            "info",
            Vec::new(),
        )];
        for (label, level, env) in &variants {
            let variant = procs::start_proxy(
                &args.proxy_bin,
                emulator.addr,
                level,
                &args.work_dir.join("proxy-variant.log"),
                env,
            )
            .await?;
            let target = Target {
                addr: variant.addr,
                path: API_PATH.to_owned(),
                auth: None,
            };
            let (line, _) = row(label, &target, 32, Some(variant.pid())).await?;
            rep.line(&line);
            variant.stop().await;
        }
        rep.line("");
        if !rounds_note.is_empty() {
            rep.line(&format!(
                "Concurrency 32: the median of three interleaved rounds per path (requests/s of each round: {}).",
                rounds_note.join("; ")
            ));
            rep.line("");
        }
        match c32 {
            (Some(ng), Some(px)) => {
                let ratio = px / ng * 100.0;
                rep.target(
                    "Throughput at concurrency 32",
                    "≥ 80 % of nginx",
                    format!("{px:.0} vs {ng:.0} req/s = {ratio:.0} %"),
                    Some(ratio >= 80.0),
                );
            }
            _ => rep.target(
                "Throughput at concurrency 32",
                "≥ 80 % of nginx",
                "could not run (no nginx row)".to_owned(),
                None,
            ),
        }
    }

    // ---------------------------------------------------------------- added latency
    if args.wants("latency") {
        let rate = 1000;
        let lat_measure = if args.quick {
            Duration::from_secs(5)
        } else {
            Duration::from_secs(20)
        };
        rep.line(&format!(
            "### Added latency at a constant {rate} requests/s (open loop, {} s after a {} s warm-up)",
            lat_measure.as_secs(),
            warm.as_secs()
        ));
        rep.line("");
        rep.line("The bench crate's own open-loop client: a ticket every 1 ms whatever the answers do, 32 keep-alive connections take them, latency counts from the ticket (waiting for a free connection included). \"Added\" is the row's percentile minus the direct row's.");
        rep.line("");
        rep.line("| Path | Achieved req/s | p50 ms | p99 ms | max ms | Errors | Added p50 ms | Added p99 ms |");
        rep.line("|---|---:|---:|---:|---:|---:|---:|---:|");
        let mut direct: Option<(Duration, Duration)> = None;
        for (name, target) in [
            ("direct to emulator", &t.direct),
            ("nginx proxy_pass", &t.nginx),
            ("gigachat-proxy", &t.proxy),
        ] {
            if name.starts_with("nginx") && nginx.is_none() {
                rep.line(&format!(
                    "| {name} | could not run: nginx did not start | | | | | | |"
                ));
                continue;
            }
            let r = client::open_loop(target, body.clone(), rate, warm, lat_measure, 32).await?;
            let mut s = r.samples;
            s.sort();
            let (p50, p99, max) = (
                percentile(&s, 50.0),
                percentile(&s, 99.0),
                percentile(&s, 100.0),
            );
            let (added50, added99) = match direct {
                None => {
                    direct = Some((p50, p99));
                    ("–".to_owned(), "–".to_owned())
                }
                Some((d50, d99)) => (signed_ms(p50, d50), signed_ms(p99, d99)),
            };
            rep.line(&format!(
                "| {name} | {:.0} | {} | {} | {} | {} | {added50} | {added99} |",
                r.sent as f64 / r.measured_for.as_secs_f64(),
                ms(p50),
                ms(p99),
                ms(max),
                r.errors,
            ));
            if name.starts_with("gigachat")
                && let Some((_, d99)) = direct
            {
                let added = p99.as_secs_f64() * 1e3 - d99.as_secs_f64() * 1e3;
                rep.target(
                    "Added p99 latency at 1,000 req/s",
                    "≤ 1 ms",
                    format!("{added:+.2} ms (p99 {} vs {} direct)", ms(p99), ms(d99)),
                    Some(added <= 1.0),
                );
            }
        }
        rep.line("");
    }

    // ---------------------------------------------------------------- streaming
    if args.wants("stream") {
        let delay = Duration::from_millis(20);
        set_chunk_delay(&emulator.addr, delay).await?;
        let reference = Arc::new(client::one_stream(&t.direct, stream_body.clone()).await?);
        let through = client::one_stream(&t.proxy, stream_body.clone()).await?;
        if through != *reference {
            rep.line("**The proxy changed the event sequence of a single stream.**");
        }
        let n = 256;
        rep.line(&format!(
            "### Streaming: {n} concurrent streams ({} SSE events each, {} ms apart; {} s after a {} s warm-up)",
            reference.len(),
            delay.as_millis(),
            measure.as_secs(),
            warm.as_secs().max(2)
        ));
        rep.line("");
        rep.line("Each client keeps one connection and runs streams back to back; starts are spread over one stream's length. TTFC: request sent → first complete event. Events are compared with the emulator's sequence (timestamps masked); \"merged\" counts events that arrived < 5 ms after the previous one although sent 20 ms apart.");
        rep.line("");
        rep.line("| Path | Streams | TTFC p50 ms | TTFC p99 ms | Overhead p50 ms | Overhead p99 ms | Events | Lost | Merged | Altered streams | Errors | CPU emulator | CPU middle | Machine busy | New TCP |");
        rep.line("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let mut direct: Option<(Duration, Duration)> = None;
        for (name, target, mid) in [
            ("direct to emulator", &t.direct, None),
            (
                "nginx proxy_pass",
                &t.nginx,
                nginx.as_ref().map(|n| n.proc.pid()),
            ),
            ("gigachat-proxy", &t.proxy, Some(proxy.pid())),
        ] {
            if name.starts_with("nginx") && nginx.is_none() {
                rep.line(&format!(
                    "| {name} | could not run: nginx did not start | | | | | | | | | | | | | |"
                ));
                continue;
            }
            let cpu = procs::CpuWindow::start(emulator.pid(), mid);
            let r = client::stream_load(
                target,
                stream_body.clone(),
                n,
                warm.max(Duration::from_secs(2)),
                measure,
                delay,
                Arc::clone(&reference),
            )
            .await?;
            let used = cpu.finish();
            let mut s = r.ttfc.clone();
            s.sort();
            let (p50, p99) = (percentile(&s, 50.0), percentile(&s, 99.0));
            let (o50, o99) = match direct {
                None => {
                    direct = Some((p50, p99));
                    ("–".to_owned(), "–".to_owned())
                }
                Some((d50, d99)) => (signed_ms(p50, d50), signed_ms(p99, d99)),
            };
            rep.line(&format!(
                "| {name} | {} | {} | {} | {o50} | {o99} | {} | {} | {} | {} | {} | {:.2} | {} | {:.0} % | {} |",
                r.streams,
                ms(p50),
                ms(p99),
                r.events,
                r.lost_events,
                r.merged_events,
                r.mismatched_streams,
                r.errors,
                used.emu,
                if mid.is_some() { format!("{:.2}", used.mid) } else { "–".to_owned() },
                used.machine_pct,
                used.opens,
            ));
            if name.starts_with("gigachat")
                && let Some((_, d99)) = direct
            {
                let added = p99.as_secs_f64() * 1e3 - d99.as_secs_f64() * 1e3;
                let faithful = r.lost_events == 0
                    && r.merged_events == 0
                    && r.mismatched_streams == 0
                    && r.errors == 0
                    && through == *reference;
                rep.target(
                    "TTFC overhead p99, 256 streams, every chunk as sent",
                    "≤ 2 ms, 0 lost/merged",
                    format!(
                        "{added:+.2} ms; {} events, {} lost, {} merged, {} altered streams, {} errors",
                        r.events, r.lost_events, r.merged_events, r.mismatched_streams, r.errors
                    ),
                    Some(added <= 2.0 && faithful),
                );
            }
        }
        set_chunk_delay(&emulator.addr, Duration::ZERO).await?;
        rep.line("");
    }

    // ---------------------------------------------------------------- memory
    if args.wants("memory") {
        // The long-running proxy after every row above.
        let idle_after = procs::status_kib(proxy.pid(), "VmRSS").unwrap_or(0);
        let hwm_load = procs::status_kib(proxy.pid(), "VmHWM").unwrap_or(0);
        // A fresh proxy for the open-streams row, so it shows what 1,000
        // streams cost and not what earlier rows left in the allocator.
        let fresh = procs::start_proxy(
            &args.proxy_bin,
            emulator.addr,
            "warn",
            &args.work_dir.join("proxy-memory.log"),
            &[],
        )
        .await?;
        let fresh_target = Target {
            addr: fresh.addr,
            path: API_PATH.to_owned(),
            auth: None,
        };
        let mut sender = client::connect(fresh.addr).await?;
        client::post(&mut sender, &fresh_target, body.clone()).await?;
        drop(sender);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let fresh_idle = procs::status_kib(fresh.pid(), "VmRSS").unwrap_or(0);
        let n = 1000;
        // 18 events a second apart: every stream stays open ~17 s.
        set_chunk_delay(&emulator.addr, Duration::from_millis(1000)).await?;
        let (held, opened) = client::hold_streams(
            &fresh_target,
            stream_body.clone(),
            n,
            Duration::from_secs(60),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss_open = procs::status_kib(fresh.pid(), "VmRSS").unwrap_or(0);
        let emu_open = procs::status_kib(emulator.pid(), "VmRSS").unwrap_or(0);
        drop(held);
        set_chunk_delay(&emulator.addr, Duration::ZERO).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss_after = procs::status_kib(fresh.pid(), "VmRSS").unwrap_or(0);
        fresh.stop().await;
        rep.line("### Memory (proxy VmRSS from /proc/<pid>/status)");
        rep.line("");
        rep.line("| Fresh proxy, idle after 1 call | Same, 1,000 open streams | Same, after they closed | Long-running proxy, idle after the rows above | Its peak (VmHWM) |");
        rep.line("|---:|---:|---:|---:|---:|");
        rep.line(&format!(
            "| {} | {} ({opened} of {n} streams open; emulator {}) | {} | {} | {} |",
            mib(fresh_idle),
            mib(rss_open),
            mib(emu_open),
            mib(rss_after),
            mib(idle_after),
            mib(hwm_load),
        ));
        rep.line("");
        rep.target(
            "RSS with 1,000 open streams",
            "≤ 64 MB",
            format!("{:.1} MB ({opened} open)", rss_open as f64 * 1024.0 / 1e6),
            Some(opened == n && rss_open as f64 * 1024.0 <= 64e6),
        );
    }

    // ---------------------------------------------------------------- cold start
    if args.wants("cold") {
        let runs = if args.quick { 3 } else { 10 };
        let mut listening = Vec::new();
        let mut first = Vec::new();
        let mut oauth_rt = Vec::new();
        let mut api_rt = Vec::new();
        for _ in 0..runs {
            let run = client::cold_start(
                &args.proxy_bin,
                emulator.addr,
                body.clone(),
                &args.work_dir.join("proxy-cold.log"),
            )
            .await?;
            listening.push(run.listening);
            first.push(run.first_response);
            oauth_rt.push(client::oauth(emulator.addr).await?.1);
            let started = Instant::now();
            let mut sender = client::connect(t.direct.addr).await?;
            client::post(&mut sender, &t.direct, body.clone()).await?;
            api_rt.push(started.elapsed());
        }
        let (l, f, o, a) = (
            median(listening),
            median(first.clone()),
            median(oauth_rt),
            median(api_rt),
        );
        let max_first = first.iter().max().copied().unwrap_or_default();
        rep.line(&format!(
            "### Cold start (median of {runs}; fresh process, empty token cache)"
        ));
        rep.line("");
        rep.line("| Spawn → listening | Spawn → first proxied 200 (max) | OAuth round trip (emulator, new connection) | Chat round trip direct (new connection) | First 200 minus OAuth |");
        rep.line("|---:|---:|---:|---:|---:|");
        rep.line(&format!(
            "| {} ms | {} ms ({} ms) | {} ms | {} ms | {} ms |",
            ms(l),
            ms(f),
            ms(max_first),
            ms(o),
            ms(a),
            ms(f.saturating_sub(o))
        ));
        rep.line("");
        rep.target(
            "Cold start",
            "≤ 20 ms + one OAuth round trip",
            format!(
                "{} ms − OAuth {} ms = {} ms",
                ms(f),
                ms(o),
                ms(f.saturating_sub(o))
            ),
            Some(f.saturating_sub(o) <= Duration::from_millis(20)),
        );
    }

    // ---------------------------------------------------------------- sizes
    if args.wants("sizes") {
        rep.line("### Sizes (release profile; x86_64 unless said otherwise)");
        rep.line("");
        rep.line("| Binary | Size | zip -9 |");
        rep.line("|---|---:|---:|");
        let mut lambda_zip = None;
        for name in [
            "gigachat-api",
            "gigachat-oauth",
            "gigachat-health",
            "gigachat-proxy",
        ] {
            let path = args.bin_dir.join(name);
            match std::fs::metadata(&path) {
                Ok(meta) => {
                    let zipped = zip_size(&path, &args.work_dir).ok();
                    if name == "gigachat-api" {
                        lambda_zip = zipped;
                    }
                    rep.line(&format!(
                        "| `{name}` | {} | {} |",
                        mb(meta.len()),
                        zipped.map_or_else(|| "zip failed".to_owned(), mb)
                    ));
                }
                Err(_) => rep.line(&format!("| `{name}` | not built | |")),
            }
        }
        // The Lambda package: an aarch64 `bootstrap` (run.sh --arm64), else
        // the x86_64 build as a stand-in.
        let arm = args.arm64_bin.as_ref().and_then(|p| {
            Some((
                std::fs::metadata(p).ok()?.len(),
                zip_size(p, &args.work_dir).ok()?,
            ))
        });
        if let Some((size, zipped)) = arm {
            rep.line(&format!(
                "| `gigachat-api`, aarch64-unknown-linux-gnu (Lambda `bootstrap`) | {} | {} |",
                mb(size),
                mb(zipped)
            ));
            lambda_zip = Some(zipped);
        }
        rep.line("");
        if arm.is_some() {
            rep.line("The aarch64 build uses the same release profile, linked with Debian's `gcc-aarch64-linux-gnu` (cargo-lambda links with zig against an older glibc; the size is the same to within the linker's padding).");
        } else {
            rep.line("The Lambda `bootstrap` is `gigachat-api` for aarch64 (cargo-lambda); no aarch64 build was available for this run (`bash bench/run.sh --arm64` makes one), so the x86_64 `gigachat-api` zipped as `bootstrap` stands in for it.");
        }
        rep.line("");
        rep.target(
            if arm.is_some() {
                "Lambda zip (aarch64 `bootstrap`)"
            } else {
                "Lambda zip (x86_64 stand-in)"
            },
            "≤ 5 MB",
            lambda_zip.map_or_else(|| "not built".to_owned(), mb),
            lambda_zip.map(|z| z as f64 <= 5e6),
        );
    }

    rep.line("### Targets");
    rep.line("");
    rep.line("| Target | Goal | Measured | Met |");
    rep.line("|---|---|---|---|");
    for (name, goal, measured, met) in std::mem::take(&mut rep.targets) {
        let met = match met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "not measured",
        };
        rep.line(&format!("| {name} | {goal} | {measured} | {met} |"));
    }
    rep.line("");
    rep.line(&format!("Load average at the end: {}.", procs::loadavg()));

    if let Some(n) = nginx {
        n.proc.stop().await;
        let _ = n.dir;
    }
    proxy.stop().await;
    emulator.stop().await;
    std::fs::write(&args.out, &rep.out)?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}

fn mb(bytes: u64) -> String {
    format!("{:.2} MB", bytes as f64 / 1e6)
}

/// zip -9 of a copy named `bootstrap`, as a Lambda deployment package.
fn zip_size(bin: &std::path::Path, work: &std::path::Path) -> Result<u64> {
    let dir = work.join("zip");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(bin, dir.join("bootstrap"))?;
    let status = std::process::Command::new("zip")
        .current_dir(&dir)
        .args(["-9", "-q", "-X", "bootstrap.zip", "bootstrap"])
        .status()?;
    if !status.success() {
        bail!("zip failed");
    }
    Ok(std::fs::metadata(dir.join("bootstrap.zip"))?.len())
}

/// `POST /_emulator/faults {"chunk_delay_ms": …}` for streams started after.
async fn set_chunk_delay(emulator: &std::net::SocketAddr, delay: Duration) -> Result<()> {
    let target = Target {
        addr: *emulator,
        path: "/_emulator/faults".to_owned(),
        auth: None,
    };
    let mut sender = client::connect(*emulator).await?;
    let body = format!("{{\"chunk_delay_ms\":{}}}", delay.as_millis());
    let (status, answer) = client::post(&mut sender, &target, Bytes::from(body)).await?;
    if !status.is_success() {
        bail!(
            "setting the chunk delay: {status} {}",
            String::from_utf8_lossy(&answer)
        );
    }
    Ok(())
}
