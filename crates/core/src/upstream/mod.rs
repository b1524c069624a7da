//! Everything that talks to GigaChat: the pooled HTTP client with its trust
//! roots, the OAuth token manager, and the streaming response body.

pub(crate) mod body;
pub(crate) mod client;
mod connector;
pub(crate) mod oauth;
pub(crate) mod retry;
pub(crate) mod shared_token;
pub(crate) mod sse;
pub(crate) mod tls;
pub(crate) mod token;

use crate::error::{Error, TransportCause};

/// Classifies a reqwest failure (OAuth) without exposing its text
/// (which can carry URLs with client-supplied query strings) to the client.
pub(crate) fn transport_error(
    err: &reqwest::Error,
    stage: &'static str,
    host: &str,
    timeout_secs: u64,
) -> Error {
    classify(
        err,
        err.is_connect(),
        err.is_timeout(),
        stage,
        host,
        timeout_secs,
    )
}

/// Classifies a failure of the forwarding client the same way.
pub(crate) fn forward_error(
    err: &hyper_util::client::legacy::Error,
    stage: &'static str,
    host: &str,
    timeout_secs: u64,
) -> Error {
    classify(
        err,
        err.is_connect(),
        timed_out(err),
        stage,
        host,
        timeout_secs,
    )
}

fn classify(
    err: &(dyn std::error::Error + 'static),
    is_connect: bool,
    is_timeout: bool,
    stage: &'static str,
    host: &str,
    timeout_secs: u64,
) -> Error {
    if is_timeout {
        return Error::UpstreamTimeout {
            stage,
            seconds: timeout_secs,
        };
    }
    let cause = if mentions_certificate(err) {
        TransportCause::Tls
    } else if is_connect {
        TransportCause::Connect
    } else {
        TransportCause::Other
    };
    Error::UpstreamUnreachable {
        stage,
        host: host.to_owned(),
        cause,
    }
}

/// The connect timeout (`GIGACHAT_PROXY_CONNECT_TIMEOUT`) surfaces as an
/// I/O `TimedOut` somewhere in the error's chain.
fn timed_out(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(err) = current {
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        current = err.source();
    }
    false
}

fn mentions_certificate(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(err) = current {
        let text = err.to_string().to_ascii_lowercase();
        // rustls words: "invalid peer certificate: UnknownIssuer / certificate
        // expired / not valid for name", and the peer's "received fatal
        // alert: CertificateRequired" when GigaChat wants a client
        // certificate. The alert comes after the client's side of a TLS 1.3
        // handshake, so over HTTP/2 it can also surface only as "connection
        // was not ready" (hyper drops the cause); that stays `Other`.
        if text.contains("certificate")
            || text.contains("unknownissuer")
            || text.contains("tls handshake")
            || text.contains("fatal alert")
        {
            return true;
        }
        current = err.source();
    }
    false
}
