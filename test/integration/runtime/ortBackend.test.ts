// The onnxruntime MatMul backend: float32 products agree with float64 ones, and the batched PCG
// compensation on it stays close to the exact per-row solver.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { compressLayer } from '../../../src/core/compress';
import { gemmAccumulate } from '../../../src/core/matrix';
import { seededNormal, syntheticLayer } from '../../../src/core/random';
import { collectNow } from '../../../src/core/gc';
import { createOrtBackend } from '../../../src/runtime/ortBackend';

test('ort matmulF32 == float64 GEMM to float32 accuracy, several shapes', async () => {
  const be = await createOrtBackend({ threads: 1 });
  try {
    const g = seededNormal(5);
    for (const [m, k, n] of [[1, 1, 1], [7, 13, 5], [33, 64, 48]]) {
      const a = Float64Array.from({ length: m * k }, () => g());
      const b = Float64Array.from({ length: k * n }, () => g());
      const ref = new Float64Array(m * n);
      gemmAccumulate(a, b, ref, m, k, n);
      const y = await be.matmulF32!(Float32Array.from(a), Float32Array.from(b), m, k, n);
      assert.equal(y.length, m * n);
      for (let i = 0; i < ref.length; i++) assert.ok(Math.abs(y[i] - ref[i]) <= 1e-5 * Math.sqrt(k) * (1 + Math.abs(ref[i])), `${m}×${k}×${n} [${i}]`);
    }
  } finally {
    await be.release();
  }
});

test('the backend keeps no product alive once its caller drops it (the last result was held until the next product)', async () => {
  const be = await createOrtBackend({ threads: 1 });
  try {
    const live = (): number => {
      collectNow();
      collectNow();
      return process.memoryUsage().arrayBuffers;
    };
    const n = 1024; // a 1024 × 1024 float32 result: 4 MiB
    const a = new Float32Array(n * n).fill(0.5);
    const b = new Float32Array(n * n).fill(2);
    const base = live();
    // The result is looked at in a callback and dropped there: an async function's own frame may
    // keep an awaited value alive, the backend must not.
    const last = await be.matmulF32!(a, b, n, n, n).then((y) => {
      const held = live() - base;
      assert.ok(held >= 0.9 * n * n * 4, `the result counts while the caller holds it (${held} bytes)`);
      return y[n * n - 1];
    });
    assert.equal(last, n, 'the product ran');
    const left = live() - base;
    assert.ok(left < (n * n * 4) / 4, `${left} bytes still live after the caller dropped the ${n * n * 4}-byte result`);
  } finally {
    await be.release();
  }
});

test('ort matmulF64 == float64 GEMM to float64 accuracy, several shapes (the factorization blocks)', async () => {
  const be = await createOrtBackend({ threads: 1 });
  try {
    const g = seededNormal(6);
    for (const [m, k, n] of [[1, 1, 1], [9, 17, 4], [64, 33, 70]]) {
      const a = Float64Array.from({ length: m * k }, () => g());
      const b = Float64Array.from({ length: k * n }, () => g());
      const ref = new Float64Array(m * n);
      gemmAccumulate(a, b, ref, m, k, n);
      const y = await be.matmulF64!(a, b, m, k, n);
      assert.ok(y instanceof Float64Array && y.length === m * n);
      for (let i = 0; i < ref.length; i++) assert.ok(Math.abs(y[i] - ref[i]) <= 1e-13 * k * (1 + Math.abs(ref[i])), `${m}×${k}×${n} [${i}]`);
    }
  } finally {
    await be.release();
  }
});

test("compressLayer solver 'pcg-batched' on the ort backend: loss within 5% of the exact solver", async () => {
  const rows = 32;
  const cols = 96;
  const L = syntheticLayer(rows, cols, 7, { tokens: 256 });
  const problem = { weight: L.weight, rows, cols, hessian: L.hessian, channelEnergy: L.channelEnergy };
  const config = { method: 'obr-gptq', sparsity: { kind: 'unstructured', ratio: 0.5 }, wbits: 4, alpha: 0.5, damp: 0.01 } as const;
  const be = await createOrtBackend({ threads: 1 });
  try {
    const exact = await compressLayer(problem, config, { threads: 1 });
    const pcg = await compressLayer(problem, config, { threads: 1, backend: be, solver: 'pcg-batched' });
    assert.ok(pcg.stats.loss.total <= exact.stats.loss.total * 1.05, `${pcg.stats.loss.total} vs ${exact.stats.loss.total}`);
    assert.equal(pcg.stats.sparsity >= 0.5, true);
  } finally {
    await be.release();
  }
});
