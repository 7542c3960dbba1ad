// The rotation through the job's working store (rotateModelStreamed): each weight task reads its
// tensors from the store, rotates them and writes them to the working data file — and the result
// equals the in-memory rotateModel bit for bit (same graph, same bytes in every initializer), on
// the bundled models and the fixtures of every supported layout, while the store never holds more
// than the largest task's tensors. A merged decoder's with-past branch needs only the rotated graph.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { loadModel, parseModel } from '../../../src/onnx/load';
import { encodeModel, type ModelProto, type TensorProto } from '../../../src/onnx/proto';
import { splitMergedDecoder, withSharedWeightsOf } from '../../../src/onnx/merged';
import { rotateGraphOnly, rotateModel, rotateModelStreamed } from '../../../src/onnx/rotate';
import { WeightStore } from '../../../src/onnx/store';
import { elementCount, elementSize, inlineTensorBytes, isExternal, tensorDims } from '../../../src/onnx/tensor';
import { WorkingModel } from '../../../src/pipeline/working';
import { genaiLlama } from './genaiLlama';
import { tinyMergedDecoder } from './mergedDecoder';
import { miniLlama } from './miniLlama';
import { ortGpt2 } from './ortGpt2';
import { torchGpt2 } from './torchGpt2';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const TINY = path.join(ROOT, 'test', 'fixtures', 'models', 'tiny');
const SMALL = path.join(ROOT, 'media', 'models', 'small');
const ORT_GPT2 = path.join(ROOT, '..', 'shared', 'data', 'external-models', 'ortgenai-gpt2-fp32', 'past.onnx');

const bytesOf = (t: TensorProto) => elementCount(tensorDims(t)) * (elementSize(t.dataType ?? 0) ?? 8);

/** The graph without its initializers' data: nodes, inputs, outputs, metadata and initializer headers. */
function graphOnly(m: ModelProto): Uint8Array {
  const headers = (m.graph?.initializer ?? []).map((t) => ({ name: t.name, dims: t.dims, dataType: t.dataType }));
  return encodeModel({ ...m, graph: { ...m.graph, initializer: headers } });
}

/**
 * Rotates `source` (a graph with external references, read through `store`) streamed and the same
 * model inline in memory; asserts the two are identical and returns the store's peak.
 */
async function compare(label: string, source: ModelProto, inline: ModelProto, store: WeightStore): Promise<number> {
  const expected = rotateModel(inline, { seed: 0 });
  const before = encodeModel(source);
  const streamed = await rotateModelStreamed(source, { seed: 0 }, store);
  assert.deepEqual(encodeModel(source), before, `${label}: input not mutated`);
  assert.deepEqual(streamed.rotation, expected.rotation, label);
  assert.deepEqual(streamed.warnings, expected.warnings, label);
  assert.ok(Buffer.from(graphOnly(streamed.model)).equals(Buffer.from(graphOnly(expected.model))), `${label}: same graph`);
  const got = streamed.model.graph!.initializer!;
  const want = expected.model.graph!.initializer!;
  assert.equal(got.length, want.length, label);
  let external = 0;
  for (let i = 0; i < want.length; i++) {
    const bytes = await store.readTensor(got[i]!);
    if (isExternal(got[i]!)) external++;
    store.release(isExternal(got[i]!) ? bytes.length : 0);
    assert.ok(Buffer.from(bytes).equals(Buffer.from(inlineTensorBytes(want[i]!))), `${label}: ${want[i]!.name} bit for bit`);
  }
  assert.ok(external > 0, `${label}: the rotated weights are in the store`);
  assert.equal(store.resident, 0, `${label}: every read handed back`);
  return store.peakResident;
}

/** `model` with its weights in a fresh store's working data file (as the pipeline's working copy after a write). */
async function inStore(model: ModelProto, dir: string): Promise<{ source: ModelProto; store: WeightStore }> {
  const store = new WeightStore(dir, path.join(dir, 'working.data'));
  return { source: await store.externalize(model), store };
}

