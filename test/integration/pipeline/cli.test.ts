// `obr compress` / `obr eval` / `obr demo` as a user runs them: bad inputs are one clear line on
// stderr and exit code 2, before any long work.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { ROOT, tempDir, TINY, runObr } from './fixtures';

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
    [['compress', TINY, '--baselines', 'wanda-rtn,magic'], /--baselines: unknown recipe "magic" \(choose from obr-gptq, obr-rtn, sparsegpt-gptq, wanda-rtn, gptq, rtn\)/],
    [['compress', TINY, '--baselines', ' , '], /--baselines: no recipe names/],
    [['compress', TINY, '--calib', path.join(dir, 'nope.txt')], /--calib: file not found/],
    [['compress', path.join(bare, 'model.onnx'), '--out', dir], /tokenizer\.json/],
    [['compress', TINY, '--calib', empty, '--out', dir], /empty/],
    [['compress', TINY, '--calib', short, '--out', dir, '--seqlen', '64', '--no-eval'], /shorter than one window of 64/],
    [['eval', TINY], /--text FILE\.txt is required/],
    [['eval', TINY, '--text', short, '--seqlen', '64'], /shorter than one window of 64/],
    [['eval', TINY, '--text', empty], /empty/],
  ];
  const results = await Promise.all(cases.map(([args]) => runObr(...args, ...(args[0] === 'compress' && args.length > 2 ? ['--ep', 'cpu'] : []))));
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

test('obr compress --baselines: the result table and the report compare the recipes on the same Hessians', { timeout: 180_000 }, () => {
  const dir = tempDir('obr-cli-base-');
  const text = path.join(dir, 'eval.txt');
  writeFileSync(text, require('node:fs').readFileSync(path.join(ROOT, 'media', 'text', 'sotu-test.txt'), 'utf8').slice(0, 20_000));
  const r = obr('compress', TINY, '--recipe', 'obr-rtn', '--baselines', 'wanda-rtn,rtn', '--abits', '16', '--kvbits', '16', '--samples', '4', '--seqlen', '64',
    '--eval-text', text, '--eval-windows', '4', '--ep', 'cpu', '--out', dir);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /baselines: wanda-rtn, rtn/, 'the pre-flight names the baselines');
  assert.match(r.stdout, /^ {2}wanda-rtn \(baseline\) +\d+\.\d{3}/m);
  assert.match(r.stdout, /^ {2}rtn \(baseline\) +\d+\.\d{3}/m);
  const sums = /layer loss Σ \(same Hessians\): obr-rtn ([\d.e+]+), wanda-rtn ([\d.e+]+), rtn ([\d.e+]+)/.exec(r.stdout);
  assert.ok(sums, r.stdout);
  assert.ok(Number(sums[2]) > Number(sums[1]), `Σ wanda-rtn ${sums[2]} > Σ obr-rtn ${sums[1]}`);
  const report = JSON.parse(require('node:fs').readFileSync(path.join(dir, 'model.obr-rtn-w4a16kv16-s50.report.json'), 'utf8')) as import('../../../src/protocol/report').CompressionReport;
  assert.deepEqual(report.baselines?.map((b) => [b.recipe, b.layers.length, Number.isFinite(b.perplexity?.perplexity)]), [['wanda-rtn', 28, true], ['rtn', 28, true]]);
  // rtn only quantizes: its loss has no pruning part.
  for (const l of report.baselines![1]!.layers) assert.equal(l.loss.pruning, 0, `${l.name}: rtn prunes nothing`);
  assert.deepEqual(require('node:fs').readdirSync(dir).filter((f: string) => f.startsWith('model.') || f.startsWith('.')).sort(), [
    'model.obr-rtn-w4-s50.packed.onnx',
    'model.obr-rtn-w4a16kv16-s50.onnx',
    'model.obr-rtn-w4a16kv16-s50.report.json',
  ]);
});
