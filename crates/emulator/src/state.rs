//! State shared between the `Emulator` handle and the server task.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;

use crate::{EmulatorConfig, Faults, RecordedRequest, Stats, lock};

/// How many requests the ring buffer keeps.
pub(crate) const RECORD_CAPACITY: usize = 1000;

/// Above this many stored tokens, long-expired ones are pruned, so a
/// long-running dev emulator does not grow without bound.
const TOKEN_PRUNE_THRESHOLD: usize = 10_000;

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub oauth_calls: AtomicU64,
    pub oauth_failures: AtomicU64,
    pub api_calls: AtomicU64,
    pub streams_started: AtomicU64,
    pub streams_completed: AtomicU64,
    pub streams_cancelled: AtomicU64,
    pub max_concurrent_api: AtomicU64,
}

impl Counters {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Debug, Clone)]
pub(crate) struct TokenInfo {
    pub key: String,
    pub scope: String,
    pub expires_at_ms: u64,
    pub epoch: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct StoredFile {
    pub id: String,
    pub filename: String,
    pub purpose: String,
    pub created_at: u64,
    pub content: Bytes,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub config: EmulatorConfig,
    pub faults: Faults,
    pub counters: Counters,
    pub recorded: Mutex<VecDeque<RecordedRequest>>,
    pub tokens: Mutex<HashMap<String, TokenInfo>>,
    pub files: Mutex<Vec<StoredFile>>,
    pub batches: Mutex<Vec<crate::batches::StoredBatch>>,
    pub assistants: Mutex<Vec<crate::assistants::StoredAssistant>>,
    pub threads: Mutex<Vec<crate::threads::StoredThread>>,
    /// In-flight API requests across all credentials (for max_concurrent_api).
    pub inflight: AtomicU64,
    /// In-flight API requests per credential key (for the 429 limit).
    pub per_key_inflight: Mutex<HashMap<String, usize>>,
    /// Recent OAuth call instants per credential, for the optional rate limit.
    pub oauth_window: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl Shared {
    pub fn new(config: EmulatorConfig) -> Self {
        Self {
            config,
            faults: Faults::default(),
            counters: Counters::default(),
            recorded: Mutex::new(VecDeque::with_capacity(RECORD_CAPACITY)),
            tokens: Mutex::new(HashMap::new()),
            files: Mutex::new(Vec::new()),
            batches: Mutex::new(Vec::new()),
            assistants: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
            inflight: AtomicU64::new(0),
            per_key_inflight: Mutex::new(HashMap::new()),
            oauth_window: Mutex::new(HashMap::new()),
        }
    }

    pub fn record(&self, req: RecordedRequest) {
        let mut ring = lock(&self.recorded);
        if ring.len() >= RECORD_CAPACITY {
            ring.pop_front();
        }
        ring.push_back(req);
    }

    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::SeqCst);
        Stats {
            oauth_calls: get(&c.oauth_calls),
            oauth_failures: get(&c.oauth_failures),
            api_calls: get(&c.api_calls),
            streams_started: get(&c.streams_started),
            streams_completed: get(&c.streams_completed),
            streams_cancelled: get(&c.streams_cancelled),
            max_concurrent_api: get(&c.max_concurrent_api),
        }
    }

    pub fn reset_stats(&self) {
        let c = &self.counters;
        for a in [
            &c.oauth_calls,
            &c.oauth_failures,
            &c.api_calls,
            &c.streams_started,
            &c.streams_completed,
            &c.streams_cancelled,
        ] {
            a.store(0, Ordering::SeqCst);
        }
        // Requests still in flight keep counting towards the new maximum.
        c.max_concurrent_api
            .store(self.inflight.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    pub fn store_token(&self, token: String, info: TokenInfo) {
        let mut tokens = lock(&self.tokens);
        if tokens.len() >= TOKEN_PRUNE_THRESHOLD {
            let horizon = crate::util::now_ms().saturating_sub(
                u64::try_from(self.config.token_ttl.as_millis()).unwrap_or(u64::MAX),
            );
            tokens.retain(|_, t| t.expires_at_ms > horizon);
        }
        tokens.insert(token, info);
    }

    pub fn lookup_token(&self, token: &str) -> Option<TokenInfo> {
        lock(&self.tokens).get(token).cloned()
    }

    /// Registers an in-flight API request. Returns the guard that undoes it.
    pub fn enter_api(self: &Arc<Self>) -> InflightGuard {
        let now = self.inflight.fetch_add(1, Ordering::SeqCst) + 1;
        self.counters
            .max_concurrent_api
            .fetch_max(now, Ordering::SeqCst);
        InflightGuard {
            shared: Arc::clone(self),
            key: None,
        }
    }
}

/// Held for as long as an API request is being served, streams included, so
/// both the concurrency limit and `max_concurrent_api` see a stream for its
/// whole life.
#[derive(Debug)]
pub(crate) struct InflightGuard {
    shared: Arc<Shared>,
    key: Option<String>,
}

impl InflightGuard {
    /// Claims a per-credential slot; `false` means the limit is reached (429).
    pub fn claim_key(&mut self, key: &str, limit: Option<usize>) -> bool {
        let mut map = lock(&self.shared.per_key_inflight);
        let slot = map.entry(key.to_owned()).or_insert(0);
        if let Some(limit) = limit
            && *slot >= limit
        {
            return false;
        }
        *slot += 1;
        self.key = Some(key.to_owned());
        true
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.shared.inflight.fetch_sub(1, Ordering::SeqCst);
        if let Some(key) = self.key.take() {
            let mut map = lock(&self.shared.per_key_inflight);
            if let Some(slot) = map.get_mut(&key) {
                *slot = slot.saturating_sub(1);
                if *slot == 0 {
                    map.remove(&key);
                }
            }
        }
    }
}
