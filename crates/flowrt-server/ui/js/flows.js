// Flows: owns the flows list (#/flows) and a flow's page (#/flows/REF): its DAG drawn as SVG,
// the compute-session dropdown, and the single-line test pane (a form from the flow's inputs, or
// a chat). Each page loads what it shows, renders it with pure functions from data to elements,
// and acts on its controls (call the API, then redraw or notify). What the caller may do comes
// from the server: a flow's `actions` (edit, deploy, start_session), each session's (test,
// switch) and the caller's own (`auth.can`).
import { auth, get, post, sse, follow } from './api.js';
import { h, clear, fmtAgo, fmtDur, pre, field, button, table, notify, act } from './dom.js';

// ---- the flows list ----

export async function list({ main }) {
  const flows = await get('/api/v1/flows');
  main.append(h('h1', {}, 'Flows'));
  main.append(flows.length ? flowsTable(byName(flows))
    : h('p', { class: 'muted' }, 'No flows yet: push one with ', h('code', {}, 'flowrt flow push DIR'), '.'));
}

// Versions by flow name (in the order names first appear), newest version first.
function byName(flows) {
  const names = new Map();
  for (const f of flows) {
    if (!names.has(f.name)) names.set(f.name, []);
    names.get(f.name).push(f);
  }
  for (const vs of names.values()) vs.sort((a, b) => b.version - a.version);
  return names;
}

function flowsTable(names) {
  return h('div', { class: 'scroll' }, table(['Flow', 'Versions', 'Latest', 'Files', 'Pushed'],
    [...names.entries()].map(([name, vs]) => flowRow(name, vs)), { id: 'flows' }));
}

function flowRow(name, vs) {
  const last = vs[0];
  return h('tr', { 'data-flow': name },
    h('td', {}, h('a', { href: `#/flows/${encodeURIComponent(name)}` }, name)),
    h('td', {}, vs.map((v, i) => [i ? ', ' : '', h('a', { href: `#/flows/${encodeURIComponent(v.ref)}` }, `v${v.version}`)])),
    h('td', {}, h('code', {}, last.hash.slice(0, 19))),
    h('td', {}, `${last.files} files, ${(last.bytes / 1024).toFixed(1)} KiB`),
    h('td', {}, fmtAgo(last.created)));
}

// ---- the DAG ----

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

// Where each box goes: every row centred in the widest one.
function placeNodes(rows) {
  const width = Math.max(...rows.map((r) => (r ? r.length : 0))) * (W + GX) + GX;
  const height = rows.length * (H + GY) + 10;
  const pos = new Map();
  rows.forEach((row, l) => (row || []).forEach((n, i) => {
    const rowW = row.length * (W + GX) - GX;
    pos.set(n, { x: (width - rowW) / 2 + i * (W + GX), y: 10 + l * (H + GY) });
  }));
  return { width, height, pos };
}

// An arrow from a node to one that reads it; an activate condition's is dashed, and set a little
// aside so it does not hide a data edge between the same two nodes.
function edgePath(e, a, b) {
  const aside = e.activate ? 12 : 0;
  const x1 = a.x + W / 2 + aside;
  const y1 = a.y + H;
  const x2 = b.x + W / 2 + aside;
  const y2 = b.y;
  const my = (y1 + y2) / 2;
  const title = e.activate ? `activate: ${e.from} → ${e.to}`
    : `${e.from} → ${e.to}${e.input ? ` (${e.input})` : ''}${e.output ? ` (output ${e.output})` : ''}`;
  return h('svg:path', { d: `M${x1},${y1} C${x1},${my} ${x2},${my} ${x2},${y2}`, class: e.activate ? 'edge activate' : 'edge', 'marker-end': 'url(#arrow)' },
    h('svg:title', {}, title));
}

