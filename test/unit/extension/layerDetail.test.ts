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
