// GPT-2 graphs as other exporters write them: onnxruntime.transformers-optimized (fused Attention
// with a packed q/k/v weight, SkipLayerNormalization, FastGelu, EmbedLayerNormalization; synthetic
// fixture ./ortGpt2.ts and the third-party ortgenai-gpt2-fp32), torch.onnx with Gemm and a fused
// c_attn split into q/k/v (third-party ort-gpt2-past-nohead; the synthetic Split case is in
// linear.test.ts). Roles, blocks, q/k/v row parts, feeding int32 ids and packed past_N caches, and
// the tokenizer/vocabulary refusal.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, copyFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { findLinearLayers } from '../../../src/onnx/linear';
import { loadModel } from '../../../src/onnx/load';
import { encodeModel } from '../../../src/onnx/proto';
import { rotateModel } from '../../../src/onnx/rotate';
import { modelVocabulary } from '../../../src/onnx/vocab';
import { runCompression } from '../../../src/pipeline/compress';
import { evaluateModel } from '../../../src/pipeline/evaluate';
import { DEFAULT_OPTIONS } from '../../../src/protocol/recipes';
import { CausalLm, floatData } from '../../../src/runtime/lm';
import { ortGpt2 } from './ortGpt2';

const ROOT = path.join(__dirname, '..', '..', '..');
const SHARED = path.join(ROOT, '..', 'shared', 'data', 'external-models');
const FUSED = path.join(SHARED, 'ortgenai-gpt2-fp32', 'past.onnx');
const GEMM = path.join(SHARED, 'ort-gpt2-past-nohead', 'gpt2_past.onnx');
const roles = (layers: ReturnType<typeof findLinearLayers>) => layers.map((l) => `${l.block}:${l.role}`).join(' ');

test('onnxruntime-optimized GPT-2 (synthetic): the packed Attention weight is one qkv layer with q/k/v rows; o/up/down and blocks right', async () => {
  const m = ortGpt2({ vocab: 64, hidden: 32, heads: 4, layers: 3 });
  const layers = findLinearLayers(m);
  assert.equal(roles(layers), '0:qkv 0:o 0:up 0:down 1:qkv 1:o 1:up 1:down 2:qkv 2:o 2:up 2:down null:lm_head');
  const qkv = layers[0]!;
  assert.equal(qkv.opType, 'Attention');
  assert.deepEqual([qkv.inFeatures, qkv.outFeatures, qkv.orientation], [32, 96, 'in-out']);
  assert.deepEqual(qkv.parts, [{ role: 'q', rows: [0, 32] }, { role: 'k', rows: [32, 64] }, { role: 'v', rows: [64, 96] }]);
  assert.equal(modelVocabulary(m), 64);
  // It runs on int32 ids / position_ids / attention_mask as fed for calibration and evaluation.
  const lm = await CausalLm.open(encodeModel(m), { executionProviders: ['cpu'] });
  try {
    const ids = Int32Array.from({ length: 2 * 6 }, (_, i) => (i * 5) % 64);
    const { sums } = await lm.windowNll(ids, 2, 6);
    assert.ok(sums.every((s) => Number.isFinite(s) && s > 0));
  } finally {
    await lm.release();
  }
  // LayerNorm + packed q/k/v: rotated exactly since the LayerNorm → RMSNorm conversion (gpt2Rotate.test.ts).
  assert.equal(rotateModel(m, { seed: 0 }).rotation.norm, 'layer');
});

test('third-party onnxruntime-optimized GPT-2: the 5 QKV weights inside Attention found, c_proj roles right, blocks 0…4', { skip: !existsSync(FUSED) && `not present: ${FUSED}` }, async () => {
  const loaded = await loadModel(FUSED);
  try {
    const layers = findLinearLayers(loaded.model);
    assert.equal(roles(layers), '0:qkv 0:o 0:up 0:down 1:qkv 1:o 1:up 1:down 2:qkv 2:o 2:up 2:down 3:qkv 3:o 3:up 3:down 4:qkv 4:o 4:up 4:down null:lm_head');
    assert.equal(layers.filter((l) => l.opType === 'Attention').length, 5);
    assert.equal(modelVocabulary(loaded.model), 1000);
  } finally {
    await loaded.close();
  }
  // Its GPT-2 tokenizer (50257 + added tokens) does not fit the 1000-entry vocabulary: refused with both numbers.
  const dir = mkdtempSync(path.join(tmpdir(), 'obr-gpt2-'));
  try {
    const text = path.join(dir, 'text.txt');
    writeFileSync(text, 'The quick brown fox jumps over the lazy dog. '.repeat(40));
    await assert.rejects(evaluateModel(FUSED, { text, seqlen: 16, executionProviders: ['cpu'] }), /the tokenizer tokenizer\.json has 50295 tokens \(this text uses ids up to \d+\) but the model's vocabulary has 1000 entries/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('third-party torch.onnx GPT-2 with Gemm: fused c_attn is qkv, mlp.c_proj is down, no false lm_head; packed past_N fed empty', { skip: !existsSync(GEMM) && `not present: ${GEMM}` }, async () => {
  const loaded = await loadModel(GEMM);
  try {
    const layers = findLinearLayers(loaded.model);
    assert.equal(layers.length, 48);
    assert.equal(roles(layers), Array.from({ length: 12 }, (_, b) => `${b}:qkv ${b}:o ${b}:up ${b}:down`).join(' '));
    assert.ok(layers.every((l) => l.opType === 'Gemm'));
    assert.deepEqual(layers[0]!.parts?.map((p) => p.rows), [[0, 4], [4, 8], [8, 12]]);
  } finally {
    await loaded.close();
  }
  // No logits (a body without head): opened for captures; past_0…past_11 [2, batch, 2, past, 2] are fed empty.
  const lm = await CausalLm.open(GEMM, { executionProviders: ['cpu'], outputsOnly: true });
  try {
    const out = await lm.runOutputs(Int32Array.of(5, 9), 2, 1, ['last_state', 'present_0']);
    assert.deepEqual(out.last_state!.dims, [2, 1, 4]);
    assert.deepEqual(out.present_0!.dims, [2, 2, 2, 1, 2]);
    assert.ok(floatData(out.last_state!).every(Number.isFinite));
  } finally {
    await lm.release();
  }
});

test('a W4A16 compression of the optimized GPT-2 layout runs end to end (block-streamed calibration and evaluation)', { timeout: 300_000 }, async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'obr-ortgpt2-'));
  try {
    const model = path.join(dir, 'model.onnx');
    writeFileSync(model, encodeModel(ortGpt2({ vocab: 4096, hidden: 64, heads: 4, layers: 2 })));
    copyFileSync(path.join(ROOT, 'test', 'fixtures', 'models', 'tiny', 'tokenizer.json'), path.join(dir, 'tokenizer.json'));
    const r = await runCompression(model, { ...DEFAULT_OPTIONS, seqlen: 32, samples: 8, abits: 16, kvbits: 16, executionProviders: ['cpu'] }, {}, { evalWindows: 4 });
    assert.equal(r.layers.map((l) => `${l.block}:${l.role}`).join(' '), '0:qkv 0:o 0:up 0:down 1:qkv 1:o 1:up 1:down');
    assert.ok(r.layers.every((l) => Math.abs(l.sparsity - 0.5) < 0.02));
    assert.ok(Number.isFinite(r.perplexity.dense!.perplexity) && Number.isFinite(r.perplexity.compressed!.perplexity));
    assert.ok(r.outputs.packed && existsSync(r.outputs.packed));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
