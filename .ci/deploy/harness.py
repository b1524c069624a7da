#!/usr/bin/env python3
"""Plays the platforms' side for what `vercel build` and `sam build` made.

  harness.py vercel-config --vercel-json vercel.json --output .vercel/output
      Resolves sample paths through .vercel/output/config.json the way
      Vercel's router does and fails on any rewrite, header or function
      setting of vercel.json that the built output does not honour.
  harness.py vercel --output .vercel/output --auth-url URL --base-url URL --chunk-delay-ms N
      Starts every function in .vercel/output/functions/** as Vercel's
      executable runtime does (its .vc-config.json handler and environment,
      a Unix socket in VERCEL_IPC_PATH speaking vercel_runtime's IPC), routes
      each request through config.json to its function, and drives health,
      OAuth, chat, streams and the OpenAI and useChat routes.
  harness.py lambda --bootstrap PATH [--qemu qemu-aarch64] --template template.yaml ...
      Serves a fake Lambda Runtime API (next / response with the streaming
      response mode / error) to the SAM-built bootstrap and drives the same
      scenario as a Function URL with InvokeMode RESPONSE_STREAM would.

Both platform runs end with a Nagle check (`check_no_nagle`): events 10 ms
apart (`--fast-chunk-delay-ms`, set on the emulator for the check) must not
arrive merged, and a Lambda JSON answer must not take the ~40 ms of a
delayed-ACK stall (vendor/README.md).

Standard library only, except PyYAML-with-CloudFormation-tags from the SAM
CLI's own environment for reading template.yaml.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

EMULATOR_KEY = "ZW11bGF0b3ItY2xpZW50LWlkOmVtdWxhdG9yLWNsaWVudC1zZWNyZXQ="
DEADLINE_SECS = 60.0


class CheckFailed(Exception):
    pass


# The started processes' own output (JSON logs, metrics), shown when a check fails.
PROCESS_LOGS: list[Path] = []


def process_log(workdir: str, name: str):
    path = Path(workdir) / (name.strip("/").replace("/", "_") + ".log")
    PROCESS_LOGS.append(path)
    return path.open("wb")


def dump_process_logs() -> None:
    """Called before the logs' directory goes away."""
    for path in PROCESS_LOGS:
        if path.exists():
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            say(f"--- last lines of {path.name} ---")
            for line in lines[-30:]:
                say(line)


def say(msg: str) -> None:
    print(msg, flush=True)


def check(cond: bool, what: str) -> None:
    if not cond:
        raise CheckFailed(what)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    # (seconds since the request was sent, bytes) per read from the wire.
    chunks: list[tuple[float, bytes]] = field(default_factory=list)

    @property
    def body(self) -> bytes:
        return b"".join(c for _, c in self.chunks)

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError as err:
            raise CheckFailed(f"not JSON ({err}): {self.body[:300]!r}") from err

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


# --- the scenario both platforms answer ----------------------------------------------


def sse_data_events(reply: Reply) -> list[tuple[float, str]]:
    """(arrival time, data) of each SSE `data:` event, timed by the read that
    completed it."""
    events, buf = [], b""
    for t, chunk in reply.chunks:
        buf += chunk
        while b"\n\n" in buf:
            raw, buf = buf.split(b"\n\n", 1)
            for line in raw.decode("utf-8", "replace").splitlines():
                if line.startswith("data:"):
                    events.append((t, line[5:].strip()))
    return events


def check_streamed(name: str, reply: Reply, delay_s: float, min_events: int = 3) -> list[str]:
    """Several events, delivered as they were produced: the first one must
    arrive well before the last (the emulator waits `delay_s` between
    events), so a platform that buffers the body fails here."""
    check(reply.status == 200, f"{name}: status {reply.status}: {reply.body[:300]!r}")
    check(
        "text/event-stream" in reply.header("content-type"),
        f"{name}: content-type {reply.header('content-type')!r}",
    )
    events = sse_data_events(reply)
    check(len(events) >= min_events, f"{name}: {len(events)} SSE events, want >= {min_events}: {reply.body[:400]!r}")
    spread = events[-1][0] - events[0][0]
    reads = len({t for t, _ in events})
    want = delay_s * (len(events) - 1) * 0.5
    check(
        reads >= min_events and spread >= want,
        f"{name}: buffered: {len(events)} events in {reads} reads over {spread:.3f}s (want >= {want:.3f}s)",
    )
    say(f"  ok  {name}: {len(events)} events in {reads} separate reads over {spread:.2f}s")
    return [data for _, data in events]


