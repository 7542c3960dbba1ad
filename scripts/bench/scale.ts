// Scale benchmark (`npm run bench:scale`): a TinyLlama-1.1B-wide decoder (hidden 2048, 32 heads of
// 64, FF 5632, vocab 32000; float32 weights in external data; random values) is generated at two
// depths (1 and 2 blocks by default) and compressed end to end by `obr compress` in a child
// process — W4A4KV4 + 50% calibration (QuaRot, streamed sequential calibration, write, streamed
// evaluation) — under /usr/bin/time for its peak RSS. The two depths give the per-block cost of
// every stage, hence the extrapolation T(L) = T(1) + (L − 1)·(T(2) − T(1)).
//
// The core (obr-gptq on a 2048- or 5632-column layer) takes minutes to hours per layer on a
// CPU-only 2-core machine, so the end-to-end runs use the `rtn` recipe (same calibration forwards,
// same write and evaluation; negligible core) and the obr-gptq core is measured separately on
// every distinct layer shape at reduced row counts and scaled linearly in the rows
// (src/pipeline/probe.ts probeCore). Writes bench-results/scale.json; deletes the models.
//
// Usage: node --import tsx scripts/bench/scale.ts [--depths 1,2] [--samples 32] [--seqlen 64]
//          [--eval-windows 4] [--core-rows 2,6] [--no-core] [--dir DIR] [--keep]
import { spawnSync } from 'node:child_process';
import { copyFile, mkdir, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { findLinearLayers } from '../../src/onnx/linear';
import { loadModel } from '../../src/onnx/load';
import { probeCore } from '../../src/pipeline/probe';
import { DEFAULT_OPTIONS } from '../../src/protocol/recipes';
import { writeLargeLlama } from './largeLlama';

const HIDDEN = 2048;
const INTERMEDIATE = 5632;
const HEADS = 32;
const VOCAB = 32000;
const ROOT = resolve(__dirname, '..', '..');

const { values } = parseArgs({
  options: {
    depths: { type: 'string' },
    samples: { type: 'string' },
    seqlen: { type: 'string' },
    'eval-windows': { type: 'string' },
    'core-rows': { type: 'string' },
    'no-core': { type: 'boolean' },
    dir: { type: 'string' },
    keep: { type: 'boolean' },
  },
});
const dir = resolve(values.dir ?? join(tmpdir(), 'obr-bench-scale'));
const depths = (values.depths ?? '1,2').split(',').map(Number);
const samples = Number(values.samples ?? 32);
const seqlen = Number(values.seqlen ?? 64);
const evalWindows = Number(values['eval-windows'] ?? 4);
const [coreR1, coreR2] = (values['core-rows'] ?? '2,6').split(',').map(Number) as [number, number];

/** Generates the model with `blocks` blocks in `out` (model.onnx + .data, tokenizer, config). */
async function generate(blocks: number, out: string): Promise<{ weightBytes: number; seconds: number }> {
  const started = performance.now();
  await mkdir(out, { recursive: true });
  await writeLargeLlama(out, { layers: blocks, hidden: HIDDEN, heads: HEADS, intermediate: INTERMEDIATE, vocab: VOCAB });
  const fixture = join(ROOT, 'test', 'fixtures', 'models', 'tiny');
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) await copyFile(join(fixture, f), join(out, f));
  await writeFile(
    join(out, 'config.json'),
    JSON.stringify({ model_type: 'llama', hidden_size: HIDDEN, intermediate_size: INTERMEDIATE, num_hidden_layers: blocks, num_attention_heads: HEADS, num_key_value_heads: HEADS, vocab_size: VOCAB, max_position_embeddings: 64 }, null, 1),
  );
  const weightBytes = (await stat(join(out, 'model.onnx.data'))).size + (await stat(join(out, 'model.onnx'))).size;
  return { weightBytes, seconds: (performance.now() - started) / 1000 };
}

