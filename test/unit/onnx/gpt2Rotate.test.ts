// QuaRot on GPT-2-style (LayerNorm) decoders: the LayerNorm → RMSNorm conversion (centred residual
// writers, γ/β folded into the readers) and the rotation keep the function; W4A4KV4 simulated
// graphs run; compress + evaluate end to end on the torch.onnx layouts (MatMul + Add, Gemm), and
// the onnxruntime-optimized layout (SkipLayerNormalization, EmbedLayerNormalization, packed
// Attention, unfused for KV4). Fixtures: ./torchGpt2.ts, ./ortGpt2.ts and
// the third-party ortgenai-gpt2-fp32 in ../shared when present.
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { addFakeQuant } from '../../../src/onnx/fakeQuant';
import { loadModel } from '../../../src/onnx/load';
import { encodeModel, type ModelProto } from '../../../src/onnx/proto';
import { rotateModel } from '../../../src/onnx/rotate';
import { runCompression } from '../../../src/pipeline/compress';
import { checkRotation } from '../../../src/pipeline/rotationCheck';
import { WorkingModel } from '../../../src/pipeline/working';
import { DEFAULT_OPTIONS } from '../../../src/protocol/recipes';
import { CausalLm, floatData } from '../../../src/runtime/lm';
import { relError } from './miniLlama';
import { ortGpt2 } from './ortGpt2';
import { torchGpt2 } from './torchGpt2';

const ROOT = path.join(__dirname, '..', '..', '..');
const FUSED = path.join(ROOT, '..', 'shared', 'data', 'external-models', 'ortgenai-gpt2-fp32', 'past.onnx');
const LAYER_NORM_OPS = new Set(['LayerNormalization', 'SkipLayerNormalization', 'EmbedLayerNormalization']);

/** Logits of 2 windows of 8 tokens (ids < vocab), fed as the pipeline feeds them. */
async function logits(m: ModelProto, vocab: number): Promise<Float32Array> {
  const lm = await CausalLm.open(encodeModel(m), { executionProviders: ['cpu'] });
  try {
    const out = await lm.runOutputs(Int32Array.from({ length: 16 }, (_, i) => (i * 37 + 5) % vocab), 2, 8, ['logits']);
    return Float32Array.from(floatData(out.logits!));
  } finally {
    await lm.release();
  }
}

const layouts: Array<[string, () => ModelProto]> = [
  ['torch.onnx MatMul + Add', () => torchGpt2({ vocab: 64, hidden: 32, heads: 4, layers: 2 })],
  ['torch.onnx Gemm (transB) between Reshapes', () => torchGpt2({ vocab: 64, hidden: 32, heads: 4, layers: 2, gemm: true })],
  ['onnxruntime-optimized (Skip/EmbedLayerNormalization, packed Attention)', () => ortGpt2({ vocab: 64, hidden: 32, heads: 4, layers: 2 })],
];

test('GPT-2 LayerNorm decoders: centred, made RMSNorm and rotated, the logits equal the dense ones (float32 tolerance)', async (t) => {
  for (const [label, build] of layouts) {
    const model = build();
    const before = encodeModel(model);
    const r = rotateModel(model, { seed: 0 });
    assert.deepEqual(encodeModel(model), before, `${label}: input not mutated`);
    assert.equal(r.rotation.norm, 'layer');
    assert.equal(r.rotation.embeddingMeanCentred, true);
    assert.equal(r.rotation.embeddingsRotated, 2, `${label}: word and position tables`);
    assert.equal(r.rotation.normsFolded, 2 * 2 + 1);
    assert.deepEqual(r.warnings, []);
    assert.ok(!(r.model.graph!.node ?? []).some((n) => LAYER_NORM_OPS.has(n.opType ?? '')), `${label}: no LayerNorm left`);
    const err = relError(await logits(model, 64), await logits(r.model, 64));
    t.diagnostic(`${label}: logits rel. error ${err.toExponential(2)}`);
    assert.ok(err < 1e-5, `${label}: ${err}`);
  }
});

test('a tied lm_head (Transpose of the word embedding, as HF GPT-2) gets its own copy; the rotated logits equal the dense ones', async () => {
  const model = torchGpt2({ vocab: 64, hidden: 32, heads: 4, layers: 2, tied: true });
  const r = rotateModel(model, { seed: 0 });
  assert.match(r.warnings.join('\n'), /lm_head shares its weight with the embedding \(tied\).*own copy \(64 × 32 more weights\)/);
  const inits = new Set((r.model.graph!.initializer ?? []).map((t) => t.name));
  assert.ok(inits.has('transformer.wte.weight') && inits.has('transformer.wte.weight.lm_head'));
  const err = relError(await logits(model, 64), await logits(r.model, 64));
  assert.ok(err < 1e-5, `${err}`);
});

test('the LayerNorm conversion needs the centring: without it the rotated GPT-2 would be wrong (the fixture has a mean offset)', async () => {
  // The residual stream of the fixture has a per-token mean far from 0 (embedding offset 0.7), so
  // LayerNorm ≠ RMSNorm on the uncentred stream: a model whose embeddings are shifted back after
  // rotation must give different logits. This keeps the exactness test above from passing vacuously.
  const model = torchGpt2({ vocab: 64, hidden: 32, heads: 4, layers: 1 });
  const r = rotateModel(model, { seed: 0 });
  const shifted = structuredClone(r.model);
  const wte = shifted.graph!.initializer!.find((x) => x.name === 'transformer.wte.weight')!;
  const f = new Float32Array(wte.rawData!.slice().buffer);
  for (let i = 0; i < f.length; i++) f[i] += 0.5;
  wte.rawData = new Uint8Array(f.buffer);
  assert.ok(relError(await logits(model, 64), await logits(shifted, 64)) > 1e-2);
});

