// A4/KV4 fake quantization on the bundled tiny LLaMA, run with onnxruntime-node: the graph's
// quantizer equals the JS reference, 8 bits is close to dense, and rotation (QuaRot) makes A4KV4
// hurt less.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import * as ort from 'onnxruntime-node';
import { addFakeQuant, fakeQuantGroupF32, type QuantGrid } from '../../../src/onnx/fakeQuant';
import { findLinearLayers } from '../../../src/onnx/linear';
import { parseModel } from '../../../src/onnx/load';
import { DataType, encodeModel, type ModelProto } from '../../../src/onnx/proto';
import { rotateModel } from '../../../src/onnx/rotate';
import { loadTokenizer } from '../../../src/runtime/tokenizer';
import { relError } from '../../unit/onnx/miniLlama';

const dir = join(__dirname, '../../fixtures/models/tiny');
const skip = existsSync(join(dir, 'model.onnx')) ? false : 'tiny fixture model not built';
const load = (name: string) => parseModel(readFileSync(join(dir, name)));

async function session(model: ModelProto): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(encodeModel(model), { intraOpNumThreads: 1, logSeverityLevel: 3 });
}

function feeds(ids: ArrayLike<number>): Record<string, ort.Tensor> {
  const s = ids.length;
  return {
    input_ids: new ort.Tensor('int64', BigInt64Array.from(Array.from(ids, (v) => BigInt(v))), [1, s]),
    attention_mask: new ort.Tensor('int64', new BigInt64Array(s).fill(1n), [1, s]),
    position_ids: new ort.Tensor('int64', BigInt64Array.from({ length: s }, (_, i) => BigInt(i)), [1, s]),
  };
}

function withOutputs(model: ModelProto, names: string[]): ModelProto {
  const graph = model.graph!;
  return { ...model, graph: { ...graph, output: [...(graph.output ?? []), ...names.map((name) => ({ name, type: { tensorType: { elemType: DataType.FLOAT } } }))] } };
}

/** Distance in float32 ulps (0 = bit-identical). */
function ulps(a: number, b: number): number {
  const f = new Float32Array([a, b]);
  const i = new Int32Array(f.buffer);
  const key = (x: number) => (x < 0 ? 0x80000000 - x : x);
  return Math.abs(key(i[0]) - key(i[1]));
}

let textIds: Int32Array | undefined;
async function textTokens(): Promise<Int32Array> {
  if (!textIds) {
    const tok = await loadTokenizer(join(dir, 'tokenizer.json'));
    textIds = tok.encode(readFileSync(join(__dirname, '../../../media/text/sotu-test.txt'), 'utf8').slice(0, 8000));
  }
  return textIds;
}

/** Mean next-token NLL (nats) over `windows` non-overlapping windows of `seqlen` tokens. */
async function meanNll(model: ModelProto, windows: number, seqlen: number): Promise<number> {
  const ids = await textTokens();
  const s = await session(model);
  let total = 0;
  let count = 0;
  for (let w = 0; w < windows; w++) {
    const x = ids.subarray(w * seqlen, (w + 1) * seqlen);
    const out = (await s.run(feeds(x))).logits;
    const vocab = out.dims[2];
    const logits = out.data as Float32Array;
    for (let j = 0; j < seqlen - 1; j++) {
      let mx = -Infinity;
      for (let v = 0; v < vocab; v++) mx = Math.max(mx, logits[j * vocab + v]);
      let z = 0;
      for (let v = 0; v < vocab; v++) z += Math.exp(logits[j * vocab + v] - mx);
      total += Math.log(z) + mx - logits[j * vocab + x[j + 1]];
      count++;
    }
  }
  return total / count;
}

test('abits = kvbits = 16 returns the model unchanged', { skip }, () => {
  const model = load('model.onnx');
  const r = addFakeQuant(model, { abits: 16, kvbits: 16 });
  assert.equal(r.model, model);
  assert.equal(r.quantized.activations.length, 0);
});

