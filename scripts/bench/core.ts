// `npm run bench:core`: times every compression method of src/core on seeded layers with
// correlated inputs (512, 1024, 2048 input columns; rows = cols and rows = 4·cols) and runs the
// PyTorch reference (scripts/bench/torch_reference.py: the official per-row Cholesky loop, fp32)
// on the SAME layers, exchanged as .npy files under bench-results/core-layers/.
// Writes bench-results/core.json and docs/bench-core.md.
//
// Usage: tsx scripts/bench/core.ts [--sizes 512,1024,2048] [--methods all|obr-gptq,...]
//        [--no-torch] [--threads N] [--obr-rows 512:0,1024:0,2048:256]
//        [--solver direct|pcg|pcg-batched] [--backend js|ort]
// --solver picks the OBR compensation solver (default: compressLayer's default, the exact
// per-row Cholesky); pcg-batched needs --backend ort (float32 MatMul on onnxruntime). Rows of a
// non-default solver are stored beside the default ones (method column "obr-gptq [solver]").
// --obr-rows caps the rows the two OBR methods (ours and torch alike) run on per size, for the
// cases whose full run takes too long on a small machine (0 = all rows); the full-layer time is
// then the measured time scaled by rows/measured (the work is linear in rows).
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { formatNpy, readNpy } from '../../src/cli/npy';
import { compressLayer, layerLossBetween } from '../../src/core/compress';
import type { MatrixBackend } from '../../src/core/backend';
import { syntheticLayer } from '../../src/core/random';
import { RECIPES, type RecipeName } from '../../src/protocol/recipes';
import { createOrtBackend } from '../../src/runtime/ortBackend';
import { nominalFlops } from '../../src/pipeline/bench/core';

interface Args {
  sizes: number[];
  methods: RecipeName[];
  torch: boolean;
  threads?: number;
  obrRows: Map<number, number>;
  /** Row cap for every method per size (0 = all rows). */
  capRows: Map<number, number>;
  torchThreads: number;
  solver?: 'direct' | 'pcg' | 'pcg-batched';
  backend: 'js' | 'ort';
}

function parse(argv: string[]): Args {
  const get = (name: string): string | undefined => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const sizes = (get('sizes') ?? '512,1024,2048').split(',').map(Number);
  const m = get('methods') ?? 'all';
  const methods = (m === 'all' ? [...RECIPES] : m.split(',')) as RecipeName[];
  const obrRows = new Map<number, number>([[512, 0], [1024, 0], [2048, 256]]);
  for (const part of (get('obr-rows') ?? '').split(',').filter(Boolean)) {
    const [c, r] = part.split(':').map(Number);
    obrRows.set(c, r);
  }
  const capRows = new Map<number, number>();
  for (const part of (get('cap-rows') ?? '').split(',').filter(Boolean)) {
    const [c, r] = part.split(':').map(Number);
    capRows.set(c, r);
  }
  return { capRows, sizes, methods, torch: !argv.includes('--no-torch'), threads: get('threads') ? Number(get('threads')) : undefined, obrRows, torchThreads: Number(get('torch-threads') ?? 1), solver: get('solver') as Args['solver'], backend: get('backend') === 'ort' ? 'ort' : 'js' };
}

function underLoad(): { trainingRunning: boolean; loadavg1: number } {
  let trainingRunning = false;
  try {
    trainingRunning = execFileSync('pgrep', ['-f', 'train.py'], { encoding: 'utf8' }).trim().length > 0;
  } catch {
    trainingRunning = false;
  }
  return { trainingRunning, loadavg1: loadavg()[0] };
}

function ensureLayer(dir: string, cols: number, seed: number): void {
  if (existsSync(join(dir, 'H.npy')) && existsSync(join(dir, 'W.npy')) && existsSync(join(dir, 'act.npy'))) return;
  mkdirSync(dir, { recursive: true });
  const t = performance.now();
  const L = syntheticLayer(4 * cols, cols, seed, { tokens: 2 * cols });
  writeFileSync(join(dir, 'W.npy'), formatNpy(L.weight, [4 * cols, cols], 'float32'));
  writeFileSync(join(dir, 'H.npy'), formatNpy(L.hessian, [cols, cols], 'float32'));
  writeFileSync(join(dir, 'act.npy'), formatNpy(L.channelEnergy, [cols], 'float32'));
  console.error(`generated ${dir} in ${((performance.now() - t) / 1000).toFixed(1)} s`);
}

