// Benchmark: a synthetic LLaMA-shaped model with more than 2 GiB of external-data weights is
// generated, inspected (every linear weight read once and checked for NaN/Inf), rewritten with
// replaced weights (external data chosen automatically) and verified — each phase in its own
// process so its peak RSS is its own. Shows that memory stays bounded by the largest tensor, not
// the model. Writes bench-results/onnx-large.json; deletes the big files afterwards.
//
// Usage: node --import tsx scripts/bench/onnxLarge.ts [--dir DIR] [--gib 2.1] [--keep] [--ort]
//   --dir   where to put the model (default: $TMPDIR/obr-onnx-large); needs ~2.3× --gib free
//   --gib   minimum weight size in GiB (default 2.1: past protobuf's 2 GiB limit)
//   --keep  keep the generated files
//   --ort   also create an onnxruntime session on the rewritten model and run 8 tokens (needs RAM ≈ model size)
import { spawnSync } from 'node:child_process';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir, cpus, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { inspectModel } from '../../src/onnx/inspect';
import { loadModel } from '../../src/onnx/load';
import { writeModel } from '../../src/onnx/write';
import { writeLargeLlama } from './largeLlama';

const HIDDEN = 2048;
const INTERMEDIATE = 5632;
const HEADS = 16;
const VOCAB = 256;
const PER_LAYER_BYTES = 4 * (4 * HIDDEN * HIDDEN + 3 * HIDDEN * INTERMEDIATE);

interface PhaseResult {
  phase: string;
  seconds: number;
  peakRssMiB: number;
  [key: string]: unknown;
}

const { values } = parseArgs({
  options: {
    dir: { type: 'string' },
    gib: { type: 'string' },
    keep: { type: 'boolean' },
    ort: { type: 'boolean' },
    phase: { type: 'string' },
  },
});
const dir = resolve(values.dir ?? join(tmpdir(), 'obr-onnx-large'));
const source = join(dir, 'model.onnx');
const output = join(dir, 'model.rewritten.onnx');

function finish(phase: string, started: number, extra: Record<string, unknown>): void {
  const result: PhaseResult = {
    phase,
    seconds: Number(((performance.now() - started) / 1000).toFixed(2)),
    peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024),
    ...extra,
  };
  console.log(`RESULT ${JSON.stringify(result)}`);
}

async function generate(): Promise<void> {
  const started = performance.now();
  const layers = Math.ceil((Number(values.gib ?? '2.1') * 2 ** 30) / PER_LAYER_BYTES);
  await mkdir(dir, { recursive: true });
  const { weightBytes, onnxBytes } = await writeLargeLlama(dir, { layers, hidden: HIDDEN, heads: HEADS, intermediate: INTERMEDIATE, vocab: VOCAB });
  finish('generate', started, { layers, weightBytes, onnxBytes });
}

async function inspect(): Promise<void> {
  const started = performance.now();
  const report = await inspectModel(source, { checkWeights: true });
  finish('inspect', started, {
    linearLayers: report.layers.length,
    groups: report.groups.length,
    parameters: report.model.parameters,
    bytesOnDisk: report.model.bytes,
    roles: [...new Set(report.layers.map((l) => l.role))],
  });
}

async function rewrite(): Promise<void> {
  const started = performance.now();
  const loaded = await loadModel(source);
  let replaced = 0;
  const result = await writeModel(loaded.model, output, {
    source: loaded,
    externalData: 'auto',
    // Replace every q_proj weight (halved), one at a time, while streaming the rest.
    weightProvider: async (name) => {
      if (!name.endsWith('q_proj.weight')) return undefined;
      const w = await loaded.readWeight(name);
      for (let i = 0; i < w.length; i++) w[i] *= 0.5;
      replaced++;
      return w;
    },
  });
  await loaded.close();
  const seconds = (performance.now() - started) / 1000;
  finish('rewrite', started, {
    replacedTensors: replaced,
    externalData: Boolean(result.dataPath),
    onnxBytes: result.bytes,
    dataBytes: result.dataBytes,
    mibPerSecond: Math.round(result.dataBytes / 2 ** 20 / seconds),
  });
}

