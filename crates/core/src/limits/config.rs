//! The limits' settings, read once at start-up through the core's config.
//! (Where the limits are shared, Redis, is configured in `crate::redis`:
//! the cache and the shared token use the same one.)
//!
//! As everywhere in the proxy, an error names the variable and what is wrong
//! with it, never the value: any value may be a key pasted into the wrong
//! variable.

use std::time::Duration;

use crate::config::env::{self, ConfigError, Env};

/// Requests per window for identities that authenticated (API key, JWT,
/// session). Two a second sustained, with a burst of 120, is far more than a
/// person typing into a chat UI (retries and model-list fetches included) and
/// far less than a script draining the key's token package.
pub const DEFAULT_RATE: Rate = Rate {
    count: 120,
    window: Duration::from_secs(60),
};
/// Requests per window for identities that are only a client IP: anyone can
/// be anonymous, so the budget is a quarter of the authenticated one, yet
/// still enough for a few people behind one NAT to chat.
pub const DEFAULT_ANONYMOUS_RATE: Rate = Rate {
    count: 30,
    window: Duration::from_secs(60),
};
/// Concurrent SSE streams per identity: a chat UI needs one or two; 4 leaves
/// room for a second tab while staying under the 6 connections per host a
/// browser opens over HTTP/1.1, so a runaway page cannot hold them all.
pub const DEFAULT_MAX_STREAMS: u64 = 4;
/// GigaChat answers a personal-scope key (`GIGACHAT_API_PERS`) with 429 as
/// soon as a second request runs concurrently.
pub const DEFAULT_UPSTREAM_CONCURRENCY_PERSONAL: u64 = 1;
/// Company scopes (B2B, CORP) allow about 10 concurrent requests.
pub const DEFAULT_UPSTREAM_CONCURRENCY_COMPANY: u64 = 10;
/// Long enough to wait out a typical completion or two ahead in the queue,
/// short enough that the client gets a clear 503 well inside the platforms'
/// function time limits and a person's patience.
pub const DEFAULT_UPSTREAM_QUEUE_TIMEOUT: Duration = Duration::from_secs(20);
/// The variables, in the order they are listed in docs/configuration.md.
pub const VAR_RATE: &str = "GIGACHAT_PROXY_RATE_LIMIT";
pub const VAR_RATE_ANONYMOUS: &str = "GIGACHAT_PROXY_RATE_LIMIT_ANONYMOUS";
pub const VAR_MAX_STREAMS: &str = "GIGACHAT_PROXY_MAX_STREAMS";
pub const VAR_UPSTREAM_CONCURRENCY: &str = "GIGACHAT_PROXY_UPSTREAM_CONCURRENCY";
pub const VAR_UPSTREAM_QUEUE_TIMEOUT: &str = "GIGACHAT_PROXY_UPSTREAM_QUEUE_TIMEOUT";
/// `count` requests per `window`, enforced as a GCRA: one request is earned
/// back every `window / count`, and up to `count` may come at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u64,
    pub window: Duration,
}

/// The longest window accepted: a budget per year is not a rate limit.
const MAX_WINDOW: Duration = Duration::from_secs(366 * 24 * 3600);

impl Rate {
    /// The emission interval T = W / N in microseconds (the GCRA's unit,
    /// also in Redis); at least 1.
    pub(crate) fn emission_us(&self) -> u64 {
        let window_us = u64::try_from(self.window.as_micros()).unwrap_or(u64::MAX);
        (window_us / self.count.max(1)).max(1)
    }

    /// The burst tolerance N × T: how far ahead of now the theoretical
    /// arrival time may run while still admitting a request.
    pub(crate) fn tolerance_us(&self) -> u64 {
        self.emission_us().saturating_mul(self.count)
    }

    /// The window in whole seconds, for `RateLimit-Policy` (at least 1).
    pub(crate) fn window_secs(&self) -> u64 {
        self.window.as_secs_f64().ceil().max(1.0) as u64
    }

