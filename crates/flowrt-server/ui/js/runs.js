// Batch and evaluation runs: owns the runs list (#/runs, with live progress, and the submit form
// at #/runs?new=1: data upload, column mapping, variant, base run), a run's page (#/runs/NAME:
// per-line table, node timeline, metrics, cancel, resume, downloads) and the line-by-line
// comparison of two or more runs (#/compare). Each page loads what it shows, renders it with
// pure functions from data to elements, and acts on its controls (call the API, then redraw).
// Which buttons a run offers comes from the server: its `actions` (cancel, resume, deploy...), and
// whether the caller may submit one from theirs (`auth.can`).
import { auth, get, post, follow } from './api.js';
import { h, clear, fmtDur, fmtJson, badge, field, button, table, act, download } from './dom.js';

// A run's name, then an optional sub-resource, then which session's run it is.
const q = (name, session, sub = '') => `${encodeURIComponent(name)}${sub}${session ? `?session=${encodeURIComponent(session)}` : ''}`;
const runHref = (r) => `#/runs/${q(r.name, r.session)}`;

function progressText(p) {
  const eta = p.eta_seconds === null || p.eta_seconds === undefined ? '' : ` · ETA ${fmtDur(p.eta_seconds)}`;
  return `${p.done}/${p.total || '?'} done · ${p.failed} failed · ${p.lines_per_second.toFixed(1)} lines/s${eta}`;
}

function progressBar(p) {
  return h('progress', { max: p.total || 1, value: p.done, 'aria-label': 'lines done' });
}

// ---- the runs list ----

// One run's row; a running one follows its progress until it ends.
function runRow(r, flowOf, pick, signal) {
  const cb = h('input', { type: 'checkbox', 'aria-label': `select ${r.name} to compare`, onchange: (e) => pick(r.name, e.target.checked) });
  const prog = h('td', { class: 'progress' }, `${r.completed_lines + r.failed_lines}/${r.total_lines} done · ${r.failed_lines} failed`,
    r.duration_s ? ` · ${((r.completed_lines + r.failed_lines) / Math.max(r.duration_s, 0.001)).toFixed(1)} lines/s` : '');
  const st = h('td', {}, badge(r.status));
  if (r.status === 'Running') {
    follow(`/api/v1/runs/${q(r.name, r.session, '/events')}`, signal, (name, data) => {
      if (name === 'progress') clear(prog, progressBar(data), ' ', progressText(data));
      if (name === 'end') clear(st, badge(data.status));
    });
  }
  return h('tr', { 'data-run': r.name },
    h('td', {}, cb), h('td', {}, h('a', { href: runHref(r) }, r.name)), st, prog,
    h('td', {}, r.flow || flowOf.get(r.session) || '–'), h('td', {}, h('a', { href: `#/sessions/${r.session}` }, r.session)),
    h('td', {}, r.base_run ? h('a', { href: `#/runs/${encodeURIComponent(r.base_run)}` }, r.base_run) : ''),
    h('td', {}, r.variant || ''), h('td', {}, r.created ? r.created.replace('T', ' ').slice(0, 19) : ''));
}

export async function list({ main, query, signal }) {
  const [runs, sessions] = await Promise.all([get('/api/v1/runs'), get('/api/v1/sessions')]);
  const flowOf = new Map(sessions.map((s) => [s.id, s.flow_ref]));
  const picked = new Set();
  const compareBtn = button('Compare selected', () => {
    location.hash = `#/compare?runs=${[...picked].map(encodeURIComponent).join(',')}`;
  }, { disabled: true, id: 'compare' });
  const pick = (name, on) => {
    if (on) picked.add(name); else picked.delete(name);
    compareBtn.disabled = picked.size < 2;
  };
  main.append(h('div', { class: 'bar' }, h('h1', {}, 'Runs'),
    auth.can('submit_run') ? h('a', { href: '#/runs?new=1', class: 'button primary', id: 'submit-batch' }, 'Submit a batch…') : null, compareBtn));
  if (query.get('new') && auth.can('submit_run')) main.append(submitForm(sessions, runs));
  const rows = runs.slice().reverse().map((r) => runRow(r, flowOf, pick, signal));
  main.append(runs.length ? h('div', { class: 'scroll' }, table(['', 'Run', 'Status', 'Progress', 'Flow', 'Session', 'Base run', 'Variant', 'Created'], rows, { id: 'runs' }))
    : h('p', { class: 'muted' }, 'No runs yet.'));
}

