// Cutting a decoder graph into prelude / block regions / tail (src/onnx/blocks.ts): the regions
// run one after another on the crossing tensors give exactly the whole model's logits, on the
// bundled exports (fp32, fp16, with KV-cache inputs, external data, QuaRot-rotated).
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import * as ort from 'onnxruntime-node';
import { elementTypeOf, regionModel, splitBlocks } from '../../../src/onnx/blocks';
import { findLinearLayers } from '../../../src/onnx/linear';
import { loadModel } from '../../../src/onnx/load';
import { encodeModel, type ModelProto } from '../../../src/onnx/proto';
import { rotateModel } from '../../../src/onnx/rotate';
import { CausalLm } from '../../../src/runtime/lm';
import { WorkingModel } from '../../../src/pipeline/working';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const TINY = path.join(ROOT, 'test', 'fixtures', 'models', 'tiny');
const SMALL = path.join(ROOT, 'media', 'models', 'small');

async function inline(file: string): Promise<ModelProto> {
  const loaded = await loadModel(file);
  try {
    return (await WorkingModel.fromLoaded(loaded)).proto;
  } finally {
    await loaded.close();
  }
}

/** Max |Δ| between the whole model's logits and the regions run in sequence. */
async function regionsVsWhole(model: ModelProto): Promise<{ diff: number; blocks: number }> {
  const split = splitBlocks(model, findLinearLayers(model));
  assert.ok('ok' in split, 'err' in split ? split.err : '');
  const { regions, idsDependent } = split.ok;
  const B = 2;
  const S = 12;
  const ids = new Int32Array(B * S).map((_, i) => (i * 37 + 5) % 500);
  const lm = await CausalLm.open(encodeModel(model), { executionProviders: ['cpu'] });
  const feeds = lm.feeds(ids, B, S);
  const whole = (await lm.session.run(feeds)).logits!.data as Float32Array;
  await lm.release();
  const state = new Map<string, ort.Tensor>();
  let logits: Float32Array | undefined;
  for (const r of regions) {
    if (r.kind === 'block') assert.equal(r.reads.filter((t) => idsDependent.has(t)).length, 1, `block ${r.block} reads one hidden-state tensor (the residual stream)`);
    const types = new Map(r.reads.map((x) => [x, elementTypeOf(state.get(x)!.type)]));
    const sub = regionModel(model, r, types, r.kind === 'tail' ? ['logits'] : r.writes);
    const session = await ort.InferenceSession.create(encodeModel(sub), { logSeverityLevel: 3 });
    const f: Record<string, ort.Tensor> = {};
    for (const x of session.inputNames) f[x] = feeds[x] ?? state.get(x)!;
    const out = await session.run(f);
    for (const x of r.writes) state.set(x, out[x]!);
    if (r.kind === 'tail') logits = out.logits!.data as Float32Array;
    await session.release();
  }
  let diff = 0;
  for (let i = 0; i < whole.length; i++) diff = Math.max(diff, Math.abs(whole[i]! - logits![i]!));
  return { diff, blocks: regions.filter((r) => r.kind === 'block').length };
}

test('each linear layer lies in its block region; the prelude holds the embedding and the tail lm_head', async () => {
  const model = await inline(path.join(TINY, 'model.onnx'));
  const layers = findLinearLayers(model);
  const split = splitBlocks(model, layers);
  assert.ok('ok' in split);
  const { regions } = split.ok;
  assert.deepEqual(regions.map((r) => r.kind), ['prelude', 'block', 'block', 'block', 'block', 'tail']);
  for (let i = 1; i < regions.length; i++) assert.equal(regions[i]!.start, regions[i - 1]!.end, 'regions tile the graph');
  for (const l of layers) {
    const r = regions.find((x) => l.order! >= x.start && l.order! < x.end)!;
    if (l.block === null) assert.equal(r.kind, 'tail', l.name);
    else assert.equal(r.block, l.block, l.name);
  }
  const gather = model.graph!.node!.findIndex((n) => n.opType === 'Gather' && n.input![0] === 'model.embed_tokens.weight');
  assert.ok(gather >= regions[0]!.start && gather < regions[0]!.end, 'embedding lookup in the prelude');
  // The residual written by block b is what block b + 1 reads (with the shared side tensors).
  for (let b = 1; b < 4; b++) for (const w of regions[b]!.writes) assert.ok(regions.slice(b + 1).some((r) => r.reads.includes(w)), w);
});

test('blocks that interleave in graph order are refused with the reason', async () => {
  const model = await inline(path.join(TINY, 'model.onnx'));
  const layers = findLinearLayers(model).map((l) => (l.block === 0 && l.role === 'q' ? { ...l, block: 1 } : l));
  const split = splitBlocks(model, layers);
  assert.ok('err' in split && /interleave/.test(split.err));
});

for (const [label, file] of [
  ['tiny fp32', path.join(TINY, 'model.onnx')],
  ['small fp16', path.join(SMALL, 'model.fp16.onnx')],
  ['small with KV-cache inputs', path.join(SMALL, 'model_with_past.onnx')],
  ['small external data', path.join(SMALL, 'model.external.onnx')],
] as const) {
  test(`regions run in sequence = the whole model (${label}): identical logits`, { timeout: 120_000 }, async () => {
    const { diff, blocks } = await regionsVsWhole(await inline(file));
    assert.equal(blocks, 4);
    assert.equal(diff, 0);
  });
}

test('regions of a QuaRot-rotated graph run in sequence = the rotated whole model', { timeout: 120_000 }, async () => {
  const rotated = rotateModel(await inline(path.join(TINY, 'model.onnx')), { seed: 0 }).model;
  const { diff } = await regionsVsWhole(rotated);
  assert.equal(diff, 0);
});