    /// Parses `N/UNIT` or `N/kUNIT` (`120/min`, `100/10s`, `1000/1h`).
    /// `off` is handled by the caller. The error text never repeats the value.
    pub fn parse(value: &str) -> Result<Rate, String> {
        const FORMAT: &str = "must be `off` or N/UNIT such as 120/min, 100/10s or 1000/1h (units: s, m or min, h, d)";
        let value = value.trim();
        let (count, per) = value.split_once('/').ok_or_else(|| FORMAT.to_owned())?;
        let count: u64 = count.trim().parse().map_err(|_| FORMAT.to_owned())?;
        if count == 0 {
            return Err("must allow at least 1 request per window (use `off` to disable)".into());
        }
        let per = per.trim().to_ascii_lowercase();
        let split = per
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| FORMAT.to_owned())?;
        let (multiple, unit) = per.split_at(split);
        let multiple: u64 = if multiple.is_empty() {
            1
        } else {
            multiple.parse().map_err(|_| FORMAT.to_owned())?
        };
        let unit_secs: u64 = match unit.trim() {
            "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "h" | "hr" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86_400,
            _ => return Err(FORMAT.into()),
        };
        if multiple == 0 {
            return Err("must have a window longer than zero".into());
        }
        let window = multiple
            .checked_mul(unit_secs)
            .map(Duration::from_secs)
            .filter(|window| *window <= MAX_WINDOW)
            .ok_or_else(|| "must have a window of at most 366 days".to_owned())?;
        let rate = Rate { count, window };
        if u128::from(count) > window.as_micros() {
            return Err("allows more than one request per microsecond".into());
        }
        Ok(rate)
    }
}

/// Every limit of the proxy, validated. `None` means the limit is off.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// Requests per window for an authenticated identity.
    pub rate: Option<Rate>,
    /// Requests per window for an identity that is only a client IP.
    pub anonymous_rate: Option<Rate>,
    /// Concurrent SSE streams per identity.
    pub max_streams: Option<u64>,
    /// Concurrent requests to GigaChat for the proxy's credential.
    pub upstream_concurrency: Option<u64>,
    /// How long a request may wait for an upstream slot.
    pub upstream_queue_timeout: Duration,
    /// Tokens per window per identity (see `budget`).
    pub budget: super::budget::BudgetConfig,
}

impl LimitsConfig {
    /// Reads the limit variables. `platform_is_local` is the local dev
    /// server, where the per-user limits are off by default (one developer,
    /// no strangers); `personal_scope` picks the upstream concurrency
    /// GigaChat allows.
    pub fn from_env(
        env: &Env<'_>,
        platform_is_local: bool,
        personal_scope: bool,
    ) -> Result<LimitsConfig, ConfigError> {
        let rate = parse_rate(env, VAR_RATE, (!platform_is_local).then_some(DEFAULT_RATE))?;
        let anonymous_rate = parse_rate(
            env,
            VAR_RATE_ANONYMOUS,
            (!platform_is_local).then_some(DEFAULT_ANONYMOUS_RATE),
        )?;
        let max_streams = parse_count(
            env,
            VAR_MAX_STREAMS,
            (!platform_is_local).then_some(DEFAULT_MAX_STREAMS),
        )?;
        let upstream_concurrency = parse_count(
            env,
            VAR_UPSTREAM_CONCURRENCY,
            Some(if personal_scope {
                DEFAULT_UPSTREAM_CONCURRENCY_PERSONAL
            } else {
                DEFAULT_UPSTREAM_CONCURRENCY_COMPANY
            }),
        )?;
        let upstream_queue_timeout = env
            .parse(VAR_UPSTREAM_QUEUE_TIMEOUT, |value| {
                env::seconds_from_zero(value, 3600)
            })?
            .unwrap_or(DEFAULT_UPSTREAM_QUEUE_TIMEOUT);
        Ok(LimitsConfig {
            rate,
            anonymous_rate,
            max_streams,
            upstream_concurrency,
            upstream_queue_timeout,
            budget: super::budget::BudgetConfig::from_env(env)?,
        })
    }

    /// Every limit off: what the limiter's tests (unit and against a real
    /// Redis) start from.
    pub fn disabled() -> LimitsConfig {
        LimitsConfig {
            rate: None,
            anonymous_rate: None,
            max_streams: None,
            upstream_concurrency: None,
            upstream_queue_timeout: DEFAULT_UPSTREAM_QUEUE_TIMEOUT,
            budget: super::budget::BudgetConfig {
                identified: None,
                anonymous: None,
            },
        }
    }
}

fn parse_rate(
    env: &Env<'_>,
    variable: &'static str,
    default: Option<Rate>,
) -> Result<Option<Rate>, ConfigError> {
    env.off_or(variable, default, Rate::parse)
}

