//! What the proxy refuses before anything reaches GigaChat, by the name a
//! request is sent to or the shape of its path: DNS rebinding against the
//! local server, and dot segments hidden behind path parameters (which
//! Java servers read as `..`). Raw requests, so no client normalizes them first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

/// The JSON body of a raw HTTP/1.1 response (`Connection: close`, so the
/// body runs to the end).
fn json_body(raw: &str) -> serde_json::Value {
    let (_, body) = raw.split_once("\r\n\r\n").unwrap();
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not a JSON body:\n{raw}"))
}

fn chat_request(host: &str, origin: Option<&str>) -> String {
    let body = chat("hello", false).to_string();
    let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
    format!(
        "POST /api/gigachat-api/chat/completions HTTP/1.1\r\nHost: {host}\r\n{origin}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A page on `http://rebind.attacker.example:PORT`, its name re-pointed at
/// 127.0.0.1, is same-origin with the local server: every route refuses
/// that `Host` (preflight or not, `Origin` or not) with a JSON 403 that
/// names the variable, and neither GigaChat's OAuth nor its API hears of it.
#[tokio::test]
async fn a_rebound_host_name_is_refused_on_every_route_of_the_loopback_server() {
    let s = setup().await;
    let addr = s.proxy.addr();
    let port = addr.rsplit_once(':').unwrap().1;
    let rebound = format!("rebind.attacker.example:{port}");
    let rebound_origin = format!("http://{rebound}");

    let attempts = [
        chat_request(&rebound, Some(&rebound_origin)),
        chat_request(&rebound, None),
        format!(
            "GET /api/gigachat-api/models HTTP/1.1\r\nHost: {rebound}\r\nConnection: close\r\n\r\n"
        ),
        format!(
            "POST /api/gigachat-oauth HTTP/1.1\r\nHost: {rebound}\r\nOrigin: {rebound_origin}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
        format!(
            "GET /api/gigachat-health HTTP/1.1\r\nHost: {rebound}\r\nConnection: close\r\n\r\n"
        ),
        format!(
            "OPTIONS /api/gigachat-api/chat/completions HTTP/1.1\r\nHost: {rebound}\r\nOrigin: http://localhost:5173\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\nConnection: close\r\n\r\n"
        ),
        // The absolute-form target names the host too (it wins over `Host`).
        format!(
            "GET http://{rebound}/api/gigachat-api/models HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        ),
    ];
    for request in &attempts {
        let (status, raw) = raw_request(&addr, request).await;
        let first_line = request.lines().next().unwrap();
        assert_eq!(status, 403, "{first_line}\n{raw}");
        let body = json_body(&raw);
        assert_eq!(body["code"], "host_not_allowed", "{first_line}");
        assert!(
            body["hint"]
                .as_str()
                .unwrap()
                .contains("GIGACHAT_PROXY_ALLOWED_HOSTS"),
            "{first_line}: {body}"
        );
        assert!(
            !raw.to_ascii_lowercase()
                .contains("access-control-allow-origin"),
            "{first_line}: no CORS grant\n{raw}"
        );
    }
    assert!(
        s.emulator.recorded_requests().is_empty(),
        "nothing reached GigaChat: {:?}",
        s.emulator.recorded_requests()
    );

    // The names a page cannot re-point still work, with or without `Origin`.
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("app.localhost:{port}"),
    ] {
        let (status, raw) = raw_request(&addr, &chat_request(&host, None)).await;
        assert_eq!(status, 200, "{host}\n{raw}");
    }
    let (status, raw) = raw_request(
        &addr,
        &chat_request(&format!("127.0.0.1:{port}"), Some("http://localhost:5173")),
    )
    .await;
    assert_eq!(status, 200, "{raw}");
    assert!(raw.contains("access-control-allow-origin: http://localhost:5173"));
}

/// `GIGACHAT_PROXY_ALLOWED_HOSTS` adds names (`.dev.test`: the domain and its
/// subdomains); the rest stay refused, and `*` turns the check off.
#[tokio::test]
async fn allowed_hosts_lets_the_listed_names_in() {
    let s = setup_with(|_| {}, &[("GIGACHAT_PROXY_ALLOWED_HOSTS", ".dev.test")]).await;
    let addr = s.proxy.addr();
    for (host, expected) in [
        ("app.dev.test:3000", 200),
        ("dev.test", 200),
        ("localhost:3000", 200),
        ("evildev.test", 403),
        ("rebind.attacker.example", 403),
    ] {
        let (status, raw) = raw_request(&addr, &chat_request(host, None)).await;
        assert_eq!(status, expected, "{host}\n{raw}");
    }

    let any = setup_with(|_| {}, &[("GIGACHAT_PROXY_ALLOWED_HOSTS", "*")]).await;
    let (status, raw) =
        raw_request(&any.proxy.addr(), &chat_request("chat.example.com", None)).await;
    assert_eq!(status, 200, "{raw}");
}

/// `--host 0.0.0.0` (self-hosting: the server is reached by its real name)
/// turns the loopback-only host check off just as `HOST=0.0.0.0` does; the
/// flag and the variable are one setting.
#[tokio::test]
async fn a_server_bound_to_every_interface_by_flag_answers_its_real_name() {
    let credentials = test_credentials();
    let emulator = start_emulator(&credentials, |_| {}).await;
    let (base, auth) = (emulator.base_url(), emulator.auth_url());
    let env = proxy_env(&base, &auth, &credentials);
    let proxy = start_proxy_on("0.0.0.0", &env);
    let port = proxy.addr().rsplit_once(':').unwrap().1.to_owned();
    let addr = format!("127.0.0.1:{port}");
    let (status, raw) = raw_request(&addr, &chat_request("chat.example.com", None)).await;
    assert_eq!(status, 200, "{raw}");
}

/// Java servers read `..;`, `%2e%2e;x` and `..%3b` as `..`: every path
/// parameter is refused with 400 `invalid_path`, and nothing reaches GigaChat.
#[tokio::test]
async fn path_parameters_never_reach_gigachat() {
    let s = setup().await;
    for path in [
        "/api/gigachat-api/..;/admin",
        "/api/gigachat-api/v1/..;/..;/admin",
        "/api/gigachat-api/%2e%2e;x=1/admin",
        "/api/gigachat-api/%2E%2E%3B/admin",
        "/api/gigachat-api/..%3b/admin",
        "/api/gigachat-api/.%2e;x/admin",
        "/api/gigachat-api/models/;/x",
        "/api/gigachat-api/models;jsessionid=1",
    ] {
        let (status, raw) = raw_get(&s.proxy.addr(), path).await;
        assert_eq!(status, 400, "{path}\n{raw}");
        assert_eq!(json_body(&raw)["code"], "invalid_path", "{path}");
    }
    assert!(
        s.emulator.recorded_requests().is_empty(),
        "a path parameter reached GigaChat: {:?}",
        s.emulator.recorded_requests()
    );
    // A `;` in the query string is not the path's business.
    let (status, raw) = raw_get(&s.proxy.addr(), "/api/gigachat-api/models?a=1;b=2").await;
    assert_eq!(status, 200, "{raw}");
}
