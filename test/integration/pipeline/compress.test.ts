// The compression pipeline end to end on the tiny bundled model (few short calibration windows):
// outputs, exact sparsity of the 7 projections, untouched lm_head/embeddings (§7.12), perplexity,
// cancellation and resume.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { loadModel, type LoadedModel } from '../../../src/onnx/load';
import { findLinearLayers } from '../../../src/onnx/linear';
import { readLayerWeight64 } from '../../../src/onnx/weights';
import { AbortError } from '../../../src/pipeline/cancel';
import { runCompression } from '../../../src/pipeline/compress';
import { computeSensitivity } from '../../../src/pipeline/sensitivity';
import { RECIPES, recipePrunes } from '../../../src/protocol/recipes';
import { quickOptions, shortText, snapshot, tempDir, TINY } from './fixtures';

const PROJECTIONS = new Set(['q', 'k', 'v', 'o', 'gate', 'up', 'down']);

async function zerosPerRow(m: LoadedModel, name: string): Promise<{ min: number; cols: number; total: number; size: number }> {
  const layer = findLinearLayers(m.model).find((l) => l.name === name)!;
  const w = await readLayerWeight64(m, layer);
  let min = Infinity;
  let total = 0;
  for (let r = 0; r < layer.outFeatures; r++) {
    let z = 0;
    for (let c = 0; c < layer.inFeatures; c++) if (w[r * layer.inFeatures + c] === 0) z++;
    min = Math.min(min, z);
    total += z;
  }
  return { min, cols: layer.inFeatures, total, size: w.length };
}

function embeddingName(m: LoadedModel): string {
  const gather = m.model.graph!.node!.find((n) => n.opType === 'Gather' && m.initializerInfo(n.input![0]!)?.dims.length === 2);
  assert.ok(gather, 'the model has an embedding Gather');
  return gather.input![0]!;
}

test('obr-gptq W4A4KV4 + 50%: three outputs, exact 50% zeros per row on all 7 projections, dense lm_head, perplexity', { timeout: 300_000 }, async () => {
  const dir = tempDir();
  const evalText = shortText(dir, 'sotu-test.txt', 20_000);
  const events: string[] = [];
  // Blocks 0 and 3 (first and last) keep the test quick; the other two stay dense.
  const report = await runCompression(TINY, quickOptions(dir), { onProgress: (e) => events.push(e.stage) }, { evalText, evalWindows: 4, onlyBlocks: [0, 3] });
  assert.ok(existsSync(report.outputs.simulated!), 'simulated model written');
  assert.ok(existsSync(report.outputs.report), 'report written');
  assert.match(path.basename(report.outputs.simulated!), /^model\.obr-gptq-w4a4kv4-s50\.onnx$/);
  assert.match(path.basename(report.outputs.report), /^model\.obr-gptq-w4a4kv4-s50\.report\.json$/);
  if (report.outputs.packed) {
    assert.ok(existsSync(report.outputs.packed));
    assert.match(path.basename(report.outputs.packed), /^model\.obr-gptq-w4-s50\.packed\.onnx$/);
  } else {
    assert.ok(report.warnings.some((w) => /packed/.test(w)), 'a missing packed model is explained');
  }
  assert.ok(!existsSync(path.join(dir, 'out', '.model.obr-partial')), 'the working folder is removed');
  assert.deepEqual(JSON.parse(readFileSync(report.outputs.report, 'utf8')).layers.length, 14);
  for (const s of ['load', 'rotate', 'calibrate', 'compress', 'write', 'evaluate']) assert.ok(events.includes(s), `progress for ${s}`);

  const sim = await loadModel(report.outputs.simulated!);
  assert.equal(report.layers.length, 14);
  assert.deepEqual(new Set(report.layers.map((l) => l.block)), new Set([0, 3]));
  assert.deepEqual(new Set(report.layers.map((l) => l.role)), PROJECTIONS);
  for (const l of report.layers) {
    const z = await zerosPerRow(sim, l.name);
    assert.ok(z.min >= Math.floor(z.cols / 2), `${l.name}: every row has ≥ ⌊n/2⌋ zeros (min ${z.min} of ${z.cols})`);
    assert.ok(z.total / z.size < 0.56, `${l.name}: zeros ${z.total / z.size} ≈ 50% (+ rounding zeros)`);
    assert.ok(Math.abs(l.sparsity - z.total / z.size) < 1e-9, 'report sparsity = zeros in the written model');
    assert.equal(l.rowScales?.length, l.rows);
  }
  // lm_head and the embedding are rotated (QuaRot) but neither pruned nor quantized.
  const lmHead = findLinearLayers(sim.model).find((l) => l.role === 'lm_head')!;
  const lm = await zerosPerRow(sim, lmHead.name);
  assert.ok(lm.total / lm.size < 0.01, 'lm_head stays dense');
  const emb = await sim.readWeight(embeddingName(sim));
  assert.ok(emb.filter((v) => v === 0).length / emb.length < 0.01, 'embedding stays dense');
  await sim.close();

  const { dense, compressed } = report.perplexity;
  assert.ok(dense && compressed);
  assert.ok(Number.isFinite(compressed.perplexity), 'compressed perplexity is finite');
  assert.ok(compressed.perplexity > dense.perplexity, `compressed ${compressed.perplexity} is worse than dense ${dense.perplexity}`);
  assert.equal(report.executionProvider.used, 'cpu');
  assert.equal(report.calibration.samples, 4);
  assert.equal(report.calibration.sha256.length, 64);
});

