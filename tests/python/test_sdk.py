"""The official `gigachat` Python SDK (PyPI) as a real client of the proxy.

A frontend team points the SDK at the proxy's origin and gives it throwaway
credentials; the proxy ignores them, mints its own session token at
/api/gigachat-oauth, and talks to GigaChat (here: the emulator) with the real
key. These tests drive every SDK call a browser-app backend-for-frontend would
use and check both ends: what the SDK sent to the proxy, and what reached the
emulator.

Environment (both are origins, no path, no trailing slash needed):
  GIGACHAT_PROXY_URL     the proxy, e.g. http://127.0.0.1:40123
  GIGACHAT_EMULATOR_URL  the emulator behind it; `GET /_emulator/stats` and
                         `GET /_emulator/requests` are read from it

URLs the SDK (0.2.3) builds from base_url = PROXY/api/gigachat-api/v1:
  v1 chat and stream   POST /api/gigachat-api/v1/chat/completions
  v2 chat and stream   POST /api/gigachat-api/v2/chat/completions (the SDK
                       rewrites the trailing /v1 of base_url to /v2 at the origin)
  models               GET  /api/gigachat-api/v1/models
  embeddings           POST /api/gigachat-api/v1/embeddings
  tokens count         POST /api/gigachat-api/v1/tokens/count
  OAuth                POST PROXY/api/gigachat-oauth (auth_url as given)
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import urllib.request
from typing import Any, Iterable, List, Optional, Tuple
from urllib.parse import urlsplit

import httpx
import pytest
from gigachat import GigaChat

PROXY_URL = os.environ.get("GIGACHAT_PROXY_URL", "").strip().rstrip("/")
EMULATOR_URL = os.environ.get("GIGACHAT_EMULATOR_URL", "").strip().rstrip("/")

API_PREFIX = "/api/gigachat-api"
OAUTH_PATH = "/api/gigachat-oauth"
HEALTH_PATH = "/api/gigachat-health"

# What a browser app's build would ship: valid base64 (the SDK warns
# otherwise), but not a key GigaChat knows. The proxy must never pass it on.
DUMMY_CREDENTIALS = base64.b64encode(b"frontend-dummy-client:this-is-not-a-real-secret-5c1e").decode()

MESSAGE = "Hello, proxy! Please echo this sentence back."
# Multi-byte UTF-8 on purpose: a proxy that re-chunks a stream must not cut a
# character in half.
STREAM_MESSAGE = "Привет, прокси! Раз, два, три: проверка потока."


def echo(text: str) -> str:
    """The emulator answers deterministically with the last user message."""
    return f"Echo: {text}"


@pytest.fixture(scope="module", autouse=True)
def _require_proxy_url() -> None:
    if not PROXY_URL:
        pytest.fail(
            "GIGACHAT_PROXY_URL is not set. These tests need a running gigachat-proxy "
            "in front of the GigaChat emulator: set GIGACHAT_PROXY_URL to the proxy's "
            "origin (e.g. http://127.0.0.1:40123) and GIGACHAT_EMULATOR_URL to the "
            "emulator's origin. `cargo test --workspace` starts both and sets them.",
            pytrace=False,
        )


def require_emulator_url() -> str:
    if not EMULATOR_URL:
        pytest.fail(
            "GIGACHAT_EMULATOR_URL is not set: this test reads the emulator's "
            "/_emulator/stats and /_emulator/requests to see what reached 'GigaChat'.",
            pytrace=False,
        )
    return EMULATOR_URL


# --- recording what the SDK sends -------------------------------------------


class Recorder:
    """httpx event hook: remembers (method, url) of every request the SDK makes."""

    def __init__(self) -> None:
        self.requests: List[Tuple[str, str]] = []

    def __call__(self, request: httpx.Request) -> None:
        self.requests.append((request.method, str(request.url)))

    async def async_hook(self, request: httpx.Request) -> None:
        self(request)

    def mark(self) -> int:
        return len(self.requests)

    def since(self, mark: int) -> List[Tuple[str, str]]:
        return self.requests[mark:]

    def api_calls_since(self, mark: int) -> List[Tuple[str, str]]:
        """(method, path) of the non-OAuth requests made after `mark`."""
        out = []
        for method, url in self.since(mark):
            parts = urlsplit(url)
            assert f"{parts.scheme}://{parts.netloc}" == PROXY_URL, f"SDK called {url}, not the proxy {PROXY_URL}"
            if parts.path != OAUTH_PATH:
                out.append((method, parts.path))
        return out


def make_client(recorder: Recorder, *, use_async: bool = False) -> GigaChat:
    """The SDK configured the way a frontend team would: everything on the proxy.

    With use_async, call it inside the event loop that will use the client
    (httpx's AsyncClient must not outlive its loop) and `await aclose()` there.
    """
    client = GigaChat(
        base_url=f"{PROXY_URL}{API_PREFIX}/v1",
        auth_url=f"{PROXY_URL}{OAUTH_PATH}",
        credentials=DUMMY_CREDENTIALS,
        verify_ssl_certs=False,
        model="GigaChat",
        timeout=30.0,
    )
    # The SDK builds its httpx clients lazily (private properties in 0.2.3);
    # hook them so each test can assert the exact URLs the SDK requested.
    if use_async:
        for ahttp in (client._aclient, client._auth_aclient):
            ahttp.event_hooks = {"request": [recorder.async_hook], "response": []}
    else:
        for http in (client._client, client._auth_client):
            http.event_hooks = {"request": [recorder], "response": []}
    return client


@pytest.fixture(scope="module")
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture(scope="module")
def client(recorder: Recorder) -> Iterable[GigaChat]:
    c = make_client(recorder)
    yield c
    c.close()


# --- emulator introspection --------------------------------------------------


def emulator_get(path: str) -> Any:
    url = f"{require_emulator_url()}{path}"
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback test URL
        assert resp.status == 200, f"GET {url} -> {resp.status}"
        return json.loads(resp.read().decode("utf-8"))


def emulator_requests() -> List[dict]:
    recorded = emulator_get("/_emulator/requests")
    assert isinstance(recorded, list), f"/_emulator/requests returned {type(recorded).__name__}, expected a list"
    return recorded


def header_pairs(recorded: dict) -> List[Tuple[str, str]]:
    return [(str(name), str(value)) for name, value in recorded.get("headers") or []]


def v2_text(messages: Optional[Iterable[Any]]) -> str:
    """Concatenated text parts of the assistant messages of a v2 response/chunk."""
    out = []
    for message in messages or []:
        if message.role not in (None, "assistant"):
            continue
        for part in message.content or []:
            if part.text:
                out.append(part.text)
    return "".join(out)


# --- tests ---------------------------------------------------------------------


def test_chat_v1_echoes(client: GigaChat, recorder: Recorder) -> None:
    mark = recorder.mark()
    response = client.chat(MESSAGE)
    assert recorder.api_calls_since(mark) == [("POST", f"{API_PREFIX}/v1/chat/completions")]
    assert response.choices, f"no choices in {response!r}"
    assert response.choices[0].message.content == echo(MESSAGE)
    assert response.choices[0].message.role == "assistant"


def test_chat_v2_primary_echoes(client: GigaChat, recorder: Recorder) -> None:
    mark = recorder.mark()
    response = client.chat.create(MESSAGE)
    # base_url ends in /v1, so the SDK resolves v2 chat at the origin as
    # <prefix>/v2/chat/completions: the proxy must route that path too.
    assert recorder.api_calls_since(mark) == [("POST", f"{API_PREFIX}/v2/chat/completions")]
    assert v2_text(response.messages) == echo(MESSAGE), f"unexpected v2 response {response!r}"


def test_stream_v1_chunks_concatenate_to_echo(client: GigaChat, recorder: Recorder) -> None:
    mark = recorder.mark()
    chunks = list(client.stream(STREAM_MESSAGE))
    assert recorder.api_calls_since(mark) == [("POST", f"{API_PREFIX}/v1/chat/completions")]
    contents = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert sum(1 for c in contents if c) >= 2, f"expected several content chunks, got {contents!r}"
    assert "".join(contents) == echo(STREAM_MESSAGE)
    assert any(c.choices and c.choices[0].finish_reason for c in chunks), "no chunk carried finish_reason"


def test_stream_v2_events_concatenate_to_echo(client: GigaChat, recorder: Recorder) -> None:
    mark = recorder.mark()
    chunks = list(client.chat.stream(STREAM_MESSAGE))
    assert recorder.api_calls_since(mark) == [("POST", f"{API_PREFIX}/v2/chat/completions")]
    assert chunks, "v2 stream yielded nothing"
    texts = [v2_text(c.messages) for c in chunks]
    assert sum(1 for t in texts if t) >= 2, f"expected several text events, got {texts!r}"
    assert "".join(texts) == echo(STREAM_MESSAGE)
    events = [c.event for c in chunks]
    assert "response.message.delta" in events, f"events seen: {events!r}"


def test_async_chat_v1_and_v2() -> None:
    recorder = Recorder()

    async def run() -> Tuple[Any, Any]:
        client = make_client(recorder, use_async=True)
        try:
            v1 = await client.achat(MESSAGE)
            v2 = await client.achat.create(MESSAGE)
        finally:
            await client.aclose()
        return v1, v2

    v1, v2 = asyncio.run(run())
    assert recorder.requests[0] == ("POST", f"{PROXY_URL}{OAUTH_PATH}"), recorder.requests
    assert recorder.api_calls_since(0) == [
        ("POST", f"{API_PREFIX}/v1/chat/completions"),
        ("POST", f"{API_PREFIX}/v2/chat/completions"),
    ]
    assert v1.choices[0].message.content == echo(MESSAGE)
    assert v2_text(v2.messages) == echo(MESSAGE)


def test_models_list_contains_gigachat(client: GigaChat, recorder: Recorder) -> None:
    mark = recorder.mark()
    models = client.get_models()
    assert recorder.api_calls_since(mark) == [("GET", f"{API_PREFIX}/v1/models")]
    ids = [m.id_ for m in models.data]
    assert "GigaChat" in ids, f"models: {ids!r}"


def test_embeddings_two_inputs_equal_length(client: GigaChat, recorder: Recorder) -> None:
    mark = recorder.mark()
    result = client.embeddings(["first text to embed", "второй текст"])
    assert recorder.api_calls_since(mark) == [("POST", f"{API_PREFIX}/v1/embeddings")]
    assert len(result.data) == 2, f"expected 2 embeddings, got {len(result.data)}"
    lengths = [len(e.embedding) for e in result.data]
    assert lengths[0] > 0 and lengths[0] == lengths[1], f"vector lengths {lengths}"
    assert sorted(e.index for e in result.data) == [0, 1]


def test_tokens_count_one_entry_per_input(client: GigaChat, recorder: Recorder) -> None:
    inputs = ["How many tokens is this?", "А в этой строке?", "x"]
    mark = recorder.mark()
    counts = client.tokens_count(inputs)
    assert recorder.api_calls_since(mark) == [("POST", f"{API_PREFIX}/v1/tokens/count")]
    assert len(counts) == len(inputs), f"expected {len(inputs)} entries, got {counts!r}"
    for count in counts:
        assert count.tokens > 0 and count.characters > 0, f"implausible count {count!r}"


def test_health_endpoint() -> None:
    """The health document (docs/api.md): configuration and upstream kind, no
    upstream call, no secret; `?deep=1` proves a token can be had."""
    stats_before = emulator_get("/_emulator/stats")
    response = httpx.get(f"{PROXY_URL}{HEALTH_PATH}", timeout=10)
    assert response.status_code == 200, f"{HEALTH_PATH} -> {response.status_code}: {response.text[:200]}"
    assert response.headers["content-type"].startswith("application/json"), response.headers
    health = response.json()
    expected = {
        "status": "ok",
        "config": "valid",
        # GIGACHAT_BASE_URL names the test's emulator, not GigaChat's host
        # and not the built-in fallback.
        "upstream": "custom",
        "scope": "GIGACHAT_API_PERS",
        "platform": "local",
        "auth": "open",
        "limits": "memory",
    }
    assert {k: health.get(k) for k in expected} == expected, health
    assert isinstance(health.get("version"), str) and health["version"], health
    assert "token" not in health, f"a plain health check fetched no token: {health}"
    stats_after = emulator_get("/_emulator/stats")
    assert (stats_after["api_calls"], stats_after["oauth_calls"]) == (
        stats_before["api_calls"],
        stats_before["oauth_calls"],
    ), f"a plain health check reached the upstream: {stats_before} -> {stats_after}"

    deep = httpx.get(f"{PROXY_URL}{HEALTH_PATH}", params={"deep": "1"}, timeout=10)
    assert deep.status_code == 200, f"{HEALTH_PATH}?deep=1 -> {deep.status_code}: {deep.text[:200]}"
    assert deep.json().get("token") == "ok", deep.text
    assert "access_token" not in deep.text and "Bearer" not in deep.text, deep.text


def test_sdk_oauth_is_served_by_proxy_and_dummy_credentials_never_leak() -> None:
    emulator = require_emulator_url()
    recorder = Recorder()
    client = make_client(recorder)
    try:
        stats_before = emulator_get("/_emulator/stats")

        token = client.get_token()
        # The SDK's only auth request went to the proxy's OAuth route.
        assert recorder.requests == [("POST", f"{PROXY_URL}{OAUTH_PATH}")], recorder.requests
        assert token is not None and token.access_token, f"no token from {OAUTH_PATH}: {token!r}"
        now_ms = time.time() * 1000
        assert token.expires_at > now_ms, (
            f"expires_at {token.expires_at} is not a future unix time in milliseconds (now {now_ms:.0f})"
        )

        mark = recorder.mark()
        response = client.chat(MESSAGE)
        assert response.choices[0].message.content == echo(MESSAGE)
        # The cached session token was reused: no second OAuth round trip.
        assert recorder.since(mark) == [("POST", f"{PROXY_URL}{API_PREFIX}/v1/chat/completions")]

        stats_after = emulator_get("/_emulator/stats")
        assert stats_after["api_calls"] >= stats_before["api_calls"] + 1, (stats_before, stats_after)
        assert stats_after["oauth_calls"] >= 1, f"the proxy never authenticated upstream: {stats_after}"

        recorded = emulator_requests()
        assert recorded, f"{emulator}/_emulator/requests is empty after a proxied call"
        for req in recorded:
            path = str(req.get("path", ""))
            assert not path.startswith("/api/gigachat-"), f"a proxy route reached the emulator: {req}"
            for name, value in header_pairs(req):
                assert DUMMY_CREDENTIALS not in value, (
                    f"the client's dummy credentials reached the emulator in header {name!r} of {req['method']} {path}"
                )
                assert token.access_token not in value, (
                    f"the proxy's session token was forwarded upstream in header {name!r} of {req['method']} {path}"
                )
        # Upstream OAuth calls (if the emulator records them) carried the
        # proxy's own key with a sane scheme.
        oauth_requests = [r for r in recorded if str(r.get("path", "")).rstrip("/").endswith("/oauth")]
        for req in oauth_requests:
            auth = [v for n, v in header_pairs(req) if n.lower() == "authorization"]
            assert auth and auth[0].split(" ", 1)[0].lower() in ("basic", "bearer"), f"bad upstream OAuth auth {auth}"
    finally:
        client.close()
