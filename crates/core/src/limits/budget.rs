//! Token budgets per identity: how many GigaChat tokens (billed
//! `usage.total_tokens`) one caller may spend per fixed, UTC-aligned window.
//!
//! A check that looks only at past spend lets N concurrent streams all pass
//! and then all spend, so admission **reserves** an estimate (the input's
//! size plus the output it may produce) and the end of the answer
//! **settles** it: the actual usage replaces the estimate, an upstream
//! error before any output refunds it, and a stream that broke or whose
//! client left is charged its input estimate plus what was streamed. A
//! caller can therefore overshoot by at most one request's estimation
//! error. When what is left is smaller than a request's output estimate,
//! its `max_tokens` is lowered to fit instead of refusing it.
//!
//! The counters live in this instance's memory, or in Redis (one Lua
//! script per step, on Redis's clock, see `redis_store`) when one is
//! configured.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;

pub use super::info::{BudgetInfo, Window};
use crate::config::env::{ConfigError, Env};
use crate::endpoint::Endpoint;
use crate::usage::Usage;

pub const VAR_BUDGET: &str = "GIGACHAT_PROXY_TOKEN_BUDGET";
pub const VAR_BUDGET_ANONYMOUS: &str = "GIGACHAT_PROXY_TOKEN_BUDGET_ANONYMOUS";

/// The output a request is assumed to produce when it sets no `max_tokens`:
/// a long chat answer, so a reservation rarely falls short of the truth.
pub(crate) const DEFAULT_OUTPUT_ESTIMATE: u64 = 1024;
/// Characters per token assumed for the input. GigaChat's tokenizer makes
/// about 3–4 characters of Russian or English one token; the request body
/// also carries its JSON framing, so this over-estimates, which is the safe
/// side for a reservation (the settlement corrects it).
const CHARS_PER_TOKEN: u64 = 3;

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `tokens` per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBudget {
    pub tokens: u64,
    pub window: Window,
}

impl TokenBudget {
    /// Parses `N/h`, `N/d`, `N/w` or `N/mo` (`200000/d`). `off` is handled
    /// by the caller. The error never repeats the value.
    pub fn parse(value: &str) -> Result<TokenBudget, String> {
        const FORMAT: &str =
            "must be `off` or TOKENS/WINDOW such as 200000/d (windows: h, d, w, mo; fixed, UTC)";
        let (tokens, window) = value.trim().split_once('/').ok_or(FORMAT)?;
        let tokens: u64 = tokens.trim().parse().map_err(|_| FORMAT.to_owned())?;
        if tokens == 0 || tokens > 1_000_000_000_000 {
            return Err(
                "must allow from 1 to 10^12 tokens per window (use `off` to disable)".into(),
            );
        }
        let window = match window.trim().to_ascii_lowercase().as_str() {
            "h" | "hour" => Window::Hour,
            "d" | "day" => Window::Day,
            "w" | "week" => Window::Week,
            "mo" | "month" => Window::Month,
            _ => return Err(FORMAT.into()),
        };
        Ok(TokenBudget { tokens, window })
    }
}

/// The budgets in force; `None` is no budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BudgetConfig {
    /// For callers who authenticated (API key, JWT, session).
    pub identified: Option<TokenBudget>,
    /// For callers known only by their address.
    pub anonymous: Option<TokenBudget>,
}

impl BudgetConfig {
    /// Off unless set: how many tokens a site's users may spend is the
    /// operator's decision, and a local developer needs none.
    pub fn from_env(env: &Env<'_>) -> Result<BudgetConfig, ConfigError> {
        Ok(BudgetConfig {
            identified: env.off_or(VAR_BUDGET, None, TokenBudget::parse)?,
            anonymous: env.off_or(VAR_BUDGET_ANONYMOUS, None, TokenBudget::parse)?,
        })
    }

