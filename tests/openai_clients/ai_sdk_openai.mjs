// `@ai-sdk/openai` (with `ai` 7) against the proxy: `openai.chat(model)`
// (Chat Completions) and the default `openai(model)`, which speaks the
// Responses API (`POST /responses`): text, streams and a tools round trip.
//
//   OPENAI_BASE_URL=http://HOST:PORT/api/gigachat-openai/v1 node ai_sdk_openai.mjs

import { createOpenAI } from "@ai-sdk/openai";
import { generateText, streamText, stepCountIs, tool } from "ai";
import { z } from "zod";

import { MODEL, TOOL_OUTPUT, apiKey, baseURL, describeError, runCases, streamErrors } from "./support.mjs";

const openai = (fetch) => createOpenAI({ baseURL, apiKey, fetch });

// Which API each case speaks: `openai.chat(id)` or the default `openai(id)`.
const models = {
    chat: (fetch) => openai(fetch).chat(MODEL),
    responses: (fetch) => openai(fetch)(MODEL),
};

function usageOf(usage) {
    return usage ? { inputTokens: usage.inputTokens ?? null, outputTokens: usage.outputTokens ?? null, totalTokens: usage.totalTokens ?? null } : null;
}

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

const cases = {};
for (const [api, model] of Object.entries(models)) {
    const prompt = (what) => `Hello from @ai-sdk/openai ${api} ${what}`;

    cases[`${api}_generate_text`] = async (fetch) => {
        const result = await generateText({ model: model(fetch), system: "Be brief.", prompt: prompt("generateText"), maxRetries: 0 });
        return { prompt: prompt("generateText"), text: result.text, finish_reason: result.finishReason, usage: usageOf(result.usage) };
    };

    cases[`${api}_stream_text`] = async (fetch) => {
        const result = streamText({ model: model(fetch), prompt: prompt("streamText"), maxRetries: 0, onError: streamErrors.record });
        const parts = [];
        for await (const part of result.textStream) parts.push(part);
        return {
            prompt: prompt("streamText"),
            text: parts.join(""),
            parts: parts.length,
            finish_reason: await result.finishReason,
            usage: usageOf(await result.usage),
        };
    };

    cases[`${api}_tools_round_trip`] = async (fetch) => {
        const calls = [];
        const result = await generateText({
            model: model(fetch),
            prompt: prompt("round trip: call get_weather for Moscow"),
            tools: { get_weather: weatherTool(calls) },
            stopWhen: stepCountIs(3),
            maxRetries: 0,
        });
        return {
            prompt: prompt("round trip: call get_weather for Moscow"),
            text: result.text,
            steps: result.steps.map((s) => ({ finish_reason: s.finishReason, tool_calls: s.toolCalls.map((c) => c.toolName), text: s.text })),
            executed: calls,
            finish_reason: result.finishReason,
        };
    };
}

// A second turn. With its default `store: true` the provider sends the
// earlier answer as an `item_reference`, which a proxy that keeps no
// responses cannot resolve: that must be a clear 400 saying what to set,
// and with `store: false` (earlier turns sent in full) the turn must work.
cases.responses_multi_turn = async (fetch) => {
    const first = `Hello from @ai-sdk/openai responses first turn`;
    const second = `Hello from @ai-sdk/openai responses second turn`;
    const one = await generateText({ model: models.responses(fetch), prompt: first, maxRetries: 0 });
    const messages = [{ role: "user", content: first }, ...one.response.messages, { role: "user", content: second }];
    let defaultStore = null;
    try {
        const answer = await generateText({ model: models.responses(fetch), messages, maxRetries: 0 });
        defaultStore = { ok: true, text: answer.text };
    } catch (error) {
        defaultStore = { ok: false, ...describeError(error) };
    }
    const two = await generateText({
        model: models.responses(fetch),
        messages,
        providerOptions: { openai: { store: false } },
        maxRetries: 0,
    });
    return { first_prompt: first, first_text: one.text, prompt: second, text: two.text, default_store: defaultStore };
};

await runCases(cases);