def drive(send, platform: str, delay_s: float, skip_missing_chat: bool = True) -> None:
    """`send(method, path, headers, body) -> Reply`."""
    json_h = {"content-type": "application/json"}

    r = send("GET", "/api/gigachat-health", {}, b"")
    check(r.status == 200, f"health: status {r.status}: {r.body[:300]!r}")
    health = r.json()
    check(health.get("status") == "ok", f"health: {health}")
    check(health.get("platform") == platform, f"health: platform {health.get('platform')!r}, want {platform!r}")
    say(f"  ok  GET /api/gigachat-health: status ok, platform {platform}, upstream {health.get('upstream')}")

    r = send("GET", "/api/gigachat-health?deep=1", {}, b"")
    check(r.status == 200 and r.json().get("token") == "ok", f"deep health: {r.status} {r.body[:300]!r}")
    say("  ok  GET /api/gigachat-health?deep=1: a GigaChat token was obtained")

    r = send("POST", "/api/gigachat-oauth", {"content-type": "application/x-www-form-urlencoded"}, b"scope=GIGACHAT_API_PERS")
    check(r.status == 200, f"oauth: status {r.status}: {r.body[:300]!r}")
    token = r.json().get("access_token")
    check(isinstance(token, str) and token.count(".") == 2, "oauth: no session token in the answer")
    check(EMULATOR_KEY not in r.body.decode("utf-8", "replace"), "oauth: the key leaked into the answer")
    say("  ok  POST /api/gigachat-oauth: a session token")
    bearer = {"authorization": f"Bearer {token}", **json_h}

    chat = {"model": "GigaChat", "messages": [{"role": "user", "content": "Hello from the deploy check"}]}
    r = send("POST", "/api/gigachat-api/v1/chat/completions", bearer, json.dumps(chat).encode())
    check(r.status == 200, f"chat: status {r.status}: {r.body[:300]!r}")
    content = r.json()["choices"][0]["message"]["content"]
    check(bool(content), "chat: empty answer")
    say(f"  ok  POST /api/gigachat-api/v1/chat/completions (session token): {content[:40]!r}")

    r = send("POST", "/api/gigachat-api/v1/chat/completions", bearer, json.dumps({**chat, "stream": True}).encode())
    events = check_streamed("stream /api/gigachat-api/v1/chat/completions", r, delay_s)
    check(events[-1] == "[DONE]", f"stream: last event {events[-1]!r}")

    r = send("POST", "/api/gigachat-openai/v1/chat/completions", json_h, json.dumps(chat).encode())
    check(r.status == 200, f"openai: status {r.status}: {r.body[:300]!r}")
    answer = r.json()
    check(answer.get("object") == "chat.completion", f"openai: {answer}")
    say("  ok  POST /api/gigachat-openai/v1/chat/completions: chat.completion")

    r = send("POST", "/api/gigachat-openai/v1/chat/completions", json_h, json.dumps({**chat, "stream": True}).encode())
    events = check_streamed("stream /api/gigachat-openai/v1/chat/completions", r, delay_s)
    check(events[-1] == "[DONE]", f"openai stream: last event {events[-1]!r}")
    check(json.loads(events[0]).get("object") == "chat.completion.chunk", f"openai stream: {events[0]!r}")

    r = send("GET", "/api/gigachat-budget", {}, b"")
    check(r.status == 200 and "enabled" in r.json(), f"budget: {r.status} {r.body[:300]!r}")
    say("  ok  GET /api/gigachat-budget")

    ui = {
        "id": "deploy-check",
        "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "Hello from the deploy check"}]}],
        "trigger": "submit-message",
    }
    r = send("POST", "/api/gigachat-chat", json_h, json.dumps(ui).encode())
    if r.status == 404 and skip_missing_chat:
        say(f"  SKIP POST /api/gigachat-chat: 404 (the useChat route is not in this build yet): {r.body[:160]!r}")
    else:
        events = check_streamed("stream /api/gigachat-chat (useChat)", r, delay_s)
        types = [json.loads(e).get("type") for e in events if e != "[DONE]"]
        check("text-delta" in types, f"useChat: no text-delta chunk in {types}")

    r = send("GET", "/api/gigachat-api/v1/no-such-route", bearer, b"")
    error = r.json()
    check(400 <= r.status < 500 and error.get("code"), f"unknown route: {r.status} {r.body[:200]!r}")
    say(f"  ok  GET /api/gigachat-api/v1/no-such-route: JSON {r.status} {error.get('code')}")


def set_emulator_chunk_delay(base_url: str, delay_ms: int | None) -> None:
    """Through the emulator's control surface (same origin as the API);
    `None` goes back to its --chunk-delay-ms."""
    parts = urlsplit(base_url)
    body = json.dumps({"reset": True} if delay_ms is None else {"chunk_delay_ms": delay_ms}).encode()
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=DEADLINE_SECS)
    conn.request("POST", "/_emulator/faults", body=body, headers={"content-type": "application/json"})
    status = conn.getresponse().status
    conn.close()
    check(status == 204, f"emulator faults: status {status}")


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


# Linux delays an ACK by at least 40 ms. A runtime that writes a streamed
# answer in several small writes without TCP_NODELAY (Nagle's algorithm)
# holds every write after the first until the peer's delayed ACK, so events
# a few ms apart arrive merged into one read every ~40 ms, and even a small
# JSON answer (prelude, separator, body) takes 40 ms.
NAGLE_STALL_S = 0.040


