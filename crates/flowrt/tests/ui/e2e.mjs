// The web UI's acceptance scenarios in headless Chromium (Debian's), driven by playwright-core.
// Started by crates/flowrt/tests/ui.rs with a fresh server; reads the URL, tokens and paths from
// the environment, prints one line per step, saves a screenshot per scenario, and exits non-zero
// on the first failure. Page weights and the 50-session drawing time go to metrics.json.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { env, launch, stepper, assert, signedIn as contextFor } from './harness.mjs';

const BASE = env('FLOWRT_URL');
const SHOTS = env('SCREENSHOTS');
const DATA = env('DATA_FILE');
const T = { alice: env('TOKEN_ALICE'), bob: env('TOKEN_BOB'), viewer: env('TOKEN_VIEWER'), perf: env('TOKEN_PERF'), owner: env('TOKEN_OWNER') };
const metrics = { page_weights_bytes: {}, steps: {} };
const started = Date.now();

const browser = await launch();
const { step, state } = stepper(metrics);

async function signedIn(token, viewport) {
  const user = await contextFor(browser, token, viewport);
  user.page.on('pageerror', (e) => console.log(`     page error: ${e.message}`));
  return user;
}

const shot = (page, name) => page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });

// Bytes of HTML, JS and CSS a page loaded (its data from /api/v1 is not counted).
async function weigh(page, name) {
  const bytes = await page.evaluate(() => performance.getEntriesByType('resource').concat(performance.getEntriesByType('navigation'))
    .filter((e) => !e.name.includes('/api/v1/'))
    .reduce((a, e) => a + (e.decodedBodySize || 0), 0));
  metrics.page_weights_bytes[name] = bytes;
  assert(bytes < 100 * 1024, `${name} weighs ${bytes} bytes`);
}

const alice = await signedIn(null);
const { page } = alice;
let sessionId;

