//! Every open client connection: how many there may be, which of them are
//! idle, and which to close first when the server is full.
//!
//! A connection is idle while no request is in flight on it: from being
//! accepted to its first request's head, and between requests. Idle
//! connections cost a file descriptor and do nothing, so they are what an
//! attacker opens by the thousand (silent sockets, h2c connections that only
//! send their preface); they are closed after the idle timeout, and at the
//! connection cap the longest-idle ones are closed at once to make room.
//! Busy connections (a request or a stream in flight) are never picked.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use gigachat_proxy_core::{BoxError, ProxyBody};
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Descriptors the default cap leaves aside before halving: the listener,
/// stdio, the runtime's own, Redis, the built-in emulator's sockets.
const RESERVED_DESCRIPTORS: u64 = 64;
/// The default cap never exceeds this, however high the descriptor limit:
/// each open connection also costs memory (hyper's buffers, an h2 state).
const MAX_DEFAULT_CONNECTIONS: u64 = 10_000;
/// The default cap when the descriptor limit is too low to be useful.
const MIN_DEFAULT_CONNECTIONS: u64 = 16;
/// The usual soft descriptor limit, assumed where it cannot be read.
const ASSUMED_DESCRIPTOR_LIMIT: u64 = 1024;

/// The default for `GIGACHAT_PROXY_MAX_CONNECTIONS`: half of the descriptors
/// left after a small reserve, because every busy client connection may
/// need one more descriptor for its upstream connection to GigaChat.
pub fn default_max_connections() -> usize {
    max_connections_for(descriptor_limit().unwrap_or(ASSUMED_DESCRIPTOR_LIMIT))
}

fn max_connections_for(descriptor_limit: u64) -> usize {
    let cap = (descriptor_limit.saturating_sub(RESERVED_DESCRIPTORS) / 2)
        .clamp(MIN_DEFAULT_CONNECTIONS, MAX_DEFAULT_CONNECTIONS);
    usize::try_from(cap).unwrap_or(usize::MAX)
}

/// The soft `RLIMIT_NOFILE` of this process (Linux; elsewhere `None`).
/// Read from procfs because the system call needs `unsafe` or a crate.
pub fn descriptor_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_descriptor_limit(&limits)
}

fn parse_descriptor_limit(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))?;
    match line.split_whitespace().next()? {
        "unlimited" => Some(u64::MAX),
        soft => soft.parse().ok(),
    }
}

pub struct Registry {
    limit: usize,
    /// Evictions free this many slots at a time, so that a flood of new
    /// connections at the cap does not scan the table once per connection.
    batch: usize,
    epoch: Instant,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    open: HashMap<u64, Arc<Connection>>,
    /// Connections told to close that have not finished yet: they still
    /// hold a descriptor for a moment but no longer count against the cap.
    closing: usize,
}

/// What is known about one connection, shared by its task, its requests
/// and the registry.
pub struct Connection {
    /// Admission order: among connections idle since the same millisecond,
    /// the older goes first.
    id: u64,
    epoch: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `epoch` at which the connection last became idle
    /// (accepted, or its last request finished).
    idle_since_ms: AtomicU64,
    /// Set (under the table's lock) once the registry picked it to close.
    evicted: AtomicBool,
    evict: Notify,
}

pub enum Admission {
    /// `evicted` idle connections were told to close to make room.
    Admitted { slot: Slot, evicted: usize },
    /// At the cap and every connection is busy.
    Full,
}