const fixtures: Array<[string, () => ModelProto | Promise<ModelProto>]> = [
  ['tiny fp32', () => parseModel(readFileSync(path.join(TINY, 'model.onnx')))],
  ['tiny fp16', () => parseModel(readFileSync(path.join(TINY, 'model.fp16.onnx')))],
  ['tiny with past', () => parseModel(readFileSync(path.join(TINY, 'model_with_past.onnx')))],
  ['merged decoder, with-past branch', async () => (await tinyMergedDecoder()).withPast],
  ['5 query heads / 1 KV head (random orthogonal head rotation)', () => miniLlama({ vocab: 48, heads: 5, kvHeads: 1, headDim: 8, intermediate: 52, layers: 2, seq: 12 })],
  ['GQA 8/2, one shared norm weight', () => miniLlama({ vocab: 64, heads: 8, kvHeads: 2, headDim: 8, intermediate: 160, layers: 2, seq: 12, sharedNormWeight: true, shapeQueries: true })],
  ['GPT-2 LayerNorm, MatMul + Add', () => torchGpt2({ vocab: 64, hidden: 32, heads: 4, layers: 2 })],
  ['GPT-2 Gemm, tied lm_head', () => torchGpt2({ vocab: 64, hidden: 32, heads: 4, layers: 2, gemm: true, tied: true })],
  ['GPT-2 onnxruntime-optimized (fused qkv)', () => ortGpt2({ vocab: 64, hidden: 32, heads: 4, layers: 2 })],
  ['onnxruntime-genai LLaMA fp16', () => genaiLlama({ vocab: 64, heads: 4, kvHeads: 2, headDim: 8, intermediate: 96, layers: 2, dtype: 'float16' })],
];

test('rotation through the store equals the in-memory rotation bit for bit on every supported layout', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'obr-rotstream-'));
  try {
    for (const [label, build] of fixtures) {
      const model = await build();
      const { source, store } = await inStore(model, path.join(dir));
      try {
        const peak = await compare(label, source, model, store);
        const weights = (model.graph!.initializer ?? []).map(bytesOf).sort((a, b) => b - a);
        // A task holds one weight (and its bias): never more than the two largest tensors.
        assert.ok(peak <= weights[0]! + weights[1]!, `${label}: peak ${peak} vs largest ${weights[0]}`);
        t.diagnostic(`${label}: store peak ${peak} B of ${weights.reduce((a, b) => a + b, 0)} B of weights`);
      } finally {
        await store.close();
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the bundled external-data model rotates from its own data file, a block at most in memory', async () => {
  const loaded = await loadModel(path.join(SMALL, 'model.external.onnx'));
  const dir = mkdtempSync(path.join(tmpdir(), 'obr-rotstream-'));
  const store = new WeightStore(loaded.dir, path.join(dir, 'working.data'));
  try {
    const inline = (await WorkingModel.fromLoaded(loaded)).proto;
    const peak = await compare('small external', loaded.model, inline, store);
    const weights = (inline.graph!.initializer ?? []).map(bytesOf);
    const total = weights.reduce((a, b) => a + b, 0);
    assert.ok(peak <= Math.max(...weights) * 1.01, `peak ${peak}: one tensor (the largest is ${Math.max(...weights)})`);
    assert.ok(peak < total / 4, `peak ${peak} of ${total}`);
  } finally {
    await store.close();
    await loaded.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a bias several blocks share (onnxruntime-optimized GPT-2 export) is rotated as the in-memory path does', { skip: existsSync(ORT_GPT2) ? false : 'third-party model not in ../shared' }, async () => {
  const model = parseModel(readFileSync(ORT_GPT2));
  const dir = mkdtempSync(path.join(tmpdir(), 'obr-rotstream-'));
  const { source, store } = await inStore(model, dir);
  try {
    await compare('onnxruntime GPT-2', source, model, store);
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a merged decoder\'s with-past branch: its rotated graph alone + the rotated no-past weights = rotating the whole branch, byte for byte', async () => {
  for (const foldConstants of [false, true]) {
    const { merged: mergedModel } = await tinyMergedDecoder({ foldConstants });
    const merged = splitMergedDecoder(mergedModel);
    const noPast = rotateModel(merged.noPast, { seed: 0 }).model;
    const branch = withSharedWeightsOf(merged, merged.withPast, noPast);
    // Before: the whole branch rotated (its weights read and rotated, then replaced by the no-past branch's).
    const whole = withSharedWeightsOf(merged, rotateModel(branch, { seed: 0 }).model, noPast);
    const graphOnly = await rotateGraphOnly(branch, { seed: 0 });
    assert.ok(graphOnly.placeholders.size > 0);
    const now = withSharedWeightsOf(merged, graphOnly.model, noPast);
    assert.ok(Buffer.from(encodeModel(now)).equals(Buffer.from(encodeModel(whole))), `foldConstants ${foldConstants}: same branch`);
    // Every placeholder was replaced by a rotated no-past weight.
    const left = new Set(now.graph!.initializer!);
    assert.ok(!graphOnly.model.graph!.initializer!.some((t) => graphOnly.placeholders.has(t.name!) && left.has(t)));
  }
});
