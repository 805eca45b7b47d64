// Flows: the workspace's flows and versions, a flow's DAG drawn as SVG, the compute-session
// dropdown, and the single-line test pane (a form from the flow's inputs, or a chat).
import { auth, get, post, sse, follow } from './api.js';
import { h, clear, fmtAgo, fmtDur, pre, field, button, table, notify, act } from './dom.js';

export async function list({ main }) {
  const flows = await get('/api/v1/flows');
  const byName = new Map();
  for (const f of flows) {
    if (!byName.has(f.name)) byName.set(f.name, []);
    byName.get(f.name).push(f);
  }
  main.append(h('h1', {}, 'Flows'));
  if (!flows.length) {
    main.append(h('p', { class: 'muted' }, 'No flows yet: push one with ', h('code', {}, 'flowrt flow push DIR'), '.'));
    return;
  }
  main.append(h('div', { class: 'scroll' }, table(['Flow', 'Versions', 'Latest', 'Files', 'Pushed'],
    [...byName.entries()].map(([name, vs]) => {
      vs.sort((a, b) => b.version - a.version);
      const last = vs[0];
      return h('tr', { 'data-flow': name },
        h('td', {}, h('a', { href: `#/flows/${encodeURIComponent(name)}` }, name)),
        h('td', {}, vs.map((v, i) => [i ? ', ' : '', h('a', { href: `#/flows/${encodeURIComponent(v.ref)}` }, `v${v.version}`)])),
        h('td', {}, h('code', {}, last.hash.slice(0, 19))),
        h('td', {}, `${last.files} files, ${(last.bytes / 1024).toFixed(1)} KiB`),
        h('td', {}, fmtAgo(last.created)));
    }), { id: 'flows' })));
}

// Layered layout: a node's row is one below the lowest row it reads from.
function layout(flow) {
  const names = ['inputs', ...flow.nodes.map((n) => n.name), 'outputs'];
  const into = new Map(names.map((n) => [n, []]));
  for (const e of flow.edges) if (into.has(e.to) && names.includes(e.from)) into.get(e.to).push(e.from);
  const level = new Map([['inputs', 0]]);
  const visit = (n, seen = new Set()) => {
    if (level.has(n)) return level.get(n);
    if (seen.has(n)) return 0;
    seen.add(n);
    const l = 1 + Math.max(0, ...into.get(n).map((m) => visit(m, seen)));
    level.set(n, l);
    return l;
  };
  for (const n of names) visit(n);
  // Outputs sit below everything; aggregation nodes too (they run after every line).
  const maxNode = Math.max(1, ...flow.nodes.map((n) => level.get(n.name)));
  level.set('outputs', maxNode + 1);
  const rows = [];
  for (const n of names) {
    const l = level.get(n);
    (rows[l] ||= []).push(n);
  }
  return { rows, level };
}

const W = 170;
const H = 44;
const GX = 30;
const GY = 56;

