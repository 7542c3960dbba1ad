// The pre-flight estimate from measured probes (src/pipeline/probe.ts): per-stage seconds from the
// job's own code timed on a one-block cut of the model and the core on each layer shape, stored in
// the report beside the actual timings. (How close estimate and actual are is measured by the
// benchmarks — docs/bench-scale.md — not here.)
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { estimateCompression } from '../../../src/pipeline/preflight';
import { readdirSync, statSync } from 'node:fs';
import { probeCore, probeCut } from '../../../src/pipeline/probe';
import { COMPRESSED_ROLES } from '../../../src/pipeline/working';
import { loadTokenizer } from '../../../src/runtime/tokenizer';
import { calibrationWindows, readText } from '../../../src/runtime/text';
import { findLinearLayers } from '../../../src/onnx/linear';
import { loadModel } from '../../../src/onnx/load';
import { DEFAULT_OPTIONS } from '../../../src/protocol/recipes';
import { quickOptions, ROOT, shortText, tempDir, TINY } from './fixtures';

test('the estimate has every stage from probes: block forward at the job\'s batch, the core per layer shape', { timeout: 180_000 }, async () => {
  const dir = tempDir('obr-pre-');
  const o = quickOptions(dir);
  const pre = await estimateCompression(TINY, o, { evalWindows: 4 });
  const b = pre.breakdown;
  for (const [k, v] of Object.entries({ load: b.loadSeconds, rotate: b.rotateSeconds, calibrate: b.calibrateSeconds, compress: b.compressSeconds, write: b.writeSeconds, evaluate: b.evaluateSeconds })) {
    assert.ok(Number.isFinite(v) && v > 0, `${k}: ${v}`);
  }
  assert.ok(Math.abs(pre.seconds - (b.loadSeconds + b.rotateSeconds + b.calibrateSeconds + b.compressSeconds + b.writeSeconds + b.evaluateSeconds)) < 1e-9);
  assert.ok(pre.notes.some((n) => /^probe on cpu \(a one-block cut of the model, batch \d+ × 64 tokens\): block forward \d+ ms per batch/.test(n)), pre.notes.join('\n'));
  assert.ok(pre.notes.some((n) => /core probe: obr-gptq on 128×128, 384×128, 128×384 .*\(real weight rows and captured Hessians\)/.test(n)), pre.notes.join('\n'));
  // The probe's measurements: every capture group of a LLaMA block, forwards with a per-batch part.
  const x = pre.inputs!;
  assert.equal(x.probe.calibrate.captures.length, 4);
  assert.ok(x.probe.calibrate.advance.perBatch > 0 && x.probe.evalDense.tail.perBatch > 0);
  assert.ok(x.probe.cutWeightBytes < x.modelWeightBytes && x.probe.blockWeightBytes > 0);
  assert.equal(x.modelBlocks, 4);
  assert.deepEqual(x.plannedBlocks, [0, 1, 2, 3]);
  // The write probe wrote the whole (small) model's weights as the simulated model, and the packed cut.
  assert.ok(x.probe.writeProbeBytes! > x.modelWeightBytes && x.probe.writeProbeSeconds! > 0, `${x.probe.writeProbeBytes}`);
  assert.ok(x.writeBytes! > x.modelWeightBytes && x.writeBytes! < 2 * x.modelWeightBytes + 1e6, `${x.writeBytes}`);
  assert.ok(pre.notes.some((n) => /^write: \d+ MB of a slice of the model written in/.test(n)), pre.notes.join('\n'));
  // No evaluation: no evaluation time.
  const quiet = await estimateCompression(TINY, o, { evaluate: false, probe: false });
  assert.equal(quiet.breakdown.evaluateSeconds, 0);
});

test('the calibration probe times the job\'s own capture forwards: each group\'s n×n Hessian at its input width, summed over the job\'s windows', { timeout: 180_000 }, async () => {
  const dir = tempDir('obr-pre-cap-');
  const o = quickOptions(dir, { abits: 16, kvbits: 16 });
  const loaded = await loadModel(TINY);
  try {
    const all = findLinearLayers(loaded.model);
    const tokenizer = await loadTokenizer(TINY);
    const ids = tokenizer.encode((await readText(o.calibText!)).text);
    const windows = calibrationWindows(ids, 4, 64, o.seed);
    const probe = (await probeCut(loaded, all, { options: o, batch: 2, windows, modelPath: TINY, evaluate: false }))!;
    // One capture forward per input group of block 0, as the job's ([q,k,v] → [o] → [gate,up] → [down]).
    assert.equal(probe.calibrate.captures.length, 4);
    // The Hessians those forwards computed (in the capture graph, summed in float64): one per
    // distinct input, n×n at the layer's input width — 384 for down_proj, 128 for the others.
    const block0 = all.filter((l) => l.block === 0 && COMPRESSED_ROLES.has(l.role));
    const widths = new Map(block0.map((l) => [l.inputName, l.inFeatures]));
    assert.deepEqual([...probe.stats.keys()].sort(), [...widths.keys()].sort());
    for (const [input, st] of probe.stats) {
      const n = widths.get(input)!;
      assert.equal(st.hessian.length, n * n, input);
      assert.equal(st.tokens, 4 * 64, `${input}: every calibration token`);
    }
    assert.deepEqual([...widths.values()].sort((a, b) => a - b), [128, 128, 128, 384]);
  } finally {
    await loaded.close();
  }
});

