// Fake quantization: the JS reference quantizer, option checks, and the transform on hand-built
// mini LLaMA graphs (GQA, opset 17 and 18) run with onnxruntime-node.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { addFakeQuant, fakeQuantGroupF32, roundHalfEven } from '../../../src/onnx/fakeQuant';
import { ModelWriteInputError } from '../../../src/onnx/errors';
import { rotateModel } from '../../../src/onnx/rotate';
import { miniLlama, relError, runLogits } from './miniLlama';

const ids = [3, 17, 5, 29, 11, 2, 23, 8, 31, 14, 0, 19];
const gqa = { vocab: 32, heads: 4, kvHeads: 2, headDim: 4, intermediate: 24, layers: 2, seq: 12 };

test('roundHalfEven rounds ties to even like ONNX Round and torch.round', () => {
  assert.deepEqual([-3.5, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 2.4, -2.6].map(roundHalfEven), [-4, -2, -2, -0, 0, 2, 2, 4, 2, -3]);
});

test('fakeQuantGroupF32: symmetric 4-bit grid, all-zero groups, asymmetric range', () => {
  const x = Float32Array.of(0.7, -1.4, 0.05, 0.33, -0.2, 1.1);
  const y = Float32Array.from(x);
  fakeQuantGroupF32(y, { bits: 4, asymmetric: false, clipRatio: 1 });
  const s = Math.fround(Math.fround(1.4) / 7);
  for (let i = 0; i < x.length; i++) {
    const q = y[i] / s;
    assert.ok(Math.abs(q - Math.round(q)) < 1e-5 && q >= -8 && q <= 7, `on the grid: ${q}`);
    assert.ok(Math.abs(y[i] - x[i]) <= s / 2 + 1e-7, 'within half a step');
  }
  assert.equal(y[1], Math.fround(-7 * s)); // the max-magnitude entry is exact up to the scale
  const zeros = new Float32Array(4);
  fakeQuantGroupF32(zeros, { bits: 4, asymmetric: false, clipRatio: 1 });
  assert.deepEqual([...zeros], [0, 0, 0, 0]);
  const a = Float32Array.of(0.1, 0.9, 0.5, 0.2);
  fakeQuantGroupF32(a, { bits: 4, asymmetric: true, clipRatio: 1 });
  const step = 0.9 / 15;
  a.forEach((v, i) => assert.ok(Math.abs(v - [0.1, 0.9, 0.5, 0.2][i]) <= step / 2 + 1e-6));
});

test('addFakeQuant validates its options', () => {
  const m = miniLlama(gqa);
  for (const bad of [{ abits: 1, kvbits: 4 }, { abits: 4, kvbits: 17 }, { abits: 4.5, kvbits: 4 }, { abits: 4, kvbits: 4, clipRatio: 0 }, { abits: 4, kvbits: 4, clipRatio: 1.2 }]) {
    assert.throws(() => addFakeQuant(m, bad), ModelWriteInputError, JSON.stringify(bad));
  }
});

test('addFakeQuant on mini LLaMA graphs: layout, exact q/k Hadamard, 8-bit close to dense', async (t) => {
  for (const opset of [17, 18]) {
    const model = miniLlama({ ...gqa, opset });
    const dense = await runLogits(model, ids);
    const r = addFakeQuant(model, { abits: 4, kvbits: 4 });
    // Per block: the q/k/v input, o, gate/up and down inputs; lm_head stays dense.
    assert.equal(r.quantized.activations.length, 4 * gqa.layers);
    assert.ok(r.quantized.activations.every((a) => !a.roles.includes('lm_head')));
    assert.equal(r.quantized.keys, gqa.layers);
    assert.equal(r.quantized.values, gqa.layers);
    assert.ok(r.model.graph!.node!.some((n) => /k_hadamard/.test(n.name ?? '')));
    const q4 = await runLogits(r.model, ids);
    assert.ok(q4.every(Number.isFinite));
    // 15-bit K/V only: the q/k Hadamard is exact, so only ~2^-14 quantization noise remains.
    const kv15 = await runLogits(addFakeQuant(model, { abits: 16, kvbits: 15 }).model, ids);
    const a8 = await runLogits(addFakeQuant(model, { abits: 8, kvbits: 8, kvGroup: 'head', asymmetric: true }).model, ids);
    const e15 = relError(dense, kv15);
    const e8 = relError(dense, a8);
    const e4 = relError(dense, q4);
    t.diagnostic(`opset ${opset}: logits rel. error KV15 ${e15.toExponential(2)}, A8KV8 asym/head ${e8.toExponential(2)}, A4KV4 ${e4.toExponential(2)}`);
    assert.ok(e15 < 1e-3 && e8 < 3e-2 && e8 < e4);
  }
});

test('rotated + A4KV4 mini model runs and the input models are not mutated', async () => {
  const model = miniLlama(gqa);
  const rotated = rotateModel(model, { seed: 0 }).model;
  const nodesBefore = rotated.graph!.node!.length;
  const r = addFakeQuant(rotated, { abits: 4, kvbits: 4, clipRatio: 0.9 });
  assert.equal(rotated.graph!.node!.length, nodesBefore);
  assert.ok((await runLogits(r.model, ids)).every(Number.isFinite));
  // Neither transform stacks on itself.
  assert.throws(() => addFakeQuant(r.model, { abits: 4, kvbits: 4 }), ModelWriteInputError);
  assert.throws(() => rotateModel(rotated, { seed: 0 }), ModelWriteInputError);
});