test('every recipe (W4A16, block 0): outputs named by recipe, 50% zeros for pruning recipes, the rest byte-identical', { timeout: 300_000 }, async () => {
  const dir = tempDir();
  const evalText = shortText(dir, 'sotu-test.txt', 10_000);
  const src = await loadModel(TINY);
  const srcLayers = findLinearLayers(src.model);
  for (const recipe of RECIPES) {
    const report = await runCompression(TINY, quickOptions(dir, { recipe, abits: 16, kvbits: 16, samples: 2, seqlen: 32 }), {}, { evalText, evalWindows: 2, onlyBlocks: [0] });
    const tag = recipePrunes(recipe) ? 's50' : 's0';
    assert.equal(path.basename(report.outputs.simulated!), `model.${recipe}-w4a16kv16-${tag}.onnx`);
    assert.equal(report.layers.length, 7);
    const sim = await loadModel(report.outputs.simulated!);
    for (const l of report.layers) {
      const z = await zerosPerRow(sim, l.name);
      // Wanda masks prune ⌊n/2⌋ per row; SparseGPT picks its mask per 128-column block across rows (P15).
      if (recipe === 'sparsegpt-gptq') assert.ok(z.total / z.size >= 0.5 && z.total / z.size < 0.56, `${recipe} ${l.name}: zeros ${z.total / z.size}`);
      else if (recipePrunes(recipe)) assert.ok(z.min >= Math.floor(z.cols / 2), `${recipe} ${l.name}: min zeros ${z.min}`);
      else assert.ok(z.total / z.size < 0.4, `${recipe} ${l.name}: quantization only`);
    }
    // Without rotation, everything but block 0's projections is byte-identical to the source.
    const compressed = new Set(report.layers.map((l) => srcLayers.find((s) => s.name === l.name)!.weightName));
    for (const name of src.initializerNames()) {
      if (compressed.has(name)) continue;
      assert.deepEqual(Buffer.from(await sim.readBytes(name)), Buffer.from(await src.readBytes(name)), `${recipe}: ${name} untouched`);
    }
    await sim.close();
    assert.ok(Number.isFinite(report.perplexity.compressed!.perplexity), `${recipe}: finite perplexity`);
  }
  await src.close();
});

test('a cancelled job leaves the output folder exactly as it was', { timeout: 120_000 }, async () => {
  const dir = tempDir();
  const out = path.join(dir, 'out');
  mkdirSync(out);
  writeFileSync(path.join(out, 'keep.txt'), 'existing file');
  const before = snapshot(out);
  const abort = new AbortController();
  let layers = 0;
  await assert.rejects(
    runCompression(TINY, quickOptions(dir), { signal: abort.signal, onLayer: () => ++layers === 2 && abort.abort() }, { evalText: null }),
    (e: unknown) => e instanceof AbortError,
  );
  assert.equal(layers, 2);
  assert.deepEqual(snapshot(out), before);
  // An output folder the job had to create is removed again.
  const fresh = path.join(dir, 'fresh');
  const abort2 = new AbortController();
  await assert.rejects(
    runCompression(TINY, quickOptions(dir, { outDir: fresh }), { signal: abort2.signal, onProgress: (e) => e.stage === 'calibrate' && abort2.abort() }, { evalText: null }),
    AbortError,
  );
  assert.ok(!existsSync(fresh));
});

