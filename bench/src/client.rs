//! The harness's own HTTP/1.1 clients (hyper, one connection per task):
//! the open-loop constant-rate client, the SSE stream client, the
//! open-streams holder and the cold-start probe.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{Mutex, mpsc};

use crate::procs;

pub type Sender = SendRequest<Full<Bytes>>;

/// Where a row sends its requests.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub path: String,
    /// `Authorization` value (only for the direct-to-emulator rows).
    pub auth: Option<String>,
}

impl Target {
    pub fn url(&self) -> String {
        format!("http://{}{}", self.addr, self.path)
    }

    fn request(&self, body: Bytes) -> Result<Request<Full<Bytes>>> {
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(&self.path)
            .header(header::HOST, self.addr.to_string())
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(auth) = &self.auth {
            builder = builder.header(header::AUTHORIZATION, auth);
        }
        Ok(builder.body(Full::new(body))?)
    }
}

pub async fn connect(addr: SocketAddr) -> Result<Sender> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One POST on an open connection; the whole answer is read.
pub async fn post(
    sender: &mut Sender,
    target: &Target,
    body: Bytes,
) -> Result<(StatusCode, Bytes)> {
    sender.ready().await?;
    let response = sender.send_request(target.request(body)?).await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok((status, bytes))
}

/// A fresh GigaChat access token from the emulator's OAuth endpoint, and
/// how long the round trip took on a new connection.
pub async fn oauth(emulator: SocketAddr) -> Result<(String, Duration)> {
    let started = Instant::now();
    let mut sender = connect(emulator).await?;
    let request = Request::builder()
        .method(Method::POST)
        .uri("/api/v2/oauth")
        .header(header::HOST, emulator.to_string())
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::ACCEPT, "application/json")
        .header("RqUID", "6f0b1291-c7f3-43c6-bb2e-9f3efb2dc98e")
        .header(
            header::AUTHORIZATION,
            format!("Basic {}", procs::EMULATOR_KEY),
        )
        .body(Full::new(Bytes::from_static(b"scope=GIGACHAT_API_PERS")))?;
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    let elapsed = started.elapsed();
    if status != StatusCode::OK {
        bail!(
            "emulator OAuth answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let json: serde_json::Value = serde_json::from_slice(&body)?;
    let token = json["access_token"]
        .as_str()
        .context("no access_token in the OAuth answer")?
        .to_owned();
    Ok((token, elapsed))
}

/// What a latency run produced.
#[derive(Default)]
pub struct Latencies {
    pub samples: Vec<Duration>,
    pub errors: u64,
    pub sent: u64,
    pub measured_for: Duration,
}

/// Open-loop load at a constant rate: a scheduler hands out one ticket per
/// period whatever the answers do, `conns` keep-alive connections take them.
/// Latency counts from the moment the ticket was issued, so time a request
/// spent waiting for a free connection (the server being slow) is included
/// (no coordinated omission). Tickets issued during `warmup` are not counted.
pub async fn open_loop(
    target: &Target,
    body: Bytes,
    rate: u32,
    warmup: Duration,
    measure: Duration,
    conns: usize,
) -> Result<Latencies> {
    let (tx, rx) = mpsc::unbounded_channel::<(Instant, bool)>();
    let rx = Arc::new(Mutex::new(rx));
    let mut workers = Vec::with_capacity(conns);
    for _ in 0..conns {
        let mut sender = connect(target.addr).await?;
        let rx = Arc::clone(&rx);
        let target = target.clone();
        let body = body.clone();
        workers.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut errors = 0u64;
            loop {
                let next = rx.lock().await.recv().await;
                let Some((issued, counted)) = next else { break };
                let ok = match post(&mut sender, &target, body.clone()).await {
                    Ok((status, _)) => status == StatusCode::OK,
                    Err(_) => {
                        // Reconnect and go on; the failure is counted.
                        if let Ok(fresh) = connect(target.addr).await {
                            sender = fresh;
                        }
                        false
                    }
                };
                if counted {
                    if ok {
                        samples.push(issued.elapsed());
                    } else {
                        errors += 1;
                    }
                }
            }
            (samples, errors)
        }));
    }
    let period = Duration::from_secs_f64(1.0 / f64::from(rate));
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + measure;
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = 0u64;
    loop {
        interval.tick().await;
        let now = Instant::now();
        if now >= end {
            break;
        }
        let counted = now >= measure_from;
        if counted {
            sent += 1;
        }
        if tx.send((now, counted)).is_err() {
            break;
        }
    }
    drop(tx);
    let mut out = Latencies {
        sent,
        measured_for: measure,
        ..Latencies::default()
    };
    for worker in workers {
        let (samples, errors) = worker.await?;
        out.samples.extend(samples);
        out.errors += errors;
    }
    Ok(out)
}

