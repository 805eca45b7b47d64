// What the UI scenario scripts share: the environment ui.rs sets, Debian's headless Chromium,
// one line per step (and the first failure ends the run), assertions, and a browser context per
// user holding that user's token.
import { chromium } from 'playwright-core';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export function env(k) {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set (run through: cargo test -p flowrt --test ui)`);
  return v;
}

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      `--disk-cache-dir=${mkdtempSync(join(tmpdir(), 'flowrt-ui-cache-'))}`],
  });
}

// Steps: each prints `ok NAME (ms)` or `FAIL NAME: why`, and records its time in `metrics.steps`.
export function stepper(metrics) {
  const state = { failed: false, current: '' };
  const step = async (name, fn) => {
    const t = Date.now();
    state.current = name;
    try {
      await fn();
      const ms = Date.now() - t;
      metrics.steps[name] = ms;
      console.log(`ok   ${name} (${ms} ms)`);
    } catch (e) {
      state.failed = true;
      console.log(`FAIL ${name}: ${e.message.split('\n').slice(0, 6).join('\n     ')}`);
      throw e;
    }
  };
  return { step, state };
}

export function assert(cond, what) {
  if (!cond) throw new Error(what);
}

// A fresh context per user: its own sessionStorage, so tokens never mix. about:blank has no
// sessionStorage: only the UI's origin gets the token.
export async function signedIn(browser, token, viewport = { width: 1440, height: 900 }) {
  const ctx = await browser.newContext({ viewport });
  await ctx.addInitScript((t) => { if (t && location.protocol === 'http:') sessionStorage.setItem('flowrt.token', t); }, token);
  const page = await ctx.newPage();
  return { ctx, page };
}
