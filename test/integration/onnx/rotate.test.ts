// QuaRot rotation on the bundled tiny LLaMA: the rotated graph computes the same function
// (onnxruntime-node, fp32) and its linear-layer inputs have smaller outliers.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import * as ort from 'onnxruntime-node';
import { findLinearLayers } from '../../../src/onnx/linear';
import { ModelFormatError } from '../../../src/onnx/errors';
import { loadModel, parseModel } from '../../../src/onnx/load';
import { isExternal } from '../../../src/onnx/tensor';
import { DataType, encodeModel, type ModelProto } from '../../../src/onnx/proto';
import { rotateModel, rotationOf } from '../../../src/onnx/rotate';
import { loadTokenizer } from '../../../src/runtime/tokenizer';
import { relError } from '../../unit/onnx/miniLlama';

const dir = join(__dirname, '../../fixtures/models/tiny');
const skip = existsSync(join(dir, 'model.onnx')) ? false : 'tiny fixture model not built';
const load = (name: string) => parseModel(readFileSync(join(dir, name)));

async function session(model: ModelProto): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(encodeModel(model), { intraOpNumThreads: 1, logSeverityLevel: 3 });
}

/** input_ids/attention_mask/position_ids for one row of tokens starting at position `start`. */
function feeds(ids: ArrayLike<number>, start = 0, total = start + ids.length): Record<string, ort.Tensor> {
  const s = ids.length;
  return {
    input_ids: new ort.Tensor('int64', BigInt64Array.from(Array.from(ids, (v) => BigInt(v))), [1, s]),
    attention_mask: new ort.Tensor('int64', new BigInt64Array(total).fill(1n), [1, total]),
    position_ids: new ort.Tensor('int64', BigInt64Array.from({ length: s }, (_, i) => BigInt(start + i)), [1, s]),
  };
}

/** The same model with extra graph outputs (type float, shape left to inference). */
function withOutputs(model: ModelProto, names: string[]): ModelProto {
  const graph = model.graph!;
  return { ...model, graph: { ...graph, output: [...(graph.output ?? []), ...names.map((name) => ({ name, type: { tensorType: { elemType: DataType.FLOAT } } }))] } };
}

/** Mean over tokens of max|x| / rms(x) on the last axis (a kurtosis-like outlier ratio; √n at worst). */
function outlierRatio(x: Float32Array, n: number): number {
  let sum = 0;
  const tokens = x.length / n;
  for (let t = 0; t < tokens; t++) {
    let mx = 0;
    let ss = 0;
    for (let i = 0; i < n; i++) {
      const v = x[t * n + i];
      mx = Math.max(mx, Math.abs(v));
      ss += v * v;
    }
    sum += mx / Math.sqrt(ss / n + 1e-30);
  }
  return sum / tokens;
}

let textIds: Int32Array | undefined;
async function textTokens(count: number): Promise<number[]> {
  if (!textIds) {
    const tok = await loadTokenizer(join(dir, 'tokenizer.json'));
    textIds = tok.encode(readFileSync(join(__dirname, '../../../media/text/sotu-test.txt'), 'utf8').slice(0, 8000));
  }
  return Array.from(textIds.subarray(0, count));
}

test('rotated tiny model: same logits as the original in fp32', { skip }, async (t) => {
  const model = load('model.onnx');
  const before = encodeModel(model);
  const { model: rotated, warnings, rotation } = rotateModel(model, { seed: 0 });
  assert.deepEqual(encodeModel(model), before, 'rotateModel must not mutate its input');
  assert.deepEqual(warnings, []);
  assert.equal(rotation.hidden, 128);
  assert.equal(rotation.intermediate, 384);
  assert.equal(rotation.headDim, 32);
  assert.equal(rotation.numHeads, 4);
  assert.equal(rotation.normsFolded, 9);
  assert.equal(rotation.onlineDown.construction, 'paley-1 12 ⊗ sylvester 32');
  assert.equal(rotation.embeddingMeanCentred, false);
  assert.deepEqual(rotationOf(rotated), rotation);
  // Every norm weight is now ones.
  for (const init of rotated.graph!.initializer ?? []) {
    if (!/norm\.weight$/.test(init.name ?? '')) continue;
    const v = new Float32Array(Uint8Array.from(init.rawData!).buffer);
    assert.ok(v.every((x) => x === 1), `${init.name} folded`);
  }
  // Linear-layer discovery still sees 4 × 7 + 1 layers (online Hadamards are not layers).
  assert.equal(findLinearLayers(rotated).length, 29);

  const ids = await textTokens(96);
  const a = (await (await session(model)).run(feeds(ids))).logits.data as Float32Array;
  const b = (await (await session(rotated)).run(feeds(ids))).logits.data as Float32Array;
  const err = relError(a, b);
  t.diagnostic(`fp32 logits relative error after rotation: ${err.toExponential(2)}`);
  assert.ok(err < 1e-4, `relative error ${err}`);
});

