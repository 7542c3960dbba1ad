import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sparseStorageEstimate } from '../../../src/pipeline/bench/sparse';

test('sparse storage bytes of one 8×16 layer at 50% sparsity, 4-bit, fp32 row scales', () => {
  // 128 weights, 64 non-zero, 8 rows → 32 bytes of scales.
  const e = sparseStorageEstimate([{ rows: 8, cols: 16, sparsity: 0.5, storedBytes: 512 }], 4, 1512);
  assert.equal(e.params, 128);
  assert.equal(e.nonzeros, 64);
  assert.equal(e.denseFp32Bytes, 512);
  assert.equal(e.denseIntBytes, 64 + 32); // 128 × 4 bits
  assert.equal(e.bitmapBytes, 16 + 32 + 32); // 128 bits of bitmap + 64 × 4 bits + scales
  assert.equal(e.twoFourBytes, 48 + 32); // 64 × (4 + 2) bits + scales
  assert.equal(e.csrBytes, 160 + 36 + 32); // 64 × 20 bits + 9 row pointers + scales
  assert.equal(e.restBytes, 1000);
  assert.equal(e.modelBytesBitmap, 1000 + 80);
  assert.equal(e.modelBytesTwoFour, 1000 + 80);
  // At exactly 50% both sparse formats beat dense 4-bit codes by 25% on the codes.
  assert.ok(e.bitmapBytes < e.denseIntBytes && e.twoFourBytes < e.denseIntBytes);
});

test('with groups of 8 and zero points the scales and zero points are counted per group', () => {
  // 8 rows × 2 groups = 16 fp32 scales (64 bytes) + 16 4-bit zero points (8 bytes).
  const e = sparseStorageEstimate([{ rows: 8, cols: 16, sparsity: 0.5, storedBytes: 512 }], 4, 1512, { groupSize: 8, asymmetric: true });
  assert.equal(e.denseIntBytes, 64 + 64 + 8);
  assert.equal(e.bitmapBytes, 16 + 32 + 72);
  // Symmetric groups: scales only.
  assert.equal(sparseStorageEstimate([{ rows: 8, cols: 16, sparsity: 0.5, storedBytes: 512 }], 4, 1512, { groupSize: 8 }).denseIntBytes, 64 + 64);
});
