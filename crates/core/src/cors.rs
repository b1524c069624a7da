//! CORS: let the site's own pages (and the origins the operator lists) in,
//! keep every other origin out, and say so the same way on every answer,
//! streams and errors included.
//!
//! The policy runs before authentication and rate limits: a preflight
//! carries no credentials, and a preflight answered 401 is the most common
//! way proxies break browsers. CORS is not access control (any non-browser
//! client can send any `Origin`); end-user auth is. What CORS decides is
//! which *web pages* may read the answers.
//!
//! The `Host` check (see [`AllowedHosts`]) runs first, for every request:
//! a page on `http://rebind.attacker.example:3000` whose name an attacker
//! re-points at 127.0.0.1 is *same-origin* with the local server, so no
//! `Origin` rule can stop it; only refusing host names the server does not
//! go by can.

use std::net::{Ipv4Addr, Ipv6Addr};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, header};

use crate::config::env::{ConfigError, Env};

/// What a preflight may ask for: exactly the methods the API route forwards
/// (a preflight that passed for a method the route then refuses with 405
/// would only move the error later); a test in `routes::api` keeps the two
/// equal.
pub(crate) const ALLOW_METHODS: &str = "GET, HEAD, POST, DELETE, OPTIONS";
/// Every request header the official SDKs send (the npm `gigachat` sends
/// `RqUID` on the OAuth call and `X-User-Agent` instead of `User-Agent` in
/// browsers; Firefox lets a page set `User-Agent` itself; the Python SDK's
/// context variables add the `X-*-ID` tracing headers), plus the proxy's own
/// `X-API-Key`, and what the `openai` npm SDK sends from a browser
/// (`X-Stainless-*` telemetry, `OpenAI-*` account headers; neither is
/// forwarded to GigaChat). A header missing here fails the preflight, and
/// with it every call the SDK makes from a page on another origin.
const ALLOW_HEADERS: &str = "Authorization, Content-Type, Accept, Cache-Control, User-Agent, RqUID, X-User-Agent, X-Request-ID, X-Session-ID, X-Client-ID, X-Service-ID, X-Operation-ID, X-Trace-ID, X-Agent-ID, X-API-Key, X-Stainless-Arch, X-Stainless-Lang, X-Stainless-OS, X-Stainless-Package-Version, X-Stainless-Retry-Count, X-Stainless-Runtime, X-Stainless-Runtime-Version, X-Stainless-Timeout, X-Stainless-Helper-Method, OpenAI-Organization, OpenAI-Project, OpenAI-Beta";
/// What a page's script may read of an answer: the ids and limits it shows
/// or waits on; `X-Should-Retry` and the token-budget headers are read by
/// the `openai` SDKs' retry logic.
const EXPOSE_HEADERS: &str = "X-Request-ID, X-Upstream-Request-ID, Retry-After, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, RateLimit-Policy, X-Session-ID, X-Cache, Server-Timing, X-Proxy-Overhead-MS, X-GigaChat-Proxy-Max-Tokens-Clamped, X-Should-Retry, X-RateLimit-Limit-Tokens, X-RateLimit-Remaining-Tokens, X-RateLimit-Reset-Tokens";
const MAX_AGE_SECS: &str = "600";
const VARY: &str = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";

/// Which origins other than the site itself may call the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// Deployments by default: only the site's own pages (no CORS headers).
    SameOriginOnly,
    /// Exact `scheme://host[:port]` origins, lower-cased.
    List(Vec<String>),
    /// `http://localhost:*` and `http://127.0.0.1:*` (Vite's 5173 and
    /// friends): the local server's default in development.
    LocalDevelopment,
    /// `*`: any page may call. Only when explicitly configured.
    Any,
}

