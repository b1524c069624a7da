//! The client's address, from the one source each platform vouches for.
//!
//! A rate limit keyed on an address the client can choose is no limit, so
//! `X-Forwarded-For` is read only as far as trusted proxies wrote it:
//! - local server: the socket peer, or with `GIGACHAT_PROXY_TRUSTED_HOPS=N`
//!   (nginx, a load balancer in front) the N-th entry from the right;
//! - Lambda: the request context's `sourceIp` (set by AWS), likewise moved
//!   along `X-Forwarded-For` by N trusted hops (CloudFront in front: 1);
//! - Vercel: `X-Real-IP`, which Vercel's edge sets and overwrites.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName};

use crate::config::env::Platform;

/// The peer (local server) or the platform's source address (Lambda), put
/// into the request's extensions by the adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

pub fn resolve(
    platform: Platform,
    headers: &HeaderMap,
    addr: Option<&ClientAddr>,
    trusted_hops: usize,
) -> Option<IpAddr> {
    if platform == Platform::Vercel {
        return header_ip(headers, &X_REAL_IP).or_else(|| forwarded_for(headers).last().copied());
    }
    let peer = addr.map(|a| a.0);
    if trusted_hops == 0 {
        return peer;
    }
    let chain = forwarded_for(headers);
    // With N trusted proxies the entry the outermost one appended is the
    // N-th from the right; anything left of it came from the client.
    chain
        .len()
        .checked_sub(trusted_hops)
        .and_then(|i| chain.get(i).copied())
        .or(peer)
}

fn header_ip(headers: &HeaderMap, name: &HeaderName) -> Option<IpAddr> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

fn forwarded_for(headers: &HeaderMap) -> Vec<IpAddr> {
    headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|entry| entry.trim().parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn the_local_server_trusts_only_the_socket_peer_by_default() {
        let headers = xff("1.2.3.4");
        let peer = ClientAddr(ip("10.0.0.9"));
        assert_eq!(
            resolve(Platform::Local, &headers, Some(&peer), 0),
            Some(ip("10.0.0.9"))
        );
    }

    #[test]
    fn trusted_hops_take_the_entry_the_outermost_proxy_wrote() {
        // The client forged 6.6.6.6; nginx appended the real 203.0.113.7.
        let headers = xff("6.6.6.6, 203.0.113.7");
        let peer = ClientAddr(ip("127.0.0.1"));
        assert_eq!(
            resolve(Platform::Local, &headers, Some(&peer), 1),
            Some(ip("203.0.113.7"))
        );
        assert_eq!(
            resolve(Platform::Lambda, &headers, Some(&peer), 2),
            Some(ip("6.6.6.6"))
        );
        assert_eq!(
            resolve(Platform::Local, &headers, Some(&peer), 3),
            Some(ip("127.0.0.1"))
        );
    }

    #[test]
    fn vercel_uses_its_edge_headers() {
        let mut headers = xff("6.6.6.6, 198.51.100.1");
        assert_eq!(
            resolve(Platform::Vercel, &headers, None, 0),
            Some(ip("198.51.100.1"))
        );
        headers.insert(X_REAL_IP, HeaderValue::from_static("198.51.100.2"));
        assert_eq!(
            resolve(Platform::Vercel, &headers, None, 0),
            Some(ip("198.51.100.2"))
        );
    }
}
