// GPTQ's and SparseGPT's lazy-batch updates as dense products (issue 13 item 5): the blocked
// WebAssembly GEMM (C −= A·B) against a float64 triple loop and the JavaScript fallback, the
// selection behind SparseGPT's unstructured block mask, and sparseGptInPlace against the plain
// non-lazy float64 reference (./reference.ts refSparseGpt) on per-row and group-wise (32 / 128,
// asymmetric) grids, unstructured and N:M, over shapes whose trailing widths span two GEMM
// panels and whose row counts are not multiples of the 4-row tile.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { compressLayer } from '../../../src/core/compress';
import { sparseGptInPlace, sparseGptInPlaceAsync } from '../../../src/core/gptq';
import { createRowKernels } from '../../../src/core/kernels';
import { dampHessian, upperCholeskyOfInverse } from '../../../src/core/matrix';
import { fitGroupGrid } from '../../../src/core/quantize';
import { seededNormal, syntheticLayer } from '../../../src/core/random';
import { KERNELS_WASM_BASE64 } from '../../../src/core/wasm/kernelsWasm';
import { type RefLayout, refSparseGpt } from './reference';

const wasm = createRowKernels(KERNELS_WASM_BASE64);
const js = createRowKernels(null);

function maxRelDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let scale = 0;
  let diff = 0;
  for (let i = 0; i < a.length; i++) {
    scale = Math.max(scale, Math.abs(b[i]));
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
  }
  return diff / scale;
}

test('gemmSub: C −= A·B in WebAssembly = JavaScript bit for bit = float64 triple loop (rel. 1e-13), edge tiles and two panels', () => {
  assert.ok(wasm.wasmAvailable());
  const g = seededNormal(31);
  for (const [m, k, n] of [[1, 1, 1], [7, 13, 263], [9, 128, 517], [4, 128, 256], [5, 3, 3]] as const) {
    const a = Float64Array.from({ length: m * k }, () => g());
    const b = Float64Array.from({ length: k * n }, () => g());
    const c = Float64Array.from({ length: m * n }, () => g());
    const ref = c.slice();
    for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) s += a[i * k + p] * b[p * n + j];
      ref[i * n + j] -= s;
    }
    const cw = c.slice();
    wasm.gemmSubtract(cw, a, b, m, k, n);
    const cj = c.slice();
    js.gemmSubtract(cj, a, b, m, k, n);
    assert.deepEqual(cw, cj, `${m}×${k}×${n}: wasm = js`);
    // Same summation order as the triple loop, so in fact equal; the tolerance states the contract.
    assert.ok(maxRelDiff(cw, ref) <= 1e-13, `${m}×${k}×${n}: ${maxRelDiff(cw, ref)}`);
  }
});

test('kthSmallest = the sorted array at k (duplicates, ties, all equal)', () => {
  const g = seededNormal(32);
  for (const len of [1, 2, 3, 10, 257, 4096]) {
    for (const kind of ['normal', 'dups', 'const']) {
      const a = Float64Array.from({ length: len }, () => (kind === 'const' ? 2 : kind === 'dups' ? Math.round(3 * g()) ** 2 : g()));
      const sorted = a.slice().sort();
      for (const k of [0, len >> 1, len - 1, Math.floor(len / 3)]) assert.equal(js.kthSmallest(a.slice(), k), sorted[k], `${kind} len ${len} k ${k}`);
    }
  }
});

/** A seeded layer with correlated inputs and a few heavy input columns; U from src (an input of both sides). */
function layer(rows: number, cols: number, seed: number): { w: Float64Array; u: Float64Array } {
  const L = syntheticLayer(rows, cols, seed, { tokens: 2 * cols });
  const w = Float64Array.from(L.weight, (v, i) => ((i % cols) % 29 === 3 ? 6 * v : v));
  return { w, u: upperCholeskyOfInverse(dampHessian(L.hessian, cols, 0.01), cols) };
}

