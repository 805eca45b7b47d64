// The shell: owns the sign-in and not-found pages, the navigation and the hash router. Each
// other page is its own module, imported when first visited, so a page loads only its own code.
import { auth, get } from './api.js';
import { h, clear, notify, field, button } from './dom.js';

const main = document.getElementById('main');
let current = null; // the page's AbortController: ends its streams and timers when leaving

const ROUTES = [
  [/^\/?$/, 'sessions', 'list'],
  [/^\/sessions$/, 'sessions', 'list'],
  [/^\/sessions\/([^/]+)$/, 'sessions', 'detail'],
  [/^\/flows$/, 'flows', 'list'],
  [/^\/flows\/([^/]+)$/, 'flows', 'page'],
  [/^\/flows\/([^/]+)\/edit$/, 'editor', 'edit'],
  [/^\/flows\/([^/]+)\/compare$/, 'editor', 'compare'],
  [/^\/runs$/, 'runs', 'list'],
  [/^\/runs\/([^/]+)$/, 'runs', 'page'],
  [/^\/runs\/([^/]+)\/lines\/(\d+)\/trace$/, 'trace', 'line'],
  [/^\/trace\/test$/, 'trace', 'test'],
  [/^\/compare$/, 'runs', 'compare'],
  [/^\/endpoints$/, 'endpoints', 'list'],
  [/^\/endpoints\/([^/]+)$/, 'endpoints', 'page'],
  [/^\/endpoints\/([^/]+)\/requests\/([^/]+)$/, 'endpoints', 'request'],
  [/^\/team$/, 'team', 'page'],
];

function parse() {
  const raw = location.hash.replace(/^#/, '');
  const [path, qs] = raw.split('?');
  return { path, query: new URLSearchParams(qs || '') };
}

async function route() {
  if (current) current.abort();
  current = new AbortController();
  const ctl = current;
  notify(null);
  // A notice the previous page left for the next one (a save that moved here): shown once.
  const notice = sessionStorage.getItem('flowrt.notice');
  sessionStorage.removeItem('flowrt.notice');
  if (!auth.token || !auth.me) return signIn();
  const { path, query } = parse();
  for (const [re, mod, fn] of ROUTES) {
    const m = path.match(re);
    if (!m) continue;
    const section = { trace: 'runs', editor: 'flows' }[mod] || mod;
    for (const a of document.querySelectorAll('#nav a')) {
      if (a.dataset.nav === section) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    const page = await import(`./${mod}.js`);
    if (ctl.signal.aborted) return;
    clear(main);
    try {
      await page[fn]({ main, params: m.slice(1).map(decodeURIComponent), query, signal: ctl.signal });
      if (notice && !ctl.signal.aborted) notify({ message: notice }, 'info');
    } catch (e) {
      if (!ctl.signal.aborted) {
        clear(main, h('h1', {}, 'Something went wrong'), h('p', { class: 'error' }, `${e.code || 'Error'}: ${e.message}`));
      }
    }
    return;
  }
  clear(main, h('h1', {}, 'Not found'), h('p', {}, 'No page at ', h('code', {}, path), '. ', h('a', { href: '#/sessions' }, 'Sessions')));
}

function shell() {
  const nav = document.getElementById('nav');
  nav.hidden = !auth.me;
  document.getElementById('nav-team').hidden = !auth.can('manage_team');
  const who = document.getElementById('who');
  if (!auth.me) return clear(who);
  clear(who,
    h('span', { id: 'me', 'data-role': auth.me.role }, auth.me.name, ' ', h('span', { class: 'role' }, auth.me.role)),
    button('Sign out', () => { auth.token = null; auth.me = null; shell(); route(); }, { class: 'link' }));
}

function signIn(message) {
  shell();
  const token = h('input', { type: 'password', name: 'token', autocomplete: 'off', required: true, spellcheck: 'false' });
  const err = h('p', { class: 'error', role: 'alert' }, message || '');
  const form = h('form', { class: 'card signin', onsubmit: async (ev) => {
    ev.preventDefault();
    auth.token = token.value.trim();
    if (await loadMe(err)) route();
  } },
  h('h1', {}, 'Sign in to flowrt'),
  field('API token', token, 'The owner\'s token is in FLOWRT_HOME/owner.token; an admin creates the others. It is kept for this tab only.'),
  err,
  h('button', { type: 'submit', class: 'primary' }, 'Sign in'));
  clear(main, form);
  token.focus();
}

async function loadMe(errEl) {
  try {
    auth.me = await get('/api/v1/me');
    shell();
    return true;
  } catch (e) {
    auth.token = null;
    auth.me = null;
    if (errEl) errEl.textContent = `${e.code}: ${e.message}`;
    return false;
  }
}

window.addEventListener('flowrt:unauthorized', () => {
  auth.token = null;
  auth.me = null;
  signIn('Your token was refused; sign in again.');
});
window.addEventListener('hashchange', route);

(async () => {
  if (auth.token) await loadMe();
  route();
})();
