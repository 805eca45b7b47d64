// Endpoints: the scoring URLs of the workspace, the flow versions deployed behind them and
// their traffic split; an endpoint's dashboard (requests/s, p50/p99 latency, errors, tokens)
// and its requests, each opening its trace; the Deploy dialog flow and run pages open.
import { auth, api, get, post } from './api.js';
import { h, clear, fmtAgo, fmtDur, badge, field, button, table, act, notify } from './dom.js';

const enc = encodeURIComponent;

// An endpoint's keys, shown this once.
function keysCard(keys, name) {
  const rows = Object.entries(keys).filter(([, v]) => v);
  return h('section', { class: 'card keys', id: 'endpoint-keys', role: 'status' },
    h('h2', {}, `Keys of ${name}`),
    h('p', { class: 'banner' }, 'Shown this once: copy them into your secret store now. Only their hashes are kept.'),
    h('dl', {}, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, h('code', { class: 'key' }, v))])),
    h('p', { class: 'muted' }, 'Call it with ', h('code', {}, `Authorization: Bearer <key>`), '.'));
}

export async function list({ main }) {
  const endpoints = await get('/api/v1/endpoints');
  const out = h('div', {});
  main.append(h('div', { class: 'bar' }, h('h1', {}, 'Endpoints'),
    auth.writer ? button('New endpoint…', () => createDialog(out), { class: 'primary', id: 'new-endpoint' }) : null), out);
  if (!endpoints.length) {
    main.append(h('p', { class: 'muted' }, 'No endpoints yet. Deploy a flow version from its flow page (', h('em', {}, 'Deploy…'), '), or ', h('code', {}, 'flowrt endpoint create NAME'), '.'));
    return;
  }
  main.append(h('div', { class: 'scroll' }, table(['Endpoint', 'Owner', 'Deployments', 'Traffic', 'Scoring URL'],
    endpoints.map((e) => h('tr', { 'data-endpoint': e.name },
      h('td', {}, h('a', { href: `#/endpoints/${enc(e.name)}` }, e.name)),
      h('td', {}, e.owner),
      h('td', {}, e.deployments.map((d, i) => [i ? ', ' : '', `${d.name} (${d.flow}) `, badge(d.status)])),
      h('td', {}, trafficText(e.traffic)),
      h('td', {}, h('code', {}, `${location.origin}${e.scoring_uri}`)))), { id: 'endpoints' })));
}

function trafficText(t) {
  const parts = Object.entries(t || {}).map(([d, p]) => `${d} ${p}%`);
  return parts.length ? parts.join(' · ') : 'none';
}

function createDialog(out) {
  const name = h('input', { name: 'name', required: true, pattern: '[A-Za-z0-9_][A-Za-z0-9_-]*', maxlength: 64 });
  const err = h('p', { class: 'error', role: 'alert' });
  const form = h('form', { class: 'card', onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const made = await post('/api/v1/endpoints', { name: name.value.trim() });
      clear(out, keysCard(made.keys, made.endpoint.name), h('p', {}, h('a', { href: `#/endpoints/${enc(made.endpoint.name)}` }, `Open ${made.endpoint.name}`)));
    } catch (e) { err.textContent = `${e.code}: ${e.message}`; }
  } }, h('h2', {}, 'New endpoint'), field('Name', name, 'The scoring URL is /endpoints/NAME/score.'), err,
  h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Create'), button('Cancel', () => clear(out))));
  clear(out, form);
  name.focus();
}

