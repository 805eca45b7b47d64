// Endpoints: owns the endpoints list (#/endpoints: the workspace's scoring URLs, the flow versions
// deployed behind them and their traffic split), an endpoint's page (#/endpoints/NAME: its
// deployments, dashboard of requests/s, p50/p99 latency, errors and tokens, and its requests)
// and a request's trace (#/endpoints/NAME/requests/ID); and the Deploy dialog that flow and run
// pages open. Each page loads what it shows, renders it with pure functions from data to
// elements, and acts on its controls (call the API, then redraw or notify). Which buttons show
// comes from the server: each endpoint's and deployment's `actions`, and the caller's own
// (`auth.can`: create_endpoint).
import { auth, api, get, post } from './api.js';
import { h, clear, fmtAgo, fmtDur, badge, field, button, table, act, notify } from './dom.js';

const enc = encodeURIComponent;
// May the caller do `action` with endpoint or deployment `x`, as the server lists it?
const may = (x, action) => (x.actions || []).includes(action);

// An endpoint's keys, shown this once.
function keysCard(keys, name) {
  const rows = Object.entries(keys).filter(([, v]) => v);
  return h('section', { class: 'card keys', id: 'endpoint-keys', role: 'status' },
    h('h2', {}, `Keys of ${name}`),
    h('p', { class: 'banner' }, 'Shown this once: copy them into your secret store now. Only their hashes are kept.'),
    h('dl', {}, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, h('code', { class: 'key' }, v))])),
    h('p', { class: 'muted' }, 'Call it with ', h('code', {}, `Authorization: Bearer <key>`), '.'));
}

// ---- the endpoints list ----

function trafficText(t) {
  const parts = Object.entries(t || {}).map(([d, p]) => `${d} ${p}%`);
  return parts.length ? parts.join(' · ') : 'none';
}

function endpointRow(e) {
  return h('tr', { 'data-endpoint': e.name },
    h('td', {}, h('a', { href: `#/endpoints/${enc(e.name)}` }, e.name)),
    h('td', {}, e.owner),
    h('td', {}, e.deployments.map((d, i) => [i ? ', ' : '', `${d.name} (${d.flow}) `, badge(d.status)])),
    h('td', {}, trafficText(e.traffic)),
    h('td', {}, h('code', {}, `${location.origin}${e.scoring_uri}`)));
}

export async function list({ main }) {
  const endpoints = await get('/api/v1/endpoints');
  const out = h('div', {});
  main.append(h('div', { class: 'bar' }, h('h1', {}, 'Endpoints'),
    auth.can('create_endpoint') ? button('New endpoint…', () => createDialog(out), { class: 'primary', id: 'new-endpoint' }) : null), out);
  main.append(endpoints.length
    ? h('div', { class: 'scroll' }, table(['Endpoint', 'Owner', 'Deployments', 'Traffic', 'Scoring URL'], endpoints.map(endpointRow), { id: 'endpoints' }))
    : h('p', { class: 'muted' }, 'No endpoints yet. Deploy a flow version from its flow page (', h('em', {}, 'Deploy…'), '), or ', h('code', {}, 'flowrt endpoint create NAME'), '.'));
}

// A new endpoint's keys show this once, with a link to its page.
async function createEndpoint(name, out) {
  const made = await post('/api/v1/endpoints', { name });
  clear(out, keysCard(made.keys, made.endpoint.name), h('p', {}, h('a', { href: `#/endpoints/${enc(made.endpoint.name)}` }, `Open ${made.endpoint.name}`)));
}

function createDialog(out) {
  const name = h('input', { name: 'name', required: true, pattern: '[A-Za-z0-9_][A-Za-z0-9_-]*', maxlength: 64 });
  const err = h('p', { class: 'error', role: 'alert' });
  const form = h('form', { class: 'card', onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      await createEndpoint(name.value.trim(), out);
    } catch (e) { err.textContent = `${e.code}: ${e.message}`; }
  } }, h('h2', {}, 'New endpoint'), field('Name', name, 'The scoring URL is /endpoints/NAME/score.'), err,
  h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Create'), button('Cancel', () => clear(out))));
  clear(out, form);
  name.focus();
}

// ---- the Deploy dialog: a flow version behind a new or existing endpoint ----

