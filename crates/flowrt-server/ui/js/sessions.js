// Compute sessions: owns the sessions list (#/sessions, live from the sessions event stream), a
// session's page (#/sessions/ID: environment, settings, requirements, installed packages, log)
// and the start dialog with its advanced settings (also opened from a flow's page). Each page
// loads what it shows, renders it with pure functions from data to elements, and acts on its
// controls (call the API, then redraw or notify). Which buttons a session offers comes from the
// server: its `actions` (stop, reset, update, edit, delete...), and whether the caller may start
// one from theirs (`auth.can`).
import { auth, get, post, api, follow } from './api.js';
import { h, clear, fmtAgo, fmtDur, badge, field, button, notify, act } from './dom.js';

// Per session id, the phases seen with the time each began (client clock): durations as they happen.
const phaseLog = new Map();

function notePhase(s) {
  const now = performance.now();
  let log = phaseLog.get(s.id);
  if (s.status === 'Preparing') {
    if (!log || log.done) {
      log = { steps: [], done: false };
      phaseLog.set(s.id, log);
    }
    const last = log.steps[log.steps.length - 1];
    if (!last || last.phase !== s.phase) {
      if (last) last.end = now;
      log.steps.push({ phase: s.phase, start: now });
    }
  } else if (log && !log.done) {
    const last = log.steps[log.steps.length - 1];
    if (last && !last.end) last.end = now;
    log.done = true;
    log.outcome = s.status;
  }
}

function phaseView(s) {
  const log = phaseLog.get(s.id);
  if (!log) return s.status === 'Preparing' ? h('span', { class: 'phase' }, s.phase) : null;
  return h('ol', { class: 'phases', 'aria-label': 'phases' }, log.steps.map((p) => {
    const secs = ((p.end || performance.now()) - p.start) / 1000;
    return h('li', { class: p.end ? 'done' : 'now' }, `${p.phase} ${fmtDur(secs)}`);
  }));
}

// The line that says what went wrong (the pip/uv error, the missing module), from the failure's
// reason (uv's stderr tail) and the log tail: the most specific cause, else the last error line.
export function failingLine(s) {
  const lines = `${String(s.reason || '').split('\n').slice(1).join('\n')}\n${s.log_tail || ''}`
    .split('\n').map((l) => l.trim()).filter(Boolean);
  const last = (re) => [...lines].reverse().find((l) => re.test(l));
  return last(/because|not found|no matching|no module named|modulenotfounderror|importerror|permission denied/i)
    || last(/error|failed|cannot|exception|traceback/i) || lines[lines.length - 1] || '';
}

function timeLeft(s) {
  if (s.status !== 'Running') return '–';
  if (!s.idle_timeout_s) return 'never stops';
  const left = s.idle_timeout_s - (Date.now() - s.last_activity) / 1000;
  return left > 0 ? `${fmtDur(left).replace(/\.\d+/, '')} left` : 'stopping soon';
}

// ---- the sessions list: load ----

// Owners' names by user id: the caller, and every user when the caller may list them (those
// who manage the team).
async function userNames() {
  const names = new Map([[auth.me.id, `${auth.me.name} (you)`]]);
  if (auth.can('manage_team')) {
    try { for (const u of await get('/api/v1/users')) if (!names.has(u.id)) names.set(u.id, u.name); } catch (_) { /* optional */ }
  }
  return names;
}

// ---- the sessions list: render ----

function listHeader(main) {
  return h('div', { class: 'bar' }, h('h1', {}, 'Compute sessions'),
    auth.can('start_session') ? button('Start session…', () => startDialog(main), { class: 'primary', id: 'start-session' }) : null);
}

function sessionsTable(tbody) {
  return h('table', { id: 'sessions', 'aria-describedby': 'sessions-caption' },
    h('caption', { id: 'sessions-caption', class: 'sr-only' }, 'Your compute sessions, updated live'),
    h('thead', {}, h('tr', {}, ['Session', 'Flow', 'Compute', 'Size', 'Status', 'Base', 'Owner', 'Idle timeout', 'Last activity', 'Actions'].map((x) => h('th', { scope: 'col' }, x)))),
    tbody);
}

