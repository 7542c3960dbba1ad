// Group-wise packed export on the bundled tiny LLaMA (test/fixtures/models/tiny): with groups of
// 32 and 128 columns, symmetric and asymmetric, the MatMulNBits model (block = group, real
// per-block scales and zero points) gives the logits of the fake-quant model that holds
// scale·(code − zero) as float32 weights; the packed layers read back exactly; the size counts the
// scales and zero points.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { loadModel, wrapModel } from '../../../src/onnx/load';
import { findLinearLayers } from '../../../src/onnx/linear';
import { packMatMulNBits, unpackMatMulNBits, type QuantizedLayer } from '../../../src/onnx/packed';
import { readLayerWeight, replaceLayerWeights } from '../../../src/onnx/weights';
import { encodeModel, type ModelProto } from '../../../src/onnx/proto';
import { packedModel } from '../../../src/pipeline/transforms';
import { dequantizeGroups, quantizeRtnGroups } from '../../unit/onnx/quantHelpers';

const ONE_THREAD: ort.InferenceSession.SessionOptions = { intraOpNumThreads: 1, interOpNumThreads: 1 };
const TINY = join(__dirname, '..', '..', 'fixtures', 'models', 'tiny');
const have = existsSync(join(TINY, 'model.onnx'));
const VOCAB = 2048;
const [B, S] = [2, 12];

async function logits(m: ModelProto): Promise<Float32Array> {
  const s = await ort.InferenceSession.create(encodeModel(m), ONE_THREAD);
  const ids = new BigInt64Array(B * S).map((_, i) => BigInt((i * 97 + 13) % VOCAB));
  const mask = new BigInt64Array(B * S).fill(1n);
  const pos = new BigInt64Array(B * S).map((_, i) => BigInt(i % S));
  const r = await s.run({
    input_ids: new ort.Tensor('int64', ids, [B, S]),
    attention_mask: new ort.Tensor('int64', mask, [B, S]),
    position_ids: new ort.Tensor('int64', pos, [B, S]),
  });
  await s.release();
  return r.logits.data as Float32Array;
}

