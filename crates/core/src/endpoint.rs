//! What kind of GigaChat call a request is, decided once per request from
//! its method and path, so that every stage asks the same question the same
//! way: whether a failure may be retried, whether the answer may be cached,
//! and the `endpoint` of the access line and the metrics.
//!
//! The kinds follow GigaChat's API (v1 and v2): a new kind of call is a new
//! variant here, its name in [`Endpoint::as_str`] and its line in
//! [`Endpoint::classify`]. The version segment is read by [`split_version`],
//! the parser the upstream URL mapping (`path.rs`) uses too, so a path is
//! never one version to the mapping and another here.
//!
//! Classification takes the path as sent (still percent-encoded) and
//! matches it exactly: a path that spells a known call differently
//! (`cha%74/completions`) is `other`, and anything the proxy does not know
//! is `other` rather than a guess.

use http::Method;

/// A GigaChat API version, as a path segment names it (`v1`, `v2`, …).
///
/// This is the one reading of a version segment: the URL mapping
/// (`path.rs`) decides with it whether a client path replaces the base's
/// version, and [`Endpoint::classify`] what kind of call the path is, so
/// the two never disagree about what a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    V1,
    V2,
    /// `v` and digits, but a version GigaChat does not serve (`v3`, `v01`):
    /// still a version segment for the mapping, yet no known kind of call.
    Other,
}

impl ApiVersion {
    /// `v` followed by one or more ASCII digits; `None` for anything else.
    pub fn of_segment(segment: &str) -> Option<Self> {
        let digits = segment.strip_prefix('v')?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(match digits {
            "1" => ApiVersion::V1,
            "2" => ApiVersion::V2,
            _ => ApiVersion::Other,
        })
    }
}

/// Splits the leading version segment off a client path (the part after
/// `/api/gigachat-api/`): `v2/chat/completions` → `(Some(V2),
/// "chat/completions")`, `v1` → `(Some(V1), "")`, `models` → `(None,
/// "models")`. No allocation: the rest borrows from the path.
pub fn split_version(client_path: &str) -> (Option<ApiVersion>, &str) {
    let (first, rest) = client_path.split_once('/').unwrap_or((client_path, ""));
    match ApiVersion::of_segment(first) {
        Some(version) => (Some(version), rest),
        None => (None, client_path),
    }
}

/// One kind of GigaChat call. `Copy`, so every stage can keep its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST chat/completions` in v1's shape (`choices`).
    Chat,
    /// `POST v2/chat/completions` (one answer with `messages`).
    ChatV2,
    /// `POST embeddings`.
    Embeddings,
    /// `POST tokens/count`.
    TokensCount,
    /// `GET models`.
    Models,
    /// `GET models/{id}`.
    Model,
    /// `GET balance`.
    Balance,
    /// `GET files`.
    FilesList,
    /// `POST files` (multipart).
    FileUpload,
    /// `GET files/{id}`.
    FileInfo,
    /// `GET files/{id}/content`.
    FileContent,
    /// `POST files/{id}/delete`, GigaChat's deletion, and `DELETE
    /// files/{id}`, which its CORS allows: both mean to delete a file.
    FileDelete,
    /// `threads` and everything under it (stateful conversations).
    Threads,
    /// `assistants` and everything under it.
    Assistants,
    /// `batches` (asynchronous batch jobs, any method).
    Batches,
    /// Anything else, including an unknown API version.
    Other,
}

impl Endpoint {
    /// Every kind, in declaration order: `Endpoint::ALL[e as usize] == e`,
    /// which the metrics rely on to find a kind's series by index.
    pub const ALL: [Endpoint; 16] = [
        Endpoint::Chat,
        Endpoint::ChatV2,
        Endpoint::Embeddings,
        Endpoint::TokensCount,
        Endpoint::Models,
        Endpoint::Model,
        Endpoint::Balance,
        Endpoint::FilesList,
        Endpoint::FileUpload,
        Endpoint::FileInfo,
        Endpoint::FileContent,
        Endpoint::FileDelete,
        Endpoint::Threads,
        Endpoint::Assistants,
        Endpoint::Batches,
        Endpoint::Other,
    ];

