//! Ownership of GigaChat objects per identity: two end users behind one
//! GigaChat key, each with their own API key, against the emulator. The
//! other user gets the same 404 as for an id that does not exist; the
//! owner gets 200; calls that belong to no one user are the operator's.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

const ALICE: &str = "alice-api-key-0123456789";
const BOB: &str = "bob-api-key-0123456789ab";
const OPERATOR: &str = "operator-api-key-0123456789";
const KEYS: &str = "alice-api-key-0123456789,bob-api-key-0123456789ab,operator-api-key-0123456789";

async fn two_users() -> Setup {
    setup_with(
        |_| {},
        &[
            ("GIGACHAT_PROXY_API_KEYS", KEYS),
            ("GIGACHAT_PROXY_ADMIN_KEYS", OPERATOR),
        ],
    )
    .await
}

async fn call(
    s: &Setup,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = s
        .http
        .request(method, s.proxy.url(&format!("/api/gigachat-api/{path}")))
        .bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn upload(s: &Setup, key: &str, content: &[u8]) -> Value {
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(content.to_vec())
                .file_name("private.txt")
                .mime_str("text/plain")
                .unwrap(),
        )
        .text("purpose", "general");
    let response = s
        .http
        .post(s.proxy.url("/api/gigachat-api/files"))
        .bearer_auth(key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn listed_ids(s: &Setup, key: &str) -> Vec<String> {
    let (status, list) = call(s, key, Method::GET, "files", None).await;
    assert_eq!(status, 200, "{list}");
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|file| file["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The file id in the first `<img src="...">` of an answer that drew an
/// image: GigaChat puts the picture's id there.
fn image_id(content: &str) -> &str {
    content
        .split("src=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
}

async fn download(s: &Setup, key: &str, id: &str) -> reqwest::Response {
    s.http
        .get(
            s.proxy
                .url(&format!("/api/gigachat-api/files/{id}/content")),
        )
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

/// A refusal without its request id, which differs per request.
fn shape(mut error: Value) -> Value {
    error.as_object_mut().unwrap().remove("request_id");
    error
}

fn attach(id: &str) -> Value {
    json!({
        "model": "GigaChat",
        "messages": [{"role": "user", "content": "What is in the file?", "attachments": [id]}],
    })
}

#[tokio::test]
async fn files_are_their_owners_alone() {
    let s = two_users().await;
    let file = upload(&s, ALICE, b"alice's private document").await;
    let id = file["id"].as_str().unwrap().to_owned();
    let (raw, _) = id.rsplit_once('~').expect("the id handed out is sealed");

    // The owner reads, lists, downloads and attaches it.
    let (status, info) = call(&s, ALICE, Method::GET, &format!("files/{id}"), None).await;
    assert_eq!((status, info["id"].as_str()), (200, Some(id.as_str())));
    assert_eq!(listed_ids(&s, ALICE).await, vec![id.clone()]);
    let content = s
        .http
        .get(
            s.proxy
                .url(&format!("/api/gigachat-api/files/{id}/content")),
        )
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(content.status(), 200);
    assert_eq!(
        content.bytes().await.unwrap().as_ref(),
        b"alice's private document"
    );
    let (status, answer) = call(
        &s,
        ALICE,
        Method::POST,
        "chat/completions",
        Some(attach(&id)),
    )
    .await;
    assert_eq!(status, 200, "{answer}");

    // The other user: every use is the 404 of an id that does not exist.
    let (status, unknown) = call(
        &s,
        BOB,
        Method::GET,
        "files/no-such-file~000000000000000000000000",
        None,
    )
    .await;
    assert_eq!(status, 404);
    let unknown = shape(unknown);
    for id in [id.as_str(), raw] {
        for (method, path, body) in [
            (Method::GET, format!("files/{id}"), None),
            (Method::GET, format!("files/{id}/content"), None),
            (Method::POST, format!("files/{id}/delete"), None),
            (Method::DELETE, format!("files/{id}"), None),
            (
                Method::POST,
                "chat/completions".to_owned(),
                Some(attach(id)),
            ),
            (
                Method::POST,
                "v2/chat/completions".to_owned(),
                Some(
                    json!({"model": "GigaChat", "messages": [{"role": "user", "content": [{"text": "x"}, {"files": [{"id": id}]}]}]}),
                ),
            ),
        ] {
            let (status, error) = call(&s, BOB, method.clone(), &path, body).await;
            assert_eq!(status, 404, "{method} {path}: {error}");
            assert_eq!(shape(error), unknown, "{method} {path}");
        }
    }
    assert!(listed_ids(&s, BOB).await.is_empty());
    // The raw id does not work for the owner either: only what was handed out.
    let (status, _) = call(&s, ALICE, Method::GET, &format!("files/{raw}"), None).await;
    assert_eq!(status, 404);
    // Bob's own upload is his, and not in Alice's list.
    let bobs = upload(&s, BOB, b"bob's").await;
    assert_eq!(
        listed_ids(&s, BOB).await,
        vec![bobs["id"].as_str().unwrap().to_owned()]
    );
    assert_eq!(listed_ids(&s, ALICE).await, vec![id.clone()]);

    // Nothing Bob tried deleted it; Alice can.
    let (status, deleted) =
        call(&s, ALICE, Method::POST, &format!("files/{id}/delete"), None).await;
    assert_eq!(
        (status, deleted["deleted"].as_bool()),
        (200, Some(true)),
        "{deleted}"
    );
    assert_eq!(deleted["id"].as_str(), Some(id.as_str()));
    assert!(listed_ids(&s, ALICE).await.is_empty());
}

#[tokio::test]
async fn generated_images_belong_to_who_asked_for_them() {
    let s = two_users().await;
    let (status, answer) = call(
        &s,
        ALICE,
        Method::POST,
        "chat/completions",
        Some(json!({
            "model": "GigaChat",
            "function_call": "auto",
            "messages": [{"role": "user", "content": "Draw a cat"}],
        })),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
    let id = image_id(content);
    assert!(id.contains('~'), "{content}");
    let mine = download(&s, ALICE, id).await;
    assert_eq!(mine.status(), 200);
    assert!(mine.bytes().await.unwrap().starts_with(b"\x89PNG"));
    assert_eq!(download(&s, BOB, id).await.status(), 404);
    assert!(listed_ids(&s, ALICE).await.contains(&id.to_owned()));
    assert!(listed_ids(&s, BOB).await.is_empty());
}

#[tokio::test]
async fn unattributable_calls_are_the_operators() {
    let s = two_users().await;
    let file = upload(&s, ALICE, b"alice's").await;
    for (method, path) in [
        (Method::GET, "balance"),
        (Method::POST, "threads"),
        (Method::POST, "assistants"),
        (Method::GET, "batches/anything"),
        (Method::DELETE, "batches"),
        (Method::POST, "ai/check"),
    ] {
        let (status, error) = call(&s, BOB, method.clone(), path, Some(json!({}))).await;
        assert_eq!(status, 403, "{method} {path}: {error}");
        assert_eq!(error["code"], "operator_only");
        assert!(
            error["hint"]
                .as_str()
                .unwrap()
                .contains("GIGACHAT_PROXY_ADMIN_KEYS")
        );
    }
    // An assistant named in a chat body is not attributed to anyone yet.
    let (status, error) = call(
        &s,
        BOB,
        Method::POST,
        "v2/chat/completions",
        Some(json!({"model": "GigaChat", "assistant_id": "a-1", "messages": [{"role": "user", "content": [{"text": "x"}]}]})),
    )
    .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (403, Some("operator_only"))
    );

    // The operator sees the balance and every file, under GigaChat's ids.
    let (status, balance) = call(&s, OPERATOR, Method::GET, "balance", None).await;
    assert_eq!(status, 200, "{balance}");
    let (raw, _) = file["id"].as_str().unwrap().rsplit_once('~').unwrap();
    assert!(listed_ids(&s, OPERATOR).await.contains(&raw.to_owned()));
}

#[tokio::test]
async fn an_open_local_proxy_hands_out_gigachats_ids_unchanged() {
    let s = setup().await;
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"x".to_vec()).file_name("a.txt"),
        )
        .text("purpose", "general");
    let file: Value = s
        .http
        .post(s.proxy.url("/api/gigachat-api/files"))
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!file["id"].as_str().unwrap().contains('~'), "{file}");
    let (status, _) = call(&s, "ignored-in-open-mode-000", Method::GET, "balance", None).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_on_one_redis_share_lists_and_tags() {
    let redis = RedisServer::start();
    let credentials = test_credentials();
    let emulator = start_emulator(&credentials, |_| {}).await;
    let instances = proxies_sharing_redis(
        3,
        &emulator,
        &credentials,
        &redis,
        &[("GIGACHAT_PROXY_API_KEYS", KEYS)],
    );
    let http = reqwest::Client::new();
    let on = |i: usize, key: &str, path: &str| {
        http.get(instances[i].url(&format!("/api/gigachat-api/{path}")))
            .bearer_auth(key)
            .send()
    };
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"shared".to_vec()).file_name("a.txt"),
        )
        .text("purpose", "general");
    let file: Value = http
        .post(instances[0].url("/api/gigachat-api/files"))
        .bearer_auth(ALICE)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = file["id"].as_str().unwrap();
    assert!(id.contains('~'), "{file}");
    // Another instance lists it for the owner and serves its content.
    let list: Value = on(1, ALICE, "files").await.unwrap().json().await.unwrap();
    assert_eq!(list["data"][0]["id"].as_str(), Some(id), "{list}");
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    let content = on(1, ALICE, &format!("files/{id}/content")).await.unwrap();
    assert_eq!(content.status(), 200);
    // A third instance keeps it from the other user.
    let theirs = on(2, BOB, &format!("files/{id}/content")).await.unwrap();
    assert_eq!(theirs.status(), 404);
    let list: Value = on(2, BOB, "files").await.unwrap().json().await.unwrap();
    assert_eq!(list["data"], json!([]));
}

#[tokio::test]
async fn threads_are_continued_by_their_owner_only() {
    let s = two_users().await;
    let ask = |thread: Option<&str>| {
        let storage = thread.map_or(json!(true), |id| json!({"thread_id": id}));
        json!({
            "model": "GigaChat",
            "storage": storage,
            "messages": [{"role": "user", "content": [{"text": "remember me"}]}],
        })
    };
    let (status, started) = call(
        &s,
        ALICE,
        Method::POST,
        "v2/chat/completions",
        Some(ask(None)),
    )
    .await;
    assert_eq!(status, 200, "{started}");
    let thread = started["thread_id"].as_str().unwrap().to_owned();
    let (raw, _) = thread
        .rsplit_once('~')
        .expect("the thread id handed out is sealed");
    let (status, continued) = call(
        &s,
        ALICE,
        Method::POST,
        "v2/chat/completions",
        Some(ask(Some(&thread))),
    )
    .await;
    assert_eq!(status, 200, "{continued}");
    assert_eq!(continued["thread_id"].as_str(), Some(thread.as_str()));
    for id in [thread.as_str(), raw] {
        let (status, error) = call(
            &s,
            BOB,
            Method::POST,
            "v2/chat/completions",
            Some(ask(Some(id))),
        )
        .await;
        assert_eq!(
            (status, error["code"].as_str()),
            (404, Some("object_not_found")),
            "{error}"
        );
    }
}

#[tokio::test]
async fn images_in_streams_are_sealed_even_when_cut_between_writes() {
    let s = two_users().await;
    s.emulator.faults().split_sse_writes(true);
    let body = s
        .http
        .post(s.proxy.url("/api/gigachat-api/chat/completions"))
        .bearer_auth(ALICE)
        .json(&json!({
            "model": "GigaChat",
            "stream": true,
            "function_call": "auto",
            "messages": [{"role": "user", "content": "Draw a dog"}],
        }))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events = sse_data(&body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{body}");
    let content: String = events
        .iter()
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .filter_map(|chunk| {
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    let id = image_id(&content);
    assert!(id.contains('~'), "{content}");
    assert_eq!(download(&s, ALICE, id).await.status(), 200);
    assert_eq!(download(&s, BOB, id).await.status(), 404);
}

const JWT_SECRET: &str = "ownership-test-jwt-secret-0123456789abcd";

#[tokio::test]
async fn a_jwt_with_the_admin_scope_is_an_operator_and_one_without_is_not() {
    let s = setup_with(
        |_| {},
        &[
            ("GIGACHAT_PROXY_JWT_SECRET", JWT_SECRET),
            ("GIGACHAT_PROXY_OWNERSHIP", "on"),
            ("GIGACHAT_PROXY_ADMIN_SCOPE", "gigachat:admin"),
        ],
    )
    .await;
    let exp = unix_now() + 600;
    let token = |claims: Value| hs256_jwt(JWT_SECRET, &claims);
    let operator = token(json!({"sub": "ops", "exp": exp, "scope": "read gigachat:admin"}));
    let operator_scp = token(json!({"sub": "ops2", "exp": exp, "scp": ["gigachat:admin"]}));
    // A scope that merely starts like the operator's is not it.
    let user = token(json!({"sub": "user", "exp": exp, "scope": "read gigachat:admins"}));
    for token in [&operator, &operator_scp] {
        let (status, balance) = call(&s, token, Method::GET, "balance", None).await;
        assert_eq!(status, 200, "{balance}");
        assert!(balance["balance"].is_array(), "{balance}");
    }
    let (status, error) = call(&s, &user, Method::GET, "balance", None).await;
    assert_eq!(status, 403, "{error}");
    assert_eq!(error["code"], "operator_only");
    assert!(
        error["hint"]
            .as_str()
            .unwrap()
            .contains("GIGACHAT_PROXY_ADMIN_SCOPE"),
        "{error}"
    );
}

async fn post_batch(s: &Setup, key: &str, method: &str, lines: &[Value]) -> (u16, Value) {
    let body: String = lines.iter().map(|line| format!("{line}\n")).collect();
    let response = s
        .http
        .post(
            s.proxy
                .url(&format!("/api/gigachat-api/batches?method={method}")),
        )
        .bearer_auth(key)
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn batch_line(key: &str, attachments: &[&str]) -> Value {
    json!({"key": key, "request": {
        "model": "GigaChat",
        "messages": [{"role": "user", "content": "Summarise", "attachments": attachments}],
    }})
}

async fn listed_batches(s: &Setup, key: &str) -> Vec<Value> {
    let (status, list) = call(s, key, Method::GET, "batches", None).await;
    assert_eq!(status, 200, "{list}");
    list["batches"].as_array().unwrap().clone()
}

#[tokio::test]
async fn batches_and_their_results_are_their_owners_alone() {
    let s = two_users().await;
    let file = upload(&s, ALICE, b"alice's report").await;
    let file = file["id"].as_str().unwrap().to_owned();
    let (status, created) = post_batch(
        &s,
        ALICE,
        "chat_completions",
        &[batch_line("1", &[&file]), batch_line("2", &[])],
    )
    .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["status"], "created");
    assert_eq!(created["request_counts"]["total"], 2);
    let id = created["id"].as_str().unwrap().to_owned();
    let (raw, _) = id
        .rsplit_once('~')
        .expect("the batch id handed out is sealed");

    // The owner asks for it by its id, lists it, and downloads its results;
    // no line failed, so the sealed attachment reached GigaChat opened.
    let (status, found) = call(
        &s,
        ALICE,
        Method::GET,
        &format!("batches?batch_id={id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{found}");
    let batch = &found["batches"][0];
    assert_eq!(batch["id"].as_str(), Some(id.as_str()), "{found}");
    assert_eq!(batch["request_counts"]["failed"], 0, "{found}");
    let output = batch["output_file_id"].as_str().unwrap().to_owned();
    assert!(output.contains('~'), "{found}");
    let listed = listed_batches(&s, ALICE).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"].as_str(), Some(id.as_str()));
    let results = download(&s, ALICE, &output).await;
    assert_eq!(results.status(), 200);
    let results = results.text().await.unwrap();
    assert_eq!(results.lines().count(), 2, "{results}");
    assert!(listed_ids(&s, ALICE).await.contains(&output));

    // The other user: the batch, its results and the file are not found,
    // exactly like ids that do not exist.
    let (status, unknown) = call(
        &s,
        BOB,
        Method::GET,
        "batches?batch_id=no-such-batch~000000000000000000000000",
        None,
    )
    .await;
    assert_eq!(status, 404);
    let unknown = shape(unknown);
    for asked in [id.as_str(), raw] {
        let (status, error) = call(
            &s,
            BOB,
            Method::GET,
            &format!("batches?batch_id={asked}"),
            None,
        )
        .await;
        assert_eq!(status, 404, "{error}");
        assert_eq!(shape(error), unknown);
    }
    let (output_raw, _) = output.rsplit_once('~').unwrap();
    for results in [output.as_str(), output_raw] {
        assert_eq!(download(&s, BOB, results).await.status(), 404);
    }
    assert!(listed_batches(&s, BOB).await.is_empty());
    let (raw_file, _) = file.rsplit_once('~').unwrap();
    for named in [file.as_str(), raw_file] {
        let (status, error) =
            post_batch(&s, BOB, "chat_completions", &[batch_line("1", &[named])]).await;
        assert_eq!(
            (status, error["code"].as_str()),
            (404, Some("object_not_found")),
            "{error}"
        );
    }
    // Bob's own batch is his alone.
    let (status, bobs) = post_batch(
        &s,
        BOB,
        "embedder",
        &[json!({"request": {"model": "Embeddings", "input": ["x"]}})],
    )
    .await;
    assert_eq!(status, 200, "{bobs}");
    let bobs_list = listed_batches(&s, BOB).await;
    assert_eq!(bobs_list.len(), 1);
    assert_eq!(bobs_list[0]["id"], bobs["id"]);
    assert_eq!(listed_batches(&s, ALICE).await.len(), 1);

    // The operator sees every batch under GigaChat's ids.
    let everyone = listed_batches(&s, OPERATOR).await;
    assert_eq!(everyone.len(), 2);
    assert!(everyone.iter().any(|batch| batch["id"] == raw));

    // A body the proxy cannot check line by line is refused, and says why.
    let response = s
        .http
        .post(
            s.proxy
                .url("/api/gigachat-api/batches?method=chat_completions"),
        )
        .bearer_auth(ALICE)
        .body("{\"key\":\"1\"}\nnot json\n")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["code"], "batch_not_jsonl", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("line 2"),
        "{error}"
    );
}