def check_no_nagle(send, platform: str, base_url: str, fast_delay_ms: int, json_latency: bool) -> None:
    """Streams with events `fast_delay_ms` apart must arrive event by event,
    and (`json_latency`) a small JSON answer must come back well under the
    delayed-ACK stall. `send` must reuse its connections the way the
    platform does (see `VercelFunctions.send`). The emulator's delay is set
    back afterwards. Both checks run; a failure reports both."""
    json_h = {"content-type": "application/json"}
    failures = []
    if json_latency:
        took = []
        for _ in range(20):
            started = time.monotonic()
            r = send("GET", "/api/gigachat-health", {}, b"")
            took.append(time.monotonic() - started)
            check(r.status == 200, f"health: status {r.status}: {r.body[:300]!r}")
        limit = NAGLE_STALL_S / 2
        shown = ", ".join(f"{t * 1000:.1f}" for t in sorted(took))
        if median(took) < limit:
            say(f"  ok  JSON answer without a delayed-ACK stall: median {median(took) * 1000:.1f} ms over 20 calls")
        else:
            failures.append(
                f"JSON answer: median {median(took) * 1000:.1f} ms over 20 calls (want < {limit * 1000:.0f} ms; "
                f"a fixed ~40 ms is the delayed-ACK stall of a runtime socket without TCP_NODELAY): {shown} ms"
            )

    fast_s = fast_delay_ms / 1000
    chat = {"model": "GigaChat", "messages": [{"role": "user", "content": "Hello from the deploy check"}], "stream": True}
    set_emulator_chunk_delay(base_url, fast_delay_ms)
    try:
        gaps = []
        # The first streams are not counted: on a new connection the
        # receiving kernel ACKs at once (quick-ACK mode), hiding Nagle.
        for i in range(13):
            r = send("POST", "/api/gigachat-openai/v1/chat/completions", json_h, json.dumps(chat).encode())
            check(r.status == 200, f"fast stream: status {r.status}: {r.body[:300]!r}")
            # [DONE] follows the last upstream event at once: not a gap.
            times = [t for t, data in sse_data_events(r) if data != "[DONE]"]
            check(len(times) >= 3, f"fast stream: {len(times)} events: {r.body[:400]!r}")
            if i >= 3:
                gaps += [b - a for a, b in zip(times, times[1:])]
    finally:
        set_emulator_chunk_delay(base_url, None)
    # Each gap is ~fast_delay_ms when events go out as produced; merged
    # events (Nagle) show as ~0 gaps, with one ~40 ms gap per merge.
    apart = sum(1 for g in gaps if g >= fast_s * 0.4)
    # Measured on loopback without TCP_NODELAY: 50-60 % apart; with it, all.
    want = len(gaps) * 4 // 5
    shown = ", ".join(f"{g * 1000:.0f}" for g in gaps)
    if apart >= want:
        say(f"  ok  fast stream ({fast_delay_ms} ms between events): {apart} of {len(gaps)} events arrived apart; gaps ms: {shown}")
    else:
        failures.append(
            f"fast stream ({fast_delay_ms} ms between events): only {apart} of {len(gaps)} events arrived apart "
            f"(want >= {want}); the rest were merged, the mark of Nagle's algorithm on the {platform} "
            f"runtime's socket. Gaps in ms: {shown}"
        )
    check(not failures, "; ".join(failures))


# --- Vercel: routing through config.json -------------------------------------------


def load_json(path: Path):
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def sample_paths(source: str) -> list[str]:
    """Concrete paths a vercel.json `source` pattern matches (the patterns
    used here: literal segments, `(.*)`, `(a|b)` alternations, `\\.`)."""
    alternatives = re.search(r"\(([^()]*\|[^()]*)\)", source)
    if alternatives:
        out = []
        for alt in alternatives.group(1).split("|"):
            out += sample_paths(source[: alternatives.start()] + alt + source[alternatives.end() :])
        return out
    if "(.*)" in source:
        return sample_paths(source.replace("(.*)", "v1/chat/completions", 1)) + sample_paths(source.replace("(.*)", "x", 1))
    if re.search(r"[()*+?\[\]:]", source.replace("\\.", "")):
        raise CheckFailed(f"vercel.json source {source!r}: the check cannot make sample paths for this pattern")
    return [source.replace("\\.", ".")]


@dataclass
class Resolved:
    path: str  # after rewrites: a function (/api/x) or a static file
    kind: str  # "function" | "static" | "miss"
    target: str  # function dir or static file
    headers: dict[str, str]


def substitute(template: str, match: re.Match) -> str:
    groups = match.groupdict()
    out = re.sub(r"\$(\d+)", lambda m: match.group(int(m.group(1))) or "", template)
    return re.sub(r"\$([A-Za-z_]\w*)", lambda m: groups.get(m.group(1)) or "", out)


