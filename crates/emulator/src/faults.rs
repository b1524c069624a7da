//! Live fault switches. They are shared with the server task and flipped by
//! tests while requests are in flight, so every switch is an atomic or a short
//! critical section and every method takes `&self`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;

/// Sentinel for "no override" in the duration atomics; `u64::MAX` ms is not a
/// delay anyone can ask for through the public API (it saturates below).
const UNSET: u64 = u64::MAX;

/// Fault switches; see the crate docs for what each one imitates.
#[derive(Debug)]
pub struct Faults {
    oauth_delay_ms: AtomicU64,
    oauth_fail: Mutex<OauthFailure>,
    oauth_rate_limit: AtomicU32,
    api_401: AtomicU32,
    api_status: Mutex<(u16, u32)>,
    error_in_200: AtomicU32,
    chunk_delay_ms: AtomicU64,
    first_byte_delay_ms: AtomicU64,
    end_delay_ms: AtomicU64,
    /// `UNSET` when off, so "reset after 0 events" stays expressible.
    reset_after: AtomicU64,
    split_writes: AtomicBool,
    /// Where a streamed function call goes; `true` = its own chunk.
    function_call_separate: AtomicBool,
    /// Bumped by `expire_all_tokens`; tokens remember the epoch they were
    /// issued in, which makes expiring "everything so far" O(1).
    token_epoch: AtomicU64,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            oauth_delay_ms: AtomicU64::new(0),
            oauth_fail: Mutex::new(OauthFailure::default()),
            oauth_rate_limit: AtomicU32::new(0),
            api_401: AtomicU32::new(0),
            api_status: Mutex::new((0, 0)),
            error_in_200: AtomicU32::new(0),
            chunk_delay_ms: AtomicU64::new(UNSET),
            first_byte_delay_ms: AtomicU64::new(0),
            end_delay_ms: AtomicU64::new(0),
            reset_after: AtomicU64::new(UNSET),
            split_writes: AtomicBool::new(false),
            function_call_separate: AtomicBool::new(false),
            token_epoch: AtomicU64::new(0),
        }
    }
}

fn millis(d: Duration) -> u64 {
    // Saturate one below the sentinel so a huge delay is still "set".
    u64::try_from(d.as_millis())
        .unwrap_or(UNSET - 1)
        .min(UNSET - 1)
}

/// Atomically takes one unit from a counter, so two concurrent requests never
/// both consume the last injected failure.
fn take_one(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// Where a v1 stream puts a function call. Live GigaChat's choice is not
/// recorded anywhere public, and clients translating its stream disagree on
/// what they expect, so both shapes are offered and a translator can be
/// tested against each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FunctionCallChunk {
    /// The call rides in the last chunk, next to `finish_reason:
    /// "function_call"` and `usage`, as in the non-stream answer. The
    /// default, because the OpenAI bridges written and tested against the
    /// live service read a streamed call only from that chunk.
    #[default]
    Finish,
    /// The call comes in a chunk of its own, then an empty finish chunk
    /// with `finish_reason` and `usage`.
    Separate,
}

/// The injected OAuth failures still to be answered.
#[derive(Debug, Default, Clone, Copy)]
struct OauthFailure {
    status: u16,
    remaining: u32,
    retry_after_secs: Option<u32>,
}

fn take_status(slot: &Mutex<(u16, u32)>) -> Option<u16> {
    let mut guard = crate::lock(slot);
    if guard.1 == 0 {
        return None;
    }
    guard.1 -= 1;
    Some(guard.0)
}

impl Faults {
    /// Delays every OAuth answer, to widen the window in which a proxy could
    /// issue parallel refreshes (single-flight tests).
    pub fn set_oauth_delay(&self, d: Duration) {
        self.oauth_delay_ms.store(millis(d), Ordering::SeqCst);
    }

    /// The next `n` OAuth calls answer `status` with GigaChat's
    /// `{code,message}` shape (429 → "Too many requests").
    pub fn fail_next_oauth(&self, status: u16, n: u32) {
        self.fail_next_oauth_with_retry_after(status, n, None);
    }

    /// Like [`Faults::fail_next_oauth`], with a `Retry-After: <secs>` header
    /// on each of those answers (GigaChat's rate limiter may send one).
    pub fn fail_next_oauth_with_retry_after(
        &self,
        status: u16,
        n: u32,
        retry_after_secs: Option<u32>,
    ) {
        *crate::lock(&self.oauth_fail) = OauthFailure {
            status,
            remaining: n,
            retry_after_secs,
        };
    }

