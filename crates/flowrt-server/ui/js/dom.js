// Small DOM helpers: elements are built with h() and text nodes, never from HTML strings, so data
// from the API can never become markup (and the CSP forbids inline code anyway).

export function h(tag, attrs, ...children) {
  const svg = tag.startsWith('svg:');
  const el = svg
    ? document.createElementNS('http://www.w3.org/2000/svg', tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.setAttribute('class', v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'value' && !svg) el.value = v;
    else if (k === 'checked' || k === 'selected' || k === 'disabled') el[k] = !!v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function fmtDur(s) {
  if (s === null || s === undefined || Number.isNaN(s)) return '–';
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

// Store times are milliseconds since the epoch.
export function fmtAgo(ms) {
  if (!ms) return '–';
  const s = (Date.now() - ms) / 1000;
  if (s < 5) return 'just now';
  return `${fmtDur(s).replace(/\.\d+/, '')} ago`;
}

export function fmtJson(v) {
  if (v === undefined) return '';
  if (typeof v === 'string') return v;
  return JSON.stringify(v);
}

export function badge(status) {
  return h('span', { class: `badge st-${String(status || 'unknown').toLowerCase()}` }, status || '–');
}

export function pre(v) {
  return h('pre', { class: 'json' }, typeof v === 'string' ? v : JSON.stringify(v, null, 2));
}

// A labelled form field; `input` is an element whose id the label names.
let ids = 0;
export function field(label, input, hint) {
  if (!input.id) input.id = `f${++ids}`;
  return h('div', { class: 'field' },
    h('label', { for: input.id }, label), input,
    hint ? h('small', { class: 'muted' }, hint) : null);
}

export function button(label, onclick, attrs = {}) {
  return h('button', { type: 'button', ...attrs, onclick }, label);
}

export function table(headers, rows, attrs = {}) {
  return h('table', attrs,
    h('thead', {}, h('tr', {}, headers.map((x) => h('th', { scope: 'col' }, x)))),
    h('tbody', {}, rows));
}

export function download(name, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = h('a', { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

// The page's alert line: an API refusal shows its {code, message} here (the server decides).
export function notify(e, kind = 'error') {
  const el = document.getElementById('alert');
  if (!e) { el.hidden = true; return; }
  const text = e.code ? `${e.code}: ${e.message}` : String(e.message || e);
  clear(el, h('span', {}, text), button('Dismiss', () => { el.hidden = true; }, { class: 'link' }));
  el.className = `alert ${kind}`;
  el.hidden = false;
}

// Run an action from a button: disable it meanwhile, report a refusal instead of throwing.
export async function act(btn, fn) {
  if (btn) btn.disabled = true;
  try {
    notify(null);
    return await fn();
  } catch (e) {
    notify(e);
    return undefined;
  } finally {
    if (btn) btn.disabled = false;
  }
}
