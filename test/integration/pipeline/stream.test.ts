// Block-streaming calibration (§1.5) against the whole-model path it replaces: the same Hessians
// and the same compressed weights on the bundled models, sequential and one-shot, and a number of
// block forwards linear in depth (groups + 1 per block, plus one prelude).
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { findLinearLayers } from '../../../src/onnx/linear';
import { loadModel } from '../../../src/onnx/load';
import { readLayerWeight64 } from '../../../src/onnx/weights';
import { AbortError } from '../../../src/pipeline/cancel';
import { runCompression, type PipelineOptions } from '../../../src/pipeline/compress';
import type { CapturedStats } from '../../../src/pipeline/capture';
import { openForPerplexity, perplexityOf, streamedPerplexity } from '../../../src/pipeline/evaluate';
import { evaluationWindows, readText } from '../../../src/runtime/text';
import { loadTokenizer } from '../../../src/runtime/tokenizer';
import type { CompressOptions } from '../../../src/protocol/recipes';
import { quickOptions, ROOT, shortText, tempDir, TINY } from './fixtures';

const SMALL = path.join(ROOT, 'media', 'models', 'small', 'model.onnx');
const SMALL_FP16 = path.join(ROOT, 'media', 'models', 'small', 'model.fp16.onnx');

interface Run {
  hessians: Map<string, CapturedStats>;
  forwards: Array<{ block: string | null; kind: string }>;
  weights: Map<string, Float64Array>;
}

async function run(model: string, over: Partial<CompressOptions>, extra: PipelineOptions, dir: string): Promise<Run> {
  mkdirSync(dir, { recursive: true });
  const hessians = new Map<string, CapturedStats>();
  const forwards: Run['forwards'] = [];
  const report = await runCompression(model, quickOptions(dir, { outDir: dir, ...over }), {}, {
    evalText: null,
    ...extra,
    onCapture: (block, input, stats) => hessians.set(`${block} ${input}`, stats),
    onForward: (block, kind) => forwards.push({ block, kind }),
  });
  const sim = await loadModel(report.outputs.simulated!);
  const weights = new Map<string, Float64Array>();
  const names = new Set(report.layers.map((l) => l.name));
  for (const l of findLinearLayers(sim.model)) if (names.has(l.name)) weights.set(l.name, await readLayerWeight64(sim, l));
  await sim.close();
  return { hessians, forwards, weights };
}

/** max |a − b| / max |b| */
function relMaxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let d = 0;
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i]! - b[i]!));
    m = Math.max(m, Math.abs(b[i]!));
  }
  return d / (m || 1);
}

// Tolerances. Streaming feeds each block the very tensors the whole model computes (same
// onnxruntime kernels on the same inputs), so the numbers agree to float32 rounding: Hessians
// within 1e-5 of their largest entry, compressed weights within 1e-5 of the layer's largest weight.
const HESSIAN_TOL = 1e-5;
const WEIGHT_TOL = 1e-5;

/** Largest relative differences seen (reported as test diagnostics). */
async function compare(label: string, model: string, over: Partial<CompressOptions>, extra: PipelineOptions = {}): Promise<string> {
  const dir = tempDir();
  const streamed = await run(model, over, { ...extra, calibrationForwards: 'stream' }, path.join(dir, 's'));
  const whole = await run(model, over, { ...extra, calibrationForwards: 'whole-model' }, path.join(dir, 'w'));
  assert.deepEqual([...streamed.hessians.keys()].sort(), [...whole.hessians.keys()].sort(), `${label}: the same Hessians are captured`);
  let maxH = 0;
  let maxW = 0;
  for (const [k, h] of whole.hessians) {
    const s = streamed.hessians.get(k)!;
    const dh = relMaxDiff(s.hessian, h.hessian);
    maxH = Math.max(maxH, dh);
    assert.ok(dh <= HESSIAN_TOL, `${label} ${k}: Hessian differs by ${dh} (relative)`);
    assert.ok(relMaxDiff(s.channelEnergy, h.channelEnergy) <= HESSIAN_TOL, `${label} ${k}: channel energy`);
  }
  assert.equal(streamed.weights.size, whole.weights.size);
  for (const [name, w] of whole.weights) {
    const dw = relMaxDiff(streamed.weights.get(name)!, w);
    maxW = Math.max(maxW, dw);
    assert.ok(dw <= WEIGHT_TOL, `${label} ${name}: compressed weight differs by ${dw} (relative)`);
  }
  return `${label}: ${whole.hessians.size} Hessians, max relative difference ${maxH.toExponential(2)}; ${whole.weights.size} layers, max relative weight difference ${maxW.toExponential(2)}`;
}

