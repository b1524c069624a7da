//! JWTs from the site's own auth provider (Auth0, Keycloak, Supabase,
//! Firebase, a home-grown HS256 issuer…): the user who signed in to the site
//! is the user the proxy limits.
//!
//! HS256 with a shared secret, or RS/ES/PS keys from a JWKS URL. The JWKS
//! is fetched lazily, cached by `kid`, and refetched when a token names an
//! unknown `kid` (key rotation), at most once per [`REFETCH_INTERVAL`] so a
//! stream of forged `kid`s cannot turn the proxy into a JWKS flooder. One
//! fetch runs at a time and the requests that arrive meanwhile wait for its
//! outcome instead of fetching in turn; a failed fetch is followed by a
//! cool-down too (growing from [`FIRST_FAILURE_COOL_DOWN`] up to
//! [`REFETCH_INTERVAL`]), so a failing or slow provider is not hammered and
//! does not make every request wait for it.
//! `alg: none` never verifies: only the algorithms of the configured key
//! kinds are accepted, and a token that marks any header extension `crit`
//! is refused (RFC 7515 §4.1.11: this verifier understands none).

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use reqwest::Url;
use serde::Deserialize;

use super::Identity;
use crate::config::env::{ConfigError, Env};
use crate::error::Error;
use crate::secret::Secret;

const REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// Short, so a one-off blip of the provider costs seconds, not half a
/// minute; it doubles with each further failure.
const FIRST_FAILURE_COOL_DOWN: Duration = Duration::from_secs(1);
const MAX_KEYS: usize = 64;
const MAX_JWKS_BYTES: usize = 256 * 1024;
const MAX_SUBJECT_LEN: usize = 256;

#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub secret: Option<Secret<Vec<u8>>>,
    pub jwks_url: Option<Url>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// A value the token's `scope` (space-separated) or `scp` must contain;
    /// a valid token without it gets 403.
    pub required_scope: Option<String>,
    /// The claim that carries a user's own token budget
    /// (`GIGACHAT_PROXY_TOKEN_BUDGET_CLAIM`), for sites with tiers.
    pub budget_claim: Option<String>,
    /// A scope (in `scope` or `scp`) that makes the token's holder an
    /// operator (`GIGACHAT_PROXY_ADMIN_SCOPE`), for sites whose identity
    /// provider already grants admin rights.
    pub admin_scope: Option<String>,
}

impl JwtConfig {
    pub fn from_env(env: &Env<'_>) -> Result<Option<Self>, ConfigError> {
        let secret = match env.get("GIGACHAT_PROXY_JWT_SECRET") {
            Some(secret) if secret.len() < 32 => {
                return Err(ConfigError {
                    variable: "GIGACHAT_PROXY_JWT_SECRET",
                    problem: "is shorter than 32 characters; HS256 needs a long random secret"
                        .into(),
                });
            }
            other => other.map(|s| Secret::new(s.into_bytes())),
        };
        let jwks_url = env.parse("GIGACHAT_PROXY_JWKS_URL", |url| {
            crate::config::env::http_url(url)
                .map_err(|_| "must be an http(s) URL of a JSON Web Key Set".to_owned())
        })?;
        if secret.is_none() && jwks_url.is_none() {
            return Ok(None);
        }
        Ok(Some(Self {
            secret,
            jwks_url,
            issuer: env
                .get("GIGACHAT_PROXY_JWT_ISSUER")
                .map(|s| s.trim().to_owned()),
            audience: env
                .get("GIGACHAT_PROXY_JWT_AUDIENCE")
                .map(|s| s.trim().to_owned()),
            required_scope: env
                .get("GIGACHAT_PROXY_JWT_REQUIRED_SCOPE")
                .map(|s| s.trim().to_owned()),
            budget_claim: env
                .get("GIGACHAT_PROXY_TOKEN_BUDGET_CLAIM")
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty()),
            admin_scope: env
                .get(crate::tenancy::ownership::VAR_ADMIN_SCOPE)
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty()),
        }))
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    scope: Option<String>,
    scp: Option<serde_json::Value>,
}

