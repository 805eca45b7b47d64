// Batch and evaluation runs: submit (data upload, column mapping, variant, base run), the list
// with live progress, a run's page (per-line table, node timeline, metrics, cancel, resume,
// downloads) and the line-by-line comparison of two or more runs.
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
  const bar = h('progress', { max: p.total || 1, value: p.done, 'aria-label': 'lines done' });
  return bar;
}

export async function list({ main, signal }) {
  const [runs, sessions] = await Promise.all([get('/api/v1/runs'), get('/api/v1/sessions')]);
  const flowOf = new Map(sessions.map((s) => [s.id, s.flow_ref]));
  const picked = new Set();
  const compareBtn = button('Compare selected', () => {
    location.hash = `#/compare?runs=${[...picked].map(encodeURIComponent).join(',')}`;
  }, { disabled: true, id: 'compare' });
  main.append(h('div', { class: 'bar' }, h('h1', {}, 'Runs'),
    auth.writer ? h('a', { href: '#/runs?new=1', class: 'button primary', id: 'submit-batch' }, 'Submit a batch…') : null, compareBtn));
  if (new URLSearchParams(location.hash.split('?')[1] || '').get('new') && auth.writer) {
    main.append(await submitForm(sessions, runs));
  }
  const rows = runs.slice().reverse().map((r) => {
    const cb = h('input', { type: 'checkbox', 'aria-label': `select ${r.name} to compare`, onchange: (e) => {
      if (e.target.checked) picked.add(r.name); else picked.delete(r.name);
      compareBtn.disabled = picked.size < 2;
    } });
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
  });
  main.append(runs.length ? h('div', { class: 'scroll' }, table(['', 'Run', 'Status', 'Progress', 'Flow', 'Session', 'Base run', 'Variant', 'Created'], rows, { id: 'runs' }))
    : h('p', { class: 'muted' }, 'No runs yet.'));
}

function columnsOf(text, format) {
  const first = text.split('\n').find((l) => l.trim());
  if (!first) return [];
  if (format === 'jsonl') { try { return Object.keys(JSON.parse(first)); } catch (_) { return []; } }
  return first.split(format === 'tsv' ? '\t' : ',').map((c) => c.trim().replace(/^"|"$/g, ''));
}

