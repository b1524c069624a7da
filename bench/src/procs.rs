//! The processes under test (emulator, proxy, nginx) and what /proc says
//! about them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// The emulator's built-in key (docs/development.md, "The GigaChat emulator").
pub const EMULATOR_KEY: &str = "ZW11bGF0b3ItY2xpZW50LWlkOmVtdWxhdG9yLWNsaWVudC1zZWNyZXQ=";

/// A child process that is killed when dropped.
pub struct Proc {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// SIGTERM (nginx's master then takes its workers down with it, which
    /// a SIGKILL would not), then SIGKILL if it is still there after 5 s.
    pub async fn stop(mut self) {
        let pid = self.pid();
        if pid != 0 {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }
}

/// Reads stdout until a line containing `marker` and takes the
/// `host:port` that follows `http://` on it.
async fn addr_from_stdout(child: &mut Child, marker: &str) -> Result<SocketAddr> {
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let mut lines = BufReader::new(stdout).lines();
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(rest) = line.split(marker).nth(1)
                && let Some(rest) = rest.trim().strip_prefix("http://")
            {
                let hostport: String = rest
                    .chars()
                    .take_while(|c| !c.is_whitespace() && *c != '/')
                    .collect();
                return Ok::<_, anyhow::Error>(hostport.parse::<SocketAddr>()?);
            }
        }
        bail!("the process exited before printing '{marker}'")
    })
    .await
    .map_err(|_| anyhow!("timed out waiting for '{marker}'"))??;
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(found)
}

pub async fn start_emulator(bin: &Path, log: &Path) -> Result<Proc> {
    let mut cmd = Command::new(bin);
    cmd.args(["--port", "0", "--token-ttl-secs", "86400"])
        .env("RUST_LOG", "warn");
    start_listening(cmd, bin, log).await
}

/// Spawns `cmd` (stdout piped, stderr to `log`) and returns once it printed
/// the address it listens on.
async fn start_listening(mut cmd: Command, bin: &Path, log: &Path) -> Result<Proc> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log)?)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let addr = addr_from_stdout(&mut child, "listening on").await?;
    Ok(Proc { child, addr })
}

/// The proxy's environment against the standalone emulator. The upstream
/// concurrency guard (1 for a personal key) is switched off: it models
/// GigaChat's own limit and would make every row measure a queue.
pub fn proxy_env(emulator: SocketAddr, rust_log: &str) -> Vec<(String, String)> {
    [
        ("GIGACHAT_CREDENTIALS", EMULATOR_KEY.to_owned()),
        ("GIGACHAT_BASE_URL", format!("http://{emulator}/api/v1")),
        (
            "GIGACHAT_AUTH_URL",
            format!("http://{emulator}/api/v2/oauth"),
        ),
        ("GIGACHAT_PROXY_UPSTREAM_CONCURRENCY", "off".to_owned()),
        // Off by default; explicit so a changed default cannot turn the
        // proxy rows into cache hits.
        ("GIGACHAT_PROXY_CHAT_CACHE_TTL", "off".to_owned()),
        ("RUST_LOG", rust_log.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Extra environment for every proxy the harness starts (`--proxy-env`).
pub static PROXY_ENV: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();

pub fn proxy_command(
    bin: &Path,
    emulator: SocketAddr,
    rust_log: &str,
    log: &Path,
) -> Result<Command> {
    let mut cmd = Command::new(bin);
    cmd.args(["--host", "127.0.0.1", "--port", "0"])
        .envs(proxy_env(emulator, rust_log))
        .env_remove("REDIS_URL")
        .env_remove("KV_URL")
        .env_remove("UPSTASH_REDIS_URL")
        .envs(PROXY_ENV.get().into_iter().flatten().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log)?)
        .kill_on_drop(true);
    Ok(cmd)
}

pub async fn start_proxy(
    bin: &Path,
    emulator: SocketAddr,
    rust_log: &str,
    log: &Path,
    extra_env: &[(&str, &str)],
) -> Result<Proc> {
    let mut child = proxy_command(bin, emulator, rust_log, log)?
        .envs(extra_env.iter().copied())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let addr = addr_from_stdout(&mut child, "listening on").await?;
    Ok(Proc { child, addr })
}

/// Spawns the proxy and returns when it printed its address: used by the
/// cold-start measurement, which times the rest itself.
pub async fn spawn_proxy_timed(
    bin: &Path,
    emulator: SocketAddr,
    log: &Path,
) -> Result<(Proc, Instant)> {
    let started = Instant::now();
    let mut child = proxy_command(bin, emulator, "warn", log)?.spawn()?;
    let addr = addr_from_stdout(&mut child, "listening on").await?;
    Ok((Proc { child, addr }, started))
}

/// The hyper floor (`crates/server/examples/bare_hyper_proxy.rs`): the
/// same forwarding as the nginx row, in hyper and nothing else, laid out
/// like the local server (a current-thread runtime per core).
pub async fn start_hyper_floor(
    bin: &Path,
    emulator: SocketAddr,
    token: &str,
    log: &Path,
) -> Result<Proc> {
    let mut cmd = Command::new(bin);
    cmd.args(["0", &emulator.to_string(), token]);
    start_listening(cmd, bin, log).await
}

pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

pub struct Nginx {
    pub proc: Proc,
    pub dir: PathBuf,
}

/// Renders `nginx.conf.template` into `dir` and starts nginx in the
/// foreground; returns once it accepts connections.
pub async fn start_nginx(
    bin: &Path,
    template: &Path,
    dir: &Path,
    upstream: SocketAddr,
    token: &str,
) -> Result<Nginx> {
    std::fs::create_dir_all(dir)?;
    let port = free_port()?;
    let conf = std::fs::read_to_string(template)?
        .replace("@DIR@", &dir.display().to_string())
        .replace("@UPSTREAM_PORT@", &upstream.port().to_string())
        .replace("@PORT@", &port.to_string())
        .replace("@TOKEN@", token);
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let child = Command::new(bin)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr.log"))?)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            bail!(
                "nginx did not start: {}",
                std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Nginx {
        proc: Proc { child, addr },
        dir: dir.to_owned(),
    })
}

/// A process and its children (nginx's workers), for CPU accounting.
pub fn with_children(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        pids.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    pids
}

/// utime + stime of a process in seconds (USER_HZ is 100 on Linux).
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The command name may contain spaces; fields resume after the last ')'.
    let Some(rest) = stat.rsplit(')').next() else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    let get = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<f64>().ok());
    (get(14).unwrap_or(0.0) + get(15).unwrap_or(0.0)) / 100.0
}

