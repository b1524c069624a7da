//! Ownership of GigaChat objects per identity: two end users behind one
//! GigaChat key, each with their own API key, against the emulator. The
//! other user gets the same 404 as for an id that does not exist; the
//! owner gets 200; calls that belong to no one user are the operator's.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::routes::{get_path, post_files_form, post_json, upload_natively};
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
    get_path(
        s,
        &format!("/api/gigachat-api/files/{id}/content"),
        Some(key),
    )
    .await
}

/// GigaChat's own id behind a sealed one, which no client is shown: what
/// the proxy sent upstream when the owner named the sealed id in `path`, a
/// `GET` whose path or query ends with the id.
async fn raw_id(s: &Setup, owner: &str, path: &str) -> String {
    let (status, answer) = call(s, owner, Method::GET, path, None).await;
    assert_eq!(status, 200, "{path}: {answer}");
    let sent = s
        .emulator
        .recorded_requests()
        .into_iter()
        .rev()
        .find(|request| request.method == "GET")
        .unwrap()
        .path;
    sent.rsplit(['/', '=']).next().unwrap().to_owned()
}

/// Asserts that `key` gets the 404 of an object that does not exist
/// (`object_not_found`) for every `(method, path, body)` in `uses`, all of
/// which name the object `named`.
async fn assert_every_use_not_found<const N: usize>(
    s: &Setup,
    key: &str,
    named: &str,
    uses: [(Method, String, Option<Value>); N],
) {
    for (method, path, body) in uses {
        let (status, error) = call(s, key, method, &path, body).await;
        assert_eq!(
            (status, error["code"].as_str()),
            (404, Some("object_not_found")),
            "{named}: {error}"
        );
    }
}

/// Asserts that `key`'s call answers 200 and names `thread` as its
/// `thread_id`: the owner carrying on with a thread of their own.
async fn assert_thread_answer(
    s: &Setup,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
    thread: &str,
) {
    let (status, answer) = call(s, key, method, path, body).await;
    assert_eq!(
        (status, answer["thread_id"].as_str()),
        (200, Some(thread)),
        "{answer}"
    );
}

