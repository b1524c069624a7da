//! One event loop per core: each client connection lives its whole life on
//! one thread, with that thread's upstream connections.
//!
//! On a work-stealing runtime a request's tasks (the client connection, the
//! upstream connection, timers) wake one another across threads, and every
//! such wake-up is a futex call and a cache miss; profiles put a tenth of
//! the proxy's CPU there. Here every worker thread runs a single-threaded
//! runtime, the acceptor hands each admitted connection to the worker with
//! the fewest open connections, and the upstream client keeps one pool per
//! worker thread (`UpstreamClient`), so a request never leaves its thread.
//! The connection cap and the idle registry stay global: the acceptor
//! admits, the workers only serve.
//!
//! The acceptor hands connections over rather than each worker accepting
//! on its own `SO_REUSEPORT` listener: the kernel spreads those by a hash of
//! the client's address, which leaves a few long keep-alive connections
//! (a browser's, a load balancer's) unevenly spread for their whole life,
//! while a hand-over costs one cross-thread wake-up per connection, not per
//! request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use crate::connections::Slot;
use crate::serve::{Shared, serve_connection};

/// An admitted connection on its way to a worker.
struct Handoff {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    slot: Slot,
    stopped: watch::Receiver<()>,
}

struct Worker {
    handoffs: mpsc::UnboundedSender<(Handoff, OpenOnWorker)>,
    /// Connections this worker serves now.
    open: Arc<AtomicUsize>,
}

/// Counts a connection against its worker until the connection ends.
struct OpenOnWorker(Arc<AtomicUsize>);

impl Drop for OpenOnWorker {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The worker threads. Dropping this ends them once their connections are
/// gone (the server drops it after draining).
pub struct Workers {
    workers: Vec<Worker>,
    /// Where the search for the least busy worker starts, moved on each
    /// time, so equally busy workers take turns.
    next: usize,
}

impl Workers {
    /// Starts `count` worker threads (at least one).
    pub fn start(count: usize, shared: &Arc<Shared>) -> std::io::Result<Self> {
        let mut workers = Vec::with_capacity(count.max(1));
        for index in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (handoffs, mut received) = mpsc::unbounded_channel::<(Handoff, OpenOnWorker)>();
            let shared = Arc::clone(shared);
            std::thread::Builder::new()
                .name(format!("proxy-worker-{index}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        while let Some((handoff, open)) = received.recv().await {
                            let Handoff {
                                stream,
                                peer,
                                slot,
                                stopped,
                            } = handoff;
                            match TcpStream::from_std(stream) {
                                Ok(stream) => {
                                    let shared = Arc::clone(&shared);
                                    tokio::spawn(async move {
                                        serve_connection(shared, stream, peer, slot, stopped).await;
                                        drop(open);
                                    });
                                }
                                Err(err) => {
                                    tracing::debug!(error = %err, %peer, "a worker could not take a connection");
                                }
                            }
                        }
                    });
                })?;
            workers.push(Worker {
                handoffs,
                open: Arc::new(AtomicUsize::new(0)),
            });
        }
        Ok(Self { workers, next: 0 })
    }

    /// How many worker threads serve connections.
    pub fn count(&self) -> usize {
        self.workers.len()
    }

    /// Hands an admitted connection to the worker serving the fewest.
    pub fn dispatch(
        &mut self,
        stream: TcpStream,
        peer: SocketAddr,
        slot: Slot,
        stopped: watch::Receiver<()>,
    ) {
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(err) => {
                tracing::debug!(error = %err, %peer, "a connection failed before its hand-over");
                return;
            }
        };
        let mut handoff = Handoff {
            stream,
            peer,
            slot,
            stopped,
        };
        // A worker's thread never ends on its own while the server runs;
        // should one be gone all the same, the others take its share.
        while !self.workers.is_empty() {
            let count = self.workers.len();
            let start = self.next % count;
            self.next = self.next.wrapping_add(1);
            let chosen = (0..count)
                .map(|offset| (start + offset) % count)
                .min_by_key(|&index| self.workers[index].open.load(Ordering::Relaxed))
                .unwrap_or(start);
            let worker = &self.workers[chosen];
            worker.open.fetch_add(1, Ordering::Relaxed);
            let open = OpenOnWorker(Arc::clone(&worker.open));
            match worker.handoffs.send((handoff, open)) {
                Ok(()) => return,
                Err(mpsc::error::SendError((returned, _))) => {
                    tracing::warn!(
                        worker = chosen,
                        "a worker thread is gone; the others take its connections"
                    );
                    self.workers.swap_remove(chosen);
                    handoff = returned;
                }
            }
        }
    }
}

/// The default worker count: one per CPU this process may run on.
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}