    /// Answers 429 to OAuth calls above `per_second` per credential (the
    /// documented "up to 10 times per second"); `None` turns it off (default),
    /// because tests that hammer OAuth on purpose should not trip it.
    pub fn set_oauth_rate_limit(&self, per_second: Option<u32>) {
        self.oauth_rate_limit
            .store(per_second.unwrap_or(0), Ordering::SeqCst);
    }

    /// The next `n` API calls answer 401 "Token has expired" whatever the
    /// token, to exercise the proxy's refresh-and-retry-once path.
    pub fn fail_next_api_with_401(&self, n: u32) {
        self.api_401.store(n, Ordering::SeqCst);
    }

    /// The next `n` API calls answer `status` with the `{status,message}` shape.
    pub fn fail_next_api_with_status(&self, status: u16, n: u32) {
        *crate::lock(&self.api_status) = (status, n);
    }

    /// The next `n` chat calls answer HTTP 200 with a 429 error body, a quirk
    /// seen in the wild (gigachat-java #5).
    pub fn error_in_200_next(&self, n: u32) {
        self.error_in_200.store(n, Ordering::SeqCst);
    }

    /// Overrides `EmulatorConfig::chunk_delay` for streams started afterwards.
    pub fn set_chunk_delay(&self, d: Duration) {
        self.chunk_delay_ms.store(millis(d), Ordering::SeqCst);
    }

    /// Delays every API response before its headers (slow first byte).
    pub fn set_first_byte_delay(&self, d: Duration) {
        self.first_byte_delay_ms.store(millis(d), Ordering::SeqCst);
    }

    /// Holds every later stream open this long after its last event before
    /// ending it, as a slow upstream may: what a client sees at `[DONE]`
    /// must not wait for the upstream connection to close.
    pub fn set_stream_end_delay(&self, d: Duration) {
        self.end_delay_ms.store(millis(d), Ordering::SeqCst);
    }

    pub(crate) fn stream_end_delay(&self) -> Duration {
        Duration::from_millis(self.end_delay_ms.load(Ordering::SeqCst))
    }

    /// Aborts the connection after `n` SSE events of each later stream, with
    /// no terminating chunk; `None` turns it off.
    pub fn reset_stream_after_chunks(&self, n: Option<u32>) {
        self.reset_after
            .store(n.map_or(UNSET, u64::from), Ordering::SeqCst);
    }

    /// Writes each SSE event in several pieces, cut inside the JSON, to catch
    /// parsers that assume one event per TCP read.
    pub fn split_sse_writes(&self, on: bool) {
        self.split_writes.store(on, Ordering::SeqCst);
    }

    /// Chooses where later v1 streams put a function call (default
    /// [`FunctionCallChunk::Finish`]).
    pub fn set_function_call_chunk(&self, shape: FunctionCallChunk) {
        self.function_call_separate
            .store(shape == FunctionCallChunk::Separate, Ordering::SeqCst);
    }

