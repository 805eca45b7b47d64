// Compute sessions: the live list (from the sessions event stream), the start dialog with
// advanced settings, and a session's details (environment, packages, requirements, settings, log).
import { auth, get, post, api, follow } from './api.js';
import { h, clear, fmtAgo, fmtDur, badge, field, button, table, notify, act } from './dom.js';


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

async function userNames() {
  const names = new Map([[auth.me.id, `${auth.me.name} (you)`]]);
  if (auth.admin) {
    try { for (const u of await get('/api/v1/users')) if (!names.has(u.id)) names.set(u.id, u.name); } catch (_) { /* optional */ }
  }
  return names;
}

export async function list({ main, signal }) {
  const rows = new Map();
  const tbody = h('tbody', {});
  const empty = h('p', { class: 'muted', id: 'no-sessions' }, 'No sessions yet.');
  const names = await userNames();
  const header = h('div', { class: 'bar' }, h('h1', {}, 'Compute sessions'),
    auth.writer ? button('Start session…', () => startDialog(main), { class: 'primary', id: 'start-session' }) : null);
  const tbl = h('table', { id: 'sessions', 'aria-describedby': 'sessions-caption' },
    h('caption', { id: 'sessions-caption', class: 'sr-only' }, 'Your compute sessions, updated live'),
    h('thead', {}, h('tr', {}, ['Session', 'Flow', 'Compute', 'Size', 'Status', 'Base', 'Owner', 'Idle timeout', 'Last activity', 'Actions'].map((x) => h('th', { scope: 'col' }, x)))),
    tbody);
  main.append(header, h('div', { class: 'scroll' }, tbl), empty);

  const render = (s) => {
    notePhase(s);
    const can = (a) => s.actions.includes(a); // the server says what the caller may do now
    const actions = h('div', { class: 'actions' });
    if (can('stop')) actions.append(button('Stop', (e) => act(e.target, () => post(`/api/v1/sessions/${s.id}/stop`)), { 'aria-label': `Stop ${s.id}` }));
    if (can('reset')) actions.append(button(s.status === 'Running' ? 'Reset' : 'Start', (e) => act(e.target, () => post(`/api/v1/sessions/${s.id}/reset`)), { 'aria-label': `Reset ${s.id}` }));
    if (can('delete')) {
      actions.append(button('Delete', (e) => act(e.target, async () => {
        await api('DELETE', `/api/v1/sessions/${s.id}`);
        rows.get(s.id)?.tr.remove();
        rows.delete(s.id);
        empty.hidden = rows.size > 0;
      }), { class: 'danger', 'aria-label': `Delete ${s.id}` }));
    }
    const status = h('td', { class: 'status' }, badge(s.status), ' ', phaseView(s));
    if (s.status === 'Failed') {
      const summary = String(s.reason || '').split('\n')[0];
      status.append(h('div', { class: 'reason', title: s.reason || '' }, summary), h('code', { class: 'failing' }, failingLine(s)));
    }
    const left = h('td', { class: 'left' }, `${s.idle_timeout_s ? fmtDur(s.idle_timeout_s).replace(/\.\d+/, '') : 'never'} · `, h('span', {}, timeLeft(s)));
    const tr = h('tr', { 'data-id': s.id, 'data-status': s.status },
      h('td', {}, h('a', { href: `#/sessions/${s.id}` }, s.id)),
      h('td', {}, s.flow_ref ? h('a', { href: `#/flows/${encodeURIComponent(s.flow_ref)}` }, s.flow_ref) : '–'),
      h('td', {}, s.compute ? `instance ${s.compute}` : 'serverless'),
      h('td', {}, s.size),
      status,
      h('td', {}, s.base_version, s.update_available ? h('span', { class: 'tag' }, ` update ${s.update_available}`) : null),
      h('td', {}, names.get(s.owner) || s.owner),
      left,
      h('td', { class: 'ago', 'data-ms': s.last_activity }, fmtAgo(s.last_activity)),
      h('td', {}, actions));
    const old = rows.get(s.id);
    if (old) old.tr.replaceWith(tr); else tbody.prepend(tr);
    rows.set(s.id, { tr, s });
    empty.hidden = true;
  };
  // The stream sends every visible session first, then each change: no polling, no reload.
  follow('/api/v1/sessions/events', signal, (name, s) => { if (name === 'session') render(s); });
  const tick = setInterval(() => {
    for (const { tr, s } of rows.values()) {
      tr.querySelector('.left span').textContent = timeLeft(s);
      tr.querySelector('.ago').textContent = fmtAgo(s.last_activity);
      if (s.status === 'Preparing') tr.querySelector('.phases')?.replaceWith(phaseView(s));
    }
  }, 1000);
  signal.addEventListener('abort', () => clearInterval(tick));
}

