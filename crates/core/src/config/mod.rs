//! Configuration, read once at start-up from the environment.
//!
//! Variable names follow the official GigaChat SDKs (`GIGACHAT_*`), so a team
//! can move its settings from a Python or JS backend unchanged; settings that
//! only the proxy has use the `GIGACHAT_PROXY_*` prefix. Errors name the
//! variable and what is wrong with it, never the value: the value may be a
//! key pasted into the wrong variable.
//!
//! This module assembles the settings; each feature reads its own variables
//! next to its code ([`crate::cors::CorsConfig`], [`crate::access`],
//! [`crate::limits`], [`crate::cache`], [`crate::redis`],
//! [`crate::upstream::tls`]) through the one reader in [`env`], which
//! imports nothing from the crate, so no feature depends on this module.
//! A new variable goes next to the code that uses it, read through [`Env`];
//! only settings of the GigaChat connection itself are read here.

#[cfg(test)]
mod documented;
pub(crate) mod env;

use std::time::Duration;

use reqwest::Url;

use crate::secret::Secret;

pub use env::{ConfigError, Env, Platform};

pub const DEFAULT_AUTH_URL: &str = "https://ngw.devices.sberbank.ru:9443/api/v2/oauth";
/// The official SDK's default since 0.2.3 (the host migration of July 2026).
pub const DEFAULT_BASE_URL: &str = "https://api.giga.chat/v1";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(15 * 60);
/// The SDK's `token_expiry_buffer_ms`: refresh this long before expiry.
pub const DEFAULT_TOKEN_EXPIRY_BUFFER: Duration = Duration::from_secs(60);
/// Time to receive a whole request body: a 10 MiB upload (the local body
/// limit) needs about 1.4 Mbit/s, and a client trickling a body a byte at a
/// time cannot hold a connection and its buffer longer than this.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// The OAuth scope of the authorization key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Personal,
    B2b,
    Corporate,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Personal => "GIGACHAT_API_PERS",
            Scope::B2b => "GIGACHAT_API_B2B",
            Scope::Corporate => "GIGACHAT_API_CORP",
        }
    }

    fn parse(value: &str) -> Option<Self> {
        match value.trim() {
            "GIGACHAT_API_PERS" => Some(Scope::Personal),
            "GIGACHAT_API_B2B" => Some(Scope::B2b),
            "GIGACHAT_API_CORP" => Some(Scope::Corporate),
            _ => None,
        }
    }
}

/// What the proxy talks to; reported by the health route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamKind {
    /// Sber's hosts.
    GigaChat,
    /// The built-in emulator, started by the local server.
    Emulator,
    /// Any other host (a self-hosted emulator, a corporate gateway).
    Custom,
}

impl UpstreamKind {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamKind::GigaChat => "gigachat",
            UpstreamKind::Emulator => "emulator",
            UpstreamKind::Custom => "custom",
        }
    }
}