interface Row {
  cols: number;
  rows: number;
  method: RecipeName;
  /** OBR solver and backend when not the defaults ('direct', 'js'). */
  solver?: string;
  rowsMeasured: number;
  seconds: number;
  secondsFullLayer: number;
  gflops: number;
  loss: number;
  relativeLoss: number;
  load: { trainingRunning: boolean; loadavg1: number | null };
  torch?: { seconds: number; secondsFullLayer: number; loss: number; timeRatio: number; lossRatio: number; load: { trainingRunning: boolean; loadavg1: number } };
}

async function main(): Promise<void> {
  const args = parse(process.argv.slice(2));
  const root = 'bench-results';
  const results: Row[] = [];
  const seed = 20260;
  const solverTag = args.solver && args.solver !== 'direct' ? `${args.solver}${args.backend === 'ort' ? ', ort' : ''}` : undefined;
  let backend: (MatrixBackend & { release?: () => Promise<void> }) | undefined;
  if (args.backend === 'ort') backend = await createOrtBackend({ threads: 2 });
  const meta = { createdAt: new Date().toISOString(), node: process.version, cpus: cpus().length, cpuModel: cpus()[0]?.model, threads: args.threads ?? Math.min(2, cpus().length), torchThreads: args.torchThreads, seed: 20260 };
  const file = join(root, 'core.json');
  // Earlier results of sizes not re-run are kept (one size can be re-measured alone); the files
  // are rewritten after every measurement so an interrupted run keeps what it measured.
  let earlier: Row[] = [];
  if (existsSync(file)) {
    try {
      earlier = (JSON.parse(readFileSync(file, 'utf8')) as { results: Row[] }).results.filter((r) => !(args.sizes.includes(r.cols) && args.methods.includes(r.method) && r.solver === solverTag));
    } catch {
      earlier = [];
    }
  }
  const write = (): void => {
    const order = (r: Row): number => RECIPES.indexOf(r.method) + (r.solver ? 0.5 : 0);
    const merged = [...earlier, ...results].sort((a, b) => a.cols - b.cols || a.rows - b.rows || order(a) - order(b));
    mkdirSync(root, { recursive: true });
    writeFileSync(file, JSON.stringify({ meta, results: merged }, null, 2) + '\n');
    writeFileSync(join('docs', 'bench-core.md'), markdown(meta, merged));
  };

  for (const cols of args.sizes) {
    const dir = join(root, 'core-layers', `n${cols}`);
    ensureLayer(dir, cols, seed + cols);
    const Wall = readNpy(join(dir, 'W.npy'));
    const H = readNpy(join(dir, 'H.npy')).data;
    const act = readNpy(join(dir, 'act.npy')).data;
    for (const rows of [cols, 4 * cols]) {
      for (const method of args.methods) {
        const isObr = method === 'obr-rtn' || method === 'obr-gptq';
        if (solverTag && !isObr) continue; // a --solver run measures the OBR methods only
        const caps = [isObr ? args.obrRows.get(cols) ?? 0 : 0, args.capRows.get(cols) ?? 0].filter((c) => c > 0);
        const cap = caps.length ? Math.min(...caps) : 0;
        const measured = cap > 0 ? Math.min(cap, rows) : rows;
        const weight = Wall.data.subarray(0, measured * cols);
        const load = underLoad();
        const t = performance.now();
        const res = await compressLayer(
          { weight, rows: measured, cols, hessian: H, channelEnergy: act },
          { method, sparsity: { kind: 'unstructured', ratio: 0.5 }, wbits: 4, alpha: 0.5, damp: 0.01 },
          { threads: args.threads, skipLoss: true, ...(isObr && args.solver ? { solver: args.solver } : {}), ...(backend ? { backend } : {}) },
        );
        const seconds = (performance.now() - t) / 1000;
        const loss = layerLossBetween(res.weight, weight, measured, cols, H);
        const energy = layerLossBetween(weight, null, measured, cols, H);
        const row: Row = {
          cols,
          rows,
          method,
          ...(isObr && solverTag ? { solver: solverTag } : {}),
          rowsMeasured: measured,
          seconds,
          secondsFullLayer: (seconds * rows) / measured,
          gflops: nominalFlops(method, measured, cols) / seconds / 1e9,
          loss,
          relativeLoss: loss / energy,
          load,
        };
        if (args.torch && method === 'obr-gptq') {
          const tload = underLoad();
          const py = spawnSync('/usr/bin/python3', ['scripts/bench/torch_reference.py', dir, '--method', method, '--rows', String(measured), '--threads', String(args.torchThreads)], { encoding: 'utf8', maxBuffer: 1 << 24 });
          if (py.status === 0) {
            const out = JSON.parse(py.stdout.trim().split('\n').pop()!) as { seconds: number };
            const q = readNpy(join(dir, `Q_torch_${method}.npy`)).data;
            const tl = layerLossBetween(q, weight, measured, cols, H);
            row.torch = { seconds: out.seconds, secondsFullLayer: (out.seconds * rows) / measured, loss: tl, timeRatio: seconds / out.seconds, lossRatio: loss / tl, load: tload };
          } else {
            console.error(`torch reference failed: ${py.stderr}`);
          }
        }
        results.push(row);
        write();
        console.error(
          `${cols}×${rows} ${method.padEnd(15)} ${seconds.toFixed(2)} s (rows ${measured})  ${row.gflops.toFixed(2)} GFLOP/s  rel.loss ${row.relativeLoss.toExponential(3)}` +
            (row.torch ? `  torch ${row.torch.seconds.toFixed(2)} s  time ratio ${row.torch.timeRatio.toFixed(2)}  loss ratio ${row.torch.lossRatio.toFixed(5)}` : '') +
            (load.trainingRunning ? '  [train.py running]' : ''),
        );
      }
    }
  }
  await backend?.release?.();
  console.error(`wrote ${join(root, 'core.json')} and docs/bench-core.md`);
}

