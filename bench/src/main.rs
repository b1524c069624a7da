//! `gigachat-bench`: the benchmark driver behind `bash bench/run.sh`.
//!
//! Starts the standalone emulator, the release proxy and an nginx
//! `proxy_pass` doing the same forwarding, measures every row with the same
//! payload on the same machine, and writes a markdown report. See
//! bench/README.md for what each row means and how it is measured.
//!
//! This file only orchestrates: `bench.rs` starts the processes under test,
//! each module of `sections/` measures one section of the report, and
//! `report.rs` writes it.

mod args;
mod bench;
mod client;
mod procs;
mod report;
mod runtime_api;
mod sections;
mod wrk;

use anyhow::Result;

use args::Args;
use bench::Bench;
use report::{Report, RunFacts};

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse()?;
    std::fs::create_dir_all(&args.work_dir)?;
    let _ = procs::PROXY_ENV.set(args.proxy_env.clone());
    let facts = RunFacts::now();
    let b = Bench::start(args).await?;
    let mut rep = Report::default();
    rep.preamble(&b.args, &b.body, &facts);

    if b.args.wants("throughput") {
        sections::throughput::run(&b, &mut rep).await?;
    }
    if b.args.wants("latency") {
        sections::latency::run(&b, &mut rep).await?;
    }
    if b.args.wants("stream") {
        sections::streaming::run(&b, &mut rep).await?;
    }
    if b.args.wants("memory") {
        sections::memory::run(&b, &mut rep).await?;
    }
    if b.args.wants("cold") {
        sections::cold_start::run(&b, &mut rep).await?;
    }
    if b.args.wants("sizes") {
        sections::sizes::run(&b, &mut rep).await?;
    }
    if b.args.wants("tenancy") {
        sections::tenancy::run(&b, &mut rep).await?;
    }
    if b.args.wants("serverless") {
        sections::serverless::run(&b, &mut rep).await?;
    }

    let out = rep.finish();
    let path = b.args.out.clone();
    b.stop().await;
    std::fs::write(&path, &out)?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