/// Makes the emulator's per-stream timestamp irrelevant to comparisons.
pub fn normalize_event(event: &str) -> String {
    const KEY: &str = "\"created\":";
    let mut out = String::with_capacity(event.len());
    let mut rest = event;
    while let Some(pos) = rest.find(KEY) {
        out.push_str(&rest[..pos + KEY.len()]);
        out.push('0');
        rest = rest[pos + KEY.len()..].trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

/// Reads an SSE body, timestamping each complete event (`\n\n`-terminated)
/// when the frame that completed it arrived.
async fn read_events(
    body: hyper::body::Incoming,
    mut on_first: Option<Box<dyn FnOnce() + Send>>,
) -> Result<Vec<(String, Instant)>> {
    let mut body = body;
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        let now = Instant::now();
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        while let Some(pos) = buf.windows(2).position(|w| w == b"\n\n") {
            let event = buf.split_to(pos + 2);
            events.push((String::from_utf8_lossy(&event[..pos]).into_owned(), now));
            if let Some(first) = on_first.take() {
                first();
            }
        }
    }
    if !buf.is_empty() {
        events.push((String::from_utf8_lossy(&buf).into_owned(), Instant::now()));
    }
    Ok(events)
}

/// How a stream carries the answer's text. GigaChat's own chunks (direct,
/// nginx, the native route) are compared with the emulator's event by
/// event; a translated route's events are in another dialect, so only the
/// text they carry is compared with the text of the emulator's events.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Dialect {
    GigaChat,
    /// `chat.completion.chunk`s: `choices[0].delta.content`.
    OpenAi,
    /// The AI SDK's UI message stream: the `delta` of `text-delta` events.
    UiMessage,
}

