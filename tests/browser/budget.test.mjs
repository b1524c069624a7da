// The demo page's token-budget meter and its budget error, in real headless
// Chromium. Started by tests/browser.rs, which runs the real proxy binary in
// front of the emulator with GIGACHAT_PROXY_TOKEN_BUDGET_ANONYMOUS=60/d (the
// page's caller is anonymous: open mode, identified by its address).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { env, launchBrowser } from './support.mjs';

const TEST_TIMEOUT = 60_000;
let browser;

before(async () => {
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
});

const remaining = (page) => page.locator('#budget').getAttribute('data-remaining').then(Number);

async function send(page, text) {
  const before = await page.locator('.msg.assistant').count();
  await page.fill('#input', text);
  await page.press('#input', 'Enter');
  const reply = page.locator('.msg.assistant').nth(before);
  await reply.waitFor();
  await page.waitForFunction(
    (index) => {
      const bubble = document.querySelectorAll('.msg.assistant')[index];
      return bubble && !bubble.hasAttribute('aria-busy');
    },
    before,
  );
  return reply;
}

test('the page shows the remaining token budget and a readable budget error', { timeout: TEST_TIMEOUT }, async () => {
  const context = await browser.newContext({ viewport: { width: 420, height: 780 } });
  try {
    const page = await context.newPage();
    page.setDefaultTimeout(15_000);
    await page.goto(`${env.proxy}/`);

    // The meter appears with the whole budget.
    await page.waitForSelector('#budget:not([hidden])');
    assert.equal(await page.locator('#budget').getAttribute('data-limit'), '60');
    assert.equal(await remaining(page), 60);
    assert.match(await page.locator('#budget-text').textContent(), /осталось 60 из 60/);

    // A short exchange is charged: the meter goes down.
    const first = await send(page, 'hi');
    assert.notEqual(await first.getAttribute('data-state'), 'error');
    await page.waitForFunction(() => Number(document.getElementById('budget').dataset.remaining) < 60);
    const afterFirst = await remaining(page);
    assert.ok(afterFirst > 0 && afterFirst < 60, `${afterFirst}`);

    // A long message spends the rest (its answer is cut to what is left)...
    await send(page, 'a'.repeat(240));
    await page.waitForFunction(() => Number(document.getElementById('budget').dataset.remaining) === 0);

    // ...and the next is refused with a readable explanation.
    const refused = await send(page, 'once more');
    assert.equal(await refused.getAttribute('data-state'), 'error');
    const text = await refused.textContent();
    assert.match(text, /Лимит токенов исчерпан/);
    assert.match(text, /обновится через/);
    assert.match(text, /token_budget_exceeded/);
    assert.match(text, /HTTP 429/);
  } finally {
    await context.close();
  }
});
