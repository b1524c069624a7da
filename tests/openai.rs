//! The OpenAI-compatible route, black-box: the real proxy binary in front
//! of the in-process emulator, called the way the OpenAI SDKs call it
//! (`Authorization: Bearer <apiKey>`, JSON bodies, SSE streams). Every
//! answer is checked for content, and every refusal for OpenAI's error
//! shape, which is all those clients read.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::routes::{
    assert_preflight_passes, chunks_of, post_json, settled_budget, stats_after_a_cancelled_stream,
    upload_natively, uploads_seen,
};
use common::*;
use gigachat_emulator::FunctionCallChunk;
use serde_json::{Value, json};

const ALICE: &str = "alice-openai-key-0123456789";
const BOB: &str = "bob-openai-key-0123456789ab";

const V1: &str = "/api/gigachat-openai/v1";

fn v1(s: &Setup, path: &str) -> String {
    s.proxy.url(&format!("{V1}/{path}"))
}

fn user(content: &str) -> Value {
    json!({"model": "GigaChat", "messages": [{"role": "user", "content": content}]})
}

async fn post(s: &Setup, path: &str, body: &Value, key: Option<&str>) -> reqwest::Response {
    post_json(s, &format!("{V1}/{path}"), body, key).await
}

/// The status and the JSON body of an answer.
async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)));
    (status, json)
}

