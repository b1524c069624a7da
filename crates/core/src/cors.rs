//! CORS: let the site's own pages (and the origins the operator lists) in,
//! keep every other origin out, and say so the same way on every answer,
//! streams and errors included.
//!
//! The policy runs before authentication and rate limits: a preflight
//! carries no credentials, and a preflight answered 401 is the most common
//! way proxies break browsers. CORS is not access control (any non-browser
//! client can send any `Origin`); end-user auth is. What CORS decides is
//! which *web pages* may read the answers.

use http::{HeaderMap, HeaderName, HeaderValue, Method, header};

use crate::config::ConfigError;

const ALLOW_METHODS: &str = "GET, POST, PUT, PATCH, DELETE, OPTIONS";
const ALLOW_HEADERS: &str = "Authorization, Content-Type, Accept, Cache-Control, X-Request-ID, X-Session-ID, X-Client-ID, X-API-Key";
const EXPOSE_HEADERS: &str = "X-Request-ID, X-Upstream-Request-ID, Retry-After, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, RateLimit-Policy, X-Session-ID, X-Cache, Server-Timing, X-Proxy-Overhead-MS";
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

#[derive(Debug, Clone)]
pub struct CorsConfig {
    pub origins: AllowedOrigins,
    pub allow_credentials: bool,
}

impl CorsConfig {
    pub fn from_lookup(
        lookup: &dyn Fn(&str) -> Option<String>,
        local_server: bool,
    ) -> Result<Self, ConfigError> {
        let origins = match lookup("GIGACHAT_PROXY_ALLOWED_ORIGINS") {
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
        let allow_credentials = match lookup("GIGACHAT_PROXY_CORS_ALLOW_CREDENTIALS")
            .as_deref()
            .map(str::trim)
        {
            None | Some("false" | "0" | "no") => false,
            Some("true" | "1" | "yes") => true,
            Some(_) => {
                return Err(ConfigError {
                    variable: "GIGACHAT_PROXY_CORS_ALLOW_CREDENTIALS",
                    problem: "must be true or false".into(),
                });
            }
        };
        if allow_credentials && origins == AllowedOrigins::Any {
            return Err(ConfigError {
                variable: "GIGACHAT_PROXY_CORS_ALLOW_CREDENTIALS",
                problem: "cannot be true while GIGACHAT_PROXY_ALLOWED_ORIGINS is `*`: list the origins instead".into(),
            });
        }
        Ok(Self {
            origins,
            allow_credentials,
        })
    }
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

    pub fn evaluate(&self, headers: &HeaderMap) -> Verdict {
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
            CorsConfig::from_lookup(
                &|name| {
                    (name == "GIGACHAT_PROXY_ALLOWED_ORIGINS")
                        .then(|| value.clone())
                        .flatten()
                },
                local,
            )
            .unwrap(),
        )
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
            cors.evaluate(&headers(&[("host", "app.example")])),
            Verdict::NotCrossOrigin
        );
        assert_eq!(
            cors.evaluate(&headers(&[
                ("host", "app.example"),
                ("origin", "https://app.example")
            ])),
            Verdict::NotCrossOrigin
        );
        assert_eq!(
            cors.evaluate(&headers(&[
                ("host", "fn.lambda-url.aws"),
                ("origin", "https://app.example"),
                ("sec-fetch-site", "same-origin")
            ])),
            Verdict::NotCrossOrigin
        );
    }

    #[test]
    fn deployments_default_to_same_origin_only() {
        let cors = cors(None, false);
        let verdict = cors.evaluate(&headers(&[
            ("host", "app.example"),
            ("origin", "https://evil.example"),
        ]));
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
                matches!(cors.evaluate(&h), Verdict::Allowed(_)),
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
            assert_eq!(cors.evaluate(&h), Verdict::Denied, "{denied}");
        }
    }

    #[test]
    fn a_list_allows_exactly_its_origins_and_replaces_the_local_default() {
        let cors = cors(
            Some("https://App.Example.com/, http://localhost:5173"),
            true,
        );
        let mut h = headers(&[("host", "api.example")]);
        h.insert(
            "origin",
            HeaderValue::from_static("https://app.example.com"),
        );
        let verdict = cors.evaluate(&h);
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
        assert!(
            out["access-control-expose-headers"]
                .to_str()
                .unwrap()
                .contains("Retry-After")
        );
        assert_eq!(out["access-control-max-age"], "600");
        assert!(out.get("access-control-allow-credentials").is_none());
        h.insert("origin", HeaderValue::from_static("http://127.0.0.1:5173"));
        assert_eq!(cors.evaluate(&h), Verdict::Denied);
    }

    #[test]
    fn star_is_explicit_and_never_combined_with_credentials() {
        let star = cors(Some("*"), false);
        let mut h = headers(&[
            ("host", "api.example"),
            ("origin", "https://anyone.example"),
        ]);
        let verdict = star.evaluate(&h);
        let mut out = HeaderMap::new();
        star.apply(&verdict, &mut out);
        assert_eq!(out["access-control-allow-origin"], "*");
        h.remove("origin");
        let err = CorsConfig::from_lookup(
            &|name| match name {
                "GIGACHAT_PROXY_ALLOWED_ORIGINS" => Some("*".into()),
                "GIGACHAT_PROXY_CORS_ALLOW_CREDENTIALS" => Some("true".into()),
                _ => None,
            },
            false,
        )
        .unwrap_err();
        assert_eq!(err.variable, "GIGACHAT_PROXY_CORS_ALLOW_CREDENTIALS");
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
            let err = CorsConfig::from_lookup(&|_| Some(value.clone()), false).unwrap_err();
            assert_eq!(err.variable, "GIGACHAT_PROXY_ALLOWED_ORIGINS", "{bad}");
            assert!(!err.problem.contains("secret"));
        }
    }
}
