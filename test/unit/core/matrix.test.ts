// Dense kernels against textbook references; the WebAssembly SIMD Cholesky path against the
// scalar one.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { rowKernels } from '../../../src/core/kernels';
import { cholesky, choleskyWithRetry, gemm, inverseSpd, LinAlgError, solveSpd, syrk, traceQuadratic, upperCholeskyOfInverse } from '../../../src/core/matrix';
import { seededNormal, syntheticLayer } from '../../../src/core/random';
import { refInverse, refSolve, refUpperCholesky } from './reference';

function spd(n: number, seed: number): Float64Array {
  return syntheticLayer(1, n, seed, { tokens: 2 * n }).hessian.map((v, i) => (i % (n + 1) === 0 ? v + 1 : v));
}

test('cholesky reconstructs A = L Lᵀ (rel. 1e-12) for odd and even sizes, and rejects indefinite matrices', () => {
  for (const n of [1, 2, 3, 17, 33, 64, 101]) {
    const a = spd(n, n);
    const l = a.slice();
    assert.ok(cholesky(l, n));
    let err = 0;
    let scale = 0;
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) {
      let s = 0;
      for (let k = 0; k < n; k++) s += l[i * n + k] * l[j * n + k];
      err = Math.max(err, Math.abs(s - a[i * n + j]));
      scale = Math.max(scale, Math.abs(a[i * n + j]));
      if (j > i) assert.equal(l[i * n + j], 0);
    }
    assert.ok(err <= 1e-12 * scale, `n=${n}: ${err}`);
  }
  const bad = new Float64Array([1, 2, 2, 1]);
  assert.equal(cholesky(bad.slice(), 2), false);
  assert.throws(() => solveSpd(bad, 2, new Float64Array(2)), LinAlgError);
  const singular = new Float64Array([1, 1, 1, 1]);
  assert.ok(choleskyWithRetry(singular, 2).damp > 0);
});

test('WebAssembly SIMD tile path = scalar path (the kernel module validates and is used)', () => {
  for (const n of [16, 48, 130]) {
    const a = spd(n, 100 + n);
    const scalar = a.slice();
    const simd = rowKernels.scratchMatrix(n * n);
    simd.set(a);
    assert.ok(cholesky(scalar, n));
    assert.ok(cholesky(simd, n));
    let d = 0;
    for (let i = 0; i < n * n; i++) d = Math.max(d, Math.abs(simd[i] - scalar[i]) / Math.abs(scalar[i * 0 + (Math.floor(i / n) * (n + 1))]));
    assert.ok(d <= 1e-11, `n=${n}: ${d}`);
  }
});

test('solveSpd, inverseSpd, upperCholeskyOfInverse (U with H⁻¹ = UᵀU) match Gaussian elimination', () => {
  const n = 40;
  const a = spd(n, 5);
  const g = seededNormal(3);
  const b = Float64Array.from({ length: n }, () => g());
  const x = solveSpd(a, n, b);
  const xr = refSolve(a, n, b);
  for (let i = 0; i < n; i++) assert.ok(Math.abs(x[i] - xr[i]) <= 1e-9 * Math.max(...xr.map(Math.abs)));
  const inv = inverseSpd(a, n);
  const ir = refInverse(a, n);
  const s = Math.max(...ir.map(Math.abs));
  for (let i = 0; i < n * n; i++) assert.ok(Math.abs(inv[i] - ir[i]) <= 1e-9 * s);
  const u = upperCholeskyOfInverse(a, n);
  const ur = refUpperCholesky(ir, n);
  const us = Math.max(...ur.map(Math.abs));
  for (let i = 0; i < n * n; i++) assert.ok(Math.abs(u[i] - ur[i]) <= 1e-9 * us, `U[${i}]`);
});

test('gemm, syrk and traceQuadratic against plain loops', () => {
  const g = seededNormal(9);
  const m = 7, k = 300, n = 530; // crosses the 128/512 cache blocks
  const a = Float64Array.from({ length: m * k }, (_, i) => (i % 3 === 0 ? 0 : g()));
  const b = Float64Array.from({ length: k * n }, () => g());
  const c = gemm(a, b, m, k, n);
  for (let i = 0; i < m; i += 3) for (let j = 0; j < n; j += 37) {
    let s = 0;
    for (let p = 0; p < k; p++) s += a[i * k + p] * b[p * n + j];
    assert.ok(Math.abs(c[i * n + j] - s) < 1e-10);
  }
  const aat = syrk(a, m, k);
  for (let i = 0; i < m; i++) for (let j = 0; j < m; j++) {
    let s = 0;
    for (let p = 0; p < k; p++) s += a[i * k + p] * a[j * k + p];
    assert.ok(Math.abs(aat[i * m + j] - s) < 1e-9);
  }
  const h = spd(20, 4);
  const d = Float64Array.from({ length: 3 * 20 }, () => g());
  let ref = 0;
  for (let r = 0; r < 3; r++) for (let i = 0; i < 20; i++) for (let j = 0; j < 20; j++) ref += d[r * 20 + i] * h[i * 20 + j] * d[r * 20 + j];
  assert.ok(Math.abs(traceQuadratic(d, 3, 20, h) - ref) <= 1e-10 * Math.abs(ref));
});

test('upperCholeskyOfInverse(A, n, from): the trailing block equals the full factor\'s (GPTQ from column k reads only that)', () => {
  const n = 37;
  const a = spd(n, 77);
  const full = upperCholeskyOfInverse(a, n);
  for (const from of [0, 1, 18, 36]) {
    const tail = upperCholeskyOfInverse(a, n, from);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        const want = i >= from && j >= from ? full[i * n + j] : 0;
        assert.ok(Math.abs(tail[i * n + j] - want) <= 1e-11 * Math.abs(full[i * n + i]), `from ${from} [${i},${j}]`);
      }
    }
  }
});
