// The ONNX layer on the bundled tiny LLaMA (test/fixtures/models/tiny): layers and roles, bit-exact
// read → write round trips (fp32, fp16, external data, KV cache), and the three transforms.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { loadModel, type LoadedModel } from '../../../src/onnx/load';
import { findLinearLayers, groupLayersByInput } from '../../../src/onnx/linear';
import { inspectModel } from '../../../src/onnx/inspect';
import { writeModel } from '../../../src/onnx/write';
import { addHessianCapture } from '../../../src/onnx/hessian';
import { addNllHead } from '../../../src/onnx/nll';
import { packMatMulNBits, type QuantizedLayer } from '../../../src/onnx/packed';
import { readLayerWeight, replaceLayerWeights } from '../../../src/onnx/weights';
import { encodeModel, DataType, type ModelProto } from '../../../src/onnx/proto';
import { dequantize, quantizeRtn } from '../../unit/onnx/quantHelpers';

/** Single-threaded sessions: the suites share two cores with others; results don't depend on it. */
const ONE_THREAD: ort.InferenceSession.SessionOptions = { intraOpNumThreads: 1, interOpNumThreads: 1 };

const TINY = join(__dirname, '..', '..', 'fixtures', 'models', 'tiny');
const have = existsSync(join(TINY, 'model.onnx'));
const VOCAB = 2048;
const [B, S] = [2, 12];

function feeds(inputs: readonly string[], past = 0): Record<string, ort.Tensor> {
  const ids = new BigInt64Array(B * S).map((_, i) => BigInt((i * 97 + 13) % VOCAB));
  const mask = new BigInt64Array(B * (past + S)).fill(1n);
  mask[mask.length - 1] = 0n; // one padded position
  mask[mask.length - 2] = 0n;
  const pos = new BigInt64Array(B * S).map((_, i) => BigInt(past + (i % S)));
  const out: Record<string, ort.Tensor> = {
    input_ids: new ort.Tensor('int64', ids, [B, S]),
    attention_mask: new ort.Tensor('int64', mask, [B, past + S]),
    position_ids: new ort.Tensor('int64', pos, [B, S]),
  };
  for (const name of inputs) {
    if (name.startsWith('past_key_values')) {
      const data = new Float32Array(B * 4 * past * 32).map((_, i) => Math.sin(i) * 0.5);
      out[name] = new ort.Tensor('float32', data, [B, 4, past, 32]);
    }
  }
  return out;
}

async function runFile(path: string, past = 0): Promise<Record<string, ort.Tensor>> {
  const s = await ort.InferenceSession.create(path, ONE_THREAD);
  const r = await s.run(feeds(s.inputNames, past));
  await s.release();
  return r;
}

async function runProto(m: ModelProto): Promise<Record<string, ort.Tensor>> {
  const s = await ort.InferenceSession.create(encodeModel(m), ONE_THREAD);
  const r = await s.run(feeds(s.inputNames));
  await s.release();
  return r;
}

function sameBits(a: ort.Tensor, b: ort.Tensor): boolean {
  const x = a.data as Float32Array;
  const y = b.data as Float32Array;
  return x.length === y.length && Buffer.from(x.buffer, x.byteOffset, x.byteLength).equals(Buffer.from(y.buffer, y.byteOffset, y.byteLength));
}

test('tiny model: 29 linear layers, roles and blocks from topology, 17 Hessian groups', { skip: !have && 'tiny fixture not built yet' }, async () => {
  const report = await inspectModel(join(TINY, 'model.onnx'));
  assert.equal(report.model.opset, 17);
  assert.deepEqual(report.model.inputs.map((i) => i.name), ['input_ids', 'attention_mask', 'position_ids']);
  assert.equal(report.layers.length, 4 * 7 + 1);
  for (const l of report.layers) {
    assert.equal(l.roleSource, 'topology');
    if (l.role === 'lm_head') {
      assert.equal(l.block, null);
      assert.deepEqual([l.inFeatures, l.outFeatures], [128, VOCAB]);
    } else {
      assert.ok(l.nodeName.startsWith(`/model/layers.${l.block}/`) && l.nodeName.includes(`/${l.role}_proj/`), `${l.nodeName}: ${l.role} ${l.block}`);
    }
  }
  assert.equal(report.groups.length, 4 * 4 + 1);
  for (const f of ['model_with_past.onnx', 'model.fp16.onnx', 'model.external.onnx']) {
    const other = await inspectModel(join(TINY, f));
    assert.deepEqual(other.layers.map((l) => [l.name, l.role, l.block]), report.layers.map((l) => [l.name, l.role, l.block]), f);
  }
});

