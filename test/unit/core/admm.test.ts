// The batched ADMM compensation (src/core/admm.ts) against the exact per-row solver on small
// seeded layers, with the plain-JS backend (float32 operands, float64 accumulation). Tolerances:
// the solver objective (the loss of W_c with its E2 entries rounded, damped H: what both solvers
// minimize) within 1e-3 of the exact one, as the issue asks of the layer loss; tighter settings
// reach 1e-6.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { autoRho, compensateAdmm, DEFAULT_ADMM, type AdmmProgress } from '../../../src/core/admm';
import type { MatrixBackend } from '../../../src/core/backend';
import { compressLayer, layerLossBetween, resolveSolver } from '../../../src/core/compress';
import { dampHessian, gemmAccumulate } from '../../../src/core/matrix';
import { pruneMask, wandaScores } from '../../../src/core/mask';
import { compensateRowsDirect } from '../../../src/core/obr';
import { fitGroupGrid, quantizeGroups, symmetricCode, symmetricRowScales } from '../../../src/core/quantize';
import { syntheticLayer } from '../../../src/core/random';
import type { Sparsity } from '../../../src/protocol/recipes';

/** Float32 operands and result, float64 accumulation: a stand-in for an SGEMM backend. */
const jsF32: MatrixBackend = {
  name: 'js-f32',
  matmulF32: (a, b, m, k, n) => {
    const c = new Float64Array(m * n);
    gemmAccumulate(Float64Array.from(a.subarray(0, m * k)), Float64Array.from(b.subarray(0, k * n)), c, m, k, n);
    return Promise.resolve(Float32Array.from(c));
  },
};

function setup(rows: number, cols: number, seed: number, splitCol: number, sparsity: Sparsity = { kind: 'unstructured', ratio: 0.5 }, outlierChannels = 0) {
  const L = syntheticLayer(rows, cols, seed, { tokens: 2 * cols, outlierChannels });
  const hd = dampHessian(L.hessian, cols, 0.01);
  const scales = symmetricRowScales(L.weight, rows, cols, 4);
  const mask = pruneMask(wandaScores(L.weight, rows, cols, L.channelEnergy), rows, cols, sparsity);
  return { L, hd, p: { weight: L.weight, rows, cols, hessian: hd, mask, scales, bits: 4, splitCol } };
}

/** The solver objective: loss of W_c with the columns < k rounded, damped H. */
function objective(out: Float64Array, p: ReturnType<typeof setup>['p']): number {
  const c = out.slice();
  const { rows, cols, scales, splitCol: k } = p;
  for (let r = 0; r < rows; r++) for (let j = 0; j < k; j++) c[r * cols + j] = symmetricCode(c[r * cols + j], scales[r], 7) * scales[r];
  return layerLossBetween(c, p.weight, rows, cols, p.hessian);
}

test('ADMM pruning step (α = 0) converges to the exact per-row compensation', async () => {
  const { p } = setup(24, 96, 3, 0);
  const exact = new Float64Array(p.rows * p.cols);
  compensateRowsDirect(p, exact);
  const { out, stats } = await compensateAdmm(p, jsF32, { ...DEFAULT_ADMM, lossTol: 0, maxIter: 150 });
  assert.equal(stats.iterations[0], 150);
  assert.equal(stats.iterations[1], 0);
  const ratio = objective(out, p) / objective(exact, p);
  assert.ok(ratio >= 1 - 1e-9 && ratio <= 1 + 1e-6, `objective ratio ${ratio}`);
  let scale = 0;
  let diff = 0;
  for (let i = 0; i < out.length; i++) {
    scale = Math.max(scale, Math.abs(exact[i]));
    diff = Math.max(diff, Math.abs(out[i] - exact[i]));
    if (!p.mask[i]) assert.equal(out[i], 0, `pruned entry ${i} must be exactly 0`);
  }
  assert.ok(diff <= 1e-3 * scale, `max |Δ| ${diff} vs max |W_c| ${scale}`);
});

test('ADMM with the default stopping rule: objective within 1e-3 of exact (α = 0.5), unstructured, 2:4 and outlier channels', async () => {
  const cases: Array<[number, Sparsity, number]> = [
    [5, { kind: 'unstructured', ratio: 0.5 }, 0],
    [6, { kind: 'nm', n: 2, m: 4 }, 0],
    [7, { kind: 'unstructured', ratio: 0.5 }, 4],
  ];
  for (const [seed, sparsity, outliers] of cases) {
    const { p } = setup(32, 128, seed, 64, sparsity, outliers);
    const exact = new Float64Array(p.rows * p.cols);
    compensateRowsDirect(p, exact);
    const { out, stats } = await compensateAdmm(p, jsF32);
    const ratio = objective(out, p) / objective(exact, p);
    assert.ok(ratio <= 1.001, `seed ${seed}: objective ratio ${ratio} (iterations ${stats.iterations})`);
    assert.ok(stats.iterations[0] < DEFAULT_ADMM.maxIter, `seed ${seed}: step 1 stopped by the loss rule, not the cap (${stats.iterations[0]})`);
    for (let i = 0; i < out.length; i++) if (!p.mask[i]) assert.equal(out[i], 0);
  }
});

