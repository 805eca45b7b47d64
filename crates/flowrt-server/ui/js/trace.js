// Traces: owns a run line's trace (#/runs/NAME/lines/N/trace) and the last test line's
// (#/trace/test); `render` also draws an endpoint request's trace. A trace is the span tree
// (flow, then each node; LLM nodes as LLM spans) and a waterfall timeline drawn from the line's
// record, with each span's inputs, outputs, logs, parameters and token counts, and the
// cumulative tokens as the line went on.
import { get } from './api.js';
import { h, clear, fmtDur, pre, badge } from './dom.js';

const LLM = new Set(['llm', 'prompty', 'embedding']);

// Resolve a node input as the flow wrote it (`${inputs.x}`, `${node.output.a[0]}`, a literal)
// against this line's inputs and node outputs: what the node was actually given.
function resolve(value, line, outputs) {
  const m = typeof value === 'string' && value.match(/^\$\{([^}]+)\}$/);
  if (!m) return value;
  const parts = m[1].match(/[^.[\]]+/g) || [];
  let v;
  if (parts[0] === 'inputs') v = line.inputs || {};
  else if (outputs.has(parts[0]) && parts[1] === 'output') { v = outputs.get(parts[0]); parts.shift(); } else return value;
  for (const p of parts.slice(1)) {
    if (v === null || v === undefined) return undefined;
    const i = /^-?\d+$/.test(p) ? Number(p) : p;
    v = Array.isArray(v) && typeof i === 'number' ? v[i < 0 ? v.length + i : i] : v[i];
  }
  return v;
}

function spans(line, flow) {
  const nodes = (line.node_runs || line.nodes || []).slice().sort((a, b) => a.start - b.start);
  const start = nodes.length ? Math.min(...nodes.map((n) => n.start)) : 0;
  const defs = new Map(((flow && flow.nodes) || []).map((n) => [n.name, n]));
  let cumulative = 0;
  const outputs = new Map(nodes.map((n) => [n.node, n.output]));
  const nodeSpans = nodes.map((n) => {
    const def = defs.get(n.node) || {};
    const given = def.inputs ? Object.fromEntries(Object.entries(def.inputs).map(([k, v]) => [k, resolve(v, line, outputs)])) : undefined;
    const tokens = n.usage ? (n.usage.total_tokens || (n.usage.prompt_tokens || 0) + (n.usage.completion_tokens || 0)) : 0;
    cumulative += tokens;
    return {
      name: n.node, kind: LLM.has(def.type) || n.usage ? 'LLM' : 'Function', type: def.type, status: n.status,
      offset: n.start - start, duration: n.duration, output: n.output, error: n.error, logs: n.logs,
      usage: n.usage, cumulative, params: def.inputs, inputs: given, connection: def.connection, api: def.api, source: def.source,
      request: n.llm_request, traced: n.spans || [],
    };
  });
  // Each node, then the functions it @trace'd, nested as they called each other.
  const children = [];
  for (const node of nodeSpans) {
    children.push(node);
    const depth = new Map();
    for (const t of node.traced) {
      const d = (t.parent && depth.has(t.parent) ? depth.get(t.parent) : 0) + 1;
      depth.set(t.id, d);
      children.push({
        name: t.name, kind: 'Function', type: 'trace', status: t.error ? 'Failed' : 'Completed', depth: d,
        offset: t.start - start, duration: Math.max(0, (t.end || t.start) - t.start),
        inputs: t.inputs, output: t.output, error: t.error, cumulative: node.cumulative,
      });
    }
  }
  const total = Math.max(line.duration || 0, ...children.map((c) => c.offset + c.duration), 0.001);
  return {
    root: { name: flow ? flow.name || flow.ref : 'flow', kind: 'Flow', status: line.status || (line.error ? 'Failed' : 'Completed'), offset: 0, duration: total, inputs: line.inputs, output: line.outputs, error: line.error, cumulative },
    children, total,
  };
}

// The messages an LLM call sent (or its prompt), and the call's parameters: everything in the
// request body but the messages.
function requestOf(request) {
  if (!request || typeof request !== 'object') return null;
  const { messages, prompt, ...params } = request;
  const text = (c) => (typeof c === 'string' ? h('pre', { class: 'message' }, c) : pre(c));
  return [
    Array.isArray(messages) ? [h('h3', {}, `Messages (${messages.length})`),
      h('ol', { class: 'messages' }, messages.map((m) => h('li', { class: `role-${m.role}` }, h('strong', {}, m.role), text(m.content))))] : null,
    prompt !== undefined ? [h('h3', {}, 'Prompt'), text(prompt)] : null,
    [h('h3', {}, 'Call parameters'), pre(params)],
  ];
}

