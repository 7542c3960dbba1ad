import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as ort from 'onnxruntime-node';
import { packMatMulNBits, unpackMatMulNBits, type QuantizedLayer } from '../../../src/onnx/packed';
import { findLinearLayers } from '../../../src/onnx/linear';
import { wrapModel } from '../../../src/onnx/load';
import { readLayerWeight, replaceLayerWeights } from '../../../src/onnx/weights';
import { encodeModel, DataType, type ModelProto } from '../../../src/onnx/proto';
import { floatTensor, model, node, valueInfo } from '../../../src/onnx/builder';
import { ModelWriteInputError } from '../../../src/onnx/errors';
import { buildLlamaGraph, llamaFeeds, rng } from './llamaGraph';
import { dequantize, quantizeRtn } from './quantHelpers';

/** Single-threaded sessions: the suites share two cores with others; results don't depend on it. */
const ONE_THREAD: ort.InferenceSession.SessionOptions = { intraOpNumThreads: 1, interOpNumThreads: 1 };

async function logits(m: ModelProto, batch = 2, seq = 6, vocab = 32): Promise<Float32Array> {
  const s = await ort.InferenceSession.create(encodeModel(m), ONE_THREAD);
  const f = llamaFeeds(batch, seq, vocab, 0, 5);
  const t = (d: BigInt64Array) => new ort.Tensor('int64', d, [batch, seq]);
  const r = await s.run({ input_ids: t(f.ids), attention_mask: t(f.mask), position_ids: t(f.pos) });
  await s.release();
  return r.logits.data as Float32Array;
}

for (const [bits, K, blockSize] of [[4, 80, 32], [4, 64, 64], [8, 48, 16], [2, 32, 16]] as const) {
  test(`dequantized weights are exactly scale·code, pruned ones exactly 0 (${bits}-bit, K=${K}, block ${blockSize})`, async () => {
    const N = 5;
    const rand = rng(K + bits);
    const m = model({
      name: 'g',
      node: [node('MatMul', ['x', 'w'], ['y'], 'mm')],
      initializer: [floatTensor('w', [K, N], new Float32Array(K * N))],
      input: [valueInfo('x', DataType.FLOAT, ['m', K])],
      output: [valueInfo('y', DataType.FLOAT, ['m', N])],
    });
    const [layer] = findLinearLayers(m);
    const lo = -(1 << (bits - 1));
    const codes = new Int8Array(N * K).map(() => (rand() < 0.5 ? 0 : lo + Math.floor(rand() * (1 << bits))));
    const q: QuantizedLayer = { codes, scales: Float32Array.from({ length: N }, () => 0.01 + rand()), bits };
    const packed = packMatMulNBits(m, [layer], new Map([[layer.name, q]]), { blockSize });
    assert.ok(!packed.model.graph!.initializer!.some((t) => t.name === 'w'), 'float weight dropped');
    // Feeding the identity I_K reads dequant(B)ᵀ back: y[k, n] = W[n, k].
    const s = await ort.InferenceSession.create(encodeModel(packed.model), ONE_THREAD);
    const eye = new Float32Array(K * K);
    for (let k = 0; k < K; k++) eye[k * K + k] = 1;
    const y = (await s.run({ x: new ort.Tensor('float32', eye, [K, K]) })).y.data as Float32Array;
    await s.release();
    for (let n = 0; n < N; n++) {
      for (let k = 0; k < K; k++) {
        const code = codes[n * K + k];
        const got = y[k * N + n];
        if (code === 0) assert.equal(got, 0, `pruned (${n},${k}) decodes to ${got}`);
        else assert.equal(got, Math.fround(q.scales[n] * code), `(${n},${k})`);
      }
    }
    const blocks = Math.ceil(K / blockSize);
    assert.equal(packed.packedBytes, N * blocks * (blockSize * bits) / 8 + N * blocks * 4 + N * Math.ceil((blocks * bits) / 8));
  });
}

