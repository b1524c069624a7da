//! What every platform test needs: an emulator on a loopback port and a
//! proxy configured for a platform the way a deployment would be, with only
//! the credentials and the emulator's URLs set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;

use gigachat_emulator::{DEFAULT_CREDENTIALS, Emulator, EmulatorConfig};
use gigachat_proxy_core::{Config, Platform, Proxy};

pub async fn emulator() -> Emulator {
    Emulator::start(
        EmulatorConfig::default(),
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .unwrap()
}

/// A proxy for `platform` with no variable set beyond the credentials and
/// the emulator's URLs, so the platform's defaults are what is tested.
pub fn deployed_proxy(emulator: &Emulator, platform: Platform) -> Proxy {
    let (base, auth) = (emulator.base_url(), emulator.auth_url());
    let config = Config::from_lookup(platform, |name| match name {
        "GIGACHAT_CREDENTIALS" => Some(DEFAULT_CREDENTIALS.to_owned()),
        "GIGACHAT_BASE_URL" => Some(base.clone()),
        "GIGACHAT_AUTH_URL" => Some(auth.clone()),
        _ => None,
    })
    .unwrap();
    Proxy::new(config)
}