// The Deploy dialog: a flow version behind a new or existing endpoint.
export async function deployDialog(host, flowRef) {
  const endpoints = await get('/api/v1/endpoints').catch(() => []);
  // Endpoints the caller may deploy to: their own (admins: every one).
  const mine = endpoints.filter((e) => auth.admin || e.owner === auth.me.name);
  const target = h('select', { name: 'endpoint', id: 'deploy-endpoint' },
    h('option', { value: '' }, 'a new endpoint'), mine.map((e) => h('option', { value: e.name }, e.name)));
  const newName = h('input', { name: 'new-endpoint', id: 'deploy-new-endpoint', maxlength: 64, value: String(flowRef).split('@')[0].replace(/[^A-Za-z0-9_-]/g, '-') });
  const depName = h('input', { name: 'deployment', id: 'deploy-name', required: true, maxlength: 64, value: 'blue' });
  const instances = h('input', { type: 'number', name: 'instances', min: 1, max: 64, value: 1 });
  const size = h('select', { name: 'size' }, ['small', 'medium', 'large'].map((s) => h('option', { value: s }, s)));
  const sample = h('input', { type: 'number', name: 'sample', min: 0, max: 1, step: 0.05, value: 1 });
  const redact = h('input', { type: 'checkbox', name: 'redact' });
  const err = h('p', { class: 'error', role: 'alert' });
  const out = h('div', { id: 'deploy-result', 'aria-live': 'polite' });
  const toggle = () => { newName.closest('.field').hidden = !!target.value; };
  target.addEventListener('change', toggle);
  const form = h('form', { class: 'card deploy', id: 'deploy-form', onsubmit: async (ev) => {
    ev.preventDefault();
    err.textContent = '';
    const submit = form.querySelector('button[type=submit]');
    submit.disabled = true;
    try {
      let endpoint = target.value;
      if (!endpoint) {
        const made = await post('/api/v1/endpoints', { name: newName.value.trim() });
        endpoint = made.endpoint.name;
        out.append(keysCard(made.keys, endpoint));
      }
      await post(`/api/v1/endpoints/${enc(endpoint)}/deployments`, {
        name: depName.value.trim(), flow: flowRef, instances: Number(instances.value), size: size.value,
        sample_rate: Number(sample.value), redact_payloads: redact.checked,
      });
      out.append(h('p', {}, `Deploying ${flowRef} as ${endpoint}/${depName.value.trim()}. `,
        h('a', { href: `#/endpoints/${enc(endpoint)}`, id: 'deploy-open' }, `Open endpoint ${endpoint}`)));
      form.querySelector('fieldset').disabled = true;
    } catch (e) {
      err.textContent = `${e.code}: ${e.message}`;
      submit.disabled = false;
    }
  } },
  h('h2', {}, `Deploy ${flowRef}`),
  h('fieldset', {}, h('legend', {}, 'Where'),
    field('Endpoint', target), field('New endpoint name', newName), field('Deployment name', depName, 'Like blue or green: an endpoint can hold several versions and split traffic between them.'),
    field('Instances', instances, 'Sealed sessions serving it; a dead one is replaced.'), field('Size', size),
    field('Trace sample rate (0–1)', sample, 'Every request is counted; this share keeps its trace.'),
    h('label', {}, redact, ' Redact inputs and outputs in traces')),
  err,
  h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Deploy'), button('Close', () => form.remove())),
  out);
  toggle();
  host.prepend(form);
  depName.focus();
}

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