test('streamed calibration = whole-model calibration: tiny model, obr-gptq W4A4KV4 (rotated), sequential', { timeout: 300_000 }, async (t) => {
  t.diagnostic(await compare('tiny sequential', TINY, { recipe: 'obr-gptq' }));
});

test('streamed calibration = whole-model calibration: tiny model, one-shot', { timeout: 300_000 }, async (t) => {
  t.diagnostic(await compare('tiny oneshot', TINY, { recipe: 'obr-rtn', abits: 16, kvbits: 16, calibrationMode: 'oneshot' }));
});

test('streamed calibration = whole-model calibration: small model (fp32 and fp16), sequential and one-shot', { timeout: 600_000 }, async (t) => {
  t.diagnostic(await compare('small sequential', SMALL, { recipe: 'gptq', abits: 16, kvbits: 16, samples: 2 }, { onlyBlocks: [0, 3] }));
  t.diagnostic(await compare('small fp16 oneshot', SMALL_FP16, { recipe: 'obr-rtn', abits: 16, kvbits: 16, samples: 2, calibrationMode: 'oneshot' }, { onlyBlocks: [1, 2] }));
});

test('block forwards are linear in depth: one prelude, then groups + 1 per block (one-shot: 1), none after the last block compressed', { timeout: 300_000 }, async () => {
  const dir = tempDir();
  const layers = findLinearLayers((await loadModel(TINY)).model);
  const blocks = new Set(layers.filter((l) => l.block !== null).map((l) => l.block)).size;
  const groups = 4; // [q,k,v] → [o] → [gate,up] → [down]
  const seq = await run(TINY, { recipe: 'rtn', abits: 16, kvbits: 16 }, {}, path.join(dir, 'a'));
  assert.equal(seq.forwards.filter((f) => f.kind === 'prelude').length, 1);
  for (let b = 0; b < blocks; b++) {
    const mine = seq.forwards.filter((f) => f.block === String(b));
    assert.equal(mine.filter((f) => f.kind === 'capture').length, groups, `block ${b}: one capture per group`);
    // The last block's outputs feed nothing: no forward after its captures.
    assert.equal(mine.filter((f) => f.kind === 'advance').length, b < blocks - 1 ? 1 : 0, `block ${b}: one forward to the next block`);
  }
  assert.equal(seq.forwards.length, 1 + blocks * (groups + 1) - 1);
  const one = await run(TINY, { recipe: 'rtn', abits: 16, kvbits: 16, calibrationMode: 'oneshot' }, {}, path.join(dir, 'b'));
  assert.equal(one.forwards.length, 1 + blocks);
  assert.deepEqual(one.forwards.slice(1).map((f) => f.kind), [...Array(blocks - 1).fill('capture+advance'), 'capture']);
  // Blocks after the last one compressed are not run at all.
  const first = await run(TINY, { recipe: 'rtn', abits: 16, kvbits: 16 }, { onlyBlocks: [0] }, path.join(dir, 'd'));
  assert.deepEqual(first.forwards.map((f) => f.block), [null, '0', '0', '0', '0']);
  // The whole-model path runs one (0…b)-deep forward per capture: Σ_b groups·(b + 1) block forwards.
  const old = await run(TINY, { recipe: 'rtn', abits: 16, kvbits: 16 }, { calibrationForwards: 'whole-model' }, path.join(dir, 'c'));
  const oldBlockForwards = old.forwards.reduce((s, f) => s + Number(f.block) + 1, 0);
  assert.equal(oldBlockForwards, (groups * blocks * (blocks + 1)) / 2);
});

test('the activation cache spilled to disk (budget 0 MiB) gives the same Hessians and weights; the spill files are gone at the end', { timeout: 300_000 }, async () => {
  const dir = tempDir();
  const spillDir = path.join(dir, 's', '.model.obr-partial', 'activations');
  let filesSeen = 0;
  const over: Partial<CompressOptions> = { recipe: 'obr-gptq', abits: 16, kvbits: 16 };
  const spilled = await run(TINY, over, { activationCacheMiB: 0, onlyBlocks: [1, 2], onBlockStart: () => (filesSeen = Math.max(filesSeen, existsSync(spillDir) ? readdirSync(spillDir).length : 0)) }, path.join(dir, 's'));
  const inMemory = await run(TINY, over, { onlyBlocks: [1, 2] }, path.join(dir, 'm'));
  assert.ok(filesSeen > 0, 'block inputs were on disk while the job ran');
  assert.ok(!existsSync(spillDir), 'spill files removed');
  for (const [k, h] of inMemory.hessians) assert.equal(relMaxDiff(spilled.hessians.get(k)!.hessian, h.hessian), 0, k);
  for (const [name, w] of inMemory.weights) assert.equal(relMaxDiff(spilled.weights.get(name)!, w), 0, name);
});

