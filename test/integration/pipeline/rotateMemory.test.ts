// A rotated job (W4A4KV4) is bounded by one block too (issue #12 item 2): the rotation reads,
// rotates and writes one weight at a time through the working store, and the rotation check
// streams the dense and the rotated model through their blocks — counted by the store, not RSS.
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { regionModel, splitBlocks } from '../../../src/onnx/blocks';
import { findLinearLayers } from '../../../src/onnx/linear';
import { loadModel } from '../../../src/onnx/load';
import { DataType } from '../../../src/onnx/proto';
import { AbortError } from '../../../src/pipeline/cancel';
import { runCompression } from '../../../src/pipeline/compress';
import { quickOptions, tempDir, TINY } from './fixtures';

const EXTERNAL = path.join(path.dirname(TINY), 'model.external.onnx');

test('a W4A4KV4 job on an external-data model holds at most one block + the biggest non-block tensor (rotation and its check included)', { timeout: 300_000 }, async (t) => {
  const src = await loadModel(EXTERNAL);
  const split = splitBlocks(src.model, findLinearLayers(src.model));
  if ('err' in split) throw new Error(split.err);
  const inBlocks = new Set<string>();
  let maxBlock = 0;
  for (const r of split.ok.regions.filter((x) => x.kind === 'block')) {
    let bytes = 0;
    for (const init of regionModel(src.model, r, new Map(r.reads.map((x) => [x, DataType.FLOAT]))).graph!.initializer!) {
      const info = src.initializerInfo(init.name!)!;
      if (!info.external) continue;
      bytes += info.byteLength;
      inBlocks.add(info.name);
    }
    maxBlock = Math.max(maxBlock, bytes);
  }
  const external = src.initializerNames().map((n) => src.initializerInfo(n)!).filter((i) => i.external);
  const total = external.reduce((s, i) => s + i.byteLength, 0);
  const maxOutside = Math.max(...external.filter((i) => !inBlocks.has(i.name)).map((i) => i.byteLength));
  await src.close();

  const dir = tempDir();
  let stats: { peakResidentBytes: number; writtenBytes: number; dataFile: string } | undefined;
  const report = await runCompression(EXTERNAL, quickOptions(dir, { recipe: 'rtn', abits: 4, kvbits: 4, samples: 2 }), {}, { evalText: null, onlyBlocks: [0], onWorkingStore: (s) => (stats = s) });
  assert.ok(stats, 'the job reports its working store');
  assert.ok(report.timings.rotate! > 0, 'the job rotated');
  t.diagnostic(`peak resident ${stats.peakResidentBytes} B; one block ${maxBlock} B + biggest non-block tensor ${maxOutside} B; all external weights ${total} B`);
  // Before (the whole model inline for the rotation and its whole-model check) the peak was ≥ all weights.
  assert.ok(stats.peakResidentBytes <= maxBlock + maxOutside, `peak ${stats.peakResidentBytes} ≤ one block ${maxBlock} + ${maxOutside}`);
  assert.ok(stats.peakResidentBytes < total / 2, 'never all the weights');
  assert.ok(!existsSync(path.dirname(stats.dataFile)), 'the working folder is gone');
});

test('cancelled during the streamed rotation or its check: AbortError, and no working data, spill files or outputs are left', { timeout: 300_000 }, async () => {
  const dir = tempDir();
  for (const when of ['rotation', 'check'] as const) {
    const out = path.join(dir, when);
    const abort = new AbortController();
    let seen = false;
    let checkedAfterCancel = false;
    await assert.rejects(
      runCompression(EXTERNAL, quickOptions(dir, { recipe: 'rtn', abits: 4, kvbits: 4, samples: 2, outDir: out }), {
        signal: abort.signal,
        onProgress: (e) => {
          // The stage starts with the rotation (its first event is never throttled); the check starts at 0.5.
          const rotating = e.stage === 'rotate' && e.message?.startsWith('rotating') === true;
          const checking = e.stage === 'rotate' && e.message?.startsWith('checking') === true;
          if (abort.signal.aborted && checking) checkedAfterCancel = true;
          if ((when === 'rotation' && rotating) || (when === 'check' && checking)) {
            seen = true;
            abort.abort();
          }
        },
      }, { evalText: null, onlyBlocks: [0] }),
      AbortError,
    );
    assert.ok(seen, `${when}: the job was cancelled there`);
    assert.ok(!checkedAfterCancel, `${when}: the rotation stops between its tasks, before the check`);
    assert.ok(!existsSync(out) || readdirSync(out).length === 0, `${when}: nothing left in the output folder (${existsSync(out) ? readdirSync(out).join(', ') : ''})`);
  }
});