function deployControls(endpoints, flowRef) {
  // Endpoints the caller may deploy to, as each says; a new one if they may create one.
  const mine = endpoints.filter((e) => may(e, 'deploy'));
  return {
    target: h('select', { name: 'endpoint', id: 'deploy-endpoint' },
      auth.can('create_endpoint') ? h('option', { value: '' }, 'a new endpoint') : null, mine.map((e) => h('option', { value: e.name }, e.name))),
    newName: h('input', { name: 'new-endpoint', id: 'deploy-new-endpoint', maxlength: 64, value: String(flowRef).split('@')[0].replace(/[^A-Za-z0-9_-]/g, '-') }),
    depName: h('input', { name: 'deployment', id: 'deploy-name', required: true, maxlength: 64, value: 'blue' }),
    instances: h('input', { type: 'number', name: 'instances', min: 1, max: 64, value: 1 }),
    size: h('select', { name: 'size' }, ['small', 'medium', 'large'].map((s) => h('option', { value: s }, s))),
    sample: h('input', { type: 'number', name: 'sample', min: 0, max: 1, step: 0.05, value: 1 }),
    redact: h('input', { type: 'checkbox', name: 'redact' }),
    err: h('p', { class: 'error', role: 'alert' }),
    out: h('div', { id: 'deploy-result', 'aria-live': 'polite' }),
  };
}

function deployForm(c, flowRef, onsubmit, close) {
  return h('form', { class: 'card deploy', id: 'deploy-form', onsubmit },
    h('h2', {}, `Deploy ${flowRef}`),
    h('fieldset', {}, h('legend', {}, 'Where'),
      field('Endpoint', c.target), field('New endpoint name', c.newName), field('Deployment name', c.depName, 'Like blue or green: an endpoint can hold several versions and split traffic between them.'),
      field('Instances', c.instances, 'Sealed sessions serving it; a dead one is replaced.'), field('Size', c.size),
      field('Trace sample rate (0–1)', c.sample, 'Every request is counted; this share keeps its trace.'),
      h('label', {}, c.redact, ' Redact inputs and outputs in traces')),
    c.err,
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Deploy'), button('Close', close)),
    c.out);
}

// A new endpoint is made first (its keys show this once), then the deployment on it.
async function deploy(c, flowRef) {
  let endpoint = c.target.value;
  if (!endpoint) {
    const made = await post('/api/v1/endpoints', { name: c.newName.value.trim() });
    endpoint = made.endpoint.name;
    c.out.append(keysCard(made.keys, endpoint));
  }
  await post(`/api/v1/endpoints/${enc(endpoint)}/deployments`, {
    name: c.depName.value.trim(), flow: flowRef, instances: Number(c.instances.value), size: c.size.value,
    sample_rate: Number(c.sample.value), redact_payloads: c.redact.checked,
  });
  c.out.append(h('p', {}, `Deploying ${flowRef} as ${endpoint}/${c.depName.value.trim()}. `,
    h('a', { href: `#/endpoints/${enc(endpoint)}`, id: 'deploy-open' }, `Open endpoint ${endpoint}`)));
}

// Once deployed the form stays, its fields disabled, with the keys and a link to the endpoint.
export async function deployDialog(host, flowRef) {
  const c = deployControls(await get('/api/v1/endpoints').catch(() => []), flowRef);
  const toggle = () => { c.newName.closest('.field').hidden = !!c.target.value; };
  c.target.addEventListener('change', toggle);
  const form = deployForm(c, flowRef, async (ev) => {
    ev.preventDefault();
    c.err.textContent = '';
    const submit = form.querySelector('button[type=submit]');
    submit.disabled = true;
    try {
      await deploy(c, flowRef);
      form.querySelector('fieldset').disabled = true;
    } catch (e) {
      c.err.textContent = `${e.code}: ${e.message}`;
      submit.disabled = false;
    }
  }, () => form.remove());
  toggle();
  host.prepend(form);
  c.depName.focus();
}

// ---- an endpoint's page: render (`ep` holds the page's parts and filters) ----