/// Which `Host` names requests may carry: the defence against DNS
/// rebinding, where a page on an attacker's name that now resolves to
/// 127.0.0.1 calls the local server as its own origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedHosts {
    /// Any host: deployments, and a server listening beyond loopback (a
    /// VPS or container has real host names a proxy in front passes on).
    Any,
    /// IP addresses, `localhost` and `*.localhost` (names an attacker cannot
    /// point anywhere: rebinding needs a DNS name it controls), plus these
    /// lower-cased names: `app.example` exactly, `.example` for `example`
    /// and every subdomain.
    Listed(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct CorsConfig {
    pub origins: AllowedOrigins,
    pub allow_credentials: bool,
    pub hosts: AllowedHosts,
}

impl CorsConfig {
    /// `local_server`: the local/self-hosted server, which listens where
    /// `HOST` says (127.0.0.1 when unset, as the server itself defaults).
    pub fn from_env(env: &Env<'_>, local_server: bool) -> Result<Self, ConfigError> {
        let origins = match env.get("GIGACHAT_PROXY_ALLOWED_ORIGINS") {
            None if local_server => AllowedOrigins::LocalDevelopment,
            None => AllowedOrigins::SameOriginOnly,
            Some(value) if value.trim() == "*" => AllowedOrigins::Any,
            Some(value) => {
                let mut list = Vec::new();
                for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    list.push(normalize_origin(item).ok_or_else(|| ConfigError {
                        variable: "GIGACHAT_PROXY_ALLOWED_ORIGINS",
                        problem: "must be `*` or a comma-separated list of origins like https://app.example.com or http://localhost:5173 (scheme, host and optional port; no path)".into(),
                    })?);
                }
                if list.is_empty() {
                    AllowedOrigins::SameOriginOnly
                } else {
                    AllowedOrigins::List(list)
                }
            }
        };
        let allow_credentials = env.bool("GIGACHAT_PROXY_CORS_ALLOW_CREDENTIALS", false)?;
        if allow_credentials && origins == AllowedOrigins::Any {
            return Err(ConfigError {
                variable: "GIGACHAT_PROXY_CORS_ALLOW_CREDENTIALS",
                problem: "cannot be true while GIGACHAT_PROXY_ALLOWED_ORIGINS is `*`: list the origins instead".into(),
            });
        }
        let hosts = match env.get("GIGACHAT_PROXY_ALLOWED_HOSTS") {
            Some(value) => parse_allowed_hosts(&value)?,
            None if local_server
                && env
                    .get("HOST")
                    .as_deref()
                    .is_none_or(is_loopback_bind_address) =>
            {
                AllowedHosts::Listed(Vec::new())
            }
            None => AllowedHosts::Any,
        };
        Ok(Self {
            origins,
            allow_credentials,
            hosts,
        })
    }
}

fn parse_allowed_hosts(value: &str) -> Result<AllowedHosts, ConfigError> {
    let value = value.trim();
    if value == "*" || value.eq_ignore_ascii_case("all") {
        return Ok(AllowedHosts::Any);
    }
    let mut names = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let name = item.strip_prefix('.').unwrap_or(item);
        let valid = name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
        if !valid {
            return Err(ConfigError {
                variable: "GIGACHAT_PROXY_ALLOWED_HOSTS",
                problem: "must be `*` (any host) or a comma-separated list of host names like app.example.com, or .example.com for a domain and its subdomains (no scheme, no port)".into(),
            });
        }
        names.push(item.to_ascii_lowercase());
    }
    Ok(AllowedHosts::Listed(names))
}

