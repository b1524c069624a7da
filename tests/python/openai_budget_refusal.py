"""The `openai` Python SDK meets a spent token budget (run by
tests/budgets.rs, not collected by pytest): one call with the SDK's default
two retries must raise RateLimitError at once, the refusal's code intact.
The Rust side counts the refusals in the proxy's log: exactly one.
"""

import os
import sys

import openai

client = openai.OpenAI(
    base_url=os.environ["GIGACHAT_PROXY_URL"] + "/api/gigachat-api/v1",
    api_key=os.environ.get("GIGACHAT_PROXY_KEY", "unused"),
    max_retries=2,
    timeout=30,
)
try:
    client.chat.completions.create(
        model="GigaChat",
        messages=[{"role": "user", "content": "hello"}],
    )
except openai.RateLimitError as err:
    body = err.body if isinstance(err.body, dict) else {}
    code = body.get("code")
    if code != "token_budget_exceeded":
        sys.exit(f"unexpected refusal body: {err.body!r}")
    print("refused:", code, "x-should-retry:", err.response.headers.get("x-should-retry"))
    sys.exit(0)
sys.exit("the call was not refused")
