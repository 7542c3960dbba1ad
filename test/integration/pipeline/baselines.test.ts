// Baselines in the report (PipelineOptions.baselines, `obr compress --baselines`): every layer is
// also compressed with each baseline recipe on the same captured Hessian as the job's recipe, and
// the model with all layers replaced by a baseline's weights is evaluated on the same windows.
// On the tiny bundled model, end to end: losses per layer, perplexities, the "same Hessian"
// property, resume from a checkpoint, cancellation during the baseline stage, no stray files.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { AbortError } from '../../../src/pipeline/cancel';
import { resolveBaselines, runCompression } from '../../../src/pipeline/compress';
import { OptionError } from '../../../src/protocol/recipes';
import type { CompressionReport } from '../../../src/protocol/report';
import type { ProgressEvent } from '../../../src/protocol/worker';
import { quickOptions, shortText, snapshot, tempDir, TINY } from './fixtures';

const BASELINES = ['wanda-rtn', 'sparsegpt-gptq'] as const;
const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

let full: { report: CompressionReport; evalText: string } | undefined;

test('baselines: one loss per layer on the same Hessians, finite perplexities on the same windows, only the usual outputs', { timeout: 300_000 }, async () => {
  const dir = tempDir('obr-base-');
  const evalText = shortText(dir, 'sotu-test.txt', 20_000);
  const events: ProgressEvent[] = [];
  const report = await runCompression(TINY, quickOptions(dir), { onProgress: (e) => events.push(e) }, { evalText, evalWindows: 4, baselines: [...BASELINES, 'obr-gptq', 'wanda-rtn'] });
  full = { report, evalText };

  // The job's own recipe and repeats are dropped; the order is kept.
  assert.equal(report.recipe, 'obr-gptq');
  assert.deepEqual(report.baselines?.map((b) => b.recipe), [...BASELINES]);
  assert.deepEqual(report.options['baselines'], [...BASELINES]);
  assert.equal(report.layers.length, 28, 'all 7 projections of the 4 blocks');
  const main = sum(report.layers.map((l) => l.loss.total));
  const totals: Record<string, number> = {};
  for (const b of report.baselines!) {
    assert.deepEqual(b.layers.map((l) => l.name), report.layers.map((l) => l.name), `${b.recipe}: one loss per layer, in the report's order`);
    for (const [i, l] of b.layers.entries()) {
      const own = report.layers[i]!.loss;
      assert.ok(Number.isFinite(l.loss.total) && l.loss.total > 0, `${b.recipe} ${l.name}: total ${l.loss.total}`);
      // tr(W H Wᵀ) depends only on the dense weight and the Hessian: equal ⇔ the same Hessian.
      assert.ok(Math.abs(l.loss.outputEnergy - own.outputEnergy) <= 1e-9 * own.outputEnergy, `${b.recipe} ${l.name}: output energy ${l.loss.outputEnergy} vs ${own.outputEnergy}`);
    }
    totals[b.recipe] = sum(b.layers.map((l) => l.loss.total));
    const p = b.perplexity;
    assert.ok(p, `${b.recipe} has a perplexity`);
    assert.ok(Number.isFinite(p.perplexity) && p.perplexity > 1, `${b.recipe}: perplexity ${p.perplexity}`);
    assert.equal(p.windows, report.perplexity.compressed!.windows);
    assert.equal(p.tokens, report.perplexity.compressed!.tokens);
    assert.equal(p.text, report.perplexity.compressed!.text);
    assert.notEqual(p.perplexity, report.perplexity.compressed!.perplexity, `${b.recipe} evaluates its own weights`);
  }
  // No compensation (Wanda + RTN) loses far more than OBR-GPTQ on the same Hessians.
  assert.ok(totals['wanda-rtn']! > main, `Σ wanda-rtn ${totals['wanda-rtn']} > Σ obr-gptq ${main}`);
  assert.ok(totals['wanda-rtn']! > totals['sparsegpt-gptq']!, `Σ wanda-rtn ${totals['wanda-rtn']} > Σ sparsegpt-gptq ${totals['sparsegpt-gptq']}`);

  // Progress names the baseline stage: per-layer events name the recipe and the layer (they are
  // throttled to ~5/s, so only the last one, 56/56, is certain to arrive), and the perplexity of
  // each baseline.
  const stage = events.filter((e) => e.stage === 'baseline');
  const recipes = BASELINES.join('|');
  assert.ok(stage.some((e) => new RegExp(`^(${recipes}): \\S`).test(e.message ?? '')), 'baseline layer progress names the recipe and the layer');
  for (const r of BASELINES) assert.ok(stage.some((e) => new RegExp(`^perplexity ${r} `).test(e.message ?? '')), `perplexity progress for ${r}`);
  assert.ok(stage.some((e) => e.done === e.total && e.total === 28 * 2), 'baseline layers counted to 56/56');
  const fractions = events.map((e) => e.fraction ?? 0);
  assert.ok(fractions.every((f, i) => i === 0 || f >= fractions[i - 1]! - 1e-9), 'the overall fraction never goes back');
  assert.equal(report.timings['baselines'] !== undefined && report.timings['baselines'] > 0, true);

  // Only the usual outputs: no baseline models or temp files left anywhere.
  const out = path.join(dir, 'out');
  assert.deepEqual(readdirSync(out).sort(), ['config.json', 'model.obr-gptq-w4-s50.packed.onnx', 'model.obr-gptq-w4a4kv4-s50.onnx', 'model.obr-gptq-w4a4kv4-s50.report.json', 'tokenizer.json', 'tokenizer_config.json']);
  const written = JSON.parse(readFileSync(report.outputs.report, 'utf8')) as CompressionReport;
  assert.deepEqual(written.baselines, report.baselines);
});

