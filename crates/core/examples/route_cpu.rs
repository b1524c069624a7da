//! CPU per request of the proxy's chat routes, in process: the native
//! route, the OpenAI route and the `useChat` route answer the same message
//! from the emulator, and the proxy thread's CPU time (not wall time: the
//! machine may be busy with other work) is divided by the calls.
//!
//! The proxy runs on this thread's single-threaded runtime, the emulator on
//! a runtime of its own, so the numbers are the proxy's alone: its
//! dispatch, translation and upstream client, without the HTTP server in
//! front of it. A translated route minus the native route (streams
//! against the native stream) is what the translation costs per request.
//!
//! `cargo run --release -p gigachat-proxy-core --example route_cpu [calls] [rounds] [only,these]`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use gigachat_emulator::{Emulator, EmulatorConfig};
use gigachat_proxy_core::{Config, Platform, Proxy};
use http_body_util::{BodyExt, Full};

const PROMPT: &str =
    "Напиши короткое стихотворение о весеннем утре в большом городе, где шумят машины и поют птицы";

/// Nanoseconds this thread has run on a CPU (the scheduler's own count).
fn thread_cpu_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    stat.split_whitespace().next().unwrap().parse().unwrap()
}

struct Route {
    name: &'static str,
    path: &'static str,
    body: Bytes,
}

async fn call(proxy: &Proxy, route: &Route) {
    let request = http::Request::post(route.path)
        .header("content-type", "application/json")
        .body(Full::new(route.body.clone()))
        .unwrap();
    let response = proxy.handle(request).await;
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(
        status.is_success(),
        "{} answered {status}: {body:?}",
        route.name
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let calls: u32 = args.next().map_or(20_000, |n| n.parse().unwrap());
    let rounds: u32 = args.next().map_or(5, |n| n.parse().unwrap());
    // Only the routes named (for a profiler), without the comparison.
    let only: Option<String> = args.next();

    let emulator_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let emulator: Emulator = emulator_runtime
        .block_on(Emulator::start(
            EmulatorConfig {
                token_ttl: Duration::from_secs(86_400),
                ..EmulatorConfig::default()
            },
            SocketAddr::from(([127, 0, 0, 1], 0)),
        ))
        .unwrap();
    let base = emulator.base_url();
    let auth = emulator.auth_url();
    let config = Config::from_lookup(Platform::Local, |name| match name {
        "GIGACHAT_CREDENTIALS" => Some(gigachat_emulator::DEFAULT_CREDENTIALS.to_owned()),
        "GIGACHAT_BASE_URL" => Some(base.clone()),
        "GIGACHAT_AUTH_URL" => Some(auth.clone()),
        "GIGACHAT_PROXY_UPSTREAM_CONCURRENCY" => Some("off".to_owned()),
        "GIGACHAT_PROXY_CHAT_CACHE_TTL" => Some("off".to_owned()),
        _ => None,
    })
    .unwrap();

    let chat =
        serde_json::json!({"model": "GigaChat", "messages": [{"role": "user", "content": PROMPT}]});
    let with = |field: &str, value: serde_json::Value| {
        let mut body = chat.clone();
        body[field] = value;
        Bytes::from(body.to_string())
    };
    let ui = serde_json::json!({"id": "c1", "messages": [{"id": "u1", "role": "user",
        "parts": [{"type": "text", "text": PROMPT}]}], "trigger": "submit-message"});
    const NATIVE: &str = "/api/gigachat-api/chat/completions";
    const OPENAI: &str = "/api/gigachat-openai/v1/chat/completions";
    let routes = [
        Route {
            name: "native",
            path: NATIVE,
            body: Bytes::from(chat.to_string()),
        },
        Route {
            name: "openai",
            path: OPENAI,
            body: Bytes::from(chat.to_string()),
        },
        // `n: 1` changes nothing GigaChat gets but is a field the plain
        // fast path leaves to the full translation.
        Route {
            name: "openai (full translation)",
            path: OPENAI,
            body: with("n", 1.into()),
        },
        Route {
            name: "native stream",
            path: NATIVE,
            body: with("stream", true.into()),
        },
        Route {
            name: "openai stream",
            path: OPENAI,
            body: with("stream", true.into()),
        },
        Route {
            name: "usechat (streams)",
            path: "/api/gigachat-chat",
            body: Bytes::from(ui.to_string()),
        },
    ];

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let proxy = Proxy::new(config);
        if let Some(only) = &only {
            for route in routes
                .iter()
                .filter(|route| only.split(',').any(|name| name == route.name))
            {
                for _ in 0..calls * rounds {
                    call(&proxy, route).await;
                }
            }
            return;
        }
        for route in &routes {
            for _ in 0..calls / 10 {
                call(&proxy, route).await;
            }
        }
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); routes.len()];
        for _ in 0..rounds {
            for (route, samples) in routes.iter().zip(&mut samples) {
                let start = thread_cpu_ns();
                for _ in 0..calls {
                    call(&proxy, route).await;
                }
                samples.push((thread_cpu_ns() - start) as f64 / f64::from(calls) / 1000.0);
            }
        }
        let median = |samples: &mut Vec<f64>| {
            samples.sort_by(f64::total_cmp);
            samples[samples.len() / 2]
        };
        let native = median(&mut samples[0].clone());
        let native_stream = median(&mut samples[3].clone());
        for (index, (route, samples)) in routes.iter().zip(&mut samples).enumerate() {
            let (base, base_name) = if index < 3 {
                (native, "native")
            } else {
                (native_stream, "native stream")
            };
            let rounds: Vec<String> = samples.iter().map(|us| format!("{us:.2}")).collect();
            let median = median(samples);
            println!(
                "{:26} {median:6.2} µs CPU/request ({:+.2} over {base_name}; rounds: {})",
                route.name,
                median - base,
                rounds.join(" "),
            );
        }
    });
    drop(emulator);
}
