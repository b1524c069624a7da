//! Path normalization: `UpstreamBase::resolve` never panics, and whatever it
//! accepts stays on the configured host, under the configured base path
//! (minus a trailing `/vN`, which a versioned client path replaces), with no
//! dot segment (plain or percent-encoded, with or without `;params`, which
//! Java servers strip before resolving dot segments), no `//` and no
//! backslash.
//!
//! Input: byte 0 picks the base URL; the rest is the client path (the part
//! after `/api/gigachat-api/`) and, after the first 0xFF byte (never part of
//! UTF-8, so every `&str` path stays reachable), the query string.

#![no_main]

use gigachat_proxy_core::fuzzing::UpstreamBase;
use libfuzzer_sys::fuzz_target;
use reqwest::Url;

const BASES: [&str; 4] = [
    "https://api.giga.chat/v1",
    "https://gigachat.devices.sberbank.ru/api/v1",
    "http://127.0.0.1:8090/custom",
    "https://gigachat.devices.sberbank.ru/api/v1/",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let base_url = Url::parse(BASES[usize::from(selector) % BASES.len()]).unwrap();
    let base = UpstreamBase::new(&base_url);
    let (path, query) = match rest.iter().position(|&b| b == 0xFF) {
        Some(at) => (&rest[..at], Some(&rest[at + 1..])),
        None => (rest, None),
    };
    let path = String::from_utf8_lossy(path);
    let query = query.map(String::from_utf8_lossy);
    if let Ok(uri) = base.resolve(&path, query.as_deref()) {
        // Read back by a WHATWG URL parser, as a server or another proxy
        // would: any dot segment or host change it finds is a bug.
        let url = Url::parse(&uri.to_string()).expect("a resolved URI is a valid URL");
        check(&base_url, &path, query.as_deref(), &url);
    }
});

fn check(base: &Url, client_path: &str, query: Option<&str>, url: &Url) {
    let context = format!("base {base}, path {client_path:?}, query {query:?} -> {url}");
    assert_eq!(url.scheme(), base.scheme(), "scheme changed: {context}");
    assert_eq!(url.host_str(), base.host_str(), "host changed: {context}");
    assert_eq!(url.port(), base.port(), "port changed: {context}");
    assert!(
        url.username().is_empty() && url.password().is_none(),
        "userinfo appeared: {context}"
    );

    // Under the base path; only a version segment may replace a trailing `/vN`.
    let base_path = base.path().trim_end_matches('/');
    let (versionless, base_version) = match base_path.rsplit_once('/') {
        Some((head, last)) if is_version(last) => (head, true),
        _ => (base_path, false),
    };
    let path = url.path();
    if !path.starts_with(&format!("{base_path}/")) {
        let rest = path.strip_prefix(&format!("{versionless}/"));
        let first = rest.map(|rest| rest.split('/').next().unwrap_or_default());
        assert!(
            base_version && first.is_some_and(is_version),
            "left the base path {base_path:?}: {context}"
        );
    }

    assert!(!path.contains("//"), "`//` in the path: {context}");
    assert!(!path.contains('\\'), "backslash in the path: {context}");
    for segment in path.split('/').skip(1) {
        let decoded = percent_decode(segment.as_bytes());
        for form in [segment.as_bytes(), &decoded] {
            // `..;x` is `..` to a server that strips path parameters.
            let without_params = form.split(|&b| b == b';').next().unwrap_or_default();
            for form in [form, without_params] {
                assert!(
                    form != b"." && form != b"..",
                    "dot segment {segment:?} in the path: {context}"
                );
            }
        }
        assert!(
            !decoded.iter().any(|&b| b == b'/' || b == b'\\'),
            "encoded slash or backslash in segment {segment:?}: {context}"
        );
    }
}

fn is_version(segment: &str) -> bool {
    segment.len() >= 2
        && segment.starts_with('v')
        && segment[1..].bytes().all(|b| b.is_ascii_digit())
}

/// One round of percent-decoding (written out here so the check does not
/// share code with the core's own).
fn percent_decode(input: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                input.get(i + 1).and_then(|&b| hex(b)),
                input.get(i + 2).and_then(|&b| hex(b)),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    out
}
