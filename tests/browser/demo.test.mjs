// The demo page and CORS in real headless Chromium. Started by
// tests/browser.rs, which runs the real proxy binary in front of the
// emulator (150 ms between SSE events) with
// GIGACHAT_PROXY_ALLOWED_ORIGINS=<allowed origin> and a 1 s session TTL.
//
// The tests run in order and share one browser and one recorder: the last
// one checks that nothing the browser received in the others contains the
// GigaChat key or an upstream access token.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';

import {
  Recorder,
  emulatorStats,
  env,
  header,
  isChat,
  launchBrowser,
  recordedRequests,
  setFaults,
  startOriginServers,
  waitFor,
} from './support.mjs';

const TEST_TIMEOUT = 60_000;
const recorder = new Recorder();
let browser;
let origins;

before(async () => {
  browser = await launchBrowser();
  origins = await startOriginServers();
});

after(async () => {
  await browser?.close();
  await origins?.close();
});

/** A fresh context (no shared cache or storage) with the recorder attached. */
async function open(url) {
  const context = await browser.newContext({ viewport: { width: 420, height: 780 } });
  recorder.attach(context);
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  const problems = [];
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('console', (message) => {
    // A failed fetch logs "Failed to load resource…"; those are expected in
    // the error tests. Anything else (a CSP violation, an exception) is not.
    if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) {
      problems.push(`console error: ${message.text()}`);
    }
  });
  const response = await page.goto(url);
  return { context, page, response, problems };
}

/**
 * Records what the page holds (DOM, storage) once every response body is
 * captured, and closes the context, always. Errors of its own are thrown
 * only if the test itself passed (so they never hide the real failure).
 */
async function close({ context, page }, label, testFailed = false) {
  try {
    await recorder.settle();
    await recorder.snapshot(page, label);
  } catch (err) {
    if (!testFailed) throw err;
  } finally {
    await context.close();
  }
}

/** Runs `body(session)` on a fresh page at `url` (the demo page if null), then closes it. */
async function withPage(label, url, body) {
  const session = url ? await open(url) : await openDemo();
  let failed = true;
  try {
    await body(session);
    failed = false;
  } finally {
    await close(session, label, failed);
  }
}

/** Opens the demo page and waits until its model list and health line are filled. */
async function openDemo() {
  const session = await open(`${env.proxy}/`);
  const { page } = session;
  await page.waitForSelector('#model[data-loaded="true"]', { state: 'attached' });
  await page.waitForSelector('#health:not([data-state="pending"])', { state: 'attached' });
  return session;
}

const lastAssistant = (page) => page.locator('.msg.assistant').last();

/** Types into the composer and sends with Enter (or the button). */
async function sendMessage(page, text, { button = false } = {}) {
  await page.fill('#input', text);
  if (button) await page.click('#send');
  else await page.press('#input', 'Enter');
}

/** Records the assistant bubble's text at every DOM change, in the page. */
async function sampleAssistantText(page) {
  await page.evaluate(() => {
    window.__samples = [];
    const messages = document.getElementById('messages');
    new MutationObserver(() => {
      const bubbles = messages.querySelectorAll('.msg.assistant');
      const last = bubbles[bubbles.length - 1];
      if (!last) return;
      window.__samples.push({
        text: last.querySelector('.text').textContent,
        state: last.dataset.state,
        at: performance.now(),
      });
    }).observe(messages, { subtree: true, childList: true, characterData: true, attributes: true });
  });
}

/** The JSON bodies the page POSTs to chat/completions, in order. */
function chatBodies(page) {
  const bodies = [];
  page.on('request', (request) => {
    if (request.method() === 'POST' && request.url().endsWith('/api/gigachat-api/chat/completions')) {
      bodies.push({ body: request.postDataJSON(), headers: request.headers() });
    }
  });
  return bodies;
}

// ---- (a) same origin: the demo page -----------------------------------------------

