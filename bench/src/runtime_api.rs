//! The platform's side of the two serverless entrypoints, enough to run the
//! real `gigachat-api` binary as each platform does: a fake AWS Lambda
//! Runtime API (the function polls it for events and posts its answers to
//! it) and Vercel's `vercel_runtime` 2.x IPC socket (the function says on
//! it which port it serves, and reports the end of every request).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt as _;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinSet;

/// Separates a streamed answer's JSON head (status, headers) from its body
/// in Lambda's HTTP integration response.
const PRELUDE_SEPARATOR: &[u8] = &[0; 8];

/// An invocation waiting for the function to poll `/next`.
struct Pending {
    id: String,
    event: Bytes,
    done: oneshot::Sender<Outcome>,
}

/// What the function posted back for one invocation.
pub struct Outcome {
    /// `Lambda-Runtime-Function-Response-Mode` (`streaming`, or empty for
    /// a buffered answer).
    pub mode: String,
    pub body: Bytes,
    /// When the last byte of the answer arrived.
    pub finished: Instant,
    /// The runtime's error report, or a stream's error trailer.
    pub error: Option<String>,
}

/// An HTTP answer as the caller of the function URL would see it.
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
}

impl Outcome {
    /// The caller's view: a streamed answer is the JSON prelude, eight NUL
    /// bytes, then the body; a buffered one is API Gateway's JSON object
    /// with the body as a string.
    pub fn reply(&self) -> Result<Reply> {
        if let Some(error) = &self.error {
            bail!("the function reported an error: {error}");
        }
        if self.mode == "streaming" {
            let split = self
                .body
                .windows(PRELUDE_SEPARATOR.len())
                .position(|w| w == PRELUDE_SEPARATOR)
                .context("a streamed answer without the prelude separator")?;
            let prelude: serde_json::Value = serde_json::from_slice(&self.body[..split])?;
            return Ok(Reply {
                status: prelude["statusCode"].as_u64().unwrap_or(200) as u16,
                body: self.body.slice(split + PRELUDE_SEPARATOR.len()..),
            });
        }
        let answer: serde_json::Value = serde_json::from_slice(&self.body)?;
        let text = answer["body"].as_str().unwrap_or_default();
        if answer["isBase64Encoded"].as_bool() == Some(true) {
            bail!("a base64 answer body (the bench sends and expects text)");
        }
        Ok(Reply {
            status: answer["statusCode"].as_u64().unwrap_or(0) as u16,
            body: Bytes::copy_from_slice(text.as_bytes()),
        })
    }
}

struct State {
    queue: Mutex<mpsc::UnboundedReceiver<Pending>>,
    live: StdMutex<HashMap<String, oneshot::Sender<Outcome>>>,
    first_poll: StdMutex<Option<Instant>>,
    init_errors: StdMutex<Vec<String>>,
}

/// A fake Lambda Runtime API for one function instance. One per process:
/// a stopped process's parked `/next` poll must not take the next
/// instance's event.
pub struct RuntimeApi {
    pub addr: SocketAddr,
    queue: mpsc::UnboundedSender<Pending>,
    state: Arc<State>,
    tasks: JoinSet<()>,
    next_id: u64,
}

impl RuntimeApi {
    pub async fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (queue, rx) = mpsc::unbounded_channel();
        let state = Arc::new(State {
            queue: Mutex::new(rx),
            live: StdMutex::new(HashMap::new()),
            first_poll: StdMutex::new(None),
            init_errors: StdMutex::new(Vec::new()),
        });
        let mut tasks = JoinSet::new();
        let accept_state = Arc::clone(&state);
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let state = Arc::clone(&accept_state);
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, std::convert::Infallible>(serve(&state, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self {
            addr,
            queue,
            state,
            tasks,
            next_id: 0,
        })
    }

    /// Hands the function an event on its next poll; the receiver yields
    /// its answer.
    pub fn enqueue(&mut self, event: Bytes) -> Result<oneshot::Receiver<Outcome>> {
        self.next_id += 1;
        let (done, outcome) = oneshot::channel();
        self.queue
            .send(Pending {
                id: format!("bench-{:08}", self.next_id),
                event,
                done,
            })
            .map_err(|_| anyhow!("the runtime API is gone"))?;
        Ok(outcome)
    }