test('a baseline on the same Hessian gives the same layer loss as a job with that recipe (first group of block 0)', { timeout: 120_000 }, async () => {
  assert.ok(full, 'needs the first test');
  const dir = tempDir('obr-base-');
  // Block 0's [q, k, v] read the dense model's input in both jobs: identical Hessians.
  const own = await runCompression(TINY, quickOptions(dir, { recipe: 'wanda-rtn' }), {}, { evalText: null, onlyBlocks: [0] });
  const baseline = new Map(full.report.baselines!.find((b) => b.recipe === 'wanda-rtn')!.layers.map((l) => [l.name, l.loss]));
  const first = own.layers.filter((l) => l.block === 0 && ['q', 'k', 'v'].includes(l.role));
  assert.equal(first.length, 3);
  for (const l of first) {
    const b = baseline.get(l.name)!;
    for (const k of ['total', 'pruning', 'quantization', 'outputEnergy'] as const) {
      assert.ok(Math.abs(b[k] - l.loss[k]) <= 1e-9 * Math.max(1, Math.abs(l.loss[k])), `${l.name} ${k}: baseline ${b[k]} vs own job ${l.loss[k]}`);
    }
  }
  assert.equal(own.baselines, undefined, 'no baselines asked, none written');
});

test('baselines survive an interrupted job: the resumed report equals the uninterrupted one', { timeout: 300_000 }, async () => {
  assert.ok(full, 'needs the first test');
  const dir = tempDir('obr-base-');
  const b = quickOptions(dir, { outDir: path.join(dir, 'b') });
  const extra = { evalText: full.evalText, evalWindows: 4, baselines: [...BASELINES] };
  await assert.rejects(
    runCompression(TINY, b, {}, {
      ...extra,
      onBlockStart: (block) => {
        if (block === '2') throw new Error('simulated crash');
      },
    }),
    /simulated crash/,
  );
  const partial = path.join(dir, 'b', '.model.obr-partial');
  assert.deepEqual(JSON.parse(readFileSync(path.join(partial, 'manifest.json'), 'utf8')).blocks, ['0', '1']);
  const resumed = await runCompression(TINY, b, {}, extra);
  assert.deepEqual(resumed.options['resumedBlocks'], ['0', '1']);
  assert.ok(!existsSync(partial), 'the working folder is removed at the end');
  assert.deepEqual(
    resumed.baselines!.map((x) => [x.recipe, x.layers]),
    full.report.baselines!.map((x) => [x.recipe, x.layers]),
  );
  // The perplexity needs the restored baseline weights themselves, not only their losses.
  assert.deepEqual(resumed.baselines!.map((x) => x.perplexity!.nll), full.report.baselines!.map((x) => x.perplexity!.nll));

  // A checkpoint made without baselines is not reused by a job that asks for them (and back).
  const c = quickOptions(dir, { outDir: path.join(dir, 'c') });
  await assert.rejects(
    runCompression(TINY, c, {}, { evalText: null, onlyBlocks: [0, 1], onBlockStart: (block) => { if (block === '1') throw new Error('crash'); } }),
    /crash/,
  );
  const again = await runCompression(TINY, c, {}, { evalText: null, onlyBlocks: [0, 1], baselines: ['rtn'] });
  assert.deepEqual(again.options['resumedBlocks'], []);
  assert.equal(again.baselines?.[0]?.layers.length, 14);
  assert.equal(again.baselines?.[0]?.perplexity, undefined, 'no evaluation, no baseline perplexity');
});

test('cancelling during the baseline stage leaves the output folder exactly as it was', { timeout: 120_000 }, async () => {
  const dir = tempDir('obr-base-');
  const out = path.join(dir, 'out');
  mkdirSync(out);
  writeFileSync(path.join(out, 'keep.txt'), 'existing file');
  const before = snapshot(out);
  const evalText = shortText(dir, 'sotu-test.txt', 10_000);
  const abort = new AbortController();
  let seen = '';
  await assert.rejects(
    runCompression(TINY, quickOptions(dir, { recipe: 'wanda-rtn', abits: 16, kvbits: 16 }), {
      signal: abort.signal,
      onProgress: (e) => {
        if (e.stage === 'baseline' && /^perplexity rtn/.test(e.message ?? '')) {
          seen = e.message!;
          abort.abort();
        }
      },
    }, { evalText, evalWindows: 4, onlyBlocks: [0], baselines: ['rtn'], batch: 1 }),
    (e: unknown) => e instanceof AbortError,
  );
  assert.match(seen, /^perplexity rtn [0-4]\/4/, 'cancelled while evaluating the baseline');
  assert.deepEqual(snapshot(out), before);
});

test('unknown baseline names are an OptionError that lists the recipes', () => {
  assert.throws(() => resolveBaselines(['wanda-rtn', 'magic'], 'obr-gptq'), (e: unknown) => e instanceof OptionError && /unknown baseline recipe "magic".*obr-gptq, obr-rtn/.test((e as Error).message));
  assert.deepEqual(resolveBaselines(['rtn', 'obr-gptq', 'rtn', 'gptq'], 'obr-gptq'), ['rtn', 'gptq']);
  assert.deepEqual(resolveBaselines(undefined, 'obr-gptq'), []);
});
