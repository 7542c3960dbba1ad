// Scale benchmark (`npm run bench:scale`): a decoder of TinyLlama-1.1B's real shape (hidden 2048,
// 32 query / 4 KV heads of 64, FF 5632, vocab 32000, 2048 positions, fp16 weights in external data
// — 2.2 GB at 22 blocks; random values; scripts/bench/largeLlama.ts) is generated and compressed
// end to end with obr-gptq W4A4KV4 + 50 % (QuaRot, streamed calibration, the core, write, streamed
// evaluation) in a child process under /usr/bin/time for its peak RSS — once per `--runs` entry,
// each compressing the blocks it names (the pipeline's onlyBlocks; the other blocks stay dense but
// are loaded, rotated, written and evaluated like in a full job). Each job's report stores the
// pre-flight estimate beside the actual time per stage.
//
// Extrapolation (a formula, never a measurement; docs/bench-scale.md): with runs over b₁ < b₂
// compressed blocks, calibrate and compress grow by per-block = (T(b₂) − T(b₁)) / (b₂ − b₁) and
// T(22) = T(b₂) + (22 − b₂)·per-block; load, rotate, write and evaluate are measured on the 22-block
// model itself. Llama-2-7B (hidden 4096, 32 blocks, FF 11008, 32 heads, vocab 32000, fp16): see
// `llama7b` below.
//
// Writes bench-results/scale.json (+ the last run's report as bench-results/scale-report.json
// when under 1 MB, for the inspector); deletes the model unless --keep.
//
// Usage: node --import tsx scripts/bench/scale.ts [--layers 22] [--runs "0;0,1"] [--samples 8]
//          [--seqlen 512] [--eval-windows 2] [--recipe obr-gptq] [--dir DIR] [--keep] [--reuse]
//          [--name scale] [--smoke (a hidden-256 model of the same layout: checks the script only)]
import { spawnSync } from 'node:child_process';
import { withMallocTunables } from '../../src/runtime/mallocTunables';
import { copyFile, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { closeSync, existsSync, openSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { scaleLlamaWeightBytes, TINYLLAMA, writeLargeLlama, type LargeLlamaShape } from './largeLlama';

const ROOT = resolve(__dirname, '..', '..');

const { values } = parseArgs({
  options: {
    layers: { type: 'string', default: '22' },
    runs: { type: 'string', default: '0;0,1' },
    samples: { type: 'string', default: '8' },
    seqlen: { type: 'string', default: '512' },
    'eval-windows': { type: 'string', default: '2' },
    recipe: { type: 'string', default: 'obr-gptq' },
    dir: { type: 'string' },
    keep: { type: 'boolean' },
    reuse: { type: 'boolean' },
    name: { type: 'string', default: 'scale' },
    /** A small model of the same layout, for checking the script itself (not a benchmark). */
    smoke: { type: 'boolean' },
    /** Don't run: rebuild the results from the logs and reports a --keep run left in --dir. */
    collect: { type: 'boolean' },
  },
});
const dir = resolve(values.dir ?? join(tmpdir(), 'obr-bench-scale'));
const shape: LargeLlamaShape = values.smoke
  ? { layers: Number(values.layers), hidden: 256, heads: 4, kvHeads: 2, intermediate: 512, vocab: 2048, weightType: 'float16', positions: 512 }
  : { ...TINYLLAMA, layers: Number(values.layers) };
const runs = values.runs!.split(';').map((r) => r.split(',').map(Number));
const samples = Number(values.samples);
const seqlen = Number(values.seqlen);
const evalWindows = Number(values['eval-windows']);

/** Generates the model (model.onnx + .data, tokenizer, config) unless --reuse finds it. */
async function generate(out: string): Promise<{ weightBytes: number; seconds: number }> {
  const started = performance.now();
  if (!((values.reuse || values.collect) && existsSync(join(out, 'model.onnx.data')))) {
    await mkdir(out, { recursive: true });
    await writeLargeLlama(out, shape);
    const fixture = join(ROOT, 'test', 'fixtures', 'models', 'tiny');
    for (const f of ['tokenizer.json', 'tokenizer_config.json']) await copyFile(join(fixture, f), join(out, f));
    await writeFile(
      join(out, 'config.json'),
      JSON.stringify(
        { model_type: 'llama', hidden_size: shape.hidden, intermediate_size: shape.intermediate, num_hidden_layers: shape.layers, num_attention_heads: shape.heads, num_key_value_heads: shape.kvHeads, head_dim: shape.hidden / shape.heads, vocab_size: shape.vocab, max_position_embeddings: shape.positions, torch_dtype: 'float16' },
        null,
        1,
      ),
    );
  }
  const weightBytes = (await stat(join(out, 'model.onnx.data'))).size;
  return { weightBytes, seconds: (performance.now() - started) / 1000 };
}

async function folderBytes(d: string): Promise<number> {
  let total = 0;
  for (const e of await readdir(d, { withFileTypes: true })) {
    const p = join(d, e.name);
    if (e.isDirectory()) total += await folderBytes(p);
    else if (e.isFile()) total += (await stat(p)).size;
  }
  return total;
}

interface LayerSeconds {
  shape: string;
  role: string;
  layers: number;
  meanSeconds: number;
}

interface RunResult {
  blocks: number[];
  peakRssBytes: number;
  /** The pre-flight's peak memory estimate (src/pipeline/memoryEstimate.ts), beside the measured peak. */
  estimatedPeakBytes?: number;
  wallSeconds: number;
  preflightSeconds: number;
  loadAverage: { before: number[]; after: number[] };
  timings: Record<string, number>;
  estimate?: Record<string, number>;
  /** estimate / actual per stage. */
  ratio: Record<string, number>;
  /** Core seconds per layer (the report's: compressLayer up to its result, without the layer-loss statistics). */
  layerSeconds: LayerSeconds[];
  /** The compress stage's wall time per layer (weight read, core, layer loss), from the job's trace. */
  layerWallSeconds: LayerSeconds[];
  /** The probe measurements the pre-flight estimate was computed from (src/pipeline/preflight.ts EstimateInputs). */
  preflightInputs?: unknown;
  /** Where the job's calibrate and write stages spent their time (its debug log): seconds of each
   *  calibration forward in order (prelude, captures, advances), and the write stage's parts. */
  stageParts?: { calibrateForwards: number[]; calibrateFaults?: number[]; calibrateCpu?: Array<{ cpu: number; switches: number }>; write?: { simulated: number; packing: number; packed: number; faults?: number; storageReadMB?: number } };
  perplexity: { dense?: number; compressed?: number };
  outputBytes: number;
  reportPath: string;
  reportBytes: number;
}

async function run(model: string, blocks: number[]): Promise<RunResult> {
  const out = join(dir, `out-${blocks.join('-')}`);
  const logPath = join(dir, `log-${blocks.join('-')}.txt`);
  if (values.collect) return summarize(blocks, out, logPath, undefined, { before: [], after: [] });
  await rm(out, { recursive: true, force: true });
  const args = [
    process.execPath, '--import', 'tsx', join(ROOT, 'scripts', 'bench', 'scaleJob.ts'), model, out,
    '--recipe', values.recipe!, '--samples', String(samples), '--seqlen', String(seqlen), '--eval-windows', String(evalWindows), '--only', blocks.join(','),
  ];
  const before = loadavg().map((x) => Number(x.toFixed(1)));
  const t0 = performance.now();
  console.error(`run: blocks ${blocks.join(',')} (load average ${before.join(' ')})`);
  // The job's log goes straight to a file (progress can be followed while it runs); the probes
  // trace their raw measurements into it (OBR_PROBE_TRACE).
  const log = openSync(logPath, 'w');
  const r = spawnSync('/usr/bin/time', ['-f', 'OBR_TIME %M %e', ...args], { encoding: 'utf8', cwd: ROOT, maxBuffer: 256 * 2 ** 20, stdio: ['ignore', 'pipe', log], env: { ...withMallocTunables(process.env), OBR_PROBE_TRACE: '1' } });
  closeSync(log);
  const wallSeconds = (performance.now() - t0) / 1000;
  const after = loadavg().map((x) => Number(x.toFixed(1)));
  if (r.status !== 0) throw new Error(`the job failed (exit ${r.status}):\n${(await readFile(logPath, 'utf8')).slice(-4000)}`);
  return summarize(blocks, out, logPath, wallSeconds, { before, after });
}

/**
 * Each layer's wall time in the compress stage, from the job's trace (scaleJob.ts): from the end
 * of what ran before it (the previous layer, or its group's capture forward) to its report.
 */
function layerWallTimes(log: string): Map<string, number> {
  const out = new Map<string, number>();
  let last = 0;
  for (const line of log.split('\n')) {
    const m = /^trace t=([\d.]+) (\S+) (.*)$/.exec(line);
    if (!m) continue;
    const t = Number(m[1]);
    const layer = /^(\S+) \d+x\d+ core /.exec(m[3]!);
    if (m[2] === 'layer' && layer) {
      out.set(layer[1]!, t - last);
      last = t;
    } else if (m[2] !== 'compress') last = t;
  }
  return out;
}

function byShapeMean(layers: Array<{ rows: number; cols: number; role: string; seconds: number }>): LayerSeconds[] {
  const byShape = new Map<string, { role: Set<string>; seconds: number[] }>();
  for (const l of layers) {
    const k = `${l.rows}×${l.cols}`;
    if (!byShape.has(k)) byShape.set(k, { role: new Set(), seconds: [] });
    byShape.get(k)!.role.add(l.role);
    byShape.get(k)!.seconds.push(l.seconds);
  }
  return [...byShape].map(([shapeKey, v]) => ({ shape: shapeKey, role: [...v.role].join('/'), layers: v.seconds.length, meanSeconds: Number((v.seconds.reduce((a, b) => a + b, 0) / v.seconds.length).toFixed(1)) }));
}

async function summarize(blocks: number[], out: string, logPath: string, wall: number | undefined, loadAverage: { before: number[]; after: number[] }): Promise<RunResult> {
  const stderr = await readFile(logPath, 'utf8');
  const timeLine = stderr.split('\n').find((l) => l.startsWith('OBR_TIME '));
  if (!timeLine) throw new Error(`no /usr/bin/time line in ${logPath}: the job did not finish`);
  const wallSeconds = wall ?? Number(timeLine.split(' ')[2]);
  const reportName = (await readdir(out)).find((f) => f.endsWith('.report.json'));
  if (!reportName) throw new Error(`no report in ${out}`);
  const job = { report: join(out, reportName), preflightSeconds: Number(/pre-flight estimate \((\d+) s of probes\)/.exec(stderr)?.[1] ?? NaN) };
  const estimatedPeak = /^pre-flight peak memory estimate: (\d+) bytes$/m.exec(stderr);
  const inputsLine = stderr.split('\n').find((l) => l.startsWith('pre-flight inputs: '));
  const preflightInputs = inputsLine ? (JSON.parse(inputsLine.slice('pre-flight inputs: '.length)) as unknown) : undefined;
  const reportText = await readFile(job.report, 'utf8');
  const report = JSON.parse(reportText) as {
    timings: Record<string, number>;
    estimate?: Record<string, number>;
    layers: Array<{ name: string; rows: number; cols: number; role: string; seconds: number }>;
    perplexity: { dense?: { perplexity: number }; compressed?: { perplexity: number } };
  };
  const calibrateForwards = [...stderr.matchAll(/^debug: calibrate forward: ([\d.]+) s(?:, .*)?$/gm)].map((m) => Number(m[1]));
  const calibrateFaults = [...stderr.matchAll(/^debug: calibrate forward: [\d.]+ s, (\d+) page faults/gm)].map((m) => Number(m[1]));
  const calibrateCpu = [...stderr.matchAll(/^debug: calibrate forward: [\d.]+ s, .*, ([\d.]+) CPU s, (\d+) involuntary switches$/gm)].map((m) => ({ cpu: Number(m[1]), switches: Number(m[2]) }));
  const w = /^debug: write stage: simulated model ([\d.]+) s, packing ([\d.]+) s, packed model ([\d.]+) s(?:; (\d+) page faults, (\d+) MB read from storage.*)?$/m.exec(stderr);
  const stageParts = {
    calibrateForwards,
    ...(calibrateFaults.length ? { calibrateFaults } : {}),
    ...(calibrateCpu.length ? { calibrateCpu } : {}),
    ...(w ? { write: { simulated: Number(w[1]), packing: Number(w[2]), packed: Number(w[3]), ...(w[4] ? { faults: Number(w[4]), storageReadMB: Number(w[5]) } : {}) } } : {}),
  };
  const walls = layerWallTimes(stderr);
  const layerWall = report.layers.flatMap((l) => (walls.has(l.name) ? [{ ...l, seconds: walls.get(l.name)! }] : []));
  const ratio: Record<string, number> = {};
  for (const [k, v] of Object.entries(report.timings)) if (report.estimate?.[k] !== undefined && v > 0) ratio[k] = Number((report.estimate[k]! / v).toFixed(2));
  const result: RunResult = {
    blocks,
    peakRssBytes: Number(timeLine.split(' ')[1]) * 1024,
    ...(estimatedPeak ? { estimatedPeakBytes: Number(estimatedPeak[1]) } : {}),
    wallSeconds: Number(wallSeconds.toFixed(1)),
    preflightSeconds: Number(job.preflightSeconds.toFixed(1)),
    loadAverage,
    timings: Object.fromEntries(Object.entries(report.timings).map(([k, v]) => [k, Number(v.toFixed(1))])),
    ...(report.estimate ? { estimate: Object.fromEntries(Object.entries(report.estimate).map(([k, v]) => [k, Number(v.toFixed(1))])) } : {}),
    ratio,
    layerSeconds: byShapeMean(report.layers),
    layerWallSeconds: byShapeMean(layerWall),
    ...(preflightInputs ? { preflightInputs } : {}),
    stageParts,
    perplexity: { dense: report.perplexity.dense?.perplexity, compressed: report.perplexity.compressed?.perplexity },
    outputBytes: await folderBytes(out),
    reportPath: job.report,
    reportBytes: Buffer.byteLength(reportText),
  };
  console.error(`run: ${JSON.stringify(result)}`);
  return result;
}

/** Parameters of one decoder block and of the vocabulary tables, for a LLaMA shape. */
function params(s: { hidden: number; kvHeads: number; heads: number; intermediate: number; vocab: number }) {
  const kv = (s.kvHeads * s.hidden) / s.heads;
  return { block: 2 * s.hidden * s.hidden + 2 * s.hidden * kv + 3 * s.hidden * s.intermediate, vocab: 2 * s.vocab * s.hidden };
}

async function main(): Promise<void> {
  await mkdir(dir, { recursive: true });
  const modelDir = join(dir, `model-${shape.layers}`);
  const gen = await generate(modelDir);
  console.error(`model: ${shape.layers} blocks, ${(gen.weightBytes / 1e9).toFixed(2)} GB of fp16 weights (generated in ${gen.seconds.toFixed(0)} s)`);
  const results: RunResult[] = [];
  for (const blocks of runs) results.push(await run(join(modelDir, 'model.onnx'), blocks));

  // Per compressed block: calibrate and compress from the two largest runs (or the one run / its blocks).
  const sorted = [...results].sort((a, b) => a.blocks.length - b.blocks.length);
  const hi = sorted[sorted.length - 1]!;
  const lo = sorted.length > 1 ? sorted[0]! : undefined;
  const perBlock: Record<string, number> = {};
  for (const k of ['calibrate', 'compress']) {
    const d = lo && hi.blocks.length > lo.blocks.length ? (hi.timings[k]! - lo.timings[k]!) / (hi.blocks.length - lo.blocks.length) : hi.timings[k]! / hi.blocks.length;
    perBlock[k] = Number(d.toFixed(1));
  }
  const L = shape.layers;
  const at22: Record<string, number> = {};
  for (const k of ['load', 'rotate', 'write', 'evaluate']) at22[k] = hi.timings[k] ?? 0;
  for (const k of ['calibrate', 'compress']) at22[k] = Number((hi.timings[k]! + (L - hi.blocks.length) * perBlock[k]!).toFixed(0));
  at22.total = Number(Object.values(at22).reduce((a, b) => a + b, 0).toFixed(0));

  // Llama-2-7B: calibrate ∝ block parameters (the forwards' flops per token), compress per layer
  // from the measured per-row cost at TinyLlama's shapes scaled by the core's O(rows·cols²) per
  // row pass and O(cols³) factorization (so ∝ rows·cols² for rows ≥ cols), load/rotate/write ∝
  // weight bytes, evaluate's block part ∝ block parameters and its tail ∝ the vocab table.
  const tiny = params(shape as Required<LargeLlamaShape>);
  const big = params({ hidden: 4096, heads: 32, kvHeads: 32, intermediate: 11008, vocab: 32000 });
  const weights7b = (32 * big.block + big.vocab) * 2;
  const bytesRatio = weights7b / gen.weightBytes;
  // The compress stage's wall time per layer (core + layer loss + weight read), not the core alone.
  const layerMean = (shapeKey: string) => (hi.layerWallSeconds.length ? hi.layerWallSeconds : hi.layerSeconds).find((x) => x.shape === shapeKey)?.meanSeconds;
  const perRowCol2 = (shapeKey: string, rows: number, cols: number) => (layerMean(shapeKey) ?? NaN) / (rows * cols * cols);
  // Per-row·col² rates measured at 2048 columns (q/o) and 5632 columns (down).
  const rate2048 = perRowCol2('2048×2048', 2048, 2048);
  const rate5632 = perRowCol2('2048×5632', 2048, 5632);
  const core7bBlock = 4 * 4096 * 4096 ** 2 * rate2048 + 2 * 11008 * 4096 ** 2 * rate2048 + 4096 * 11008 ** 2 * rate5632;
  const llama7b = {
    shape: 'Llama-2-7B: hidden 4096, 32 blocks, 32 heads (no GQA), FF 11008, vocab 32000, fp16 (13.5 GB)',
    formula:
      'calibrate = 32 · per-block(TinyLlama) · P₇(block)/P₁(block); compress = 32 · [4·c(4096×4096) + 2·c(11008×4096) + c(4096×11008)] with c(r×n) = r·n²·k, k measured per row·col² on TinyLlama 2048×2048 (for n = 4096) and 2048×5632 (for n = 11008); load, rotate, write × W₇/W₁; evaluate = evaluate(TinyLlama) · (32·P₇(block) + P₇(vocab)) / (22·P₁(block) + P₁(vocab))',
    blockParamsRatio: Number((big.block / tiny.block).toFixed(2)),
    weightBytes: weights7b,
    seconds: {
      load: Math.round(at22.load! * bytesRatio),
      rotate: Math.round(at22.rotate! * bytesRatio),
      calibrate: Math.round(32 * perBlock.calibrate! * (big.block / tiny.block)),
      compress: Math.round(32 * core7bBlock),
      write: Math.round(at22.write! * bytesRatio),
      evaluate: Math.round((at22.evaluate! * (32 * big.block + big.vocab)) / (L * tiny.block + tiny.vocab)),
    } as Record<string, number>,
  };
  llama7b.seconds.total = Object.values(llama7b.seconds).reduce((a, b) => a + b, 0);

  const report = {
    benchmark: 'scale',
    date: new Date().toISOString(),
    node: process.version,
    machine: { cpus: cpus().length, totalMemGiB: Math.round(totalmem() / 2 ** 30), note: 'shared with other jobs; load averages per run below' },
    model: { shape: `TinyLlama-1.1B: hidden ${shape.hidden}, ${shape.layers} blocks, ${shape.heads} query / ${shape.kvHeads} KV heads of ${shape.hidden / shape.heads}, FF ${shape.intermediate}, vocab ${shape.vocab}, ${shape.positions} positions; fp16 weights in external data (random values)`, weightBytes: gen.weightBytes, expectedWeightBytes: scaleLlamaWeightBytes(shape), generateSeconds: Number(gen.seconds.toFixed(0)) },
    job: { recipe: `${values.recipe} W4A4KV4 + 50 %`, samples, seqlen, tokens: samples * seqlen, evalWindows, mode: 'sequential (streamed)', executionProvider: 'cpu' },
    runs: results,
    perCompressedBlockSeconds: perBlock,
    extrapolatedTo22Blocks: {
      formula: `calibrate, compress: T(${L}) = T(b) + (${L} − b)·per-block, per-block = (T(b₂) − T(b₁))/(b₂ − b₁) over the runs (or T(b)/b with one run); load, rotate, write, evaluate: measured on the ${L}-block model`,
      seconds: at22,
    },
    llama7b,
    note: 'peakRss is the whole job process (pre-flight probes included) from /usr/bin/time; outputBytes is the output folder (simulated + packed models, report). Extrapolations are formulas on the measured runs, not measurements.',
  };
  await mkdir(join(ROOT, 'bench-results'), { recursive: true });
  await writeFile(join(ROOT, 'bench-results', `${values.name}.json`), JSON.stringify(report, null, 2) + '\n');
  if (hi.reportBytes < 2 ** 20) await copyFile(hi.reportPath, join(ROOT, 'bench-results', `${values.name}-report.json`));
  console.log(JSON.stringify(report, null, 2));
  if (!values.keep && !values.collect) await rm(dir, { recursive: true, force: true });
}

void main().catch((e) => {
  console.error(e instanceof Error ? (e.stack ?? e.message) : e);
  process.exitCode = 1;
});
