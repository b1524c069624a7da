// What `useChat` does under the hood, without React: the `ai` package's
// `DefaultChatTransport.sendMessages` posts UIMessages to the proxy's
// `/api/gigachat-chat` route and `readUIMessageStream` turns the answer into
// message snapshots, exactly as the hook renders them. Run once per pinned
// `ai` major (7, 6, 5); prints one JSON line of facts that the Rust harness
// (tests/ui_chat_clients.rs) asserts on.
//
//   CHAT_URL=http://HOST:PORT/api/gigachat-chat EMULATOR_URL=http://HOST:PORT \
//   CHAT_API_KEY=KEY node chat.mjs ai7|ai6|ai5

const packages = { ai7: "ai", ai6: "ai6", ai5: "ai5" };
const variant = process.argv[2];
const { CHAT_URL, EMULATOR_URL, CHAT_API_KEY } = process.env;
if (!packages[variant] || !CHAT_URL || !EMULATOR_URL || !CHAT_API_KEY) {
    console.error("usage: CHAT_URL=… EMULATOR_URL=… CHAT_API_KEY=… node chat.mjs ai7|ai6|ai5");
    process.exit(2);
}
const { DefaultChatTransport, readUIMessageStream } = await import(packages[variant]);

const MODEL = "GigaChat";
/** A 1×1 PNG (70 bytes), what a user drops into a chat box. */
const PNG_BASE64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4z8DwHwAFAAH/iZk9HQAAAABJRU5ErkJggg==";
/** What the client-side tool "returns"; the final answer must carry it. */
const TOOL_OUTPUT = { time: "12:34", zone: "Europe/Moscow", marker: "tick-5e1b" };
const TIME_TOOL = {
    get_time: {
        description: "The current local time in a time zone",
        inputSchema: {
            type: "object",
            properties: { zone: { type: "string", description: "IANA time zone" } },
            required: ["zone"],
        },
    },
};

const clip = (text, limit = 6000) =>
    typeof text === "string" && text.length > limit ? `${text.slice(0, limit)}…[${text.length - limit} more]` : text;

/** A fetch that keeps each exchange (request body, status, headers, the whole answer) for failure reports. */
function recordingFetch(exchanges) {
    return async (input, init = {}) => {
        const entry = { method: init.method ?? "GET", url: String(input), request: clip(typeof init.body === "string" ? init.body : null, 3000) };
        exchanges.push(entry);
        const response = await fetch(input, init);
        entry.status = response.status;
        entry.headers = Object.fromEntries(response.headers);
        entry.pending = response.clone().text().then(
            (text) => { entry.response = clip(text); },
            (error) => { entry.response = `[body not read: ${error}]`; },
        );
        return response;
    };
}

function transport(fetch, { apiKey = CHAT_API_KEY, body = {} } = {}) {
    return new DefaultChatTransport({
        api: CHAT_URL,
        body: { model: MODEL, ...body },
        headers: apiKey ? { Authorization: `Bearer ${apiKey}` } : {},
        fetch,
    });
}

function describeError(error) {
    const out = { name: error?.name, message: String(error?.message ?? error) };
    for (const key of ["statusCode", "responseBody", "url"]) {
        if (error?.[key] !== undefined) out[key] = clip(String(error[key]), 2000);
    }
    return out;
}

/**
 * One `sendMessages` call read as `useChat` reads it: every chunk the
 * transport parsed (and validated), every message snapshot, the last one,
 * and the errors reported along the way. `continued` is the assistant
 * message a tool continuation extends (useChat passes the last message).
 */
async function chat(t, messages, { chatId = `chat-${variant}`, continued } = {}) {
    const chunks = [];
    const errors = [];
    const stream = await t.sendMessages({ chatId, trigger: "submit-message", messageId: undefined, abortSignal: undefined, messages });
    const recorded = stream.pipeThrough(new TransformStream({
        transform(chunk, controller) {
            chunks.push(chunk);
            controller.enqueue(chunk);
        },
    }));
    const snapshots = [];
    let thrown = null;
    try {
        for await (const message of readUIMessageStream({
            message: continued,
            stream: recorded,
            onError: (error) => errors.push(describeError(error)),
            terminateOnError: true,
        })) {
            snapshots.push(message);
        }
    } catch (error) {
        thrown = describeError(error);
    }
    const last = snapshots.at(-1) ?? null;
    const texts = snapshots.map((m) => textOf(m));
    return {
        chunk_types: chunks.map((c) => c.type),
        text_deltas: chunks.filter((c) => c.type === "text-delta").map((c) => c.delta),
        finish: chunks.find((c) => c.type === "finish") ?? null,
        // Distinct texts the UI would have shown, in order: the reply growing.
        text_updates: texts.filter((text, i) => text !== "" && text !== texts[i - 1]).length,
        message: last,
        text: last ? textOf(last) : null,
        errors,
        thrown,
    };
}

