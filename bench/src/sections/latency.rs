//! Added latency at a constant 1,000 requests/s: the bench crate's own
//! open-loop client, so waiting for a free connection counts (no
//! coordinated omission); "added" is a path's percentile minus direct's.

use std::time::Duration;

use anyhow::Result;

use crate::bench::Bench;
use crate::client;
use crate::report::{Report, ms, percentile, signed_ms};

pub async fn run(b: &Bench, rep: &mut Report) -> Result<()> {
    let Bench {
        args,
        nginx,
        targets: t,
        body,
        ..
    } = b;
    let warm = b.warm;
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
    Ok(())
}