for (const weightType of ['float32', 'float16'] as const) {
  test(`packed LLaMA graph matches the fake-quant model within float tolerance (${weightType}, 50% pruned, 4-bit)`, async () => {
    const m = buildLlamaGraph({ layers: 2, weightType, transposedWeights: weightType === 'float16' });
    const layers = findLinearLayers(m);
    const loaded = wrapModel(m);
    const quantized = new Map<string, QuantizedLayer>();
    const fake = new Map<string, Float32Array>();
    for (const l of layers) {
      const w = await readLayerWeight(loaded, l);
      const q = quantizeRtn(w, l.outFeatures, l.inFeatures);
      quantized.set(l.name, q);
      fake.set(l.name, dequantize(q, l.outFeatures, l.inFeatures));
    }
    // fp16 storage can't hold scale·code exactly: the fake-quant reference is the same graph (same
    // seed, same non-linear weights) with float32 weight storage.
    const reference = weightType === 'float32' ? m : buildLlamaGraph({ layers: 2, transposedWeights: true });
    const fakeModel = replaceLayerWeights(reference, findLinearLayers(reference), fake);
    const packed = packMatMulNBits(m, layers, quantized, { blockSize: 32 });
    assert.equal(packed.layers.length, layers.length);
    assert.ok(packed.model.graph!.node!.filter((n) => n.opType === 'MatMulNBits').length === layers.length);
    assert.ok(!packed.model.graph!.node!.some((n) => n.opType === 'Cast' && n.input![0].endsWith('.weight')), 'weight Casts pruned');
    const a = await logits(fakeModel);
    const b = await logits(packed.model);
    let maxAbs = 0;
    let maxDiff = 0;
    for (let i = 0; i < a.length; i++) {
      maxAbs = Math.max(maxAbs, Math.abs(a[i]));
      maxDiff = Math.max(maxDiff, Math.abs(a[i] - b[i]));
    }
    assert.ok(maxDiff <= 1e-4 * Math.max(1, maxAbs), `max |Δlogit| ${maxDiff} (max |logit| ${maxAbs})`);
  });
}

test('Gemm (transB=1, bias) becomes MatMulNBits + Add', async () => {
  const [K, N] = [32, 3];
  const m = model({
    name: 'g',
    node: [node('Gemm', ['x', 'w', 'bias'], ['y'], 'fc', [{ name: 'transB', type: 2, i: 1 }])],
    initializer: [floatTensor('w', [N, K], new Float32Array(N * K)), floatTensor('bias', [N], [1, 2, 3])],
    input: [valueInfo('x', DataType.FLOAT, ['m', K])],
    output: [valueInfo('y', DataType.FLOAT, ['m', N])],
  });
  const [layer] = findLinearLayers(m);
  assert.equal(layer.orientation, 'out-in');
  const codes = new Int8Array(N * K).map((_, i) => (i % 5) - 2);
  const packed = packMatMulNBits(m, [layer], new Map([[layer.name, { codes, scales: new Float32Array([0.5, 1, 2]), bits: 4 }]]), { blockSize: 32 });
  assert.deepEqual(packed.model.graph!.node!.map((n) => n.opType), ['MatMulNBits', 'Add']);
  const s = await ort.InferenceSession.create(encodeModel(packed.model), ONE_THREAD);
  const y = (await s.run({ x: new ort.Tensor('float32', new Float32Array(K).fill(1), [1, K]) })).y.data as Float32Array;
  await s.release();
  const scales = [0.5, 1, 2];
  for (let n = 0; n < N; n++) {
    let sum = 0;
    for (let k = 0; k < K; k++) sum += codes[n * K + k] * scales[n];
    assert.equal(y[n], sum + n + 1);
  }
});

test('codes outside the bit range and wrong sizes are refused', () => {
  const m = buildLlamaGraph({ layers: 1 });
  const layers = findLinearLayers(m);
  const l = layers[0];
  const bad = { codes: new Int8Array(l.inFeatures * l.outFeatures).fill(9), scales: new Float32Array(l.outFeatures), bits: 4 };
  assert.throws(() => packMatMulNBits(m, layers, new Map([[l.name, bad]]), { blockSize: 32 }), ModelWriteInputError);
  const short = { codes: new Int8Array(3), scales: new Float32Array(l.outFeatures), bits: 4 };
  assert.throws(() => packMatMulNBits(m, layers, new Map([[l.name, short]]), { blockSize: 32 }), ModelWriteInputError);
});

