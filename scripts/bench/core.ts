// `npm run bench:core`: OBR_GPTQ and OBR_RTN per layer, our default (batched ADMM on onnxruntime)
// and exact (per-row Cholesky) solvers against the PyTorch per-row reference of the official
// algorithm (scripts/bench/torch_reference.py) and PyTorch SparseGPT+GPTQ, in the same run, on the
// SAME seeded layers exchanged as .npy files under bench-results/core-layers/.
// Writes bench-results/core.json and docs/bench-core.md.
//
// Usage: tsx scripts/bench/core.ts [--layers 2048x2048,5632x2048,2048x5632,4096x4096] (rows×cols)
//        [--methods obr-gptq,obr-rtn,sparsegpt-gptq] [--ref-rows 64] [--threads 2] [--torch-threads 1]
//        [--no-torch] [--no-exact] [--no-sparsegpt] [--ep webgpu,cpu] [--torch-device cpu|cuda]
//        [--python /usr/bin/python3] [--name core]
// --ep: execution providers of the batched solver's products, in order of preference (default
// cpu; the one that loaded is recorded). --torch-device cuda runs the PyTorch references on the GPU,
// as the official code does. --name NAME writes bench-results/NAME.json (docs/bench-core.md is
// only regenerated for the default name).
// The batched solver always runs on the whole layer. The per-row references (ours exact and
// torch's loop) run on the first --ref-rows rows and their time is scaled by rows/ref-rows (their
// work is linear in rows apart from one n³ factorization for the GPTQ tail, so this slightly
// overstates their full-layer time). Losses are compared on those same first rows.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { formatNpy, readNpy } from '../../src/cli/npy';
import type { AdmmStats } from '../../src/core/admm';
import { compressLayer, layerLossBetween } from '../../src/core/compress';
import { seededNormal, syntheticLayer } from '../../src/core/random';
import { createOrtBackend, type OrtMatrixBackend } from '../../src/runtime/ortBackend';

type Method = 'obr-gptq' | 'obr-rtn' | 'sparsegpt-gptq';

interface Args {
  layers: Array<[number, number]>;
  methods: Method[];
  refRows: number;
  threads: number;
  torchThreads: number;
  torch: boolean;
  exact: boolean;
  sparseGpt: boolean;
  executionProviders: string[];
  torchDevice: 'cpu' | 'cuda';
  python: string;
  name: string;
}

function parse(argv: string[]): Args {
  const get = (name: string): string | undefined => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const layers = (get('layers') ?? '2048x2048,5632x2048,2048x5632,4096x4096').split(',').map((s) => s.split('x').map(Number) as [number, number]);
  const methods = (get('methods') ?? 'obr-gptq,obr-rtn,sparsegpt-gptq').split(',') as Method[];
  return { layers, methods, refRows: Number(get('ref-rows') ?? 64), threads: Number(get('threads') ?? 2), torchThreads: Number(get('torch-threads') ?? 1), torch: !argv.includes('--no-torch'), exact: !argv.includes('--no-exact'), sparseGpt: !argv.includes('--no-sparsegpt'),
    executionProviders: (get('ep') ?? 'cpu').split(','), torchDevice: get('torch-device') === 'cuda' ? 'cuda' : 'cpu', python: get('python') ?? process.env.OBR_PYTHON ?? '/usr/bin/python3', name: get('name') ?? 'core' };
}

/**
 * A seeded layer shaped like rotated LLM activations (the model of syntheticLayer in
 * src/core/random.ts: X = (F·Z + 0.5·N)·diag(c), a cols/8-rank factor model with decaying
 * strengths, per-channel scales over about a decade), with the two big products X = F·Z and
 * H = X Xᵀ (2·cols tokens) on onnxruntime so that 4096- and 5632-column layers take seconds.
 */