/// The claims with the rest kept, read only when a budget claim is
/// configured (its name is the operator's choice).
#[derive(Deserialize)]
struct ClaimsWithRest {
    #[serde(flatten)]
    claims: Claims,
    #[serde(flatten)]
    rest: HashMap<String, serde_json::Value>,
}

/// A user's token budget from a claim: a whole number of tokens (or one
/// written as a string), from 1 to 10^12. Anything else is no budget of
/// their own, and the configured one applies.
fn budget_from_claim(value: &serde_json::Value) -> Option<u64> {
    let tokens = match value {
        serde_json::Value::Number(n) => n.as_u64()?,
        serde_json::Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    (1..=1_000_000_000_000).contains(&tokens).then_some(tokens)
}

impl Claims {
    fn has_scope(&self, wanted: &str) -> bool {
        let in_scope = self
            .scope
            .as_deref()
            .is_some_and(|s| s.split_whitespace().any(|v| v == wanted));
        let in_scp = match &self.scp {
            Some(serde_json::Value::String(s)) => s.split_whitespace().any(|v| v == wanted),
            Some(serde_json::Value::Array(items)) => {
                items.iter().any(|v| v.as_str() == Some(wanted))
            }
            _ => false,
        };
        in_scope || in_scp
    }
}

struct CachedKey {
    key: DecodingKey,
    algorithm: Option<Algorithm>,
}

struct Jwks {
    url: Url,
    http: reqwest::Client,
    keys: RwLock<HashMap<String, std::sync::Arc<CachedKey>>>,
    /// Held for the whole of a fetch, which makes the fetch single-flight:
    /// the requests queued behind it find its keys in the cache or its
    /// cool-down in the state, and never start a fetch of their own.
    refetch: tokio::sync::Mutex<RefetchState>,
}

#[derive(Default)]
struct RefetchState {
    /// No fetch before this instant.
    quiet_until: Option<Instant>,
    /// Failed fetches in a row; nonzero means the cool-down follows a
    /// failure (the keys cannot be had), zero that it follows a fetch that
    /// lacked the `kid` (the token's fault).
    failures: u32,
}

/// The cool-down after `failures` failed fetches in a row: 1 s, 2 s, 4 s…
/// up to [`REFETCH_INTERVAL`].
fn failure_cool_down(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_FAILURE_COOL_DOWN
        .saturating_mul(1 << doublings)
        .min(REFETCH_INTERVAL)
}

/// Why a JWKS fetch failed, for the operator's log line.
#[derive(Debug)]
enum FetchFailure {
    Connect,
    Transport,
    Status(u16),
    TooLarge,
    NotAJwks,
}

impl std::fmt::Display for FetchFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchFailure::Connect => f.write_str("connection failed"),
            FetchFailure::Transport => f.write_str("the request failed in transit or timed out"),
            FetchFailure::Status(status) => write!(f, "answered HTTP {status}"),
            FetchFailure::TooLarge => {
                write!(f, "the answer is larger than {MAX_JWKS_BYTES} bytes")
            }
            FetchFailure::NotAJwks => f.write_str("the answer is not a JSON Web Key Set"),
        }
    }
}

pub struct JwtVerifier {
    hmac: Option<DecodingKey>,
    jwks: Option<Jwks>,
    issuer: Option<String>,
    audience: Option<String>,
    required_scope: Option<String>,
    budget_claim: Option<String>,
    admin_scope: Option<String>,
}

impl JwtVerifier {
    pub fn new(config: &JwtConfig) -> Result<Self, Error> {
        let jwks = match &config.jwks_url {
            None => None,
            Some(url) => Some(Jwks {
                url: url.clone(),
                // Its own client: the site's identity provider is on the
                // public web PKI, unlike GigaChat.
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .redirect(reqwest::redirect::Policy::limited(3))
                    .build()
                    .map_err(|_| Error::Internal("could not build the JWKS HTTP client"))?,
                keys: RwLock::new(HashMap::new()),
                refetch: tokio::sync::Mutex::new(RefetchState::default()),
            }),
        };
        Ok(Self {
            hmac: config
                .secret
                .as_ref()
                .map(|s| DecodingKey::from_secret(s.expose())),
            jwks,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            required_scope: config.required_scope.clone(),
            budget_claim: config.budget_claim.clone(),
            admin_scope: config.admin_scope.clone(),
        })
    }

