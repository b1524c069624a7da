//! Token budgets per identity, black-box: the real proxy in front of the
//! emulator (whose usage is predictable: one token per started group of
//! four characters), and three proxies sharing one `redis-server`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::routes::{get_path, post_json, post_native_chat};
use common::*;
use serde_json::{Value, json};

const KEY: &str = "budget-user-key-0123456789";
const OTHER_KEY: &str = "budget-other-key-0123456789";

fn chat_with(content: &str, stream: bool, max_tokens: u64) -> Value {
    json!({
        "model": "GigaChat",
        "stream": stream,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": content}],
    })
}

/// The billed tokens of a JSON chat answer.
fn total_tokens(answer: &Value) -> u64 {
    answer["usage"]["total_tokens"].as_u64().unwrap()
}

/// The billed tokens of a stream: its last chunk's usage.
fn stream_tokens(body: &str) -> u64 {
    sse_data(body)
        .iter()
        .rev()
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .find_map(|chunk| chunk["usage"]["total_tokens"].as_u64())
        .unwrap_or_else(|| panic!("no usage in {body}"))
}

async fn budget_of(http: &reqwest::Client, proxy: &ProxyProcess, key: Option<&str>) -> Value {
    let mut request = http.get(proxy.url("/api/gigachat-budget"));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// The budget once every answer has been settled (a body is settled when
/// the server drops it, just after the client has read it).
async fn settled_budget(http: &reqwest::Client, proxy: &ProxyProcess, key: Option<&str>) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let budget = budget_of(http, proxy, key).await;
        if budget["reserved"] == 0 || Instant::now() > deadline {
            return budget;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_spent_budget_answers_429_with_the_reset_and_token_headers() {
    let keys = format!("{KEY},{OTHER_KEY}");
    let s = setup_with(
        |_| {},
        &[
            ("GIGACHAT_PROXY_API_KEYS", keys.as_str()),
            ("GIGACHAT_PROXY_TOKEN_BUDGET", "300/d"),
        ],
    )
    .await;
    let send = |key: &'static str| {
        s.http
            .post(s.proxy.url("/api/gigachat-api/chat/completions"))
            .bearer_auth(key)
            .json(&chat_with("hello there", false, 20))
            .send()
    };
    let mut spent = 0;
    let mut answered = 0;
    let refused = loop {
        let response = send(KEY).await.unwrap();
        if response.status() == 429 {
            break response;
        }
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-ratelimit-limit-tokens"], "300");
        assert!(
            response
                .headers()
                .contains_key("x-ratelimit-remaining-tokens")
        );
        spent += total_tokens(&response.json().await.unwrap());
        answered += 1;
        assert!(answered < 100, "the budget never ran out");
    };
    // The refusal never reached GigaChat.
    assert_eq!(s.emulator.stats().api_calls, answered);
    let headers = refused.headers().clone();
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["status"], 429);
    assert_eq!(body["code"], "token_budget_exceeded");
    let now = unix_now();
    let midnight = now - now % 86_400 + 86_400;
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(
        retry_after.abs_diff(midnight - now) <= 5,
        "{retry_after} vs {}",
        midnight - now
    );
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("300 tokens per day"), "{message}");
    assert!(message.contains("T00:00:00Z"), "{message}");
    assert!(
        body["hint"]
            .as_str()
            .unwrap()
            .contains("GIGACHAT_PROXY_TOKEN_BUDGET"),
        "{body}"
    );
    assert_eq!(headers["x-ratelimit-limit-tokens"], "300");
    assert_eq!(headers["x-ratelimit-remaining-tokens"], "0");
    assert!(
        headers["x-ratelimit-reset-tokens"]
            .to_str()
            .unwrap()
            .ends_with('s')
    );
    if retry_after > 60 {
        assert_eq!(headers["x-should-retry"], "false");
    }

    // The caller's meter: what was spent, nothing held, nothing left
    // worth a request; another identity has its own budget.
    let budget = settled_budget(&s.http, &s.proxy, Some(KEY)).await;
    assert_eq!(budget["limit"], 300);
    assert_eq!(budget["used"], spent, "{budget}");
    assert_eq!(budget["reserved"], 0, "{budget}");
    assert_eq!(budget["window"], "day");
    assert!(budget["reset"].as_str().unwrap().ends_with("T00:00:00Z"));
    let other = budget_of(&s.http, &s.proxy, Some(OTHER_KEY)).await;
    assert_eq!(
        (other["used"].as_u64(), other["remaining"].as_u64()),
        (Some(0), Some(300))
    );
    assert_eq!(send(OTHER_KEY).await.unwrap().status(), 200);
}

