// Benchmark: peak memory of ONE layer in the core (compressLayer), issue #12 item 2 — the layer
// that sets a job's peak on the 2.1 GiB benchmark model is the 2048 × 5632 down projection under
// obr-gptq (the batched solver at 5632 columns). A seeded synthetic layer (src/core/random.ts:
// correlated inputs, 8 outlier channels; H from `tokens` inputs) is compressed in this process
// with the core of checkout --root (this one by default, or e.g. a checkout of main), on
// onnxruntime's CPU provider as a job does (threads: the core's default). Reported: the process's
// peak RSS (getrusage maxRSS) and its RSS just before compressLayer (the layer's W and H are held
// there, as the pipeline holds them), and from a worker thread that samples RSS every 10 ms while
// the main thread computes, when the peak happened (seconds into the layer; the solver's
// iterations are timestamped too).
//
// Usage: node --import tsx scripts/bench/memoryLayer.ts [--root CHECKOUT] [--rows 2048]
//          [--cols 5632] [--tokens 1024] [--recipe obr-gptq] [--out FILE.json]
// Compare two checkouts by running it once per checkout (alternating, or at the same time: each
// process's peak is its own). The JSON line printed last is the result.
import { writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';

const { values } = parseArgs({
  options: {
    root: { type: 'string' },
    rows: { type: 'string' },
    cols: { type: 'string' },
    tokens: { type: 'string' },
    recipe: { type: 'string' },
    out: { type: 'string' },
  },
});
const root = resolve(values.root ?? join(__dirname, '..', '..'));
const rows = Number(values.rows ?? 2048);
const cols = Number(values.cols ?? 5632);
const tokens = Number(values.tokens ?? 1024);
const recipe = values.recipe ?? 'obr-gptq';
const MiB = 2 ** 20;

/** A worker sampling the process's RSS every 10 ms into shared memory: [max bytes, ms at max]. */
function rssSampler(): { stop(): Promise<{ maxBytes: number; atMs: number }> } {
  const cell = new Float64Array(new SharedArrayBuffer(24));
  const t0 = performance.timeOrigin + performance.now();
  const w = new Worker(
    `const { workerData } = require('node:worker_threads');
     const cell = new Float64Array(workerData.buffer);
     const tick = () => {
       const rss = process.memoryUsage.rss();
       if (rss > cell[0]) { cell[0] = rss; cell[1] = Date.now() - workerData.t0; }
       if (cell[2] === 0) setTimeout(tick, 10);
     };
     tick();`,
    { eval: true, workerData: { buffer: cell.buffer, t0 } },
  );
  return {
    async stop() {
      cell[2] = 1;
      await w.terminate();
      return { maxBytes: cell[0]!, atMs: cell[1]! };
    },
  };
}

async function main(): Promise<void> {
  const { syntheticLayer } = (await import(join(root, 'src', 'core', 'random.ts'))) as typeof import('../../src/core/random');
  const { compressLayer } = (await import(join(root, 'src', 'core', 'compress.ts'))) as typeof import('../../src/core/compress');
  const { createOrtBackend } = (await import(join(root, 'src', 'runtime', 'ortBackend.ts'))) as typeof import('../../src/runtime/ortBackend');
  const setupStart = performance.now();
  let layer: ReturnType<typeof syntheticLayer> | null = syntheticLayer(rows, cols, 1, { tokens, rank: 64, outlierChannels: 8 });
  const { weight, hessian, channelEnergy } = layer;
  layer = null; // drop the inputs (cols × tokens)
  const setupSeconds = (performance.now() - setupStart) / 1000;
  const backend = await createOrtBackend({ threads: 2 });
  (globalThis as { gc?: () => void }).gc?.();
  const rssBefore = process.memoryUsage.rss();
  const maxBefore = process.resourceUsage().maxRSS * 1024;
  const sampler = rssSampler();
  const started = performance.now();
  const iterations: Array<{ t: number; step: number; iteration: number }> = [];
  const r = await compressLayer(
    { weight, rows, cols, hessian, channelEnergy },
    { method: recipe as 'obr-gptq', sparsity: { kind: 'unstructured', ratio: 0.5 }, wbits: 4, alpha: 0.5, damp: 0.01 },
    { backend, solver: 'batched', onSolverIteration: (q) => iterations.push({ t: Number(((performance.now() - started) / 1000).toFixed(2)), step: q.step, iteration: q.iteration }) },
  );
  const seconds = (performance.now() - started) / 1000;
  const sampled = await sampler.stop();
  await backend.release();
  const git = (await import('node:child_process')).spawnSync('git', ['-C', root, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).stdout.trim();
  const result = {
    date: new Date().toISOString(),
    checkout: `${root} @ ${git}`,
    layer: { rows, cols, tokens, recipe, seed: 1, outlierChannels: 8 },
    loadAverage: loadavg().map((x) => Number(x.toFixed(2))),
    setupSeconds: Number(setupSeconds.toFixed(1)),
    seconds: Number(seconds.toFixed(1)),
    rssBeforeMiB: Math.round(rssBefore / MiB),
    peakRssBeforeLayerMiB: Math.round(maxBefore / MiB),
    peakRssMiB: Math.round((process.resourceUsage().maxRSS * 1024) / MiB),
    sampledPeakRssMiB: Math.round(sampled.maxBytes / MiB),
    sampledPeakAtSeconds: Number((sampled.atMs / 1000).toFixed(1)),
    layerLossTotal: r.stats.loss.total,
    iterationsTimeline: iterations.filter((x) => x.iteration === 1),
  };
  console.log(`RESULT ${JSON.stringify(result)}`);
  if (values.out) writeFileSync(values.out, `${JSON.stringify(result, null, 1)}\n`);
}

void main();
