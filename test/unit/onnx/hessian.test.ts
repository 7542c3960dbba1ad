import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as ort from 'onnxruntime-node';
import { addHessianCapture } from '../../../src/onnx/hessian';
import { findLinearLayers, groupLayersByInput } from '../../../src/onnx/linear';
import { encodeModel, DataType, type ModelProto } from '../../../src/onnx/proto';
import { floatTensor, model, node, valueInfo } from '../../../src/onnx/builder';
import { buildLlamaGraph, llamaFeeds } from './llamaGraph';

/** Single-threaded sessions: the suites share two cores with others; results don't depend on it. */
const ONE_THREAD: ort.InferenceSession.SessionOptions = { intraOpNumThreads: 1, interOpNumThreads: 1 };

async function run(m: ModelProto, batch: number, seq: number, vocab: number, pad: number) {
  const s = await ort.InferenceSession.create(encodeModel(m), ONE_THREAD);
  const f = llamaFeeds(batch, seq, vocab, pad);
  const t = (d: BigInt64Array) => new ort.Tensor('int64', d, [batch, seq]);
  const r = await s.run({ input_ids: t(f.ids), attention_mask: t(f.mask), position_ids: t(f.pos) });
  await s.release();
  return { r, mask: f.mask };
}

/** Float64 reference: Σ over unmasked rows of x xᵀ and x², from the activation [rows, n]. */
function reference(x: Float32Array, n: number, mask: BigInt64Array) {
  const xtx = new Float64Array(n * n);
  const sq = new Float64Array(n);
  let count = 0;
  for (let r = 0; r < mask.length; r++) {
    if (mask[r] === 0n) continue;
    count++;
    for (let i = 0; i < n; i++) {
      const xi = x[r * n + i];
      sq[i] += xi * xi;
      for (let j = 0; j < n; j++) xtx[i * n + j] += xi * x[r * n + j];
    }
  }
  return { xtx, sq, count };
}

function assertClose(actual: Float32Array, expected: Float64Array, label: string) {
  let scale = 0;
  for (const v of expected) scale = Math.max(scale, Math.abs(v));
  for (let i = 0; i < expected.length; i++) {
    // fp32 accumulation over ≤ 24 rows: relative 1e-5 of the largest entry is ample.
    assert.ok(Math.abs(actual[i] - expected[i]) <= 1e-5 * scale, `${label}[${i}]: ${actual[i]} vs ${expected[i]}`);
  }
}

for (const weightType of ['float32', 'float16'] as const) {
  test(`XᵀX, Σx² and token count match a float64 computation on the same activations (${weightType}, padded batch)`, async () => {
    const V = 32;
    const m = buildLlamaGraph({ layers: 2, weightType });
    const layers = findLinearLayers(m);
    const cap = addHessianCapture(m, layers, { keepOutputs: true });
    assert.equal(cap.captures.length, groupLayersByInput(layers).length);
    // Expose every captured activation as an extra output to compare with.
    for (const c of cap.captures) cap.model.graph!.output!.push({ name: c.inputName, type: { tensorType: { elemType: DataType.FLOAT } } });
    const { r, mask } = await run(cap.model, 3, 8, V, 3);
    assert.ok(r.logits, 'original outputs kept');
    assert.equal((r[cap.tokenCount].data as Float32Array)[0], 3 * 8 - 3);
    for (const c of cap.captures) {
      const ref = reference(r[c.inputName].data as Float32Array, c.inFeatures, mask);
      assert.deepEqual(r[c.xtx].dims, [c.inFeatures, c.inFeatures]);
      assertClose(r[c.xtx].data as Float32Array, ref.xtx, `${c.inputName} xtx`);
      assertClose(r[c.sumSquares].data as Float32Array, ref.sq, `${c.inputName} Σx²`);
    }
    // The source model is untouched.
    assert.equal(m.graph!.output!.length, 1);
  });
}

test('a subset (one block) captures only that block and prunes everything after it', async () => {
  const m = buildLlamaGraph({ layers: 3 });
  const layers = findLinearLayers(m);
  const block0 = groupLayersByInput(layers).filter((g) => g.block === 0).map((g) => g.inputName);
  const cap = addHessianCapture(m, layers, { inputs: block0 });
  assert.equal(cap.captures.length, 4);
  assert.deepEqual(cap.captures.map((c) => c.layers.length), [3, 1, 2, 1]);
  const names = new Set(cap.model.graph!.node!.map((n) => n.name));
  assert.ok(!names.has('/lm_head/MatMul') && !names.has('/model/layers.1/self_attn/q_proj/MatMul'), 'later blocks pruned');
  assert.ok(!cap.model.graph!.initializer!.some((t) => t.name === 'lm_head.weight'), 'unused weights pruned');
  const { r } = await run(cap.model, 2, 5, 32, 0);
  assert.deepEqual(Object.keys(r).sort(), [...cap.captures.flatMap((c) => [c.xtx, c.sumSquares]), cap.tokenCount].sort());
  assert.equal((r[cap.tokenCount].data as Float32Array)[0], 10);
  assert.throws(() => addHessianCapture(m, layers, { inputs: ['not-a-tensor'] }), /no linear layer reads/);
});

for (const opset of [11, 17]) {
  test(`plain MatMul graph at opset ${opset}: masked and unmasked capture`, async () => {
    const [B, S, n] = [2, 3, 4];
    const m = model({
      name: 'g',
      node: [node('MatMul', ['x', 'w'], ['y'], 'mm')],
      initializer: [floatTensor('w', [n, 2], new Float32Array(n * 2).fill(1))],
      input: [valueInfo('x', DataType.FLOAT, ['b', 's', n]), valueInfo('attention_mask', DataType.INT64, ['b', 's'])],
      output: [valueInfo('y', DataType.FLOAT, ['b', 's', 2])],
    }, opset);
    const layers = findLinearLayers(m);
    const x = Float32Array.from({ length: B * S * n }, (_, i) => (i % 5) - 2);
    const mask = new BigInt64Array([1n, 1n, 0n, 1n, 0n, 0n]);
    const feeds = { x: new ort.Tensor('float32', x, [B, S, n]), attention_mask: new ort.Tensor('int64', mask, [B, S]) };
    for (const maskInput of [undefined, null]) {
      const cap = addHessianCapture(m, layers, { maskInput });
      const s = await ort.InferenceSession.create(encodeModel(cap.model), ONE_THREAD);
      const r = await s.run(feeds);
      await s.release();
      const used = maskInput === null ? new BigInt64Array(B * S).fill(1n) : mask;
      const ref = reference(x, n, used);
      assert.equal((r[cap.tokenCount].data as Float32Array)[0], ref.count);
      assertClose(r[cap.captures[0].xtx].data as Float32Array, ref.xtx, 'xtx');
      assertClose(r[cap.captures[0].sumSquares].data as Float32Array, ref.sq, 'Σx²');
    }
  });
}
