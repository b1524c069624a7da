//! Trust for GigaChat's certificate chain, and the proxy's own TLS settings
//! toward GigaChat.
//!
//! GigaChat's hosts chain to the Russian Trusted Root CA, which is absent
//! from the Mozilla/webpki root set; it is the most common reason GigaChat
//! clients fail. The root is embedded in the binary so Vercel and Lambda
//! need no files, and it is added next to the webpki roots, for the upstream
//! client only.
//!
//! The settings keep the official Python SDK's names (`GIGACHAT_*`), with
//! one deliberate difference: the SDK's `GIGACHAT_CA_BUNDLE_FILE` *replaces*
//! the trust store, ours *adds* to it. The usual reason to set it is a
//! corporate TLS-inspecting proxy; adding its CA keeps GigaChat's real chain
//! (the embedded root) and ordinary public hosts working too, so the same
//! deployment works inside and outside the corporate network.
//!
//! The files are read, parsed into rustls types and checked once, at
//! start-up, into one rustls configuration that both upstream clients
//! share (see `client.rs`); `files` reads them, `verify_off` is the
//! verifier of `GIGACHAT_VERIFY_SSL_CERTS=false`.

mod files;
#[cfg(test)]
mod tests;
mod verify_off;

use std::fmt;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

use crate::config::env::{ConfigError, Env};
use files::ClientIdentity;
use verify_off::AcceptAnyCertificate;

/// "Russian Trusted Root CA" (Ministry of Digital Development, RU), valid
/// 2022-03-01 .. 2032-02-27.
pub const RUSSIAN_TRUSTED_ROOT_CA_PEM: &[u8] =
    include_bytes!("../../../certs/russian_trusted_root_ca.pem");

/// PEM file with CA certificates trusted in addition to the built-in roots.
pub const CA_BUNDLE_FILE: &str = "GIGACHAT_CA_BUNDLE_FILE";
/// `false` turns certificate verification toward GigaChat off.
pub const VERIFY_SSL_CERTS: &str = "GIGACHAT_VERIFY_SSL_CERTS";
/// Client certificate (PEM, optionally with its chain and key) for mTLS.
pub const CERT_FILE: &str = "GIGACHAT_CERT_FILE";
/// Private key (PEM) of the client certificate.
pub const KEY_FILE: &str = "GIGACHAT_KEY_FILE";
/// The SDK's password for an encrypted key; see [`TlsConfig::from_env`].
pub const KEY_FILE_PASSWORD: &str = "GIGACHAT_KEY_FILE_PASSWORD";

pub fn russian_trusted_root() -> Result<CertificateDer<'static>, rustls_pki_types::pem::Error> {
    CertificateDer::from_pem_slice(RUSSIAN_TRUSTED_ROOT_CA_PEM)
}

/// TLS settings of the upstream clients (GigaChat's API and OAuth hosts).
///
/// The files are read and validated once, at start-up, so a bad path or a
/// broken file is a configuration error naming its variable rather than a
/// failure on the first request, and serverless instances keep no file
/// handles.
#[derive(Clone)]
pub struct TlsConfig {
    /// `GIGACHAT_VERIFY_SSL_CERTS`; `false` accepts any certificate.
    verify: bool,
    /// The certificates of `GIGACHAT_CA_BUNDLE_FILE`, trusted next to the
    /// embedded Russian root and the webpki roots.
    extra_roots: Vec<CertificateDer<'static>>,
    /// The client certificate and its chain, when one is configured (its
    /// key lives only inside `client_config`).
    client_chain: Option<Vec<CertificateDer<'static>>>,
    /// The one rustls configuration of every connection to GigaChat (the
    /// forwarding client's and the OAuth client's), so both trust exactly
    /// the same roots and present the same client certificate. Without
    /// ALPN: each client offers the HTTP versions it speaks.
    client_config: Arc<rustls::ClientConfig>,
}

/// The settings, not the rustls configuration built from them (which has
/// no equality of its own).
impl PartialEq for TlsConfig {
    fn eq(&self, other: &Self) -> bool {
        self.verify == other.verify
            && self.extra_roots == other.extra_roots
            && self.client_chain == other.client_chain
    }
}

impl Eq for TlsConfig {}