// Bars of requests per bucket (errors stacked in red) and the p99 latency as a line.
function chart(stats) {
  const W = 900;
  const H = 140;
  const n = Math.max(1, stats.buckets.length);
  const maxReq = Math.max(1, ...stats.buckets.map((b) => b.requests));
  const maxP99 = Math.max(0.001, ...stats.buckets.map((b) => b.p99_ms));
  const bw = W / Math.max(n, 60);
  const t0 = stats.buckets.length ? stats.buckets[0].start : 0;
  const svg = h('svg:svg', { viewBox: `0 0 ${W} ${H + 20}`, class: 'chart', role: 'img', id: 'endpoint-chart', 'aria-label': `${stats.requests} requests over the last ${Math.round(stats.window_s / 60)} minutes; p99 up to ${maxP99.toFixed(1)} ms` });
  let line = '';
  stats.buckets.forEach((b) => {
    const x = ((b.start - t0) / 1000 / stats.bucket_s) * bw;
    const hReq = (b.requests / maxReq) * H;
    const hErr = (b.errors / maxReq) * H;
    svg.append(h('svg:rect', { x, y: H - hReq, width: Math.max(1, bw - 1), height: hReq, class: 'req' },
      h('svg:title', {}, `${new Date(b.start).toLocaleTimeString()}: ${b.requests} requests, ${b.errors} errors, p50 ${b.p50_ms.toFixed(1)} ms, p99 ${b.p99_ms.toFixed(1)} ms, ${b.tokens} tokens`)));
    if (hErr) svg.append(h('svg:rect', { x, y: H - hErr, width: Math.max(1, bw - 1), height: hErr, class: 'err' }));
    line += `${line ? 'L' : 'M'}${x + bw / 2},${H - (b.p99_ms / maxP99) * H} `;
  });
  if (line) svg.append(h('svg:path', { d: line, class: 'p99' }));
  svg.append(h('svg:text', { x: 2, y: H + 15, class: 'axis' }, `bars: requests per ${stats.bucket_s} s (max ${maxReq}) · line: p99 latency (max ${maxP99.toFixed(1)} ms)`));
  return svg;
}

function statCards(s) {
  const card = (label, value, id) => h('div', { class: 'stat', id }, h('div', { class: 'value' }, value), h('div', { class: 'muted' }, label));
  return h('div', { class: 'stats' },
    card('requests', s.requests, 'stat-requests'),
    card('requests/s', s.requests_per_s.toFixed(1), 'stat-rps'),
    card('errors', s.errors, 'stat-errors'),
    card('p50', `${s.p50_ms.toFixed(1)} ms`, 'stat-p50'),
    card('p99', `${s.p99_ms.toFixed(1)} ms`, 'stat-p99'),
    card('tokens', s.tokens, 'stat-tokens'));
}

// The bar: the scoring URL, and the key and delete buttons its `actions` allow.
function endpointBar(ep, e) {
  const newKey = (which) => button(`New ${which} key`, (ev) => act(ev.target, () => rotateKey(ep, which)));
  return h('div', { class: 'bar' }, h('h1', {}, 'Endpoint ', h('code', {}, e.name)),
    h('span', { class: 'muted' }, 'owner ', e.owner, ' · ', h('code', { id: 'scoring-url' }, `${location.origin}${e.scoring_uri}`)),
    may(e, 'regenerate_keys') ? newKey('primary') : null,
    may(e, 'regenerate_keys') ? newKey('secondary') : null,
    may(e, 'delete') ? button('Delete endpoint', (ev) => act(ev.target, () => deleteEndpoint(ep.name)), { class: 'danger' }) : null);
}

// A deployment's row; its traffic share is an input the Save traffic button reads (`split`: the
// caller may change the endpoint's traffic split).
function deploymentRow(ep, d, split) {
  const pct = h('input', { type: 'number', min: 0, max: 100, value: d.traffic, name: `traffic-${d.name}`, 'aria-label': `traffic to ${d.name}`, disabled: !split, class: 'narrow' });
  ep.traffic.set(d.name, pct);
  return h('tr', { 'data-deployment': d.name, 'data-status': d.status },
    h('td', {}, d.name),
    h('td', {}, h('a', { href: `#/flows/${enc(d.flow)}` }, d.flow), d.revision > 1 ? h('span', { class: 'muted' }, ` rev ${d.revision}`) : null),
    h('td', {}, badge(d.status), d.problem ? h('div', { class: 'reason' }, d.problem) : null),
    h('td', {}, `${d.ready}`),
    h('td', {}, d.max_instances > d.min_instances ? `${d.instances} (${d.min_instances}–${d.max_instances})` : `${d.instances}`),
    h('td', {}, pct),
    h('td', {}, `${Math.round(d.sample_rate * 100)}%${d.redact_payloads ? ', redacted' : ''}`),
    h('td', {}, may(d, 'delete') ? button('Delete', (ev) => act(ev.target, () => deleteDeployment(ep, d.name)), { class: 'danger', 'aria-label': `Delete deployment ${d.name}` }) : null));
}