async function startDialog(main, presetFlow) {
  const [flows, computes, identities, envs] = await Promise.all([
    get('/api/v1/flows'), get('/api/v1/computes'), get('/api/v1/identities'), get('/api/v1/environments'),
  ]);
  const latest = new Map();
  for (const f of flows) latest.set(f.name, f.ref);
  const flow = h('select', { name: 'flow', required: true }, flows.slice().reverse().map((f) => h('option', { value: f.ref, selected: f.ref === presetFlow || f.name === presetFlow }, f.ref)));
  const kindServerless = h('input', { type: 'radio', name: 'kind', value: 'serverless', checked: true, id: 'kind-serverless' });
  const kindInstance = h('input', { type: 'radio', name: 'kind', value: 'instance', id: 'kind-instance' });
  const mine = computes.filter((c) => c.owner === auth.me.id);
  const compute = h('select', { name: 'compute', disabled: true }, mine.map((c) => h('option', { value: c.name }, `${c.name} (${c.status})`)));
  kindInstance.disabled = mine.length === 0;
  const size = h('select', { name: 'size' }, ['small', 'medium', 'large'].map((s) => h('option', { value: s }, s)));
  const idle = h('input', { type: 'number', name: 'idle', min: 0, step: 1, value: 60 });
  const identity = h('select', { name: 'identity' }, h('option', { value: '' }, 'none (the server’s defaults)'), identities.map((i) => h('option', { value: i.name }, i.name)));
  const envBase = h('input', { type: 'radio', name: 'envkind', value: 'base', checked: true, id: 'env-base' });
  const envCustom = h('input', { type: 'radio', name: 'envkind', value: 'custom', id: 'env-custom' });
  const base = h('select', { name: 'base' }, h('option', { value: '' }, 'the flow’s, else the latest'), envs.base.map((b) => h('option', { value: b.reference }, `${b.reference}${b.latest ? ' (latest)' : ''} · Python ${b.python}`)));
  const custom = h('select', { name: 'custom', disabled: true }, envs.custom.map((e) => h('option', { value: `${e.name}@v${e.version}` }, `${e.name}@v${e.version}`)));
  envCustom.disabled = envs.custom.length === 0;
  const sync = () => {
    compute.disabled = !kindInstance.checked;
    base.disabled = !envBase.checked;
    custom.disabled = !envCustom.checked;
  };
  for (const r of [kindServerless, kindInstance, envBase, envCustom]) r.addEventListener('change', sync);
  const err = h('p', { class: 'error', role: 'alert' });
  const dlg = h('dialog', { 'aria-labelledby': 'start-title', class: 'card' });
  const form = h('form', { method: 'dialog', onsubmit: async (ev) => {
    ev.preventDefault();
    const body = { flow: flow.value, size: size.value, idle_timeout_s: Math.round(Number(idle.value) * 60) };
    if (kindInstance.checked) body.compute = compute.value;
    if (identity.value) body.identity = identity.value;
    if (envBase.checked && base.value) body.env = base.value;
    if (envCustom.checked && custom.value) body.env = custom.value;
    try {
      await post('/api/v1/sessions', body);
      dlg.close();
      dlg.remove();
    } catch (e) {
      err.textContent = `${e.code}: ${e.message}`;
    }
  } },
  h('h2', { id: 'start-title' }, 'Start a compute session'),
  field('Flow', flow),
  h('fieldset', {}, h('legend', {}, 'Compute type'),
    h('label', { for: 'kind-serverless' }, kindServerless, ' Serverless'),
    h('label', { for: 'kind-instance' }, kindInstance, ' Compute instance'),
    field('Instance', compute, mine.length ? null : 'You have no compute instance; an admin assigns them.')),
  field('Size', size, 'small: 4 GiB, 1 Python worker · medium: 8 GiB, 2 · large: 16 GiB, 4'),
  field('Idle timeout (minutes)', idle, '0: never stop when idle'),
  field('Identity', identity),
  h('fieldset', {}, h('legend', {}, 'Environment'),
    h('label', { for: 'env-base' }, envBase, ' Base environment'),
    field('Base version', base),
    h('label', { for: 'env-custom' }, envCustom, ' Custom environment'),
    field('Custom environment', custom)),
  err,
  h('div', { class: 'actions' },
    h('button', { type: 'submit', class: 'primary' }, 'Start'),
    button('Cancel', () => { dlg.close(); dlg.remove(); })));
  dlg.append(form);
  main.append(dlg);
  dlg.showModal();
  flow.focus();
}
export { startDialog };