export async function page({ main, params, query, signal }) {
  const name = params[0];
  const e = await get(`/api/v1/endpoints/${enc(name)}`);
  const may = auth.admin || (auth.writer && e.owner === auth.me.name);
  const out = h('div', {});
  main.append(h('div', { class: 'bar' }, h('h1', {}, 'Endpoint ', h('code', {}, e.name)),
    h('span', { class: 'muted' }, 'owner ', e.owner, ' · ', h('code', { id: 'scoring-url' }, `${location.origin}${e.scoring_uri}`)),
    may ? button('New primary key', (ev) => act(ev.target, async () => {
      const k = await post(`/api/v1/endpoints/${enc(name)}/keys`, { key: 'primary' });
      clear(out, keysCard(k, name));
    })) : null,
    may ? button('New secondary key', (ev) => act(ev.target, async () => {
      const k = await post(`/api/v1/endpoints/${enc(name)}/keys`, { key: 'secondary' });
      clear(out, keysCard(k, name));
    })) : null,
    may ? button('Delete endpoint', (ev) => act(ev.target, async () => {
      if (!window.confirm(`Delete endpoint ${name}, its deployments and its request records?`)) return;
      await api('DELETE', `/api/v1/endpoints/${enc(name)}`);
      location.hash = '#/endpoints';
    }), { class: 'danger' }) : null), out);

  // Deployments and the traffic split.
  const deps = h('section', { class: 'card wide', 'aria-labelledby': 'dep-h' });
  const traffic = new Map();
  const drawDeps = (ep) => {
    traffic.clear();
    clear(deps, h('h2', { id: 'dep-h' }, 'Deployments'),
      ep.deployments.length ? h('div', { class: 'scroll' }, table(['Deployment', 'Flow', 'Status', 'Ready', 'Instances', 'Traffic %', 'Traces', ''],
        ep.deployments.map((d) => {
          const pct = h('input', { type: 'number', min: 0, max: 100, value: d.traffic, name: `traffic-${d.name}`, 'aria-label': `traffic to ${d.name}`, disabled: !may, class: 'narrow' });
          traffic.set(d.name, pct);
          return h('tr', { 'data-deployment': d.name, 'data-status': d.status },
            h('td', {}, d.name),
            h('td', {}, h('a', { href: `#/flows/${enc(d.flow)}` }, d.flow), d.revision > 1 ? h('span', { class: 'muted' }, ` rev ${d.revision}`) : null),
            h('td', {}, badge(d.status), d.problem ? h('div', { class: 'reason' }, d.problem) : null),
            h('td', {}, `${d.ready}`),
            h('td', {}, d.max_instances > d.min_instances ? `${d.instances} (${d.min_instances}–${d.max_instances})` : `${d.instances}`),
            h('td', {}, pct),
            h('td', {}, `${Math.round(d.sample_rate * 100)}%${d.redact_payloads ? ', redacted' : ''}`),
            h('td', {}, may ? button('Delete', (ev) => act(ev.target, async () => {
              await api('DELETE', `/api/v1/endpoints/${enc(name)}/deployments/${enc(d.name)}`);
              drawDeps(await get(`/api/v1/endpoints/${enc(name)}`));
            }), { class: 'danger', 'aria-label': `Delete deployment ${d.name}` }) : null));
        }), { id: 'deployments' })) : h('p', { class: 'muted' }, 'No deployment yet: open a flow version and press Deploy….'),
      may && ep.deployments.length ? h('div', { class: 'actions' }, button('Save traffic', (ev) => act(ev.target, async () => {
        const t = {};
        for (const [d, input] of traffic) t[d] = Number(input.value) || 0;
        const saved = await api('PATCH', `/api/v1/endpoints/${enc(name)}`, { traffic: t });
        notify({ message: `Traffic: ${trafficText(saved.traffic)}` }, 'info');
        drawDeps(saved);
      }), { id: 'save-traffic' })) : null);
  };
  drawDeps(e);

  // The dashboard and the requests.
  const minutes = h('select', { name: 'minutes', id: 'stats-window' }, [[15, 'last 15 min'], [60, 'last hour'], [1440, 'last day']].map(([m, t]) => h('option', { value: m, selected: m === 60 }, t)));
  const depFilter = h('select', { name: 'deployment', id: 'requests-deployment' }, h('option', { value: '' }, 'every deployment'), e.deployments.map((d) => h('option', { value: d.name }, d.name)));
  const statusFilter = h('select', { name: 'status', id: 'requests-status' }, [['all', 'all'], ['ok', 'succeeded'], ['error', 'failed']].map(([v, t]) => h('option', { value: v }, t)));
  const dash = h('section', { class: 'card wide', 'aria-labelledby': 'dash-h', id: 'dashboard' });
  const reqs = h('section', { class: 'card wide', 'aria-labelledby': 'req-h' });
  main.append(h('div', { class: 'grid' }, deps, dash, reqs));
  const refresh = async () => {
    const dq = depFilter.value ? `&deployment=${enc(depFilter.value)}` : '';
    const [stats, list, ep] = await Promise.all([
      get(`/api/v1/endpoints/${enc(name)}/stats?minutes=${minutes.value}${dq}`, { signal }),
      get(`/api/v1/endpoints/${enc(name)}/requests?limit=50&status=${statusFilter.value}${dq}`, { signal }),
      get(`/api/v1/endpoints/${enc(name)}`, { signal }),
    ]);
    clear(dash, h('div', { class: 'bar' }, h('h2', { id: 'dash-h' }, 'Dashboard'), field('Window', minutes)), statCards(stats), chart(stats));
    clear(reqs, h('div', { class: 'bar' }, h('h2', { id: 'req-h' }, 'Requests'), field('Deployment', depFilter), field('Status', statusFilter)),
      list.length ? h('div', { class: 'scroll tall' }, table(['Request', 'When', 'Deployment', 'Status', 'Latency', 'Tokens', 'Error'],
        list.map((r) => h('tr', { 'data-request': r.id, 'data-status': r.status },
          h('td', {}, r.sampled ? h('a', { href: `#/endpoints/${enc(name)}/requests/${enc(r.id)}` }, h('code', {}, r.id)) : h('code', { title: 'not sampled: no trace kept' }, r.id)),
          h('td', {}, fmtAgo(r.started)),
          h('td', {}, r.deployment),
          h('td', {}, h('span', { class: `badge ${r.status < 400 ? 'st-completed' : 'st-failed'}` }, String(r.status)), r.streamed ? h('span', { class: 'muted' }, ' streamed') : null),
          h('td', {}, fmtDur(r.latency_ms / 1000)),
          h('td', {}, `${r.total_tokens}`),
          h('td', { class: 'reason' }, r.error || ''))), { id: 'requests' })) : h('p', { class: 'muted' }, 'No requests in this view yet.'));
    // Deployments change as instances start and stop: redraw unless someone is editing traffic.
    if (!deps.contains(document.activeElement)) drawDeps(ep);
  };
  for (const s of [minutes, depFilter, statusFilter]) s.addEventListener('change', () => refresh().catch(notify));
  await refresh();
  const timer = setInterval(() => { if (!document.hidden) refresh().catch(() => {}); }, 3000);
  signal.addEventListener('abort', () => clearInterval(timer));
  if (query.get('deploy')) deployDialog(main, query.get('deploy'));
}

export async function request({ main, params }) {
  const [name, id] = params;
  const r = await get(`/api/v1/endpoints/${enc(name)}/requests/${enc(id)}`);
  main.append(h('p', {}, h('a', { href: `#/endpoints/${enc(name)}` }, `← endpoint ${name}`)));
  let flow = null;
  try {
    const d = await get(`/api/v1/endpoints/${enc(name)}/deployments/${enc(r.deployment)}`);
    flow = await get(`/api/v1/flows/${enc(d.flow)}`);
  } catch (_) { /* the trace draws without the flow's definitions */ }
  main.append(h('p', { class: 'muted', id: 'request-summary' },
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
