// Block 0's Hessian captures under three sets of onnxruntime session options, alternated in child
// processes under /usr/bin/time (peak RSS = the kernel's high-water mark, which also sees the
// moments inside session.run that an in-process sampler can't): the region sessions' options
// (regionSessionOptions(), src/pipeline/blockStream.ts: CPU arena and memory pattern off, intra-op
// threads = the physical cores), the same on one thread, and onnxruntime's defaults. Each child runs the prelude and one capture per input group of block 0
// ([q,k,v], [o], [gate,up], [down] on Llama graphs) at the given batch, with the CLI's malloc
// setting, and prints per-group seconds and a SHA-256 of each Hessian, so the two variants' results
// can be checked bit for bit.
//
// Usage: node --import tsx scripts/bench/captureMemory.ts MODEL.onnx [--samples 8] [--seqlen 512]
//          [--batch 4] [--runs 2] [--name capture-memory]
// Writes bench-results/NAME.json.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { findLinearLayers } from '../../src/onnx/linear';
import { loadModel } from '../../src/onnx/load';
import { BlockStream, regionSessionOptions } from '../../src/pipeline/blockStream';
import { requestsFor } from '../../src/pipeline/capture';
import { planBlocks, groupLabel } from '../../src/pipeline/stages/calibrate';
import { withMallocTunables } from '../../src/runtime/mallocTunables';
import { calibrationWindows } from '../../src/runtime/text';
import { seededRandom } from '../../src/core/random';

const ROOT = resolve(__dirname, '..', '..');
const VARIANTS = {
  region: regionSessionOptions(),
  'one-thread': { ...regionSessionOptions(), intraOpNumThreads: 1 },
  'ort-defaults': { logSeverityLevel: 3 as const },
};
type Variant = keyof typeof VARIANTS;

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    samples: { type: 'string', default: '8' },
    seqlen: { type: 'string', default: '512' },
    batch: { type: 'string', default: '4' },
    runs: { type: 'string', default: '2' },
    name: { type: 'string', default: 'capture-memory' },
    child: { type: 'string' },
  },
});

interface ChildResult {
  variant: Variant;
  groups: Array<{ group: string; seconds: number; sha256: string[] }>;
  peakMiB: number;
  wallSeconds: number;
  load: number[];
}

/** Child: the prelude and block 0's captures; prints one JSON line. */
async function child(modelPath: string, variant: Variant): Promise<void> {
  const samples = Number(values.samples);
  const seqlen = Number(values.seqlen);
  const m = await loadModel(modelPath);
  const layers = findLinearLayers(m.model);
  // Seeded random token ids stand in for text: the captures' time and memory don't depend on it.
  const rand = seededRandom(7);
  const tokens = Int32Array.from({ length: samples * seqlen * 2 }, () => Math.floor(rand() * 1000));
  const windows = calibrationWindows(tokens, samples, seqlen, 0);
  const s = BlockStream.open(m.model, layers, windows, { executionProviders: ['cpu'], batch: Number(values.batch), weights: m, sessionOptions: VARIANTS[variant] });
  if ('err' in s) throw new Error(`the model can't be cut into blocks: ${s.err}`);
  await s.ok.begin(m.model);
  const block = planBlocks(layers.filter((l) => l.block === s.ok.current.block))[0]!;
  const groups: ChildResult['groups'] = [];
  for (const g of block.groups) {
    const t0 = performance.now();
    const stats = await s.ok.capture(m.model, g, requestsFor(g));
    const seconds = (performance.now() - t0) / 1000;
    const sha256 = [...stats.values()].map((st) => createHash('sha256').update(new Uint8Array(st.hessian.buffer, st.hessian.byteOffset, st.hessian.byteLength)).digest('hex'));
    groups.push({ group: groupLabel(g), seconds: Number(seconds.toFixed(2)), sha256 });
  }
  s.ok.dispose();
  process.stdout.write(JSON.stringify({ groups }) + '\n');
}

function runChild(modelPath: string, variant: Variant): ChildResult {
  const args = [process.execPath, '--import', 'tsx', __filename, modelPath, '--child', variant, '--samples', values.samples!, '--seqlen', values.seqlen!, '--batch', values.batch!];
  const before = loadavg()[0]!;
  const r = spawnSync('/usr/bin/time', ['-f', 'OBR_TIME %M %e', ...args], { encoding: 'utf8', cwd: ROOT, env: withMallocTunables(process.env), maxBuffer: 64 * 2 ** 20 });
  const time = /OBR_TIME (\d+) ([\d.]+)/.exec(r.stderr);
  if (r.status !== 0 || !time) throw new Error(`${variant} child failed (status ${r.status}):\n${r.stderr.slice(-2000)}`);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as Pick<ChildResult, 'groups'>;
  return { variant, groups: out.groups, peakMiB: Math.round(Number(time[1]) / 1024), wallSeconds: Number(time[2]), load: [before, loadavg()[0]!].map((x) => Number(x.toFixed(1))) };
}

async function main(): Promise<void> {
  const [modelPath] = positionals;
  if (!modelPath) throw new Error('usage: captureMemory.ts MODEL.onnx [--samples 8] [--seqlen 512] [--batch 4] [--runs 2] [--name capture-memory]');
  if (values.child) return child(modelPath, values.child as Variant);
  const results: ChildResult[] = [];
  for (let i = 0; i < Number(values.runs); i++) {
    for (const v of Object.keys(VARIANTS) as Variant[]) {
      const r = runChild(modelPath, v);
      results.push(r);
      console.log(`${v.padEnd(12)} peak ${r.peakMiB} MiB, ${r.wallSeconds} s (load ${r.load.join(' → ')}): ${r.groups.map((g) => `${g.group} ${g.seconds} s`).join(', ')}`);
    }
  }
  const same = results.every((r) => JSON.stringify(r.groups.map((g) => g.sha256)) === JSON.stringify(results[0]!.groups.map((g) => g.sha256)));
  console.log(`Hessians bit-identical across variants and runs: ${same}`);
  const report = {
    when: new Date().toISOString(),
    model: resolve(modelPath),
    samples: Number(values.samples),
    seqlen: Number(values.seqlen),
    batch: Number(values.batch),
    variants: VARIANTS,
    hessiansIdentical: same,
    runs: results,
  };
  await mkdir(join(ROOT, 'bench-results'), { recursive: true });
  await writeFile(join(ROOT, 'bench-results', `${values.name}.json`), JSON.stringify(report, null, 2) + '\n');
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
