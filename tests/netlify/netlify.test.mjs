// The Netlify example (examples/netlify) in real headless Chromium, on the
// origin `netlify dev` serves it from. Started by tests/netlify.rs, which
// runs the real proxy binary in front of the emulator and `netlify dev`
// (netlify-cli from this directory's package-lock.json) whose rewrite sends
// /api/gigachat-* to it. Chromium and playwright-core come from
// tests/browser (shared helpers in tests/browser/support.mjs).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { env, launchBrowser, setFaults } from '../browser/support.mjs';

const TEST_TIMEOUT = 60_000;

function required(name) {
  const value = process.env[name];
  assert.ok(value, `${name} is set (run these tests with \`cargo test --test netlify\`)`);
  return value.replace(/\/+$/, '');
}

const site = required('NETLIFY_SITE_URL');
const proxy = required('GIGACHAT_PROXY_URL');
const chunkDelay = Number(required('CHUNK_DELAY_MS'));

let browser;

before(async () => {
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
});

/**
 * The example page in a fresh context. `document` is the page's own
 * response, `requests` lists every URL the page asked for, `chatResponses`
 * the answers to its chat calls, `problems` page errors and console errors.
 */
async function openPage() {
  const context = await browser.newContext({ viewport: { width: 480, height: 800 }, locale: 'ru-RU' });
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  const requests = [];
  const chatResponses = [];
  const problems = [];
  page.on('request', (request) => requests.push(request.url()));
  page.on('response', (response) => {
    if (response.url().endsWith('/chat/completions')) chatResponses.push(response);
  });
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push(`console error: ${message.text()}`);
  });
  const document = await page.goto(`${site}/`);
  await page.getByRole('heading', { name: 'GigaChat' }).waitFor();
  return { context, page, document, requests, chatResponses, problems };
}

/** Records every text the reply shows, with when, from before the message is sent. */
async function watchReply(page) {
  await page.evaluate(() => {
    const reply = document.querySelector('#reply');
    window.replyTexts = [];
    new MutationObserver(() => {
      window.replyTexts.push({ at: performance.now(), text: reply.textContent });
    }).observe(reply, { childList: true, characterData: true, subtree: true });
  });
}

async function send(page, message) {
  await page.getByPlaceholder('Спросите что-нибудь').fill(message);
  await page.getByRole('button', { name: 'Отправить' }).click();
}

test('the page streams a reply through its own origin', { timeout: TEST_TIMEOUT }, async () => {
  const { context, page, document, requests, chatResponses, problems } = await openPage();
  try {
    // netlify.toml's [[headers]] reached the page; a violation would be a console error.
    const policy = (await document.allHeaders())['content-security-policy'];
    assert.match(policy ?? '', /default-src 'self'/, `the page's policy: ${policy}`);
    await watchReply(page);
    const message = 'one two three four five six';
    await send(page, message);
    await page.getByRole('status').filter({ hasText: 'Готово' }).waitFor();
    assert.equal(await page.locator('#reply').textContent(), `Echo: ${message}`);

    // It grew while the events arrived, not all at once at the end.
    const texts = (await page.evaluate(() => window.replyTexts)).filter(({ text }) => text !== '');
    const distinct = [...new Set(texts.map(({ text }) => text))];
    assert.ok(distinct.length >= 4, `the reply showed ${JSON.stringify(distinct)}`);
    const spread = texts.at(-1).at - texts[0].at;
    assert.ok(spread >= 3 * chunkDelay, `the reply grew over ${spread} ms: ${JSON.stringify(texts)}`);

    // Only the site's own origin was called; the proxy's URL never reached the page.
    assert.ok(requests.length >= 3, JSON.stringify(requests));
    for (const url of requests) {
      assert.ok(url.startsWith(`${site}/`), `the page called ${url}`);
    }
    assert.ok(!(await page.content()).includes(proxy), 'the proxy URL is not in the page');

    // The proxy took the page as its own (Sec-Fetch-Site, which Netlify
    // passes on), so it added no CORS headers; no origin is listed.
    assert.equal(chatResponses.length, 1);
    const response = chatResponses[0];
    assert.equal(response.status(), 200);
    const headers = await response.allHeaders();
    assert.equal(headers['content-type'], 'text/event-stream');
    assert.equal(headers['access-control-allow-origin'], undefined, JSON.stringify(headers));
    assert.ok(headers['x-request-id'], 'the answer is the proxy\'s');
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
  }
});

test('a stream cut upstream ends with the proxy\'s error on the page', { timeout: TEST_TIMEOUT }, async () => {
  const { context, page, problems } = await openPage();
  try {
    await setFaults({ reset_stream_after_chunks: 2 });
    await send(page, 'this answer breaks off');
    const status = page.getByRole('status');
    await status.filter({ hasText: 'Ошибка' }).waitFor();
    const text = await status.textContent();
    assert.match(text, /^Ошибка: .+ \(upstream_stream_broken\)$/, text);
    assert.equal(await page.getByRole('button', { name: 'Отправить' }).isEnabled(), true);
    assert.deepEqual(problems, []);
  } finally {
    await setFaults({ reset: true });
    await context.close();
  }
});