function detailOf(span) {
  const rows = [['Kind', span.kind], ['Type', span.type], ['Status', span.status], ['Start', `+${fmtDur(span.offset)}`], ['Duration', fmtDur(span.duration)],
    ['Connection', span.connection], ['API', span.api], ['Source', span.source]].filter(([, v]) => v !== undefined && v !== null);
  const u = span.usage;
  return [h('h2', {}, span.name), h('dl', {}, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, String(v))])),
    u ? [h('h3', {}, 'Tokens'), h('dl', { class: 'tokens' },
      h('dt', {}, 'Prompt'), h('dd', {}, u.prompt_tokens ?? '–'), h('dt', {}, 'Completion'), h('dd', {}, u.completion_tokens ?? '–'),
      h('dt', {}, 'Total'), h('dd', {}, u.total_tokens ?? '–'), h('dt', {}, 'Cumulative (line so far)'), h('dd', {}, span.cumulative))] : null,
    requestOf(span.request),
    span.kind === 'LLM' && span.source ? [h('h3', {}, 'Prompt template'), h('p', {}, h('code', {}, span.source), ' rendered with the inputs below')] : null,
    span.inputs ? [h('h3', {}, span.kind === 'LLM' ? 'Parameters and message inputs (resolved for this line)' : 'Inputs (resolved for this line)'), pre(span.inputs)] : null,
    span.params && span.kind !== 'Flow' ? [h('h3', {}, 'As the flow defines them'), pre(span.params)] : null,
    span.output !== undefined ? [h('h3', {}, 'Output'), pre(span.output)] : null,
    span.error ? [h('h3', {}, 'Error'), pre(span.error)] : null,
    span.logs ? [h('h3', {}, 'Logs'), h('pre', { class: 'log' }, span.logs)] : null];
}

export function render(main, title, line, flow) {
  const { root, children, total } = spans(line, flow);
  const detail = h('aside', { class: 'card span-detail', 'aria-live': 'polite', id: 'span-detail' });
  const all = [root, ...children];
  const rows = all.map((s, i) => {
    const bar = h('span', { class: `bar k-${s.kind.toLowerCase()} st-${String(s.status).toLowerCase()}` });
    bar.style.marginLeft = `${(s.offset / total) * 100}%`;
    bar.style.width = `${Math.max(0.4, (s.duration / total) * 100)}%`;
    const b = h('button', { type: 'button', class: `span-row${i ? ' child' : ''}${s.depth ? ' traced' : ''}`, 'data-span': s.name, onclick: () => {
      for (const x of main.querySelectorAll('.span-row')) x.removeAttribute('aria-pressed');
      b.setAttribute('aria-pressed', 'true');
      clear(detail, detailOf(s));
    } },
    h('span', { class: 'label' }, h('span', { class: 'kind' }, s.kind), ' ', s.name), h('span', { class: 'track' }, bar), h('span', { class: 'dur' }, fmtDur(s.duration)));
    // A traced function sits under its node, one step further in for each caller.
    if (s.depth) b.querySelector('.label').style.paddingLeft = `${s.depth * 1.2}rem`;
    return h('li', {}, b);
  });
  const tokens = children.reduce((a, c) => a + (c.usage ? c.usage.total_tokens || 0 : 0), 0);
  main.append(h('div', { class: 'bar' }, h('h1', {}, title), badge(root.status), h('span', { class: 'muted' }, `${fmtDur(total)} · ${children.length} span${children.length === 1 ? '' : 's'} · ${tokens} tokens`)),
    h('div', { class: 'trace-grid' },
      h('section', { class: 'card', 'aria-label': 'span tree and waterfall' }, h('ol', { class: 'spans', id: 'spans' }, rows)),
      detail));
  clear(detail, detailOf(root));
}

export async function line({ main, params, query }) {
  const [name, n] = params;
  const session = query.get('session');
  const sq = session ? `?session=${encodeURIComponent(session)}` : '';
  const rec = await get(`/api/v1/runs/${encodeURIComponent(name)}/lines/${n}${sq}`);
  let flow = null;
  try {
    const run = await get(`/api/v1/runs/${encodeURIComponent(name)}${sq}`);
    const s = await get(`/api/v1/sessions/${run.session}`);
    if (s.flow_ref) flow = await get(`/api/v1/flows/${encodeURIComponent(s.flow_ref)}`);
  } catch (_) { /* the trace still draws without the flow's definitions */ }
  main.append(h('p', {}, h('a', { href: `#/runs/${encodeURIComponent(name)}${sq}` }, `← run ${name}`)));
  render(main, `Trace of ${name}, line ${n}`, rec, flow);
}

export async function test({ main }) {
  const saved = JSON.parse(sessionStorage.getItem('flowrt.lastTest') || 'null');
  if (!saved) {
    main.append(h('p', {}, 'No test line in this tab yet: run one from a flow page.'));
    return;
  }
  let flow = null;
  try { flow = await get(`/api/v1/flows/${encodeURIComponent(saved.flow)}`); } catch (_) { /* draw without it */ }
  main.append(h('p', {}, h('a', { href: `#/flows/${encodeURIComponent(saved.flow)}?session=${encodeURIComponent(saved.session)}` }, `← flow ${saved.flow}`)));
  render(main, `Trace of the test line on ${saved.flow}`, { ...saved, status: saved.error ? 'Failed' : 'Completed' }, flow);
}
