import { useState } from 'react';
import { useChat } from '@ai-sdk/react';
import { DefaultChatTransport, lastAssistantMessageIsCompleteWithToolCalls } from 'ai';

// Tools the browser runs. The proxy hands their JSON Schema to GigaChat as
// functions; when GigaChat calls one, `onToolCall` below answers it and the
// chat sends the result back by itself (`sendAutomaticallyWhen`).
const tools = {
  get_local_time: {
    description: 'Текущие дата, время и часовой пояс в браузере пользователя',
    inputSchema: { type: 'object', properties: {} },
  },
};

// The proxy's route speaks the AI SDK's UI message stream, so the stock
// transport is all the client needs: no server code of your own.
const transport = new DefaultChatTransport({ api: '/api/gigachat-chat', body: { tools } });

function localTime() {
  const now = new Date();
  return {
    time: now.toLocaleString('ru-RU'),
    iso: now.toISOString(),
    timeZone: Intl.DateTimeFormat().resolvedOptions().timeZone,
  };
}

// `error.message` is the raw body of a failed request (the proxy answers
// JSON: {"message", "hint", "request_id", …}) or the text of an error the
// stream reported; both are shown as sentences, not as JSON.
function describeError(error) {
  try {
    const body = JSON.parse(error.message);
    const detail = body?.error && typeof body.error === 'object' ? body.error : body;
    if (detail && typeof detail.message === 'string') {
      return {
        message: detail.message,
        hint: typeof detail.hint === 'string' ? detail.hint : '',
        requestId: detail.request_id || body.request_id || '',
      };
    }
  } catch {
    // Not JSON: already a sentence.
  }
  return { message: error.message || String(error), hint: '', requestId: '' };
}

function Part({ part }) {
  if (part.type === 'text') return <p className="text">{part.text}</p>;
  if (part.type === 'reasoning') return <p className="reasoning">{part.text}</p>;
  if (part.type === 'tool-get_local_time') {
    const done = part.state === 'output-available';
    return (
      <p className="tool" data-state={part.state}>
        Инструмент get_local_time: {done ? JSON.stringify(part.output) : part.state === 'output-error' ? part.errorText : 'узнаём время…'}
      </p>
    );
  }
  return null;
}

const ROLE_NAMES = { user: 'Вы', assistant: 'GigaChat' };

export default function App() {
  const [input, setInput] = useState('');
  const { messages, sendMessage, regenerate, status, stop, error, addToolOutput } = useChat({
    transport,
    sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithToolCalls,
    onToolCall({ toolCall }) {
      if (toolCall.toolName === 'get_local_time') {
        // Not awaited: awaiting inside onToolCall would wait for this very stream to end.
        addToolOutput({ tool: 'get_local_time', toolCallId: toolCall.toolCallId, output: localTime() });
      }
    },
  });
  const busy = status === 'submitted' || status === 'streaming';
  const problem = error ? describeError(error) : null;

  function submit(event) {
    event.preventDefault();
    const text = input.trim();
    if (!text || busy) return;
    sendMessage({ text });
    setInput('');
  }

  return (
    <main className="chat">
      <h1>GigaChat + useChat</h1>

      <div className="log" role="log" aria-live="polite" aria-label="Переписка" aria-busy={busy}>
        {messages.map((message) => (
          <article key={message.id} className={`message ${message.role}`} data-role={message.role}>
            <h2 className="who">{ROLE_NAMES[message.role] ?? message.role}</h2>
            {message.parts.map((part, index) => (
              <Part key={index} part={part} />
            ))}
          </article>
        ))}
      </div>

      <p className="status" role="status">
        {status === 'submitted' ? 'Отправляем…' : status === 'streaming' ? 'GigaChat отвечает…' : ''}
      </p>

      {problem && (
        <div className="error" role="alert">
          <p className="error-message">{problem.message}</p>
          {problem.hint && <p className="error-hint">{problem.hint}</p>}
          {problem.requestId && <p className="error-id">request id: {problem.requestId}</p>}
          <button type="button" onClick={() => regenerate()}>
            Повторить
          </button>
        </div>
      )}

      <form className="composer" onSubmit={submit}>
        <label htmlFor="message">Сообщение</label>
        <input
          id="message"
          value={input}
          onChange={(event) => setInput(event.target.value)}
          placeholder="Например: который час?"
          autoComplete="off"
        />
        {busy ? (
          <button type="button" onClick={() => stop()}>
            Остановить
          </button>
        ) : (
          <button type="submit" disabled={!input.trim()}>
            Отправить
          </button>
        )}
      </form>
    </main>
  );
}