async function folderBytes(d: string): Promise<number> {
  let total = 0;
  for (const n of await readdir(d)) {
    const s = await stat(join(d, n));
    if (s.isFile()) total += s.size;
  }
  return total;
}

interface DepthResult {
  blocks: number;
  weightBytes: number;
  generateSeconds: number;
  peakRssBytes: number;
  peakRssOverWeights: number;
  wallSeconds: number;
  timings: Record<string, number>;
  estimate?: Record<string, number>;
  perplexity: { dense?: number; compressed?: number };
  outputBytes: number;
}

async function depth(blocks: number): Promise<DepthResult> {
  const modelDir = join(dir, `blocks-${blocks}`);
  const out = join(modelDir, 'out');
  const gen = await generate(blocks, modelDir);
  console.error(`generated ${blocks} block(s): ${(gen.weightBytes / 2 ** 30).toFixed(2)} GiB in ${gen.seconds.toFixed(1)} s`);
  const args = [
    process.execPath, '--import', 'tsx', join(ROOT, 'src', 'cli', 'main.ts'), 'compress', join(modelDir, 'model.onnx'),
    '--recipe', 'rtn', '--abits', '4', '--kvbits', '4', '--samples', String(samples), '--seqlen', String(seqlen),
    '--eval-windows', String(evalWindows), '--ep', 'cpu', '--out', out, '--json', '--yes',
  ];
  const t0 = performance.now();
  const r = spawnSync('/usr/bin/time', ['-f', 'OBR_TIME %M %e', ...args], { encoding: 'utf8', cwd: ROOT, maxBuffer: 64 * 2 ** 20 });
  const wallSeconds = (performance.now() - t0) / 1000;
  const timeLine = r.stderr.split('\n').find((l) => l.startsWith('OBR_TIME '));
  if (r.status !== 0 || !timeLine) throw new Error(`obr compress failed (exit ${r.status}):\n${r.stderr.slice(-4000)}`);
  const peakRssBytes = Number(timeLine.split(' ')[1]) * 1024;
  const report = JSON.parse(r.stdout) as { timings: Record<string, number>; estimate?: Record<string, number>; perplexity: { dense?: { perplexity: number }; compressed?: { perplexity: number } } };
  const result: DepthResult = {
    blocks,
    weightBytes: gen.weightBytes,
    generateSeconds: Number(gen.seconds.toFixed(1)),
    peakRssBytes,
    peakRssOverWeights: Number((peakRssBytes / gen.weightBytes).toFixed(2)),
    wallSeconds: Number(wallSeconds.toFixed(1)),
    timings: report.timings,
    estimate: report.estimate,
    perplexity: { dense: report.perplexity.dense?.perplexity, compressed: report.perplexity.compressed?.perplexity },
    outputBytes: await folderBytes(out),
  };
  console.error(`compressed ${blocks} block(s): ${JSON.stringify(result)}`);
  if (!values.keep) await rm(modelDir, { recursive: true, force: true });
  return result;
}

/** obr-gptq core seconds per layer shape, measured at reduced rows and scaled (probeCore). */
async function core(): Promise<Record<string, number>> {
  const modelDir = join(dir, 'core');
  await generate(1, modelDir);
  const loaded = await loadModel(join(modelDir, 'model.onnx'));
  const layers = findLinearLayers(loaded.model).filter((l) => l.block !== null);
  await loaded.close();
  const t = await probeCore(layers, ['obr-gptq'], { ...DEFAULT_OPTIONS, recipe: 'obr-gptq' }, undefined, { r1: coreR1, r2: coreR2 });
  if (!values.keep) await rm(modelDir, { recursive: true, force: true });
  return Object.fromEntries([...t].map(([k, v]) => [k.replace(/^obr-gptq /, ''), Number(v.toFixed(1))]));
}

