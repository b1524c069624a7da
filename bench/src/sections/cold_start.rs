//! Cold start: a fresh proxy process with an empty token cache, from spawn
//! to its first proxied 200, with the OAuth round trip it includes
//! measured on its own.

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::bench::Bench;
use crate::client;
use crate::report::{Report, median, ms};

pub async fn run(b: &Bench, rep: &mut Report) -> Result<()> {
    let Bench {
        args,
        emulator,
        targets: t,
        body,
        ..
    } = b;
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
    Ok(())
}
