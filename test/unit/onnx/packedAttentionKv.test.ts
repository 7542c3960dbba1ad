// KV quantization on onnxruntime.transformers' packed Attention (com.microsoft Attention with a
// [hidden, 3·hidden] q/k/v weight and a packed past/present cache): the projection is unfused
// (MatMul + bias → Split) into MultiHeadAttention, which must compute the same function with and
// without a cache (causal mask, padding mask); at KV4 the keys/values entering attention and the
// present cache are quantized; W4A4KV4 compress + evaluate runs end to end. Fixture ./ortGpt2.ts
// (seeded); the third-party ortgenai-gpt2-fp32 in ../shared when present.
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import * as ort from 'onnxruntime-node';
import { addFakeQuant } from '../../../src/onnx/fakeQuant';
import { findLinearLayers } from '../../../src/onnx/linear';
import { loadModel } from '../../../src/onnx/load';
import { unfusePackedAttentions } from '../../../src/onnx/packedAttention';
import { encodeModel, type ModelProto } from '../../../src/onnx/proto';
import { rotateModel } from '../../../src/onnx/rotate';
import { runCompression } from '../../../src/pipeline/compress';
import { WorkingModel } from '../../../src/pipeline/working';
import { DEFAULT_OPTIONS } from '../../../src/protocol/recipes';
import { randomNormal, rng } from './llamaGraph';
import { relError } from './miniLlama';
import { ortGpt2 } from './ortGpt2';

const ROOT = path.join(__dirname, '..', '..', '..');
const FUSED = path.join(ROOT, '..', 'shared', 'data', 'external-models', 'ortgenai-gpt2-fp32', 'past.onnx');
const GEO = { vocab: 64, hidden: 32, heads: 4, layers: 2 };

interface Step {
  batch: number;
  seq: number;
  pastLen: number;
}

/**
 * Runs `m` on one seeded step: ids, positions after the cache, a mask whose first position of
 * batch 1 is padding, random past caches; returns every output (logits, present_N) as floats.
 */
