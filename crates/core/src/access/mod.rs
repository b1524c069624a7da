//! End-user access: who is calling, and may they.
//!
//! Not to be confused with `upstream::token`, the proxy's own OAuth to
//! GigaChat. Three kinds of end-user credential, combinable:
//! - static API keys (`Authorization: Bearer <key>` or `X-API-Key`),
//! - JWTs from the site's own auth provider (HS256 secret, or RS/ES keys
//!   from a JWKS URL),
//! - the proxy's session tokens from `/api/gigachat-oauth`.
//!
//! The answer is an [`Identity`]; rate limits are keyed by it, and when
//! there is no credential the identity is the client's address, taken only
//! from a source the platform vouches for.

pub mod api_keys;
pub mod client_ip;
pub mod jwt;

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, header};
use sha2::{Digest, Sha256};

use crate::config::env::{ConfigError, Env};
use crate::error::Error;
use crate::secret::Secret;
use crate::session::SessionKeys;

pub use client_ip::ClientAddr;

/// Who a request is from, for rate limits and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// A stable, non-secret key: `key:<hash prefix>`, `sub:<jwt sub>`, or
    /// `ip:<address>`.
    pub key: String,
    /// True when only the client address identifies the caller; such
    /// identities get the (stricter) anonymous rate limit.
    pub anonymous: bool,
    /// The caller's own token budget (tokens per window), from the JWT
    /// claim `GIGACHAT_PROXY_TOKEN_BUDGET_CLAIM`, carried on by the sessions
    /// that JWT mints; `None`: the configured budget applies.
    pub token_budget: Option<u64>,
    /// True when the caller's JWT carries `GIGACHAT_PROXY_ADMIN_SCOPE`: an
    /// operator by the identity provider's word, as `sub:` entries of
    /// `GIGACHAT_PROXY_ADMIN_KEYS` are by the proxy's configuration. Not
    /// carried into sessions, so a page holding a session never gains it.
    pub operator: bool,
}

impl Identity {
    fn anonymous(ip: Option<IpAddr>) -> Self {
        Self {
            key: ip.map_or_else(|| "ip:unknown".to_owned(), |ip| format!("ip:{ip}")),
            anonymous: true,
            token_budget: None,
            operator: false,
        }
    }
}

/// Whether `/api/gigachat-api` needs a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Anyone may call; credentials, when sent and valid, only name the
    /// caller. The local server's default, and the default wherever no
    /// credential kind is configured.
    Open,
    /// A valid API key, JWT or session token is required.
    Required,
}

#[derive(Debug, Clone)]
pub struct AccessConfig {
    pub mode: AuthMode,
    pub api_keys: Vec<Secret<String>>,
    pub jwt: Option<jwt::JwtConfig>,
    /// Proxies in front of the local server or Lambda whose
    /// `X-Forwarded-For` entries are trusted (nginx, CloudFront).
    pub trusted_hops: usize,
}

impl AccessConfig {
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let api_keys = api_keys::parse(env.get("GIGACHAT_PROXY_API_KEYS").as_deref())?;
        let jwt = jwt::JwtConfig::from_env(env)?;
        let has_credentials = !api_keys.is_empty() || jwt.is_some();
        let mode = match env.get("GIGACHAT_PROXY_AUTH").as_deref().map(str::trim) {
            None if has_credentials => AuthMode::Required,
            None | Some("open") => AuthMode::Open,
            Some("required") if has_credentials => AuthMode::Required,
            Some("required") => {
                return Err(ConfigError {
                    variable: "GIGACHAT_PROXY_AUTH",
                    problem: "is `required` but no credential kind is configured: set GIGACHAT_PROXY_API_KEYS, GIGACHAT_PROXY_JWT_SECRET or GIGACHAT_PROXY_JWKS_URL".into(),
                });
            }
            Some(_) => {
                return Err(ConfigError {
                    variable: "GIGACHAT_PROXY_AUTH",
                    problem: "must be `open` or `required`".into(),
                });
            }
        };
        let trusted_hops = env
            .parse("GIGACHAT_PROXY_TRUSTED_HOPS", |value| {
                crate::config::env::count(value, 0..=10)
                    .map_err(|problem| format!("{problem} (the proxies in front of this one)"))
            })?
            .unwrap_or(0);
        Ok(Self {
            mode,
            api_keys,
            jwt,
            trusted_hops,
        })
    }

    /// A digest of everything that decides who may call: the mode, the API
    /// keys, and the JWT secret, JWKS URL, issuer, audience and required
    /// scope. Session tokens are signed with a key bound to it, so a token
    /// minted under one configuration (an open developer instance, a key
    /// since revoked, another site's login) never verifies under another,
    /// even when both share the GigaChat key or the session secret.
    /// Warm instances of one deployment share the configuration, so they
    /// still accept each other's tokens. Secrets enter only as digests.
    pub fn session_binding(&self) -> [u8; 32] {
        let mut digest = Sha256::new();
        let mut field = |name: &str, value: &[u8]| {
            for part in [name.as_bytes(), value] {
                digest.update((part.len() as u64).to_be_bytes());
                digest.update(part);
            }
        };
        field(
            "mode",
            match self.mode {
                AuthMode::Open => b"open",
                AuthMode::Required => b"required",
            },
        );
        // The order the keys are listed in does not change who may call.
        let mut key_digests: Vec<[u8; 32]> = self
            .api_keys
            .iter()
            .map(|key| Sha256::digest(key.expose().as_bytes()).into())
            .collect();
        key_digests.sort_unstable();
        key_digests.dedup();
        for key_digest in &key_digests {
            field("api key", key_digest);
        }
        if let Some(jwt) = &self.jwt {
            if let Some(secret) = &jwt.secret {
                field("jwt secret", &Sha256::digest(secret.expose()));
            }
            let settings = [
                ("jwks url", jwt.jwks_url.as_ref().map(reqwest::Url::as_str)),
                ("jwt issuer", jwt.issuer.as_deref()),
                ("jwt audience", jwt.audience.as_deref()),
                ("jwt required scope", jwt.required_scope.as_deref()),
                ("token budget claim", jwt.budget_claim.as_deref()),
            ];
            for (name, value) in settings {
                if let Some(value) = value {
                    field(name, value.as_bytes());
                }
            }
        }
        digest.finalize().into()
    }
}

