//! The in-memory store: a map with a TTL per entry, bounded by an entry
//! count and a byte budget, evicting oldest-first.
//!
//! Oldest-first rather than LRU: the entries are few and short-lived, and
//! FIFO needs no bookkeeping on reads, so a hit only takes the lock to
//! clone two reference-counted values.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::Entry;

pub(crate) struct MemoryStore {
    inner: Mutex<Inner>,
    max_entries: usize,
    budget_bytes: usize,
}

struct Inner {
    entries: HashMap<[u8; 32], Stored>,
    /// Insertion order; a key re-inserted later leaves a stale pair behind,
    /// recognised by its sequence number.
    order: VecDeque<([u8; 32], u64)>,
    bytes: usize,
    next_seq: u64,
}

struct Stored {
    entry: Entry,
    expires: Instant,
    seq: u64,
}

impl MemoryStore {
    pub(crate) fn new(max_entries: usize, budget_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                order: VecDeque::new(),
                bytes: 0,
                next_seq: 0,
            }),
            max_entries: max_entries.max(1),
            budget_bytes,
        }
    }

    pub(crate) fn get(&self, key: &[u8; 32], now: Instant) -> Option<Entry> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let stored = inner.entries.get(key)?;
        if now < stored.expires {
            return Some(stored.entry.clone());
        }
        inner.remove(key);
        None
    }

    pub(crate) fn put(&self, key: [u8; 32], entry: Entry, ttl: Duration, now: Instant) {
        let size = entry.size();
        if size > self.budget_bytes {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.remove(&key);
        while inner.entries.len() >= self.max_entries || inner.bytes + size > self.budget_bytes {
            if !inner.evict_oldest() {
                break;
            }
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.bytes += size;
        inner.order.push_back((key, seq));
        inner.entries.insert(
            key,
            Stored {
                entry,
                expires: now + ttl,
                seq,
            },
        );
        // Stale pairs pile up when the same keys are stored again and
        // again; rebuild the order from the live entries now and then.
        if inner.order.len() > 2 * self.max_entries + 16 {
            let mut live: Vec<([u8; 32], u64)> =
                inner.entries.iter().map(|(k, s)| (*k, s.seq)).collect();
            live.sort_unstable_by_key(|(_, seq)| *seq);
            inner.order = live.into();
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entries
            .len()
    }
}

impl Inner {
    fn remove(&mut self, key: &[u8; 32]) {
        if let Some(old) = self.entries.remove(key) {
            self.bytes = self.bytes.saturating_sub(old.entry.size());
        }
    }

    /// Drops the oldest live entry; false when there is none.
    fn evict_oldest(&mut self) -> bool {
        while let Some((key, seq)) = self.order.pop_front() {
            if self.entries.get(&key).is_some_and(|s| s.seq == seq) {
                self.remove(&key);
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use bytes::Bytes;
    use http::HeaderValue;

    fn entry(body: &'static str) -> Entry {
        Entry {
            content_type: HeaderValue::from_static("application/json"),
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    fn key(n: u8) -> [u8; 32] {
        [n; 32]
    }

    #[test]
    fn entries_expire_after_their_ttl() {
        let store = MemoryStore::new(10, 1 << 20);
        let now = Instant::now();
        store.put(key(1), entry("{}"), Duration::from_secs(1), now);
        assert!(store.get(&key(1), now).is_some());
        assert!(
            store
                .get(&key(1), now + Duration::from_millis(999))
                .is_some()
        );
        assert!(store.get(&key(1), now + Duration::from_secs(1)).is_none());
        assert_eq!(store.len(), 0);
    }

    #[test]
    fn the_oldest_entry_goes_first_when_full() {
        let store = MemoryStore::new(2, 1 << 20);
        let now = Instant::now();
        let ttl = Duration::from_secs(60);
        store.put(key(1), entry("1"), ttl, now);
        store.put(key(2), entry("2"), ttl, now);
        // Storing key 1 again makes it the newest.
        store.put(key(1), entry("1b"), ttl, now);
        store.put(key(3), entry("3"), ttl, now);
        assert!(store.get(&key(2), now).is_none());
        assert_eq!(store.get(&key(1), now).unwrap().body, "1b");
        assert!(store.get(&key(3), now).is_some());
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn the_byte_budget_holds_and_the_order_stays_bounded() {
        let store = MemoryStore::new(2, 64);
        let now = Instant::now();
        let ttl = Duration::from_secs(60);
        for n in 0..100u8 {
            store.put(key(n % 3), entry("0123456789"), ttl, now);
            let inner = store.inner.lock().unwrap();
            assert!(inner.bytes <= 64);
            assert!(inner.order.len() <= 2 * 2 + 16);
        }
        for n in 0..100u8 {
            store.put(
                key(7),
                entry("0123456789"),
                ttl,
                now + Duration::from_millis(n.into()),
            );
        }
        assert!(store.inner.lock().unwrap().order.len() <= 2 * 2 + 16);
        // An entry over the whole budget is not kept at all.
        store.put(key(9), entry(&*"x".repeat(100).leak()), ttl, now);
        assert!(store.get(&key(9), now).is_none());
    }
}
