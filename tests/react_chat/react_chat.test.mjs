// The example React app (examples/react-chat: Vite + `useChat` from
// @ai-sdk/react) in real headless Chromium. Started by tests/react_chat.rs,
// which runs the real proxy binary in front of the emulator.
//
// The app is built with its own `vite build` and served by its own
// `vite preview`, whose proxy (vite.config.js, the one `npm run dev` uses)
// sends /api/gigachat-* to the proxy under test: what a user runs locally.
// Chromium and playwright-core come from tests/browser (shared helpers in
// tests/browser/support.mjs); Vite and the app's packages from the
// example's own node_modules (examples/react-chat/package-lock.json).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { emulatorStats, env, launchBrowser, setFaults, waitFor } from '../browser/support.mjs';

const TEST_TIMEOUT = 60_000;
const ROUTE = '/api/gigachat-chat';
const EXAMPLE_DIR = fileURLToPath(new URL('../../examples/react-chat/', import.meta.url));
/** If set, each test saves a screenshot of the page at its end here. */
const SCREENSHOT_DIR = process.env.REACT_CHAT_SCREENSHOTS || '';
/** The browser's time zone in every page, so the tool's answer is known. */
const TIME_ZONE = 'Asia/Vladivostok';

/**
 * The headers vercel.json gives the site's `/` (its Content-Security-Policy
 * among them): the page is served with them, so the built app is known to
 * run under them when deployed as the README says.
 */
function vercelPageHeaders() {
  const vercel = JSON.parse(readFileSync(new URL('../../vercel.json', import.meta.url), 'utf8'));
  const rule = vercel.headers.find((r) => r.source === '/');
  assert.ok(rule, 'vercel.json has a headers rule for /');
  return Object.fromEntries(rule.headers.map(({ key, value }) => [key, value]));
}

let browser;
let previewServer;
let appUrl;
let outDir;

before(async () => {
  const vite = await import(pathToFileURL(createRequire(join(EXAMPLE_DIR, 'package.json')).resolve('vite')).href);
  outDir = mkdtempSync(join(tmpdir(), 'react-chat-dist-'));
  // vite.config.js reads GIGACHAT_PROXY_URL (set by tests/react_chat.rs) for its proxy.
  assert.ok(process.env.GIGACHAT_PROXY_URL, 'GIGACHAT_PROXY_URL is set');
  await vite.build({ root: EXAMPLE_DIR, logLevel: 'warn', build: { outDir, emptyOutDir: true } });
  previewServer = await vite.preview({
    root: EXAMPLE_DIR,
    logLevel: 'warn',
    build: { outDir },
    preview: { host: '127.0.0.1', port: 0, strictPort: true, open: false, headers: vercelPageHeaders() },
  });
  appUrl = `http://127.0.0.1:${previewServer.httpServer.address().port}/`;
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await previewServer?.close();
  if (outDir) rmSync(outDir, { recursive: true, force: true });
});

/** The app in a fresh context; `problems` collects page errors and console errors. */
async function openApp() {
  const context = await browser.newContext({ viewport: { width: 480, height: 800 }, timezoneId: TIME_ZONE, locale: 'ru-RU' });
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  const problems = [];
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('console', (message) => {
    // A non-2xx answer logs "Failed to load resource…"; expected in the error test.
    if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) {
      problems.push(`console error: ${message.text()}`);
    }
  });
  const chatBodies = [];
  page.on('request', (request) => {
    if (request.method() === 'POST' && new URL(request.url()).pathname === ROUTE) chatBodies.push(JSON.parse(request.postData()));
  });
  const response = await page.goto(appUrl);
  assert.match(response.headers()['content-security-policy'] || '', /script-src 'self'/, 'the page is served with vercel.json\'s CSP');
  await page.getByLabel('Сообщение').waitFor();
  return { context, page, problems, chatBodies };
}

async function withApp(name, body) {
  const session = await openApp();
  try {
    await body(session);
    if (SCREENSHOT_DIR) await session.page.screenshot({ path: join(SCREENSHOT_DIR, `${name}.png`), fullPage: true });
  } finally {
    await session.context.close();
  }
}

const isChatPost = (response) => response.request().method() === 'POST' && new URL(response.url()).pathname === ROUTE;