    /// The kind of a call to `client_path` (the part after
    /// `/api/gigachat-api/`); `default_version` is the version of a path
    /// that names none (the base URL's, `UpstreamBase::default_version`).
    /// `HEAD` is `GET` without the body, so it is the same kind.
    pub fn classify(method: &Method, client_path: &str, default_version: ApiVersion) -> Self {
        let (version, rest) = split_version(client_path);
        let version = version.unwrap_or(default_version);
        if version == ApiVersion::Other || rest.split('/').any(str::is_empty) {
            return Endpoint::Other;
        }
        // The first segments are enough: the longest fixed path below has
        // three, so a longer one keeps four and matches only a family.
        let mut segments = [""; 4];
        let mut count = 0;
        for (slot, segment) in segments.iter_mut().zip(rest.split('/')) {
            *slot = segment;
            count += 1;
        }
        let read = *method == Method::GET || *method == Method::HEAD;
        let post = *method == Method::POST;
        match &segments[..count] {
            ["chat", "completions"] if post => match version {
                ApiVersion::V2 => Endpoint::ChatV2,
                _ => Endpoint::Chat,
            },
            ["embeddings"] if post => Endpoint::Embeddings,
            ["tokens", "count"] if post => Endpoint::TokensCount,
            ["models"] if read => Endpoint::Models,
            ["models", _] if read => Endpoint::Model,
            ["balance"] if read => Endpoint::Balance,
            ["files"] if read => Endpoint::FilesList,
            ["files"] if post => Endpoint::FileUpload,
            ["files", _] if read => Endpoint::FileInfo,
            ["files", _, "content"] if read => Endpoint::FileContent,
            ["files", _, "delete"] if post => Endpoint::FileDelete,
            ["files", _] if *method == Method::DELETE => Endpoint::FileDelete,
            ["threads", ..] => Endpoint::Threads,
            ["assistants", ..] => Endpoint::Assistants,
            ["batches", ..] => Endpoint::Batches,
            _ => Endpoint::Other,
        }
    }