// Each edge once: a node reading another through several inputs gets one arrow.
function edgePaths(flow, pos) {
  const seen = new Set();
  const paths = [];
  for (const e of flow.edges) {
    const a = pos.get(e.from);
    const b = pos.get(e.to);
    const key = `${e.from}>${e.to}>${!!e.activate}`;
    if (!a || !b || seen.has(key)) continue;
    seen.add(key);
    paths.push(edgePath(e, a, b));
  }
  return paths;
}

// A box's second line: the node's type and condition, or the flow's input or output names.
function nodeKind(flow, name, n) {
  if (n) return `${n.type}${n.aggregation ? ' · aggregation' : ''}${n.activate ? ` · when ${n.activate.when} is ${JSON.stringify(n.activate.is)}` : ''}`.slice(0, 30);
  return (name === 'inputs' ? Object.keys(flow.inputs).join(', ') : Object.keys(flow.outputs).join(', ')).slice(0, 26);
}

// One node's box (or the inputs' and outputs'), a button that selects it.
function nodeBox(flow, name, n, p, onSelect) {
  const type = n ? n.type : 'io';
  const cls = ['node', `t-${type}`, n && n.aggregation ? 'agg' : '', n && n.activate ? 'cond' : ''].join(' ');
  const label = n && n.aggregation ? `${name} (aggregation)` : name;
  const g = h('svg:g', { class: cls, 'data-node': name, tabindex: 0, role: 'button', 'aria-label': `${label}, ${type}`, transform: `translate(${p.x},${p.y})` },
    h('svg:rect', { width: W, height: H, rx: 7 }),
    h('svg:text', { x: 10, y: 18, class: 'name' }, name.length > 20 ? `${name.slice(0, 19)}…` : name),
    h('svg:text', { x: 10, y: 35, class: 'kind' }, nodeKind(flow, name, n)));
  const pick = () => onSelect && onSelect(n || { name, type: 'io' });
  g.addEventListener('click', pick);
  g.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); pick(); } });
  return g;
}

export function drawDag(flow, onSelect) {
  const { width, height, pos } = placeNodes(layout(flow).rows);
  const byNode = new Map(flow.nodes.map((n) => [n.name, n]));
  return h('svg:svg', { viewBox: `0 0 ${width} ${height}`, width, height, class: 'dag', role: 'img', 'aria-label': `DAG of ${flow.ref}: ${flow.nodes.length} nodes` },
    h('svg:defs', {}, h('svg:marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
      h('svg:path', { d: 'M0,0 L10,5 L0,10 z', class: 'arrowhead' }))),
    edgePaths(flow, pos),
    [...pos].map(([name, p]) => nodeBox(flow, name, byNode.get(name), p, onSelect)));
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

// ---- the flow page: load ----

// The flow, its other versions (newest first) and the server's limit on an interactive test.
async function loadFlowPage(ref) {
  const flow = await get(`/api/v1/flows/${encodeURIComponent(ref)}`);
  const [all, limits] = await Promise.all([get('/api/v1/flows'), get('/api/v1/limits').catch(() => ({ interactive_timeout_s: 100 }))]);
  const versions = all.filter((f) => f.name === flow.name).sort((a, b) => b.version - a.version);
  return { flow, versions, limits };
}

// ---- the flow page: render ----

// A node's settings, for the aside beside the DAG.
function nodeDetail(n) {
  const rows = [['Type', n.type], ['Source', n.source], ['Connection', n.connection], ['API', n.api], ['Variant', n.variant],
    ['Aggregation', n.aggregation ? 'yes: runs once over all lines' : null],
    ['Activate', n.activate ? `when ${n.activate.when} is ${JSON.stringify(n.activate.is)}` : null]].filter(([, v]) => v);
  return [h('h2', {}, n.name), h('dl', {}, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, String(v))])),
    n.inputs ? [h('h3', {}, 'Inputs'), pre(n.inputs)] : null];
}

function versionSelect(flow, versions) {
  return h('select', { onchange: (e) => { location.hash = `#/flows/${encodeURIComponent(e.target.value)}`; } },
    versions.map((v) => h('option', { value: v.ref, selected: v.ref === flow.ref }, v.ref)));
}