test('(a) the demo page streams a reply token by token and keeps the conversation', { timeout: TEST_TIMEOUT }, async () => {
  await withPage('(a) demo page', null, async (session) => {
    const { page, response, problems } = session;

    const headers = response.headers();
    assert.equal(response.status(), 200);
    assert.match(headers['content-type'], /^text\/html/);
    assert.match(headers['content-security-policy'], /default-src 'self'/);
    assert.match(headers['content-security-policy'], /connect-src 'self'/);
    assert.equal(headers['x-content-type-options'], 'nosniff');
    assert.equal(headers['cache-control'], 'no-cache');

    // The model picker comes from GET /models (the emulator's list), not the fallback.
    const models = await page.locator('#model option').allTextContents();
    assert.ok(models.includes('GigaChat') && models.includes('GigaChat-2-Max'), `models: ${models}`);
    assert.ok(!models.includes('Embeddings'), 'embedding models are not chat models');
    // The health line names the upstream.
    assert.equal(await page.getAttribute('#health', 'data-state'), 'ok');
    assert.ok(['gigachat', 'emulator', 'custom'].includes(await page.getAttribute('#health', 'data-upstream')));
    assert.match(await page.textContent('#health'), /Прокси работает/);

    const bodies = chatBodies(page);
    await sampleAssistantText(page);
    const first = 'Привет! Расскажи, как идёт потоковая передача ответа по словам';
    const expected = `Echo: ${first}`;
    await sendMessage(page, first);

    if (env.screenshot) {
      await waitFor('a partly streamed reply', async () => {
        const text = await lastAssistant(page).locator('.text').textContent();
        return text.length > 12 && text.length < expected.length / 2;
      });
      await page.screenshot({ path: env.screenshot, fullPage: false });
    }

    await page.waitForSelector('.msg.assistant[data-state="done"]', { timeout: 30_000 });
    const final = await lastAssistant(page).locator('.text').textContent();
    assert.equal(final, expected);

    // It grew over time: seen non-empty and shorter than the final text while
    // streaming, through several distinct lengths, never shrinking.
    const samples = await page.evaluate(() => window.__samples);
    const partial = samples.filter((s) => s.state === 'streaming' && s.text.length > 0 && s.text.length < final.length);
    assert.ok(partial.length >= 2, `no partial text seen while streaming: ${JSON.stringify(samples)}`);
    const lengths = [...new Set(samples.map((s) => s.text.length))];
    assert.ok(lengths.length >= 4, `the text did not grow in steps: lengths ${lengths}`);
    for (let i = 1; i < samples.length; i++) {
      assert.ok(samples[i].text.length >= samples[i - 1].text.length, 'the streamed text shrank');
      assert.ok(final.startsWith(samples[i].text), `a sample is not a prefix of the final text: ${samples[i].text}`);
    }
    const firstPartial = partial[0].at;
    const done = samples.find((s) => s.state === 'done').at;
    assert.ok(done - firstPartial >= 300, `the reply arrived at once (${done - firstPartial} ms), not streamed`);

    // A second message (with the button) sends the whole conversation back.
    const second = 'А второе сообщение?';
    await sendMessage(page, second, { button: true });
    await page.waitForFunction(() => document.querySelectorAll('.msg.assistant[data-state="done"]').length === 2);
    await waitFor('two chat requests', () => bodies.length === 2);
    assert.equal(await lastAssistant(page).locator('.text').textContent(), `Echo: ${second}`);
    const [one, two] = bodies;
    assert.equal(one.body.stream, true);
    assert.equal(one.body.model, 'GigaChat');
    assert.deepEqual(one.body.messages, [{ role: 'user', content: first }]);
    assert.deepEqual(two.body.messages, [
      { role: 'user', content: first },
      { role: 'assistant', content: expected },
      { role: 'user', content: second },
    ]);
    assert.equal(one.headers.authorization, undefined, 'no token was set, so no Authorization header');

    assert.deepEqual(problems, []);
  });
});

test('(a) Stop aborts the stream, and the upstream stream is cancelled too', { timeout: TEST_TIMEOUT }, async () => {
  await withPage('(a) stop', null, async (session) => {
    const { page, problems } = session;
    const before = await emulatorStats();
    const words = Array.from({ length: 40 }, (_, i) => `слово${i}`).join(' ');
    await sendMessage(page, words);
    await waitFor('the first tokens', async () => (await lastAssistant(page).locator('.text').textContent()).length > 0);
    await page.click('#stop');
    await page.waitForSelector('.msg.assistant[data-state="stopped"]');
    const text = await lastAssistant(page).locator('.text').textContent();
    assert.ok(text.length > 0 && text.length < `Echo: ${words}`.length, `stopped text: ${text}`);
    assert.ok(await page.isVisible('#send'), 'the Send button is back');
    await waitFor('the emulator to see the stream cancelled', async () => {
      const stats = await emulatorStats();
      return stats.streams_cancelled > before.streams_cancelled;
    });
    assert.deepEqual(problems, []);
  });
});

