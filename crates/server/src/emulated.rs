//! Development without credentials: the built-in emulator, in-process.

use std::net::SocketAddr;

use gigachat_emulator::{Credential, Emulator, EmulatorConfig};
use gigachat_proxy_core::{Config, Platform, UpstreamKind};

/// Starts the emulator on a free loopback port with a throwaway key, and
/// returns a proxy configuration pointing at it. Other `GIGACHAT_*`
/// settings (timeout, body limit…) are read through `environment`.
pub async fn start(
    platform: Platform,
    environment: impl Fn(&str) -> Option<String>,
) -> Result<(Config, Emulator), String> {
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD
        .encode(format!("local-dev:{}", uuid::Uuid::new_v4()));
    let scope = "GIGACHAT_API_PERS";
    let emulator = Emulator::start(
        EmulatorConfig {
            credentials: vec![Credential::new(key.clone(), scope)],
            ..EmulatorConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .map_err(|err| err.to_string())?;
    let (base_url, auth_url) = (emulator.base_url(), emulator.auth_url());
    let mut config = Config::from_lookup(platform, |name| match name {
        "GIGACHAT_CREDENTIALS" => Some(key.clone()),
        "GIGACHAT_SCOPE" => Some(scope.into()),
        "GIGACHAT_BASE_URL" => Some(base_url.clone()),
        "GIGACHAT_AUTH_URL" => Some(auth_url.clone()),
        other => environment(other),
    })
    .map_err(|err| err.to_string())?;
    config.upstream_kind = UpstreamKind::Emulator;
    Ok((config, emulator))
}
