// The layer loss terms of big layers run on the backend's float64 product (layerLossOn) instead
// of the single-thread kernel: the same numbers to float64 round-off, on a seeded synthetic layer
// above the size threshold, directly and through compressLayer's loss breakdown.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { BACKEND_LOSS_MIN_WORK, compressLayer, layerLossBetween, layerLossOn } from '../../../src/core/compress';
import { syntheticLayer } from '../../../src/core/random';
import { createOrtBackend, type OrtMatrixBackend } from '../../../src/runtime/ortBackend';

let backend: OrtMatrixBackend;
before(async () => {
  backend = await createOrtBackend({ threads: 2 });
});
after(async () => {
  await backend.release();
});

// 512 × 1152: 512·1152² ≥ BACKEND_LOSS_MIN_WORK (one 32 MiB row chunk holds 3640 rows at this
// width, so an 8000-row case covers several chunks and a partial last one).
const ROWS = 512;
const COLS = 1152;
const L = syntheticLayer(ROWS, COLS, 71, { outlierChannels: 4 });

test('layerLossOn on the backend equals the kernel quadratic form to 1e-12 (with and without B, chunked rows)', async () => {
  assert.ok(ROWS * COLS * COLS >= BACKEND_LOSS_MIN_WORK);
  const b = L.weight.map((v, i) => (i % 3 === 0 ? 0 : v * 0.9));
  for (const other of [null, b]) {
    const kernel = layerLossBetween(L.weight, other, ROWS, COLS, L.hessian);
    const onBackend = await layerLossOn(backend, L.weight, other, ROWS, COLS, L.hessian);
    assert.ok(kernel > 0);
    assert.ok(Math.abs(onBackend - kernel) <= 1e-12 * kernel, `${onBackend} vs ${kernel}`);
  }
  // More rows than one chunk holds: three chunks, the last partial.
  const rows = 8000;
  const tall = new Float64Array(rows * COLS);
  for (let r = 0; r < rows; r++) tall.set(L.weight.subarray((r % ROWS) * COLS, (r % ROWS + 1) * COLS), r * COLS);
  const kernel = layerLossBetween(tall, null, rows, COLS, L.hessian);
  const onBackend = await layerLossOn(backend, tall, null, rows, COLS, L.hessian);
  assert.ok(Math.abs(onBackend - kernel) <= 1e-12 * kernel, `${onBackend} vs ${kernel}`);
});

test('compressLayer with a backend reports the same loss breakdown as without one (wanda-rtn: the backend only computes the loss)', async () => {
  const problem = { rows: ROWS, cols: COLS, weight: L.weight, hessian: L.hessian };
  const config = { method: 'wanda-rtn' as const, wbits: 4, sparsity: { kind: 'unstructured' as const, ratio: 0.5 }, alpha: 0.5, damp: 0.01 };
  const plain = await compressLayer(problem, config, { threads: 1 });
  const withBackend = await compressLayer(problem, config, { threads: 1, backend });
  assert.deepEqual(withBackend.codes, plain.codes);
  for (const k of ['total', 'pruning', 'quantization', 'recovered', 'outputEnergy'] as const) {
    const a = plain.stats.loss[k];
    const c = withBackend.stats.loss[k];
    assert.ok(Math.abs(c - a) <= 1e-11 * plain.stats.loss.outputEnergy, `${k}: ${c} vs ${a}`);
  }
  assert.ok(plain.stats.loss.pruning > 0 && plain.stats.loss.quantization > 0);
});

test('lossOnBackend sets the route whatever the size: the pre-flight probe times a few rows of a big layer the way the whole layer runs', async () => {
  let products = 0;
  const counting = { ...backend, matmulF64: (a: Float64Array, b: Float64Array, m: number, k: number, n: number) => (products++, backend.matmulF64!(a, b, m, k, n)) };
  const rows = 16; // 16·1152² is far below BACKEND_LOSS_MIN_WORK
  assert.ok(rows * COLS * COLS < BACKEND_LOSS_MIN_WORK);
  const w = L.weight.subarray(0, rows * COLS);
  const kernel = layerLossBetween(w, null, rows, COLS, L.hessian);
  assert.equal(await layerLossOn(counting, w, null, rows, COLS, L.hessian), kernel, 'by size: the kernel, bit for bit');
  assert.equal(products, 0);
  const forced = await layerLossOn(counting, w, null, rows, COLS, L.hessian, undefined, true);
  assert.equal(products, 1);
  assert.ok(Math.abs(forced - kernel) <= 1e-12 * kernel, `${forced} vs ${kernel}`);
  // Through compressLayer (rtn: no solver products, so every backend product is a loss term).
  products = 0;
  const config = { method: 'rtn', sparsity: { kind: 'dense' }, wbits: 4, alpha: 0.5, damp: 0.01 } as const;
  await compressLayer({ weight: w, rows, cols: COLS, hessian: L.hessian }, config, { backend: counting, lossOnBackend: true });
  assert.equal(products, 3, 'total, quantization and output energy on the backend (a dense recipe has no pruning term)');
  products = 0;
  await compressLayer({ weight: L.weight, rows: ROWS, cols: COLS, hessian: L.hessian }, config, { backend: counting, lossOnBackend: false });
  assert.equal(products, 0, 'a big layer kept in the kernels when told');
});