    /// The stable, low-cardinality name for the access line and the
    /// metrics label; dashboards and alerts depend on these staying put.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat",
            Endpoint::ChatV2 => "chat_v2",
            Endpoint::Embeddings => "embeddings",
            Endpoint::TokensCount => "tokens_count",
            Endpoint::Models => "models",
            Endpoint::Model => "model",
            Endpoint::Balance => "balance",
            Endpoint::FilesList => "files_list",
            Endpoint::FileUpload => "file_upload",
            Endpoint::FileInfo => "file_info",
            Endpoint::FileContent => "file_content",
            Endpoint::FileDelete => "file_delete",
            Endpoint::Threads => "threads",
            Endpoint::Assistants => "assistants",
            Endpoint::Batches => "batches",
            Endpoint::Other => "other",
        }
    }

    /// Whether a transient failure may be answered by sending the call
    /// again: reads (whatever the path: GigaChat changes nothing on a GET),
    /// and the POSTs that only compute (chat, embeddings, token counts).
    /// Uploads, deletions and the stateful families are never repeated: a
    /// second upload is a second file, a second thread run a second answer
    /// in the thread.
    pub fn safe_to_repeat(self, method: &Method) -> bool {
        matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
            || (*method == Method::POST && self.only_computes())
    }

    /// The calls whose only effect is their answer (and its cost).
    fn only_computes(self) -> bool {
        matches!(
            self,
            Endpoint::Chat | Endpoint::ChatV2 | Endpoint::Embeddings | Endpoint::TokensCount
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const V1: ApiVersion = ApiVersion::V1;
    const V2: ApiVersion = ApiVersion::V2;

    #[test]
    fn one_reading_of_the_version_segment() {
        use ApiVersion::{Other, V1, V2};
        assert_eq!(
            split_version("v2/chat/completions"),
            (Some(V2), "chat/completions")
        );
        assert_eq!(split_version("v1/models"), (Some(V1), "models"));
        assert_eq!(split_version("v1"), (Some(V1), ""));
        assert_eq!(split_version("v3/models"), (Some(Other), "models"));
        assert_eq!(split_version("v01/models"), (Some(Other), "models"));
        for unversioned in [
            "models",
            "v/models",
            "vx/models",
            "V1/models",
            "v1x/models",
            "",
        ] {
            assert_eq!(split_version(unversioned), (None, unversioned));
        }
    }

    #[test]
    fn every_kind_is_recognised_from_method_and_path() {
        let (get, head, post, delete, put) = (
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::DELETE,
            Method::PUT,
        );
        let table: &[(&Method, &str, ApiVersion, Endpoint)] = &[
            // Chat: the version decides the shape, the path's or the base's.
            (&post, "chat/completions", V1, Endpoint::Chat),
            (&post, "v1/chat/completions", V1, Endpoint::Chat),
            (&post, "v2/chat/completions", V1, Endpoint::ChatV2),
            (&post, "chat/completions", V2, Endpoint::ChatV2),
            (&post, "v1/chat/completions", V2, Endpoint::Chat),
            (&get, "chat/completions", V1, Endpoint::Other),
            (&post, "v3/chat/completions", V1, Endpoint::Other),
            (&post, "v1/v2/chat/completions", V1, Endpoint::Other),
            (&post, "embeddings", V1, Endpoint::Embeddings),
            (&post, "v1/embeddings", V1, Endpoint::Embeddings),
            (&post, "v2/embeddings", V1, Endpoint::Embeddings),
            (&get, "embeddings", V1, Endpoint::Other),
            (&post, "tokens/count", V1, Endpoint::TokensCount),
            (&post, "v1/tokens/count", V1, Endpoint::TokensCount),
            (&post, "tokens", V1, Endpoint::Other),
            (&get, "models", V1, Endpoint::Models),
            (&head, "models", V1, Endpoint::Models),
            (&get, "v1/models", V1, Endpoint::Models),
            (&post, "models", V1, Endpoint::Other),
            (&get, "models/GigaChat-2-Max", V1, Endpoint::Model),
            (&get, "v1/models/GigaChat", V1, Endpoint::Model),
            (&get, "models/a/b", V1, Endpoint::Other),
            (&get, "balance", V1, Endpoint::Balance),
            (&get, "v1/balance", V1, Endpoint::Balance),
            (&post, "balance", V1, Endpoint::Other),
            (&get, "files", V1, Endpoint::FilesList),
            (&post, "files", V1, Endpoint::FileUpload),
            (&post, "v1/files", V1, Endpoint::FileUpload),
            (&get, "files/abc-123", V1, Endpoint::FileInfo),
            (&get, "files/abc-123/content", V1, Endpoint::FileContent),
            (&head, "files/abc-123/content", V1, Endpoint::FileContent),
            (&post, "files/abc-123/delete", V1, Endpoint::FileDelete),
            (&delete, "files/abc-123", V1, Endpoint::FileDelete),
            (&delete, "files", V1, Endpoint::Other),
            (&post, "files/abc-123", V1, Endpoint::Other),
            (&get, "files/abc-123/delete", V1, Endpoint::Other),
            (&post, "threads", V1, Endpoint::Threads),
            (&post, "threads/messages/rerun", V1, Endpoint::Threads),
            (&get, "v1/threads/retrieve", V1, Endpoint::Threads),
            (&post, "assistants", V1, Endpoint::Assistants),
            (&post, "assistants/files/delete", V1, Endpoint::Assistants),
            (&post, "batches", V1, Endpoint::Batches),
            (&get, "batches", V1, Endpoint::Batches),
            (&get, "batches/a/b/c/d/e", V1, Endpoint::Batches),
            (&post, "ai/check", V1, Endpoint::Other),
            (&put, "models", V1, Endpoint::Other),
            // Trailing slashes and empty segments (refused by the path
            // check before this, but the classifier does not rely on it).
            (&get, "models/", V1, Endpoint::Other),
            (&post, "chat/completions/", V1, Endpoint::Other),
            (&get, "files//content", V1, Endpoint::Other),
            (&post, "threads/", V1, Endpoint::Other),
            (&get, "", V1, Endpoint::Other),
            (&get, "v1", V1, Endpoint::Other),
            (&get, "v1/", V1, Endpoint::Other),
            // Exact, case-sensitive, encoded as sent.
            (&get, "Models", V1, Endpoint::Other),
            (&post, "cha%74/completions", V1, Endpoint::Other),
            (&get, "models/Giga%43hat", V1, Endpoint::Model),
            (&get, "a/b/c/d/e/f", V1, Endpoint::Other),
        ];
        let mut seen = std::collections::HashSet::new();
        for &(method, path, default, expected) in table {
            let got = Endpoint::classify(method, path, default);
            assert_eq!(got, expected, "{method} {path} (default {default:?})");
            seen.insert(got);
        }
        for kind in Endpoint::ALL {
            assert!(seen.contains(&kind), "{kind:?} has no row in the table");
        }
    }

    #[test]
    fn names_are_distinct_and_all_is_in_declaration_order() {
        let names: std::collections::HashSet<&str> =
            Endpoint::ALL.iter().map(|e| e.as_str()).collect();
        assert_eq!(names.len(), Endpoint::ALL.len());
        for (index, kind) in Endpoint::ALL.into_iter().enumerate() {
            assert_eq!(kind as usize, index, "{kind:?}");
            assert!(
                kind.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit()),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn only_side_effect_free_calls_are_repeated() {
        let repeat = |method: Method, path: &str| {
            Endpoint::classify(&method, path, V1).safe_to_repeat(&method)
        };
        for (method, path) in [
            (Method::GET, "files/abc/content"),
            (Method::GET, "models"),
            (Method::GET, "batches"),
            (Method::HEAD, "anything/at/all"),
            (Method::POST, "chat/completions"),
            (Method::POST, "v1/chat/completions"),
            (Method::POST, "v2/chat/completions"),
            (Method::POST, "v1/embeddings"),
            (Method::POST, "v2/embeddings"),
            (Method::POST, "tokens/count"),
        ] {
            assert!(repeat(method.clone(), path), "{method} {path}");
        }
        for (method, path) in [
            (Method::POST, "files"),
            (Method::POST, "files/abc/delete"),
            (Method::DELETE, "files/abc"),
            (Method::POST, "threads/run"),
            (Method::POST, "assistants"),
            (Method::POST, "batches"),
            (Method::POST, "ai/check"),
            (Method::POST, "v3/chat/completions"),
            (Method::PUT, "chat/completions"),
        ] {
            assert!(!repeat(method.clone(), path), "{method} {path}");
        }
    }
}