/** Types `text` and presses Send (by its accessible name, as a person would). */
async function send(page, text) {
  await page.getByLabel('Сообщение').fill(text);
  await page.getByRole('button', { name: 'Отправить' }).click();
}

const lastReply = (page) => page.locator('article[data-role="assistant"]').last();
const replyText = async (page) => (await lastReply(page).locator('.text').allTextContents()).join('');

/** Waits until the chat is idle again (not submitted/streaming): the Send button is back. */
async function waitUntilIdle(page) {
  await page.locator('.log[aria-busy="false"]').waitFor({ state: 'attached' });
  await page.getByRole('button', { name: 'Отправить' }).waitFor();
}

/** Records, in the page, the text of the last assistant reply at every DOM change. */
async function recordReplyTexts(page) {
  await page.evaluate(() => {
    window.__replyTexts = [];
    const log = document.querySelector('.log');
    new MutationObserver(() => {
      const replies = log.querySelectorAll('article[data-role="assistant"]');
      const last = replies[replies.length - 1];
      if (!last) return;
      const text = [...last.querySelectorAll('.text')].map((p) => p.textContent).join('');
      if (window.__replyTexts.at(-1) !== text) window.__replyTexts.push(text);
    }).observe(log, { subtree: true, childList: true, characterData: true });
  });
}

test('a reply streams into the page: several DOM updates before it completes', { timeout: TEST_TIMEOUT }, async () => {
  await withApp('stream', async ({ page, problems, chatBodies }) => {
    await recordReplyTexts(page);
    const message = 'Привет! Расскажи что-нибудь, пожалуйста, по одному слову за раз';
    const answer = page.waitForResponse(isChatPost);
    await send(page, message);
    const response = await answer;
    assert.equal(response.status(), 200);
    assert.match(response.headers()['content-type'], /^text\/event-stream/);
    await waitUntilIdle(page);
    const expected = `Echo: ${message}`;
    assert.equal(await replyText(page), expected);
    const texts = await page.evaluate(() => window.__replyTexts);
    const partial = texts.filter((t) => t.length > 0 && t !== expected);
    assert.ok(partial.length >= 2, `the reply appeared in ${partial.length} partial updates (${JSON.stringify(texts)}): not streamed`);
    for (const t of partial) assert.ok(expected.startsWith(t), `a partial text that is not a prefix: ${t}`);
    // What useChat sent: the stock transport's body with the app's tool.
    assert.equal(chatBodies.length, 1);
    assert.equal(chatBodies[0].trigger, 'submit-message');
    assert.deepEqual(chatBodies[0].messages.at(-1).parts, [{ type: 'text', text: message }]);
    assert.deepEqual(Object.keys(chatBodies[0].tools), ['get_local_time']);
    assert.equal(await page.getByRole('alert').count(), 0, 'no error is shown');
    assert.deepEqual(problems, []);
  });
});

test('Stop ends the reply mid-way, keeps what arrived, and GigaChat sees the cancellation', { timeout: TEST_TIMEOUT }, async () => {
  await setFaults({ chunk_delay_ms: 400 });
  try {
    await withApp('stop', async ({ page, problems }) => {
      const message = 'Это длинный ответ, который мы остановим кнопкой задолго до того, как он закончится сам по себе';
      const before = await emulatorStats();
      await send(page, message);
      const stopButton = page.getByRole('button', { name: 'Остановить' });
      await stopButton.waitFor();
      await waitFor('the first words of the reply', async () => (await replyText(page)).length > 0);
      await stopButton.click();
      await waitUntilIdle(page);
      const stats = await waitFor(
        'the emulator to see the stream cancelled',
        async () => {
          const now = await emulatorStats();
          return now.streams_cancelled > before.streams_cancelled ? now : null;
        },
        { timeout: 10_000 },
      );
      assert.equal(stats.streams_completed, before.streams_completed, 'the stream ran to its end');
      const kept = await replyText(page);
      const full = `Echo: ${message}`;
      assert.ok(kept.length > 0 && kept.length < full.length && full.startsWith(kept), `kept after Stop: ${kept}`);
      assert.equal(await page.getByRole('alert').count(), 0, 'Stop is not an error');
      assert.deepEqual(problems, []);
    });
  } finally {
    await setFaults({ reset: true });
  }
});