impl Dialect {
    /// The text an SSE event carries; `None` for an event without any
    /// (framing, finish, usage, `[DONE]`). The substring test first keeps
    /// JSON parsing to the events that can hold text.
    pub fn text(self, event: &str) -> Option<String> {
        let data = event
            .lines()
            .find_map(|l| l.strip_prefix("data:"))?
            .trim_start();
        let marker = match self {
            Self::GigaChat | Self::OpenAi => "\"content\"",
            Self::UiMessage => "\"text-delta\"",
        };
        if !data.contains(marker) {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(data).ok()?;
        let text = match self {
            Self::GigaChat | Self::OpenAi => v["choices"][0]["delta"]["content"].as_str(),
            Self::UiMessage if v["type"] == "text-delta" => v["delta"].as_str(),
            Self::UiMessage => None,
        }?;
        (!text.is_empty()).then(|| text.to_owned())
    }
}

/// A stream request's outcome: its events, or the status and body of a
/// refusal (a route that does not exist yet answers 404).
pub enum StreamAnswer {
    Events(Vec<String>),
    Refused(StatusCode, String),
}

/// One stream read whole, events normalized.
pub async fn try_stream(target: &Target, body: Bytes) -> Result<StreamAnswer> {
    let mut sender = connect(target.addr).await?;
    sender.ready().await?;
    let response = sender.send_request(target.request(body)?).await?;
    let status = response.status();
    if status != StatusCode::OK {
        let body = response.into_body().collect().await?.to_bytes();
        return Ok(StreamAnswer::Refused(
            status,
            String::from_utf8_lossy(&body).into_owned(),
        ));
    }
    let events = read_events(response.into_body(), None).await?;
    Ok(StreamAnswer::Events(
        events
            .into_iter()
            .map(|(e, _)| normalize_event(&e))
            .collect(),
    ))
}

/// One stream read whole, events normalized (the reference sequence).
pub async fn one_stream(target: &Target, body: Bytes) -> Result<Vec<String>> {
    match try_stream(target, body).await? {
        StreamAnswer::Events(events) => Ok(events),
        StreamAnswer::Refused(status, _) => bail!("stream answered {status}"),
    }
}

/// What every stream of a row must deliver, in the unit its dialect is
/// compared in: the emulator's normalized events for
/// [`Dialect::GigaChat`], the texts of those events otherwise.
pub struct Expected {
    pub units: Arc<Vec<String>>,
    pub dialect: Dialect,
    /// How many events the emulator sends per stream (the stream's length
    /// in chunk delays, which spreads the starts alike on every row).
    pub upstream_events: usize,
}

#[derive(Default)]
pub struct StreamRun {
    /// Time to the first complete SSE event, per counted stream.
    pub ttfc: Vec<Duration>,
    pub streams: u64,
    pub events: u64,
    /// Counted streams whose event sequence differed from the reference.
    pub mismatched_streams: u64,
    /// Reference events missing from counted streams.
    pub lost_events: u64,
    /// Events that arrived less than a quarter of the chunk delay after the
    /// previous one: sent apart, delivered together.
    pub merged_events: u64,
    pub errors: u64,
}

/// `concurrency` clients, each on its own keep-alive connection, run
/// streams back to back. Starts are staggered over one stream's length so
/// arrivals are spread out rather than in lock-step bursts. Streams started
/// during `warmup` are not counted.
///
/// TTFC, lost, merged and altered are all taken over `expected`'s units,
/// so a translated stream's framing events (`start`, a role-only chunk)
/// neither count as its first chunk nor as merged when they share a packet
/// with the text that follows.
pub async fn stream_load(
    target: &Target,
    body: Bytes,
    concurrency: usize,
    warmup: Duration,
    measure: Duration,
    chunk_delay: Duration,
    expected: Expected,
) -> Result<StreamRun> {
    let Expected {
        units: reference,
        dialect,
        upstream_events,
    } = expected;
    let stream_len = chunk_delay * u32::try_from(upstream_events).unwrap_or(1);
    let stagger = stream_len / u32::try_from(concurrency.max(1)).unwrap_or(1);
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + measure;
    let merge_gap = chunk_delay / 4;
    let mut tasks = Vec::with_capacity(concurrency);
    for i in 0..concurrency {
        let target = target.clone();
        let body = body.clone();
        let reference = Arc::clone(&reference);
        tasks.push(tokio::spawn(async move {
            let mut run = StreamRun::default();
            tokio::time::sleep(stagger * u32::try_from(i).unwrap_or(0)).await;
            let mut sender = match connect(target.addr).await {
                Ok(s) => s,
                Err(_) => {
                    run.errors += 1;
                    return run;
                }
            };
            while Instant::now() < end {
                let t0 = Instant::now();
                let counted = t0 >= measure_from;
                let result = async {
                    sender.ready().await?;
                    let response = sender.send_request(target.request(body.clone())?).await?;
                    if response.status() != StatusCode::OK {
                        bail!("status {}", response.status());
                    }
                    read_events(response.into_body(), None).await
                }
                .await;
                let events = match result {
                    Ok(events) => events,
                    Err(_) => {
                        if counted {
                            run.errors += 1;
                        }
                        match connect(target.addr).await {
                            Ok(s) => sender = s,
                            Err(_) => return run,
                        }
                        continue;
                    }
                };
                if !counted {
                    continue;
                }
                run.streams += 1;
                run.events += events.len() as u64;
                let units: Vec<(String, Instant)> = match dialect {
                    Dialect::GigaChat => events
                        .iter()
                        .map(|(e, at)| (normalize_event(e), *at))
                        .collect(),
                    Dialect::OpenAi | Dialect::UiMessage => events
                        .iter()
                        .filter_map(|(e, at)| Some((dialect.text(e)?, *at)))
                        .collect(),
                };
                if let Some((_, first)) = units.first() {
                    run.ttfc.push(first.duration_since(t0));
                }
                if units.len() != reference.len()
                    || units.iter().zip(reference.iter()).any(|((u, _), r)| u != r)
                {
                    run.mismatched_streams += 1;
                    let lost = reference
                        .iter()
                        .filter(|r| !units.iter().any(|(u, _)| u == *r))
                        .count();
                    run.lost_events += lost as u64;
                }
                for pair in units.windows(2) {
                    if pair[1].1.duration_since(pair[0].1) < merge_gap {
                        run.merged_events += 1;
                    }
                }
            }
            run
        }));
    }
    let mut total = StreamRun::default();
    for task in tasks {
        let run = task.await?;
        total.ttfc.extend(run.ttfc);
        total.streams += run.streams;
        total.events += run.events;
        total.mismatched_streams += run.mismatched_streams;
        total.lost_events += run.lost_events;
        total.merged_events += run.merged_events;
        total.errors += run.errors;
    }
    Ok(total)
}

/// Opens `n` streams and keeps them open until the returned guard is
/// dropped. Returns once every stream delivered its first event (or the
/// timeout passed) with how many did.
pub async fn hold_streams(
    target: &Target,
    body: Bytes,
    n: usize,
    timeout: Duration,
) -> (HeldStreams, usize) {
    let opened = Arc::new(AtomicUsize::new(0));
    let limit = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let target = target.clone();
        let body = body.clone();
        let opened = Arc::clone(&opened);
        let limit = Arc::clone(&limit);
        tasks.push(tokio::spawn(async move {
            let response = {
                let _permit = limit.acquire().await;
                let mut sender = connect(target.addr).await?;
                sender.ready().await?;
                let response = sender.send_request(target.request(body)?).await?;
                if response.status() != StatusCode::OK {
                    bail!("status {}", response.status());
                }
                response
            };
            let counter = Arc::clone(&opened);
            read_events(
                response.into_body(),
                Some(Box::new(move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                })),
            )
            .await?;
            Ok::<_, anyhow::Error>(())
        }));
    }
    let deadline = Instant::now() + timeout;
    while opened.load(Ordering::SeqCst) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let count = opened.load(Ordering::SeqCst);
    (HeldStreams { tasks }, count)
}

