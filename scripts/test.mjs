// Runs node's built-in test runner over test/<suite>/**/*.test.ts with tsx for TypeScript.
// Usage: node scripts/test.mjs unit integration [--only-pattern]
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

const suites = process.argv.slice(2).filter((a) => !a.startsWith('--'));
if (suites.length === 0) suites.push('unit', 'integration');

function collect(dir) {
  const out = [];
  let entries = [];
  try {
    entries = readdirSync(dir);
  } catch {
    return out;
  }
  for (const name of entries.sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...collect(p));
    else if (name.endsWith('.test.ts')) out.push(p);
  }
  return out;
}

const files = suites.flatMap((s) => collect(join('test', s)));
if (files.length === 0) {
  console.error(`no test files found under ${suites.map((s) => 'test/' + s).join(', ')}`);
  process.exit(1);
}
const concurrency = process.env.CI ? '1' : String(Math.max(1, Math.min(2, (await import('node:os')).cpus().length)));
const result = spawnSync(
  process.execPath,
  ['--import', 'tsx', '--test', `--test-concurrency=${concurrency}`, '--test-reporter=spec', ...files],
  { stdio: 'inherit' },
);
process.exit(result.status ?? 1);
