// Benchmark: peak memory of the rotate stage of a W4A4KV4 job (QuaRot rotation + its check, issue
// #12 item 2) on the memory benchmark's model (scripts/bench/memory.ts: LLaMA shape, hidden 2048,
// FF 5632, 16 heads, 11 blocks, vocabulary 2048; 2.1 GiB of float32 external-data weights).
// Each job runs `runCompression` (`--recipe rtn --abits 4 --kvbits 4`, block 0 only, no
// perplexity) in its own process and is cancelled as the calibrate stage begins, so the process's
// peak RSS (getrusage maxRSS) is that of load + rotate + rotation check; RSS is also sampled every
// 100 ms with the stage it fell in. A is this checkout, B `--vs` another (e.g. main before the
// streamed rotation), alternating A B A B….
//
// Usage: node --import tsx scripts/bench/rotateMemory.ts [--dir DIR] [--vs CHECKOUT] [--runs 1] [--blocks 11] [--keep]
// Writes bench-results/rotate-memory.json.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, rm, stat, writeFile } from 'node:fs/promises';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { writeLargeLlama } from './largeLlama';

const ROOT = resolve(__dirname, '..', '..');
const SHAPE = { hidden: 2048, intermediate: 5632, heads: 16, vocab: 2048 };

const { values } = parseArgs({
  options: {
    dir: { type: 'string' },
    vs: { type: 'string' },
    runs: { type: 'string' },
    blocks: { type: 'string' },
    keep: { type: 'boolean' },
    phase: { type: 'string' },
    root: { type: 'string' },
  },
});
const dir = resolve(values.dir ?? join(tmpdir(), 'obr-bench-rotate-memory'));
const modelDir = join(dir, 'model');
const model = join(modelDir, 'model.onnx');
const blocks = Number(values.blocks ?? 11);

interface JobResult {
  root: string;
  peakRssBytes: number;
  /** Highest sampled RSS per stage (100 ms samples). */
  sampledPeakByStage: Record<string, number>;
  /** Wall seconds per stage until the calibrate stage began. */
  stageSeconds: Record<string, number>;
  rotationCheck?: string;
  store?: { peakResidentBytes: number; writtenBytes: number };
}

/** One job in this process with checkout `root`'s pipeline, cancelled when calibration begins. */
async function job(root: string): Promise<void> {
  const { runCompression } = (await import(join(root, 'src', 'pipeline', 'compress.ts'))) as typeof import('../../src/pipeline/compress');
  const { DEFAULT_OPTIONS } = (await import(join(root, 'src', 'protocol', 'recipes.ts'))) as typeof import('../../src/protocol/recipes');
  const out = join(dir, `out-${process.pid}`);
  const abort = new AbortController();
  let stage = 'start';
  let since = performance.now();
  const stageSeconds: Record<string, number> = {};
  const sampled: Record<string, number> = {};
  const sample = () => {
    const rss = process.memoryUsage.rss();
    sampled[stage] = Math.max(sampled[stage] ?? 0, rss);
  };
  const timer = setInterval(sample, 100);
  let rotationCheck: string | undefined;
  let store: JobResult['store'];
  try {
    await runCompression(
      model,
      { ...DEFAULT_OPTIONS, recipe: 'rtn', abits: 4, kvbits: 4, samples: 8, seqlen: 64, calibText: join(ROOT, 'media', 'text', 'sotu-calib.txt'), executionProviders: ['cpu'], outDir: out },
      {
        signal: abort.signal,
        onProgress: (e) => {
          if (e.stage === stage) return;
          sample();
          stageSeconds[stage] = (performance.now() - since) / 1000;
          stage = e.stage;
          since = performance.now();
          if (stage === 'calibrate') abort.abort();
        },
        log: (_level, message) => {
          if (message.startsWith('rotation check')) rotationCheck = message;
        },
      },
      {
        evalText: null,
        onlyBlocks: [0],
        resume: false,
        onWorkingStore: (s: { peakResidentBytes: number; writtenBytes: number }) => (store = { peakResidentBytes: s.peakResidentBytes, writtenBytes: s.writtenBytes }),
      } as Parameters<typeof runCompression>[3],
    );
    throw new Error('the job was not cancelled at the calibrate stage');
  } catch (e) {
    if ((e as Error).name !== 'AbortError') throw e;
  } finally {
    clearInterval(timer);
    await rm(out, { recursive: true, force: true });
  }
  const result: JobResult = {
    root,
    peakRssBytes: process.resourceUsage().maxRSS * 1024,
    sampledPeakByStage: sampled,
    stageSeconds: Object.fromEntries(Object.entries(stageSeconds).map(([k, v]) => [k, Number(v.toFixed(1))])),
    ...(rotationCheck ? { rotationCheck } : {}),
    ...(store ? { store } : {}),
  };
  console.log(`RESULT ${JSON.stringify(result)}`);
}

