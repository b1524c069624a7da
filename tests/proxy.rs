//! Black-box tests: the real `gigachat-proxy` binary on a random port in
//! front of the emulator, spoken to over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::routes::{get_path, post_files_form, post_json, post_native_chat};
use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};

#[tokio::test]
async fn chat_round_trip() {
    let s = setup().await;
    let response = post_native_chat(&s, &chat("hello proxy", false)).await;
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(request_id.len(), 36, "a uuid request id is generated");
    // GigaChat's Sber-only CORS headers never reach the browser.
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Echo: hello proxy"
    );
    assert_eq!(body["object"], "chat.completion");
    // The generated id went upstream too.
    let recorded = s.emulator.recorded_requests();
    let chat = recorded
        .iter()
        .find(|r| r.path.ends_with("/chat/completions"))
        .unwrap();
    assert!(
        chat.headers
            .iter()
            .any(|(n, v)| n == "x-request-id" && *v == request_id)
    );
}

#[tokio::test]
async fn client_request_id_is_kept() {
    let s = setup().await;
    let response = s
        .http
        .get(s.proxy.url("/api/gigachat-api/models"))
        .header("X-Request-ID", "frontend-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "frontend-42");
    let recorded = s.emulator.recorded_requests();
    let models = recorded
        .iter()
        .find(|r| r.path.ends_with("/models"))
        .unwrap();
    assert!(
        models
            .headers
            .iter()
            .any(|(n, v)| n == "x-request-id" && v == "frontend-42")
    );
}

#[tokio::test]
async fn stream_events_arrive_as_they_are_sent() {
    let s = setup_with(|c| c.chunk_delay = Duration::from_millis(200), &[]).await;
    let started = Instant::now();
    let response = post_native_chat(&s, &chat("one two three four", true)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["cache-control"], "no-cache");
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    let mut arrivals = Vec::new();
    let mut text = String::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        arrivals.push(started.elapsed());
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let payloads = sse_data(&text);
    let content = streamed_content(&payloads);
    assert_eq!(content, "Echo: one two three four");
    // With 200 ms between upstream events, a buffering proxy would deliver
    // everything at the end; here the first event is far ahead of the last.
    let (first, last) = (arrivals[0], *arrivals.last().unwrap());
    assert!(payloads.len() >= 5, "{payloads:?}");
    assert!(
        last - first >= Duration::from_millis(600),
        "first {first:?}, last {last:?}: the stream was buffered"
    );
}

#[tokio::test]
async fn fifty_requests_share_one_oauth_call() {
    let s = setup().await;
    for _ in 0..50 {
        let status = get_path(&s, "/api/gigachat-api/models", None)
            .await
            .status();
        assert_eq!(status, 200);
    }
    let stats = s.emulator.stats();
    assert_eq!(stats.oauth_calls, 1);
    assert_eq!(stats.api_calls, 50);
}

#[tokio::test]
async fn two_hundred_concurrent_cold_requests_make_one_oauth_call() {
    let s = setup().await;
    // A slow OAuth answer keeps every request waiting on the same refresh.
    s.emulator
        .faults()
        .set_oauth_delay(Duration::from_millis(300));
    let requests = (0..200).map(|i| {
        let http = s.http.clone();
        let url = s.proxy.url("/api/gigachat-api/chat/completions");
        async move {
            http.post(url)
                .json(&chat(&format!("request {i}"), false))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    let statuses = futures_util::future::join_all(requests).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(s.emulator.stats().oauth_calls, 1);
}

#[tokio::test]
async fn the_token_is_refreshed_before_it_expires() {
    let s = setup_with(
        |c| c.token_ttl = Duration::from_secs(4),
        &[("GIGACHAT_TOKEN_EXPIRY_BUFFER_MS", "1000")],
    )
    .await;
    let get = || s.http.get(s.proxy.url("/api/gigachat-api/models")).send();
    assert_eq!(get().await.unwrap().status(), 200);
    assert_eq!(get().await.unwrap().status(), 200);
    assert_eq!(s.emulator.stats().oauth_calls, 1);
    // Past the refresh point (4 s lifetime − ~1 s buffer) but before expiry.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    assert_eq!(get().await.unwrap().status(), 200);
    let stats = s.emulator.stats();
    assert_eq!(stats.oauth_calls, 2, "refreshed ahead of expiry");
    assert_eq!(
        stats.api_calls, 3,
        "no request was answered 401 and retried"
    );
}

#[tokio::test]
async fn an_upstream_401_refreshes_the_token_and_retries_once() {
    let s = setup().await;
    let post = || {
        s.http
            .post(s.proxy.url("/api/gigachat-api/chat/completions"))
            .json(&chat("retry me", false))
            .send()
    };
    assert_eq!(post().await.unwrap().status(), 200);
    s.emulator.faults().fail_next_api_with_401(1);
    let response = post().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "Echo: retry me");
    let stats = s.emulator.stats();
    assert_eq!(stats.oauth_calls, 2);
    assert_eq!(stats.api_calls, 3);

    // Two 401s in a row: one retry only, then GigaChat's answer as it is.
    s.emulator.faults().fail_next_api_with_401(2);
    let response = post().await.unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"status": 401, "message": "Token has expired"}));
    assert_eq!(s.emulator.stats().api_calls, 5);
}