// Deployments and the traffic split, from the endpoint `e` as last read.
function drawDeps(ep, e) {
  ep.traffic.clear();
  clear(ep.deps, h('h2', { id: 'dep-h' }, 'Deployments'),
    e.deployments.length ? h('div', { class: 'scroll' }, table(['Deployment', 'Flow', 'Status', 'Ready', 'Instances', 'Traffic %', 'Traces', ''],
      e.deployments.map((d) => deploymentRow(ep, d, may(e, 'update'))), { id: 'deployments' })) : h('p', { class: 'muted' }, 'No deployment yet: open a flow version and press Deploy….'),
    may(e, 'update') && e.deployments.length ? h('div', { class: 'actions' }, button('Save traffic', (ev) => act(ev.target, () => saveTraffic(ep)), { id: 'save-traffic' })) : null);
}

// The dashboard's and the requests' filters, kept across redraws.
function filters(e) {
  return {
    minutes: h('select', { name: 'minutes', id: 'stats-window' }, [[15, 'last 15 min'], [60, 'last hour'], [1440, 'last day']].map(([m, t]) => h('option', { value: m, selected: m === 60 }, t))),
    deployment: h('select', { name: 'deployment', id: 'requests-deployment' }, h('option', { value: '' }, 'every deployment'), e.deployments.map((d) => h('option', { value: d.name }, d.name))),
    status: h('select', { name: 'status', id: 'requests-status' }, [['all', 'all'], ['ok', 'succeeded'], ['error', 'failed']].map(([v, t]) => h('option', { value: v }, t))),
  };
}

function requestRow(ep, r) {
  return h('tr', { 'data-request': r.id, 'data-status': r.status },
    h('td', {}, r.sampled ? h('a', { href: `#/endpoints/${enc(ep.name)}/requests/${enc(r.id)}` }, h('code', {}, r.id)) : h('code', { title: 'not sampled: no trace kept' }, r.id)),
    h('td', {}, fmtAgo(r.started)),
    h('td', {}, r.deployment),
    h('td', {}, h('span', { class: `badge ${r.status < 400 ? 'st-completed' : 'st-failed'}` }, String(r.status)), r.streamed ? h('span', { class: 'muted' }, ' streamed') : null),
    h('td', {}, fmtDur(r.latency_ms / 1000)),
    h('td', {}, `${r.total_tokens}`),
    h('td', { class: 'reason' }, r.error || ''));
}

function drawDashboard(ep, stats) {
  clear(ep.dash, h('div', { class: 'bar' }, h('h2', { id: 'dash-h' }, 'Dashboard'), field('Window', ep.f.minutes)), statCards(stats), chart(stats));
}

function drawRequests(ep, list) {
  clear(ep.reqs, h('div', { class: 'bar' }, h('h2', { id: 'req-h' }, 'Requests'), field('Deployment', ep.f.deployment), field('Status', ep.f.status)),
    list.length ? h('div', { class: 'scroll tall' }, table(['Request', 'When', 'Deployment', 'Status', 'Latency', 'Tokens', 'Error'],
      list.map((r) => requestRow(ep, r)), { id: 'requests' })) : h('p', { class: 'muted' }, 'No requests in this view yet.'));
}

// ---- an endpoint's page: load ----

// The dashboard, the requests and the endpoint, as the filters ask.
async function loadDashboard(ep, signal) {
  const dq = ep.f.deployment.value ? `&deployment=${enc(ep.f.deployment.value)}` : '';
  const [stats, list, e] = await Promise.all([
    get(`/api/v1/endpoints/${enc(ep.name)}/stats?minutes=${ep.f.minutes.value}${dq}`, { signal }),
    get(`/api/v1/endpoints/${enc(ep.name)}/requests?limit=50&status=${ep.f.status.value}${dq}`, { signal }),
    get(`/api/v1/endpoints/${enc(ep.name)}`, { signal }),
  ]);
  return { stats, list, e };
}

