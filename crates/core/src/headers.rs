//! Which headers cross the proxy, in each direction.
//!
//! Upstream-bound headers are an allowlist, not a denylist: a browser sends
//! cookies, its own `Authorization`, `X-Forwarded-*` set by CDNs, and
//! whatever a future auth mode adds (`X-API-Key`…); none of that may reach
//! GigaChat, and an allowlist cannot forget one. Client-bound headers drop
//! hop-by-hop ones (the fixed list and whatever the upstream's `Connection`
//! header names, RFC 9110 §7.6.1), GigaChat's Sber-only CORS headers (the
//! proxy owns CORS), cookies and `Server` (it tells an attacker what runs
//! behind the proxy and means nothing to a browser).

use http::{HeaderMap, HeaderName, header};

/// Headers forwarded from the client to GigaChat. `Authorization` is set by
/// the proxy itself; the logging ids are GigaChat's documented
/// `X-Request-ID`/`X-Session-ID`/`X-Client-ID` and the extra ids the Python
/// SDK forwards. `X-Client-ID` must match between the chat call that created
/// an image and the download of that image. `X-User-Agent` is what the SDKs
/// send in a browser, where `User-Agent` cannot be set.
const FORWARDED_TO_UPSTREAM: [HeaderName; 12] = [
    header::CONTENT_TYPE,
    header::ACCEPT,
    header::ACCEPT_LANGUAGE,
    header::CACHE_CONTROL,
    HeaderName::from_static("x-session-id"),
    HeaderName::from_static("x-client-id"),
    HeaderName::from_static("x-service-id"),
    HeaderName::from_static("x-operation-id"),
    HeaderName::from_static("x-trace-id"),
    HeaderName::from_static("x-agent-id"),
    header::USER_AGENT,
    HeaderName::from_static("x-user-agent"),
];

/// Copies the allowlisted client headers into `upstream`, except those the
/// client's `Connection` header names: they were meant for the first hop
/// only (RFC 9110 §7.6.1), whatever their name.
pub fn forward_request_headers(client: &HeaderMap, upstream: &mut HeaderMap) {
    let hop_named = client.contains_key(header::CONNECTION);
    for name in &FORWARDED_TO_UPSTREAM {
        if hop_named && is_named_in_connection(client, name) {
            continue;
        }
        for value in client.get_all(name) {
            upstream.append(name.clone(), value.clone());
        }
    }
}

/// Copies the upstream response headers the client may see into `client`.
pub fn forward_response_headers(upstream: &HeaderMap, client: &mut HeaderMap) {
    for (name, value) in upstream {
        if is_forwarded_to_client(name) && !is_named_in_connection(upstream, name) {
            client.append(name.clone(), value.clone());
        }
    }
}

/// Whether the message's `Connection` header lists `name`: such a header
/// was meant for the hop that sent it only, whatever its name.
pub fn is_named_in_connection(headers: &HeaderMap, name: &HeaderName) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|value| {
        value.as_bytes().split(|byte| *byte == b',').any(|token| {
            token
                .trim_ascii()
                .eq_ignore_ascii_case(name.as_str().as_bytes())
        })
    })
}

/// Whether an upstream response header may be passed to the client (the
/// fixed part of the rule; see also `is_named_in_connection`).
pub fn is_forwarded_to_client(name: &HeaderName) -> bool {
    let name = name.as_str();
    !(matches!(
        name,
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "proxy-authenticate"
            | "proxy-connection"
            | "set-cookie"
            | "x-request-id"
            | "alt-svc"
            | "strict-transport-security"
            | "server"
    ) || name.starts_with("access-control-"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use http::HeaderValue;

    #[test]
    fn credentials_cookies_and_forwarding_headers_stay_behind() {
        let mut client = HeaderMap::new();
        for (name, value) in [
            ("authorization", "Basic c2VjcmV0"),
            ("cookie", "session=abc"),
            ("host", "my-site.example"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-host", "evil"),
            ("x-real-ip", "1.2.3.4"),
            ("connection", "keep-alive, X-Trace-ID"),
            ("proxy-authorization", "Basic x"),
            ("x-api-key", "k"),
            ("content-type", "application/json"),
            ("x-session-id", "s-1"),
            ("x-client-id", "c-1"),
            // Named in `Connection`: for the first hop only.
            ("x-trace-id", "t-1"),
            ("x-user-agent", "GigaChat-js/0.3"),
            ("accept", "text/event-stream"),
        ] {
            client.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let mut upstream = HeaderMap::new();
        forward_request_headers(&client, &mut upstream);
        let names: Vec<&str> = upstream.keys().map(HeaderName::as_str).collect();
        assert_eq!(
            names,
            [
                "content-type",
                "accept",
                "x-session-id",
                "x-client-id",
                "x-user-agent"
            ]
        );
    }

    #[test]
    fn hop_by_hop_and_upstream_cors_are_dropped() {
        for name in [
            "connection",
            "transfer-encoding",
            "access-control-allow-origin",
            "access-control-allow-credentials",
            "set-cookie",
            "server",
        ] {
            assert!(
                !is_forwarded_to_client(&HeaderName::from_static(name)),
                "{name}"
            );
        }
        for name in [
            "content-type",
            "content-length",
            "x-session-id",
            "content-disposition",
        ] {
            assert!(
                is_forwarded_to_client(&HeaderName::from_static(name)),
                "{name}"
            );
        }
    }

    #[test]
    fn headers_the_upstream_connection_header_names_are_dropped() {
        let mut upstream = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, X-Internal-Route"),
            ("connection", " x-backend-secret "),
            ("x-internal-route", "pod-7"),
            ("x-backend-secret", "s3cr3t"),
            ("server", "nginx/1.25"),
            ("content-type", "application/json"),
            ("x-session-id", "s-1"),
        ] {
            upstream.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let mut client = HeaderMap::new();
        forward_response_headers(&upstream, &mut client);
        let names: Vec<&str> = client.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["content-type", "x-session-id"]);
    }
}