async function run(m: ModelProto, step: Step, o: { vocab: number; heads: number; headDim: number; layers: number; past: boolean }): Promise<Map<string, Float32Array>> {
  const rand = rng(11);
  const { batch, seq, pastLen } = step;
  const total = pastLen + seq;
  const feeds: Record<string, ort.Tensor> = {
    input_ids: new ort.Tensor('int32', Int32Array.from({ length: batch * seq }, (_, i) => (i * 37 + 5) % o.vocab), [batch, seq]),
    position_ids: new ort.Tensor('int32', Int32Array.from({ length: batch * seq }, (_, i) => pastLen + (i % seq)), [batch, seq]),
    attention_mask: new ort.Tensor('int32', Int32Array.from({ length: batch * total }, (_, i) => (i === total ? 0 : 1)), [batch, total]),
  };
  if (o.past) {
    for (let l = 0; l < o.layers; l++) {
      const n = 2 * batch * o.heads * pastLen * o.headDim;
      feeds[`past_${l}`] = new ort.Tensor('float32', Float32Array.from(randomNormal(n, 1, rand)), [2, batch, o.heads, pastLen, o.headDim]);
    }
  }
  const s = await ort.InferenceSession.create(encodeModel(m), { executionProviders: ['cpu'] });
  try {
    const out = await s.run(feeds);
    return new Map(Object.entries(out).map(([k, t]) => [k, Float32Array.from(t.data as Float32Array)]));
  } finally {
    await s.release();
  }
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

test('packed Attention unfused into MatMul + Split + MultiHeadAttention: same logits and presents (≤ 1e-5), with and without a cache', async () => {
  for (const past of [false, true]) {
    const model = ortGpt2({ ...GEO, past });
    const u = unfusePackedAttentions(model);
    assert.equal(u.count, 2);
    const ops = (u.model.graph!.node ?? []).map((n) => n.opType);
    assert.equal(ops.filter((x) => x === 'Attention').length, 0);
    assert.equal(ops.filter((x) => x === 'MultiHeadAttention').length, 2);
    const o = { vocab: 64, heads: 4, headDim: 8, layers: 2, past };
    for (const step of past ? [{ batch: 2, seq: 5, pastLen: 0 }, { batch: 2, seq: 5, pastLen: 3 }, { batch: 2, seq: 1, pastLen: 7 }] : [{ batch: 2, seq: 8, pastLen: 0 }]) {
      const a = await run(model, step, o);
      const b = await run(u.model, step, o);
      assert.deepEqual([...b.keys()].sort(), [...a.keys()].sort());
      for (const [name, x] of a) {
        const d = maxAbsDiff(x, b.get(name)!);
        assert.ok(d <= 1e-5, `past ${past} ${JSON.stringify(step)} ${name}: max |Δ| ${d}`);
      }
    }
  }
  // The causal mask matters: without unidirectional the unfused graph differs (the test can fail).
  const model = ortGpt2({ ...GEO, past: true });
  const u = unfusePackedAttentions(model).model;
  for (const n of u.graph!.node ?? []) if (n.opType === 'MultiHeadAttention') n.attribute = (n.attribute ?? []).filter((a) => a.name !== 'unidirectional');
  const step = { batch: 2, seq: 5, pastLen: 3 };
  const o = { vocab: 64, heads: 4, headDim: 8, layers: 2, past: true };
  assert.ok(maxAbsDiff((await run(model, step, o)).get('logits')!, (await run(u, step, o)).get('logits')!) > 1e-3);
});

test('KV4 on packed Attention: keys/values quantized (logits and present caches change), KV8 close to dense, KV16 leaves the op packed', async () => {
  const model = ortGpt2({ ...GEO, past: true });
  const rotated = rotateModel(model, { seed: 0 }).model;
  const o = { vocab: 64, heads: 4, headDim: 8, layers: 2, past: true };
  const step = { batch: 2, seq: 6, pastLen: 0 };
  const dense = await run(model, step, o);
  const kv16 = addFakeQuant(rotated, { abits: 16, kvbits: 16 });
  assert.equal((kv16.model.graph!.node ?? []).filter((n) => n.opType === 'Attention').length, 2);
  const rot = await run(rotated, step, o);
  assert.ok(relError(dense.get('logits')!, rot.get('logits')!) < 1e-5);

  const kv4 = addFakeQuant(rotated, { abits: 16, kvbits: 4 });
  assert.equal(kv4.quantized.keys, 2);
  assert.equal(kv4.quantized.values, 2);
  assert.ok(kv4.quantized.qkHadamard);
  // The unfused projection is still the block's one qkv layer (same weight), roles and blocks unchanged.
  const roles = (m: ModelProto) => findLinearLayers(m).map((l) => `${l.block}:${l.role}:${l.weightName}`).join(' ');
  assert.equal(roles(kv4.model), roles(rotated));
  const names = (kv4.model.graph!.node ?? []).map((n) => n.name ?? '');
  assert.equal(names.filter((n) => /k_quant\/Round$/.test(n)).length, 2);
  assert.equal(names.filter((n) => /q_hadamard\/MatMul$/.test(n)).length, 2);
  const q4 = await run(kv4.model, step, o);
  const err4 = relError(dense.get('logits')!, q4.get('logits')!);
  assert.ok(err4 > 1e-3 && err4 < 0.3, `KV4 logits rel. error ${err4}`);
  // The present cache holds quantized values: each token's values (all heads) on a 4-bit grid
  // (a symmetric grid: at most 16 distinct levels per token).
  const present = q4.get('present_0')!;
  const half = present.length / 2;
  const D = 8;
  const H = 4;
  const seq = step.seq;
  for (let b = 0; b < 2; b++) {
    for (let s = 0; s < seq; s++) {
      const levels = new Set<number>();
      for (let h = 0; h < H; h++) for (let d = 0; d < D; d++) levels.add(present[half + ((b * H + h) * seq + s) * D + d]);
      assert.ok(levels.size <= 16, `token ${b}/${s}: ${levels.size} distinct values`);
    }
  }
  const kv8 = relError(dense.get('logits')!, (await run(addFakeQuant(rotated, { abits: 16, kvbits: 8 }).model, step, o)).get('logits')!);
  assert.ok(kv8 > 0 && kv8 < 0.02 && kv8 < err4, `KV8 rel. error ${kv8} (KV4 ${err4})`);
  // With a cache fed back in: a one-token step runs on the unfused, quantized graph.
  const next = await run(addFakeQuant(rotated, { abits: 4, kvbits: 4 }).model, { batch: 2, seq: 1, pastLen: 6 }, o);
  assert.ok(next.get('logits')!.every(Number.isFinite));
  assert.equal(next.get('present_1')!.length, 2 * 2 * 4 * 7 * 8);
});

test('W4A4KV4 compress + evaluate end to end on the onnxruntime-optimized GPT-2 layout (packed Attention)', { timeout: 300_000 }, async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'obr-ortgpt2-kv4-'));
  try {
    const model = path.join(dir, 'model.onnx');
    writeFileSync(model, encodeModel(ortGpt2({ vocab: 4096, hidden: 64, heads: 4, layers: 2 })));
    copyFileSync(path.join(ROOT, 'test', 'fixtures', 'models', 'tiny', 'tokenizer.json'), path.join(dir, 'tokenizer.json'));
    const r = await runCompression(model, { ...DEFAULT_OPTIONS, seqlen: 32, samples: 8, abits: 4, kvbits: 4, executionProviders: ['cpu'] }, {}, { evalWindows: 4 });
    assert.equal(r.layers.map((l) => `${l.block}:${l.role}`).join(' '), '0:qkv 0:o 0:up 0:down 1:qkv 1:o 1:up 1:down');
    const dense = r.perplexity.dense!.perplexity;
    const compressed = r.perplexity.compressed!.perplexity;
    assert.ok(Number.isFinite(dense) && Number.isFinite(compressed));
    assert.ok(compressed < 2 * dense, `${compressed} vs ${dense}`);
    assert.ok(r.outputs.simulated && existsSync(r.outputs.simulated));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('third-party onnxruntime-optimized GPT-2: unfused packed Attention keeps the logits; KV4 graph runs', { skip: !existsSync(FUSED) && `not present: ${FUSED}` }, async () => {
  const working = await WorkingModel.fromLoaded(await loadModel(FUSED));
  const u = unfusePackedAttentions(working.proto);
  assert.equal(u.count, 5);
  const inputs = (working.proto.graph!.input ?? []).map((i) => i.name);
  const past = inputs.some((n) => /^past_0$/.test(n ?? ''));
  assert.ok(past, `inputs ${inputs.join(', ')}`);
  const o = { vocab: 1000, heads: 0, headDim: 0, layers: 5, past: true };
  const pastInfo = working.proto.graph!.input!.find((i) => i.name === 'past_0')!;
  const dims = pastInfo.type!.tensorType!.shape!.dim!.map((d) => Number(d.dimValue ?? 0));
  o.heads = dims[2]!;
  o.headDim = dims[4]!;
  const step = { batch: 2, seq: 4, pastLen: 3 };
  const a = await run(working.proto, step, o);
  const b = await run(u.model, step, o);
  for (const [name, x] of a) assert.ok(maxAbsDiff(x, b.get(name)!) <= 1e-4 * Math.max(1, ...Array.from(x, Math.abs)), name);
  // Against the dense model from an empty cache (a random cache isn't in the rotated model's basis).
  const first = { batch: 2, seq: 6, pastLen: 0 };
  const dense = (await run(working.proto, first, o)).get('logits')!;
  const rotated = rotateModel(working.proto, { seed: 0 }).model;
  const kv4 = addFakeQuant(rotated, { abits: 16, kvbits: 4 });
  assert.equal(kv4.quantized.keys, 5);
  const q4 = (await run(kv4.model, first, o)).get('logits')!;
  const q8 = (await run(addFakeQuant(rotated, { abits: 16, kvbits: 8 }).model, first, o)).get('logits')!;
  assert.ok(q4.every(Number.isFinite));
  assert.ok((await run(kv4.model, step, o)).get('logits')!.every(Number.isFinite));
  const err4 = relError(dense, q4);
  const err8 = relError(dense, q8);
  assert.ok(err4 > 0 && err8 > 0 && err8 < err4 / 4, `KV4 ${err4}, KV8 ${err8}`);
});