test('an interrupted job resumes from its checkpoint and gives the same outputs as an uninterrupted one', { timeout: 300_000 }, async () => {
  const dir = tempDir();
  const opts = { evalText: null, onlyBlocks: [0, 1] } as const;
  const whole = await runCompression(TINY, quickOptions(dir, { recipe: 'obr-rtn', abits: 16, kvbits: 16, outDir: path.join(dir, 'a') }), {}, opts);

  const b = quickOptions(dir, { recipe: 'obr-rtn', abits: 16, kvbits: 16, outDir: path.join(dir, 'b') });
  await assert.rejects(
    runCompression(TINY, b, {}, {
      ...opts,
      onBlockStart: (block) => {
        if (block === '1') throw new Error('simulated crash');
      },
    }),
    /simulated crash/,
  );
  const partial = path.join(dir, 'b', '.model.obr-partial');
  assert.ok(existsSync(partial), 'the checkpoint survives a crash');
  assert.deepEqual(JSON.parse(readFileSync(path.join(partial, 'manifest.json'), 'utf8')).blocks, ['0']);
  assert.ok(!existsSync(path.join(dir, 'b', path.basename(whole.outputs.simulated!))), 'no output before the job finishes');

  const resumed = await runCompression(TINY, b, {}, opts);
  assert.deepEqual(resumed.options.resumedBlocks, ['0']);
  assert.ok(!existsSync(partial), 'the checkpoint is deleted at the end');
  assert.ok(readFileSync(resumed.outputs.simulated!).equals(readFileSync(whole.outputs.simulated!)), 'resumed simulated model == uninterrupted one');
  assert.deepEqual(
    resumed.layers.map((l) => [l.name, l.loss, l.rowScales]),
    whole.layers.map((l) => [l.name, l.loss, l.rowScales]),
  );
});

test('--sensitivity: perplexity with one layer compressed, per layer, cached in the report and recomputable from it', { timeout: 240_000 }, async () => {
  const dir = tempDir();
  const evalText = shortText(dir, 'sotu-test.txt', 10_000);
  const report = await runCompression(TINY, quickOptions(dir, { recipe: 'wanda-rtn', abits: 16, kvbits: 16 }), {}, { evalText, evalWindows: 2, onlyBlocks: [0], sensitivity: true, sensitivityWindows: 2 });
  assert.equal(report.sensitivity?.length, 7);
  for (const s of report.sensitivity!) assert.ok(Number.isFinite(s.perplexity) && s.perplexity > 1, `${s.name}: ${s.perplexity}`);
  const again = await computeSensitivity(report.outputs.report, {}, 2);
  for (let i = 0; i < again.length; i++) assert.ok(Math.abs(again[i]!.perplexity - report.sensitivity![i]!.perplexity) < 1e-6 * report.sensitivity![i]!.perplexity);
  assert.equal(JSON.parse(readFileSync(report.outputs.report, 'utf8')).sensitivity.length, 7);
});

test('oneshot calibration on an external-data model: the outputs keep their weights in a .data file beside them', { timeout: 180_000 }, async () => {
  const dir = tempDir();
  const evalText = shortText(dir, 'sotu-test.txt', 10_000);
  const src = path.join(path.dirname(TINY), 'model.external.onnx');
  const report = await runCompression(src, quickOptions(dir, { recipe: 'obr-rtn', calibrationMode: 'oneshot' }), {}, { evalText, evalWindows: 2, onlyBlocks: [0] });
  assert.equal(report.calibration.mode, 'oneshot');
  for (const f of [report.outputs.simulated!, report.outputs.packed!]) {
    assert.ok(existsSync(f), f);
    assert.ok(existsSync(`${f}.data`), `${f}.data`);
  }
  const sim = await loadModel(report.outputs.simulated!);
  const z = await zerosPerRow(sim, report.layers[0]!.name);
  assert.ok(z.min >= Math.floor(z.cols / 2));
  await sim.close();
  assert.ok(Number.isFinite(report.perplexity.compressed!.perplexity));
});