/// Everything the core needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) platform: Platform,
    /// The Studio "authorization key": already base64(client_id:client_secret).
    pub(crate) credentials: Secret<String>,
    pub scope: Scope,
    pub(crate) auth_url: Url,
    pub base_url: Url,
    pub upstream_kind: UpstreamKind,
    /// Time to the response headers, retries included (`GIGACHAT_TIMEOUT`).
    pub(crate) timeout: Duration,
    pub(crate) connect_timeout: Duration,
    /// The longest silence allowed between two chunks of a stream.
    pub(crate) stream_idle_timeout: Duration,
    /// The longest a whole answer may take, stream included.
    pub(crate) total_timeout: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) token_expiry_buffer: Duration,
    pub(crate) max_body_bytes: usize,
    /// The longest a request body may take to arrive, from the first read
    /// to its end (`GIGACHAT_PROXY_BODY_TIMEOUT`).
    pub(crate) body_timeout: Duration,
    /// Signs the proxy's own session tokens (`/api/gigachat-oauth`).
    pub(crate) session_secret: Secret<Vec<u8>>,
    pub(crate) session_ttl: Duration,
    /// Which web pages may call (see `cors`).
    pub(crate) cors: crate::cors::CorsConfig,
    /// Who may call (see `access`).
    pub(crate) access: crate::access::AccessConfig,
    /// How much they may call (see `limits`).
    pub(crate) limits: crate::limits::config::LimitsConfig,
    /// Which answers are kept, and for how long (see `cache`).
    pub(crate) cache: crate::cache::config::CacheConfig,
    /// Whose GigaChat objects are whose (see `tenancy::ownership`).
    pub(crate) ownership: crate::tenancy::ownership::OwnershipConfig,
    /// What a public page may call (see `tenancy::policy`).
    pub(crate) policy: crate::tenancy::policy::PolicyConfig,
    /// Which GigaChat model an OpenAI-dialect request gets (see `openai`).
    pub(crate) openai: crate::openai::config::OpenAiConfig,
    /// The `useChat` route's own settings: its system prompt (see `ai_sdk`).
    pub(crate) ui_chat: crate::ai_sdk::config::UiChatConfig,
    /// The Redis the limits, the cache and the shared token use; `None`
    /// keeps all of them in this instance's memory (see `redis`).
    pub(crate) redis: Option<crate::redis::RedisConfig>,
    /// Which GigaChat credential this is, for keys in a Redis that several
    /// deployments may share (the upstream guard, the cache, the shared
    /// token): a short one-way fingerprint, never the key.
    pub(crate) credential_id: String,
    /// Trust and identity for GigaChat's TLS (see `upstream::tls`).
    pub(crate) tls: crate::upstream::tls::TlsConfig,
}

