// Rotation on hand-built mini LLaMA graphs (GQA, non-power-of-2 MLP, sizes with no Hadamard), run
// with onnxruntime-node, plus the structured weight algebra against dense float64 references.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { orthogonalMatrix, seededUniform } from '../../../src/core/hadamard';
import { encodeModel } from '../../../src/onnx/proto';
import { rotateCols, rotateModel, rotateRowsT } from '../../../src/onnx/rotate';
import { GraphPatternFormatError } from '../../../src/onnx/rotateGraph';
import { miniLlama, relError, runLogits } from './miniLlama';

const ids = [3, 17, 5, 29, 11, 2, 23, 8, 31, 14, 0, 19];

test('rotateModel keeps the function: GQA, Paley MLP (dense and Kronecker-factored online Hadamard)', async (t) => {
  for (const [label, cfg, maxDenseOnline] of [
    ['GQA 4q/2kv heads, intermediate 24 dense', { vocab: 32, heads: 4, kvHeads: 2, headDim: 4, intermediate: 24, layers: 2, seq: 12 }, 2048],
    ['intermediate 24 = H12 ⊗ H2 factored', { vocab: 32, heads: 4, kvHeads: 2, headDim: 4, intermediate: 24, layers: 2, seq: 12 }, 8],
    ['intermediate 32 = H8 ⊗ H4 factored, opset 18', { vocab: 32, heads: 2, kvHeads: 2, headDim: 8, intermediate: 32, layers: 1, seq: 12, opset: 18 }, 8],
  ] as const) {
    const model = miniLlama(cfg);
    const before = encodeModel(model);
    const r = rotateModel(model, { seed: 3, maxDenseOnline });
    assert.deepEqual(encodeModel(model), before, 'input not mutated');
    assert.deepEqual(r.warnings, []);
    assert.equal(r.rotation.numKvHeads, cfg.kvHeads);
    assert.equal(r.rotation.onlineDown.factored, maxDenseOnline < cfg.intermediate);
    const err = relError(await runLogits(model, ids), await runLogits(r.model, ids));
    t.diagnostic(`${label}: logits rel. error ${err.toExponential(2)}`);
    assert.ok(err < 1e-5, `${label}: ${err}`);
  }
});

test('sizes without a Hadamard fall back to random orthogonal matrices with warnings, still exact', async () => {
  // hidden 6 = 3 heads × 2: no Hadamard of order 6 or 3.
  const model = miniLlama({ vocab: 32, heads: 3, kvHeads: 3, headDim: 2, intermediate: 12, layers: 1, seq: 8 });
  const r = rotateModel(model, { seed: 0 });
  assert.equal(r.rotation.residual.kind, 'random-orthogonal');
  assert.equal(r.rotation.onlineHead?.kind, 'random-orthogonal');
  assert.equal(r.rotation.onlineDown.kind, 'hadamard');
  assert.equal(r.warnings.length, 2);
  assert.match(r.warnings.join('\n'), /hidden size 6 \(residual rotation\): no Hadamard matrix of order 6/);
  const err = relError(await runLogits(model, ids.slice(0, 8)), await runLogits(r.model, ids.slice(0, 8)));
  assert.ok(err < 1e-5, `${err}`);
});

test('rotateModel rejects graphs that are not LLaMA-like with an actionable error', () => {
  const m = miniLlama({ vocab: 16, heads: 2, kvHeads: 2, headDim: 4, intermediate: 12, layers: 1, seq: 8 });
  // lm_head reads the normalized x without the norm's weight Mul: nothing to fold γ from.
  const nodes = m.graph!.node!.filter((n) => n.name !== '/model/norm/Mul');
  const div = m.graph!.node!.find((n) => n.name === '/model/norm/Div')!;
  const lm = nodes.findIndex((n) => n.name === '/lm_head/MatMul');
  nodes[lm] = { ...nodes[lm], input: [div.output![0], nodes[lm].input![1]] };
  const broken = { ...m, graph: { ...m.graph, node: nodes } };
  assert.throws(() => rotateModel(broken, { seed: 0 }), (e: unknown) => e instanceof GraphPatternFormatError && /not a norm output/.test((e as Error).message));
});

