//! The Vercel and Lambda adapters, driven the way each platform drives
//! them, against the emulator: chat and a stream through each.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use gigachat_proxy_core::{Config, Platform, Proxy};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use common::{deployed_proxy, emulator};

fn chat_body(stream: bool) -> String {
    json!({"model": "GigaChat", "stream": stream, "messages": [{"role": "user", "content": "hello adapters"}]})
        .to_string()
}

/// Splits a body into SSE `data:` payloads.
fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| event.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(str::to_owned)
        .collect()
}

fn streamed_text(payloads: &[String]) -> String {
    payloads
        .iter()
        .filter(|p| p.as_str() != "[DONE]")
        .map(|p| {
            let v: Value = serde_json::from_str(p).unwrap();
            v["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// The whole of a response body, read as JSON.
async fn json_body<B>(body: B) -> Value
where
    B: hyper::body::Body,
    B::Error: std::fmt::Debug,
{
    let bytes = body.collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

/// Reads a streamed body frame by frame: when each data frame arrived
/// (counted from `started`), and all the text, so a test can tell a stream
/// from a buffered body.
async fn timed_frames<B>(mut body: B, started: Instant) -> (Vec<Duration>, String)
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    let mut arrivals = Vec::new();
    let mut text = String::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            arrivals.push(started.elapsed());
            text.push_str(std::str::from_utf8(&data).unwrap());
        }
    }
    (arrivals, text)
}

// ---------- Vercel: vercel_runtime's service over a real hyper connection ----------

async fn vercel_serve(
    request: hyper::Request<hyper::body::Incoming>,
    proxy: Proxy,
) -> Result<hyper::Response<vercel_runtime::ResponseBody>, std::convert::Infallible> {
    use tower_service::Service as _;
    let mut service = vercel_runtime::service_fn(move |req: vercel_runtime::Request| {
        let proxy = proxy.clone();
        async move { gigachat_proxy_platform::vercel::handle(&proxy, req).await }
    });
    let state = vercel_runtime::AppState::new(vercel_runtime::LogContext::new(None, None, None));
    Ok(service.call((state, request)).await.unwrap())
}

async fn vercel_client(proxy: Proxy) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let service = hyper::service::service_fn(move |req| vercel_serve(req, proxy.clone()));
        hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(server_io), service)
            .await
            .unwrap();
    });
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(client_io))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

fn vercel_request(body: String) -> hyper::Request<Full<Bytes>> {
    hyper::Request::post("/api/gigachat-api/chat/completions")
        .header("host", "my-app.vercel.app")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

#[tokio::test]
async fn vercel_entry_answers_a_chat() {
    let emulator = emulator().await;
    let mut client = vercel_client(deployed_proxy(&emulator, Platform::Vercel)).await;
    let response = client
        .send_request(vercel_request(chat_body(false)))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = json_body(response.into_body()).await;
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Echo: hello adapters"
    );
}

#[tokio::test]
async fn vercel_entry_streams_events_as_they_arrive() {
    let emulator = emulator().await;
    emulator
        .faults()
        .set_chunk_delay(Duration::from_millis(150));
    let mut client = vercel_client(deployed_proxy(&emulator, Platform::Vercel)).await;
    let started = Instant::now();
    let response = client
        .send_request(vercel_request(chat_body(true)))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    let (arrivals, text) = timed_frames(response.into_body(), started).await;
    let payloads = sse_data(&text);
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(streamed_text(&payloads), "Echo: hello adapters");
    let first = arrivals[0];
    let last = *arrivals.last().unwrap();
    assert!(arrivals.len() >= 4, "events were merged: {arrivals:?}");
    assert!(
        last - first >= Duration::from_millis(300),
        "stream was buffered: {arrivals:?}"
    );
}

// ---------- Lambda: lambda_http events (API Gateway v2, Function URL) ----------

fn lambda_event(fixture: &str, path: &str, body: &str) -> lambda_http::Request {
    let mut event: Value = serde_json::from_str(fixture).unwrap();
    event["rawPath"] = json!(path);
    event["rawQueryString"] = json!("");
    event["requestContext"]["http"]["method"] = json!("POST");
    event["requestContext"]["http"]["path"] = json!(path);
    event["headers"]["content-type"] = json!("application/json");
    event["body"] = json!(body);
    event["isBase64Encoded"] = json!(false);
    lambda_http::request::from_str(&event.to_string()).unwrap()
}

/// A chat completion (streamed or not) as the Lambda event of `fixture`.
fn chat_event(fixture: &str, stream: bool) -> lambda_http::Request {
    lambda_event(
        fixture,
        "/api/gigachat-api/chat/completions",
        &chat_body(stream),
    )
}

const FUNCTION_URL: &str = include_str!("fixtures/lambda_function_url_request.json");
const APIGW_V2: &str = include_str!("fixtures/apigw_v2_proxy_request.json");

#[tokio::test]
async fn lambda_entry_answers_a_chat_from_function_url_and_http_api_events() {
    let emulator = emulator().await;
    let proxy = deployed_proxy(&emulator, Platform::Lambda);
    for fixture in [FUNCTION_URL, APIGW_V2] {
        let request = chat_event(fixture, false);
        let response = gigachat_proxy_platform::lambda::handle(&proxy, request)
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body = json_body(response.into_body()).await;
        assert_eq!(
            body["choices"][0]["message"]["content"],
            "Echo: hello adapters"
        );
    }
}