// ---- the submit form ----

function columnsOf(text, format) {
  const first = text.split('\n').find((l) => l.trim());
  if (!first) return [];
  if (format === 'jsonl') { try { return Object.keys(JSON.parse(first)); } catch (_) { return []; } }
  return first.split(format === 'tsv' ? '\t' : ',').map((c) => c.trim().replace(/^"|"$/g, ''));
}

function submitControls(running, runs) {
  return {
    session: h('select', { name: 'session', required: true }, running.map((s) => h('option', { value: s.id }, `${s.id} · ${s.flow_ref}`))),
    name: h('input', { name: 'name', required: true, value: `run-${new Date().toISOString().slice(0, 19).replace(/[-:T]/g, '')}` }),
    file: h('input', { type: 'file', name: 'data', accept: '.jsonl,.csv,.tsv', required: true }),
    cols: h('p', { class: 'muted', role: 'status' }),
    mapping: h('div', { class: 'mapping' }),
    variant: h('input', { name: 'variant', placeholder: '${node.variant_1}' }),
    base: h('select', { name: 'base' }, h('option', { value: '' }, 'none'), runs.map((r) => h('option', { value: r.name }, r.name))),
    concurrency: h('input', { type: 'number', name: 'concurrency', min: 1, max: 1024, placeholder: '16' }),
    nodes: h('input', { type: 'number', name: 'nodes', min: 1, max: 64, placeholder: '1' }),
    err: h('p', { class: 'error', role: 'alert' }),
  };
}

// A field per input of the flow, mapped to the data column of its name when there is one.
function mappingFields(flow, columns) {
  return [h('h3', {}, `Column mapping: inputs of ${flow.ref}`),
    Object.entries(flow.inputs).map(([input, spec]) => {
      const guess = columns.includes(input) ? `\${data.${input}}` : '';
      return field(`${input} (${spec.type}${spec.default !== undefined && spec.default !== null ? `, default ${JSON.stringify(spec.default)}` : ''})`,
        h('input', { name: `map-${input}`, 'data-input': input, value: guess, placeholder: '${data.COLUMN} or ${run.outputs.NAME}' }));
    })];
}

// The chosen session's flow decides the mapping's fields. The session and the file each redraw
// it; only the latest drawing lands (two at once would otherwise both add their fields).
async function drawMapping(form) {
  const mine = ++form.drawing;
  const s = form.running.find((x) => x.id === form.c.session.value);
  if (!s || !s.flow_ref) { clear(form.c.mapping); return; }
  const flow = await get(`/api/v1/flows/${encodeURIComponent(s.flow_ref)}`);
  if (mine !== form.drawing) return;
  clear(form.c.mapping, mappingFields(flow, form.data ? columnsOf(form.data, form.format) : []));
}

// A data file chosen: its rows and columns, then the mapping guessed from them.
async function readData(form) {
  const f = form.c.file.files[0];
  if (!f) return;
  form.data = await f.text();
  form.format = f.name.endsWith('.csv') ? 'csv' : f.name.endsWith('.tsv') ? 'tsv' : 'jsonl';
  const c = columnsOf(form.data, form.format);
  form.c.cols.textContent = `${form.data.split('\n').filter((l) => l.trim()).length - (form.format === 'jsonl' ? 0 : 1)} rows; columns: ${c.join(', ')}`;
  drawMapping(form);
}

function runBody(c, dataRef) {
  const column_mapping = {};
  for (const i of c.mapping.querySelectorAll('input[data-input]')) if (i.value.trim()) column_mapping[i.dataset.input] = i.value.trim();
  const body = { session: c.session.value, name: c.name.value.trim(), data_ref: dataRef, column_mapping };
  if (c.variant.value.trim()) body.variant = c.variant.value.trim();
  if (c.base.value) body.run = c.base.value;
  if (c.concurrency.value) body.concurrency = Number(c.concurrency.value);
  if (Number(c.nodes.value) > 1) body.nodes = Number(c.nodes.value);
  return body;
}

