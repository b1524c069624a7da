//! The one pooled HTTP client to GigaChat, built at start-up.
//!
//! Built once per process (never per request) so connections and TLS
//! sessions are reused across requests and across warm serverless
//! invocations. The OAuth call goes through the same client: GigaChat's
//! OAuth host needs the same Russian root and, for corporate keys, the same
//! client certificate.

use std::time::Duration;

use crate::config::Config;
use crate::error::Error;

use super::tls::{self, TlsConfig};

/// The client with the configuration's own TLS settings (`config.tls`).
pub fn build(config: &Config) -> Result<reqwest::Client, Error> {
    build_with_tls(config, &config.tls)
}

/// The client with `tls` applied on top of the embedded Russian root and
/// the webpki roots. Only this client gets these settings: nothing else in
/// the process (the Redis limiter, JWKS fetches) trusts the extra roots or
/// skips verification.
pub fn build_with_tls(config: &Config, tls: &TlsConfig) -> Result<reqwest::Client, Error> {
    apply_tls(reqwest::Client::builder(), tls)?
        .connect_timeout(config.connect_timeout)
        // Longest silence between two reads: bounds a stalled stream
        // without capping how long a healthy stream may run.
        .read_timeout(config.stream_idle_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .tcp_keepalive(Duration::from_secs(60))
        .http2_adaptive_window(true)
        // A redirect from GigaChat is never expected; following one could
        // carry the request (and its body) somewhere unintended.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("gigachat-proxy/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|_| Error::Internal("could not build the upstream HTTP client"))
}

/// The trust and identity settings of the upstream client, apart from the
/// rest so tests can apply exactly these to a client of their own.
pub(crate) fn apply_tls(
    builder: reqwest::ClientBuilder,
    tls: &TlsConfig,
) -> Result<reqwest::ClientBuilder, Error> {
    let root = tls::russian_trusted_root()
        .map_err(|_| Error::Internal("the embedded Russian Trusted Root CA does not parse"))?;
    let mut builder = builder.add_root_certificate(root);
    for cert in tls.extra_roots()? {
        builder = builder.add_root_certificate(cert);
    }
    if let Some(identity) = tls.identity()? {
        builder = builder.identity(identity);
    }
    if !tls.verify {
        tracing::warn!(
            variable = tls::VERIFY_SSL_CERTS,
            "GIGACHAT_VERIFY_SSL_CERTS=false: TLS certificate verification toward GigaChat is OFF. \
             Anyone on the network path can impersonate GigaChat and read the authorization key, \
             the access tokens and every prompt. Use GIGACHAT_CA_BUNDLE_FILE to trust a corporate \
             proxy's CA instead, and never run production like this."
        );
        builder = builder.danger_accept_invalid_certs(true);
    }
    Ok(builder)
}
