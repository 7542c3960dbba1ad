// onnxruntime-genai builder graphs (SimplifiedLayerNormalization / SkipSimplifiedLayerNormalization,
// RotaryEmbedding, MultiHeadAttention or GroupQueryAttention, fp16): roles and blocks by topology,
// geometry from the fused attention op, exact rotation, and A4/KV4 with the K/V tensors entering
// the attention op quantized. Synthetic fixtures (./genaiLlama.ts), plus the third-party export in
// ../shared/data/external-models when present.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import * as ort from 'onnxruntime-node';
import { addFakeQuant } from '../../../src/onnx/fakeQuant';
import { findLinearLayers } from '../../../src/onnx/linear';
import { loadModel } from '../../../src/onnx/load';
import { encodeModel, type ModelProto } from '../../../src/onnx/proto';
import { rotateModel } from '../../../src/onnx/rotate';
import { WorkingModel } from '../../../src/pipeline/working';
import { floatData } from '../../../src/runtime/lm';
import { genaiLlama, type GenaiLlamaOptions } from './genaiLlama';
import { relError } from './miniLlama';

const EXTERNAL = path.join(__dirname, '..', '..', '..', '..', 'shared', 'data', 'external-models', 'ortgenai-llama-fp16', 'model.onnx');
const ROLES = '0:q 0:k 0:v 0:o 0:gate 0:up 0:down 1:q 1:k 1:v 1:o 1:gate 1:up 1:down null:lm_head';

async function logits(m: ModelProto, ids: number[]): Promise<Float32Array> {
  const s = await ort.InferenceSession.create(encodeModel(m), { logSeverityLevel: 3 });
  try {
    const n = ids.length;
    const i64 = (f: (i: number) => number) => new ort.Tensor('int64', BigInt64Array.from({ length: n }, (_, i) => BigInt(f(i))), [1, n]);
    const feeds: Record<string, ort.Tensor> = { input_ids: i64((i) => ids[i]!), attention_mask: i64(() => 1), position_ids: i64((i) => i) };
    for (const name of s.inputNames) {
      if (feeds[name]) continue;
      // past_key_values.*: [batch, kv_heads, 0, head_dim] in the model's float type
      const meta = s.inputMetadata.find((m) => m.name === name)!;
      const shape = meta.isTensor ? meta.shape : [];
      const type = meta.isTensor && meta.type === 'float16' ? 'float16' : 'float32';
      feeds[name] = new ort.Tensor(type, type === 'float16' ? new Uint16Array(0) : new Float32Array(0), [1, shape[1] as number, 0, shape[3] as number]);
    }
    const out = await s.run(feeds, ['logits']);
    return floatData(out.logits!);
  } finally {
    await s.release();
  }
}

const ids = Array.from({ length: 10 }, (_, i) => (i * 7 + 1) % 40);
const cases: Array<[string, GenaiLlamaOptions, number]> = [
  ['MultiHeadAttention fp32', { vocab: 40, heads: 4, kvHeads: 4, headDim: 8, intermediate: 48, layers: 2, dtype: 'float32' }, 1e-5],
  ['MultiHeadAttention fp16', { vocab: 40, heads: 4, kvHeads: 4, headDim: 8, intermediate: 48, layers: 2, dtype: 'float16' }, 5e-3],
  ['GroupQueryAttention 4q/2kv (RoPE inside) fp32', { vocab: 40, heads: 4, kvHeads: 2, headDim: 16, intermediate: 48, layers: 2, dtype: 'float32' }, 1e-5],
];

for (const [label, cfg, tol] of cases) {
  test(`genai builder graph, ${label}: roles, geometry from the op, exact rotation, A4/KV4 on the op's K/V inputs`, async () => {
    const m = genaiLlama(cfg);
    assert.equal(findLinearLayers(m).map((l) => `${l.block}:${l.role}`).join(' '), ROLES);
    const dense = await logits(m, ids);
    const r = rotateModel(m, { seed: 0 });
    assert.deepEqual([r.rotation.numHeads, r.rotation.numKvHeads, r.rotation.headDim], [cfg.heads, cfg.kvHeads, cfg.headDim]);
    assert.equal(r.rotation.normsFolded, 5, 'SimplifiedLayerNormalization + 4 SkipSimplifiedLayerNormalization');
    const err = relError(dense, await logits(r.model, ids));
    assert.ok(err < tol, `rotation: ${err}`);
    const fq = addFakeQuant(r.model, { abits: 4, kvbits: 4 });
    assert.equal(fq.quantized.keys, 2);
    assert.equal(fq.quantized.values, 2);
    const att = fq.model.graph!.node!.filter((n) => n.opType === 'MultiHeadAttention' || n.opType === 'GroupQueryAttention');
    for (const a of att) {
      assert.match(a.input![1]!, /k_quant\/Dequantize/, 'the key entering the op is quantized');
      assert.match(a.input![2]!, /v_quant\/Dequantize/, 'the value entering the op is quantized');
    }
    if (cfg.kvHeads !== cfg.heads) assert.match(fq.warnings.join('\n'), /RoPE inside the op/);
    else assert.ok(fq.model.graph!.node!.some((n) => /k_hadamard/.test(n.name ?? '')), 'q/k Hadamard after the external RoPE');
    const q = relError(dense, await logits(fq.model, ids));
    assert.ok(Number.isFinite(q) && q < 0.5, `A4/KV4: ${q}`);
  });
}

test('third-party onnxruntime-genai LLaMA fp16 export: roles, exact rotation in fp16, A4/KV4 runs', { skip: !existsSync(EXTERNAL) && `not present: ${EXTERNAL}` }, async () => {
  const loaded = await loadModel(EXTERNAL);
  const m = (await WorkingModel.fromLoaded(loaded)).proto;
  await loaded.close();
  assert.equal(findLinearLayers(m).map((l) => `${l.block}:${l.role}`).join(' '), ROLES);
  const tokens = [1, 450, 4996, 17354, 1701, 432, 17204, 975, 278, 17366];
  const dense = await logits(m, tokens);
  const r = rotateModel(m, { seed: 0 });
  assert.deepEqual([r.rotation.numHeads, r.rotation.numKvHeads, r.rotation.headDim, r.rotation.hidden, r.rotation.intermediate], [1, 1, 16, 16, 64]);
  const err = relError(dense, await logits(r.model, tokens));
  assert.ok(err < 5e-3, `rotation in fp16: ${err}`);
  const fq = addFakeQuant(r.model, { abits: 4, kvbits: 4 });
  assert.equal(fq.quantized.keys, 2);
  assert.ok((await logits(fq.model, tokens)).every(Number.isFinite));
});