class Router:
    """The part of Vercel's Build Output API v3 routing that vercel.json
    rewrites and headers compile to: routes before `handle: filesystem`
    (headers with `continue`), the filesystem (static files, functions), then
    the `rewrite` phase (entries with `check: true` re-enter the filesystem).
    An entry of a kind this model does not know fails the check instead of
    being ignored."""

    KNOWN_PHASES = {None, "filesystem", "resource", "miss", "rewrite", "hit", "error"}

    def __init__(self, output: Path):
        self.output = output
        config = load_json(output / "config.json")
        check(config.get("version") == 3, f"config.json: version {config.get('version')}")
        self.phases: dict[str | None, list[dict]] = {}
        phase = None
        for route in config.get("routes", []):
            if "handle" in route:
                phase = route["handle"]
                check(phase in self.KNOWN_PHASES, f"config.json: unknown phase {phase!r}")
                continue
            self.phases.setdefault(phase, []).append(route)
        self.functions = {
            "/" + str(p.relative_to(output / "functions"))[: -len(".func")]: p
            for p in (output / "functions").rglob("*.func")
        }

    def on_filesystem(self, path: str) -> tuple[str, str] | None:
        if path in self.functions:
            return "function", str(self.functions[path])
        static = self.output / "static" / path.lstrip("/")
        for candidate in (static, static / "index.html", Path(str(static) + ".html")):
            if candidate.is_file():
                return "static", str(candidate)
        return None

    def run_phase(self, phase, path: str, headers: dict[str, str], method: str) -> tuple[str, dict | None]:
        """Applies one phase's routes; returns the new path and the route
        that ended the phase (one without `continue`), if any."""
        for route in self.phases.get(phase, []):
            methods = route.get("methods")
            if methods and method not in methods:
                continue
            unknown = set(route) - {"src", "dest", "headers", "continue", "check", "status", "methods", "override", "important"}
            check(not unknown, f"config.json route {route}: keys {sorted(unknown)} not modelled by the check")
            m = re.search(route["src"], path)
            if not m:
                continue
            for key, value in (route.get("headers") or {}).items():
                headers[key.lower()] = substitute(value, m)
            if "dest" in route:
                path = urlsplit(substitute(route["dest"], m)).path
            if not route.get("continue"):
                return path, route
        return path, None

    def resolve(self, path: str, method: str = "GET") -> Resolved:
        """Main routes, the filesystem, then the routes after `handle:
        filesystem` (and `rewrite`), whose `check: true` entries look at
        the filesystem again; a route with a `status` and no match there
        ends it; `miss` last."""
        headers: dict[str, str] = {}
        path, _ = self.run_phase(None, path, headers, method)
        found = self.on_filesystem(path)
        for phase in ("filesystem", "rewrite", "miss"):
            if found is not None:
                break
            path, stopped = self.run_phase(phase, path, headers, method)
            found = self.on_filesystem(path)
            if found is None and stopped is not None and "status" in stopped:
                return Resolved(path, f"status {stopped['status']}", "", headers)
        if found is None:
            return Resolved(path, "miss", "", headers)
        return Resolved(path, found[0], found[1], headers)


def vercel_config(args) -> int:
    vercel_json = load_json(Path(args.vercel_json))
    router = Router(Path(args.output))
    failures = []

    def fail(msg: str) -> None:
        failures.append(msg)
        say(f"  FAIL {msg}")

    for rule in vercel_json.get("rewrites", []):
        want = urlsplit(rule["destination"]).path
        for path in sample_paths(rule["source"]):
            got = router.resolve(path, "POST")
            if got.kind == "function" and got.path == want:
                say(f"  ok  rewrite {path} -> function {want}")
            else:
                fail(f"rewrite {rule['source']} -> {want}: {path} reaches {got.kind} {got.path}")
    for rule in vercel_json.get("headers", []):
        for path in sample_paths(rule["source"]):
            got = router.resolve(path)
            missing = [h["key"] for h in rule["headers"] if got.headers.get(h["key"].lower()) != h["value"]]
            if got.kind == "miss":
                fail(f"headers {rule['source']}: {path} serves nothing")
            elif missing:
                fail(f"headers {rule['source']}: {path} lacks {missing}")
            else:
                say(f"  ok  headers on {path} ({got.kind}): {', '.join(h['key'] for h in rule['headers'])}")
    # Every api/*.rs entrypoint is a function at its own path.
    api_dir = Path(args.vercel_json).parent / "api"
    for entry in sorted(api_dir.glob("*.rs")):
        path = f"/api/{entry.stem}"
        got = router.resolve(path, "POST")
        if got.kind == "function" and got.path == path:
            say(f"  ok  {path} -> function {path}")
        else:
            fail(f"{path}: reaches {got.kind} {got.path}, not its own function")
    # The model must not route everything: an unknown /api path reaches no function.
    got = router.resolve("/api/deploy-check-unknown", "POST")
    if got.kind == "function":
        fail(f"/api/deploy-check-unknown reaches function {got.path}")
    else:
        say(f"  ok  /api/deploy-check-unknown -> {got.kind}")
    # Function settings of vercel.json on every function they name.
    for pattern, settings in (vercel_json.get("functions") or {}).items():
        if pattern != "api/**/*.rs":
            fail(f"functions {pattern!r}: the check knows only the pattern api/**/*.rs")
            continue
        for name, func in sorted(router.functions.items()):
            vc = load_json(func / ".vc-config.json")
            wrong = {}
            for key, value in settings.items():
                vc_key = {"memory": "memory", "maxDuration": "maxDuration"}.get(key, key)
                if vc.get(vc_key) != value:
                    wrong[key] = (value, vc.get(vc_key))
            if not vc.get("supportsResponseStreaming"):
                wrong["supportsResponseStreaming"] = (True, vc.get("supportsResponseStreaming"))
            if wrong:
                fail(f"function {name}: .vc-config.json differs from vercel.json (want, got): {wrong}")
            else:
                say(f"  ok  function {name}: {', '.join(f'{k}={v}' for k, v in settings.items())}, streaming, {vc.get('architecture', 'x86_64')}")
    if failures:
        say(f"vercel-config: {len(failures)} failure(s)")
        return 1
    return 0