async function main(): Promise<void> {
  await rm(dir, { recursive: true, force: true });
  const runs: DepthResult[] = [];
  for (const d of depths) runs.push(await depth(d));
  const coreSeconds = values['no-core'] ? undefined : await core();
  if (coreSeconds) console.error(`obr-gptq core seconds per layer: ${JSON.stringify(coreSeconds)}`);
  // Per-block cost of each stage from the two depths, and the extrapolation to 22 blocks.
  const [a, b] = [runs[0]!, runs[runs.length - 1]!];
  const dl = b.blocks - a.blocks || 1;
  const perBlock: Record<string, number> = {};
  const at22: Record<string, number> = {};
  for (const k of ['load', 'rotate', 'calibrate', 'compress', 'write', 'evaluate', 'total']) {
    if (a.timings[k] === undefined || b.timings[k] === undefined) continue;
    perBlock[k] = Number(((b.timings[k]! - a.timings[k]!) / dl).toFixed(2));
    at22[k] = Number((a.timings[k]! + (22 - a.blocks) * perBlock[k]!).toFixed(1));
  }
  // One block's 7 layers: q, k, v, o (2048×2048), gate, up (5632×2048), down (2048×5632).
  const coreBlock = coreSeconds ? 4 * coreSeconds[`${HIDDEN}x${HIDDEN}`]! + 2 * coreSeconds[`${INTERMEDIATE}x${HIDDEN}`]! + coreSeconds[`${HIDDEN}x${INTERMEDIATE}`]! : undefined;
  const rssPerBlock = (b.peakRssBytes - a.peakRssBytes) / dl;
  const weightsPerBlock = (b.weightBytes - a.weightBytes) / dl;
  const weights22 = a.weightBytes + (22 - a.blocks) * weightsPerBlock;
  const rss22 = a.peakRssBytes + (22 - a.blocks) * rssPerBlock;
  const report = {
    benchmark: 'scale',
    date: new Date().toISOString(),
    node: process.version,
    machine: { cpus: cpus().length, totalMemGiB: Math.round(totalmem() / 2 ** 30) },
    model: { shape: 'TinyLlama-1.1B width (hidden 2048, 32 heads × 64, FF 5632, vocab 32000), float32 weights in external data, random values', depths },
    calibration: { samples, seqlen, tokens: samples * seqlen, mode: 'sequential', evalWindows },
    endToEnd: { recipe: 'rtn W4A4KV4 (same forwards, rotation, write and evaluation as obr-gptq; negligible core)', runs },
    perBlockSeconds: perBlock,
    extrapolatedTo22Blocks: {
      formula: 'T(22) = T(1) + 21·(T(2) − T(1)) per stage; obr-gptq core = 22 · (4·core(2048×2048) + 2·core(5632×2048) + core(2048×5632))',
      seconds: at22,
      obrGptqCoreSeconds: coreBlock !== undefined ? Math.round(22 * coreBlock) : undefined,
      weightBytes: Math.round(weights22),
      peakRssBytes: Math.round(rss22),
      peakRssOverWeights: Number((rss22 / weights22).toFixed(2)),
    },
    obrGptqCoreSecondsPerLayer: coreSeconds && { rowsProbed: [coreR1, coreR2], seconds: coreSeconds, perBlock: coreBlock && Math.round(coreBlock) },
    note: 'peakRss is the whole obr compress process (node + tsx + onnxruntime) from /usr/bin/time; the models are deleted afterwards.',
  };
  await mkdir(join(ROOT, 'bench-results'), { recursive: true });
  await writeFile(join(ROOT, 'bench-results', 'scale.json'), JSON.stringify(report, null, 2) + '\n');
  console.log(JSON.stringify(report, null, 2));
  if (!values.keep) await rm(dir, { recursive: true, force: true });
}

void main().catch((e) => {
  console.error(e instanceof Error ? (e.stack ?? e.message) : e);
  process.exitCode = 1;
});