// The sessions running any version of this flow; one the caller may not test on is listed but
// cannot be chosen.
function sessionOptions(sessions, flow, keep) {
  const mine = [...sessions.values()].filter((s) => (s.flow_ref || '').split('@')[0] === flow.name);
  return [h('option', { value: '' }, mine.length ? 'choose a session' : 'no session for this flow'),
    mine.map((s) => h('option', { value: s.id, selected: s.id === keep, disabled: !s.actions.includes('test') },
      `${s.id} · ${s.flow_ref} · ${s.status}${s.phase ? ` (${s.phase})` : ''}`))];
}

// The bar over the DAG: the version, the session, and what the caller may do with the flow. The
// start and deploy dialogs belong to their own pages' modules, loaded when first asked for.
function flowBar(ui, versions) {
  const { flow } = ui;
  const startBtn = flow.actions.includes('start_session') ? button('Start session…', async () => {
    const { startDialog } = await import('./sessions.js');
    startDialog(ui.main, flow.ref);
  }) : null;
  const deployBtn = flow.actions.includes('deploy') ? button('Deploy…', async () => {
    const { deployDialog } = await import('./endpoints.js');
    deployDialog(ui.main, flow.ref);
  }, { id: 'deploy' }) : null;
  const editLink = h('a', { class: 'button', id: 'edit-flow', href: `#/flows/${encodeURIComponent(flow.ref)}/edit` },
    flow.actions.includes('edit') ? 'Edit' : 'Files');
  const compareLink = versions.length > 1
    ? h('a', { id: 'compare-versions', href: `#/flows/${encodeURIComponent(flow.name)}/compare?from=${Math.max(1, flow.version - 1)}&to=${flow.version}` }, 'Compare versions')
    : null;
  return h('div', { class: 'bar' }, h('h1', {}, 'Flow ', h('code', {}, flow.name)), field('Version', versionSelect(flow, versions)),
    field('Compute session', ui.sessionSel), ui.switchBtn, startBtn, deployBtn, editLink, compareLink);
}

