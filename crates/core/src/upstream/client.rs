//! The one pooled HTTP client to GigaChat, built at start-up.
//!
//! Built once per process (never per request) so connections and TLS
//! sessions are reused across requests and across warm serverless
//! invocations.

use std::time::Duration;

use crate::config::Config;
use crate::error::Error;

pub fn build(config: &Config) -> Result<reqwest::Client, Error> {
    let root = super::tls::russian_trusted_root()
        .map_err(|_| Error::Internal("the embedded Russian Trusted Root CA does not parse"))?;
    reqwest::Client::builder()
        .add_root_certificate(root)
        .connect_timeout(config.connect_timeout)
        // Longest silence between two reads: bounds a stalled stream
        // without capping how long a healthy stream may run.
        .read_timeout(config.stream_idle_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(64)
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