    /// The budget a caller meets: their own (from a JWT claim, per the
    /// window of `GIGACHAT_PROXY_TOKEN_BUDGET`, a day if that is off), else
    /// the configured one.
    pub(crate) fn for_caller(&self, anonymous: bool, own: Option<u64>) -> Option<TokenBudget> {
        if anonymous {
            return self.anonymous;
        }
        match own {
            Some(tokens) => Some(TokenBudget {
                tokens,
                window: self.identified.map_or(Window::Day, |b| b.window),
            }),
            None => self.identified,
        }
    }

    /// A budget as its variable spells it (`200000/d`), `off` when unset:
    /// for the health document, which shows configuration, never spend.
    pub(crate) fn describe(budget: Option<TokenBudget>) -> String {
        budget.map_or_else(
            || "off".to_owned(),
            |b| format!("{}/{}", b.tokens, b.window.short()),
        )
    }

    /// The variable that sets the budget a caller meets, for hints.
    pub(crate) fn variable(anonymous: bool) -> &'static str {
        if anonymous {
            VAR_BUDGET_ANONYMOUS
        } else {
            VAR_BUDGET
        }
    }
}

/// Whether a call spends tokens that GigaChat bills.
pub(crate) fn is_billed(endpoint: Endpoint) -> bool {
    matches!(
        endpoint,
        Endpoint::Chat | Endpoint::ChatV2 | Endpoint::Embeddings
    )
}

/// What a request is expected to cost, before it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Estimate {
    /// The input, from the body's size.
    pub input: u64,
    /// The output: its `max_tokens`, or [`DEFAULT_OUTPUT_ESTIMATE`]
    /// (embeddings produce none).
    pub output: u64,
}

impl Estimate {
    pub(crate) fn of(endpoint: Endpoint, body: &[u8]) -> Self {
        // Counting the bytes that start a UTF-8 character counts characters
        // without decoding (a Cyrillic letter is two bytes, one character).
        let chars = body.iter().filter(|&&b| (b as i8) >= -0x40).count() as u64;
        let input = chars.div_ceil(CHARS_PER_TOKEN).max(1);
        let output = if endpoint == Endpoint::Embeddings {
            0
        } else {
            MaxTokens::of(body).unwrap_or(DEFAULT_OUTPUT_ESTIMATE)
        };
        Estimate { input, output }
    }
}

/// The `max_tokens` a chat body asks for: top-level (v1) or in
/// `model_options` (v2). The last of duplicated keys wins, as at GigaChat,
/// so a second key cannot hide a larger value.
#[derive(Deserialize)]
struct MaxTokens {
    #[serde(default, deserialize_with = "last_max_tokens")]
    max_tokens: Option<u64>,
    #[serde(default)]
    model_options: Option<ModelOptions>,
}

#[derive(Deserialize)]
struct ModelOptions {
    #[serde(default, deserialize_with = "last_max_tokens")]
    max_tokens: Option<u64>,
}

fn last_max_tokens<'de, D: serde::Deserializer<'de>>(json: D) -> Result<Option<u64>, D::Error> {
    Ok(Option::<serde_json::Value>::deserialize(json)?.and_then(|v| v.as_u64()))
}

impl MaxTokens {
    fn of(body: &[u8]) -> Option<u64> {
        // serde's derive refuses a duplicated field; then the generic
        // value (which keeps the last, as GigaChat does) decides.
        match serde_json::from_slice::<MaxTokens>(body) {
            Ok(found) => found
                .max_tokens
                .or(found.model_options.and_then(|o| o.max_tokens)),
            Err(_) => {
                let value: serde_json::Value = serde_json::from_slice(body).ok()?;
                value
                    .get("max_tokens")
                    .and_then(serde_json::Value::as_u64)
                    .or_else(|| value.pointer("/model_options/max_tokens")?.as_u64())
            }
        }
    }
}

/// The billed tokens of an embeddings answer: the sum over its items.
pub(crate) fn embeddings_usage(json: &[u8]) -> Option<Usage> {
    #[derive(Deserialize)]
    struct List {
        data: Vec<Item>,
    }
    #[derive(Deserialize)]
    struct Item {
        usage: Option<ItemUsage>,
    }
    #[derive(Deserialize)]
    struct ItemUsage {
        prompt_tokens: u64,
    }
    let list: List = serde_json::from_slice(json).ok()?;
    let prompt_tokens = list
        .data
        .iter()
        .filter_map(|item| item.usage.as_ref())
        .fold(0u64, |sum, usage| sum.saturating_add(usage.prompt_tokens));
    Some(Usage {
        prompt_tokens,
        completion_tokens: 0,
    })
}