test('(a) a 503 from GigaChat is shown with its message, a hint and the request id', { timeout: TEST_TIMEOUT }, async () => {
  // withPage loads the page (and its GET /models) before the fault is armed.
  await withPage('(a) 503', null, async (session) => {
    const { page, problems } = session;
    const bodies = chatBodies(page);
    // The driver sets GIGACHAT_MAX_RETRIES=0, so one 503 reaches the page;
    // the count covers the default 2 retries too, and the finally disarms it.
    await setFaults({ fail_next_api_with_status: { status: 503, count: 3 } });
    try {
      const chat = page.waitForResponse((r) => r.url().endsWith('/chat/completions'));
      await sendMessage(page, 'Это сообщение не дойдёт');
      const response = await chat;
      assert.equal(response.status(), 503);
      const requestId = response.headers()['x-request-id'];
      assert.ok(requestId, 'the proxy sends X-Request-ID');

      const bubble = page.locator('.msg.assistant[data-state="error"]');
      await bubble.waitFor();
      const alert = bubble.locator('[role="alert"]');
      assert.equal(await alert.locator('[data-field="title"]').textContent(), 'GigaChat недоступен или перегружен');
      assert.equal(await alert.locator('[data-field="status"]').textContent(), 'HTTP 503');
      assert.equal(await alert.locator('[data-field="message"]').textContent(), 'Service Unavailable');
      assert.ok((await alert.locator('[data-field="hint"]').textContent()).length > 10, 'a hint is shown');
      assert.equal(await alert.locator('[data-field="request-id"]').textContent(), requestId);
      // The failed message is not part of the conversation; it is back in the input.
      assert.equal(await page.inputValue('#input'), 'Это сообщение не дойдёт');
    } finally {
      await setFaults({ reset: true });
    }
    // The next message goes through, without the failed one in its history.
    await sendMessage(page, 'Повтор');
    await page.waitForSelector('.msg.assistant[data-state="done"]');
    assert.deepEqual(bodies.at(-1).body.messages, [{ role: 'user', content: 'Повтор' }]);
    assert.deepEqual(problems, []);
  });
});

test('(a) a stream that breaks mid-way ends in the proxy\'s error event, shown with the partial reply', { timeout: TEST_TIMEOUT }, async () => {
  await withPage('(a) mid-stream error', null, async (session) => {
    const { page, problems } = session;
    await setFaults({ reset_stream_after_chunks: 3 });
    try {
      const message = 'Этот ответ оборвётся на середине, после третьего куска';
      const chat = page.waitForResponse((r) => r.url().endsWith('/chat/completions'));
      await sendMessage(page, message);
      const response = await chat;
      assert.equal(response.status(), 200, 'the stream had started');
      const bubble = page.locator('.msg.assistant[data-state="error"]');
      await bubble.waitFor();
      const partial = await bubble.locator('.text').textContent();
      assert.ok(partial.length > 0 && `Echo: ${message}`.startsWith(partial) && partial.length < `Echo: ${message}`.length, `partial: ${partial}`);
      const alert = bubble.locator('[role="alert"]');
      assert.equal(await alert.locator('[data-field="title"]').textContent(), 'Ответ оборвался');
      assert.ok((await alert.locator('[data-field="message"]').textContent()).length > 0);
      assert.ok((await alert.locator('[data-field="code"]').textContent()).length > 0, 'the error event\'s code is shown');
      assert.equal(await alert.locator('[data-field="request-id"]').textContent(), response.headers()['x-request-id']);
    } finally {
      await setFaults({ reset: true });
    }
    assert.deepEqual(problems, []);
  });
});

