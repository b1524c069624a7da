//! Non-streaming chat, closed loop: wrk at concurrency 1, 32 and 128 on
//! each path, with the CPU and context switches each process used;
//! concurrency 32 (the target row) in three interleaved rounds, with the
//! proxy's OpenAI route among them; whole streams at concurrency 32 through
//! the native and the `useChat` route; and the proxy at `RUST_LOG=info`.

use std::path::Path;

use anyhow::{Result, bail};
use hyper::StatusCode;

use crate::bench::{API_PATH, Bench, Translated, set_chunk_delay};
use crate::client::{self, Target};
use crate::procs;
use crate::report::{Report, ms};
use crate::wrk;

/// Issue 15: the proxy's throughput against nginx `proxy_pass`, side by
/// side, at concurrency 32 and 128.
const NGINX_THROUGHPUT_SHARE: f64 = 0.9;
/// Issue 12: the OpenAI route keeps at least this share of the native
/// route's throughput at concurrency 32.
const OPENAI_THROUGHPUT_SHARE: f64 = 0.9;
const OPENAI_ROW: &str =
    "gigachat-proxy, OpenAI route (`/api/gigachat-openai/v1/chat/completions`)";
const NATIVE_STREAM_ROW: &str = "gigachat-proxy, native route, `stream: true` (whole stream)";
const UI_CHAT_ROW: &str = "gigachat-proxy, `useChat` route (`/api/gigachat-chat`, whole stream)";
/// hyper alone doing the nginx row's forwarding: what no hyper-based proxy
/// gets under (issue 15's floor).
const FLOOR_ROW: &str = "hyper floor (`bare_hyper_proxy` example: forwarding only)";

/// A proxy variant row: label, `RUST_LOG`, extra environment.
type Variant<'a> = (String, &'a str, Vec<(&'a str, &'a str)>);