test('sparseGptInPlace = the non-lazy float64 reference (same mask, rel. 1e-9): unstructured and 2:4, per row and groups 32/128 asymmetric; JavaScript = WebAssembly bit for bit', () => {
  const rows = 11;
  const cols = 420; // blocks 128, 128, 128, 36: trailing widths 292 (two panels), 164, 36
  const { w, u } = layer(rows, cols, 33);
  for (const sparsity of [{ kind: 'unstructured', ratio: 0.5 }, { kind: 'nm', n: 2, m: 4 }] as const) {
    for (const [gs, asymmetric] of [[0, false], [32, true], [128, true], [128, false]] as const) {
      const what = `${sparsity.kind} g${gs} ${asymmetric ? 'asym' : 'sym'}`;
      const grid = fitGroupGrid(w, rows, cols, 4, { groupSize: gs, asymmetric });
      const layout: RefLayout = { groupSize: gs, zeros: grid.zeros };
      const ref = refSparseGpt(w, rows, cols, u, grid.scales, 7, sparsity, 128, layout);
      const ours = w.slice();
      const codes = new Int8Array(rows * cols);
      const mask = sparseGptInPlace(ours, rows, cols, u, grid.scales, 4, sparsity, codes, 128, gs, grid.zeros);
      assert.deepEqual(mask, ref.mask, `${what}: mask`);
      const d = maxRelDiff(ours, ref.weight);
      assert.ok(d <= 1e-9, `${what}: max rel. diff ${d}`);
      const kept = mask.reduce((s, m) => s + m, 0);
      if (sparsity.kind === 'unstructured') assert.ok(kept <= 0.5 * rows * cols, `${what}: kept ${kept}`);
      else for (let i = 0; i < mask.length; i += 4) assert.equal(mask[i] + mask[i + 1] + mask[i + 2] + mask[i + 3], 2);
      // The JavaScript fallback (no WebAssembly) runs the same operations in the same order.
      const viaJs = w.slice();
      const jsCodes = new Int8Array(rows * cols);
      const sweep = js.sparseGptSweep(viaJs, rows, cols, u, grid.scales, 7, sparsity, jsCodes, 128, gs, grid.zeros ?? null);
      while (sweep.step());
      assert.deepEqual(sweep.finish(), mask, `${what}: js mask`);
      assert.deepEqual(viaJs, ours, `${what}: js = wasm`);
      assert.deepEqual(jsCodes, codes, `${what}: js codes`);
    }
  }
});

test('sparseGptInPlaceAsync = sparseGptInPlace bit for bit, and stops between blocks when aborted', async () => {
  const rows = 6;
  const cols = 300;
  const { w, u } = layer(rows, cols, 34);
  const grid = fitGroupGrid(w, rows, cols, 4, { groupSize: 0 });
  const a = w.slice();
  const maskA = sparseGptInPlace(a, rows, cols, u, grid.scales, 4, { kind: 'unstructured', ratio: 0.5 });
  const b = w.slice();
  const maskB = await sparseGptInPlaceAsync(b, rows, cols, u, grid.scales, 4, { kind: 'unstructured', ratio: 0.5 });
  assert.deepEqual(b, a);
  assert.deepEqual(maskB, maskA);
  const ac = new AbortController();
  const run = sparseGptInPlaceAsync(w.slice(), rows, cols, u, grid.scales, 4, { kind: 'unstructured', ratio: 0.5 }, { signal: ac.signal });
  ac.abort(new Error('stop'));
  await assert.rejects(run, /stop/);
  // compressLayer's sparsegpt-gptq runs the same sweep.
  const L = syntheticLayer(rows, cols, 35, { tokens: 2 * cols });
  const res = await compressLayer({ weight: L.weight, rows, cols, hessian: L.hessian }, { method: 'sparsegpt-gptq', sparsity: { kind: 'unstructured', ratio: 0.5 }, wbits: 4, alpha: 0.5, damp: 0.01 }, { threads: 1 });
  const direct = L.weight.slice();
  sparseGptInPlace(direct, rows, cols, upperCholeskyOfInverse(dampHessian(L.hessian, cols, 0.01), cols), res.scales, 4, { kind: 'unstructured', ratio: 0.5 });
  assert.deepEqual(res.weight, direct);
});