    /// Every token issued so far becomes expired (API answers "Token has expired").
    pub fn expire_all_tokens(&self) {
        self.token_epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Turns every fault off. Tokens already expired stay expired.
    pub fn reset(&self) {
        self.set_oauth_delay(Duration::ZERO);
        self.fail_next_oauth(0, 0);
        self.set_oauth_rate_limit(None);
        self.fail_next_api_with_401(0);
        self.fail_next_api_with_status(0, 0);
        self.error_in_200_next(0);
        self.chunk_delay_ms.store(UNSET, Ordering::SeqCst);
        self.set_first_byte_delay(Duration::ZERO);
        self.set_stream_end_delay(Duration::ZERO);
        self.reset_stream_after_chunks(None);
        self.split_sse_writes(false);
        self.set_function_call_chunk(FunctionCallChunk::Finish);
    }

    pub(crate) fn oauth_delay(&self) -> Duration {
        Duration::from_millis(self.oauth_delay_ms.load(Ordering::SeqCst))
    }

    /// The status (and `Retry-After` seconds) of the next injected OAuth
    /// failure, if one is left.
    pub(crate) fn take_oauth_failure(&self) -> Option<(u16, Option<u32>)> {
        let mut guard = crate::lock(&self.oauth_fail);
        guard.remaining = guard.remaining.checked_sub(1)?;
        Some((guard.status, guard.retry_after_secs))
    }

    pub(crate) fn oauth_rate_limit(&self) -> Option<u32> {
        match self.oauth_rate_limit.load(Ordering::SeqCst) {
            0 => None,
            n => Some(n),
        }
    }

    pub(crate) fn take_api_401(&self) -> bool {
        take_one(&self.api_401)
    }

    pub(crate) fn take_api_status(&self) -> Option<u16> {
        take_status(&self.api_status)
    }

    pub(crate) fn take_error_in_200(&self) -> bool {
        take_one(&self.error_in_200)
    }

    pub(crate) fn chunk_delay(&self, configured: Duration) -> Duration {
        match self.chunk_delay_ms.load(Ordering::SeqCst) {
            UNSET => configured,
            ms => Duration::from_millis(ms),
        }
    }

    pub(crate) fn first_byte_delay(&self) -> Duration {
        Duration::from_millis(self.first_byte_delay_ms.load(Ordering::SeqCst))
    }

    pub(crate) fn reset_after(&self) -> Option<u64> {
        match self.reset_after.load(Ordering::SeqCst) {
            UNSET => None,
            n => Some(n),
        }
    }

    pub(crate) fn split_writes(&self) -> bool {
        self.split_writes.load(Ordering::SeqCst)
    }

    pub(crate) fn function_call_chunk(&self) -> FunctionCallChunk {
        if self.function_call_separate.load(Ordering::SeqCst) {
            FunctionCallChunk::Separate
        } else {
            FunctionCallChunk::Finish
        }
    }

    pub(crate) fn token_epoch(&self) -> u64 {
        self.token_epoch.load(Ordering::SeqCst)
    }

    /// Applies a control-surface request. `reset` goes first so a single POST
    /// can mean "clear everything, then set exactly these".
    pub(crate) fn apply(&self, req: &FaultRequest) {
        if req.reset == Some(true) {
            self.reset();
        }
        if let Some(ms) = req.oauth_delay_ms {
            self.set_oauth_delay(Duration::from_millis(ms));
        }
        if let Some(s) = &req.fail_next_oauth {
            self.fail_next_oauth_with_retry_after(s.status, s.count, s.retry_after);
        }
        if let Some(limit) = req.oauth_rate_limit_per_sec {
            self.set_oauth_rate_limit(limit);
        }
        if let Some(n) = req.fail_next_api_with_401 {
            self.fail_next_api_with_401(n);
        }
        if let Some(s) = &req.fail_next_api_with_status {
            self.fail_next_api_with_status(s.status, s.count);
        }
        if let Some(n) = req.error_in_200_next {
            self.error_in_200_next(n);
        }
        if let Some(ms) = req.chunk_delay_ms {
            self.set_chunk_delay(Duration::from_millis(ms));
        }
        if let Some(ms) = req.first_byte_delay_ms {
            self.set_first_byte_delay(Duration::from_millis(ms));
        }
        if let Some(n) = req.reset_stream_after_chunks {
            self.reset_stream_after_chunks(n);
        }
        if let Some(on) = req.split_sse_writes {
            self.split_sse_writes(on);
        }
        if let Some(shape) = req.function_call_chunk {
            self.set_function_call_chunk(shape);
        }
        if req.expire_all_tokens == Some(true) {
            self.expire_all_tokens();
        }
    }
}

/// Body of `POST /_emulator/faults`. Unknown fields are rejected so a typo in
/// a test in another language fails loudly instead of silently doing nothing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FaultRequest {
    pub reset: Option<bool>,
    pub oauth_delay_ms: Option<u64>,
    pub fail_next_oauth: Option<OauthFailureRequest>,
    /// `null` turns the limit off; hence the double option.
    #[serde(default, deserialize_with = "some_nullable")]
    pub oauth_rate_limit_per_sec: Option<Option<u32>>,
    pub fail_next_api_with_401: Option<u32>,
    pub fail_next_api_with_status: Option<StatusCount>,
    pub error_in_200_next: Option<u32>,
    pub chunk_delay_ms: Option<u64>,
    pub first_byte_delay_ms: Option<u64>,
    #[serde(default, deserialize_with = "some_nullable")]
    pub reset_stream_after_chunks: Option<Option<u32>>,
    pub split_sse_writes: Option<bool>,
    /// `"finish"` or `"separate"`.
    pub function_call_chunk: Option<FunctionCallChunk>,
    pub expire_all_tokens: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatusCount {
    pub status: u16,
    #[serde(default = "one")]
    pub count: u32,
}

/// `fail_next_oauth`: `{"status", "count" (default 1), "retry_after"
/// (seconds, optional)}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OauthFailureRequest {
    pub status: u16,
    #[serde(default = "one")]
    pub count: u32,
    pub retry_after: Option<u32>,
}

