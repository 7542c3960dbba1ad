// Quantizer grid and scale search (§1.7), masks (unstructured per row, N:M, stable ties).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pruneMask, prunedPerRow, wandaScores } from '../../../src/core/mask';
import { fitGroupGrid, quantizeGroups, quantizeRows, quantizeRowsGrouped, roundHalfEven, symmetricCode, symmetricRowScales } from '../../../src/core/quantize';
import { seededNormal } from '../../../src/core/random';
import { refQ } from './reference';

test('round half to even and the symmetric grid [−2^(b−1), 2^(b−1)−1]', () => {
  assert.deepEqual([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4, -2.6].map(roundHalfEven), [0, 2, 2, 0, -2, -2, 2, -3]);
  assert.ok(Object.is(roundHalfEven(-0.2), 0), '−0 normalized');
  for (const bits of [2, 3, 4, 8]) {
    const maxq = 2 ** (bits - 1) - 1;
    assert.equal(symmetricCode(1e9, 1, maxq), maxq);
    assert.equal(symmetricCode(-1e9, 1, maxq), -maxq - 1);
  }
});

test('MSE clip search picks the exact argmin of Σ|Q(w)−w|^2.4 over p ∈ {1.00 … 0.21}', () => {
  const g = seededNormal(5);
  const rows = 12, cols = 96;
  const w = Float64Array.from({ length: rows * cols }, (_, i) => g() * (i % 31 === 0 ? 5 : 1));
  for (const bits of [3, 4]) {
    const maxq = 2 ** (bits - 1) - 1;
    const s = symmetricRowScales(w, rows, cols, bits);
    for (let r = 0; r < rows; r++) {
      let xmax = 0;
      for (let j = 0; j < cols; j++) xmax = Math.max(xmax, Math.abs(w[r * cols + j]));
      let best = Infinity;
      let bestScale = 0;
      for (let i = 0; i < 80; i++) {
        const sc = ((1 - i / 100) * xmax) / maxq;
        let e = 0;
        for (let j = 0; j < cols; j++) e += Math.abs(refQ(w[r * cols + j], sc, maxq) - w[r * cols + j]) ** 2.4;
        if (e < best) [best, bestScale] = [e, sc];
      }
      assert.ok(Math.abs(s[r] - bestScale) <= 1e-12 * bestScale, `bits ${bits} row ${r}`);
    }
    const plain = symmetricRowScales(w, rows, cols, bits, { mse: false });
    for (let r = 0; r < rows; r++) assert.ok(plain[r] >= s[r]);
    const codes = new Int8Array(rows * cols);
    const q = quantizeRows(w, rows, cols, s, bits, codes);
    for (let i = 0; i < q.length; i++) {
      assert.equal(q[i], codes[i] * s[Math.floor(i / cols)]);
      assert.ok(codes[i] >= -maxq - 1 && codes[i] <= maxq);
    }
  }
  // All-zero row: scale from xmax = 1, codes 0.
  const z = symmetricRowScales(new Float64Array(8), 1, 8, 4);
  assert.ok(z[0] > 0);
});

test('asymmetric (min/max, no search) and grouped baselines stay on their grids', () => {
  const g = seededNormal(6);
  const w = Float64Array.from({ length: 4 * 64 }, () => g());
  const grid = fitGroupGrid(w, 4, 64, 4, { groupSize: 0, asymmetric: true }, { mse: false });
  const a = quantizeGroups(w, 4, 64, grid, 4);
  for (let i = 0; i < w.length; i++) {
    const r = Math.floor(i / 64);
    const q = a[i] / grid.scales[r] + grid.zeros![r];
    assert.ok(Math.abs(q - Math.round(q)) < 1e-9 && q > -8 - 1e-9 && q < 7 + 1e-9);
    assert.ok(Math.abs(a[i] - w[i]) <= grid.scales[r] + 1e-12);
  }
  const gq = quantizeRowsGrouped(w, 4, 64, 4, 16);
  assert.equal(gq.scales.length, 16);
  for (let i = 0; i < w.length; i++) {
    const s = gq.scales[Math.floor(i / 64) * 4 + Math.floor((i % 64) / 16)];
    const c = gq.weight[i] / s;
    assert.ok(Math.abs(c - Math.round(c)) < 1e-9 && Math.round(c) >= -8 && Math.round(c) <= 7, `${c}`);
  }
});

test('unstructured masks prune exactly ⌊n·s⌋ lowest per row (stable ties); N:M prunes N of every M', () => {
  const g = seededNormal(8);
  const rows = 6, cols = 40;
  const w = Float64Array.from({ length: rows * cols }, () => g());
  const energy = Float64Array.from({ length: cols }, () => Math.abs(g()) + 0.1);
  const scores = wandaScores(w, rows, cols, energy);
  for (const ratio of [0.25, 0.5, 0.7]) {
    const m = pruneMask(scores, rows, cols, { kind: 'unstructured', ratio });
    for (let r = 0; r < rows; r++) {
      const row = Array.from(scores.subarray(r * cols, (r + 1) * cols));
      const kept = Array.from(m.subarray(r * cols, (r + 1) * cols));
      assert.equal(kept.filter((v) => v === 0).length, prunedPerRow(cols, ratio));
      const maxPruned = Math.max(...row.filter((_, j) => !kept[j]));
      const minKept = Math.min(...row.filter((_, j) => kept[j]));
      assert.ok(maxPruned <= minKept);
    }
  }
  const ties = pruneMask(new Float64Array(8).fill(1), 1, 8, { kind: 'unstructured', ratio: 0.5 });
  assert.deepEqual(Array.from(ties), [0, 0, 0, 0, 1, 1, 1, 1], 'ties prune lower columns first');
  for (const [n, mm] of [[2, 4], [4, 8], [1, 4]] as const) {
    const m = pruneMask(scores, rows, cols, { kind: 'nm', n, m: mm });
    for (let r = 0; r < rows; r++) for (let b = 0; b < cols; b += mm) {
      const block = Array.from(m.subarray(r * cols + b, r * cols + b + mm));
      assert.equal(block.filter((v) => v === 0).length, n);
      const sc = Array.from(scores.subarray(r * cols + b, r * cols + b + mm));
      assert.ok(Math.max(...sc.filter((_, j) => !block[j])) <= Math.min(...sc.filter((_, j) => block[j])));
    }
  }
  assert.ok(pruneMask(scores, rows, cols, { kind: 'dense' }).every((v) => v === 1));
});