/// One identity's counters in one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    /// The window's start (Unix seconds).
    pub window_start: u64,
    /// Settled spend.
    pub used: u64,
    /// Held by requests in flight.
    pub reserved: u64,
}

/// What admission decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Admitted: reserve `amount`, with the output lowered to `output`.
    Reserve { amount: u64, output: u64 },
    /// Spent.
    Refuse,
}

/// The one admission rule, shared by memory and (in Lua) Redis: refuse
/// when the window is spent, else reserve the estimate, lowering the
/// output to what is left (at least 1 token, so the answer says why it
/// stopped rather than being refused).
pub(crate) fn decide(limit: u64, counters: &Counters, estimate: Estimate) -> Decision {
    let spent = counters.used.saturating_add(counters.reserved);
    if spent >= limit {
        return Decision::Refuse;
    }
    let available = limit - spent;
    let output = if estimate.input.saturating_add(estimate.output) <= available {
        estimate.output
    } else {
        available
            .saturating_sub(estimate.input)
            .max(1)
            .min(estimate.output.max(1))
    };
    Decision::Reserve {
        amount: estimate.input.saturating_add(output),
        output,
    }
}

/// How an answer ended, for its settlement.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Finish {
    pub status: u16,
    /// The usage GigaChat reported, if it did.
    pub usage: Option<Usage>,
    /// Body bytes that went to the client.
    pub sent_bytes: u64,
}

/// What a finished request is charged: GigaChat's usage when it reported
/// one; nothing when GigaChat refused it (an error status, which bills
/// nothing); else (a stream that broke, a client that left) the input
/// estimate plus what was streamed, never less than the input.
pub(crate) fn charge(input_estimate: u64, finish: &Finish) -> u64 {
    if let Some(usage) = finish.usage {
        return usage.prompt_tokens.saturating_add(usage.completion_tokens);
    }
    if !(200..300).contains(&finish.status) {
        return 0;
    }
    input_estimate.saturating_add(finish.sent_bytes.div_ceil(CHARS_PER_TOKEN))
}

/// Identities whose counters memory keeps before it drops finished windows.
const MAX_TRACKED: usize = 100_000;

/// The counters in this instance's memory (also the fallback when Redis
/// fails open).
#[derive(Debug, Default)]
pub(crate) struct MemoryBudgets {
    counters: Mutex<HashMap<String, Counters>>,
}

impl MemoryBudgets {
    /// Admission for `identity` at `now`; the counters after it.
    pub(crate) fn reserve(
        &self,
        identity: &str,
        budget: TokenBudget,
        estimate: Estimate,
        now: u64,
    ) -> (Decision, Counters) {
        let (start, _) = budget.window.bounds(now);
        let Ok(mut map) = self.counters.lock() else {
            return (Decision::Refuse, Counters::default());
        };
        if map.len() >= MAX_TRACKED && !map.contains_key(identity) {
            evict(&mut map, start, MAX_TRACKED);
        }
        let counters = map.entry(identity.to_owned()).or_default();
        if counters.window_start != start {
            *counters = Counters {
                window_start: start,
                ..Counters::default()
            };
        }
        let decision = decide(budget.tokens, counters, estimate);
        if let Decision::Reserve { amount, .. } = decision {
            counters.reserved = counters.reserved.saturating_add(amount);
        }
        (decision, *counters)
    }

    /// Replaces a reservation made in `window_start` by the charge; a
    /// window that has ended since has nothing left to correct.
    pub(crate) fn settle(&self, identity: &str, window_start: u64, amount: u64, charge: u64) {
        let Ok(mut map) = self.counters.lock() else {
            return;
        };
        if let Some(counters) = map.get_mut(identity)
            && counters.window_start == window_start
        {
            counters.reserved = counters.reserved.saturating_sub(amount);
            counters.used = counters.used.saturating_add(charge);
        }
    }

