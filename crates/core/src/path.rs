//! Mapping `/api/gigachat-api/{path}` to a GigaChat URL without letting a
//! client reach any other path or host.
//!
//! The client's path is kept as sent (still percent-encoded) once every
//! segment has been checked: a segment that is empty, a dot segment, or one
//! that decodes to a slash, a backslash or a control character is refused
//! outright, because normalizing such input is how proxies end up forwarding
//! `..` to a neighbouring service. Refusing is also the only answer that
//! cannot surprise anyone: GigaChat has no path that needs these.
//!
//! A `;` (plain or `%3B`) is refused too: Java servers (Tomcat, Jetty,
//! Spring) strip `;params` from every segment before they resolve dot
//! segments, so `..;`, `%2e%2e;x` and `..%3b` are `..` to them, and `;x`
//! is an empty segment. Stripping the parameters here only for the dot
//! test would still forward `models;x`, which such a server reads as
//! `models` while every path rule in front of it sees another path; no
//! GigaChat path or id contains a `;`, so refusing costs nothing.

use http::Uri;
use percent_encoding::percent_decode_str;
use reqwest::Url;

use crate::endpoint::{ApiVersion, split_version};
use crate::error::Error;

/// The configured base URL, split once at start-up so per-request mapping
/// is string concatenation.
#[derive(Debug, Clone)]
pub struct UpstreamBase {
    /// `https://api.giga.chat/v1` (no trailing slash).
    base: String,
    /// `https://api.giga.chat` when the base ends with a version segment
    /// such as `/v1`, so a versioned client path (`v2/chat/completions`) can
    /// replace it.
    versionless: Option<String>,
    /// The version a client path without one is served under: the base's
    /// own, where the base names one that a versioned path may replace.
    version: ApiVersion,
    host: String,
}

impl UpstreamBase {
    pub fn new(base_url: &Url) -> Self {
        let base = base_url.as_str().trim_end_matches('/').to_owned();
        let (versionless, version) = base
            .rsplit_once('/')
            .and_then(|(head, last)| Some((head, ApiVersion::of_segment(last)?)))
            .filter(|(head, _)| {
                head.contains("://") && !head.ends_with(':') && !head.ends_with('/')
            })
            .map_or((None, ApiVersion::V1), |(head, version)| {
                (Some(head.to_owned()), version)
            });
        Self {
            base,
            versionless,
            // A base ending in a version GigaChat does not serve is taken as
            // v1, whose paths every GigaChat call but v2 chat has always
            // used; only a client path that names an unknown version itself
            // is of no known kind.
            version: match version {
                ApiVersion::Other => ApiVersion::V1,
                known => known,
            },
            host: base_url.host_str().unwrap_or_default().to_owned(),
        }
    }

    /// The API version of client paths that name none (see [`ApiVersion`]).
    pub fn default_version(&self) -> ApiVersion {
        self.version
    }

    /// GigaChat's API host, for error messages.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The upstream URL for a client path (the part after
    /// `/api/gigachat-api/`) and query.
    ///
    /// - `chat/completions` → `{base}/chat/completions`
    /// - `v1/models` → `{base without /vN}/v1/models`, and likewise `v2/…`,
    ///   so the official SDKs work with `base_url` set to
    ///   `…/api/gigachat-api/v1` (their v2 chat rewrites the trailing `/v1`).
    ///
    /// The result is an `http::Uri`, which the forwarding client takes as is
    /// (no second parse on the way out).
    pub fn resolve(&self, client_path: &str, query: Option<&str>) -> Result<Uri, Error> {
        check_path(client_path)?;
        let prefix = match &self.versionless {
            Some(versionless) if split_version(client_path).0.is_some() => versionless,
            _ => &self.base,
        };
        let mut url =
            String::with_capacity(prefix.len() + client_path.len() + 2 + query.map_or(0, str::len));
        url.push_str(prefix);
        url.push('/');
        url.push_str(client_path);
        if let Some(query) = query.filter(|q| !q.is_empty()) {
            url.push('?');
            url.push_str(query);
        }
        // Defence in depth: the checks above already make leaving the base
        // impossible, and `Uri` keeps the text as it is (no normalization).
        let within = url
            .strip_prefix(prefix.as_str())
            .is_some_and(|rest| rest.starts_with('/'));
        let uri = Uri::try_from(url).map_err(|_| Error::InvalidPath("not a valid URL path"))?;
        if uri.host() != Some(self.host.as_str()) || !within {
            return Err(Error::InvalidPath("the path leaves the GigaChat API"));
        }
        Ok(uri)
    }
}

