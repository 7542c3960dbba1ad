// The committed WebAssembly kernels (src/core/wasm/kernelsWasm.ts) are exactly what the
// AssemblyScript source compiles to, and they load and agree with the JavaScript kernels.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createRowKernels } from '../../../src/core/kernels';
import { KERNELS_WASM_BASE64 } from '../../../src/core/wasm/kernelsWasm';
import { seededNormal, syntheticLayer } from '../../../src/core/random';
import { dampHessian } from '../../../src/core/matrix';
import { pruneMask, wandaScores } from '../../../src/core/mask';
import { symmetricRowScales } from '../../../src/core/quantize';

test('src/core/wasm/kernelsWasm.ts is up to date with src/core/wasm/assembly (node scripts/wasm.mjs)', async () => {
  const { compileKernels } = await import('../../../scripts/wasm.mjs');
  const fresh = Buffer.from(await compileKernels()).toString('base64');
  assert.equal(fresh, KERNELS_WASM_BASE64, 'the generated kernels are stale: run `node scripts/wasm.mjs` and commit the result');
});

function spd(n: number, seed: number): Float64Array {
  const g = seededNormal(seed);
  const x = Float64Array.from({ length: n * 2 * n }, () => g());
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let s = 0;
      for (let k = 0; k < 2 * n; k++) s += x[i * 2 * n + k] * x[j * 2 * n + k];
      a[i * n + j] = a[j * n + i] = s + (i === j ? 0.1 : 0);
    }
  }
  return a;
}

test('WebAssembly cholesky and invertLower = JavaScript (float64 reference) for sizes around the 16-row blocks', () => {
  const wasm = createRowKernels(KERNELS_WASM_BASE64);
  const js = createRowKernels(null);
  for (const n of [1, 2, 15, 16, 17, 33, 100]) {
    const a = spd(n, n);
    const ref = a.slice();
    assert.ok(js.cholesky(ref, n));
    const w = wasm.scratchMatrix(n * n);
    assert.ok(w.buffer !== ref.buffer);
    w.set(a);
    assert.ok(wasm.cholesky(w, n));
    const scale = Math.max(...ref.map(Math.abs));
    for (let i = 0; i < n * n; i++) assert.ok(Math.abs(w[i] - ref[i]) <= 1e-12 * scale, `n=${n} entry ${i}`);
    const li = wasm.invertLower(w, n);
    const lr = js.invertLower(ref, n);
    // L · L⁻¹ = I to float64 accuracy, and both inverses agree.
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let k = 0; k < n; k++) s += ref[i * n + k] * li[k * n + j];
        assert.ok(Math.abs(s - (i === j ? 1 : 0)) <= 1e-10, `n=${n} (L L⁻¹)[${i},${j}] = ${s}`);
        assert.ok(Math.abs(li[i * n + j] - lr[i * n + j]) <= 1e-10 * Math.max(1, Math.abs(lr[i * n + j])));
      }
    }
  }
  // Not positive definite: both report failure.
  const bad = wasm.scratchMatrix(4);
  bad.set([1, 2, 2, 1]);
  assert.equal(wasm.cholesky(bad, 2), false);
  assert.equal(js.cholesky(new Float64Array([1, 2, 2, 1]), 2), false);
});