async function ensureLayer(dir: string, rows: number, cols: number, seed: number, backend: OrtMatrixBackend): Promise<void> {
  if (existsSync(join(dir, 'H.npy')) && existsSync(join(dir, 'W.npy')) && existsSync(join(dir, 'act.npy'))) return;
  mkdirSync(dir, { recursive: true });
  const t = performance.now();
  const tokens = 2 * cols;
  const rank = Math.max(4, Math.floor(cols / 8));
  const g = seededNormal(seed);
  const f = new Float32Array(cols * rank);
  for (let j = 0; j < cols; j++) for (let r = 0; r < rank; r++) f[j * rank + r] = g() * (3 / Math.sqrt(1 + r));
  const z = new Float32Array(rank * tokens);
  for (let i = 0; i < z.length; i++) z[i] = g();
  const x = await backend.matmulF32!(f, z, cols, rank, tokens);
  const xt = new Float32Array(tokens * cols);
  for (let j = 0; j < cols; j++) {
    const c = Math.exp(0.6 * g());
    for (let s = 0; s < tokens; s++) {
      const v = (x[j * tokens + s]! + 0.5 * g()) * c;
      x[j * tokens + s] = v;
      xt[s * cols + j] = v;
    }
  }
  const h = await backend.matmulF32!(x, xt, cols, tokens, cols);
  for (let i = 0; i < cols; i++) for (let j = 0; j < i; j++) h[i * cols + j] = h[j * cols + i]!; // exact symmetry
  const act = new Float32Array(cols);
  for (let j = 0; j < cols; j++) act[j] = h[j * cols + j]! / tokens;
  const w = new Float32Array(rows * cols);
  for (let i = 0; i < w.length; i++) w[i] = g() * 0.02 * (i % 97 === 0 ? 4 : 1);
  writeFileSync(join(dir, 'W.npy'), formatNpy(Float64Array.from(w), [rows, cols], 'float32'));
  writeFileSync(join(dir, 'H.npy'), formatNpy(Float64Array.from(h), [cols, cols], 'float32'));
  writeFileSync(join(dir, 'act.npy'), formatNpy(Float64Array.from(act), [cols], 'float32'));
  console.error(`generated ${dir} in ${((performance.now() - t) / 1000).toFixed(1)} s`);
}

interface Run {
  seconds: number;
  /** seconds × rows / rowsMeasured. */
  secondsFullLayer: number;
  rowsMeasured: number;
  /** Loss tr(ΔW H ΔWᵀ) (undamped H) on the first refRows rows. */
  lossRefRows: number;
  load: number;
}

interface Row {
  rows: number;
  cols: number;
  method: Method;
  batched: Run & { iterations: [number, number]; solverSeconds: [number, number, number]; provider: string };
  exact?: Run;
  torch?: Run;
  /** PyTorch SparseGPT+GPTQ on the whole layer (same for both methods of a layer). */
  torchSparseGptGptq?: Run;
  /** batched full-layer seconds / torch full-layer seconds. */
  timeRatio?: number;
  timeRatioExact?: number;
  timeRatioSparseGpt?: number;
  /** batched loss / reference loss on the same first rows. */
  lossRatioTorch?: number;
  lossRatioExact?: number;
}

interface TorchOptions {
  python: string;
  device: 'cpu' | 'cuda';
}

function torchRun(py0: TorchOptions, dir: string, method: string, rows: number, threads: number, total: number, W: Float64Array, H: Float64Array, cols: number, refRows: number): Run | undefined {
  const load = loadavg()[0]!;
  // OpenBLAS (behind torch's Cholesky) otherwise starts its own threads on every core, which on a
  // busy machine made the per-row loop 4× slower than with the thread count torch was given.
  const env = { ...process.env, OPENBLAS_NUM_THREADS: String(threads), OMP_NUM_THREADS: String(threads) };
  const py = spawnSync(py0.python, ['scripts/bench/torch_reference.py', dir, '--method', method, '--rows', String(rows), '--threads', String(threads), '--device', py0.device], { encoding: 'utf8', maxBuffer: 1 << 26, env });
  if (py.status !== 0) {
    console.error(`torch reference (${method}) failed: ${py.stderr}`);
    return undefined;
  }
  const out = JSON.parse(py.stdout.trim().split('\n').pop()!) as { seconds: number; layer_seconds: number };
  const q = readNpy(join(dir, `Q_torch_${method}.npy`)).data;
  const r = Math.min(refRows, rows);
  // Only the row-proportional part is scaled; the n³ factorization counts once.
  const layer = Math.min(out.layer_seconds, out.seconds);
  return { seconds: out.seconds, secondsFullLayer: layer + ((out.seconds - layer) * total) / rows, rowsMeasured: rows, lossRefRows: layerLossBetween(q.subarray(0, r * cols), W.subarray(0, r * cols), r, cols, H), load };
}