fn parse_count(
    env: &Env<'_>,
    variable: &'static str,
    default: Option<u64>,
) -> Result<Option<u64>, ConfigError> {
    env.off_or(variable, default, |value| {
        env::count(value, 1..=1_000_000)
            .map_err(|_| "must be `off` or a whole number from 1 to 1000000".to_owned())
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::collections::HashMap;

    fn limits(
        vars: &[(&str, &str)],
        local: bool,
        personal: bool,
    ) -> Result<LimitsConfig, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        LimitsConfig::from_env(&Env::new(&|name| map.get(name).cloned()), local, personal)
    }

    fn rate(count: u64, secs: u64) -> Rate {
        Rate {
            count,
            window: Duration::from_secs(secs),
        }
    }

    #[test]
    fn rate_strings_parse() {
        assert_eq!(Rate::parse("120/min").unwrap(), rate(120, 60));
        assert_eq!(Rate::parse("100/10s").unwrap(), rate(100, 10));
        assert_eq!(Rate::parse("1000/1h").unwrap(), rate(1000, 3600));
        assert_eq!(Rate::parse(" 5 / second ").unwrap(), rate(5, 1));
        assert_eq!(Rate::parse("5/sec").unwrap(), rate(5, 1));
        assert_eq!(Rate::parse("5/s").unwrap(), rate(5, 1));
        assert_eq!(Rate::parse("7/m").unwrap(), rate(7, 60));
        assert_eq!(Rate::parse("7/minute").unwrap(), rate(7, 60));
        assert_eq!(Rate::parse("7/H").unwrap(), rate(7, 3600));
        assert_eq!(Rate::parse("7/hour").unwrap(), rate(7, 3600));
        assert_eq!(Rate::parse("10000/d").unwrap(), rate(10_000, 86_400));
        assert_eq!(Rate::parse("10000/2day").unwrap(), rate(10_000, 172_800));
        for bad in [
            "",
            "120",
            "/min",
            "x/min",
            "-1/min",
            "0/min",
            "10/0s",
            "10/",
            "10/10",
            "10/fortnight",
            "10/1.5h",
            "1.5/min",
            "10/400d",
            "2000000/1s",
            "10/min/extra",
        ] {
            assert!(Rate::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn gcra_parameters() {
        let r = rate(120, 60);
        assert_eq!(r.emission_us(), 500_000);
        assert_eq!(r.tolerance_us(), 60_000_000);
        assert_eq!(r.window_secs(), 60);
        // 7/min does not divide evenly: the burst stays exactly 7.
        let r = rate(7, 60);
        assert_eq!(r.tolerance_us() / r.emission_us(), 7);
    }

    #[test]
    fn defaults_depend_on_platform_and_scope() {
        let deployed = limits(&[], false, true).unwrap();
        assert_eq!(deployed.rate, Some(DEFAULT_RATE));
        assert_eq!(deployed.anonymous_rate, Some(DEFAULT_ANONYMOUS_RATE));
        assert_eq!(deployed.max_streams, Some(4));
        assert_eq!(deployed.upstream_concurrency, Some(1));
        assert_eq!(deployed.upstream_queue_timeout, Duration::from_secs(20));

        let local = limits(&[], true, false).unwrap();
        assert_eq!(local.rate, None);
        assert_eq!(local.anonymous_rate, None);
        assert_eq!(local.max_streams, None);
        assert_eq!(local.upstream_concurrency, Some(10));
    }

    #[test]
    fn off_and_explicit_values() {
        let config = limits(
            &[
                (VAR_RATE, "OFF"),
                (VAR_RATE_ANONYMOUS, "10/10s"),
                (VAR_MAX_STREAMS, "off"),
                (VAR_UPSTREAM_CONCURRENCY, "3"),
                (VAR_UPSTREAM_QUEUE_TIMEOUT, "2.5"),
            ],
            false,
            true,
        )
        .unwrap();
        assert_eq!(config.rate, None);
        assert_eq!(config.anonymous_rate, Some(rate(10, 10)));
        assert_eq!(config.max_streams, None);
        assert_eq!(config.upstream_concurrency, Some(3));
        assert_eq!(config.upstream_queue_timeout, Duration::from_millis(2500));
        let config = limits(&[(VAR_UPSTREAM_CONCURRENCY, "off")], false, true).unwrap();
        assert_eq!(config.upstream_concurrency, None);
        let config = limits(&[(VAR_RATE, "5/min")], true, true).unwrap();
        assert_eq!(config.rate, Some(rate(5, 60)));
    }

    #[test]
    fn errors_name_the_variable_never_the_value() {
        let cases = [
            (VAR_RATE, "secret-value-123"),
            (VAR_RATE, "1/secret-value-123"),
            (VAR_RATE_ANONYMOUS, "secret-value-123/min"),
            (VAR_MAX_STREAMS, "secret-value-123"),
            (VAR_MAX_STREAMS, "0"),
            (VAR_UPSTREAM_CONCURRENCY, "secret-value-123"),
            (VAR_UPSTREAM_QUEUE_TIMEOUT, "secret-value-123"),
            (VAR_UPSTREAM_QUEUE_TIMEOUT, "-1"),
        ];
        for (variable, value) in cases {
            let vars = vec![(variable, value)];
            let err = limits(&vars, false, true).unwrap_err();
            assert_eq!(err.variable, variable, "{err}");
            assert!(!err.to_string().contains("secret-value-123"), "{err}");
            assert!(err.to_string().starts_with(variable), "{err}");
        }
    }
}
