//! Closed-loop rows with `wrk` (Debian's package): N connections, each
//! sending the next request as soon as the previous answer arrived.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use tokio::process::Command;

use crate::client::Target;

pub struct WrkResult {
    pub requests: u64,
    pub seconds: f64,
    pub errors: u64,
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
}

impl WrkResult {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }
}

pub async fn run(
    wrk: &Path,
    script: &Path,
    body_file: &Path,
    target: &Target,
    conns: usize,
    duration: Duration,
) -> Result<WrkResult> {
    let threads = conns.clamp(1, 2);
    let output = Command::new(wrk)
        .arg(format!("-t{threads}"))
        .arg(format!("-c{conns}"))
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .args(["--timeout", "5s", "-s"])
        .arg(script)
        .arg(target.url())
        .env("BENCH_BODY_FILE", body_file)
        .env("BENCH_AUTH", target.auth.as_deref().unwrap_or(""))
        .output()
        .await
        .with_context(|| format!("running {}", wrk.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let Some(line) = stdout.lines().find_map(|l| l.strip_prefix("BENCH_JSON ")) else {
        bail!(
            "wrk printed no result: {}{}",
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let v: serde_json::Value = serde_json::from_str(line)?;
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    Ok(WrkResult {
        requests: n("requests"),
        seconds: n("duration_us") as f64 / 1e6,
        errors: n("connect") + n("read") + n("write") + n("status") + n("timeout"),
        p50: Duration::from_micros(n("p50_us")),
        p99: Duration::from_micros(n("p99_us")),
        p999: Duration::from_micros(n("p999_us")),
    })
}
