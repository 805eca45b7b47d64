// Authoring: owns the flow editor (#/flows/REF/edit) and the comparison of two versions
// (#/flows/NAME/compare). The editor holds a draft of one version, edited node by node (the
// flatten view) or file by file (raw mode), checked by the server as it changes, and saved as
// the next version with a message. The server edits flow.dag.yaml in its text, so comments and
// key order stay; a save over a version someone saved meanwhile is refused with the difference
// (never a silent last-save-wins). The draft is kept in this browser until it is saved or
// discarded. `edit` loads; EditorPage's render* methods draw from the draft's last check; its
// other methods act (ask the server, then redraw). Whether the caller may save comes from the
// flow's `actions` (edit).
import { get, post } from './api.js';
import { h, clear, field, button, notify, act } from './dom.js';

const KINDS = ['string', 'int', 'double', 'bool', 'list', 'object'];
const LLM_CONNECTIONS = ['open_ai', 'azure_open_ai', 'serverless', 'custom'];

// ---- the draft: what changed from the base version, kept across reloads ----

class Draft {
  constructor(base) {
    this.base = base; // FlowVersion the draft started from
    this.key = `flowrt.draft.${base.ref}`;
    this.changes = new Map(); // path -> text, or null when deleted
    this.texts = new Map(); // path -> the base version's text (loaded when first needed)
    this.view = null; // the server's DraftView of the last check
    this.variant = null; // {node, id}: the variant shown instead of that node's default
  }

  restore() {
    const saved = localStorage.getItem(this.key);
    if (!saved) return null;
    try {
      const { files, at } = JSON.parse(saved);
      this.changes = new Map(Object.entries(files));
      return at;
    } catch (_) {
      return null;
    }
  }

  keep() {
    if (!this.changes.size) localStorage.removeItem(this.key);
    else localStorage.setItem(this.key, JSON.stringify({ files: Object.fromEntries(this.changes), at: Date.now() }));
  }

  forget() {
    this.changes.clear();
    localStorage.removeItem(this.key);
  }

  async text(path) {
    if (this.changes.has(path)) return this.changes.get(path);
    if (!this.texts.has(path)) {
      const f = await get(`/api/v1/flows/${encodeURIComponent(this.base.ref)}/file?path=${encodeURIComponent(path)}`);
      this.texts.set(path, f.text);
    }
    return this.texts.get(path);
  }

  set(path, text) {
    if (this.texts.get(path) === text && this.changes.has(path)) this.changes.delete(path);
    else this.changes.set(path, text);
    this.keep();
  }

  // Ask the server to make `edits` and check the result; the edited files join the draft.
  async check(edits = [], { validate = false, session = null } = {}) {
    const body = { files: Object.fromEntries(this.changes), edits };
    if (this.variant) body.variant = this.variant;
    if (validate) Object.assign(body, { validate, session: session || undefined });
    const view = await post(`/api/v1/flows/${encodeURIComponent(this.base.ref)}/draft`, body);
    for (const [path, text] of Object.entries(view.files)) {
      if (text === null) this.changes.set(path, null);
      else this.set(path, text);
    }
    this.view = view;
    return view;
  }
}

// ---- small parts ----

// What a test of the draft gave; the trace page reads the line back from this tab's storage.
function draftTestResult(line, what) {
  return [h('p', { class: 'muted', id: 'draft-test-what' }, `Ran ${what}.`),
    line.error ? h('div', { class: 'error', id: 'draft-test-error' }, h('strong', {}, `Node ${line.error.node || '?'} failed: `), line.error.display || line.error.message) : null,
    h('pre', { class: 'json', id: 'draft-test-outputs' }, JSON.stringify(line.outputs, null, 2)),
    h('p', {}, `Took ${(line.duration * 1000).toFixed(0)} ms. `, h('a', { href: '#/trace/test', id: 'draft-trace-link' }, 'View this line’s trace'))];
}

function problemList(problems) {
  if (!problems || !problems.length) return h('p', { class: 'ok', id: 'draft-ok' }, 'The draft loads: no problems.');
  return h('ul', { class: 'error', id: 'draft-problems' }, problems.map((p) =>
    h('li', {}, h('code', {}, `${p.file}${p.line ? `:${p.line}` : ''}`), ' ', p.message)));
}

// A literal typed into a form keeps its YAML type: numbers and booleans stay numbers and booleans.
function literal(text, was) {
  if (typeof was === 'number' && text.trim() !== '' && !Number.isNaN(Number(text))) return Number(text);
  if (typeof was === 'boolean' && (text === 'true' || text === 'false')) return text === 'true';
  return text;
}

// The connection kinds (`type` of a connection record) a tool parameter takes, from its meta's
// types (promptflow's connection classes), or null when it takes no connection.
const CONNECTION_CLASSES = {
  CustomConnection: 'custom', OpenAIConnection: 'open_ai', AzureOpenAIConnection: 'azure_open_ai', ServerlessConnection: 'serverless',
};
function connectionKinds(meta) {
  const kinds = ((meta && meta.type) || []).map((t) => CONNECTION_CLASSES[t]).filter(Boolean);
  return kinds.length ? kinds : null;
}

function show(v) {
  return typeof v === 'string' ? v : JSON.stringify(v);
}

function references(flow, except) {
  const refs = Object.keys(flow.inputs).map((k) => `\${inputs.${k}}`);
  for (const n of flow.nodes) if (n.name !== except) refs.push(`\${${n.name}.output}`);
  return refs;
}

