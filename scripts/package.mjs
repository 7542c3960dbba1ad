// `npm run package`: production bundles, then a linux-x64 .vsix with @vscode/vsce.
// `vsce package --no-dependencies` would drop node_modules entirely (and with it the native
// onnxruntime-node binding the worker loads), so vsce runs with dependencies and .vscodeignore keeps
// only onnxruntime-node's linux-x64 binding + JS and onnxruntime-common (everything else is
// bundled into dist/). The script then checks that the .vsix holds what the worker needs.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

const pkg = JSON.parse(readFileSync('package.json', 'utf8'));
const target = process.env.OBR_VSIX_TARGET ?? 'linux-x64';
// OBR_VSIX_OUT=path/to/file.vsix writes it elsewhere (the e2e run packages into .cache/e2e/).
const out = process.env.OBR_VSIX_OUT ? resolve(process.env.OBR_VSIX_OUT) : `${pkg.name}-${target}-${pkg.version}.vsix`;
mkdirSync(dirname(resolve(out)), { recursive: true });

function run(cmd, args) {
  const r = spawnSync(cmd, args, { stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(`${cmd} ${args.join(' ')} failed with ${r.status}`);
    process.exit(r.status ?? 1);
  }
}

// OBR_PACKAGE_NO_BUILD=1 packages the current dist/ (e.g. while an e2e run uses it).
if (!process.env.OBR_PACKAGE_NO_BUILD) run(process.execPath, ['scripts/build.mjs', '--production']);
run(process.execPath, ['node_modules/@vscode/vsce/vsce', 'package', '--target', target, '--out', out, '--allow-missing-repository', '--no-rewrite-relative-links', '--dependencies']);

// The .vsix is a zip: list it with vsce's own `ls`-equivalent (unzip may not be installed).
const listing = execFileSync(process.execPath, ['-e', `
  const { readFileSync } = require('node:fs');
  const b = readFileSync(${JSON.stringify(out)});
  // Walk the central directory of the zip.
  let eocd = b.length - 22; while (eocd >= 0 && b.readUInt32LE(eocd) !== 0x06054b50) eocd--;
  const count = b.readUInt16LE(eocd + 10); let p = b.readUInt32LE(eocd + 16); const names = [];
  for (let i = 0; i < count; i++) { const n = b.readUInt16LE(p + 28), x = b.readUInt16LE(p + 30), c = b.readUInt16LE(p + 32);
    names.push(b.toString('utf8', p + 46, p + 46 + n)); p += 46 + n + x + c; }
  console.log(names.join('\\n'));`], { encoding: 'utf8' }).split('\n');
const required = [
  'extension/package.json',
  'extension/dist/extension.js',
  'extension/dist/worker.js',
  'extension/dist/webview.js',
  'extension/media/inspector.css',
  'extension/node_modules/onnxruntime-node/dist/index.js',
  'extension/node_modules/onnxruntime-node/bin/napi-v6/linux/x64/onnxruntime_binding.node',
  'extension/node_modules/onnxruntime-common/dist/cjs/index.js',
];
const missing = required.filter((f) => !listing.includes(f));
const stray = listing.filter((f) => /node_modules\/(?!onnxruntime-(node|common)\/)/.test(f) || /napi-v6\/(darwin|win32|linux\/arm64)/.test(f) || /^extension\/media\/models\//.test(f) || /\.(map|d\.ts)$/.test(f));
const size = statSync(out).size;
console.log(`${out}: ${(size / 1024 ** 2).toFixed(1)} MB (${size} bytes), ${listing.length} files`);
if (missing.length || stray.length) {
  console.error(`missing: ${missing.join(', ') || 'none'}\nunexpected: ${stray.slice(0, 20).join(', ') || 'none'}`);
  process.exit(1);
}
