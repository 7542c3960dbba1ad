// Group-wise grids vs one scale per row on one seeded layer (issue 15): compression time
// (stats.seconds, loss statistics excluded) and relative layer loss for every recipe, per row,
// g128, g128 asymmetric, g32 and g32 asymmetric, measured back to back in one process. Prints a
// markdown table and writes bench-results/core-groups.json.
// Usage: tsx scripts/bench/coreGroups.ts [--rows 1024] [--cols 1024] [--reps 1] [--methods all|obr-gptq,...] [--threads N]
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { compressLayer } from '../../src/core/compress';
import { syntheticLayer } from '../../src/core/random';
import { RECIPES, type RecipeName } from '../../src/protocol/recipes';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const rows = Number(arg('rows') ?? 1024);
const cols = Number(arg('cols') ?? 1024);
const reps = Number(arg('reps') ?? 1);
const threads = arg('threads') === undefined ? undefined : Number(arg('threads'));
const methodArg = arg('methods') ?? 'all';
const methods = (methodArg === 'all' ? [...RECIPES] : methodArg.split(',')) as RecipeName[];
const variants: Array<{ name: string; groupSize: number; asymmetric: boolean }> = [
  { name: 'per row', groupSize: 0, asymmetric: false },
  { name: 'g128', groupSize: 128, asymmetric: false },
  { name: 'g128 asym', groupSize: 128, asymmetric: true },
  { name: 'g32', groupSize: 32, asymmetric: false },
  { name: 'g32 asym', groupSize: 32, asymmetric: true },
];

async function main(): Promise<void> {
  const seed = 20260 + cols;
  const L = syntheticLayer(rows, cols, seed, { tokens: 2 * cols });
  const problem = { weight: L.weight, rows, cols, hessian: L.hessian, channelEnergy: L.channelEnergy };
  const results: Array<{ method: RecipeName; variant: string; seconds: number; relativeLoss: number; loadavg1: number }> = [];
  for (const method of methods) {
    for (const v of variants) {
      let seconds = Infinity;
      let relativeLoss = NaN;
      for (let rep = 0; rep < reps; rep++) {
        const r = await compressLayer(problem, { method, sparsity: { kind: 'unstructured', ratio: 0.5 }, wbits: 4, alpha: 0.5, damp: 0.01, groupSize: v.groupSize, asymmetric: v.asymmetric }, { threads });
        seconds = Math.min(seconds, r.stats.seconds);
        relativeLoss = r.stats.loss.total / r.stats.loss.outputEnergy;
      }
      results.push({ method, variant: v.name, seconds, relativeLoss, loadavg1: loadavg()[0] });
      console.error(`${method} ${v.name}: ${seconds.toFixed(2)} s, relative loss ${relativeLoss.toExponential(3)}`);
    }
  }
  const meta = { createdAt: new Date().toISOString(), node: process.version, cpus: cpus().length, rows, cols, seed, reps, threads: threads ?? 'default' };
  mkdirSync('bench-results', { recursive: true });
  writeFileSync(join('bench-results', 'core-groups.json'), JSON.stringify({ meta, results }, null, 2) + '\n');
  const lines = [
    `${rows} × ${cols}, seed ${seed}, 50% unstructured, W4, α = 0.5; seconds = best of ${reps} (loss statistics excluded); load = 1-min load average after the row`,
    '',
    `| method | ${variants.map((v) => v.name).join(' | ')} |`,
    `|---|${variants.map(() => '---').join('|')}|`,
    ...methods.map((m) => {
      const cells = variants.map((v) => {
        const r = results.find((x) => x.method === m && x.variant === v.name)!;
        return `${r.seconds.toFixed(2)} s · ${r.relativeLoss.toExponential(2)} · load ${r.loadavg1.toFixed(1)}`;
      });
      return `| ${m} | ${cells.join(' | ')} |`;
    }),
  ];
  console.log(lines.join('\n'));
}

void main().then(() => process.exit(0));