/// The local server listens on loopback only: `127.0.0.0/8`, `::1`,
/// `localhost`. Anything else (`0.0.0.0`, a LAN address, a name) means
/// others reach it under names of their own.
fn is_loopback_bind_address(host: &str) -> bool {
    let host = host.trim();
    let unbracketed = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    match unbracketed.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

impl AllowedHosts {
    /// Whether every host the request names (its target's authority, as
    /// HTTP/2 and absolute-form requests carry it, and its `Host`) is
    /// allowed. A request naming none (HTTP/1.0) is let through: browsers
    /// always send `Host`.
    pub fn allow(&self, uri: &Uri, headers: &HeaderMap) -> bool {
        let AllowedHosts::Listed(names) = self else {
            return true;
        };
        let authority_allowed = uri
            .authority()
            .is_none_or(|authority| host_allowed(authority.as_str(), names));
        authority_allowed
            && headers
                .get_all(header::HOST)
                .iter()
                .all(|value| value.to_str().is_ok_and(|value| host_allowed(value, names)))
    }
}

/// `value` is `host[:port]` (a `Host` header or an authority).
fn host_allowed(value: &str, listed: &[String]) -> bool {
    let Some(name) = host_name(value.trim()) else {
        return false;
    };
    if let Some(ipv6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return ipv6.parse::<Ipv6Addr>().is_ok();
    }
    // One trailing dot is the same name written fully qualified.
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return false;
    }
    name.parse::<Ipv4Addr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || ends_with_ignore_case(name, ".localhost")
        || listed.iter().any(|entry| match entry.strip_prefix('.') {
            Some(domain) => name.eq_ignore_ascii_case(domain) || ends_with_ignore_case(name, entry),
            None => name.eq_ignore_ascii_case(entry),
        })
}

/// The host of `host[:port]`, brackets kept for IPv6; None when malformed
/// (userinfo, a stray colon, a non-numeric port).
fn host_name(value: &str) -> Option<&str> {
    if value.starts_with('[') {
        let end = value.find(']')?;
        let (name, rest) = value.split_at(end + 1);
        return (rest.is_empty() || is_port(rest.strip_prefix(':')?)).then_some(name);
    }
    let name = match value.rsplit_once(':') {
        Some((name, port)) if is_port(port) => name,
        Some(_) => return None,
        None => value,
    };
    (!name.contains([':', '@'])).then_some(name)
}

fn is_port(port: &str) -> bool {
    port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
}

fn ends_with_ignore_case(name: &str, suffix: &str) -> bool {
    name.len() > suffix.len()
        && name.as_bytes()[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

/// `scheme://host[:port]`, lower-cased, without a trailing slash; None if
/// the value is not an origin.
fn normalize_origin(value: &str) -> Option<String> {
    let value = value.trim_end_matches('/').to_ascii_lowercase();
    let (scheme, rest) = value.split_once("://")?;
    if !matches!(scheme, "http" | "https") || rest.is_empty() {
        return None;
    }
    let valid = rest
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    valid.then_some(value)
}

/// What the policy says about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A `Host` the server does not go by (see [`AllowedHosts`]): refused
    /// whatever the origin, preflights included.
    HostNotAllowed,
    /// No `Origin`, or the site's own page: nothing to add.
    NotCrossOrigin,
    /// A cross-origin page that may read the answer: echo its origin.
    Allowed(HeaderValue),
    /// A cross-origin page that may not.
    Denied,
}

pub struct Cors {
    config: CorsConfig,
}

impl Cors {
    pub fn new(config: CorsConfig) -> Self {
        Self { config }
    }

    pub fn evaluate(&self, uri: &Uri, headers: &HeaderMap) -> Verdict {
        if !self.config.hosts.allow(uri, headers) {
            return Verdict::HostNotAllowed;
        }
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Verdict::NotCrossOrigin;
        };
        if is_same_origin(origin, headers) {
            return Verdict::NotCrossOrigin;
        }
        let Ok(text) = origin.to_str() else {
            return Verdict::Denied;
        };
        let allowed = match &self.config.origins {
            AllowedOrigins::SameOriginOnly => false,
            AllowedOrigins::Any => true,
            AllowedOrigins::List(list) => list
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(text)),
            AllowedOrigins::LocalDevelopment => is_local_development_origin(text),
        };
        if allowed {
            Verdict::Allowed(origin.clone())
        } else {
            Verdict::Denied
        }
    }

    /// A CORS preflight: `OPTIONS` with `Origin` and
    /// `Access-Control-Request-Method`.
    pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
        method == Method::OPTIONS
            && headers.contains_key(header::ORIGIN)
            && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// Headers for the answer to an allowed preflight.
    pub fn apply_preflight(&self, origin: HeaderValue, headers: &mut HeaderMap) {
        self.apply(&Verdict::Allowed(origin), headers);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOW_METHODS),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(MAX_AGE_SECS),
        );
    }

    /// Headers on every answer. `Vary` always, so a shared cache never
    /// serves one origin's answer to another; the origin is echoed only
    /// when allowed, never reflected otherwise.
    pub fn apply(&self, verdict: &Verdict, headers: &mut HeaderMap) {
        headers.append(header::VARY, HeaderValue::from_static(VARY));
        let Verdict::Allowed(origin) = verdict else {
            return;
        };
        let allow_origin =
            if self.config.origins == AllowedOrigins::Any && !self.config.allow_credentials {
                HeaderValue::from_static("*")
            } else {
                origin.clone()
            };
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
        if self.config.allow_credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
}