#[tokio::test]
async fn upstream_errors_pass_through_unchanged() {
    let s = setup().await;
    let response = post_native_chat(
        &s,
        &json!({"model": "NoSuchModel", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"status": 404, "message": "No such model"})
    );

    let response = s
        .http
        .post(s.proxy.url("/api/gigachat-api/chat/completions"))
        .json(&json!({"model": "GigaChat", "messages": [
            {"role": "user", "content": "x"}, {"role": "system", "content": "late"}
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], 422);
    assert_eq!(
        body["message"],
        "Invalid params: system message must be the first message"
    );

    // An upload is never repeated: GigaChat's 503 reaches the client as is.
    s.emulator.faults().fail_next_api_with_status(503, 1);
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"x".to_vec()).file_name("a.txt"),
    );
    let response = post_files_form(&s, form, None).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.json::<Value>().await.unwrap()["status"], 503);
}

#[tokio::test]
async fn client_credentials_and_cookies_never_reach_gigachat() {
    let s = setup().await;
    let response = s
        .http
        .post(s.proxy.url("/api/gigachat-api/chat/completions"))
        .header("Authorization", "Basic Y2xpZW50OmxlYWtlZA==")
        .header("Cookie", "session=browser-cookie-value")
        .header("X-Forwarded-For", "203.0.113.7")
        .header("X-Forwarded-Host", "evil.example")
        .header("X-Api-Key", "client-api-key")
        .header("X-Session-ID", "session-1")
        .header("X-Client-ID", "client-1")
        .json(&chat("hygiene", false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let recorded = s.emulator.recorded_requests();
    let chat = recorded
        .iter()
        .find(|r| r.path.ends_with("/chat/completions"))
        .unwrap();
    let header = |name: &str| {
        chat.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    let authorization = header("authorization");
    assert_eq!(authorization.len(), 1);
    assert!(
        authorization[0].starts_with("Bearer "),
        "the proxy's token, not the client's"
    );
    assert!(!authorization[0].contains("Y2xpZW50OmxlYWtlZA=="));
    assert!(header("cookie").is_empty());
    assert!(header("x-forwarded-for").is_empty());
    assert!(header("x-forwarded-host").is_empty());
    assert!(header("x-api-key").is_empty());
    assert_eq!(header("x-session-id"), ["session-1"]);
    assert_eq!(header("x-client-id"), ["client-1"]);
    assert_eq!(header("host"), [s.emulator.addr().to_string().as_str()]);
}

#[tokio::test]
async fn dangerous_paths_never_reach_gigachat() {
    let s = setup().await;
    // docs/api.md: `..`, `%2e%2e`, `//`, encoded slashes, backslashes and
    // absolute URLs in the path are `400 invalid_path`; a path that is no
    // route at all is `404 not_found`.
    let invalid = [
        "/api/gigachat-api/../../etc/passwd",
        "/api/gigachat-api/%2e%2e/admin",
        "/api/gigachat-api/models/%2E%2E/%2e%2e/x",
        "/api/gigachat-api/models//x",
        "/api/gigachat-api//evil.example/x",
        "/api/gigachat-api/models%2f..%2fadmin",
        "/api/gigachat-api/models%5c..%5cadmin",
        "/api/gigachat-api/http:%2f%2fevil.example/x",
        "/api/gigachat-api/http://evil.example/x",
    ];
    let unknown = [
        "/api/gigachat-api/",
        "/api/gigachat-api",
        "/api/gigachat-apix/models",
        // Dot segments before the route are not resolved into one.
        "/api/../api/gigachat-api/models",
    ];
    let expected = invalid
        .iter()
        .map(|path| (*path, 400, "invalid_path"))
        .chain(unknown.iter().map(|path| (*path, 404, "not_found")));
    for (path, status, code) in expected {
        let (got, response) = raw_get(&s.proxy.addr(), path).await;
        let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
        let error: Value = serde_json::from_str(body)
            .unwrap_or_else(|_| panic!("{path}: a JSON error explains it\n{response}"));
        assert_eq!(
            (got, error["code"].as_str()),
            (status, Some(code)),
            "{path}\n{response}"
        );
    }
    // An absolute-form request target cannot pick the upstream host either
    // (an IP address: the loopback server refuses other names outright).
    let (status, _) = raw_request(
        &s.proxy.addr(),
        "GET http://192.0.2.1/api/gigachat-api/models HTTP/1.1\r\nHost: 192.0.2.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "served from the configured upstream");
    let stats = s.emulator.stats();
    assert_eq!(
        stats.api_calls, 1,
        "only the absolute-form request reached the emulator"
    );
    assert!(
        s.emulator
            .recorded_requests()
            .iter()
            .all(|r| !r.path.contains("..") && !r.path.contains("admin"))
    );
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let s = setup_with(|_| {}, &[("GIGACHAT_PROXY_MAX_BODY_BYTES", "1000")]).await;
    let big =
        json!({"model": "GigaChat", "messages": [{"role": "user", "content": "x".repeat(2000)}]});
    let response = post_native_chat(&s, &big).await;
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "body_too_large");
    assert!(body["message"].as_str().unwrap().contains("1000"));

    // Chunked, with no Content-Length to check up front.
    let chunks =
        futures_util::stream::iter((0..20).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 100])));
    let response = s
        .http
        .post(s.proxy.url("/api/gigachat-api/chat/completions"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(s.emulator.stats().api_calls, 0);

    let small = post_native_chat(&s, &chat("fits", false)).await;
    assert_eq!(small.status(), 200);
}

#[tokio::test]
async fn file_upload_and_download_round_trip() {
    let s = setup().await;
    let bytes: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(bytes.clone())
                .file_name("picture.png")
                .mime_str("image/png")
                .unwrap(),
        )
        .text("purpose", "general");
    let response = post_files_form(&s, form, None).await;
    assert_eq!(response.status(), 200);
    let file: Value = response.json().await.unwrap();
    assert_eq!(file["bytes"], 70_000);
    assert_eq!(file["filename"], "picture.png");
    let id = file["id"].as_str().unwrap();

    let listed: Value = get_path(&s, "/api/gigachat-api/files", None)
        .await
        .json()
        .await
        .unwrap();
    assert!(
        listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["id"] == id)
    );

    let download = get_path(&s, &format!("/api/gigachat-api/files/{id}/content"), None).await;
    assert_eq!(download.status(), 200);
    assert_eq!(
        download.headers()["content-type"],
        "application/octet-stream"
    );
    assert_eq!(download.bytes().await.unwrap().as_ref(), bytes.as_slice());

    let deleted: Value = s
        .http
        .post(s.proxy.url(&format!("/api/gigachat-api/files/{id}/delete")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(deleted["deleted"], true);
    let gone = get_path(&s, &format!("/api/gigachat-api/files/{id}"), None).await;
    assert_eq!(gone.status(), 404);
}

#[tokio::test]
async fn versioned_paths_reach_v1_and_v2() {
    let s = setup().await;
    let models: Value = get_path(&s, "/api/gigachat-api/v1/models", None)
        .await
        .json()
        .await
        .unwrap();
    assert!(
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "GigaChat")
    );

    let response = post_json(&s, "/api/gigachat-api/v2/chat/completions", &json!({"model": "GigaChat", "messages": [{"role": "user", "content": [{"text": "hi v2"}]}]}), None).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["messages"][0]["content"][0]["text"], "Echo: hi v2");
    let paths: Vec<String> = s
        .emulator
        .recorded_requests()
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert!(paths.contains(&"/api/v1/models".to_owned()), "{paths:?}");
    assert!(
        paths.contains(&"/api/v2/chat/completions".to_owned()),
        "{paths:?}"
    );
}