#[tokio::test]
async fn less_left_than_max_tokens_lowers_max_tokens_instead_of_refusing() {
    let s = setup_with(
        |_| {},
        &[("GIGACHAT_PROXY_TOKEN_BUDGET_ANONYMOUS", "200/h")],
    )
    .await;
    // About 125 tokens of input estimate, so about 75 of output remain;
    // the echo would take 77.
    let content = "x".repeat(300);
    let response = post_native_chat(&s, &chat_with(&content, false, 5000)).await;
    assert_eq!(response.status(), 200);
    let clamped: u64 = response.headers()["x-gigachat-proxy-max-tokens-clamped"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..77).contains(&clamped), "{clamped}");
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["usage"]["completion_tokens"], clamped);
    assert_eq!(answer["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn a_v2_chat_gets_its_model_options_max_tokens_lowered_when_less_is_left() {
    let s = setup_with(
        |_| {},
        &[("GIGACHAT_PROXY_TOKEN_BUDGET_ANONYMOUS", "200/h")],
    )
    .await;
    // v2 keeps its samplers in `model_options`: a clamp written anywhere
    // else leaves GigaChat free to spend the 5000 asked for.
    let body = json!({
        "model": "GigaChat",
        "messages": [{"role": "user", "content": [{"text": "x".repeat(300)}]}],
        "model_options": {"max_tokens": 5000},
    });
    let response = post_json(&s, "/api/gigachat-api/v2/chat/completions", &body, None).await;
    assert_eq!(response.status(), 200);
    let clamped: u64 = response.headers()["x-gigachat-proxy-max-tokens-clamped"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..77).contains(&clamped), "{clamped}");
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["usage"]["output_tokens"], clamped, "{answer}");
    assert_eq!(answer["finish_reason"], "length", "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_streams_cannot_spend_more_than_the_budget_plus_one_estimate() {
    const BUDGET: u64 = 2000;
    let s = setup_with(
        |config| config.chunk_delay = Duration::from_millis(50),
        &[
            ("GIGACHAT_PROXY_API_KEYS", KEY),
            ("GIGACHAT_PROXY_TOKEN_BUDGET", "2000/d"),
            ("GIGACHAT_PROXY_UPSTREAM_CONCURRENCY", "off"),
            ("GIGACHAT_PROXY_MAX_STREAMS", "off"),
        ],
    )
    .await;
    // Each stream costs about 152 tokens (75 in, 77 out); its estimate is
    // about 125 + 100. A check of past spend alone would let all twenty
    // through: about 3000 tokens.
    let body = chat_with(&"y".repeat(300), true, 100);
    let estimate = (serde_json::to_string(&body).unwrap().len() as u64).div_ceil(3) + 100;
    let streams = (0..20).map(|_| {
        let request = s
            .http
            .post(s.proxy.url("/api/gigachat-api/chat/completions"))
            .bearer_auth(KEY)
            .json(&body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            (status, text)
        }
    });
    let answers = futures_util::future::join_all(streams).await;
    let mut spent = 0;
    let mut streamed = 0;
    for (status, text) in &answers {
        match status {
            200 => {
                spent += stream_tokens(text);
                streamed += 1;
            }
            429 => assert!(text.contains("token_budget_exceeded"), "{text}"),
            other => panic!("{other}: {text}"),
        }
    }
    assert!(streamed >= 2, "{streamed} streams");
    assert!(streamed < 20, "every stream passed");
    assert!(
        spent <= BUDGET + estimate,
        "{streamed} streams spent {spent} > {BUDGET} + {estimate}"
    );
    // Settled with the streams' own usage, from their last chunks.
    let budget = settled_budget(&s.http, &s.proxy, Some(KEY)).await;
    assert_eq!(budget["used"], spent, "{budget}");
    assert_eq!(budget["reserved"], 0);
}