async function submitForm(sessions, runs) {
  const running = sessions.filter((s) => s.actions.includes('test')); // running, and the caller may run on it
  const session = h('select', { name: 'session', required: true }, running.map((s) => h('option', { value: s.id }, `${s.id} · ${s.flow_ref}`)));
  const name = h('input', { name: 'name', required: true, value: `run-${new Date().toISOString().slice(0, 19).replace(/[-:T]/g, '')}` });
  const file = h('input', { type: 'file', name: 'data', accept: '.jsonl,.csv,.tsv', required: true });
  const cols = h('p', { class: 'muted', role: 'status' });
  const mapping = h('div', { class: 'mapping' });
  const variant = h('input', { name: 'variant', placeholder: '${node.variant_1}' });
  const base = h('select', { name: 'base' }, h('option', { value: '' }, 'none'), runs.map((r) => h('option', { value: r.name }, r.name)));
  const concurrency = h('input', { type: 'number', name: 'concurrency', min: 1, max: 1024, placeholder: '16' });
  const nodes = h('input', { type: 'number', name: 'nodes', min: 1, max: 64, placeholder: '1' });
  const err = h('p', { class: 'error', role: 'alert' });
  let data = null;
  let format = 'jsonl';
  // The session and the file each redraw the mapping; only the latest drawing lands (two at once
  // would otherwise both append their fields).
  let drawing = 0;
  const drawMapping = async () => {
    const mine = ++drawing;
    const s = running.find((x) => x.id === session.value);
    if (!s || !s.flow_ref) { clear(mapping); return; }
    const flow = await get(`/api/v1/flows/${encodeURIComponent(s.flow_ref)}`);
    if (mine !== drawing) return;
    clear(mapping);
    const have = data ? columnsOf(data, format) : [];
    mapping.append(h('h3', {}, `Column mapping: inputs of ${flow.ref}`));
    for (const [input, spec] of Object.entries(flow.inputs)) {
      const guess = have.includes(input) ? `\${data.${input}}` : '';
      mapping.append(field(`${input} (${spec.type}${spec.default !== undefined && spec.default !== null ? `, default ${JSON.stringify(spec.default)}` : ''})`,
        h('input', { name: `map-${input}`, 'data-input': input, value: guess, placeholder: '${data.COLUMN} or ${run.outputs.NAME}' })));
    }
  };
  file.addEventListener('change', async () => {
    const f = file.files[0];
    if (!f) return;
    data = await f.text();
    format = f.name.endsWith('.csv') ? 'csv' : f.name.endsWith('.tsv') ? 'tsv' : 'jsonl';
    const c = columnsOf(data, format);
    cols.textContent = `${data.split('\n').filter((l) => l.trim()).length - (format === 'jsonl' ? 0 : 1)} rows; columns: ${c.join(', ')}`;
    drawMapping();
  });
  session.addEventListener('change', drawMapping);
  const form = h('form', { class: 'card', id: 'submit-form', onsubmit: (ev) => { ev.preventDefault(); act(ev.submitter, async () => {
    err.textContent = '';
    if (!data) { err.textContent = 'Choose a data file.'; return; }
    try {
      const up = await post(`/api/v1/data?format=${format}`, data, { headers: { 'Content-Type': 'application/octet-stream' } });
      const column_mapping = {};
      for (const i of mapping.querySelectorAll('input[data-input]')) if (i.value.trim()) column_mapping[i.dataset.input] = i.value.trim();
      const body = { session: session.value, name: name.value.trim(), data_ref: up.ref, column_mapping };
      if (variant.value.trim()) body.variant = variant.value.trim();
      if (base.value) body.run = base.value;
      if (concurrency.value) body.concurrency = Number(concurrency.value);
      if (Number(nodes.value) > 1) body.nodes = Number(nodes.value);
      const r = await post('/api/v1/runs', body);
      location.hash = `#/runs/${q(r.name, r.session)}&new=1`;
    } catch (e) {
      err.textContent = `${e.code}: ${e.message}`;
    }
  }); } },
  h('h2', {}, 'Submit a batch run'),
  running.length ? null : h('p', { class: 'error' }, 'Start a compute session first: runs execute inside one.'),
  field('Session', session), field('Run name', name), field('Data (.jsonl, .csv, .tsv)', file), cols, mapping,
  field('Variant', variant, 'optional: ${node.variant_id}'), field('Base run (evaluation)', base), field('Concurrency', concurrency),
  field('Nodes', nodes, 'optional: spread the lines over this many sessions like the chosen one (on Ray, each where Ray finds room)'),
  err, h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Submit'), h('a', { href: '#/runs', class: 'button' }, 'Cancel')));
  if (running.length) drawMapping();
  return form;
}

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

function toCsv(lines) {
  const keys = [...new Set(lines.flatMap((l) => Object.keys(l.outputs || {})))];
  const cell = (v) => {
    const s = v === undefined || v === null ? '' : typeof v === 'string' ? v : JSON.stringify(v);
    return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  return [['line_number', 'status', ...keys].join(','), ...lines.map((l) => [l.line_number, l.status, ...keys.map((k) => cell((l.outputs || {})[k]))].join(','))].join('\n');
}

export async function page({ main, params, query, signal }) {
  const name = params[0];
  const session = query.get('session');
  // A run just submitted has no record until its process has started: wait for it a little.
  const fresh = query.get('new');
  let run = null;
  for (const t0 = Date.now(); !run;) {
    try {
      run = await get(`/api/v1/runs/${q(name, session)}`);
    } catch (e) {
      if (!fresh || e.status !== 404 || Date.now() - t0 > 20000 || signal.aborted) throw e;
      clear(main, h('p', { class: 'muted', role: 'status' }, `Starting run ${name}…`));
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  clear(main);
  const sess = run.session;
  // What the caller may do with the run now, as the server says (read again with the run).
  const can = (a) => (run.actions || []).includes(a);
  const head = h('div', { class: 'bar' });
  const prog = h('p', { class: 'progress', id: 'run-progress', role: 'status' });
  const metricsBox = h('section', { class: 'card', 'aria-labelledby': 'm-h' });
  const timelineBox = h('section', { class: 'card', 'aria-labelledby': 'tl-h' });
  const linesBox = h('section', { class: 'card wide', 'aria-labelledby': 'l-h' });
  main.append(head, prog, h('div', { class: 'grid' }, metricsBox, timelineBox, linesBox));
  let lines = [];
  const drawHead = () => {
    clear(head, h('h1', {}, 'Run ', h('code', {}, run.name)), h('span', { id: 'run-status' }, badge(run.status)),
      h('span', { class: 'muted' }, run.flow ? ['flow ', h('a', { href: `#/flows/${encodeURIComponent(run.flow)}` }, run.flow), ' · '] : null, `session `, h('a', { href: `#/sessions/${sess}` }, sess), run.base_run ? [' · base run ', h('a', { href: `#/runs/${encodeURIComponent(run.base_run)}` }, run.base_run)] : null, run.variant ? ` · variant ${run.variant}` : ''),
      can('cancel') ? button('Cancel', (e) => act(e.target, () => post(`/api/v1/runs/${q(run.name, sess, '/cancel')}`))) : null,
      can('resume') ? button('Resume (re-run failed lines)', (e) => act(e.target, async () => {
        const r = await post('/api/v1/runs', { session: sess, name: `${run.name}-resume-${Date.now() % 100000}`, resume_from: run.name, column_mapping: {} });
        location.hash = `#/runs/${q(r.name, r.session)}&new=1`;
      })) : null,
      auth.writer && run.flow ? button('Deploy…', async () => {
        const { deployDialog } = await import('./endpoints.js');
        deployDialog(main, run.flow);
      }, { id: 'deploy' }) : null,
      button('Download JSONL', () => download(`${run.name}.jsonl`, lines.map((l) => JSON.stringify({ line_number: l.line_number, ...(l.outputs || {}) })).join('\n') + '\n', 'application/x-ndjson')),
      button('Download CSV', () => download(`${run.name}.csv`, toCsv(lines), 'text/csv')));
    if (run.error) head.append(h('p', { class: 'error wide' }, run.error));
    if (run.status !== 'Running') prog.textContent = `${run.completed_lines}/${run.total_lines} completed · ${run.failed_lines} failed · ${fmtDur(run.duration_s)}${run.duration_s ? ` · ${((run.completed_lines + run.failed_lines) / run.duration_s).toFixed(1)} lines/s` : ''}`;
  };
  const drawMetrics = async () => {
    const m = await get(`/api/v1/runs/${q(run.name, sess, '/metrics')}`);
    const entries = Object.entries(m);
    clear(metricsBox, h('h2', { id: 'm-h' }, 'Metrics'), entries.length
      ? table(['Metric', 'Value'], entries.map(([k, v]) => h('tr', {}, h('td', {}, k), h('td', {}, fmtJson(v)))), { id: 'metrics' })
      : h('p', { class: 'muted' }, 'No metrics (the flow logs none, or it is still running).'));
  };
  const drawTimeline = () => {
    // Per node: when it starts on a line and how long it takes, averaged over the lines.
    const stats = new Map();
    for (const l of lines) {
      const t0 = Math.min(...(l.nodes || []).map((n) => n.start));
      for (const n of l.nodes || []) {
        const s = stats.get(n.node) || { off: 0, dur: 0, n: 0, failed: 0 };
        s.off += n.start - t0; s.dur += n.duration; s.n += 1; if (n.status === 'Failed') s.failed += 1;
        stats.set(n.node, s);
      }
    }
    const items = [...stats.entries()].map(([node, s]) => ({ node, off: s.off / s.n, dur: s.dur / s.n, failed: s.failed, n: s.n })).sort((a, b) => a.off - b.off);
    const end = Math.max(0.001, ...items.map((i) => i.off + i.dur));
    clear(timelineBox, h('h2', { id: 'tl-h' }, 'Node timeline (mean over lines)'),
      items.length ? h('ol', { class: 'timeline', id: 'timeline' }, items.map((i) => {
        const bar = h('span', { class: `bar${i.failed ? ' failed' : ''}` });
        bar.style.marginLeft = `${(i.off / end) * 100}%`;
        bar.style.width = `${Math.max(0.5, (i.dur / end) * 100)}%`;
        return h('li', {}, h('span', { class: 'label' }, i.node), h('span', { class: 'track' }, bar), h('span', { class: 'muted' }, `${fmtDur(i.dur)}${i.failed ? ` · ${i.failed} failed` : ''}`));
      })) : h('p', { class: 'muted' }, 'No finished lines yet.'));
  };
  let sortKey = 'line_number';
  let sortDir = 1;
  const status = h('select', { name: 'status' }, ['all', 'Completed', 'Failed'].map((s) => h('option', { value: s }, s)));
  const search = h('input', { type: 'search', name: 'search', placeholder: 'text in inputs, outputs, error' });
  const tbody = h('tbody', {});
  const COLS = [['line_number', '#'], ['status', 'Status'], ['duration', 'Duration'], ['inputs', 'Inputs'], ['outputs', 'Outputs'], ['error', 'Error'], ['tokens', 'Tokens']];
  const ths = COLS.map(([k, label]) => h('th', { scope: 'col', 'aria-sort': k === sortKey ? 'ascending' : 'none' },
    button(label, () => { if (sortKey === k) sortDir = -sortDir; else { sortKey = k; sortDir = 1; } drawLines(); }, { class: 'sort' })));
  const drawLines = () => {
    ths.forEach((th, i) => th.setAttribute('aria-sort', COLS[i][0] === sortKey ? (sortDir > 0 ? 'ascending' : 'descending') : 'none'));
    const needle = search.value.toLowerCase();
    const val = (l) => (sortKey === 'tokens' ? tokensOf(l) : sortKey === 'inputs' || sortKey === 'outputs' || sortKey === 'error' ? fmtJson(l[sortKey]) : l[sortKey]);
    const shown = lines.filter((l) => (status.value === 'all' || l.status === status.value)
      && (!needle || JSON.stringify([l.inputs, l.outputs, l.error]).toLowerCase().includes(needle)))
      .sort((a, b) => { const x = val(a); const y = val(b); return (x > y ? 1 : x < y ? -1 : 0) * sortDir; });
    clear(tbody, shown.map((l) => h('tr', { 'data-line': l.line_number, class: l.status === 'Failed' ? 'failed' : '' },
      h('td', {}, l.line_number), h('td', {}, badge(l.status)), h('td', {}, fmtDur(l.duration)),
      h('td', { class: 'cell' }, fmtJson(l.inputs)), h('td', { class: 'cell' }, fmtJson(l.outputs)),
      h('td', { class: 'cell error' }, l.error ? `${l.error.node ? `${l.error.node}: ` : ''}${l.error.message}` : ''),
      h('td', {}, tokensOf(l) || ''),
      h('td', {}, h('a', { href: `#/runs/${encodeURIComponent(run.name)}/lines/${l.line_number}/trace?session=${encodeURIComponent(sess)}`, 'aria-label': `trace of line ${l.line_number}` }, 'trace')))));
    count.textContent = `${shown.length} of ${lines.length} lines`;
  };
  const count = h('span', { class: 'muted', role: 'status' });
  status.addEventListener('change', drawLines);
  search.addEventListener('input', drawLines);
  clear(linesBox, h('h2', { id: 'l-h' }, 'Lines'), h('div', { class: 'filters' }, field('Status', status), field('Search', search), count),
    h('div', { class: 'scroll tall' }, h('table', { id: 'lines' }, h('thead', {}, h('tr', {}, ths, h('th', { scope: 'col' }, 'Trace'))), tbody)));
  const reload = async () => {
    lines = await allLines(run.name, sess);
    drawLines();
    drawTimeline();
  };
  drawHead();
  await reload();
  await drawMetrics();
  if (run.status === 'Running') {
    follow(`/api/v1/runs/${q(run.name, sess, '/events')}`, signal, async (ev, data) => {
      if (ev === 'progress') clear(prog, progressBar(data), ' ', progressText(data));
      if (ev === 'line') {
        lines.push({ ...data, inputs: undefined, outputs: undefined });
        drawLines();
      }
      if (ev === 'end') {
        run = await get(`/api/v1/runs/${q(run.name, sess)}`);
        drawHead();
        await reload();
        await drawMetrics();
      }
    });
  }
}

export async function compare({ main, query }) {
  const names = (query.get('runs') || '').split(',').filter(Boolean);
  main.append(h('h1', {}, 'Compare runs'));
  if (names.length < 2) {
    main.append(h('p', {}, 'Pick two or more runs on the ', h('a', { href: '#/runs' }, 'runs page'), '.'));
    return;
  }
  const data = await Promise.all(names.map(async (n) => {
    const rec = await get(`/api/v1/runs/${encodeURIComponent(n)}`);
    return { name: n, rec, lines: new Map((await allLines(n, rec.session)).map((l) => [l.line_number, l])) };
  }));
  const keys = [...new Set(data.flatMap((d) => [...d.lines.values()].flatMap((l) => Object.keys(l.outputs || {}))))];
  const numbers = [...new Set(data.flatMap((d) => [...d.lines.keys()]))].sort((a, b) => a - b);
  let changedLines = 0;
  const rows = numbers.map((n) => {
    const first = data[0].lines.get(n);
    const cells = [];
    let changed = false;
    for (const k of ['status', ...keys]) {
      data.forEach((d, i) => {
        const l = d.lines.get(n);
        const v = !l ? '–' : k === 'status' ? l.status : fmtJson((l.outputs || {})[k]);
        const base = !first ? '–' : k === 'status' ? first.status : fmtJson((first.outputs || {})[k]);
        const diff = i > 0 && v !== base;
        if (diff) changed = true;
        cells.push(h('td', { class: `cell${diff ? ' changed' : ''}`, title: diff ? `differs from ${data[0].name}` : undefined }, v));
      });
    }
    if (changed) changedLines += 1;
    return h('tr', { 'data-line': n, class: changed ? 'has-change' : '' }, h('td', {}, n), cells);
  });
  const onlyChanged = h('input', { type: 'checkbox', id: 'only-changed', onchange: (e) => tbl.classList.toggle('only-changed', e.target.checked) });
  const head1 = h('tr', {}, h('th', { scope: 'col', rowspan: 2 }, 'Line'), ['status', ...keys].map((k) => h('th', { scope: 'colgroup', colspan: data.length }, k)));
  const head2 = h('tr', {}, ['status', ...keys].flatMap(() => data.map((d) => h('th', { scope: 'col' }, d.name))));
  const tbl = h('table', { id: 'compare', class: 'compare' }, h('thead', {}, head1, head2), h('tbody', {}, rows));
  main.append(
    h('p', { role: 'status', id: 'compare-summary' }, `${changedLines} of ${numbers.length} lines differ from ${data[0].name}. `,
      data.map((d) => `${d.name}: ${d.rec.completed_lines}/${d.rec.total_lines} completed`).join(' · ')),
    h('label', { for: 'only-changed' }, onlyChanged, ' Only lines that differ'),
    h('div', { class: 'scroll' }, tbl));
}