let editorModule = null;
// The code editor's assets load only when a file or node is first opened for editing.
async function codeEditor(parent, { doc, language, label, onChange, readOnly }) {
  editorModule ||= import('./vendor/codemirror.js').catch(() => null);
  const mod = await editorModule;
  if (mod) return mod.createEditor({ parent, doc, language, label, onChange, readOnly });
  // Without the bundle (a trimmed build), a plain text area still edits the file.
  const ta = h('textarea', { rows: 16, spellcheck: 'false', 'aria-label': label, readonly: readOnly }, doc);
  ta.addEventListener('input', () => onChange && onChange(ta.value));
  parent.append(ta);
  return { getValue: () => ta.value, setValue: (t) => { ta.value = t; }, focus: () => ta.focus(), destroy: () => ta.remove() };
}

function languageOf(path) {
  if (/\.py$/.test(path)) return 'python';
  if (/\.ya?ml$/.test(path)) return 'yaml';
  if (/\.(jinja2?|j2|prompty)$/.test(path)) return 'jinja';
  if (/\.jsonl?$/.test(path)) return 'json';
  return 'text';
}

function debounce(fn, ms) {
  let t = null;
  return (...args) => { clearTimeout(t); t = setTimeout(() => fn(...args), ms); };
}

// ---- the page ----

export async function edit({ main, params }) {
  const ref = params[0];
  const detail = await get(`/api/v1/flows/${encodeURIComponent(ref)}`);
  const [files, connections, all] = await Promise.all([
    get(`/api/v1/flows/${encodeURIComponent(detail.ref)}/files`),
    get('/api/v1/connections').catch(() => []),
    get('/api/v1/flows'),
  ]);
  const latest = all.filter((f) => f.name === detail.name).reduce((a, b) => (b.version > a.version ? b : a), detail);
  const sessions = await get('/api/v1/sessions').catch(() => []); // offered: those whose actions say test
  const page = new EditorPage(main, detail, files.files, connections, latest, sessions);
  await page.start();
}

class EditorPage {
  constructor(main, detail, files, connections, latest, sessions) {
    this.main = main;
    this.draft = new Draft(detail);
    this.detail = detail;
    this.baseFiles = files.map((f) => f.path);
    this.connections = connections;
    this.latest = latest;
    this.mayEdit = detail.actions.includes('edit'); // the server says who may save its next version
    this.pane = h('section', { class: 'card editor-pane', 'aria-live': 'polite', id: 'editor-pane' });
    this.status = h('div', { class: 'draft-status', id: 'draft-status', 'aria-live': 'polite' });
    this.testCard = h('section', { class: 'card test-pane', id: 'draft-test-card', 'aria-label': 'Test the draft' });
    this.nav = h('nav', { class: 'editor-nav', 'aria-label': 'Draft' });
    this.editors = [];
    this.selected = { kind: 'nodes' };
    this.drawn = false;
    this.recheck = debounce(() => this.validate(), 400);
    // Running sessions where python tools are read, this flow's first.
    this.sessions = sessions.filter((x) => x.actions.includes('test'))
      .sort((a, b) => Number((b.flow_ref || '').split('@')[0] === detail.name) - Number((a.flow_ref || '').split('@')[0] === detail.name));
  }

  async start() {
    if (!this.mayEdit) {
      // A reader sees the version as it is: nothing to check, nothing kept.
      this.draft.view = { files: {}, flow: this.detail, problems: [] };
      this.renderFrame();
      this.renderStatus(this.draft.view);
      this.renderNav();
      await this.renderPane();
      return;
    }
    const restoredAt = this.draft.restore();
    this.renderFrame();
    this.sessionSel.addEventListener('change', () => this.loadPackageTools());
    this.loadPackageTools();
    if (restoredAt) notify({ message: `Restored your unsaved changes to ${this.draft.base.ref} from ${new Date(restoredAt).toLocaleString()}.` }, 'info');
    await this.validate();
  }

  renderFrame() {
    const d = this.draft.base;
    const title = h('h1', {}, this.mayEdit ? 'Edit flow ' : 'Flow ', h('code', {}, d.name), ` from v${d.version}`);
    const older = this.latest.version > d.version
      ? h('p', { class: 'banner' }, `${this.latest.ref} is newer than this version; saving here will be refused unless you save under a new name.`)
      : null;
    this.sessionSel = h('select', { id: 'validate-session' },
      h('option', { value: '' }, this.sessions.length ? 'no session (templates only)' : 'no running session'),
      this.sessions.map((x, i) => h('option', { value: x.id, selected: i === 0 }, `${x.id} · ${x.flow_ref}`)));
    const actions = this.mayEdit
      ? h('div', { class: 'actions' },
        field('Session', this.sessionSel),
        button('Validate', (ev) => act(ev.target, () => this.validateTools()), { id: 'validate' }),
        button('Save…', () => this.saveDialog(), { class: 'primary', id: 'save' }),
        button('Discard changes', () => this.discard(), { id: 'discard' }))
      : h('p', { class: 'muted', id: 'read-only' }, 'You may read this flow but not change it.');
    clear(this.main,
      h('div', { class: 'bar' }, title, actions,
        h('a', { href: `#/flows/${encodeURIComponent(d.ref)}` }, 'Back to the flow'),
        h('a', { href: `#/flows/${encodeURIComponent(d.name)}/compare?from=${Math.max(1, d.version - 1)}&to=${d.version}` }, 'Compare versions')),
      older, this.status,
      h('div', { class: 'editor-grid' }, this.nav, this.pane),
      this.mayEdit ? this.testCard : null);
  }

