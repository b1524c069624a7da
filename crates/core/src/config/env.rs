//! The reader every configuration variable goes through, and the parsers
//! the features share, so a boolean, a duration or a count is spelled the
//! same way in every variable and a bad value gets the same kind of error.
//!
//! This module imports nothing from the rest of the crate: every feature
//! parses its own variables next to its code, through [`Env`], without
//! depending on the configuration that assembles them.
//!
//! Errors name the variable and what is wrong with it, never the value: the
//! value may be a key pasted into the wrong variable.

use std::fmt::Display;
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::Duration;

use reqwest::Url;

/// Where the proxy runs; it picks defaults that fit the platform's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    Vercel,
    Lambda,
    /// The local server on a developer's machine (or a trusted network):
    /// open defaults, so `cargo run` just works.
    Local,
    /// The same server in a container image on a public host (Railway,
    /// Render, a VPS): a deployment like the serverless ones — rate limits,
    /// ownership, the public-page policy and same-origin CORS by default —
    /// since the image does not know who will reach it.
    Container,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Vercel => "vercel",
            Platform::Lambda => "lambda",
            Platform::Local => "local",
            Platform::Container => "container",
        }
    }

    /// Vercel rejects request bodies over 4.5 MB and Lambda payloads over
    /// 6 MB before our code runs; failing at the same size with a clear 413
    /// beats the platform's opaque error. Locally there is no platform limit,
    /// but an unbounded body is a memory hazard, so the default still caps it.
    pub fn default_max_body_bytes(self) -> usize {
        match self {
            Platform::Vercel => 4_500_000,
            Platform::Lambda => 6_000_000,
            Platform::Local | Platform::Container => 10 * 1024 * 1024,
        }
    }
}

/// A configuration problem, named by its variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable} {problem}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub problem: String,
}

impl ConfigError {
    pub fn new(variable: &'static str, problem: impl Into<String>) -> Self {
        Self {
            variable,
            problem: problem.into(),
        }
    }
}

/// The configuration variables, read through a lookup function so tests
/// need not touch the process environment (which concurrently running
/// tests share). Blank values count as unset everywhere.
#[derive(Clone, Copy)]
pub struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

fn process_variable(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl<'a> Env<'a> {
    pub fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self { lookup }
    }

    /// The process environment; a value that is not UTF-8 counts as unset.
    pub fn process() -> Env<'static> {
        Env {
            lookup: &process_variable,
        }
    }

    /// The value as set (not trimmed: a secret keeps its spaces), or `None`
    /// when unset or blank.
    pub fn get(&self, name: &'static str) -> Option<String> {
        (self.lookup)(name).filter(|value| !value.trim().is_empty())
    }

    /// The first of `names` that is set, with the name it came from.
    pub fn first(&self, names: &[&'static str]) -> Option<(&'static str, String)> {
        names
            .iter()
            .find_map(|&name| self.get(name).map(|value| (name, value)))
    }

    /// The trimmed value through `parse`, whose error (a problem such as
    /// "must be …") is named by the variable; `None` when unset.
    pub fn parse<T>(
        &self,
        name: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        self.get(name)
            .map(|value| parse(value.trim()).map_err(|problem| ConfigError::new(name, problem)))
            .transpose()
    }

    /// A setting that `off` (any case) turns off: `None` when off, `default`
    /// when unset, else the value through `parse`.
    pub fn off_or<T>(
        &self,
        name: &'static str,
        default: Option<T>,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(value) if is_off(&value) => Ok(None),
            Some(value) => parse(value.trim())
                .map(Some)
                .map_err(|problem| ConfigError::new(name, problem)),
        }
    }

    /// A switch in the spellings people type: `true`/`false`, `1`/`0`,
    /// `yes`/`no`, `on`/`off`, in any case.
    pub fn bool(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        self.parse(name, |value| {
            parse_bool(value).ok_or_else(|| {
                format!("must be true or false (also 1/0, yes/no, on/off; default {default})")
            })
        })
        .map(|value| value.unwrap_or(default))
    }

    /// A positive number of seconds, decimals allowed, at most `max`.
    pub fn seconds(&self, name: &'static str, max: u32) -> Result<Option<Duration>, ConfigError> {
        self.parse(name, |value| positive_seconds(value, max))
    }

    /// A whole number within `range`.
    pub fn count<T>(
        &self,
        name: &'static str,
        range: RangeInclusive<T>,
    ) -> Result<Option<T>, ConfigError>
    where
        T: FromStr + PartialOrd + Display,
    {
        self.parse(name, |value| count(value, range))
    }

    /// An absolute `http://` or `https://` URL with a host.
    pub fn url(&self, name: &'static str) -> Result<Option<Url>, ConfigError> {
        self.parse(name, http_url)
    }
}

/// `off`, any case, surrounding spaces allowed.
fn is_off(value: &str) -> bool {
    value.trim().eq_ignore_ascii_case("off")
}

/// `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`, any case.
fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// More than zero and at most `max` seconds, decimals allowed.
pub fn positive_seconds(value: &str, max: u32) -> Result<Duration, String> {
    match value.trim().parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds > 0.0 && seconds <= f64::from(max) => {
            Ok(Duration::from_secs_f64(seconds))
        }
        _ => Err(format!(
            "must be a positive number of seconds (at most {max})"
        )),
    }
}

