//! The shared limiter in Redis: one atomic Lua script per operation, timed
//! by the Redis server's clock, so N instances (with clocks as skewed as
//! they like) together admit no more than the limit.
//!
//! Key layout, all under `{prefix}:v1:` (the `v1` changes whenever a script's
//! semantics change, so a rolling deploy never mixes two meanings of a key):
//! - `rate:{identity}`: a string, the GCRA TAT in server microseconds, with
//!   a `PX` expiry at the moment the bucket is full again (then it carries
//!   no state);
//! - `streams:{identity}` and `upstream:{credential}`: sorted sets of leases,
//!   member = random lease id, score = the lease's expiry in server
//!   milliseconds. Leases are short (`LEASE_TTL`) and renewed by a heartbeat
//!   while held, so the slots of a crashed or frozen instance free themselves
//!   within `LEASE_TTL`; the key expires with its last lease;
//! - `budget:{identity}`: a hash {w = window start (Unix s), used,
//!   reserved} of the token budget, expiring an hour after its window.
//!
//! Every round trip is bounded by the configured timeout, and a failure is
//! reported to the caller, who applies the failure mode. The URL (and its
//! password) is never logged; only `scheme://host`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{RedisResult, Script};

use super::config::Rate;
use crate::redis::{FailureMode, RedisConfig, SharedRedis, WARN_EVERY, WarnEvery};

/// How long a stream or upstream lease lives without a heartbeat. Short, so
/// an instance that crashed, hit its platform's time limit or was frozen
/// (Lambda freezes the process after the response) holds a GigaChat slot
/// for at most this long: with a personal key's single slot, a long TTL
/// would stall the whole deployment.
pub(crate) const LEASE_TTL: Duration = Duration::from_secs(30);
/// How often a held lease is renewed: three tries before it would expire.
pub(crate) const LEASE_HEARTBEAT: Duration = Duration::from_secs(10);

/// GCRA, identical to `memory::gcra_step`. KEYS[1] = the bucket;
/// ARGV[1] = emission interval T (µs), ARGV[2] = tolerance L = N × T (µs).
/// Returns {1 if admitted, stored TAT − now (µs)}.
const RATE_SCRIPT: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local emission = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now) or now
if tat < now then tat = now end
if tat > now + tolerance then tat = now + tolerance end
local new_tat = tat + emission
if new_tat - now <= tolerance then
  redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
  return {1, new_tat - now}
end
return {0, tat - now}
";

/// KEYS[1] = the lease set; ARGV[1] = limit, ARGV[2] = lease TTL (ms),
/// ARGV[3] = lease id. Drops expired leases, then adds this one if fewer
/// than `limit` remain; idempotent for an id already held (a retried call).
/// Returns {1 if granted, leases held now}.
const ACQUIRE_SCRIPT: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local held = redis.call('ZCARD', KEYS[1])
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then
  return {1, held}
end
if held >= tonumber(ARGV[1]) then
  return {0, held}
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[3])
redis.call('PEXPIRE', KEYS[1], ttl)
return {1, held + 1}
";

/// KEYS[1] = the lease set; ARGV[1] = lease TTL (ms), ARGV[2] = lease id.
/// Extends a lease that is still alive; returns 1, or 0 if it is gone.
const RENEW_SCRIPT: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local ttl = tonumber(ARGV[1])
local expiry = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[2]) or 0) or 0
if expiry <= now then
  return 0
end
redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[2])
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
";

/// Token budget admission, the same rule as `budget::decide`. KEYS[1] = the
/// identity's budget hash {w = window start, used, reserved};
/// ARGV[1] = limit, ARGV[2] = input estimate, ARGV[3] = output estimate,
/// ARGV[4..7] = window starts around the caller's clock: the window is the
/// one that contains Redis's own time (the caller's middle one if its
/// clock is off by more than a window). A hash from an earlier window
/// starts over. Returns {1 if reserved, used, reserved (after), window
/// start, window end, output granted}.
const BUDGET_RESERVE_SCRIPT: &str = r"
local now = tonumber(redis.call('TIME')[1])
local s, e = tonumber(ARGV[5]), tonumber(ARGV[6])
for i = 4, 6 do
  local a, b = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  if a <= now and now < b then s, e = a, b end