# --- Vercel: the function bridge (vercel_runtime IPC) --------------------------------


class IpcBridge:
    """The platform's end of `VERCEL_IPC_PATH`: each function connects once
    and sends NUL-terminated JSON messages (`server-started`, `log`, `end`,
    `metric`)."""

    def __init__(self, sock_path: str):
        self.sock_path = sock_path
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(sock_path)
        self.server.listen(16)
        self.messages: list[dict] = []
        self.cond = threading.Condition()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        buf = b""
        while True:
            data = conn.recv(65536)
            if not data:
                return
            buf += data
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                message = json.loads(raw)
                with self.cond:
                    self.messages.append(message)
                    self.cond.notify_all()

    def wait_for(self, pred, what: str, timeout: float = DEADLINE_SECS) -> dict:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for m in self.messages:
                    if pred(m):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CheckFailed(f"IPC: no {what} within {timeout:.0f}s")
                self.cond.wait(left)

    def close(self) -> None:
        self.server.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_call(
    port: int, method: str, path: str, headers: dict[str, str], body: bytes, conn: http.client.HTTPConnection | None = None
) -> Reply:
    """On a new connection, closed afterwards, or on `conn`, left open."""
    own = conn is None
    if conn is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE_SECS)
    start = time.monotonic()
    conn.request(method, path, body=body or None, headers=headers)
    resp = conn.getresponse()
    reply = Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()})
    while True:
        chunk = resp.read1(65536)
        if not chunk:
            break
        reply.chunks.append((time.monotonic() - start, chunk))
    if own:
        conn.close()
    return reply