#[tokio::test]
async fn an_upstream_error_refunds_and_a_broken_stream_is_charged_its_input_at_least() {
    let s = setup_with(
        |_| {},
        &[("GIGACHAT_PROXY_TOKEN_BUDGET_ANONYMOUS", "100000/w")],
    )
    .await;
    let url = s.proxy.url("/api/gigachat-api/chat/completions");
    s.emulator.faults().fail_next_api_with_status(400, 1);
    let failed = post_native_chat(&s, &chat_with("hello", false, 10)).await;
    assert_eq!(failed.status(), 400);
    let _ = failed.bytes().await;
    let budget = settled_budget(&s.http, &s.proxy, None).await;
    assert_eq!(
        (budget["used"].as_u64(), budget["reserved"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(budget["window"], "week");

    // A stream GigaChat breaks off after one chunk never reports usage: it
    // is charged its input estimate plus what was streamed.
    s.emulator.faults().reset_stream_after_chunks(Some(1));
    let body = chat_with("hello hello hello", true, 10);
    let input_estimate = (serde_json::to_string(&body).unwrap().len() as u64).div_ceil(3);
    let broken = s.http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(broken.status(), 200);
    let _ = broken.text().await;
    let budget = settled_budget(&s.http, &s.proxy, None).await;
    let used = budget["used"].as_u64().unwrap();
    assert!(used > input_estimate, "{budget} vs input {input_estimate}");
    assert_eq!(budget["reserved"], 0);
}

#[tokio::test]
async fn a_stream_is_charged_by_the_time_its_done_event_arrives() {
    let s = setup_with(
        |_| {},
        &[("GIGACHAT_PROXY_TOKEN_BUDGET_ANONYMOUS", "100000/w")],
    )
    .await;
    // GigaChat holds the connection open after `[DONE]`: a page that stops
    // reading there and refreshes its meter must already see the charge,
    // not the reservation.
    s.emulator
        .faults()
        .set_stream_end_delay(Duration::from_secs(5));
    let mut response = post_native_chat(&s, &chat_with("hello there", true, 1000)).await;
    assert_eq!(response.status(), 200);
    let mut body = String::new();
    let deadline = Instant::now() + Duration::from_secs(4);
    while !body.contains("data: [DONE]") {
        assert!(Instant::now() < deadline, "no [DONE] in {body}");
        let chunk = response
            .chunk()
            .await
            .unwrap()
            .expect("the stream ended early");
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    let budget = budget_of(&s.http, &s.proxy, None).await;
    assert_eq!(budget["reserved"], 0, "{budget}");
    assert_eq!(
        budget["used"].as_u64(),
        Some(stream_tokens(&body)),
        "{budget}"
    );
    drop(response);
}

#[tokio::test]
async fn without_a_budget_nothing_changes_and_the_route_says_so() {
    let s = setup().await;
    let budget = budget_of(&s.http, &s.proxy, None).await;
    assert_eq!(budget["enabled"], false, "{budget}");
    assert_eq!(budget["limit"], Value::Null);
    let response = post_native_chat(&s, &chat_with("hi", false, 10)).await;
    assert_eq!(response.status(), 200);
    assert!(!response.headers().contains_key("x-ratelimit-limit-tokens"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_sharing_redis_share_one_budget() {
    const BUDGET: u64 = 1000;
    let redis = RedisServer::start();
    let credentials = test_credentials();
    let emulator = start_emulator(&credentials, |_| {}).await;
    let proxies = proxies_sharing_redis(
        3,
        &emulator,
        &credentials,
        &redis,
        &[
            ("GIGACHAT_PROXY_API_KEYS", KEY),
            ("GIGACHAT_PROXY_TOKEN_BUDGET", "1000/mo"),
            ("GIGACHAT_PROXY_REDIS_FAILURE", "closed"),
        ],
    );
    let http = reqwest::Client::new();
    let body = chat_with(&"z".repeat(200), false, 60);
    let estimate = (serde_json::to_string(&body).unwrap().len() as u64).div_ceil(3) + 60;
    let mut spent = 0;
    let mut answered = 0;
    for i in 0.. {
        let response = http
            .post(proxies[i % 3].url("/api/gigachat-api/chat/completions"))
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        if response.status() == 429 {
            break;
        }
        assert_eq!(response.status(), 200);
        spent += total_tokens(&response.json().await.unwrap());
        answered += 1;
        assert!(answered < 60, "the shared budget never ran out");
    }
    // Per instance, each would have allowed the whole budget.
    assert!(spent <= BUDGET + estimate, "spent {spent}");
    assert!(spent > BUDGET / 2, "spent {spent}");
    // Every instance tells the same story.
    let first = settled_budget(&http, &proxies[0], Some(KEY)).await;
    assert_eq!(first["used"], spent, "{first}");
    for proxy in &proxies[1..] {
        let budget = budget_of(&http, proxy, Some(KEY)).await;
        assert_eq!(budget["used"], first["used"]);
        assert_eq!(budget["window"], "month");
    }
    assert!(redis.key_count() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_sdk_does_not_retry_a_budget_refusal() {
    let python = tokio::task::spawn_blocking(|| python_importing("openai"))
        .await
        .unwrap();
    let s = setup_with(|_| {}, &[("GIGACHAT_PROXY_TOKEN_BUDGET_ANONYMOUS", "1/mo")]).await;
    // The one token goes to a first call; the window is then spent.
    let first = post_native_chat(&s, &chat_with("hi", false, 10)).await;
    assert_eq!(first.status(), 200);
    let _ = first.bytes().await;
    let proxy_url = s.proxy.url.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg("tests/python/openai_budget_refusal.py")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("GIGACHAT_PROXY_URL", proxy_url)
            .output()
            .expect("python starts")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("refused: token_budget_exceeded"),
        "{stdout}"
    );
    // A last refusal of our own marks the end: the log then holds exactly
    // two, so the SDK sent its call once (with retries it would be four).
    let marker = post_native_chat(&s, &chat_with("hi", false, 10)).await;
    assert_eq!(marker.status(), 429);
    let _ = marker.bytes().await;
    assert!(s.proxy.wait_for_log_count("token_budget_exceeded", 2).await);
    let refusals = s.proxy.logs().matches("token_budget_exceeded").count();
    assert_eq!(refusals, 2, "{}", s.proxy.logs());
}

const JWT_SECRET: &str = "budget-test-jwt-secret-0123456789abcdef";

#[tokio::test]
async fn a_jwt_claim_sets_the_users_own_budget_and_sessions_keep_it() {
    let s = setup_with(
        |_| {},
        &[
            ("GIGACHAT_PROXY_JWT_SECRET", JWT_SECRET),
            ("GIGACHAT_PROXY_TOKEN_BUDGET", "100000/w"),
            ("GIGACHAT_PROXY_TOKEN_BUDGET_CLAIM", "gigachat_tokens"),
        ],
    )
    .await;
    let exp = unix_now() + 600;
    let small = hs256_jwt(
        JWT_SECRET,
        &json!({"sub": "small-tier", "exp": exp, "gigachat_tokens": 40}),
    );
    let plain = hs256_jwt(JWT_SECRET, &json!({"sub": "plain", "exp": exp}));
    let budget = budget_of(&s.http, &s.proxy, Some(&small)).await;
    assert_eq!(
        (budget["limit"].as_u64(), budget["window"].as_str()),
        (Some(40), Some("week"))
    );
    let budget = budget_of(&s.http, &s.proxy, Some(&plain)).await;
    assert_eq!(budget["limit"], 100_000);

    // A session minted with the small-tier JWT spends the same small budget.
    let minted: Value = s
        .http
        .post(s.proxy.url("/api/gigachat-oauth"))
        .bearer_auth(&small)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session = minted["access_token"].as_str().unwrap();
    let send = |token: &str| {
        s.http
            .post(s.proxy.url("/api/gigachat-api/chat/completions"))
            .bearer_auth(token)
            .json(&chat_with(&"w".repeat(200), false, 10))
            .send()
    };
    assert_eq!(send(session).await.unwrap().status(), 200);
    let refused = send(session).await.unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["x-ratelimit-limit-tokens"], "40");
    let budget = settled_budget(&s.http, &s.proxy, Some(&small)).await;
    assert!(budget["used"].as_u64().unwrap() >= 40, "{budget}");
}

async fn health_of(s: &Setup) -> Value {
    let response = get_path(s, "/api/gigachat-health", None).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn the_health_document_says_whether_ownership_and_budgets_are_on() {
    // A developer's local server: no budgets, callers not kept apart.
    let plain = setup().await;
    let health = health_of(&plain).await;
    assert_eq!(health["ownership"], "off", "{health}");
    assert_eq!(health["budget"], "off", "{health}");
    assert_eq!(health["budget_anonymous"], "off", "{health}");

    let s = setup_with(
        |_| {},
        &[
            ("GIGACHAT_PROXY_API_KEYS", KEY),
            ("GIGACHAT_PROXY_TOKEN_BUDGET", "200000/d"),
            ("GIGACHAT_PROXY_TOKEN_BUDGET_ANONYMOUS", "off"),
        ],
    )
    .await;
    let health = health_of(&s).await;
    assert_eq!(health["ownership"], "on", "{health}");
    assert_eq!(health["budget"], "200000/d", "{health}");
    assert_eq!(health["budget_anonymous"], "off", "{health}");
    // A caller's budget, with the flag a UI reads.
    let budget = budget_of(&s.http, &s.proxy, Some(KEY)).await;
    assert_eq!(budget["enabled"], true, "{budget}");
    assert_eq!(budget["limit"], 200_000, "{budget}");
}
