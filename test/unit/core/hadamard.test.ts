import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  HadamardError,
  hadamardMatrix,
  hadamardPlan,
  hasHadamard,
  orthogonalMatrix,
  randomHadamard,
  randomOrthogonal,
  rotateVectors,
  seededUniform,
} from '../../../src/core/hadamard';

/** max |Q Qᵀ − I| over all entries (float64). */
function orthogonalityError(q: Float64Array, n: number): number {
  let worst = 0;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let k = 0; k < n; k++) s += q[i * n + k] * q[j * n + k];
      worst = Math.max(worst, Math.abs(s - (i === j ? 1 : 0)));
    }
  }
  return worst;
}

test('Hadamard matrices of the supported orders are orthogonal with entries ±1/√n', () => {
  // 2^k, Paley I bases (4, 8, 12, 20, 24, 44, 60), Paley II bases (12, 28, 36, 76, 148) and products.
  const sizes = [1, 2, 4, 8, 12, 20, 24, 28, 36, 40, 44, 56, 60, 72, 76, 96, 120, 128, 148, 160, 176, 224, 384, 640];
  for (const n of sizes) {
    assert.ok(hasHadamard(n), `size ${n} supported`);
    const h = hadamardMatrix(n);
    assert.equal(h.length, n * n);
    const e = 1 / Math.sqrt(n);
    for (let i = 0; i < h.length; i++) assert.ok(Math.abs(Math.abs(h[i]) - e) < 1e-15, `size ${n} entry ${i}`);
    assert.ok(orthogonalityError(h, n) < 1e-12, `size ${n} orthogonal`);
  }
});

test('hadamardPlan names the construction and rejects unsupported orders', () => {
  assert.deepEqual(hadamardPlan(384), { n: 384, base: 12, baseKind: 'paley-1', power: 32 });
  assert.deepEqual(hadamardPlan(640), { n: 640, base: 20, baseKind: 'paley-1', power: 32 });
  assert.deepEqual(hadamardPlan(14336), { n: 14336, base: 28, baseKind: 'paley-2', power: 512 });
  // Llama-2-7B's 11008 = 172·64: Williamson 172 ⊗ Sylvester 64, as QuaRot's had172 (not Paley I 5504 ⊗ 2).
  assert.deepEqual(hadamardPlan(11008), { n: 11008, base: 172, baseKind: 'williamson', power: 64 });
  assert.deepEqual(hadamardPlan(128), { n: 128, base: 1, baseKind: 'sylvester', power: 128 });
  assert.deepEqual(hadamardPlan(416), { n: 416, base: 52, baseKind: 'williamson', power: 8 });
  for (const n of [3, 5, 6, 14, 188, 376]) {
    assert.equal(hadamardPlan(n), null, `size ${n}`);
    assert.throws(() => hadamardMatrix(n), HadamardError);
  }
});

test("QuaRot's Hadamard sizes (12 … 172) and their products with 2^k: ±1 entries, H·Hᵀ = n·I, named constructions", () => {
  const expected: Record<number, string> = {
    12: 'paley-1', 20: 'paley-1', 28: 'paley-2', 36: 'paley-2', 40: 'paley-1', 52: 'williamson', 60: 'paley-1',
    76: 'paley-2', 108: 'paley-1', 140: 'paley-1', 148: 'paley-2', 156: 'williamson', 172: 'williamson',
  };
  for (const [size, kind] of Object.entries(expected)) {
    const base = Number(size);
    for (const power of [1, 2, 4]) {
      const n = base * power;
      const plan = hadamardPlan(n)!;
      assert.ok(plan, `size ${n}`);
      // 40 = 20·2 is Paley I 20 ⊗ Sylvester 2; every other QuaRot base is its own base.
      assert.equal(plan.baseKind, kind, `size ${n}`);
      assert.equal(plan.base * plan.power, n);
      const h = hadamardMatrix(n);
      // Unnormalized H = √n·h must be ±1 with H·Hᵀ = n·I exactly (integer arithmetic in float64).
      const root = Math.sqrt(n);
      for (let i = 0; i < h.length; i++) assert.ok(Math.abs(Math.abs(h[i] * root) - 1) < 1e-12, `size ${n} entry ${i}`);
      assert.ok(orthogonalityError(h, n) < 1e-12, `size ${n} orthogonal`);
    }
  }
  // FF widths of common models: Llama-2-7B 11008 = 172·64, Llama-2-13B 13824 = 108·128, Qwen2.5-0.5B 4864 = 76·64.
  for (const [n, base] of [[11008, 172], [13824, 108], [4864, 76], [896, 28]] as const) assert.equal(hadamardPlan(n)!.base, base, `size ${n}`);
});

test('randomHadamard is diag(±1)·H, orthogonal and deterministic by seed', () => {
  const n = 48;
  const h = hadamardMatrix(n);
  const a = randomHadamard(n, 0);
  const b = randomHadamard(n, 0);
  const c = randomHadamard(n, 1);
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
  assert.ok(orthogonalityError(a, n) < 1e-12);
  let flipped = 0;
  for (let i = 0; i < n; i++) {
    const sign = a[i * n] / h[i * n];
    if (sign < 0) flipped++;
    for (let j = 0; j < n; j++) assert.equal(a[i * n + j], sign * h[i * n + j]);
  }
  assert.ok(flipped > 5 && flipped < n - 5, `about half the rows flipped (${flipped}/${n})`);
});

test('randomOrthogonal is orthogonal and deterministic; orthogonalMatrix warns only for the fallback', () => {
  const q = randomOrthogonal(52, 7);
  assert.ok(orthogonalityError(q, 52) < 1e-12);
  assert.deepEqual(q, randomOrthogonal(52, 7));
  assert.notDeepEqual(q, randomOrthogonal(52, 8));
  const fallback = orthogonalMatrix(14, { seed: 7, randomized: true });
  assert.equal(fallback.kind, 'random-orthogonal');
  assert.match(fallback.warning ?? '', /no Hadamard construction for size 14/);
  const had = orthogonalMatrix(384, { seed: 7, randomized: false });
  assert.equal(had.kind, 'hadamard');
  assert.equal(had.warning, undefined);
  assert.deepEqual(had.matrix, hadamardMatrix(384));
});

test('rotateVectors (FWHT + base mixing) equals the dense product at TinyLlama sizes: hidden 2048, FF 5632 = 44·128, head 64', () => {
  const rand = seededUniform(21);
  for (const [n, randomized] of [[2048, true], [5632, false], [64, false], [172 * 4, true]] as const) {
    const r = orthogonalMatrix(n, { seed: 3, randomized });
    const q = r.matrix;
    const count = 3;
    const x = Float64Array.from({ length: count * n }, () => rand() - 0.5);
    const got = x.slice();
    rotateVectors(r, got, { offset: 0, stride: 1, count, step: n });
    let worst = 0;
    for (let v = 0; v < count; v++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let k = 0; k < n; k++) s += x[v * n + k] * q[k * n + j];
        worst = Math.max(worst, Math.abs(s - got[v * n + j]));
      }
    }
    // Entries are O(0.3); float64 rounding of O(n) terms.
    assert.ok(worst < 1e-13, `n=${n}: max |fast − dense| = ${worst}`);
  }
});