test('rotated model_with_past: two decoding steps through the KV cache match the original', { skip }, async (t) => {
  const model = load('model_with_past.onnx');
  const { model: rotated } = rotateModel(model, { seed: 1 });
  const ids = await textTokens(48);
  const layers = 4;
  const emptyPast = (): Record<string, ort.Tensor> => {
    const f: Record<string, ort.Tensor> = {};
    for (let i = 0; i < layers; i++) for (const kv of ['key', 'value']) f[`past_key_values.${i}.${kv}`] = new ort.Tensor('float32', new Float32Array(0), [1, 4, 0, 32]);
    return f;
  };
  const twoSteps = async (m: ModelProto) => {
    const s = await session(m);
    const first = await s.run({ ...feeds(ids.slice(0, 40)), ...emptyPast() });
    const past: Record<string, ort.Tensor> = {};
    for (let i = 0; i < layers; i++) for (const kv of ['key', 'value']) past[`past_key_values.${i}.${kv}`] = first[`present.${i}.${kv}`];
    const second = await s.run({ ...feeds(ids.slice(40), 40, 48), ...past });
    return { first, second };
  };
  const a = await twoSteps(model);
  const b = await twoSteps(rotated);
  const e1 = relError(a.first.logits.data as Float32Array, b.first.logits.data as Float32Array);
  const e2 = relError(a.second.logits.data as Float32Array, b.second.logits.data as Float32Array);
  // Keys are untouched by the rotation (q/k see the same inputs); values carry the per-head Hadamard.
  const ek = relError(a.first['present.0.key'].data as Float32Array, b.first['present.0.key'].data as Float32Array);
  t.diagnostic(`with past: logits rel. error step 1 ${e1.toExponential(2)}, step 2 ${e2.toExponential(2)}; present.0.key ${ek.toExponential(2)}`);
  assert.ok(e1 < 1e-4 && e2 < 1e-4 && ek < 1e-5);
});

test('rotated fp16 model: weights stay float16, logits within fp16 rounding', { skip }, async (t) => {
  const model = load('model.fp16.onnx');
  const { model: rotated } = rotateModel(model, { seed: 0 });
  const types = new Set((rotated.graph!.initializer ?? []).filter((i) => /weight$/.test(i.name ?? '')).map((i) => i.dataType));
  assert.deepEqual([...types], [DataType.FLOAT16]);
  const ids = await textTokens(96);
  const a = (await (await session(model)).run(feeds(ids))).logits.data as Float32Array;
  const b = (await (await session(rotated)).run(feeds(ids))).logits.data as Float32Array;
  const err = relError(a, b);
  t.diagnostic(`fp16 logits relative error after rotation (rotated weights re-rounded to fp16): ${err.toExponential(2)}`);
  assert.ok(err < 3e-3, `relative error ${err}`);
});