// The buttons of a session's row: those its `actions` allow now.
function rowActions(list, s) {
  const can = (a) => s.actions.includes(a);
  return h('div', { class: 'actions' },
    can('stop') ? button('Stop', (e) => act(e.target, () => post(`/api/v1/sessions/${s.id}/stop`)), { 'aria-label': `Stop ${s.id}` }) : null,
    can('reset') ? button(s.status === 'Running' ? 'Reset' : 'Start', (e) => act(e.target, () => post(`/api/v1/sessions/${s.id}/reset`)), { 'aria-label': `Reset ${s.id}` }) : null,
    can('delete') ? button('Delete', (e) => act(e.target, () => deleteSession(list, s.id)), { class: 'danger', 'aria-label': `Delete ${s.id}` }) : null);
}

// The status, its phases while preparing, and a failure's reason with its telling line.
function statusCell(s) {
  const status = h('td', { class: 'status' }, badge(s.status), ' ', phaseView(s));
  if (s.status === 'Failed') {
    const summary = String(s.reason || '').split('\n')[0];
    status.append(h('div', { class: 'reason', title: s.reason || '' }, summary), h('code', { class: 'failing' }, failingLine(s)));
  }
  return status;
}

function sessionRow(list, s) {
  return h('tr', { 'data-id': s.id, 'data-status': s.status },
    h('td', {}, h('a', { href: `#/sessions/${s.id}` }, s.id)),
    h('td', {}, s.flow_ref ? h('a', { href: `#/flows/${encodeURIComponent(s.flow_ref)}` }, s.flow_ref) : '–'),
    h('td', {}, s.compute ? `instance ${s.compute}` : 'serverless'),
    h('td', {}, s.size),
    statusCell(s),
    h('td', {}, s.base_version, s.update_available ? h('span', { class: 'tag' }, ` update ${s.update_available}`) : null),
    h('td', {}, list.names.get(s.owner) || s.owner),
    h('td', { class: 'left' }, `${s.idle_timeout_s ? fmtDur(s.idle_timeout_s).replace(/\.\d+/, '') : 'never'} · `, h('span', {}, timeLeft(s))),
    h('td', { class: 'ago', 'data-ms': s.last_activity }, fmtAgo(s.last_activity)),
    h('td', {}, rowActions(list, s)));
}

// A session's row, new (on top) or in place of its old one.
function showSession(list, s) {
  notePhase(s);
  const tr = sessionRow(list, s);
  const old = list.rows.get(s.id);
  if (old) old.tr.replaceWith(tr); else list.tbody.prepend(tr);
  list.rows.set(s.id, { tr, s });
  list.empty.hidden = true;
}

// Once a second: the time left, the last activity and the current phase move on.
function tickRows(list) {
  for (const { tr, s } of list.rows.values()) {
    tr.querySelector('.left span').textContent = timeLeft(s);
    tr.querySelector('.ago').textContent = fmtAgo(s.last_activity);
    if (s.status === 'Preparing') tr.querySelector('.phases')?.replaceWith(phaseView(s));
  }
}

// ---- the sessions list: act ----

async function deleteSession(list, id) {
  await api('DELETE', `/api/v1/sessions/${id}`);
  list.rows.get(id)?.tr.remove();
  list.rows.delete(id);
  list.empty.hidden = list.rows.size > 0;
}

export async function list({ main, signal }) {
  const list = {
    names: await userNames(), rows: new Map(), tbody: h('tbody', {}),
    empty: h('p', { class: 'muted', id: 'no-sessions' }, 'No sessions yet.'),
  };
  main.append(listHeader(main), h('div', { class: 'scroll' }, sessionsTable(list.tbody)), list.empty);
  // The stream sends every visible session first, then each change: no polling, no reload.
  follow('/api/v1/sessions/events', signal, (name, s) => { if (name === 'session') showSession(list, s); });
  const tick = setInterval(() => tickRows(list), 1000);
  signal.addEventListener('abort', () => clearInterval(tick));
}

// ---- the start dialog ----