function markdown(meta: Record<string, unknown>, results: Row[]): string {
  const lines = [
    '# Core benchmark (`npm run bench:core`)',
    '',
    `Generated ${String(meta.createdAt)} on ${String(meta.cpus)} × ${String(meta.cpuModel)}, Node ${String(meta.node)}, ${String(meta.threads)} compensation threads.`,
    'Layers: seeded synthetic layers with correlated inputs (`syntheticLayer` in src/core/random.ts: a low-rank factor model plus noise and per-channel scales; H = XXᵀ over 2·cols tokens), 50% unstructured Wanda mask, 4-bit, α = 0.5, damp 0.01.',
    'Seconds are wall time of `compressLayer` without the loss statistics; loss = tr(ΔW H ΔWᵀ) with the undamped H, relative to tr(W H Wᵀ), both computed the same way for ours and torch.',
    `Torch: scripts/bench/torch_reference.py (official per-row loop, fp32, ${String(meta.torchThreads)} thread(s); that is torch\'s fastest setting here: on the quiet machine, 512 rows with 2 threads took 1.67 / 4.81 / 16.1 s against 0.95 / 2.80 / 11.6 s with 1 thread at 512 / 1024 / 2048 columns) on the same .npy files. Time ratio = ours / torch (≤ 1 means we are faster); loss ratio = our loss / torch loss.`,
    'Rows measured < rows: only the first rows were run (`--obr-rows` for the OBR methods, ours and torch alike; `--cap-rows` for every method, used at 2048), and "full-layer s" scales the time linearly. Rows without a load figure were rebuilt from a run log (bench-results/core-run-512-1024.log) after that run had to be stopped, so they carry no absolute loss.',
    '',
    '| cols × rows | method | rows measured | seconds | full-layer s | GFLOP/s | rel. loss | torch s | time ratio | loss ratio | under load |',
    '|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const r of results) {
    lines.push(
      `| ${r.cols} × ${r.rows} | ${r.method}${r.solver ? ` [${r.solver}]` : ''} | ${r.rowsMeasured} | ${r.seconds.toFixed(2)} | ${r.secondsFullLayer.toFixed(1)} | ${r.gflops.toFixed(2)} | ${r.relativeLoss.toExponential(3)} | ${r.torch ? r.torch.seconds.toFixed(2) : '–'} | ${r.torch ? r.torch.timeRatio.toFixed(2) : '–'} | ${r.torch ? r.torch.lossRatio.toFixed(5) : '–'} | ${[r.load.trainingRunning ? 'train.py' : '', r.load.loadavg1 == null ? '' : `load ${r.load.loadavg1.toFixed(1)}`].filter(Boolean).join(', ') || '–'} |`,
    );
  }
  lines.push(
    '',
    '## How our implementation differs from the reference loop',
    '',
    '- One Cholesky per row instead of two: the retained set is ordered [R2, E2] before factorizing, so the leading block of the factor is chol(A_R2R2) and the E2 → R2 transfer reuses it (§2.7).',
    '- Every per-row kernel runs in WebAssembly SIMD compiled from AssemblyScript (src/core/wasm/assembly/index.ts, built by `npm run build:wasm` into src/core/wasm/kernelsWasm.ts, compiled optimized up front): the whole row compensation in one call (gather of H[R, R], a 16-row-blocked left-looking Cholesky with 4×2 register tiles, both triangular solves), the MSE scale search (powers from tables), the GPTQ recursion (bit-identical to the JavaScript loop) and the triangular inverse behind U.',
    '- Mixed precision where it is exact enough: rows keeping ≥ 256 columns are factored in float32 (f32x4 tiles, 1.6–1.8× the float64 throughput) and both solves are refined in float64 against the float64 H[R, R] until the correction is below 1e-12 of the answer, so the compensated weights agree with the float64 kernel to ~1e-14 (tested); a row whose refinement does not converge is redone in float64. Torch runs everything in float32.',
    '- OBR_GPTQ\'s GPTQ tail starts at column k = αn and reads only U[k:, k:], which equals the upper Cholesky factor of (H[k:, k:])⁻¹, so only that block is factored and inverted (1/8 of the work at α = ½).',
    '- Right-hand sides are dense row dot products of H (no gathers); the GPTQ tail updates 16 rows per loaded row of U.',
    '- Rows are independent, so scale search, compensation and the GPTQ tail run on worker threads (SharedArrayBuffer, eval workers); the main thread factors H⁻¹ for the tail meanwhile.',
    '- Rows marked `[pcg-batched, ort]` (`--solver pcg-batched --backend ort`, opt-in, not the default): every row\'s pruning system H_RR x = H_RE w_E, then the E2 → R2 transfer, solved at once by Jacobi-preconditioned CG whose products are masked float32 GEMMs on onnxruntime\'s MatMul (src/core/pcgBatched.ts, src/runtime/ortBackend.ts); a row stops when the loss still to gain (sum of its last 4 CG decrements) is ≤ 2e-4 of its loss. It needs 60–90 iterations per stage on these layers, so it is now slower than the exact WebAssembly kernels at every size measured, and its final loss after rounding/GPTQ scatters by up to +4% at 512 columns (rounding flips: Q(x) differs from Q(x*) wherever the CG error crosses a rounding boundary). It stays as an opt-in experiment: its work is plain batched GEMMs that a faster MatMul backend could take over (the onnxruntime backend here runs on the CPU provider).',
    '- Preconditioned CG (`solver: \'pcg\'`) is implemented and tested but slower here (Jacobi-PCG needs 100+ iterations on these ill-conditioned blocks), so the default is the exact float64 solver.',
    '',
    'Machine load: the last column gives the load average when a row was measured; ours and torch\'s are measured back to back on the same 2 cores, not at the same moment, so rows measured under load are noisy.',
    '',
  );
  return lines.join('\n');
}

void main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