test('rotation lowers the outlier ratio max|x|/rms(x) at the linear-layer inputs', { skip }, async (t) => {
  const model = load('model.onnx');
  const { model: rotated } = rotateModel(model, { seed: 0 });
  const ids = await textTokens(128);
  const measure = async (m: ModelProto) => {
    const layers = findLinearLayers(m).filter((l) => l.role !== 'lm_head');
    const inputs = [...new Map(layers.map((l) => [l.inputName, l])).values()];
    const s = await session(withOutputs(m, inputs.map((l) => l.inputName)));
    const out = await s.run(feeds(ids));
    const ratios = new Map<string, number[]>();
    for (const l of inputs) {
      const key = l.role === 'q' || l.role === 'k' || l.role === 'v' ? 'qkv' : l.role === 'gate' || l.role === 'up' ? 'gate/up' : l.role;
      const list = ratios.get(key) ?? [];
      list.push(outlierRatio(out[l.inputName].data as Float32Array, l.inFeatures));
      ratios.set(key, list);
    }
    return ratios;
  };
  const before = await measure(model);
  const after = await measure(rotated);
  for (const role of ['qkv', 'o', 'gate/up', 'down']) {
    const b = before.get(role)!;
    const a = after.get(role)!;
    const fmt = (v: number[]) => v.map((x) => x.toFixed(2)).join(' ');
    t.diagnostic(`${role} input, mean max/rms per block: original ${fmt(b)} → rotated ${fmt(a)}`);
  }
  const mean = (v: number[]) => v.reduce((x, y) => x + y, 0) / v.length;
  assert.ok(mean(after.get('down')!) < mean(before.get('down')!), 'down_proj input outliers shrink');
  assert.ok(mean(after.get('o')!) < mean(before.get('o')!), 'o_proj input outliers shrink');
  // A Hadamard leaves Gaussian-like vectors Gaussian-like (max/rms ≈ 2.8 for n = 128): where the
  // residual stream has no outlier channels (an early checkpoint) the ratio can only stay near that.
  assert.ok(mean(after.get('qkv')!) < Math.max(mean(before.get('qkv')!), 3.2), 'q/k/v input near the Gaussian level');
});

test('external-data models: rotateModel asks for inlined weights; inlined, it rotates exactly', { skip }, async () => {
  const loaded = await loadModel(join(dir, 'model.external.onnx'));
  try {
    assert.throws(() => rotateModel(loaded.model, { seed: 0 }), (e: unknown) => e instanceof ModelFormatError && e.code === 'external-data-missing');
    // Inline the external tensors (what the pipeline does before rotating a model that fits in memory).
    const graph = loaded.model.graph!;
    const initializer = await Promise.all(
      (graph.initializer ?? []).map(async (t) => (isExternal(t) ? { name: t.name, dims: t.dims, dataType: t.dataType, rawData: Uint8Array.from(await loaded.readBytes(t.name ?? '')) } : t)),
    );
    const inlined: ModelProto = { ...loaded.model, graph: { ...graph, initializer } };
    const { model: rotated } = rotateModel(inlined, { seed: 0 });
    const ids = await textTokens(32);
    const err = relError((await (await session(inlined)).run(feeds(ids))).logits.data as Float32Array, (await (await session(rotated)).run(feeds(ids))).logits.data as Float32Array);
    assert.ok(err < 1e-4, `${err}`);
  } finally {
    await loaded.close();
  }
});

const smallDir = join(__dirname, '../../../media/models/small');
test('bundled small model (GQA 8q/2kv heads, intermediate 640 = 20·32): rotation is exact', { skip: existsSync(join(smallDir, 'model.onnx')) ? false : 'small model not built' }, async (t) => {
  const model = parseModel(readFileSync(join(smallDir, 'model.onnx')));
  const { model: rotated, rotation, warnings } = rotateModel(model, { seed: 0 });
  assert.deepEqual(warnings, []);
  assert.equal(rotation.numKvHeads, 2);
  assert.equal(rotation.onlineDown.construction, 'paley-1 20 ⊗ sylvester 32');
  const ids = Array.from({ length: 64 }, (_, i) => (i * 131 + 7) % 1000);
  const err = relError((await (await session(model)).run(feeds(ids))).logits.data as Float32Array, (await (await session(rotated)).run(feeds(ids))).logits.data as Float32Array);
  t.diagnostic(`small model: fp32 logits relative error after rotation ${err.toExponential(2)}`);
  assert.ok(err < 1e-4, `${err}`);
});