async function loadStartChoices() {
  const [flows, computes, identities, envs] = await Promise.all([
    get('/api/v1/flows'), get('/api/v1/computes'), get('/api/v1/identities'), get('/api/v1/environments'),
  ]);
  return { flows, computes, identities, envs };
}

// The dialog's controls, the flow preset; each radio enables the choice under it.
function startControls({ flows, computes, identities, envs }, presetFlow) {
  const mine = computes.filter((c) => c.owner === auth.me.id);
  const c = {
    hasInstance: mine.length > 0,
    flow: h('select', { name: 'flow', required: true }, flows.slice().reverse().map((f) => h('option', { value: f.ref, selected: f.ref === presetFlow || f.name === presetFlow }, f.ref))),
    kindServerless: h('input', { type: 'radio', name: 'kind', value: 'serverless', checked: true, id: 'kind-serverless' }),
    kindInstance: h('input', { type: 'radio', name: 'kind', value: 'instance', id: 'kind-instance', disabled: mine.length === 0 }),
    compute: h('select', { name: 'compute', disabled: true }, mine.map((x) => h('option', { value: x.name }, `${x.name} (${x.status})`))),
    size: h('select', { name: 'size' }, ['small', 'medium', 'large'].map((s) => h('option', { value: s }, s))),
    idle: h('input', { type: 'number', name: 'idle', min: 0, step: 1, value: 60 }),
    identity: h('select', { name: 'identity' }, h('option', { value: '' }, 'none (the server’s defaults)'), identities.map((i) => h('option', { value: i.name }, i.name))),
    envBase: h('input', { type: 'radio', name: 'envkind', value: 'base', checked: true, id: 'env-base' }),
    envCustom: h('input', { type: 'radio', name: 'envkind', value: 'custom', id: 'env-custom', disabled: envs.custom.length === 0 }),
    base: h('select', { name: 'base' }, h('option', { value: '' }, 'the flow’s, else the latest'), envs.base.map((b) => h('option', { value: b.reference }, `${b.reference}${b.latest ? ' (latest)' : ''} · Python ${b.python}`))),
    custom: h('select', { name: 'custom', disabled: true }, envs.custom.map((e) => h('option', { value: `${e.name}@v${e.version}` }, `${e.name}@v${e.version}`))),
    err: h('p', { class: 'error', role: 'alert' }),
  };
  const sync = () => {
    c.compute.disabled = !c.kindInstance.checked;
    c.base.disabled = !c.envBase.checked;
    c.custom.disabled = !c.envCustom.checked;
  };
  for (const r of [c.kindServerless, c.kindInstance, c.envBase, c.envCustom]) r.addEventListener('change', sync);
  return c;
}

function startForm(c, onsubmit, cancel) {
  return h('form', { method: 'dialog', onsubmit },
    h('h2', { id: 'start-title' }, 'Start a compute session'),
    field('Flow', c.flow),
    h('fieldset', {}, h('legend', {}, 'Compute type'),
      h('label', { for: 'kind-serverless' }, c.kindServerless, ' Serverless'),
      h('label', { for: 'kind-instance' }, c.kindInstance, ' Compute instance'),
      field('Instance', c.compute, c.hasInstance ? null : 'You have no compute instance; an admin assigns them.')),
    field('Size', c.size, 'small: 4 GiB, 1 Python worker · medium: 8 GiB, 2 · large: 16 GiB, 4'),
    field('Idle timeout (minutes)', c.idle, '0: never stop when idle'),
    field('Identity', c.identity),
    h('fieldset', {}, h('legend', {}, 'Environment'),
      h('label', { for: 'env-base' }, c.envBase, ' Base environment'),
      field('Base version', c.base),
      h('label', { for: 'env-custom' }, c.envCustom, ' Custom environment'),
      field('Custom environment', c.custom)),
    c.err,
    h('div', { class: 'actions' },
      h('button', { type: 'submit', class: 'primary' }, 'Start'),
      button('Cancel', cancel)));
}

