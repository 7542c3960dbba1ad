// `obr bench` (CLI, a child process) and the worker's bench handler run the same spec on the tiny
// model with minimal settings: both produce a complete result with the same structure and the
// same deterministic numbers (perplexities, sizes, op counts, sparsity, core losses); the packed
// model is smaller than the dense one; decoding runs with the KV cache and matches a full forward.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import type { BenchRequest, BenchResult, BenchSpec, BenchWorkerResult } from '../../../src/protocol/bench';
import { handleBenchRequest } from '../../../src/worker/bench';

const model = 'test/fixtures/models/tiny/model.onnx';

/** Minimal settings: two cheap recipes (one pruning), tiny windows, one rep. */
const spec: Omit<BenchSpec, 'outDir'> = {
  modelPath: path.resolve(model),
  suites: ['quality', 'speed', 'runtime', 'core'],
  recipes: ['rtn', 'wanda-rtn'],
  runtimeRecipe: 'wanda-rtn',
  wbits: [4],
  sparsity: '0.5',
  abits: 16,
  kvbits: 16,
  samples: 4,
  seqlen: 32,
  evalWindows: 2,
  promptTokens: 16,
  decodeTokens: 4,
  warmup: 0,
  reps: 1,
  compressReps: 1,
  coreSizes: [32],
  executionProviders: ['cpu'],
  seed: 0,
};

function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Key paths of a JSON value (arrays by index), leaving out the given top-level / nested keys. */
function keyPaths(v: unknown, prefix = '', skip: ReadonlySet<string> = new Set()): string[] {
  if (v === null || typeof v !== 'object') return [prefix];
  const entries = Array.isArray(v) ? v.map((x, i) => [String(i), x] as const) : Object.entries(v);
  return entries.flatMap(([k, x]) => {
    const p = prefix ? `${prefix}.${k}` : k;
    if (skip.has(p) || x === undefined) return [];
    return keyPaths(x, p, skip);
  });
}

/** The fields that don't depend on timing, load or paths. */
function deterministic(r: BenchResult) {
  const variant = (v: NonNullable<BenchResult['runtime']>['dense'] | undefined) =>
    v && { fileBytes: v.fileBytes, pastFileBytes: v.pastFileBytes, ops: v.ops, decodeCheck: v.decodeCheck, executionProvider: v.executionProvider };
  return {
    schemaVersion: r.schemaVersion,
    model: { bytes: r.model.bytes, sha256: r.model.sha256, config: r.model.config },
    dense: r.quality?.dense,
    quality: r.quality?.runs.map((x) => ({ recipe: x.recipe, sparsity: x.sparsity, perplexity: x.perplexity, measuredSparsity: x.measuredSparsity, meanRelativeLoss: x.meanRelativeLoss, layers: x.layers })),
    speed: r.speed?.runs.map((x) => ({ recipe: x.recipe, layers: x.layers, perLayerCount: x.seconds?.perLayer.n })),
    runtime: r.runtime && {
      recipe: r.runtime.recipe,
      promptTokens: r.runtime.promptTokens,
      decodeTokens: r.runtime.decodeTokens,
      dense: variant(r.runtime.dense),
      packed: variant(r.runtime.packed),
      size: r.runtime.ratios?.size,
      sparseStorage: r.runtime.sparseStorage,
    },
    core: r.core?.points.map((p) => ({ method: p.method, rows: p.rows, cols: p.cols, relativeLoss: p.relativeLoss })),
    warnings: r.warnings,
  };
}

