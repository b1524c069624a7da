//! The demo chat page (`public/` at the repo root), embedded in the binary so
//! `cargo run --release` serves it from any working directory.
//!
//! Only `GET`/`HEAD` on the exact paths below are answered here; every other
//! request (another method on these paths included) goes to the proxy core,
//! which answers it as it answers any unknown route. On Vercel the same files
//! are the project's static output (`vercel.json`: `outputDirectory`), with
//! the same headers.

use http::{HeaderValue, Method, Request, Response, StatusCode, header};

use gigachat_proxy_core::{ProxyBody, empty_body, full_body};

/// The page talks only to its own origin and runs only its own files: no
/// inline script or style, no plugins, no framing, no `<base>` tricks.
/// Keep in sync with the `headers` of `vercel.json`.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; \
form-action 'self'; frame-ancestors 'none'";

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

const INDEX_HTML: &[u8] = include_bytes!("../../../public/index.html");

/// Every path the page is served at; anything else is the proxy's.
pub const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: INDEX_HTML,
    },
    Asset {
        path: "/index.html",
        content_type: "text/html; charset=utf-8",
        body: INDEX_HTML,
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../../public/app.js"),
    },
    Asset {
        path: "/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../../public/style.css"),
    },
    Asset {
        path: "/favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../../public/favicon.svg"),
    },
];

/// The embedded file at exactly `path` (no normalization: `/app.js/`,
/// `//app.js` and `/APP.JS` are not it).
pub fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|asset| asset.path == path)
}

/// The answer for a request the site serves, or `None` to hand the request
/// to the proxy core.
pub fn respond<B>(request: &Request<B>) -> Option<Response<ProxyBody>> {
    let head = match *request.method() {
        Method::GET => false,
        Method::HEAD => true,
        _ => return None,
    };
    let asset = asset(request.uri().path())?;
    let body = if head {
        empty_body()
    } else {
        full_body(asset.body)
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(asset.body.len()));
    // Revalidate every time: a new binary must never run an old app.js.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    Some(response)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use http_body_util::BodyExt;

    fn request(method: Method, uri: &str) -> Request<()> {
        Request::builder().method(method).uri(uri).body(()).unwrap()
    }

    async fn body_of(response: Response<ProxyBody>) -> Vec<u8> {
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec()
    }

    #[tokio::test]
    async fn every_asset_is_served_with_its_type_and_strict_headers() {
        for asset in ASSETS {
            let response = respond(&request(Method::GET, asset.path)).unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{}", asset.path);
            let headers = response.headers().clone();
            assert_eq!(headers[header::CONTENT_TYPE], asset.content_type);
            assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(
                headers[header::CONTENT_SECURITY_POLICY],
                CONTENT_SECURITY_POLICY
            );
            assert_eq!(
                headers[header::CONTENT_LENGTH],
                asset.body.len().to_string().as_str()
            );
            assert!(!asset.body.is_empty(), "{} is empty", asset.path);
            assert_eq!(body_of(response).await, asset.body, "{}", asset.path);
        }
        let types: Vec<_> = ["/", "/app.js", "/style.css", "/favicon.svg"]
            .iter()
            .map(|path| asset(path).unwrap().content_type)
            .collect();
        assert_eq!(
            types,
            [
                "text/html; charset=utf-8",
                "text/javascript; charset=utf-8",
                "text/css; charset=utf-8",
                "image/svg+xml"
            ]
        );
    }

    #[tokio::test]
    async fn head_has_the_headers_and_no_body() {
        let response = respond(&request(Method::HEAD, "/app.js")).unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_LENGTH],
            asset("/app.js").unwrap().body.len().to_string().as_str()
        );
        assert!(body_of(response).await.is_empty());
    }

    #[test]
    fn query_strings_are_ignored() {
        let response = respond(&request(Method::GET, "/?utm=1")).unwrap();
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert!(respond(&request(Method::GET, "/style.css?v=2")).is_some());
    }

    #[test]
    fn everything_else_goes_to_the_proxy() {
        for method in [
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
            Method::PATCH,
        ] {
            assert!(respond(&request(method.clone(), "/")).is_none(), "{method}");
            assert!(respond(&request(method, "/app.js")).is_none());
        }
        for path in [
            "/app.js/",
            "//app.js",
            "/APP.JS",
            "/index.htm",
            "/public/app.js",
            "/../public/app.js",
            "/api/gigachat-health",
            "/api/gigachat-api/models",
            "/favicon.ico",
            "/%61pp.js",
        ] {
            assert!(respond(&request(Method::GET, path)).is_none(), "{path}");
        }
    }

    fn text(path: &str) -> &'static str {
        std::str::from_utf8(asset(path).unwrap().body).unwrap()
    }

    /// The CSP forbids inline code; a page that relied on it would silently
    /// do nothing. Every file the page refers to must be embedded.
    #[test]
    fn the_page_works_under_its_own_csp() {
        let html = text("/");
        for needle in ["<style", " style=", " onclick=", " onload=", "javascript:"] {
            assert!(
                !html.contains(needle),
                "inline code in index.html: {needle}"
            );
        }
        for script in html.split("<script").skip(1) {
            let tag = &script[..script.find('>').unwrap()];
            assert!(tag.contains(" src=\"/"), "an inline <script> in index.html");
        }
        let mut referenced = 0;
        for attr in ["src=\"", "href=\""] {
            for rest in html.split(attr).skip(1) {
                let url = &rest[..rest.find('"').unwrap()];
                assert!(url.starts_with('/'), "index.html refers to {url}");
                assert!(
                    asset(url).is_some(),
                    "index.html refers to {url}, not embedded"
                );
                referenced += 1;
            }
        }
        assert!(referenced >= 3);
        let js = text("/app.js");
        for needle in ["innerHTML", "eval(", "new Function", "http://", "https://"] {
            assert!(!js.contains(needle), "app.js uses {needle}");
        }
        assert!(js.contains("'/api/gigachat-api'"));
        assert!(js.contains("'/api/gigachat-health'"));
        let css = text("/style.css");
        assert!(!css.contains("@import") && !css.contains("url("));
    }
}
