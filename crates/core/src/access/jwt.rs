//! JWTs from the site's own auth provider (Auth0, Keycloak, Supabase,
//! Firebase, a home-grown HS256 issuer…): the user who signed in to the site
//! is the user the proxy limits.
//!
//! HS256 with a shared secret, or RS/ES/PS keys from a JWKS URL. The JWKS
//! is fetched lazily, cached by `kid`, and refetched when a token names an
//! unknown `kid` (key rotation), at most once per [`REFETCH_INTERVAL`] so a
//! stream of forged `kid`s cannot turn the proxy into a JWKS flooder.
//! `alg: none` never verifies: only the algorithms of the configured key
//! kinds are accepted.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use reqwest::Url;
use serde::Deserialize;

use super::Identity;
use crate::config::ConfigError;
use crate::error::{Error, TransportCause};
use crate::secret::Secret;

const REFETCH_INTERVAL: Duration = Duration::from_secs(30);
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
}

impl JwtConfig {
    pub fn from_lookup(
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        let secret = match lookup("GIGACHAT_PROXY_JWT_SECRET") {
            Some(secret) if secret.len() < 32 => {
                return Err(ConfigError {
                    variable: "GIGACHAT_PROXY_JWT_SECRET",
                    problem: "is shorter than 32 characters; HS256 needs a long random secret"
                        .into(),
                });
            }
            other => other.map(|s| Secret::new(s.into_bytes())),
        };
        let jwks_url = match lookup("GIGACHAT_PROXY_JWKS_URL") {
            None => None,
            Some(url) => Some(
                Url::parse(url.trim())
                    .ok()
                    .filter(|u| matches!(u.scheme(), "https" | "http") && u.host_str().is_some())
                    .ok_or_else(|| ConfigError {
                        variable: "GIGACHAT_PROXY_JWKS_URL",
                        problem: "must be an http(s) URL of a JSON Web Key Set".into(),
                    })?,
            ),
        };
        if secret.is_none() && jwks_url.is_none() {
            return Ok(None);
        }
        Ok(Some(Self {
            secret,
            jwks_url,
            issuer: lookup("GIGACHAT_PROXY_JWT_ISSUER").map(|s| s.trim().to_owned()),
            audience: lookup("GIGACHAT_PROXY_JWT_AUDIENCE").map(|s| s.trim().to_owned()),
            required_scope: lookup("GIGACHAT_PROXY_JWT_REQUIRED_SCOPE")
                .map(|s| s.trim().to_owned()),
        }))
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    scope: Option<String>,
    scp: Option<serde_json::Value>,
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
    /// When a refetch last failed to find the `kid` it was made for.
    last_miss: tokio::sync::Mutex<Option<Instant>>,
}

pub struct JwtVerifier {
    hmac: Option<DecodingKey>,
    jwks: Option<Jwks>,
    issuer: Option<String>,
    audience: Option<String>,
    required_scope: Option<String>,
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
                last_miss: tokio::sync::Mutex::new(None),
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
        })
    }

    pub async fn verify(&self, token: &str) -> Result<Identity, Error> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Error::Unauthenticated("the bearer token is not a valid credential"))?;
        let claims = match header.alg {
            Algorithm::HS256 => {
                let key = self
                    .hmac
                    .as_ref()
                    .ok_or(Error::Unauthenticated("HS256 tokens are not accepted here"))?;
                self.decode(token, key, Algorithm::HS256)?
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
                self.decode(token, &cached.key, header.alg)?
            }
            _ => {
                return Err(Error::Unauthenticated(
                    "the token's signing algorithm is not accepted",
                ));
            }
        };
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
        })
    }

    fn decode(
        &self,
        token: &str,
        key: &DecodingKey,
        algorithm: Algorithm,
    ) -> Result<Claims, Error> {
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
        jsonwebtoken::decode::<Claims>(token, key, &validation)
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
        let mut last_miss = self.last_miss.lock().await;
        if let Some(key) = self.cached(kid) {
            return Ok(key);
        }
        let unknown = Error::Unauthenticated("the token's signing key (kid) is unknown");
        if last_miss.is_some_and(|at| at.elapsed() < REFETCH_INTERVAL) {
            return Err(unknown);
        }
        let keys = self.fetch().await?;
        tracing::info!(keys = keys.len(), "fetched the JWKS");
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = keys;
        self.cached(kid).ok_or_else(|| {
            *last_miss = Some(Instant::now());
            unknown
        })
    }

    async fn fetch(&self) -> Result<HashMap<String, std::sync::Arc<CachedKey>>, Error> {
        let unreachable = |cause| Error::UpstreamUnreachable {
            stage: "jwks",
            host: self.url.host_str().unwrap_or_default().to_owned(),
            cause,
        };
        let response = self
            .http
            .get(self.url.clone())
            .send()
            .await
            .map_err(|err| {
                unreachable(if err.is_connect() {
                    TransportCause::Connect
                } else {
                    TransportCause::Other
                })
            })?;
        if !response.status().is_success() {
            return Err(unreachable(TransportCause::Other));
        }
        let body = response
            .bytes()
            .await
            .map_err(|_| unreachable(TransportCause::Other))?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(unreachable(TransportCause::Other));
        }
        let set: JwkSet =
            serde_json::from_slice(&body).map_err(|_| unreachable(TransportCause::Other))?;
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