/// From zero to `max` seconds, decimals allowed.
pub fn seconds_from_zero(value: &str, max: u32) -> Result<Duration, String> {
    match value.trim().parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && (0.0..=f64::from(max)).contains(&seconds) => {
            Ok(Duration::from_secs_f64(seconds))
        }
        _ => Err(format!(
            "must be a number of seconds from 0 to {max} (decimals allowed)"
        )),
    }
}

/// A whole number within `range`.
pub fn count<T>(value: &str, range: RangeInclusive<T>) -> Result<T, String>
where
    T: FromStr + PartialOrd + Display,
{
    whole(value, range, "a whole number")
}

/// A whole number of milliseconds within `range`.
pub fn millis(value: &str, range: RangeInclusive<u64>) -> Result<Duration, String> {
    whole(value, range, "a whole number of milliseconds").map(Duration::from_millis)
}

/// A whole number of seconds within `range`.
pub fn whole_seconds(value: &str, range: RangeInclusive<u64>) -> Result<Duration, String> {
    whole(value, range, "a whole number of seconds").map(Duration::from_secs)
}

fn whole<T>(value: &str, range: RangeInclusive<T>, what: &str) -> Result<T, String>
where
    T: FromStr + PartialOrd + Display,
{
    value
        .trim()
        .parse::<T>()
        .ok()
        .filter(|number| range.contains(number))
        .ok_or_else(|| format!("must be {what} from {} to {}", range.start(), range.end()))
}

/// An absolute `http://` or `https://` URL with a host.
pub fn http_url(value: &str) -> Result<Url, String> {
    let url = Url::parse(value.trim()).map_err(|_| "is not a valid absolute URL".to_owned())?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err("must be an http:// or https:// URL".into());
    }
    if url.host_str().is_none() {
        return Err("has no host".into());
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn env(value: &'static str) -> impl Fn(&str) -> Option<String> {
        move |name| (name == "X").then(|| value.to_owned())
    }

    #[test]
    fn booleans_have_one_spelling_set_in_any_case() {
        for on in [
            "true", "TRUE", "True", "1", "yes", "YES", "on", "On", " true ",
        ] {
            let lookup = env(on);
            assert!(Env::new(&lookup).bool("X", false).unwrap(), "{on:?}");
        }
        for off in ["false", "FALSE", "0", "no", "No", "off", "OFF", " false "] {
            let lookup = env(off);
            assert!(!Env::new(&lookup).bool("X", true).unwrap(), "{off:?}");
        }
        for bad in ["t", "y", "f", "n", "enable", "secret-value-123", "2"] {
            let lookup = env(bad);
            let err = Env::new(&lookup).bool("X", true).unwrap_err();
            assert_eq!(err.variable, "X");
            assert!(err.problem.contains("true or false"), "{err}");
            assert!(!err.to_string().contains("secret-value-123"), "{err}");
        }
        let blank = env("  ");
        assert!(Env::new(&blank).bool("X", true).unwrap(), "blank is unset");
        assert!(!Env::new(&|_| None).bool("X", false).unwrap());
    }

    #[test]
    fn seconds_counts_and_off() {
        let lookup = env("2.5");
        let env_ = Env::new(&lookup);
        assert_eq!(
            env_.seconds("X", 10).unwrap(),
            Some(Duration::from_millis(2500))
        );
        assert!(env_.count::<u64>("X", 1..=10).is_err());
        assert!(env_.seconds("X", 2).is_err());
        for bad in ["0", "-1", "NaN", "inf", "soon"] {
            let lookup = env(bad);
            assert!(Env::new(&lookup).seconds("X", 10).is_err(), "{bad}");
        }
        assert_eq!(seconds_from_zero("0", 60).unwrap(), Duration::ZERO);
        assert!(seconds_from_zero("61", 60).is_err());

        let lookup = env(" 7 ");
        assert_eq!(Env::new(&lookup).count("X", 1..=10u64).unwrap(), Some(7));
        assert_eq!(
            count("11", 1..=10u64).unwrap_err(),
            "must be a whole number from 1 to 10"
        );
        assert_eq!(millis("250", 1..=1000).unwrap(), Duration::from_millis(250));
        assert_eq!(whole_seconds("5", 1..=10).unwrap(), Duration::from_secs(5));

        let lookup = env("OFF");
        let env_ = Env::new(&lookup);
        assert_eq!(
            env_.off_or("X", Some(3), |v| count(v, 1..=9u64)).unwrap(),
            None
        );
        assert_eq!(
            Env::new(&|_| None)
                .off_or("X", Some(3), |v| count(v, 1..=9u64))
                .unwrap(),
            Some(3)
        );
    }

    #[test]
    fn urls_and_first_of_several() {
        assert!(http_url("https://example.com/v1").is_ok());
        assert!(http_url("ftp://example.com").is_err());
        assert!(http_url("not a url").is_err());
        let lookup = |name: &str| match name {
            "B" => Some("b".to_owned()),
            "C" => Some("c".to_owned()),
            "A" => Some(" ".to_owned()),
            _ => None,
        };
        assert_eq!(
            Env::new(&lookup).first(&["A", "B", "C"]),
            Some(("B", "b".to_owned()))
        );
    }
}
