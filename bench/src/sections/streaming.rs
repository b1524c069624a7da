//! Streaming: 256 concurrent streams with the emulator's events 20 ms
//! apart; time to first chunk on each path, and every event compared with
//! the emulator's own sequence (lost, merged, altered). Then the proxy's
//! translated routes (OpenAI's chat stream, the AI SDK's UI message stream)
//! on the same upstream stream, with their TTFC over the native route's.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use hyper::StatusCode;

use crate::bench::{Bench, Translated, set_chunk_delay};
use crate::client::{self, Dialect, Expected, StreamAnswer, StreamRun, Target};
use crate::procs;
use crate::report::{Report, ms, percentile, signed_ms};

const STREAMS: usize = 256;
/// Issue 12 (OpenAI route) and issue 13 (`useChat` route): the
/// translation may add at most this much to the native route's TTFC p99.
const TRANSLATED_TTFC_P99_MS: f64 = 1.0;

/// A measured row: its TTFC percentiles and its run.
struct Measured {
    p50: Duration,
    p99: Duration,
    run: StreamRun,
}

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
    let reference_text: Arc<Vec<String>> = Arc::new(
        reference
            .iter()
            .filter_map(|e| Dialect::GigaChat.text(e))
            .collect(),
    );
    let upstream_events = reference.len();
    let routes = [
        (
            "gigachat-proxy, OpenAI route (`stream: true`)",
            "OpenAI route",
            &b.openai,
        ),
        (
            "gigachat-proxy, `useChat` route (`/api/gigachat-chat`)",
            "`useChat` route",
            &b.ui_chat,
        ),
    ];
    // One stream through each translated route first: a route that is not
    // there (404) or fails is reported as such instead of as 256 errors.
    let mut probes = Vec::with_capacity(routes.len());
    for (_, short, route) in &routes {
        let probe = probe(route, &reference_text).await;
        if let Ok(false) = probe {
            rep.line(&format!(
                "**The {short} changed the text of a single stream** (its text deltas differ from the emulator's events)."
            ));
        }
        probes.push(probe);
    }

    rep.line(&format!(
        "### Streaming: {STREAMS} concurrent streams ({} SSE events each, {} ms apart; {} s after a {} s warm-up)",
        reference.len(),
        delay.as_millis(),
        measure.as_secs(),
        warm.as_secs().max(2)
    ));
    rep.line("");
    rep.line("Each client keeps one connection and runs streams back to back; starts are spread over one stream's length. TTFC: request sent → first complete event. Events are compared with the emulator's sequence (timestamps masked); \"merged\" counts events that arrived < 5 ms after the previous one although sent 20 ms apart. Overhead: over the direct row; over native: over the native route (`gigachat-proxy`).");
    rep.line("");
    rep.line(&format!("Translated routes (OpenAI, `useChat`) answer in another dialect, so their rows count only the events that carry text: TTFC is request sent → first event with text (a role-only chunk or `start`/`text-start` sent earlier does not count), and lost, merged and altered compare those events' text with the text of the emulator's {} text events, in order. Events is every SSE event the route sent, in its own dialect.", reference_text.len()));
    rep.line("");
    rep.line("| Path | Streams | TTFC p50 ms | TTFC p99 ms | Overhead p50 ms | Overhead p99 ms | Over native p50 ms | Over native p99 ms | Events | Lost | Merged | Altered streams | Errors | CPU emulator | CPU middle | Machine busy | New TCP |");
    rep.line(
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    );
    let measure_row = async |target: &Target,
                             body: &bytes::Bytes,
                             expected: Expected,
                             mid: Option<u32>|
           -> Result<(Measured, procs::CpuUse)> {
        let cpu = procs::CpuWindow::start(emulator.pid(), mid);
        let run = client::stream_load(
            target,
            body.clone(),
            STREAMS,
            warm.max(Duration::from_secs(2)),
            measure,
            delay,
            expected,
        )
        .await?;
        let used = cpu.finish();
        let mut s = run.ttfc.clone();
        s.sort();
        let (p50, p99) = (percentile(&s, 50.0), percentile(&s, 99.0));
        Ok((Measured { p50, p99, run }, used))
    };
    let line = |name: &str,
                m: &Measured,
                direct: Option<&Measured>,
                native: Option<&Measured>,
                used: &procs::CpuUse,
                mid: Option<u32>| {
        let over = |base: Option<&Measured>| match base {
            None => ("–".to_owned(), "–".to_owned()),
            Some(base) => (signed_ms(m.p50, base.p50), signed_ms(m.p99, base.p99)),
        };
        let (o50, o99) = over(direct);
        let (n50, n99) = over(native);
        let r = &m.run;
        format!(
            "| {name} | {} | {} | {} | {o50} | {o99} | {n50} | {n99} | {} | {} | {} | {} | {} | {:.2} | {} | {:.0} % | {} |",
            r.streams,
            ms(m.p50),
            ms(m.p99),
            r.events,
            r.lost_events,
            r.merged_events,
            r.mismatched_streams,
            r.errors,
            used.emu,
            if mid.is_some() {
                format!("{:.2}", used.mid)
            } else {
                "–".to_owned()
            },
            used.machine_pct,
            used.opens,
        )
    };

    let native_expected = || Expected {
        units: Arc::clone(&reference),
        dialect: Dialect::GigaChat,
        upstream_events,
    };
    let (direct, used) = measure_row(&t.direct, stream_body, native_expected(), None).await?;
    rep.line(&line(
        "direct to emulator",
        &direct,
        None,
        None,
        &used,
        None,
    ));
    match nginx {
        Some(n) => {
            let mid = Some(n.proc.pid());
            let (m, used) = measure_row(&t.nginx, stream_body, native_expected(), mid).await?;
            rep.line(&line("nginx proxy_pass", &m, Some(&direct), None, &used, mid));
        }
        None => rep.line(
            "| nginx proxy_pass | could not run: nginx did not start | | | | | | | | | | | | | | | |",
        ),
    }
    let mid = Some(proxy.pid());
    let (native, used) = measure_row(&t.proxy, stream_body, native_expected(), mid).await?;
    rep.line(&line(
        "gigachat-proxy",
        &native,
        Some(&direct),
        None,
        &used,
        mid,
    ));
    let native_faithful = native.run.lost_events == 0
        && native.run.merged_events == 0
        && native.run.mismatched_streams == 0
        && native.run.errors == 0
        && through == *reference;
    rep.target(
        "TTFC overhead p99, 256 streams, every chunk as sent",
        "≤ 2 ms, 0 lost/merged",
        format!(
            "{} ms; {} events, {} lost, {} merged, {} altered streams, {} errors",
            signed_ms(native.p99, direct.p99),
            native.run.events,
            native.run.lost_events,
            native.run.merged_events,
            native.run.mismatched_streams,
            native.run.errors
        ),
        Some((native.p99.as_secs_f64() - direct.p99.as_secs_f64()) * 1e3 <= 2.0 && native_faithful),
    );

    for ((name, short, route), probe) in routes.iter().zip(probes) {
        let target_name = format!("{short}: TTFC p99 over the native route, {STREAMS} streams");
        let goal = format!("≤ +{TRANSLATED_TTFC_P99_MS:.0} ms, 0 lost/merged/altered");
        let single_ok = match probe {
            Ok(same) => same,
            Err(why) => {
                rep.line(&format!("| {name} | {why} | | | | | | | | | | | | | | | |"));
                rep.target(&target_name, &goal, why, None);
                continue;
            }
        };
        let expected = Expected {
            units: Arc::clone(&reference_text),
            dialect: route.dialect,
            upstream_events,
        };
        let (m, used) = measure_row(&route.target, &route.stream_body, expected, mid).await?;
        rep.line(&line(name, &m, Some(&direct), Some(&native), &used, mid));
        let r = &m.run;
        let added = (m.p99.as_secs_f64() - native.p99.as_secs_f64()) * 1e3;
        let faithful = r.lost_events == 0
            && r.merged_events == 0
            && r.mismatched_streams == 0
            && r.errors == 0
            && single_ok;
        rep.target(
            &target_name,
            &goal,
            format!(
                "{added:+.2} ms (p50 {}); {} streams, {} lost, {} merged, {} altered, {} errors",
                signed_ms(m.p50, native.p50),
                r.streams,
                r.lost_events,
                r.merged_events,
                r.mismatched_streams,
                r.errors
            ),
            Some(added <= TRANSLATED_TTFC_P99_MS && faithful),
        );
    }
    set_chunk_delay(&emulator.addr, Duration::ZERO).await?;
    rep.line("");
    Ok(())
}

/// One stream through a translated route: `Ok(true)` when its text is the
/// emulator's, piece for piece; `Err` with the row's note when the route
/// cannot be measured (a 404 means it is not built yet).
async fn probe(route: &Translated, reference_text: &[String]) -> Result<bool, String> {
    match client::try_stream(&route.target, route.stream_body.clone()).await {
        Ok(StreamAnswer::Events(events)) => {
            let text: Vec<String> = events
                .iter()
                .filter_map(|e| route.dialect.text(e))
                .collect();
            Ok(text == reference_text)
        }
        Ok(StreamAnswer::Refused(StatusCode::NOT_FOUND, _)) => Err(format!(
            "skipped: `{}` answers 404 (the route is not in this build)",
            route.target.path
        )),
        Ok(StreamAnswer::Refused(status, body)) => Err(format!(
            "could not run: `{}` answered {status}: {}",
            route.target.path,
            body.chars()
                .take(200)
                .collect::<String>()
                .replace(['|', '\n'], " ")
        )),
        Err(e) => Err(format!("could not run: `{}`: {e:#}", route.target.path)),
    }
}