fn check_path(path: &str) -> Result<(), Error> {
    if path.is_empty() {
        return Err(Error::RouteNotFound);
    }
    for segment in path.split('/') {
        if segment.is_empty() {
            return Err(Error::InvalidPath(
                "empty path segment (`//` or a trailing slash)",
            ));
        }
        // `?`, `#`, spaces and control bytes never appear in a real request
        // path, and a URL parser would cut or trim at them — turning the
        // `..` in `v2/..?` into a real dot segment.
        if segment
            .bytes()
            .any(|b| b <= 0x20 || b == b'?' || b == b'#' || b == 0x7f)
        {
            return Err(Error::InvalidPath(
                "a query, fragment, space or control character inside the path",
            ));
        }
        if segment.contains('\\') {
            return Err(Error::InvalidPath("backslash in the path"));
        }
        if segment.contains(';') {
            return Err(Error::InvalidPath("path parameter (`;`) in the path"));
        }
        // Most segments hold no escapes: check them as they are.
        let decoded: std::borrow::Cow<'_, [u8]> = if segment.contains('%') {
            percent_decode_str(segment).collect::<Vec<u8>>().into()
        } else {
            segment.as_bytes().into()
        };
        if *decoded == *b"." || *decoded == *b".." {
            return Err(Error::InvalidPath("dot segment (`.` or `..`) in the path"));
        }
        if decoded.iter().any(|&b| b == b'/' || b == b'\\') {
            return Err(Error::InvalidPath("encoded slash or backslash in the path"));
        }
        if decoded.contains(&b';') {
            return Err(Error::InvalidPath(
                "encoded path parameter (`%3B`) in the path",
            ));
        }
        if decoded.iter().any(|&b| b.is_ascii_control()) {
            return Err(Error::InvalidPath("control character in the path"));
        }
        if segment.contains(':') && segment == path.split('/').next().unwrap_or_default() {
            // `http:` as the first segment is an absolute URL smuggled in.
            return Err(Error::InvalidPath("absolute URL in the path"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn base(url: &str) -> UpstreamBase {
        UpstreamBase::new(&Url::parse(url).unwrap())
    }

    #[test]
    fn plain_paths_append_to_the_base() {
        let b = base("https://api.giga.chat/v1");
        assert_eq!(
            b.resolve("chat/completions", None).unwrap().to_string(),
            "https://api.giga.chat/v1/chat/completions"
        );
        assert_eq!(
            b.resolve("files/abc-123/content", Some("x=1&y=%20"))
                .unwrap()
                .to_string(),
            "https://api.giga.chat/v1/files/abc-123/content?x=1&y=%20"
        );
    }

    #[test]
    fn versioned_paths_replace_the_base_version() {
        let b = base("https://api.giga.chat/v1");
        assert_eq!(
            b.resolve("v1/models", None).unwrap().to_string(),
            "https://api.giga.chat/v1/models"
        );
        assert_eq!(
            b.resolve("v2/chat/completions", None).unwrap().to_string(),
            "https://api.giga.chat/v2/chat/completions"
        );
        let legacy = base("https://gigachat.devices.sberbank.ru/api/v1/");
        assert_eq!(
            legacy
                .resolve("v2/chat/completions", None)
                .unwrap()
                .to_string(),
            "https://gigachat.devices.sberbank.ru/api/v2/chat/completions"
        );
        assert_eq!(
            legacy.resolve("models", None).unwrap().to_string(),
            "https://gigachat.devices.sberbank.ru/api/v1/models"
        );
    }

    #[test]
    fn the_base_decides_the_version_of_unversioned_paths() {
        use ApiVersion::{V1, V2};
        assert_eq!(base("https://api.giga.chat/v1").default_version(), V1);
        assert_eq!(base("https://host.example/api/v2/").default_version(), V2);
        assert_eq!(base("http://127.0.0.1:8090/custom").default_version(), V1);
        assert_eq!(base("https://host.example/v3").default_version(), V1);
        // Not a replaceable version (the host's name), so not the default.
        assert_eq!(base("http://v2").default_version(), V1);
    }

    #[test]
    fn a_base_without_version_takes_paths_as_they_are() {
        let b = base("http://127.0.0.1:8090/custom");
        assert_eq!(
            b.resolve("v2/chat/completions", None).unwrap().to_string(),
            "http://127.0.0.1:8090/custom/v2/chat/completions"
        );
    }

    #[test]
    fn traversal_and_smuggling_are_refused() {
        let b = base("https://api.giga.chat/v1");
        let attempts = [
            "..",
            "../admin",
            "chat/../../etc/passwd",
            "./models",
            "%2e%2e/admin",
            "%2E%2e/admin",
            ".%2e/admin",
            "models/%2e",
            "models//x",
            "/models",
            "models/",
            "models%2f..%2fadmin",
            "models%5C..",
            "models\\..\\admin",
            "http://evil.example/x",
            "https:%2f%2fevil.example",
            "//evil.example/x",
            "models%00",
            "models%0d%0aX-Injected:1",
            // Found by the fuzzer: a URL parser cuts at `?`/`#` and trims
            // spaces, turning these `..` into real dot segments.
            "v2/..?",
            "v2/..#x",
            "v2/%2e%2e?",
            "v1/.. ",
            "models x",
        ];
        for attempt in attempts {
            let result = b.resolve(attempt, None);
            assert!(result.is_err(), "{attempt} was accepted: {result:?}");
        }
        assert!(matches!(b.resolve("", None), Err(Error::RouteNotFound)));
    }

    /// Java servers drop `;params` from each segment before resolving dot
    /// segments: every form of a dot segment with parameters, and `;` on
    /// any segment, must stop at the proxy.
    #[test]
    fn path_parameters_are_refused_in_every_segment() {
        let b = base("https://api.giga.chat/v1");
        let attempts = [
            "..;",
            "..;/admin",
            "models/..;/..;/admin",
            "..;x=1/admin",
            "%2e%2e;/admin",
            "%2E%2E%3B/admin",
            "..%3b/admin",
            "..%3B",
            ".%2e;x/admin",
            "%2e;/models",
            ".;/models",
            "v2/..;",
            ";/models",
            "%3b/models",
            "models/;",
            "models;jsessionid=1",
            "chat;x/completions",
            "files/abc%3Bdef/content",
        ];
        for attempt in attempts {
            let result = b.resolve(attempt, None);
            assert!(
                matches!(result, Err(Error::InvalidPath(_))),
                "{attempt} was not refused as an invalid path: {result:?}"
            );
        }
        // Only the path: a `;` in the query is the query's business.
        assert_eq!(
            b.resolve("models", Some("a=1;b=2")).unwrap().to_string(),
            "https://api.giga.chat/v1/models?a=1;b=2"
        );
        // Look-alikes that are ordinary segments still pass.
        for fine in ["files/..abc/content", "files/abc../content", "files/.x"] {
            assert!(b.resolve(fine, None).is_ok(), "{fine}");
        }
    }

    #[test]
    fn the_host_never_changes() {
        let b = base("https://api.giga.chat/v1");
        for path in [
            "models",
            "v1/models",
            "v2/chat/completions",
            "files/%40evil.com",
        ] {
            let url = b.resolve(path, Some("next=https://evil.example")).unwrap();
            assert_eq!(url.host(), Some("api.giga.chat"), "{path}");
        }
    }
}
