// The official npm SDK (`gigachat`, pinned in package.json) in real headless
// Chromium, the way a frontend uses it during development: bundled for the
// browser, on a page of another local origin (http://localhost:PORT, where a
// Vite dev server would be) calling the proxy on http://127.0.0.1:PORT with
// the local server's default CORS policy. Started by tests/browser.rs, which
// runs the real proxy binary (no GIGACHAT_PROXY_ALLOWED_ORIGINS) in front of
// the emulator.
//
// Every SDK call is cross-origin with headers that need a preflight: the
// OAuth call sends `RqUID` (and `User-Agent`), API calls `Authorization` and
// `X-User-Agent`. A header the preflight does not allow fails every call,
// which the browser reports in the console.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

import { env, isChat, launchBrowser, recordedRequests } from './support.mjs';

const TEST_TIMEOUT = 60_000;
let browser;
let site;

/**
 * The SDK as a page script (`window.GigaChatSdk.GigaChat`), as a bundler
 * would make it: the `events` npm package stands in for Node's module, and
 * the `process?.env` the SDK reads its defaults from becomes an empty object.
 */
async function bundleSdk() {
  const result = await esbuild.build({
    stdin: {
      contents: "export { GigaChat } from 'gigachat';",
      resolveDir: fileURLToPath(new URL('.', import.meta.url)),
      loader: 'js',
    },
    bundle: true,
    format: 'iife',
    globalName: 'GigaChatSdk',
    platform: 'browser',
    target: 'chrome110',
    define: { process: JSON.stringify({ env: {} }) },
    write: false,
    logLevel: 'silent',
  });
  return result.outputFiles[0].text;
}

const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>npm gigachat SDK</title>
<script src="/sdk.js"></script><script src="/app.js"></script></head>
<body><p>The npm gigachat SDK on another origin.</p></body></html>`;

// Runs in the page: one chat and one stream through the SDK, with the proxy
// as both its API and its OAuth endpoint.
const APP = `
window.sdkCalls = async ({ proxy, credentials }) => {
  const result = {};
  try {
    const client = new GigaChatSdk.GigaChat({
      baseUrl: proxy + '/api/gigachat-api/v1',
      authUrl: proxy + '/api/gigachat-oauth',
      credentials,
      scope: 'GIGACHAT_API_PERS',
      dangerouslyAllowBrowser: true,
      timeout: 20,
    });
    const reply = await client.chat({ model: 'GigaChat', messages: [{ role: 'user', content: 'SDK chat' }] });
    result.chat = reply.choices[0].message.content;
    result.requestId = reply.xHeaders && reply.xHeaders.xRequestID;
    result.stream = '';
    result.chunks = 0;
    for await (const chunk of client.stream({ model: 'GigaChat', messages: [{ role: 'user', content: 'SDK stream' }] })) {
      result.chunks += 1;
      result.stream += (chunk.choices[0].delta && chunk.choices[0].delta.content) || '';
    }
  } catch (err) {
    result.error = String(err && err.message) + (err && err.code ? ' (' + err.code + ')' : '');
  }
  return result;
};
`;

function listen(server, port, host) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}

/** The page's origin, http://localhost:PORT (also on ::1 when the machine has it, as Chromium may try that first). */
async function startSite(bundle) {
  const handler = (request, response) => {
    const send = (type, body) => {
      response.writeHead(200, { 'Content-Type': type, 'Cache-Control': 'no-store' });
      response.end(body);
    };
    if (request.url === '/') send('text/html; charset=utf-8', PAGE);
    else if (request.url === '/sdk.js') send('text/javascript; charset=utf-8', bundle);
    else if (request.url === '/app.js') send('text/javascript; charset=utf-8', APP);
    else {
      response.writeHead(404);
      response.end();
    }
  };
  const servers = [await listen(http.createServer(handler), 0, '127.0.0.1')];
  const { port } = servers[0].address();
  try {
    servers.push(await listen(http.createServer(handler), port, '::1'));
  } catch {
    /* no IPv6 loopback: Chromium falls back to 127.0.0.1 */
  }
  return {
    origin: `http://localhost:${port}`,
    close: () =>
      Promise.all(
        servers.map((server) => new Promise((resolve) => {
          server.closeAllConnections?.();
          server.close(() => resolve());
        })),
      ),
  };
}

before(async () => {
  site = await startSite(await bundleSdk());
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await site?.close();
});

test('the npm gigachat SDK on another local origin chats and streams through the proxy', { timeout: TEST_TIMEOUT }, async () => {
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    page.setDefaultTimeout(30_000);
    const consoleErrors = [];
    page.on('console', (message) => {
      if (message.type() === 'error') consoleErrors.push(message.text());
    });
    page.on('pageerror', (err) => consoleErrors.push(`page error: ${err.message}`));
    const sent = [];
    page.on('request', (request) => {
      if (request.url().startsWith(env.proxy)) sent.push({ method: request.method(), url: request.url(), headers: request.headers() });
    });
    const chatsBefore = (await recordedRequests()).filter(isChat).length;

    await page.goto(`${site.origin}/`);
    // The SDK is not anyone's idea of same-origin here.
    assert.notEqual(new URL(site.origin).origin, new URL(env.proxy).origin);
    // A placeholder: the proxy is open, and never passes `Basic` credentials on.
    const result = await page.evaluate((args) => window.sdkCalls(args), {
      proxy: env.proxy,
      credentials: Buffer.from('browser-user:not-a-gigachat-key').toString('base64'),
    });

    const corsErrors = consoleErrors.filter((text) => /CORS|Access-Control/i.test(text));
    assert.deepEqual(corsErrors, [], 'Chromium reported CORS errors');
    assert.equal(result.error, undefined, `the SDK failed: ${result.error}\nconsole: ${consoleErrors.join('\n')}`);
    assert.equal(result.chat, 'Echo: SDK chat');
    assert.match(result.requestId || '', /\S/, 'X-Request-ID is exposed to the page');
    assert.equal(result.stream, 'Echo: SDK stream');
    assert.ok(result.chunks > 1, `the reply streamed in ${result.chunks} chunk(s)`);

    // The headers that need the preflight's permission were really sent.
    const oauth = sent.find((r) => r.method === 'POST' && r.url === `${env.proxy}/api/gigachat-oauth`);
    assert.ok(oauth, `the SDK called the proxy's OAuth route: ${JSON.stringify(sent.map((r) => r.url))}`);
    assert.ok(oauth.headers.rquid, 'the OAuth call carried RqUID');
    const chats = sent.filter((r) => r.method === 'POST' && r.url === `${env.proxy}/api/gigachat-api/v1/chat/completions`);
    assert.equal(chats.length, 2, 'a chat and a stream');
    for (const chat of chats) {
      assert.equal(chat.headers['x-user-agent'], 'GigaChat-js-lib');
      assert.match(chat.headers.authorization || '', /^Bearer \S+/);
    }
    const chatsAfter = (await recordedRequests()).filter(isChat).length;
    assert.equal(chatsAfter - chatsBefore, 2, 'both calls reached the emulator');
  } finally {
    await context.close();
  }
});