// The request the chosen settings make (the idle timeout is typed in minutes, sent in seconds).
function startBody(c) {
  const body = { flow: c.flow.value, size: c.size.value, idle_timeout_s: Math.round(Number(c.idle.value) * 60) };
  if (c.kindInstance.checked) body.compute = c.compute.value;
  if (c.identity.value) body.identity = c.identity.value;
  if (c.envBase.checked && c.base.value) body.env = c.base.value;
  if (c.envCustom.checked && c.custom.value) body.env = c.custom.value;
  return body;
}

// The new session shows up in the list through the event stream: the dialog only closes.
export async function startDialog(main, presetFlow) {
  const c = startControls(await loadStartChoices(), presetFlow);
  const dlg = h('dialog', { 'aria-labelledby': 'start-title', class: 'card' });
  const close = () => { dlg.close(); dlg.remove(); };
  const submit = async (ev) => {
    ev.preventDefault();
    try {
      await post('/api/v1/sessions', startBody(c));
      close();
    } catch (e) {
      c.err.textContent = `${e.code}: ${e.message}`;
    }
  };
  dlg.append(startForm(c, submit, close));
  main.append(dlg);
  dlg.showModal();
  c.flow.focus();
}

// ---- a session's page: load ----

// The session, then its requirements.txt (the page still shows when that cannot be read).
async function loadSession(id) {
  const s = await get(`/api/v1/sessions/${id}`);
  let requirements = '';
  try { requirements = (await get(`/api/v1/sessions/${id}/requirements`)).text; } catch (e) { notify(e); }
  return { id, s, requirements };
}

// A package name as pip compares them: lowercased, runs of '-', '_' and '.' alike.
const packageKey = (name) => name.toLowerCase().replace(/[-_.]+/g, '-');

// requirements.txt lines as package key → pin.
function parseRequirements(text) {
  const out = new Map();
  for (const raw of String(text || '').split('\n')) {
    const line = raw.replace(/#.*/, '').trim();
    if (!line || line.startsWith('-')) continue;
    const m = line.match(/^([A-Za-z0-9._-]+)(\[[^\]]*\])?\s*(.*)$/);
    if (m) out.set(packageKey(m[1]), m[3].trim());
  }
  return out;
}

// ---- a session's page: render (each part into its card, from `d.s`, the session as last read) ----

function drawHead(d) {
  const { s } = d;
  const can = (a) => s.actions.includes(a);
  clear(d.box.head,
    h('h1', {}, 'Session ', h('code', {}, s.id)),
    h('span', { id: 'session-status' }, badge(s.status), ' ', s.phase || ''),
    s.flow_ref ? h('a', { href: `#/flows/${encodeURIComponent(s.flow_ref)}` }, `Open flow ${s.flow_ref}`) : null,
    can('reset') ? button(s.status === 'Running' ? 'Reset' : 'Start', (e) => act(e.target, () => post(`/api/v1/sessions/${d.id}/reset`))) : null,
    can('stop') ? button('Stop', (e) => act(e.target, () => post(`/api/v1/sessions/${d.id}/stop`))) : null);
  if (s.status === 'Failed') d.box.head.append(h('div', { class: 'error wide' }, h('pre', { class: 'log' }, s.reason || 'failed'), h('code', { class: 'failing' }, failingLine(s))));
}

function envList(s) {
  return h('dl', {},
    h('dt', {}, 'Environment'), h('dd', {}, s.env_ref),
    h('dt', {}, 'Base version'), h('dd', {}, s.base_version),
    h('dt', {}, 'Environment key'), h('dd', {}, h('code', {}, s.env_key || 'the base environment itself (no requirements)')),
    h('dt', {}, 'Identity'), h('dd', {}, s.identity || 'none'),
    h('dt', {}, 'Compute'), h('dd', {}, s.compute ? `instance ${s.compute}` : 'serverless'));
}

function drawEnv(d) {
  const { s } = d;
  const checkOut = h('span', { role: 'status', class: 'muted' });
  clear(d.box.env, h('h2', { id: 'env-h' }, 'Environment'),
    s.update_available ? h('div', { class: 'banner', role: 'status' }, `Update available: base environment ${s.update_available} (this session runs ${s.base_version}). `,
      s.actions.includes('update') ? button('Update', (e) => act(e.target, () => updateSession(d))) : null) : null,
    envList(s),
    h('div', { class: 'actions' }, button('Check version', (e) => act(e.target, () => checkVersion(d, checkOut))), checkOut));
}