    pub(crate) fn status(&self, identity: &str, budget: TokenBudget, now: u64) -> Counters {
        let (start, _) = budget.window.bounds(now);
        let found = self
            .counters
            .lock()
            .ok()
            .and_then(|map| map.get(identity).copied())
            .filter(|c| c.window_start == start);
        found.unwrap_or(Counters {
            window_start: start,
            ..Counters::default()
        })
    }
}

/// Makes room in a full map, so a flood of fresh identities (spoofed
/// addresses) cannot grow memory without bound. Counters of ended windows
/// carry nothing and go first; if the map is still more than three
/// quarters full, those that spent least go (never one holding a
/// reservation) until half is left. Each sweep frees a quarter of the
/// capacity, so its O(n log n) cost is amortized over as many requests.
fn evict(map: &mut HashMap<String, Counters>, window_start: u64, capacity: usize) {
    map.retain(|_, c| c.window_start >= window_start && c.used.saturating_add(c.reserved) > 0);
    if map.len() <= capacity / 4 * 3 {
        return;
    }
    let mut spends: Vec<u64> = map
        .values()
        .filter(|c| c.reserved == 0)
        .map(|c| c.used)
        .collect();
    let excess = map.len().saturating_sub(capacity / 2);
    if excess == 0 || spends.is_empty() {
        return;
    }
    let cut = excess.min(spends.len()) - 1;
    let (_, threshold, _) = spends.select_nth_unstable(cut);
    let threshold = *threshold;
    let mut dropped = 0;
    map.retain(|_, c| {
        let goes = dropped < excess && c.reserved == 0 && c.used <= threshold;
        dropped += usize::from(goes);
        !goes
    });
}

/// Where a reservation was made, so it settles there.
pub(crate) enum Store {
    Memory(Arc<MemoryBudgets>),
    Redis(Arc<super::redis_store::RedisStore>, String),
}

/// Tokens held for one request in flight, kept (in [`super::Guards`]) by
/// the response body until it ends. Settled with how it ended; dropped
/// unsettled (the request failed before an answer went out), it is
/// refunded.
pub(crate) struct Reservation {
    store: Option<Store>,
    identity: String,
    window_start: u64,
    amount: u64,
    input: u64,
    /// The state after the reservation, for the answer's headers.
    pub(crate) info: BudgetInfo,
    /// The `max_tokens` sent instead of the one asked for, if lowered.
    pub(crate) clamped: Option<u64>,
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("amount", &self.amount)
            .finish_non_exhaustive()
    }
}

impl Reservation {
    pub(crate) fn new(
        store: Store,
        identity: String,
        window_start: u64,
        amount: u64,
        input: u64,
        info: BudgetInfo,
        clamped: Option<u64>,
    ) -> Self {
        Self {
            store: Some(store),
            identity,
            window_start,
            amount,
            input,
            info,
            clamped,
        }
    }

    /// Charges what the request cost; returns the charge (for metrics).
    pub(crate) fn settle(&mut self, finish: &Finish) -> u64 {
        let charged = charge(self.input, finish);
        self.settle_with(charged);
        charged
    }

    fn settle_with(&mut self, charged: u64) {
        let Some(store) = self.store.take() else {
            return;
        };
        let (identity, window_start, amount) = (
            std::mem::take(&mut self.identity),
            self.window_start,
            self.amount,
        );
        match store {
            Store::Memory(memory) => memory.settle(&identity, window_start, amount, charged),
            Store::Redis(redis, key) => {
                // Without a runtime (shutting down) the reservation stays
                // counted until the window ends: over-charging is the safe
                // side.
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move {
                        let _ = redis
                            .settle_budget(&key, window_start, amount, charged)
                            .await;
                    });
                }
            }
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.settle_with(0);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::super::info::{days_from_civil, duration_text, rfc3339};
    use super::*;

    fn at(year: u64, month: u64, day: u64, h: u64, m: u64, s: u64) -> u64 {
        days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s
    }

