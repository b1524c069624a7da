#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::json;

use super::*;
use crate::openai::ChatPlan;

const NAMESPACE: [&[u8]; 2] = [b"credential", b"gigachat.example"];

#[test]
fn the_form_has_the_file_with_its_name_and_type_then_purpose_general() {
    let body = multipart_body("B0UND", "cat.png", "image/png", b"\x89PNG\r\n--data");
    let expected = concat!(
        "--B0UND\r\n",
        "Content-Disposition: form-data; name=\"file\"; filename=\"cat.png\"\r\n",
        "Content-Type: image/png\r\n",
        "\r\n",
        "\u{0}",
        "\r\n--B0UND\r\n",
        "Content-Disposition: form-data; name=\"purpose\"\r\n",
        "\r\n",
        "general\r\n",
        "--B0UND--\r\n",
    )
    .replace('\u{0}', "");
    let data_at = expected.find("\r\n\r\n").unwrap() + 4;
    let mut want = expected.as_bytes()[..data_at].to_vec();
    want.extend_from_slice(b"\x89PNG\r\n--data");
    want.extend_from_slice(&expected.as_bytes()[data_at..]);
    assert_eq!(
        String::from_utf8_lossy(&body),
        String::from_utf8_lossy(&want)
    );
}

#[test]
fn names_and_media_types_cannot_break_out_of_the_form() {
    let body = multipart_body(
        "B",
        "a\"\r\nContent-Type: text/html\\\u{7}.pdf",
        "image/png\r\nX-Evil: 1",
        b"x",
    );
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("filename=\"a%22%0D%0AContent-Type: text/html%5C.pdf\"\r\n"),
        "{text}"
    );
    assert!(
        text.contains("\r\nContent-Type: application/octet-stream\r\n\r\nx\r\n"),
        "{text}"
    );
    assert!(!text.contains("X-Evil"), "{text}");
    assert_eq!(form_filename(""), "file");
    assert_eq!(form_filename("отчёт.pdf"), "отчёт.pdf");
    assert_eq!(
        form_filename(&"я".repeat(500)).chars().count(),
        FILENAME_MAX_CHARS
    );
    assert!(is_media_type("application/vnd.ms-powerpoint"));
    assert!(!is_media_type("image/"));
    assert!(!is_media_type("image png"));
}

#[test]
fn the_cache_key_depends_on_caller_type_bytes_and_deployment() {
    let key = upload_key(NAMESPACE, "key:alice", "image/png", b"bytes");
    assert_eq!(
        key,
        upload_key(NAMESPACE, "key:alice", "image/png", b"bytes")
    );
    for other in [
        upload_key(NAMESPACE, "key:bob", "image/png", b"bytes"),
        upload_key(NAMESPACE, "key:alice", "image/jpeg", b"bytes"),
        upload_key(NAMESPACE, "key:alice", "image/png", b"bytes!"),
        upload_key(
            [b"other credential", NAMESPACE[1]],
            "key:alice",
            "image/png",
            b"bytes",
        ),
        upload_key(
            [NAMESPACE[0], b"other.host"],
            "key:alice",
            "image/png",
            b"bytes",
        ),
        // Length prefixes: moving a byte between fields changes the key.
        upload_key(NAMESPACE, "key:alic", "eimage/png", b"bytes"),
    ] {
        assert_ne!(key, other);
    }
    assert_eq!(hex(&[0x00, 0xab, 0x7f]), "00ab7f");
}

#[test]
fn remembered_ids_expire_and_stay_within_their_bound() {
    let ttl = Duration::from_secs(60);
    let ids = RememberedIds::new(3, ttl);
    let now = Instant::now();
    let key = |n: u8| [n; 32];
    ids.put(key(1), "one", now);
    assert_eq!(ids.get(&key(1), now).as_deref(), Some("one"));
    assert_eq!(
        ids.get(&key(1), now + ttl - Duration::from_millis(1))
            .as_deref(),
        Some("one")
    );
    assert_eq!(ids.get(&key(1), now + ttl), None);
    // Full: the oldest goes first.
    for n in 2..=5 {
        ids.put(key(n), &n.to_string(), now);
    }
    assert_eq!(ids.len().0, 3);
    assert_eq!(ids.get(&key(2), now), None);
    assert_eq!(ids.get(&key(5), now).as_deref(), Some("5"));
    // Expired entries make room before live ones are dropped.
    let later = now + ttl;
    ids.put(key(9), "9", later);
    assert_eq!(ids.len().0, 1);
    assert_eq!(ids.get(&key(9), later).as_deref(), Some("9"));
    // The same key stored again and again leaves no unbounded order behind
    // a live oldest entry.
    for _ in 0..100 {
        ids.put(key(7), "7", later);
        let (live, order) = ids.len();
        assert!(live <= 3 && order <= 2 * 3 + 16, "{live} {order}");
    }
}

