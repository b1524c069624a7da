//! Black-box tests of the v1 chat rules an OpenAI-style translation can
//! break (system position, samplers, function calls and results,
//! attachments, `response_format`) and of the two stream shapes of a
//! function call, over HTTP against an emulator on a random port.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gigachat_emulator::{DEFAULT_CREDENTIALS, Emulator, EmulatorConfig, FunctionCallChunk};
use serde_json::{Value, json};

async fn start() -> (Emulator, String) {
    let emu = Emulator::start(EmulatorConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let resp = client()
        .post(emu.auth_url())
        .header("RqUID", "6f0b1291-c7f3-43c6-bb2e-9f3efb2dc98e")
        .header("Authorization", format!("Basic {DEFAULT_CREDENTIALS}"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("scope=GIGACHAT_API_PERS")
        .send()
        .await
        .unwrap();
    let token: Value = resp.json().await.unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();
    (emu, token)
}

fn client() -> reqwest::Client {
    // No proxy: the sandbox may export HTTP(S)_PROXY for package registries.
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn chat(emu: &Emulator, token: &str, body: &Value) -> (u16, String) {
    let resp = client()
        .post(format!("{}/chat/completions", emu.base_url()))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// The `{status, message}` of a refusal, checking the status in both.
async fn refusal(emu: &Emulator, token: &str, body: &Value) -> (u16, String) {
    let (status, text) = chat(emu, token, body).await;
    let error: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["status"], status, "{text}");
    (status, error["message"].as_str().unwrap().to_owned())
}

fn weather() -> Value {
    json!([{"name":"get_weather","description":"Weather","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}])
}

fn ask() -> Value {
    json!({"role":"user","content":"get_weather for Paris"})
}

fn call() -> Value {
    json!({"role":"assistant","content":"","function_call":{"name":"get_weather","arguments":{"city":"Paris"}}})
}

fn result(content: &str) -> Value {
    json!({"role":"function","name":"get_weather","content":content})
}

fn with(messages: Value) -> Value {
    json!({"model":"GigaChat","messages":messages,"functions":weather()})
}

#[tokio::test]
async fn message_order_and_samplers_are_gigachat_strict() {
    let (emu, tok) = start().await;
    for messages in [
        json!([{"role":"user","content":"x"},{"role":"system","content":"late"}]),
        json!([{"role":"system","content":"a"},{"role":"system","content":"b"},{"role":"user","content":"x"}]),
    ] {
        let body = json!({"model":"GigaChat","messages":messages});
        assert_eq!(
            refusal(&emu, &tok, &body).await,
            (
                422,
                "Invalid params: system message must be the first message".to_owned()
            )
        );
    }
    for temperature in [0.0, -0.5] {
        let body = json!({"model":"GigaChat","messages":[{"role":"user","content":"x"}],"temperature":temperature});
        assert_eq!(
            refusal(&emu, &tok, &body).await,
            (
                422,
                "Invalid params: temperature must be in range (0, +inf)".to_owned()
            )
        );
    }
}

#[tokio::test]
async fn function_history_is_checked() {
    let (emu, tok) = start().await;
    let unanswered = (
        422,
        "Invalid params: every assistant function call must have a result in history".to_owned(),
    );
    assert_eq!(
        refusal(&emu, &tok, &with(json!([ask(), call()]))).await,
        unanswered
    );
    assert_eq!(
        refusal(&emu, &tok, &with(json!([ask(), call(), ask()]))).await,
        unanswered
    );
    // A parallel batch sent as calls-then-results, the way OpenAI orders it.
    let batch = json!([ask(), call(), call(), result("{}"), result("{}")]);
    assert_eq!(refusal(&emu, &tok, &with(batch)).await, unanswered);

    let (status, message) = refusal(&emu, &tok, &with(json!([ask(), result("{}")]))).await;
    assert_eq!(status, 422);
    assert!(message.contains("must follow"), "{message}");

    for plain in ["+5°C", "[1]", "\"sunny\""] {
        let (status, message) =
            refusal(&emu, &tok, &with(json!([ask(), call(), result(plain)]))).await;
        assert_eq!(status, 422);
        assert!(
            message.starts_with("Invalid params: invalid function result for function json string"),
            "{message}"
        );
    }

    let mut renamed = result("{}");
    renamed["name"] = json!("get_time");
    let (status, message) = refusal(&emu, &tok, &with(json!([ask(), call(), renamed]))).await;
    assert_eq!(status, 422);
    assert!(message.contains("does not match"), "{message}");

    let mut stringified = call();
    stringified["function_call"]["arguments"] = json!("{\"city\":\"Paris\"}");
    let (status, message) =
        refusal(&emu, &tok, &with(json!([ask(), stringified, result("{}")]))).await;
    assert_eq!(status, 422);
    assert!(
        message.contains("arguments must be a JSON object"),
        "{message}"
    );

    let mut two = call();
    two["function_call"] = json!([call()["function_call"], call()["function_call"]]);
    let (status, message) = refusal(&emu, &tok, &with(json!([ask(), two, result("{}")]))).await;
    assert_eq!(status, 422);
    assert!(message.contains("one call"), "{message}");
}

#[tokio::test]
async fn a_round_trip_ends_in_an_answer_built_from_the_result() {
    let (emu, tok) = start().await;
    // Asked by name: the model calls the function, with a state id.
    let (status, text) = chat(&emu, &tok, &with(json!([ask()]))).await;
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    let message = &answer["choices"][0]["message"];
    assert_eq!(answer["choices"][0]["finish_reason"], "function_call");
    assert_eq!(message["function_call"]["name"], "get_weather");
    assert_eq!(
        message["function_call"]["arguments"],
        json!({"city":"get_weather for Paris"})
    );
    assert_eq!(message["functions_state_id"].as_str().unwrap().len(), 36);

    let messages = json!([ask(), call(), result(r#"{"forecast":"+5°C, облачно"}"#)]);
    let (status, text) = chat(&emu, &tok, &with(messages)).await;
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        r#"get_weather returned {"forecast":"+5°C, облачно"}"#
    );
}

/// The `data:` payloads of a v1 stream, `[DONE]` excluded.
async fn stream_events(emu: &Emulator, tok: &str) -> Vec<Value> {
    let mut body = with(json!([ask()]));
    body["stream"] = json!(true);
    let (status, text) = chat(emu, tok, &body).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    text.split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .map(|data| serde_json::from_str(data).unwrap())
        .collect()
}

#[tokio::test]
async fn function_call_stream_shape_is_switchable() {
    let (emu, tok) = start().await;
    // Default: the call rides in the finish chunk, with usage.
    let events = stream_events(&emu, &tok).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let choice = &events[0]["choices"][0];
    assert_eq!(choice["finish_reason"], "function_call");
    assert_eq!(choice["delta"]["function_call"]["name"], "get_weather");
    assert_eq!(
        choice["delta"]["functions_state_id"]
            .as_str()
            .unwrap()
            .len(),
        36
    );
    assert!(events[0]["usage"]["total_tokens"].is_u64());

    // Over the control surface: the call in its own chunk first.
    let resp = client()
        .post(format!("http://{}/_emulator/faults", emu.addr()))
        .json(&json!({"function_call_chunk":"separate"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let events = stream_events(&emu, &tok).await;
    assert_eq!(events.len(), 2, "{events:?}");
    let call = &events[0]["choices"][0];
    assert_eq!(call["delta"]["function_call"]["name"], "get_weather");
    assert!(call.get("finish_reason").is_none());
    assert!(events[0].get("usage").is_none());
    let finish = &events[1]["choices"][0];
    assert_eq!(finish["finish_reason"], "function_call");
    assert!(finish["delta"].get("function_call").is_none());
    assert!(events[1]["usage"]["total_tokens"].is_u64());

    // And back, through the Rust handle.
    emu.faults()
        .set_function_call_chunk(FunctionCallChunk::Finish);
    assert_eq!(stream_events(&emu, &tok).await.len(), 1);
}

async fn upload(emu: &Emulator, tok: &str, name: &str, bytes: &[u8]) -> String {
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(bytes.to_vec()).file_name(name.to_owned()),
        )
        .text("purpose", "general");
    let file: Value = client()
        .post(format!("{}/files", emu.base_url()))
        .bearer_auth(tok)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    file["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn attachments_must_be_uploaded_and_reach_the_answer() {
    let (emu, tok) = start().await;
    let image = upload(&emu, &tok, "cat.png", b"\x89PNG\r\n\x1a\n-pixels-").await;
    let other = upload(&emu, &tok, "dog.jpg", b"\xff\xd8\xff-pixels").await;
    let body = json!({"model":"GigaChat","messages":[{"role":"user","content":"What is this?","attachments":[image]}]});
    let (status, text) = chat(&emu, &tok, &body).await;
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "Echo: What is this? [attached: cat.png (16 bytes)]"
    );

    let body = json!({"model":"GigaChat","messages":[{"role":"user","content":"x","attachments":["0b5e5a8a-5f8e-4a4b-9c31-000000000000"]}]});
    assert_eq!(
        refusal(&emu, &tok, &body).await,
        (404, "File not found".to_owned())
    );

    let body = json!({"model":"GigaChat","messages":[{"role":"user","content":"x","attachments":[image, other]}]});
    let (status, message) = refusal(&emu, &tok, &body).await;
    assert_eq!(status, 422);
    assert!(message.contains("image per message"), "{message}");
}

#[tokio::test]
async fn response_format_json_schema_answers_with_json() {
    let (emu, tok) = start().await;
    let body = json!({"model":"GigaChat","messages":[{"role":"user","content":"ok"}],
        "response_format":{"type":"json_schema","schema":{"type":"object","properties":{"answer":{"type":"string"},"n":{"type":"integer"}},"required":["answer","n"]},"strict":true}});
    let (status, text) = chat(&emu, &tok, &body).await;
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    let content: Value =
        serde_json::from_str(answer["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(content, json!({"answer":"ok","n":1}));

    let body = json!({"model":"GigaChat","messages":[{"role":"user","content":"ok"}],"response_format":{"type":"json_object"}});
    let (status, message) = refusal(&emu, &tok, &body).await;
    assert_eq!(status, 422);
    assert!(message.contains("response_format"), "{message}");
}

#[tokio::test]
async fn embeddings_keep_per_item_usage_in_recorded_order() {
    let (emu, tok) = start().await;
    let resp = client()
        .post(format!("{}/embeddings", emu.base_url()))
        .bearer_auth(&tok)
        .json(&json!({"model":"Embeddings","input":["First text","Second text"]}))
        .send()
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert!(answer.get("usage").is_none(), "no top-level usage: {text}");
    let data = answer["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for (i, item) in data.iter().enumerate() {
        assert_eq!(item["index"], i);
        assert_eq!(item["usage"]["prompt_tokens"], 3);
    }
    let keys: Vec<&str> = text
        .split("\"data\":[{")
        .nth(1)
        .unwrap()
        .split(',')
        .filter_map(|field| field.strip_prefix('"').and_then(|f| f.split('"').next()))
        .take(3)
        .collect();
    assert_eq!(keys, ["object", "index", "embedding"]);
}