test('cancel during streamed calibration (spilling) removes the spill files; resuming gives the uninterrupted outputs', { timeout: 300_000 }, async () => {
  const dir = tempDir();
  const over: Partial<CompressOptions> = { recipe: 'obr-rtn', abits: 16, kvbits: 16 };
  const whole = await run(TINY, over, {}, path.join(dir, 'a'));
  const out = path.join(dir, 'b');
  mkdirSync(out, { recursive: true });
  const abort = new AbortController();
  await assert.rejects(
    runCompression(TINY, quickOptions(dir, { ...over, outDir: out }), { signal: abort.signal }, {
      evalText: null,
      activationCacheMiB: 0,
      keepCheckpointOnCancel: true,
      onForward: (block, kind) => {
        if (block === '2' && kind === 'capture') abort.abort();
      },
    }),
    (e: unknown) => e instanceof AbortError,
  );
  const partial = path.join(out, '.model.obr-partial');
  assert.deepEqual(JSON.parse(readFileSync(path.join(partial, 'manifest.json'), 'utf8')).blocks, ['0', '1'], 'blocks 0 and 1 checkpointed');
  assert.ok(!existsSync(path.join(partial, 'activations')), 'no spill files after the cancel');
  const forwards: Array<string | null> = [];
  const resumed = await runCompression(TINY, quickOptions(dir, { ...over, outDir: out }), {}, { evalText: null, activationCacheMiB: 0, onForward: (b) => forwards.push(b) });
  assert.deepEqual(resumed.options.resumedBlocks, ['0', '1']);
  // Restored blocks are only run forward (1 each) to rebuild the next block's inputs.
  assert.equal(forwards.filter((b) => b === '0').length, 1);
  assert.equal(forwards.filter((b) => b === '2').length, 5);
  const sim = await loadModel(resumed.outputs.simulated!);
  for (const l of findLinearLayers(sim.model)) {
    const w = whole.weights.get(l.name);
    if (w) assert.equal(relMaxDiff(await readLayerWeight64(sim, l), w), 0, l.name);
  }
  await sim.close();
  assert.deepEqual(readdirSync(out).filter((n) => n.startsWith('.')), [], 'working folder and lock removed');
});

test('perplexity streamed through the blocks = the whole model in one session (dense, and W4A4KV4 simulated with fake-quant nodes)', { timeout: 300_000 }, async () => {
  const dir = tempDir();
  const evalText = shortText(dir, 'sotu-test.txt', 20_000);
  const over = { recipe: 'obr-gptq' as const };
  const logs: string[] = [];
  const a = await runCompression(TINY, quickOptions(dir, { ...over, outDir: path.join(dir, 'a') }), { log: (_, m) => logs.push(m) }, { evalText, evalWindows: 6, batch: 4, onlyBlocks: [0], activationCacheMiB: 0 });
  assert.ok(!logs.some((m) => /runs the whole model/.test(m)), `both models were cut into blocks: ${logs.join('; ')}`);
  const b = await runCompression(TINY, quickOptions(dir, { ...over, outDir: path.join(dir, 'b') }), {}, { evalText, evalWindows: 6, batch: 4, onlyBlocks: [0], calibrationForwards: 'whole-model' });
  for (const k of ['dense', 'compressed'] as const) {
    assert.equal(a.perplexity[k]!.windows, 6);
    assert.equal(a.perplexity[k]!.nll, b.perplexity[k]!.nll, `${k}: streamed NLL ${a.perplexity[k]!.nll} vs whole ${b.perplexity[k]!.nll}`);
  }
  assert.ok(a.perplexity.compressed!.perplexity > a.perplexity.dense!.perplexity);
});

test('dense perplexity of an external-data model with its weights read from the file block by block = one whole-model session', { timeout: 300_000 }, async () => {
  const file = path.join(ROOT, 'media', 'models', 'small', 'model.external.onnx');
  const dir = tempDir();
  const text = await readText(shortText(dir, 'sotu-test.txt', 20_000));
  const tokenizer = await loadTokenizer(file);
  const windows = evaluationWindows(tokenizer.encode(text.text), 64, { maxWindows: 5 });
  const loaded = await loadModel(file);
  const forwards: string[] = [];
  const streamed = await streamedPerplexity(loaded.model, windows, { executionProviders: ['cpu'], batch: 2, source: loaded, log: (m) => forwards.push(m) });
  await loaded.close();
  assert.deepEqual(forwards, [], 'streamed, no whole-model fallback');
  const lm = await openForPerplexity(file, ['cpu']);
  const whole = await perplexityOf(lm, windows, { batch: 2 });
  await lm.release();
  assert.equal(streamed.nll, whole.nll);
});