    pub async fn verify(&self, token: &str) -> Result<Identity, Error> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Error::Unauthenticated("the bearer token is not a valid credential"))?;
        // jsonwebtoken parses `crit` but does not enforce it.
        if header.crit.is_some() {
            return Err(Error::Unauthenticated(
                "the token requires a header extension (crit) this proxy does not support",
            ));
        }
        let claims = match header.alg {
            Algorithm::HS256 => {
                let key = self
                    .hmac
                    .as_ref()
                    .ok_or(Error::Unauthenticated("HS256 tokens are not accepted here"))?;
                self.decode_claims(token, key, Algorithm::HS256)?
            }
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::ES256
            | Algorithm::ES384
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => {
                let jwks = self.jwks.as_ref().ok_or(Error::Unauthenticated(
                    "asymmetric tokens are not accepted here",
                ))?;
                let kid = header.kid.as_deref().ok_or(Error::Unauthenticated(
                    "the token names no signing key (kid)",
                ))?;
                let cached = jwks.key(kid).await?;
                if cached.algorithm.is_some_and(|alg| alg != header.alg) {
                    return Err(Error::Unauthenticated(
                        "the token's algorithm does not match its key",
                    ));
                }
                self.decode_claims(token, &cached.key, header.alg)?
            }
            _ => {
                return Err(Error::Unauthenticated(
                    "the token's signing algorithm is not accepted",
                ));
            }
        };
        let (claims, token_budget) = claims;
        let subject = claims
            .sub
            .as_deref()
            .filter(|s| !s.is_empty() && s.len() <= MAX_SUBJECT_LEN)
            .ok_or(Error::Unauthenticated(
                "the token has no usable `sub` claim",
            ))?;
        if let Some(wanted) = &self.required_scope
            && !claims.has_scope(wanted)
        {
            return Err(Error::Forbidden(
                "the token lacks the scope this proxy requires",
            ));
        }
        Ok(Identity {
            key: format!("sub:{subject}"),
            anonymous: false,
            token_budget,
            operator: self
                .admin_scope
                .as_deref()
                .is_some_and(|scope| claims.has_scope(scope)),
        })
    }

    /// The claims, and the user's own token budget when a budget claim is
    /// configured (the rest of the claims are kept only then).
    fn decode_claims(
        &self,
        token: &str,
        key: &DecodingKey,
        algorithm: Algorithm,
    ) -> Result<(Claims, Option<u64>), Error> {
        match &self.budget_claim {
            None => Ok((self.decode::<Claims>(token, key, algorithm)?, None)),
            Some(name) => {
                let ClaimsWithRest { claims, rest } = self.decode(token, key, algorithm)?;
                Ok((claims, rest.get(name).and_then(budget_from_claim)))
            }
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        key: &DecodingKey,
        algorithm: Algorithm,
    ) -> Result<T, Error> {
        let mut validation = Validation::new(algorithm);
        validation.validate_nbf = true;
        validation.leeway = 30;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &self.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".into());
        }
        jsonwebtoken::decode::<T>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|err| {
                Error::Unauthenticated(match err.kind() {
                    ErrorKind::ExpiredSignature => "the token has expired",
                    ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)",
                    ErrorKind::InvalidAudience => "the token is for another audience",
                    ErrorKind::InvalidIssuer => "the token is from another issuer",
                    ErrorKind::InvalidSignature => "the token's signature is not valid",
                    ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim",
                    _ => "the token is not valid",
                })
            })
    }
}