fn one() -> u32 {
    1
}

/// Distinguishes an absent field (leave alone) from an explicit `null` (off).
fn some_nullable<'de, D>(d: D) -> Result<Option<Option<u32>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Option::<u32>::deserialize(d).map(Some)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_consumed_exactly() {
        let f = Faults::default();
        f.fail_next_api_with_401(2);
        assert!(f.take_api_401());
        assert!(f.take_api_401());
        assert!(!f.take_api_401());
        f.fail_next_api_with_status(503, 1);
        assert_eq!(f.take_api_status(), Some(503));
        assert_eq!(f.take_api_status(), None);
        f.fail_next_oauth_with_retry_after(429, 2, Some(1));
        assert_eq!(f.take_oauth_failure(), Some((429, Some(1))));
        assert_eq!(f.take_oauth_failure(), Some((429, Some(1))));
        assert_eq!(f.take_oauth_failure(), None);
        f.fail_next_oauth(500, 1);
        assert_eq!(f.take_oauth_failure(), Some((500, None)));
        assert_eq!(f.take_oauth_failure(), None);
    }

    #[test]
    fn oauth_failure_json_takes_an_optional_retry_after() {
        let f = Faults::default();
        let req: FaultRequest =
            serde_json::from_str(r#"{"fail_next_oauth":{"status":429,"count":1,"retry_after":2}}"#)
                .unwrap();
        f.apply(&req);
        assert_eq!(f.take_oauth_failure(), Some((429, Some(2))));
        let req: FaultRequest =
            serde_json::from_str(r#"{"fail_next_oauth":{"status":500}}"#).unwrap();
        f.apply(&req);
        assert_eq!(f.take_oauth_failure(), Some((500, None)));
        assert_eq!(f.take_oauth_failure(), None);
    }

    #[test]
    fn chunk_delay_override_and_reset() {
        let f = Faults::default();
        let cfg = Duration::from_millis(7);
        assert_eq!(f.chunk_delay(cfg), cfg);
        f.set_chunk_delay(Duration::ZERO);
        assert_eq!(f.chunk_delay(cfg), Duration::ZERO);
        f.reset();
        assert_eq!(f.chunk_delay(cfg), cfg);
    }

    #[test]
    fn fault_json_parses_and_distinguishes_null() {
        let f = Faults::default();
        let req: FaultRequest = serde_json::from_str(
            r#"{"reset_stream_after_chunks":3,"fail_next_api_with_status":{"status":503,"count":2}}"#,
        )
        .unwrap();
        f.apply(&req);
        assert_eq!(f.reset_after(), Some(3));
        let req: FaultRequest =
            serde_json::from_str(r#"{"reset_stream_after_chunks":null}"#).unwrap();
        f.apply(&req);
        assert_eq!(f.reset_after(), None);
        assert_eq!(f.take_api_status(), Some(503));
        assert!(serde_json::from_str::<FaultRequest>(r#"{"typo":1}"#).is_err());
    }

    #[test]
    fn function_call_chunk_switch_parses_and_resets() {
        let f = Faults::default();
        assert_eq!(f.function_call_chunk(), FunctionCallChunk::Finish);
        let req: FaultRequest =
            serde_json::from_str(r#"{"function_call_chunk":"separate"}"#).unwrap();
        f.apply(&req);
        assert_eq!(f.function_call_chunk(), FunctionCallChunk::Separate);
        let req: FaultRequest =
            serde_json::from_str(r#"{"function_call_chunk":"finish"}"#).unwrap();
        f.apply(&req);
        assert_eq!(f.function_call_chunk(), FunctionCallChunk::Finish);
        f.set_function_call_chunk(FunctionCallChunk::Separate);
        f.reset();
        assert_eq!(f.function_call_chunk(), FunctionCallChunk::Finish);
        assert!(
            serde_json::from_str::<FaultRequest>(r#"{"function_call_chunk":"middle"}"#).is_err()
        );
    }
}