#[tokio::test]
async fn lambda_entry_strips_a_non_default_stage_from_the_path() {
    let emulator = emulator().await;
    let proxy = deployed_proxy(&emulator, Platform::Lambda);
    let mut event: Value = serde_json::from_str(include_str!(
        "fixtures/apigw_v2_proxy_request_with_stage_in_path.json"
    ))
    .unwrap();
    event["rawPath"] = json!("/Prod/api/gigachat-health");
    event["requestContext"]["http"]["method"] = json!("GET");
    event["requestContext"]["http"]["path"] = json!("/Prod/api/gigachat-health");
    event["body"] = Value::Null;
    let request = lambda_http::request::from_str(&event.to_string()).unwrap();
    let response = gigachat_proxy_platform::lambda::handle(&proxy, request)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = json_body(response.into_body()).await;
    assert_eq!(body["platform"], "lambda");
}

#[tokio::test]
async fn lambda_entry_streams_events_as_they_arrive() {
    let emulator = emulator().await;
    emulator
        .faults()
        .set_chunk_delay(Duration::from_millis(150));
    let proxy = deployed_proxy(&emulator, Platform::Lambda);
    let request = chat_event(FUNCTION_URL, true);
    let started = Instant::now();
    let response = gigachat_proxy_platform::lambda::handle(&proxy, request)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    // What `run_with_streaming_response` does with the body: poll frames and
    // write each one to the response stream as soon as it is ready.
    let (arrivals, text) = timed_frames(response.into_body(), started).await;
    let payloads = sse_data(&text);
    assert_eq!(streamed_text(&payloads), "Echo: hello adapters");
    assert!(arrivals.len() >= 4, "events were merged: {arrivals:?}");
    assert!(
        *arrivals.last().unwrap() - arrivals[0] >= Duration::from_millis(300),
        "{arrivals:?}"
    );
}

#[tokio::test]
async fn lambda_buffered_mode_turns_the_response_into_an_api_gateway_answer() {
    use lambda_http::IntoResponse as _;
    let emulator = emulator().await;
    let proxy = deployed_proxy(&emulator, Platform::Lambda);
    let request = chat_event(APIGW_V2, true);
    let response = gigachat_proxy_platform::lambda::handle(&proxy, request)
        .await
        .unwrap();
    // `lambda_http::run` collects the body like this for a buffered invoke.
    let collected = response.into_response().await;
    let text = match collected.body() {
        lambda_http::Body::Text(text) => text.clone(),
        other => panic!("SSE should be sent as text, got {other:?}"),
    };
    assert_eq!(streamed_text(&sse_data(&text)), "Echo: hello adapters");
}

/// The switch as the runtime reads it: both spellings turn streaming off,
/// unset and `TRUE` keep it, and a value it cannot read makes every answer
/// a `500 config_invalid` naming the variable (not a silent guess).
#[tokio::test]
async fn the_lambda_streaming_switch_reads_both_spellings_and_refuses_typos() {
    use gigachat_proxy_platform::lambda::{STREAMING_VARIABLE, with_streaming_switch};
    use std::ffi::OsStr;
    let emulator = emulator().await;
    let answer = |proxy: Proxy| async move {
        let request = chat_event(FUNCTION_URL, false);
        let response = gigachat_proxy_platform::lambda::handle(&proxy, request)
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice::<Value>(&body).unwrap())
    };
    for (switch, streaming) in [
        (None, true),
        (Some("TRUE"), true),
        (Some("false"), false),
        (Some("False"), false),
        (Some("0"), false),
        (Some("off"), false),
        (Some("No"), false),
    ] {
        let proxy = deployed_proxy(&emulator, Platform::Lambda);
        let (mode, proxy) = with_streaming_switch(proxy, switch.map(OsStr::new));
        assert_eq!(mode, streaming, "{switch:?}");
        let (status, _) = answer(proxy).await;
        assert_eq!(status, 200, "{switch:?} leaves the configuration valid");
    }
    let proxy = deployed_proxy(&emulator, Platform::Lambda);
    let (mode, proxy) = with_streaming_switch(proxy, Some(OsStr::new("flase")));
    assert!(mode, "served in the documented default mode");
    let (status, body) = answer(proxy).await;
    assert_eq!(status, 500);
    assert_eq!(body["code"], "config_invalid");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains(STREAMING_VARIABLE), "{message}");
    assert!(
        !message.contains("flase"),
        "the value is not echoed: {message}"
    );
}

#[tokio::test]
async fn missing_credentials_on_a_platform_are_a_config_error_not_the_emulator() {
    let config = Config::from_lookup(Platform::Vercel, |_| None);
    let err = config.unwrap_err();
    let proxy = Proxy::misconfigured(err);
    let mut client = vercel_client(proxy).await;
    let response = client
        .send_request(vercel_request(chat_body(false)))
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    let body = json_body(response.into_body()).await;
    assert_eq!(body["code"], "config_invalid");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("GIGACHAT_CREDENTIALS")
    );
}