    /// When the function first asked for an event (its init is over).
    pub fn first_poll(&self) -> Option<Instant> {
        self.state.first_poll.lock().ok().and_then(|g| *g)
    }

    pub fn init_errors(&self) -> Vec<String> {
        self.state
            .init_errors
            .lock()
            .map(|g| g.clone())
            .unwrap_or_default()
    }

    pub fn stop(mut self) {
        self.tasks.abort_all();
    }
}

pub async fn wait_outcome(outcome: oneshot::Receiver<Outcome>) -> Result<Outcome> {
    tokio::time::timeout(Duration::from_secs(30), outcome)
        .await
        .map_err(|_| anyhow!("no answer from the function within 30 s"))?
        .map_err(|_| anyhow!("the runtime API dropped the invocation"))
}

fn answer(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

async fn serve(state: &State, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    if request.method() == Method::GET && path == "/2018-06-01/runtime/invocation/next" {
        if let Ok(mut first) = state.first_poll.lock() {
            first.get_or_insert_with(Instant::now);
        }
        let Some(pending) = state.queue.lock().await.recv().await else {
            return answer(StatusCode::SERVICE_UNAVAILABLE, "{}");
        };
        if let Ok(mut live) = state.live.lock() {
            live.insert(pending.id.clone(), pending.done);
        }
        let deadline = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() + 300_000);
        let mut response = Response::new(Full::new(pending.event));
        let headers = response.headers_mut();
        for (name, value) in [
            ("lambda-runtime-aws-request-id", pending.id),
            ("lambda-runtime-deadline-ms", deadline.to_string()),
            (
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:eu-central-1:123456789012:function:bench".to_owned(),
            ),
            (
                "lambda-runtime-trace-id",
                "Root=1-00000000-000000000000000000000000;Sampled=0".to_owned(),
            ),
            ("content-type", "application/json".to_owned()),
        ] {
            if let Ok(value) = hyper::header::HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
        return response;
    }
    if request.method() != Method::POST {
        return answer(StatusCode::NOT_FOUND, r#"{"errorType":"NotFound"}"#);
    }
    if path == "/2018-06-01/runtime/init/error" {
        let body = request.into_body().collect().await.map(|b| b.to_bytes());
        if let Ok(mut errors) = state.init_errors.lock() {
            errors.push(String::from_utf8_lossy(&body.unwrap_or_default()).into_owned());
        }
        return answer(StatusCode::ACCEPTED, r#"{"status":"OK"}"#);
    }
    let Some(rest) = path.strip_prefix("/2018-06-01/runtime/invocation/") else {
        return answer(StatusCode::NOT_FOUND, r#"{"errorType":"NotFound"}"#);
    };
    let Some((id, kind)) = rest.split_once('/') else {
        return answer(StatusCode::NOT_FOUND, r#"{"errorType":"NotFound"}"#);
    };
    let done = state.live.lock().ok().and_then(|mut live| live.remove(id));
    let Some(done) = done else {
        return answer(StatusCode::NOT_FOUND, r#"{"errorType":"InvalidRequestID"}"#);
    };
    let mode = request
        .headers()
        .get("lambda-runtime-function-response-mode")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut body = request.into_body();
    let mut bytes = BytesMut::new();
    let mut error = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => bytes.extend_from_slice(&data),
                Err(frame) => {
                    if let Some(kind) = frame
                        .trailers_ref()
                        .and_then(|t| t.get("lambda-runtime-function-error-type"))
                    {
                        error = Some(format!("error trailer {kind:?}"));
                    }
                }
            },
            Err(e) => {
                error = Some(format!("reading the answer: {e}"));
                break;
            }
        }
    }
    let body = bytes.freeze();
    if kind == "error" {
        error = Some(String::from_utf8_lossy(&body).into_owned());
    }
    let _ = done.send(Outcome {
        mode,
        body,
        finished: Instant::now(),
        error,
    });
    answer(StatusCode::ACCEPTED, r#"{"status":"OK"}"#)
}

/// An API Gateway HTTP API / Function URL event (payload 2.0) for a POST of
/// `body` to `path` with the caller's `headers`.
pub fn function_url_event(path: &str, caller_headers: &[(&str, &str)], body: &Bytes) -> Bytes {
    let mut headers = serde_json::json!({
        "host": "bench.lambda-url.eu-central-1.on.aws",
        "x-forwarded-proto": "https",
        "x-forwarded-port": "443",
        "x-forwarded-for": "203.0.113.7",
        "user-agent": "gigachat-bench",
    });
    for (name, value) in caller_headers {
        headers[*name] = serde_json::Value::String((*value).to_owned());
    }
    let event = serde_json::json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "bench",
            "domainName": "bench.lambda-url.eu-central-1.on.aws",
            "domainPrefix": "bench",
            "http": {
                "method": "POST",
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "gigachat-bench",
            },
            "requestId": "bench",
            "routeKey": "$default",
            "stage": "$default",
            "time": "30/Nov/2026:00:00:00 +0000",
            "timeEpoch": 1_795_996_800_000_u64,
        },
        "body": String::from_utf8_lossy(body),
        "isBase64Encoded": false,
    });
    Bytes::from(event.to_string())
}

/// The platform's end of `VERCEL_IPC_PATH`: the function connects once and
/// sends NUL-terminated JSON messages (`server-started` with its port,
/// `end` per request, `log`).
pub struct VercelIpc {
    pub path: PathBuf,
    messages: mpsc::UnboundedReceiver<serde_json::Value>,
    task: tokio::task::JoinHandle<()>,
}

impl VercelIpc {
    pub fn bind(path: &Path) -> Result<Self> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)
            .with_context(|| format!("binding the IPC socket {}", path.display()))?;
        let (tx, messages) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut readers = JoinSet::new();
            while let Ok((mut stream, _)) = listener.accept().await {
                let tx = tx.clone();
                readers.spawn(async move {
                    let mut buf = BytesMut::new();
                    loop {
                        match stream.read_buf(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        while let Some(end) = buf.iter().position(|b| *b == 0) {
                            let raw = buf.split_to(end + 1);
                            if let Ok(message) = serde_json::from_slice(&raw[..end]) {
                                let _ = tx.send(message);
                            }
                        }
                    }
                });
            }
        });
        Ok(Self {
            path: path.to_owned(),
            messages,
            task,
        })
    }

    /// The next message of `kind` (others are dropped), within `timeout`.
    pub async fn wait_for(&mut self, kind: &str, timeout: Duration) -> Result<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = tokio::time::timeout(left, self.messages.recv())
                .await
                .map_err(|_| anyhow!("no IPC `{kind}` message within {timeout:?}"))?
                .context("the IPC socket closed")?;
            if message["type"] == kind {
                return Ok(message);
            }
        }
    }
}