test('ADMM reports every iteration, and cancels between iterations', async () => {
  const { p } = setup(16, 64, 9, 32);
  const seen: AdmmProgress[] = [];
  const { stats } = await compensateAdmm(p, jsF32, DEFAULT_ADMM, undefined, undefined, (q) => seen.push(q));
  assert.equal(seen.filter((q) => q.step === 1).length, stats.iterations[0]);
  assert.equal(seen.filter((q) => q.step === 2).length, stats.iterations[1]);
  assert.deepEqual(seen.filter((q) => q.step === 1).map((q) => q.iteration), Array.from({ length: stats.iterations[0] }, (_, i) => i + 1));
  const ac = new AbortController();
  let calls = 0;
  await assert.rejects(
    compensateAdmm(p, jsF32, DEFAULT_ADMM, ac.signal, undefined, () => {
      if (++calls === 3) ac.abort(new Error('stop here'));
    }),
    /stop here/,
  );
  assert.equal(calls, 3);
});

test('autoRho: a flat spectrum gets the largest ρ, a few dominant directions a small one', () => {
  const n = 64;
  const eye = new Float64Array(n * n);
  for (let i = 0; i < n; i++) eye[i * n + i] = 2;
  assert.equal(autoRho(eye, n), 0.5);
  const L = syntheticLayer(8, n, 1, { tokens: 4 * n, rank: 2, noise: 0.05 });
  const r = autoRho(dampHessian(L.hessian, n, 0.01), n);
  assert.ok(r >= 0.02 && r < 0.1, `spiky spectrum ρ ${r}`);
});

test('compressLayer: batched by default on a backend with fast products, exact otherwise; same loss within 1%', async () => {
  assert.equal(resolveSolver({}), 'direct');
  assert.equal(resolveSolver({ backend: jsF32 }), 'batched');
  assert.equal(resolveSolver({ backend: jsF32, solver: 'exact' }), 'direct');
  const rows = 32;
  const cols = 128;
  const L = syntheticLayer(rows, cols, 12, { tokens: 256 });
  const problem = { weight: L.weight, rows, cols, hessian: L.hessian, channelEnergy: L.channelEnergy };
  for (const method of ['obr-gptq', 'obr-rtn'] as const) {
    const config = { method, sparsity: { kind: 'unstructured', ratio: 0.5 }, wbits: 4, alpha: 0.5, damp: 0.01 } as const;
    const exact = await compressLayer(problem, config, { threads: 1 });
    let iterations: number[] = [];
    const batched = await compressLayer(problem, config, { threads: 1, backend: jsF32, onAdmmStats: (s) => (iterations = s.iterations) });
    assert.ok(iterations[0]! > 0 && iterations[1]! > 0, 'the batched solver ran');
    // Final losses differ by rounding flips (see docs/solver.md); 1% bounds that noise here.
    const ratio = batched.stats.loss.total / exact.stats.loss.total;
    assert.ok(ratio <= 1.01, `${method}: loss ratio ${ratio}`);
    for (let i = 0; i < batched.weight.length; i++) if (!batched.mask[i]) assert.equal(batched.weight[i], 0);
    assert.deepEqual(batched.mask, exact.mask);
  }
});

test('group-wise grids (g32, asymmetric): E2 is rounded on the (row, group) grid; objective and final loss match the exact solver', async () => {
  const rows = 32;
  const cols = 128;
  const k = 64;
  const L = syntheticLayer(rows, cols, 14, { tokens: 256 });
  const hd = dampHessian(L.hessian, cols, 0.01);
  const grid = fitGroupGrid(L.weight, rows, cols, 4, { groupSize: 32, asymmetric: true });
  const mask = pruneMask(wandaScores(L.weight, rows, cols, L.channelEnergy), rows, cols, { kind: 'unstructured', ratio: 0.5 });
  const p = { weight: L.weight, rows, cols, hessian: hd, mask, scales: grid.scales, zeros: grid.zeros, groupSize: 32, bits: 4, splitCol: k };
  // Objective: W_c with columns < k rounded on the group grid (the exact solver's own rounding).
  const objective = (out: Float64Array): number => {
    const q = quantizeGroups(out, rows, cols, grid, 4);
    const c = out.slice();
    for (let r = 0; r < rows; r++) for (let j = 0; j < k; j++) c[r * cols + j] = q[r * cols + j];
    return layerLossBetween(c, L.weight, rows, cols, hd);
  };
  const exact = new Float64Array(rows * cols);
  compensateRowsDirect(p, exact);
  const { out } = await compensateAdmm(p, jsF32);
  const ratio = objective(out) / objective(exact);
  assert.ok(ratio <= 1.001, `grouped objective ratio ${ratio}`);
  // Through compressLayer: same grid, loss within the rounding-noise bound.
  const problem = { weight: L.weight, rows, cols, hessian: L.hessian, channelEnergy: L.channelEnergy };
  const config = { method: 'obr-rtn', sparsity: { kind: 'unstructured', ratio: 0.5 }, wbits: 4, alpha: 0.5, damp: 0.01, groupSize: 32, asymmetric: true } as const;
  const e = await compressLayer(problem, config, { threads: 1, solver: 'exact' });
  const b = await compressLayer(problem, config, { threads: 1, backend: jsF32 });
  assert.deepEqual(b.scales, e.scales);
  assert.ok(b.stats.loss.total <= 1.01 * e.stats.loss.total, `grouped loss ratio ${b.stats.loss.total / e.stats.loss.total}`);
});

