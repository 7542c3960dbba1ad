// `obr bench [MODEL.onnx]`: the benchmark suites (quality, speed, runtime, core) through
// runBenchmarks — the same function the extension's worker calls — writing JSON + Markdown into
// `benchmarks/` beside the model (or --out) and appending to history.jsonl.
import { parseArgs } from 'node:util';
import { BENCH_SUITES, DEFAULT_BENCH_SPEC, isBenchSuite, type BenchSpec, type BenchSuite } from '../../protocol/bench';
import { isRecipe, parseGroupSize, RECIPES, type RecipeName } from '../../protocol/recipes';
import { runBenchmarks } from '../../pipeline/bench/run';
import { bundledBenchModel } from '../../pipeline/bench/spec';
import { type CliCommand, UsageError } from '../command';
import { parseEpList, parsePositiveInt } from './compress';

const d = DEFAULT_BENCH_SPEC;
const USAGE =
  'obr bench [MODEL.onnx] [--suite quality,speed,runtime,core] [--recipes obr-gptq,…|all] [--wbits 4[,3]] [--sparsity 0.5|2:4]\n' +
  '          [--group-size 0|32|64|128|256] [--asym]\n' +
  '          [--abits 16] [--kvbits 16] [--samples N] [--seqlen N] [--eval-windows K] [--eval-text FILE] [--calib FILE]\n' +
  '          [--runtime-recipe obr-gptq] [--past MODEL_WITH_PAST.onnx] [--prompt-tokens N] [--decode-tokens N]\n' +
  '          [--warmup N] [--reps N] [--compress-reps N] [--core-sizes 256,512,1024] [--threads N] [--ep cpu|cuda|…]\n' +
  '          [--seed N] [--out DIR] [--keep-models] [--json]\n\n' +
  `  Without MODEL, the bundled small model (the tiny test model when small is not installed).\n` +
  `  Defaults: all suites and recipes, W${d.wbits.join(',')}, sparsity ${d.sparsity}, A${d.abits} KV${d.kvbits}, ${d.samples} calibration windows,\n` +
  `  ${d.evalWindows} evaluation windows, prompt ${d.promptTokens} + decode ${d.decodeTokens} tokens, warm-up ${d.warmup}, ${d.reps} reps, core sizes ${d.coreSizes.join(',')}.\n` +
  '  Writes benchmarks/bench-<time>.json and .md beside the model (or in --out) and appends to history.jsonl there.';

function list(text: string): string[] {
  return text.split(',').map((s) => s.trim()).filter(Boolean);
}

function intList(flag: string, text: string, min: number): number[] {
  const out = list(text).map((s) => parsePositiveInt(flag, s, min));
  if (out.length === 0) throw new UsageError(`${flag}: give at least one value`);
  return out;
}