async function main(): Promise<void> {
  const args = parse(process.argv.slice(2));
  const root = 'bench-results';
  const backend = await createOrtBackend({ threads: args.threads, executionProviders: args.executionProviders });
  const torchOptions: TorchOptions = { python: args.python, device: args.torchDevice };
  const meta = {
    createdAt: new Date().toISOString(),
    node: process.version,
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model,
    threads: args.threads,
    torchThreads: args.torchThreads,
    refRows: args.refRows,
    provider: backend.provider.used,
    providersTried: backend.provider.tried,
    torchDevice: args.torchDevice,
    seed: 20260,
  };
  const results: Row[] = [];
  // Rows of layers/methods not re-run are kept from the previous results (one layer can be
  // re-measured alone); the files are rewritten after every row so an interrupted run keeps them.
  const file = join(root, `${args.name}.json`);
  let earlier: Row[] = [];
  if (existsSync(file)) {
    try {
      const old = JSON.parse(readFileSync(file, 'utf8')) as { results: Row[] };
      const rerun = (r: Row): boolean => args.layers.some(([rows, cols]) => rows === r.rows && cols === r.cols) && args.methods.includes(r.method);
      earlier = old.results.filter((r) => r.batched !== undefined && !rerun(r));
    } catch {
      earlier = [];
    }
  }
  const write = (): void => {
    const merged = [...earlier, ...results].sort((a, b) => a.cols * a.rows - b.cols * b.rows || a.cols - b.cols || a.method.localeCompare(b.method));
    mkdirSync(root, { recursive: true });
    writeFileSync(file, JSON.stringify({ meta, results: merged }, null, 2) + '\n');
    if (args.name !== 'core') return;
    // Hand-written text after the notes marker of the existing file is kept.
    const doc = join('docs', 'bench-core.md');
    const old = existsSync(doc) ? readFileSync(doc, 'utf8') : '';
    const at = old.indexOf(NOTES_MARK);
    writeFileSync(doc, markdown(meta, merged) + (at >= 0 ? `\n${old.slice(at)}` : ''));
  };
  // Warm-up, not timed: the first compressLayer of a process instantiates the WebAssembly kernels,
  // starts the worker threads and runs onnxruntime's first products (about a second here); a job
  // pays that once, not per layer, and the PyTorch script's clock likewise starts after its
  // imports and loads. So every timed row below runs warm.
  const warm = syntheticLayer(64, 256, 7);
  for (const method of args.methods) {
    await compressLayer({ weight: warm.weight, rows: 64, cols: 256, hessian: warm.hessian }, { method, sparsity: { kind: 'unstructured', ratio: 0.5 }, wbits: 4, alpha: 0.5, damp: 0.01 }, { threads: args.threads, skipLoss: true, backend });
  }
  for (const [rows, cols] of args.layers) {
    const dir = join(root, 'core-layers', `r${rows}c${cols}`);
    await ensureLayer(dir, rows, cols, meta.seed + rows + cols, backend);
    const W = readNpy(join(dir, 'W.npy')).data;
    const H = readNpy(join(dir, 'H.npy')).data;
    const act = readNpy(join(dir, 'act.npy')).data;
    const ref = Math.min(args.refRows, rows);
    const refLoss = (q: Float64Array): number => layerLossBetween(q.subarray(0, ref * cols), W.subarray(0, ref * cols), ref, cols, H);
    let sparseGpt: Run | undefined;
    if (args.torch && args.sparseGpt) sparseGpt = torchRun(torchOptions, dir, 'sparsegpt-gptq', rows, Math.max(args.torchThreads, 2), rows, W, H, cols, ref);
    for (const method of args.methods) {
      const config = { method, sparsity: { kind: 'unstructured', ratio: 0.5 }, wbits: 4, alpha: 0.5, damp: 0.01 } as const;
      let load = loadavg()[0]!;
      let stats: AdmmStats | undefined;
      let t = performance.now();
      const res = await compressLayer({ weight: W, rows, cols, hessian: H, channelEnergy: act }, config, { threads: args.threads, skipLoss: true, backend, onAdmmStats: (s) => (stats = s) });
      const seconds = (performance.now() - t) / 1000;
      const row: Row = {
        rows,
        cols,
        method,
        batched: { seconds, secondsFullLayer: seconds, rowsMeasured: rows, lossRefRows: refLoss(res.weight), load, iterations: stats?.iterations ?? [0, 0], solverSeconds: stats?.seconds ?? [0, 0, 0], provider: backend.provider.used },
      };
      // sparsegpt-gptq (ours, whole layer) has no per-row reference: it is compared with PyTorch SparseGPT+GPTQ only.
      const perRow = method !== 'sparsegpt-gptq';
      if (args.exact && perRow) {
        load = loadavg()[0]!;
        // Timed at ref/2 and ref rows: the difference is the per-row cost, the rest (the GPTQ
        // tail's factorization, worker start-up) counts once.
        const half = Math.max(1, Math.floor(ref / 2));
        const timeExact = async (r: number): Promise<[number, Float64Array]> => {
          const t0 = performance.now();
          const ex = await compressLayer({ weight: W.subarray(0, r * cols), rows: r, cols, hessian: H, channelEnergy: act }, config, { threads: args.threads, skipLoss: true, solver: 'exact' });
          return [(performance.now() - t0) / 1000, ex.weight];
        };
        const [tHalf] = await timeExact(half);
        const [tRef, exWeight] = await timeExact(ref);
        // Under load the smaller run can come out slower; then scale the whole time linearly.
        const perRow = ref > half && tRef > tHalf ? (tRef - tHalf) / (ref - half) : tRef / ref;
        row.exact = { seconds: tRef, secondsFullLayer: tRef + perRow * (rows - ref), rowsMeasured: ref, lossRefRows: refLoss(exWeight), load };
        row.timeRatioExact = row.batched.secondsFullLayer / row.exact.secondsFullLayer;
        row.lossRatioExact = row.batched.lossRefRows / row.exact.lossRefRows;
      }
      if (args.torch) {
        const tr = perRow ? torchRun(torchOptions, dir, method, ref, args.torchThreads, rows, W, H, cols, ref) : undefined;
        if (tr) {
          row.torch = tr;
          row.timeRatio = row.batched.secondsFullLayer / tr.secondsFullLayer;
          row.lossRatioTorch = row.batched.lossRefRows / tr.lossRefRows;
        }
        if (sparseGpt) {
          row.torchSparseGptGptq = sparseGpt;
          row.timeRatioSparseGpt = row.batched.secondsFullLayer / sparseGpt.secondsFullLayer;
          if (!perRow) row.lossRatioTorch = row.batched.lossRefRows / sparseGpt.lossRefRows;
        }
      }
      results.push(row);
      write();
      console.error(
        `${rows}×${cols} ${method}: batched ${row.batched.seconds.toFixed(1)} s (its ${row.batched.iterations.join('/')})` +
          (row.exact ? `  exact ${row.exact.secondsFullLayer.toFixed(1)} s (×${(1 / row.timeRatioExact!).toFixed(1)}) loss ${row.lossRatioExact!.toFixed(5)}` : '') +
          (row.torch ? `  torch ${row.torch.secondsFullLayer.toFixed(1)} s ratio ${row.timeRatio!.toFixed(3)} loss ${row.lossRatioTorch!.toFixed(5)}` : '') +
          (sparseGpt ? `  sparsegpt-gptq ${sparseGpt.seconds.toFixed(1)} s` : ''),
      );
    }
  }
  await backend.release();
  console.error(`wrote ${file}${args.name === 'core' ? ' and docs/bench-core.md' : ''}`);
}