test('the graph fake-quant equals the JS reference on captured activations and keys', { skip }, async (t) => {
  const { model: rotated } = rotateModel(load('model.onnx'), { seed: 0 });
  const ids = Array.from((await textTokens()).subarray(0, 64));
  for (const grid of [
    { bits: 4, asymmetric: false, clipRatio: 1 },
    { bits: 4, asymmetric: true, clipRatio: 0.9 },
    { bits: 3, asymmetric: false, clipRatio: 0.85 },
  ] satisfies QuantGrid[]) {
    const r = addFakeQuant(rotated, { abits: grid.bits, kvbits: grid.bits, asymmetric: grid.asymmetric, clipRatio: grid.clipRatio });
    const nodes = r.model.graph!.node!;
    const deq = (prefix: RegExp) => nodes.find((n) => prefix.test(n.name ?? '') && /Dequantize$/.test(n.name ?? ''))!;
    const actNode = deq(/layers\.1\/mlp\/down_proj\/MatMul\/act_quant/);
    const keyNode = deq(/layers\.2\/self_attn\/k_quant/);
    // Pre-quant tensors: the down_proj input after the online Hadamard; the key after RoPE + Hadamard.
    const actIn = findLinearLayers(rotated).find((l) => l.block === 1 && l.role === 'down')!.inputName;
    const keyIn = nodes.find((n) => /layers\.2\/self_attn\/k_hadamard\/MatMul/.test(n.name ?? ''))!.output![0];
    const names = [actIn, actNode.output![0], keyIn, keyNode.output![0]];
    const out = await (await session(withOutputs(r.model, names))).run(feeds(ids));
    // Activations: one group per token, the last axis (384).
    const x = out[actIn].data as Float32Array;
    const y = out[actNode.output![0]].data as Float32Array;
    const ref = Float32Array.from(x);
    for (let tok = 0; tok < x.length / 384; tok++) fakeQuantGroupF32(ref.subarray(tok * 384, (tok + 1) * 384), grid);
    let worst = 0;
    for (let i = 0; i < y.length; i++) worst = Math.max(worst, ulps(y[i], ref[i]));
    // Keys [1, heads = 4, s, 32]: one group per token across heads and head_dim.
    const k = out[keyIn].data as Float32Array;
    const kq = out[keyNode.output![0]].data as Float32Array;
    const [, h, s, d] = out[keyIn].dims;
    let worstK = 0;
    const g = new Float32Array(h * d);
    for (let tok = 0; tok < s; tok++) {
      for (let hh = 0; hh < h; hh++) for (let j = 0; j < d; j++) g[hh * d + j] = k[(hh * s + tok) * d + j];
      fakeQuantGroupF32(g, grid);
      for (let hh = 0; hh < h; hh++) for (let j = 0; j < d; j++) worstK = Math.max(worstK, ulps(g[hh * d + j], kq[(hh * s + tok) * d + j]));
    }
    t.diagnostic(`${grid.bits}-bit ${grid.asymmetric ? 'asym' : 'sym'} clip ${grid.clipRatio}: worst ulps activation ${worst}, key ${worstK}`);
    assert.ok(worst <= 1 && worstK <= 1, `graph vs reference: ${worst} / ${worstK} ulps`);
  }
});

test('A8/KV8 logits stay close to dense; A4KV4 on model_with_past quantizes the cache', { skip }, async (t) => {
  const model = load('model.onnx');
  const ids = Array.from((await textTokens()).subarray(0, 96));
  const dense = (await (await session(model)).run(feeds(ids))).logits.data as Float32Array;
  const q8 = (await (await session(addFakeQuant(model, { abits: 8, kvbits: 8 }).model)).run(feeds(ids))).logits.data as Float32Array;
  const err = relError(dense, q8);
  t.diagnostic(`A8KV8 logits relative error vs dense: ${err.toExponential(2)}`);
  assert.ok(err < 0.05, `A8KV8 error ${err}`);

  const past = addFakeQuant(rotateModel(load('model_with_past.onnx'), { seed: 0 }).model, { abits: 4, kvbits: 4 });
  assert.equal(past.quantized.keys, 4);
  assert.equal(past.quantized.values, 4);
  const f: Record<string, ort.Tensor> = feeds(ids.slice(0, 16));
  for (let i = 0; i < 4; i++) for (const kv of ['key', 'value']) f[`past_key_values.${i}.${kv}`] = new ort.Tensor('float32', new Float32Array(0), [1, 4, 0, 32]);
  const out = await (await session(past.model)).run(f);
  // present.0.value [1, 4, 16, 32]: per token, at most 2^4 distinct levels across heads × head_dim.
  const v = out['present.0.value'].data as Float32Array;
  for (let tok = 0; tok < 16; tok++) {
    const levels = new Set<number>();
    for (let h = 0; h < 4; h++) for (let j = 0; j < 32; j++) levels.add(v[(h * 16 + tok) * 32 + j]);
    assert.ok(levels.size <= 16, `token ${tok}: ${levels.size} levels`);
  }
  assert.ok((out.logits.data as Float32Array).every(Number.isFinite));

  // fp16 weights (+ Cast to fp32 activations): the quantizer constants follow the activation type.
  const fp16 = addFakeQuant(rotateModel(load('model.fp16.onnx'), { seed: 0 }).model, { abits: 4, kvbits: 4 });
  const logits16 = (await (await session(fp16.model)).run(feeds(ids))).logits.data as Float32Array;
  assert.ok(logits16.every(Number.isFinite));
});

test('NLL: A4KV4 is worse than dense, and rotation makes it less so (the QuaRot claim)', { skip }, async (t) => {
  const model = load('model.onnx');
  const { model: rotated } = rotateModel(model, { seed: 0 });
  const windows = 4;
  const seqlen = 128;
  const dense = await meanNll(model, windows, seqlen);
  const plain = await meanNll(addFakeQuant(model, { abits: 4, kvbits: 4, qkHadamard: false }).model, windows, seqlen);
  const quarot = await meanNll(addFakeQuant(rotated, { abits: 4, kvbits: 4 }).model, windows, seqlen);
  t.diagnostic(`mean NLL on ${windows}×${seqlen} tokens of sotu-test: dense ${dense.toFixed(4)}, A4KV4 ${plain.toFixed(4)}, rotated+A4KV4 ${quarot.toFixed(4)}`);
  assert.ok(Number.isFinite(plain) && Number.isFinite(quarot));
  assert.ok(plain > dense, 'A4KV4 costs accuracy');
  assert.ok(quarot < plain, 'rotation makes A4KV4 cost less');
});
