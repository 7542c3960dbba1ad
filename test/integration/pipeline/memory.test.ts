// Memory bounded by one block (issue #12 item 2): a job on an external-data model keeps its
// weights on disk (the source's data file and the working data file in `.NAME.obr-partial/`) and
// never holds more than one block's weights plus the biggest tensor outside the blocks — counted by
// the working store (src/onnx/store.ts), not timed via RSS. Cancel and resume keep working with the store.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { regionModel, splitBlocks } from '../../../src/onnx/blocks';
import { findLinearLayers } from '../../../src/onnx/linear';
import { loadModel, type LoadedModel } from '../../../src/onnx/load';
import { DataType } from '../../../src/onnx/proto';
import { AbortError } from '../../../src/pipeline/cancel';
import { runCompression } from '../../../src/pipeline/compress';
import { WORKING_DATA_FILE } from '../../../src/pipeline/working';
import { estimateCompression } from '../../../src/pipeline/preflight';
import { quickOptions, ROOT, shortText, snapshot, tempDir, TINY } from './fixtures';

const SMALL = path.join(ROOT, 'media', 'models', 'small', 'model.onnx');

const EXTERNAL = path.join(path.dirname(TINY), 'model.external.onnx');

/** Bytes of external weights each block region reads, and the biggest external tensor no block reads. */
function blockBounds(src: LoadedModel): { maxBlock: number; maxOutside: number; total: number } {
  const split = splitBlocks(src.model, findLinearLayers(src.model));
  if ('err' in split) throw new Error(split.err);
  const inBlocks = new Set<string>();
  let maxBlock = 0;
  for (const r of split.ok.regions.filter((x) => x.kind === 'block')) {
    const sub = regionModel(src.model, r, new Map(r.reads.map((x) => [x, DataType.FLOAT])));
    let bytes = 0;
    for (const t of sub.graph!.initializer!) {
      const info = src.initializerInfo(t.name!)!;
      if (!info.external) continue;
      bytes += info.byteLength;
      inBlocks.add(info.name);
    }
    maxBlock = Math.max(maxBlock, bytes);
  }
  let maxOutside = 0;
  let total = 0;
  for (const n of src.initializerNames()) {
    const info = src.initializerInfo(n)!;
    if (!info.external) continue;
    total += info.byteLength;
    if (!inBlocks.has(n)) maxOutside = Math.max(maxOutside, info.byteLength);
  }
  return { maxBlock, maxOutside, total };
}

test('a job on an external-data model holds at most one block + the biggest non-block tensor (calibrate, compress, write, evaluate)', { timeout: 300_000 }, async (t) => {
  const src = await loadModel(EXTERNAL);
  const bounds = blockBounds(src);
  await src.close();
  const dir = tempDir();
  const evalText = shortText(dir, 'sotu-test.txt', 10_000);
  let stats: { peakResidentBytes: number; writtenBytes: number; dataFile: string } | undefined;
  const report = await runCompression(EXTERNAL, quickOptions(dir, { abits: 16, kvbits: 16 }), {}, { evalText, evalWindows: 2, onWorkingStore: (s) => (stats = s) });
  assert.ok(stats, 'the job reports its working store');
  t.diagnostic(`peak resident ${stats.peakResidentBytes} B; one block ${bounds.maxBlock} B + biggest non-block tensor ${bounds.maxOutside} B; all external weights ${bounds.total} B; written to the working file ${stats.writtenBytes} B`);
  assert.ok(stats.peakResidentBytes > 0, 'the store was read');
  assert.ok(stats.peakResidentBytes <= bounds.maxBlock + bounds.maxOutside, `peak ${stats.peakResidentBytes} ≤ one block ${bounds.maxBlock} + ${bounds.maxOutside}`);
  assert.ok(stats.peakResidentBytes < bounds.total / 2, 'never all the weights');
  // The compressed weights (28 layers) went to the working data file, removed at the end with the working folder.
  const layerBytes = report.layers.reduce((s, l) => s + l.rows * l.cols * 4, 0);
  assert.ok(stats.writtenBytes >= layerBytes, `${stats.writtenBytes} ≥ ${layerBytes}`);
  assert.ok(!existsSync(stats.dataFile));
  assert.ok(!existsSync(path.dirname(stats.dataFile)), 'the working folder is gone');
  // The outputs keep external data (the source had it) and evaluate finitely.
  assert.ok(existsSync(`${report.outputs.simulated!}.data`) && existsSync(`${report.outputs.packed!}.data`));
  assert.ok(Number.isFinite(report.perplexity.compressed!.perplexity));
});

