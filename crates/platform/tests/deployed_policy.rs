//! The policy's defaults on a deployment (Vercel, Lambda), where nobody set
//! a policy variable: what a chat page needs passes, the rest is refused
//! before it reaches GigaChat, and input over the deployed bounds is
//! refused. (The local server keeps everything open: tests/policy.rs.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::Bytes;
use gigachat_emulator::Emulator;
use gigachat_proxy_core::{Platform, Proxy};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use common::{deployed_proxy, emulator};

async fn call(proxy: &Proxy, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let request = hyper::Request::builder()
        .method(method)
        .uri(format!("/api/gigachat-api/{path}"))
        .header("host", "my-app.vercel.app")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .unwrap();
    let response = proxy.handle(request).await;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn api_calls(emulator: &Emulator) -> usize {
    emulator
        .recorded_requests()
        .iter()
        .filter(|r| !r.path.contains("oauth"))
        .count()
}

#[tokio::test]
async fn deployments_expose_chat_and_keep_the_rest_for_operators() {
    let emulator = emulator().await;
    for platform in [Platform::Vercel, Platform::Lambda] {
        let proxy = deployed_proxy(&emulator, platform);
        emulator.clear_recorded();
        for (method, path) in [
            ("GET", "balance"),
            ("POST", "assistants"),
            ("POST", "batches"),
            ("POST", "ai/check"),
        ] {
            let (status, body) = call(&proxy, method, path, Some(json!({}))).await;
            assert_eq!(status, 403, "{platform:?} {method} {path}: {body}");
            assert_eq!(body["code"], "endpoint_not_allowed");
            assert!(
                body["message"]
                    .as_str()
                    .unwrap()
                    .contains("GIGACHAT_PROXY_ENDPOINTS")
            );
        }
        assert_eq!(api_calls(&emulator), 0, "{platform:?}");

        let chat = json!({"model": "GigaChat", "messages": [{"role": "user", "content": "hi"}]});
        let (status, body) = call(&proxy, "POST", "chat/completions", Some(chat)).await;
        assert_eq!(status, 200, "{body}");
        let (status, _) = call(&proxy, "GET", "models", None).await;
        assert_eq!(status, 200);
        assert_eq!(api_calls(&emulator), 2, "{platform:?}");

        // The deployed input bounds: 100 messages, 100,000 characters.
        let many: Vec<Value> = (0..101)
            .map(|_| json!({"role": "user", "content": "x"}))
            .collect();
        let (status, body) = call(
            &proxy,
            "POST",
            "chat/completions",
            Some(json!({"model": "GigaChat", "messages": many})),
        )
        .await;
        assert_eq!(status, 413, "{body}");
        assert_eq!(body["code"], "input_too_large");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("GIGACHAT_PROXY_MAX_MESSAGES")
        );
        let long = json!({"model": "GigaChat", "messages": [
            {"role": "user", "content": "x".repeat(100_001)},
        ]});
        let (status, body) = call(&proxy, "POST", "chat/completions", Some(long)).await;
        assert_eq!(status, 413, "{body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("GIGACHAT_PROXY_MAX_INPUT_CHARS")
        );
        assert_eq!(api_calls(&emulator), 2, "{platform:?}");
    }
}
