// The pre-flight estimate from measured probes (src/pipeline/probe.ts): per-stage seconds from a
// block forward at the job's batch and the core on each layer shape, stored in the report beside
// the actual timings. (How close estimate and actual are is measured by the benchmarks, not here.)
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { estimateCompression } from '../../../src/pipeline/preflight';
import { probeCore } from '../../../src/pipeline/probe';
import { findLinearLayers } from '../../../src/onnx/linear';
import { loadModel } from '../../../src/onnx/load';
import { DEFAULT_OPTIONS } from '../../../src/protocol/recipes';
import { quickOptions, ROOT, shortText, tempDir, TINY } from './fixtures';

test('the estimate has every stage from probes: block forward at the job\'s batch, the core per layer shape', { timeout: 180_000 }, async () => {
  const dir = tempDir('obr-pre-');
  const o = quickOptions(dir);
  const pre = await estimateCompression(TINY, o, { evalWindows: 4 });
  const b = pre.breakdown;
  for (const [k, v] of Object.entries({ load: b.loadSeconds, calibrate: b.calibrateSeconds, compress: b.compressSeconds, write: b.writeSeconds, evaluate: b.evaluateSeconds })) {
    assert.ok(Number.isFinite(v) && v > 0, `${k}: ${v}`);
  }
  assert.ok(Math.abs(pre.seconds - (b.loadSeconds + b.calibrateSeconds + b.compressSeconds + b.writeSeconds + b.evaluateSeconds)) < 1e-9);
  assert.ok(pre.notes.some((n) => /^probe on cpu: block forward \d+ ms per batch of \d+ × 64 tokens/.test(n)), pre.notes.join('\n'));
  assert.ok(pre.notes.some((n) => /core probe: obr-gptq on 128×128, 384×128, 128×384/.test(n)), pre.notes.join('\n'));
  // No evaluation: no evaluation time.
  const quiet = await estimateCompression(TINY, o, { evaluate: false, probe: false });
  assert.equal(quiet.breakdown.evaluateSeconds, 0);
});

test('the core probe covers each distinct layer shape and recipe once', { timeout: 180_000 }, async () => {
  const loaded = await loadModel(TINY);
  const layers = findLinearLayers(loaded.model).filter((l) => l.block !== null);
  await loaded.close();
  const core = await probeCore(layers, ['rtn', 'gptq'], DEFAULT_OPTIONS, 1);
  assert.deepEqual([...core.keys()].sort(), ['gptq 128x128', 'gptq 128x384', 'gptq 384x128', 'rtn 128x128', 'rtn 128x384', 'rtn 384x128']);
  for (const [k, v] of core) assert.ok(Number.isFinite(v) && v > 0, `${k}: ${v}`);
});

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
});