/// Asserts OpenAI's error shape and returns its `error` object.
fn openai_error(body: &Value) -> &Value {
    let error = &body["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(error["type"].is_string(), "{body}");
    assert!(error.get("param").is_some(), "{body}");
    assert!(error["code"].is_string(), "{body}");
    assert!(
        body.get("status").is_none(),
        "GigaChat's shape leaked: {body}"
    );
    error
}

fn streamed_text(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

fn finish_reasons(chunks: &[Value]) -> Vec<String> {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn chat_answers_in_openai_shape_with_the_model_the_client_named() {
    let s = setup_with(
        |_| {},
        &[("GIGACHAT_PROXY_MODEL_ALIASES", "gpt-4o-mini=GigaChat-2")],
    )
    .await;
    let mut body = user("hello there");
    body["model"] = json!("gpt-4o-mini");
    // The SDKs always send their `apiKey`; in open mode it names no one.
    let response = post(&s, "chat/completions", &body, Some("sk-not-a-proxy-key")).await;
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let (status, answer) = json_of(response).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["id"], format!("chatcmpl-{request_id}"));
    assert_eq!(answer["model"], "gpt-4o-mini");
    assert_eq!(answer["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "Echo: hello there"
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    assert!(answer["usage"]["total_tokens"].as_u64().unwrap() > 0);
    // GigaChat got its own v1 call for the alias's model.
    let sent = s.emulator.recorded_requests();
    let chat = sent.iter().rev().find(|r| r.method == "POST").unwrap();
    assert_eq!(chat.path, "/api/v1/chat/completions");
    assert!(
        s.proxy
            .wait_for_log("route=\"openai\" endpoint=\"chat\"")
            .await,
        "{}",
        s.proxy.logs()
    );
}

#[tokio::test]
async fn streams_are_translated_chunk_by_chunk_with_usage_once_and_done_last() {
    let s = setup().await;
    let mut body = user("one two three");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let response = post(&s, "chat/completions", &body, None).await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert_eq!(headers["cache-control"], "no-cache");
    assert!(headers.get("content-length").is_none());
    let id = format!("chatcmpl-{}", headers["x-request-id"].to_str().unwrap());
    let text = response.text().await.unwrap();
    let (chunks, done_last) = chunks_of(&text);
    assert!(done_last, "{text}");
    assert!(chunks.len() >= 3, "{text}");
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk", "{chunk}");
        assert_eq!(chunk["id"], id.as_str());
        assert_eq!(chunk["model"], "GigaChat");
        assert!(chunk["choices"].is_array(), "{chunk}");
    }
    assert_eq!(streamed_text(&chunks), "Echo: one two three");
    assert_eq!(finish_reasons(&chunks), ["stop"]);
    let with_usage: Vec<&Value> = chunks.iter().filter(|c| !c["usage"].is_null()).collect();
    assert_eq!(with_usage.len(), 1, "{text}");
    assert_eq!(with_usage[0]["choices"], json!([]));
    assert!(
        with_usage[0]["usage"]["completion_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[tokio::test]
async fn a_tool_call_round_trip_works_in_both_stream_shapes_and_as_json() {
    let s = setup().await;
    let tools = json!([{
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }]);
    let ask = json!({"role": "user", "content": "call get_weather for Moscow"});
    let (status, answer) = json_of(
        post(
            &s,
            "chat/completions",
            &json!({"model": "GigaChat", "messages": [ask], "tools": tools}),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let choice = &answer["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{answer}");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(arguments["city"].is_string(), "{arguments}");
    let call_id = call["id"].as_str().unwrap().to_owned();

    // The tool's result goes back as OpenAI sends it; the final answer is
    // built from it.
    let history = json!({
        "model": "GigaChat",
        "tools": tools,
        "messages": [
            ask,
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call_id, "content": "{\"temperature\":21}"},
        ],
    });
    let (status, answer) = json_of(post(&s, "chat/completions", &history, None).await).await;
    assert_eq!(status, 200, "{answer}");
    let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        content.contains("get_weather") && content.contains("21"),
        "{content}"
    );

    for shape in [FunctionCallChunk::Finish, FunctionCallChunk::Separate] {
        s.emulator.faults().set_function_call_chunk(shape);
        let body = json!({"model": "GigaChat", "messages": [ask], "tools": tools, "stream": true});
        let text = post(&s, "chat/completions", &body, None)
            .await
            .text()
            .await
            .unwrap();
        let (chunks, done_last) = chunks_of(&text);
        assert!(done_last, "{shape:?}: {text}");
        let calls: Vec<&Value> = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array())
            .flatten()
            .collect();
        assert!(!calls.is_empty(), "{shape:?}: {text}");
        assert_eq!(calls[0]["function"]["name"], "get_weather", "{shape:?}");
        assert!(calls[0]["id"].as_str().is_some_and(|id| !id.is_empty()));
        assert_eq!(finish_reasons(&chunks), ["tool_calls"], "{shape:?}: {text}");
    }
}

#[tokio::test]
async fn refusals_come_in_openai_shape_with_the_right_status() {
    let s = setup().await;
    let url = v1(&s, "chat/completions");

    let response = s
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"model\": \"GigaChat\", ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-should-retry"], "false");
    let (status, body) = json_of(response).await;
    assert_eq!(status, 400);
    let error = openai_error(&body);
    assert_eq!(error["type"], "invalid_request_error");
    assert_eq!(error["code"], "invalid_json");

    for not_an_object in ["[1, 2]", "\"hello\"", "null"] {
        let response = s.http.post(&url).body(not_an_object).send().await.unwrap();
        let (status, body) = json_of(response).await;
        assert_eq!(status, 400, "{not_an_object}");
        assert_eq!(openai_error(&body)["code"], "invalid_json");
    }

    let mut two = user("hi");
    two["n"] = json!(2);
    let (status, body) = json_of(post(&s, "chat/completions", &two, None).await).await;
    assert_eq!(status, 400);
    let error = openai_error(&body);
    assert_eq!(error["code"], "unsupported_parameter");
    assert_eq!(error["param"], "n");

    // Passed through to GigaChat, which refuses it with a 422: the client
    // gets OpenAI's 400 with GigaChat's reason.
    let mut sampling = user("hi");
    sampling["top_p"] = json!(5);
    let (status, body) = json_of(post(&s, "chat/completions", &sampling, None).await).await;
    assert_eq!(status, 400, "{body}");
    let error = openai_error(&body);
    assert_eq!(error["type"], "invalid_request_error");
    assert_eq!(error["code"], "upstream_422");
    assert!(
        error["message"].as_str().unwrap().contains("top_p"),
        "{body}"
    );

    // A base URL without `/v1`, the commonest mistake, and an unknown call.
    for path in [
        "/api/gigachat-openai/chat/completions",
        "/api/gigachat-openai/v1/completions",
    ] {
        let response = post_json(&s, path, &user("hi"), None).await;
        let (status, body) = json_of(response).await;
        assert_eq!(status, 404, "{path}");
        let error = openai_error(&body);
        assert_eq!(error["type"], "not_found_error");
        assert!(
            error["hint"]
                .as_str()
                .unwrap()
                .contains("/api/gigachat-openai/v1/"),
            "{body}"
        );
    }

    let response = s.http.get(&url).send().await.unwrap();
    assert_eq!(response.headers()["allow"], "POST, OPTIONS");
    let (status, body) = json_of(response).await;
    assert_eq!(status, 405);
    openai_error(&body);
    let response = s
        .http
        .request(reqwest::Method::OPTIONS, v1(&s, "models"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(response.headers()["allow"], "GET, OPTIONS");
    assert_eq!(
        s.emulator.stats().api_calls,
        1,
        "only the top_p call went upstream"
    );
}

#[tokio::test]
async fn with_auth_required_the_sdks_api_key_is_the_end_user_key() {
    let keys = format!("{ALICE},{BOB}");
    let s = setup_with(|_| {}, &[("GIGACHAT_PROXY_API_KEYS", keys.as_str())]).await;

    let (status, answer) =
        json_of(post(&s, "chat/completions", &user("who am I"), Some(ALICE)).await).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["choices"][0]["message"]["content"], "Echo: who am I");

    for key in [None, Some("sk-someone-elses-key")] {
        let response = post(&s, "chat/completions", &user("hi"), key).await;
        assert!(response.headers().contains_key("www-authenticate"));
        let (status, body) = json_of(response).await;
        assert_eq!(status, 401, "{key:?}");
        let error = openai_error(&body);
        assert_eq!(error["type"], "authentication_error");
        assert_eq!(error["code"], "unauthenticated");
    }
    let listed = s
        .http
        .get(v1(&s, "models"))
        .bearer_auth(BOB)
        .send()
        .await
        .unwrap();
    let (status, models) = json_of(listed).await;
    assert_eq!(status, 200, "{models}");
    assert_eq!(models["object"], "list");
    assert!(
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "GigaChat" && m["object"] == "model"),
        "{models}"
    );
    assert_eq!(
        s.emulator.stats().api_calls,
        2,
        "refused calls never reach GigaChat"
    );
    assert_no_secret(
        &s.proxy.logs(),
        &[ALICE.to_owned(), BOB.to_owned()],
        "the logs",
    );
}

#[tokio::test]
async fn a_browser_preflight_on_the_openai_route_passes() {
    let s = setup().await;
    let origin = "http://localhost:5173";
    let headers = assert_preflight_passes(
        &s,
        &format!("{V1}/chat/completions"),
        origin,
        "authorization, content-type, x-stainless-os, x-stainless-lang",
    )
    .await;
    let allowed = headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(allowed.contains("authorization") && allowed.contains("x-stainless-os"));

    let answer = s
        .http
        .post(v1(&s, "chat/completions"))
        .header("origin", origin)
        .json(&user("from a page"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.headers()["access-control-allow-origin"], origin);
    let (status, answer) = json_of(answer).await;
    assert_eq!(status, 200);
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "Echo: from a page"
    );
}

#[tokio::test]
async fn a_translated_stream_is_charged_what_gigachat_reported() {
    let s = setup_with(
        |_| {},
        &[("GIGACHAT_PROXY_TOKEN_BUDGET_ANONYMOUS", "100000/w")],
    )
    .await;
    let mut body = user("count these words for the budget please");
    body["stream"] = json!(true);
    let text = post(&s, "chat/completions", &body, None)
        .await
        .text()
        .await
        .unwrap();
    let (chunks, done_last) = chunks_of(&text);
    assert!(done_last);
    // Without `include_usage` the usage rides on the finish chunk.
    let usage = chunks
        .iter()
        .find_map(|c| c["usage"]["total_tokens"].as_u64())
        .unwrap_or_else(|| panic!("no usage in {text}"));
    let budget = settled_budget(&s).await;
    assert_eq!(budget["used"].as_u64(), Some(usage), "{budget}");
}

#[tokio::test]
async fn a_stop_string_ends_the_stream_there_and_cancels_gigachat() {
    let s = setup_with(|c| c.chunk_delay = Duration::from_millis(40), &[]).await;
    let mut body = user("alpha beta gamma delta epsilon zeta eta theta iota kappa");
    body["stream"] = json!(true);
    body["stop"] = json!(["gamma"]);
    let text = post(&s, "chat/completions", &body, None)
        .await
        .text()
        .await
        .unwrap();
    let (chunks, done_last) = chunks_of(&text);
    assert!(done_last, "{text}");
    assert_eq!(streamed_text(&chunks), "Echo: alpha beta ");
    assert_eq!(finish_reasons(&chunks), ["stop"]);
    let stats = stats_after_a_cancelled_stream(&s.emulator).await;
    assert_eq!(
        (stats.streams_cancelled, stats.streams_completed),
        (1, 0),
        "{stats:?}"
    );
}

fn file_part(file: Value) -> Value {
    json!({"type": "file", "file": file})
}

#[tokio::test]
async fn one_user_cannot_name_anothers_file_and_inline_files_are_their_own() {
    let keys = format!("{ALICE},{BOB}");
    let s = setup_with(|_| {}, &[("GIGACHAT_PROXY_API_KEYS", keys.as_str())]).await;
    let alices = upload_natively(&s, ALICE, b"alice's private notes").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let naming = |file: Value| {
        json!({"model": "GigaChat", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is in the file?"}, file_part(file),
        ]}]})
    };

    let (status, answer) = json_of(
        post(
            &s,
            "chat/completions",
            &naming(json!({"file_id": alices})),
            Some(ALICE),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(content.contains("private.txt"), "{content}");

    let (status, body) = json_of(
        post(
            &s,
            "chat/completions",
            &naming(json!({"file_id": alices})),
            Some(BOB),
        )
        .await,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let error = openai_error(&body);
    assert_eq!(error["code"], "object_not_found");

    // Bob's own inline file is uploaded for him and attached by its raw
    // GigaChat id, which ownership must not take for a forged one.
    let inline = json!({
        "filename": "bobs.txt",
        "file_data": format!(
            "data:text/plain;base64,{}",
            base64::engine::general_purpose::STANDARD.encode("bob's own words")
        ),
    });
    let before = uploads_seen(&s.emulator);
    let (status, answer) =
        json_of(post(&s, "chat/completions", &naming(inline.clone()), Some(BOB)).await).await;
    assert_eq!(status, 200, "{answer}");
    let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(content.contains("bobs.txt"), "{content}");
    assert_eq!(uploads_seen(&s.emulator), before + 1);

    // Alice's id next to an inline file: refused before anything is
    // uploaded.
    let mut both = naming(inline);
    both["messages"][0]["content"]
        .as_array_mut()
        .unwrap()
        .push(file_part(json!({"file_id": alices})));
    let (status, body) = json_of(post(&s, "chat/completions", &both, Some(BOB)).await).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(openai_error(&body)["code"], "object_not_found");
    assert_eq!(uploads_seen(&s.emulator), before + 1);
}

#[tokio::test]
async fn hostile_bodies_get_openai_shaped_refusals() {
    let s = setup_with(
        |_| {},
        &[
            ("GIGACHAT_PROXY_MAX_BODY_BYTES", "4000"),
            ("GIGACHAT_PROXY_BODY_TIMEOUT", "1"),
        ],
    )
    .await;
    let url = v1(&s, "chat/completions");

    // Duplicated keys: the last one counts, for the proxy as for GigaChat,
    // so what was checked is what is sent.
    let duplicated = r#"{"model":"GigaChat","messages":[{"role":"user","content":"first"}],
        "messages":[{"role":"user","content":"second"}],"stream":true,"stream":false}"#;
    let response = s
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body(duplicated)
        .send()
        .await
        .unwrap();
    let (status, answer) = json_of(response).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["choices"][0]["message"]["content"], "Echo: second");

    let huge = user(&"x".repeat(10_000));
    let (status, body) = json_of(post(&s, "chat/completions", &huge, None).await).await;
    assert_eq!(status, 413);
    assert_eq!(openai_error(&body)["code"], "body_too_large");

    // A body that never arrives: refused when the body timeout runs out.
    let started = Instant::now();
    let (status, raw) = raw_request(
        &s.proxy.addr(),
        "POST /api/gigachat-openai/v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n\
         Content-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"model\":",
    )
    .await;
    assert_eq!(status, 408, "{raw}");
    assert!(started.elapsed() < Duration::from_secs(9), "{raw}");
    let body: Value = serde_json::from_str(raw.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(openai_error(&body)["code"], "body_timeout");
    assert_eq!(
        s.emulator.stats().api_calls,
        1,
        "only the first call went upstream"
    );
}

#[tokio::test]
async fn embeddings_models_and_responses_reach_their_translations() {
    let s = setup_with(
        |_| {},
        &[("GIGACHAT_PROXY_MODEL_ALIASES", "gpt-4o=GigaChat-2-Max")],
    )
    .await;
    let inputs = json!({"model": "Embeddings", "input": ["first text", "second text"]});
    let (status, floats) = json_of(post(&s, "embeddings", &inputs, None).await).await;
    assert_eq!(status, 200, "{floats}");
    assert_eq!(floats["object"], "list");
    assert_eq!(floats["model"], "Embeddings");
    let data = floats["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    let first = data[0]["embedding"].as_array().unwrap();
    assert!(!first.is_empty() && first.iter().all(Value::is_number));
    let mut base64 = inputs.clone();
    base64["encoding_format"] = json!("base64");
    let (status, packed) = json_of(post(&s, "embeddings", &base64, None).await).await;
    assert_eq!(status, 200, "{packed}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(packed["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    assert_eq!(bytes.len(), first.len() * 4, "float32 little-endian");
    let unpacked = f32::from_le_bytes(bytes[..4].try_into().unwrap());
    assert!((f64::from(unpacked) - first[0].as_f64().unwrap()).abs() < 1e-6);

    let (status, model) = json_of(s.http.get(v1(&s, "models/gpt-4o")).send().await.unwrap()).await;
    assert_eq!(status, 200, "{model}");
    assert_eq!(
        (&model["id"], &model["object"]),
        (&json!("gpt-4o"), &json!("model"))
    );
    let recorded = s.emulator.recorded_requests();
    assert!(
        recorded
            .iter()
            .any(|r| r.path == "/api/v1/models/GigaChat-2-Max")
    );

    let ask = json!({"model": "GigaChat", "input": "hello responses"});
    let (status, response) = json_of(post(&s, "responses", &ask, None).await).await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["object"], "response");
    assert_eq!(response["status"], "completed");
    let text = response["output"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|item| item["content"].as_array().cloned().unwrap_or_default())
        .filter_map(|part| part["text"].as_str().map(str::to_owned))
        .collect::<String>();
    assert_eq!(text, "Echo: hello responses");

    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    let body = post(&s, "responses", &streamed, None)
        .await
        .text()
        .await
        .unwrap();
    let events: Vec<Value> = sse_data(&body)
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(
        events.first().unwrap()["type"],
        "response.created",
        "{body}"
    );
    assert_eq!(
        events.last().unwrap()["type"],
        "response.completed",
        "{body}"
    );
    let deltas: String = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .filter_map(|e| e["delta"].as_str())
        .collect();
    assert_eq!(deltas, "Echo: hello responses");
}
