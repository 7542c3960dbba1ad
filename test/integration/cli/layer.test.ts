// `obr layer` from the built bundle (run `npm run build` first): a real layer round trip through
// .npy files, worker threads from the bundle, and the bad-input cases (exit code 2, one line).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { formatNpy, parseNpy } from '../../../src/cli/npy';
import { layerLossBetween } from '../../../src/core/compress';
import { syntheticLayer } from '../../../src/core/random';

const cli = 'dist/cli.js';
const dir = mkdtempSync(join(tmpdir(), 'obr-layer-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const rows = 24;
const cols = 64;
const L = syntheticLayer(rows, cols, 7, { tokens: 256 });
const f = (name: string): string => join(dir, name);
writeFileSync(f('W.npy'), formatNpy(L.weight, [rows, cols], 'float32'));
writeFileSync(f('W64.npy'), formatNpy(L.weight, [rows, cols], 'float64'));
writeFileSync(f('H.npy'), formatNpy(L.hessian, [cols, cols], 'float64'));
writeFileSync(f('A.npy'), formatNpy(L.channelEnergy, [cols], 'float32'));

function obr(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cli, 'layer', ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('obr layer compresses a layer: JSON report, float32 output with exact zeros, loss on the undamped H', () => {
  assert.ok(existsSync(cli), 'run `npm run build` first');
  const r = obr('--weight', f('W.npy'), '--hessian', f('H.npy'), '--act', f('A.npy'), '--method', 'obr-gptq', '--sparsity', '0.5', '--out', f('Q.npy'));
  assert.equal(r.code, 0, r.stderr);
  const report = JSON.parse(r.stdout) as { loss: number; sparsity: number; seconds: number; lossBreakdown: { total: number; pruning: number; quantization: number; recovered: number; outputEnergy: number } };
  const q = parseNpy(readFileSync(f('Q.npy')));
  assert.equal(q.dtype, 'float32');
  assert.deepEqual(q.shape, [rows, cols]);
  let zeros = 0;
  for (const v of q.data) if (v === 0) zeros++;
  assert.ok(zeros / q.data.length >= 0.5);
  assert.ok(Math.abs(report.sparsity - zeros / q.data.length) < 1e-12);
  // The reported loss is tr(ΔW H ΔWᵀ) of the written weights (float32 rounding aside).
  const w32 = parseNpy(readFileSync(f('W.npy'))).data;
  const recomputed = layerLossBetween(q.data, w32, rows, cols, L.hessian);
  assert.ok(Math.abs(recomputed - report.loss) <= 1e-4 * report.lossBreakdown.outputEnergy, `${recomputed} vs ${report.loss}`);
  assert.ok(report.loss < report.lossBreakdown.pruning + report.lossBreakdown.quantization);
  assert.ok(report.seconds >= 0);
});

test('obr layer: float64 in → float64 out, N:M sparsity, every method runs, worker threads agree with one thread', () => {
  for (const method of ['rtn', 'gptq', 'wanda-rtn', 'sparsegpt-gptq', 'obr-rtn', 'obr-gptq']) {
    const r = obr('--weight', f('W64.npy'), '--hessian', f('H.npy'), '--method', method, '--sparsity', '2:4', '--out', f(`Q-${method}.npy`));
    assert.equal(r.code, 0, `${method}: ${r.stderr}`);
    assert.equal(parseNpy(readFileSync(f(`Q-${method}.npy`))).dtype, 'float64');
  }
  const one = obr('--weight', f('W64.npy'), '--hessian', f('H.npy'), '--method', 'obr-gptq', '--threads', '1', '--out', f('Q1.npy'));
  const two = obr('--weight', f('W64.npy'), '--hessian', f('H.npy'), '--method', 'obr-gptq', '--threads', '2', '--out', f('Q2.npy'));
  assert.equal(one.code, 0, one.stderr);
  assert.equal(two.code, 0, two.stderr);
  assert.deepEqual(readFileSync(f('Q1.npy')), readFileSync(f('Q2.npy')));
});

test('obr layer --group-size 32 --asym: at most 16 levels per group of 32 columns, more than 16 in a row', () => {
  const levels = (q: Float64Array, c0: number, c1: number, r: number): number => new Set(Array.from(q.subarray(r * cols + c0, r * cols + c1))).size;
  const r = obr('--weight', f('W64.npy'), '--hessian', f('H.npy'), '--method', 'obr-gptq', '--group-size', '32', '--asym', '--out', f('Qg.npy'));
  assert.equal(r.code, 0, r.stderr);
  const report = JSON.parse(r.stdout) as { config: { groupSize: number; asymmetric: boolean } };
  assert.deepEqual([report.config.groupSize, report.config.asymmetric], [32, true]);
  const q = parseNpy(readFileSync(f('Qg.npy'))).data;
  let widest = 0;
  for (let row = 0; row < rows; row++) {
    for (let c0 = 0; c0 < cols; c0 += 32) assert.ok(levels(q, c0, c0 + 32, row) <= 16, `row ${row} group ${c0 / 32}`);
    widest = Math.max(widest, levels(q, 0, cols, row));
  }
  assert.ok(widest > 16, 'the two groups of a row have their own grids');
  const perRow = obr('--weight', f('W64.npy'), '--hessian', f('H.npy'), '--method', 'obr-gptq', '--out', f('Qr.npy'));
  assert.equal(perRow.code, 0, perRow.stderr);
  const qr = parseNpy(readFileSync(f('Qr.npy'))).data;
  for (let row = 0; row < rows; row++) assert.ok(levels(qr, 0, cols, row) <= 16);
});

test('obr layer: bad input exits 2 with a one-line message', () => {
  const nonsym = L.hessian.slice();
  nonsym[1] += 1;
  writeFileSync(f('Hns.npy'), formatNpy(nonsym, [cols, cols], 'float64'));
  writeFileSync(f('Hrect.npy'), formatNpy(new Float64Array(cols * 3), [cols, 3], 'float64'));
  writeFileSync(f('Hsmall.npy'), formatNpy(new Float64Array(16), [4, 4], 'float64'));
  const nan = L.weight.slice();
  nan[5] = Number.NaN;
  writeFileSync(f('Wnan.npy'), formatNpy(nan, [rows, cols], 'float64'));
  writeFileSync(f('garbage.npy'), 'this is not a numpy file');
  const fortran = Buffer.from(formatNpy(L.weight, [rows, cols], 'float64'));
  fortran.write("'fortran_order': True, ", fortran.indexOf("'fortran_order': False,"), 'latin1');
  writeFileSync(f('Wf.npy'), fortran);
  const base = ['--hessian', f('H.npy'), '--method', 'obr-gptq', '--out', f('bad.npy')];
  const cases: Array<[string[], RegExp]> = [
    [['--weight', f('W.npy'), '--hessian', f('Hns.npy'), '--method', 'obr-gptq', '--out', f('bad.npy')], /not symmetric/],
    [['--weight', f('W.npy'), '--hessian', f('Hrect.npy'), '--method', 'obr-gptq', '--out', f('bad.npy')], /square/],
    [['--weight', f('W.npy'), '--hessian', f('Hsmall.npy'), '--method', 'obr-gptq', '--out', f('bad.npy')], /input columns/],
    [['--weight', f('Wnan.npy'), ...base], /NaN/],
    [['--weight', f('garbage.npy'), ...base], /not a NumPy/],
    [['--weight', f('Wf.npy'), ...base], /Fortran/],
    [['--weight', f('missing.npy'), ...base], /cannot read/],
    [['--weight', f('W.npy'), '--hessian', f('H.npy'), '--method', 'nope', '--out', f('bad.npy')], /unknown method/],
    [['--weight', f('W.npy'), ...base, '--sparsity', '1.5'], /sparsity/],
    [['--weight', f('W.npy'), ...base, '--wbits', '9'], /wbits/],
    [['--weight', f('W.npy'), '--method', 'obr-gptq', '--out', f('bad.npy')], /required/],
    [['--weight', f('W.npy'), ...base, '--act', f('Hsmall.npy')], /activations/],
    [['--weight', f('W.npy'), ...base, '--group-size', '48'], /group size 48: use one of 0, 32, 64, 128, 256/],
    [['--weight', f('W.npy'), ...base, '--group-size', '128'], /group size 128 is larger than the input width 64 .*use one of 0, 32, 64 /],
  ];
  for (const [args, re] of cases) {
    const r = obr(...args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    const first = r.stderr.trim().split('\n')[0];
    assert.match(first, re);
    assert.ok(!/\n\s+at /.test(r.stderr), 'no stack trace');
  }
  assert.ok(!existsSync(f('bad.npy')), 'nothing written on bad input');
});
