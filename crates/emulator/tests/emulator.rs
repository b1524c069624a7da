//! Black-box tests: start the emulator on a random port and talk HTTP to it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use gigachat_emulator::{Credential, DEFAULT_CREDENTIALS, Emulator, EmulatorConfig};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RQUID: &str = "6f0b1291-c7f3-43c6-bb2e-9f3efb2dc98e";

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn start(config: EmulatorConfig) -> Emulator {
    Emulator::start(config, any_port()).await.unwrap()
}

fn client() -> reqwest::Client {
    // No proxy: the sandbox may export HTTP(S)_PROXY for package registries.
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

async fn oauth(emu: &Emulator, auth: &str, scope_body: &str) -> reqwest::Response {
    client()
        .post(emu.auth_url())
        .header("RqUID", RQUID)
        .header("Authorization", auth)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(scope_body.to_owned())
        .send()
        .await
        .unwrap()
}

async fn token(emu: &Emulator) -> String {
    let resp = oauth(
        emu,
        &format!("Basic {DEFAULT_CREDENTIALS}"),
        "scope=GIGACHAT_API_PERS",
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

fn chat_body(text: &str, stream: bool) -> Value {
    json!({"model":"GigaChat","messages":[{"role":"user","content":text}],"stream":stream})
}

async fn post_chat(emu: &Emulator, tok: &str, body: &Value) -> reqwest::Response {
    post_json_authorized(
        &client(),
        format!("{}/chat/completions", emu.base_url()),
        tok,
        body,
    )
    .await
}

/// GETs `url` with `tok` as the bearer token.
async fn get_authorized(
    c: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    tok: &str,
) -> reqwest::Response {
    c.get(url).bearer_auth(tok).send().await.unwrap()
}

/// POSTs `body` as JSON to `url` with `tok` as the bearer token.
async fn post_json_authorized(
    c: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    tok: &str,
    body: &Value,
) -> reqwest::Response {
    c.post(url)
        .bearer_auth(tok)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// POSTs `form` as multipart to `url` with `tok` as the bearer token.
async fn post_multipart_authorized(
    c: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    tok: &str,
    form: reqwest::multipart::Form,
) -> reqwest::Response {
    c.post(url)
        .bearer_auth(tok)
        .multipart(form)
        .send()
        .await
        .unwrap()
}

/// The JSON body of [`get_authorized`].
async fn get_json(c: &reqwest::Client, url: impl reqwest::IntoUrl, tok: &str) -> Value {
    get_authorized(c, url, tok).await.json().await.unwrap()
}

/// Asserts that `resp` is the API's error answer: `status`, and the body
/// `{"status": status, "message": message}` and nothing else.
async fn assert_api_error(resp: reqwest::Response, status: u16, message: &str) {
    assert_eq!(resp.status(), status);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"status": status, "message": message})
    );
}

/// Reads a streaming body, returning each received chunk with its arrival
/// time relative to the response headers.
async fn chunks(resp: reqwest::Response) -> (Vec<(Duration, bytes::Bytes)>, Option<String>) {
    let t0 = Instant::now();
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(item) = stream.next().await {
        match item {
            Ok(b) => out.push((t0.elapsed(), b)),
            Err(e) => return (out, Some(e.to_string())),
        }
    }
    (out, None)
}

fn joined(chunks: &[(Duration, bytes::Bytes)]) -> String {
    String::from_utf8(chunks.iter().flat_map(|(_, b)| b.to_vec()).collect()).unwrap()
}

async fn wait_for(emu: &Emulator, what: impl Fn(&gigachat_emulator::Stats) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !what(&emu.stats()) {
        assert!(
            Instant::now() < deadline,
            "condition not reached: {:?}",
            emu.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The proxy keeps the handle in shared state across tasks.
#[test]
fn handle_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Emulator>();
    assert_send_sync::<gigachat_emulator::Faults>();
    assert_send_sync::<gigachat_emulator::Stats>();
    assert_send_sync::<gigachat_emulator::RecordedRequest>();
}

// ---------------------------------------------------------------- OAuth ---

#[tokio::test]
async fn oauth_success_shape_and_headers() {
    let emu = start(EmulatorConfig::default()).await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for scheme in ["Basic", "Bearer"] {
        let resp = oauth(
            &emu,
            &format!("{scheme} {DEFAULT_CREDENTIALS}"),
            "scope=GIGACHAT_API_PERS",
        )
        .await;
        assert_eq!(resp.status(), 200);
        let h = resp.headers();
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(h["server"], "SynGX");
        assert_eq!(
            h["cache-control"],
            "no-cache, no-store, max-age=0, must-revalidate"
        );
        let body: Value = resp.json().await.unwrap();
        let tok = body["access_token"].as_str().unwrap();
        assert!(tok.starts_with("eyJ") && tok.len() > 200);
        let exp = body["expires_at"].as_u64().unwrap();
        // Milliseconds, 30 minutes ahead.
        let ttl = exp - before;
        assert!((29 * 60_000..=31 * 60_000).contains(&ttl), "ttl {ttl}");
    }
    assert_eq!(emu.stats().oauth_calls, 2);
    assert_eq!(emu.stats().oauth_failures, 0);
}

#[tokio::test]
async fn oauth_error_codes() {
    let b2b_key = b64("b2b:secret");
    let mut cfg = EmulatorConfig::default();
    cfg.credentials
        .push(Credential::new(b2b_key.clone(), "GIGACHAT_API_B2B"));
    let emu = start(cfg).await;
    let basic = format!("Basic {DEFAULT_CREDENTIALS}");

    // Missing RqUID.
    let resp = client()
        .post(emu.auth_url())
        .header("Authorization", &basic)
        .body("scope=GIGACHAT_API_PERS")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 400);
    assert!(body["message"].is_string());

    let cases: [(String, &str, u16, u64, &str); 6] = [
        (
            "Basic %%%".to_owned(),
            "scope=GIGACHAT_API_PERS",
            401,
            4,
            "Can't decode 'Authorization' header",
        ),
        (
            format!("Basic {}", b64("no-colon-here")),
            "scope=GIGACHAT_API_PERS",
            401,
            4,
            "Can't decode 'Authorization' header",
        ),
        (
            format!("Basic {}", b64("who:knows")),
            "scope=GIGACHAT_API_PERS",
            401,
            6,
            "credentials doesn't match db data",
        ),
        (basic.clone(), "", 400, 5, "scope is empty"),
        (
            basic.clone(),
            "scope=NOPE",
            400,
            1,
            "scope data format invalid",
        ),
        (
            basic.clone(),
            "scope=GIGACHAT_API_B2B",
            401,
            7,
            "scope from db not fully includes consumed scope",
        ),
    ];
    for (auth, form, status, code, message) in &cases {
        let resp = oauth(&emu, auth, form).await;
        assert_eq!(resp.status(), *status, "{auth} {form}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body, json!({"code": code, "message": message}));
    }
    // The B2B key gets its own scope.
    let resp = oauth(&emu, &format!("Bearer {b2b_key}"), "scope=GIGACHAT_API_B2B").await;
    assert_eq!(resp.status(), 200);
    let stats = emu.stats();
    assert_eq!(stats.oauth_calls, 8);
    assert_eq!(stats.oauth_failures, 7);
}

// ------------------------------------------------------------- API auth ---

#[tokio::test]
async fn api_auth_unknown_and_expired() {
    let emu = start(EmulatorConfig {
        token_ttl: Duration::from_millis(300),
        ..EmulatorConfig::default()
    })
    .await;
    let url = format!("{}/models", emu.base_url());
    let resp = client().get(&url).send().await.unwrap();
    assert_api_error(resp, 401, "Unauthorized").await;
    let resp = client()
        .get(&url)
        .bearer_auth("bogus")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["message"],
        "Unauthorized"
    );

    let tok = token(&emu).await;
    let resp = get_authorized(&client(), &url, &tok).await;
    assert_eq!(resp.status(), 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let resp = get_authorized(&client(), &url, &tok).await;
    assert_api_error(resp, 401, "Token has expired").await;
    assert_eq!(emu.stats().api_calls, 4);
}

#[tokio::test]
async fn expire_all_tokens_fault() {
    let emu = start(EmulatorConfig::default()).await;
    let tok = token(&emu).await;
    let url = format!("{}/models", emu.base_url());
    assert_eq!(get_authorized(&client(), &url, &tok).await.status(), 200);
    emu.faults().expire_all_tokens();
    let resp = get_authorized(&client(), &url, &tok).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["message"],
        "Token has expired"
    );
    // A token issued afterwards works.
    let fresh = token(&emu).await;
    let resp = get_authorized(&client(), &url, &fresh).await;
    assert_eq!(resp.status(), 200);
}

// --------------------------------------------------------------- headers ---

#[tokio::test]
async fn common_api_headers() {
    let emu = start(EmulatorConfig::default()).await;
    let tok = token(&emu).await;
    let resp = client()
        .get(format!("{}/models", emu.base_url()))
        .bearer_auth(&tok)
        .header("X-Request-ID", "my-request-42")
        .send()
        .await
        .unwrap();
    let h = resp.headers();
    assert_eq!(h["x-request-id"], "my-request-42");
    assert_eq!(h["x-session-id"].to_str().unwrap().len(), 36);
    assert_eq!(h["content-type"], "application/json; charset=utf-8");
    assert_eq!(h["server"], "SynGX");
    assert_eq!(
        h["access-control-allow-origin"],
        "https://beta.saluteai.sberdevices.ru"
    );
    assert_eq!(
        h["access-control-allow-methods"],
        "GET, POST, DELETE, OPTIONS"
    );
    assert_eq!(h["access-control-allow-credentials"], "true");

    // Errors carry them too, and a fresh uuid when the client sent none.
    let resp = client()
        .get(format!("{}/models", emu.base_url()))
        .send()
        .await
        .unwrap();
    let h = resp.headers();
    assert_eq!(h["x-request-id"].to_str().unwrap().len(), 36);
    assert!(h.contains_key("access-control-allow-origin"));
}

// ------------------------------------------------------------------ chat ---

#[tokio::test]
async fn chat_json_shape() {
    let emu = start(EmulatorConfig::default()).await;
    let tok = token(&emu).await;
    let resp = post_chat(&emu, &tok, &chat_body("hello world", false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    let text = resp.text().await.unwrap();
    // Field order as recorded: choices, created, model, object, usage.
    assert!(text.starts_with(r#"{"choices":[{"message":{"content":"Echo: hello world","role":"assistant"},"index":0,"finish_reason":"stop"}],"created":"#));
    let body: Value = serde_json::from_str(&text).unwrap();
    assert!(body.get("id").is_none());
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "GigaChat:emulator");
    assert!(body["created"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens":3,"completion_tokens":5,"total_tokens":8,"precached_prompt_tokens":0})
    );

    // The /v1 prefix (new host layout) serves the same API.
    let resp = post_json_authorized(
        &client(),
        format!("http://{}/v1/chat/completions", emu.addr()),
        &tok,
        &chat_body("x", false),
    )
    .await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn chat_validation_errors() {
    let emu = start(EmulatorConfig::default()).await;
    let tok = token(&emu).await;
    let resp = client()
        .post(format!("{}/chat/completions", emu.base_url()))
        .bearer_auth(&tok)
        .header("content-type", "application/json")
        .body("{\"model\":")
        .send()
        .await
        .unwrap();
    assert_api_error(resp, 400, "Your request contains invalid JSON syntax.").await;
    let cases = [
        (
            json!({"model":"GigaChat-Nope","messages":[{"role":"user","content":"x"}]}),
            404,
            "No such model",
        ),
        (
            json!({"model":"GigaChat","messages":[{"role":"user","content":"x"},{"role":"system","content":"s"}]}),
            422,
            "Invalid params: system message must be the first message",
        ),
        (
            json!({"model":"GigaChat","messages":[{"role":"user","content":"x"}],"repetition_penalty":0}),
            422,
            "Invalid params: repetition_penalty must be in range (0, +inf)",
        ),
    ];
    for (body, status, message) in cases {
        let resp = post_chat(&emu, &tok, &body).await;
        assert_api_error(resp, status, message).await;
    }
    for body in [
        json!({"model":"GigaChat","messages":[{"role":"user","content":"x"}],"temperature":0}),
        json!({"model":"GigaChat","messages":[]}),
        json!({"messages":[{"role":"user","content":"x"}]}),
    ] {
        let resp = post_chat(&emu, &tok, &body).await;
        assert_eq!(resp.status(), 422);
        let msg = resp.json::<Value>().await.unwrap()["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(msg.starts_with("Invalid params: "), "{msg}");
    }
}

#[tokio::test]
async fn chat_function_call_and_length() {
    let emu = start(EmulatorConfig::default()).await;
    let tok = token(&emu).await;
    let body = json!({
        "model":"GigaChat",
        "messages":[{"role":"user","content":"Weather?"}],
        "functions":[{"name":"weather_forecast","parameters":{"type":"object","properties":{"location":{"type":"string"}}}}],
        "function_call":{"name":"weather_forecast"}
    });
    let body: Value = post_chat(&emu, &tok, &body).await.json().await.unwrap();
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "function_call");
    assert_eq!(
        choice["message"]["function_call"],
        json!({"name":"weather_forecast","arguments":{"location":"Weather?"}})
    );
    assert_eq!(
        choice["message"]["functions_state_id"]
            .as_str()
            .unwrap()
            .len(),
        36
    );

    let mut long = chat_body("a fairly long message", false);
    long["max_tokens"] = json!(1);
    let body: Value = post_chat(&emu, &tok, &long).await.json().await.unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["choices"][0]["message"]["content"], "Echo");
    assert_eq!(body["usage"]["completion_tokens"], 1);
}

#[tokio::test]
async fn v1_sse_framing_and_timing() {
    let emu = start(EmulatorConfig {
        chunk_delay: Duration::from_millis(150),
        ..EmulatorConfig::default()
    })
    .await;
    let tok = token(&emu).await;
    let resp = post_chat(&emu, &tok, &chat_body("hello world", true)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert!(resp.headers().get("content-length").is_none());
    assert_eq!(resp.headers()["server"], "SynGX");
    let (chunks, err) = chunks(resp).await;
    assert!(err.is_none());
    let all = joined(&chunks);
    let first: Value =
        serde_json::from_str(all.lines().next().unwrap().strip_prefix("data: ").unwrap()).unwrap();
    let created = first["created"].as_u64().unwrap();
    let head = r#"{"choices":[{"delta":{"#;
    let tail =
        format!(r#"],"created":{created},"model":"GigaChat:emulator","object":"chat.completion""#);
    let expected = format!(
        "data: {head}\"content\":\"Echo: \",\"role\":\"assistant\"}},\"index\":0}}{tail}}}\n\n\
         data: {head}\"content\":\"hello \"}},\"index\":0}}{tail}}}\n\n\
         data: {head}\"content\":\"world\"}},\"index\":0}}{tail}}}\n\n\
         data: {head}\"content\":\"\"}},\"index\":0,\"finish_reason\":\"stop\"}}{tail},\"usage\":{{\"prompt_tokens\":3,\"completion_tokens\":5,\"total_tokens\":8,\"precached_prompt_tokens\":0}}}}\n\n\
         data: [DONE]\n\n"
    );
    assert_eq!(all, expected);
    // Five events, 150 ms apart: they cannot all arrive at once.
    assert!(chunks.len() >= 5, "{} chunks", chunks.len());
    let first_at = chunks[0].0;
    let last_at = chunks.last().unwrap().0;
    assert!(
        first_at < Duration::from_millis(100),
        "first at {first_at:?}"
    );
    assert!(
        last_at - first_at >= Duration::from_millis(500),
        "last at {last_at:?}"
    );
    wait_for(&emu, |s| s.streams_completed == 1).await;
    let s = emu.stats();
    assert_eq!((s.streams_started, s.streams_cancelled), (1, 0));
}

#[tokio::test]
async fn v2_chat_and_stream() {
    let emu = start(EmulatorConfig::default()).await;
    let tok = token(&emu).await;
    let body = json!({"model":"GigaChat-3-Ultra","messages":[{"role":"user","content":[{"text":"hi there"}]}]});
    for path in ["/api/v2/chat/completions", "/v2/chat/completions"] {
        let resp = post_json_authorized(
            &client(),
            format!("http://{}{path}", emu.addr()),
            &tok,
            &body,
        )
        .await;
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["model"], "GigaChat-3-Ultra:emulator");
        assert_eq!(
            v["messages"],
            json!([{"role":"assistant","content":[{"text":"Echo: hi there"}]}])
        );
        assert_eq!(v["finish_reason"], "stop");
        assert_eq!(
            v["usage"],
            json!({"input_tokens":2,"input_tokens_details":{"prompt_tokens":2,"cached_tokens":0},"output_tokens":4,"total_tokens":6})
        );
    }
    let mut streaming = body.clone();
    streaming["stream"] = json!(true);
    let resp = post_json_authorized(
        &client(),
        format!("http://{}/api/v2/chat/completions", emu.addr()),
        &tok,
        &streaming,
    )
    .await;
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = resp.text().await.unwrap();
    let events: Vec<&str> = text.split_terminator("\n\n").collect();
    assert_eq!(events.len(), 4);
    let mut reply = String::new();
    for ev in &events[..3] {
        let data = ev
            .strip_prefix("event: response.message.delta\ndata: ")
            .unwrap();
        let v: Value = serde_json::from_str(data).unwrap();
        reply.push_str(v["messages"][0]["content"][0]["text"].as_str().unwrap());
    }
    assert_eq!(reply, "Echo: hi there");
    let done: Value = serde_json::from_str(
        events[3]
            .strip_prefix("event: response.message.done\ndata: ")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(done["finish_reason"], "stop");
    assert_eq!(done["usage"]["total_tokens"], 6);
    assert!(!text.contains("[DONE]"));
}

// -------------------------------------------------------- other endpoints ---

#[tokio::test]
async fn models_embeddings_tokens_balance() {
    let emu = start(EmulatorConfig::default()).await;
    let tok = token(&emu).await;
    let base = emu.base_url();
    let c = client();

    let list: Value = get_json(&c, format!("{base}/models"), &tok).await;
    assert_eq!(list["object"], "list");
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 9);
    assert_eq!(
        data[0],
        json!({"id":"GigaChat","object":"model","owned_by":"salutedevices","type":"chat"})
    );
    assert!(data.contains(
        &json!({"id":"EmbeddingsGigaR","object":"model","owned_by":"salutedevices","type":"embedder"})
    ));
    let one: Value = get_json(&c, format!("{base}/models/GigaChat-2-Max"), &tok).await;
    assert_eq!(one["id"], "GigaChat-2-Max");
    let resp = get_authorized(&c, format!("{base}/models/Nope"), &tok).await;
    assert_api_error(resp, 404, "No such model").await;

    let emb = |input: Value| {
        let c = c.clone();
        let url = format!("{base}/embeddings");
        let tok = tok.clone();
        async move {
            c.post(url)
                .bearer_auth(tok)
                .json(&json!({"model":"Embeddings","input":input}))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let a = emb(json!(["first text", "second"])).await;
    assert_eq!(a["object"], "list");
    assert_eq!(a["model"], "Embeddings");
    assert_eq!(a["data"][1]["index"], 1);
    assert_eq!(a["data"][0]["object"], "embedding");
    assert_eq!(a["data"][0]["usage"], json!({"prompt_tokens":3}));
    assert_eq!(a["data"][0]["embedding"].as_array().unwrap().len(), 1024);
    let b = emb(json!("first text")).await;
    assert_eq!(a["data"][0]["embedding"], b["data"][0]["embedding"]);
    assert_ne!(a["data"][0]["embedding"], a["data"][1]["embedding"]);

    let counts: Value = post_json_authorized(
        &c,
        format!("{base}/tokens/count"),
        &tok,
        &json!({"model":"GigaChat","input":["First text","Second text"]}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        counts,
        json!([{"object":"tokens","tokens":3,"characters":10},{"object":"tokens","tokens":3,"characters":11}])
    );

    let balance: Value = get_json(&c, format!("{base}/balance"), &tok).await;
    assert_eq!(
        balance,
        json!({"balance":[{"usage":"GigaChat","value":900000},{"usage":"embeddings","value":9999967}]})
    );
}

#[tokio::test]
async fn balance_forbidden_for_corp() {
    let key = b64("corp:secret");
    let emu = start(EmulatorConfig {
        credentials: vec![Credential::new(key.clone(), "GIGACHAT_API_CORP")],
        ..EmulatorConfig::default()
    })
    .await;
    let resp = oauth(&emu, &format!("Basic {key}"), "scope=GIGACHAT_API_CORP").await;
    let tok = resp.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let resp = get_authorized(&client(), format!("{}/balance", emu.base_url()), &tok).await;
    assert_api_error(resp, 403, "Permission denied").await;
}

#[tokio::test]
async fn files_roundtrip() {
    let emu = start(EmulatorConfig::default()).await;
    let tok = token(&emu).await;
    let base = emu.base_url();
    let c = client();
    let content: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(content.clone())
            .file_name("image.jpg")
            .mime_str("image/jpeg")
            .unwrap(),
    );
    let resp = post_multipart_authorized(&c, format!("{base}/files"), &tok, form).await;
    assert_eq!(resp.status(), 200);
    let file: Value = resp.json().await.unwrap();
    let id = file["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 36);
    assert_eq!(file["object"], "file");
    assert_eq!(file["bytes"], 70_000);
    assert_eq!(file["filename"], "image.jpg");
    assert_eq!(file["purpose"], "general");
    assert_eq!(file["access_policy"], "private");
    assert!(file["created_at"].as_u64().unwrap() > 1_700_000_000);

    let list: Value = get_json(&c, format!("{base}/files"), &tok).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(list["data"][0]["id"], id.as_str());

    let info: Value = get_json(&c, format!("{base}/files/{id}"), &tok).await;
    assert_eq!(info, file);

    let resp = get_authorized(&c, format!("{base}/files/{id}/content"), &tok).await;
    assert_eq!(resp.headers()["content-type"], "application/octet-stream");
    assert_eq!(resp.bytes().await.unwrap().to_vec(), content);

    let del: Value = c
        .post(format!("{base}/files/{id}/delete"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(del, json!({"id": id, "deleted": true}));
    let resp = get_authorized(&c, format!("{base}/files/{id}"), &tok).await;
    assert_eq!(resp.status(), 404);

    // A purpose part is honoured; a form without a file part is a 400.
    let form = reqwest::multipart::Form::new()
        .text("purpose", "assistant")
        .part(
            "file",
            reqwest::multipart::Part::text("hi").file_name("a.txt"),
        );
    let file: Value = post_multipart_authorized(&c, format!("{base}/files"), &tok, form)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(file["purpose"], "assistant");
    let form = reqwest::multipart::Form::new().text("purpose", "general");
    let resp = post_multipart_authorized(&c, format!("{base}/files"), &tok, form).await;
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn not_found_method_and_payload_limits() {
    let emu = start(EmulatorConfig::default()).await;
    let tok = token(&emu).await;
    let c = client();
    let resp = get_authorized(&c, format!("{}/nope", emu.base_url()), &tok).await;
    assert_api_error(resp, 404, "Not found").await;
    let resp = get_authorized(&c, format!("{}/chat/completions", emu.base_url()), &tok).await;
    assert_api_error(resp, 405, "Method not allowed").await;

    // Declared oversize body: refused without reading it.
    let mut sock = tokio::net::TcpStream::connect(emu.addr()).await.unwrap();
    let req = format!(
        "POST /api/v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {tok}\r\ncontent-type: application/json\r\ncontent-length: 60000000\r\n\r\n"
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains(r#"{"status":413,"message":"Payload too large"}"#));
}

// ---------------------------------------------------------------- faults ---

#[tokio::test]
async fn fault_oauth_failures_and_delay() {
    let emu = start(EmulatorConfig::default()).await;
    emu.faults().fail_next_oauth(429, 2);
    let basic = format!("Basic {DEFAULT_CREDENTIALS}");
    for _ in 0..2 {
        let resp = oauth(&emu, &basic, "scope=GIGACHAT_API_PERS").await;
        assert_eq!(resp.status(), 429);
        assert_eq!(
            resp.json::<Value>().await.unwrap(),
            json!({"code":429,"message":"Too many requests"})
        );
    }
    assert_eq!(
        oauth(&emu, &basic, "scope=GIGACHAT_API_PERS")
            .await
            .status(),
        200
    );
    emu.faults().set_oauth_delay(Duration::from_millis(300));
    let t0 = Instant::now();
    assert_eq!(
        oauth(&emu, &basic, "scope=GIGACHAT_API_PERS")
            .await
            .status(),
        200
    );
    assert!(t0.elapsed() >= Duration::from_millis(300));
    let s = emu.stats();
    assert_eq!((s.oauth_calls, s.oauth_failures), (4, 2));

    emu.faults().reset();
    emu.faults().set_oauth_rate_limit(Some(2));
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(
            oauth(&emu, &basic, "scope=GIGACHAT_API_PERS")
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 200, 429]);
}

#[tokio::test]
async fn fault_api_401_and_status() {
    let emu = start(EmulatorConfig::default()).await;
    let tok = token(&emu).await;
    emu.faults().fail_next_api_with_401(1);
    let resp = post_chat(&emu, &tok, &chat_body("x", false)).await;
    assert_api_error(resp, 401, "Token has expired").await;
    assert_eq!(
        post_chat(&emu, &tok, &chat_body("x", false)).await.status(),
        200
    );
    emu.faults().fail_next_api_with_status(503, 2);
    for _ in 0..2 {
        let resp = post_chat(&emu, &tok, &chat_body("x", true)).await;
        assert_eq!(resp.status(), 503);
        assert_eq!(
            resp.headers()["content-type"],
            "application/json; charset=utf-8"
        );
        assert_eq!(
            resp.json::<Value>().await.unwrap(),
            json!({"status":503,"message":"Service Unavailable"})
        );
    }
    assert_eq!(
        post_chat(&emu, &tok, &chat_body("x", false)).await.status(),
        200
    );
}

#[tokio::test]
async fn fault_error_in_200() {
    let emu = start(EmulatorConfig::default()).await;
    let tok = token(&emu).await;
    emu.faults().error_in_200_next(2);
    let resp = post_chat(&emu, &tok, &chat_body("x", false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"status":429,"message":"Too many requests"})
    );
    let resp = post_chat(&emu, &tok, &chat_body("x", true)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(
        resp.text().await.unwrap(),
        "data: {\"status\":429,\"message\":\"Too many requests\"}\n\n"
    );
    let resp = post_chat(&emu, &tok, &chat_body("x", false)).await;
    assert!(resp.json::<Value>().await.unwrap()["choices"].is_array());
}

#[tokio::test]
async fn fault_first_byte_delay() {
    let emu = start(EmulatorConfig::default()).await;
    let tok = token(&emu).await;
    emu.faults()
        .set_first_byte_delay(Duration::from_millis(300));
    let t0 = Instant::now();
    let resp = post_chat(&emu, &tok, &chat_body("x", true)).await;
    assert!(t0.elapsed() >= Duration::from_millis(300));
    assert_eq!(resp.status(), 200);
    // OAuth is not affected.
    let t0 = Instant::now();
    token(&emu).await;
    assert!(t0.elapsed() < Duration::from_millis(300));
}

#[tokio::test]
async fn fault_reset_stream_after_chunks() {
    let emu = start(EmulatorConfig::default()).await;
    let tok = token(&emu).await;
    emu.faults().reset_stream_after_chunks(Some(2));
    let resp = post_chat(&emu, &tok, &chat_body("one two three four", true)).await;
    assert_eq!(resp.status(), 200);
    let (chunks, err) = chunks(resp).await;
    assert!(err.is_some(), "the body must end with an error");
    let text = joined(&chunks);
    assert_eq!(text.matches("data: ").count(), 2);
    assert!(!text.contains("[DONE]"));
    let s = emu.stats();
    assert_eq!(
        (s.streams_started, s.streams_completed, s.streams_cancelled),
        (1, 0, 0)
    );
    emu.faults().reset_stream_after_chunks(None);
    let resp = post_chat(&emu, &tok, &chat_body("one two", true)).await;
    assert!(resp.text().await.unwrap().ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn fault_split_sse_writes() {
    let emu = start(EmulatorConfig::default()).await;
    let tok = token(&emu).await;
    let normal = post_chat(&emu, &tok, &chat_body("a: b", true))
        .await
        .text()
        .await
        .unwrap();
    emu.faults().split_sse_writes(true);
    let resp = post_chat(&emu, &tok, &chat_body("a: b", true)).await;
    let (chunks, err) = chunks(resp).await;
    assert!(err.is_none());
    let events = normal.matches("\n\n").count();
    assert!(
        chunks.len() > events,
        "{} chunks for {events} events",
        chunks.len()
    );
    // Some chunk ends right after a colon, i.e. `": "` was split.
    assert!(chunks.iter().any(|(_, b)| b.ends_with(b":")));
    // Same bytes apart from the timestamps.
    let strip = |s: &str| -> Vec<Value> {
        s.split_terminator("\n\n")
            .filter_map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).ok())
            .map(|mut v: Value| {
                v["created"] = json!(0);
                v
            })
            .collect()
    };
    assert_eq!(strip(&joined(&chunks)), strip(&normal));
}

#[tokio::test]
async fn concurrency_limit_and_max_concurrent() {
    let emu = start(EmulatorConfig {
        concurrency_limit: Some(1),
        chunk_delay: Duration::from_millis(100),
        ..EmulatorConfig::default()
    })
    .await;
    let tok = token(&emu).await;
    let first = post_chat(&emu, &tok, &chat_body("one two three", true)).await;
    assert_eq!(first.status(), 200);
    let second = post_chat(&emu, &tok, &chat_body("x", false)).await;
    assert_api_error(second, 429, "Too many requests").await;
    assert!(first.text().await.unwrap().ends_with("[DONE]\n\n"));
    // The slot is released once the stream has ended.
    wait_for(&emu, |s| s.streams_completed == 1).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        post_chat(&emu, &tok, &chat_body("x", false)).await.status(),
        200
    );
    assert_eq!(emu.stats().max_concurrent_api, 2);
}

#[tokio::test]
async fn stream_cancellation_is_counted() {
    let emu = start(EmulatorConfig {
        chunk_delay: Duration::from_millis(100),
        ..EmulatorConfig::default()
    })
    .await;
    let tok = token(&emu).await;
    let resp = post_chat(&emu, &tok, &chat_body("one two three four five", true)).await;
    let mut stream = resp.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    drop(stream);
    wait_for(&emu, |s| s.streams_cancelled == 1).await;
    let s = emu.stats();
    assert_eq!((s.streams_started, s.streams_completed), (1, 0));
}

// ------------------------------------------------------ observability ---

#[tokio::test]
async fn recorded_requests_and_clear() {
    let emu = start(EmulatorConfig::default()).await;
    let tok = token(&emu).await;
    client()
        .get(format!("{}/models?x=1", emu.base_url()))
        .bearer_auth(&tok)
        .header("Cookie", "secret=1")
        .header("X-Client-ID", "abc")
        .send()
        .await
        .unwrap();
    let rec = emu.recorded_requests();
    assert_eq!(rec.len(), 2);
    assert_eq!(rec[0].method, "POST");
    assert_eq!(rec[0].path, "/api/v2/oauth");
    assert_eq!(rec[0].body_len, "scope=GIGACHAT_API_PERS".len());
    assert_eq!(rec[0].header("rquid"), Some(RQUID));
    assert_eq!(rec[1].path, "/api/v1/models?x=1");
    assert_eq!(rec[1].header("cookie"), Some("secret=1"));
    assert!(
        rec[1]
            .headers
            .iter()
            .any(|(k, v)| k == "x-client-id" && v == "abc")
    );
    assert!(rec[1].headers.iter().all(|(k, _)| *k == k.to_lowercase()));
    emu.clear_recorded();
    assert!(emu.recorded_requests().is_empty());
}

#[tokio::test]
async fn control_http_surface() {
    let emu = start(EmulatorConfig::default()).await;
    let c = client();
    let ctl = |p: &str| format!("http://{}/_emulator/{p}", emu.addr());
    let tok = token(&emu).await;

    let resp = c
        .post(ctl("faults"))
        .json(&json!({
            "fail_next_api_with_status":{"status":502,"count":1},
            "fail_next_api_with_401":1,
            "oauth_delay_ms":0,
            "chunk_delay_ms":0,
            "first_byte_delay_ms":0,
            "split_sse_writes":false,
            "reset_stream_after_chunks":null,
            "error_in_200_next":0
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(
        post_chat(&emu, &tok, &chat_body("x", false)).await.status(),
        401
    );
    assert_eq!(
        post_chat(&emu, &tok, &chat_body("x", false)).await.status(),
        502
    );
    assert_eq!(
        post_chat(&emu, &tok, &chat_body("x", false)).await.status(),
        200
    );

    let resp = c
        .post(ctl("faults"))
        .json(&json!({"fail_next_oauth":{"status":500,"count":1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let resp = oauth(
        &emu,
        &format!("Basic {DEFAULT_CREDENTIALS}"),
        "scope=GIGACHAT_API_PERS",
    )
    .await;
    assert_eq!(resp.status(), 500);

    let stats: Value = c
        .get(ctl("stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["api_calls"], 3);
    assert_eq!(stats["oauth_calls"], 2);
    assert_eq!(stats["oauth_failures"], 1);
    for key in [
        "streams_started",
        "streams_completed",
        "streams_cancelled",
        "max_concurrent_api",
    ] {
        assert!(stats[key].is_u64(), "{key}");
    }

    let reqs: Value = c
        .get(ctl("requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let reqs = reqs.as_array().unwrap();
    assert_eq!(reqs.len(), 5);
    assert_eq!(reqs[1]["method"], "POST");
    assert_eq!(reqs[1]["path"], "/api/v1/chat/completions");
    assert!(
        reqs[1]["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h[0] == "authorization")
    );
    assert!(reqs[1]["body_len"].as_u64().unwrap() > 0);

    // The control surface is not recorded or counted itself.
    let resp = c.post(ctl("reset-stats")).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(emu.stats().api_calls, 0);
    assert_eq!(emu.recorded_requests().len(), 5);

    // expire_all_tokens and reset through HTTP.
    let resp = c
        .post(ctl("faults"))
        .json(&json!({"expire_all_tokens":true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(
        post_chat(&emu, &tok, &chat_body("x", false)).await.status(),
        401
    );
    c.post(ctl("faults"))
        .json(&json!({"error_in_200_next":1}))
        .send()
        .await
        .unwrap();
    c.post(ctl("faults"))
        .json(&json!({"reset":true}))
        .send()
        .await
        .unwrap();
    let fresh = token(&emu).await;
    let body: Value = post_chat(&emu, &fresh, &chat_body("x", false))
        .await
        .json()
        .await
        .unwrap();
    assert!(body["choices"].is_array());

    // Typos are rejected loudly.
    let resp = c
        .post(ctl("faults"))
        .json(&json!({"fail_next_api_with_4O1":1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(c.get(ctl("nope")).send().await.unwrap().status(), 404);
}

// ------------------------------------------------------------ transport ---

#[tokio::test]
async fn h2c_prior_knowledge() {
    let emu = start(EmulatorConfig::default()).await;
    let tok = token(&emu).await;
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = post_json_authorized(
        &h2,
        format!("{}/chat/completions", emu.base_url()),
        &tok,
        &chat_body("over h2", true),
    )
    .await;
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = resp.text().await.unwrap();
    assert!(text.starts_with(
        "data: {\"choices\":[{\"delta\":{\"content\":\"Echo: \",\"role\":\"assistant\"}"
    ));
    assert!(text.ends_with("data: [DONE]\n\n"));
    // v2 over h2 must not carry the HTTP/1-only Keep-Alive header.
    let v2_stream = json!({"model":"GigaChat","stream":true,"messages":[{"role":"user","content":[{"text":"x"}]}]});
    let url = format!("http://{}/v2/chat/completions", emu.addr());
    let resp = post_json_authorized(&h2, url, &tok, &v2_stream).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("keep-alive").is_none());
    assert!(resp.text().await.unwrap().contains("response.message.done"));
}

#[tokio::test]
async fn shutdown_stops_listening() {
    let emu = start(EmulatorConfig::default()).await;
    let addr = emu.addr();
    token(&emu).await;
    tokio::time::timeout(Duration::from_secs(10), emu.shutdown())
        .await
        .unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn binary_prints_address_and_exits_on_sigterm() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_gigachat-emulator"))
        .args(["--port", "0", "--chunk-delay-ms", "0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let rest = line
        .strip_prefix("gigachat-emulator listening on http://127.0.0.1:")
        .unwrap();
    let port: u16 = rest.split(' ').next().unwrap().parse().unwrap();
    assert!(rest.contains(&format!(
        "(base_url=http://127.0.0.1:{port}/api/v1, auth_url=http://127.0.0.1:{port}/api/v2/oauth)"
    )));
    let resp = client()
        .get(format!("http://127.0.0.1:{port}/_emulator/stats"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    #[cfg(unix)]
    {
        let pid = child.id().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(exit.success(), "{exit:?}");
    }
}