#[tokio::test]
async fn oauth_route_mints_proxy_sessions_that_the_api_accepts() {
    let s = setup_with(|_| {}, &[("GIGACHAT_PROXY_SESSION_TTL", "1")]).await;
    let response = s
        .http
        .post(s.proxy.url("/api/gigachat-oauth"))
        .header("Authorization", "Basic Y2xpZW50Omlnbm9yZWQ=")
        .header("RqUID", uuid::Uuid::new_v4().to_string())
        .form(&[("scope", "GIGACHAT_API_PERS")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let minted: Value = response.json().await.unwrap();
    let token = minted["access_token"].as_str().unwrap().to_owned();
    let expires_at = minted["expires_at"].as_u64().unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        expires_at > now_ms && expires_at <= now_ms + 2_000,
        "milliseconds, short-lived"
    );
    // The client's Basic credentials were not used for anything upstream.
    assert_eq!(s.emulator.stats().oauth_calls, 0);

    let with_session = |token: String| {
        s.http
            .post(s.proxy.url("/api/gigachat-api/chat/completions"))
            .bearer_auth(token)
            .json(&chat("with a session", false))
            .send()
    };
    assert_eq!(with_session(token.clone()).await.unwrap().status(), 200);
    assert!(
        !upstream_tokens(&s.emulator).contains(&token),
        "the session token is not GigaChat's"
    );
    assert_no_secret(&token, &upstream_tokens(&s.emulator), "the session token");

    // exp is whole seconds and the check allows 1 s of clock skew.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let expired = with_session(token).await.unwrap();
    assert_eq!(expired.status(), 401);
    assert!(
        expired.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    assert_eq!(
        expired.json::<Value>().await.unwrap()["code"],
        "session_expired"
    );

    let get = get_path(&s, "/api/gigachat-oauth", None).await;
    assert_eq!(get.status(), 405);
    assert_eq!(get.headers()["allow"], "POST");
}

#[tokio::test]
async fn health_reports_config_and_upstream_without_secrets() {
    let s = setup().await;
    let response = get_path(&s, "/api/gigachat-health", None).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["config"], "valid");
    assert_eq!(body["upstream"], "custom");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_no_secret(
        &text,
        std::slice::from_ref(&s.credentials),
        "the health answer",
    );
    assert_eq!(
        s.emulator.stats().oauth_calls,
        0,
        "health makes no upstream call"
    );
}

#[tokio::test]
async fn without_credentials_the_local_server_uses_the_built_in_emulator() {
    let proxy = start_proxy(&[]);
    assert!(
        proxy.wait_for_log("BUILT-IN GIGACHAT EMULATOR").await,
        "{}",
        proxy.logs()
    );
    let http = reqwest::Client::new();
    let health: Value = get_json(&http, proxy.url("/api/gigachat-health")).await;
    assert_eq!(health["upstream"], "emulator");
    let response = http
        .post(proxy.url("/api/gigachat-api/chat/completions"))
        .json(&chat("offline", true))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
}

#[tokio::test]
async fn bad_config_is_a_500_that_names_the_variable() {
    let proxy = start_proxy(&[
        ("GIGACHAT_CREDENTIALS", "Y2xpZW50OnNlY3JldA=="),
        ("GIGACHAT_TIMEOUT", "soon"),
    ]);
    let http = reqwest::Client::new();
    for path in ["/api/gigachat-health", "/api/gigachat-api/models"] {
        let response = http.get(proxy.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 500);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "config_invalid");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("GIGACHAT_TIMEOUT")
        );
        assert!(!body.to_string().contains("soon"));
    }
    assert!(
        proxy.wait_for_log("GIGACHAT_TIMEOUT").await,
        "the log line names the variable"
    );
}

