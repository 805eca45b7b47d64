// Authoring a flow in headless Chromium, as users would: open the `authoring` fixture (an llm, a
// prompt and a python node), change the llm node's temperature and prompt, rename a node and see
// its references follow, save v2 with a message, compare v1 and v2, have two users edit v2 at
// once (the second save is refused with the difference and saved under a new name), and check a
// viewer sees no edit controls and a forced save is refused. Started by tests/ui.rs.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { env, launch, stepper, assert, signedIn as contextFor } from './harness.mjs';

const BASE = env('FLOWRT_URL');
const SHOTS = env('SCREENSHOTS');
const T = { alice: env('TOKEN_ALICE'), viewer: env('TOKEN_VIEWER'), owner: env('TOKEN_OWNER') };
const metrics = { steps: {}, bytes: {} };

const browser = await launch();
const { step, state } = stepper(metrics);

const pageErrors = [];
async function signedIn(token, who) {
  const user = await contextFor(browser, token, { width: 1440, height: 1000 });
  // Where a CSP refusal came from, to fix it at its source.
  await user.ctx.addInitScript(() => document.addEventListener('securitypolicyviolation', (e) => console.log(`CSP refused ${e.violatedDirective} at ${e.sourceFile}:${e.lineNumber}:${e.columnNumber} ${e.sample}`)));
  user.page.on('pageerror', (e) => pageErrors.push(`${who}: ${e.message}`));
  user.page.on('console', (m) => { if (/Content Security Policy|Refused to|CSP refused/.test(m.text())) pageErrors.push(`${who} (${state.current}): ${m.text().slice(0, 200)}`); });
  return user;
}

const shot = (page, name) => page.screenshot({ path: join(SHOTS, `editor-${name}.png`), fullPage: true });

// A node form's input field, by node and input name.
const inputOf = (page, node, key) => page.locator(`input[data-input="${node}.${key}"]`);

async function waitChecked(page, changed) {
  await page.locator('#draft-status').getByText(`${changed} changed file`).waitFor();
  await page.locator('#draft-ok').waitFor();
}

let savedAt = 0;
const alice = await signedIn(T.alice, 'alice');
const owner = await signedIn(T.owner, 'owner');
const viewer = await signedIn(T.viewer, 'viewer');

