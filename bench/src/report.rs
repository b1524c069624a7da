//! The markdown report: its lines (printed as they are written), the
//! targets table at the end, the header facts (machine, tools, commit), and
//! how numbers are shown.

use std::time::Duration;

use bytes::Bytes;

use crate::args::Args;
use crate::procs;

/// The report so far, and the targets the sections measured.
#[derive(Default)]
pub struct Report {
    out: String,
    targets: Vec<(String, String, String, Option<bool>)>,
}

impl Report {
    pub fn line(&mut self, s: &str) {
        self.out.push_str(s);
        self.out.push('\n');
        println!("{s}");
    }

    pub fn target(&mut self, name: &str, goal: &str, measured: String, met: Option<bool>) {
        self.targets
            .push((name.to_owned(), goal.to_owned(), measured, met));
    }

    /// What was measured where and how: the first lines of the report.
    pub fn preamble(&mut self, args: &Args, body: &Bytes, run: &RunFacts) {
        let rep = self;
        let RunFacts {
            load_start,
            started_at,
            commit,
            dirty,
        } = run;
        let dirty = *dirty;
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
            String::from_utf8_lossy(body),
            body.len()
        ));
        rep.line("");
    }

    /// The targets table and the closing load average.
    pub fn finish(mut self) -> String {
        let rep = &mut self;
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
        self.out
    }
}

/// Facts about the run taken before anything starts.
pub struct RunFacts {
    pub load_start: String,
    pub started_at: String,
    pub commit: String,
    pub dirty: bool,
}

impl RunFacts {
    pub fn now() -> Self {
        Self {
            load_start: procs::loadavg(),
            started_at: cmd_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            commit: cmd_line("git", &["rev-parse", "--short", "HEAD"]),
            dirty: !cmd_line("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty(),
        }
    }
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

pub fn signed_ms(a: Duration, b: Duration) -> String {
    format!("{:+.2}", (a.as_secs_f64() - b.as_secs_f64()) * 1e3)
}

pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    percentile(&v, 50.0)
}

pub fn mb(bytes: u64) -> String {
    format!("{:.2} MB", bytes as f64 / 1e6)
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

/// Cores, CPU model, memory and kernel, for the report header.
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
