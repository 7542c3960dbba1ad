// Benchmark: peak memory of a compression job on a model with more than 2 GiB of external-data
// weights (issue #12 item 2, "memory bounded by one block, not the model"). The LLaMA-shaped model
// of the large-ONNX benchmark (hidden 2048, FF 5632, 16 heads, 11 blocks: 2.1 GiB of float32
// weights; vocabulary 2048 so the bundled tiny tokenizer fits) is generated once; then the job runs
// in its own process with this checkout's pipeline (A) and with a reference checkout's (B, e.g.
// main), alternating A B A B…, each process reporting its own peak RSS (getrusage maxRSS).
//
// Usage: node --import tsx scripts/bench/memory.ts [--dir DIR] [--vs /path/to/other/checkout]
//          [--blocks 11] [--only-blocks 0,1] [--runs 1] [--abits 16 --kvbits 16] [--recipe rtn]
//          [--samples 8] [--seqlen 64] [--eval-windows 2] [--keep] [--concurrent]
//   --only-blocks  compress only these blocks (the write and the evaluation still cover the whole model)
//   --tunables, --vs-tunables  GLIBC_TUNABLES for A's / B's jobs instead of the CLI's settings
//   --concurrent   run A and B at the same time instead of alternating (each process's peak RSS is
//                  its own either way; their times are then not comparable)
// Each job of this checkout also writes a memory trace (OBR_MEMLOG, src/pipeline/memlog.ts): RSS at
// every stage and layer boundary; the result names the step where the peak was reached.
// Job processes run with the malloc settings the CLI uses (src/runtime/mallocTunables.ts: glibc's
// huge-page tunable where it applies); the JSON says which (`malloc`).
// Writes bench-results/memory.json (merged by setting: one entry per recipe/bits/blocks).
import { spawn, spawnSync } from 'node:child_process';
import { copyFile, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { writeLargeLlama } from './largeLlama';
import { describeMallocTuning, withMallocTunables } from '../../src/runtime/mallocTunables';

const ROOT = resolve(__dirname, '..', '..');
const HIDDEN = 2048;
const INTERMEDIATE = 5632;
const HEADS = 16;
const VOCAB = 2048;

const { values } = parseArgs({
  options: {
    dir: { type: 'string' },
    vs: { type: 'string' },
    blocks: { type: 'string' },
    'only-blocks': { type: 'string' },
    runs: { type: 'string' },
    recipe: { type: 'string' },
    abits: { type: 'string' },
    kvbits: { type: 'string' },
    samples: { type: 'string' },
    seqlen: { type: 'string' },
    'eval-windows': { type: 'string' },
    keep: { type: 'boolean' },
    concurrent: { type: 'boolean' },
    /** GLIBC_TUNABLES of A's / B's job processes instead of the CLI's settings (comparing malloc settings). */
    tunables: { type: 'string' },
    'vs-tunables': { type: 'string' },
    // internal: one job in this process
    phase: { type: 'string' },
    root: { type: 'string' },
  },
});
const dir = resolve(values.dir ?? join(tmpdir(), 'obr-bench-memory'));
const modelDir = join(dir, 'model');
const model = join(modelDir, 'model.onnx');
const blocks = Number(values.blocks ?? 11);
const onlyBlocks = values['only-blocks'] ? values['only-blocks'].split(',').map(Number) : undefined;
const setting = {
  recipe: values.recipe ?? 'rtn',
  abits: Number(values.abits ?? 16),
  kvbits: Number(values.kvbits ?? 16),
  samples: Number(values.samples ?? 8),
  seqlen: Number(values.seqlen ?? 64),
  evalWindows: Number(values['eval-windows'] ?? 2),
};

interface JobResult {
  root: string;
  seconds: number;
  peakRssBytes: number;
  timings: Record<string, number>;
  perplexity: { dense?: number; compressed?: number };
  layers: number;
  /** GLIBC_TUNABLES the job process ran with (null: glibc's defaults). */
  glibcTunables: string | null;
  /** The working store's own accounting (checkouts that have one). */
  store?: { peakResidentBytes: number; writtenBytes: number };
  /** Checkouts with a memory trace: the step that ended at the highest RSS, and the trace. */
  peakAt?: string;
  trace?: Array<{ t: number; label: string; rssMiB: number; peakSinceLastMiB: number; maxRssMiB: number }>;
}

/** One job in this process, with the pipeline of checkout `root`. */
async function job(root: string): Promise<void> {
  const started = performance.now();
  const { runCompression } = (await import(join(root, 'src', 'pipeline', 'compress.ts'))) as typeof import('../../src/pipeline/compress');
  const { DEFAULT_OPTIONS } = (await import(join(root, 'src', 'protocol', 'recipes.ts'))) as typeof import('../../src/protocol/recipes');
  const out = join(dir, `out-${process.pid}`);
  let store: JobResult['store'];
  const report = await runCompression(
    model,
    {
      ...DEFAULT_OPTIONS,
      recipe: setting.recipe as typeof DEFAULT_OPTIONS.recipe,
      abits: setting.abits,
      kvbits: setting.kvbits,
      samples: setting.samples,
      seqlen: setting.seqlen,
      calibText: join(ROOT, 'media', 'text', 'sotu-calib.txt'),
      executionProviders: ['cpu'],
      outDir: out,
    },
    {},
    {
      evalText: join(ROOT, 'media', 'text', 'sotu-test.txt'),
      evalWindows: setting.evalWindows,
      resume: false,
      ...(onlyBlocks ? { onlyBlocks } : {}),
      onWorkingStore: (s: { peakResidentBytes: number; writtenBytes: number }) => (store = { peakResidentBytes: s.peakResidentBytes, writtenBytes: s.writtenBytes }),
    } as Parameters<typeof runCompression>[3],
  );
  await rm(out, { recursive: true, force: true });
  const result: JobResult = {
    root,
    seconds: Number(((performance.now() - started) / 1000).toFixed(1)),
    peakRssBytes: process.resourceUsage().maxRSS * 1024,
    timings: report.timings as Record<string, number>,
    perplexity: { dense: report.perplexity.dense?.perplexity, compressed: report.perplexity.compressed?.perplexity },
    layers: report.layers.length,
    glibcTunables: process.env.GLIBC_TUNABLES ?? null,
    ...(store ? { store } : {}),
  };
  console.log(`RESULT ${JSON.stringify(result)}`);
}

async function generate(): Promise<number> {
  if (!existsSync(model)) {
    await mkdir(modelDir, { recursive: true });
    await writeLargeLlama(modelDir, { layers: blocks, hidden: HIDDEN, heads: HEADS, intermediate: INTERMEDIATE, vocab: VOCAB });
    const fixture = join(ROOT, 'test', 'fixtures', 'models', 'tiny');
    for (const f of ['tokenizer.json', 'tokenizer_config.json']) await copyFile(join(fixture, f), join(modelDir, f));
    await writeFile(
      join(modelDir, 'config.json'),
      JSON.stringify({ model_type: 'llama', hidden_size: HIDDEN, intermediate_size: INTERMEDIATE, num_hidden_layers: blocks, num_attention_heads: HEADS, num_key_value_heads: HEADS, vocab_size: VOCAB, max_position_embeddings: 2048 }, null, 1),
    );
  }
  return (await stat(`${model}.data`)).size;
}

function gitRev(root: string): string {
  const r = spawnSync('git', ['-C', root, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' });
  return r.stdout.trim();
}

let jobs = 0;

/**
 * The environment a job process runs in: the one `obr compress` runs the pipeline with (the CLI
 * re-executes itself with the malloc settings, src/cli/relaunch.ts), so the measured peak is what
 * users get. OBR_MALLOC_TUNING=0 measures glibc's defaults instead.
 */
const jobEnv = withMallocTunables(process.env);
const envOf = (tunables: string | undefined): NodeJS.ProcessEnv => (tunables === undefined ? jobEnv : { ...process.env, GLIBC_TUNABLES: tunables });
const envA = envOf(values.tunables);
const envB = envOf(values['vs-tunables']);

/** One job in its own process (asynchronous, so two can run at once with --concurrent). */
async function runJob(root: string, env: NodeJS.ProcessEnv): Promise<JobResult> {
  const args = ['--import', 'tsx', join(ROOT, 'scripts', 'bench', 'memory.ts'), '--phase', 'job', '--root', root, '--dir', dir, '--blocks', String(blocks)];
  for (const k of ['only-blocks', 'recipe', 'abits', 'kvbits', 'samples', 'seqlen', 'eval-windows'] as const) if (values[k] !== undefined) args.push(`--${k}`, String(values[k]));
  const trace = join(dir, `trace-${process.pid}-${jobs++}.jsonl`);
  const child = spawn(process.execPath, args, { cwd: ROOT, env: { ...env, OBR_MEMLOG: trace } });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const status = await new Promise<number | null>((done) => child.on('close', done));
  const line = stdout.split('\n').find((l) => l.startsWith('RESULT '));
  if (status !== 0 || !line) throw new Error(`job with ${root} failed (exit ${status}):\n${stderr.slice(-4000)}`);
  const result = JSON.parse(line.slice('RESULT '.length)) as JobResult;
  if (existsSync(trace)) {
    const steps = (await readFile(trace, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as NonNullable<JobResult['trace']>[number]);
    await rm(trace, { force: true });
    if (steps.length) {
      result.trace = steps.map(({ t, label, rssMiB, peakSinceLastMiB, maxRssMiB }) => ({ t, label, rssMiB, peakSinceLastMiB, maxRssMiB }));
      // The first mark whose high-water mark reached the job's: the peak happened in the step it ends.
      const top = steps[steps.length - 1]!.maxRssMiB;
      result.peakAt = steps.find((x) => x.maxRssMiB >= top)!.label;
    }
  }
  return result;
}

async function main(): Promise<void> {
  if (values.phase === 'job') return job(resolve(values.root ?? ROOT));
  const weightBytes = await generate();
  const runs = Number(values.runs ?? 1);
  const vs = values.vs ? resolve(values.vs) : undefined;
  const load = [loadavg()[0]!];
  const a: JobResult[] = [];
  const b: JobResult[] = [];
  for (let i = 0; i < runs; i++) {
    if (values.concurrent && vs) {
      const [x, y] = await Promise.all([runJob(ROOT, envA), runJob(vs, envB)]);
      a.push(x);
      b.push(y);
      console.log(`A ${JSON.stringify(x)}\nB ${JSON.stringify(y)}`);
      load.push(loadavg()[0]!);
      continue;
    }
    a.push(await runJob(ROOT, envA));
    console.log(`A ${JSON.stringify(a[a.length - 1])}`);
    load.push(loadavg()[0]!);
    if (vs) {
      b.push(await runJob(vs, envB));
      console.log(`B ${JSON.stringify(b[b.length - 1])}`);
      load.push(loadavg()[0]!);
    }
  }
  const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
  const entry = {
    date: new Date().toISOString(),
    machine: { cores: cpus().length, memoryGiB: Number((totalmem() / 2 ** 30).toFixed(1)), loadAverage1m: load.map((x) => Number(x.toFixed(2))) },
    model: { blocks, hidden: HIDDEN, intermediate: INTERMEDIATE, heads: HEADS, vocab: VOCAB, weightBytes },
    setting: { ...setting, onlyBlocks: onlyBlocks ?? null },
    order: values.concurrent && vs ? 'A and B at the same time' : vs ? 'alternating A B' : 'A only',
    // As the CLI runs a job (both checkouts' jobs run in this environment).
    malloc: { a: describeMallocTuning(envA), ...(vs ? { b: describeMallocTuning(envB) } : {}) },
    a: { checkout: `${ROOT} @ ${gitRev(ROOT)}`, runs: a, peakRssBytesMedian: median(a.map((x) => x.peakRssBytes)), peakOverWeights: Number((median(a.map((x) => x.peakRssBytes)) / weightBytes).toFixed(3)) },
    ...(vs ? { b: { checkout: `${vs} @ ${gitRev(vs)}`, runs: b, peakRssBytesMedian: median(b.map((x) => x.peakRssBytes)), peakOverWeights: Number((median(b.map((x) => x.peakRssBytes)) / weightBytes).toFixed(3)) } } : {}),
    target: { formula: 'peak RSS < 0.6 × weight bytes + a few hundred MiB', bytes: Math.round(0.6 * weightBytes) },
  };
  const file = join(ROOT, 'bench-results', 'memory.json');
  let all: Array<typeof entry> = [];
  if (existsSync(file)) all = JSON.parse(await readFile(file, 'utf8')) as Array<typeof entry>;
  const key = (e: typeof entry) => JSON.stringify([e.setting, e.model.blocks]);
  all = [...all.filter((e) => key(e) !== key(entry)), entry];
  await mkdir(join(ROOT, 'bench-results'), { recursive: true });
  await writeFile(file, `${JSON.stringify(all, null, 1)}\n`);
  const mib = (x: number) => (x / 2 ** 20).toFixed(0);
  console.log(`weights ${mib(weightBytes)} MiB; A peak ${mib(entry.a.peakRssBytesMedian)} MiB (${entry.a.peakOverWeights}×)${entry.b ? `; B peak ${mib(entry.b.peakRssBytesMedian)} MiB (${entry.b.peakOverWeights}×)` : ''}; load ${entry.machine.loadAverage1m.join(', ')}`);
  if (!values.keep) await rm(dir, { recursive: true, force: true });
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
