// The rotation check compares the rotated, not-yet-quantized model with the dense model on a few
// calibration windows and stops a job whose rotation doesn't fit the graph — before calibration.
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { encodeModel, type ModelProto } from '../../../src/onnx/proto';
import { rotateModel, rotateModelStreamed } from '../../../src/onnx/rotate';
import { GraphPatternFormatError, readFloat64, withValues } from '../../../src/onnx/rotateGraph';
import { WeightStore } from '../../../src/onnx/store';
import { externalDataEntry, isExternal } from '../../../src/onnx/tensor';
import { checkRotation, checkRotationStreamed, relativeDifference, rotationTolerance } from '../../../src/pipeline/rotationCheck';
import type { TokenWindows } from '../../../src/runtime/text';
import { miniLlama } from '../onnx/miniLlama';

const SEQ = 12;
const CFG = { vocab: 48, heads: 5, kvHeads: 1, headDim: 8, intermediate: 52, layers: 2, seq: SEQ };
const calib: TokenWindows = { ids: Int32Array.from({ length: 3 * SEQ }, (_, i) => (i * 11 + 5) % CFG.vocab), count: 3, seqlen: SEQ, offsets: [0, SEQ, 2 * SEQ] };
const opts = { executionProviders: ['cpu'], abits: 4, kvbits: 4 };

test('relative difference and tolerances', () => {
  assert.equal(relativeDifference([3, 4], [3, 4]), 0);
  assert.ok(Math.abs(relativeDifference([3, 4], [3, 5]) - 0.2) < 1e-15);
  assert.ok(rotationTolerance(false) < rotationTolerance(true));
});

test('a correct rotation (5 query heads, 1 KV head) passes the check with float-rounding error', async () => {
  const dense = miniLlama(CFG);
  const { model } = rotateModel(dense, { seed: 0 });
  const r = await checkRotation(dense, model, calib, encodeModel, opts);
  assert.equal(r.windows, 2);
  assert.ok(r.relativeError < 1e-5, `${r.relativeError}`);
});