pub struct Access {
    mode: AuthMode,
    api_keys: api_keys::ApiKeys,
    jwt: Option<jwt::JwtVerifier>,
    trusted_hops: usize,
}

const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// Where a credential was presented; `Basic` only counts when minting a
/// session, because the official SDKs send their `credentials` setting as
/// `Basic <value>` to the OAuth URL.
enum Presented<'a> {
    ApiKey(&'a str),
    Bearer(&'a str),
    Basic(&'a str),
    Nothing,
}

fn presented(headers: &HeaderMap) -> Presented<'_> {
    if let Some(key) = headers.get(X_API_KEY).and_then(|v| v.to_str().ok()) {
        return Presented::ApiKey(key.trim());
    }
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Presented::Nothing;
    };
    let value = value.trim();
    match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => {
            Presented::Bearer(rest.trim())
        }
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("basic") => {
            Presented::Basic(rest.trim())
        }
        _ => Presented::Nothing,
    }
}

impl Access {
    pub fn new(config: &AccessConfig) -> Result<Self, Error> {
        Ok(Self {
            mode: config.mode,
            api_keys: api_keys::ApiKeys::new(&config.api_keys),
            jwt: config.jwt.as_ref().map(jwt::JwtVerifier::new).transpose()?,
            trusted_hops: config.trusted_hops,
        })
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// The caller of `/api/gigachat-api`.
    pub async fn identify(
        &self,
        headers: &HeaderMap,
        client: Option<IpAddr>,
        sessions: &SessionKeys,
    ) -> Result<Identity, Error> {
        let credential = match presented(headers) {
            Presented::ApiKey(key) => Some(self.check_api_key(key)),
            Presented::Bearer(token) => Some(self.check_bearer(token, client, sessions).await),
            Presented::Basic(_) | Presented::Nothing => None,
        };
        match (credential, self.mode) {
            (Some(Ok(identity)), _) => Ok(identity),
            // An expired session is refused even in open mode, so clients
            // built on GigaChat's flow refetch a token as they would there.
            (Some(Err(Error::SessionExpired)), _) => Err(Error::SessionExpired),
            (Some(Err(err)), AuthMode::Required) => Err(err),
            (None, AuthMode::Required) => Err(Error::Unauthenticated("no credential was sent")),
            // Open mode: an unknown bearer value is someone else's business
            // (a frontend may send its own app token); the caller is anonymous.
            (_, AuthMode::Open) => Ok(Identity::anonymous(client)),
        }
    }

    /// The caller of `/api/gigachat-oauth`: who the minted session will
    /// name. In required mode only an API key or a JWT may mint (a session
    /// may not renew itself forever); the key may come as `Basic <key>`.
    pub async fn identify_for_minting(
        &self,
        headers: &HeaderMap,
        client: Option<IpAddr>,
    ) -> Result<Identity, Error> {
        let credential = match presented(headers) {
            Presented::ApiKey(key) => Some(self.check_api_key(key)),
            Presented::Basic(key) => Some(self.check_api_key(key)),
            Presented::Bearer(token) => Some(match self.api_keys.identify(token) {
                Some(identity) => Ok(identity),
                None => self.check_jwt(token).await,
            }),
            Presented::Nothing => None,
        };
        match (credential, self.mode) {
            (Some(Ok(identity)), _) => Ok(identity),
            (Some(Err(err)), AuthMode::Required) => Err(err),
            (None, AuthMode::Required) => Err(Error::Unauthenticated(
                "minting a session needs an API key or a JWT",
            )),
            (_, AuthMode::Open) => Ok(Identity::anonymous(client)),
        }
    }

    /// The client's address from the platform's trusted source.
    pub fn client_ip(
        &self,
        platform: crate::config::env::Platform,
        headers: &HeaderMap,
        addr: Option<&ClientAddr>,
    ) -> Option<IpAddr> {
        client_ip::resolve(platform, headers, addr, self.trusted_hops)
    }

    fn check_api_key(&self, key: &str) -> Result<Identity, Error> {
        self.api_keys
            .identify(key)
            .ok_or(Error::Unauthenticated("the API key is not valid"))
    }

    async fn check_bearer(
        &self,
        token: &str,
        client: Option<IpAddr>,
        sessions: &SessionKeys,
    ) -> Result<Identity, Error> {
        if let Some(identity) = self.api_keys.identify(token) {
            return Ok(identity);
        }
        match sessions.verify(token) {
            // Sessions are bound to the auth mode, so a required instance
            // never verifies an anonymous one; refused here all the same.
            Ok(session) if session.subject == crate::session::ANONYMOUS => {
                return match self.mode {
                    AuthMode::Open => Ok(Identity::anonymous(client)),
                    AuthMode::Required => Err(Error::Unauthenticated(
                        "an anonymous session is not accepted: this proxy requires an API key or a JWT",
                    )),
                };
            }
            Ok(session) => {
                return Ok(Identity {
                    key: session.subject,
                    anonymous: false,
                    token_budget: session.token_budget,
                    operator: false,
                });
            }
            Err(Error::SessionExpired) => return Err(Error::SessionExpired),
            Err(_) => {}
        }
        self.check_jwt(token).await
    }

    async fn check_jwt(&self, token: &str) -> Result<Identity, Error> {
        match &self.jwt {
            Some(verifier) => verifier.verify(token).await,
            None => Err(Error::Unauthenticated(
                "the bearer token is not a valid API key or session token",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::time::Duration;

    const API_KEY: &str = "first-key-0123456789";

    fn config(vars: &[(&str, &str)]) -> AccessConfig {
        AccessConfig::from_env(&Env::new(&|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        }))
        .unwrap()
    }

    #[test]
    fn the_session_binding_changes_with_whatever_decides_who_may_call() {
        let base = [("GIGACHAT_PROXY_API_KEYS", API_KEY)];
        let binding = config(&base).session_binding();
        assert_eq!(binding, config(&base).session_binding());
        let secret = "a-shared-hs256-secret-of-at-least-32-bytes!";
        let variants: [&[(&str, &str)]; 8] = [
            &[],
            &[
                ("GIGACHAT_PROXY_API_KEYS", API_KEY),
                ("GIGACHAT_PROXY_AUTH", "open"),
            ],
            &[("GIGACHAT_PROXY_API_KEYS", "second-key-0123456789")],
            &[("GIGACHAT_PROXY_JWT_SECRET", secret)],
            &[
                ("GIGACHAT_PROXY_API_KEYS", API_KEY),
                ("GIGACHAT_PROXY_JWT_SECRET", secret),
            ],
            &[
                ("GIGACHAT_PROXY_API_KEYS", API_KEY),
                ("GIGACHAT_PROXY_JWKS_URL", "https://idp.example/jwks.json"),
            ],
            &[
                ("GIGACHAT_PROXY_API_KEYS", API_KEY),
                ("GIGACHAT_PROXY_JWT_SECRET", secret),
                ("GIGACHAT_PROXY_JWT_AUDIENCE", "another"),
            ],
            &[
                ("GIGACHAT_PROXY_API_KEYS", API_KEY),
                ("GIGACHAT_PROXY_JWT_SECRET", secret),
                ("GIGACHAT_PROXY_JWT_REQUIRED_SCOPE", "chat"),
            ],
        ];
        let mut seen = vec![binding];
        for vars in variants {
            let other = config(vars).session_binding();
            assert!(!seen.contains(&other), "{vars:?}");
            seen.push(other);
        }
        // The order of the keys does not matter.
        assert_eq!(
            config(&[(
                "GIGACHAT_PROXY_API_KEYS",
                "first-key-0123456789,second-key-0123456789"
            )])
            .session_binding(),
            config(&[(
                "GIGACHAT_PROXY_API_KEYS",
                "second-key-0123456789, first-key-0123456789"
            )])
            .session_binding(),
        );
    }

    #[tokio::test]
    async fn an_anonymous_session_is_refused_in_required_mode_even_if_it_verifies() {
        let required = config(&[("GIGACHAT_PROXY_API_KEYS", API_KEY)]);
        let access = Access::new(&required).unwrap();
        let sessions = SessionKeys::new(
            &Secret::new(vec![7; 32]),
            Duration::from_secs(60),
            &required.session_binding(),
        );
        let anonymous = sessions.mint(crate::session::ANONYMOUS, None).unwrap();
        let mut headers = HeaderMap::new();
        let bearer = format!("Bearer {}", anonymous.access_token.expose());
        headers.insert(header::AUTHORIZATION, bearer.parse().unwrap());
        assert!(matches!(
            access.identify(&headers, None, &sessions).await,
            Err(Error::Unauthenticated(_))
        ));
        // The same session on an open instance names an anonymous caller.
        let open = Access::new(&config(&[])).unwrap();
        assert!(
            open.identify(&headers, None, &sessions)
                .await
                .unwrap()
                .anonymous
        );
    }
}