function dagSection(svg) {
  return h('section', { class: 'card dag-box', 'aria-label': 'DAG' }, h('div', { class: 'scroll' }, svg),
    h('p', { class: 'legend muted' }, h('span', { class: 'key t-llm' }, 'llm'), h('span', { class: 'key t-python' }, 'python'), h('span', { class: 'key t-prompt' }, 'prompt'), h('span', { class: 'key agg' }, 'aggregation'), ' dashed arrows: activate conditions'));
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

// The test pane: a field per input, or a chat when the flow has a chat input (its history is
// kept here and sent with each question, not typed). Returns the pane's parts for `runLine`.
function testPane(flow, limits, runBtn) {
  const inputWith = (flag) => (Object.entries(flow.inputs).find(([, s]) => s[flag]) || [])[0];
  const pane = {
    chat: inputWith('is_chat_input'), hist: inputWith('is_chat_history'), limits, controls: new Map(), history: [],
    out: (Object.entries(flow.outputs).find(([, s]) => s.is_chat_output) || [])[0],
    messages: h('ol', { class: 'chat', 'aria-label': 'conversation' }),
    result: h('div', { class: 'result', 'aria-live': 'polite', id: 'test-result' }),
  };
  pane.form = h('form', { class: 'card test-pane', id: 'test-form', 'aria-labelledby': 'test-h' },
    h('h2', { id: 'test-h' }, pane.chat ? 'Chat' : 'Test one line'),
    h('p', { class: 'muted' }, `Interactive tests stop after ${limits.interactive_timeout_s} s (the server's limit); run longer work as a batch run.`),
    pane.chat ? pane.messages : null);
  for (const [name, spec] of Object.entries(flow.inputs)) {
    if (name === pane.hist) continue;
    const c = inputControl(name, spec);
    pane.controls.set(name, [c, spec]);
    pane.form.append(field(`${name} (${spec.type})`, c));
  }
  pane.form.append(h('div', { class: 'actions' }, runBtn,
    auth.can('submit_run') ? null : h('span', { class: 'muted' }, 'Viewers read flows; running a line needs the user role.')), pane.result);
  return pane;
}

// While a line runs: the question and an empty reply in a chat, else the streamed text, under
// a clock counting up to the server's limit. Returns where chunks go and the clock to stop.
function startLine(pane, inputs) {
  const t0 = performance.now();
  const stream = h('pre', { class: 'stream' });
  let bubble = null;
  if (pane.chat) {
    pane.messages.append(h('li', { class: 'user' }, String(inputs[pane.chat] ?? '')));
    bubble = h('li', { class: 'assistant streaming' }, '');
    pane.messages.append(bubble);
    pane.controls.get(pane.chat)[0].value = '';
  }
  const timer = h('span', { class: 'muted' }, 'running…');
  clear(pane.result, timer, pane.chat ? null : stream);
  const tick = setInterval(() => { timer.textContent = `running… ${fmtDur((performance.now() - t0) / 1000)} of ${pane.limits.interactive_timeout_s} s`; }, 200);
  return { out: bubble || stream, bubble, tick };
}

const traceLink = () => h('a', { href: '#/trace/test', id: 'trace-link' }, 'View this line’s trace');

// A chat's reply replaces what streamed into its bubble.
function showReply(pane, bubble, final) {
  const answer = final.outputs && pane.out ? final.outputs[pane.out] : null;
  bubble.classList.remove('streaming');
  if (answer !== null && answer !== undefined) bubble.textContent = String(answer);
  if (final.error) bubble.append(h('div', { class: 'error' }, final.error.display || final.error.message));
  clear(pane.result, h('p', {}, `Replied in ${fmtDur(final.duration)}. `, traceLink()));
}

function showOutputs(pane, final) {
  clear(pane.result,
    final.error ? h('div', { class: 'error', id: 'test-error' }, h('strong', {}, `Node ${final.error.node || '?'} failed: `), final.error.display || final.error.message) : null,
    h('h3', {}, 'Outputs'), h('pre', { class: 'json', id: 'test-outputs' }, JSON.stringify(final.outputs, null, 2)),
    h('p', {}, `Took ${fmtDur(final.duration)}. `, traceLink()));
}

// ---- the flow page: act ----

const canTest = (ui) => !!ui.sessions.get(ui.sessionSel.value)?.actions.includes('test');

// A session on another version of this flow runs that version: offer to switch it here.
function showSwitch(ui) {
  const s = ui.sessions.get(ui.sessionSel.value);
  ui.switchBtn.hidden = !s || !s.actions.includes('switch') || s.flow_ref === ui.flow.ref;
}

// Redraw the dropdown, keeping the choice (at first, the session the URL names).
function drawSessions(ui) {
  const keep = ui.sessionSel.value || ui.preset || '';
  clear(ui.sessionSel, sessionOptions(ui.sessions, ui.flow, keep));
  ui.runBtn.disabled = !canTest(ui);
  showSwitch(ui);
}

async function switchSession(ui) {
  const v = await post(`/api/v1/sessions/${encodeURIComponent(ui.sessionSel.value)}/switch`, { flow: ui.flow.ref });
  ui.sessions.set(v.id, v);
  drawSessions(ui);
  notify({ message: v.note || `Session ${v.id} now runs ${ui.flow.ref}.` }, 'info');
}

// The inputs as typed, by their types (throws on JSON that does not parse), and the chat so far.
function readInputs(pane) {
  const inputs = {};
  for (const [name, [c, spec]] of pane.controls) {
    const v = readInput(c, spec);
    if (v !== undefined) inputs[name] = v;
  }
  if (pane.hist) inputs[pane.hist] = pane.history.slice();
  return inputs;
}

// The test call: text chunks go to `out` and nodes colour as they finish; resolves with the line.
async function streamLine(ui, id, inputs, out, signal) {
  let final = null;
  await sse(`/api/v1/sessions/${id}/test`, { method: 'POST', body: { inputs }, signal, onEvent: (name, data) => {
    if (name === 'chunk') out.append(data.text);
    if (name === 'node') colourNode(ui.svg, data.node, data.status);
    if (name === 'result') final = data;
  } });
  if (!final) throw new Error('the stream ended without a result');
  return final;
}

// Run one line in the chosen session; the trace page reads it back from this tab's storage.
async function runLine(ui, pane, signal) {
  let inputs;
  try {
    inputs = readInputs(pane);
  } catch (e) {
    clear(pane.result, h('p', { class: 'error' }, `An input is not valid JSON: ${e.message}`));
    return;
  }
  const id = ui.sessionSel.value;
  const running = startLine(pane, inputs);
  colourDag(ui.svg, [], false);
  ui.runBtn.disabled = true;
  try {
    const final = await streamLine(ui, id, inputs, running.out, signal);
    colourDag(ui.svg, final.node_runs, false);
    sessionStorage.setItem('flowrt.lastTest', JSON.stringify({ flow: ui.flow.ref, session: id, inputs, at: Date.now(), ...final }));
    if (!pane.chat) showOutputs(pane, final);
    else {
      if (!final.error) pane.history.push({ inputs: { [pane.chat]: inputs[pane.chat] }, outputs: final.outputs });
      showReply(pane, running.bubble, final);
    }
  } catch (e) {
    colourDag(ui.svg, [], false);
    if (running.bubble) running.bubble.remove();
    clear(pane.result, h('p', { class: 'error' }, `${e.code || 'Error'}: ${e.message}`));
  } finally {
    clearInterval(running.tick);
    ui.runBtn.disabled = !canTest(ui);
  }
}

// ---- the flow page ----

export async function page({ main, params, query, signal }) {
  const { flow, versions, limits } = await loadFlowPage(params[0]);
  const ui = {
    main, flow, preset: query.get('session'), sessions: new Map(),
    sessionSel: h('select', { name: 'session', id: 'session-select' }),
    runBtn: h('button', { type: 'submit', class: 'primary', disabled: true }, 'Run line'),
    detail: h('aside', { class: 'card node-detail', 'aria-live': 'polite' }, h('p', { class: 'muted' }, 'Select a node to see its settings.')),
  };
  ui.switchBtn = button(`Switch session to ${flow.ref}`, () => act(ui.switchBtn, () => switchSession(ui)), { id: 'switch-session', hidden: true });
  const showNode = (n) => clear(ui.detail, nodeDetail(n));
  ui.svg = drawDag(flow, showNode);
  // The DOM's own append writes a null as the text "null": a version without a message adds nothing.
  const message = flow.message ? [h('p', { class: 'muted', id: 'version-message' }, `${flow.ref}: ${flow.message}`)] : [];
  main.append(flowBar(ui, versions), ...message, h('div', { class: 'flow-grid' }, dagSection(ui.svg), ui.detail));
  const highlighted = query.get('node') && flow.nodes.find((x) => x.name === query.get('node'));
  if (highlighted) showNode(highlighted);
  const pane = testPane(flow, limits, ui.runBtn);
  main.append(pane.form);
  pane.form.addEventListener('submit', (ev) => { ev.preventDefault(); notify(null); runLine(ui, pane, signal); });
  ui.sessionSel.addEventListener('change', () => { ui.runBtn.disabled = !canTest(ui); showSwitch(ui); });
  // The stream sends every visible session first, then each change.
  follow('/api/v1/sessions/events', signal, (name, s) => {
    if (name !== 'session') return;
    ui.sessions.set(s.id, s);
    drawSessions(ui);
  });
  drawSessions(ui);
}