#[test]
fn gigachat_answers_become_an_id_or_an_error_the_client_can_read() {
    let host = "gigachat.example";
    let ok = br#"{"id":"c757a9c5-1","object":"file","bytes":3,"purpose":"general"}"#;
    assert_eq!(
        outcome(StatusCode::OK, ok, "a.png", host).unwrap(),
        "c757a9c5-1"
    );
    let long = "m".repeat(1000);
    let refused = format!(r#"{{"status":413,"message":"Payload too large {long}"}}"#);
    match outcome(
        StatusCode::PAYLOAD_TOO_LARGE,
        refused.as_bytes(),
        "big.png",
        host,
    )
    .unwrap_err()
    {
        Error::InvalidRequest { message, code, .. } => {
            assert_eq!(code, "upload_refused");
            assert!(message.contains("big.png"), "{message}");
            assert!(message.contains("413"), "{message}");
            assert!(message.contains("Payload too large"), "{message}");
            assert!(message.len() < 500, "{}", message.len());
        }
        other => panic!("{other:?}"),
    }
    // An error object inside a 200 is the error it names.
    let in_200 = br#"{"status":422,"message":"Invalid params: unsupported file"}"#;
    assert!(matches!(
        outcome(StatusCode::OK, in_200, "a.exe", host),
        Err(Error::InvalidRequest { .. })
    ));
    assert!(matches!(
        outcome(StatusCode::TOO_MANY_REQUESTS, b"", "a.png", host),
        Err(Error::UpstreamBusy { .. })
    ));
    let failed = outcome(StatusCode::INTERNAL_SERVER_ERROR, b"<html>", "a.png", host).unwrap_err();
    assert_eq!(failed.status(), StatusCode::BAD_GATEWAY);
    for no_id in [
        &b"{}"[..],
        br#"{"id":""}"#,
        br#"{"id":"a\u0000b"}"#,
        b"not json",
    ] {
        assert!(matches!(
            outcome(StatusCode::OK, no_id, "a.png", host),
            Err(Error::Internal(_))
        ));
    }
}

#[test]
fn ids_are_appended_to_the_message_attachments() {
    let mut body = json!({"messages": [
        {"role": "user", "content": "a"},
        {"role": "user", "content": "b", "attachments": ["known"]},
        {"role": "user", "content": "c", "attachments": null},
        {"role": "user", "content": "d", "attachments": "x"},
    ]});
    let body = body.as_object_mut().unwrap();
    push_attachment(message(body, 0).unwrap(), "f1".into()).unwrap();
    push_attachment(message(body, 0).unwrap(), "f2".into()).unwrap();
    push_attachment(message(body, 1).unwrap(), "f3".into()).unwrap();
    push_attachment(message(body, 2).unwrap(), "f4".into()).unwrap();
    assert_eq!(body["messages"][0]["attachments"], json!(["f1", "f2"]));
    assert_eq!(body["messages"][1]["attachments"], json!(["known", "f3"]));
    assert_eq!(body["messages"][2]["attachments"], json!(["f4"]));
    assert!(matches!(
        push_attachment(message(body, 3).unwrap(), "f5".into()),
        Err(Error::InvalidRequest { .. })
    ));
    assert!(matches!(message(body, 4), Err(Error::Internal(_))));
}

// End to end against the emulator: the real upload, the cache, the 401
// refresh and GigaChat's refusals.

const KEY: &str = "ZW11bGF0b3ItY2xpZW50LWlkOmVtdWxhdG9yLWNsaWVudC1zZWNyZXQ=";

async fn emulator() -> gigachat_emulator::Emulator {
    let config = gigachat_emulator::EmulatorConfig {
        credentials: vec![gigachat_emulator::Credential::new(KEY, "GIGACHAT_API_PERS")],
        ..gigachat_emulator::EmulatorConfig::default()
    };
    gigachat_emulator::Emulator::start(config, ([127, 0, 0, 1], 0).into())
        .await
        .unwrap()
}

fn proxy(emulator: &gigachat_emulator::Emulator) -> crate::Proxy {
    let vars = [
        ("GIGACHAT_CREDENTIALS".to_owned(), KEY.to_owned()),
        ("GIGACHAT_AUTH_URL".to_owned(), emulator.auth_url()),
        ("GIGACHAT_BASE_URL".to_owned(), emulator.base_url()),
    ];
    let config = crate::config::Config::from_lookup(crate::config::Platform::Local, |name| {
        vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    })
    .unwrap();
    crate::Proxy::new(config)
}

fn chat(files: &[(usize, &str, &str, &[u8])]) -> ChatRequest {
    let body = json!({"model": "GigaChat", "messages": [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "look"},
        {"role": "user", "content": "and this"},
    ]});
    ChatRequest {
        body: body.as_object().unwrap().clone(),
        uploads: files
            .iter()
            .map(|(message, media_type, filename, data)| Upload {
                message: *message,
                media_type: (*media_type).to_owned(),
                filename: (*filename).to_owned(),
                data: data.to_vec(),
            })
            .collect(),
        plan: ChatPlan::default(),
    }
}