end
local used, reserved = 0, 0
if tonumber(redis.call('HGET', KEYS[1], 'w') or -1) == s then
  used = tonumber(redis.call('HGET', KEYS[1], 'used') or 0) or 0
  reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or 0) or 0
end
local limit, input, output = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if ARGV[8] == 'status' then
  return {1, used, reserved, s, e, 0}
end
if used + reserved >= limit then
  return {0, used, reserved, s, e, 0}
end
local available = limit - used - reserved
if input + output > available then
  output = math.min(math.max(available - input, 1), math.max(output, 1))
end
reserved = reserved + input + output
redis.call('HSET', KEYS[1], 'w', string.format('%.0f', s), 'used', string.format('%.0f', used), 'reserved', string.format('%.0f', reserved))
redis.call('EXPIREAT', KEYS[1], e + 3600)
return {1, used, reserved, s, e, output}
";

/// Settles a reservation. KEYS[1] = the budget hash; ARGV[1] = the window
/// start it was made in, ARGV[2] = the amount reserved, ARGV[3] = the
/// charge. A window that has ended since is left alone. Returns 1 if
/// applied.
const BUDGET_SETTLE_SCRIPT: &str = r"
if tonumber(redis.call('HGET', KEYS[1], 'w') or -1) ~= tonumber(ARGV[1]) then
  return 0
end
local reserved = (tonumber(redis.call('HGET', KEYS[1], 'reserved') or 0) or 0) - tonumber(ARGV[2])
if reserved < 0 then reserved = 0 end
redis.call('HSET', KEYS[1], 'reserved', string.format('%.0f', reserved))
redis.call('HINCRBY', KEYS[1], 'used', ARGV[3])
return 1
";

/// Why a Redis operation gave no answer; the caller applies the failure mode.
#[derive(Debug)]
pub(crate) struct Unavailable;

pub(crate) struct RedisStore {
    redis: SharedRedis,
    prefix: String,
    pub(crate) failure: FailureMode,
    rate_script: Script,
    acquire_script: Script,
    renew_script: Script,
    budget_reserve_script: Script,
    budget_settle_script: Script,
    warnings: WarnEvery,
}

/// What the budget script answered.
pub(crate) struct BudgetAnswer {
    pub reserved_ok: bool,
    pub counters: super::budget::Counters,
    pub window_end: u64,
    pub output: u64,
}

impl RedisStore {
    pub(crate) fn new(config: &RedisConfig) -> Self {
        Self {
            redis: SharedRedis::new(config),
            prefix: format!("{}:v1:", config.prefix),
            failure: config.failure,
            rate_script: Script::new(RATE_SCRIPT),
            acquire_script: Script::new(ACQUIRE_SCRIPT),
            renew_script: Script::new(RENEW_SCRIPT),
            budget_reserve_script: Script::new(BUDGET_RESERVE_SCRIPT),
            budget_settle_script: Script::new(BUDGET_SETTLE_SCRIPT),
            warnings: WarnEvery::new(WARN_EVERY),
        }
    }

    /// `{prefix}:v1:{kind}:{id}`. Identities are opaque client-derived
    /// strings: long or unusual ones are hashed so a key stays short and
    /// printable.
    pub(crate) fn key(&self, kind: &str, id: &str) -> String {
        let plain = id.len() <= 200 && id.bytes().all(|b| b.is_ascii_graphic());
        if plain {
            format!("{}{kind}:{id}", self.prefix)
        } else {
            use sha2::{Digest, Sha256};
            let digest = Sha256::digest(id.as_bytes());
            let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
            format!("{}{kind}:sha256:{hex}", self.prefix)
        }
    }