class VercelFunctions:
    def __init__(self, output: Path, env: dict[str, str], workdir: str):
        self.router = Router(output)
        self.env = env
        self.workdir = workdir
        self.bridge = IpcBridge(os.path.join(workdir, "ipc.sock"))
        self.procs: dict[str, tuple[subprocess.Popen, int, float]] = {}
        self.request_id = 0
        self.kept_alive: dict[int, http.client.HTTPConnection] = {}

    def start(self, name: str) -> tuple[int, float]:
        func = self.router.functions[name]
        vc = load_json(func / ".vc-config.json")
        check(vc.get("runtime") == "executable", f"{name}: runtime {vc.get('runtime')!r}")
        root = self.unpack(name, func, vc)
        handler = root / vc["handler"]
        check(os.access(handler, os.X_OK), f"{name}: handler {vc['handler']} is not executable")
        env = {**self.env, **(vc.get("environment") or {})}
        env["VERCEL_IPC_PATH"] = self.bridge.sock_path
        env["VERCEL_DEV_PORT"] = str(free_port())
        started = time.monotonic()
        log = process_log(self.workdir, name)
        proc = subprocess.Popen([str(handler)], cwd=root, env=env, stdout=log, stderr=log)
        msg = self.bridge.wait_for(
            lambda m: m.get("type") == "server-started" and m["payload"]["httpPort"] == int(env["VERCEL_DEV_PORT"]),
            f"server-started from {name}",
            timeout=30,
        )
        cold = time.monotonic() - started
        port = msg["payload"]["httpPort"]
        self.procs[name] = (proc, port, cold)
        return port, cold

    def unpack(self, name: str, func: Path, vc: dict) -> Path:
        """The function's files as the platform lays them out: the `.func`
        directory plus `filePathMap` (bundle path -> file, relative to the
        project root), which `vercel build` writes instead of copying."""
        root = Path(self.workdir) / ("fn" + name.replace("/", "_"))
        shutil.copytree(func, root, symlinks=True)
        project = self.router.output.resolve().parent.parent  # <project>/.vercel/output
        for bundle_path, source in (vc.get("filePathMap") or {}).items():
            source_path = project / source
            check(source_path.is_file(), f"{name}: filePathMap {bundle_path} -> {source}: no such file")
            (root / bundle_path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source_path, root / bundle_path)
        return root

    def send(self, method: str, path: str, headers: dict[str, str], body: bytes, keep_alive: bool = False) -> Reply:
        """A new connection per request, or (`keep_alive`) one kept open per
        function as the platform's bridge does. A fresh connection hides
        Nagle's algorithm: the client's kernel ACKs its first segments at
        once (quick-ACK mode), a long-lived one delays its ACKs."""
        resolved = self.router.resolve(urlsplit(path).path, method)
        check(resolved.kind == "function", f"{method} {path}: routes to {resolved.kind} {resolved.path}, not a function")
        name = resolved.path
        if name not in self.procs:
            port, cold = self.start(name)
            say(f"  --  started function {name} ({cold * 1000:.0f} ms to server-started)")
        _, port, _ = self.procs[name]
        self.request_id += 1
        invocation = str(uuid.uuid4())
        # What the bridge adds in front of the original request.
        sent = {
            **headers,
            "host": "deploy-check.vercel.app",
            "x-forwarded-host": "deploy-check.vercel.app",
            "x-forwarded-proto": "https",
            "x-forwarded-for": "203.0.113.7",
            "x-real-ip": "203.0.113.7",
            "x-vercel-id": f"fra1::{invocation}",
            "x-vercel-internal-invocation-id": invocation,
            "x-vercel-internal-request-id": str(self.request_id),
        }
        conn = None
        if keep_alive:
            conn = self.kept_alive.get(port)
            if conn is None:
                conn = self.kept_alive[port] = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE_SECS)
        reply = http_call(port, method, path, sent, body, conn)
        rid = self.request_id
        self.bridge.wait_for(
            lambda m: m.get("type") == "end"
            and m["payload"]["context"] == {"invocationId": invocation, "requestId": rid},
            f"end message for {method} {path}",
        )
        return reply

    def send_kept_alive(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        return self.send(method, path, headers, body, keep_alive=True)

    def stop(self) -> None:
        for conn in self.kept_alive.values():
            conn.close()
        for name, (proc, _, _) in self.procs.items():
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise CheckFailed(f"{name}: still running 15 s after SIGTERM") from None
            check(code == 0, f"{name}: exit code {code} after SIGTERM")
        self.bridge.close()


def proxy_env(args) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "TZ", "QEMU_LD_PREFIX")}
    return {
        **keep,
        "GIGACHAT_CREDENTIALS": EMULATOR_KEY,
        "GIGACHAT_SCOPE": "GIGACHAT_API_PERS",
        "GIGACHAT_AUTH_URL": args.auth_url,
        "GIGACHAT_BASE_URL": args.base_url,
        "RUST_LOG": "warn",
    }


def vercel_run(args) -> int:
    output = Path(args.output)
    with tempfile.TemporaryDirectory(prefix="deploy-check-vercel-") as workdir:
        env = {**proxy_env(args), "VERCEL": "1", "VERCEL_ENV": "production", "VERCEL_REGION": "fra1"}
        functions = VercelFunctions(output, env, workdir)
        try:
            say(f"functions: {', '.join(sorted(functions.router.functions))}")
            for name in sorted(functions.router.functions):
                port, cold = functions.start(name)
                ping = http_call(port, "GET", "/_vercel/ping", {}, b"")
                check(ping.status == 200, f"{name}: /_vercel/ping {ping.status}")
                say(f"  ok  {name}: server-started over IPC after {cold * 1000:.0f} ms, /_vercel/ping 200")
            try:
                drive(functions.send, "vercel", args.chunk_delay_ms / 1000)
                check_no_nagle(functions.send_kept_alive, "vercel", args.base_url, args.fast_chunk_delay_ms, json_latency=False)
            except CheckFailed:
                dump_process_logs()
                raise
            logs = sum(1 for m in functions.bridge.messages if m.get("type") == "log")
            ends = sum(1 for m in functions.bridge.messages if m.get("type") == "end")
            say(f"  ok  IPC: {ends} end messages (one per request), {logs} log messages")
        finally:
            functions.stop()
        say("  ok  every function exited 0 on SIGTERM")
    return 0


# --- Lambda: a fake Runtime API -------------------------------------------------------

PRELUDE_SEPARATOR = b"\0" * 8


class Invocation:
    def __init__(self, event: dict):
        self.id = str(uuid.uuid4())
        self.event = event
        self.sent = time.monotonic()
        self.mode = ""
        self.content_type = ""
        # ("chunk", t, bytes) | ("end", trailers) | ("error", body)
        self.out: queue.Queue = queue.Queue()


class RuntimeApi(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), RuntimeApiHandler)
        self.pending: queue.Queue[Invocation] = queue.Queue()
        self.live: dict[str, Invocation] = {}
        self.init_errors: list[str] = []
        self.polls = 0

    def handle_error(self, request, client_address) -> None:
        # The runtime's connections drop when the bootstrap is stopped; a
        # real failure shows up as a missing answer instead.
        pass


class RuntimeApiHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY on this end only: its replies (headers, then body) must
    # not stall themselves. It does not hide a stall of the runtime's
    # writes: this socket still ACKs with the kernel's delayed ACK (no
    # TCP_QUICKACK), as a real peer does.
    disable_nagle_algorithm = True
    server: RuntimeApi

    def log_message(self, *args) -> None:
        pass

    def reply(self, status: int, body: bytes = b"{}", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            pass  # the runtime was stopped while it waited for this answer

    def do_GET(self) -> None:
        if self.path != "/2018-06-01/runtime/invocation/next":
            return self.reply(404, b'{"errorType":"NotFound"}')
        self.server.polls += 1
        inv = self.server.pending.get()
        self.server.live[inv.id] = inv
        body = json.dumps(inv.event).encode()
        self.reply(
            200,
            body,
            {
                "Lambda-Runtime-Aws-Request-Id": inv.id,
                "Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000) + 300_000),
                "Lambda-Runtime-Invoked-Function-Arn": "arn:aws:lambda:eu-central-1:123456789012:function:deploy-check",
                "Lambda-Runtime-Trace-Id": "Root=1-00000000-000000000000000000000000;Sampled=0",
            },
        )

    def read_body(self, inv: Invocation | None) -> tuple[bytes, dict[str, str]]:
        """Reads a chunked or sized body, handing each chunk on as it
        arrives; returns the whole body and the trailers."""
        if self.headers.get("transfer-encoding", "").lower() != "chunked":
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            if inv:
                inv.out.put(("chunk", time.monotonic() - inv.sent, body))
            return body, {}
        whole = b""
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                break
            chunk = self.rfile.read(size)
            self.rfile.readline()
            whole += chunk
            if inv:
                inv.out.put(("chunk", time.monotonic() - inv.sent, chunk))
        trailers = {}
        while True:
            line = self.rfile.readline().strip()
            if not line:
                break
            k, _, v = line.decode().partition(":")
            trailers[k.strip().lower()] = v.strip()
        return whole, trailers

    def do_POST(self) -> None:
        m = re.fullmatch(r"/2018-06-01/runtime/invocation/([^/]+)/(response|error)", self.path)
        if self.path == "/2018-06-01/runtime/init/error":
            body, _ = self.read_body(None)
            self.server.init_errors.append(body.decode("utf-8", "replace"))
            return self.reply(202, b'{"status":"OK"}')
        if not m or m.group(1) not in self.server.live:
            self.read_body(None)
            return self.reply(404, b'{"errorType":"InvalidRequestID"}')
        inv = self.server.live.pop(m.group(1))
        if m.group(2) == "error":
            body, _ = self.read_body(None)
            inv.out.put(("error", body))
        else:
            inv.mode = self.headers.get("lambda-runtime-function-response-mode", "")
            inv.content_type = self.headers.get("content-type", "")
            _, trailers = self.read_body(inv)
            inv.out.put(("end", trailers))
        self.reply(202, b'{"status":"OK"}')


def function_url_event(method: str, path: str, headers: dict[str, str], body: bytes) -> dict:
    parts = urlsplit(path)
    now = time.time()
    text = body.decode("utf-8") if body else None
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": parts.path,
        "rawQueryString": parts.query,
        "headers": {
            **headers,
            "host": "deploy-check.lambda-url.eu-central-1.on.aws",
            "x-forwarded-proto": "https",
            "x-forwarded-port": "443",
            "x-forwarded-for": "203.0.113.7",
        },
        "queryStringParameters": dict(p.split("=", 1) for p in parts.query.split("&")) if parts.query else None,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "deploy-check",
            "domainName": "deploy-check.lambda-url.eu-central-1.on.aws",
            "domainPrefix": "deploy-check",
            "http": {
                "method": method,
                "path": parts.path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": headers.get("user-agent", "deploy-check"),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        **({"body": text} if text is not None else {}),
        "isBase64Encoded": False,
    }


def template_env(template: Path, function: str) -> dict[str, str]:
    """The literal environment values of the function in template.yaml
    (parameters and conditions are left to the caller's own values)."""
    try:
        from samcli.yamlhelper import yaml_parse
    except ImportError as err:
        raise CheckFailed("run the lambda harness with the SAM CLI's Python (the venv .ci/deploy-check installs)") from err
    doc = yaml_parse(template.read_text(encoding="utf-8"))
    variables = doc["Resources"][function]["Properties"]["Environment"]["Variables"]
    return {k: v for k, v in variables.items() if isinstance(v, str)}


def lambda_run(args) -> int:
    api = RuntimeApi()
    threading.Thread(target=api.serve_forever, daemon=True).start()
    host, port = api.server_address[:2]
    env = {
        **proxy_env(args),
        **template_env(Path(args.template), args.function),
        "AWS_LAMBDA_RUNTIME_API": f"{host}:{port}",
        "AWS_LAMBDA_FUNCTION_NAME": "deploy-check",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/deploy-check",
        "AWS_LAMBDA_LOG_STREAM_NAME": "deploy-check",
        "AWS_REGION": "eu-central-1",
        "AWS_DEFAULT_REGION": "eu-central-1",
        "LAMBDA_TASK_ROOT": str(Path(args.bootstrap).resolve().parent),
        "_HANDLER": "bootstrap",
    }
    say(f"template env: {', '.join(sorted(k for k in env if k.startswith('GIGACHAT_PROXY')))}")
    bootstrap = Path(args.bootstrap).resolve()
    cmd = ([args.qemu] if args.qemu else []) + [str(bootstrap)]
    started = time.monotonic()
    workdir = tempfile.TemporaryDirectory(prefix="deploy-check-lambda-")
    log = process_log(workdir.name, "bootstrap")
    proc = subprocess.Popen(cmd, cwd=bootstrap.parent, env=env, stdout=log, stderr=log)

    def send(method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        inv = Invocation(function_url_event(method, path, headers, body))
        api.pending.put(inv)
        buf, reply = b"", None
        deadline = time.monotonic() + DEADLINE_SECS
        while True:
            try:
                kind, *rest = inv.out.get(timeout=0.5)
            except queue.Empty:
                if proc.poll() is not None:
                    raise CheckFailed(f"lambda: bootstrap exited with {proc.returncode}") from None
                if time.monotonic() > deadline:
                    raise CheckFailed(f"lambda: no answer to {method} {path} within {DEADLINE_SECS:.0f}s") from None
                continue
            if kind == "error":
                raise CheckFailed(f"lambda: invocation error for {method} {path}: {rest[0][:300]!r}")
            if kind == "end":
                trailers = rest[0]
                check("lambda-runtime-function-error-type" not in trailers, f"lambda: stream ended with an error: {trailers}")
                break
            t, chunk = rest
            if reply is None:
                buf += chunk
                if PRELUDE_SEPARATOR in buf:
                    prelude, rest_bytes = buf.split(PRELUDE_SEPARATOR, 1)
                    meta = json.loads(prelude)
                    headers_out = {k.lower(): v for k, v in (meta.get("headers") or {}).items()}
                    reply = Reply(int(meta.get("statusCode", 200)), headers_out)
                    if rest_bytes:
                        reply.chunks.append((t, rest_bytes))
            else:
                reply.chunks.append((t, chunk))
        check(inv.mode == "streaming", f"lambda: response mode {inv.mode!r}, want streaming (template: RESPONSE_STREAM)")
        check(
            inv.content_type == "application/vnd.awslambda.http-integration-response",
            f"lambda: content-type {inv.content_type!r}",
        )
        check(reply is not None, f"lambda: {method} {path}: no prelude in the streamed answer")
        return reply

    try:
        try:
            send("GET", "/api/gigachat-health", {}, b"")
            say(f"  --  bootstrap{' under ' + args.qemu if args.qemu else ''}: first answer {(time.monotonic() - started) * 1000:.0f} ms after start")
            drive(send, "lambda", args.chunk_delay_ms / 1000)
            check_no_nagle(send, "lambda", args.base_url, args.fast_chunk_delay_ms, json_latency=True)
            check(not api.init_errors, f"lambda: init errors {api.init_errors}")
        except CheckFailed:
            dump_process_logs()
            raise
        say(f"  ok  runtime API: every answer streamed (Lambda-Runtime-Function-Response-Mode: streaming), {api.polls} polls")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        api.shutdown()
        workdir.cleanup()
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("vercel-config")
    c.add_argument("--vercel-json", required=True)
    c.add_argument("--output", required=True)
    v = sub.add_parser("vercel")
    v.add_argument("--output", required=True)
    v.add_argument("--auth-url", required=True, help="the emulator's OAuth URL")
    v.add_argument("--base-url", required=True, help="the emulator's API base URL")
    v.add_argument("--chunk-delay-ms", type=int, required=True)
    v.add_argument("--fast-chunk-delay-ms", type=int, default=10, help="event interval of the Nagle check")
    lam = sub.add_parser("lambda")
    lam.add_argument("--bootstrap", required=True)
    lam.add_argument("--qemu", default="", help="e.g. qemu-aarch64 (with QEMU_LD_PREFIX set)")
    lam.add_argument("--template", required=True)
    lam.add_argument("--function", default="GigachatProxyFunction")
    lam.add_argument("--auth-url", required=True)
    lam.add_argument("--base-url", required=True)
    lam.add_argument("--chunk-delay-ms", type=int, required=True)
    lam.add_argument("--fast-chunk-delay-ms", type=int, default=10, help="event interval of the Nagle check")
    args = p.parse_args()
    try:
        return {"vercel-config": vercel_config, "vercel": vercel_run, "lambda": lambda_run}[args.cmd](args)
    except CheckFailed as err:
        say(f"FAIL {args.cmd}: {err}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