try {
  const { page } = alice;

  await step('open the flow and start editing', async () => {
    await page.goto(`${BASE}/#/flows/authoring`);
    await page.locator('svg.dag').waitFor();
    await page.locator('#edit-flow').click();
    await page.getByRole('heading', { name: /Edit flow authoring from v1/ }).waitFor();
    await page.locator('fieldset[data-node="ask"]').waitFor();
    await page.locator('#draft-ok').waitFor();
    // The code editor is not loaded until a file is opened.
    const loaded = await page.evaluate(() => performance.getEntriesByType('resource').some((e) => e.name.includes('codemirror')));
    assert(!loaded, 'the code editor loaded before anything was opened');
    // The session's package tools were asked for (its flow's packages declare none).
    await page.locator('#package-tool option').first().getByText('no package tools in the session').waitFor({ state: 'attached' });
    await shot(page, 'nodes');
  });

  await step("change the llm node's temperature", async () => {
    const t = inputOf(page, 'ask', 'temperature');
    assert(await t.inputValue() === '0.2', `temperature shows ${await t.inputValue()}`);
    await t.fill('0.9');
    await t.press('Tab');
    await waitChecked(page, 1);
    assert(await inputOf(page, 'ask', 'temperature').inputValue() === '0.9', 'the new temperature is not shown');
  });

  await step("edit the llm node's prompt in the code editor", async () => {
    await page.locator('[data-open-source="ask"]').click();
    const editor = page.locator('fieldset[data-node="ask"] .cm-content');
    await editor.waitFor();
    await editor.click();
    await page.keyboard.press('Control+End');
    await page.keyboard.type('Be brief.\n');
    await waitChecked(page, 2);
    // Search works in the editor (Ctrl-F opens its panel).
    await page.keyboard.press('Control+f');
    await page.locator('fieldset[data-node="ask"] .cm-search').waitFor();
    await page.keyboard.press('Escape');
    await shot(page, 'prompt');
    const bytes = await page.evaluate(() => performance.getEntriesByType('resource')
      .filter((e) => /codemirror|editor\.js/.test(e.name)).reduce((a, e) => a + (e.decodedBodySize || 0), 0));
    metrics.bytes.editor_assets_decoded = bytes;
  });

  await step('rename a node and see its references follow', async () => {
    const name = page.locator('input[data-node-name="wrap"]');
    await name.fill('framed');
    await page.locator('[data-rename="wrap"]').click();
    await page.locator('fieldset[data-node="framed"]').waitFor();
    assert(await inputOf(page, 'shout', 'text').inputValue() === '${framed.output}', 'the reference did not follow the rename');
    await shot(page, 'renamed');
  });

  await step('the draft survives a reload', async () => {
    await page.reload();
    await page.locator('fieldset[data-node="framed"]').waitFor();
    await page.locator('#draft-status').getByText('2 changed files').waitFor();
  });

  await step('raw mode opens any file with line numbers', async () => {
    await page.locator('#file-list [data-file="flow.dag.yaml"]').click();
    await page.locator('#editor-pane .cm-lineNumbers').waitFor();
    const text = await page.locator('#editor-pane .cm-content').innerText();
    assert(text.includes('# The browser editor must keep these comments'), 'the YAML comment is gone');
    assert(text.includes('- name: framed'), 'the rename is not in the file');
    await shot(page, 'raw');
  });

  await step('save as v2 with a message', async () => {
    await page.locator('#save').click();
    await page.locator('#save-message').fill('warmer answers; wrap is framed');
    savedAt = Date.now();
    await page.locator('#save-confirm').click();
    await page.waitForURL(/#\/flows\/authoring%40v2$|#\/flows\/authoring@v2$/);
    await page.locator('#version-message').getByText('warmer answers; wrap is framed').waitFor();
    await page.locator('.alert.info').getByText('Saved authoring@v2').waitFor();
    await shot(page, 'saved');
  });

  await step('switch the session to v2 without a restart and run a line on it', async () => {
    const select = page.locator('#session-select');
    await select.locator('option:not([disabled])').nth(1).waitFor({ state: 'attached' });
    await select.selectOption({ index: 1 });
    await page.locator('#switch-session').click();
    await page.locator('.alert.info').getByText(/without a restart/).waitFor();
    await page.locator('#switch-session').waitFor({ state: 'hidden' });
    await page.getByRole('button', { name: 'Run line' }).click();
    const out = page.locator('#test-outputs');
    await out.waitFor();
    const answer = JSON.parse(await out.innerText()).answer;
    // v2's prompt ("Be brief.") reached the model through the switched session.
    assert(/BE BRIEF\./.test(answer), `v2 did not run: ${answer}`);
    metrics.steps.save_click_to_tested_on_v2_ms = Date.now() - savedAt;
    await shot(page, 'switched');
  });

  await step('compare v1 and v2: only the changed lines', async () => {
    await page.locator('#compare-versions').click();
    await page.locator('#comparison').waitFor();
    const yaml = page.locator('.diff-file[data-file="flow.dag.yaml"]');
    const removed = await yaml.locator('tr.del').allInnerTexts();
    const added = await yaml.locator('tr.add').allInnerTexts();
    assert(removed.length === 3 && added.length === 3, `flow.dag.yaml: ${removed.length} removed, ${added.length} added`);
    assert(added.some((l) => l.includes('temperature: 0.9')), `added: ${added}`);
    const files = await page.locator('.diff-file').evaluateAll((els) => els.map((e) => e.dataset.file));
    assert(JSON.stringify(files) === JSON.stringify(['ask.jinja2', 'flow.dag.yaml']), `files: ${files}`);
    await shot(page, 'compare');
  });

  await step('two users edit v2 at once: the second save is refused with the difference', async () => {
    const other = owner.page;
    await other.goto(`${BASE}/#/flows/authoring@v2/edit`);
    await page.goto(`${BASE}/#/flows/authoring@v2/edit`);
    for (const p of [page, other]) await p.locator('fieldset[data-node="ask"]').waitFor();
    await inputOf(page, 'ask', 'max_tokens').fill('128');
    await inputOf(page, 'ask', 'max_tokens').press('Tab');
    await waitChecked(page, 1);
    await inputOf(other, 'ask', 'max_tokens').fill('32');
    await inputOf(other, 'ask', 'max_tokens').press('Tab');
    await waitChecked(other, 1);
    await page.locator('#save').click();
    await page.locator('#save-message').fill('longer answers');
    await page.locator('#save-confirm').click();
    await page.locator('#version-message').getByText('longer answers').waitFor();
    await other.locator('#save').click();
    await other.locator('#save-message').fill('shorter answers');
    await other.locator('#save-confirm').click();
    await other.locator('#save-conflict').getByText(/authoring@v3 was saved after authoring@v2/).waitFor();
    const theirs = await other.locator('#save-result tr.add').allInnerTexts();
    assert(theirs.some((l) => l.includes('max_tokens: 128')), `the difference shown: ${theirs}`);
    await shot(other, 'conflict');
    await other.locator('#save-as-name').fill('authoring_short');
    await other.locator('#save-as').click();
    await other.waitForURL(/authoring_short/);
    await other.locator('#version-message').getByText('shorter answers').waitFor();
  });

  await step('a viewer sees no edit controls and a forced save is refused', async () => {
    const v = viewer.page;
    await v.goto(`${BASE}/#/flows/authoring@v3`);
    await v.locator('svg.dag').waitFor();
    assert(await v.locator('#edit-flow').innerText() === 'Files', 'a viewer is offered to edit');
    await v.goto(`${BASE}/#/flows/authoring@v3/edit`);
    await v.locator('#read-only').waitFor();
    assert(await v.locator('#save').count() === 0, 'a viewer has a Save button');
    assert(await v.locator('input[data-input="ask.temperature"]').isDisabled(), 'a viewer can type into a node form');
    const status = await v.evaluate(async () => {
      const r = await fetch('/api/v1/flows/authoring/versions', {
        method: 'POST',
        headers: { Authorization: `Bearer ${sessionStorage.getItem('flowrt.token')}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ base: 'authoring@v3', message: 'forced', files: { 'wrap.jinja2': 'x' } }),
      });
      return r.status;
    });
    assert(status === 403, `a viewer's forced save got ${status}`);
    await shot(v, 'viewer');
  });

  await step("validate adds a python tool's new parameter as a node input", async () => {
    await page.goto(`${BASE}/#/flows/authoring@v3/edit`);
    await page.locator('fieldset[data-node="shout"]').waitFor();
    assert(await page.locator('#validate-session option:checked').innerText() !== 'no running session', 'no session to validate in');
    await page.locator('#file-list [data-file="shout.py"]').click();
    await page.locator('#editor-pane .cm-content').click();
    await page.keyboard.press('Control+a');
    await page.keyboard.press('Backspace');
    // Typed as a user types: the editor indents the function's body itself.
    await page.keyboard.type('from promptflow.connections import OpenAIConnection\nfrom promptflow.core import tool\n\n\n@tool\ndef shout(text: str, times: int = 2, model: OpenAIConnection = None) -> str:\nreturn text.upper() * times\n');
    await page.locator('#draft-status').getByText('1 changed file').waitFor();
    await page.locator('#validate').click();
    await page.locator('#validated').getByText(/added inputs: shout\.times/).waitFor();
    metrics.steps.validate_text = await page.locator('#validated').innerText();
    await page.locator('#nav-nodes').click();
    assert(await inputOf(page, 'shout', 'times').inputValue() === '2', 'the new input is not in the node form');
    // A parameter typed as a connection picks one of that kind.
    await page.locator('select[data-input="shout.model"] option[value="test_openai"]').waitFor({ state: 'attached' });
    await shot(page, 'validated');
  });

  await step('run a line of the unsaved draft in the session, and open its trace', async () => {
    await page.locator('#draft-test-card input[name="question"]').fill('What is a DAG?');
    const t0 = Date.now();
    await page.locator('#draft-test').click();
    const out = page.locator('#draft-test-outputs');
    await out.waitFor();
    const text = await out.innerText();
    metrics.steps.draft_line_ms = Date.now() - t0;
    // The draft's shout (not saved yet) repeats the framed answer `times` (2) times, with the
    // prompt saved in v2 ("Be brief.").
    const answer = JSON.parse(text).answer;
    assert((answer.match(/ANSWER: ECHO: WHAT IS A DAG\?\nBE BRIEF\./g) || []).length === 2, `outputs: ${text}`);
    await shot(page, 'draft-test');
    await page.locator('#draft-trace-link').click();
    await page.locator('text=shout').first().waitFor();
    await shot(page, 'draft-trace');
    await page.goBack();
    await page.locator('#draft-test-card').waitFor();
  });

  await step('add a variant of the llm node, edit its prompt and test it', async () => {
    await page.locator('[data-add-variant="ask"]').click();
    const pick = page.locator('select[data-variant="ask"]');
    await pick.waitFor();
    await page.waitForFunction(() => document.querySelector('select[data-variant="ask"]')?.value === 'variant_1');
    await page.locator('[data-open-source="ask"]').getByText('ask__variant_1.jinja2').click();
    const editor = page.locator('fieldset[data-node="ask"] .cm-content');
    await editor.waitFor();
    await editor.click();
    await page.keyboard.press('Control+End');
    await page.keyboard.type('Variant one.\n');
    await page.locator('#file-list [data-file="ask__variant_1.jinja2"]').waitFor();
    await page.locator('#draft-test').click();
    await page.waitForFunction(() => /VARIANT ONE\./.test(document.querySelector('#draft-test-outputs')?.textContent || ''));
    await page.locator('[data-default-variant="ask"]').click();
    await page.locator('select[data-variant="ask"] option:checked').getByText('variant_1 (default)').waitFor({ state: 'attached' });
    await shot(page, 'variant');
  });

  await step('run one node alone with given inputs, and re-run from a node', async () => {
    page.once('dialog', (d) => d.accept('{"text": "solo", "times": 3}'));
    await page.locator('[data-run-node="shout"]').click();
    await page.locator('#draft-test-what').getByText('Ran node shout alone.').waitFor();
    const alone = JSON.parse(await page.locator('#draft-test-outputs').innerText());
    assert(alone.output === 'SOLOSOLOSOLO', `one node alone: ${JSON.stringify(alone)}`);
    await page.locator('[data-rerun-from="shout"]').click();
    await page.locator('#draft-test-what').getByText('Ran from node shout.').waitFor();
    const from = JSON.parse(await page.locator('#draft-test-outputs').innerText());
    assert((from.answer.match(/VARIANT ONE\./g) || []).length === 2, `re-run from shout: ${JSON.stringify(from)}`);
    await shot(page, 'partial');
  });

  await step('a tool that raises at import shows its file and line', async () => {
    await page.locator('#file-list [data-file="shout.py"]').click();
    await page.locator('#editor-pane .cm-content').click();
    await page.keyboard.press('Control+a');
    await page.keyboard.press('Backspace');
    await page.keyboard.type('from promptflow.core import tool\n\nraise RuntimeError("the API key is not set")\n\n@tool\ndef shout(text: str) -> str:\nreturn text\n');
    await page.locator('#validate').click();
    await page.locator('#draft-problems').getByText('shout.py:3').waitFor();
    await page.locator('#draft-problems').getByText(/the API key is not set/).waitFor();
    await shot(page, 'import-error');
  });

  assert(!pageErrors.length, `page errors: ${pageErrors.join('; ')}`);
} finally {
  writeFileSync(join(SHOTS, 'editor-metrics.json'), JSON.stringify(metrics, null, 2));
  await browser.close();
}
process.exit(state.failed ? 1 : 0);
