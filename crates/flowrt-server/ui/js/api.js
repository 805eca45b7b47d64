// The authenticated API: every call sends the token from sessionStorage as a Bearer header.
// Event streams are read with fetch() and a ReadableStream rather than EventSource, because
// EventSource cannot send headers and a token must never travel in a URL.

const KEY = 'flowrt.token';

export const auth = {
  get token() { return sessionStorage.getItem(KEY); },
  set token(t) { if (t) sessionStorage.setItem(KEY, t); else sessionStorage.removeItem(KEY); },
  me: null,
  // What the caller may start in the workspace, as /api/v1/me lists it (start_session,
  // submit_run, create_endpoint, deploy, manage_team): pages offer these and only these; each
  // thing they show carries its own `actions`. No page decides from the caller's role.
  can(action) { return !!this.me && (this.me.actions || []).includes(action); },
};

export class ApiError extends Error {
  constructor(status, code, message, body) {
    super(message);
    this.status = status;
    this.code = code;
    this.body = body; // the whole answer: some refusals carry more than {code, message}
  }
}

async function fail(resp) {
  let code = `HTTP${resp.status}`;
  let message = resp.statusText || 'request failed';
  let body = null;
  try {
    body = await resp.json();
    if (body && body.message) ({ code, message } = body);
  } catch (_) { /* not JSON: keep the status line */ }
  if (resp.status === 401) window.dispatchEvent(new CustomEvent('flowrt:unauthorized'));
  throw new ApiError(resp.status, code, message, body);
}

function headers(extra) {
  const h = { ...extra };
  if (auth.token) h.Authorization = `Bearer ${auth.token}`;
  return h;
}

export async function api(method, path, body, opts = {}) {
  const init = { method, headers: headers(opts.headers), signal: opts.signal };
  if (body !== undefined) {
    if (typeof body === 'string' || body instanceof Blob) {
      init.body = body;
    } else {
      init.body = JSON.stringify(body);
      init.headers['Content-Type'] = 'application/json';
    }
  }
  const resp = await fetch(path, init);
  if (!resp.ok) await fail(resp);
  if (resp.status === 204) return null;
  const type = resp.headers.get('content-type') || '';
  return type.includes('json') ? resp.json() : resp.text();
}

export const get = (path, opts) => api('GET', path, undefined, opts);
export const post = (path, body, opts) => api('POST', path, body ?? {}, opts);

// Read a server-sent event stream, calling onEvent(name, data) for each event (data parsed as
// JSON when it is). Resolves when the stream ends; rejects with ApiError when refused.
export async function sse(path, { method = 'GET', body, signal, onEvent }) {
  const init = { method, signal, headers: headers({ Accept: 'text/event-stream' }) };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['Content-Type'] = 'application/json';
  }
  const resp = await fetch(path, init);
  if (!resp.ok) await fail(resp);
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  let name = 'message';
  let data = [];
  const dispatch = () => {
    if (data.length) {
      const text = data.join('\n');
      let value = text;
      try { value = JSON.parse(text); } catch (_) { /* plain text data */ }
      onEvent(name, value);
    }
    name = 'message';
    data = [];
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += value;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).replace(/\r$/, '');
      buf = buf.slice(nl + 1);
      if (line === '') dispatch();
      else if (line.startsWith(':')) continue;
      else if (line.startsWith('event:')) name = line.slice(6).trim();
      else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
    }
  }
  dispatch();
}

// Follow a stream while the page lives, reconnecting after a drop (not after a refusal), until
// it ends: a run's stream says 'end' once its run has.
export function follow(path, signal, onEvent) {
  // A stream that said 'end' (a run's) is over: following it again would replay it.
  let ended = false;
  const seen = (name, data) => { if (name === 'end') ended = true; return onEvent(name, data); };
  const loop = async () => {
    while (!signal.aborted && !ended) {
      try {
        await sse(path, { signal, onEvent: seen });
      } catch (e) {
        if (signal.aborted || (e instanceof ApiError && e.status < 500)) return;
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  };
  loop();
}