  // ---- testing the draft in the session, before it is saved ----

  renderTest(flow) {
    const names = Object.keys(flow.inputs).join(',');
    if (this.testInputNames === names) return;
    this.testInputNames = names;
    const controls = Object.entries(flow.inputs).filter(([, spec]) => !spec.is_chat_history).map(([name, spec]) => {
      const old = this.testCard.querySelector(`[name="${CSS.escape(name)}"]`);
      const value = old ? old.value : (spec.default === undefined || spec.default === null ? '' : show(spec.default));
      return [name, spec, h('input', { name, value, size: 40, 'aria-label': `Test input ${name}` })];
    });
    const result = h('div', { id: 'draft-test-result', 'aria-live': 'polite' });
    const run = h('button', { type: 'submit', class: 'primary', id: 'draft-test' }, 'Run line on the draft');
    const form = h('form', {}, h('h2', {}, 'Test the draft'),
      h('p', { class: 'muted' }, 'Runs one line of the unsaved draft in the session picked above, with its environment and connections.'),
      controls.map(([name, spec, c]) => field(`${name} (${spec.type})`, c)),
      h('div', { class: 'actions' }, run), result);
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      act(run, () => this.testDraft());
    });
    this.testControls = controls;
    this.testResult = result;
    clear(this.testCard, form);
  }

  testInputs() {
    const inputs = {};
    for (const [name, spec, c] of this.testControls || []) {
      if (c.value === '') continue;
      inputs[name] = ['int', 'double', 'bool', 'list', 'object'].includes(spec.type) ? JSON.parse(c.value) : c.value;
    }
    return inputs;
  }

  // A whole line, or part of it (`partial`: one node alone, or from a node on).
  async testDraft(partial) {
    const result = this.testResult;
    const inputs = this.testInputs();
    const session = this.sessionSel.value;
    if (!session) throw new Error('pick a running session to test in (start one from the flow page)');
    clear(result, h('span', { class: 'muted' }, 'running…'));
    const line = await post(`/api/v1/flows/${encodeURIComponent(this.draft.base.ref)}/draft/test`,
      { files: Object.fromEntries(this.draft.changes), session, inputs, variant: this.draft.variant || undefined, partial });
    if (!partial) this.lastTest = { inputs, line };
    const what = partial ? (partial.kind === 'node' ? `node ${partial.node} alone` : `from node ${partial.node}`) : 'the whole line';
    sessionStorage.setItem('flowrt.lastTest', JSON.stringify({ flow: `${this.draft.base.ref} (draft)`, session, inputs, at: Date.now(), ...line }));
    clear(result, draftTestResult(line, what));
  }

  // Read every node's tool (python code in the session, templates on the server) and add the
  // inputs a tool takes that its node lacks.
  async validateTools() {
    const t0 = performance.now();
    const view = await this.draft.check([], { validate: true, session: this.sessionSel.value });
    this.tools = view.tools; // kept for the forms until the next validate
    this.drawn = false;
    this.renderStatus(view);
    this.renderNav();
    await this.renderPane();
    this.drawn = true;
    const took = Math.round(performance.now() - t0);
    this.status.append(h('p', { id: 'validated', class: 'muted' },
      view.added_inputs && view.added_inputs.length ? `Validated in ${took} ms; added inputs: ${view.added_inputs.join(', ')}.` : `Validated in ${took} ms; no inputs to add.`));
  }

  async validate(edits = []) {
    try {
      const view = await this.draft.check(edits);
      this.renderStatus(view);
      this.renderNav();
      // Typing in a code editor re-checks without redrawing it; a change to the flow's settings
      // (or the first check) redraws the forms.
      if (edits.length || !this.drawn) await this.renderPane();
      this.drawn = true;
      return view;
    } catch (e) {
      notify(e);
      return null;
    }
  }

  renderStatus(view) {
    const n = this.draft.changes.size;
    clear(this.status,
      h('p', {}, n ? `${n} changed file${n > 1 ? 's' : ''} not saved yet.` : 'No changes yet.'),
      problemList(view.problems));
  }

  renderNav() {
    const item = (label, sel, attrs = {}) => h('li', {}, h('button', {
      type: 'button', class: 'link', 'aria-current': this.isSelected(sel) ? 'true' : null, ...attrs,
      onclick: () => { this.selected = sel; this.renderNav(); this.renderPane(); },
    }, label));
    const paths = new Set([...this.baseFiles, ...this.draft.changes.keys()]);
    const fileItems = [...paths].sort().map((p) => {
      const state = this.draft.changes.has(p) ? (this.draft.changes.get(p) === null ? ' (deleted)' : ' (changed)') : '';
      return item(`${p}${state}`, { kind: 'file', path: p }, { 'data-file': p });
    });
    clear(this.nav,
      h('h2', {}, 'Flow'),
      h('ul', {}, item('Nodes', { kind: 'nodes' }, { id: 'nav-nodes' }), item('Inputs and outputs', { kind: 'io' }, { id: 'nav-io' })),
      h('h2', {}, 'Files'),
      h('ul', { id: 'file-list' }, fileItems),
      this.mayEdit ? button('New file…', () => this.newFile(), { id: 'new-file' }) : null);
  }

  isSelected(sel) {
    return sel.kind === this.selected.kind && sel.path === this.selected.path;
  }

  async renderPane() {
    for (const e of this.editors) e.destroy();
    this.editors = [];
    const flow = this.draft.view && this.draft.view.flow;
    if (this.selected.kind === 'file') return this.renderFile(this.selected.path);
    if (!flow) {
      clear(this.pane, h('p', { class: 'error' }, 'The draft does not load (see the problems above); fix flow.dag.yaml in its file, then come back.'));
      return undefined;
    }
    if (this.mayEdit) this.renderTest(flow);
    if (this.selected.kind === 'io') return this.renderIo(flow);
    return this.renderNodes(flow);
  }

  // ---- raw mode ----

  async renderFile(path) {
    const text = await this.draft.text(path);
    const body = h('div', { class: 'code-host' });
    const tools = this.mayEdit && text !== null ? h('div', { class: 'actions' },
      button('Rename…', () => this.renameFile(path), { id: 'rename-file' }),
      button('Delete', () => this.deleteFile(path), { class: 'danger', id: 'delete-file' })) : null;
    clear(this.pane, h('h2', {}, h('code', {}, path)), tools,
      text === null ? h('p', { class: 'muted' }, 'This file is deleted in the draft, or is not text.') : body);
    if (text === null) return;
    const ed = await codeEditor(body, {
      doc: text, language: languageOf(path), label: `Contents of ${path}`, readOnly: !this.mayEdit,
      onChange: (t) => { this.draft.set(path, t); this.recheck(); },
    });
    this.editors.push(ed);
  }

  async newFile() {
    const path = window.prompt('Path of the new file, relative to the flow folder (for example tools/helper.py):');
    if (!path) return;
    this.draft.set(path, '');
    this.selected = { kind: 'file', path };
    await this.validate();
    await this.renderFile(path);
  }

  async renameFile(path) {
    const to = window.prompt(`Rename ${path} to:`, path);
    if (!to || to === path) return;
    const text = await this.draft.text(path);
    this.draft.changes.set(path, null);
    this.draft.set(to, text);
    this.selected = { kind: 'file', path: to };
    await this.validate();
    await this.renderFile(to);
  }

  async deleteFile(path) {
    if (!window.confirm(`Delete ${path} from the draft?`)) return;
    this.draft.changes.set(path, null);
    this.draft.keep();
    this.selected = { kind: 'nodes' };
    this.drawn = false;
    await this.validate();
  }

  // ---- the flatten view: one form per node ----

  renderNodes(flow) {
    const list = h('div', { class: 'node-forms' });
    clear(this.pane, h('h2', {}, 'Nodes'), this.mayEdit ? this.addNodeBar(flow) : null, list);
    for (const n of flow.nodes) list.append(this.nodeForm(flow, n));
  }

  addNodeBar(flow) {
    this.packageSelect = h('select', { id: 'package-tool', 'aria-label': 'Package tool to add' });
    this.fillPackageSelect();
    const pick = this.packageSelect;
    return h('div', { class: 'actions' }, 'Add a node:',
      ['python', 'llm', 'prompt'].map((type) => button(type, () => this.addNode(flow, type), { 'data-add-node': type })),
      pick, button('Add', () => pick.value && this.addPackageNode(flow, pick.value), { id: 'add-package-node' }));
  }

  fillPackageSelect() {
    if (!this.packageSelect) return;
    const tools = this.packageTools;
    const label = !this.sessionSel.value ? 'package tools: pick a session' : !tools ? 'package tools: loading…'
      : tools.length ? 'a package tool…' : 'no package tools in the session';
    clear(this.packageSelect, h('option', { value: '' }, label),
      (tools || []).map((t) => h('option', { value: t.id, title: t.description }, `${t.name} (${t.id})`)));
  }

  // The tools the picked session's packages declare (listing them runs their code: in the
  // session). Only the list is redrawn: a form being typed in stays as it is.
  async loadPackageTools() {
    const id = this.sessionSel.value;
    this.packageTools = null;
    this.fillPackageSelect();
    if (!id) return;
    try {
      this.packageTools = (await get(`/api/v1/sessions/${encodeURIComponent(id)}/tools`)).tools;
    } catch (_) {
      this.packageTools = [];
    }
    this.fillPackageSelect();
  }

  async addPackageNode(flow, id) {
    const tool = (this.packageTools || []).find((t) => t.id === id);
    if (!tool) return;
    const name = window.prompt(`Name of the new ${tool.name} node (letters, digits and _):`, tool.name.toLowerCase().replace(/\W+/g, '_'));
    if (!name) return;
    const inputs = Object.fromEntries(Object.entries(tool.inputs).map(([k, m]) => [k, m.default ?? '']));
    const node = { name, type: tool.type === 'llm' ? 'llm' : 'python', source: { type: 'package', tool: id }, inputs };
    await this.apply([{ op: 'set', path: ['nodes', flow.nodes.length], value: node }]);
  }

  nodeForm(flow, n) {
    const box = h('fieldset', { class: 'node-form', 'data-node': n.name }, h('legend', {}, h('code', {}, n.name), ` ${n.type}`));
    const disabled = !this.mayEdit;
    // A node with variants keeps its settings in the variant shown.
    const at = (...rest) => (n.variant
      ? ['node_variants', n.name, 'variants', n.variant, 'node', ...rest]
      : ['nodes', { name: n.name }, ...rest]);
    box.append(this.renameRow(n, disabled));
    if (n.source && n.type !== 'python' && n.type !== 'llm' && n.type !== 'prompt') box.append(h('p', {}, 'Tool: ', h('code', {}, n.source)));
    box.append(this.variantRow(n, disabled));
    if (n.type === 'llm') box.append(this.llmRow(n, at, disabled));
    box.append(this.inputsTable(flow, n, at, disabled));
    box.append(this.conditionRow(n, at, disabled));
    if (n.source && ['python', 'llm', 'prompt'].includes(n.type)) box.append(this.sourceEditor(n));
    if (!disabled) {
      box.append(h('div', { class: 'actions' },
        button('Run this node alone', (ev) => act(ev.target, () => this.runNode(n)), { 'data-run-node': n.name }),
        button('Re-run from here', (ev) => act(ev.target, () => this.rerunFrom(n)), { 'data-rerun-from': n.name }),
        button('Delete node', () => this.removeNode(n), { class: 'danger', 'data-delete-node': n.name })));
    }
    return box;
  }

  renameRow(n, disabled) {
    const name = h('input', { value: n.name, disabled, 'data-node-name': n.name, size: 28 });
    const go = () => name.value && name.value !== n.name && this.apply([{ op: 'rename_node', from: n.name, to: name.value }]);
    name.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') { ev.preventDefault(); go(); } });
    return h('div', { class: 'bar' }, field('Name', name), disabled ? null : button('Rename', go, { 'data-rename': n.name }));
  }

  variantRow(n, disabled) {
    const info = (this.draft.view.variants || {})[n.name];
    const add = disabled ? null : button('Add variant', () => this.addVariant(n), { 'data-add-variant': n.name });
    if (!info) return h('div', { class: 'bar' }, add);
    const pick = h('select', { 'data-variant': n.name, 'aria-label': `Variant of ${n.name} shown` },
      info.ids.map((id) => h('option', { value: id, selected: id === n.variant }, id === info.default ? `${id} (default)` : id)));
    pick.addEventListener('change', () => this.showVariant(n.name, pick.value));
    const makeDefault = disabled || n.variant === info.default ? null
      : button('Make default', () => this.apply([{ op: 'set_default_variant', node: n.name, variant: n.variant }]), { 'data-default-variant': n.name });
    return h('div', { class: 'bar' }, field('Variant', pick), add, makeDefault);
  }

  async showVariant(node, id) {
    this.draft.variant = { node, id };
    this.drawn = false;
    await this.validate();
  }

  async addVariant(n) {
    const before = ((this.draft.view.variants || {})[n.name] || { ids: [] }).ids;
    const view = await this.validate([{ op: 'add_variant', node: n.name, from: n.variant || undefined }]);
    const ids = view && view.variants && view.variants[n.name] ? view.variants[n.name].ids : [];
    // The first variant added also names the node's settings `variant_0`: show the copy.
    const added = ids.filter((id) => !before.includes(id)).pop();
    if (added) await this.showVariant(n.name, added);
  }

  llmRow(n, at, disabled) {
    const kinds = new Set(LLM_CONNECTIONS);
    const usable = this.connections.filter((c) => kinds.has(c.type));
    const names = new Set(usable.map((c) => c.name));
    if (n.connection) names.add(n.connection);
    const conn = h('select', { disabled, 'data-connection': n.name, onchange: (e) => this.apply([{ op: 'set', path: at('connection'), value: e.target.value }]) },
      [...names].map((c) => h('option', { value: c, selected: c === n.connection }, c)));
    const api = h('select', { disabled, 'data-api': n.name, onchange: (e) => this.apply([{ op: 'set', path: at('api'), value: e.target.value }]) },
      ['chat', 'completion'].map((a) => h('option', { value: a, selected: a === (n.api || 'chat') }, a)));
    return h('div', { class: 'bar' }, field('Connection', conn), field('API', api));
  }

  inputsTable(flow, n, at, disabled) {
    const listId = `refs-${n.name}`;
    const options = h('datalist', { id: listId }, references(flow, n.name).map((r) => h('option', { value: r })));
    const meta = (this.tools && this.tools[n.name] && this.tools[n.name].inputs) || {};
    const rows = Object.entries(n.inputs || {}).map(([k, v]) => {
      // A parameter typed as a connection (from the last validate) picks one of that kind.
      const kinds = connectionKinds(meta[k]);
      const input = kinds
        ? h('select', { disabled, 'data-input': `${n.name}.${k}`, 'aria-label': `${n.name} connection ${k}` },
          h('option', { value: '' }, '(none)'),
          [...new Set([...this.connections.filter((c) => kinds.includes(c.type)).map((c) => c.name), ...(v ? [show(v)] : [])])]
            .map((c) => h('option', { value: c, selected: c === show(v) }, c)))
        : h('input', { value: show(v), disabled, list: listId, 'data-input': `${n.name}.${k}`, 'aria-label': `${n.name} input ${k}` });
      input.addEventListener('change', () => this.apply([{ op: 'set', path: at('inputs', k), value: literal(input.value, v) }]));
      return h('tr', {}, h('th', { scope: 'row' }, h('code', {}, k)), h('td', {}, input),
        h('td', {}, disabled ? null : button('Remove', () => this.apply([{ op: 'remove', path: at('inputs', k) }]), { class: 'link', 'aria-label': `Remove input ${k} of ${n.name}` })));
    });
    const key = h('input', { placeholder: 'name', size: 14, disabled, 'aria-label': `New input of ${n.name}` });
    const value = h('input', { placeholder: 'value or ${reference}', list: listId, disabled, 'aria-label': `Value of the new input of ${n.name}` });
    const add = disabled ? null : h('tr', {}, h('td', {}, key), h('td', {}, value),
      h('td', {}, button('Add input', () => key.value && this.apply([{ op: 'set', path: at('inputs', key.value), value: value.value }]))));
    return h('div', {}, h('h3', {}, 'Inputs'), options, h('table', { class: 'inputs' }, h('tbody', {}, rows, add)));
  }

  conditionRow(n, at, disabled) {
    const when = h('input', { value: n.activate ? n.activate.when : '', disabled, placeholder: '${node.output}', 'aria-label': `${n.name} runs when`, size: 30 });
    const is = h('input', { value: n.activate ? show(n.activate.is) : '', disabled, placeholder: 'true', 'aria-label': `${n.name} runs when it is`, size: 10 });
    const parse = (t) => { try { return JSON.parse(t); } catch (_) { return t; } };
    const set = () => (when.value
      ? this.apply([{ op: 'set', path: at('activate'), value: { when: when.value, is: parse(is.value) } }])
      : n.activate && this.apply([{ op: 'remove', path: at('activate') }]));
    const agg = h('input', { type: 'checkbox', checked: !!n.aggregation, disabled, onchange: (e) => this.apply([{ op: 'set', path: at('aggregation'), value: e.target.checked }]) });
    return h('div', { class: 'bar' }, h('span', {}, 'Activate when'), when, h('span', {}, 'is'), is,
      disabled ? null : button('Set', set), field('Aggregation', agg));
  }

  // The node's template or code, in a code editor that opens on demand.
  sourceEditor(n) {
    const host = h('div', { class: 'code-host' });
    const what = n.type === 'python' ? 'code' : 'prompt template';
    const open = button(`Edit ${what} (${n.source})`, async () => {
      open.remove();
      const text = await this.draft.text(n.source);
      const ed = await codeEditor(host, {
        doc: text ?? '', language: languageOf(n.source), label: `${n.name} ${what}`, readOnly: !this.mayEdit,
        onChange: (t) => { this.draft.set(n.source, t); this.recheck(); },
      });
      this.editors.push(ed);
      ed.focus();
    }, { 'data-open-source': n.name });
    return h('div', {}, open, host);
  }

  // The outputs each node gave in the last whole-line test of this draft, by node.
  lastOutputs() {
    const runs = this.lastTest && Array.isArray(this.lastTest.line.node_runs) ? this.lastTest.line.node_runs : [];
    return Object.fromEntries(runs.filter((r) => r.output !== undefined).map((r) => [r.node, r.output]));
  }

  // One node alone: its inputs as they were in the last test (a reference becomes the value it
  // read), editable as JSON before it runs.
  async runNode(n) {
    const outputs = this.lastOutputs();
    const given = this.lastTest ? this.lastTest.inputs : this.testInputs();
    const inputs = {};
    for (const [k, v] of Object.entries(n.inputs || {})) {
      const m = typeof v === 'string' && v.match(/^\$\{(\w+)\.(\w+)\}$/);
      if (m && m[1] === 'inputs') inputs[k] = given[m[2]] ?? null;
      else if (m && m[2] === 'output') inputs[k] = outputs[m[1]] ?? null;
      else inputs[k] = v;
    }
    const text = window.prompt(`Inputs of ${n.name} (JSON):`, JSON.stringify(inputs));
    if (text === null) return;
    await this.testDraft({ kind: 'node', node: n.name, inputs: JSON.parse(text) });
  }

  async rerunFrom(n) {
    if (!this.lastTest) throw new Error('run the whole line first: a re-run reads the earlier nodes\' outputs from it');
    await this.testDraft({ kind: 'from', node: n.name, upstream: this.lastOutputs() });
  }

  async addNode(flow, type) {
    const name = window.prompt(`Name of the new ${type} node (letters, digits and _):`);
    if (!name) return;
    const file = type === 'python' ? `${name}.py` : `${name}.jinja2`;
    const input = flow.nodes.length ? `\${${flow.nodes[flow.nodes.length - 1].name}.output}` : `\${inputs.${Object.keys(flow.inputs)[0] || 'text'}}`;
    const node = { name, type, source: { type: 'code', path: file }, inputs: { text: input } };
    if (type === 'llm') {
      const conn = this.connections.find((c) => LLM_CONNECTIONS.includes(c.type));
      Object.assign(node, { connection: conn ? conn.name : '', api: 'chat' });
    }
    if (type === 'python') this.draft.set(file, `from promptflow.core import tool\n\n\n@tool\ndef ${name}(text: str) -> str:\n    return text\n`);
    else this.draft.set(file, type === 'llm' ? '# system:\nYou are a helpful assistant.\n\n# user:\n{{text}}\n' : '{{text}}\n');
    await this.apply([{ op: 'set', path: ['nodes', flow.nodes.length], value: node }]);
  }

  async removeNode(n) {
    if (!window.confirm(`Delete node ${n.name}? Nodes and outputs that read it will show problems until you change them.`)) return;
    await this.apply([{ op: 'remove', path: ['nodes', { name: n.name }] }]);
  }

  // ---- flow inputs and outputs ----

  renderIo(flow) {
    clear(this.pane, h('h2', {}, 'Flow inputs'), this.inputsForm(flow), h('h2', {}, 'Flow outputs'), this.outputsForm(flow));
  }

  inputsForm(flow) {
    const disabled = !this.mayEdit;
    const rows = Object.entries(flow.inputs).map(([k, s]) => {
      const at = (...rest) => ['inputs', k, ...rest];
      const type = h('select', { disabled, 'aria-label': `Type of input ${k}`, onchange: (e) => this.apply([{ op: 'set', path: at('type'), value: e.target.value }]) },
        KINDS.map((t) => h('option', { value: t, selected: t === s.type }, t)));
      const def = h('input', { value: s.default === undefined || s.default === null ? '' : show(s.default), disabled, 'aria-label': `Default of input ${k}` });
      def.addEventListener('change', () => this.apply([def.value === '' ? { op: 'remove', path: at('default') } : { op: 'set', path: at('default'), value: literal(def.value, s.default) }]));
      const flag = (name, on) => h('input', { type: 'checkbox', checked: !!on, disabled, 'aria-label': `${k} ${name}`, onchange: (e) => this.apply([{ op: 'set', path: at(name), value: e.target.checked }]) });
      return h('tr', { 'data-flow-input': k }, h('th', { scope: 'row' }, h('code', {}, k)), h('td', {}, type), h('td', {}, def),
        h('td', {}, flag('is_chat_input', s.is_chat_input)), h('td', {}, flag('is_chat_history', s.is_chat_history)),
        h('td', {}, disabled ? null : button('Remove', () => this.apply([{ op: 'remove', path: at() }]), { class: 'link' })));
    });
    const name = h('input', { placeholder: 'name', disabled, 'aria-label': 'New flow input' });
    const add = disabled ? null : h('tr', {}, h('td', {}, name), h('td', { colspan: 5 },
      button('Add input', () => name.value && this.apply([{ op: 'set', path: ['inputs', name.value], value: { type: 'string' } }]))));
    return h('table', { class: 'inputs' }, h('thead', {}, h('tr', {}, ['Name', 'Type', 'Default', 'Chat input', 'Chat history', ''].map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, rows, add));
  }

  outputsForm(flow) {
    const disabled = !this.mayEdit;
    const listId = 'refs-outputs';
    const rows = Object.entries(flow.outputs).map(([k, o]) => {
      const at = (...rest) => ['outputs', k, ...rest];
      const ref = h('input', { value: o.reference, disabled, list: listId, size: 36, 'aria-label': `Reference of output ${k}` });
      ref.addEventListener('change', () => this.apply([{ op: 'set', path: at('reference'), value: ref.value }]));
      const chat = h('input', { type: 'checkbox', checked: !!o.is_chat_output, disabled, 'aria-label': `${k} is_chat_output`, onchange: (e) => this.apply([{ op: 'set', path: at('is_chat_output'), value: e.target.checked }]) });
      return h('tr', { 'data-flow-output': k }, h('th', { scope: 'row' }, h('code', {}, k)), h('td', {}, ref), h('td', {}, chat),
        h('td', {}, disabled ? null : button('Remove', () => this.apply([{ op: 'remove', path: at() }]), { class: 'link' })));
    });
    const name = h('input', { placeholder: 'name', disabled, 'aria-label': 'New flow output' });
    const add = disabled ? null : h('tr', {}, h('td', {}, name), h('td', { colspan: 3 },
      button('Add output', () => name.value && this.apply([{ op: 'set', path: ['outputs', name.value], value: { type: 'string', reference: references(flow).pop() || '' } }]))));
    return h('div', {}, h('datalist', { id: listId }, references(flow).map((r) => h('option', { value: r }))),
      h('table', { class: 'inputs' }, h('thead', {}, h('tr', {}, ['Name', 'Reference', 'Chat output', ''].map((x) => h('th', { scope: 'col' }, x)))),
        h('tbody', {}, rows, add)));
  }

  // ---- changes, saving ----

  async apply(edits) {
    const view = await this.validate(edits);
    if (view && view.problems.length && !view.flow) notify({ message: view.problems.map((p) => p.message).join('; ') });
  }

  async discard() {
    if (!window.confirm('Discard every unsaved change of this draft?')) return;
    this.draft.forget();
    this.drawn = false;
    await this.validate();
  }

  saveDialog() {
    const message = h('textarea', { rows: 3, required: true, id: 'save-message', placeholder: 'What changed, and why' });
    const result = h('div', { 'aria-live': 'polite', id: 'save-result' });
    const dlg = h('dialog', { class: 'card wide-dialog', 'aria-labelledby': 'save-title' });
    const go = h('button', { type: 'submit', class: 'primary', id: 'save-confirm' }, `Save as ${this.draft.base.name}@v${this.latest.version + 1}`);
    const form = h('form', { method: 'dialog' }, h('h2', { id: 'save-title' }, 'Save a new version'),
      field('Message', message), result,
      h('div', { class: 'actions' }, go, button('Cancel', () => dlg.close())));
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      act(go, () => this.save(this.draft.base.name, message.value, result, dlg));
    });
    dlg.append(form);
    document.body.append(dlg);
    dlg.addEventListener('close', () => dlg.remove());
    dlg.showModal();
    message.focus();
  }

  async save(name, message, result, dlg) {
    const body = { base: this.draft.base.ref, message, files: Object.fromEntries(this.draft.changes) };
    try {
      const saved = await post(`/api/v1/flows/${encodeURIComponent(name)}/versions`, body);
      this.draft.forget();
      dlg.close();
      sessionStorage.setItem('flowrt.notice', saved.unchanged ? `Nothing changed: ${saved.ref} already holds these files.` : `Saved ${saved.ref}.`);
      location.hash = `#/flows/${encodeURIComponent(saved.ref)}`;
    } catch (e) {
      if (e.status !== 409 || !e.body || !e.body.latest) throw e;
      this.showConflict(e.body, message, result, dlg);
    }
  }

  // Someone saved after this draft's base: show what they changed, and the ways on.
  showConflict(conflict, message, result, dlg) {
    const newName = h('input', { value: `${this.draft.base.name}_copy`, 'aria-label': 'New flow name', id: 'save-as-name' });
    clear(result,
      h('div', { class: 'error', id: 'save-conflict', role: 'alert' }, h('p', {}, conflict.message)),
      h('h3', {}, `What ${conflict.latest.ref} changed`), diffView(conflict.changes),
      h('div', { class: 'actions' },
        field('Save as a new flow', newName),
        button('Save as new flow', (ev) => act(ev.target, () => this.save(newName.value, message, result, dlg)), { id: 'save-as' }),
        button(`Continue from ${conflict.latest.ref}`, () => this.rebase(conflict, dlg), { id: 'rebase' })));
  }

  // Keep this draft's files on top of the latest version; files both changed are listed.
  async rebase(conflict, dlg) {
    const theirs = new Set(conflict.changes.map((c) => c.path));
    const both = [...this.draft.changes.keys()].filter((p) => theirs.has(p));
    const carried = Object.fromEntries(this.draft.changes);
    this.draft.forget();
    localStorage.setItem(`flowrt.draft.${conflict.latest.ref}`, JSON.stringify({ files: carried, at: Date.now() }));
    dlg.close();
    if (both.length) sessionStorage.setItem('flowrt.notice', `Your changes now apply to ${conflict.latest.ref}. Review ${both.join(', ')}: ${conflict.latest.ref} changed them too, and your version of each is the one kept.`);
    location.hash = `#/flows/${encodeURIComponent(conflict.latest.ref)}/edit`;
  }
}

