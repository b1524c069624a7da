//! Proxy session tokens: what `/api/gigachat-oauth` hands to a browser in
//! place of GigaChat's access token.
//!
//! Frontends written against GigaChat's OAuth flow (and the official SDKs
//! pointed at the proxy) fetch a token, send it as `Bearer`, and refetch it
//! on a 401. The proxy keeps that contract with its own short-lived HS256
//! JWT, so neither the authorization key nor the upstream token ever leaves
//! the server.
//!
//! The signing key is bound to the end-user auth configuration (the access
//! configuration's `session_binding`, handed to [`SessionKeys::new`] as
//! bytes, so sessions depend on nothing of access control): instances that
//! share the GigaChat key (or `GIGACHAT_PROXY_SESSION_SECRET`) but differ
//! in who may call, such as a developer's open `cargo run` and the
//! production deployment that requires a login, cannot verify each other's
//! tokens.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::secret::Secret;

const ISSUER: &str = "gigachat-proxy";
/// The subject of sessions minted by an anonymous caller (open mode); such
/// sessions are rate-limited by client address, so minting new sessions
/// does not buy a fresh budget.
pub const ANONYMOUS: &str = "anonymous";
const AUDIENCE: &str = "gigachat-proxy/api";

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    sub: String,
    iat: u64,
    exp: u64,
    jti: String,
    /// The minter's own token budget (see `access::Identity`), so a session
    /// spends under the same budget as the JWT that minted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tb: Option<u64>,
}

/// What a verified session says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub subject: String,
    pub token_budget: Option<u64>,
}

/// A minted token, in GigaChat's OAuth answer shape.
pub struct MintedSession {
    pub access_token: Secret<String>,
    /// Unix time in milliseconds, like GigaChat's `expires_at`.
    pub expires_at_ms: u64,
}

pub struct SessionKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl SessionKeys {
    /// `binding` names the end-user auth configuration; tokens verify only
    /// where it is the same.
    pub fn new(secret: &Secret<Vec<u8>>, ttl: Duration, binding: &[u8]) -> Self {
        let key = bound_key(secret.expose(), binding);
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        // The same deployment mints and checks these, on NTP-synced clocks.
        validation.leeway = 1;
        Self {
            encoding: EncodingKey::from_secret(&key),
            decoding: DecodingKey::from_secret(&key),
            validation,
            ttl,
        }
    }

    /// A token naming `subject` (the minter's identity key, or
    /// [`ANONYMOUS`]).
    pub fn mint(&self, subject: &str, token_budget: Option<u64>) -> Result<MintedSession, Error> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| Error::Internal("system clock is before 1970"))?;
        let exp = now + self.ttl;
        let claims = Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: subject.into(),
            iat: now.as_secs(),
            exp: exp.as_secs(),
            jti: uuid::Uuid::new_v4().to_string(),
            tb: token_budget,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|_| Error::Internal("could not sign a session token"))?;
        Ok(MintedSession {
            access_token: Secret::new(token),
            expires_at_ms: u64::try_from(exp.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// Checks a token this proxy minted. The signature is checked before
    /// expiry, so `SessionExpired` means "ours, but old": the client should
    /// fetch a new one, exactly as after GigaChat's own "Token has expired".
    /// Returns the session's subject and token budget.
    pub fn verify(&self, token: &str) -> Result<Session, Error> {
        match jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation) {
            Ok(data) => Ok(Session {
                subject: data.claims.sub,
                token_budget: data.claims.tb,
            }),
            Err(err) if matches!(err.kind(), ErrorKind::ExpiredSignature) => {
                Err(Error::SessionExpired)
            }
            Err(_) => Err(Error::SessionInvalid),
        }
    }
}

/// The key that signs sessions: the configured or derived secret, narrowed
/// to one auth configuration. An HMAC, so the result says nothing about the
/// secret, and any change of `binding` gives an unrelated key.
fn bound_key(secret: &[u8], binding: &[u8]) -> Vec<u8> {
    match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(b"gigachat-proxy session key for auth configuration v1\0");
            mac.update(binding);
            mac.finalize().into_bytes().to_vec()
        }
        // HMAC accepts keys of any length, so this is never reached; the
        // fallback still depends on both inputs.
        Err(_) => Sha256::new()
            .chain_update(secret)
            .chain_update(binding)
            .finalize()
            .to_vec(),
    }
}