test('GPT-2 W4A4KV4 simulated graphs: keys/values quantized at the per-head tensors (no RoPE); KV8 stays close; packed Attention unfused for KV4', async () => {
  for (const [label, build] of layouts.slice(0, 2)) {
    const model = build();
    const rotated = rotateModel(model, { seed: 0 }).model;
    const a4kv4 = addFakeQuant(rotated, { abits: 4, kvbits: 4 });
    assert.equal(a4kv4.quantized.keys, 2, label);
    assert.equal(a4kv4.quantized.values, 2, label);
    // Inputs of qkv, o (after the online head Hadamard), up, down (after the online Hadamard) per block.
    assert.equal(a4kv4.quantized.activations.length, 8, label);
    const names = (a4kv4.model.graph!.node ?? []).map((n) => n.name ?? '');
    assert.equal(names.filter((n) => /q_hadamard/.test(n)).length, 2, `${label}: q/k Hadamard`);
    const dense = await logits(model, 64);
    const sim = await logits(a4kv4.model, 64);
    assert.ok(sim.every(Number.isFinite));
    const kv8 = relError(dense, await logits(addFakeQuant(rotated, { abits: 16, kvbits: 8 }).model, 64));
    assert.ok(kv8 > 0 && kv8 < 0.02, `${label}: KV8 rel. error ${kv8}`);
  }
  const fused = rotateModel(ortGpt2({ vocab: 64, hidden: 32, heads: 4, layers: 2 }), { seed: 0 }).model;
  // Packed Attention: the projection is unfused into MultiHeadAttention (./packedAttentionKv.test.ts).
  const a4kv4 = addFakeQuant(fused, { abits: 4, kvbits: 4 });
  assert.equal(a4kv4.quantized.keys, 2);
  assert.equal(a4kv4.quantized.activations.length, 8);
  assert.ok((await logits(a4kv4.model, 64)).every(Number.isFinite));
  const a4 = addFakeQuant(fused, { abits: 4, kvbits: 16 });
  assert.ok((await logits(a4.model, 64)).every(Number.isFinite));
});

test('the rotation check passes on GPT-2 and catches a broken conversion', async () => {
  const model = torchGpt2({ vocab: 64, hidden: 32, heads: 4, layers: 2 });
  const r = rotateModel(model, { seed: 0 });
  const calib = { ids: Int32Array.from({ length: 32 }, (_, i) => (i * 11) % 64), count: 2, seqlen: 16, offsets: [0, 16] };
  const ok = await checkRotation(model, r.model, calib, encodeModel, { executionProviders: ['cpu'], abits: 4, kvbits: 4 });
  assert.ok(ok.relativeError < 1e-5);
  // A c_proj bias left uncentred: the stream is no longer mean-free, LayerNorm ≠ RMSNorm.
  const broken = structuredClone(r.model);
  const bias = broken.graph!.initializer!.find((x) => x.name === 'transformer.h.0.mlp.c_proj.bias')!;
  const f = new Float32Array(bias.rawData!.slice().buffer);
  for (let i = 0; i < f.length; i++) f[i] += 0.3;
  bias.rawData = new Uint8Array(f.buffer);
  await assert.rejects(checkRotation(model, broken, calib, encodeModel, { executionProviders: ['cpu'], abits: 4, kvbits: 4 }), /logits differ from the dense model's/);
});

test('third-party onnxruntime-optimized GPT-2: rotated (EmbedLayerNormalization, SkipLayerNormalization, packed Attention) with the dense logits', { skip: !existsSync(FUSED) && `not present: ${FUSED}` }, async () => {
  const working = await WorkingModel.fromLoaded(await loadModel(FUSED));
  const r = rotateModel(working.proto, { seed: 0 });
  assert.equal(r.rotation.blocks, 5);
  assert.equal(r.rotation.norm, 'layer');
  assert.equal(r.rotation.normsFolded, 11);
  const err = relError(await logits(working.proto, 1000), await logits(r.model, 1000));
  assert.ok(err < 1e-5, `${err}`);
});

for (const gemm of [false, true]) {
  test(`W4A4KV4 compress + evaluate end to end on a synthetic GPT-2 (${gemm ? 'Gemm, lm_head tied to the embedding' : 'MatMul + Add'})`, { timeout: 300_000 }, async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'obr-gpt2-w4a4kv4-'));
    try {
      const model = path.join(dir, 'model.onnx');
      writeFileSync(model, encodeModel(torchGpt2({ vocab: 4096, hidden: 64, heads: 4, layers: 2, gemm, tied: gemm })));
      copyFileSync(path.join(ROOT, 'test', 'fixtures', 'models', 'tiny', 'tokenizer.json'), path.join(dir, 'tokenizer.json'));
      const r = await runCompression(model, { ...DEFAULT_OPTIONS, seqlen: 32, samples: 8, abits: 4, kvbits: 4, executionProviders: ['cpu'] }, {}, { evalWindows: 4 });
      assert.equal(r.layers.map((l) => `${l.block}:${l.role}`).join(' '), '0:qkv 0:o 0:up 0:down 1:qkv 1:o 1:up 1:down');
      assert.ok(r.layers.every((l) => Math.abs(l.sparsity - 0.5) < 0.03));
      const dense = r.perplexity.dense!.perplexity;
      const compressed = r.perplexity.compressed!.perplexity;
      assert.ok(Number.isFinite(dense) && Number.isFinite(compressed));
      // A random 4096-token model: perplexity near the vocabulary size; W4A4KV4 + 50% keeps it there.
      assert.ok(compressed < 2 * dense, `${compressed} vs ${dense}`);
      assert.ok(r.outputs.simulated && existsSync(r.outputs.simulated));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
