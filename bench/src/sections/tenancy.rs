//! The added cost of ownership and token budgets: non-streaming chat at
//! concurrency 32 through proxies that tell callers apart by an API key,
//! with ownership off and no budget (the baseline), with ownership on and a
//! budget kept in memory, and with the same kept in Redis (a local
//! `redis-server` the section starts, when one is installed). Rows are
//! interleaved in three rounds and each shows its median round.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use tokio::process::Command;

use crate::bench::{API_PATH, Bench};
use crate::client::{self, Target};
use crate::procs::{self, Proc};
use crate::report::{Report, ms};
use crate::wrk;

const CONCURRENCY: usize = 32;
const ROUNDS: usize = 3;
/// The caller every row's requests come from: one identity, so every
/// request meets the same budget counters (the contended case).
const KEY: &str = "bench-tenancy-api-key-0123456789";
/// Large enough never to run out during a row: the section measures the
/// bookkeeping, not refusals.
const BUDGET: &str = "1000000000000/mo";

/// One proxy under test: its row label and the process.
struct Row {
    label: String,
    /// What the proxy's health document must say (`ownership`, `budget`,
    /// `limits`), so a variable the proxy ignored cannot pass unnoticed
    /// as a row that measured nothing.
    expect: [&'static str; 3],
    proxy: Proc,
    /// The redis-server this row's proxy talks to, for its CPU column.
    redis_pid: Option<u32>,
}

/// One measured round of a row.
#[derive(Clone)]
struct Sample {
    line: String,
    rps: f64,
    mid_us: f64,
}

pub async fn run(b: &Bench, rep: &mut Report) -> Result<()> {
    let args = &b.args;
    let (warm, measure) = (b.warm, b.measure);
    rep.line(&format!(
        "### Ownership and token budgets (wrk, concurrency {CONCURRENCY}, {} s per row after a {} s warm-up, median of {ROUNDS} interleaved rounds)",
        measure.as_secs(),
        warm.as_secs()
    ));
    rep.line("");
    rep.line(&format!("Every request carries one API key (`GIGACHAT_PROXY_API_KEYS`), so all rows pay for authentication alike; the budget (`GIGACHAT_PROXY_TOKEN_BUDGET={BUDGET}`) never runs out. Each chat call is sealed for ownership (its body scanned for object ids, its answer for generated files) and reserves, then settles, its tokens. Proxy µs/request is the proxy's CPU time per request; Redis µs/request the redis-server's."));
    rep.line("");
    rep.line("| Proxy | Requests/s | p50 ms | p99 ms | Errors | CPU proxy | Proxy µs/request | Redis µs/request | Added proxy µs/request |");
    rep.line("|---|---:|---:|---:|---:|---:|---:|---:|---:|");

    let start = async |name: &str, env: &[(&str, &str)]| {
        procs::start_proxy(
            &args.proxy_bin,
            b.emulator.addr,
            "warn",
            &args.work_dir.join(format!("proxy-tenancy-{name}.log")),
            env,
        )
        .await
    };
    let keyed = [
        ("GIGACHAT_PROXY_API_KEYS", KEY),
        ("GIGACHAT_PROXY_OWNERSHIP", "off"),
    ];
    let checked = [
        ("GIGACHAT_PROXY_API_KEYS", KEY),
        ("GIGACHAT_PROXY_OWNERSHIP", "on"),
        ("GIGACHAT_PROXY_TOKEN_BUDGET", BUDGET),
    ];
    let mut rows = vec![
        Row {
            label: "API key, ownership off, no budget (baseline)".to_owned(),
            expect: ["off", "off", "memory"],
            proxy: start("baseline", &keyed).await?,
            redis_pid: None,
        },
        Row {
            label: "ownership on + budget in memory".to_owned(),
            expect: ["on", BUDGET, "memory"],
            proxy: start("memory", &checked).await?,
            redis_pid: None,
        },
    ];
    let redis = match which("redis-server") {
        Some(bin) => Some(start_redis(&bin, &args.work_dir.join("redis-tenancy.log")).await?),
        None => None,
    };
    if let Some(redis) = &redis {
        let url = format!("redis://{}", redis.addr);
        let mut env = checked.to_vec();
        env.push(("REDIS_URL", url.as_str()));
        rows.push(Row {
            label: "ownership on + budget in Redis (`REDIS_URL`, local redis-server)".to_owned(),
            expect: ["on", BUDGET, "redis"],
            proxy: start("redis", &env).await?,
            redis_pid: Some(redis.pid()),
        });
    }

    for row in &rows {
        let health = health(row.proxy.addr).await?;
        let said = [&health["ownership"], &health["budget"], &health["limits"]];
        if said
            .iter()
            .zip(row.expect)
            .any(|(said, expected)| said.as_str() != Some(expected))
        {
            bail!(
                "{}: the proxy is not configured as the row needs ({:?} expected): {health}",
                row.label,
                row.expect
            );
        }
    }

    let script = args.bench_dir.join("wrk.lua");
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); rows.len()];
    for _ in 0..ROUNDS {
        for (i, row) in rows.iter().enumerate() {
            let target = Target {
                addr: row.proxy.addr,
                path: API_PATH.to_owned(),
                auth: Some(format!("Bearer {KEY}")),
            };
            wrk::run(&args.wrk, &script, &b.body_file, &target, CONCURRENCY, warm).await?;
            let cpu = procs::CpuWindow::start(b.emulator.pid(), Some(row.proxy.pid()));
            let redis_before = row.redis_pid.map(procs::cpu_seconds);
            let r = wrk::run(
                &args.wrk,
                &script,
                &b.body_file,
                &target,
                CONCURRENCY,
                measure,
            )
            .await?;
            let used = cpu.finish();
            let per_request = |seconds: f64| {
                if r.requests > 0 {
                    seconds * 1e6 / r.requests as f64
                } else {
                    f64::NAN
                }
            };
            let mid_us = per_request(used.mid_seconds);
            let redis_us = match (row.redis_pid, redis_before) {
                (Some(pid), Some(before)) => {
                    format!("{:.1}", per_request(procs::cpu_seconds(pid) - before))
                }
                _ => "–".to_owned(),
            };
            samples[i].push(Sample {
                // The last column is filled in once the baseline is known.
                line: format!(
                    "| {} | {:.0} | {} | {} | {} | {:.2} | {mid_us:.1} | {redis_us} |",
                    row.label,
                    r.rps(),
                    ms(r.p50),
                    ms(r.p99),
                    r.errors,
                    used.mid,
                ),
                rps: r.rps(),
                mid_us,
            });
        }
    }
    let medians: Vec<Sample> = samples
        .iter()
        .map(|runs| {
            let mut runs = runs.clone();
            runs.sort_by(|x, y| x.rps.total_cmp(&y.rps));
            runs[runs.len() / 2].clone()
        })
        .collect();
    let baseline_us = medians.first().map_or(f64::NAN, |s| s.mid_us);
    for (i, sample) in medians.iter().enumerate() {
        let added = if i == 0 {
            "–".to_owned()
        } else {
            format!("{:+.1}", sample.mid_us - baseline_us)
        };
        rep.line(&format!("{} {added} |", sample.line));
    }
    if redis.is_none() {
        rep.line("| ownership on + budget in Redis | could not run: no `redis-server` on PATH | | | | | | | |");
    }
    rep.line("");
    let rounds: Vec<String> = rows
        .iter()
        .zip(&samples)
        .map(|(row, runs)| {
            let all: Vec<String> = runs.iter().map(|s| format!("{:.0}", s.rps)).collect();
            format!("{} {}", row.label, all.join(", "))
        })
        .collect();
    rep.line(&format!("Requests/s of each round: {}.", rounds.join("; ")));
    rep.line("");

    for row in rows {
        row.proxy.stop().await;
    }
    if let Some(redis) = redis {
        redis.stop().await;
    }
    Ok(())
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.is_file())
}