const textOf = (message) => message.parts.filter((p) => p.type === "text").map((p) => p.text).join("");
const user = (id, ...parts) => ({ id, role: "user", parts });
const text = (value) => ({ type: "text", text: value });

async function emulatorFaults(faults) {
    const response = await fetch(`${EMULATOR_URL}/_emulator/faults`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(faults),
    });
    if (!response.ok) throw new Error(`emulator faults ${JSON.stringify(faults)}: ${response.status} ${await response.text()}`);
}

/** What a refused `sendMessages` throws (the status and body `useChat` shows as `error.message`). */
async function refused(t, messages) {
    try {
        const stream = await t.sendMessages({ chatId: `refused-${variant}`, trigger: "submit-message", messageId: undefined, abortSignal: undefined, messages });
        return { threw: false, result: await readAll(stream) };
    } catch (error) {
        return { threw: true, error: describeError(error) };
    }
}

async function readAll(stream) {
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    return chunks;
}

const cases = {
    async text(fetch) {
        const prompt = `Hello from ${variant}, tell me something long enough to stream`;
        return { prompt, ...(await chat(transport(fetch), [user("u1", text(prompt))])) };
    },

    async tool_round_trip(fetch) {
        const t = transport(fetch, { body: { tools: TIME_TOOL } });
        const prompt = `What time is it? Use get_time (${variant})`;
        const history = [user("u1", text(prompt))];
        const first = await chat(t, history);
        const assistant = first.message;
        const call = assistant?.parts.find((p) => p.type === "tool-get_time" || (p.type === "dynamic-tool" && p.toolName === "get_time")) ?? null;
        if (!call) return { prompt, first, call: null };
        // What addToolOutput does to the part, then the automatic resend.
        const answered = {
            ...assistant,
            // useChat gives a streamed message an id of its own.
            id: assistant.id || `a1-${variant}`,
            parts: assistant.parts.map((p) => (p === call ? { ...p, state: "output-available", output: TOOL_OUTPUT } : p)),
        };
        const second = await chat(t, [...history, answered], { continued: answered });
        return { prompt, tool_output: TOOL_OUTPUT, first, call, second };
    },

    async file(fetch) {
        const prompt = `What is in this picture? (${variant})`;
        return {
            prompt,
            ...(await chat(transport(fetch), [
                user("u1", text(prompt), { type: "file", mediaType: "image/png", filename: "pixel.png", url: `data:image/png;base64,${PNG_BASE64}` }),
            ])),
        };
    },

    async broken_stream(fetch) {
        const prompt = `This answer will break off halfway (${variant})`;
        // Slow chunks, and the connection dropped after two of them: the
        // client has text on screen when the failure comes.
        await emulatorFaults({ reset_stream_after_chunks: 2, chunk_delay_ms: 50 });
        try {
            return { prompt, ...(await chat(transport(fetch), [user("u1", text(prompt))])) };
        } finally {
            await emulatorFaults({ reset: true });
        }
    },

    async refused_model(fetch) {
        return refused(transport(fetch, { body: { model: "GigaChat-2-Pro" } }), [user("u1", text("hi"))]);
    },

    async missing_auth(fetch) {
        return refused(transport(fetch, { apiKey: null }), [user("u1", text("hi"))]);
    },

    async resume(fetch) {
        // useChat({resume: true}) on mount: nothing to resume.
        const stream = await transport(fetch).reconnectToStream({ chatId: `chat-${variant}` });
        return { stream_is_null: stream === null };
    },
};

const results = {};
for (const [name, run] of Object.entries(cases)) {
    const exchanges = [];
    try {
        results[name] = { ok: true, ...(await run(recordingFetch(exchanges))) };
    } catch (error) {
        results[name] = { ok: false, error: describeError(error), stack: String(error?.stack ?? "") };
    }
    await Promise.race([Promise.all(exchanges.map((e) => e.pending)), new Promise((r) => setTimeout(r, 3000))]);
    results[name].exchanges = exchanges.map(({ pending, ...rest }) => rest);
}
process.stdout.write(`${JSON.stringify({ variant, cases: results })}\n`);