for (const [file, options, past] of [
  ['model.onnx', {}, 0],
  ['model.fp16.onnx', {}, 0],
  ['model.external.onnx', { externalData: true }, 0],
  ['model.external.onnx', { externalData: false }, 0],
  ['model.onnx', { externalData: true }, 0],
  ['model_with_past.onnx', {}, 3],
] as const) {
  test(`round trip ${file} → ${JSON.stringify(options)}: bit-identical onnxruntime outputs`, { skip: !have && 'tiny fixture not built yet' }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'obr-tiny-'));
    let loaded: LoadedModel | undefined;
    try {
      loaded = await loadModel(join(TINY, file));
      const out = join(dir, 'copy.onnx');
      const w = await writeModel(loaded.model, out, { source: loaded, ...options });
      assert.equal(Boolean(w.dataPath), options.externalData === true);
      const [a, b] = [await runFile(join(TINY, file), past), await runFile(out, past)];
      assert.deepEqual(Object.keys(a), Object.keys(b));
      for (const k of Object.keys(a)) assert.ok(sameBits(a[k], b[k]), `${k} differs`);
    } finally {
      await loaded?.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
}

test('tiny model: Hessian of block 1 equals a float64 computation on the exposed activations', { skip: !have && 'tiny fixture not built yet' }, async () => {
  const loaded = await loadModel(join(TINY, 'model.onnx'));
  const layers = findLinearLayers(loaded.model);
  const inputs = groupLayersByInput(layers).filter((g) => g.block === 1).map((g) => g.inputName);
  const cap = addHessianCapture(loaded.model, layers, { inputs });
  for (const c of cap.captures) cap.model.graph!.output!.push({ name: c.inputName, type: { tensorType: { elemType: DataType.FLOAT } } });
  const r = await runProto(cap.model);
  const mask = feeds([]).attention_mask.data as BigInt64Array;
  assert.equal((r[cap.tokenCount].data as Float32Array)[0], B * S - 2);
  for (const c of cap.captures) {
    const x = r[c.inputName].data as Float32Array;
    const n = c.inFeatures;
    const ref = new Float64Array(n * n);
    for (let row = 0; row < B * S; row++) {
      if (mask[row] === 0n) continue;
      for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) ref[i * n + j] += x[row * n + i] * x[row * n + j];
    }
    const got = r[c.xtx].data as Float32Array;
    let scale = 0;
    for (const v of ref) scale = Math.max(scale, Math.abs(v));
    for (let i = 0; i < ref.length; i++) assert.ok(Math.abs(got[i] - ref[i]) <= 1e-5 * scale, `${c.inputName}[${i}]`);
    const sq = r[c.sumSquares].data as Float32Array;
    for (let i = 0; i < n; i++) assert.ok(Math.abs(sq[i] - ref[i * n + i]) <= 1e-5 * scale);
  }
  await loaded.close();
});

test('tiny model with KV cache: the last S mask columns weight the capture', { skip: !have && 'tiny fixture not built yet' }, async () => {
  const loaded = await loadModel(join(TINY, 'model_with_past.onnx'));
  const layers = findLinearLayers(loaded.model);
  const first = layers[0];
  const cap = addHessianCapture(loaded.model, layers, { inputs: [first.inputName] });
  cap.model.graph!.output!.push({ name: first.inputName, type: { tensorType: { elemType: DataType.FLOAT } } });
  const s = await ort.InferenceSession.create(encodeModel(cap.model), ONE_THREAD);
  const past = 3;
  const f = feeds(s.inputNames, past);
  const r = await s.run(f);
  await s.release();
  const mask = f.attention_mask.data as BigInt64Array;
  const x = r[first.inputName].data as Float32Array;
  const n = first.inFeatures;
  const sq = new Float64Array(n);
  let count = 0;
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < S; t++) {
      if (mask[b * (past + S) + past + t] === 0n) continue;
      count++;
      for (let i = 0; i < n; i++) sq[i] += x[(b * S + t) * n + i] ** 2;
    }
  }
  assert.equal((r[cap.tokenCount].data as Float32Array)[0], count);
  const got = r[cap.byInput.get(first.inputName)!.sumSquares].data as Float32Array;
  for (let i = 0; i < n; i++) assert.ok(Math.abs(got[i] - sq[i]) <= 1e-5 * Math.max(1, sq[i]), `Σx²[${i}]`);
  await loaded.close();
});

