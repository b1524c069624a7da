// gigachat-proxy demo chat: plain JavaScript, no build step, no dependencies.
//
// The page calls only its own origin: `/api/gigachat-api/*` (the proxy, which
// holds the GigaChat key) and `/api/gigachat-health`. Replies stream in as
// Server-Sent Events and are read with a small spec-following parser.
'use strict';

(() => {
  const API = '/api/gigachat-api';
  const HEALTH = '/api/gigachat-health';
  const BUDGET = '/api/gigachat-budget';
  const TOKEN_KEY = 'gigachat-demo.token';
  const MODEL_KEY = 'gigachat-demo.model';
  const FALLBACK_MODEL = 'GigaChat';

  const $ = (id) => document.getElementById(id);
  const ui = {
    health: $('health'),
    healthText: $('health-text'),
    budget: $('budget'),
    budgetMeter: $('budget-meter'),
    budgetText: $('budget-text'),
    model: $('model'),
    token: $('token'),
    clear: $('clear'),
    messages: $('messages'),
    empty: $('empty'),
    form: $('composer'),
    input: $('input'),
    send: $('send'),
    stop: $('stop'),
  };

  /** The conversation sent back with every request: [{role, content}]. */
  let history = [];
  /** The AbortController of the request in flight, if any. */
  let inFlight = null;

  // ---- storage (sessionStorage may be unavailable, e.g. in some iframes) ----

  function stored(key) {
    try {
      return sessionStorage.getItem(key) || '';
    } catch {
      return '';
    }
  }

  function store(key, value) {
    try {
      if (value) sessionStorage.setItem(key, value);
      else sessionStorage.removeItem(key);
    } catch {
      /* not fatal: the value simply is not remembered */
    }
  }

  function authHeaders() {
    const token = ui.token.value.trim();
    return token ? { Authorization: `Bearer ${token}` } : {};
  }

  // ---- errors -----------------------------------------------------------------

  /** Everything the page shows about a failure. */
  class ChatError extends Error {
    constructor({ kind, status = 0, message = '', code = '', hint = '', requestId = '', retryAfter = '' }) {
      super(message || kind);
      this.kind = kind; // 'http' | 'network' | 'stream' | 'protocol'
      this.status = status;
      this.code = code;
      this.hint = hint;
      this.requestId = requestId;
      this.retryAfter = retryAfter;
    }
  }

  /** Reads the proxy's (or GigaChat's) JSON error `{status, message, code, hint, request_id}`. */
  async function httpError(response) {
    const text = await response.text().catch(() => '');
    let body = null;
    try {
      body = JSON.parse(text);
    } catch {
      /* not JSON: a load balancer's HTML page, say */
    }
    const field = (name) => (body && typeof body[name] === 'string' ? body[name] : '');
    const message =
      field('message') ||
      (body && body.error && typeof body.error.message === 'string' ? body.error.message : '') ||
      text.replace(/<[^>]*>/g, ' ').replace(/\s+/g, ' ').trim().slice(0, 300) ||
      response.statusText;
    return new ChatError({
      kind: 'http',
      status: response.status,
      message,
      code: field('code') || (body && typeof body.code === 'number' ? String(body.code) : ''),
      hint: field('hint'),
      requestId: response.headers.get('X-Request-ID') || field('request_id'),
      retryAfter: response.headers.get('Retry-After') || '',
    });
  }

  function retryAfterSeconds(value) {
    if (!value) return null;
    if (/^\d+$/.test(value.trim())) return Number(value.trim());
    const date = Date.parse(value);
    return Number.isNaN(date) ? null : Math.max(0, Math.ceil((date - Date.now()) / 1000));
  }

  /** `2 ч 5 мин`, `40 с`: a wait, in words. */
  function formatWait(seconds) {
    const h = Math.floor(seconds / 3600);
    const m = Math.floor((seconds % 3600) / 60);
    if (h > 0) return `${h} ч ${m} мин`;
    if (m > 0) return `${m} мин`;
    return `${seconds} с`;
  }

  /** Title and fallback hint, in Russian, for each kind of failure. */
  function describe(error) {
    const s = error.status;
    if (error.kind === 'network') {
      return {
        title: 'Нет связи с прокси',
        hint: 'Запрос не дошёл до сервера: проверьте подключение к сети и что прокси запущен.',
      };
    }
    if (error.kind === 'stream') {
      return { title: 'Ответ оборвался', hint: 'GigaChat прервал генерацию. Попробуйте отправить сообщение ещё раз.' };
    }
    if (error.kind === 'protocol') {
      return { title: 'Непонятный ответ', hint: 'Прокси ответил не в формате GigaChat.' };
    }
    if (s === 401) {
      const expired = error.code === 'session_expired' || /expire|истёк|истек/i.test(error.message);
      return {
        title: expired ? 'Токен истёк' : 'Требуется вход',
        hint: expired
          ? 'Получите новый токен и вставьте его в поле «Ключ API или токен» в настройках.'
          : 'Укажите ключ API или токен в настройках (поле «Ключ API или токен»).',
      };
    }
    if (s === 403) return { title: 'Доступ запрещён', hint: 'Этому ключу или сайту не разрешено обращаться к прокси.' };
    if (s === 413) return { title: 'Сообщение слишком большое', hint: 'Сократите сообщение или начните новый диалог.' };
    if (s === 429 && error.code === 'token_budget_exceeded') {
      const seconds = retryAfterSeconds(error.retryAfter);
      return {
        title: 'Лимит токенов исчерпан',
        hint:
          seconds === null
            ? 'Бюджет токенов на этот период израсходован; он обновится в начале следующего периода.'
            : `Бюджет токенов на этот период израсходован; он обновится через ${formatWait(seconds)}.`,
      };
    }
    if (s === 429) {
      const seconds = retryAfterSeconds(error.retryAfter);
      return {
        title: 'Слишком много запросов',
        hint: seconds === null ? 'Подождите немного и повторите.' : `Повторите через ${seconds} с.`,
      };
    }
    if (s === 502 || s === 503 || s === 504 || s >= 500) {
      return {
        title: 'GigaChat недоступен или перегружен',
        hint: 'Сервис не ответил как надо. Повторите через минуту; если не поможет — сообщите администратору номер запроса.',
      };
    }
    return { title: 'Запрос отклонён', hint: '' };
  }

  function renderError(bubble, error) {
    const { title, hint } = describe(error);
    const box = document.createElement('div');
    box.className = 'error';
    box.setAttribute('role', 'alert');
    box.dataset.status = String(error.status || '');
    box.dataset.kind = error.kind;

    const head = document.createElement('p');
    head.className = 'error-title';
    const strong = document.createElement('strong');
    strong.dataset.field = 'title';
    strong.textContent = title;
    head.append(strong);
    if (error.status) {
      const status = document.createElement('span');
      status.className = 'badge';
      status.dataset.field = 'status';
      status.textContent = `HTTP ${error.status}`;
      head.append(' ', status);
    }
    box.append(head);

    const line = (field, text, cls = field) => {
      if (!text) return;
      const p = document.createElement('p');
      p.className = cls;
      p.dataset.field = field;
      p.textContent = text;
      box.append(p);
    };
    line('message', error.message && error.message !== error.kind ? error.message : '');
    line('hint', error.hint || hint);
    if (error.hint && hint && error.status === 429) line('retry', hint, 'hint');

    const meta = [];
    if (error.code) meta.push(['код', error.code, 'code']);
    if (error.requestId) meta.push(['номер запроса', error.requestId, 'request-id']);
    if (meta.length) {
      const p = document.createElement('p');
      p.className = 'meta';
      meta.forEach(([label, value, field], i) => {
        if (i) p.append(' · ');
        const code = document.createElement('code');
        code.dataset.field = field;
        code.textContent = value;
        p.append(`${label}: `, code);
      });
      p.title = 'X-Request-ID: quote it when reporting the problem';
      box.append(p);
    }
    bubble.append(box);
  }

  // ---- Server-Sent Events -------------------------------------------------------

  /**
   * Yields `{event, data}` for every complete event of an SSE body, as the
   * HTML standard parses them: lines end in CRLF, LF or CR (also when split
   * across chunks); a blank line dispatches; `data:` lines are joined with
   * "\n"; one space after the colon is dropped; `:` lines are comments; an
   * unfinished event at the end of the stream is discarded.
   */
  async function* sseEvents(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    let data = [];
    let event = '';
    const lineEnd = /\r\n|\r|\n/;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (value) buffer += value;
        for (;;) {
          const match = lineEnd.exec(buffer);
          if (!match) break;
          // A trailing CR may be the first half of a CRLF: wait for more.
          if (match[0] === '\r' && match.index === buffer.length - 1 && !done) break;
          const line = buffer.slice(0, match.index);
          buffer = buffer.slice(match.index + match[0].length);
          if (line === '') {
            if (data.length) yield { event: event || 'message', data: data.join('\n') };
            data = [];
            event = '';
            continue;
          }
          if (line.startsWith(':')) continue; // comment / keep-alive
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          let fieldValue = colon < 0 ? '' : line.slice(colon + 1);
          if (fieldValue.startsWith(' ')) fieldValue = fieldValue.slice(1);
          if (field === 'data') data.push(fieldValue);
          else if (field === 'event') event = fieldValue;
          // `id` and `retry` do not matter for a single fetch.
        }
        if (done) return;
      }
    } finally {
      // Stopped early ([DONE], an error event, Stop): let the rest go.
      reader.cancel().catch(() => {});
    }
  }

  // ---- rendering ----------------------------------------------------------------

  function nearBottom() {
    const m = ui.messages;
    return m.scrollHeight - m.scrollTop - m.clientHeight < 80;
  }

  function scrollDown(force) {
    if (force || nearBottom()) ui.messages.scrollTop = ui.messages.scrollHeight;
  }

  function bubble(role, text) {
    ui.empty.hidden = true;
    const el = document.createElement('article');
    el.className = `msg ${role}`;
    const who = document.createElement('p');
    who.className = 'who';
    who.textContent = role === 'user' ? 'Вы' : 'GigaChat';
    const body = document.createElement('div');
    body.className = 'text';
    body.textContent = text;
    el.append(who, body);
    ui.messages.append(el);
    scrollDown(true);
    return el;
  }

  function setBusy(busy) {
    ui.send.hidden = busy;
    ui.stop.hidden = !busy;
    ui.send.disabled = busy;
    ui.form.classList.toggle('busy', busy);
  }

  function autosize() {
    ui.input.style.height = 'auto';
    ui.input.style.height = `${Math.min(ui.input.scrollHeight, 200)}px`;
  }

  // ---- chat ---------------------------------------------------------------------

  async function send() {
    const text = ui.input.value.trim();
    if (!text || inFlight) return;
    ui.input.value = '';
    autosize();

    const userBubble = bubble('user', text);
    history.push({ role: 'user', content: text });
    const reply = bubble('assistant', '');
    const output = reply.querySelector('.text');
    reply.dataset.state = 'waiting';
    reply.setAttribute('aria-busy', 'true');

    const controller = new AbortController();
    inFlight = controller;
    setBusy(true);
    let answer = '';
    let finished = false;
    try {
      let response;
      try {
        response = await fetch(`${API}/chat/completions`, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json', Accept: 'text/event-stream', ...authHeaders() },
          body: JSON.stringify({ model: ui.model.value || FALLBACK_MODEL, stream: true, messages: history }),
          signal: controller.signal,
        });
      } catch (err) {
        if (controller.signal.aborted) throw err;
        throw new ChatError({ kind: 'network', message: String(err && err.message ? err.message : err) });
      }
      const requestId = response.headers.get('X-Request-ID') || '';
      reply.dataset.requestId = requestId;
      if (!response.ok) throw await httpError(response);

      const type = response.headers.get('Content-Type') || '';
      if (!type.includes('text/event-stream')) {
        // A JSON answer (a proxy or model that does not stream).
        const body = await response.json().catch(() => null);
        const content = body && body.choices && body.choices[0] && body.choices[0].message;
        if (!content) throw new ChatError({ kind: 'protocol', message: 'no choices[0].message', requestId });
        answer = content.content || '';
        output.textContent = answer;
        finished = true;
      } else {
        reply.dataset.state = 'streaming';
        try {
          for await (const { data } of sseEvents(response.body)) {
            if (data === '[DONE]') {
              finished = true;
              break;
            }
            let chunk;
            try {
              chunk = JSON.parse(data);
            } catch {
              throw new ChatError({ kind: 'protocol', message: `not JSON: ${data.slice(0, 120)}`, requestId });
            }
            if (chunk && chunk.error) {
              // The proxy's mid-stream error event.
              const e = chunk.error;
              throw new ChatError({
                kind: 'stream',
                message: e.message || 'stream error',
                code: e.code ? String(e.code) : '',
                requestId: e.request_id || requestId,
              });
            }
            const delta = chunk && chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
            if (delta && typeof delta.content === 'string' && delta.content) {
              const stick = nearBottom();
              answer += delta.content;
              output.textContent = answer;
              scrollDown(stick);
            }
          }
        } catch (err) {
          if (err instanceof ChatError || controller.signal.aborted) throw err;
          // The connection broke while reading the body.
          throw new ChatError({ kind: 'network', message: String(err && err.message ? err.message : err), requestId });
        }
        if (!finished) {
          throw new ChatError({ kind: 'stream', message: 'the stream ended without [DONE]', requestId });
        }
      }
      reply.dataset.state = 'done';
      history.push({ role: 'assistant', content: answer });
    } catch (err) {
      if (controller.signal.aborted) {
        reply.dataset.state = 'stopped';
        const note = document.createElement('p');
        note.className = 'note';
        note.textContent = 'Остановлено.';
        note.title = 'Stopped';
        reply.append(note);
        if (answer) history.push({ role: 'assistant', content: answer });
        else history.pop();
      } else {
        const error =
          err instanceof ChatError ? err : new ChatError({ kind: 'protocol', message: String(err && err.message) });
        reply.dataset.state = 'error';
        if (!answer) output.hidden = true;
        renderError(reply, error);
        // Not part of the conversation: the user can edit and resend.
        history.pop();
        userBubble.classList.add('unsent');
        userBubble.title = 'Not sent: this message is not part of the conversation';
        if (!ui.input.value) {
          ui.input.value = userBubble.querySelector('.text').textContent;
          autosize();
        }
      }
    } finally {
      reply.removeAttribute('aria-busy');
      if (inFlight === controller) inFlight = null;
      setBusy(false);
      scrollDown(false);
      // The answer has been charged (or refunded): refresh the meter, if
      // there is one (each check counts against the request rate).
      if (!ui.budget.hidden) loadBudget();
    }
  }

  function stop() {
    if (inFlight) inFlight.abort();
  }

  function newConversation() {
    stop();
    history = [];
    ui.messages.querySelectorAll('.msg').forEach((el) => el.remove());
    ui.empty.hidden = false;
    ui.input.focus();
  }

  // ---- models and health --------------------------------------------------------

  async function loadModels() {
    let ids = [];
    try {
      const response = await fetch(`${API}/models`, { headers: { Accept: 'application/json', ...authHeaders() } });
      if (response.ok) {
        const body = await response.json();
        ids = (Array.isArray(body && body.data) ? body.data : [])
          .filter((m) => m && typeof m.id === 'string' && (!m.type || m.type === 'chat'))
          .map((m) => m.id);
      } else {
        // Read it anyway, so the connection is released.
        await response.text();
      }
    } catch {
      /* the fallback below */
    }
    if (!ids.length) ids = [FALLBACK_MODEL];
    const wanted = ui.model.value && ids.includes(ui.model.value) ? ui.model.value : stored(MODEL_KEY);
    ui.model.replaceChildren(
      ...ids.map((id) => {
        const option = document.createElement('option');
        option.value = id;
        option.textContent = id;
        return option;
      }),
    );
    ui.model.value = ids.includes(wanted) ? wanted : ids.includes(FALLBACK_MODEL) ? FALLBACK_MODEL : ids[0];
    ui.model.dataset.loaded = 'true';
  }

  async function loadHealth() {
    try {
      const response = await fetch(HEALTH, { headers: { Accept: 'application/json' } });
      const body = await response.json().catch(() => ({}));
      if (response.ok && body.status === 'ok') {
        const upstream =
          {
            emulator: 'эмулятор GigaChat',
            gigachat: 'GigaChat',
            custom: 'GigaChat (свой адрес)',
          }[body.upstream] || body.upstream || 'неизвестно';
        ui.health.dataset.state = 'ok';
        ui.health.dataset.upstream = body.upstream || '';
        ui.healthText.textContent = `Прокси работает · ${upstream}${body.version ? ` · v${body.version}` : ''}`;
      } else {
        ui.health.dataset.state = 'error';
        ui.healthText.textContent = `Прокси: ошибка ${response.status}${body.message ? ` — ${body.message}` : ''}`;
      }
    } catch {
      ui.health.dataset.state = 'error';
      ui.healthText.textContent = 'Прокси недоступен';
    }
  }

  /** The caller's token budget (`GET /api/gigachat-budget`), shown as a meter when one is set. */
  async function loadBudget() {
    try {
      const response = await fetch(BUDGET, { headers: { Accept: 'application/json', ...authHeaders() } });
      const body = await response.json().catch(() => ({}));
      if (!response.ok || typeof body.limit !== 'number' || body.limit <= 0) {
        ui.budget.hidden = true;
        return;
      }
      const remaining = Math.max(0, Number(body.remaining) || 0);
      ui.budgetMeter.max = body.limit;
      ui.budgetMeter.value = remaining;
      ui.budgetMeter.low = body.limit * 0.2;
      ui.budgetMeter.optimum = body.limit;
      ui.budget.dataset.remaining = String(remaining);
      ui.budget.dataset.limit = String(body.limit);
      const reset = body.reset ? new Date(body.reset) : null;
      const when = reset && !Number.isNaN(reset.getTime()) ? ` · обновится ${reset.toLocaleString('ru-RU')}` : '';
      ui.budgetText.textContent = `Токены: осталось ${remaining.toLocaleString('ru-RU')} из ${body.limit.toLocaleString('ru-RU')}${when}`;
      ui.budget.hidden = false;
    } catch {
      ui.budget.hidden = true;
    }
  }

  // ---- wiring -------------------------------------------------------------------

  ui.token.value = stored(TOKEN_KEY);
  ui.token.addEventListener('input', () => store(TOKEN_KEY, ui.token.value.trim()));
  ui.token.addEventListener('change', () => {
    loadModels();
    loadBudget();
  });
  ui.model.addEventListener('change', () => store(MODEL_KEY, ui.model.value));
  ui.form.addEventListener('submit', (event) => {
    event.preventDefault();
    send();
  });
  ui.input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  ui.input.addEventListener('input', autosize);
  ui.stop.addEventListener('click', stop);
  ui.clear.addEventListener('click', newConversation);

  loadHealth();
  loadModels();
  loadBudget();
  ui.input.focus();
})();