#[tokio::test]
async fn rejected_credentials_give_a_clear_502() {
    let credentials = test_credentials();
    let emulator = start_emulator(&credentials, |_| {}).await;
    let wrong = test_credentials();
    let proxy = start_proxy_for(&emulator, &wrong, &[]);
    let response = reqwest::Client::new()
        .post(proxy.url("/api/gigachat-api/chat/completions"))
        .json(&chat("x", false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let text = response.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["code"], "upstream_auth_rejected");
    assert!(
        body["message"].as_str().unwrap().contains("code 6"),
        "{body}"
    );
    assert!(
        body["hint"]
            .as_str()
            .unwrap()
            .contains("GIGACHAT_CREDENTIALS")
    );
    assert_no_secret(
        &text,
        &[wrong.clone(), credentials.clone()],
        "the error body",
    );
    assert_no_secret(&proxy.logs(), &[wrong, credentials], "the proxy's logs");
}

#[tokio::test]
async fn a_stream_broken_upstream_ends_with_an_error_event() {
    let s = setup_with(|c| c.chunk_delay = Duration::from_millis(100), &[]).await;
    s.emulator.faults().reset_stream_after_chunks(Some(2));
    let response = post_native_chat(&s, &chat("this stream will break", true)).await;
    assert_eq!(response.status(), 200);
    let text = tokio::time::timeout(Duration::from_secs(10), response.text())
        .await
        .expect("no hang")
        .unwrap();
    let payloads = sse_data(&text);
    let last: Value = serde_json::from_str(payloads.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_stream_broken", "{text}");
    assert!(!text.contains("[DONE]"));
    let first: Value = serde_json::from_str(&payloads[0]).unwrap();
    assert_eq!(
        first["choices"][0]["delta"]["role"], "assistant",
        "the chunks before the break were delivered"
    );
}

#[tokio::test]
async fn no_secret_appears_in_any_response_or_log_line() {
    let s = setup().await;
    let mut seen = String::new();
    let record = |seen: &mut String, response: &reqwest::Response| {
        for (name, value) in response.headers() {
            seen.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("")));
        }
    };
    // A bit of everything: chat, stream, errors, a 401 retry, the OAuth route.
    s.emulator.faults().fail_next_api_with_401(1);
    let mut sent = 0;
    for (method, path, body) in [
        (
            "POST",
            "/api/gigachat-api/chat/completions",
            Some(chat("a", false)),
        ),
        (
            "POST",
            "/api/gigachat-api/chat/completions",
            Some(chat("b", true)),
        ),
        (
            "POST",
            "/api/gigachat-api/v2/chat/completions",
            Some(json!({"model": "GigaChat", "messages": []})),
        ),
        ("GET", "/api/gigachat-api/models/Nope", None),
        ("GET", "/api/gigachat-api/../x", None),
        ("POST", "/api/gigachat-oauth", None),
        ("GET", "/api/gigachat-health", None),
    ] {
        let mut request = s
            .http
            .request(method.parse().unwrap(), s.proxy.url(path))
            .header("Cookie", "sid=cookie-secret-123")
            .header("Authorization", "Basic Y2xpZW50LXNlbnQ6a2V5");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        record(&mut seen, &response);
        seen.push_str(&response.text().await.unwrap());
        sent += 1;
    }
    let mut secrets = upstream_tokens(&s.emulator);
    assert!(secrets.len() >= 2, "the retry fetched a second token");
    secrets.push(s.credentials.clone());
    secrets.push("cookie-secret-123".into());
    secrets.push("Y2xpZW50LXNlbnQ6a2V5".into());
    assert_no_secret(&seen, &secrets, "responses");
    // Every request's access line is the last thing it logs (written when
    // its answer is finished): once all are in, so is everything else.
    assert!(
        s.proxy
            .wait_for_log_count("gigachat_proxy::access", sent)
            .await,
        "one access line per request: {}",
        s.proxy.logs()
    );
    let logs = s.proxy.logs();
    assert!(logs.lines().count() > 10, "debug logging is on: {logs}");
    assert_no_secret(&logs, &secrets, "the proxy's logs");
}