export function drawDag(flow, onSelect) {
  const { rows } = layout(flow);
  const width = Math.max(...rows.map((r) => (r ? r.length : 0))) * (W + GX) + GX;
  const height = rows.length * (H + GY) + 10;
  const pos = new Map();
  rows.forEach((row, l) => (row || []).forEach((n, i) => {
    const rowW = row.length * (W + GX) - GX;
    pos.set(n, { x: (width - rowW) / 2 + i * (W + GX), y: 10 + l * (H + GY) });
  }));
  const byName = new Map(flow.nodes.map((n) => [n.name, n]));
  const svg = h('svg:svg', { viewBox: `0 0 ${width} ${height}`, width, height, class: 'dag', role: 'img', 'aria-label': `DAG of ${flow.ref}: ${flow.nodes.length} nodes` },
    h('svg:defs', {}, h('svg:marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
      h('svg:path', { d: 'M0,0 L10,5 L0,10 z', class: 'arrowhead' }))));
  const seen = new Set();
  for (const e of flow.edges) {
    const a = pos.get(e.from);
    const b = pos.get(e.to);
    if (!a || !b) continue;
    const key = `${e.from}>${e.to}>${!!e.activate}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const x1 = a.x + W / 2 + (e.activate ? 12 : 0);
    const y1 = a.y + H;
    const x2 = b.x + W / 2 + (e.activate ? 12 : 0);
    const y2 = b.y;
    const my = (y1 + y2) / 2;
    svg.append(h('svg:path', { d: `M${x1},${y1} C${x1},${my} ${x2},${my} ${x2},${y2}`, class: e.activate ? 'edge activate' : 'edge', 'marker-end': 'url(#arrow)' },
      h('svg:title', {}, e.activate ? `activate: ${e.from} → ${e.to}` : `${e.from} → ${e.to}${e.input ? ` (${e.input})` : ''}${e.output ? ` (output ${e.output})` : ''}`)));
  }
  for (const [name, p] of pos) {
    const n = byName.get(name);
    const type = n ? n.type : 'io';
    const cls = ['node', `t-${type}`, n && n.aggregation ? 'agg' : '', n && n.activate ? 'cond' : ''].join(' ');
    const label = n && n.aggregation ? `${name} (aggregation)` : name;
    const g = h('svg:g', { class: cls, 'data-node': name, tabindex: 0, role: 'button', 'aria-label': `${label}, ${type}`, transform: `translate(${p.x},${p.y})` },
      h('svg:rect', { width: W, height: H, rx: 7 }),
      h('svg:text', { x: 10, y: 18, class: 'name' }, name.length > 20 ? `${name.slice(0, 19)}…` : name),
      h('svg:text', { x: 10, y: 35, class: 'kind' }, n ? `${type}${n.aggregation ? ' · aggregation' : ''}${n.activate ? ` · when ${n.activate.when} is ${JSON.stringify(n.activate.is)}` : ''}`.slice(0, 30) : (name === 'inputs' ? Object.keys(flow.inputs).join(', ') : Object.keys(flow.outputs).join(', ')).slice(0, 26)));
    const pick = () => onSelect && onSelect(n || { name, type: 'io' });
    g.addEventListener('click', pick);
    g.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); pick(); } });
    svg.append(g);
  }
  return svg;
}

// Colour nodes by their state on a line: running while it goes, then each node's outcome.
export function colourDag(svg, nodeRuns, running) {
  const states = new Map((nodeRuns || []).map((r) => [r.node, String(r.status).toLowerCase()]));
  for (const g of svg.querySelectorAll('g.node')) {
    g.classList.remove('s-running', 's-completed', 's-failed', 's-bypassed', 's-canceled');
    const name = g.dataset.node;
    if (running && name !== 'inputs' && name !== 'outputs') g.classList.add('s-running');
    else if (states.has(name)) g.classList.add(`s-${states.get(name)}`);
  }
}

// One node's state as the line goes (the stream's `node` events).
export function colourNode(svg, node, status) {
  const g = svg.querySelector(`g.node[data-node="${CSS.escape(node)}"]`);
  if (!g) return;
  g.classList.remove('s-running', 's-completed', 's-failed', 's-bypassed', 's-canceled');
  g.classList.add(`s-${String(status).toLowerCase()}`);
}

function inputControl(name, spec) {
  const def = spec.default;
  switch (spec.type) {
    case 'int': case 'double':
      return h('input', { type: 'number', name, step: spec.type === 'int' ? 1 : 'any', value: def ?? '' });
    case 'bool':
      return h('input', { type: 'checkbox', name, checked: def === true });
    case 'list': case 'object':
      return h('textarea', { name, rows: 2, spellcheck: 'false', placeholder: spec.type === 'list' ? '[ ]' : '{ }' }, def !== undefined && def !== null ? JSON.stringify(def) : '');
    default:
      return h('textarea', { name, rows: 2 }, def ?? '');
  }
}

function readInput(el, spec) {
  if (spec.type === 'bool') return el.checked;
  const v = el.value;
  if (v === '' && spec.default !== undefined && spec.default !== null) return undefined;
  if (spec.type === 'int' || spec.type === 'double') return v === '' ? undefined : Number(v);
  if (spec.type === 'list' || spec.type === 'object') return v.trim() === '' ? undefined : JSON.parse(v);
  return v;
}

export async function page({ main, params, query, signal }) {
  const ref = params[0];
  const flow = await get(`/api/v1/flows/${encodeURIComponent(ref)}`);
  const [all, limits] = await Promise.all([get('/api/v1/flows'), get('/api/v1/limits').catch(() => ({ interactive_timeout_s: 100 }))]);
  const versions = all.filter((f) => f.name === flow.name).sort((a, b) => b.version - a.version);
  const version = h('select', { onchange: (e) => { location.hash = `#/flows/${encodeURIComponent(e.target.value)}`; } },
    versions.map((v) => h('option', { value: v.ref, selected: v.ref === flow.ref }, v.ref)));
  const sessionSel = h('select', { name: 'session', id: 'session-select' });
  const sessions = new Map();
  const pickSession = () => {
    const keep = sessionSel.value || query.get('session') || '';
    const mine = [...sessions.values()].filter((s) => (s.flow_ref || '').split('@')[0] === flow.name);
    clear(sessionSel, h('option', { value: '' }, mine.length ? 'choose a session' : 'no session for this flow'),
      mine.map((s) => h('option', { value: s.id, selected: s.id === keep, disabled: !s.actions.includes('test') },
        `${s.id} · ${s.flow_ref} · ${s.status}${s.phase ? ` (${s.phase})` : ''}`)));
    runBtn.disabled = !sessions.get(sessionSel.value)?.actions.includes('test');
    showSwitch();
  };
  // A session on another version of this flow runs that version: offer to switch it here.
  const switchBtn = h('button', { type: 'button', id: 'switch-session', hidden: true }, `Switch session to ${flow.ref}`);
  const showSwitch = () => {
    const s = sessions.get(sessionSel.value);
    switchBtn.hidden = !s || !s.actions.includes('switch') || s.flow_ref === flow.ref;
  };
  switchBtn.addEventListener('click', () => act(switchBtn, async () => {
    const v = await post(`/api/v1/sessions/${encodeURIComponent(sessionSel.value)}/switch`, { flow: flow.ref });
    sessions.set(v.id, v);
    pickSession();
    notify({ message: v.note || `Session ${v.id} now runs ${flow.ref}.` }, 'info');
  }));
  const detail = h('aside', { class: 'card node-detail', 'aria-live': 'polite' }, h('p', { class: 'muted' }, 'Select a node to see its settings.'));
  const showNode = (n) => {
    const rows = [['Type', n.type], ['Source', n.source], ['Connection', n.connection], ['API', n.api], ['Variant', n.variant],
      ['Aggregation', n.aggregation ? 'yes: runs once over all lines' : null],
      ['Activate', n.activate ? `when ${n.activate.when} is ${JSON.stringify(n.activate.is)}` : null]].filter(([, v]) => v);
    clear(detail, h('h2', {}, n.name), h('dl', {}, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, String(v))])),
      n.inputs ? [h('h3', {}, 'Inputs'), pre(n.inputs)] : null);
  };
  const svg = drawDag(flow, showNode);
  const runBtn = h('button', { type: 'submit', class: 'primary', disabled: true }, 'Run line');
  const startBtn = auth.writer ? button('Start session…', async () => {
    const { startDialog } = await import('./sessions.js');
    startDialog(main, flow.ref);
  }) : null;
  const deployBtn = flow.actions.includes('deploy') ? button('Deploy…', async () => {
    const { deployDialog } = await import('./endpoints.js');
    deployDialog(main, flow.ref);
  }, { id: 'deploy' }) : null;
  const editLink = h('a', { class: 'button', id: 'edit-flow', href: `#/flows/${encodeURIComponent(flow.ref)}/edit` },
    flow.actions.includes('edit') ? 'Edit' : 'Files');
  const compareLink = versions.length > 1
    ? h('a', { id: 'compare-versions', href: `#/flows/${encodeURIComponent(flow.name)}/compare?from=${Math.max(1, flow.version - 1)}&to=${flow.version}` }, 'Compare versions')
    : null;
  main.append(
    h('div', { class: 'bar' }, h('h1', {}, 'Flow ', h('code', {}, flow.name)), field('Version', version),
      field('Compute session', sessionSel), switchBtn, startBtn, deployBtn, editLink, compareLink),
    flow.message ? h('p', { class: 'muted', id: 'version-message' }, `${flow.ref}: ${flow.message}`) : null,
    h('div', { class: 'flow-grid' },
      h('section', { class: 'card dag-box', 'aria-label': 'DAG' }, h('div', { class: 'scroll' }, svg),
        h('p', { class: 'legend muted' }, h('span', { class: 'key t-llm' }, 'llm'), h('span', { class: 'key t-python' }, 'python'), h('span', { class: 'key t-prompt' }, 'prompt'), h('span', { class: 'key agg' }, 'aggregation'), ' dashed arrows: activate conditions')),
      detail));
  const hl = query.get('node');
  if (hl) { const n = flow.nodes.find((x) => x.name === hl); if (n) showNode(n); }

  // The test pane.
  const chatIn = Object.entries(flow.inputs).find(([, s]) => s.is_chat_input);
  const histIn = Object.entries(flow.inputs).find(([, s]) => s.is_chat_history);
  const chatOut = Object.entries(flow.outputs).find(([, s]) => s.is_chat_output);
  const result = h('div', { class: 'result', 'aria-live': 'polite', id: 'test-result' });
  const limit = h('p', { class: 'muted' }, `Interactive tests stop after ${limits.interactive_timeout_s} s (the server's limit); run longer work as a batch run.`);
  const controls = new Map();
  const history = [];
  const messages = h('ol', { class: 'chat', 'aria-label': 'conversation' });
  const form = h('form', { class: 'card test-pane', id: 'test-form', 'aria-labelledby': 'test-h' });
  form.append(h('h2', { id: 'test-h' }, chatIn ? 'Chat' : 'Test one line'), limit);
  if (chatIn) form.append(messages);
  for (const [name, spec] of Object.entries(flow.inputs)) {
    if (histIn && name === histIn[0]) continue;
    const c = inputControl(name, spec);
    controls.set(name, [c, spec]);
    form.append(field(`${name} (${spec.type})`, c));
  }
  form.append(h('div', { class: 'actions' }, runBtn,
    auth.writer ? null : h('span', { class: 'muted' }, 'Viewers read flows; running a line needs the user role.')), result);
  main.append(form);

  const run = async () => {
    const inputs = {};
    try {
      for (const [name, [c, spec]] of controls) {
        const v = readInput(c, spec);
        if (v !== undefined) inputs[name] = v;
      }
    } catch (e) {
      clear(result, h('p', { class: 'error' }, `An input is not valid JSON: ${e.message}`));
      return;
    }
    if (histIn) inputs[histIn[0]] = history.slice();
    const id = sessionSel.value;
    const t0 = performance.now();
    const live = h('pre', { class: 'stream' });
    let bubble = null;
    if (chatIn) {
      messages.append(h('li', { class: 'user' }, String(inputs[chatIn[0]] ?? '')));
      bubble = h('li', { class: 'assistant streaming' }, '');
      messages.append(bubble);
      controls.get(chatIn[0])[0].value = '';
    }
    const timer = h('span', { class: 'muted' }, 'running…');
    clear(result, timer, chatIn ? null : live);
    const tick = setInterval(() => { timer.textContent = `running… ${fmtDur((performance.now() - t0) / 1000)} of ${limits.interactive_timeout_s} s`; }, 200);
    // Nodes colour one by one as the line's node events arrive.
    colourDag(svg, [], false);
    runBtn.disabled = true;
    let final = null;
    try {
      await sse(`/api/v1/sessions/${id}/test`, { method: 'POST', body: { inputs }, signal, onEvent: (name, data) => {
        if (name === 'chunk') (bubble || live).append(data.text);
        if (name === 'node') colourNode(svg, data.node, data.status);
        if (name === 'result') final = data;
      } });
      if (!final) throw new Error('the stream ended without a result');
      colourDag(svg, final.node_runs, false);
      const saved = { flow: flow.ref, session: id, inputs, at: Date.now(), ...final };
      sessionStorage.setItem('flowrt.lastTest', JSON.stringify(saved));
      const traceLink = h('a', { href: '#/trace/test', id: 'trace-link' }, 'View this line’s trace');
      if (chatIn) {
        const answer = final.outputs && chatOut ? final.outputs[chatOut[0]] : null;
        bubble.classList.remove('streaming');
        if (answer !== null && answer !== undefined) bubble.textContent = String(answer);
        if (final.error) bubble.append(h('div', { class: 'error' }, final.error.display || final.error.message));
        else history.push({ inputs: { [chatIn[0]]: inputs[chatIn[0]] }, outputs: final.outputs });
        clear(result, h('p', {}, `Replied in ${fmtDur(final.duration)}. `, traceLink));
      } else {
        clear(result,
          final.error ? h('div', { class: 'error', id: 'test-error' }, h('strong', {}, `Node ${final.error.node || '?'} failed: `), final.error.display || final.error.message) : null,
          h('h3', {}, 'Outputs'), h('pre', { class: 'json', id: 'test-outputs' }, JSON.stringify(final.outputs, null, 2)),
          h('p', {}, `Took ${fmtDur(final.duration)}. `, traceLink));
      }
    } catch (e) {
      colourDag(svg, [], false);
      if (bubble) bubble.remove();
      clear(result, h('p', { class: 'error' }, `${e.code || 'Error'}: ${e.message}`));
    } finally {
      clearInterval(tick);
      runBtn.disabled = !sessions.get(sessionSel.value)?.actions.includes('test');
    }
  };
  form.addEventListener('submit', (ev) => { ev.preventDefault(); notify(null); run(); });
  sessionSel.addEventListener('change', () => { runBtn.disabled = !sessionSel.value || !auth.writer; showSwitch(); });
  follow('/api/v1/sessions/events', signal, (name, s) => {
    if (name !== 'session') return;
    sessions.set(s.id, s);
    pickSession();
  });
  pickSession();
}
