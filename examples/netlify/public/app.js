// Streams a GigaChat reply into the page. Every call goes to this site's
// own origin (/api/gigachat-api/...), which netlify.toml proxies to the
// gigachat-proxy deployment: no key, no CORS, no proxy URL in the page.

const API = '/api/gigachat-api';

const form = document.querySelector('#ask');
const input = document.querySelector('#message');
const send = document.querySelector('#send');
const statusLine = document.querySelector('#status');
const reply = document.querySelector('#reply');

function showStatus(text, isError = false) {
  statusLine.textContent = text;
  statusLine.classList.toggle('error', isError);
}

// The proxy answers every failure as JSON {"message", "code", "request_id"}.
async function errorText(response) {
  try {
    const body = await response.json();
    return `${body.message || response.statusText} (${body.code || response.status}, request ${body.request_id || '?'})`;
  } catch {
    return `HTTP ${response.status}`;
  }
}

// `data:` payloads of a server-sent event stream, as they arrive.
async function* sseData(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n/g, '\n');
    let end;
    while ((end = buffer.indexOf('\n\n')) !== -1) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event
        .split('\n')
        .filter((line) => line.startsWith('data:'))
        .map((line) => line.slice(5).trimStart())
        .join('\n');
      if (data) yield data;
    }
  }
}

async function ask(message) {
  const response = await fetch(`${API}/chat/completions`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Accept: 'text/event-stream' },
    body: JSON.stringify({
      model: 'GigaChat',
      stream: true,
      messages: [{ role: 'user', content: message }],
    }),
  });
  if (!response.ok) throw new Error(await errorText(response));
  for await (const data of sseData(response.body)) {
    if (data === '[DONE]') return;
    const chunk = JSON.parse(data);
    // A failure in mid-stream arrives as the proxy's error event.
    if (chunk.error) throw new Error(`${chunk.error.message} (${chunk.error.code})`);
    reply.textContent += chunk.choices?.[0]?.delta?.content ?? '';
  }
  throw new Error('the stream ended without [DONE]');
}

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  const message = input.value.trim();
  if (!message) return;
  reply.textContent = '';
  send.disabled = true;
  reply.setAttribute('aria-busy', 'true');
  showStatus('Отвечает…');
  try {
    await ask(message);
    showStatus('Готово');
  } catch (error) {
    showStatus(`Ошибка: ${error.message}`, true);
  } finally {
    send.disabled = false;
    reply.setAttribute('aria-busy', 'false');
  }
});
