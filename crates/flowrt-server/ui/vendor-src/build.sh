#!/bin/sh
# Rebuild ../js/vendor/codemirror.js: run `sh build.sh` from anywhere (needs node and npm with
# access to the npm registry), then commit ../js/vendor/codemirror.js. It installs the exact
# versions of package-lock.json, bundles editor-entry.js, and appends the bundled licences.
set -eu
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
mkdir -p ../js/vendor
out=../js/vendor/codemirror.js
npx --no-install esbuild editor-entry.js --bundle --format=esm --minify --target=es2020 \
  --legal-comments=eof --metafile=node_modules/.meta.json --outfile="$out"
# CodeMirror's sources carry no /*! ... */ licence comments for --legal-comments to keep, so append
# the MIT licence text of every package that ended up in the bundle, once per distinct text.
node - "$out" <<'JS'
const fs = require('fs');
const out = process.argv[2];
const meta = JSON.parse(fs.readFileSync('node_modules/.meta.json', 'utf8'));
const pkgs = new Set();
const used = Object.values(meta.outputs)[0].inputs; // inputs that left code in the bundle
for (const [input, { bytesInOutput }] of Object.entries(used)) {
  const m = bytesInOutput > 0 && input.match(/node_modules\/((?:@[^/]+\/)?[^/]+)\//);
  if (m) pkgs.add(m[1]);
}
const byText = new Map();
for (const name of [...pkgs].sort()) {
  const dir = `node_modules/${name}`;
  const { version, license } = JSON.parse(fs.readFileSync(`${dir}/package.json`, 'utf8'));
  const file = fs.readdirSync(dir).find((f) => /^licen[cs]e/i.test(f));
  if (!file) throw new Error(`${name}: no licence file`);
  const text = fs.readFileSync(`${dir}/${file}`, 'utf8').trim().replace(/\*\//g, '* /');
  if (!byText.has(text)) byText.set(text, []);
  byText.get(text).push(`${name}@${version} (${license})`);
}
let note = '\n/*! Bundled packages and their licences:\n';
for (const [text, names] of byText) note += `\n${names.join('\n')}\n\n${text}\n`;
fs.appendFileSync(out, note + '*/\n');
JS
ls -l "$out"
printf 'gzip -9: %s bytes\n' "$(gzip -9c "$out" | wc -c)"