impl Drop for VercelIpc {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn outcome(mode: &str, body: &[u8]) -> Outcome {
        Outcome {
            mode: mode.to_owned(),
            body: Bytes::copy_from_slice(body),
            finished: Instant::now(),
            error: None,
        }
    }

    #[test]
    fn a_streamed_answer_is_split_at_the_prelude() {
        let mut body =
            br#"{"statusCode":429,"headers":{"content-type":"application/json"}}"#.to_vec();
        body.extend_from_slice(PRELUDE_SEPARATOR);
        body.extend_from_slice(b"data: {}\n\n");
        let reply = outcome("streaming", &body).reply().unwrap();
        assert_eq!(reply.status, 429);
        assert_eq!(&reply.body[..], b"data: {}\n\n");
        assert!(outcome("streaming", b"{}").reply().is_err(), "no separator");
    }

    #[test]
    fn a_buffered_answer_is_the_gateway_object() {
        let body = br#"{"statusCode":201,"headers":{},"body":"{\"a\":1}","isBase64Encoded":false}"#;
        let reply = outcome("", body).reply().unwrap();
        assert_eq!(reply.status, 201);
        assert_eq!(&reply.body[..], br#"{"a":1}"#);
    }

    #[test]
    fn a_reported_error_is_not_an_answer() {
        let mut body = br#"{"statusCode":200}"#.to_vec();
        body.extend_from_slice(PRELUDE_SEPARATOR);
        let mut failed = outcome("streaming", &body);
        assert!(failed.reply().is_ok());
        failed.error = Some("Runtime.Unhandled".to_owned());
        assert!(failed.reply().is_err());
    }
}
