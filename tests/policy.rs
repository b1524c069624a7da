//! What a public page may call: the policy's refusals (status, code, a
//! message naming the variable to change, and nothing sent to GigaChat),
//! the `max_tokens` clamp as GigaChat receives it, and a local server
//! without policy variables that behaves as before.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::routes::get_path;
use common::*;
use serde_json::{Value, json};

const USER: &str = "policy-user-key-0123456789";
const OPERATOR: &str = "policy-operator-key-0123456789";
const KEYS: &str = "policy-user-key-0123456789,policy-operator-key-0123456789";

/// The GigaChat API calls the emulator received (OAuth excluded).
fn api_calls(s: &Setup) -> usize {
    s.emulator
        .recorded_requests()
        .iter()
        .filter(|r| !r.path.contains("oauth"))
        .count()
}

/// Sends `body` as raw bytes (so duplicated keys survive) with `key`.
async fn post_raw(s: &Setup, key: Option<&str>, path: &str, body: &str) -> reqwest::Response {
    let mut request = s
        .http
        .post(s.proxy.url(&format!("/api/gigachat-api/{path}")))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap()
}

/// Asserts a policy refusal: its status, its code, a message and a hint
/// naming `variable` (each test then checks GigaChat saw nothing).
async fn assert_refused(
    response: reqwest::Response,
    status: u16,
    code: &str,
    variable: &str,
) -> Value {
    assert_eq!(response.status().as_u16(), status);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status);
    let message = body["message"].as_str().unwrap();
    assert!(message.contains(variable), "{message}");
    assert!(body["hint"].as_str().unwrap().contains(variable) || code == "body_not_json");
    body
}

fn long_chat(max_tokens: Option<u64>) -> Value {
    let mut body = json!({
        "model": "GigaChat",
        "messages": [{"role": "user", "content": "one two three four five six seven eight nine ten"}],
    });
    if let Some(n) = max_tokens {
        body["max_tokens"] = json!(n);
    }
    body
}

#[tokio::test]
async fn calls_outside_the_endpoint_list_are_refused_except_for_operators() {
    let s = setup_with(
        |_| {},
        &[
            ("GIGACHAT_PROXY_API_KEYS", KEYS),
            ("GIGACHAT_PROXY_ADMIN_KEYS", OPERATOR),
            ("GIGACHAT_PROXY_OWNERSHIP", "off"),
            ("GIGACHAT_PROXY_ENDPOINTS", "chat, models"),
        ],
    )
    .await;
    let balance = |key: &'static str| {
        s.http
            .get(s.proxy.url("/api/gigachat-api/balance"))
            .bearer_auth(key)
            .send()
    };
    let refused = balance(USER).await.unwrap();
    let body = assert_refused(
        refused,
        403,
        "endpoint_not_allowed",
        "GIGACHAT_PROXY_ENDPOINTS",
    )
    .await;
    assert!(body["message"].as_str().unwrap().contains("`balance`"));
    assert_eq!(api_calls(&s), 0);
    let v2 = post_raw(
        &s,
        Some(USER),
        "v2/chat/completions",
        &json!({"model": "GigaChat", "messages": []}).to_string(),
    )
    .await;
    assert_refused(v2, 403, "endpoint_not_allowed", "GIGACHAT_PROXY_ENDPOINTS").await;
    assert_eq!(api_calls(&s), 0, "a refused call never reaches GigaChat");

    // What the list names passes, and the operator passes everything.
    let models = get_path(&s, "/api/gigachat-api/models", Some(USER)).await;
    assert_eq!(models.status(), 200);
    assert_eq!(balance(OPERATOR).await.unwrap().status(), 200);
    assert_eq!(api_calls(&s), 2);
}

#[tokio::test]
async fn models_outside_the_list_are_refused_as_gigachat_would_read_them() {
    let s = setup_with(
        |_| {},
        &[(
            "GIGACHAT_PROXY_ALLOWED_MODELS",
            "GigaChat-2, GigaChat-2-Max",
        )],
    )
    .await;
    let chat = |model: &str| {
        json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string()
    };
    let refused = post_raw(&s, None, "chat/completions", &chat("GigaChat-2-Pro")).await;
    let body = assert_refused(
        refused,
        403,
        "model_not_allowed",
        "GIGACHAT_PROXY_ALLOWED_MODELS",
    )
    .await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("GigaChat-2, GigaChat-2-Max"),
        "{body}"
    );
    // GigaChat keeps the last of duplicated keys, and so does the check.
    let smuggled = r#"{"model":"GigaChat-2","messages":[{"role":"user","content":"hi"}],"model":"GigaChat-2-Pro"}"#;
    let refused = post_raw(&s, None, "chat/completions", smuggled).await;
    assert_refused(
        refused,
        403,
        "model_not_allowed",
        "GIGACHAT_PROXY_ALLOWED_MODELS",
    )
    .await;
    let embeddings = post_raw(
        &s,
        None,
        "embeddings",
        &json!({"model": "Embeddings", "input": ["x"]}).to_string(),
    )
    .await;
    assert_refused(
        embeddings,
        403,
        "model_not_allowed",
        "GIGACHAT_PROXY_ALLOWED_MODELS",
    )
    .await;
    // A body the check cannot read whole is refused, not passed on.
    let trailing = format!("{} {{\"model\":\"GigaChat-2-Pro\"}}", chat("GigaChat-2"));
    let refused = post_raw(&s, None, "chat/completions", &trailing).await;
    assert_refused(
        refused,
        400,
        "body_not_json",
        "GIGACHAT_PROXY_ALLOWED_MODELS",
    )
    .await;
    assert_eq!(api_calls(&s), 0);

    let allowed = r#"{"model":"GigaChat-2-Pro","messages":[{"role":"user","content":"hi"}],"model":"GigaChat-2"}"#;
    let response = post_raw(&s, None, "chat/completions", allowed).await;
    assert_eq!(response.status(), 200);
    assert_eq!(api_calls(&s), 1);
}