test('WebAssembly GPTQ rows (masked tail from column k, codes) = JavaScript bit for bit; scale search picks the same scales', () => {
  const wasm = createRowKernels(KERNELS_WASM_BASE64);
  const js = createRowKernels(null);
  const g = seededNormal(11);
  // The last case: rows not a multiple of the 4-row GEMM tile, a first trailing update 292 columns wide (two 256-column panels).
  for (const [rows, cols, start, bs] of [[37, 96, 48, 32], [20, 70, 0, 16], [3, 33, 10, 128], [13, 450, 30, 128]] as const) {
    const a = spd(cols, cols + 1);
    const l = a.slice();
    assert.ok(js.cholesky(l, cols));
    // Any upper-triangular U with a positive diagonal exercises the recursion; use Lᵀ.
    const u = new Float64Array(cols * cols);
    for (let i = 0; i < cols; i++) for (let j = i; j < cols; j++) u[i * cols + j] = l[j * cols + i];
    const w = Float64Array.from({ length: rows * cols }, () => g());
    const mask = Uint8Array.from({ length: rows * cols }, (_, i) => (i * 7919) % 5 === 0 ? 0 : 1);
    const scales = Float64Array.from({ length: rows }, (_, r) => 0.2 + 0.01 * r);
    const wa = w.slice(), wb = w.slice();
    const ca = new Int8Array(rows * cols), cb = new Int8Array(rows * cols);
    wasm.gptqRows(wa, cols, u, scales, 7, mask, start, bs, ca, 0, rows);
    js.gptqRows(wb, cols, u, scales, 7, mask, start, bs, cb, 0, rows);
    assert.deepEqual(wa, wb);
    assert.deepEqual(ca, cb);
    for (let i = 0; i < rows * cols; i++) if (!mask[i] && i % cols >= start) assert.equal(wa[i], 0);
    const sa = new Float64Array(rows), sb = new Float64Array(rows);
    const heavy = Float64Array.from(w, (v, i) => (i % 13 === 0 ? 6 * v : v));
    wasm.symmetricRowScalesRange(heavy, cols, 7, 2.4, 100, 80, sa, 0, rows);
    js.symmetricRowScalesRange(heavy, cols, 7, 2.4, 100, 80, sb, 0, rows);
    assert.deepEqual(sa, sb);
  }
});

test('layer loss Σ_r d_rᵀ H d_r: WebAssembly = JavaScript = float64 reference (rel. 1e-12)', () => {
  const wasm = createRowKernels(KERNELS_WASM_BASE64);
  const js = createRowKernels(null);
  const g = seededNormal(21);
  for (const [rows, n] of [[1, 1], [5, 17], [70, 33], [130, 64]] as const) {
    const h = spd(n, n + 3);
    const a = Float64Array.from({ length: rows * n }, () => g());
    const b = Float64Array.from({ length: rows * n }, () => g());
    let ref = 0;
    for (let r = 0; r < rows; r++) {
      for (let i = 0; i < n; i++) {
        for (let j = 0; j < n; j++) ref += (a[r * n + i] - b[r * n + i]) * h[i * n + j] * (a[r * n + j] - b[r * n + j]);
      }
    }
    const w = wasm.quadraticFormSum(a, b, rows, n, h);
    const j = js.quadraticFormSum(a, b, rows, n, h);
    assert.ok(Math.abs(w - ref) <= 1e-12 * Math.abs(ref), `${rows}×${n}: ${w} vs ${ref}`);
    assert.ok(Math.abs(j - ref) <= 1e-12 * Math.abs(ref), `${rows}×${n}: ${j} vs ${ref}`);
    assert.ok(Math.abs(wasm.quadraticFormSum(a, null, rows, n, h) - js.quadraticFormSum(a, null, rows, n, h)) <= 1e-12 * Math.abs(ref));
  }
});

test('trim() releases grown kernel memory and the kernels keep working', () => {
  const k = createRowKernels(KERNELS_WASM_BASE64);
  const n = 1500; // 18 MB of scratch
  const big = k.scratchMatrix(n * n);
  const before = big.buffer.byteLength;
  assert.ok(before >= n * n * 8);
  k.trim(1 << 20);
  const again = k.scratchMatrix(16);
  assert.ok(again.buffer.byteLength < before, 'a fresh, small memory after trim');
  const a = k.scratchMatrix(4);
  a.set([4, 2, 2, 3]);
  assert.ok(k.cholesky(a, 2));
  assert.equal(a[0], 2);
});