const NOTES_MARK = '<!-- notes -->';

function markdown(meta: Record<string, unknown>, results: Row[]): string {
  const f = (x: number | undefined, d = 1): string => (x === undefined ? '–' : x.toFixed(d));
  const lines = [
    '# Core benchmark (`npm run bench:core`)',
    '',
    `Generated (last run) ${String(meta.createdAt)} on ${String(meta.cpus)} × ${String(meta.cpuModel)}, Node ${String(meta.node)}; products on onnxruntime's \`${String(meta.provider)}\` provider with ${String(meta.threads)} threads, core worker threads ${String(meta.threads)}; PyTorch per-row loop with ${String(meta.torchThreads)} thread(s), PyTorch SparseGPT+GPTQ with ${Math.max(2, Number(meta.torchThreads))}.`,
    '',
    'Layers (rows × cols): seeded synthetic layers with correlated inputs (a cols/8-rank factor model with decaying strengths, noise and per-channel scales, H = XXᵀ over 2·cols tokens), the shapes of a 1.1B LLaMA\'s projections (2048 × 2048 q/o, 5632 × 2048 up/gate, 2048 × 5632 down) and a 7B one\'s q/k/v/o (4096 × 4096). 50% unstructured Wanda mask, 4-bit, α = 0.5, damp 0.01.',
    '',
    `- **batched**: \`compressLayer\` with the default solver (src/core/admm.ts, [solver.md](solver.md)) on the **whole layer**, wall time including the scale search, mask, factorizations and the GPTQ tail; "its" = ADMM iterations of the pruning / transfer steps.`,
    '- **exact** (our per-row Cholesky solver, `--solver exact`) and **torch** (scripts/bench/torch_reference.py: the official algorithm\'s per-row loop in PyTorch, fp32, OpenBLAS limited to torch\'s thread count) run on the **first rows** only (column "ref rows"). Full-layer time: torch = its n³ factorization (timed separately) + the rest × rows/(ref rows); exact = timed at ref/2 and ref rows, extrapolated linearly in rows.',
    '- **SparseGPT+GPTQ**: the paper\'s cheap baseline in PyTorch (same script, `--method sparsegpt-gptq`), whole layer. Rows **sparsegpt-gptq**: ours (`compressLayer`, whole layer, lazy-batch updates as float64 WebAssembly GEMMs, [solver.md](solver.md)) in the batched column, against it; its loss ratio is to PyTorch SparseGPT+GPTQ on the same first rows.',
    '- **ratio** = batched full-layer time / reference full-layer time (≤ 0.1 is the 10× target). **loss** = batched loss / reference loss on the same first rows (tr(ΔW H ΔWᵀ), undamped H); over so few rows it is dominated by rounding noise (±3%); the solver\'s accuracy is tested against the exact solver in test/integration/core/admm.test.ts (docs/solver.md).',
    '- The machine is shared (2 cores, other jobs running): the load column is the 1-minute load average when each measurement started; measurements of the same row are back to back, not simultaneous.',
    '',
    '| rows × cols | method | batched s | its | ref rows | exact s (full) | torch s (full) | ratio vs torch | ratio vs exact | SparseGPT+GPTQ s | ratio vs it | loss vs exact | loss vs torch | load |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const r of results) {
    lines.push(
      `| ${r.rows} × ${r.cols} | ${r.method} | ${f(r.batched.seconds)} | ${r.method === 'sparsegpt-gptq' ? '–' : r.batched.iterations.join(' / ')} | ${r.exact?.rowsMeasured ?? r.torch?.rowsMeasured ?? '–'} | ${f(r.exact?.secondsFullLayer)} | ${f(r.torch?.secondsFullLayer)} | ${f(r.timeRatio, 3)} | ${f(r.timeRatioExact, 3)} | ${f(r.torchSparseGptGptq?.seconds)} | ${f(r.timeRatioSparseGpt, 2)} | ${f(r.lossRatioExact, 5)} | ${f(r.lossRatioTorch, 5)} | ${[r.batched.load, r.exact?.load, r.torch?.load].filter((x) => x !== undefined).map((x) => x!.toFixed(1)).join(' / ')} |`,
    );
  }
  lines.push(
    '',
    'The batched solver\'s seconds split into setup (factorizing H + ρI, B = WH) / step 1 / step 2 in bench-results/core.json (`solverSeconds`). The GPU path: WebGPU on an H200 in docs/bench-gpu.md (`--ep webgpu --torch-device cuda`); CUDA, DirectML and CoreML are untested.',
    '',
    'Setup: `apt-get update && apt-get install -y python3-torch libopenblas0-pthread` (Debian 12: PyTorch 1.13 CPU at /usr/bin/python3; OpenBLAS makes its CPU matmuls ~25× faster). Run: `npm run bench:core` (20–30 min on 2 busy cores); `--no-torch` skips PyTorch; `--layers` and `--methods` re-measure a subset (merged into the existing results).',
    '',
  );
  return lines.join('\n');
}

void main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
