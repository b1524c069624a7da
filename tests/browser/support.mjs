// Shared by the browser tests: the environment the Rust driver
// (tests/browser.rs) provides, Chromium, the emulator's control surface, the
// two extra origins, and a recorder of everything the browser receives.

import http from 'node:http';
import { existsSync } from 'node:fs';
import { setTimeout as delay } from 'node:timers/promises';
import { chromium } from 'playwright-core';

function required(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: run these tests with \`cargo test --test browser\`, which starts the proxy and the emulator`);
  }
  return value.replace(/\/+$/, '');
}

// Read when used (each test file is run with the variables it needs).
export const env = {
  /** The real proxy binary, e.g. http://127.0.0.1:41234 */
  get proxy() { return required('GIGACHAT_PROXY_URL'); },
  /** The emulator's root (its control surface is under /_emulator/). */
  get emulator() { return required('GIGACHAT_EMULATOR_URL'); },
  /** The GigaChat authorization key the proxy holds (a throwaway one). */
  get credentials() { return required('GIGACHAT_TEST_CREDENTIALS'); },
  /** In GIGACHAT_PROXY_ALLOWED_ORIGINS: http://localhost:PORT_A */
  get allowedOrigin() { return required('BROWSER_ALLOWED_ORIGIN'); },
  /** Not in it: http://127.0.0.1:PORT_B */
  get disallowedOrigin() { return required('BROWSER_DISALLOWED_ORIGIN'); },
  chromium: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
  /** If set, a screenshot of the demo page mid-stream is written here. */
  screenshot: process.env.DEMO_SCREENSHOT || '',
};

// Debian's Chromium, as root, on a machine whose only network is loopback.
// Playwright adds --headless, --no-sandbox (chromiumSandbox: false) and a
// fresh temporary --user-data-dir itself.
const CHROMIUM_ARGS = [
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export async function launchBrowser() {
  if (!existsSync(env.chromium)) {
    throw new Error(`no Chromium at ${env.chromium}: run \`bash .ci/setup\` (it installs Debian's chromium)`);
  }
  return chromium.launch({
    executablePath: env.chromium,
    headless: true,
    chromiumSandbox: false,
    args: CHROMIUM_ARGS,
    timeout: 30_000,
  });
}

// ---- the emulator's control surface ------------------------------------------

async function control(path, init = {}) {
  const response = await fetch(`${env.emulator}${path}`, { ...init, signal: AbortSignal.timeout(5_000) });
  if (!response.ok) throw new Error(`${init.method || 'GET'} ${path}: HTTP ${response.status} ${await response.text()}`);
  return response.status === 204 ? null : response.json();
}

export const emulatorStats = () => control('/_emulator/stats');
/** `[{method, path, headers: [[name, value]], body_len}]`, oldest first. */
export const recordedRequests = () => control('/_emulator/requests');
export const setFaults = (faults) =>
  control('/_emulator/faults', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(faults),
  });

export function header(recorded, name) {
  const pair = recorded.headers.find(([key]) => key.toLowerCase() === name.toLowerCase());
  return pair ? pair[1] : undefined;
}

export const isChat = (recorded) => recorded.method === 'POST' && recorded.path.endsWith('/chat/completions');

/** Polls `probe` until it returns a truthy value; fails after `timeout` ms. */
export async function waitFor(what, probe, { timeout = 10_000, interval = 50 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    last = await probe();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await delay(interval);
  }
}

// ---- the two extra origins ------------------------------------------------------