/// Counts and flags only: the client identity comes with a private key,
/// and a CA bundle in a log line is noise.
impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("verify", &self.verify)
            .field(
                "extra_roots",
                &format!("<{} certificates>", self.extra_roots.len()),
            )
            .field(
                "client_identity",
                &self.client_chain.as_ref().map(|_| "***"),
            )
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Reads `GIGACHAT_CA_BUNDLE_FILE`, `GIGACHAT_VERIFY_SSL_CERTS`,
    /// `GIGACHAT_CERT_FILE`, `GIGACHAT_KEY_FILE` and
    /// `GIGACHAT_KEY_FILE_PASSWORD`.
    ///
    /// An encrypted private key is refused even with a password: the rustls
    /// TLS stack (chosen to avoid OpenSSL on Vercel and Lambda) only loads
    /// unencrypted PKCS#8, PKCS#1 (RSA) or SEC1 (EC) keys, and a clear error
    /// at start-up beats a handshake failure later. The password is accepted
    /// (and unused) with an unencrypted key, so settings copied from a Python
    /// deployment whose key was decrypted keep working.
    pub fn from_env(env: &Env<'_>) -> Result<TlsConfig, ConfigError> {
        let verify = env.bool(VERIFY_SSL_CERTS, true)?;
        let extra_roots = match env.get(CA_BUNDLE_FILE) {
            None => Vec::new(),
            Some(path) => files::read_ca_bundle(path.trim())?,
        };
        let roots = trust_store(verify, &extra_roots)?;
        let cert_path = env.get(CERT_FILE);
        let key_path = env.get(KEY_FILE);
        let identity = files::read_identity(
            cert_path.as_deref().map(str::trim),
            key_path.as_deref().map(str::trim),
            env.get(KEY_FILE_PASSWORD).is_some(),
        )?;
        Self::build(verify, extra_roots, roots, identity)
    }

    /// The settings from parsed certificates (tests that need no files).
    #[cfg(test)]
    fn from_parts(
        verify: bool,
        extra_roots: Vec<CertificateDer<'static>>,
        identity: Option<ClientIdentity>,
    ) -> Result<TlsConfig, ConfigError> {
        let roots = trust_store(verify, &extra_roots)?;
        Self::build(verify, extra_roots, roots, identity)
    }

    fn build(
        verify: bool,
        extra_roots: Vec<CertificateDer<'static>>,
        roots: Option<RootCertStore>,
        identity: Option<ClientIdentity>,
    ) -> Result<TlsConfig, ConfigError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|_| {
                ConfigError::new(CA_BUNDLE_FILE, "TLS protocol versions are unavailable")
            })?;
        let builder = match roots {
            Some(roots) => builder.with_root_certificates(roots),
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate::new(provider))),
        };
        let (client_config, client_chain) = match identity {
            None => (builder.with_no_client_auth(), None),
            Some(identity) => {
                let chain = identity.chain.clone();
                let config = builder
                    .with_client_auth_cert(identity.chain, identity.key)
                    .map_err(|_| {
                        ConfigError::new(
                            identity.key_variable,
                            "holds a private key that does not match the certificate in GIGACHAT_CERT_FILE or uses an algorithm rustls does not support (RSA, ECDSA P-256/P-384 and Ed25519 work; GOST does not)",
                        )
                    })?;
                (config, Some(chain))
            }
        };
        Ok(TlsConfig {
            verify,
            extra_roots,
            client_chain,
            client_config: Arc::new(client_config),
        })
    }

    /// Whether GigaChat's certificate is verified.
    pub fn verify(&self) -> bool {
        self.verify
    }

    /// The rustls configuration both upstream clients are built from.
    pub fn client_config(&self) -> &Arc<rustls::ClientConfig> {
        &self.client_config
    }
}

/// The roots GigaChat's certificate is checked against: the webpki roots,
/// the embedded Russian root and `extra_roots`; `None` when verification is
/// off. The extra roots are checked either way, so a broken bundle is
/// reported even while verification is switched off for a diagnosis.
fn trust_store(
    verify: bool,
    extra_roots: &[CertificateDer<'static>],
) -> Result<Option<RootCertStore>, ConfigError> {
    let invalid = || {
        ConfigError::new(
            CA_BUNDLE_FILE,
            "holds a certificate that is not a valid X.509 CA certificate",
        )
    };
    let mut roots = RootCertStore::empty();
    for cert in extra_roots {
        roots.add(cert.clone()).map_err(|_| invalid())?;
    }
    if !verify {
        return Ok(None);
    }
    roots
        .add(russian_trusted_root().map_err(|_| invalid())?)
        .map_err(|_| invalid())?;
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    Ok(Some(roots))
}