for (const groupSize of [32, 128] as const) {
  for (const asymmetric of [false, true]) {
    const label = `g${groupSize} ${asymmetric ? 'asymmetric' : 'symmetric'}`;
    test(`tiny model, ${label}: packed MatMulNBits logits match the fake-quant model; codes, scales and zero points read back; size counts them`, { skip: !have && 'tiny fixture not built yet' }, async () => {
      const loaded = await loadModel(join(TINY, 'model.onnx'));
      try {
        // The decoder-block projections, as the pipeline compresses them (50% pruned, 4-bit).
        const layers = findLinearLayers(loaded.model).filter((l) => l.block !== null);
        assert.ok(layers.some((l) => l.inFeatures % groupSize !== 0 || l.inFeatures / groupSize > 1), 'several groups per row');
        const quantized = new Map<string, ReturnType<typeof quantizeRtnGroups>>();
        const fake = new Map<string, Float32Array>();
        for (const l of layers) {
          const q = quantizeRtnGroups(await readLayerWeight(loaded, l), l.outFeatures, l.inFeatures, groupSize, asymmetric);
          quantized.set(l.name, q);
          fake.set(l.name, dequantizeGroups(q, l.outFeatures, l.inFeatures));
        }
        if (asymmetric) assert.ok([...quantized.values()].some((q) => q.zeros!.some((z) => z !== 0)), 'some zero points are not the mid code');
        const fakeModel = replaceLayerWeights(loaded.model, findLinearLayers(loaded.model), fake);
        // Through the pipeline's seam (float64 scales and zero points, block size = group size).
        const out = packedModel(
          loaded.model,
          findLinearLayers(loaded.model),
          layers.map((l) => {
            const q = quantized.get(l.name)!;
            return { layer: l, codes: q.codes, scales: Float64Array.from(q.scales), ...(q.zeros ? { zeros: q.zeros } : {}), groupSize };
          }),
          4,
        );
        assert.ok(out.model && out.size, out.warning);
        const nodes = out.model.graph!.node!.filter((n) => n.opType === 'MatMulNBits');
        assert.equal(nodes.length, layers.length);
        for (const n of nodes) assert.equal(Number(n.attribute!.find((a) => a.name === 'block_size')!.i), groupSize);

        const [a, b] = [await logits(fakeModel), await logits(out.model)];
        let maxAbs = 0;
        let maxDiff = 0;
        for (let i = 0; i < a.length; i++) {
          maxAbs = Math.max(maxAbs, Math.abs(a[i]!));
          maxDiff = Math.max(maxDiff, Math.abs(a[i]! - b[i]!));
        }
        // Same float32 weights, different summation order inside MatMulNBits: float32 round-off.
        console.log(`# ${label}: max |Δlogit| packed vs simulated ${maxDiff.toExponential(2)} (max |logit| ${maxAbs.toFixed(2)})`);
        assert.ok(maxDiff <= 1e-4 * Math.max(1, maxAbs), `${label}: max |Δlogit| ${maxDiff} (max |logit| ${maxAbs})`);

        // Read back: the packed model holds exactly our codes, scales and zero points.
        const packedLoaded = wrapModel(out.model);
        for (const l of layers) {
          const q = quantized.get(l.name)!;
          const u = await unpackMatMulNBits(packedLoaded, l.name);
          assert.ok(u, `${l.name} packed`);
          assert.equal(u.blockSize, groupSize);
          assert.deepEqual(u.codes, q.codes, `${l.name} codes`);
          assert.deepEqual(u.scales, q.scales, `${l.name} scales`);
          assert.deepEqual(Array.from(u.zeros), q.zeros ? Array.from(q.zeros) : new Array(u.zeros.length).fill(0), `${l.name} zero points`);
        }

        // Size: ½ byte per code (K padded to whole blocks) + an fp32 scale per block + a 4-bit zero
        // point per block (each row's zero points padded to a byte) — whether symmetric or not.
        let bytes = 0;
        let weights = 0;
        for (const l of layers) {
          const blocks = Math.ceil(l.inFeatures / groupSize);
          bytes += l.outFeatures * (blocks * groupSize * 0.5 + blocks * 4 + Math.ceil(blocks / 2));
          weights += l.outFeatures * l.inFeatures;
        }
        assert.equal(out.size.layerBytes, bytes);
        assert.equal(out.size.weights, weights);
        assert.ok(Math.abs(out.size.bitsPerWeight - (8 * bytes) / weights) < 1e-4, `${out.size.bitsPerWeight} bits/weight`);
        // g32: 4 + 32/32 (scales) + 4/32 (zero points) = 5.125 bits; g128: ≈ 4.3 (rows of 128 pad a zero point byte).
        assert.ok(out.size.bitsPerWeight >= 4 + 36 / groupSize - 1e-9 && out.size.bitsPerWeight < 4 + 36 / groupSize + 0.05, `${out.size.bitsPerWeight} bits/weight`);
      } finally {
        await loaded.close();
      }
    });
  }
}

test('packMatMulNBits refuses groups that differ from the block size', { skip: !have && 'tiny fixture not built yet' }, async () => {
  const loaded = await loadModel(join(TINY, 'model.onnx'));
  try {
    const layers = findLinearLayers(loaded.model);
    const l = layers.find((x) => x.block !== null)!;
    const q: QuantizedLayer = quantizeRtnGroups(await readLayerWeight(loaded, l), l.outFeatures, l.inFeatures, 64, false);
    assert.throws(() => packMatMulNBits(loaded.model, layers, new Map([[l.name, q]]), { blockSize: 32 }), /groups of 64 columns but the block size is 32/);
  } finally {
    await loaded.close();
  }
});