try {
  await step('sign in with a token', async () => {
    await page.goto(`${BASE}/`);
    await page.getByLabel('API token').fill(T.alice);
    await shot(page, 'signin');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('#me').getByText('alice').waitFor();
    await page.getByRole('heading', { name: 'Compute sessions' }).waitFor();
    const stored = await page.evaluate(() => sessionStorage.getItem('flowrt.token'));
    assert(stored === T.alice, 'the token is kept in sessionStorage');
    assert(!page.url().includes(T.alice), 'the token is not in the URL');
  });

  await step('start a session with advanced settings and watch it reach Running without a reload', async () => {
    await page.evaluate(() => { window.__noReload = 'still here'; });
    await page.getByRole('button', { name: 'Start session…' }).click();
    const dlg = page.getByRole('dialog');
    await dlg.getByLabel('Flow').selectOption('pipeline@v1');
    await dlg.getByLabel('Compute instance').check();
    await dlg.getByLabel('Instance', { exact: true }).selectOption('alice-box');
    await dlg.getByLabel('Size', { exact: true }).selectOption('medium');
    await dlg.getByLabel('Idle timeout (minutes)').fill('0');
    await dlg.getByLabel('Base environment', { exact: true }).check();
    const base = dlg.getByLabel('Base version');
    const versions = await base.locator('option').allTextContents();
    await base.selectOption({ index: versions.length - 1 });
    await dlg.getByRole('button', { name: 'Start', exact: true }).click();
    await dlg.waitFor({ state: 'detached' });
    const row = page.locator('#sessions tbody tr').first();
    await row.waitFor();
    sessionId = await row.getAttribute('data-id');
    await page.locator(`#sessions tr[data-id="${sessionId}"][data-status="Running"]`).waitFor({ timeout: 60000 });
    const text = await page.locator(`#sessions tr[data-id="${sessionId}"]`).innerText();
    assert(text.includes('instance alice-box') && text.includes('medium') && text.includes('never'), `the row shows the settings: ${text}`);
    assert(await page.evaluate(() => window.__noReload) === 'still here', 'the page was not reloaded');
    const phases = await page.locator(`#sessions tr[data-id="${sessionId}"] .phases li`).allTextContents();
    console.log(`     phases seen: ${phases.join(' → ') || '(it was Running before the first event)'}`);
    await shot(page, 'sessions');
  });

  await step("a failing session shows its failing log line in the list", async () => {
    await page.getByRole('button', { name: 'Start session…' }).click();
    const dlg = page.getByRole('dialog');
    await dlg.getByLabel('Flow').selectOption('bad_reqs@v1');
    await dlg.getByRole('button', { name: 'Start', exact: true }).click();
    await dlg.waitFor({ state: 'detached' });
    const row = page.locator('#sessions tbody tr[data-status="Failed"]', { hasText: 'bad_reqs@v1' });
    await row.waitFor({ timeout: 60000 });
    const failing = await row.locator('code.failing').innerText();
    assert(failing.includes('flowrt-no-such-package-xyz'), `the failing line names the package: ${failing}`);
    const phases = await row.locator('.phases li').allTextContents();
    console.log(`     phases: ${phases.join(' → ')}; failing line: ${failing.slice(0, 120)}`);
    await shot(page, 'session-failed');
  });

  await step('open the flow page, pick the session, test one line and read its output', async () => {
    await page.goto(`${BASE}/#/flows`);
    await page.locator('#flows a', { hasText: 'pipeline' }).first().click();
    await page.locator('svg.dag g.node[data-node="stats"]').waitFor();
    assert(await page.locator('svg.dag g.node.agg').count() === 1, 'the aggregation node is drawn as one');
    assert(await page.locator('svg.dag path.edge.activate').count() >= 1, 'the activate condition is drawn');
    const stray = await page.evaluate(() => [...document.querySelector('main').childNodes].filter((n) => n.nodeType === Node.TEXT_NODE && n.textContent.trim()).map((n) => n.textContent));
    assert(stray.length === 0, `no stray text on the flow page (a version without a message): ${JSON.stringify(stray)}`);
    await page.locator('#session-select').selectOption(sessionId);
    await page.getByLabel('text (string)').fill('hello big world');
    await page.getByRole('button', { name: 'Run line' }).click();
    const out = page.locator('#test-outputs');
    await out.waitFor({ timeout: 30000 });
    const outputs = JSON.parse(await out.innerText());
    assert(outputs.echo === 'hello big world', `echo output: ${JSON.stringify(outputs)}`);
    assert(outputs.first_word === 'hello', `first_word output: ${JSON.stringify(outputs)}`);
    assert(await page.locator('svg.dag g.node.s-completed').count() >= 3, 'nodes are coloured by their state');
    assert(await page.locator('svg.dag g.node.s-bypassed').count() === 1, 'the inactive node is bypassed');
    await page.getByText(/Interactive tests stop after \d+ s/).waitFor();
    await shot(page, 'flow');
  });

  await step("read the test line's trace", async () => {
    await page.locator('#trace-link').click();
    await page.locator('#spans .span-row[data-span="stats"]').waitFor();
    await page.locator('#spans .span-row[data-span="stats"]').click();
    const detail = await page.locator('#span-detail').innerText();
    assert(detail.includes('stats') && detail.includes('Output'), `span details: ${detail.slice(0, 200)}`);
    await shot(page, 'trace-test');
  });

  await step('chat with a chat flow: the reply streams in, and its trace shows the LLM call', async () => {
    await page.goto(`${BASE}/#/sessions`);
    await page.getByRole('button', { name: 'Start session…' }).click();
    const dlg = page.getByRole('dialog');
    await dlg.getByLabel('Flow').selectOption('chat@v1');
    await dlg.getByRole('button', { name: 'Start', exact: true }).click();
    await dlg.waitFor({ state: 'detached' });
    const row = page.locator('#sessions tbody tr', { hasText: 'chat@v1' });
    await row.and(page.locator('[data-status="Running"]')).waitFor({ timeout: 60000 });
    const chatId = await row.getAttribute('data-id');
    await page.goto(`${BASE}/#/flows/chat`);
    await page.locator('svg.dag g.node.t-llm[data-node="chat"]').waitFor();
    await page.locator('#session-select').selectOption(chatId);
    await page.getByLabel('question (string)').fill('hello there');
    await page.getByRole('button', { name: 'Run line' }).click();
    await page.locator('ol.chat li.assistant:not(.streaming)', { hasText: 'echo: hello there' }).waitFor({ timeout: 30000 });
    await page.getByLabel('question (string)').fill('and again');
    await page.getByRole('button', { name: 'Run line' }).click();
    await page.locator('ol.chat li.assistant:not(.streaming)', { hasText: 'echo: and again' }).waitFor({ timeout: 30000 });
    assert(await page.locator('ol.chat li').count() === 4, 'two questions and two replies');
    await shot(page, 'chat');
    await page.locator('#trace-link').click();
    await page.locator('#spans .span-row.child[data-span="chat"]').click();
    const detail = await page.locator('#span-detail').innerText();
    assert(detail.includes('LLM') && detail.includes('Parameters') && detail.includes('"question": "and again"'), `the LLM span: ${detail.slice(0, 300)}`);
    // The messages the call sent, as the model got them: the chat history and the new question.
    assert(detail.includes('Messages') && detail.includes('and again') && detail.includes('"stream": true'), `the LLM call's messages: ${detail.slice(0, 600)}`);
    await shot(page, 'trace-chat');
  });

  await step('deploy a flow version from its page, score it, and read its requests, dashboard and a trace', async () => {
    await page.goto(`${BASE}/#/flows/chat@v1`);
    await page.locator('#deploy').click();
    const form = page.locator('#deploy-form');
    await form.getByLabel('New endpoint name').fill('support-chat');
    await form.getByLabel('Instances').fill('2');
    await form.getByRole('button', { name: 'Deploy', exact: true }).click();
    await page.locator('#endpoint-keys code.key').first().waitFor();
    const key = (await page.locator('#endpoint-keys code.key').first().innerText()).trim();
    assert(key.startsWith('fre_'), `a key is shown once: ${key.slice(0, 8)}`);
    await shot(page, 'deploy');
    // Score it as a caller would, with the key; the first answers come once an instance serves.
    const score = (body, auth = key) => page.evaluate(async ([url, b, k]) => {
      const r = await fetch(url, { method: 'POST', headers: { Authorization: `Bearer ${k}`, 'Content-Type': 'application/json' }, body: JSON.stringify(b) });
      return { status: r.status, body: await r.json() };
    }, [`${BASE}/endpoints/support-chat/score`, body, auth]);
    let first = null;
    for (const t = Date.now(); Date.now() - t < 60000;) {
      first = await score({ question: 'deployed?' });
      if (first.status !== 503) break;
      await page.waitForTimeout(250);
    }
    assert(first.status === 200 && first.body.answer === 'echo: deployed?', `scored: ${JSON.stringify(first)}`);
    for (let i = 0; i < 5; i++) await score({ question: `again ${i}` });
    const bad = await score({ questin: 'typo' });
    assert(bad.status === 400 && bad.body.message.includes("'question'"), `a bad body names the input: ${JSON.stringify(bad)}`);
    const refused = await score({ question: 'x' }, 'fre_not-a-key');
    assert(refused.status === 401, `a wrong key is refused: ${refused.status}`);
    await page.locator('#deploy-open').click();
    await page.locator('#deployments tr[data-deployment="blue"][data-status="Succeeded"]').waitFor({ timeout: 30000 });
    // Hers: the endpoint's `actions` give her its traffic, keys and deletion.
    assert(await page.locator('#save-traffic').isVisible(), 'the owner may save the traffic split');
    assert(await page.getByRole('button', { name: 'Delete endpoint' }).isVisible(), 'the owner may delete her endpoint');
    await page.locator('#requests tbody tr').nth(6).waitFor({ timeout: 10000 });
    // The dashboard and the list are two queries of one refresh: rows written between them show
    // in the list first and in the dashboard at the next refresh (every 3 s).
    const counted = () => Number(document.querySelector('#stat-requests .value')?.textContent) >= 7;
    const requests = await page.waitForFunction(counted, null, { timeout: 10000 }).then(() => true, () => false);
    assert(requests, `the dashboard counts the requests: ${await page.locator('#stat-requests .value').innerText()}`);
    assert(Number(await page.locator('#stat-errors .value').innerText()) >= 1, 'and the failed one');
    await page.locator('#endpoint-chart rect.req').first().waitFor();
    await page.getByLabel('Status').selectOption('error');
    await page.locator('#requests tbody tr[data-status="400"]').first().waitFor();
    await page.getByLabel('Status').selectOption('all');
    await shot(page, 'endpoint');
    await page.locator('#requests tbody tr[data-status="200"] a').first().click();
    await page.locator('#spans .span-row.child[data-span="chat"]').click();
    const detail = await page.locator('#span-detail').innerText();
    assert(detail.includes('LLM') && detail.includes('Tokens'), `the request's LLM span: ${detail.slice(0, 300)}`);
    await shot(page, 'endpoint-trace');
  });

  const submit = async (name, times) => {
    await page.goto(`${BASE}/#/runs?new=1`);
    const form = page.locator('#submit-form');
    await form.getByLabel('Session').selectOption(sessionId);
    await form.getByLabel('Run name').fill(name);
    await form.getByLabel('Data (.jsonl, .csv, .tsv)').setInputFiles(DATA);
    const text = form.locator('input[data-input="text"]');
    await text.waitFor();
    await page.waitForFunction(() => document.querySelector('input[data-input="text"]')?.value === '${data.text}');
    // The form maps every input to the data column of its name; the first run keeps the flow's
    // default for times (2), the second reads 3 from the data, so 'repeated' differs on every line.
    await form.locator('input[data-input="times"]').fill(times ? '${data.times}' : '');
    // One line at a time for the first run (about 2 s), so its progress is seen as it goes.
    if (!times) await form.getByLabel('Concurrency').fill('1');
    await form.getByRole('button', { name: 'Submit' }).click();
    await page.locator('#run-status').waitFor();
  };

  await step('submit a 20-line batch and watch its progress', async () => {
    await submit('batch-a', false);
    const seen = new Set();
    const t = Date.now();
    while (Date.now() - t < 90000) {
      const p = await page.locator('#run-progress').innerText().catch(() => '');
      if (p) seen.add(p);
      if ((await page.locator('#run-status').innerText()).includes('Completed')) break;
      await page.waitForTimeout(50);
    }
    await page.locator('#run-status', { hasText: 'Completed' }).waitFor({ timeout: 5000 });
    await page.locator('#run-progress', { hasText: '20/20 completed' }).waitFor();
    console.log(`     progress seen: ${[...seen].slice(0, 4).join(' | ')}`);
    assert([...seen].some((p) => /^\s*([1-9]|1[0-9])\/20 done/.test(p)), 'progress was drawn while the run went on');
    await page.locator('#lines tbody tr').nth(19).waitFor();
    assert(await page.locator('#lines tbody tr').count() === 20, 'the per-line table has 20 lines');
    // A finished run's stream is not followed again: following it replayed its lines into the
    // table every second.
    const followed = [];
    const onRequest = (r) => { if (r.url().includes('/runs/batch-a/events')) followed.push(r.url()); };
    page.on('request', onRequest);
    await page.waitForTimeout(2500);
    page.off('request', onRequest);
    assert(followed.length === 0, `a finished run's events were asked again (${followed.length} times)`);
    assert(await page.locator('#lines tbody tr').count() === 20, 'still 20 lines, none replayed');
    await page.locator('#timeline li').first().waitFor();
    await page.getByLabel('Status').selectOption('Failed');
    assert(await page.locator('#lines tbody tr').count() === 0, 'no failed lines');
    await page.getByLabel('Status').selectOption('all');
    await page.locator('#lines th button', { hasText: 'Duration' }).click();
    await shot(page, 'run');
  });

  await step("open a line's trace from the per-line table", async () => {
    await page.locator('#lines a[aria-label="trace of line 3"]').click();
    await page.locator('#spans .span-row[data-span="repeat"]').waitFor();
    const rows = await page.locator('#spans .span-row').count();
    assert(rows >= 4, `the span tree has the flow and its nodes (${rows})`);
    await shot(page, 'trace-line');
  });

  await step('compare two runs line by line', async () => {
    await submit('batch-b', true);
    await page.locator('#run-status', { hasText: 'Completed' }).waitFor({ timeout: 90000 });
    await page.goto(`${BASE}/#/runs`);
    await page.getByLabel('select batch-a to compare').check();
    await page.getByLabel('select batch-b to compare').check();
    await page.getByRole('button', { name: 'Compare selected' }).click();
    await page.locator('#compare tbody tr').nth(19).waitFor();
    const changed = await page.locator('#compare td.changed').count();
    assert(changed >= 20, `the changed 'repeated' cells are highlighted (${changed})`);
    const summary = await page.locator('#compare-summary').innerText();
    assert(summary.startsWith('20 of 20 lines differ'), summary);
    await shot(page, 'compare');
  });

  await step('install a package and find it in the packages list', async () => {
    await page.goto(`${BASE}/#/sessions/${sessionId}`);
    await page.getByRole('heading', { name: 'Installed packages' }).first().waitFor();
    await page.getByLabel('requirements.txt').fill('six==1.16.0\n');
    await page.getByRole('button', { name: 'Save and install' }).click();
    // The install restarts the session: it leaves Running, prepares, and comes back.
    await page.waitForFunction(() => !document.querySelector('#session-status .badge')?.textContent.includes('Running'), null, { timeout: 15000 });
    await page.locator('#session-status .badge', { hasText: 'Running' }).waitFor({ timeout: 150000 });
    const six = page.locator('#packages tr[data-package="six"]');
    await six.waitFor({ timeout: 30000 });
    const text = await six.innerText();
    assert(text.includes('1.16.0') && text.includes('requirements'), `six is listed from requirements: ${text}`);
    await page.getByLabel('Filter packages').fill('six');
    await page.getByText('Every requirement is installed as pinned.').waitFor();
    await shot(page, 'session-details');
  });

  await step('team page (owners and admins only)', async () => {
    await page.goto(`${BASE}/#/team`);
    await page.getByText('Only owners and admins manage the team.').waitFor();
    assert(await page.locator('#nav-team').isHidden(), 'a user sees no Team link');
  });

  await step('the owner manages the team: users, roles, compute instances and assignees', async () => {
    const { page: o, ctx } = await signedIn(T.owner);
    await o.goto(`${BASE}/#/team`);
    await o.locator('#computes tr', { hasText: 'alice-box' }).waitFor();
    assert((await o.locator('#computes tr', { hasText: 'alice-box' }).innerText()).includes('alice'), 'alice-box is assigned to alice');
    await o.getByLabel('Name', { exact: true }).first().fill('carol');
    await o.getByLabel('Role', { exact: true }).selectOption('viewer');
    await o.getByRole('button', { name: 'Create user' }).click();
    await o.locator('.token-out code').waitFor();
    await shot(o, 'team');
    await ctx.close();
  });

  await step('a viewer sees no start button and gets an error when forcing the request', async () => {
    const { page: v, ctx } = await signedIn(T.viewer);
    await v.goto(`${BASE}/#/sessions`);
    // Sessions are private: a viewer sees no one's, and has nothing to start or stop.
    await v.locator('#no-sessions').waitFor();
    assert(await v.locator('#start-session').count() === 0, 'no start button');
    await v.goto(`${BASE}/#/endpoints`);
    await v.locator('#endpoints').waitFor();
    assert(await v.locator('#new-endpoint').count() === 0, 'no new endpoint button');
    await v.goto(`${BASE}/#/sessions`);
    await v.locator('#no-sessions').waitFor();
    assert(await v.locator(`#sessions tr[data-id="${sessionId}"]`).count() === 0, "no row of alice's session");
    await v.evaluate(async () => {
      const { post } = await import('/ui/js/api.js');
      const { act } = await import('/ui/js/dom.js');
      await act(null, () => post('/api/v1/sessions', { flow: 'pipeline@v1' }));
    });
    const alert = v.locator('#alert');
    await alert.waitFor();
    const text = await alert.innerText();
    assert(text.includes('Forbidden') && text.includes('viewer'), `the server's refusal is shown: ${text}`);
    await shot(v, 'viewer');
    await ctx.close();
  });

  await step("a second user does not see the first user's compute-instance session", async () => {
    const { page: b, ctx } = await signedIn(T.bob);
    await b.goto(`${BASE}/#/sessions`);
    await b.locator('#me', { hasText: 'bob' }).waitFor();
    await b.waitForTimeout(500);
    assert(await b.locator(`#sessions tr[data-id="${sessionId}"]`).count() === 0, 'bob sees no row of alice');
    assert(await b.locator('#no-sessions').isVisible(), 'bob sees an empty list');
    await shot(b, 'second-user');
    await b.goto(`${BASE}/#/sessions/${sessionId}`);
    await b.getByText(/NotFound: session .* does not exist/).waitFor();
    // Alice's endpoint: bob reads it, and its `actions` offer him nothing to change.
    await b.goto(`${BASE}/#/endpoints/support-chat`);
    await b.locator('#deployments tr[data-deployment="blue"]').waitFor();
    assert(await b.locator('input[name="traffic-blue"]').isDisabled(), "bob may not edit alice's traffic");
    const changes = b.locator('#save-traffic').or(b.getByRole('button', { name: /Delete|key/ }));
    assert(await changes.count() === 0, "bob is offered no change to alice's endpoint");
    await ctx.close();
  });

  await step('each page weighs under 100 KB before data (fresh load)', async () => {
    const routes = {
      sessions: '#/sessions', 'session-details': `#/sessions/${sessionId}`, flows: '#/flows', flow: '#/flows/pipeline',
      runs: '#/runs', run: '#/runs/batch-a', trace: '#/runs/batch-a/lines/3/trace', compare: '#/compare?runs=batch-a,batch-b',
      endpoints: '#/endpoints', endpoint: '#/endpoints/support-chat',
    };
    // A new context per page: an empty cache, so every asset the page needs is counted.
    for (const [name, hash] of Object.entries(routes)) {
      const { page: w, ctx } = await signedIn(T.alice);
      await w.goto(`${BASE}/${hash}`);
      await w.locator('main h1').first().waitFor();
      await w.waitForTimeout(300);
      await weigh(w, name);
      await ctx.close();
    }
    console.log(`     ${Object.entries(metrics.page_weights_bytes).map(([k, v]) => `${k} ${(v / 1024).toFixed(1)} KB`).join(', ')}`);
  });

  await step('draw a list of 50 sessions (time from navigation)', async () => {
    const { page: p, ctx } = await signedIn(T.perf);
    await p.addInitScript(() => {
      new MutationObserver((_, obs) => {
        if (document.querySelectorAll('#sessions tbody tr').length >= 50) {
          window.__drawn50 = performance.now();
          obs.disconnect();
        }
      }).observe(document, { childList: true, subtree: true });
    });
    const times = [];
    for (let i = 0; i < 3; i++) {
      await p.goto(`${BASE}/#/sessions`);
      await p.waitForFunction(() => window.__drawn50 !== undefined, null, { timeout: 10000 });
      times.push(await p.evaluate(() => window.__drawn50));
      if (i === 0) await shot(p, 'sessions-50');
      await p.goto('about:blank');
    }
    metrics.sessions50_ms = { first: Math.round(times[0]), runs: times.map(Math.round), median: Math.round(times.slice().sort((a, b) => a - b)[1]) };
    console.log(`     50 sessions drawn after ${metrics.sessions50_ms.runs.join(', ')} ms from navigation`);
    await ctx.close();
  });
} catch (_) {
  await shot(page, 'failure').catch(() => {});
} finally {
  metrics.total_ms = Date.now() - started;
  writeFileSync(join(SHOTS, 'metrics.json'), `${JSON.stringify(metrics, null, 2)}\n`);
  await browser.close();
}
console.log(state.failed ? 'UI scenarios FAILED' : `UI scenarios passed in ${((Date.now() - started) / 1000).toFixed(1)} s; screenshots in ${SHOTS}`);
process.exit(state.failed ? 1 : 0);
