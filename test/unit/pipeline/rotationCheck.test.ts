// The rotation check compares the rotated, not-yet-quantized model with the dense model on a few
// calibration windows and stops a job whose rotation doesn't fit the graph — before calibration.
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { encodeModel, type ModelProto } from '../../../src/onnx/proto';
import { rotateModel } from '../../../src/onnx/rotate';
import { GraphPatternFormatError, readFloat64, withValues } from '../../../src/onnx/rotateGraph';
import { checkRotation, relativeDifference, rotationTolerance } from '../../../src/pipeline/rotationCheck';
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
