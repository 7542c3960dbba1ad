// `obr compress --group-size 32 --asym` on the bundled small model (media/models/small; few short
// calibration windows): the three outputs with -g32a names, a report carrying the group size and
// asymmetry, a packed model whose MatMulNBits blocks are the groups with real scales and zero
// points and whose logits match the simulated model's; and bad group sizes exit 2 writing nothing.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import * as ort from 'onnxruntime-node';
import { loadModel } from '../../../src/onnx/load';
import { findLinearLayers } from '../../../src/onnx/linear';
import { unpackMatMulNBits } from '../../../src/onnx/packed';
import { packWithCompressedWeights } from '../../../src/pipeline/bench/runtime';
import { readLayerWeight64 } from '../../../src/onnx/weights';
import type { CompressionReport } from '../../../src/protocol/report';
import { ROOT, shortText, tempDir, TINY, runObr } from './fixtures';

const SMALL = path.join(ROOT, 'media', 'models', 'small', 'model.onnx');
const haveSmall = existsSync(SMALL);

async function logits(file: string, ids: BigInt64Array, seq: number): Promise<Float32Array> {
  const s = await ort.InferenceSession.create(file, { intraOpNumThreads: 1, interOpNumThreads: 1 });
  const feeds: Record<string, ort.Tensor> = { input_ids: new ort.Tensor('int64', ids, [1, seq]) };
  if (s.inputNames.includes('attention_mask')) feeds.attention_mask = new ort.Tensor('int64', new BigInt64Array(seq).fill(1n), [1, seq]);
  if (s.inputNames.includes('position_ids')) feeds.position_ids = new ort.Tensor('int64', BigInt64Array.from({ length: seq }, (_, i) => BigInt(i)), [1, seq]);
  const r = await s.run(feeds);
  await s.release();
  return r.logits.data as Float32Array;
}

