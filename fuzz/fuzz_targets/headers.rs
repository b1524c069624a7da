//! Header handling: the upstream allowlist, the client-bound filter and the
//! CORS policy, on arbitrary header maps.
//!
//! Input: byte 0 picks the CORS configuration; the rest is a header list,
//! one `name: value` per `\n`-terminated line (names and values that `http`
//! refuses are skipped, as a server would never hand them over).
//!
//! Invariants:
//! - nothing but the documented allowlist reaches GigaChat (never
//!   `authorization`, `cookie`, `host`, `x-forwarded-*`, `x-api-key`…), and
//!   what is forwarded is the client's values, in order;
//! - hop-by-hop headers, `set-cookie` and `access-control-*` never go back
//!   to the client;
//! - CORS: `Allowed` only ever carries the request's own `Origin`, and only
//!   one the configuration allows (an exact list entry, or a loopback `http`
//!   origin for local development), never an arbitrary reflected one;
//!   `apply` sets `access-control-allow-origin` only for `Allowed`.

#![no_main]

use gigachat_proxy_core::fuzzing::{
    AllowedHosts, AllowedOrigins, Cors, CorsConfig, Verdict, forward_request_headers,
    is_forwarded_to_client,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use libfuzzer_sys::fuzz_target;

const LISTED_ORIGIN: &str = "https://app.example.com";

/// docs/api.md, "What crosses the proxy".
const UPSTREAM_ALLOWLIST: [&str; 12] = [
    "content-type",
    "accept",
    "accept-language",
    "cache-control",
    "user-agent",
    "x-user-agent",
    "x-session-id",
    "x-client-id",
    "x-service-id",
    "x-operation-id",
    "x-trace-id",
    "x-agent-id",
];

const NEVER_UPSTREAM: [&str; 8] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "host",
    "x-api-key",
    "x-real-ip",
    "forwarded",
    "origin",
];

const NEVER_TO_CLIENT: [&str; 10] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authenticate",
    "proxy-connection",
    "set-cookie",
    "strict-transport-security",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let client = header_map(rest);
    check_upstream(&client);
    for name in client.keys() {
        check_client_bound(name);
    }
    let (origins, allow_credentials) = match selector % 6 {
        0 => (AllowedOrigins::List(vec![LISTED_ORIGIN.into()]), false),
        1 => (AllowedOrigins::List(vec![LISTED_ORIGIN.into()]), true),
        2 => (AllowedOrigins::LocalDevelopment, false),
        3 => (AllowedOrigins::LocalDevelopment, true),
        4 => (AllowedOrigins::SameOriginOnly, false),
        _ => (AllowedOrigins::Any, false),
    };
    check_cors(
        CorsConfig {
            origins,
            allow_credentials,
            // The Host check is the path target's neighbour, not this one's:
            // with any host allowed it must never be what decides.
            hosts: AllowedHosts::Any,
        },
        &client,
    );
});

fn header_map(bytes: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in bytes.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let value = &line[colon + 1..];
        let value = &value[value.iter().take_while(|&&b| b == b' ').count()..];
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(value),
        ) {
            map.append(name, value);
        }
    }
    map
}

fn check_upstream(client: &HeaderMap) {
    let mut upstream = HeaderMap::new();
    forward_request_headers(client, &mut upstream);
    for name in upstream.keys() {
        let name = name.as_str();
        assert!(
            !NEVER_UPSTREAM.contains(&name) && !name.starts_with("x-forwarded-"),
            "{name} was forwarded to GigaChat"
        );
        assert!(
            UPSTREAM_ALLOWLIST.contains(&name),
            "{name} is not on the allowlist but was forwarded to GigaChat"
        );
        let sent: Vec<&HeaderValue> = upstream.get_all(name).iter().collect();
        let received: Vec<&HeaderValue> = client.get_all(name).iter().collect();
        assert_eq!(sent, received, "{name} was altered on the way");
    }
    for name in UPSTREAM_ALLOWLIST {
        // A header the client's `Connection` names was meant for the first
        // hop only (RFC 9110 §7.6.1): it must stop at the proxy.
        let hop_only = named_in_connection(client, name);
        assert_eq!(
            upstream.contains_key(name),
            client.contains_key(name) && !hop_only,
            "allowlisted {name} was dropped, or forwarded although `Connection` names it"
        );
    }
}

/// Whether any `Connection` value lists `name` among its comma-separated
/// tokens (case-insensitive, spaces and tabs around a token ignored).
fn named_in_connection(headers: &HeaderMap, name: &str) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|token| token.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
    })
}