pub fn cpu_seconds_all(pids: &[u32]) -> f64 {
    pids.iter().map(|p| cpu_seconds(*p)).sum()
}

/// (busy, total) jiffies of the whole machine from /proc/stat.
pub fn machine_jiffies() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().next() else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// A `VmRSS`-style field of /proc/<pid>/status, in KiB.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// CPU use of the processes under test over one measured interval.
pub struct CpuWindow {
    pids_emu: Vec<u32>,
    pids_mid: Vec<u32>,
    emu0: f64,
    mid0: f64,
    mid_switches0: u64,
    machine0: (u64, u64),
    opens0: u64,
    t0: Instant,
}

pub struct CpuUse {
    /// Cores used by the emulator.
    pub emu: f64,
    /// Cores used by the process in the middle (proxy or nginx), if any.
    pub mid: f64,
    /// Whole-machine busy share, 0–100 %.
    pub machine_pct: f64,
    /// CPU seconds of the middle process (for a per-request cost).
    pub mid_seconds: f64,
    /// TCP connections opened on the machine meanwhile.
    pub opens: u64,
    /// Context switches (voluntary and not) of the middle process's threads.
    pub mid_switches: u64,
}

impl CpuWindow {
    pub fn start(emu: u32, mid: Option<u32>) -> Self {
        let pids_emu = vec![emu];
        let pids_mid = mid.map(with_children).unwrap_or_default();
        Self {
            emu0: cpu_seconds_all(&pids_emu),
            mid0: cpu_seconds_all(&pids_mid),
            mid_switches0: context_switches_all(&pids_mid),
            machine0: machine_jiffies(),
            opens0: tcp_active_opens(),
            t0: Instant::now(),
            pids_emu,
            pids_mid,
        }
    }

    pub fn finish(&self) -> CpuUse {
        let secs = self.t0.elapsed().as_secs_f64().max(1e-3);
        let (b1, t1) = machine_jiffies();
        let (b0, t0) = self.machine0;
        let mid_seconds = cpu_seconds_all(&self.pids_mid) - self.mid0;
        CpuUse {
            emu: (cpu_seconds_all(&self.pids_emu) - self.emu0) / secs,
            mid: mid_seconds / secs,
            mid_seconds,
            opens: tcp_active_opens().saturating_sub(self.opens0),
            mid_switches: context_switches_all(&self.pids_mid).saturating_sub(self.mid_switches0),
            machine_pct: if t1 > t0 {
                100.0 * (b1 - b0) as f64 / (t1 - t0) as f64
            } else {
                0.0
            },
        }
    }
}

/// Context switches of every thread of the processes, from
/// `/proc/<pid>/task/*/status` (the process's own `status` counts only its
/// main thread). A thread that ends during a window takes its count along.
pub fn context_switches_all(pids: &[u32]) -> u64 {
    let mut total = 0;
    for pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let Ok(text) = std::fs::read_to_string(task.path().join("status")) else {
                continue;
            };
            total += text
                .lines()
                .filter(|l| {
                    l.starts_with("voluntary_ctxt_switches")
                        || l.starts_with("nonvoluntary_ctxt_switches")
                })
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    total
}

/// Active TCP opens on the whole machine (/proc/net/snmp `Tcp: ActiveOpens`).
pub fn tcp_active_opens() -> u64 {
    let text = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (Some(names), Some(values)) = (tcp.next(), tcp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "ActiveOpens")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}