test('tiny model: token_nll equals −log_softmax(logits) at the next token', { skip: !have && 'tiny fixture not built yet' }, async () => {
  const loaded = await loadModel(join(TINY, 'model.onnx'));
  const r = await runProto(addNllHead(loaded.model));
  const logits = r.logits.data as Float32Array;
  const nll = r.token_nll.data as Float32Array;
  const ids = feeds([]).input_ids.data as BigInt64Array;
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < S - 1; t++) {
      const row = logits.subarray((b * S + t) * VOCAB, (b * S + t + 1) * VOCAB);
      let max = -Infinity;
      for (const v of row) max = Math.max(max, v);
      let sum = 0;
      for (const v of row) sum += Math.exp(v - max);
      const expected = Math.log(sum) + max - row[Number(ids[b * S + t + 1])];
      assert.ok(Math.abs(nll[b * (S - 1) + t] - expected) <= 1e-5 * Math.max(1, expected), `${b},${t}`);
    }
  }
  await loaded.close();
});

test('tiny model: packed MatMulNBits logits match the fake-quant model; size accounted exactly', { skip: !have && 'tiny fixture not built yet' }, async () => {
  const loaded = await loadModel(join(TINY, 'model.onnx'));
  const layers = findLinearLayers(loaded.model);
  const quantized = new Map<string, QuantizedLayer>();
  const fake = new Map<string, Float32Array>();
  for (const l of layers) {
    const q = quantizeRtn(await readLayerWeight(loaded, l), l.outFeatures, l.inFeatures, 4, 0.5);
    quantized.set(l.name, q);
    fake.set(l.name, dequantize(q, l.outFeatures, l.inFeatures));
  }
  const fakeModel = replaceLayerWeights(loaded.model, layers, fake);
  for (const blockSize of [32, 128] as const) {
    const packed = packMatMulNBits(loaded.model, layers, quantized, { blockSize });
    const [a, b] = [(await runProto(fakeModel)).logits.data as Float32Array, (await runProto(packed.model)).logits.data as Float32Array];
    let maxAbs = 0;
    let maxDiff = 0;
    for (let i = 0; i < a.length; i++) {
      maxAbs = Math.max(maxAbs, Math.abs(a[i]));
      maxDiff = Math.max(maxDiff, Math.abs(a[i] - b[i]));
    }
    assert.ok(maxDiff <= 1e-4 * Math.max(1, maxAbs), `block ${blockSize}: max |Δlogit| ${maxDiff}`);
    // codes (½ byte) + an fp32 scale and a 4-bit zero point per block (zero points padded per row).
    let bytes = 0;
    let weights = 0;
    for (const l of layers) {
      const blocks = Math.ceil(l.inFeatures / blockSize);
      bytes += l.outFeatures * (blocks * blockSize * 0.5 + blocks * 4 + Math.ceil(blocks / 2));
      weights += l.outFeatures * l.inFeatures;
    }
    assert.equal(packed.packedBytes, bytes);
    assert.ok(Math.abs(packed.bytesPerWeight - bytes / weights) < 1e-12);
    assert.ok(packed.bytesPerWeight > 0.5 && packed.bytesPerWeight < 0.66, `${packed.bytesPerWeight} bytes/weight`);
    if (blockSize === 32) {
      // Written to disk (external data) and run from the file: the same logits.
      const dir = await mkdtemp(join(tmpdir(), 'obr-packed-'));
      try {
        const w = await writeModel(packed.model, join(dir, 'tiny.packed.onnx'), { source: loaded, externalData: true });
        // The file shrinks by the float weights and grows by the packed ones (+ alignment padding).
        const expected = (await stat(join(TINY, 'model.onnx'))).size - packed.originalBytes + packed.packedBytes;
        assert.ok(Math.abs(w.bytes + w.dataBytes - expected) < 200_000, `packed ${w.bytes + w.dataBytes} bytes, expected ≈ ${expected}`);
        assert.ok(sameBits((await runFile(join(dir, 'tiny.packed.onnx'))).logits, (await runProto(packed.model)).logits));
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    }
  }
  await loaded.close();
});