    /// Runs `op` through the shared connection (timeout, one retry of a
    /// dropped connection, see [`SharedRedis::run`]); a failure is logged
    /// (throttled) with what it means for the limits. If the first attempt
    /// did run, a rate check counts twice (errs on the safe side) and the
    /// lease script is idempotent per lease id.
    async fn run<T, F, Fut>(&self, what: &'static str, op: F) -> Result<T, Unavailable>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        self.redis.run(op).await.map_err(|failure| {
            self.warn(what, &failure.0);
            Unavailable
        })
    }

    fn warn(&self, what: &'static str, problem: &str) {
        if let Some(suppressed) = self.warnings.allow() {
            let consequence = match self.failure {
                FailureMode::Open => "limits fall back to this instance's memory (fail open)",
                FailureMode::Closed => "requests are refused with 503 (fail closed)",
            };
            tracing::warn!(
                redis = %self.redis.redacted_url(),
                operation = what,
                problem,
                suppressed_warnings = suppressed,
                "rate limiter store unavailable; {consequence}"
            );
        }
    }

    /// One GCRA step for `key`; returns (admitted, TAT − now in µs).
    pub(crate) async fn check_rate(
        &self,
        key: &str,
        rate: Rate,
    ) -> Result<(bool, u64), Unavailable> {
        let (allowed, ahead): (i64, i64) = self
            .run("rate", |mut connection| async move {
                self.rate_script
                    .key(key)
                    .arg(rate.emission_us())
                    .arg(rate.tolerance_us())
                    .invoke_async(&mut connection)
                    .await
            })
            .await?;
        Ok((allowed == 1, u64::try_from(ahead).unwrap_or(0)))
    }

    /// Adds lease `id` to the set `key` if fewer than `limit` are held.
    pub(crate) async fn try_acquire(
        &self,
        key: &str,
        id: &str,
        limit: u64,
    ) -> Result<bool, Unavailable> {
        let ttl_ms = duration_ms(LEASE_TTL);
        let (granted, _held): (i64, i64) = self
            .run("acquire", |mut connection| async move {
                self.acquire_script
                    .key(key)
                    .arg(limit)
                    .arg(ttl_ms)
                    .arg(id)
                    .invoke_async(&mut connection)
                    .await
            })
            .await?;
        Ok(granted == 1)
    }

    /// Extends lease `id`; false when it had already expired.
    async fn renew(&self, key: &str, id: &str) -> Result<bool, Unavailable> {
        let ttl_ms = duration_ms(LEASE_TTL);
        let renewed: i64 = self
            .run("renew", |mut connection| async move {
                self.renew_script
                    .key(key)
                    .arg(ttl_ms)
                    .arg(id)
                    .invoke_async(&mut connection)
                    .await
            })
            .await?;
        Ok(renewed == 1)
    }

    /// Token budget admission (or, with `reserve` false, only the state).
    pub(crate) async fn reserve_budget(
        &self,
        key: &str,
        limit: u64,
        estimate: super::budget::Estimate,
        boundaries: [u64; 4],
        reserve: bool,
    ) -> Result<BudgetAnswer, Unavailable> {
        let mode = if reserve { "reserve" } else { "status" };
        let (ok, used, reserved, start, end, output): (i64, i64, i64, i64, i64, i64) = self
            .run("budget", |mut connection| async move {
                let mut invocation = self.budget_reserve_script.key(key);
                invocation
                    .arg(limit)
                    .arg(estimate.input)
                    .arg(estimate.output);
                for boundary in boundaries {
                    invocation.arg(boundary);
                }
                invocation.arg(mode).invoke_async(&mut connection).await
            })
            .await?;
        let whole = |n: i64| u64::try_from(n).unwrap_or(0);
        Ok(BudgetAnswer {
            reserved_ok: ok == 1,
            counters: super::budget::Counters {
                window_start: whole(start),
                used: whole(used),
                reserved: whole(reserved),
            },
            window_end: whole(end),
            output: whole(output),
        })
    }

    /// Replaces a reservation by its charge (see `BUDGET_SETTLE_SCRIPT`).
    pub(crate) async fn settle_budget(
        &self,
        key: &str,
        window_start: u64,
        amount: u64,
        charge: u64,
    ) -> Result<(), Unavailable> {
        self.run("budget settle", |mut connection| async move {
            self.budget_settle_script
                .key(key)
                .arg(window_start)
                .arg(amount)
                .arg(charge)
                .invoke_async::<i64>(&mut connection)
                .await
        })
        .await
        .map(drop)
    }

    async fn release(&self, key: &str, id: &str) -> Result<(), Unavailable> {
        self.run("release", |mut connection| async move {
            redis::cmd("ZREM")
                .arg(key)
                .arg(id)
                .query_async::<i64>(&mut connection)
                .await
        })
        .await
        .map(drop)
    }
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A lease held in Redis: renewed while alive, removed when dropped.
pub(crate) struct RedisLease {
    store: Arc<RedisStore>,
    key: String,
    id: String,
    heartbeat: Option<tokio::task::AbortHandle>,
}

