// Quality and speed suites: one runCompression per recipe and bit width (the same calls the CLI's
// `obr compress` and the extension make), perplexity of each simulated model on the first K
// evaluation windows, timings per layer and end to end, peak memory per compression.
import { parseSparsity, formatSparsity, type CompressOptions, type RecipeName, DEFAULT_OPTIONS } from '../../protocol/recipes';
import type { BenchSpec, PerplexityPoint, RecipeRun } from '../../protocol/bench';
import type { CompressionReport } from '../../protocol/report';
import type { ProgressEvent } from '../../protocol/worker';
import { throwIfAborted } from '../cancel';
import { runCompression } from '../compress';
import { evaluateModel } from '../evaluate';
import { effectiveSparsity } from '../outputs';
import { PeakMemoryTracker } from './machine';
import { sig, summarize } from './stats';

export interface CompressionJob {
  recipe: RecipeName;
  wbits: number;
  abits: number;
  kvbits: number;
}

export interface CompressionOutcome {
  run: RecipeRun;
  report: CompressionReport;
}

export interface CompressionHooks {
  signal?: AbortSignal;
  log?(level: 'info' | 'warn' | 'error', message: string): void;
  onCompressionProgress?(event: ProgressEvent, job: CompressionJob): void;
}

export function compressOptionsFor(spec: BenchSpec, job: CompressionJob, workDir: string): CompressOptions {
  return {
    ...DEFAULT_OPTIONS,
    recipe: job.recipe,
    sparsity: parseSparsity(spec.sparsity),
    wbits: job.wbits,
    groupSize: spec.groupSize ?? DEFAULT_OPTIONS.groupSize,
    asymmetric: spec.asymmetric ?? DEFAULT_OPTIONS.asymmetric,
    abits: job.abits,
    kvbits: job.kvbits,
    samples: spec.samples,
    seqlen: spec.seqlen,
    seed: spec.seed,
    calibText: spec.calibText,
    executionProviders: spec.executionProviders as CompressOptions['executionProviders'],
    outDir: workDir,
  };
}

/** Perplexity of `modelPath` on the first `spec.evalWindows` windows (tokenizer beside the model). */
export async function perplexityPoint(modelPath: string, spec: BenchSpec, evalText: string, seqlen: number, signal?: AbortSignal): Promise<PerplexityPoint & { executionProvider: string }> {
  const r = await evaluateModel(modelPath, {
    text: evalText,
    seqlen,
    maxWindows: spec.evalWindows,
    executionProviders: spec.executionProviders,
    signal,
  });
  return { perplexity: r.perplexity, nll: r.nll, windows: r.windows, seqlen: r.seqlen, executionProvider: r.executionProvider.used };
}

/**
 * Compresses with one recipe `reps` times (timings of every rep, weights and perplexity of the
 * first), evaluating the simulated model when `evalText` is given.
 */
export async function runCompressionJob(
  spec: BenchSpec,
  job: CompressionJob,
  workDir: string,
  opts: { reps: number; evalText?: string; seqlen: number; timings: boolean },
  hooks: CompressionHooks,
): Promise<CompressionOutcome> {
  const options = compressOptionsFor(spec, job, workDir);
  const endToEnd: number[] = [];
  let report: CompressionReport | undefined;
  let memory: RecipeRun['memory'];
  for (let rep = 0; rep < Math.max(1, opts.reps); rep++) {
    throwIfAborted(hooks.signal);
    const tracker = PeakMemoryTracker.start();
    const r = await runCompression(
      spec.modelPath,
      options,
      {
        signal: hooks.signal,
        log: hooks.log,
        onProgress: (event) => hooks.onCompressionProgress?.(event, job),
      },
      { evalText: null, resume: false, threads: spec.threads },
    );
    const m = tracker.stop();
    if (!memory || m.peakRssBytes - m.baseRssBytes > memory.peakRssBytes - memory.baseRssBytes) memory = m;
    endToEnd.push(r.timings.total ?? 0);
    report ??= r;
  }
  const rep = report!;
  const layers = rep.layers;
  const perLayer = layers.map((l) => l.seconds);
  const byRole = new Map<string, number[]>();
  for (const l of layers) {
    if (!byRole.has(l.role)) byRole.set(l.role, []);
    byRole.get(l.role)!.push(l.seconds);
  }
  const relLoss = layers.length ? layers.reduce((s, l) => s + (l.loss.outputEnergy > 0 ? l.loss.total / l.loss.outputEnergy : 0), 0) / layers.length : 0;
  const run: RecipeRun = {
    recipe: job.recipe,
    wbits: job.wbits,
    sparsity: formatSparsity(effectiveSparsity(options)),
    abits: job.abits,
    kvbits: job.kvbits,
    measuredSparsity: sig(layers.length ? layers.reduce((s, l) => s + l.sparsity, 0) / layers.length : 0),
    meanRelativeLoss: sig(relLoss),
    executionProvider: rep.executionProvider.used,
    layers: layers.length,
    warnings: rep.warnings,
  };
  if (opts.timings) {
    run.seconds = {
      endToEnd: summarize(endToEnd),
      calibrate: sig(rep.timings.calibrate ?? 0),
      compress: sig(rep.timings.compress ?? 0),
      write: sig(rep.timings.write ?? 0),
      perLayer: summarize(perLayer),
      perRole: Object.fromEntries([...byRole].map(([role, s]) => [role, sig(summarize(s).median)])),
    };
    run.memory = memory;
  }
  if (opts.evalText && rep.outputs.simulated) {
    throwIfAborted(hooks.signal);
    const p = await perplexityPoint(rep.outputs.simulated, spec, opts.evalText, opts.seqlen, hooks.signal);
    run.perplexity = { perplexity: p.perplexity, nll: p.nll, windows: p.windows, seqlen: p.seqlen };
  }
  return { run, report: rep };
}

/** Key of a compression in maps and history: "obr-gptq@w4". */
export function jobKey(recipe: string, wbits: number): string {
  return `${recipe}@w${wbits}`;
}