/// [`raw_id`] behind the sealed id `sealed`, which must not show it.
async fn hidden_raw_id(s: &Setup, owner: &str, sealed: &str, path: &str) -> String {
    let raw = raw_id(s, owner, path).await;
    assert!(
        !sealed.contains(&raw),
        "the sealed id {sealed} shows GigaChat's {raw}"
    );
    raw
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
    let file = upload_natively(&s, ALICE, b"alice's private document").await;
    let id = file["id"].as_str().unwrap().to_owned();
    let raw = hidden_raw_id(&s, ALICE, &id, &format!("files/{id}")).await;
    let raw = raw.as_str();

    // The owner reads, lists, downloads and attaches it.
    let (status, info) = call(&s, ALICE, Method::GET, &format!("files/{id}"), None).await;
    assert_eq!((status, info["id"].as_str()), (200, Some(id.as_str())));
    assert_eq!(listed_ids(&s, ALICE).await, vec![id.clone()]);
    let content = get_path(
        &s,
        &format!("/api/gigachat-api/files/{id}/content"),
        Some(ALICE),
    )
    .await;
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
    let bobs = upload_natively(&s, BOB, b"bob's").await;
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

/// A sealed id its owner shares (a link to `files/{id}/content`, a
/// screenshot) gives nobody else anything: it does not show GigaChat's id,
/// so another user cannot have the model print that id as an image, which
/// the proxy would seal for whoever asked. The emulator's model echoes the
/// user's message, so Bob's answer holds whatever `<img src>` he writes.
#[tokio::test]
async fn a_shared_sealed_id_gives_another_user_nothing() {
    let s = two_users().await;
    let file = upload_natively(&s, ALICE, b"alice's private document").await;
    let id = file["id"].as_str().unwrap().to_owned();
    hidden_raw_id(&s, ALICE, &id, &format!("files/{id}")).await;
    // Bob tries the whole id and every piece of it as GigaChat's id.
    let pieces = std::iter::once(id.as_str()).chain(id.split('~'));
    for piece in pieces.filter(|piece| !piece.is_empty()) {
        let (status, answer) = call(
            &s,
            BOB,
            Method::POST,
            "chat/completions",
            Some(json!({
                "model": "GigaChat",
                "messages": [{"role": "user", "content": format!("<img src=\"{piece}\" fuse=\"true\"/>")}],
            })),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
        let handed = image_id(content);
        if !piece.contains('~') {
            assert_ne!(
                handed, piece,
                "what the model printed was not sealed: {content}"
            );
        }
        let theirs = download(&s, BOB, handed).await;
        assert_eq!(theirs.status(), 404, "{piece} gave Bob {handed}");
    }
    let bobs = listed_ids(&s, BOB).await;
    assert!(bobs.is_empty(), "{bobs:?}");
    // Alice's file is still hers.
    assert_eq!(download(&s, ALICE, &id).await.status(), 200);
}

#[tokio::test]
async fn unattributable_calls_are_the_operators() {
    let s = two_users().await;
    let file = upload_natively(&s, ALICE, b"alice's").await;
    for (method, path) in [
        (Method::GET, "balance"),
        (Method::POST, "threads/anything"),
        (Method::DELETE, "assistants"),
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
    // The operator sees the balance and every file, under GigaChat's ids.
    let (status, balance) = call(&s, OPERATOR, Method::GET, "balance", None).await;
    assert_eq!(status, 200, "{balance}");
    let raw = raw_id(
        &s,
        ALICE,
        &format!("files/{}", file["id"].as_str().unwrap()),
    )
    .await;
    assert!(listed_ids(&s, OPERATOR).await.contains(&raw));
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
    let file: Value = post_files_form(&s, form, None).await.json().await.unwrap();
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
    // Assistants and threads are listed the same way: created on one
    // instance, listed for their owner by another, for nobody else.
    let assistant: Value = http
        .post(instances[0].url("/api/gigachat-api/assistants"))
        .bearer_auth(ALICE)
        .json(&json!({"model": "GigaChat", "name": "shared"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let thread: Value = http
        .post(instances[0].url("/api/gigachat-api/threads"))
        .bearer_auth(ALICE)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let list: Value = on(1, ALICE, "assistants")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        list["data"][0]["assistant_id"], assistant["assistant_id"],
        "{list}"
    );
    let list: Value = on(1, ALICE, "threads").await.unwrap().json().await.unwrap();
    assert_eq!(list["threads"][0]["id"], thread["id"], "{list}");
    let list: Value = on(2, BOB, "assistants")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"], json!([]));
    let list: Value = on(2, BOB, "threads").await.unwrap().json().await.unwrap();
    assert_eq!(list["threads"], json!([]));
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
    // GigaChat's id of a v2 thread reaches no client (the emulator keeps no
    // v2 thread to look it up by): a bare id stands in for it.
    let raw = "c757a9c5-1b2d-4f1e-9d7a-0123456789ab";
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
    let file = upload_natively(&s, ALICE, b"alice's report").await;
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
    let raw = hidden_raw_id(&s, ALICE, &id, &format!("batches?batch_id={id}")).await;
    let raw = raw.as_str();

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
    let output_raw = raw_id(&s, ALICE, &format!("files/{output}")).await;
    for results in [output.as_str(), output_raw.as_str()] {
        assert_eq!(download(&s, BOB, results).await.status(), 404);
    }
    assert!(listed_batches(&s, BOB).await.is_empty());
    let raw_file = raw_id(&s, ALICE, &format!("files/{file}")).await;
    for named in [file.as_str(), raw_file.as_str()] {
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

/// A v2 chat that names `assistant` (the v2 `assistant_id`).
fn with_assistant(assistant: &str) -> Value {
    json!({
        "model": "GigaChat",
        "assistant_id": assistant,
        "messages": [{"role": "user", "content": [{"text": "hello"}]}],
    })
}

async fn listed_assistants(s: &Setup, key: &str, query: &str) -> (u16, Value) {
    call(s, key, Method::GET, &format!("assistants{query}"), None).await
}

#[tokio::test]
async fn assistants_are_their_owners_alone() {
    let s = two_users().await;
    let file = upload_natively(&s, ALICE, b"alice's handbook").await;
    let file = file["id"].as_str().unwrap().to_owned();
    let (status, created) = call(
        &s,
        ALICE,
        Method::POST,
        "assistants",
        Some(json!({"model": "GigaChat", "name": "helper", "instructions": "be brief", "file_ids": [file]})),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let id = created["assistant_id"].as_str().unwrap().to_owned();
    let raw = hidden_raw_id(&s, ALICE, &id, &format!("assistants?assistant_id={id}")).await;
    let raw = raw.as_str();

    // The owner lists it, reads it by id, uses it in a chat.
    let (status, mine) = listed_assistants(&s, ALICE, "").await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(mine["data"].as_array().unwrap().len(), 1, "{mine}");
    assert_eq!(mine["data"][0]["assistant_id"].as_str(), Some(id.as_str()));
    assert_eq!(
        mine["data"][0]["files"][0]["file_id"].as_str(),
        Some(file.as_str())
    );
    let (status, one) = listed_assistants(&s, ALICE, &format!("?assistant_id={id}")).await;
    assert_eq!(
        (status, one["data"][0]["name"].as_str()),
        (200, Some("helper"))
    );
    let (status, answer) = call(
        &s,
        ALICE,
        Method::POST,
        "v2/chat/completions",
        Some(with_assistant(&id)),
    )
    .await;
    assert_eq!(status, 200, "{answer}");

    // The other user: no trace of it, and every use is the 404 of an
    // assistant that does not exist, by sealed or raw id.
    let (status, theirs) = listed_assistants(&s, BOB, "").await;
    assert_eq!((status, &theirs["data"]), (200, &json!([])));
    for named in [id.as_str(), raw] {
        let uses = [
            (
                Method::GET,
                format!("assistants?assistant_id={named}"),
                None,
            ),
            (
                Method::POST,
                "v2/chat/completions".to_owned(),
                Some(with_assistant(named)),
            ),
            (
                Method::POST,
                "v2/chat/completions".to_owned(),
                Some(
                    json!({"model": "GigaChat", "storage": {"assistant_id": named},
                    "messages": [{"role": "user", "content": [{"text": "x"}]}]}),
                ),
            ),
            (
                Method::POST,
                "assistants/modify".to_owned(),
                Some(json!({"assistant_id": named, "name": "mine now"})),
            ),
            (
                Method::POST,
                "assistants/files/delete".to_owned(),
                Some(json!({"assistant_id": named, "file_id": file})),
            ),
            (
                Method::POST,
                "assistants/delete".to_owned(),
                Some(json!({"assistant_id": named})),
            ),
            (
                Method::POST,
                "threads/messages/run".to_owned(),
                Some(
                    json!({"assistant_id": named, "messages": [{"role": "user", "content": "x"}]}),
                ),
            ),
        ];
        assert_every_use_not_found(&s, BOB, named, uses).await;
    }
    // The raw id is no key for its owner either.
    let (status, _) = listed_assistants(&s, ALICE, &format!("?assistant_id={raw}")).await;
    assert_eq!(status, 404);

    // The owner changes it, takes its file off, and deletes it.
    let (status, changed) = call(
        &s,
        ALICE,
        Method::POST,
        "assistants/modify",
        Some(json!({"assistant_id": id, "instructions": "be kind"})),
    )
    .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["assistant_id"].as_str(), Some(id.as_str()));
    assert_eq!(changed["instructions"], "be kind");
    let (status, unfiled) = call(
        &s,
        ALICE,
        Method::POST,
        "assistants/files/delete",
        Some(json!({"assistant_id": id, "file_id": file})),
    )
    .await;
    assert_eq!(
        (status, unfiled["file_id"].as_str()),
        (200, Some(file.as_str())),
        "{unfiled}"
    );
    let (status, deleted) = call(
        &s,
        ALICE,
        Method::POST,
        "assistants/delete",
        Some(json!({"assistant_id": id})),
    )
    .await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["assistant_id"].as_str(), Some(id.as_str()));
    let (_, mine) = listed_assistants(&s, ALICE, "").await;
    assert_eq!(mine["data"], json!([]));
}

#[tokio::test]
async fn legacy_threads_are_their_owners_alone() {
    let s = two_users().await;
    let (status, created) = call(&s, ALICE, Method::POST, "v1/threads", Some(json!({}))).await;
    assert_eq!(status, 200, "{created}");
    let thread = created["id"].as_str().unwrap().to_owned();
    let raw = hidden_raw_id(
        &s,
        ALICE,
        &thread,
        &format!("threads/messages?thread_id={thread}"),
    )
    .await;
    let raw = raw.as_str();
    let ask = |thread: &str, text: &str| json!({"thread_id": thread, "messages": [{"role": "user", "content": text}]});

    // The owner adds to it, runs it, reads it back and finds it listed.
    assert_thread_answer(
        &s,
        ALICE,
        Method::POST,
        "threads/messages",
        Some(ask(&thread, "remember 42")),
        &thread,
    )
    .await;
    let (status, ran) = call(
        &s,
        ALICE,
        Method::POST,
        "threads/messages/run",
        Some(ask(&thread, "what number?")),
    )
    .await;
    assert_eq!(status, 200, "{ran}");
    assert_eq!(ran["thread_id"].as_str(), Some(thread.as_str()));
    assert_eq!(ran["object"], "thread.completion");
    let (status, history) = call(
        &s,
        ALICE,
        Method::GET,
        &format!("threads/messages?thread_id={thread}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(
        history["messages"].as_array().unwrap().len(),
        3,
        "{history}"
    );
    assert_eq!(history["messages"][0]["content"], "remember 42");
    // It reruns, starts a run and reads the run back, in that order.
    for (method, path, body) in [
        (
            Method::POST,
            "threads/messages/rerun".to_owned(),
            Some(json!({"thread_id": thread})),
        ),
        (
            Method::POST,
            "threads/run".to_owned(),
            Some(json!({"thread_id": thread})),
        ),
        (Method::GET, format!("threads/run?thread_id={thread}"), None),
    ] {
        assert_thread_answer(&s, ALICE, method, &path, body, &thread).await;
    }
    let (status, mine) = call(&s, ALICE, Method::GET, "threads", None).await;
    assert_eq!(status, 200, "{mine}");
    let listed: Vec<&str> = mine["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [thread.as_str()]);
    let (status, retrieved) = call(
        &s,
        ALICE,
        Method::POST,
        "threads/retrieve",
        Some(json!({"threads_ids": [thread]})),
    )
    .await;
    assert_eq!(
        (status, retrieved["threads"][0]["id"].as_str()),
        (200, Some(thread.as_str())),
        "{retrieved}"
    );

    // A streamed run hands out the same sealed id in every chunk.
    let body = post_json(&s, "/api/gigachat-api/threads/messages/run", &json!({"thread_id": thread, "stream": true, "messages": [{"role": "user", "content": "again"}]}), Some(ALICE)).await
        .text()
        .await
        .unwrap();
    let chunks: Vec<Value> = sse_data(&body)
        .iter()
        .filter_map(|data| serde_json::from_str(data).ok())
        .collect();
    assert!(!chunks.is_empty(), "{body}");
    for chunk in &chunks {
        assert_eq!(chunk["thread_id"].as_str(), Some(thread.as_str()), "{body}");
    }

    // The other user: an empty list, and the 404 of a missing thread for
    // every use, by sealed or raw id.
    let (status, theirs) = call(&s, BOB, Method::GET, "threads", None).await;
    assert_eq!((status, &theirs["threads"]), (200, &json!([])));
    for named in [thread.as_str(), raw] {
        let uses = [
            (
                Method::POST,
                "threads/retrieve".to_owned(),
                Some(json!({"threads_ids": [named]})),
            ),
            (
                Method::GET,
                format!("threads/messages?thread_id={named}"),
                None,
            ),
            (Method::GET, format!("threads/run?thread_id={named}"), None),
            (
                Method::POST,
                "threads/messages".to_owned(),
                Some(ask(named, "hijack")),
            ),
            (
                Method::POST,
                "threads/messages/run".to_owned(),
                Some(ask(named, "read it to me")),
            ),
            (
                Method::POST,
                "threads/messages/rerun".to_owned(),
                Some(json!({"thread_id": named})),
            ),
            (
                Method::POST,
                "threads/run".to_owned(),
                Some(json!({"thread_id": named})),
            ),
            (
                Method::POST,
                "threads/delete".to_owned(),
                Some(json!({"thread_id": named})),
            ),
            (
                Method::POST,
                "v2/chat/completions".to_owned(),
                Some(json!({"model": "GigaChat", "storage": {"thread_id": named},
                    "messages": [{"role": "user", "content": [{"text": "x"}]}]})),
            ),
        ];
        assert_every_use_not_found(&s, BOB, named, uses).await;
    }

    // A thread started with an assistant is listed under it; deleting the
    // thread takes it off the owner's list.
    let (_, assistant) = call(
        &s,
        ALICE,
        Method::POST,
        "assistants",
        Some(json!({"model": "GigaChat", "name": "a"})),
    )
    .await;
    let assistant = assistant["assistant_id"].as_str().unwrap().to_owned();
    let (status, second) = call(
        &s,
        ALICE,
        Method::POST,
        "threads/messages/run",
        Some(json!({"assistant_id": assistant, "messages": [{"role": "user", "content": "hi"}]})),
    )
    .await;
    assert_eq!(status, 200, "{second}");
    let second = second["thread_id"].as_str().unwrap().to_owned();
    let (status, by_assistant) = call(
        &s,
        ALICE,
        Method::GET,
        &format!("threads?assistants_ids={assistant}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{by_assistant}");
    assert_eq!(
        by_assistant["threads"][0]["id"].as_str(),
        Some(second.as_str()),
        "{by_assistant}"
    );
    assert_eq!(
        by_assistant["threads"][0]["assistant_id"].as_str(),
        Some(assistant.as_str())
    );
    let (status, _) = call(
        &s,
        BOB,
        Method::GET,
        &format!("threads?assistants_ids={assistant}"),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &s,
        ALICE,
        Method::POST,
        "threads/delete",
        Some(json!({"thread_id": thread})),
    )
    .await;
    assert_eq!(status, 200);
    let (_, mine) = call(&s, ALICE, Method::GET, "threads", None).await;
    let listed: Vec<&str> = mine["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [second.as_str()]);
}

/// The official `gigachat` Python SDK, as two end users with their own API
/// keys: `tests/python/sdk_owned_assistants_threads.py` creates an
/// assistant and a thread through the proxy, runs and lists them, and
/// checks the other user's SDK is refused every use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_owns_its_assistants_and_threads() {
    let python = tokio::task::spawn_blocking(|| python_importing("gigachat"))
        .await
        .unwrap();
    let s = two_users().await;
    let proxy_url = s.proxy.url.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg("tests/python/sdk_owned_assistants_threads.py")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("GIGACHAT_PROXY_URL", proxy_url)
            .env("OWNER_KEY", ALICE)
            .env("OTHER_KEY", BOB)
            .output()
            .expect("python starts")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout.lines().last(), Some("ok"), "{stdout}\n{stderr}");
    // What reached GigaChat named its own ids, never a sealed one (a
    // sealed id in a body is refused by the emulator as unknown, which
    // fails the script).
    let stateful: Vec<_> = s
        .emulator
        .recorded_requests()
        .into_iter()
        .filter(|r| r.path.contains("/assistants") || r.path.contains("/threads"))
        .collect();
    assert!(stateful.len() >= 10, "{}", stateful.len());
    assert!(
        stateful.iter().any(|r| r.path.contains("thread_id=")),
        "no query named a thread"
    );
    for request in stateful {
        assert!(!request.path.contains('~'), "{}", request.path);
    }
}

/// A thread run spends tokens like a chat, so it is charged to the
/// caller's token budget: threads are no way around a budget.
#[tokio::test]
async fn thread_runs_are_charged_to_the_token_budget() {
    let s = setup_with(
        |_| {},
        &[
            ("GIGACHAT_PROXY_API_KEYS", KEYS),
            ("GIGACHAT_PROXY_TOKEN_BUDGET", "100000/d"),
        ],
    )
    .await;
    let used = |s: &Setup| {
        let request = s
            .http
            .get(s.proxy.url("/api/gigachat-budget"))
            .bearer_auth(ALICE)
            .send();
        async move {
            let budget: Value = request.await.unwrap().json().await.unwrap();
            budget["used"].as_u64().unwrap()
        }
    };
    assert_eq!(used(&s).await, 0);
    let (status, ran) = call(
        &s,
        ALICE,
        Method::POST,
        "threads/messages/run",
        Some(
            json!({"model": "GigaChat", "messages": [{"role": "user", "content": "count to ten"}]}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{ran}");
    let billed = ran["usage"]["total_tokens"].as_u64().unwrap();
    // The charge settles when the answer's body ends; poll for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while used(&s).await != billed && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(used(&s).await, billed);
}