// requirements.txt lines as name → pin (lowercased, '-' and '_' alike, as pip compares them).
function parseRequirements(text) {
  const out = new Map();
  for (const raw of String(text || '').split('\n')) {
    const line = raw.replace(/#.*/, '').trim();
    if (!line || line.startsWith('-')) continue;
    const m = line.match(/^([A-Za-z0-9._-]+)(\[[^\]]*\])?\s*(.*)$/);
    if (m) out.set(m[1].toLowerCase().replace(/[-_.]+/g, '-'), m[3].trim());
  }
  return out;
}

export async function detail({ main, params, signal }) {
  const id = params[0];
  let s = await get(`/api/v1/sessions/${id}`);
  // What the caller may do with it, as the server says (read again with each fetch of `s`).
  const can = (a) => s.actions.includes(a);
  const head = h('div', { class: 'bar' });
  const envBox = h('section', { class: 'card', 'aria-labelledby': 'env-h' });
  const pkgBox = h('section', { class: 'card', 'aria-labelledby': 'pkg-h' });
  const reqBox = h('section', { class: 'card', 'aria-labelledby': 'req-h' });
  const setBox = h('section', { class: 'card', 'aria-labelledby': 'set-h' });
  const logBox = h('section', { class: 'card wide', 'aria-labelledby': 'log-h' });
  main.append(head, h('div', { class: 'grid' }, envBox, setBox, reqBox, pkgBox, logBox));
  let requirements = '';

  const drawHead = () => {
    clear(head,
      h('h1', {}, 'Session ', h('code', {}, s.id)),
      h('span', { id: 'session-status' }, badge(s.status), ' ', s.phase || ''),
      s.flow_ref ? h('a', { href: `#/flows/${encodeURIComponent(s.flow_ref)}` }, `Open flow ${s.flow_ref}`) : null,
      can('reset') ? button(s.status === 'Running' ? 'Reset' : 'Start', (e) => act(e.target, () => post(`/api/v1/sessions/${id}/reset`))) : null,
      can('stop') ? button('Stop', (e) => act(e.target, () => post(`/api/v1/sessions/${id}/stop`))) : null);
    if (s.status === 'Failed') head.append(h('div', { class: 'error wide' }, h('pre', { class: 'log' }, s.reason || 'failed'), h('code', { class: 'failing' }, failingLine(s))));
  };
  const drawEnv = () => {
    const checkOut = h('span', { role: 'status', class: 'muted' });
    clear(envBox, h('h2', { id: 'env-h' }, 'Environment'),
      s.update_available ? h('div', { class: 'banner', role: 'status' }, `Update available: base environment ${s.update_available} (this session runs ${s.base_version}). `,
        can('update') ? button('Update', (e) => act(e.target, async () => { s = await post(`/api/v1/sessions/${id}/update`); drawAll(); })) : null) : null,
      h('dl', {},
        h('dt', {}, 'Environment'), h('dd', {}, s.env_ref),
        h('dt', {}, 'Base version'), h('dd', {}, s.base_version),
        h('dt', {}, 'Environment key'), h('dd', {}, h('code', {}, s.env_key || 'the base environment itself (no requirements)')),
        h('dt', {}, 'Identity'), h('dd', {}, s.identity || 'none'),
        h('dt', {}, 'Compute'), h('dd', {}, s.compute ? `instance ${s.compute}` : 'serverless')),
      h('div', { class: 'actions' }, button('Check version', (e) => act(e.target, async () => {
        const envs = await get('/api/v1/environments');
        const latest = envs.base.find((b) => b.latest);
        s = await get(`/api/v1/sessions/${id}`);
        drawHead();
        checkOut.textContent = latest && latest.version === s.base_version
          ? `Up to date: ${s.base_version} is the latest base environment.`
          : `The latest base environment is ${latest ? latest.version : '?'}; this session runs ${s.base_version}.`;
      })), checkOut));
  };
  const drawSettings = () => {
    const size = h('select', { name: 'size', disabled: !can('edit') }, ['small', 'medium', 'large'].map((x) => h('option', { value: x, selected: x === s.size }, x)));
    const idle = h('input', { type: 'number', min: 0, value: Math.round(s.idle_timeout_s / 60), disabled: !can('edit') });
    const note = h('p', { class: 'muted', role: 'status' });
    clear(setBox, h('h2', { id: 'set-h' }, 'Settings'),
      h('form', { onsubmit: (ev) => { ev.preventDefault(); act(ev.submitter, async () => {
        const v = await api('PATCH', `/api/v1/sessions/${id}`, { size: size.value, idle_timeout_s: Math.round(Number(idle.value) * 60) });
        s = v;
        note.textContent = v.note || 'Saved.';
      }); } }, field('Size', size), field('Idle timeout (minutes)', idle, '0: never'), can('edit') ? h('button', { type: 'submit' }, 'Save settings') : null, note));
  };
  const drawReq = () => {
    const text = h('textarea', { rows: 6, spellcheck: 'false', disabled: !can('edit'), name: 'requirements' }, requirements);
    const note = h('p', { class: 'muted', role: 'status' });
    const send = (saveOnly) => (e) => act(e.target, async () => {
      const v = await post(`/api/v1/sessions/${id}/install`, { requirements: text.value, save_only: saveOnly });
      requirements = text.value;
      note.textContent = v.note || 'Saved; the session is reinstalling and restarting.';
    });
    clear(reqBox, h('h2', { id: 'req-h' }, 'Requirements'),
      field('requirements.txt', text),
      can('edit') ? h('div', { class: 'actions' }, button('Save and install', send(false), { class: 'primary' }), button('Save only', send(true))) : null, note);
  };
  const drawPkgs = async () => {
    clear(pkgBox, h('h2', { id: 'pkg-h' }, 'Installed packages'), h('p', { class: 'muted' }, 'Loading…'));
    let pkgs;
    try { pkgs = await get(`/api/v1/sessions/${id}/packages`, { signal }); } catch (e) {
      clear(pkgBox, h('h2', { id: 'pkg-h' }, 'Installed packages'), h('p', { class: 'error' }, `${e.code}: ${e.message}`));
      return;
    }
    const want = parseRequirements(requirements);
    const have = new Map(pkgs.map((p) => [p.name.toLowerCase().replace(/[-_.]+/g, '-'), p]));
    const diff = [];
    for (const [name, pin] of want) {
      const p = have.get(name);
      if (!p) diff.push(h('li', { class: 'missing' }, `${name}${pin}: in requirements.txt, not installed`));
      else if (pin.startsWith('==') && pin.slice(2) !== p.version) diff.push(h('li', { class: 'changed' }, `${name}: requirements.txt pins ${pin}, installed ${p.version}`));
    }
    const filter = h('input', { type: 'search', placeholder: 'name', name: 'filter' });
    const tbody = h('tbody', {});
    const draw = () => {
      const q = filter.value.toLowerCase();
      clear(tbody, pkgs.filter((p) => p.name.toLowerCase().includes(q)).map((p) => h('tr', { 'data-package': p.name },
        h('td', {}, p.name), h('td', {}, p.version), h('td', {}, h('span', { class: `tag src-${p.source}` }, p.source)))));
    };
    filter.addEventListener('input', draw);
    clear(pkgBox, h('h2', { id: 'pkg-h' }, `Installed packages (${pkgs.length})`),
      field('Filter packages', filter),
      h('h3', {}, 'Against requirements.txt'),
      diff.length ? h('ul', { class: 'diff' }, diff) : h('p', { class: 'muted' }, want.size ? 'Every requirement is installed as pinned.' : 'No requirements.txt entries.'),
      h('div', { class: 'scroll short' }, h('table', { id: 'packages' }, h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Package'), h('th', { scope: 'col' }, 'Version'), h('th', { scope: 'col' }, 'From'))), tbody)));
    draw();
  };
  const logPre = h('pre', { class: 'log', 'aria-live': 'off', tabindex: 0 });
  clear(logBox, h('h2', { id: 'log-h' }, 'Session log (live)'), logPre);
  const flowName = () => (s.flow_ref || '').split('@')[0];
  const appendLog = (text) => {
    for (const line of text.split('\n')) {
      if (!line) continue;
      const m = line.match(/(\S+) has been running for/);
      if (m) {
        logPre.append(h('span', { class: 'warn' }, line.slice(0, m.index),
          h('a', { href: `#/flows/${encodeURIComponent(flowName())}?node=${encodeURIComponent(m[1])}` }, m[1]),
          line.slice(m.index + m[1].length)), '\n');
      } else logPre.append(line, '\n');
    }
    logPre.scrollTop = logPre.scrollHeight;
  };
  let offset = 0;
  const poll = async () => {
    try {
      const r = await get(`/api/v1/sessions/${id}/logs?offset=${offset}`, { signal });
      if (r.text) appendLog(r.text);
      offset = r.offset;
    } catch (_) { /* the next poll tries again */ }
  };
  const drawAll = () => { drawHead(); drawEnv(); drawSettings(); drawReq(); };
  try { requirements = (await get(`/api/v1/sessions/${id}/requirements`)).text; } catch (e) { notify(e); }
  drawAll();
  drawPkgs();
  await poll();
  const timer = setInterval(poll, 1000);
  signal.addEventListener('abort', () => clearInterval(timer));
  // The session's own changes (status, phase, flow version) redraw the page live.
  let lastStatus = s.status;
  follow('/api/v1/sessions/events', signal, (name, v) => {
    if (name !== 'session' || v.id !== id) return;
    s = v;
    drawHead();
    drawEnv();
    if (v.status !== lastStatus && v.status === 'Running') drawPkgs();
    lastStatus = v.status;
  });

}
