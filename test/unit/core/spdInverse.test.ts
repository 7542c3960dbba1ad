// The batched solver's (A + ρI)⁻¹ (src/core/spdInverse.ts): a Cholesky factor and triangular
// inverse made in place in a packed lower triangle by block columns with float64 products, and the
// float32 inverse made while the triangle is handed back. Compared with float64 references on a
// seeded SPD matrix (a damped Hessian of correlated synthetic inputs): the kernels' unblocked
// Cholesky and triangular inverse, and inverseSpd. Block sizes that do not divide n, and the
// float64 products both in the kernels (kernelProduct64) and in plain JavaScript.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { rowKernels } from '../../../src/core/kernels';
import { dampHessian, gemmAccumulate, inverseSpd, upperCholeskyOfInverse } from '../../../src/core/matrix';
import { syntheticLayer } from '../../../src/core/random';
import { choleskyInPlace, invertLowerInPlace, inverseF32, kernelProduct64, PackedLower, upperCholeskyOfInverseInPlace, type MatMul32, type MatMul64 } from '../../../src/core/spdInverse';

const n = 1030;
const h = dampHessian(syntheticLayer(4, n, 21, { tokens: 2 * n, outlierChannels: 4 }).hessian, n, 0.01);

/** H's lower triangle in a PackedLower with panels of `panelRows` rows. */
function packed(panelRows?: number): PackedLower {
  const a = new PackedLower(n, panelRows);
  for (let i = 0; i < n; i++) a.row(i).set(h.subarray(i * n, i * n + i + 1));
  return a;
}

/** max |a − ref| / max |ref| over the lower triangle (ref dense n×n). */
function relativeError(a: PackedLower, ref: Float64Array): number {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < n; i++) {
    const row = a.row(i);
    for (let j = 0; j <= i; j++) {
      diff = Math.max(diff, Math.abs(row[j]! - ref[i * n + j]!));
      scale = Math.max(scale, Math.abs(ref[i * n + j]!));
    }
  }
  return diff / scale;
}

/** The float64 references: L by the kernels' (unblocked) Cholesky, L⁻¹ by their triangular inverse. */
function references(): { l: Float64Array; li: Float64Array } {
  const s = rowKernels.scratchMatrix(n * n);
  s.set(h);
  assert.ok(rowKernels.cholesky(s, n));
  const l = s.slice();
  rowKernels.trim(0);
  return { l, li: rowKernels.invertLower(l, n) };
}

const jsProduct64: MatMul64 = (a, b, m, k, q) => {
  const c = new Float64Array(m * q);
  gemmAccumulate(a.subarray(0, m * k), b.subarray(0, k * q), c, m, k, q);
  return Promise.resolve(c);
};

test('PackedLower: n(n+1)/2 entries in panels of rows; a dropped panel cannot be read', () => {
  const a = new PackedLower(10, 4);
  assert.equal(a.panelCount, 3);
  for (let i = 0; i < 10; i++) a.row(i).fill(i + 1);
  for (let i = 0; i < 10; i++) {
    assert.equal(a.row(i).length, i + 1);
    assert.ok(a.row(i).every((v) => v === i + 1), `row ${i} kept its own entries`);
  }
  a.dropPanel(2);
  assert.throws(() => a.row(8), /row 8 was dropped/);
  assert.equal(a.row(7).length, 8);
});

test('choleskyInPlace and invertLowerInPlace: L and L⁻¹ within 1e-12 and 1e-11 (relative) of the kernels\' float64 factorization and inverse (n = 1030, blocks of 128 and 96)', async () => {
  const ref = references();
  for (const [nb, mm64, panelRows] of [[128, kernelProduct64, undefined], [96, jsProduct64, 37]] as const) {
    let products = 0;
    const counted: MatMul64 = (a, b, m, k, q) => {
      products++;
      return mm64(a, b, m, k, q);
    };
    const a = packed(panelRows);
    assert.ok(await choleskyInPlace(a, counted, nb));
    const el = relativeError(a, ref.l);
    assert.ok(el <= 1e-12, `L: ${el} (nb ${nb})`);
    const afterFactor = products;
    // Two products per block column besides the first (D and L11⁻¹Lk), one per chunk of rows below.
    assert.ok(afterFactor >= 2 * (Math.ceil(n / nb) - 1), `${afterFactor} products`);
    await invertLowerInPlace(a, counted, nb);
    const ei = relativeError(a, ref.li);
    assert.ok(ei <= 1e-11, `L⁻¹: ${ei} (nb ${nb})`);
    assert.ok(products - afterFactor >= Math.ceil(n / nb) - 1, `${products - afterFactor} products for L⁻¹`);
  }
});

test('choleskyInPlace: false for a matrix that is not positive definite (a negative pivot in a later block)', async () => {
  const a = packed();
  a.row(700)[700] = -1;
  assert.equal(await choleskyInPlace(a, kernelProduct64, 128), false);
});

test('inverseF32: (A)⁻¹ in float32 within 1e-6 (relative to its largest entry) of the float64 inverse, the triangle\'s panels all handed back', async () => {
  const a = packed();
  assert.ok(await choleskyInPlace(a, kernelProduct64));
  await invertLowerInPlace(a, kernelProduct64);
  let products = 0;
  const f32: MatMul32 = (x, y, m, k, q) => {
    products++;
    const c = new Float64Array(m * q);
    gemmAccumulate(Float64Array.from(x.subarray(0, m * k)), Float64Array.from(y.subarray(0, k * q)), c, m, k, q);
    return Promise.resolve(Float32Array.from(c));
  };
  const inv = await inverseF32(a, f32);
  assert.ok(products >= 2, `${products} row-chunk products`);
  const ref = inverseSpd(h, n);
  let diff = 0;
  let scale = 0;
  let asym = 0;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      diff = Math.max(diff, Math.abs(inv[i * n + j]! - ref[i * n + j]!));
      scale = Math.max(scale, Math.abs(ref[i * n + j]!));
      asym = Math.max(asym, Math.abs(inv[i * n + j]! - inv[j * n + i]!));
    }
  }
  assert.ok(diff <= 1e-6 * scale, `max |Δ| ${diff} vs ${scale}`);
  assert.ok(asym <= 1e-6 * scale, `asymmetry ${asym}`);
  for (let p = 0; p < a.panelCount; p++) assert.throws(() => a.row(p * a.panelRows), /dropped/);
});

test('upperCholeskyOfInverseInPlace: the GPTQ tail\'s U (A⁻¹ = UᵀU, upper) within 1e-11 (relative) of upperCholeskyOfInverse, from A\'s entries read at i ≥ j only', async () => {
  const ref = upperCholeskyOfInverse(h, n);
  rowKernels.trim(0);
  let upperReads = 0;
  const u = await upperCholeskyOfInverseInPlace((i, j) => {
    if (j > i) upperReads++;
    return h[i * n + j]!;
  }, n, kernelProduct64);
  assert.ok(u);
  assert.equal(upperReads, 0);
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      if (j < i) assert.equal(u[i * n + j], 0, `U[${i}, ${j}] below the diagonal`);
      diff = Math.max(diff, Math.abs(u[i * n + j]! - ref[i * n + j]!));
      scale = Math.max(scale, Math.abs(ref[i * n + j]!));
    }
  }
  assert.ok(diff <= 1e-11 * scale, `max |Δ| ${diff} vs ${scale}`);
  const bad = h.slice();
  bad[600 * n + 600] = -1;
  assert.equal(await upperCholeskyOfInverseInPlace((i, j) => bad[i * n + j]!, n, kernelProduct64), null);
});