/** Dense float64 reference of rotateRowsT: out[(o, k′, i), :] = Σ_k A[k, k′]·w[(o, k, i), :]. */
function denseRowsT(w: Float64Array, cols: number, a: Float64Array, n: number, inner: number, outer: number): Float64Array {
  const out = new Float64Array(w.length);
  for (let o = 0; o < outer; o++)
    for (let i = 0; i < inner; i++)
      for (let kp = 0; kp < n; kp++)
        for (let k = 0; k < n; k++) {
          const f = a[k * n + kp];
          const src = ((o * n + k) * inner + i) * cols;
          const dst = ((o * n + kp) * inner + i) * cols;
          for (let j = 0; j < cols; j++) out[dst + j] += f * w[src + j];
        }
  return out;
}

/** Dense float64 reference of rotateCols: out[:, (o, k′, i)] = Σ_k w[:, (o, k, i)]·A[k, k′]. */
function denseCols(w: Float64Array, rows: number, cols: number, a: Float64Array, n: number, inner: number, outer: number): Float64Array {
  const out = new Float64Array(w.length);
  for (let r = 0; r < rows; r++)
    for (let o = 0; o < outer; o++)
      for (let i = 0; i < inner; i++)
        for (let kp = 0; kp < n; kp++) {
          let s = 0;
          for (let k = 0; k < n; k++) s += w[r * cols + (o * n + k) * inner + i] * a[k * n + kp];
          out[r * cols + (o * n + kp) * inner + i] = s;
        }
  return out;
}

test('structured rotations (signs, FWHT, base mixing) match dense float64 products', () => {
  const rand = seededUniform(9);
  // 8, 64: Sylvester; 12, 24: Paley I; 28·2: Paley II; 52·2, 172: Williamson; 6: random orthogonal.
  for (const n of [8, 64, 12, 24, 56, 104, 172, 6]) {
    for (const randomized of [true, false]) {
      const r = orthogonalMatrix(n, { seed: 5, randomized });
      // 37 columns: more than one 32-wide tile and a partial one.
      for (const [inner, outer, cols, rows] of [[1, 1, 37, 35], [2, 3, 5, 3]] as const) {
        const w = Float64Array.from({ length: outer * n * inner * cols }, () => rand() - 0.5);
        const want = denseRowsT(w, cols, r.matrix, n, inner, outer);
        const got = rotateRowsT(w.slice(), cols, r, inner, outer);
        for (let i = 0; i < w.length; i++) assert.ok(Math.abs(got[i] - want[i]) < 1e-12, `rows n=${n} entry ${i}: ${got[i]} vs ${want[i]}`);
        const wc = Float64Array.from({ length: rows * outer * n * inner }, () => rand() - 0.5);
        const wantC = denseCols(wc, rows, outer * n * inner, r.matrix, n, inner, outer);
        const gotC = rotateCols(wc.slice(), rows, outer * n * inner, r, inner, outer);
        for (let i = 0; i < wc.length; i++) assert.ok(Math.abs(gotC[i] - wantC[i]) < 1e-12, `cols n=${n} entry ${i}`);
        // float32 data: one rounding of the float64 result (relative 2^-24 of each entry's scale).
        const got32 = rotateCols(Float32Array.from(wc), rows, outer * n * inner, r, inner, outer);
        for (let i = 0; i < wc.length; i++) assert.ok(Math.abs(got32[i] - wantC[i]) <= 1e-6 * (1 + Math.abs(wantC[i])), `float32 cols n=${n} entry ${i}`);
      }
    }
  }
  // The dense references themselves: denseRowsT(outer = inner = 1) is Aᵀ·W; denseCols is W·A.
  const a = Float64Array.of(1, 2, 3, 4);
  const w = Float64Array.of(5, 6, 7, 8);
  assert.deepEqual([...denseRowsT(w, 2, a, 2, 1, 1)], [1 * 5 + 3 * 7, 1 * 6 + 3 * 8, 2 * 5 + 4 * 7, 2 * 6 + 4 * 8]);
  assert.deepEqual([...denseCols(w, 2, 2, a, 2, 1, 1)], [5 * 1 + 6 * 3, 5 * 2 + 6 * 4, 7 * 1 + 8 * 3, 7 * 2 + 8 * 4]);
});