test('(a) the SSE reader follows the spec: comments, CRLF, fields without a space, multi-line data', { timeout: TEST_TIMEOUT }, async () => {
  await withPage('(a) sse parsing', null, async (session) => {
    const { page, problems } = session;
    const chunk = (content) => JSON.stringify({ choices: [{ index: 0, delta: { content } }] });
    // Served by the browser itself (page.route), so every odd-but-valid
    // framing reaches the page's parser exactly as written.
    const body = [
      ': a comment, as keep-alives are sent\n',
      'retry: 1000\n',
      `data: ${chunk('Раз, ')}\n\n`,
      `event: message\r\nid: 2\r\ndata:${chunk('два, ')}\r\n\r\n`,
      `data: {"choices": [{"index": 0,\ndata: "delta": {"content": "три"}}]}\n\n`,
      `data: ${chunk('!')}\r\r`,
      ':\n\n',
      'data: [DONE]\n\n',
      `data: ${chunk(' (after DONE: ignored)')}\n\n`,
    ].join('');
    await page.route('**/api/gigachat-api/chat/completions', (route) =>
      route.fulfill({ status: 200, headers: { 'Content-Type': 'text/event-stream; charset=utf-8' }, body }),
    );
    await sendMessage(page, 'Считай');
    await page.waitForSelector('.msg.assistant[data-state="done"]');
    assert.equal(await lastAssistant(page).locator('.text').textContent(), 'Раз, два, три!');
    assert.deepEqual(problems, []);
  });
});

test('(a) the token field: sent as Bearer, kept in sessionStorage; an expired session token shows 401 and the hint', { timeout: TEST_TIMEOUT }, async () => {
  // A proxy session token (GigaChat's OAuth shape) that lives 1 s (the
  // driver sets GIGACHAT_PROXY_SESSION_TTL=1; the proxy allows 1 s leeway).
  const minted = await fetch(`${env.proxy}/api/gigachat-oauth`, { method: 'POST' });
  assert.equal(minted.status, 200, await minted.clone().text());
  const { access_token: token, expires_at: expiresAt } = await minted.json();
  assert.ok(token && expiresAt);

  await withPage('(a) token', null, async (session) => {
    const { page, problems } = session;
    const bodies = chatBodies(page);
    await page.click('#settings summary');
    await page.fill('#token', token);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('gigachat-demo.token')), token);
    assert.equal(await page.evaluate(() => localStorage.length), 0, 'nothing goes to localStorage');

    // Not an assertion: the token has to expire first (exp + leeway).
    const wait = expiresAt + 2_200 - Date.now();
    if (wait > 0) await delay(wait);

    await sendMessage(page, 'С просроченным токеном');
    const bubble = page.locator('.msg.assistant[data-state="error"]');
    await bubble.waitFor();
    assert.equal(bodies.at(-1).headers.authorization, `Bearer ${token}`);
    const alert = bubble.locator('[role="alert"]');
    assert.equal(await alert.locator('[data-field="status"]').textContent(), 'HTTP 401');
    assert.equal(await alert.locator('[data-field="title"]').textContent(), 'Токен истёк');
    assert.equal(await alert.locator('[data-field="code"]').textContent(), 'session_expired');
    assert.ok((await alert.locator('[data-field="hint"]').textContent()).length > 10);
    assert.ok((await alert.locator('[data-field="request-id"]').textContent()).length > 0);

    // Emptying the field stops sending it, and the chat works again.
    await page.fill('#token', '');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('gigachat-demo.token')), null);
    await page.fill('#input', '');
    await sendMessage(page, 'Без токена');
    await page.waitForSelector('.msg.assistant[data-state="done"]');
    assert.equal(bodies.at(-1).headers.authorization, undefined);
    assert.deepEqual(problems, []);
  });
});

// ---- (b) an allowed origin ----------------------------------------------------------

