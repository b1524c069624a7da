// The Vercel AI SDK (`ai`) with `@ai-sdk/openai-compatible` against the
// proxy's OpenAI-compatible route: generateText, streamText, tools (forced
// with toolChoice "required", and a full round trip), generateObject in the
// default json_object mode and with supportsStructuredOutputs, embedMany.
//
//   OPENAI_BASE_URL=http://HOST:PORT/api/gigachat-openai/v1 node ai_sdk.mjs ai7|ai5

import { z } from "zod";

import { MODEL, EMBEDDINGS_MODEL, TOOL_OUTPUT, apiKey, baseURL, runCases, streamErrors, variant, vectorFacts } from "./support.mjs";

const packages = {
    ai7: ["ai", "@ai-sdk/openai-compatible"],
    ai5: ["ai5", "ai5-openai-compatible"],
};
if (!packages[variant]) {
    console.error(`variant must be one of ${Object.keys(packages).join(", ")}`);
    process.exit(2);
}
const ai = await import(packages[variant][0]);
const { createOpenAICompatible } = await import(packages[variant][1]);
const { generateText, streamText, generateObject, embedMany, tool, stepCountIs } = ai;

function provider(fetch, options = {}) {
    return createOpenAICompatible({ name: "gigachat", baseURL, apiKey, includeUsage: true, fetch, ...options });
}

const prompt = (what) => `Hello from ${variant} ${what}`;

function weatherTool(calls) {
    return tool({
        description: "The weather in a city",
        inputSchema: z.object({ city: z.string().describe("City name") }),
        execute: async (input) => {
            calls.push(input);
            return TOOL_OUTPUT;
        },
    });
}

function usageOf(usage) {
    return usage ? { inputTokens: usage.inputTokens ?? null, outputTokens: usage.outputTokens ?? null, totalTokens: usage.totalTokens ?? null } : null;
}

// What generateObject asks for: the emulator fills strings with the user's
// text and integers with 1 when it answers a (forced) function call.
const PERSON = z.object({ name: z.string(), age: z.number().int() });
// What the json_object prompt asks the model to answer.
const JSON_MODE_OBJECT = { name: "Ada Lovelace", age: 36 };

await runCases({
    async generate_text(fetch) {
        const result = await generateText({
            model: provider(fetch).chatModel(MODEL),
            system: "Be brief.",
            prompt: prompt("generateText"),
            maxRetries: 0,
        });
        return {
            prompt: prompt("generateText"),
            text: result.text,
            finish_reason: result.finishReason,
            usage: usageOf(result.usage),
            response_model: result.response?.modelId ?? null,
        };
    },

    async stream_text(fetch) {
        const result = streamText({
            model: provider(fetch).chatModel(MODEL),
            prompt: prompt("streamText"),
            maxRetries: 0,
            onError: streamErrors.record,
        });
        const parts = [];
        for await (const part of result.textStream) parts.push(part);
        return {
            prompt: prompt("streamText"),
            text: parts.join(""),
            parts: parts.length,
            final_text: await result.text,
            finish_reason: await result.finishReason,
            usage: usageOf(await result.usage),
        };
    },

    async tools_required(fetch) {
        const calls = [];
        const result = await generateText({
            model: provider(fetch).chatModel(MODEL),
            prompt: prompt("toolChoice required: what is the weather in Moscow?"),
            tools: { get_weather: weatherTool(calls) },
            toolChoice: "required",
            stopWhen: stepCountIs(1),
            maxRetries: 0,
        });
        return {
            prompt: prompt("toolChoice required: what is the weather in Moscow?"),
            finish_reason: result.finishReason,
            tool_calls: result.toolCalls.map((c) => ({ toolName: c.toolName, toolCallId: c.toolCallId, input: c.input })),
            tool_results: result.toolResults.map((r) => ({ toolName: r.toolName, output: r.output })),
            executed: calls,
        };
    },

    // The whole loop: the model calls the tool (the prompt names it), the SDK
    // runs it and sends the result back, and the final text uses it.
    async tools_round_trip(fetch) {
        const calls = [];
        const result = streamText({
            model: provider(fetch).chatModel(MODEL),
            prompt: prompt("round trip: call get_weather for Moscow"),
            tools: { get_weather: weatherTool(calls) },
            stopWhen: stepCountIs(3),
            maxRetries: 0,
            onError: streamErrors.record,
        });
        const text = await result.text;
        const steps = await result.steps;
        return {
            prompt: prompt("round trip: call get_weather for Moscow"),
            text,
            steps: steps.map((s) => ({ finish_reason: s.finishReason, tool_calls: s.toolCalls.map((c) => c.toolName), text: s.text })),
            executed: calls,
            finish_reason: await result.finishReason,
            total_usage: usageOf(await result.totalUsage),
        };
    },

    // Default: `response_format: {"type":"json_object"}`; the schema is not
    // sent, so (as with a real model) the prompt says what to answer.
    async generate_object_json(fetch) {
        const text = `${prompt("generateObject json_object")}. Answer with this JSON object: ${JSON.stringify(JSON_MODE_OBJECT)}`;
        const result = await generateObject({ model: provider(fetch).chatModel(MODEL), schema: PERSON, prompt: text, maxRetries: 0 });
        return { prompt: text, object: result.object, finish_reason: result.finishReason };
    },

    // `response_format: {"type":"json_schema", ...}`: a forced function call upstream.
    async generate_object_structured(fetch) {
        const result = await generateObject({
            model: provider(fetch, { supportsStructuredOutputs: true }).chatModel(MODEL),
            schema: PERSON,
            prompt: prompt("generateObject json_schema"),
            maxRetries: 0,
        });
        return { prompt: prompt("generateObject json_schema"), object: result.object, finish_reason: result.finishReason };
    },

    async embed_many(fetch) {
        const p = provider(fetch);
        const model = p.embeddingModel ? p.embeddingModel(EMBEDDINGS_MODEL) : p.textEmbeddingModel(EMBEDDINGS_MODEL);
        const result = await embedMany({ model, values: ["first text", "second text", "first text"], maxRetries: 0 });
        return { usage: result.usage ?? null, ...vectorFacts(result.embeddings) };
    },
});