test('obr bench CLI and the worker handler give the same complete result on the tiny model', { timeout: 1_200_000 }, async (t) => {
  const root = await mkdtemp(path.join(tmpdir(), 'obr-bench-'));
  t.after(() => rm(root, { recursive: true, force: true }));
  const cliOut = path.join(root, 'cli');
  const workerOut = path.join(root, 'worker');

  const cli = await runCli([
    'bench', model, '--suite', spec.suites.join(','), '--recipes', spec.recipes.join(','), '--runtime-recipe', spec.runtimeRecipe,
    '--wbits', '4', '--sparsity', spec.sparsity, '--abits', '16', '--kvbits', '16', '--samples', String(spec.samples), '--seqlen', String(spec.seqlen),
    '--eval-windows', String(spec.evalWindows), '--prompt-tokens', String(spec.promptTokens), '--decode-tokens', String(spec.decodeTokens),
    '--warmup', '0', '--reps', '1', '--compress-reps', '1', '--core-sizes', '32', '--ep', 'cpu', '--seed', '0', '--out', cliOut, '--json',
  ]);
  assert.equal(cli.code, 0, cli.stderr);
  const fromCli = JSON.parse(cli.stdout) as BenchResult;

  // The worker's handler, through the same plumbing worker.ts gives it.
  const posted: unknown[] = [];
  let reply: { ok?: BenchWorkerResult; err?: unknown } | undefined;
  const message: BenchRequest = { type: 'bench', id: 1, spec: { ...spec, outDir: workerOut } };
  const running = new Map<number, AbortController>();
  await handleBenchRequest(message, {
    post: (m) => posted.push(m),
    running,
    reply: async (_id, work) => {
      try {
        reply = { ok: await work() };
      } catch (e) {
        reply = { err: e };
      }
    },
  });
  assert.ok(reply?.ok, `worker handler failed: ${String((reply?.err as Error | undefined)?.stack ?? reply?.err)}`);
  assert.equal(running.size, 0, 'the job is unregistered when done');
  assert.ok(posted.some((m) => (m as { type: string }).type === 'progress'), 'progress events were posted');
  const result = reply.ok;
  assert.equal(result.kind, 'bench');
  const fromWorker = result.bench;

  // Schema: every suite, the machine with the load average, the outputs on disk.
  for (const r of [fromCli, fromWorker]) {
    assert.ok(r.quality && r.speed && r.runtime && r.core, 'every suite present');
    assert.equal(r.quality.runs.length, 2);
    assert.ok(Number.isFinite(r.quality.dense.perplexity) && r.quality.dense.perplexity > 1, `dense perplexity ${r.quality.dense.perplexity}`);
    for (const run of r.quality.runs) assert.ok(run.perplexity && Number.isFinite(run.perplexity.perplexity), `${run.recipe} perplexity`);
    for (const run of r.speed.runs) {
      assert.ok(run.seconds && run.seconds.endToEnd.n === 1 && run.seconds.perLayer.n === run.layers, `${run.recipe} timings`);
      assert.ok(run.memory && run.memory.peakRssBytes > 0, `${run.recipe} peak memory`);
    }
    assert.equal(r.machine.loadAverageStart.length, 3);
    assert.ok(r.machine.cores > 0 && r.machine.cpuModel && r.machine.onnxruntime !== 'unknown', JSON.stringify(r.machine));
    assert.equal(r.machine.executionProvider, 'cpu');
    assert.ok(r.runtime.sparsityNote.includes('dense'));
    assert.ok(r.core.points.length === 2 && r.core.points.every((p) => p.gflops > 0), JSON.stringify(r.core.points.map((p) => [p.method, p.gflops])));
    for (const f of [r.outputs.json, r.outputs.markdown, r.outputs.history]) assert.ok(existsSync(f), `${f} written`);
    assert.deepEqual(JSON.parse(readFileSync(r.outputs.json, 'utf8')), JSON.parse(JSON.stringify(r)), 'the JSON on disk is the result');
    assert.equal(readFileSync(r.outputs.history, 'utf8').trim().split('\n').length, 1);

    // Packed model: smaller than dense, MatMulNBits in place of the compressed MatMuls.
    const rt = r.runtime;
    assert.ok(rt.packed, `packed model measured (warnings: ${r.warnings.join('; ')})`);
    assert.ok(rt.packed.fileBytes < rt.dense.fileBytes, `packed file (${rt.packed.fileBytes} B) smaller than dense (${rt.dense.fileBytes} B)`);
    assert.equal(rt.packed.ops.MatMulNBits, 28);
    assert.ok(rt.packedVsSimulatedMaxAbs !== undefined && rt.packedVsSimulatedMaxAbs < 1e-2, `packed matches the simulated model (${rt.packedVsSimulatedMaxAbs})`);
    // Decode runs with the cache: every step adds one position, and the cached logits equal a full forward.
    for (const v of [rt.dense, rt.packed]) {
      assert.deepEqual(v.decodeCheck, { generated: spec.decodeTokens, finalPastLength: spec.promptTokens + spec.decodeTokens });
      assert.ok(v.decodeTokensPerSecond! > 0, `${v.label} decode tokens/s ${v.decodeTokensPerSecond}`);
      assert.ok(v.cacheConsistencyMaxAbs! < 1e-3, `${v.label} cache consistency ${v.cacheConsistencyMaxAbs}`);
    }
    assert.ok(rt.sparseStorage && rt.sparseStorage.bitmapBytes < rt.sparseStorage.denseIntBytes, JSON.stringify(rt.sparseStorage));
  }

  // Same structure (modulo the command line and paths-only fields) and the same deterministic numbers.
  const skip = new Set(['spec.command', 'notes']);
  const shape = (r: BenchResult) => keyPaths(JSON.parse(JSON.stringify(r)), '', skip).map((p) => p.replace(/\.samples\.\d+$/, '.samples.#')).filter((p, i, a) => a.indexOf(p) === i).sort();
  assert.deepEqual(shape(fromCli), shape(fromWorker));
  assert.deepEqual(deterministic(fromCli), deterministic(fromWorker));
});
