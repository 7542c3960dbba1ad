// Bad input found before any work: a window longer than the model's position range, an --out
// that can't be created, and a second job on the same model and output folder (a pid lock on
// the working folder; stale locks of dead processes are taken over).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { floatTensor, model, node, valueInfo } from '../../../src/onnx/builder';
import { graphPositionLimit } from '../../../src/onnx/positions';
import { DataType } from '../../../src/onnx/proto';
import { runCompression } from '../../../src/pipeline/compress';
import { JobLockError } from '../../../src/pipeline/lock';
import { quickOptions, ROOT, tempDir, TINY, runObr } from './fixtures';

function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(r.stdout);
}

test('a learned position table limits the sequence length (graph), rotary computed from position_ids does not', () => {
  const g = model({
    node: [
      node('Gather', ['wte', 'input_ids'], ['tok'], 'wte_gather'),
      node('Gather', ['wpe', 'position_ids'], ['pos'], 'wpe_gather'),
      node('Add', ['tok', 'pos'], ['h'], 'add'),
    ],
    input: [valueInfo('input_ids', DataType.INT64, ['b', 's']), valueInfo('position_ids', DataType.INT64, ['b', 's'])],
    output: [valueInfo('h', DataType.FLOAT, ['b', 's', 4])],
    initializer: [floatTensor('wte', [32, 4], new Float32Array(128)), floatTensor('wpe', [16, 4], new Float32Array(64))],
  });
  assert.deepEqual(graphPositionLimit(g), { positions: 16, source: 'position table "wpe" [16, 4]' });
  const noTable = model({
    node: [node('Gather', ['wte', 'input_ids'], ['tok'], 'wte_gather')],
    input: [valueInfo('input_ids', DataType.INT64, ['b', 's'])],
    output: [valueInfo('tok', DataType.FLOAT, ['b', 's', 4])],
    initializer: [floatTensor('wte', [32, 4], new Float32Array(128))],
  });
  assert.equal(graphPositionLimit(noTable), undefined);
});

test('--seqlen beyond the model\'s positions, an --out under a file: exit 2 before any work, nothing written', { timeout: 120_000 }, async () => {
  const dir = tempDir('obr-bad-');
  const text = path.join(ROOT, 'media', 'text', 'sotu-test.txt');
  const file = path.join(dir, 'a-file');
  writeFileSync(file, 'x');
  const cases: Array<[string[], RegExp]> = [
    [['compress', TINY, '--seqlen', '512', '--ep', 'cpu', '--out', path.join(dir, 'o1')], /this model supports at most 256 positions; use --seqlen ≤ 256/],
    [['eval', TINY, '--text', text, '--seqlen', '300', '--ep', 'cpu'], /this model supports at most 256 positions; use --seqlen ≤ 256/],
    [['compress', TINY, '--ep', 'cpu', '--out', path.join(file, 'sub')], /can't create the output folder .*a-file is a file, not a folder/],
  ];
  const results = await Promise.all(cases.map(([args]) => runObr(...args)));
  results.forEach((r, i) => {
    const [args, message] = cases[i]!;
    assert.equal(r.status, 2, `${args.join(' ')} → exit ${r.status}\n${r.stderr}`);
    assert.match(r.stderr, message, args.join(' '));
    assert.doesNotMatch(r.stderr, /\n\s+at .*\.(ts|js):\d+/, 'no stack trace');
    assert.doesNotMatch(r.stderr, /pre-flight/, 'refused before the pre-flight probe');
  });
  assert.ok(!existsSync(path.join(dir, 'o1')), 'no output folder created');
  // The API refuses the same way (the extension's worker calls it directly).
  await assert.rejects(runCompression(TINY, quickOptions(dir, { seqlen: 1024, outDir: path.join(dir, 'o2') }), {}, { evalText: null }), /at most 256 positions; use --seqlen ≤ 256/);
  await assert.rejects(runCompression(TINY, quickOptions(dir, { outDir: path.join(file, 'sub') }), {}, { evalText: null }), /can't create the output folder/);
  assert.ok(!existsSync(path.join(dir, 'o2')));
});

test('a second job on the same model and output folder is refused while the first runs; the first finishes normally', { timeout: 240_000 }, async () => {
  const dir = tempDir('obr-lock-');
  const out = path.join(dir, 'out');
  const opts = quickOptions(dir, { recipe: 'rtn', abits: 16, kvbits: 16, outDir: out });
  let second: unknown;
  const report = await runCompression(TINY, opts, {}, {
    evalText: null,
    onlyBlocks: [0],
    onBlockStart: () => {
      second = runCompression(TINY, opts, {}, { evalText: null, onlyBlocks: [0] }).then(
        () => 'finished',
        (e: unknown) => e,
      );
    },
  });
  const e = await second;
  assert.ok(e instanceof JobLockError, `the second job is refused (${String(e)})`);
  assert.match((e as Error).message, new RegExp(`another job \\(pid ${process.pid}\\) is compressing this model into this folder`));
  assert.ok(existsSync(report.outputs.simulated!), 'the first job wrote its outputs');
  assert.deepEqual(readdirSync(out).filter((n) => n.startsWith('.')), [], 'no lock or working folder left behind');

  // The CLI refuses a folder held by a live process, before the pre-flight.
  const held = path.join(dir, 'held');
  mkdirSync(held);
  writeFileSync(path.join(held, '.model.obr-partial.lock'), `${process.pid}\n`);
  const r = await runObr('compress', TINY, '--ep', 'cpu', '--out', held);
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, new RegExp(`another job \\(pid ${process.pid}\\) is compressing this model into this folder`));
});

test('a stale lock of a dead process is taken over', { timeout: 240_000 }, async () => {
  const dir = tempDir('obr-stale-');
  const out = path.join(dir, 'out');
  mkdirSync(out);
  const lock = path.join(out, '.model.obr-partial.lock');
  writeFileSync(lock, `${deadPid()}\n`);
  const report = await runCompression(TINY, quickOptions(dir, { recipe: 'rtn', abits: 16, kvbits: 16, outDir: out }), {}, { evalText: null, onlyBlocks: [0] });
  assert.ok(existsSync(report.outputs.simulated!));
  assert.ok(!existsSync(lock), 'the lock is released at the end');
});