test('(b) an allowed origin streams a reply cross-origin after a preflight', { timeout: TEST_TIMEOUT }, async () => {
  await withPage('(b) allowed origin', `${env.allowedOrigin}/`, async (session) => {
    const { page } = session;
    const seen = [];
    page.on('request', (request) => seen.push({ method: request.method(), url: request.url() }));
    const responses = [];
    page.on('response', (response) => responses.push(response));
    // Playwright's request events do not include CORS preflights; Chromium
    // reports them over the DevTools protocol (resource type "Preflight").
    const cdp = await page.context().newCDPSession(page);
    const preflights = [];
    const preflightAnswers = [];
    cdp.on('Network.requestWillBeSent', (event) => {
      if (event.type === 'Preflight' || event.request.method === 'OPTIONS') preflights.push(event.request.url);
    });
    cdp.on('Network.responseReceived', (event) => {
      if (event.type === 'Preflight') preflightAnswers.push(event.response);
    });
    await cdp.send('Network.enable');

    const requestId = `browser-b-${randomUUID()}`;
    const message = 'Привет с другого сайта, разрешённого прокси';
    const result = await page.evaluate((args) => window.crossOriginChat(args), {
      proxy: env.proxy,
      message,
      requestId,
    });

    assert.equal(result.error, undefined, `the cross-origin call failed: ${JSON.stringify(result.error)}`);
    assert.equal(result.status, 200);
    assert.match(result.contentType, /^text\/event-stream/);
    assert.equal(result.text, `Echo: ${message}`);
    assert.equal(result.done, true, 'read up to [DONE]');
    // Every chunk: one event per word, then the usage chunk, then [DONE].
    const words = `Echo: ${message}`.split(/\s+/).length;
    assert.equal(result.events.length, words + 2, `events: ${result.events.join(' | ')}`);
    assert.ok(result.reads.length >= 3, `read in ${result.reads.length} pieces: buffered, not streamed`);
    assert.ok(result.reads.at(-1) - result.reads[0] >= 300, 'all chunks arrived at once');
    // Access-Control-Expose-Headers lets the page read X-Request-ID.
    assert.equal(result.requestId, requestId);

    // The preflight happened and was answered for this origin.
    const chatUrl = `${env.proxy}/api/gigachat-api/chat/completions`;
    const sawPreflight =
      seen.some((r) => r.method === 'OPTIONS' && r.url === chatUrl) || preflights.some((url) => url === chatUrl);
    assert.ok(sawPreflight, `no OPTIONS preflight seen; requests: ${JSON.stringify(seen)}`);
    const answer = preflightAnswers.find((r) => r.url === chatUrl);
    assert.ok(answer, 'the preflight was answered');
    const lower = Object.fromEntries(Object.entries(answer.headers).map(([k, v]) => [k.toLowerCase(), v]));
    assert.ok(answer.status >= 200 && answer.status < 300, `preflight status ${answer.status}`);
    assert.equal(lower['access-control-allow-origin'], env.allowedOrigin);
    assert.match(lower['access-control-allow-headers'] || '', /x-request-id/i);
    assert.match(lower['access-control-allow-methods'] || '', /POST/);
    const chatResponse = responses.find((r) => r.url() === chatUrl && r.request().method() === 'POST');
    assert.ok(chatResponse, 'the POST response was seen');
    const headers = await chatResponse.allHeaders();
    assert.equal(headers['access-control-allow-origin'], env.allowedOrigin);
    assert.match(headers.vary || '', /origin/i);

    // The chat reached GigaChat with the client's request id and the proxy's token.
    const upstream = (await recordedRequests()).filter(isChat).find((r) => header(r, 'x-request-id') === requestId);
    assert.ok(upstream, 'the chat reached the emulator');
    assert.match(header(upstream, 'authorization') || '', /^Bearer \S+/);
    await cdp.detach();
  });
});

// ---- (c) a disallowed origin -------------------------------------------------------