/// Which upstream failures are tried again, and how patiently. Names and
/// defaults follow the Python SDK (`GIGACHAT_MAX_RETRIES`…), except that the
/// proxy retries twice by default where the SDK does not retry: a browser
/// cannot retry on the proxy's behalf without spending the user's time.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub max_retries: u32,
    /// Delay before retry n (0-based) is `factor · 2ⁿ` plus up to 50% jitter.
    pub backoff_factor: Duration,
    pub on_status: Vec<u16>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 2,
            backoff_factor: Duration::from_millis(500),
            on_status: vec![429, 500, 502, 503, 504],
        }
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env(platform: Platform) -> Result<Self, ConfigError> {
        Self::read(platform, &Env::process())
    }

    /// Reads settings through `lookup`, so tests need not touch the process
    /// environment (which is shared between concurrently running tests).
    pub fn from_lookup(
        platform: Platform,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        Self::read(platform, &Env::new(&lookup))
    }

    fn read(platform: Platform, env: &Env<'_>) -> Result<Self, ConfigError> {
        let credentials = env.get("GIGACHAT_CREDENTIALS").ok_or_else(|| {
            ConfigError::new(
                "GIGACHAT_CREDENTIALS",
                "is not set: put the authorization key from GigaChat Studio (base64 of client_id:client_secret) in it",
            )
        })?;
        let credentials = credentials.trim().to_owned();
        if !looks_like_base64(&credentials) {
            return Err(ConfigError::new(
                "GIGACHAT_CREDENTIALS",
                "is not base64: use the ready authorization key from GigaChat Studio, not the client secret",
            ));
        }

        let scope = env
            .parse("GIGACHAT_SCOPE", |value| {
                Scope::parse(value).ok_or_else(|| {
                    "must be GIGACHAT_API_PERS, GIGACHAT_API_B2B or GIGACHAT_API_CORP".to_owned()
                })
            })?
            .unwrap_or(Scope::Personal);

        let auth_url = upstream_url(env, "GIGACHAT_AUTH_URL", DEFAULT_AUTH_URL)?;
        let base_url = upstream_url(env, "GIGACHAT_BASE_URL", DEFAULT_BASE_URL)?;
        if base_url.query().is_some() || base_url.fragment().is_some() {
            return Err(ConfigError::new(
                "GIGACHAT_BASE_URL",
                "must not have a query or fragment",
            ));
        }

        let timeout = env
            .seconds("GIGACHAT_TIMEOUT", MAX_TIMEOUT_SECS)?
            .unwrap_or(DEFAULT_TIMEOUT);
        let connect_timeout = env
            .seconds("GIGACHAT_PROXY_CONNECT_TIMEOUT", MAX_TIMEOUT_SECS)?
            .unwrap_or_else(|| timeout.min(Duration::from_secs(10)));
        let stream_idle_timeout = env
            .seconds("GIGACHAT_PROXY_STREAM_IDLE_TIMEOUT", MAX_TIMEOUT_SECS)?
            .unwrap_or(timeout);
        let total_timeout = env
            .seconds("GIGACHAT_PROXY_TOTAL_TIMEOUT", MAX_TIMEOUT_SECS)?
            // Vercel's and our Lambda template's function limit.
            .unwrap_or(Duration::from_secs(300));
        let retry = parse_retry(env)?;
        let token_expiry_buffer = env
            .parse("GIGACHAT_TOKEN_EXPIRY_BUFFER_MS", |value| {
                env::millis(value, 0..=u64::MAX)
                    .map_err(|_| "must be a whole number of milliseconds".to_owned())
            })?
            .unwrap_or(DEFAULT_TOKEN_EXPIRY_BUFFER);
        let max_body_bytes = env
            .parse("GIGACHAT_PROXY_MAX_BODY_BYTES", |value| {
                env::count(value, 1..=usize::MAX)
                    .map_err(|_| "must be a positive whole number of bytes".to_owned())
            })?
            .unwrap_or_else(|| platform.default_max_body_bytes());
        let body_timeout = env
            .seconds("GIGACHAT_PROXY_BODY_TIMEOUT", MAX_TIMEOUT_SECS)?
            .unwrap_or(DEFAULT_BODY_TIMEOUT);
        let session_ttl = env
            .seconds("GIGACHAT_PROXY_SESSION_TTL", MAX_TIMEOUT_SECS)?
            .unwrap_or(DEFAULT_SESSION_TTL);
        let session_secret = match env.get("GIGACHAT_PROXY_SESSION_SECRET") {
            Some(secret) if secret.len() < 32 => {
                return Err(ConfigError::new(
                    "GIGACHAT_PROXY_SESSION_SECRET",
                    "is shorter than 32 characters: use a long random string (e.g. `openssl rand -hex 32`)",
                ));
            }
            Some(secret) => secret.into_bytes(),
            // Derived, not random: every warm instance of a serverless
            // deployment must accept the tokens the others minted.
            None => crate::session::derive_secret(&credentials),
        };

        let cors = crate::cors::CorsConfig::from_env(env, platform == Platform::Local)?;
        let access = crate::access::AccessConfig::from_env(env)?;
        let limits = crate::limits::config::LimitsConfig::from_env(
            env,
            platform == Platform::Local,
            scope == Scope::Personal,
        )?;
        let redis = crate::redis::RedisConfig::from_env(env)?;
        let cache = crate::cache::config::CacheConfig::from_env(env)?;
        let ownership =
            crate::tenancy::ownership::OwnershipConfig::from_env(env, platform, &access)?;
        let policy = crate::tenancy::policy::PolicyConfig::from_env(env, platform)?;
        let openai = crate::openai::config::OpenAiConfig::from_env(env)?;
        let ui_chat = crate::ai_sdk::config::UiChatConfig::from_env(env)?;

        let tls = crate::upstream::tls::TlsConfig::from_env(env)?;

        let upstream_kind = classify_upstream(&base_url);
        Ok(Config {
            platform,
            credential_id: credential_fingerprint(&credentials),
            credentials: Secret::new(credentials),
            scope,
            auth_url,
            base_url,
            upstream_kind,
            timeout,
            connect_timeout,
            stream_idle_timeout,
            total_timeout,
            retry,
            token_expiry_buffer,
            max_body_bytes,
            body_timeout,
            session_secret: Secret::new(session_secret),
            session_ttl,
            cors,
            access,
            limits,
            cache,
            ownership,
            policy,
            openai,
            ui_chat,
            redis,
            tls,
        })
    }
}

/// The longest any of the proxy's timeouts may be set to: a day.
const MAX_TIMEOUT_SECS: u32 = 86_400;

