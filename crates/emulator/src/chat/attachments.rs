//! v1 `messages[].attachments`: ids of uploaded files the model should
//! read. GigaChat resolves each id in the key's file storage and limits how
//! many images a request may carry; the emulator does the same, and names
//! the files in its reply so a test can see that an upload reached the
//! model.

use http::StatusCode;
use serde_json::Value;

use super::ChatError;
use super::validate::invalid;

/// How the service treats a file: images and audio are looked at, text
/// documents are read (only the first one of a message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MediaKind {
    Image,
    Audio,
    Text,
    Other,
}

/// What the chat needs to know about an uploaded file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AttachedFile {
    pub filename: String,
    pub bytes: usize,
    pub kind: MediaKind,
}

/// Resolves a file id in the emulator's storage.
pub(crate) type FileLookup<'a> = &'a dyn Fn(&str) -> Option<AttachedFile>;

/// GigaChat's documented limits: one image per message, ten per request.
const IMAGES_PER_MESSAGE: usize = 1;
const IMAGES_PER_REQUEST: usize = 10;

/// Classifies a file by its extension (GigaChat's accepted formats), and
/// by its leading bytes for images uploaded under a name without one.
pub(crate) fn media_kind(filename: &str, content: &[u8]) -> MediaKind {
    let extension = filename
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .unwrap_or_default();
    match extension.as_str() {
        "jpg" | "jpeg" | "png" | "tif" | "tiff" | "bmp" => return MediaKind::Image,
        "mp3" | "mp4" | "m4a" | "wav" | "weba" | "ogg" | "opus" => return MediaKind::Audio,
        "txt" | "doc" | "docx" | "pdf" | "epub" | "ppt" | "pptx" => return MediaKind::Text,
        _ => {}
    }
    let image_magic: [&[u8]; 5] = [
        b"\x89PNG\r\n\x1a\n",
        b"\xff\xd8\xff",
        b"II*\0",
        b"MM\0*",
        b"BM",
    ];
    if image_magic.iter().any(|magic| content.starts_with(magic)) {
        MediaKind::Image
    } else {
        MediaKind::Other
    }
}

fn file_not_found() -> ChatError {
    ChatError {
        status: StatusCode::NOT_FOUND,
        message: "File not found".to_owned(),
    }
}

/// Checks one message's `attachments` and returns its files in order.
/// `images` counts the request's images so far.
pub(super) fn check_message(
    msg: &Value,
    idx: usize,
    files: FileLookup<'_>,
    images: &mut usize,
) -> Result<Vec<AttachedFile>, ChatError> {
    let ids = match msg.get("attachments") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(ids)) => ids,
        Some(_) => {
            return Err(invalid(format!(
                "messages[{idx}].attachments must be an array of file ids"
            )));
        }
    };
    let mut out = Vec::with_capacity(ids.len());
    let mut here = 0;
    for id in ids {
        let id = id.as_str().ok_or_else(|| {
            invalid(format!(
                "messages[{idx}].attachments must be an array of file ids"
            ))
        })?;
        let file = files(id).ok_or_else(file_not_found)?;
        if file.kind == MediaKind::Image {
            here += 1;
            *images += 1;
            if here > IMAGES_PER_MESSAGE {
                return Err(invalid(format!(
                    "messages[{idx}]: only {IMAGES_PER_MESSAGE} image per message is allowed"
                )));
            }
            if *images > IMAGES_PER_REQUEST {
                return Err(invalid(format!(
                    "no more than {IMAGES_PER_REQUEST} images per request are allowed"
                )));
            }
        }
        out.push(file);
    }
    Ok(out)
}

/// The reply's note of what the model saw: every image and audio file, and
/// only the first text document (the service ignores the others).
pub(super) fn mention(files: &[AttachedFile]) -> String {
    let mut seen_text = false;
    let names: Vec<String> = files
        .iter()
        .filter(|f| match f.kind {
            MediaKind::Text if seen_text => false,
            MediaKind::Text => {
                seen_text = true;
                true
            }
            _ => true,
        })
        .map(|f| format!("{} ({} bytes)", f.filename, f.bytes))
        .collect();
    if names.is_empty() {
        String::new()
    } else {
        format!(" [attached: {}]", names.join(", "))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use serde_json::json;

    use super::*;

    fn store(id: &str) -> Option<AttachedFile> {
        let (filename, kind) = match id {
            "img1" | "img2" => (format!("{id}.png"), MediaKind::Image),
            "doc1" | "doc2" => (format!("{id}.txt"), MediaKind::Text),
            _ => return None,
        };
        Some(AttachedFile {
            filename,
            bytes: 3,
            kind,
        })
    }

    #[test]
    fn kinds_by_extension_then_magic() {
        assert_eq!(media_kind("a.JPG", b""), MediaKind::Image);
        assert_eq!(media_kind("a.ogg", b""), MediaKind::Audio);
        assert_eq!(media_kind("a.pdf", b"%PDF"), MediaKind::Text);
        assert_eq!(
            media_kind("file", b"\x89PNG\r\n\x1a\nrest"),
            MediaKind::Image
        );
        assert_eq!(media_kind("file", b"hello"), MediaKind::Other);
    }

    #[test]
    fn unknown_ids_and_bad_shapes_are_refused() {
        let mut images = 0;
        let e =
            check_message(&json!({"attachments": ["nope"]}), 0, &store, &mut images).unwrap_err();
        assert_eq!(
            (e.status, e.message.as_str()),
            (StatusCode::NOT_FOUND, "File not found")
        );
        for bad in [json!({"attachments": "img1"}), json!({"attachments": [1]})] {
            let e = check_message(&bad, 2, &store, &mut images).unwrap_err();
            assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
            assert!(
                e.message.contains("messages[2].attachments"),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn image_limits_per_message_and_request() {
        let mut images = 0;
        let e = check_message(
            &json!({"attachments": ["img1", "img2"]}),
            1,
            &store,
            &mut images,
        )
        .unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.message.contains("per message"), "{}", e.message);

        let mut images = 0;
        for i in 0..10 {
            check_message(
                &json!({"attachments": ["img1", "doc1"]}),
                i,
                &store,
                &mut images,
            )
            .unwrap();
        }
        let e =
            check_message(&json!({"attachments": ["img2"]}), 10, &store, &mut images).unwrap_err();
        assert!(e.message.contains("per request"), "{}", e.message);
    }

    #[test]
    fn mention_names_only_the_first_text_document() {
        let mut images = 0;
        let files = check_message(
            &json!({"attachments": ["doc1", "img1", "doc2"]}),
            0,
            &store,
            &mut images,
        )
        .unwrap();
        assert_eq!(
            mention(&files),
            " [attached: doc1.txt (3 bytes), img1.png (3 bytes)]"
        );
        assert_eq!(mention(&[]), "");
    }
}
