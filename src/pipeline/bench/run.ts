// runBenchmarks(spec, hooks): the one function behind `obr bench`, `npm run bench` and the
// extension's "OBR: Run Benchmarks" (through the worker), so every entry point produces the same
// JSON for the same spec. Suites run in a fixed order (quality/speed share their compressions,
// runtime reuses one when it matches); results go to `benchmarks/` beside the model (or
// spec.outDir) as JSON + Markdown, and one line per run is appended to history.jsonl.
import { existsSync, readFileSync } from 'node:fs';
import { appendFile, mkdir, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type {
  BenchHistoryEntry,
  BenchProgress,
  BenchResult,
  BenchSpec,
  BenchSuite,
  QualityResult,
  RecipeRun,
  RuntimeResult,
  SpeedResult,
} from '../../protocol/bench';
import { BENCH_HISTORY_FILE, BENCH_SCHEMA_VERSION } from '../../protocol/bench';
import { formatSparsity, type RecipeName } from '../../protocol/recipes';
import type { ProgressEvent } from '../../protocol/worker';
import { findLinearLayers } from '../../onnx/linear';
import { loadModel } from '../../onnx/load';
import { isMergedDecoder } from '../../onnx/merged';
import { loadTokenizer } from '../../runtime/tokenizer';
import { readText } from '../../runtime/text';
import { BUNDLED_CALIBRATION_TEXT, BUNDLED_EVALUATION_TEXT, bundledText } from '../assets';
import { throwIfAborted } from '../cancel';
import { sha256File, TOOL_VERSION } from '../compress';
import { contextLength } from '../evaluate';
import { effectiveSparsity, outputPaths } from '../outputs';
import { compressOptionsFor, jobKey, perplexityPoint, runCompressionJob, type CompressionJob, type CompressionOutcome } from './compressions';
import { runCoreSuite } from './core';
import { machineInfo } from './machine';
import { renderMarkdown } from './markdown';
import { logitsMaxAbsDiff, measureVariant, mergeVariants, modelFootprint, packWithCompressedWeights, SPARSITY_NOTE, speedRatio } from './runtime';
import { sparseStorageEstimate, type CompressedLinear } from './sparse';
import { resolveBenchSpec } from './spec';
import { sig } from './stats';

export interface BenchHooks {
  signal?: AbortSignal;
  onProgress?(progress: BenchProgress): void;
  /** Progress events of the compressions the quality / speed / runtime suites run. */
  onCompressionProgress?(event: ProgressEvent, job: CompressionJob): void;
  log?(level: 'info' | 'warn' | 'error', message: string): void;
}


/** Results folder of a spec: spec.outDir, else `benchmarks/` beside the model. */
export function benchOutDir(spec: Pick<BenchSpec, 'modelPath' | 'outDir'>): string {
  return path.resolve(spec.outDir ?? path.join(path.dirname(path.resolve(spec.modelPath)), 'benchmarks'));
}

function stamp(iso: string): string {
  return iso.replace(/[:.]/g, '-');
}

function readConfig(modelPath: string): Record<string, unknown> | undefined {
  const p = path.join(path.dirname(modelPath), 'config.json');
  if (!existsSync(p)) return undefined;
  try {
    const c = JSON.parse(readFileSync(p, 'utf8')) as Record<string, unknown>;
    const keep = ['model_type', 'hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads', 'num_key_value_heads', 'vocab_size', 'max_position_embeddings', 'torch_dtype'];
    const out: Record<string, unknown> = {};
    for (const k of keep) if (k in c) out[k] = c[k];
    const label = (c.obr_studio as { size?: string } | undefined)?.size;
    if (label) out.obr_studio_size = label;
    return out;
  } catch {
    return undefined;
  }
}

export async function runBenchmarks(specIn: Partial<BenchSpec> & { modelPath: string }, hooks: BenchHooks = {}): Promise<BenchResult> {
  const spec = resolveBenchSpec(specIn);
  const started = performance.now();
  const createdAt = new Date().toISOString();
  const loadStart = os.loadavg();
  const signal = hooks.signal;
  const log = (level: 'info' | 'warn' | 'error', message: string) => hooks.log?.(level, message);
  const progress = (suite: BenchProgress['suite'], done: number, total: number, message?: string) => hooks.onProgress?.({ suite, done, total, message });
  const warnings: string[] = [];
  const notes: string[] = [];
  const seconds: Record<string, number> = {};
  const want = (s: BenchSuite) => spec.suites.includes(s);

  const outDir = benchOutDir(spec);
  await mkdir(outDir, { recursive: true });
  const workDir = path.join(outDir, `.work-${stamp(createdAt)}-${process.pid}`);
  await mkdir(workDir, { recursive: true });

  progress('setup', 0, 1, 'reading the model');
  const config = readConfig(spec.modelPath);
  const model = {
    path: spec.modelPath,
    bytes: (await stat(spec.modelPath)).size,
    sha256: await sha256File(spec.modelPath),
    config,
    label: typeof config?.obr_studio_size === 'string' ? config.obr_studio_size : undefined,
  };
  const seqlen = spec.seqlen ?? contextLength(spec.modelPath);
  const evalText = spec.evalText ?? bundledText(BUNDLED_EVALUATION_TEXT);
  const calibText = spec.calibText ?? bundledText(BUNDLED_CALIBRATION_TEXT);
  progress('setup', 1, 1);

  const result: BenchResult = {
    schemaVersion: BENCH_SCHEMA_VERSION,
    tool: { name: 'obr-studio', version: TOOL_VERSION },
    createdAt,
    spec,
    model,
    machine: machineInfo('cpu', loadStart),
    seconds,
    warnings,
    notes,
    outputs: {
      dir: outDir,
      json: path.join(outDir, `bench-${stamp(createdAt)}.json`),
      markdown: path.join(outDir, `bench-${stamp(createdAt)}.md`),
      history: path.join(outDir, BENCH_HISTORY_FILE),
    },
  };
  if (spec.note) notes.push(spec.note);
  const outcomes = new Map<string, CompressionOutcome>();
  let providerUsed: string | undefined;

  try {
    // ---- quality + speed: one compression per recipe and bit width, shared by both suites
    if (want('quality') || want('speed')) {
      const t = performance.now();
      const jobs: CompressionJob[] = spec.wbits.flatMap((wbits) => spec.recipes.map((recipe) => ({ recipe, wbits, abits: spec.abits, kvbits: spec.kvbits })));
      const suite: BenchSuite = want('quality') ? 'quality' : 'speed';
      let dense: QualityResult['dense'] | undefined;
      if (want('quality')) {
        progress('quality', 0, jobs.length + 1, 'perplexity of the dense model');
        const p = await perplexityPoint(spec.modelPath, spec, evalText, seqlen, signal);
        providerUsed ??= p.executionProvider;
        dense = { perplexity: p.perplexity, nll: p.nll, windows: p.windows, seqlen: p.seqlen };
        log('info', `dense perplexity ${dense.perplexity.toFixed(3)} (${dense.windows} windows × ${dense.seqlen})`);
      }
      const runs: RecipeRun[] = [];
      for (let i = 0; i < jobs.length; i++) {
        throwIfAborted(signal);
        const job = jobs[i]!;
        progress(suite, i + (want('quality') ? 1 : 0), jobs.length + (want('quality') ? 1 : 0), `compressing with ${job.recipe} (W${job.wbits})`);
        const o = await runCompressionJob(
          spec,
          job,
          workDir,
          { reps: want('speed') ? spec.compressReps : 1, evalText: want('quality') ? evalText : undefined, seqlen, timings: want('speed') },
          { signal, log, onCompressionProgress: hooks.onCompressionProgress },
        );
        providerUsed ??= o.run.executionProvider;
        outcomes.set(jobKey(job.recipe, job.wbits), o);
        runs.push(o.run);
        log('info', `${job.recipe} W${job.wbits}: ${o.run.perplexity ? `perplexity ${o.run.perplexity.perplexity.toFixed(3)}` : ''} ${o.run.seconds ? `${o.run.seconds.endToEnd.median.toFixed(1)} s` : ''}`.trim());
      }
      if (want('quality') && dense) {
        const ratios = spec.wbits.flatMap((wbits) => {
          const obr = runs.find((r) => r.recipe === 'obr-gptq' && r.wbits === wbits)?.perplexity;
          const sg = runs.find((r) => r.recipe === 'sparsegpt-gptq' && r.wbits === wbits)?.perplexity;
          return obr && sg ? [{ wbits, ratio: sig(obr.perplexity / sg.perplexity, 5) }] : [];
        });
        result.quality = {
          dense,
          runs: runs.map((r) => ({ ...r, seconds: undefined, memory: undefined })),
          obrVsSparseGpt: ratios.length ? ratios : undefined,
          evalText,
          calibText,
        };
      }
      if (want('speed')) {
        const speed: SpeedResult = { runs: runs.map((r) => ({ ...r, perplexity: undefined })), compressReps: spec.compressReps };
        result.speed = speed;
      }
      // The two suites share their compressions: one wall time for both.
      seconds[want('quality') && want('speed') ? 'quality+speed' : suite] = sig((performance.now() - t) / 1000, 4);
    }

    // ---- runtime: dense vs packed in onnxruntime
    if (want('runtime')) {
      const t = performance.now();
      result.runtime = await runtimeSuite(spec, { workDir, outcomes, seqlen, evalText, warnings, notes, signal, log, progress, hooks });
      providerUsed = result.runtime.dense.executionProvider;
      seconds.runtime = sig((performance.now() - t) / 1000, 4);
    }

    // ---- core kernels
    if (want('core')) {
      const t = performance.now();
      result.core = await runCoreSuite(spec, { signal, onStep: (done, total, message) => progress('core', done, total, message) });
      seconds.core = sig((performance.now() - t) / 1000, 4);
    }
  } finally {
    if (!spec.keepModels) await rm(workDir, { recursive: true, force: true });
  }
  if (spec.keepModels) notes.push(`compressed models kept in ${workDir}`);
  seconds.total = sig((performance.now() - started) / 1000, 4);
  result.machine = machineInfo(providerUsed ?? 'cpu', loadStart);
  if (result.machine.loadAverageStart[0]! > result.machine.cores) {
    notes.push(`the machine was busy: load average ${result.machine.loadAverageStart[0]} on ${result.machine.cores} cores at the start; timings are pessimistic`);
  }

  await writeFile(result.outputs.json, JSON.stringify(result, null, 1) + '\n');
  await writeFile(result.outputs.markdown, renderMarkdown(result));
  await appendFile(result.outputs.history, JSON.stringify(historyEntry(result)) + '\n');
  log('info', `benchmark results: ${result.outputs.json}`);
  return result;
}

interface RuntimeContext {
  workDir: string;
  outcomes: Map<string, CompressionOutcome>;
  seqlen: number;
  evalText: string;
  warnings: string[];
  notes: string[];
  signal?: AbortSignal;
  log(level: 'info' | 'warn' | 'error', message: string): void;
  progress(suite: BenchProgress['suite'], done: number, total: number, message?: string): void;
  hooks: BenchHooks;
}

async function runtimeSuite(spec: BenchSpec, ctx: RuntimeContext): Promise<RuntimeResult> {
  const wbits = spec.wbits[0] ?? 4;
  const recipe: RecipeName = spec.runtimeRecipe;
  const steps = 5;
  // The packed model is a weight-only deployment artefact: reuse a matching A16/KV16 compression.
  let outcome = spec.abits === 16 && spec.kvbits === 16 ? ctx.outcomes.get(jobKey(recipe, wbits)) : undefined;
  if (!outcome) {
    ctx.progress('runtime', 0, steps, `compressing with ${recipe} (W${wbits}, weight-only) for the packed model`);
    outcome = await runCompressionJob(spec, { recipe, wbits, abits: 16, kvbits: 16 }, ctx.workDir, { reps: 1, seqlen: ctx.seqlen, timings: false }, { signal: ctx.signal, log: ctx.log, onCompressionProgress: ctx.hooks.onCompressionProgress });
  }
  const report = outcome.report;
  const options = compressOptionsFor(spec, { recipe, wbits, abits: 16, kvbits: 16 }, ctx.workDir);
  const sparsity = formatSparsity(effectiveSparsity(options));

  // Prompt: the first promptTokens + decodeTokens tokens must fit the context.
  let promptTokens = spec.promptTokens;
  let decodeTokens = spec.decodeTokens;
  const context = contextLength(spec.modelPath);
  if (promptTokens + decodeTokens > context) {
    promptTokens = Math.max(1, Math.min(promptTokens, context - decodeTokens));
    decodeTokens = Math.max(1, context - promptTokens);
    ctx.warnings.push(`prompt + decode tokens exceed the context of ${context}; measured ${promptTokens} + ${decodeTokens}`);
  }
  const tokenizer = await loadTokenizer(spec.modelPath);
  const ids = tokenizer.encode((await readText(ctx.evalText)).text);
  const prompt = ids.subarray(0, promptTokens);
  if (prompt.length < promptTokens) ctx.warnings.push(`the evaluation text has only ${prompt.length} tokens; prompt shortened`);

  const common = { executionProviders: spec.executionProviders, prompt, decodeTokens, warmup: spec.warmup, reps: spec.reps, threads: undefined, signal: ctx.signal };
  // A model with cache inputs (onnxruntime-genai's and Optimum's exports: past_key_values.* or
  // past_N; a merged decoder's with-past branch behind use_cache_branch) is its own KV-cache
  // model, and so is its packed output, which keeps the source's interface.
  const selfCached = !spec.pastModelPath && (await hasCacheInputs(spec.modelPath));
  const pastModelPath = selfCached ? spec.modelPath : spec.pastModelPath;
  if (!pastModelPath) ctx.warnings.push('no KV-cache model (model_with_past.onnx) beside the model: decode speed not measured');

  ctx.progress('runtime', 1, steps, 'dense model in onnxruntime');
  const runtime: RuntimeResult = {
    recipe,
    wbits,
    sparsity,
    groupSize: options.groupSize,
    asymmetric: options.asymmetric,
    promptTokens: prompt.length,
    decodeTokens,
    dense: await measureVariant({ ...common, label: 'dense', modelPath: spec.modelPath, pastModelPath }),
    sparsityNote: SPARSITY_NOTE,
  };

  // The pipeline's packed model when it wrote one; else the benchmark packs model.onnx itself
  // from the same codes (and always packs the KV-cache twin the same way).
  let packedPath = report.outputs.packed && existsSync(report.outputs.packed) ? report.outputs.packed : undefined;
  if (!packedPath) {
    ctx.progress('runtime', 2, steps, 'packing the model (MatMulNBits)');
    const r = await packWithCompressedWeights(spec.modelPath, report, path.join(ctx.workDir, path.basename(outputPaths(spec.modelPath, options).packed)), { seed: spec.seed });
    if (r.warning) ctx.warnings.push(`no packed model: ${r.warning}`);
    else {
      packedPath = r.path;
      ctx.notes.push(`the compression wrote no packed model (${report.warnings.find((w) => /packed|MatMulNBits/i.test(w)) ?? 'no reason given'}); the benchmark packed it from the same codes`);
    }
  }
  if (packedPath) {
    let packedPast: string | undefined = selfCached ? packedPath : undefined;
    if (spec.pastModelPath) {
      ctx.progress('runtime', 2, steps, 'packing the KV-cache model with the same weights');
      const out = outputPaths(spec.pastModelPath, { ...options, outDir: ctx.workDir }).packed;
      const r = await packWithCompressedWeights(spec.pastModelPath, report, out, { seed: spec.seed });
      if (r.warning) ctx.warnings.push(`KV-cache model not packed: ${r.warning}`);
      else packedPast = r.path;
      if (r.maxCodeError > 0.01) ctx.warnings.push(`recovered integer codes deviate by up to ${r.maxCodeError.toFixed(3)} from integers (scales rounded in the report?)`);
    }
    ctx.progress('runtime', 3, steps, 'packed model in onnxruntime');
    runtime.packed = await measureVariant({ ...common, label: 'packed', modelPath: packedPath, pastModelPath: packedPast });
    // A second round, dense then packed again, so a change of machine load during the suite
    // affects both variants alike; each round is a fresh process per variant.
    if (spec.reps >= 4) {
      const d2 = await measureVariant({ ...common, label: 'dense', modelPath: spec.modelPath, pastModelPath });
      const p2 = await measureVariant({ ...common, label: 'packed', modelPath: packedPath, pastModelPath: packedPast });
      runtime.dense = mergeVariants(runtime.dense, d2, prompt.length);
      runtime.packed = mergeVariants(runtime.packed, p2, prompt.length);
    }
    if (report.outputs.simulated) {
      runtime.packedVsSimulatedMaxAbs = await logitsMaxAbsDiff(report.outputs.simulated, packedPath, prompt, spec.executionProviders);
    }
    const d = runtime.dense;
    const p = runtime.packed;
    runtime.ratios = {
      size: sig(p.fileBytes / d.fileBytes, 4),
      load: speedRatio(d.loadMs, p.loadMs) ?? 0,
      prefill: speedRatio(d.prefillMs, p.prefillMs) ?? 0,
      decode: speedRatio(d.decodeMsPerToken, p.decodeMsPerToken),
    };
  }

  // What a sparse storage format would reach (bytes computed from the measured sparsity).
  ctx.progress('runtime', 4, steps, 'sparse storage estimate');
  const fp = await modelFootprint(spec.modelPath);
  try {
    const byName = new Map(report.layers.map((l) => [l.name, l]));
    const layers: CompressedLinear[] = [];
    for (const l of findLinearLayers(fp.loaded.model)) {
      const r = byName.get(l.name);
      if (!r) continue;
      layers.push({ rows: r.rows, cols: r.cols, sparsity: r.sparsity, storedBytes: fp.loaded.initializerInfo(l.weightName)?.byteLength ?? r.rows * r.cols * 4 });
    }
    runtime.sparseStorage = sparseStorageEstimate(layers, wbits, fp.bytes, { groupSize: options.groupSize, asymmetric: options.asymmetric });
  } finally {
    await fp.loaded.close();
  }
  ctx.progress('runtime', steps, steps, 'runtime done');
  return runtime;
}

export function historyEntry(r: BenchResult): BenchHistoryEntry {
  const perplexity: Record<string, number> = {};
  for (const run of r.quality?.runs ?? []) if (run.perplexity) perplexity[jobKey(run.recipe, run.wbits)] = sig(run.perplexity.perplexity);
  const compressSeconds: Record<string, number> = {};
  for (const run of r.speed?.runs ?? []) if (run.seconds) compressSeconds[jobKey(run.recipe, run.wbits)] = sig(run.seconds.endToEnd.median, 4);
  const coreGflops: Record<string, number> = {};
  for (const p of r.core?.points ?? []) coreGflops[`${p.method}@${p.cols}`] = p.gflops;
  return {
    createdAt: r.createdAt,
    model: r.model.path,
    modelSha256: r.model.sha256,
    suites: r.spec.suites,
    loadAverage: r.machine.loadAverageStart[0] ?? 0,
    executionProvider: r.machine.executionProvider,
    densePerplexity: r.quality ? sig(r.quality.dense.perplexity) : undefined,
    perplexity,
    compressSeconds,
    sizeRatio: r.runtime?.ratios?.size,
    decodeTokensPerSecond: r.runtime ? { dense: r.runtime.dense.decodeTokensPerSecond, packed: r.runtime.packed?.decodeTokensPerSecond } : undefined,
    prefillMs: r.runtime ? { dense: sig(r.runtime.dense.prefillMs.median, 4), packed: r.runtime.packed ? sig(r.runtime.packed.prefillMs.median, 4) : undefined } : undefined,
    coreGflops: r.core ? coreGflops : undefined,
    json: r.outputs.json,
  };
}

/** Whether a model takes its own KV cache: past_key_values.* / past_N inputs, or an Optimum merged decoder. */
async function hasCacheInputs(modelPath: string): Promise<boolean> {
  const loaded = await loadModel(modelPath);
  try {
    return isMergedDecoder(loaded.model) || (loaded.model.graph?.input ?? []).some((i) => /^past(_key_values)?[._]/.test(i.name ?? ''));
  } finally {
    await loaded.close();
  }
}