impl Registry {
    pub fn new(limit: usize) -> Arc<Self> {
        let limit = limit.max(1);
        Arc::new(Self {
            limit,
            batch: (limit / 64).max(1),
            epoch: Instant::now(),
            table: Mutex::new(Table::default()),
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A slot for a newly accepted connection; at the cap the longest-idle
    /// connections are told to close first.
    pub fn admit(self: &Arc<Self>) -> Admission {
        let mut table = self.lock();
        let mut evicted = 0;
        if table.open.len().saturating_sub(table.closing) >= self.limit {
            evicted = self.evict_idle(&mut table);
            if evicted == 0 {
                return Admission::Full;
            }
        }
        let id = table.next_id;
        table.next_id += 1;
        let connection = Arc::new(Connection {
            id,
            epoch: self.epoch,
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(millis_since(self.epoch)),
            evicted: AtomicBool::new(false),
            evict: Notify::new(),
        });
        table.open.insert(id, Arc::clone(&connection));
        Admission::Admitted {
            slot: Slot {
                registry: Arc::clone(self),
                connection,
            },
            evicted,
        }
    }

    /// Tells the longest-idle connections to close, to free descriptors
    /// when the process has run out of them; returns how many.
    pub fn evict_idle_now(&self) -> usize {
        let mut table = self.lock();
        self.evict_idle(&mut table)
    }

    fn evict_idle(&self, table: &mut Table) -> usize {
        let Table { open, closing, .. } = table;
        let mut idle: Vec<((u64, u64), &Arc<Connection>)> = open
            .values()
            .filter(|connection| !connection.evicted.load(Ordering::Relaxed))
            .filter(|connection| connection.is_idle())
            .map(|connection| {
                let since = connection.idle_since_ms.load(Ordering::Relaxed);
                ((since, connection.id), connection)
            })
            .collect();
        let count = self.batch.min(idle.len());
        if count == 0 {
            return 0;
        }
        if count < idle.len() {
            idle.select_nth_unstable_by_key(count - 1, |(order, _)| *order);
        }
        for (_, connection) in &idle[..count] {
            connection.evicted.store(true, Ordering::Relaxed);
            connection.evict.notify_one();
        }
        *closing += count;
        count
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // The table stays consistent even if a holder panicked mid-way:
        // every change is a single insert, remove or counter update.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A connection's place in the registry; dropping it frees the place.
pub struct Slot {
    registry: Arc<Registry>,
    connection: Arc<Connection>,
}

impl Slot {
    pub fn connection(&self) -> &Arc<Connection> {
        &self.connection
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut table = self.registry.lock();
        if table.open.remove(&self.connection.id).is_some()
            && self.connection.evicted.load(Ordering::Relaxed)
        {
            table.closing = table.closing.saturating_sub(1);
        }
    }
}

impl Connection {
    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    /// When the connection will have been idle too long, or `None` while a
    /// request is in flight.
    pub fn idle_deadline(&self, idle_timeout: Duration) -> Option<Instant> {
        if !self.is_idle() {
            return None;
        }
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed));
        Some(self.epoch + since + idle_timeout)
    }

    /// Resolves once the registry picked this connection to close.
    pub async fn evicted(&self) {
        self.evict.notified().await;
    }

    /// Marks a request in flight until the returned guard is dropped.
    /// Called when hyper hands the request to the service (the head has
    /// arrived); the guard lives in the response body, so a stream counts
    /// as in flight until its last byte is written.
    pub fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(self))
    }
}

pub struct InFlight(Arc<Connection>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let connection = &self.0;
        // The time first, so whoever sees the count reach zero sees it too.
        connection
            .idle_since_ms
            .store(millis_since(connection.epoch), Ordering::Relaxed);
        connection.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in flight until hyper
/// has written it to the end (or dropped it).
pub struct InFlightBody {
    body: ProxyBody,
    _in_flight: InFlight,
}

impl InFlightBody {
    pub fn new(body: ProxyBody, in_flight: InFlight) -> Self {
        Self {
            body,
            _in_flight: in_flight,
        }
    }
}

impl Body for InFlightBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// At most one log line per interval for an event that can repeat
/// thousands of times a second (accept failures, a full server), with how
/// many were held back.
pub struct LogThrottle {
    interval: Duration,
    last: Option<Instant>,
    held_back: u64,
}

impl LogThrottle {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
            held_back: 0,
        }
    }

    /// `Some(held back since the last line)` when a line may be logged now.
    pub fn allow(&mut self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < self.interval)
        {
            self.held_back += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held_back))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn admitted(registry: &Arc<Registry>) -> (Slot, usize) {
        match registry.admit() {
            Admission::Admitted { slot, evicted } => (slot, evicted),
            Admission::Full => panic!("refused below the cap or with idle connections"),
        }
    }

    #[test]
    fn the_descriptor_limit_is_read_from_procfs_text() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             63499                63499                processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_descriptor_limit(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_descriptor_limit(unlimited), Some(u64::MAX));
        assert_eq!(parse_descriptor_limit("Max processes 10 10\n"), None);
    }

    #[test]
    fn the_default_cap_leaves_descriptors_for_upstream_connections() {
        assert_eq!(max_connections_for(1024), 480);
        assert_eq!(max_connections_for(256), 96);
        assert_eq!(max_connections_for(40), 16);
        assert_eq!(max_connections_for(1 << 20), 10_000);
        assert_eq!(max_connections_for(u64::MAX), 10_000);
    }

    #[tokio::test]
    async fn at_the_cap_the_longest_idle_connection_makes_room() {
        let registry = Registry::new(2);
        let (oldest, _) = admitted(&registry);
        let (busy, _) = admitted(&registry);
        let _request = busy.connection().request_started();

        let (newest, evicted) = admitted(&registry);
        assert_eq!(evicted, 1);
        assert!(oldest.connection().evicted.load(Ordering::Relaxed));
        assert!(!busy.connection().evicted.load(Ordering::Relaxed));
        // The evicted connection is told through its notification.
        tokio::time::timeout(Duration::from_secs(1), oldest.connection().evicted())
            .await
            .expect("the evicted connection is notified");

        // Until it is gone it holds no place: one busy, one new, one idle
        // (`newest`), so the next newcomer evicts `newest`.
        drop(oldest);
        let (_fourth, evicted) = admitted(&registry);
        assert_eq!(evicted, 1);
        assert!(newest.connection().evicted.load(Ordering::Relaxed));
    }

    #[test]
    fn a_full_server_of_busy_connections_refuses() {
        let registry = Registry::new(1);
        let (busy, _) = admitted(&registry);
        let request = busy.connection().request_started();
        assert!(matches!(registry.admit(), Admission::Full));
        drop(request);
        let (_next, evicted) = admitted(&registry);
        assert_eq!(evicted, 1);
    }

    #[test]
    fn log_lines_are_throttled_with_a_count() {
        let start = Instant::now();
        let mut throttle = LogThrottle::new(Duration::from_secs(10));
        assert_eq!(throttle.allow_at(start), Some(0));
        assert_eq!(throttle.allow_at(start + Duration::from_secs(1)), None);
        assert_eq!(throttle.allow_at(start + Duration::from_secs(9)), None);
        assert_eq!(throttle.allow_at(start + Duration::from_secs(10)), Some(2));
        assert_eq!(throttle.allow_at(start + Duration::from_secs(11)), None);
    }
}