/// A GigaChat URL: `default` when unset, and never with credentials in it
/// (they would be logged with it; the key belongs in its own variable).
fn upstream_url(env: &Env<'_>, variable: &'static str, default: &str) -> Result<Url, ConfigError> {
    let url = match env.url(variable)? {
        Some(url) => url,
        None => env::http_url(default).map_err(|problem| ConfigError::new(variable, problem))?,
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::new(
            variable,
            "must not carry credentials in the URL: use GIGACHAT_CREDENTIALS",
        ));
    }
    Ok(url)
}

fn parse_retry(env: &Env<'_>) -> Result<RetryPolicy, ConfigError> {
    let defaults = RetryPolicy::default();
    let max_retries = env
        .count("GIGACHAT_MAX_RETRIES", 0..=10)?
        .unwrap_or(defaults.max_retries);
    let backoff_factor = env
        .parse("GIGACHAT_RETRY_BACKOFF_FACTOR", |value| {
            env::seconds_from_zero(value, 60)
        })?
        .unwrap_or(defaults.backoff_factor);
    let on_status = env
        .parse("GIGACHAT_RETRY_ON_STATUS_CODES", |value| {
            value
                .split(',')
                .map(|code| code.trim().trim_matches(|c| c == '(' || c == ')'))
                .filter(|code| !code.is_empty())
                .map(|code| code.parse::<u16>().ok().filter(|c| (400..600).contains(c)))
                .collect::<Option<Vec<u16>>>()
                .ok_or_else(|| {
                    "must be a comma-separated list of HTTP status codes from 400 to 599".to_owned()
                })
        })?
        .unwrap_or(defaults.on_status);
    Ok(RetryPolicy {
        max_retries,
        backoff_factor,
        on_status,
    })
}

fn looks_like_base64(value: &str) -> bool {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(value)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(value))
        .is_ok()
}