/// The site's own pages: the browser says so (`Sec-Fetch-Site`, which pages
/// cannot forge; it also covers a CDN that rewrites `Host`), or `Origin`
/// names the host the request was sent to.
fn is_same_origin(origin: &HeaderValue, headers: &HeaderMap) -> bool {
    const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");
    if headers
        .get(SEC_FETCH_SITE)
        .is_some_and(|v| v == "same-origin")
    {
        return true;
    }
    let (Ok(origin), Some(host)) = (
        origin.to_str(),
        headers.get(header::HOST).and_then(|h| h.to_str().ok()),
    ) else {
        return false;
    };
    origin
        .split_once("://")
        .is_some_and(|(_, origin_host)| origin_host.eq_ignore_ascii_case(host))
}

fn is_local_development_origin(origin: &str) -> bool {
    let Some(rest) = origin.strip_prefix("http://") else {
        return false;
    };
    let host = match rest.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        Some(_) => return false,
        None => rest,
    };
    host.eq_ignore_ascii_case("localhost") || host == "127.0.0.1" || host == "[::1]"
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn cors(value: Option<&str>, local: bool) -> Cors {
        let value = value.map(str::to_owned);
        Cors::new(
            CorsConfig::from_env(
                &Env::new(&|name| {
                    (name == "GIGACHAT_PROXY_ALLOWED_ORIGINS")
                        .then(|| value.clone())
                        .flatten()
                }),
                local,
            )
            .unwrap(),
        )
    }

    fn hosts(vars: &[(&str, &str)], local: bool) -> Result<AllowedHosts, ConfigError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        CorsConfig::from_env(
            &Env::new(&|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())),
            local,
        )
        .map(|config| config.hosts)
    }

    fn with_host(host: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        map
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        map
    }

    #[test]
    fn requests_without_origin_or_from_the_site_itself_are_not_cross_origin() {
        let cors = cors(None, false);
        assert_eq!(
            cors.evaluate(&Uri::default(), &headers(&[("host", "app.example")])),
            Verdict::NotCrossOrigin
        );
        assert_eq!(
            cors.evaluate(
                &Uri::default(),
                &headers(&[("host", "app.example"), ("origin", "https://app.example")])
            ),
            Verdict::NotCrossOrigin
        );
        assert_eq!(
            cors.evaluate(
                &Uri::default(),
                &headers(&[
                    ("host", "fn.lambda-url.aws"),
                    ("origin", "https://app.example"),
                    ("sec-fetch-site", "same-origin")
                ])
            ),
            Verdict::NotCrossOrigin
        );
    }

    #[test]
    fn deployments_default_to_same_origin_only() {
        let cors = cors(None, false);
        let verdict = cors.evaluate(
            &Uri::default(),
            &headers(&[("host", "app.example"), ("origin", "https://evil.example")]),
        );
        assert_eq!(verdict, Verdict::Denied);
        let mut out = HeaderMap::new();
        cors.apply(&verdict, &mut out);
        assert!(out.get("access-control-allow-origin").is_none());
        assert!(
            out.get("vary")
                .unwrap()
                .to_str()
                .unwrap()
                .contains("Origin")
        );
    }

    #[test]
    fn the_local_server_allows_localhost_on_any_port_only() {
        let cors = cors(None, true);
        for allowed in [
            "http://localhost:5173",
            "http://127.0.0.1:8080",
            "http://localhost",
            "http://[::1]:3000",
        ] {
            let mut h = headers(&[("host", "127.0.0.1:3000")]);
            h.insert("origin", HeaderValue::from_str(allowed).unwrap());
            assert!(
                matches!(cors.evaluate(&Uri::default(), &h), Verdict::Allowed(_)),
                "{allowed}"
            );
        }
        for denied in [
            "https://localhost:5173",
            "http://localhost.evil.example",
            "http://127.0.0.1.nip.io:80",
            "http://evil.example",
            "null",
        ] {
            let mut h = headers(&[("host", "127.0.0.1:3000")]);
            h.insert("origin", HeaderValue::from_str(denied).unwrap());
            assert_eq!(
                cors.evaluate(&Uri::default(), &h),
                Verdict::Denied,
                "{denied}"
            );
        }
    }

    #[test]
    fn a_list_allows_exactly_its_origins_and_replaces_the_local_default() {
        let cors = cors(
            Some("https://App.Example.com/, http://localhost:5173"),
            true,
        );
        let mut h = headers(&[("host", "localhost:3000")]);
        h.insert(
            "origin",
            HeaderValue::from_static("https://app.example.com"),
        );
        let verdict = cors.evaluate(&Uri::default(), &h);
        assert_eq!(
            verdict,
            Verdict::Allowed(HeaderValue::from_static("https://app.example.com"))
        );
        let mut out = HeaderMap::new();
        cors.apply_preflight(
            HeaderValue::from_static("https://app.example.com"),
            &mut out,
        );
        assert_eq!(
            out["access-control-allow-origin"],
            "https://app.example.com"
        );
        assert!(
            out["access-control-allow-headers"]
                .to_str()
                .unwrap()
                .contains("Authorization")
        );
        assert!(
            out["access-control-allow-headers"]
                .to_str()
                .unwrap()
                .contains("X-Request-ID")
        );
        let exposed = out["access-control-expose-headers"].to_str().unwrap();
        // The `openai` SDKs' retry logic reads these in a browser too.
        for name in ["Retry-After", "X-Should-Retry", "X-RateLimit-Reset-Tokens"] {
            assert!(exposed.contains(name), "{name} not exposed: {exposed}");
        }
        assert_eq!(out["access-control-max-age"], "600");
        assert!(out.get("access-control-allow-credentials").is_none());
        h.insert("origin", HeaderValue::from_static("http://127.0.0.1:5173"));
        assert_eq!(cors.evaluate(&Uri::default(), &h), Verdict::Denied);
    }

    #[test]
    fn star_is_explicit_and_never_combined_with_credentials() {
        let star = cors(Some("*"), false);
        let mut h = headers(&[
            ("host", "api.example"),
            ("origin", "https://anyone.example"),
        ]);
        let verdict = star.evaluate(&Uri::default(), &h);
        let mut out = HeaderMap::new();
        star.apply(&verdict, &mut out);
        assert_eq!(out["access-control-allow-origin"], "*");
        h.remove("origin");
        let err = CorsConfig::from_env(
            &Env::new(&|name| match name {
                "GIGACHAT_PROXY_ALLOWED_ORIGINS" => Some("*".into()),
                "GIGACHAT_PROXY_CORS_ALLOW_CREDENTIALS" => Some("true".into()),
                _ => None,
            }),
            false,
        )
        .unwrap_err();
        assert_eq!(err.variable, "GIGACHAT_PROXY_CORS_ALLOW_CREDENTIALS");
    }

    /// DNS rebinding: a rebinding page is same-origin with the local
    /// server (its `Origin` names the `Host` it sent), so the `Host` itself
    /// must be refused, with or without `Origin`, preflight or not.
    #[test]
    fn a_loopback_server_refuses_host_names_an_attacker_can_rebind() {
        let cors = cors(None, true);
        for host in [
            "rebind.attacker.example:3000",
            "rebind.attacker.example",
            "localhost.attacker.example:3000",
            "127.0.0.1.nip.io:3000",
            "localhost:3000.attacker.example",
            "user@localhost:3000",
            "[::1:3000",
            "[::1]x",
            "localhost:http",
            "evil:3000:1",
            "",
        ] {
            let mut h = with_host(host);
            assert_eq!(
                cors.evaluate(&Uri::default(), &h),
                Verdict::HostNotAllowed,
                "{host:?}"
            );
            if let Ok(origin) = HeaderValue::from_str(&format!("http://{host}")) {
                h.insert(header::ORIGIN, origin);
                h.insert(
                    header::ACCESS_CONTROL_REQUEST_METHOD,
                    HeaderValue::from_static("POST"),
                );
                assert_eq!(
                    cors.evaluate(&Uri::default(), &h),
                    Verdict::HostNotAllowed,
                    "{host:?} with Origin"
                );
            }
        }
        let mut bytes = with_host("localhost");
        bytes.insert(
            header::HOST,
            HeaderValue::from_bytes(b"rebind\xff.example").unwrap(),
        );
        assert_eq!(
            cors.evaluate(&Uri::default(), &bytes),
            Verdict::HostNotAllowed
        );
        // A second `Host` (or the target's authority) cannot smuggle a name.
        let mut two = with_host("localhost:3000");
        two.append(
            header::HOST,
            HeaderValue::from_static("rebind.attacker.example"),
        );
        assert_eq!(
            cors.evaluate(&Uri::default(), &two),
            Verdict::HostNotAllowed
        );
        let absolute: Uri = "http://rebind.attacker.example:3000/api/gigachat-health"
            .parse()
            .unwrap();
        assert_eq!(
            cors.evaluate(&absolute, &with_host("localhost:3000")),
            Verdict::HostNotAllowed
        );

        for host in [
            "localhost:3000",
            "LocalHost",
            "localhost.",
            "app.localhost:5173",
            "127.0.0.1:3000",
            "127.0.0.1",
            "[::1]:3000",
            "[::1]",
            "192.168.1.20:3000",
            "[fe80::1]:8080",
        ] {
            assert_eq!(
                cors.evaluate(&Uri::default(), &with_host(host)),
                Verdict::NotCrossOrigin,
                "{host:?}"
            );
        }
        // HTTP/1.0 without `Host`: no name to rebind.
        assert_eq!(
            cors.evaluate(&Uri::default(), &HeaderMap::new()),
            Verdict::NotCrossOrigin
        );
        let h2: Uri = "http://127.0.0.1:3000/api/gigachat-health".parse().unwrap();
        assert_eq!(
            cors.evaluate(&h2, &HeaderMap::new()),
            Verdict::NotCrossOrigin
        );
    }

    #[test]
    fn the_host_check_follows_the_bind_address_and_the_variable() {
        let listed = AllowedHosts::Listed(Vec::new());
        for bind in [
            None,
            Some("127.0.0.1"),
            Some("127.0.0.2"),
            Some("::1"),
            Some("[::1]"),
            Some(" localhost "),
        ] {
            let vars: Vec<(&str, &str)> = bind.map(|b| ("HOST", b)).into_iter().collect();
            assert_eq!(hosts(&vars, true).unwrap(), listed, "bind {bind:?}");
        }
        // Listening beyond loopback: self-hosted under real names.
        for bind in ["0.0.0.0", "::", "192.168.1.20", "myhost"] {
            assert_eq!(
                hosts(&[("HOST", bind)], true).unwrap(),
                AllowedHosts::Any,
                "{bind}"
            );
        }
        // Deployments: the platform routes by host already.
        assert_eq!(hosts(&[], false).unwrap(), AllowedHosts::Any);
        // The origin list is about other pages; rebinding is same-origin.
        assert_eq!(
            hosts(
                &[("GIGACHAT_PROXY_ALLOWED_ORIGINS", "https://app.example")],
                true
            )
            .unwrap(),
            listed
        );
        for any in ["*", " all ", "ALL"] {
            assert_eq!(
                hosts(&[("GIGACHAT_PROXY_ALLOWED_HOSTS", any)], true).unwrap(),
                AllowedHosts::Any
            );
        }

        let named = hosts(
            &[
                ("GIGACHAT_PROXY_ALLOWED_HOSTS", " .Example.com, dev.test ,"),
                ("HOST", "0.0.0.0"),
            ],
            false,
        )
        .unwrap();
        assert_eq!(
            named,
            AllowedHosts::Listed(vec![".example.com".into(), "dev.test".into()])
        );
        let uri = Uri::default();
        for allowed in [
            "example.com",
            "EXAMPLE.com:8080",
            "a.b.example.com",
            "dev.test",
            "dev.test.",
            "localhost",
            "10.0.0.1",
        ] {
            assert!(named.allow(&uri, &with_host(allowed)), "{allowed}");
        }
        for denied in [
            "badexample.com",
            "example.com.evil",
            "x.dev.test",
            "dev.tes",
            ".example.com",
        ] {
            assert!(!named.allow(&uri, &with_host(denied)), "{denied}");
        }
    }

    #[test]
    fn bad_host_lists_name_the_variable_not_the_value() {
        for bad in [
            "https://secret.example",
            "secret.example:8080",
            "secret..example",
            "secret example",
            "*.secret.example",
            ".",
        ] {
            let err = hosts(&[("GIGACHAT_PROXY_ALLOWED_HOSTS", bad)], true).unwrap_err();
            assert_eq!(err.variable, "GIGACHAT_PROXY_ALLOWED_HOSTS", "{bad}");
            assert!(!err.problem.contains("secret"), "{bad}");
        }
    }

    /// Defect found with the npm SDK in Chromium: every header the official
    /// SDKs send must pass the preflight, or every cross-origin call fails.
    #[test]
    fn preflights_allow_every_header_the_official_sdks_send() {
        let cors = cors(None, true);
        let mut out = HeaderMap::new();
        cors.apply_preflight(HeaderValue::from_static("http://localhost:5173"), &mut out);
        let allowed: Vec<String> = out["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .split(',')
            .map(|name| name.trim().to_ascii_lowercase())
            .collect();
        for sent in [
            // npm `gigachat` 0.0.20: the OAuth call, then API calls in a browser.
            "Authorization",
            "RqUID",
            "User-Agent",
            "Content-Type",
            "Accept",
            "X-User-Agent",
            "Cache-Control",
            // Python `gigachat` 0.2.3: build_headers' context variables.
            "X-Session-ID",
            "X-Request-ID",
            "X-Service-ID",
            "X-Operation-ID",
            "X-Client-ID",
            "X-Trace-ID",
            "X-Agent-ID",
            // The proxy's own end-user key.
            "X-API-Key",
            // npm `openai` 7.59 in a browser (`dangerouslyAllowBrowser`).
            "X-Stainless-Lang",
            "X-Stainless-Package-Version",
            "X-Stainless-OS",
            "X-Stainless-Arch",
            "X-Stainless-Runtime",
            "X-Stainless-Runtime-Version",
            "X-Stainless-Retry-Count",
            "X-Stainless-Timeout",
        ] {
            assert!(
                allowed.contains(&sent.to_ascii_lowercase()),
                "{sent} is not in Access-Control-Allow-Headers: {allowed:?}"
            );
        }
    }

    #[test]
    fn bad_origin_lists_name_the_variable() {
        for bad in [
            "secret-value.example",
            "ftp://secret-value",
            "https://secret-value.example/path",
            "https://",
            "https://secret value",
        ] {
            let value = bad.to_owned();
            let lookup = |_: &str| Some(value.clone());
            let err = CorsConfig::from_env(&Env::new(&lookup), false).unwrap_err();
            assert_eq!(err.variable, "GIGACHAT_PROXY_ALLOWED_ORIGINS", "{bad}");
            assert!(!err.problem.contains("secret"));
        }
    }
}
