// The official `openai` npm SDK against the proxy's OpenAI-compatible route:
// chat, a stream with usage, a tools round trip and embeddings.
//
//   OPENAI_BASE_URL=http://HOST:PORT/api/gigachat-openai/v1 node openai_npm.mjs openai7|openai6
//
// `openai6` is the 6.x line, kept because it decodes the default base64
// embeddings unconditionally (a float array breaks it).

import { MODEL, EMBEDDINGS_MODEL, TOOL_OUTPUT, apiKey, baseURL, runCases, variant, vectorFacts } from "./support.mjs";

const packages = { openai7: "openai", openai6: "openai6" };
if (!packages[variant]) {
    console.error(`variant must be one of ${Object.keys(packages).join(", ")}`);
    process.exit(2);
}
const { default: OpenAI } = await import(packages[variant]);

function client(fetch) {
    // No retries: a failure must show up as itself, not as a slow retry.
    return new OpenAI({ baseURL, apiKey, fetch, maxRetries: 0, timeout: 30_000 });
}

const WEATHER_TOOL = {
    type: "function",
    function: {
        name: "get_weather",
        description: "The weather in a city",
        parameters: {
            type: "object",
            properties: { city: { type: "string", description: "City name" } },
            required: ["city"],
            additionalProperties: false,
        },
    },
};

const prompt = (what) => `Hello from ${variant} ${what}`;

function summariseStream(chunks) {
    const usageAt = chunks.map((c, i) => (c.usage ? i : -1)).filter((i) => i >= 0);
    return {
        text: chunks.map((c) => c.choices?.[0]?.delta?.content ?? "").join(""),
        chunk_count: chunks.length,
        usage_chunks: usageAt.length,
        usage_chunk_is_last: usageAt.length === 1 && usageAt[0] === chunks.length - 1,
        usage_chunk_choices: usageAt.length ? chunks[usageAt[0]].choices : null,
        usage: usageAt.length ? chunks[usageAt[0]].usage : null,
        finish_reasons: chunks.flatMap((c) => (c.choices ?? []).map((x) => x.finish_reason).filter((r) => r != null)),
        roles: [...new Set(chunks.flatMap((c) => (c.choices ?? []).map((x) => x.delta?.role).filter((r) => r != null)))],
        ids: [...new Set(chunks.map((c) => c.id))],
        objects: [...new Set(chunks.map((c) => c.object))],
        models: [...new Set(chunks.map((c) => c.model))],
    };
}

await runCases({
    async chat(fetch) {
        const completion = await client(fetch).chat.completions.create({
            model: MODEL,
            messages: [
                { role: "system", content: "Be brief." },
                { role: "user", content: prompt("chat") },
            ],
        });
        const choice = completion.choices[0];
        return {
            prompt: prompt("chat"),
            id: completion.id,
            object: completion.object,
            model: completion.model,
            content: choice.message.content,
            role: choice.message.role,
            finish_reason: choice.finish_reason,
            choices: completion.choices.length,
            usage: completion.usage,
        };
    },

    async stream(fetch) {
        const stream = await client(fetch).chat.completions.create({
            model: MODEL,
            messages: [{ role: "user", content: prompt("stream") }],
            stream: true,
            stream_options: { include_usage: true },
        });
        const chunks = [];
        for await (const chunk of stream) chunks.push(chunk);
        return { prompt: prompt("stream"), ...summariseStream(chunks) };
    },

    async tools(fetch) {
        const openai = client(fetch);
        const messages = [{ role: "user", content: `${prompt("tools")}: call get_weather for Moscow` }];
        const first = await openai.chat.completions.create({ model: MODEL, messages, tools: [WEATHER_TOOL] });
        const call = first.choices[0].message.tool_calls?.[0];
        if (!call) throw new Error(`no tool call in ${JSON.stringify(first)}`);
        messages.push(first.choices[0].message);
        messages.push({ role: "tool", tool_call_id: call.id, content: JSON.stringify(TOOL_OUTPUT) });
        const second = await openai.chat.completions.create({ model: MODEL, messages, tools: [WEATHER_TOOL] });
        return {
            prompt: messages[0].content,
            first_finish_reason: first.choices[0].finish_reason,
            first_content: first.choices[0].message.content,
            tool_calls: first.choices[0].message.tool_calls,
            arguments: JSON.parse(call.function.arguments),
            final_finish_reason: second.choices[0].finish_reason,
            final_content: second.choices[0].message.content,
            final_tool_calls: second.choices[0].message.tool_calls ?? null,
        };
    },

    // The same round trip streamed, through the SDK's own stream helper,
    // which assembles tool-call deltas (index, id, type) as OpenAI sends them.
    async tools_stream(fetch) {
        const openai = client(fetch);
        const messages = [{ role: "user", content: `${prompt("tools stream")}: call get_weather for Moscow` }];
        const first = await openai.chat.completions
            .stream({ model: MODEL, messages, tools: [WEATHER_TOOL], stream_options: { include_usage: true } })
            .finalChatCompletion();
        const call = first.choices[0].message.tool_calls?.[0];
        if (!call) throw new Error(`no tool call in ${JSON.stringify(first)}`);
        messages.push({ role: "assistant", content: first.choices[0].message.content ?? null, tool_calls: first.choices[0].message.tool_calls });
        messages.push({ role: "tool", tool_call_id: call.id, content: JSON.stringify(TOOL_OUTPUT) });
        const second = await openai.chat.completions
            .stream({ model: MODEL, messages, tools: [WEATHER_TOOL], stream_options: { include_usage: true } })
            .finalChatCompletion();
        return {
            prompt: messages[0].content,
            first_finish_reason: first.choices[0].finish_reason,
            tool_calls: first.choices[0].message.tool_calls,
            arguments: JSON.parse(call.function.arguments),
            final_finish_reason: second.choices[0].finish_reason,
            final_content: second.choices[0].message.content,
            final_tool_calls: second.choices[0].message.tool_calls ?? null,
            usage: second.usage ?? null,
        };
    },

    // The SDK's default: it asks for base64 and decodes it to numbers.
    async embeddings(fetch) {
        const input = ["first text", "second text", "first text"];
        const response = await client(fetch).embeddings.create({ model: EMBEDDINGS_MODEL, input });
        const vectors = response.data.map((d) => d.embedding);
        const float = await client(fetch).embeddings.create({ model: EMBEDDINGS_MODEL, input, encoding_format: "float" });
        const floats = float.data.map((d) => d.embedding);
        return {
            object: response.object,
            model: response.model,
            usage: response.usage,
            indexes: response.data.map((d) => d.index),
            embedding_types: response.data.map((d) => (Array.isArray(d.embedding) ? "array" : typeof d.embedding)),
            ...vectorFacts(vectors),
            float_embedding_types: float.data.map((d) => (Array.isArray(d.embedding) ? "array" : typeof d.embedding)),
            float_equals_default: floats.length === vectors.length && floats.every((v, i) => v.length === vectors[i].length && v.every((x, j) => Math.fround(x) === vectors[i][j])),
        };
    },
});
