//! The local server runs one event loop per worker thread
//! (GIGACHAT_PROXY_WORKERS): new connections go to the least busy worker,
//! the connection cap holds for all workers together, and each worker
//! keeps its upstream connections to GigaChat pooled across requests.
//! Linux only: the tests read the process's threads and sockets in /proc.

#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;

/// Context switches so far of each worker thread (`proxy-worker-N`), by
/// thread id: a worker's count moves only when it has work.
fn worker_switches(pid: u32) -> BTreeMap<u32, u64> {
    let mut workers = BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = task.unwrap().path();
        let Ok(name) = std::fs::read_to_string(path.join("comm")) else {
            continue;
        };
        if !name.starts_with("proxy-worker-") {
            continue;
        }
        let status = std::fs::read_to_string(path.join("status")).unwrap_or_default();
        let switches = status
            .lines()
            .filter(|l| l.contains("ctxt_switches"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        let tid = path.file_name().unwrap().to_str().unwrap().parse().unwrap();
        workers.insert(tid, switches);
    }
    workers
}

/// Whether every thread in `workers` is asleep (state `S`).
fn all_asleep(pid: u32, workers: &BTreeMap<u32, u64>) -> bool {
    workers.keys().all(|tid| {
        std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat"))
            .ok()
            .and_then(|stat| {
                stat.rsplit(')')
                    .next()
                    .map(|rest| rest.trim_start().starts_with('S'))
            })
            .unwrap_or(false)
    })
}

/// Workers whose switch count moved since `before`.
fn woken_since(pid: u32, before: &BTreeMap<u32, u64>) -> usize {
    worker_switches(pid)
        .iter()
        .filter(|(tid, now)| before.get(tid).is_some_and(|then| then != *now))
        .count()
}

#[tokio::test]
async fn connections_are_spread_over_the_workers_and_the_cap_holds_for_all_of_them() {
    let s = setup_with(
        |_| {},
        &[
            ("GIGACHAT_PROXY_WORKERS", "3"),
            ("GIGACHAT_PROXY_MAX_CONNECTIONS", "2"),
        ],
    )
    .await;
    let addr = s.proxy.addr();
    let pid = s.proxy.pid();
    // The workers start as the server starts: wait until all three have
    // gone to sleep waiting for work (asleep, and no switch since the
    // last look), so that only work wakes them from here on.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = BTreeMap::new();
    loop {
        let now = worker_switches(pid);
        if now.len() == 3 && now == last && all_asleep(pid, &now) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "three idle worker threads: {now:?}"
        );
        last = now;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Two busy connections land on two different workers.
    let before = worker_switches(pid);
    let _first = busy_connection_awaiting_its_body(&addr).await;
    let _second = busy_connection_awaiting_its_body(&addr).await;
    let woken = woken_since(pid, &before);
    assert_eq!(woken, 2, "two connections were served by {woken} workers");

    // The third worker is idle, but the server is full: the cap counts
    // every worker's connections.
    let answer = answer_to_a_connection_over_the_cap(&addr).await;
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
}

/// Sockets on the machine whose far end is `port` (any state: a closed
/// one lingers in TIME_WAIT), i.e. the connections opened to it so far.
fn connections_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let remote = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            line.split_whitespace()
                .nth(2)
                .is_some_and(|r| r.ends_with(&remote))
        })
        .count()
}

#[tokio::test]
async fn a_worker_reuses_its_upstream_connection_across_requests() {
    let s = setup_with(|_| {}, &[("GIGACHAT_PROXY_WORKERS", "2")]).await;
    let emulator_port: u16 = s
        .emulator
        .origin()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // Sockets left in TIME_WAIT by an earlier emulator on the same port
    // are not this test's.
    let earlier = connections_to(emulator_port);
    // One client connection, so one worker, sends every request.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    for round in 0..20 {
        let answer = http
            .post(s.proxy.url("/api/gigachat-api/chat/completions"))
            .json(&chat("Привет", false))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "round {round}");
        let _ = answer.bytes().await.unwrap();
    }
    // The token exchange's connection and one pooled API connection; a
    // pool per request would have opened twenty.
    let opened = connections_to(emulator_port).saturating_sub(earlier);
    assert!(
        opened <= 3,
        "{opened} connections to the emulator for 20 sequential requests"
    );
    assert_eq!(s.emulator.stats().api_calls, 20);
}
