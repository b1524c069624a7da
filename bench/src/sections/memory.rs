//! Memory: the proxy's resident set idle, with 1,000 open streams (a fresh
//! process, so earlier rows' allocations do not count) and after they
//! closed, and the long-running proxy's peak after every row before.

use std::time::Duration;

use anyhow::Result;

use crate::bench::{API_PATH, Bench, set_chunk_delay};
use crate::client::{self, Target};
use crate::procs;
use crate::report::{Report, mib};

pub async fn run(b: &Bench, rep: &mut Report) -> Result<()> {
    let Bench {
        args,
        emulator,
        proxy,
        body,
        stream_body,
        ..
    } = b;
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
    let fresh_anon = procs::status_kib(fresh.pid(), "RssAnon").unwrap_or(0);
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
    let anon_idle_open = (
        procs::status_kib(fresh.pid(), "RssAnon").unwrap_or(0),
        fresh_anon,
    );
    // Experiments: keep the streams open a while so a profiler or
    // /proc/<pid>/smaps can look at the proxy holding them.
    if let Some(hold) = std::env::var("GIGACHAT_BENCH_MEMORY_HOLD_S")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        eprintln!(
            "memory: holding {opened} streams for {hold} s; proxy pid {}",
            fresh.pid()
        );
        tokio::time::sleep(Duration::from_secs(hold)).await;
    }
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
    // What one more open stream costs, and how much of it is the heap
    // (anonymous memory) rather than mapped code.
    let per_stream =
        |after: u64, before: u64| after.saturating_sub(before) as f64 / n.max(1) as f64;
    rep.line(&format!(
        "Per open stream: {:.1} KiB of VmRSS, {:.1} KiB of it anonymous (RssAnon {} idle, {} with the streams open).",
        per_stream(rss_open, fresh_idle),
        per_stream(anon_idle_open.0, anon_idle_open.1),
        mib(anon_idle_open.1),
        mib(anon_idle_open.0),
    ));
    rep.line("");
    rep.target(
        "RSS with 1,000 open streams",
        "≤ 64 MB",
        format!("{:.1} MB ({opened} open)", rss_open as f64 * 1024.0 / 1e6),
        Some(opened == n && rss_open as f64 * 1024.0 <= 64e6),
    );
    Ok(())
}
