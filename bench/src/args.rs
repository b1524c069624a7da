//! The command line of `gigachat-bench` (what `bench/run.sh` passes).

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};

pub struct Args {
    pub proxy_bin: PathBuf,
    pub emulator_bin: PathBuf,
    pub bin_dir: PathBuf,
    pub bench_dir: PathBuf,
    pub work_dir: PathBuf,
    pub wrk: PathBuf,
    pub nginx: PathBuf,
    pub out: PathBuf,
    pub quick: bool,
    pub sections: Vec<String>,
    pub notes: Vec<String>,
    pub proxy_env: Vec<(String, String)>,
    pub arm64_bin: Option<PathBuf>,
}

impl Args {
    pub fn parse() -> Result<Self> {
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

    pub fn wants(&self, section: &str) -> bool {
        self.sections.is_empty() || self.sections.iter().any(|s| s == section)
    }
}