pub async fn run(b: &Bench, rep: &mut Report) -> Result<()> {
    let Bench {
        args,
        emulator,
        proxy,
        nginx,
        floor,
        targets: t,
        body_file,
        openai,
        ui_chat,
        stream_body,
        ..
    } = b;
    let (warm, measure) = (b.warm, b.measure);
    let mut c32 = (None, None);
    let mut c128 = (None, None);
    // The hyper floor's requests/s at concurrency 32 and 128.
    let mut floor_rps: (Option<f64>, Option<f64>) = (None, None);
    let mut openai_rps = None;
    // Requests/s of each concurrency-32 round: the native route's and the
    // OpenAI route's, measured back to back within a round.
    let mut paired_rounds: (Vec<f64>, Vec<f64>) = (Vec::new(), Vec::new());
    // The OpenAI route joins the concurrency-32 rounds only when one call
    // through it answers 200 with the native route's text: otherwise its
    // row would time errors.
    let openai_file = match check_openai(b, openai).await {
        Ok(file) => Ok(file),
        Err(e) => Err(format!("could not run: {e:#}")),
    };
    rep.line(&format!(
        "### Non-streaming chat, closed loop (wrk, {} s per row after a {} s warm-up)",
        measure.as_secs(),
        warm.as_secs()
    ));
    rep.line("");
    rep.line("CPU columns: cores used by the emulator and by the process in the middle, that process's CPU time per request, and the whole machine's busy share (wrk and the rest of the machine use the remainder). Switches/request: context switches of all the middle process's threads (`/proc/<pid>/task/*/status`, voluntary and not) per request. New TCP: connections opened on the machine during the row (wrk's own plus any the middle opens upstream).");
    rep.line("");
    rep.line("| Concurrency | Path | Requests/s | p50 ms | p99 ms | p99.9 ms | Errors | CPU emulator | CPU middle | Middle µs/request | Switches/request | Machine busy | New TCP |");
    rep.line("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let script = args.bench_dir.join("wrk.lua");
    let row = async |name: &str,
                     target: &Target,
                     body_file: &Path,
                     conns: usize,
                     mid: Option<u32>|
           -> Result<(String, f64)> {
        wrk::run(&args.wrk, &script, body_file, target, conns, warm).await?;
        let cpu = procs::CpuWindow::start(emulator.pid(), mid);
        let r = wrk::run(&args.wrk, &script, body_file, target, conns, measure).await?;
        let used = cpu.finish();
        let line = format!(
            "| {conns} | {name} | {:.0} | {} | {} | {} | {} | {:.2} | {} | {} | {} | {:.0} % | {} |",
            r.rps(),
            ms(r.p50),
            ms(r.p99),
            ms(r.p999),
            r.errors,
            used.emu,
            if mid.is_some() {
                format!("{:.2}", used.mid)
            } else {
                "–".to_owned()
            },
            if mid.is_some() && r.requests > 0 {
                format!("{:.1}", used.mid_seconds * 1e6 / r.requests as f64)
            } else {
                "–".to_owned()
            },
            if mid.is_some() && r.requests > 0 {
                format!("{:.2}", used.mid_switches as f64 / r.requests as f64)
            } else {
                "–".to_owned()
            },
            used.machine_pct,
            used.opens,
        );
        Ok::<_, anyhow::Error>((line, r.rps()))
    };
    // The target row (concurrency 32) is measured in three interleaved
    // rounds (direct, nginx, proxy, direct, …) and the median round of
    // each path is shown: on a shared 2-core machine one 10 s sample
    // can be ±15 % off, and interleaving spreads any drift over all
    // three paths alike.
    let mut rounds_note = Vec::new();
    for conns in [1usize, 32, 128] {
        let rounds = if conns == 32 { 3 } else { 1 };
        let mut paths: Vec<(&str, &Target, Option<u32>, &Path)> = vec![
            ("direct to emulator", &t.direct, None, body_file.as_path()),
            (
                "nginx proxy_pass",
                &t.nginx,
                nginx.as_ref().map(|n| n.proc.pid()),
                body_file.as_path(),
            ),
            (
                "gigachat-proxy",
                &t.proxy,
                Some(proxy.pid()),
                body_file.as_path(),
            ),
        ];
        if let Some(floor) = floor
            && conns > 1
        {
            paths.push((FLOOR_ROW, &t.floor, Some(floor.pid()), body_file.as_path()));
        }
        if conns == 32
            && let Ok(file) = &openai_file
        {
            paths.push((OPENAI_ROW, &openai.target, Some(proxy.pid()), file));
        }
        let mut runs: Vec<Vec<(String, f64)>> = vec![Vec::new(); paths.len()];
        for _ in 0..rounds {
            for (i, (name, target, mid, file)) in paths.iter().enumerate() {
                if name.starts_with("nginx") && nginx.is_none() {
                    continue;
                }
                runs[i].push(row(name, target, file, conns, *mid).await?);
            }
        }
        for (i, (name, _, _, _)) in paths.iter().enumerate() {
            let mut path_runs = runs[i].clone();
            if path_runs.is_empty() {
                rep.line(&format!(
                    "| {conns} | {name} | could not run: nginx did not start | | | | | | | | | | |"
                ));
                continue;
            }
            path_runs.sort_by(|x, y| x.1.total_cmp(&y.1));
            let (line, rps) = path_runs[path_runs.len() / 2].clone();
            if rounds > 1 {
                let all: Vec<String> = runs[i].iter().map(|r| format!("{:.0}", r.1)).collect();
                rounds_note.push(format!("{name} {}", all.join(", ")));
            }
            if *name == FLOOR_ROW {
                if conns == 32 {
                    floor_rps.0 = Some(rps);
                } else {
                    floor_rps.1 = Some(rps);
                }
            } else if conns == 128 {
                if name.starts_with("nginx") {
                    c128.0 = Some(rps);
                } else if name.starts_with("gigachat") {
                    c128.1 = Some(rps);
                }
            }
            if conns == 32 {
                if name.starts_with("nginx") {
                    c32.0 = Some(rps);
                } else if *name == OPENAI_ROW {
                    openai_rps = Some(rps);
                    paired_rounds.1 = runs[i].iter().map(|r| r.1).collect();
                } else if name.starts_with("gigachat") {
                    c32.1 = Some(rps);
                    paired_rounds.0 = runs[i].iter().map(|r| r.1).collect();
                }
            }
            rep.line(&line);
        }
        if conns == 32
            && let Err(why) = &openai_file
        {
            rep.line(&format!(
                "| 32 | {OPENAI_ROW} | {why} | | | | | | | | | | |"
            ));
        }
    }
    // Whole streams (the emulator sends its events without delay): the
    // `useChat` route has no other form, so it is compared with the
    // native route's stream, one after the other on the same proxy.
    set_chunk_delay(&emulator.addr, std::time::Duration::ZERO).await?;
    let native_stream_file = args.work_dir.join("stream-body.json");
    std::fs::write(&native_stream_file, stream_body)?;
    let ui_chat_file = args.work_dir.join("ui-chat-body.json");
    std::fs::write(&ui_chat_file, &ui_chat.stream_body)?;
    let native_stream_target = Target {
        addr: t.proxy.addr,
        path: API_PATH.to_owned(),
        auth: None,
    };
    let mut stream_rps = Vec::new();
    for (name, target, file) in [
        (
            NATIVE_STREAM_ROW,
            &native_stream_target,
            &native_stream_file,
        ),
        (UI_CHAT_ROW, &ui_chat.target, &ui_chat_file),
    ] {
        match row(name, target, file, 32, Some(proxy.pid())).await {
            Ok((line, rps)) => {
                rep.line(&line);
                stream_rps.push(rps);
            }
            Err(e) => rep.line(&format!(
                "| 32 | {name} | could not run: {} | | | | | | | | | | |",
                format!("{e:#}").replace(['|', '\n'], " ")
            )),
        }
    }
    // A variant of the proxy at concurrency 32, a fresh process: the
    // default `info` level (one access line per request, to a file).
    let variants: Vec<Variant> = vec![(
        "gigachat-proxy, `RUST_LOG=info` (access log to a file)".to_owned(),
        "info",
        Vec::new(),
    )];
    for (label, level, env) in &variants {
        let variant = procs::start_proxy(
            &args.proxy_bin,
            emulator.addr,
            level,
            &args.work_dir.join("proxy-variant.log"),
            env,
        )
        .await?;
        let target = Target {
            addr: variant.addr,
            path: API_PATH.to_owned(),
            auth: None,
        };
        let (line, _) = row(label, &target, body_file, 32, Some(variant.pid())).await?;
        rep.line(&line);
        variant.stop().await;
    }
    rep.line("");
    if !rounds_note.is_empty() {
        rep.line(&format!(
            "Concurrency 32: the median of three interleaved rounds per path (requests/s of each round: {}).",
            rounds_note.join("; ")
        ));
        rep.line("");
    }
    for (conns, floor, (ng, px)) in [(32, floor_rps.0, c32), (128, floor_rps.1, c128)] {
        if let (Some(fl), Some(ng), Some(px)) = (floor, ng, px) {
            rep.line(&format!(
                "Hyper floor at concurrency {conns}: {fl:.0} req/s, {:.0} % of nginx; gigachat-proxy {:.0} % of nginx and {:.0} % of the floor.",
                fl / ng * 100.0,
                px / ng * 100.0,
                px / fl * 100.0
            ));
            rep.line("");
        }
    }
    for (conns, pair) in [(32, c32), (128, c128)] {
        let label = format!("Throughput at concurrency {conns}");
        let goal = format!("≥ {:.0} % of nginx", NGINX_THROUGHPUT_SHARE * 100.0);
        match pair {
            (Some(ng), Some(px)) => {
                let ratio = px / ng;
                rep.target(
                    &label,
                    &goal,
                    format!("{px:.0} vs {ng:.0} req/s = {:.0} %", ratio * 100.0),
                    Some(ratio >= NGINX_THROUGHPUT_SHARE),
                );
            }
            _ => rep.target(
                &label,
                &goal,
                "could not run (no nginx row)".to_owned(),
                None,
            ),
        }
    }
    let openai_goal = format!(
        "≥ {:.0} % of the native route",
        OPENAI_THROUGHPUT_SHARE * 100.0
    );
    let openai_target = "OpenAI route throughput at concurrency 32";
    match (openai_rps, c32.1, &openai_file) {
        (Some(oa), Some(px), _) => {
            let share = oa / px;
            let per_round: Vec<String> = paired_rounds
                .0
                .iter()
                .zip(&paired_rounds.1)
                .map(|(native, translated)| format!("{:.0} %", translated / native * 100.0))
                .collect();
            rep.line(&format!(
                "OpenAI route at concurrency 32: {oa:.0} req/s, {:.0} % of the native route's {px:.0} req/s (median rounds; round by round: {}). The same call in OpenAI's dialect, translated both ways; Middle µs/request shows what the translation costs in CPU.",
                share * 100.0,
                per_round.join(", ")
            ));
            rep.line("");
            rep.target(
                openai_target,
                &openai_goal,
                format!("{oa:.0} vs {px:.0} req/s = {:.0} %", share * 100.0),
                Some(share >= OPENAI_THROUGHPUT_SHARE),
            );
        }
        (_, _, Err(why)) => rep.target(openai_target, &openai_goal, why.clone(), None),
        _ => rep.target(openai_target, &openai_goal, "not measured".to_owned(), None),
    }
    let ui_chat_goal = format!(
        "≥ {:.0} % of the native route's stream",
        OPENAI_THROUGHPUT_SHARE * 100.0
    );
    match stream_rps[..] {
        [native, ui] => {
            let share = ui / native;
            rep.target(
                "`useChat` route throughput at concurrency 32 (whole streams)",
                &ui_chat_goal,
                format!("{ui:.0} vs {native:.0} req/s = {:.0} %", share * 100.0),
                Some(share >= OPENAI_THROUGHPUT_SHARE),
            );
        }
        _ => rep.target(
            "`useChat` route throughput at concurrency 32 (whole streams)",
            &ui_chat_goal,
            "could not run".to_owned(),
            None,
        ),
    }
    Ok(())
}

/// One call through the OpenAI route must answer 200 with the native
/// route's text (the emulator's one echo reply), and the route must have a
/// body file for wrk; returns that file.
async fn check_openai<'a>(b: &Bench, openai: &'a Translated) -> Result<&'a Path> {
    let (Some(body), Some(file)) = (&openai.body, &openai.body_file) else {
        bail!("the OpenAI route has no non-streaming body");
    };
    let content = async |target: &Target, body: &bytes::Bytes| -> Result<String> {
        let mut sender = client::connect(target.addr).await?;
        let (status, answer) = client::post(&mut sender, target, body.clone()).await?;
        if status != StatusCode::OK {
            bail!(
                "`{}` answered {status}: {}",
                target.path,
                String::from_utf8_lossy(&answer)
                    .chars()
                    .take(200)
                    .collect::<String>()
                    .replace(['|', '\n'], " ")
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&answer)?;
        Ok(v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    };
    let native = content(&b.targets.proxy, &b.body).await?;
    let translated = content(&openai.target, body).await?;
    if translated.is_empty() || translated != native {
        bail!(
            "`{}` answered other content than the native route: {translated:?} vs {native:?}",
            openai.target.path
        );
    }
    Ok(file)
}