/// A throwaway `redis-server` on a free loopback port, nothing persisted;
/// returns once it answers `PING`.
async fn start_redis(bin: &Path, log: &Path) -> Result<Proc> {
    let port = procs::free_port()?;
    let child = Command::new(bin)
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(log)?)
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if ping(addr).await {
            return Ok(Proc { child, addr });
        }
        if Instant::now() > deadline {
            bail!("redis-server did not answer PING on {addr} within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn ping(addr: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    if stream.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), stream.read_exact(&mut reply)).await,
        Ok(Ok(_)) if &reply == b"+PONG\r\n"
    )
}

/// The proxy's health document (which says whether ownership and the
/// budget are on, never anyone's spend).
async fn health(addr: SocketAddr) -> Result<serde_json::Value> {
    use http_body_util::BodyExt as _;
    let mut sender = client::connect(addr).await?;
    let request = hyper::Request::get("/api/gigachat-health")
        .header(hyper::header::HOST, addr.to_string())
        .body(http_body_util::Full::new(bytes::Bytes::new()))?;
    let response = sender.send_request(request).await?;
    if response.status() != hyper::StatusCode::OK {
        bail!("{addr}: health answered {}", response.status());
    }
    let body = response.into_body().collect().await?.to_bytes();
    Ok(serde_json::from_slice(&body)?)
}
