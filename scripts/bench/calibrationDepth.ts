// Calibration time against depth, streamed (§1.5, one block subgraph at a time on cached
// activations) vs whole-model forwards (blocks 0…b re-run for every capture of block b), on the
// bundled small model: compressing its first 2 and all 4 blocks (rtn W4A16 — the core is
// negligible, so `timings.calibrate` is the forwards), each configuration run twice in alternating
// order after a warm-up, best of two kept. Writes bench-results/calibration-depth.json.
//
// Usage: node --import tsx scripts/bench/calibrationDepth.ts [--samples 32] [--seqlen 128]
import { mkdtempSync, rmSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { runCompression } from '../../src/pipeline/compress';
import { DEFAULT_OPTIONS } from '../../src/protocol/recipes';

const ROOT = path.resolve(__dirname, '..', '..');
const { values } = parseArgs({ options: { samples: { type: 'string' }, seqlen: { type: 'string' } } });
const samples = Number(values.samples ?? 32);
const seqlen = Number(values.seqlen ?? 128);
const model = path.join(ROOT, 'media', 'models', 'small', 'model.onnx');

async function once(mode: 'stream' | 'whole-model', blocks: number[]): Promise<{ seconds: number; forwards: number; blockForwards: number }> {
  const dir = mkdtempSync(path.join(tmpdir(), 'obr-depth-'));
  const forwards: Array<string | null> = [];
  try {
    const r = await runCompression(
      model,
      { ...DEFAULT_OPTIONS, recipe: 'rtn', abits: 16, kvbits: 16, samples, seqlen, executionProviders: ['cpu'], outDir: dir },
      {},
      { evalText: null, onlyBlocks: blocks, calibrationForwards: mode, onForward: (b) => forwards.push(b) },
    );
    // Whole-model: a capture of block b runs blocks 0…b; streamed: one region per forward (the prelude is not a block).
    const blockForwards = mode === 'stream' ? forwards.filter((b) => b !== null).length : forwards.reduce((s, b) => s + Number(b) + 1, 0);
    return { seconds: r.timings.calibrate!, forwards: forwards.length, blockForwards };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  await once('stream', [0]); // warm-up
  const rows: Array<{ mode: string; depth: number; calibrateSeconds: number; forwards: number; blockForwards: number }> = [];
  for (const depth of [2, 4]) {
    const blocks = [...Array(depth).keys()];
    const best: Record<string, { seconds: number; forwards: number; blockForwards: number }> = {};
    for (const mode of ['whole-model', 'stream', 'whole-model', 'stream'] as const) {
      const r = await once(mode, blocks);
      if (!best[mode] || r.seconds < best[mode]!.seconds) best[mode] = r;
    }
    for (const [mode, r] of Object.entries(best)) rows.push({ mode, depth, calibrateSeconds: Number(r.seconds.toFixed(2)), forwards: r.forwards, blockForwards: r.blockForwards });
  }
  const report = {
    benchmark: 'calibration-depth',
    date: new Date().toISOString(),
    node: process.version,
    machine: { cpus: cpus().length, loadAverage1m: Number(loadavg()[0]!.toFixed(1)) },
    model: 'media/models/small/model.onnx (4 blocks, hidden 256, FF 640)',
    calibration: { samples, seqlen, recipe: 'rtn W4A16', mode: 'sequential' },
    rows,
  };
  await mkdir(path.join(ROOT, 'bench-results'), { recursive: true });
  await writeFile(path.join(ROOT, 'bench-results', 'calibration-depth.json'), JSON.stringify(report, null, 2) + '\n');
  console.log(JSON.stringify(report, null, 2));
}

void main().catch((e) => {
  console.error(e instanceof Error ? (e.stack ?? e.message) : e);
  process.exitCode = 1;
});