test('the same job on the inline and the external-data copy of a model writes the same compressed weights', { timeout: 300_000 }, async () => {
  const dir = tempDir();
  const run = (model: string, out: string) => runCompression(model, quickOptions(dir, { recipe: 'obr-rtn', abits: 16, kvbits: 16, outDir: path.join(dir, out) }), {}, { evalText: null, onlyBlocks: [1] });
  const inline = await run(TINY, 'i');
  const external = await run(EXTERNAL, 'e');
  const [a, b] = [await loadModel(inline.outputs.simulated!), await loadModel(external.outputs.simulated!)];
  try {
    for (const l of inline.layers) {
      const layer = findLinearLayers(a.model).find((x) => x.name === l.name)!;
      const wa = Buffer.from(await a.readBytes(layer.weightName));
      const wb = Buffer.from(await b.readBytes(layer.weightName));
      assert.ok(wa.equals(wb), `${l.name}: same stored bytes`);
    }
  } finally {
    await a.close();
    await b.close();
  }
});

test('with the store, a crashed job resumes to the uninterrupted outputs and a cancelled one leaves no working data', { timeout: 300_000 }, async () => {
  const dir = tempDir();
  const opts = { evalText: null, onlyBlocks: [0, 1, 2] } as const;
  const o = (out: string) => quickOptions(dir, { recipe: 'obr-rtn', abits: 16, kvbits: 16, outDir: path.join(dir, out) });
  const whole = await runCompression(EXTERNAL, o('a'), {}, opts);

  // Crash before block 2: the checkpoint keeps blocks 0 and 1; the working data file is gone.
  await assert.rejects(
    runCompression(EXTERNAL, o('b'), {}, { ...opts, onBlockStart: (block) => { if (block === '2') throw new Error('simulated crash'); } }),
    /simulated crash/,
  );
  const partial = path.join(dir, 'b', '.model.external.obr-partial');
  assert.deepEqual(JSON.parse(readFileSync(path.join(partial, 'manifest.json'), 'utf8')).blocks, ['0', '1']);
  assert.ok(!readdirSync(partial).includes(WORKING_DATA_FILE), 'no working data file left behind');
  const resumed = await runCompression(EXTERNAL, o('b'), {}, opts);
  assert.deepEqual(resumed.options.resumedBlocks, ['0', '1']);
  for (const f of [whole.outputs.simulated!, whole.outputs.packed!]) {
    const g = path.join(dir, 'b', path.basename(f));
    assert.ok(readFileSync(g).equals(readFileSync(f)), `${path.basename(f)}: resumed == uninterrupted`);
    assert.ok(readFileSync(`${g}.data`).equals(readFileSync(`${f}.data`)), `${path.basename(f)}.data: resumed == uninterrupted`);
  }

  // Cancelled mid-block with the checkpoint kept for a later resume: outputs as before, no working data.
  const c = path.join(dir, 'c');
  await runCompression(EXTERNAL, o('c'), {}, { ...opts, onlyBlocks: [0] });
  const before = snapshot(c);
  const abort = new AbortController();
  let layers = 0;
  await assert.rejects(
    runCompression(EXTERNAL, quickOptions(dir, { recipe: 'obr-rtn', abits: 16, kvbits: 16, outDir: c, seed: 7 }), { signal: abort.signal, onLayer: () => ++layers === 9 && abort.abort() }, { ...opts, keepCheckpointOnCancel: true }),
    AbortError,
  );
  const kept = path.join(c, '.model.external.obr-partial');
  assert.ok(existsSync(kept), 'the checkpoint is kept for resume');
  assert.ok(!readdirSync(kept).includes(WORKING_DATA_FILE), 'no working data file left behind');
  assert.deepEqual(snapshot(c).filter((f) => !f.startsWith('.model.external.obr-partial')), before);
});

test('the pre-flight memory estimate is within a factor of 2 of the peak RSS of the job it estimates (bundled small model, obr-gptq W4A16, evaluation included, its own process)', { timeout: 300_000 }, async (t) => {
  const dir = tempDir();
  const options = quickOptions(dir, { recipe: 'obr-gptq', abits: 16, kvbits: 16 });
  const evalText = shortText(dir, 'sotu-test.txt', 10_000);
  const pre = await estimateCompression(SMALL, options, { probe: false, evalWindows: 2, evalText });
  const run = spawnSync(process.execPath, ['--import', 'tsx', path.join(__dirname, 'memoryJob.ts'), SMALL, JSON.stringify(options), JSON.stringify({ evalText, evalWindows: 2 })], { cwd: ROOT, encoding: 'utf8' });
  assert.equal(run.status, 0, run.stderr.slice(-2000));
  const { peakRssBytes } = JSON.parse(run.stdout.trim().split('\n').pop()!) as { peakRssBytes: number };
  const ratio = pre.peakBytes / peakRssBytes;
  const mib = (x: number) => `${(x / 2 ** 20).toFixed(0)} MiB`;
  t.diagnostic(`estimate ${mib(pre.peakBytes)} (${pre.memory.phase}: ${Object.entries(pre.memory.terms).map(([k, v]) => `${k} ${mib(v)}`).join(', ')}); measured peak RSS ${mib(peakRssBytes)}; ratio ${ratio.toFixed(2)}`);
  assert.ok(ratio >= 0.5 && ratio <= 2, `estimate ${mib(pre.peakBytes)} vs measured ${mib(peakRssBytes)}: ratio ${ratio.toFixed(2)} outside [0.5, 2]`);
});
