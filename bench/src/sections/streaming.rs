//! Streaming: 256 concurrent streams with the emulator's events 20 ms
//! apart; time to first chunk on each path, and every event compared with
//! the emulator's own sequence (lost, merged, altered).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use crate::bench::{Bench, set_chunk_delay};
use crate::client;
use crate::procs;
use crate::report::{Report, ms, percentile, signed_ms};

pub async fn run(b: &Bench, rep: &mut Report) -> Result<()> {
    let Bench {
        emulator,
        proxy,
        nginx,
        targets: t,
        stream_body,
        ..
    } = b;
    let (warm, measure) = (b.warm, b.measure);
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
    Ok(())
}