#[tokio::test]
async fn transient_failures_are_retried_with_backoff_within_the_budget() {
    let s = setup_with(|_| {}, &[("GIGACHAT_RETRY_BACKOFF_FACTOR", "0.05")]).await;
    let models = || s.http.get(s.proxy.url("/api/gigachat-api/models")).send();
    assert_eq!(models().await.unwrap().status(), 200);
    let before = s.emulator.stats().api_calls;

    // Two 503s, then success: the client sees only the success.
    s.emulator.faults().fail_next_api_with_status(503, 2);
    assert_eq!(models().await.unwrap().status(), 200);
    assert_eq!(s.emulator.stats().api_calls, before + 3);

    // More failures than retries (2 by default): GigaChat's answer passes.
    s.emulator.faults().fail_next_api_with_status(429, 5);
    let response = models().await.unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.json::<Value>().await.unwrap()["status"], 429);
    assert_eq!(s.emulator.stats().api_calls, before + 6);
    s.emulator.faults().reset();

    // A chat answered 200 with an error object inside is an error, retried.
    s.emulator.faults().error_in_200_next(1);
    let response = post_native_chat(&s, &chat("quirk", false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap()["choices"][0]["message"]["content"],
        "Echo: quirk"
    );
    assert!(
        s.proxy
            .wait_for_log("retrying a transient GigaChat failure")
            .await
    );
}

#[tokio::test]
async fn an_error_object_inside_a_200_gets_its_own_status() {
    let s = setup_with(|_| {}, &[("GIGACHAT_MAX_RETRIES", "0")]).await;
    for stream in [false, true] {
        s.emulator.faults().error_in_200_next(1);
        let response = post_native_chat(&s, &chat("quirk", stream)).await;
        assert_eq!(response.status(), 429, "stream: {stream}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body, json!({"status": 429, "message": "Too many requests"}));
    }
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = setup_with(|_| {}, &[("GIGACHAT_PROXY_HEADER_TIMEOUT", "1")]).await;

    // Slowloris: a request head that never ends.
    let mut slow = tokio::net::TcpStream::connect(s.proxy.addr())
        .await
        .unwrap();
    slow.write_all(b"GET /api/gigachat-health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .await
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the connection was still open after 5 s");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed after {waited:?}"
    );
    let answer = String::from_utf8_lossy(&rest);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );

    // A client that sends its head in time is served as usual.
    let (status, body) = raw_get(&s.proxy.addr(), "/api/gigachat-health").await;
    assert_eq!(status, 200, "{body}");
}