const ORIGIN_PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>another origin</title>
<script src="/client.js"></script></head>
<body><p>A page on another origin that calls the proxy.</p></body></html>`;

// Runs in the page: a cross-origin streaming call, as a frontend would make.
// `simple: true` sends a CORS "simple request" (text/plain, no custom header),
// which the browser sends without a preflight.
const ORIGIN_CLIENT = `
window.crossOriginChat = async ({ proxy, message, requestId, simple }) => {
  const result = { reads: [], events: [], text: '', done: false };
  const body = JSON.stringify({ model: 'GigaChat', stream: true, messages: [{ role: 'user', content: message }] });
  const init = simple
    ? { method: 'POST', headers: { 'Content-Type': 'text/plain' }, body }
    : { method: 'POST', headers: { 'Content-Type': 'application/json', 'X-Request-ID': requestId }, body };
  try {
    const response = await fetch(proxy + '/api/gigachat-api/chat/completions', init);
    result.status = response.status;
    result.requestId = response.headers.get('X-Request-ID');
    result.contentType = response.headers.get('Content-Type');
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      result.reads.push(performance.now());
      buffer += value;
      let end;
      while ((end = buffer.indexOf('\\n\\n')) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        for (const line of event.split('\\n')) {
          if (!line.startsWith('data:')) continue;
          const data = line.slice(5).trimStart();
          result.events.push(data);
          if (data === '[DONE]') { result.done = true; continue; }
          const chunk = JSON.parse(data);
          if (chunk.error) throw new Error('stream error: ' + chunk.error.message);
          result.text += chunk.choices[0].delta.content || '';
        }
      }
    }
  } catch (err) {
    result.error = { name: err.name, message: err.message };
  }
  return result;
};
`;

function originHandler(request, response) {
  const send = (status, type, body) => {
    response.writeHead(status, { 'Content-Type': type, 'Cache-Control': 'no-store' });
    response.end(body);
  };
  if (request.url === '/') send(200, 'text/html; charset=utf-8', ORIGIN_PAGE);
  else if (request.url === '/client.js') send(200, 'text/javascript; charset=utf-8', ORIGIN_CLIENT);
  else send(404, 'text/plain', 'not found');
}

function listen(port, host) {
  return new Promise((resolve, reject) => {
    const server = http.createServer(originHandler);
    server.once('error', reject);
    server.listen(port, host, () => resolve(server));
  });
}

/**
 * Serves the tiny page on the ports of both origins (loopback only; for
 * `localhost` also on ::1 when the machine has it, since Chromium may try
 * that first). Returns `close()`.
 */
export async function startOriginServers() {
  const servers = [];
  for (const origin of [env.allowedOrigin, env.disallowedOrigin]) {
    const { port, hostname } = new URL(origin);
    servers.push(await listen(Number(port), '127.0.0.1'));
    if (hostname === 'localhost') {
      try {
        servers.push(await listen(Number(port), '::1'));
      } catch {
        /* no IPv6 loopback: Chromium falls back to 127.0.0.1 */
      }
    }
  }
  return {
    close: () =>
      Promise.all(
        servers.map(
          (server) =>
            new Promise((resolve) => {
              server.closeAllConnections?.();
              server.close(() => resolve());
            }),
        ),
      ),
  };
}

// ---- what the browser received ------------------------------------------------

/**
 * Records every request the browser sends and every response (status,
 * headers, body) it receives in the contexts it is attached to, console
 * output, and page dumps (DOM, localStorage, sessionStorage, cookies).
 */
export class Recorder {
  constructor() {
    this.items = [];
    this.pending = new Set();
  }

  attach(context) {
    context.on('request', (request) => {
      this.items.push({
        what: `request ${request.method()} ${request.url()}`,
        text: `${request.url()}\n${JSON.stringify(request.headers())}\n${request.postData() || ''}`,
      });
    });
    context.on('response', (response) => {
      const capture = this.#capture(response);
      const entry = { capture, url: `${response.status()} ${response.request().method()} ${response.url()} (${response.request().headers().authorization ? 'with' : 'no'} auth)` };
      this.pending.add(entry);
      capture.finally(() => this.pending.delete(entry));
    });
    context.on('console', (message) => {
      this.items.push({ what: `console ${message.type()}`, text: message.text() });
    });
  }

  async #capture(response) {
    const what = `response ${response.status()} ${response.request().method()} ${response.url()}`;
    let headers = {};
    let body = '';
    let bodyError = '';
    try {
      headers = await response.allHeaders();
    } catch (err) {
      bodyError = `headers unavailable: ${err.message}`;
    }
    try {
      body = (await response.body()).toString('utf8');
    } catch (err) {
      // A stream the page aborted (Stop), or a response blocked by CORS:
      // Chromium may keep no body for it.
      bodyError = `body unavailable: ${err.message}`;
    }
    this.items.push({ what, text: `${JSON.stringify(headers)}\n${body}`, response: true, status: response.status(), url: response.url(), headers, body, bodyError });
  }

  /** Waits (bounded) until every response body seen so far is captured. */
  async settle(timeout = 15_000) {
    const deadline = Date.now() + timeout;
    while (this.pending.size) {
      if (Date.now() > deadline) {
        const urls = [...this.pending].map((entry) => entry.url).join(', ');
        throw new Error(`response bodies still pending after ${timeout} ms: ${urls}`);
      }
      await Promise.race([Promise.allSettled([...this.pending].map((entry) => entry.capture)), delay(100)]);
    }
  }

  async snapshot(page, label) {
    const dump = await page.evaluate(() => ({
      html: document.documentElement.outerHTML,
      localStorage: JSON.stringify(Object.entries(localStorage)),
      sessionStorage: JSON.stringify(Object.entries(sessionStorage)),
      cookie: document.cookie,
    }));
    for (const [part, text] of Object.entries(dump)) this.items.push({ what: `${label}: ${part}`, text });
    const cookies = await page.context().cookies();
    this.items.push({ what: `${label}: context cookies`, text: JSON.stringify(cookies) });
  }

  responses() {
    return this.items.filter((item) => item.response);
  }
}