fn check_client_bound(name: &HeaderName) {
    let text = name.as_str();
    if NEVER_TO_CLIENT.contains(&text) || text.starts_with("access-control-") {
        assert!(
            !is_forwarded_to_client(name),
            "{text} from GigaChat would reach the client"
        );
    }
}

fn check_cors(config: CorsConfig, request: &HeaderMap) {
    let origins = config.origins.clone();
    let allow_credentials = config.allow_credentials;
    let cors = Cors::new(config);
    let verdict = cors.evaluate(&http::Uri::from_static("/api/gigachat-api/models"), request);
    let origin = request.get(header::ORIGIN);

    match &verdict {
        Verdict::Allowed(allowed) => {
            assert_eq!(
                Some(allowed),
                origin,
                "Allowed carries something other than the request's Origin"
            );
            let text = allowed
                .to_str()
                .unwrap_or_else(|_| panic!("Allowed carries a non-ASCII origin {allowed:?}"));
            match &origins {
                // Origins are case-insensitive in scheme and host; the list
                // is stored lower-cased.
                AllowedOrigins::List(list) => assert!(
                    list.iter().any(|entry| entry.eq_ignore_ascii_case(text)),
                    "origin {text:?} allowed but not in {list:?}"
                ),
                AllowedOrigins::LocalDevelopment => assert!(
                    is_loopback_http_origin(text),
                    "origin {text:?} allowed for local development"
                ),
                AllowedOrigins::SameOriginOnly => {
                    panic!("origin {text:?} allowed under SameOriginOnly")
                }
                AllowedOrigins::Any => {}
            }
        }
        Verdict::NotCrossOrigin => {
            // Only without Origin, or when the browser or the Host header
            // says the page is the site's own.
            if let Some(origin) = origin {
                let same_site = request
                    .get("sec-fetch-site")
                    .is_some_and(|v| v == "same-origin");
                let same_host = match (
                    origin.to_str().ok().and_then(|o| o.split_once("://")),
                    request.get(header::HOST).and_then(|h| h.to_str().ok()),
                ) {
                    (Some((_, origin_host)), Some(host)) => origin_host.eq_ignore_ascii_case(host),
                    _ => false,
                };
                assert!(
                    same_site || same_host,
                    "origin {origin:?} treated as the site's own"
                );
            }
        }
        Verdict::Denied => {
            assert!(origin.is_some(), "Denied without an Origin");
        }
        Verdict::HostNotAllowed => panic!("a host refused although every host is allowed"),
    }

    let mut response = HeaderMap::new();
    cors.apply(&verdict, &mut response);
    assert!(response.contains_key(header::VARY), "no Vary");
    let allow_origin = response.get(header::ACCESS_CONTROL_ALLOW_ORIGIN);
    match &verdict {
        Verdict::Allowed(allowed) => {
            let expected = if origins == AllowedOrigins::Any && !allow_credentials {
                HeaderValue::from_static("*")
            } else {
                allowed.clone()
            };
            assert_eq!(allow_origin, Some(&expected), "wrong allow-origin");
            assert_eq!(
                response.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS),
                allow_credentials,
                "allow-credentials does not match the configuration"
            );
            if Cors::is_preflight(&Method::OPTIONS, request) {
                let mut preflight = HeaderMap::new();
                cors.apply_preflight(allowed.clone(), &mut preflight);
                assert_eq!(
                    preflight.get(header::ACCESS_CONTROL_ALLOW_ORIGIN),
                    Some(&expected),
                    "wrong allow-origin on the preflight"
                );
            }
        }
        Verdict::Denied | Verdict::NotCrossOrigin | Verdict::HostNotAllowed => {
            assert!(
                allow_origin.is_none(),
                "{verdict:?} set allow-origin {allow_origin:?}"
            );
            assert!(
                !response.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS),
                "{verdict:?} set allow-credentials"
            );
        }
    }
    assert!(!Cors::is_preflight(&Method::GET, request));
}

/// `http://localhost`, `http://127.0.0.1` or `http://[::1]`, with an
/// optional numeric port.
fn is_loopback_http_origin(origin: &str) -> bool {
    let Some(rest) = origin.strip_prefix("http://") else {
        return false;
    };
    ["localhost", "127.0.0.1", "[::1]"].iter().any(|host| {
        let Some(head) = rest.get(..host.len()) else {
            return false;
        };
        if !head.eq_ignore_ascii_case(host) {
            return false;
        }
        match &rest[host.len()..] {
            "" => true,
            port => port.strip_prefix(':').is_some_and(|digits| {
                !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
            }),
        }
    })
}