for (const [K, groupSize, asymmetric] of [[80, 32, true], [80, 32, false], [64, 64, true], [48, 0, true]] as const) {
  test(`per-group dequantization is exactly scale_g·(code − zero_g), the last partial group too (K=${K}, ${groupSize ? `g${groupSize}` : 'per row'}, ${asymmetric ? 'asymmetric' : 'symmetric'})`, async () => {
    const N = 3;
    const bits = 4;
    const rand = rng(K * 7 + groupSize + Number(asymmetric));
    const groups = groupSize ? Math.ceil(K / groupSize) : 1;
    const width = groupSize || K;
    const m = model({
      name: 'g',
      node: [node('MatMul', ['x', 'w'], ['y'], 'mm')],
      initializer: [floatTensor('w', [K, N], new Float32Array(K * N))],
      input: [valueInfo('x', DataType.FLOAT, ['m', K])],
      output: [valueInfo('y', DataType.FLOAT, ['m', N])],
    });
    const [layer] = findLinearLayers(m);
    const codes = new Int8Array(N * K).map(() => -8 + Math.floor(rand() * 16));
    const scales = Float32Array.from({ length: N * groups }, () => 0.01 + rand());
    const zeros = asymmetric ? Float64Array.from({ length: N * groups }, () => -8 + Math.floor(rand() * 16)) : undefined;
    const q: QuantizedLayer = { codes, scales, ...(zeros ? { zeros } : {}), groupSize, bits };
    const blockSize = groupSize || 16;
    const packed = packMatMulNBits(m, [layer], new Map([[layer.name, q]]), { blockSize });
    const s = await ort.InferenceSession.create(encodeModel(packed.model), ONE_THREAD);
    const eye = new Float32Array(K * K);
    for (let k = 0; k < K; k++) eye[k * K + k] = 1;
    const y = (await s.run({ x: new ort.Tensor('float32', eye, [K, K]) })).y.data as Float32Array;
    await s.release();
    for (let n = 0; n < N; n++) {
      for (let k = 0; k < K; k++) {
        const g = n * groups + Math.floor(k / width);
        assert.equal(y[k * N + n], Math.fround(scales[g]! * (codes[n * K + k]! - (zeros ? zeros[g]! : 0))), `(${n},${k})`);
      }
    }
    // Read back through the packed model's initializers: the same codes, scales and zero points.
    const u = (await unpackMatMulNBits(wrapModel(packed.model), 'mm'))!;
    assert.deepEqual(u.codes, codes);
    const blocks = Math.ceil(K / blockSize);
    for (let n = 0; n < N; n++) {
      for (let blk = 0; blk < blocks; blk++) {
        const g = n * groups + (groupSize ? blk : 0);
        assert.equal(u.scales[n * blocks + blk], scales[g]);
        assert.equal(u.zeros[n * blocks + blk], zeros ? zeros[g] : 0);
      }
    }
  });
}

test('zero points outside the code range, or scales of the wrong count, are refused', () => {
  const m = buildLlamaGraph({ layers: 1, hidden: 32 });
  const layers = findLinearLayers(m);
  const l = layers[0];
  const g = 16;
  const groups = Math.ceil(l.inFeatures / g);
  assert.ok(groups > 1, `${l.inFeatures} columns: several groups of ${g}`);
  const codes = new Int8Array(l.inFeatures * l.outFeatures);
  const zeros = new Float64Array(l.outFeatures * groups).fill(8);
  assert.throws(() => packMatMulNBits(m, layers, new Map([[l.name, { codes, scales: new Float32Array(l.outFeatures * groups).fill(1), zeros, groupSize: g, bits: 4 }]]), { blockSize: 16 }), /zero point 8/);
  assert.throws(() => packMatMulNBits(m, layers, new Map([[l.name, { codes, scales: new Float32Array(l.outFeatures).fill(1), groupSize: g, bits: 4 }]]), { blockSize: 16 }), /scales/);
});