#[tokio::test]
async fn input_over_the_bounds_is_refused_naming_the_bound() {
    let s = setup_with(
        |_| {},
        &[
            ("GIGACHAT_PROXY_MAX_MESSAGES", "2"),
            ("GIGACHAT_PROXY_MAX_INPUT_CHARS", "40"),
        ],
    )
    .await;
    let three = json!({"model": "GigaChat", "messages": [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]});
    let refused = post_raw(&s, None, "chat/completions", &three.to_string()).await;
    assert_refused(
        refused,
        413,
        "input_too_large",
        "GIGACHAT_PROXY_MAX_MESSAGES",
    )
    .await;
    // 41 Cyrillic characters: 82 bytes, but characters are what count.
    let long = json!({"model": "GigaChat", "messages": [
        {"role": "user", "content": "ж".repeat(41)},
    ]});
    let refused = post_raw(&s, None, "chat/completions", &long.to_string()).await;
    assert_refused(
        refused,
        413,
        "input_too_large",
        "GIGACHAT_PROXY_MAX_INPUT_CHARS",
    )
    .await;
    assert_eq!(api_calls(&s), 0);

    let within = json!({"model": "GigaChat", "messages": [
        {"role": "user", "content": "ж".repeat(20)},
    ]});
    let response = post_raw(&s, None, "chat/completions", &within.to_string()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(api_calls(&s), 1);
}

#[tokio::test]
async fn max_tokens_is_clamped_as_gigachat_receives_it_and_the_answer_says_so() {
    let s = setup_with(|_| {}, &[("GIGACHAT_PROXY_MAX_TOKENS", "2")]).await;
    // The emulator cuts its echo at max_tokens (finish_reason "length"),
    // so its answer shows the value it received.
    for body in [long_chat(Some(1000)), long_chat(None)] {
        let response = post_raw(&s, None, "chat/completions", &body.to_string()).await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["x-gigachat-proxy-max-tokens-clamped"],
            "2"
        );
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["usage"]["completion_tokens"], 2, "{answer}");
        assert_eq!(answer["choices"][0]["finish_reason"], "length");
    }
    // Within the bound: sent as it was, no header.
    let response = post_raw(
        &s,
        None,
        "chat/completions",
        &long_chat(Some(1)).to_string(),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(
        response
            .headers()
            .get("x-gigachat-proxy-max-tokens-clamped")
            .is_none()
    );
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["usage"]["completion_tokens"], 1);

    // A stream is clamped too, and v2 in `model_options`.
    let mut stream = long_chat(Some(500));
    stream["stream"] = json!(true);
    let response = post_raw(&s, None, "chat/completions", &stream.to_string()).await;
    assert_eq!(
        response.headers()["x-gigachat-proxy-max-tokens-clamped"],
        "2"
    );
    let events = sse_data(&response.text().await.unwrap());
    assert!(
        events
            .iter()
            .any(|e| e.contains(r#""finish_reason":"length""#)),
        "{events:?}"
    );
    let v2 = json!({
        "model": "GigaChat-2",
        "messages": [{"role": "user", "content": [{"text": "one two three four five six seven eight"}]}],
        "model_options": {"max_tokens": 300},
    });
    let response = post_raw(&s, None, "v2/chat/completions", &v2.to_string()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-gigachat-proxy-max-tokens-clamped"],
        "2"
    );
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["finish_reason"], "length", "{answer}");
}

#[tokio::test]
async fn without_policy_variables_the_local_server_forwards_as_before() {
    let s = setup().await;
    let balance = get_path(&s, "/api/gigachat-api/balance", None).await;
    let status = balance.status();
    assert_eq!(status, 200, "{}", balance.text().await.unwrap());
    let messages: Vec<Value> = (0..151)
        .map(|i| json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": "x".repeat(1000)}))
        .collect();
    let body = json!({"model": "GigaChat-2-Pro", "messages": messages, "max_tokens": 100000});
    let response = post_raw(&s, None, "chat/completions", &body.to_string()).await;
    assert_eq!(response.status(), 200);
    assert!(
        response
            .headers()
            .get("x-gigachat-proxy-max-tokens-clamped")
            .is_none()
    );
    let recorded = s.emulator.recorded_requests();
    let chat = recorded
        .iter()
        .find(|r| r.path.contains("chat/completions"))
        .unwrap();
    assert_eq!(chat.body_len, body.to_string().len(), "the bytes as sent");
}
