// `obr compress` / `obr eval` / `obr demo` as a user runs them: bad inputs are one clear line on
// stderr and exit code 2, before any long work.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { ROOT, tempDir, TINY } from './fixtures';

function obrAsync(...args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src', 'cli', 'main.ts'), ...args], { cwd: ROOT });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

function obr(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src', 'cli', 'main.ts'), ...args], { encoding: 'utf8', cwd: ROOT, timeout: 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('obr compress: bad inputs exit 2 with a message that says what to fix', { timeout: 240_000 }, async () => {
  const dir = tempDir('obr-cli-');
  const empty = path.join(dir, 'empty.txt');
  writeFileSync(empty, '\n \n');
  const short = path.join(dir, 'short.txt');
  writeFileSync(short, 'Only a few words.');
  const bare = path.join(dir, 'bare');
  require('node:fs').mkdirSync(bare);
  copyFileSync(TINY, path.join(bare, 'model.onnx'));
  const cases: Array<[string[], RegExp]> = [
    [['compress', path.join(dir, 'missing.onnx')], /model not found/],
    [['compress', TINY, '--recipe', 'magic'], /unknown recipe "magic"/],
    [['compress', TINY, '--sparsity', '1.5'], /sparsity "1\.5"/],
    [['compress', TINY, '--sparsity', '4:2'], /N:M needs/],
    [['compress', TINY, '--wbits', '12'], /--wbits/],
    [['compress', TINY, '--calib', path.join(dir, 'nope.txt')], /--calib: file not found/],
    [['compress', path.join(bare, 'model.onnx'), '--out', dir], /tokenizer\.json/],
    [['compress', TINY, '--calib', empty, '--out', dir], /empty/],
    [['compress', TINY, '--calib', short, '--out', dir, '--seqlen', '64', '--no-eval'], /shorter than one window of 64/],
    [['eval', TINY], /--text FILE\.txt is required/],
    [['eval', TINY, '--text', short, '--seqlen', '64'], /shorter than one window of 64/],
    [['eval', TINY, '--text', empty], /empty/],
  ];
  const results = await Promise.all(cases.map(([args]) => obrAsync(...args, ...(args[0] === 'compress' && args.length > 2 ? ['--ep', 'cpu'] : []))));
  for (let i = 0; i < cases.length; i++) {
    const [args, message] = cases[i]!;
    const r = results[i]!;
    assert.equal(r.status, 2, `${args.join(' ')} → exit ${r.status}\n${r.stderr}`);
    assert.match(r.stderr, message, args.join(' '));
    assert.doesNotMatch(r.stderr, /\n\s+at .*\.(ts|js):\d+/, `${args.join(' ')}: no stack trace`);
  }
});

test('obr compress refuses with a clear message when memory would not suffice (unless --yes)', { timeout: 120_000 }, () => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src', 'cli', 'main.ts'), 'compress', TINY, '--ep', 'cpu', '--out', tempDir('obr-mem-')], {
    encoding: 'utf8',
    cwd: ROOT,
    env: { ...process.env, OBR_AVAILABLE_MEMORY: String(16 * 2 ** 20) },
  });
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /pre-flight: 28 layers/);
  assert.match(r.stderr, /needs about .* of memory but only 16\.0 MiB is available/);
});

test('obr eval prints the perplexity and the execution provider', { timeout: 120_000 }, () => {
  const r = obr('eval', TINY, '--text', path.join(ROOT, 'media', 'text', 'sotu-test.txt'), '--seqlen', '128', '--max-windows', '4', '--ep', 'cuda,cpu', '--json');
  assert.equal(r.status, 0, r.stderr);
  const result = JSON.parse(r.stdout) as { perplexity: number; windows: number; executionProvider: { used: string } };
  assert.equal(result.windows, 4);
  assert.ok(result.perplexity > 1 && result.perplexity < 2048);
  assert.equal(result.executionProvider.used, 'cpu');
  assert.match(r.stderr, /execution provider: cpu/);
});