async function verify(): Promise<void> {
  const started = performance.now();
  const [a, b] = [await loadModel(source), await loadModel(output)];
  const names = a.initializerNames().filter((n) => n.endsWith('.weight') && n.includes('proj'));
  const check = [names[0], names[names.length - 1], names.find((n) => n.endsWith('q_proj.weight'))!, names.filter((n) => n.endsWith('q_proj.weight')).pop()!];
  let compared = 0;
  for (const name of check) {
    const [x, y] = [await a.readWeight(name), await b.readWeight(name)];
    const factor = name.endsWith('q_proj.weight') ? 0.5 : 1;
    for (let i = 0; i < x.length; i++) {
      if (y[i] !== Math.fround(x[i] * factor)) throw new Error(`verify: ${name}[${i}] is ${y[i]}, expected ${x[i] * factor}`);
    }
    compared += x.length;
  }
  await Promise.all([a.close(), b.close()]);
  finish('verify', started, { tensorsCompared: check.length, valuesCompared: compared });
}

async function runOrt(): Promise<void> {
  const started = performance.now();
  const ort = await import('onnxruntime-node');
  const session = await ort.InferenceSession.create(output);
  const n = 8;
  const t = (f: (i: number) => number) => new ort.Tensor('int64', BigInt64Array.from({ length: n }, (_, i) => BigInt(f(i))), [1, n]);
  const r = await session.run({ input_ids: t((i) => (i * 31) % VOCAB), attention_mask: t(() => 1), position_ids: t((i) => i) });
  const logits = r.logits.data as Float32Array;
  const finite = logits.every((v) => Number.isFinite(v));
  await session.release();
  finish('onnxruntime', started, { logits: r.logits.dims, finite });
}

function runPhase(phase: string): PhaseResult {
  const args = ['--import', 'tsx', __filename, '--phase', phase, '--dir', dir];
  if (values.gib) args.push('--gib', values.gib);
  const p = spawnSync(process.execPath, args, { encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 });
  const line = p.stdout.split('\n').find((l) => l.startsWith('RESULT '));
  if (p.status !== 0 || !line) throw new Error(`phase ${phase} failed (exit ${p.status}):\n${p.stdout}\n${p.stderr}`);
  const result = JSON.parse(line.slice(7)) as PhaseResult;
  console.error(`${phase}: ${JSON.stringify(result)}`);
  return result;
}

async function main(): Promise<void> {
  if (values.phase) {
    const phases: Record<string, () => Promise<void>> = { generate, inspect, rewrite, verify, onnxruntime: runOrt, baseline: async () => finish('baseline', performance.now(), {}) };
    await phases[values.phase]();
    return;
  }
  await rm(dir, { recursive: true, force: true });
  const phases: PhaseResult[] = [];
  try {
    for (const phase of ['baseline', 'generate', 'inspect', 'rewrite', 'verify', ...(values.ort ? ['onnxruntime'] : [])]) {
      phases.push(runPhase(phase));
    }
  } finally {
    if (!values.keep) await rm(dir, { recursive: true, force: true });
  }
  const gen = phases.find((p) => p.phase === 'generate')!;
  const largestTensorMiB = (HIDDEN * INTERMEDIATE * 4) / 2 ** 20;
  const report = {
    benchmark: 'onnx-large',
    date: new Date().toISOString(),
    node: process.version,
    machine: { cpus: cpus().length, totalMemGiB: Math.round(totalmem() / 2 ** 30) },
    model: {
      layers: gen.layers,
      hidden: HIDDEN,
      intermediate: INTERMEDIATE,
      vocab: VOCAB,
      weightBytes: gen.weightBytes,
      weightGiB: Number(((gen.weightBytes as number) / 2 ** 30).toFixed(3)),
      largestTensorMiB,
    },
    phases,
    note: 'peakRssMiB is the peak resident set of the phase\'s own process (node + tsx + the work); baseline is an empty phase. Files were deleted afterwards.',
  };
  await mkdir('bench-results', { recursive: true });
  await writeFile(join('bench-results', 'onnx-large.json'), JSON.stringify(report, null, 2) + '\n');
  console.log(JSON.stringify(report, null, 2));
}

void main().catch((e) => {
  console.error(e instanceof Error ? (e.stack ?? e.message) : e);
  process.exitCode = 1;
});