test('(c) a disallowed origin is blocked by the browser and nothing reaches GigaChat', { timeout: TEST_TIMEOUT }, async () => {
  await withPage('(c) disallowed origin', `${env.disallowedOrigin}/`, async (session) => {
    const { page } = session;
    const cdp = await page.context().newCDPSession(page);
    const preflightAnswers = [];
    cdp.on('Network.responseReceived', (event) => {
      if (event.type === 'Preflight') preflightAnswers.push(event.response);
    });
    await cdp.send('Network.enable');
    const firstItem = recorder.items.length;
    const chatsBefore = (await recordedRequests()).filter(isChat).length;
    const statsBefore = await emulatorStats();

    // With a preflight (JSON + X-Request-ID): the preflight is refused.
    const requestId = `browser-c-${randomUUID()}`;
    const preflighted = await page.evaluate((args) => window.crossOriginChat(args), {
      proxy: env.proxy,
      message: 'Сообщение с чужого сайта',
      requestId,
    });
    assert.equal(preflighted.error?.name, 'TypeError', `fetch did not reject: ${JSON.stringify(preflighted)}`);
    // Its preflight was refused: no Access-Control-Allow-Origin, a 403.
    const refused = await waitFor('the refused preflight', () => preflightAnswers.at(-1));
    const refusedHeaders = Object.fromEntries(Object.entries(refused.headers).map(([k, v]) => [k.toLowerCase(), v]));
    assert.equal(refusedHeaders['access-control-allow-origin'], undefined);
    assert.equal(refused.status, 403);

    // A "simple" request (text/plain, no preflight): the browser sends it, so
    // the proxy itself must refuse it (403), or a foreign page could spend the
    // quota without ever reading the answer.
    const simple = await page.evaluate((args) => window.crossOriginChat(args), {
      proxy: env.proxy,
      message: 'Простой запрос с чужого сайта',
      simple: true,
    });
    assert.equal(simple.error?.name, 'TypeError', `fetch did not reject: ${JSON.stringify(simple)}`);

    await recorder.settle();
    const recorded = await recordedRequests();
    assert.equal(
      recorded.filter((r) => header(r, 'x-request-id') === requestId).length,
      0,
      'the preflighted request reached the emulator',
    );
    assert.equal(recorded.filter(isChat).length, chatsBefore, 'a chat from the disallowed origin reached the emulator');
    assert.equal((await emulatorStats()).api_calls, statsBefore.api_calls, 'the emulator saw API calls');

    // What the proxy answered (the browser hid it from the page): no
    // Access-Control-Allow-Origin for this origin.
    const answers = recorder.items.slice(firstItem).filter((r) => r.response && r.url.startsWith(env.proxy));
    for (const item of answers) {
      if (item.headers['access-control-allow-origin'] !== undefined) {
        assert.notEqual(item.headers['access-control-allow-origin'], env.disallowedOrigin);
        assert.notEqual(item.headers['access-control-allow-origin'], '*');
      }
    }
    await cdp.detach();
  });
});

// ---- (d) no secret reaches the browser -------------------------------------------------

test('(d) nothing the browser loaded or received contains the GigaChat key or an upstream token', { timeout: TEST_TIMEOUT }, async () => {
  await recorder.settle();
  const secrets = new Set([env.credentials]);
  const decoded = Buffer.from(env.credentials, 'base64').toString('utf8');
  if (decoded.includes(':')) {
    secrets.add(decoded);
    secrets.add(decoded.slice(decoded.indexOf(':') + 1));
  }
  const tokens = new Set();
  for (const r of await recordedRequests()) {
    const value = header(r, 'authorization') || '';
    if (value.startsWith('Bearer ')) tokens.add(value.slice(7).trim());
  }
  assert.ok(tokens.size >= 1, 'the emulator recorded no upstream token: the check would prove nothing');
  for (const token of tokens) secrets.add(token);
  for (const secret of secrets) assert.ok(secret.length >= 16, 'a secret too short to search for');

  // The check is not vacuous: the pages, the streams and the dumps are all in it.
  const responses = recorder.responses();
  assert.ok(responses.length >= 10, `only ${responses.length} responses recorded`);
  assert.ok(responses.some((r) => r.url === `${env.proxy}/app.js` && r.body.includes('sseEvents')), 'app.js recorded');
  assert.ok(responses.some((r) => r.body.includes('data: [DONE]')), 'a stream body recorded');
  assert.ok(responses.some((r) => r.body.includes('Service Unavailable')), 'an error body recorded');
  assert.ok(responses.some((r) => r.body.includes('"access_token"') || r.url.endsWith('/models')), 'API bodies recorded');
  assert.ok(recorder.items.some((i) => i.what.endsWith('sessionStorage')), 'storage dumps recorded');

  const leaks = [];
  for (const item of recorder.items) {
    for (const secret of secrets) {
      if (item.text.includes(secret)) leaks.push(item.what);
    }
  }
  assert.deepEqual(leaks, [], 'a secret reached the browser');
});