/// A short one-way fingerprint of the authorization key: 16 hex digits of
/// a domain-separated SHA-256, so keys in a shared Redis tell deployments
/// apart without revealing (or allowing a search for) the key.
fn credential_fingerprint(credentials: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"gigachat-proxy upstream guard\0")
        .chain_update(credentials.trim().as_bytes())
        .finalize();
    digest[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn classify_upstream(base_url: &Url) -> UpstreamKind {
    let host = base_url.host_str().unwrap_or_default();
    if host == "giga.chat"
        || host.ends_with(".giga.chat")
        || host.ends_with(".sberbank.ru")
        || host.ends_with(".sber.ru")
    {
        UpstreamKind::GigaChat
    } else {
        UpstreamKind::Custom
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::collections::HashMap;

    const KEY: &str = "Y2xpZW50LWlkOmNsaWVudC1zZWNyZXQ="; // client-id:client-secret

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(Platform::Vercel, |name| map.get(name).cloned())
    }

    #[test]
    fn defaults_follow_the_official_sdk() {
        let config = config(&[("GIGACHAT_CREDENTIALS", KEY)]).unwrap();
        assert_eq!(config.scope, Scope::Personal);
        assert_eq!(config.auth_url.as_str(), DEFAULT_AUTH_URL);
        assert_eq!(config.base_url.as_str(), DEFAULT_BASE_URL);
        assert_eq!(config.timeout, Duration::from_secs(30));
        assert_eq!(config.max_body_bytes, 4_500_000);
        assert_eq!(config.body_timeout, DEFAULT_BODY_TIMEOUT);
        assert_eq!(config.upstream_kind, UpstreamKind::GigaChat);
    }

    #[test]
    fn missing_credentials_name_the_variable() {
        let err = config(&[]).unwrap_err();
        assert_eq!(err.variable, "GIGACHAT_CREDENTIALS");
        assert!(
            err.to_string()
                .starts_with("GIGACHAT_CREDENTIALS is not set")
        );
    }

    #[test]
    fn errors_never_contain_the_value() {
        let bad_values = [
            ("GIGACHAT_CREDENTIALS", "not base64 !!! secret-value-123"),
            ("GIGACHAT_SCOPE", "secret-value-123"),
            ("GIGACHAT_BASE_URL", "secret-value-123"),
            ("GIGACHAT_AUTH_URL", "ftp://secret-value-123"),
            ("GIGACHAT_TIMEOUT", "secret-value-123"),
            ("GIGACHAT_PROXY_MAX_BODY_BYTES", "secret-value-123"),
            ("GIGACHAT_PROXY_BODY_TIMEOUT", "secret-value-123"),
            ("GIGACHAT_PROXY_SESSION_SECRET", "secret-value-123"),
            ("GIGACHAT_BASE_URL", "https://user:secret-value-123@host/v1"),
        ];
        for (variable, value) in bad_values {
            let mut vars = vec![("GIGACHAT_CREDENTIALS", KEY)];
            vars.push((variable, value));
            let err = config(&vars).unwrap_err();
            assert_eq!(err.variable, variable, "{err}");
            assert!(!err.to_string().contains("secret-value-123"), "{err}");
        }
    }

    #[test]
    fn http_urls_are_accepted_for_the_emulator() {
        let config = config(&[
            ("GIGACHAT_CREDENTIALS", KEY),
            ("GIGACHAT_BASE_URL", "http://127.0.0.1:8090/api/v1"),
            ("GIGACHAT_AUTH_URL", "http://127.0.0.1:8090/api/v2/oauth"),
            ("GIGACHAT_SCOPE", "GIGACHAT_API_CORP"),
            ("GIGACHAT_TIMEOUT", "2.5"),
        ])
        .unwrap();
        assert_eq!(config.upstream_kind, UpstreamKind::Custom);
        assert_eq!(config.scope, Scope::Corporate);
        assert_eq!(config.timeout, Duration::from_millis(2500));
    }

    #[test]
    fn session_secret_is_stable_across_instances_but_differs_per_key() {
        let a = config(&[("GIGACHAT_CREDENTIALS", KEY)]).unwrap();
        let b = config(&[("GIGACHAT_CREDENTIALS", KEY)]).unwrap();
        let c = config(&[("GIGACHAT_CREDENTIALS", "b3RoZXI6a2V5")]).unwrap();
        assert_eq!(a.session_secret, b.session_secret);
        assert_ne!(a.session_secret, c.session_secret);
        assert_ne!(a.session_secret.expose().as_slice(), KEY.as_bytes());
    }

    /// DNS rebinding: the local server on loopback answers only
    /// to names a page cannot re-point; deployments and a server listening
    /// on every interface go by the names they are reached under.
    #[test]
    fn only_a_loopback_local_server_checks_host_names() {
        use crate::cors::AllowedHosts;
        let hosts = |platform: Platform, host: Option<&str>| {
            Config::from_lookup(platform, |name| match name {
                "GIGACHAT_CREDENTIALS" => Some(KEY.into()),
                "HOST" => host.map(str::to_owned),
                _ => None,
            })
            .unwrap()
            .cors
            .hosts
        };
        let loopback_only = AllowedHosts::Listed(Vec::new());
        assert_eq!(hosts(Platform::Local, None), loopback_only);
        assert_eq!(hosts(Platform::Local, Some(" ")), loopback_only);
        assert_eq!(hosts(Platform::Local, Some("0.0.0.0")), AllowedHosts::Any);
        assert_eq!(hosts(Platform::Vercel, None), AllowedHosts::Any);
        assert_eq!(
            hosts(Platform::Lambda, Some("127.0.0.1")),
            AllowedHosts::Any
        );
    }

    #[test]
    fn credential_fingerprint_is_short_stable_and_one_way() {
        let a = credential_fingerprint("Y2xpZW50OnNlY3JldA==");
        assert_eq!(a, credential_fingerprint("Y2xpZW50OnNlY3JldA=="));
        assert_ne!(a, credential_fingerprint("b3RoZXI6a2V5"));
        assert_eq!(a.len(), 16);
        let config = config(&[("GIGACHAT_CREDENTIALS", KEY)]).unwrap();
        assert_eq!(config.credential_id, credential_fingerprint(KEY));
        assert!(!config.credential_id.contains(KEY));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let config = config(&[("GIGACHAT_CREDENTIALS", KEY)]).unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains(KEY));
        assert!(printed.contains("***"));
    }
}
