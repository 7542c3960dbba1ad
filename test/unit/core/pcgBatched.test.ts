// Batched PCG compensation (src/core/pcgBatched.ts) against the exact per-row solver, with a
// plain-JS float32 product standing in for the onnxruntime backend.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { MatrixBackend } from '../../../src/core/backend';
import { compressLayer, layerLossBetween } from '../../../src/core/compress';
import { dampHessian, gemmAccumulate } from '../../../src/core/matrix';
import { pruneMask, wandaScores } from '../../../src/core/mask';
import { compensateRowsDirect } from '../../../src/core/obr';
import { DEFAULT_BATCHED_PCG, compensateBatchedPcg } from '../../../src/core/pcgBatched';
import { symmetricCode, symmetricRowScales } from '../../../src/core/quantize';
import { syntheticLayer } from '../../../src/core/random';

const ROWS = 24;
const COLS = 64;

/** Float32 operands and result, float64 accumulation: a stand-in for an SGEMM backend. */
const f32Backend: MatrixBackend = {
  name: 'js-f32',
  matmulF32: (a, b, m, k, n) => {
    const c = new Float64Array(m * n);
    gemmAccumulate(Float64Array.from(a.subarray(0, m * k)), Float64Array.from(b.subarray(0, k * n)), c, m, k, n);
    return Promise.resolve(Float32Array.from(c));
  },
};

function setup(seed: number, splitCol: number) {
  const L = syntheticLayer(ROWS, COLS, seed, { tokens: 200 });
  const hd = dampHessian(L.hessian, COLS, 0.01);
  const scales = symmetricRowScales(L.weight, ROWS, COLS, 4);
  const mask = pruneMask(wandaScores(L.weight, ROWS, COLS, L.channelEnergy), ROWS, COLS, { kind: 'unstructured', ratio: 0.5 });
  return { L, hd, p: { weight: L.weight, rows: ROWS, cols: COLS, hessian: hd, mask, scales, bits: 4, splitCol } };
}

/** Loss of W_c with columns < k rounded (what the compensation optimizes), damped H. */
function effectiveLoss(out: Float64Array, w: Float64Array, scales: Float64Array, k: number, hd: Float64Array): number {
  const c = out.slice();
  for (let r = 0; r < ROWS; r++) for (let j = 0; j < k; j++) c[r * COLS + j] = symmetricCode(c[r * COLS + j], scales[r], 7) * scales[r];
  return layerLossBetween(c, w, ROWS, COLS, hd);
}

test('batched PCG matches the exact pruning compensation (α = 0) to float32 accuracy', async () => {
  const { p } = setup(11, 0);
  const exact = new Float64Array(ROWS * COLS);
  compensateRowsDirect(p, exact);
  const { out, stats } = await compensateBatchedPcg(p, f32Backend, { ...DEFAULT_BATCHED_PCG, lossTol: 1e-12, maxIter: 400 });
  let scale = 0;
  let diff = 0;
  for (let i = 0; i < out.length; i++) {
    scale = Math.max(scale, Math.abs(exact[i]));
    diff = Math.max(diff, Math.abs(out[i] - exact[i]));
  }
  assert.ok(diff <= 1e-3 * scale, `max diff ${diff} vs scale ${scale}`);
  assert.equal(stats.iterations[1], 0);
  for (let i = 0; i < out.length; i++) if (!p.mask[i]) assert.equal(out[i], 0);
});

test('batched PCG with the default tolerance stays within 0.1% of the exact loss (α = 0.5)', async () => {
  for (const seed of [21, 22]) {
    const { p, L, hd } = setup(seed, COLS / 2);
    const exact = new Float64Array(ROWS * COLS);
    compensateRowsDirect(p, exact);
    const { out, stats } = await compensateBatchedPcg(p, f32Backend);
    const le = effectiveLoss(exact, L.weight, p.scales, COLS / 2, hd);
    const lp = effectiveLoss(out, L.weight, p.scales, COLS / 2, hd);
    assert.ok(lp <= le * 1.001, `seed ${seed}: pcg ${lp} vs exact ${le}`);
    assert.ok(stats.iterations[0] > 0 && stats.iterations[1] > 0);
  }
});

test('rows that do not converge fall back to the exact solver', async () => {
  const { p } = setup(31, COLS / 2);
  const exact = new Float64Array(ROWS * COLS);
  compensateRowsDirect(p, exact);
  const { out, stats } = await compensateBatchedPcg(p, f32Backend, { ...DEFAULT_BATCHED_PCG, maxIter: 2, maxIter2: 2 });
  assert.equal(stats.fallbackRows, ROWS);
  for (let i = 0; i < out.length; i++) assert.ok(Math.abs(out[i] - exact[i]) <= 1e-12 * (1 + Math.abs(exact[i])));
});

test("compressLayer solver 'pcg-batched': loss close to the exact solver; needs matmulF32", async () => {
  const L = syntheticLayer(ROWS, COLS, 41, { tokens: 200 });
  const problem = { weight: L.weight, rows: ROWS, cols: COLS, hessian: L.hessian, channelEnergy: L.channelEnergy };
  const config = { method: 'obr-gptq', sparsity: { kind: 'unstructured', ratio: 0.5 }, wbits: 4, alpha: 0.5, damp: 0.01 } as const;
  const exact = await compressLayer(problem, config, { threads: 1 });
  let seen = 0;
  const pcg = await compressLayer(problem, config, { threads: 1, solver: 'pcg-batched', backend: f32Backend, onSolverStats: (s) => (seen = s.iterations[0]) });
  assert.ok(seen > 0);
  assert.ok(pcg.stats.loss.total <= exact.stats.loss.total * 1.05, `${pcg.stats.loss.total} vs ${exact.stats.loss.total}`);
  for (let i = 0; i < pcg.weight.length; i++) if (!pcg.mask[i]) assert.equal(pcg.weight[i], 0);
  await assert.rejects(compressLayer(problem, config, { threads: 1, solver: 'pcg-batched' }), /matmulF32/);
});