test('the WebAssembly iteration kernel (admmRows) and its JavaScript twin (iterateRows) give the same bits: odd and even widths, Anderson memory 0–3', async () => {
  // n = 63: step 1 has an odd width (the scalar tail), step 2 (k = 31) an even one; n = 96 both even.
  for (const [rows, cols, anderson, seed] of [[19, 63, 3, 5], [24, 96, 3, 6], [16, 63, 2, 7], [16, 64, 1, 8], [16, 64, 0, 9]] as const) {
    const { p } = setup(rows, cols, seed, Math.floor(cols / 2));
    const settings = { ...DEFAULT_ADMM, anderson };
    const wasm = await compensateAdmm(p, jsF32, { ...settings, wasm: true });
    const js = await compensateAdmm(p, jsF32, { ...settings, wasm: false });
    assert.deepEqual(wasm.stats.iterations, js.stats.iterations, `iterations (${rows}×${cols}, m = ${anderson})`);
    assert.ok(wasm.stats.iterations[0] >= DEFAULT_ADMM.minIter && wasm.stats.iterations[1] >= DEFAULT_ADMM.minIter);
    let differing = 0;
    for (let i = 0; i < wasm.out.length; i++) if (!Object.is(wasm.out[i], js.out[i])) differing++;
    assert.equal(differing, 0, `${differing} entries differ (${rows}×${cols}, m = ${anderson})`);
    // And the answer is a real one: within 1e-3 of the exact solver's objective.
    const exact = new Float64Array(rows * cols);
    compensateRowsDirect(p, exact);
    const ratio = objective(wasm.out, p) / objective(exact, p);
    assert.ok(ratio <= 1 + 1e-3, `objective ratio ${ratio}`);
  }
});

test('rows solved in blocks (stateBytes): each block to the same tolerances, objective within 1e-3 of exact; the kernel instance reused by the blocks = JavaScript bit for bit', async () => {
  for (const [seed, sparsity] of [[5, { kind: 'unstructured', ratio: 0.5 }], [6, { kind: 'nm', n: 2, m: 4 }]] as const) {
    const { p } = setup(50, 128, seed, 64, sparsity, 2);
    // 80 bytes per entry × 128 columns × 17 rows: blocks of 17, 17 and 16 rows.
    const stateBytes = 80 * 128 * 17;
    const exact = new Float64Array(p.rows * p.cols);
    compensateRowsDirect(p, exact);
    const wasm = await compensateAdmm(p, jsF32, { ...DEFAULT_ADMM, stateBytes, wasm: true });
    const js = await compensateAdmm(p, jsF32, { ...DEFAULT_ADMM, stateBytes, wasm: false });
    let differing = 0;
    for (let i = 0; i < wasm.out.length; i++) if (!Object.is(wasm.out[i], js.out[i])) differing++;
    assert.equal(differing, 0, `seed ${seed}: ${differing} entries differ between the kernel and JavaScript`);
    const ratio = objective(wasm.out, p) / objective(exact, p);
    assert.ok(ratio <= 1.001, `seed ${seed}: objective ratio ${ratio} in blocks`);
    for (let i = 0; i < wasm.out.length; i++) if (!p.mask[i]) assert.equal(wasm.out[i], 0);
    // Blocks are solved, not skipped: every block's rows moved from the warm start W ⊙ M.
    for (const r0 of [0, 17, 34]) {
      let moved = 0;
      for (let i = r0 * p.cols; i < (r0 + 16) * p.cols; i++) if (p.mask[i] && wasm.out[i] !== p.weight[i]) moved++;
      assert.ok(moved > 0, `seed ${seed}: rows from ${r0} unchanged`);
    }
  }
});