/** Parses `obr bench` arguments into a spec (defaults are filled in by runBenchmarks). */
export function parseBenchArgs(argv: string[]): Partial<BenchSpec> & { modelPath: string; json: boolean } {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        suite: { type: 'string' },
        recipes: { type: 'string' },
        wbits: { type: 'string' },
        sparsity: { type: 'string' },
        'group-size': { type: 'string' },
        asym: { type: 'boolean' },
        abits: { type: 'string' },
        kvbits: { type: 'string' },
        samples: { type: 'string' },
        seqlen: { type: 'string' },
        'eval-windows': { type: 'string' },
        'eval-text': { type: 'string' },
        calib: { type: 'string' },
        'runtime-recipe': { type: 'string' },
        past: { type: 'string' },
        'prompt-tokens': { type: 'string' },
        'decode-tokens': { type: 'string' },
        warmup: { type: 'string' },
        reps: { type: 'string' },
        'compress-reps': { type: 'string' },
        'core-sizes': { type: 'string' },
        threads: { type: 'string' },
        ep: { type: 'string' },
        seed: { type: 'string' },
        out: { type: 'string' },
        'keep-models': { type: 'boolean' },
        json: { type: 'boolean' },
      },
    });
  } catch (e) {
    throw new UsageError(`${(e as Error).message}\nUsage: ${USAGE}`, { cause: e });
  }
  const v = parsed.values;
  const [model, ...extra] = parsed.positionals;
  if (extra.length) throw new UsageError(`give at most one MODEL.onnx\nUsage: ${USAGE}`);
  let modelPath = model;
  let note: string | undefined;
  if (!modelPath) {
    const bundled = bundledBenchModel();
    if (!bundled) throw new UsageError('no MODEL.onnx given and no bundled model found (media/models/small or test/fixtures/models/tiny)');
    modelPath = bundled.modelPath;
    note = bundled.note;
  }
  const int = (flag: string, text: string | undefined, min = 1) => (text === undefined ? undefined : parsePositiveInt(flag, text, min));
  let suites: BenchSuite[] | undefined;
  if (v.suite !== undefined) {
    const names = list(v.suite);
    for (const s of names) if (!isBenchSuite(s)) throw new UsageError(`--suite: unknown suite "${s}" (choose from ${BENCH_SUITES.join(', ')})`);
    suites = names as BenchSuite[];
  }
  let recipes: RecipeName[] | undefined;
  if (v.recipes !== undefined && v.recipes !== 'all') {
    const names = list(v.recipes);
    for (const r of names) if (!isRecipe(r)) throw new UsageError(`--recipes: unknown recipe "${r}" (choose from ${RECIPES.join(', ')})`);
    recipes = names as RecipeName[];
  }
  const runtimeRecipe = v['runtime-recipe'];
  if (runtimeRecipe !== undefined && !isRecipe(runtimeRecipe)) throw new UsageError(`--runtime-recipe: unknown recipe "${runtimeRecipe}"`);
  const bits = (flag: string, text: string | undefined) => {
    if (text === undefined) return undefined;
    const b = parsePositiveInt(flag, text, 2);
    if (b > 8 && b !== 16) throw new UsageError(`${flag}: expected 2…8, or 16 to disable (got ${b})`);
    return b;
  };
  let groupSize: number | undefined;
  if (v['group-size'] !== undefined) {
    try {
      groupSize = parseGroupSize(v['group-size']);
    } catch (e) {
      throw new UsageError(`--group-size: ${(e as Error).message}`);
    }
  }
  return {
    modelPath,
    note,
    json: v.json === true,
    pastModelPath: v.past,
    suites,
    recipes,
    wbits: v.wbits !== undefined ? intList('--wbits', v.wbits, 2) : undefined,
    sparsity: v.sparsity,
    groupSize,
    asymmetric: v.asym === true ? true : undefined,
    abits: bits('--abits', v.abits),
    kvbits: bits('--kvbits', v.kvbits),
    samples: int('--samples', v.samples),
    seqlen: int('--seqlen', v.seqlen, 2),
    evalWindows: int('--eval-windows', v['eval-windows']),
    evalText: v['eval-text'],
    calibText: v.calib,
    runtimeRecipe: runtimeRecipe as RecipeName | undefined,
    promptTokens: int('--prompt-tokens', v['prompt-tokens']),
    decodeTokens: int('--decode-tokens', v['decode-tokens']),
    warmup: int('--warmup', v.warmup, 0),
    reps: int('--reps', v.reps),
    compressReps: int('--compress-reps', v['compress-reps']),
    coreSizes: v['core-sizes'] !== undefined ? intList('--core-sizes', v['core-sizes'], 8) : undefined,
    threads: int('--threads', v.threads),
    executionProviders: v.ep !== undefined ? parseEpList(v.ep) : undefined,
    seed: int('--seed', v.seed, 0),
    outDir: v.out,
    keepModels: v['keep-models'] === true ? true : undefined,
  };
}

export const benchCommand: CliCommand = {
  name: 'bench',
  summary: 'run the benchmark suites and write JSON + Markdown results',
  usage: USAGE,
  async run(argv) {
    const { json, ...spec } = parseBenchArgs(argv);
    if (spec.note) console.error(`note: ${spec.note}`);
    const abort = new AbortController();
    const onSigint = () => {
      console.error('\ncancelling…');
      abort.abort();
    };
    process.once('SIGINT', onSigint);
    const tty = process.stderr.isTTY;
    try {
      const result = await runBenchmarks(
        { ...spec, command: spec.command ?? `obr bench ${argv.join(' ')}`.trim() },
        {
          signal: abort.signal,
          log: (level, message) => console.error(level === 'info' ? message : `${level}: ${message}`),
          onProgress: (p) => {
            const line = `[${p.suite} ${p.done}/${p.total}] ${p.message ?? ''}`;
            if (tty) process.stderr.write(`\r\x1b[K${line}`);
            else console.error(line);
          },
          onCompressionProgress: (e, job) => {
            if (tty) process.stderr.write(`\r\x1b[K  ${job.recipe} W${job.wbits} ${e.stage} ${e.done}/${e.total} ${e.message ?? ''}`.slice(0, (process.stderr.columns ?? 120) - 1));
          },
        },
      );
      if (tty) process.stderr.write('\n');
      for (const w of result.warnings) console.error(`warning: ${w}`);
      if (json) console.log(JSON.stringify(result, null, 1));
      else console.log(`wrote ${result.outputs.json}\n      ${result.outputs.markdown}\nappended to ${result.outputs.history}`);
      return 0;
    } finally {
      process.off('SIGINT', onSigint);
    }
  },
};
