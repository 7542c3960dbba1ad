// Summaries the inspector draws: mask density grid, row/column densities, scales, N:M validity.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { summarizeLayer } from '../../../src/worker/layerDetail';

// W (2×8, out×in), row-major: row 0 is valid 2:4 (two zeros per group of 4), row 1 is not.
const W = [
  [0, 0.5, 0, -0.25, 0.1, 0, 0, 0.7],
  [0.2, 0.3, 0.4, 0, 0, 0, 0, -0.1],
];

test('summarizeLayer reads both storage orientations the same way', () => {
  const outIn = Float32Array.from(W.flat());
  const inOut = new Float32Array(16);
  for (let r = 0; r < 2; r++) for (let c = 0; c < 8; c++) inOut[c * 2 + r] = W[r]![c]!;
  const opts = { name: 'l', gridRows: 2, gridCols: 2, wbits: 4, nm: { n: 2, m: 4 } };
  const a = summarizeLayer({ values: outIn, rows: 2, cols: 8, orientation: 'out-in' }, opts);
  const b = summarizeLayer({ values: inOut, rows: 2, cols: 8, orientation: 'in-out' }, opts);
  assert.deepEqual(a, b);
  assert.equal(a.gridRows, 2);
  assert.equal(a.gridCols, 2);
  // Blocks are 1×4: row 0 → 2/4, 2/4; row 1 → 3/4, 1/4.
  assert.deepEqual(Array.from(a.maskDensity), [0.5, 0.5, 0.75, 0.25]);
  assert.deepEqual(Array.from(a.rowDensity), [0.5, 0.5]);
  assert.deepEqual(Array.from(a.colDensity), [0.5, 1, 0.5, 0.5, 0.5, 0, 0, 1]);
  // Scale = max|w| / 7 per row (no scales given); default row = largest scale (row 0: 0.7).
  assert.ok(Math.abs(a.rowScales[0]! - 0.1) < 1e-7);
  assert.equal(a.row, 0);
  assert.deepEqual(Array.from(a.rowValues), Array.from(Float32Array.from(W[0]!)));
  // 2:4: row 0 both groups valid; row 1 group 0 has one zero → invalid.
  assert.equal(a.nm!.totalGroups, 4);
  assert.equal(a.nm!.validGroups, 3);
  assert.deepEqual(Array.from(a.nm!.validGrid), [1, 1, 0, 1]);
});

test('summarizeLayer uses the report scales and the chosen row, and bounds the grid', () => {
  const values = new Float32Array(100 * 300).fill(1);
  const d = summarizeLayer({ values, rows: 100, cols: 300, orientation: 'out-in' }, { name: 'x', gridRows: 32, gridCols: 64, wbits: 4, row: 7, rowScales: new Array(100).fill(0.5) });
  assert.ok(d.gridRows <= 32 && d.gridCols <= 64);
  assert.equal(d.maskDensity.length, d.gridRows * d.gridCols);
  assert.ok(d.maskDensity.every((x) => x === 1));
  assert.equal(d.row, 7);
  assert.equal(d.rowScales[3], 0.5);
  assert.equal(d.nm, undefined);
});

// W (2×10): groups of 4 columns → 3 groups per row, the last one 2 wide.
const G = [
  [0.1, -0.2, 0, 0.33, 1.0, 0, -0.5, 0.25, 0, 0.04],
  [0.7, 0, 0, -0.7, 0.02, 0.01, 0, 0, 0.3, -0.3],
];

