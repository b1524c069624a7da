"""LangChain's `ChatOpenAI` and `OpenAIEmbeddings` (langchain-openai) against
the proxy's OpenAI-compatible route: a plain chat and stream, `bind_tools`
with a full round trip, `with_structured_output` (its default json_schema
method, and function_calling), embeddings with
`check_embedding_ctx_length=False`, and the default embeddings path, which
sends token ids and must get a 400 that says what to change.

    OPENAI_BASE_URL=http://HOST:PORT/api/gigachat-openai/v1 python langchain_clients.py
"""

from __future__ import annotations

import json
from typing import Any

import openai
import tiktoken
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from pydantic import BaseModel, Field

from support import (
    API_KEY,
    BASE_URL,
    EMBEDDINGS_MODEL,
    MODEL,
    TOOL_OUTPUT,
    Recorder,
    run_cases,
    vector_facts,
)


def prompt(what: str) -> str:
    return f"Hello from langchain {what}"


def chat_model(recorder: Recorder) -> ChatOpenAI:
    return ChatOpenAI(
        model=MODEL,
        base_url=BASE_URL,
        api_key=API_KEY,
        max_retries=0,
        http_client=recorder.http_client(),
    )


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return json.dumps(TOOL_OUTPUT)


class Person(BaseModel):
    """A person mentioned in the text."""

    name: str = Field(description="The person's name")
    age: int = Field(description="The person's age in years")


def chat(recorder: Recorder) -> dict[str, Any]:
    llm = chat_model(recorder)
    answer = llm.invoke([HumanMessage(prompt("invoke"))])
    streamed = "".join(str(chunk.content) for chunk in llm.stream(prompt("stream")))
    return {
        "prompt": prompt("invoke"),
        "content": answer.content,
        "finish_reason": answer.response_metadata.get("finish_reason"),
        "usage": answer.usage_metadata,
        "stream_prompt": prompt("stream"),
        "stream_content": streamed,
    }


def bind_tools(recorder: Recorder) -> dict[str, Any]:
    llm = chat_model(recorder).bind_tools([get_weather])
    messages: list[Any] = [HumanMessage(f"{prompt('bind_tools')}: call get_weather for Moscow")]
    first = llm.invoke(messages)
    if not first.tool_calls:
        raise AssertionError(f"no tool call in {first!r}")
    call = first.tool_calls[0]
    messages.append(first)
    messages.append(ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"]))
    final = llm.invoke(messages)
    return {
        "prompt": messages[0].content,
        "tool_calls": [{"name": c["name"], "args": c["args"], "id": c["id"]} for c in first.tool_calls],
        "first_finish_reason": first.response_metadata.get("finish_reason"),
        "final_content": final.content,
        "final_tool_calls": final.tool_calls,
        "final_finish_reason": final.response_metadata.get("finish_reason"),
    }


def structured(method: str | None):
    def run(recorder: Recorder) -> dict[str, Any]:
        llm = chat_model(recorder)
        kwargs = {"method": method} if method else {}
        text = prompt(f"with_structured_output {method or 'default'}")
        person = llm.with_structured_output(Person, **kwargs).invoke(text)
        return {"prompt": text, "type": type(person).__name__, "object": person.model_dump()}

    return run


def embeddings(recorder: Recorder) -> dict[str, Any]:
    model = OpenAIEmbeddings(
        model=EMBEDDINGS_MODEL,
        base_url=BASE_URL,
        api_key=API_KEY,
        max_retries=0,
        check_embedding_ctx_length=False,
        http_client=recorder.http_client(),
    )
    vectors = model.embed_documents(["first text", "second text", "first text"])
    query = model.embed_query("first text")
    return {**vector_facts(vectors), "query_equals_first": list(query) == list(vectors[0])}


def _offline_encoding() -> tiktoken.Encoding:
    """A byte-level tiktoken encoding made here: the real one is downloaded
    at first use from a host this machine cannot reach. The proxy refuses
    any token-id input, so which ids LangChain sends does not matter."""
    return tiktoken.Encoding(
        name="bytes-offline",
        pat_str=r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
        mergeable_ranks={bytes([i]): i for i in range(256)},
        special_tokens={},
    )


def _sent_token_ids(recorder: Recorder) -> bool:
    """Whether the last request's `input` was a list of token-id lists."""
    try:
        sent = json.loads(recorder.exchanges[-1]["request"])["input"]
    except (IndexError, KeyError, TypeError, ValueError):
        return False
    return isinstance(sent, list) and all(
        isinstance(item, list) and all(isinstance(i, int) for i in item) for item in sent
    )


def embeddings_default(recorder: Recorder) -> dict[str, Any]:
    """LangChain's default sends token-id arrays; the proxy's 400 must name
    the setting that fixes it, and the SDK must raise it (not retry)."""
    encoding = _offline_encoding()
    tiktoken.get_encoding = lambda _name: encoding  # type: ignore[assignment]
    tiktoken.encoding_for_model = lambda _name: encoding  # type: ignore[assignment]
    model = OpenAIEmbeddings(
        model=EMBEDDINGS_MODEL,
        base_url=BASE_URL,
        api_key=API_KEY,
        max_retries=0,
        http_client=recorder.http_client(),
    )
    try:
        vectors = model.embed_documents(["first text"])
    except openai.BadRequestError as error:
        body = error.body if isinstance(error.body, dict) else {}
        return {
            "raised": type(error).__name__,
            # What the user reads: the exception's text.
            "error_text": str(error),
            "status": error.status_code,
            "message": body.get("message"),
            "type": body.get("type"),
            "code": body.get("code"),
            "param": body.get("param"),
            "sent_token_ids": _sent_token_ids(recorder),
        }
    return {"raised": None, "vectors": len(vectors)}


if __name__ == "__main__":
    run_cases(
        {
            "chat": chat,
            "bind_tools": bind_tools,
            "structured_default": structured(None),
            "structured_function_calling": structured("function_calling"),
            "embeddings": embeddings,
            "embeddings_default": embeddings_default,
        }
    )
