"""Shared by the Python client scripts: where the proxy is, an httpx client
that keeps what went over the wire (so a failing case shows the exact
request and answer), and the runner that prints one JSON object for the
Rust harness (tests/openai_clients.rs) to assert on.

The base URL is ``OPENAI_BASE_URL`` or an http(s) argument, e.g.
http://127.0.0.1:8080/api/gigachat-openai/v1; the API key is
``OPENAI_API_KEY`` or ``--api-key=KEY`` (any string in open mode).
"""

from __future__ import annotations

import json
import math
import os
import sys
import traceback
from typing import Any, Callable

import httpx

_ARGS = sys.argv[1:]
BASE_URL = os.environ.get("OPENAI_BASE_URL") or next(
    (a for a in _ARGS if a.startswith(("http://", "https://"))), None
)
API_KEY = os.environ.get("OPENAI_API_KEY") or next(
    (a.removeprefix("--api-key=") for a in _ARGS if a.startswith("--api-key=")),
    "sk-open-mode-ignores-this",
)
if not BASE_URL:
    print(
        "usage: OPENAI_BASE_URL=http://HOST:PORT/api/gigachat-openai/v1 python SCRIPT",
        file=sys.stderr,
    )
    sys.exit(2)

MODEL = "GigaChat"
EMBEDDINGS_MODEL = "Embeddings"
# What the tool returns in every round trip: the final answer must use it.
TOOL_OUTPUT = {"city": "Moscow", "forecast": "sunny-7f3a", "temperature_c": 21}

_REQUEST_LIMIT = 4000
_RESPONSE_LIMIT = 6000


def _clip(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return f"{text[:limit]}…[{len(text) - limit} more]"


class Recorder:
    """httpx event hooks that keep each exchange of the current case. Stream
    bodies are not read here (that would buffer the stream the client is
    reading); their status is kept, and the client's error carries the rest."""

    def __init__(self) -> None:
        self.exchanges: list[dict[str, Any]] = []

    def _on_request(self, request: httpx.Request) -> None:
        body = request.content.decode("utf-8", "replace") if request.content else None
        self.exchanges.append(
            {
                "method": request.method,
                "url": str(request.url),
                "request": _clip(body, _REQUEST_LIMIT),
            }
        )

    def _on_response(self, response: httpx.Response) -> None:
        entry = self.exchanges[-1] if self.exchanges else {}
        entry["status"] = response.status_code
        if "text/event-stream" not in response.headers.get("content-type", ""):
            response.read()
            entry["response"] = _clip(response.text, _RESPONSE_LIMIT)

    def http_client(self) -> httpx.Client:
        return httpx.Client(
            timeout=30.0,
            event_hooks={"request": [self._on_request], "response": [self._on_response]},
        )


def describe_error(error: BaseException) -> dict[str, Any]:
    out: dict[str, Any] = {"name": type(error).__name__, "message": str(error)}
    for key in ("status_code", "code", "type", "param"):
        value = getattr(error, key, None)
        if value is not None:
            out[key] = value
    body = getattr(error, "body", None)
    if body is not None:
        out["body"] = body
    out["traceback"] = _clip("".join(traceback.format_exception(error)), 3000)
    return out


def run_cases(cases: dict[str, Callable[[Recorder], dict[str, Any]]]) -> None:
    """Runs each case in order and prints
    ``{"cases": {name: {"ok": true, ...} | {"ok": false, "error": ...}}}``
    on one line. A case's failure does not stop the others."""
    results: dict[str, Any] = {}
    for name, run in cases.items():
        recorder = Recorder()
        try:
            result = run(recorder)
            results[name] = {"ok": True, **result, "exchanges": recorder.exchanges}
        except Exception as error:  # noqa: BLE001 - reported to the harness
            results[name] = {
                "ok": False,
                "error": describe_error(error),
                "exchanges": recorder.exchanges,
            }
    print(json.dumps({"cases": results}, ensure_ascii=False, default=str))


def vector_facts(vectors: list[list[float]]) -> dict[str, Any]:
    """Facts about a batch of vectors (texts: first, second, first)."""
    return {
        "count": len(vectors),
        "dimensions": [len(v) for v in vectors],
        "norms": [math.sqrt(sum(x * x for x in v)) for v in vectors],
        "all_numbers": all(
            isinstance(x, float) and math.isfinite(x) for v in vectors for x in v
        ),
        "first_equals_third": len(vectors) > 2 and list(vectors[0]) == list(vectors[2]),
        "first_equals_second": len(vectors) > 1 and list(vectors[0]) == list(vectors[1]),
        "head": [list(v[:4]) for v in vectors],
    }