function drawSettings(d) {
  const edit = d.s.actions.includes('edit');
  const size = h('select', { name: 'size', disabled: !edit }, ['small', 'medium', 'large'].map((x) => h('option', { value: x, selected: x === d.s.size }, x)));
  const idle = h('input', { type: 'number', min: 0, value: Math.round(d.s.idle_timeout_s / 60), disabled: !edit });
  const note = h('p', { class: 'muted', role: 'status' });
  const onsubmit = (ev) => { ev.preventDefault(); act(ev.submitter, () => saveSettings(d, size.value, idle.value, note)); };
  clear(d.box.set, h('h2', { id: 'set-h' }, 'Settings'),
    h('form', { onsubmit }, field('Size', size), field('Idle timeout (minutes)', idle, '0: never'), edit ? h('button', { type: 'submit' }, 'Save settings') : null, note));
}

function drawReq(d) {
  const edit = d.s.actions.includes('edit');
  const text = h('textarea', { rows: 6, spellcheck: 'false', disabled: !edit, name: 'requirements' }, d.requirements);
  const note = h('p', { class: 'muted', role: 'status' });
  const send = (saveOnly) => (e) => act(e.target, () => install(d, text.value, saveOnly, note));
  clear(d.box.req, h('h2', { id: 'req-h' }, 'Requirements'),
    field('requirements.txt', text),
    edit ? h('div', { class: 'actions' }, button('Save and install', send(false), { class: 'primary' }), button('Save only', send(true))) : null, note);
}

const drawAll = (d) => { drawHead(d); drawEnv(d); drawSettings(d); drawReq(d); };

// Where the installed packages differ from requirements.txt: missing ones, and other pins.
function requirementsDiff(want, pkgs) {
  const have = new Map(pkgs.map((p) => [packageKey(p.name), p]));
  const diff = [];
  for (const [name, pin] of want) {
    const p = have.get(name);
    if (!p) diff.push(h('li', { class: 'missing' }, `${name}${pin}: in requirements.txt, not installed`));
    else if (pin.startsWith('==') && pin.slice(2) !== p.version) diff.push(h('li', { class: 'changed' }, `${name}: requirements.txt pins ${pin}, installed ${p.version}`));
  }
  return diff;
}