test('mixed precision rows (float32 factor + float64 refinement) = float64 rows (rel. 1e-11); ill-conditioned rows fall back', () => {
  const k = createRowKernels(KERNELS_WASM_BASE64);
  const cases = [
    { cols: 600, sparsity: { kind: 'unstructured', ratio: 0.5 } as const, damp: 0.01, tokens: 1200 },
    { cols: 520, sparsity: { kind: 'nm', n: 2, m: 4 } as const, damp: 0.01, tokens: 1040 },
    // Rank-deficient X (tokens < cols) with almost no damping: κ(H_RR) far beyond float32.
    { cols: 600, sparsity: { kind: 'unstructured', ratio: 0.5 } as const, damp: 1e-10, tokens: 200 },
  ];
  for (const c of cases) {
    const rows = 4;
    const L = syntheticLayer(rows, c.cols, 7, { tokens: c.tokens });
    const hd = dampHessian(L.hessian, c.cols, c.damp);
    const scales = symmetricRowScales(L.weight, rows, c.cols, 4);
    const mask = pruneMask(wandaScores(L.weight, rows, c.cols, L.channelEnergy), rows, c.cols, c.sparsity);
    const p = { weight: L.weight, rows, cols: c.cols, hessian: hd, mask, scales, bits: 4, splitCol: c.cols / 2 };
    const ref = new Float64Array(rows * c.cols);
    const got = new Float64Array(rows * c.cols);
    k.compensateRowsDirect({ ...p, precision: 'float64' }, ref);
    const before = k.mixedStats();
    k.compensateRowsDirect({ ...p, precision: 'auto' }, got);
    const after = k.mixedStats();
    const scale = Math.max(...ref.map(Math.abs));
    let d = 0;
    for (let i = 0; i < ref.length; i++) d = Math.max(d, Math.abs(ref[i] - got[i]));
    if (c.damp >= 0.01) {
      assert.equal(after.mixed - before.mixed, rows, 'these rows take the mixed kernel');
      assert.ok(d <= 1e-11 * scale, `cols ${c.cols}: ${d / scale}`);
    } else {
      assert.ok(after.fallback - before.fallback > 0, 'an ill-conditioned row falls back to float64');
      assert.ok(d <= 1e-6 * scale, `fallback rows agree with float64: ${d / scale}`);
    }
  }
});

test('blocked triangular inverse (n ≥ 256: 128-column blocks, gemmSub) = JavaScript row loop (rel. 1e-12), L·X = I, upper triangle exactly 0', () => {
  const wasm = createRowKernels(KERNELS_WASM_BASE64);
  const js = createRowKernels(null);
  for (const n of [256, 300, 517]) {
    const l = spd(n, n + 3);
    assert.ok(js.cholesky(l, n));
    const xw = wasm.invertLower(l, n);
    const xj = js.invertLower(l, n);
    let scale = 0;
    let diff = 0;
    for (let i = 0; i < n * n; i++) {
      scale = Math.max(scale, Math.abs(xj[i]));
      diff = Math.max(diff, Math.abs(xw[i] - xj[i]));
    }
    assert.ok(diff <= 1e-12 * scale, `n ${n}: ${diff / scale}`);
    for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) assert.ok(xw[i * n + j] === 0, `n ${n}: X[${i}, ${j}] = ${xw[i * n + j]}`);
    // L·X = I on a spread of entries (‖L‖·‖X‖-relative).
    let lmax = 0;
    for (let i = 0; i < n * n; i++) lmax = Math.max(lmax, Math.abs(l[i]));
    for (let i = 0; i < n; i += 7) {
      for (let j = 0; j < n; j += 5) {
        let s = 0;
        for (let t = 0; t < n; t++) s += l[i * n + t] * xw[t * n + j];
        assert.ok(Math.abs(s - (i === j ? 1 : 0)) <= 1e-12 * n * lmax * scale, `n ${n}: (L X)[${i}, ${j}] = ${s}`);
      }
    }
  }
});
