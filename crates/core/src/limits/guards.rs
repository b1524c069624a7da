//! The slots a request holds while it runs: each frees itself when
//! dropped, so whatever holds them (the response body, until it ends or
//! the client leaves) decides how long they count.

use tokio::sync::OwnedSemaphorePermit;

use super::memory::MemoryStreamLease;
use super::redis_store::RedisLease;

/// Every limit slot one request holds, kept by the response body until it
/// ends or is dropped; dropping it frees them all. A limit that reserves
/// something for the length of a request (a token budget, say) adds its
/// holder here, and no route or body changes.
#[derive(Debug, Default)]
pub(crate) struct Guards {
    pub(super) stream: Option<StreamLease>,
    /// Held only for its `Drop`, which frees the slot.
    pub(super) _upstream: Option<UpstreamPermit>,
    /// Tokens reserved against the caller's budget, settled when the
    /// answer ends (refunded if dropped unsettled).
    pub(super) budget: Option<super::budget::Reservation>,
}

impl Guards {
    /// Holds a budget reservation for as long as the other slots.
    pub(crate) fn hold_budget(&mut self, reservation: Option<super::budget::Reservation>) {
        self.budget = reservation;
    }

    /// The budget's answer headers (the tokens left, and the lowered
    /// `max_tokens` if it was lowered).
    pub(crate) fn apply_budget_headers(&self, headers: &mut http::HeaderMap) {
        if let Some(reservation) = &self.budget {
            reservation.info.apply(headers);
            if let Some(clamped) = reservation.clamped {
                headers.insert(
                    crate::tenancy::policy::MAX_TOKENS_CLAMPED,
                    http::HeaderValue::from(clamped),
                );
            }
        }
    }

    /// Charges the budget for how the answer ended; returns the tokens
    /// charged, if a budget applied.
    pub(crate) fn settle_budget(&mut self, finish: &super::budget::Finish) -> Option<u64> {
        self.budget
            .take()
            .map(|mut reservation| reservation.settle(finish))
    }

    pub(crate) fn has_budget(&self) -> bool {
        self.budget.is_some()
    }
}

/// One open stream's slot; dropping it frees the slot (in Redis: a spawned
/// `ZREM`; without a runtime the lease expires by itself).
pub struct StreamLease {
    _inner: LeaseInner,
}

// The fields are held only for their `Drop`, which frees the slot.
#[allow(dead_code)]
enum LeaseInner {
    Memory(MemoryStreamLease),
    Redis(RedisLease),
}

impl StreamLease {
    pub(super) fn in_memory(lease: MemoryStreamLease) -> Self {
        Self {
            _inner: LeaseInner::Memory(lease),
        }
    }

    pub(super) fn in_redis(lease: RedisLease) -> Self {
        Self {
            _inner: LeaseInner::Redis(lease),
        }
    }
}

/// One upstream request's slot; dropping it frees the slot.
pub struct UpstreamPermit {
    _inner: PermitInner,
}

#[allow(dead_code)]
enum PermitInner {
    Memory(OwnedSemaphorePermit),
    Redis(RedisLease),
}

impl UpstreamPermit {
    pub(super) fn in_memory(permit: OwnedSemaphorePermit) -> Self {
        Self {
            _inner: PermitInner::Memory(permit),
        }
    }

    pub(super) fn in_redis(lease: RedisLease) -> Self {
        Self {
            _inner: PermitInner::Redis(lease),
        }
    }
}

impl std::fmt::Debug for StreamLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self._inner {
            LeaseInner::Memory(_) => "StreamLease(memory)",
            LeaseInner::Redis(_) => "StreamLease(redis)",
        })
    }
}

impl std::fmt::Debug for UpstreamPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self._inner {
            PermitInner::Memory(_) => "UpstreamPermit(memory)",
            PermitInner::Redis(_) => "UpstreamPermit(redis)",
        })
    }
}