pub struct HeldStreams {
    tasks: Vec<tokio::task::JoinHandle<Result<()>>>,
}

impl Drop for HeldStreams {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

pub struct ColdRun {
    /// Spawn to the "listening" line.
    pub listening: Duration,
    /// Spawn to the end of the first proxied chat answer (200).
    pub first_response: Duration,
}

/// Starts a fresh proxy (empty token cache), sends one chat call as soon as
/// it listens, and times it; the proxy's first call includes its OAuth round
/// trip to the emulator.
pub async fn cold_start(
    bin: &Path,
    emulator: SocketAddr,
    body: Bytes,
    log: &Path,
) -> Result<ColdRun> {
    let (proc, started) = procs::spawn_proxy_timed(bin, emulator, log).await?;
    let listening = started.elapsed();
    let target = Target {
        addr: proc.addr,
        path: "/api/gigachat-api/chat/completions".to_owned(),
        auth: None,
    };
    let mut sender = connect(target.addr).await?;
    let (status, _) = post(&mut sender, &target, body).await?;
    let first_response = started.elapsed();
    proc.stop().await;
    if status != StatusCode::OK {
        bail!("the first proxied call answered {status}");
    }
    Ok(ColdRun {
        listening,
        first_response,
    })
}

#[cfg(test)]
mod tests {
    use super::{Dialect, normalize_event};

    #[test]
    fn text_is_read_in_each_dialect() {
        let gigachat = r#"data: {"choices":[{"delta":{"content":"При","role":"assistant"},"index":0}],"created":1,"model":"GigaChat","object":"chat.completion"}"#;
        assert_eq!(Dialect::GigaChat.text(gigachat).as_deref(), Some("При"));
        let openai = r#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"GigaChat","choices":[{"index":0,"delta":{"content":"вет!"},"finish_reason":null}]}"#;
        assert_eq!(Dialect::OpenAi.text(openai).as_deref(), Some("вет!"));
        let finish = r#"data: {"choices":[{"index":0,"delta":{"content":""},"finish_reason":"stop"}],"usage":{"total_tokens":3}}"#;
        assert_eq!(Dialect::OpenAi.text(finish), None);
        let ui = r#"data: {"type":"text-delta","id":"t0","delta":"При"}"#;
        assert_eq!(Dialect::UiMessage.text(ui).as_deref(), Some("При"));
        let start = r#"data: {"type":"text-start","id":"t0"}"#;
        assert_eq!(Dialect::UiMessage.text(start), None);
        assert_eq!(Dialect::OpenAi.text("data: [DONE]"), None);
    }

    #[test]
    fn created_is_masked() {
        assert_eq!(
            normalize_event(r#"data: {"a":1,"created":1768996176,"b":"x"}"#),
            r#"data: {"a":1,"created":0,"b":"x"}"#
        );
        assert_eq!(normalize_event("data: [DONE]"), "data: [DONE]");
    }
}