impl RedisLease {
    /// Wraps a granted lease and starts its heartbeat.
    pub(crate) fn start(store: Arc<RedisStore>, key: String, id: String) -> Self {
        let heartbeat = tokio::runtime::Handle::try_current().ok().map(|runtime| {
            let store = Arc::clone(&store);
            let (key, id) = (key.clone(), id.clone());
            runtime
                .spawn(async move {
                    loop {
                        tokio::time::sleep(LEASE_HEARTBEAT).await;
                        match store.renew(&key, &id).await {
                            Ok(true) | Err(Unavailable) => {}
                            Ok(false) => {
                                tracing::warn!(
                                    "a limiter lease expired while held (Redis unreachable for longer than its TTL); it is no longer counted"
                                );
                                break;
                            }
                        }
                    }
                })
                .abort_handle()
        });
        Self {
            store,
            key,
            id,
            heartbeat,
        }
    }
}

impl Drop for RedisLease {
    fn drop(&mut self) {
        if let Some(heartbeat) = self.heartbeat.take() {
            heartbeat.abort();
        }
        // Without a runtime (process shutting down) the lease simply
        // expires after LEASE_TTL.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let store = Arc::clone(&self.store);
            let key = std::mem::take(&mut self.key);
            let id = std::mem::take(&mut self.id);
            runtime.spawn(async move {
                let _ = store.release(&key, &id).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn keys_are_versioned_and_bounded() {
        let mut config = RedisConfig::from_url("redis://127.0.0.1:1").unwrap();
        config.timeout = Duration::from_millis(10);
        let store = RedisStore::new(&config);
        assert_eq!(
            store.key("rate", "sub:alice"),
            "gigachat-proxy:v1:rate:sub:alice"
        );
        let long = "x".repeat(500);
        let key = store.key("rate", &long);
        assert!(key.starts_with("gigachat-proxy:v1:rate:sha256:"));
        assert!(key.len() < 100);
        assert_ne!(store.key("rate", "a b"), store.key("rate", "a\u{0}b"));
    }

    #[test]
    fn scripts_use_the_server_clock_and_exact_integers() {
        for script in [
            RATE_SCRIPT,
            ACQUIRE_SCRIPT,
            RENEW_SCRIPT,
            BUDGET_RESERVE_SCRIPT,
        ] {
            assert!(script.contains("redis.call('TIME')"));
        }
        // tostring() would print a microsecond timestamp as 1.7e+15.
        assert!(RATE_SCRIPT.contains("string.format('%.0f'"));
    }
}
