// The scale benchmark's model generator (scripts/bench/largeLlama.ts): the real-shape LLaMA decoder
// (grouped-query attention, fp16 weights in external data, RoPE tables for long sequences) loads,
// is found as 7 projections per block with the KV width of its KV heads, and runs in onnxruntime
// with dynamic batch and sequence length, causally and with padding.
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import * as ort from 'onnxruntime-node';
import { scaleLlamaWeightBytes, TINYLLAMA, writeLargeLlama, type LargeLlamaShape } from '../../../scripts/bench/largeLlama';
import { findLinearLayers } from '../../../src/onnx/linear';
import { loadModel } from '../../../src/onnx/load';
import { tempDir } from '../pipeline/fixtures';

const SHAPE: LargeLlamaShape = { layers: 2, hidden: 128, heads: 4, kvHeads: 2, intermediate: 256, vocab: 300, weightType: 'float16', positions: 512 };

test('TinyLlama-1.1B shape: fp16 weights past 2 GiB (1.1 B parameters)', () => {
  const bytes = scaleLlamaWeightBytes(TINYLLAMA);
  // 2·32000·2048 + 22·(2·2048² + 2·2048·256 + 3·2048·5632) = 1 099 956 224 parameters (TinyLlama's
  // 1 100 048 384 less its 45·2048 RMSNorm gains, which stay float32 in model.onnx).
  assert.equal(bytes, 2 * 1_099_956_224);
  assert.ok(bytes > 2 * 2 ** 30);
});

test('the real-shape generator: GQA projections, fp16 external data, runs causally at 512 positions with padding', { timeout: 120_000 }, async () => {
  const dir = tempDir('obr-large-llama-');
  const r = await writeLargeLlama(dir, SHAPE);
  assert.equal(r.weightBytes, scaleLlamaWeightBytes(SHAPE));
  assert.equal(statSync(path.join(dir, 'model.onnx.data')).size, r.weightBytes);
  const loaded = await loadModel(path.join(dir, 'model.onnx'));
  try {
    const layers = findLinearLayers(loaded.model).filter((l) => l.block !== null);
    assert.equal(layers.length, 14);
    const shape = (role: string) => layers.filter((l) => l.role === role && l.block === 1).map((l) => `${l.outFeatures}x${l.inFeatures}:${l.dtype}`);
    assert.deepEqual(shape('q'), ['128x128:float16']);
    assert.deepEqual(shape('k'), ['64x128:float16']); // 2 KV heads × head_dim 32
    assert.deepEqual(shape('v'), ['64x128:float16']);
    assert.deepEqual(shape('down'), ['128x256:float16']);
    assert.equal(findLinearLayers(loaded.model).find((l) => l.role === 'lm_head')?.outFeatures, 300);
  } finally {
    await loaded.close();
  }
  const session = await ort.InferenceSession.create(path.join(dir, 'model.onnx'), { logSeverityLevel: 3 });
  try {
    const run = async (ids: number[][], mask: number[][]) => {
      const b = ids.length;
      const s = ids[0]!.length;
      const t = (rows: number[][]) => new ort.Tensor('int64', BigInt64Array.from(rows.flat().map(BigInt)), [b, s]);
      const pos = Array.from({ length: b }, () => Array.from({ length: s }, (_, i) => i));
      const out = await session.run({ input_ids: t(ids), attention_mask: t(mask), position_ids: t(pos) });
      return out.logits!.data as Float32Array;
    };
    const s = 512;
    const a = Array.from({ length: s }, (_, i) => (i * 37 + 5) % 300);
    const b = a.map((x, i) => (i < 300 ? x : (x + 1) % 300)); // differs from position 300 on
    const ones = new Array(s).fill(1);
    const logits = await run([a, b], [ones, ones]);
    assert.equal(logits.length, 2 * s * 300);
    assert.ok(logits.every(Number.isFinite));
    // Causal: positions before the change see the same logits; the changed ones don't.
    const at = (w: number, p: number) => logits.subarray((w * s + p) * 300, (w * s + p + 1) * 300);
    assert.deepEqual(Array.from(at(0, 299)), Array.from(at(1, 299)));
    assert.notDeepEqual(Array.from(at(0, 400)), Array.from(at(1, 400)));
    // Padding: a padded key (mask 0) is not attended to, so the logits before it are unchanged
    // and the last real position's logits don't depend on what the padded token is.
    const padded = await run([a, b.map((x, i) => (i === s - 1 ? (x + 7) % 300 : x))], [ones, ones.map((_, i) => (i === s - 1 ? 0 : 1))]);
    const p2 = (w: number, q: number) => padded.subarray((w * s + q) * 300, (w * s + q + 1) * 300);
    assert.deepEqual(Array.from(p2(1, s - 2)), Array.from(at(1, s - 2)));
  } finally {
    await session.release();
  }
});