impl Jwks {
    fn cached(&self, kid: &str) -> Option<std::sync::Arc<CachedKey>> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(kid)
            .cloned()
    }

    async fn key(&self, kid: &str) -> Result<std::sync::Arc<CachedKey>, Error> {
        if let Some(key) = self.cached(kid) {
            return Ok(key);
        }
        let mut state = self.refetch.lock().await;
        if let Some(key) = self.cached(kid) {
            return Ok(key);
        }
        let unknown = Error::Unauthenticated("the token's signing key (kid) is unknown");
        if let Some(wait) = state
            .quiet_until
            .map(|until| until.saturating_duration_since(Instant::now()))
            .filter(|wait| !wait.is_zero())
        {
            return Err(if state.failures > 0 {
                unavailable(wait)
            } else {
                unknown
            });
        }
        // Counted as failed until it succeeds: if this request is cancelled
        // mid-fetch (the client went away), the cool-down still holds and
        // the next request in the queue does not simply fetch again.
        state.failures = state.failures.saturating_add(1);
        state.quiet_until = Some(Instant::now() + failure_cool_down(state.failures));
        match self.fetch().await {
            Ok(keys) => {
                tracing::info!(keys = keys.len(), "fetched the JWKS");
                *self.keys.write().unwrap_or_else(PoisonError::into_inner) = keys;
                state.failures = 0;
                let found = self.cached(kid);
                state.quiet_until = match found {
                    Some(_) => None,
                    None => Some(Instant::now() + REFETCH_INTERVAL),
                };
                found.ok_or(unknown)
            }
            Err(failure) => {
                let cool_down = failure_cool_down(state.failures);
                state.quiet_until = Some(Instant::now() + cool_down);
                tracing::warn!(
                    host = self.url.host_str().unwrap_or_default(),
                    failure = %failure,
                    failures_in_a_row = state.failures,
                    retry_in_secs = cool_down.as_secs(),
                    "could not fetch the JWKS (GIGACHAT_PROXY_JWKS_URL); tokens with keys not yet cached get 503 until a fetch succeeds"
                );
                Err(unavailable(cool_down))
            }
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, std::sync::Arc<CachedKey>>, FetchFailure> {
        let response = self
            .http
            .get(self.url.clone())
            .send()
            .await
            .map_err(|err| {
                if err.is_connect() {
                    FetchFailure::Connect
                } else {
                    FetchFailure::Transport
                }
            })?;
        if !response.status().is_success() {
            return Err(FetchFailure::Status(response.status().as_u16()));
        }
        if response
            .content_length()
            .is_some_and(|length| length > MAX_JWKS_BYTES as u64)
        {
            return Err(FetchFailure::TooLarge);
        }
        let body = response
            .bytes()
            .await
            .map_err(|_| FetchFailure::Transport)?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(FetchFailure::TooLarge);
        }
        let set: JwkSet = serde_json::from_slice(&body).map_err(|_| FetchFailure::NotAJwks)?;
        let mut keys = HashMap::new();
        for jwk in set.keys.iter().take(MAX_KEYS) {
            let (Some(kid), Ok(key)) = (jwk.common.key_id.clone(), DecodingKey::from_jwk(jwk))
            else {
                continue;
            };
            let algorithm = jwk
                .common
                .key_algorithm
                .and_then(|alg| alg.to_string().parse::<Algorithm>().ok());
            keys.insert(kid, std::sync::Arc::new(CachedKey { key, algorithm }));
        }
        Ok(keys)
    }
}

/// The answer while the keys cannot be had: the client should retry after
/// the cool-down (whole seconds, at least 1).
fn unavailable(wait: Duration) -> Error {
    let rounded_up = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    Error::JwksUnavailable {
        retry_after_secs: rounded_up.max(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_claim_is_a_whole_number_of_tokens() {
        use serde_json::json;
        assert_eq!(budget_from_claim(&json!(5000)), Some(5000));
        assert_eq!(budget_from_claim(&json!(" 5000 ")), Some(5000));
        for no in [
            json!(0),
            json!(-5),
            json!(1.5),
            json!("lots"),
            json!(null),
            json!([1]),
            json!(2_000_000_000_000u64),
        ] {
            assert_eq!(budget_from_claim(&no), None, "{no}");
        }
    }

    #[test]
    fn the_failure_cool_down_doubles_up_to_the_refetch_interval() {
        let secs: Vec<u64> = (1..=8).map(|n| failure_cool_down(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(failure_cool_down(u32::MAX), REFETCH_INTERVAL);
        assert_eq!(failure_cool_down(0), FIRST_FAILURE_COOL_DOWN);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let secs = |wait| match unavailable(wait) {
            Error::JwksUnavailable { retry_after_secs } => retry_after_secs,
            _ => 0,
        };
        assert_eq!(secs(Duration::from_millis(1)), 1);
        assert_eq!(secs(Duration::from_millis(1500)), 2);
        assert_eq!(secs(Duration::from_secs(4)), 4);
    }
}