test('a model over the in-memory limit is checked from a file with external data in the working folder, removed after', async () => {
  // onnxruntime takes at most 2 GiB from memory; a TinyLlama-sized rotated model is bigger. The
  // limit is lowered here so the spill path runs on a small model: same result as from memory.
  const dense = miniLlama(CFG);
  const { model } = rotateModel(dense, { seed: 0 });
  const inMemory = await checkRotation(dense, model, calib, encodeModel, opts);
  const dir = await mkdtemp(join(tmpdir(), 'obr-rotcheck-'));
  try {
    const encodes: number[] = [];
    const spilled = await checkRotation(dense, model, calib, (m) => (encodes.push(1), encodeModel(m)), { ...opts, spillDir: dir, inMemoryLimit: 0 });
    assert.equal(encodes.length, 0, 'every model went through a file, none through memory');
    assert.equal(spilled.relativeError, inMemory.relativeError);
    assert.deepEqual(await readdir(dir), [], 'the spilled models are removed');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a rotation that does not fit the graph stops with the geometry found and what to do', async () => {
  const dense = miniLlama(CFG);
  const { model } = rotateModel(dense, { seed: 0 });
  // Break it the way a wrong head geometry would: o_proj's rotated rows no longer match v's heads.
  const broken: ModelProto = { ...model, graph: { ...model.graph, initializer: model.graph!.initializer!.map((t) => {
    if (t.name !== 'model.layers.0.self_attn.o_proj.weight') return t;
    const w = readFloat64(t);
    const cols = 40;
    const swapped = new Float64Array(w.length);
    // Swap the first two heads' rows (head_dim 8 rows each).
    for (let r = 0; r < 40; r++) {
      const from = r < 8 ? r + 8 : r < 16 ? r - 8 : r;
      swapped.set(w.subarray(from * cols, (from + 1) * cols), r * cols);
    }
    return withValues(t, swapped);
  }) } };
  await assert.rejects(checkRotation(dense, broken, calib, encodeModel, opts), (e: unknown) => {
    assert.ok(e instanceof GraphPatternFormatError);
    assert.match(e.message, /^the rotated model's logits differ from the dense model's by \d\.\d+e?-?\d* \(relative, on 2 calibration windows; float tolerance 0\.001\): the rotation does not fit this graph\. It found 5 query heads, 1 KV heads, head_dim 8, hidden 40, FF 52 — pass --heads, --kv-heads and --head-dim/);
    return true;
  });
});

/** The dense and rotated mini model with their weights in a working store (as in a job). */
async function inStore(dense: ModelProto, dir: string) {
  const store = new WeightStore(dir, join(dir, 'working.data'));
  const source = await store.externalize(dense);
  const rotated = await rotateModelStreamed(source, { seed: 0 }, store);
  return { store, source, rotated: rotated.model };
}

test('streamed through the blocks (weights from the store, a block at a time), the check gives the whole-model result', async () => {
  const dense = miniLlama(CFG);
  const whole = await checkRotation(dense, rotateModel(dense, { seed: 0 }).model, calib, encodeModel, opts);
  const dir = await mkdtemp(join(tmpdir(), 'obr-rotcheck-'));
  const { store, source, rotated } = await inStore(dense, dir);
  try {
    assert.ok(source.graph!.initializer!.some(isExternal) && rotated.graph!.initializer!.some(isExternal), 'weights are external references');
    const streamed = await checkRotationStreamed(source, rotated, calib, { ...opts, weights: store });
    assert.equal(streamed.streamed, true);
    assert.equal(streamed.windows, 2);
    // Block-by-block forwards run the same kernels on the same tensors as the whole model.
    assert.ok(Math.abs(streamed.relativeError - whole.relativeError) < 1e-6, `${streamed.relativeError} vs ${whole.relativeError}`);
    assert.equal(store.resident, 0, 'every block\'s weights handed back');
    const total = source.graph!.initializer!.filter(isExternal).reduce((s, t) => s + Number(externalDataEntry(t).length), 0);
    assert.ok(store.peakResident < total / 2, `peak ${store.peakResident} of ${total} B: a block or a table, not the model`);
  } finally {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test('streamed, a wrong rotation stops with the same message', async () => {
  const dense = miniLlama(CFG);
  const dir = await mkdtemp(join(tmpdir(), 'obr-rotcheck-'));
  const { store, source, rotated } = await inStore(dense, dir);
  try {
    // As above: swap the first two heads' rows of o_proj, here in the store.
    const inits = [...rotated.graph!.initializer!];
    const at = inits.findIndex((t) => t.name === 'model.layers.0.self_attn.o_proj.weight');
    const bytes = await store.readTensor(inits[at]!);
    const w = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
    const swapped = new Float32Array(w.length);
    for (let r = 0; r < 40; r++) {
      const from = r < 8 ? r + 8 : r < 16 ? r - 8 : r;
      swapped.set(w.subarray(from * 40, (from + 1) * 40), r * 40);
    }
    inits[at] = await store.put(inits[at]!, new Uint8Array(swapped.buffer));
    const broken: ModelProto = { ...rotated, graph: { ...rotated.graph, initializer: inits } };
    await assert.rejects(checkRotationStreamed(source, broken, calib, { ...opts, weights: store }), (e: unknown) => {
      assert.ok(e instanceof GraphPatternFormatError);
      assert.match(e.message, /^the rotated model's logits differ from the dense model's by \d\.\d+e?-?\d* \(relative, on 2 calibration windows; float tolerance 0\.001\): the rotation does not fit this graph\. It found 5 query heads, 1 KV heads, head_dim 8, hidden 40, FF 52 — pass --heads, --kv-heads and --head-dim/);
      return true;
    });
  } finally {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
});