/// Derives the signing secret from the authorization key, so that every warm
/// instance of a serverless deployment accepts the others' tokens without a
/// shared store, and rotating the GigaChat key also revokes old sessions.
/// The HMAC makes the derived key useless for recovering the original.
pub(crate) fn derive_secret(credentials: &str) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail; fall back to the
    // label alone rather than panic if that ever changed.
    match Hmac::<Sha256>::new_from_slice(credentials.as_bytes()) {
        Ok(mut mac) => {
            mac.update(b"gigachat-proxy session signing key v1");
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => b"gigachat-proxy session signing key v1".to_vec(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn keys(ttl: Duration) -> SessionKeys {
        SessionKeys::new(&Secret::new(derive_secret("a2V5")), ttl, b"binding")
    }

    #[test]
    fn tokens_verify_only_under_the_same_binding() {
        let secret = Secret::new(derive_secret("a2V5"));
        let ttl = Duration::from_secs(60);
        let minted = keys(ttl).mint(ANONYMOUS, None).unwrap();
        let same = SessionKeys::new(&secret, ttl, b"binding");
        assert_eq!(
            same.verify(minted.access_token.expose()).unwrap().subject,
            ANONYMOUS
        );
        let other = SessionKeys::new(&secret, ttl, b"another binding");
        assert!(matches!(
            other.verify(minted.access_token.expose()),
            Err(Error::SessionInvalid)
        ));
    }

    #[test]
    fn minted_tokens_verify() {
        let keys = keys(Duration::from_secs(60));
        let minted = keys.mint("key:0123456789ab", None).unwrap();
        assert_eq!(
            keys.verify(minted.access_token.expose()).unwrap(),
            Session {
                subject: "key:0123456789ab".into(),
                token_budget: None
            }
        );
        // A minter's own token budget travels with the session.
        let minted = keys.mint("sub:alice", Some(500)).unwrap();
        assert_eq!(
            keys.verify(minted.access_token.expose())
                .unwrap()
                .token_budget,
            Some(500)
        );
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(minted.expires_at_ms > now_ms + 55_000);
        assert!(minted.expires_at_ms <= now_ms + 61_000);
    }

    #[test]
    fn another_key_or_garbage_is_invalid() {
        let other = SessionKeys::new(
            &Secret::new(derive_secret("b3RoZXI=")),
            Duration::from_secs(60),
            b"binding",
        );
        let minted = other.mint(ANONYMOUS, None).unwrap();
        let keys = keys(Duration::from_secs(60));
        assert!(matches!(
            keys.verify(minted.access_token.expose()),
            Err(Error::SessionInvalid)
        ));
        assert!(matches!(
            keys.verify("not-a-jwt"),
            Err(Error::SessionInvalid)
        ));
        assert!(matches!(keys.verify(""), Err(Error::SessionInvalid)));
    }

    #[test]
    fn alg_none_is_refused() {
        let keys = keys(Duration::from_secs(60));
        // {"alg":"none","typ":"JWT"} . {"iss":"gigachat-proxy","aud":"gigachat-proxy/api","exp":9999999999} .
        let token = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJpc3MiOiJnaWdhY2hhdC1wcm94eSIsImF1ZCI6ImdpZ2FjaGF0LXByb3h5L2FwaSIsImV4cCI6OTk5OTk5OTk5OX0.";
        assert!(matches!(keys.verify(token), Err(Error::SessionInvalid)));
    }

    #[test]
    fn expired_tokens_are_reported_as_expired() {
        let keys = keys(Duration::from_secs(60));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: "anonymous".into(),
            iat: now - 600,
            exp: now - 300,
            jti: "x".into(),
            tb: None,
        };
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding).unwrap();
        assert!(matches!(keys.verify(&token), Err(Error::SessionExpired)));
    }
}