// ---- comparing versions ----

export function diffView(files) {
  if (!files.length) return h('p', { class: 'muted' }, 'The versions hold the same files.');
  return h('div', { class: 'diff' }, files.map((f) => h('section', { class: 'diff-file', 'data-file': f.path },
    h('h3', {}, h('code', {}, f.path), ` ${f.status}`),
    f.hunks.length ? f.hunks.map(hunkTable) : h('p', { class: 'muted' }, 'Not text: only that it changed is shown.'))));
}

function hunkTable(hunk) {
  let a = hunk.from_line;
  let b = hunk.to_line;
  const rows = hunk.lines.map((l) => {
    const left = l.op === '+' ? '' : a++;
    const right = l.op === '-' ? '' : b++;
    const cls = l.op === '+' ? 'add' : l.op === '-' ? 'del' : 'ctx';
    return h('tr', { class: cls }, h('td', { class: 'ln' }, left), h('td', { class: 'ln' }, right),
      h('td', { class: 'op', 'aria-label': cls === 'add' ? 'added' : cls === 'del' ? 'removed' : 'unchanged' }, l.op), h('td', {}, h('code', {}, l.text)));
  });
  return h('table', { class: 'hunk' }, h('tbody', {}, rows));
}

// The flow's versions, the two to compare (by default the latest and the one before), and
// what differs between them.
async function loadComparison(name, query) {
  const all = (await get('/api/v1/flows')).filter((f) => f.name === name).sort((x, y) => x.version - y.version);
  if (!all.length) throw new Error(`no flow ${name}`);
  const to = Number(query.get('to')) || all[all.length - 1].version;
  const from = Number(query.get('from')) || Math.max(1, to - 1);
  const cmp = await get(`/api/v1/flows/${encodeURIComponent(name)}/compare?from=${from}&to=${to}`);
  return { all, from, to, cmp };
}

// The two version pickers; changing either opens that comparison.
function versionPickers(name, all, from, to) {
  const pick = (id, value) => h('select', { id, onchange: () => { location.hash = `#/flows/${encodeURIComponent(name)}/compare?from=${fromSel.value}&to=${toSel.value}`; } },
    all.map((v) => h('option', { value: v.version, selected: v.version === value }, `${v.ref}${v.message ? ` · ${v.message}` : ''}`)));
  const fromSel = pick('compare-from', from);
  const toSel = pick('compare-to', to);
  return [fromSel, toSel];
}

export async function compare({ main, params, query }) {
  const name = params[0];
  const { all, from, to, cmp } = await loadComparison(name, query);
  const [fromSel, toSel] = versionPickers(name, all, from, to);
  main.append(
    h('div', { class: 'bar' }, h('h1', {}, 'Compare ', h('code', {}, name)), field('From', fromSel), field('To', toSel),
      h('a', { href: `#/flows/${encodeURIComponent(cmp.to.ref)}` }, `Open ${cmp.to.ref}`)),
    h('p', { class: 'muted' }, `${cmp.files.length} file${cmp.files.length === 1 ? '' : 's'} differ.`),
    h('div', { class: 'card', id: 'comparison' }, diffView(cmp.files)));
}