test('the client-side tool: GigaChat calls get_local_time, the browser answers, the reply uses the answer', { timeout: TEST_TIMEOUT }, async () => {
  await withApp('tool', async ({ page, problems, chatBodies }) => {
    // The emulator calls a function whose name the user's message contains.
    await send(page, 'Который час? Узнай через get_local_time');
    await waitFor('the final reply after the tool', async () => (await replyText(page)).includes('get_local_time returned'), { timeout: 20_000 });
    await waitUntilIdle(page);
    const tool = lastReply(page).locator('.tool');
    assert.equal(await tool.getAttribute('data-state'), 'output-available');
    // The answer GigaChat got came from this browser (its time zone).
    const text = await replyText(page);
    const returned = JSON.parse(text.slice(text.indexOf('get_local_time returned') + 'get_local_time returned'.length).trim());
    assert.equal(returned.timeZone, TIME_ZONE, text);
    assert.ok(!Number.isNaN(Date.parse(returned.iso)), text);
    // Two requests: the question, then the automatic one with the tool's output.
    assert.equal(chatBodies.length, 2, JSON.stringify(chatBodies));
    const toolPart = chatBodies[1].messages.at(-1).parts.find((p) => p.type === 'tool-get_local_time');
    assert.equal(toolPart?.state, 'output-available', JSON.stringify(chatBodies[1].messages.at(-1)));
    assert.equal(toolPart.output.timeZone, TIME_ZONE);
    assert.equal(await page.getByRole('alert').count(), 0, 'no error is shown');
    assert.deepEqual(problems, []);
  });
});

test('an error before the stream is shown as the proxy\'s sentence, not as JSON', { timeout: TEST_TIMEOUT }, async () => {
  await withApp('error-before-stream', async ({ page, problems, chatBodies }) => {
    await setFaults({ fail_next_api_with_status: { status: 503 } });
    try {
      const answer = page.waitForResponse(isChatPost);
      await send(page, 'Это сообщение не дойдёт');
      const response = await answer;
      assert.equal(response.status(), 503);
      const body = await response.json();
      const alert = page.getByRole('alert');
      await alert.waitFor();
      const message = await alert.locator('.error-message').textContent();
      assert.ok(typeof body.message === 'string' && body.message.length > 10, JSON.stringify(body));
      assert.equal(message, body.message);
      assert.ok(!message.trimStart().startsWith('{'), `shown as JSON: ${message}`);
      assert.equal(await alert.locator('.error-id').textContent(), `request id: ${response.headers()['x-request-id']}`);
    } finally {
      await setFaults({ reset: true });
    }
    // Retry sends the same message again, and the error goes away.
    await page.getByRole('alert').getByRole('button', { name: 'Повторить' }).click();
    await waitFor('the reply to the retried message', async () => (await replyText(page)) === 'Echo: Это сообщение не дойдёт');
    await waitUntilIdle(page);
    assert.equal(chatBodies.at(-1).trigger, 'regenerate-message');
    assert.deepEqual(chatBodies.at(-1).messages.map((m) => m.role), ['user'], 'the failed attempt left nothing in the history');
    assert.equal(await page.getByRole('alert').count(), 0, 'the error is cleared by the retry');
    assert.deepEqual(problems, []);
  });
});

test('a stream that breaks mid-way shows its error text next to the partial reply', { timeout: TEST_TIMEOUT }, async () => {
  await withApp('error-mid-stream', async ({ page, problems }) => {
    await setFaults({ reset_stream_after_chunks: 3 });
    try {
      const message = 'Этот ответ оборвётся на середине, после третьего куска';
      await send(page, message);
      const alert = page.getByRole('alert');
      await alert.waitFor();
      const shown = await alert.locator('.error-message').textContent();
      assert.ok(shown.length > 10 && !shown.trimStart().startsWith('{'), `shown: ${shown}`);
      const partial = await replyText(page);
      const full = `Echo: ${message}`;
      assert.ok(partial.length > 0 && partial.length < full.length && full.startsWith(partial), `partial: ${partial}`);
    } finally {
      await setFaults({ reset: true });
    }
    assert.deepEqual(problems, []);
  });
});