// ---- an endpoint's page: act ----

async function refresh(ep, signal) {
  const { stats, list, e } = await loadDashboard(ep, signal);
  drawDashboard(ep, stats);
  drawRequests(ep, list);
  // Deployments change as instances start and stop: redraw unless someone is editing traffic.
  if (!ep.deps.contains(document.activeElement)) drawDeps(ep, e);
}

async function rotateKey(ep, which) {
  const k = await post(`/api/v1/endpoints/${enc(ep.name)}/keys`, { key: which });
  clear(ep.out, keysCard(k, ep.name));
}

async function deleteEndpoint(name) {
  if (!window.confirm(`Delete endpoint ${name}, its deployments and its request records?`)) return;
  await api('DELETE', `/api/v1/endpoints/${enc(name)}`);
  location.hash = '#/endpoints';
}

async function deleteDeployment(ep, deployment) {
  await api('DELETE', `/api/v1/endpoints/${enc(ep.name)}/deployments/${enc(deployment)}`);
  drawDeps(ep, await get(`/api/v1/endpoints/${enc(ep.name)}`));
}

async function saveTraffic(ep) {
  const t = {};
  for (const [d, input] of ep.traffic) t[d] = Number(input.value) || 0;
  const saved = await api('PATCH', `/api/v1/endpoints/${enc(ep.name)}`, { traffic: t });
  notify({ message: `Traffic: ${trafficText(saved.traffic)}` }, 'info');
  drawDeps(ep, saved);
}

export async function page({ main, params, query, signal }) {
  const name = params[0];
  const e = await get(`/api/v1/endpoints/${enc(name)}`);
  const card = (attrs) => h('section', { class: 'card wide', ...attrs });
  const ep = {
    name, out: h('div', {}), traffic: new Map(), f: filters(e),
    deps: card({ 'aria-labelledby': 'dep-h' }), dash: card({ 'aria-labelledby': 'dash-h', id: 'dashboard' }), reqs: card({ 'aria-labelledby': 'req-h' }),
  };
  main.append(endpointBar(ep, e), ep.out);
  drawDeps(ep, e);
  main.append(h('div', { class: 'grid' }, ep.deps, ep.dash, ep.reqs));
  for (const s of Object.values(ep.f)) s.addEventListener('change', () => refresh(ep, signal).catch(notify));
  await refresh(ep, signal);
  const timer = setInterval(() => { if (!document.hidden) refresh(ep, signal).catch(() => {}); }, 3000);
  signal.addEventListener('abort', () => clearInterval(timer));
  if (query.get('deploy')) deployDialog(main, query.get('deploy'));
}

// ---- a request's trace ----

// The request, and the flow its deployment serves (the trace draws without it, if need be).
async function loadRequest(name, id) {
  const r = await get(`/api/v1/endpoints/${enc(name)}/requests/${enc(id)}`);
  let flow = null;
  try {
    const d = await get(`/api/v1/endpoints/${enc(name)}/deployments/${enc(r.deployment)}`);
    flow = await get(`/api/v1/flows/${enc(d.flow)}`);
  } catch (_) { /* the trace draws without the flow's definitions */ }
  return { r, flow };
}

export async function request({ main, params }) {
  const [name, id] = params;
  const { r, flow } = await loadRequest(name, id);
  main.append(h('p', {}, h('a', { href: `#/endpoints/${enc(name)}` }, `← endpoint ${name}`)),
    h('p', { class: 'muted', id: 'request-summary' },
      `${new Date(r.started).toLocaleString()} · deployment ${r.deployment} · session ${r.session_id} · HTTP ${r.status} in ${fmtDur(r.latency_ms / 1000)} · ${r.total_tokens} tokens${r.streamed ? ' · streamed' : ''}`));
  if (!r.sampled) {
    main.append(h('p', {}, 'This request was not sampled: its trace was not kept.'));
    return;
  }
  const { render } = await import('./trace.js');
  render(main, `Trace of request ${id}`, {
    inputs: r.inputs, outputs: r.outputs, error: r.error, status: r.status < 400 ? 'Completed' : 'Failed',
    duration: r.duration, node_runs: r.node_runs,
  }, flow);
}