// The installed packages, filtered as the user types, and how they meet requirements.txt.
function packagesCard(pkgs, requirements) {
  const want = parseRequirements(requirements);
  const diff = requirementsDiff(want, pkgs);
  const filter = h('input', { type: 'search', placeholder: 'name', name: 'filter' });
  const tbody = h('tbody', {});
  const draw = () => {
    const q = filter.value.toLowerCase();
    clear(tbody, pkgs.filter((p) => p.name.toLowerCase().includes(q)).map((p) => h('tr', { 'data-package': p.name },
      h('td', {}, p.name), h('td', {}, p.version), h('td', {}, h('span', { class: `tag src-${p.source}` }, p.source)))));
  };
  filter.addEventListener('input', draw);
  draw();
  return [h('h2', { id: 'pkg-h' }, `Installed packages (${pkgs.length})`),
    field('Filter packages', filter),
    h('h3', {}, 'Against requirements.txt'),
    diff.length ? h('ul', { class: 'diff' }, diff) : h('p', { class: 'muted' }, want.size ? 'Every requirement is installed as pinned.' : 'No requirements.txt entries.'),
    h('div', { class: 'scroll short' }, h('table', { id: 'packages' }, h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Package'), h('th', { scope: 'col' }, 'Version'), h('th', { scope: 'col' }, 'From'))), tbody))];
}

// Packages are listed by the session itself: read them (again) and draw them.
async function drawPackages(d) {
  const title = h('h2', { id: 'pkg-h' }, 'Installed packages');
  clear(d.box.pkg, title, h('p', { class: 'muted' }, 'Loading…'));
  let pkgs;
  try {
    pkgs = await get(`/api/v1/sessions/${d.id}/packages`, { signal: d.signal });
  } catch (e) {
    clear(d.box.pkg, title, h('p', { class: 'error' }, `${e.code}: ${e.message}`));
    return;
  }
  clear(d.box.pkg, packagesCard(pkgs, d.requirements));
}

// Log lines; one saying a node has been running long links to that node on the flow page.
function appendLog(d, text) {
  const flowName = (d.s.flow_ref || '').split('@')[0];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const m = line.match(/(\S+) has been running for/);
    if (m) {
      d.log.append(h('span', { class: 'warn' }, line.slice(0, m.index),
        h('a', { href: `#/flows/${encodeURIComponent(flowName)}?node=${encodeURIComponent(m[1])}` }, m[1]),
        line.slice(m.index + m[1].length)), '\n');
    } else d.log.append(line, '\n');
  }
  d.log.scrollTop = d.log.scrollHeight;
}

// ---- a session's page: act ----

async function updateSession(d) {
  d.s = await post(`/api/v1/sessions/${d.id}/update`);
  drawAll(d);
}

// Read the base environments and the session again: does it run the latest?
async function checkVersion(d, out) {
  const envs = await get('/api/v1/environments');
  const latest = envs.base.find((b) => b.latest);
  d.s = await get(`/api/v1/sessions/${d.id}`);
  drawHead(d);
  out.textContent = latest && latest.version === d.s.base_version
    ? `Up to date: ${d.s.base_version} is the latest base environment.`
    : `The latest base environment is ${latest ? latest.version : '?'}; this session runs ${d.s.base_version}.`;
}

async function saveSettings(d, size, idleMinutes, note) {
  d.s = await api('PATCH', `/api/v1/sessions/${d.id}`, { size, idle_timeout_s: Math.round(Number(idleMinutes) * 60) });
  note.textContent = d.s.note || 'Saved.';
}

async function install(d, requirements, saveOnly, note) {
  const v = await post(`/api/v1/sessions/${d.id}/install`, { requirements, save_only: saveOnly });
  d.requirements = requirements;
  note.textContent = v.note || 'Saved; the session is reinstalling and restarting.';
}

// The log's new text since the last read (a failed read is tried again by the next poll).
async function pollLog(d) {
  try {
    const r = await get(`/api/v1/sessions/${d.id}/logs?offset=${d.offset}`, { signal: d.signal });
    if (r.text) appendLog(d, r.text);
    d.offset = r.offset;
  } catch (_) { /* the next poll tries again */ }
}

// The session's own changes (status, phase, flow version) redraw the page live; its packages
// are read again when it comes back to Running (after an install, say).
function followSession(d) {
  let lastStatus = d.s.status;
  follow('/api/v1/sessions/events', d.signal, (name, v) => {
    if (name !== 'session' || v.id !== d.id) return;
    d.s = v;
    drawHead(d);
    drawEnv(d);
    if (v.status !== lastStatus && v.status === 'Running') drawPackages(d);
    lastStatus = v.status;
  });
}

export async function detail({ main, params, signal }) {
  const d = { ...await loadSession(params[0]), signal, offset: 0 };
  const card = (label, cls = 'card') => h('section', { class: cls, 'aria-labelledby': label });
  d.box = { head: h('div', { class: 'bar' }), env: card('env-h'), pkg: card('pkg-h'), req: card('req-h'), set: card('set-h'), log: card('log-h', 'card wide') };
  d.log = h('pre', { class: 'log', 'aria-live': 'off', tabindex: 0 });
  clear(d.box.log, h('h2', { id: 'log-h' }, 'Session log (live)'), d.log);
  main.append(d.box.head, h('div', { class: 'grid' }, d.box.env, d.box.set, d.box.req, d.box.pkg, d.box.log));
  drawAll(d);
  drawPackages(d);
  await pollLog(d);
  const timer = setInterval(() => pollLog(d), 1000);
  signal.addEventListener('abort', () => clearInterval(timer));
  followSession(d);
}