test('the core probe covers each distinct layer shape and recipe once', { timeout: 180_000 }, async () => {
  const loaded = await loadModel(TINY);
  const layers = findLinearLayers(loaded.model).filter((l) => l.block !== null);
  await loaded.close();
  const core = await probeCore(layers, ['rtn', 'gptq'], DEFAULT_OPTIONS, 1);
  assert.deepEqual([...core.keys()].sort(), ['gptq 128x128', 'gptq 128x384', 'gptq 384x128', 'rtn 128x128', 'rtn 128x384', 'rtn 384x128']);
  for (const [k, v] of core) assert.ok(Number.isFinite(v) && v > 0, `${k}: ${v}`);
});

test('the report carries estimate and actual side by side for every stage of a W4A4KV4 job', { timeout: 300_000 }, async () => {
  const dir = tempDir('obr-pre-stages-');
  const calib = shortText(dir, 'sotu-calib.txt', 40_000);
  const r = spawnSync(
    process.execPath,
    ['--import', 'tsx', path.join(ROOT, 'src', 'cli', 'main.ts'), 'compress', TINY, '--recipe', 'rtn', '--abits', '4', '--kvbits', '4', '--samples', '4', '--seqlen', '64', '--calib', calib, '--eval-windows', '4', '--ep', 'cpu', '--out', dir, '--json'],
    { encoding: 'utf8', cwd: ROOT, timeout: 280_000 },
  );
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout) as { estimate?: Record<string, number>; timings: Record<string, number> };
  assert.ok(report.estimate, 'report.estimate');
  const stages = ['load', 'rotate', 'calibrate', 'compress', 'write', 'evaluate', 'total'];
  for (const k of stages) {
    assert.ok(Number.isFinite(report.estimate[k]) && report.estimate[k]! > 0, `estimate.${k}: ${report.estimate[k]}`);
    assert.ok(Number.isFinite(report.timings[k]) && report.timings[k]! > 0, `timings.${k}: ${report.timings[k]}`);
  }
  // Nothing timed that has no estimate, and the estimate's total is its stages' sum.
  for (const k of Object.keys(report.timings)) assert.ok(k in report.estimate, `timings.${k} has no estimate`);
  const sum = stages.slice(0, -1).reduce((s, k) => s + report.estimate![k]!, 0);
  assert.ok(Math.abs(sum - report.estimate.total!) < 0.01, `${sum} vs ${report.estimate.total}`);
  // The write estimate goes by the bytes the job writes: the simulated and packed models on disk
  // match the pre-flight's writeBytes within 5 % (alignment padding, the packing's own constants).
  const onDisk = modelFilesBytes(dir);
  const pre = await estimateCompression(TINY, { ...DEFAULT_OPTIONS, recipe: 'rtn', abits: 4, kvbits: 4, samples: 4, seqlen: 64, calibText: calib, executionProviders: ['cpu'] }, { evalWindows: 4 });
  const expected = pre.inputs!.writeBytes!;
  assert.ok(Math.abs(onDisk - expected) <= 0.05 * expected, `models on disk ${onDisk} B, writeBytes ${expected} B`);
  // The rotation's added weights (here the online Hadamard before down_proj) are in both models.
  assert.ok(pre.inputs!.probe.writeAddedBytes! > 0);
});

/** Bytes of the model files (.onnx and external data) under `dir`, subfolders included. */
function modelFilesBytes(dir: string): number {
  let total = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) total += modelFilesBytes(p);
    else if (/\.onnx$|\.onnx\.data$|\.onnx_data$/.test(e.name)) total += statSync(p).size;
  }
  return total;
}

test('obr compress stores the pre-flight estimate beside the actual timings in the report', { timeout: 240_000 }, () => {
  const dir = tempDir('obr-pre-cli-');
  const calib = shortText(dir, 'sotu-calib.txt', 40_000);
  const r = spawnSync(
    process.execPath,
    ['--import', 'tsx', path.join(ROOT, 'src', 'cli', 'main.ts'), 'compress', TINY, '--recipe', 'rtn', '--abits', '16', '--kvbits', '16', '--samples', '4', '--seqlen', '64', '--calib', calib, '--no-eval', '--ep', 'cpu', '--out', dir, '--json'],
    { encoding: 'utf8', cwd: ROOT, timeout: 200_000 },
  );
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout) as { estimate?: Record<string, number>; timings: Record<string, number> };
  assert.ok(report.estimate, 'report.estimate');
  for (const k of ['calibrate', 'compress', 'total']) {
    assert.ok(Number.isFinite(report.estimate[k]) && Number.isFinite(report.timings[k]), k);
  }
  assert.equal(report.estimate.evaluate, 0, 'no evaluation estimated for --no-eval');
  assert.equal(report.estimate.rotate, 0, 'no rotation estimated for A16/KV16');
});