test('obr compress --group-size 32 --asym (small model): -g32a outputs, report, packed blocks = groups, packed logits = simulated logits', { skip: !haveSmall && 'media/models/small is not built', timeout: 600_000 }, async () => {
  const dir = tempDir('obr-groups-');
  const calib = shortText(dir, 'sotu-calib.txt', 40_000);
  const evalText = shortText(dir, 'sotu-test.txt', 20_000);
  const out = path.join(dir, 'out');
  // W4A16: the simulated model is the compressed weights alone, so the packed model must match it.
  const r = await runObr('compress', SMALL, '--recipe', 'obr-gptq', '--group-size', '32', '--asym', '--abits', '16', '--kvbits', '16',
    '--calib', calib, '--samples', '4', '--seqlen', '64', '--eval-text', evalText, '--eval-windows', '2', '--ep', 'cpu', '--out', out);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /4-bit weights \(groups of 32, asymmetric\)/);
  const names = readdirSync(out).filter((f) => f.startsWith('model.')).sort();
  assert.deepEqual(names.filter((f) => !f.endsWith('.data')), [
    'model.obr-gptq-w4-s50-g32a.packed.onnx',
    'model.obr-gptq-w4a16kv16-s50-g32a.onnx',
    'model.obr-gptq-w4a16kv16-s50-g32a.report.json',
  ]);
  assert.ok(!readdirSync(out).some((f) => f.startsWith('.')), 'no working folder left');

  const report = JSON.parse(readFileSync(path.join(out, 'model.obr-gptq-w4a16kv16-s50-g32a.report.json'), 'utf8')) as CompressionReport;
  assert.equal(report.options.groupSize, 32);
  assert.equal(report.options.asymmetric, true);
  assert.equal(report.layers.length, 28);
  for (const l of report.layers) {
    assert.equal(l.groupSize, 32, l.name);
    assert.equal(l.asymmetric, true, l.name);
    assert.equal(l.rowScales, undefined, `${l.name}: group scales live in the packed model`);
  }
  assert.ok(report.perplexity.compressed && Number.isFinite(report.perplexity.compressed.perplexity));
  // Size: 4-bit codes + an fp32 scale and a 4-bit zero point per 32 weights = 5.125 bits per weight.
  assert.ok(report.packedSize, 'packed size reported');
  assert.ok(Math.abs(report.packedSize.bitsPerWeight - 5.125) < 1e-3, `${report.packedSize.bitsPerWeight} bits/weight`);
  assert.ok(report.packedSize.fileBytes > report.packedSize.layerBytes);

  // The packed model: blocks of 32 with per-block scales and zero points that reproduce the
  // simulated weights exactly (float32 rounding of scale·(code − zero)).
  const sim = await loadModel(path.join(out, 'model.obr-gptq-w4a16kv16-s50-g32a.onnx'));
  const packed = await loadModel(path.join(out, 'model.obr-gptq-w4-s50-g32a.packed.onnx'));
  try {
    let nonMidZeros = 0;
    let distinctScales = 0;
    for (const layer of findLinearLayers(sim.model).filter((l) => l.block !== null)) {
      const u = await unpackMatMulNBits(packed, layer.name);
      assert.ok(u, `${layer.name} is packed`);
      assert.equal(u.blockSize, 32);
      const w = await readLayerWeight64(sim, layer);
      let maxErr = 0;
      for (let n = 0; n < u.rows; n++) {
        for (let b = 0; b < u.blocks; b++) {
          const s = u.scales[n * u.blocks + b]!;
          const z = u.zeros[n * u.blocks + b]!;
          if (z !== 0) nonMidZeros++;
          if (b > 0 && s !== u.scales[n * u.blocks]) distinctScales++;
          for (let k = b * 32; k < Math.min(u.cols, (b + 1) * 32); k++) maxErr = Math.max(maxErr, Math.abs(w[n * u.cols + k]! - Math.fround(s * (u.codes[n * u.cols + k]! - z))));
        }
      }
      assert.ok(maxErr <= 1e-6, `${layer.name}: simulated weight vs packed dequantization differ by ${maxErr}`);
    }
    assert.ok(nonMidZeros > 0, 'asymmetric: zero points other than the mid code');
    assert.ok(distinctScales > 0, 'real per-block scales, not a row scale repeated');
  } finally {
    await sim.close();
    await packed.close();
  }
  const seq = 24;
  const ids = BigInt64Array.from({ length: seq }, (_, i) => BigInt((i * 131 + 7) % 4096));
  const a = await logits(path.join(out, 'model.obr-gptq-w4a16kv16-s50-g32a.onnx'), ids, seq);
  const b = await logits(path.join(out, 'model.obr-gptq-w4-s50-g32a.packed.onnx'), ids, seq);
  let maxAbs = 0;
  let maxDiff = 0;
  for (let i = 0; i < a.length; i++) {
    maxAbs = Math.max(maxAbs, Math.abs(a[i]!));
    maxDiff = Math.max(maxDiff, Math.abs(a[i]! - b[i]!));
  }
  console.log(`# small model g32 asym: max |Δlogit| packed vs simulated ${maxDiff.toExponential(2)} (max |logit| ${maxAbs.toFixed(2)})`);
  assert.ok(maxDiff <= 1e-4 * Math.max(1, maxAbs), `max |Δlogit| ${maxDiff} (max |logit| ${maxAbs})`);

  // The runtime benchmark packs the KV-cache twin with the same weights: with groups it takes the
  // codes, group scales and zero points from the job's packed model (the report has none).
  const past = path.join(path.dirname(SMALL), 'model_with_past.onnx');
  const pastOut = path.join(dir, 'past.packed.onnx');
  const r2 = await packWithCompressedWeights(past, report, pastOut, { seed: 0 });
  assert.equal(r2.warning, undefined);
  const job = await loadModel(path.join(out, 'model.obr-gptq-w4-s50-g32a.packed.onnx'));
  const twin = await loadModel(pastOut);
  try {
    const pastModel = await loadModel(past);
    const pastLayers = findLinearLayers(pastModel.model).filter((l) => l.block !== null);
    await pastModel.close();
    assert.equal(pastLayers.length, 28);
    for (const l of pastLayers) {
      const a = (await unpackMatMulNBits(twin, l.name))!;
      const src = report.layers.find((x) => x.block === l.block && x.role === l.role)!;
      const b = (await unpackMatMulNBits(job, src.name))!;
      assert.ok(a && b, l.name);
      assert.equal(a.blockSize, 32);
      assert.deepEqual(a.codes, b.codes, `${l.name} codes`);
      assert.deepEqual(a.scales, b.scales, `${l.name} scales`);
      assert.deepEqual(a.zeros, b.zeros, `${l.name} zero points`);
    }
  } finally {
    await job.close();
    await twin.close();
  }
});

test('obr compress: a group size outside 0|32|64|128|256, or wider than a layer, exits 2 naming the allowed values and writes nothing', { timeout: 240_000 }, async () => {
  const dir = tempDir('obr-groups-bad-');
  const out = path.join(dir, 'out');
  const cases: Array<[string[], RegExp]> = [
    [['--group-size', '48'], /--group-size: group size 48: use one of 0, 32, 64, 128, 256/],
    [['--group-size', 'big'], /--group-size: group size "big": use one of 0, 32, 64, 128, 256/],
    [['--group-size=-32'], /group size -32: use one of 0, 32, 64, 128, 256/],
    // The tiny model's projections are 128 wide: 256 does not fit (checked after loading).
    [['--group-size', '256', '--asym'], /group size 256 is larger than the input width 128 of layer .*; use one of 0, 32, 64, 128/],
  ];
  const results = await Promise.all(cases.map(([args]) => runObr('compress', TINY, ...args, '--ep', 'cpu', '--out', out)));
  for (let i = 0; i < cases.length; i++) {
    const [args, message] = cases[i]!;
    const r = results[i]!;
    assert.equal(r.status, 2, `${args.join(' ')} → exit ${r.status}\n${r.stderr}`);
    assert.match(r.stderr, message, args.join(' '));
    assert.doesNotMatch(r.stderr, /\n\s+at .*\.(ts|js):\d+/, `${args.join(' ')}: no stack trace`);
  }
  assert.ok(!existsSync(out), 'nothing written');
  assert.deepEqual(readdirSync(path.dirname(TINY)).filter((f) => f.includes('-g') || f.startsWith('.')), [], 'nothing written beside the source');
});
