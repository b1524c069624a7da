//! The floor under the proxy's throughput: the least a hyper-based proxy
//! can do for a chat call, with none of gigachat-proxy's own work.
//!
//! It is laid out like the local server (one current-thread runtime per
//! core, an acceptor handing each connection to a worker, one pooled
//! hyper-util client per worker thread) and does only what nginx's
//! `proxy_pass` row in the bench does: map `/api/gigachat-api/*` to the
//! upstream's `/api/v1/*`, set the upstream `Authorization`, forward the
//! body, stream the answer back. No routing table, limits, identity,
//! metrics, logging, body inspection or header filtering.
//!
//! Measured side by side with nginx and the proxy (bench/README.md,
//! "Issue 15"), it shows how much of the gap to nginx is hyper's (two
//! HTTP/1 codecs, the legacy client's pool and connection task) and how
//! much is the proxy's own.
//!
//! ```text
//! cargo run --release -p gigachat-proxy-server --example bare_hyper_proxy -- \
//!     <listen port> <upstream host:port> <bearer token> [workers] [collect|stream]
//! ```
//! `collect` (the default) reads the request body whole before forwarding,
//! as the proxy does; `stream` forwards it as it arrives, as nginx does
//! with `proxy_request_buffering off` (nginx's default buffers it too).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri, header};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::mpsc;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Outgoing = Either<Full<Bytes>, Incoming>;
type Pooled = Client<HttpConnector, Outgoing>;

thread_local! {
    static POOL: RefCell<Option<Pooled>> = const { RefCell::new(None) };
}

fn pool() -> Pooled {
    POOL.with(|cell| {
        cell.borrow_mut()
            .get_or_insert_with(|| {
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                Client::builder(TokioExecutor::new())
                    .pool_max_idle_per_host(usize::MAX)
                    .build(connector)
            })
            .clone()
    })
}

struct Settings {
    upstream: String,
    authorization: HeaderValue,
    collect: bool,
}

async fn forward(
    settings: Arc<Settings>,
    request: Request<Incoming>,
) -> Result<Response<Incoming>, Box<dyn std::error::Error + Send + Sync>> {
    let (mut parts, body) = request.into_parts();
    let rest = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/")
        .strip_prefix("/api/gigachat-api/")
        .unwrap_or("");
    parts.uri = Uri::try_from(format!("http://{}/api/v1/{rest}", settings.upstream))?;
    parts.headers.remove(header::HOST);
    parts
        .headers
        .insert(header::AUTHORIZATION, settings.authorization.clone());
    let body = if settings.collect {
        Either::Left(Full::new(body.collect().await?.to_bytes()))
    } else {
        Either::Right(body)
    };
    Ok(pool().request(Request::from_parts(parts, body)).await?)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = args[1].parse().expect("listen port");
    let settings = Arc::new(Settings {
        upstream: args[2].clone(),
        authorization: HeaderValue::try_from(format!("Bearer {}", args[3])).expect("token"),
        collect: args.get(5).map(String::as_str) != Some("stream"),
    });
    let workers: usize = args.get(4).map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        |n| n.parse().expect("workers"),
    );

    let mut senders = Vec::new();
    for _ in 0..workers {
        let (sender, mut receiver) = mpsc::unbounded_channel::<tokio::net::TcpStream>();
        senders.push(sender);
        let settings = settings.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                while let Some(stream) = receiver.recv().await {
                    let settings = settings.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |request| forward(settings.clone(), request));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        });
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .unwrap();
        println!("listening on http://{}", listener.local_addr().unwrap());
        let mut next = 0;
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            // Round robin: the bench's connections are all alike.
            let _ = senders[next % senders.len()].send(stream);
            next += 1;
        }
    });
}