test('summarizeLayer with groups: the chosen row\'s scale, zero point and codes per group from the packed model', () => {
  const values = Float32Array.from(G.flat());
  // scales/zeros rows×groups (2×3), codes rows×cols, as unpackMatMulNBits returns them.
  const scales = [0.05, 0.125, 0.02, 0.1, 0.005, 0.05];
  const zeros = [1, -2, 0, 0, 3, -1];
  const codes = new Int8Array(20);
  for (let r = 0; r < 2; r++) {
    for (let c = 0; c < 10; c++) {
      const g = r * 3 + Math.floor(c / 4);
      codes[r * 10 + c] = Math.max(-8, Math.min(7, Math.round(G[r]![c]! / scales[g]!) + zeros[g]!));
    }
  }
  const d = summarizeLayer(
    { values, rows: 2, cols: 10, orientation: 'out-in' },
    { name: 'l', gridRows: 2, gridCols: 10, wbits: 4, groupSize: 4, asymmetric: true, quantization: { scales, zeros, codes } },
  );
  assert.equal(d.groupSize, 4);
  assert.equal(d.asymmetric, true);
  assert.equal(d.scaleSource, 'packed');
  // Per row: the largest group scale; the default row is the one with the largest (row 0: 0.125).
  assert.deepEqual(Array.from(d.rowScales), [0.125, 0.1].map(Math.fround));
  assert.equal(d.row, 0);
  assert.deepEqual(Array.from(d.rowGroups.scales), [0.05, 0.125, 0.02].map(Math.fround));
  assert.deepEqual(Array.from(d.rowGroups.zeros!), [1, -2, 0]);
  assert.equal(d.rowGroups.codeCounts.length, 3 * 16);
  // Kept weights (w ≠ 0) of row 0 per group, by code (−8 first): the packed codes.
  const counted = (g: number) => {
    const m = new Map<number, number>();
    for (let i = 0; i < 16; i++) if (d.rowGroups.codeCounts[g * 16 + i]) m.set(i - 8, d.rowGroups.codeCounts[g * 16 + i]!);
    return m;
  };
  assert.deepEqual(counted(0), new Map([[3, 1], [-3, 1], [7, 1]])); // 0.1/0.05+1, −0.2/0.05+1, round(0.33/0.05)+1 = 8 clamped to 7
  assert.deepEqual(counted(1), new Map([[6, 1], [-6, 1], [0, 1]])); // 1/0.125−2, −0.5/0.125−2, 0.25/0.125−2
  assert.deepEqual(counted(2), new Map([[2, 1]])); // 0.04/0.02
  // 0.33 is not on its group's grid (code 7, zero 1 → 6·0.05 = 0.3); the others are.
  assert.equal(d.rowGroups.offGrid, 1);

  // Row 1 on request: its own groups.
  const d1 = summarizeLayer(
    { values, rows: 2, cols: 10, orientation: 'out-in' },
    { name: 'l', gridRows: 2, gridCols: 10, wbits: 4, row: 1, groupSize: 4, asymmetric: true, quantization: { scales, zeros, codes } },
  );
  assert.deepEqual(Array.from(d1.rowGroups.scales), [0.1, 0.005, 0.05].map(Math.fround));
  assert.deepEqual(Array.from(d1.rowGroups.zeros!), [0, 3, -1]);
});

test('summarizeLayer with groups but no packed model estimates each group\'s scale from max|w|; per row it uses the report\'s scales and zero points', () => {
  const values = Float32Array.from(G.flat());
  const d = summarizeLayer({ values, rows: 2, cols: 10, orientation: 'out-in' }, { name: 'l', gridRows: 2, gridCols: 10, wbits: 4, groupSize: 4 });
  assert.equal(d.scaleSource, 'estimated');
  assert.equal(d.rowGroups.zeros, undefined);
  assert.deepEqual(Array.from(d.rowGroups.scales), [Math.fround(0.33) / 7, 1.0 / 7, Math.fround(0.04) / 7].map(Math.fround));
  // Per row, asymmetric, scales and zero points from the report: one group per row.
  const r = summarizeLayer(
    { values, rows: 2, cols: 10, orientation: 'out-in' },
    { name: 'l', gridRows: 2, gridCols: 10, wbits: 4, row: 1, asymmetric: true, rowScales: [0.2, 0.1], rowZeros: [0, -1] },
  );
  assert.equal(r.scaleSource, 'report');
  assert.equal(r.groupSize, 0);
  assert.deepEqual(Array.from(r.rowGroups.scales), [Math.fround(0.1)]);
  assert.deepEqual(Array.from(r.rowGroups.zeros!), [-1]);
  // Row 1's kept weights 0.7 −0.7 0.02 0.01 0.3 −0.3 → round(w/0.1) − 1 = 6 −8 −1 −1 2 −4.
  const counts = new Map<number, number>();
  for (let i = 0; i < 16; i++) if (r.rowGroups.codeCounts[i]) counts.set(i - 8, r.rowGroups.codeCounts[i]!);
  assert.deepEqual(counts, new Map([[6, 1], [-8, 1], [-1, 2], [2, 1], [-4, 1]]));
});