fn uploads_made(emulator: &gigachat_emulator::Emulator) -> usize {
    emulator
        .recorded_requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/files"))
        .count()
}

fn attached(request: &ChatRequest, message: usize) -> Vec<String> {
    request.body["messages"][message]["attachments"]
        .as_array()
        .map(|ids| {
            ids.iter()
                .map(|id| id.as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

#[tokio::test]
async fn files_are_uploaded_once_per_caller_and_content_then_attached() {
    let emulator = emulator().await;
    let proxy = proxy(&emulator);
    let ready = proxy.ready().unwrap();
    let png: &[u8] = b"\x89PNG\r\n\x1a\n--not-a-boundary\r\n";
    let mut request = chat(&[
        (1, "image/png", "cat \"1\".png", png),
        (2, "application/pdf", "отчёт.pdf", b"%PDF-1.7"),
        // The same file twice in one request is one upload.
        (2, "image/png", "cat.png", png),
    ]);
    attach(ready, "key:alice", &mut request, deadline())
        .await
        .unwrap();
    assert!(request.uploads.is_empty());
    let first = attached(&request, 1);
    let second = attached(&request, 2);
    assert_eq!(first.len(), 1);
    assert_eq!(second.len(), 2);
    assert_eq!(second[1], first[0]);
    assert!(attached(&request, 0).is_empty());
    assert_eq!(uploads_made(&emulator), 2);

    // GigaChat got the bytes, the name and `purpose=general`.
    let token = ready.tokens.token().await.unwrap();
    let client = reqwest::Client::new();
    let info: Value = client
        .get(format!("{}/files/{}", emulator.base_url(), first[0]))
        .header("authorization", token.header.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["filename"], "cat %221%22.png");
    assert_eq!(info["purpose"], "general");
    let content = client
        .get(format!(
            "{}/files/{}/content",
            emulator.base_url(),
            first[0]
        ))
        .header("authorization", token.header.clone())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&content[..], png);
    let info: Value = client
        .get(format!("{}/files/{}", emulator.base_url(), second[0]))
        .header("authorization", token.header.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["filename"], "отчёт.pdf");

    // The next turn of the conversation reuses the ids; another caller
    // sending the same file gets an upload of its own.
    let mut again = chat(&[(1, "image/png", "cat.png", png)]);
    attach(ready, "key:alice", &mut again, deadline())
        .await
        .unwrap();
    assert_eq!(attached(&again, 1), first);
    assert_eq!(uploads_made(&emulator), 2);
    let mut bob = chat(&[(1, "image/png", "cat.png", png)]);
    attach(ready, "key:bob", &mut bob, deadline())
        .await
        .unwrap();
    assert_ne!(attached(&bob, 1), first);
    assert_eq!(uploads_made(&emulator), 3);
}

#[tokio::test]
async fn a_401_is_refreshed_once_and_refusals_reach_the_client() {
    let emulator = emulator().await;
    let proxy = proxy(&emulator);
    let ready = proxy.ready().unwrap();
    ready.tokens.token().await.unwrap();
    emulator.faults().fail_next_api_with_401(1);
    let mut request = chat(&[(1, "image/png", "a.png", b"one")]);
    attach(ready, "key:alice", &mut request, deadline())
        .await
        .unwrap();
    assert_eq!(attached(&request, 1).len(), 1);

    emulator.faults().fail_next_api_with_status(413, 1);
    let mut request = chat(&[(1, "image/png", "big.png", b"two")]);
    let err = attach(ready, "key:alice", &mut request, deadline())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "upload_refused", "{err}");
    assert!(err.to_string().contains("big.png"), "{err}");

    emulator.faults().fail_next_api_with_status(503, 1);
    let mut request = chat(&[(1, "image/png", "a.png", b"three")]);
    let err = attach(ready, "key:alice", &mut request, deadline())
        .await
        .unwrap_err();
    assert_eq!(err.status(), StatusCode::BAD_GATEWAY, "{err}");
    // Nothing failed is remembered: the next try uploads.
    let before = uploads_made(&emulator);
    let mut request = chat(&[(1, "image/png", "a.png", b"three")]);
    attach(ready, "key:alice", &mut request, deadline())
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(uploads_made(&emulator), before + 1);
}

#[tokio::test]
async fn an_unreachable_redis_falls_back_to_uploading() {
    let cache = UploadCache::new(Some(Arc::new(crate::redis::for_tests(
        "redis://127.0.0.1:1",
        Duration::from_millis(100),
    ))));
    let key = [3u8; 32];
    assert_eq!(cache.get(&key).await, None);
    cache.put(&key, "id-1").await;
    // Memory still remembers what Redis could not store.
    assert_eq!(cache.get(&key).await.as_deref(), Some("id-1"));
}
