// Shared by the Node client scripts: where the proxy is, a fetch that keeps
// what went over the wire (so a failing case shows the exact request and
// answer), and the runner that prints one JSON object for the Rust harness
// (tests/openai_clients.rs) to assert on.
//
// The base URL is `OPENAI_BASE_URL` or an http(s) argument, e.g.
// http://127.0.0.1:8080/api/gigachat-openai/v1; the API key is
// `OPENAI_API_KEY` or an `--api-key=KEY` argument (any string in open mode).

const args = process.argv.slice(2);
export const variant = args.find((a) => !a.startsWith("--") && !/^https?:\/\//.test(a));
export const baseURL = process.env.OPENAI_BASE_URL || args.find((a) => /^https?:\/\//.test(a));
export const apiKey =
    process.env.OPENAI_API_KEY ||
    args.find((a) => a.startsWith("--api-key="))?.slice("--api-key=".length) ||
    "sk-open-mode-ignores-this";
if (!baseURL) {
    console.error("usage: OPENAI_BASE_URL=http://HOST:PORT/api/gigachat-openai/v1 node SCRIPT VARIANT");
    process.exit(2);
}

/** The model every client asks for; the emulator serves it. */
export const MODEL = "GigaChat";
export const EMBEDDINGS_MODEL = "Embeddings";

/** What the tool returns in every round trip: the final answer must use it. */
export const TOOL_OUTPUT = { city: "Moscow", forecast: "sunny-7f3a", temperature_c: 21 };

const REQUEST_LIMIT = 4000;
const RESPONSE_LIMIT = 6000;

function clip(text, limit) {
    if (typeof text !== "string") return text;
    return text.length > limit ? `${text.slice(0, limit)}…[${text.length - limit} more]` : text;
}

function bodyText(body) {
    if (body == null) return null;
    if (typeof body === "string") return body;
    if (body instanceof Uint8Array) return new TextDecoder().decode(body);
    return `[${Object.prototype.toString.call(body)}]`;
}

/**
 * A fetch that records each exchange of the current case: method, URL,
 * request body, status and the whole response body (read from a clone, so
 * the client still streams the original).
 */
export function recordingFetch(exchanges) {
    return async (input, init = {}) => {
        const url = typeof input === "string" ? input : (input.url ?? String(input));
        const entry = { method: init.method ?? input.method ?? "GET", url, request: clip(bodyText(init.body), REQUEST_LIMIT) };
        exchanges.push(entry);
        const response = await fetch(input, init);
        entry.status = response.status;
        entry.pending = response
            .clone()
            .text()
            .then((text) => { entry.response = clip(text, RESPONSE_LIMIT); })
            .catch((error) => { entry.response = `[body not read: ${error}]`; });
        return response;
    };
}

async function settle(exchanges) {
    const timeout = new Promise((resolve) => setTimeout(resolve, 3000));
    await Promise.race([Promise.all(exchanges.map((e) => e.pending)), timeout]);
    return exchanges.map(({ pending, ...rest }) => rest);
}

/** What a thrown client error says, with the HTTP details the SDKs attach. */
export function describeError(error) {
    const out = { name: error?.name, message: String(error?.message ?? error) };
    for (const key of ["status", "statusCode", "code", "type", "param", "responseBody", "text", "finishReason"]) {
        if (error?.[key] !== undefined) out[key] = clip(typeof error[key] === "string" ? error[key] : JSON.stringify(error[key]), 2000);
    }
    if (error?.error !== undefined) out.error = error.error;
    if (error?.cause) out.cause = String(error.cause?.message ?? error.cause);
    return out;
}

/**
 * Runs each case in order (each with its own recorded exchanges) and prints
 * `{"cases": {name: {"ok": true, ...result} | {"ok": false, "error": ...}}}`
 * on one line. A case's failure does not stop the others.
 */
export async function runCases(cases) {
    const results = {};
    for (const [name, run] of Object.entries(cases)) {
        const exchanges = [];
        streamErrors.last = null;
        try {
            const result = await run(recordingFetch(exchanges));
            results[name] = { ok: true, ...result, exchanges: await settle(exchanges) };
        } catch (error) {
            const reported = streamErrors.last ? { ...describeError(streamErrors.last), thrown: describeError(error) } : describeError(error);
            results[name] = { ok: false, error: reported, exchanges: await settle(exchanges) };
        }
    }
    process.stdout.write(`${JSON.stringify({ cases: results })}\n`);
}

/**
 * The AI SDK's stream functions report errors to `onError` and then throw
 * only "No output generated"; this keeps the real error of the current
 * case, which the runner reports in place of the generic one.
 */
export const streamErrors = {
    last: null,
    record: ({ error }) => {
        streamErrors.last = error;
    },
};

export function norm(vector) {
    return Math.sqrt(vector.reduce((sum, x) => sum + x * x, 0));
}

/** Facts about a batch of vectors that the harness asserts on. */
export function vectorFacts(vectors) {
    return {
        count: vectors.length,
        dimensions: vectors.map((v) => v.length),
        norms: vectors.map(norm),
        all_numbers: vectors.every((v) => Array.from(v).every((x) => typeof x === "number" && Number.isFinite(x))),
        // Equal texts embed equally (the emulator's vectors depend only on the text).
        first_equals_third: vectors.length > 2 && vectors[0].length === vectors[2].length && Array.from(vectors[0]).every((x, i) => x === vectors[2][i]),
        first_equals_second: vectors.length > 1 && vectors[0].length === vectors[1].length && Array.from(vectors[0]).every((x, i) => x === vectors[1][i]),
        head: vectors.map((v) => Array.from(v).slice(0, 4)),
    };
}