    #[test]
    fn a_budget_is_described_as_its_variable_spells_it() {
        assert_eq!(BudgetConfig::describe(None), "off");
        for text in ["200000/d", "5/h", "70/w", "9/mo"] {
            let budget = TokenBudget::parse(text).unwrap();
            assert_eq!(BudgetConfig::describe(Some(budget)), text);
        }
    }

    #[test]
    fn budgets_parse() {
        assert_eq!(
            TokenBudget::parse("200000/d").unwrap(),
            TokenBudget {
                tokens: 200_000,
                window: Window::Day
            }
        );
        assert_eq!(TokenBudget::parse(" 5 / H ").unwrap().window, Window::Hour);
        assert_eq!(TokenBudget::parse("5/w").unwrap().window, Window::Week);
        assert_eq!(TokenBudget::parse("5/mo").unwrap().window, Window::Month);
        assert_eq!(TokenBudget::parse("5/month").unwrap().window, Window::Month);
        for bad in [
            "", "5", "0/d", "-1/d", "5/m", "5/2d", "x/d", "5/d/d", "1.5/d",
        ] {
            assert!(TokenBudget::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn config_is_off_by_default_and_errors_name_the_variable() {
        let get = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let lookup = get(&[]);
        assert_eq!(
            BudgetConfig::from_env(&Env::new(&lookup)).unwrap(),
            BudgetConfig::default()
        );
        let lookup = get(&[(VAR_BUDGET, "100/d"), (VAR_BUDGET_ANONYMOUS, "off")]);
        let config = BudgetConfig::from_env(&Env::new(&lookup)).unwrap();
        assert_eq!(config.for_caller(false, None).unwrap().tokens, 100);
        assert_eq!(config.for_caller(true, None), None);
        // A user's own budget (a JWT claim) replaces the configured one, in
        // its window; anonymous callers have none.
        assert_eq!(config.for_caller(false, Some(7)).unwrap().tokens, 7);
        assert_eq!(
            config.for_caller(false, Some(7)).unwrap().window,
            Window::Day
        );
        assert_eq!(config.for_caller(true, Some(7)), None);
        let off = BudgetConfig::default();
        assert_eq!(off.for_caller(false, Some(7)).unwrap().window, Window::Day);
        let lookup = get(&[(VAR_BUDGET_ANONYMOUS, "secret-value/d")]);
        let err = BudgetConfig::from_env(&Env::new(&lookup)).unwrap_err();
        assert_eq!(err.variable, VAR_BUDGET_ANONYMOUS);
        assert!(!err.to_string().contains("secret-value"));
    }

    #[test]
    fn windows_are_aligned_to_utc() {
        let now = at(2026, 11, 29, 21, 23, 11);
        assert_eq!(
            Window::Hour.bounds(now),
            (at(2026, 11, 29, 21, 0, 0), at(2026, 11, 29, 22, 0, 0))
        );
        assert_eq!(
            Window::Day.bounds(now),
            (at(2026, 11, 29, 0, 0, 0), at(2026, 11, 30, 0, 0, 0))
        );
        // 2026-11-29 is a Sunday: its ISO week began on Monday the 23rd.
        assert_eq!(
            Window::Week.bounds(now),
            (at(2026, 11, 23, 0, 0, 0), at(2026, 11, 30, 0, 0, 0))
        );
        assert_eq!(
            Window::Month.bounds(now),
            (at(2026, 11, 1, 0, 0, 0), at(2026, 12, 1, 0, 0, 0))
        );
        // December rolls into the next year; February 2028 has 29 days.
        assert_eq!(
            Window::Month.bounds(at(2026, 12, 31, 23, 59, 59)),
            (at(2026, 12, 1, 0, 0, 0), at(2027, 1, 1, 0, 0, 0))
        );
        assert_eq!(
            Window::Month.bounds(at(2028, 2, 15, 0, 0, 0)).1,
            at(2028, 3, 1, 0, 0, 0)
        );
        // The last second of a window is in it, the next is not.
        let end = Window::Day.bounds(now).1;
        assert_eq!(Window::Day.bounds(end - 1).1, end);
        assert_eq!(Window::Day.bounds(end).0, end);
        assert_eq!(
            Window::Month.boundaries_around(now),
            [
                at(2026, 10, 1, 0, 0, 0),
                at(2026, 11, 1, 0, 0, 0),
                at(2026, 12, 1, 0, 0, 0),
                at(2027, 1, 1, 0, 0, 0)
            ]
        );
        assert_eq!(rfc3339(at(2026, 11, 30, 0, 0, 0)), "2026-11-30T00:00:00Z");
        assert_eq!(rfc3339(at(2024, 2, 29, 13, 5, 9)), "2024-02-29T13:05:09Z");
        assert_eq!(duration_text(3 * 3600 + 12 * 60), "3h12m0s");
        assert_eq!(duration_text(61), "1m1s");
        assert_eq!(duration_text(5), "5s");
    }

    #[test]
    fn estimates_read_the_body_and_max_tokens() {
        let body = br#"{"model":"GigaChat","max_tokens":50,"messages":[]}"#;
        let estimate = Estimate::of(Endpoint::Chat, body);
        assert_eq!(estimate.output, 50);
        assert_eq!(estimate.input, (body.len() as u64).div_ceil(3));
        // Characters, not bytes: Cyrillic letters are two bytes each.
        let cyrillic = "{\"x\":\"привет\"}".as_bytes();
        assert_eq!(
            Estimate::of(Endpoint::Chat, cyrillic).input,
            14u64.div_ceil(3)
        );
        assert_eq!(
            Estimate::of(Endpoint::Chat, br#"{"messages":[]}"#).output,
            DEFAULT_OUTPUT_ESTIMATE
        );
        assert_eq!(
            Estimate::of(Endpoint::ChatV2, br#"{"model_options":{"max_tokens":7}}"#).output,
            7
        );
        // The last duplicated key wins, as at GigaChat.
        assert_eq!(
            Estimate::of(Endpoint::Chat, br#"{"max_tokens":1,"max_tokens":90000}"#).output,
            90_000
        );
        assert_eq!(
            Estimate::of(Endpoint::Embeddings, br#"{"input":["a"]}"#).output,
            0
        );
    }

    #[test]
    fn embeddings_usage_is_summed() {
        let json = br#"{"object":"list","data":[{"embedding":[0.1],"index":0,"usage":{"prompt_tokens":3}},{"embedding":[0.2],"index":1,"usage":{"prompt_tokens":4}}],"model":"Embeddings"}"#;
        assert_eq!(embeddings_usage(json).unwrap().prompt_tokens, 7);
    }

    fn estimate(input: u64, output: u64) -> Estimate {
        Estimate { input, output }
    }

    #[test]
    fn admission_reserves_clamps_then_refuses() {
        let fresh = Counters::default();
        assert_eq!(
            decide(1000, &fresh, estimate(100, 200)),
            Decision::Reserve {
                amount: 300,
                output: 200
            }
        );
        // 150 left: the output shrinks to what remains after the input.
        let counters = Counters {
            used: 700,
            reserved: 150,
            ..fresh
        };
        assert_eq!(
            decide(1000, &counters, estimate(100, 200)),
            Decision::Reserve {
                amount: 150,
                output: 50
            }
        );
        // Less left than the input: one token of output, still admitted.
        let counters = Counters { used: 950, ..fresh };
        assert_eq!(
            decide(1000, &counters, estimate(100, 200)),
            Decision::Reserve {
                amount: 101,
                output: 1
            }
        );
        // Reservations in flight count: nothing left is a refusal.
        let counters = Counters {
            used: 400,
            reserved: 600,
            ..fresh
        };
        assert_eq!(decide(1000, &counters, estimate(1, 1)), Decision::Refuse);
    }

    fn budget(tokens: u64) -> TokenBudget {
        TokenBudget {
            tokens,
            window: Window::Day,
        }
    }

    #[test]
    fn reserve_settle_refund_and_disconnect() {
        let memory = Arc::new(MemoryBudgets::default());
        let now = at(2026, 11, 29, 12, 0, 0);
        let reserve = |input, output| {
            let (decision, counters) =
                memory.reserve("u", budget(1000), estimate(input, output), now);
            let Decision::Reserve { amount, .. } = decision else {
                panic!("refused")
            };
            let info = BudgetInfo {
                limit: 1000,
                used: counters.used,
                reserved: counters.reserved,
                window: Window::Day,
                reset_at: 0,
                reset_secs: 0,
                variable: VAR_BUDGET,
            };
            Reservation::new(
                Store::Memory(Arc::clone(&memory)),
                "u".into(),
                counters.window_start,
                amount,
                input,
                info,
                None,
            )
        };
        let status = || memory.status("u", budget(1000), now);

        // Settle: the usage replaces the estimate.
        let mut first = reserve(100, 200);
        assert_eq!((status().used, status().reserved), (0, 300));
        let usage = Usage {
            prompt_tokens: 30,
            completion_tokens: 20,
        };
        let charged = first.settle(&Finish {
            status: 200,
            usage: Some(usage),
            sent_bytes: 999,
        });
        assert_eq!(charged, 50);
        drop(first);
        assert_eq!((status().used, status().reserved), (50, 0));

        // Refund: an upstream error bills nothing; so does a request that
        // failed before its answer (dropped unsettled).
        let mut refused = reserve(100, 200);
        assert_eq!(
            refused.settle(&Finish {
                status: 503,
                usage: None,
                sent_bytes: 40,
            }),
            0
        );
        drop(reserve(100, 200));
        assert_eq!((status().used, status().reserved), (50, 0));

        // Disconnect / broken stream: input plus what was streamed.
        let mut broken = reserve(100, 200);
        assert_eq!(
            broken.settle(&Finish {
                status: 200,
                usage: None,
                sent_bytes: 30,
            }),
            110
        );
        // Never less than the input, even with nothing streamed.
        let mut silent = reserve(100, 200);
        assert_eq!(
            silent.settle(&Finish {
                status: 200,
                usage: None,
                sent_bytes: 0,
            }),
            100
        );
        assert_eq!((status().used, status().reserved), (260, 0));
        // Settling twice charges once.
        silent.settle(&Finish {
            status: 200,
            usage: Some(usage),
            sent_bytes: 0,
        });
        assert_eq!(status().used, 260);
    }

    #[test]
    fn a_full_map_drops_ended_windows_then_the_smallest_spenders() {
        let mut map = HashMap::new();
        for i in 0..8u64 {
            let counters = Counters {
                window_start: if i < 2 { 0 } else { 100 },
                used: i,
                reserved: u64::from(i == 2),
            };
            map.insert(format!("u{i}"), counters);
        }
        evict(&mut map, 100, 6);
        // u0, u1: an ended window; then, six being over three quarters of
        // six, the smallest idle spenders (u3, u4, u5) until half is left;
        // u2 holds a reservation and stays.
        let mut left: Vec<_> = map.keys().cloned().collect();
        left.sort();
        assert_eq!(left, ["u2", "u6", "u7"]);
    }

    #[test]
    fn a_new_window_starts_from_zero_and_old_settlements_do_not_leak_into_it() {
        let memory = MemoryBudgets::default();
        let today = at(2026, 11, 29, 23, 59, 0);
        let tomorrow = at(2026, 11, 30, 0, 0, 1);
        let (decision, counters) = memory.reserve("u", budget(100), estimate(60, 40), today);
        assert!(matches!(decision, Decision::Reserve { amount: 100, .. }));
        assert_eq!(
            memory.reserve("u", budget(100), estimate(1, 1), today).0,
            Decision::Refuse
        );
        // Reset exactly at midnight UTC.
        let (decision, _) = memory.reserve("u", budget(100), estimate(10, 10), tomorrow);
        assert!(matches!(decision, Decision::Reserve { amount: 20, .. }));
        memory.settle("u", counters.window_start, 100, 100);
        let now = memory.status("u", budget(100), tomorrow);
        assert_eq!((now.used, now.reserved), (0, 20));
        // Another identity has its own counters.
        assert_eq!(memory.status("v", budget(100), tomorrow).reserved, 0);
    }
}
