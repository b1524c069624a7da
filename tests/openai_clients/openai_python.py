"""The official `openai` Python SDK against the proxy's OpenAI-compatible
route: chat, a stream with usage, a tools round trip and embeddings.

    OPENAI_BASE_URL=http://HOST:PORT/api/gigachat-openai/v1 python openai_python.py
"""

from __future__ import annotations

import json
import struct
from typing import Any

from openai import OpenAI

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

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


def prompt(what: str) -> str:
    return f"Hello from openai-python {what}"


def client(recorder: Recorder) -> OpenAI:
    # No retries: a failure must show up as itself, not as a slow retry.
    return OpenAI(
        base_url=BASE_URL,
        api_key=API_KEY,
        max_retries=0,
        http_client=recorder.http_client(),
    )


def chat(recorder: Recorder) -> dict[str, Any]:
    completion = client(recorder).chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": prompt("chat")},
        ],
    )
    choice = completion.choices[0]
    return {
        "prompt": prompt("chat"),
        "id": completion.id,
        "object": completion.object,
        "model": completion.model,
        "content": choice.message.content,
        "role": choice.message.role,
        "finish_reason": choice.finish_reason,
        "choices": len(completion.choices),
        "usage": completion.usage.model_dump() if completion.usage else None,
    }


def stream(recorder: Recorder) -> dict[str, Any]:
    chunks = list(
        client(recorder).chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": prompt("stream")}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage_at = [i for i, c in enumerate(chunks) if c.usage is not None]
    return {
        "prompt": prompt("stream"),
        "text": "".join(
            (c.choices[0].delta.content or "") for c in chunks if c.choices
        ),
        "chunk_count": len(chunks),
        "usage_chunks": len(usage_at),
        "usage_chunk_is_last": usage_at == [len(chunks) - 1],
        "usage_chunk_choices": [ch.model_dump() for ch in chunks[usage_at[0]].choices]
        if usage_at
        else None,
        "usage": chunks[usage_at[0]].usage.model_dump() if usage_at else None,
        "finish_reasons": [
            ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason
        ],
        "roles": sorted({ch.delta.role for c in chunks for ch in c.choices if ch.delta.role}),
        "ids": sorted({c.id for c in chunks}),
        "objects": sorted({c.object for c in chunks}),
        "models": sorted({c.model for c in chunks}),
    }


def tools(recorder: Recorder) -> dict[str, Any]:
    openai = client(recorder)
    messages: list[Any] = [
        {"role": "user", "content": f"{prompt('tools')}: call get_weather for Moscow"}
    ]
    first = openai.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER_TOOL]
    )
    message = first.choices[0].message
    if not message.tool_calls:
        raise AssertionError(f"no tool call in {first.model_dump_json()}")
    call = message.tool_calls[0]
    messages.append(message.model_dump(exclude_none=True))
    messages.append(
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps(TOOL_OUTPUT)}
    )
    second = openai.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER_TOOL]
    )
    return {
        "prompt": messages[0]["content"],
        "first_finish_reason": first.choices[0].finish_reason,
        "first_content": message.content,
        "tool_calls": [c.model_dump() for c in message.tool_calls],
        "arguments": json.loads(call.function.arguments),
        "final_finish_reason": second.choices[0].finish_reason,
        "final_content": second.choices[0].message.content,
        "final_tool_calls": second.choices[0].message.tool_calls,
    }


def tools_stream(recorder: Recorder) -> dict[str, Any]:
    """The same round trip streamed, through the SDK's stream helper, which
    assembles tool-call deltas (index, id, type) as OpenAI sends them."""
    openai = client(recorder)
    messages: list[Any] = [
        {"role": "user", "content": f"{prompt('tools stream')}: call get_weather for Moscow"}
    ]
    options = {"stream_options": {"include_usage": True}}
    with openai.chat.completions.stream(
        model=MODEL, messages=messages, tools=[WEATHER_TOOL], **options
    ) as stream:
        first = stream.get_final_completion()
    message = first.choices[0].message
    if not message.tool_calls:
        raise AssertionError(f"no tool call in {first.model_dump_json()}")
    call = message.tool_calls[0]
    messages.append(
        {
            "role": "assistant",
            "content": message.content,
            "tool_calls": [c.model_dump(exclude_none=True) for c in message.tool_calls],
        }
    )
    messages.append(
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps(TOOL_OUTPUT)}
    )
    with openai.chat.completions.stream(
        model=MODEL, messages=messages, tools=[WEATHER_TOOL], **options
    ) as stream:
        second = stream.get_final_completion()
    return {
        "prompt": messages[0]["content"],
        "first_finish_reason": first.choices[0].finish_reason,
        "tool_calls": [c.model_dump(exclude_none=True) for c in message.tool_calls],
        "arguments": json.loads(call.function.arguments),
        "final_finish_reason": second.choices[0].finish_reason,
        "final_content": second.choices[0].message.content,
        "final_tool_calls": second.choices[0].message.tool_calls,
        "usage": second.usage.model_dump() if second.usage else None,
    }


def embeddings(recorder: Recorder) -> dict[str, Any]:
    """The SDK's default asks for base64 and decodes it; `float` is compared."""
    texts = ["first text", "second text", "first text"]
    openai = client(recorder)
    response = openai.embeddings.create(model=EMBEDDINGS_MODEL, input=texts)
    vectors = [list(d.embedding) for d in response.data]
    floats = openai.embeddings.create(
        model=EMBEDDINGS_MODEL, input=texts, encoding_format="float"
    )
    float_vectors = [list(d.embedding) for d in floats.data]

    def as_f32(x: float) -> float:
        return struct.unpack("<f", struct.pack("<f", x))[0]

    return {
        "object": response.object,
        "model": response.model,
        "usage": response.usage.model_dump(),
        "indexes": [d.index for d in response.data],
        **vector_facts(vectors),
        "float_equals_default": len(float_vectors) == len(vectors)
        and all(
            len(a) == len(b) and all(as_f32(x) == y for x, y in zip(a, b))
            for a, b in zip(float_vectors, vectors)
        ),
    }


if __name__ == "__main__":
    run_cases(
        {
            "chat": chat,
            "stream": stream,
            "tools": tools,
            "tools_stream": tools_stream,
            "embeddings": embeddings,
        }
    )