async function generate(): Promise<number> {
  if (!existsSync(model)) {
    await mkdir(modelDir, { recursive: true });
    await writeLargeLlama(modelDir, { layers: blocks, ...SHAPE });
    const fixture = join(ROOT, 'test', 'fixtures', 'models', 'tiny');
    for (const f of ['tokenizer.json', 'tokenizer_config.json']) await copyFile(join(fixture, f), join(modelDir, f));
    await writeFile(
      join(modelDir, 'config.json'),
      JSON.stringify({ model_type: 'llama', hidden_size: SHAPE.hidden, intermediate_size: SHAPE.intermediate, num_hidden_layers: blocks, num_attention_heads: SHAPE.heads, num_key_value_heads: SHAPE.heads, vocab_size: SHAPE.vocab, max_position_embeddings: 2048 }, null, 1),
    );
  }
  return (await stat(`${model}.data`)).size;
}

function gitRev(root: string): string {
  return spawnSync('git', ['-C', root, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).stdout.trim();
}

function runJob(root: string): JobResult {
  const args = ['--import', 'tsx', join(ROOT, 'scripts', 'bench', 'rotateMemory.ts'), '--phase', 'job', '--root', root, '--dir', dir, '--blocks', String(blocks)];
  const r = spawnSync(process.execPath, args, { cwd: ROOT, encoding: 'utf8', maxBuffer: 64 * 2 ** 20 });
  const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT '));
  if (r.status !== 0 || !line) throw new Error(`job with ${root} failed (exit ${r.status}):\n${r.stderr.slice(-4000)}`);
  return JSON.parse(line.slice('RESULT '.length)) as JobResult;
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
    a.push(runJob(ROOT));
    console.log(`A ${JSON.stringify(a[a.length - 1])}`);
    load.push(loadavg()[0]!);
    if (vs) {
      b.push(runJob(vs));
      console.log(`B ${JSON.stringify(b[b.length - 1])}`);
      load.push(loadavg()[0]!);
    }
  }
  const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
  const side = (root: string, rs: JobResult[]) => ({ checkout: `${root} @ ${gitRev(root)}`, runs: rs, peakRssBytesMedian: median(rs.map((x) => x.peakRssBytes)), peakOverWeights: Number((median(rs.map((x) => x.peakRssBytes)) / weightBytes).toFixed(3)) });
  const entry = {
    date: new Date().toISOString(),
    machine: { cores: cpus().length, memoryGiB: Number((totalmem() / 2 ** 30).toFixed(1)), loadAverage1m: load.map((x) => Number(x.toFixed(2))) },
    model: { blocks, ...SHAPE, weightBytes },
    setting: { recipe: 'rtn', abits: 4, kvbits: 4, samples: 8, seqlen: 64, onlyBlocks: [0], stoppedAt: 'calibrate' },
    a: side(ROOT, a),
    ...(vs ? { b: side(vs, b) } : {}),
  };
  await mkdir(join(ROOT, 'bench-results'), { recursive: true });
  await writeFile(join(ROOT, 'bench-results', 'rotate-memory.json'), `${JSON.stringify(entry, null, 1)}\n`);
  const mib = (x: number) => (x / 2 ** 20).toFixed(0);
  console.log(`weights ${mib(weightBytes)} MiB; A peak ${mib(entry.a.peakRssBytesMedian)} MiB (${entry.a.peakOverWeights}×)${entry.b ? `; B peak ${mib(entry.b.peakRssBytesMedian)} MiB (${entry.b.peakOverWeights}×)` : ''}; load ${entry.machine.loadAverage1m.join(', ')}`);
  if (!values.keep) await rm(dir, { recursive: true, force: true });
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