// Upload the data, submit the run, and open its page (which waits for the run to start).
async function submitRun(form) {
  const { c } = form;
  c.err.textContent = '';
  if (!form.data) { c.err.textContent = 'Choose a data file.'; return; }
  try {
    const up = await post(`/api/v1/data?format=${form.format}`, form.data, { headers: { 'Content-Type': 'application/octet-stream' } });
    const r = await post('/api/v1/runs', runBody(c, up.ref));
    location.hash = `#/runs/${q(r.name, r.session)}&new=1`;
  } catch (e) {
    c.err.textContent = `${e.code}: ${e.message}`;
  }
}

function submitForm(sessions, runs) {
  const running = sessions.filter((s) => s.actions.includes('test')); // running, and the caller may run on it
  const form = { running, c: submitControls(running, runs), data: null, format: 'jsonl', drawing: 0 };
  const { c } = form;
  c.file.addEventListener('change', () => readData(form));
  c.session.addEventListener('change', () => drawMapping(form));
  const el = h('form', { class: 'card', id: 'submit-form', onsubmit: (ev) => { ev.preventDefault(); act(ev.submitter, () => submitRun(form)); } },
    h('h2', {}, 'Submit a batch run'),
    running.length ? null : h('p', { class: 'error' }, 'Start a compute session first: runs execute inside one.'),
    field('Session', c.session), field('Run name', c.name), field('Data (.jsonl, .csv, .tsv)', c.file), c.cols, c.mapping,
    field('Variant', c.variant, 'optional: ${node.variant_id}'), field('Base run (evaluation)', c.base), field('Concurrency', c.concurrency),
    field('Nodes', c.nodes, 'optional: spread the lines over this many sessions like the chosen one (on Ray, each where Ray finds room)'),
    c.err, h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Submit'), h('a', { href: '#/runs', class: 'button' }, 'Cancel')));
  if (running.length) drawMapping(form);
  return el;
}

// ---- a run's page: load ----

function tokensOf(line) {
  let t = 0;
  for (const n of line.nodes || []) if (n.usage) t += n.usage.total_tokens || ((n.usage.prompt_tokens || 0) + (n.usage.completion_tokens || 0));
  return t;
}

async function allLines(name, session) {
  const out = [];
  for (let offset = 0; ; offset += 1000) {
    const page = await get(`/api/v1/runs/${encodeURIComponent(name)}/lines?offset=${offset}&limit=1000${session ? `&session=${encodeURIComponent(session)}` : ''}`);
    out.push(...page.lines);
    if (out.length >= page.total || !page.lines.length) return out;
  }
}

// A run just submitted (`fresh`) has no record until its process has started: wait for it a little.
async function loadRun(main, name, session, fresh, signal) {
  const t0 = Date.now();
  for (;;) {
    try {
      return await get(`/api/v1/runs/${q(name, session)}`);
    } catch (e) {
      if (!fresh || e.status !== 404 || Date.now() - t0 > 20000 || signal.aborted) throw e;
      clear(main, h('p', { class: 'muted', role: 'status' }, `Starting run ${name}…`));
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

// ---- a run's page: render (`rp` holds the run as last read, its lines and the page's parts) ----

function toCsv(lines) {
  const keys = [...new Set(lines.flatMap((l) => Object.keys(l.outputs || {})))];
  const cell = (v) => {
    const s = v === undefined || v === null ? '' : typeof v === 'string' ? v : JSON.stringify(v);
    return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  return [['line_number', 'status', ...keys].join(','), ...lines.map((l) => [l.line_number, l.status, ...keys.map((k) => cell((l.outputs || {})[k]))].join(','))].join('\n');
}

const toJsonl = (lines) => lines.map((l) => JSON.stringify({ line_number: l.line_number, ...(l.outputs || {}) })).join('\n') + '\n';

function runMeta(run, sess) {
  return h('span', { class: 'muted' }, run.flow ? ['flow ', h('a', { href: `#/flows/${encodeURIComponent(run.flow)}` }, run.flow), ' · '] : null,
    'session ', h('a', { href: `#/sessions/${sess}` }, sess),
    run.base_run ? [' · base run ', h('a', { href: `#/runs/${encodeURIComponent(run.base_run)}` }, run.base_run)] : null,
    run.variant ? ` · variant ${run.variant}` : '');
}

function summaryText(run) {
  return `${run.completed_lines}/${run.total_lines} completed · ${run.failed_lines} failed · ${fmtDur(run.duration_s)}${run.duration_s ? ` · ${((run.completed_lines + run.failed_lines) / run.duration_s).toFixed(1)} lines/s` : ''}`;
}

function drawHead(rp) {
  const { run, sess } = rp;
  const can = (a) => (run.actions || []).includes(a);
  clear(rp.head, h('h1', {}, 'Run ', h('code', {}, run.name)), h('span', { id: 'run-status' }, badge(run.status)), runMeta(run, sess),
    can('cancel') ? button('Cancel', (e) => act(e.target, () => post(`/api/v1/runs/${q(run.name, sess, '/cancel')}`))) : null,
    can('resume') ? button('Resume (re-run failed lines)', (e) => act(e.target, () => resumeRun(run, sess))) : null,
    can('deploy') ? button('Deploy…', async () => {
      const { deployDialog } = await import('./endpoints.js');
      deployDialog(rp.main, run.flow);
    }, { id: 'deploy' }) : null,
    button('Download JSONL', () => download(`${run.name}.jsonl`, toJsonl(rp.lines), 'application/x-ndjson')),
    button('Download CSV', () => download(`${run.name}.csv`, toCsv(rp.lines), 'text/csv')));
  if (run.error) rp.head.append(h('p', { class: 'error wide' }, run.error));
  if (run.status !== 'Running') rp.prog.textContent = summaryText(run);
}

function metricsCard(m) {
  const entries = Object.entries(m);
  return [h('h2', { id: 'm-h' }, 'Metrics'), entries.length
    ? table(['Metric', 'Value'], entries.map(([k, v]) => h('tr', {}, h('td', {}, k), h('td', {}, fmtJson(v)))), { id: 'metrics' })
    : h('p', { class: 'muted' }, 'No metrics (the flow logs none, or it is still running).')];
}

// Per node: when it starts on a line and how long it takes, averaged over the lines.
function nodeTimes(lines) {
  const stats = new Map();
  for (const l of lines) {
    const t0 = Math.min(...(l.nodes || []).map((n) => n.start));
    for (const n of l.nodes || []) {
      const s = stats.get(n.node) || { off: 0, dur: 0, n: 0, failed: 0 };
      s.off += n.start - t0; s.dur += n.duration; s.n += 1; if (n.status === 'Failed') s.failed += 1;
      stats.set(n.node, s);
    }
  }
  return [...stats.entries()].map(([node, s]) => ({ node, off: s.off / s.n, dur: s.dur / s.n, failed: s.failed, n: s.n })).sort((a, b) => a.off - b.off);
}

function timelineCard(lines) {
  const items = nodeTimes(lines);
  const end = Math.max(0.001, ...items.map((i) => i.off + i.dur));
  return [h('h2', { id: 'tl-h' }, 'Node timeline (mean over lines)'),
    items.length ? h('ol', { class: 'timeline', id: 'timeline' }, items.map((i) => {
      const bar = h('span', { class: `bar${i.failed ? ' failed' : ''}` });
      bar.style.marginLeft = `${(i.off / end) * 100}%`;
      bar.style.width = `${Math.max(0.5, (i.dur / end) * 100)}%`;
      return h('li', {}, h('span', { class: 'label' }, i.node), h('span', { class: 'track' }, bar), h('span', { class: 'muted' }, `${fmtDur(i.dur)}${i.failed ? ` · ${i.failed} failed` : ''}`));
    })) : h('p', { class: 'muted' }, 'No finished lines yet.')];
}

const LINE_COLS = [['line_number', '#'], ['status', 'Status'], ['duration', 'Duration'], ['inputs', 'Inputs'], ['outputs', 'Outputs'], ['error', 'Error'], ['tokens', 'Tokens']];

// The lines table's frame: status and text filters, sortable headers; `drawLines` fills it.
function linesCard(rp) {
  rp.status = h('select', { name: 'status' }, ['all', 'Completed', 'Failed'].map((s) => h('option', { value: s }, s)));
  rp.search = h('input', { type: 'search', name: 'search', placeholder: 'text in inputs, outputs, error' });
  rp.tbody = h('tbody', {});
  rp.count = h('span', { class: 'muted', role: 'status' });
  rp.ths = LINE_COLS.map(([k, label]) => h('th', { scope: 'col', 'aria-sort': k === rp.sortKey ? 'ascending' : 'none' },
    button(label, () => sortLines(rp, k), { class: 'sort' })));
  rp.status.addEventListener('change', () => drawLines(rp));
  rp.search.addEventListener('input', () => drawLines(rp));
  return [h('h2', { id: 'l-h' }, 'Lines'), h('div', { class: 'filters' }, field('Status', rp.status), field('Search', rp.search), rp.count),
    h('div', { class: 'scroll tall' }, h('table', { id: 'lines' }, h('thead', {}, h('tr', {}, rp.ths, h('th', { scope: 'col' }, 'Trace'))), rp.tbody))];
}

// The lines the filters let through, in the chosen order.
function shownLines(rp) {
  const { sortKey, sortDir } = rp;
  const needle = rp.search.value.toLowerCase();
  const val = (l) => (sortKey === 'tokens' ? tokensOf(l) : sortKey === 'inputs' || sortKey === 'outputs' || sortKey === 'error' ? fmtJson(l[sortKey]) : l[sortKey]);
  return rp.lines.filter((l) => (rp.status.value === 'all' || l.status === rp.status.value)
    && (!needle || JSON.stringify([l.inputs, l.outputs, l.error]).toLowerCase().includes(needle)))
    .sort((a, b) => { const x = val(a); const y = val(b); return (x > y ? 1 : x < y ? -1 : 0) * sortDir; });
}

function lineRow(l, run, sess) {
  return h('tr', { 'data-line': l.line_number, class: l.status === 'Failed' ? 'failed' : '' },
    h('td', {}, l.line_number), h('td', {}, badge(l.status)), h('td', {}, fmtDur(l.duration)),
    h('td', { class: 'cell' }, fmtJson(l.inputs)), h('td', { class: 'cell' }, fmtJson(l.outputs)),
    h('td', { class: 'cell error' }, l.error ? `${l.error.node ? `${l.error.node}: ` : ''}${l.error.message}` : ''),
    h('td', {}, tokensOf(l) || ''),
    h('td', {}, h('a', { href: `#/runs/${encodeURIComponent(run.name)}/lines/${l.line_number}/trace?session=${encodeURIComponent(sess)}`, 'aria-label': `trace of line ${l.line_number}` }, 'trace')));
}

function drawLines(rp) {
  rp.ths.forEach((th, i) => th.setAttribute('aria-sort', LINE_COLS[i][0] === rp.sortKey ? (rp.sortDir > 0 ? 'ascending' : 'descending') : 'none'));
  const shown = shownLines(rp);
  clear(rp.tbody, shown.map((l) => lineRow(l, rp.run, rp.sess)));
  rp.count.textContent = `${shown.length} of ${rp.lines.length} lines`;
}

// ---- a run's page: act ----

// A header pressed again turns its order around.
function sortLines(rp, key) {
  if (rp.sortKey === key) rp.sortDir = -rp.sortDir;
  else { rp.sortKey = key; rp.sortDir = 1; }
  drawLines(rp);
}

// Resume runs the failed lines again as a new run; its page opens.
async function resumeRun(run, sess) {
  const r = await post('/api/v1/runs', { session: sess, name: `${run.name}-resume-${Date.now() % 100000}`, resume_from: run.name, column_mapping: {} });
  location.hash = `#/runs/${q(r.name, r.session)}&new=1`;
}

async function reloadLines(rp) {
  rp.lines = await allLines(rp.run.name, rp.sess);
  drawLines(rp);
  clear(rp.timelineBox, timelineCard(rp.lines));
}

async function drawMetrics(rp) {
  clear(rp.metricsBox, metricsCard(await get(`/api/v1/runs/${q(rp.run.name, rp.sess, '/metrics')}`)));
}

// A running run: its progress and each line as it finishes; at the end the run, its lines and
// metrics are read again.
function followRun(rp, signal) {
  follow(`/api/v1/runs/${q(rp.run.name, rp.sess, '/events')}`, signal, async (ev, data) => {
    if (ev === 'progress') clear(rp.prog, progressBar(data), ' ', progressText(data));
    if (ev === 'line') {
      // A stream followed again after a dropped connection replays its lines: one row a line.
      const line = { ...data, inputs: undefined, outputs: undefined };
      const at = rp.lines.findIndex((l) => l.line_number === line.line_number);
      if (at >= 0) rp.lines[at] = line; else rp.lines.push(line);
      drawLines(rp);
    }
    if (ev === 'end') {
      rp.run = await get(`/api/v1/runs/${q(rp.run.name, rp.sess)}`);
      drawHead(rp);
      await reloadLines(rp);
      await drawMetrics(rp);
    }
  });
}

export async function page({ main, params, query, signal }) {
  const run = await loadRun(main, params[0], query.get('session'), query.get('new'), signal);
  clear(main);
  const card = (label, cls = 'card') => h('section', { class: cls, 'aria-labelledby': label });
  const rp = {
    main, run, sess: run.session, lines: [], sortKey: 'line_number', sortDir: 1,
    head: h('div', { class: 'bar' }), prog: h('p', { class: 'progress', id: 'run-progress', role: 'status' }),
    metricsBox: card('m-h'), timelineBox: card('tl-h'), linesBox: card('l-h', 'card wide'),
  };
  main.append(rp.head, rp.prog, h('div', { class: 'grid' }, rp.metricsBox, rp.timelineBox, rp.linesBox));
  clear(rp.linesBox, linesCard(rp));
  drawHead(rp);
  await reloadLines(rp);
  await drawMetrics(rp);
  if (rp.run.status === 'Running') followRun(rp, signal);
}

// ---- comparing runs ----

// Each run's record and its lines by number.
function loadCompared(names) {
  return Promise.all(names.map(async (n) => {
    const rec = await get(`/api/v1/runs/${encodeURIComponent(n)}`);
    return { name: n, rec, lines: new Map((await allLines(n, rec.session)).map((l) => [l.line_number, l])) };
  }));
}

const cellOf = (l, k) => (!l ? '–' : k === 'status' ? l.status : fmtJson((l.outputs || {})[k]));

// One line across the runs; a cell differing from the first run's is marked.
function compareRow(data, keys, n) {
  const first = data[0].lines.get(n);
  const cells = [];
  let changed = false;
  for (const k of ['status', ...keys]) {
    data.forEach((d, i) => {
      const v = cellOf(d.lines.get(n), k);
      const diff = i > 0 && v !== cellOf(first, k);
      if (diff) changed = true;
      cells.push(h('td', { class: `cell${diff ? ' changed' : ''}`, title: diff ? `differs from ${data[0].name}` : undefined }, v));
    });
  }
  return { changed, tr: h('tr', { 'data-line': n, class: changed ? 'has-change' : '' }, h('td', {}, n), cells) };
}

function compareTable(data, keys, rows) {
  const head1 = h('tr', {}, h('th', { scope: 'col', rowspan: 2 }, 'Line'), ['status', ...keys].map((k) => h('th', { scope: 'colgroup', colspan: data.length }, k)));
  const head2 = h('tr', {}, ['status', ...keys].flatMap(() => data.map((d) => h('th', { scope: 'col' }, d.name))));
  return h('table', { id: 'compare', class: 'compare' }, h('thead', {}, head1, head2), h('tbody', {}, rows.map((r) => r.tr)));
}

export async function compare({ main, query }) {
  const names = (query.get('runs') || '').split(',').filter(Boolean);
  main.append(h('h1', {}, 'Compare runs'));
  if (names.length < 2) {
    main.append(h('p', {}, 'Pick two or more runs on the ', h('a', { href: '#/runs' }, 'runs page'), '.'));
    return;
  }
  const data = await loadCompared(names);
  const keys = [...new Set(data.flatMap((d) => [...d.lines.values()].flatMap((l) => Object.keys(l.outputs || {}))))];
  const numbers = [...new Set(data.flatMap((d) => [...d.lines.keys()]))].sort((a, b) => a - b);
  const rows = numbers.map((n) => compareRow(data, keys, n));
  const tbl = compareTable(data, keys, rows);
  const onlyChanged = h('input', { type: 'checkbox', id: 'only-changed', onchange: (e) => tbl.classList.toggle('only-changed', e.target.checked) });
  main.append(
    h('p', { role: 'status', id: 'compare-summary' }, `${rows.filter((r) => r.changed).length} of ${numbers.length} lines differ from ${data[0].name}. `,
      data.map((d) => `${d.name}: ${d.rec.completed_lines}/${d.rec.total_lines} completed`).join(' · ')),
    h('label', { for: 'only-changed' }, onlyChanged, ' Only lines that differ'),
    h('div', { class: 'scroll' }, tbl));
}
