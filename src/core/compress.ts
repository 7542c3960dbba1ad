// One linear layer, one recipe: the numerical entry point the pipeline and `obr layer` call.
// Order of operations follows obr-algorithm.md §1.7 exactly:
//   1 scales on the DENSE W (MSE clip search, P2): one symmetric scale per row (the paper), or
//     per group of `groupSize` input columns, optionally asymmetric (issue 15; see quantize.ts)
//   2 dead inputs (H_jj = 0): H_jj := 1, W[:, j] := 0
//   3 damping H + λ·mean(diag H)·I, used for every solve (P6)
//   4 mask  5 compensation  6 final quantization (RTN or masked GPTQ tail)
// Loss terms are reported with the UNDAMPED H (LayerLoss in src/protocol/report.ts).
import { type RecipeName, type Sparsity, validateGroupSize } from '../protocol/recipes';
import type { LayerLoss } from '../protocol/report';
import { type AdmmProblem, type AdmmProgress, type AdmmSettings, type AdmmStats, DEFAULT_ADMM, compensateAdmm } from './admm';
import { type MatrixBackend, jsBackend } from './backend';
import { collectDropped } from './gc';
import { sparseGptInPlaceAsync } from './gptq';
import { type CompensationProblem as CompensationInput, rowKernels } from './kernels';
import { LinAlgError, upperCholeskyOfInverse } from './matrix';
import { magnitudeScores, pruneMask, sparseGptScores, wandaScores } from './mask';
import { DEFAULT_PCG } from './obr';
import { type BatchedPcgSettings, type BatchedPcgStats, DEFAULT_BATCHED_PCG, compensateBatchedPcg } from './pcgBatched';
import { defaultThreads, PARALLEL_MIN_FLOPS, RowPool, runRows, shared } from './parallel';
import { kernelProduct64, upperCholeskyOfInverseInPlace } from './spdInverse';
import { coreMark } from './trace';
import { type GroupGrid, groupCount, groupLayout, quantizeGroups, symmetricGrid } from './quantize';

export interface LayerProblem {
  /** rows×cols row-major, W ∈ R^{out×in} (rows = output channels). */
  weight: Float64Array;
  rows: number;
  cols: number;
  /** cols×cols, symmetric, UNDAMPED; any positive multiple of XXᵀ (e.g. Σ XXᵀ). */
  hessian: Float64Array;
  /** cols; Wanda's per-input-channel mean ‖X_j‖². When absent, diag(H) is used: it is
   *  proportional to the mean energy, and the per-row Wanda ranking is scale-free. */
  channelEnergy?: Float64Array;
}

export type MaskScore = 'wanda' | 'magnitude' | 'sparsegpt';

export interface LayerConfig {
  method: RecipeName;
  sparsity: Sparsity;
  wbits: number;
  /** OBR column split α ∈ [0, 1]: k = ⌊α·cols⌋. */
  alpha: number;
  /** Relative damping λ (0.01). */
  damp: number;
  /** GPTQ lazy-batch width (128). */
  blockSize?: number;
  /** Mask score for wanda-rtn / obr-*; default wanda. */
  mask?: MaskScore;
  /** Input columns per scale group: 0/undefined = one scale per output row (the paper), else 32, 64, 128 or 256. */
  groupSize?: number;
  /** Integer zero point per group (asymmetric grid); default symmetric. */
  asymmetric?: boolean;
}

export interface LayerResult {
  /** Fake-quantized compressed weight, rows×cols; pruned entries exactly 0. */
  weight: Float64Array;
  /** Scales fitted once on the dense W (P2): rows×groups row-major, groups = ⌈cols/groupSize⌉
   *  (1 per row when groupSize is 0). */
  scales: Float64Array;
  /** Signed integer zero points (same layout), present iff the grid is asymmetric. */
  zeros?: Float64Array;
  /** Columns per group; 0 = one scale per row. */
  groupSize: number;
  /** rows×cols signed codes in [−2^(b−1), 2^(b−1)−1]; weight = scale·(code − zero) with the
   *  entry's group (zero = 0 when symmetric). Pruned entries have code = zero (value 0). */
  codes: Int8Array;
  /** rows×cols, 1 = kept. */
  mask: Uint8Array;
  stats: { loss: LayerLoss; sparsity: number; codeHistogram: number[]; seconds: number };
}

export interface CompressOptionsCore {
  signal?: AbortSignal;
  /** Worker threads for the per-row compensation (default: min(2, cpus)); 1 = this thread. */
  threads?: number;
  backend?: MatrixBackend;
  /**
   * OBR compensation solver: 'batched' (ADMM over all rows at once on the backend's float32
   * products, ./admm.ts), 'exact' (= 'direct': one Cholesky per row, float64), 'pcg' (per-row
   * CG), 'pcg-batched' (the earlier batched PCG experiment). Default: 'batched' when the backend
   * has fast products (matmulF32, e.g. onnxruntime), else 'exact'.
   */
  solver?: OBRSolver;
  /** 'batched' only: ADMM settings, the per-iteration progress, and the final statistics. */
  admm?: Partial<AdmmSettings>;
  onSolverIteration?: (progress: AdmmProgress) => void;
  onAdmmStats?: (stats: AdmmStats) => void;
  /** 'pcg-batched' only: settings, and a callback receiving the solver statistics. */
  batchedPcg?: Partial<BatchedPcgSettings>;
  onSolverStats?: (stats: BatchedPcgStats) => void;
  /** Skip the four loss quadratic forms (bench timing); loss fields are then NaN. `stats.seconds`
   *  never includes them. */
  skipLoss?: boolean;
  /**
   * Where the loss terms run: true = on the backend's float64 product (when it has one), false = in
   * the kernels; default by the layer's own size (BACKEND_LOSS_MIN_WORK). The pre-flight probe
   * times a few rows of a big layer and sets it to what the whole layer will use, so that its
   * per-row slope is the job's.
   */
  lossOnBackend?: boolean;
}

export type OBRSolver = 'batched' | 'exact' | 'direct' | 'pcg' | 'auto' | 'pcg-batched';

/** The solver compressLayer uses for these options (see CompressOptionsCore.solver). */
export function resolveSolver(options: Pick<CompressOptionsCore, 'solver' | 'backend'>): 'batched' | 'direct' | 'pcg' | 'pcg-batched' {
  const s = options.solver ?? (options.backend?.matmulF32 ? 'batched' : 'exact');
  return s === 'exact' || s === 'auto' ? 'direct' : s;
}

const EMPTY = new Float64Array(0);

export class InputError extends Error {
  override name = 'InputError';
}

function validate(problem: LayerProblem, config: LayerConfig): void {
  const { rows, cols, weight, hessian } = problem;
  if (!(Number.isInteger(rows) && rows > 0 && Number.isInteger(cols) && cols > 0)) throw new InputError(`layer shape must be positive integers, got ${rows}×${cols}`);
  if (weight.length !== rows * cols) throw new InputError(`weight has ${weight.length} values, expected ${rows}×${cols}`);
  if (hessian.length !== cols * cols) throw new InputError(`hessian has ${hessian.length} values, expected ${cols}×${cols} (cols of W)`);
  if (problem.channelEnergy && problem.channelEnergy.length !== cols) throw new InputError(`channel energy has ${problem.channelEnergy.length} values, expected ${cols}`);
  for (let i = 0; i < weight.length; i++) if (!Number.isFinite(weight[i])) throw new InputError(`weight has a NaN or infinite value at flat index ${i}`);
  for (let i = 0; i < hessian.length; i++) if (!Number.isFinite(hessian[i])) throw new InputError(`hessian has a NaN or infinite value at flat index ${i}`);
  if (!(Number.isInteger(config.wbits) && config.wbits >= 2 && config.wbits <= 8)) throw new InputError(`wbits must be an integer in 2..8, got ${config.wbits}`);
  if (!(config.alpha >= 0 && config.alpha <= 1)) throw new InputError(`alpha must be in [0, 1], got ${config.alpha}`);
  if (!(config.damp >= 0 && Number.isFinite(config.damp))) throw new InputError(`damp must be ≥ 0, got ${config.damp}`);
  // Core also accepts any positive group size (a last partial group is fine); the product's
  // sizes are checked here so every caller refuses the same values with the same message.
  validateGroupSize(config.groupSize ?? 0, cols);
}

/** tr(D H Dᵀ) for D = A − B (rows×cols; B = null means zeros), H symmetric (the kernels' quadratic form). */
export function layerLossBetween(a: Float64Array, b: Float64Array | null, rows: number, cols: number, h: Float64Array): number {
  return rowKernels.quadraticFormSum(a, b, rows, cols, h);
}

/** Layers with at least this many multiply-adds per quadratic form (rows·cols²) take it on the
 *  backend's float64 product when it has one; smaller ones stay in the kernels (bit for bit as before). */
export const BACKEND_LOSS_MIN_WORK = 2 ** 29;

/** Rows of D per backend product: D's chunk and its product D·H each stay under 32 MiB. */
function lossChunkRows(cols: number): number {
  return Math.max(1, Math.floor((32 * 2 ** 20) / (8 * cols)));
}

/**
 * layerLossBetween on the backend's float64 product (multi-threaded DGEMM: 5–13× the single-thread
 * kernel at 2048–5632 columns) for big layers: tr(D H Dᵀ) = Σ_r d_r·(d_r H), D in row chunks.
 * The four loss terms of a 2048 × 5632 layer took minutes in the kernel (4·2·rows·cols² flops at
 * ~1 GFLOP/s), more than the OBR solve itself. Same value to float64 round-off (the sums' order
 * differs). Falls back to the kernel without a backend product or below BACKEND_LOSS_MIN_WORK
 * (`onBackend` overrides the size rule).
 */
export async function layerLossOn(backend: MatrixBackend | undefined, a: Float64Array, b: Float64Array | null, rows: number, cols: number, h: Float64Array, signal?: AbortSignal, onBackend?: boolean): Promise<number> {
  const mm = backend?.matmulF64;
  if (!mm || !(onBackend ?? rows * cols * cols >= BACKEND_LOSS_MIN_WORK)) return layerLossBetween(a, b, rows, cols, h);
  const chunk = Math.min(rows, lossChunkRows(cols));
  const d = new Float64Array(chunk * cols);
  let total = 0;
  for (let r0 = 0; r0 < rows; r0 += chunk) {
    signal?.throwIfAborted();
    const nb = Math.min(chunk, rows - r0);
    const o = r0 * cols;
    const len = nb * cols;
    if (b) for (let i = 0; i < len; i++) d[i] = a[o + i] - b[o + i];
    else d.set(a.subarray(o, o + len));
    const y = await mm.call(backend, d.subarray(0, len), h, nb, cols, cols);
    for (let i = 0; i < len; i++) total += d[i] * y[i];
  }
  return total;
}

/** Rough flops of a method's row work, to decide whether worker threads pay off. */
function rowWorkFlops(method: RecipeName, rows: number, cols: number): number {
  const scales = rows * cols * 80 * 8;
  if (method === 'obr-rtn' || method === 'obr-gptq') return scales + (rows * (cols / 2) ** 3) / 3 + 2 * rows * cols * cols;
  if (method === 'gptq') return scales + 2 * rows * cols * cols;
  return scales;
}

export async function compressLayer(problem: LayerProblem, config: LayerConfig, options: CompressOptionsCore = {}): Promise<LayerResult> {
  validate(problem, config);
  const started = performance.now();
  const { rows, cols } = problem;
  const backend = options.backend ?? jsBackend;
  const signal = options.signal;
  const bits = config.wbits;
  const { maxq } = symmetricGrid(bits);
  const bs = config.blockSize ?? 128;
  const groupSize = config.groupSize ?? 0;
  const groups = groupCount(cols, groupSize);
  signal?.throwIfAborted();

  const threads = Math.max(1, Math.floor(options.threads ?? defaultThreads()));
  const parallel = threads > 1 && rows > 1 && (options.threads !== undefined || rowWorkFlops(config.method, rows, cols) >= PARALLEL_MIN_FLOPS);
  const pool = parallel ? RowPool.acquire(threads) : null;
  // Arrays a worker reads or writes live in SharedArrayBuffers when a pool is used.
  const f64 = (n: number): Float64Array => (pool ? shared.f64(n) : new Float64Array(n));
  const copy = (a: Float64Array): Float64Array => (pool ? shared.copy(a) : a.slice());
  try {
    // 1. Scales (and zero points) on the dense W (P2), per row or per group, row-parallel.
    // `let`: dropped (set to EMPTY) before finish, which holds its own copies.
    let dense = pool ? shared.copy(problem.weight) : problem.weight;
    const scales = f64(rows * groups);
    const zeros = config.asymmetric ? f64(rows * groups) : undefined;
    await runRows(pool, { kind: 'scales', weight: dense, cols, maxq, norm: 2.4, grid: 100, steps: 80, scales, groupSize, zeros: zeros ?? null }, rows, signal);
    const grid: GroupGrid = zeros ? { scales, zeros, groupSize } : { scales, groupSize };

    // 2. Dead inputs, 3. damping. The damped H is built only for the recipes that solve with it
    //    (not rtn / wanda-rtn), as ONE copy of the caller's H (in a SharedArrayBuffer when workers
    //    read it): for a 5632-column layer each n×n float64 copy is 254 MB. The caller's H stays
    //    undamped for the loss terms.
    const dead: number[] = [];
    for (let j = 0; j < cols; j++) if (problem.hessian[j * cols + j] === 0) dead.push(j);
    // The working W: its own copy only when something writes to it (dead inputs; GPTQ and
    // SparseGPT update it in place). Every other recipe only reads it: the dense W serves.
    let w = dead.length > 0 || config.method === 'gptq' || config.method === 'sparsegpt-gptq' ? copy(problem.weight) : dense;
    for (const j of dead) for (let r = 0; r < rows; r++) w[r * cols + j] = 0;
    /** H with dead diagonal entries := 1 (H₀ of §1.7), in `into` (a fresh copy by default). */
    const fixedHessian = (into: Float64Array = new Float64Array(cols * cols)): Float64Array => {
      into.set(problem.hessian);
      for (const j of dead) into[j * cols + j] = 1;
      return into;
    };
    /** H₀ + λ·mean(diag H₀)·I, in place (the same sums and order as dampHessian). */
    const dampInPlace = (h: Float64Array, lambda: number): Float64Array => {
      let mean = 0;
      for (let i = 0; i < cols; i++) mean += h[i * cols + i];
      mean /= Math.max(1, cols);
      const add = lambda * mean;
      for (let i = 0; i < cols; i++) h[i * cols + i] += add;
      return h;
    };
    let hdCache: Float64Array | null = null;
    /** Runs a factorization and hands the kernels' grown scratch memory back (2·n² float64 for n×n). */
    const factored = <T>(f: () => T): T => {
      try {
        return f();
      } finally {
        rowKernels.trim();
      }
    };
    const getHd = (): Float64Array => (hdCache ??= dampInPlace(fixedHessian(f64(cols * cols)), config.damp));
    /** The damped H's diagonal alone (H₀'s diagonal + λ·mean(diag H₀), the same sums and order as
     *  dampInPlace): off the diagonal the damped H is the caller's H, so the batched solver and the
     *  tail's factor read those entries there instead of from an n×n copy. */
    const dampedDiagonal = (): Float64Array => {
      const g = new Float64Array(cols);
      for (let j = 0; j < cols; j++) g[j] = problem.hessian[j * cols + j];
      for (const j of dead) g[j] = 1;
      let mean = 0;
      for (let i = 0; i < cols; i++) mean += g[i];
      mean /= Math.max(1, cols);
      const add = config.damp * mean;
      for (let i = 0; i < cols; i++) g[i] += add;
      return g;
    };

    const prunes = config.method !== 'rtn' && config.method !== 'gptq' && config.sparsity.kind !== 'dense';
    const codes = pool ? shared.i8(rows * cols) : new Int8Array(rows * cols);
    let mask: Uint8Array;
    let out: Float64Array;
    let upper: Float64Array | null = null;
    const getUpper = (): Float64Array => (upper ??= pool ? shared.copy(upperCholeskyOfInverse(getHd(), cols)) : upperCholeskyOfInverse(getHd(), cols));
    // OBR_GPTQ's tail reads U[k:, k:] only: factor just that block (≈ 1/8 of the work at α = ½),
    // from the damped H's trailing block alone. U[k:, k:] of U = chol(H⁻¹) (upper) is the factor
    // of (H[k:, k:])⁻¹, and upperCholeskyOfInverse(block, m) factors the same numbers in the same
    // order as upperCholeskyOfInverse(H, n, k): the same bits, without the damped n×n H.
    // The tail runs as a compact rows × m problem on this m×m U[k:, k:] when the group grid allows
    // (gptqTail); otherwise U is placed in an n×n array (getTailUpper).
    let tailUpper: Float64Array | null = null;
    let tailBlock: Float64Array | null = null;
    const getTailBlock = (k: number): Float64Array => {
      if (tailBlock) return tailBlock;
      const m = cols - k;
      const g = dampedDiagonal();
      let block: Float64Array | null = new Float64Array(m * m);
      for (let i = 0; i < m; i++) {
        block.set(problem.hessian.subarray((k + i) * cols + k, (k + i + 1) * cols), i * m);
        block[i * m + i] = g[k + i];
      }
      const uc = upperCholeskyOfInverse(block, m);
      block = null;
      return (tailBlock = pool ? shared.copy(uc) : uc);
    };
    /**
     * getTailBlock's U[k:, k:] for the batched solver's path, where nothing runs beside it: made in
     * place in one packed triangle by block columns on the backend's float64 products
     * (./spdInverse.ts), reading the damped H's trailing block entry by entry. The kernels'
     * factorization above holds the block, its dense factor, the 2·m² inverse region and their
     * copies at once (≈ 6·m²·8, 380 MB at m = 2816); this ≈ m²·4 + m²·8 for U (written as the
     * triangle is handed back) and a block step's operands. The same U to float64 round-off.
     */
    const getTailBlockInPlace = async (k: number): Promise<Float64Array> => {
      if (tailBlock) return tailBlock;
      const m = cols - k;
      const g = dampedDiagonal();
      const h = problem.hessian;
      const mm64 = backend.matmulF64 ? backend.matmulF64.bind(backend) : kernelProduct64;
      const uc = await upperCholeskyOfInverseInPlace((i, j) => (i === j ? g[k + i] : h[(k + i) * cols + k + j]), m, mm64, f64(m * m));
      if (!uc) throw new LinAlgError(`matrix (${m}×${m}) is not positive definite`);
      return (tailBlock = uc);
    };
    const tailFactor = (k: number): Float64Array => {
      const m = cols - k;
      const uc = getTailBlock(k);
      const u = f64(cols * cols);
      for (let i = 0; i < m; i++) u.set(uc.subarray(i * m + i, (i + 1) * m), (k + i) * cols + k + i);
      return u;
    };
    /** The tail as a compact problem: without a full factor (sparsegpt mask scores) and when
     *  every group lies on one side of k. */
    const compactTail = (k: number): boolean => !upper && (groupSize === 0 || k % groupSize === 0);
    const getTailUpper = (k: number): Float64Array => (tailUpper ??= upper ?? tailFactor(k));

    /**
     * OBR_GPTQ's masked GPTQ tail (P10) on columns [k, n) of `out`, as a compact rows × m problem
     * (m = n − k) with the m×m U[k:, k:]: the GPTQ kernel reads only those columns and that block,
     * with block boundaries from the tail's first column and each column's own group (k is a
     * multiple of the group size), so these are the same operations on the same numbers as the
     * tail run in place with start = k, while each worker's kernel memory holds m² for U instead
     * of n² (2 × 190 MB less at 5632 columns).
     */
    const gptqTail = async (k: number, uc: Float64Array): Promise<void> => {
      const m = cols - k;
      const { groups } = groupLayout(cols, groupSize);
      const g0 = groupSize === 0 ? 0 : k / groupSize;
      const gt = groups - g0;
      const wt = f64(rows * m);
      const mt = pool ? shared.u8(rows * m) : new Uint8Array(rows * m);
      const ct = pool ? shared.i8(rows * m) : new Int8Array(rows * m);
      const st = f64(rows * gt);
      const zt = zeros ? f64(rows * gt) : null;
      for (let r = 0; r < rows; r++) {
        const o = r * cols + k;
        wt.set(out.subarray(o, o + m), r * m);
        mt.set(mask.subarray(o, o + m), r * m);
        ct.set(codes.subarray(o, o + m), r * m);
        st.set(scales.subarray(r * groups + g0, (r + 1) * groups), r * gt);
        if (zt && zeros) zt.set(zeros.subarray(r * groups + g0, (r + 1) * groups), r * gt);
      }
      await runRows(pool, { kind: 'gptq', weight: wt, cols: m, u: uc, scales: st, maxq, mask: mt, start: 0, blockSize: bs, codes: ct, groupSize, zeros: zt }, rows, signal);
      for (let r = 0; r < rows; r++) {
        out.set(wt.subarray(r * m, (r + 1) * m), r * cols + k);
        codes.set(ct.subarray(r * m, (r + 1) * m), r * cols + k);
      }
      tailBlock = null;
    };

    const maskFor = (): Uint8Array => {
      const m = pool ? shared.u8(rows * cols) : new Uint8Array(rows * cols);
      if (!prunes) return m.fill(1);
      const kind = config.mask ?? 'wanda';
      let scores: Float64Array;
      if (kind === 'magnitude') scores = magnitudeScores(w);
      else if (kind === 'sparsegpt') scores = sparseGptScores(w, rows, cols, getUpper());
      else {
        let energy = problem.channelEnergy;
        if (!energy) {
          energy = new Float64Array(cols);
          for (let j = 0; j < cols; j++) energy[j] = problem.hessian[j * cols + j];
        }
        scores = wandaScores(w, rows, cols, energy);
      }
      m.set(pruneMask(scores, rows, cols, config.sparsity));
      return m;
    };

    switch (config.method) {
      case 'rtn': {
        mask = maskFor();
        out = quantizeGroups(w, rows, cols, grid, bits, codes);
        break;
      }
      case 'wanda-rtn': {
        mask = maskFor();
        const wp = w.slice();
        for (let i = 0; i < wp.length; i++) if (!mask[i]) wp[i] = 0;
        out = quantizeGroups(wp, rows, cols, grid, bits, codes);
        break;
      }
      case 'gptq': {
        mask = maskFor();
        out = w;
        const u = factored(getUpper);
        hdCache = null;
        await runRows(pool, { kind: 'gptq', weight: out, cols, u, scales, maxq, mask: null, start: 0, blockSize: bs, codes, groupSize, zeros: zeros ?? null }, rows, signal);
        break;
      }
      case 'sparsegpt-gptq': {
        // P15: damp 0.01 with a 0.1 fallback when the factorization fails.
        try {
          getUpper();
        } catch (e) {
          if (!(e instanceof LinAlgError)) throw e;
          upper = upperCholeskyOfInverse(dampInPlace(fixedHessian(), Math.max(0.1, config.damp)), cols);
        }
        out = w;
        mask = await sparseGptInPlaceAsync(out, rows, cols, getUpper(), scales, bits, config.sparsity, { codes, blockSize: bs, groupSize, zeros, signal });
        break;
      }
      case 'obr-rtn':
      case 'obr-gptq': {
        mask = maskFor();
        const k = Math.floor(config.alpha * cols + 1e-9);
        const solver = resolveSolver(options);
        // W_c in a SharedArrayBuffer only when workers read or write it (the per-row solvers, the
        // in-place GPTQ tail); else a plain array, which finish keeps without another copy.
        const workersTouchResult = solver !== 'batched' || (config.method === 'obr-gptq' && k < cols && !compactTail(k));
        const wc = workersTouchResult ? f64(rows * cols) : new Float64Array(rows * cols);
        // The batched solver reads the caller's H with the damped diagonal (no damped n×n copy,
        // 254 MB at 5632 columns); the per-row solvers get the damped copy.
        const batched = solver === 'batched';
        // The batched solver (this thread) reads the caller's W when the working W is only its
        // shared copy (no dead inputs): the copy and the mask's scores then go before its
        // factorization, the core's largest moment.
        const solverWeight = batched && dead.length === 0 ? problem.weight : w;
        if (batched && dead.length === 0) {
          dense = w = EMPTY;
          collectDropped(rows * cols * 16);
        }
        const common = { weight: solverWeight, rows, cols, mask, scales, groupSize, ...(zeros ? { zeros } : {}), bits, splitCol: k };
        let cproblem: CompensationInput | null = batched ? { ...common, hessian: problem.hessian, diagonal: dampedDiagonal() } as AdmmProblem : { ...common, hessian: getHd() };
        const compensation = batched
          ? compensateAdmm(cproblem, backend, { ...DEFAULT_ADMM, ...options.admm }, signal, wc, options.onSolverIteration).then((r) => options.onAdmmStats?.(r.stats))
          : solver === 'pcg-batched'
            ? compensateBatchedPcg(cproblem, backend, { ...DEFAULT_BATCHED_PCG, ...options.batchedPcg }, signal, wc).then((r) => options.onSolverStats?.(r.stats))
            : runRows(pool, { kind: 'compensate', problem: cproblem, out: wc, solver, pcg: DEFAULT_PCG }, rows, signal);
        // While the workers compensate, this thread factors H⁻¹ for the GPTQ tail. Not beside the
        // batched solver: it runs on this thread too, and the tail's factor would be held beside
        // the solver's largest moment (its factorization) for no time gained.
        const tailFactorNow = (): unknown => factored(() => (compactTail(k) ? getTailBlock(k) : getTailUpper(k)));
        if (pool && !batched && config.method === 'obr-gptq' && k < cols) tailFactorNow();
        await compensation;
        cproblem = null;
        // The solver's buffers (its last step's state and inverse) go before the tail allocates.
        if (batched) collectDropped(cols * cols * 2 + rows * cols * 40);
        if (config.method === 'obr-gptq' && k < cols) {
          if (batched && compactTail(k)) {
            await getTailBlockInPlace(k);
            coreMark(`tail factor ${cols - k}`);
          }
          else tailFactorNow();
        }
        // Nothing reads the damped H after the compensation and the tail's factor.
        hdCache = null;
        if (config.method === 'obr-rtn') {
          out = quantizeGroups(wc, rows, cols, grid, bits, codes);
        } else {
          // Columns [0, k): RTN of W_c on the same grid (E2 values are exactly the rounded ones
          // that were compensated, §7.7); columns [k, n): masked GPTQ tail from W_c (P10) with the
          // static group grid (gptq.ts).
          out = wc;
          rowKernels.quantizeRange(wc, out, codes, cols, scales, maxq, 0, k, 0, rows, groupSize, zeros ?? null);
          if (k < cols && compactTail(k)) {
            await gptqTail(k, getTailBlock(k));
            collectDropped((cols - k) * (cols - k) * 8 + rows * (cols - k) * 10);
          }
          else if (k < cols) {
            await runRows(pool, { kind: 'gptq', weight: out, cols, u: getTailUpper(k), scales, maxq, mask, start: k, blockSize: bs, codes, groupSize, zeros: zeros ?? null }, rows, signal);
          }
        }
        break;
      }
      default: {
        const never: never = config.method;
        throw new InputError(`unknown method ${String(never)}`);
      }
    }
    // The dense and working copies are not read after this (finish reads the caller's weight).
    dense = w = EMPTY;
    return await finish(problem, config, options, { out, codes, mask, grid, prunes, started });
  } finally {
    await pool?.release();
    // This thread's kernels may have grown to a large layer's size (H⁻¹ factor, loss terms).
    rowKernels.trim();
  }
}

async function finish(
  problem: LayerProblem,
  config: LayerConfig,
  options: CompressOptionsCore,
  r: { out: Float64Array; codes: Int8Array; mask: Uint8Array; grid: GroupGrid; prunes: boolean; started: number },
): Promise<LayerResult> {
  const { rows, cols } = problem;
  const { prunes, started } = r;
  // Results leave as ordinary arrays, not views on the workers' SharedArrayBuffers.
  const own = <T extends Float64Array | Int8Array | Uint8Array>(a: T): T => (a.buffer instanceof SharedArrayBuffer ? (a.slice() as T) : a);
  const out = own(r.out);
  const codes = own(r.codes);
  const mask = own(r.mask);
  const grid: GroupGrid = { scales: own(r.grid.scales), groupSize: r.grid.groupSize, ...(r.grid.zeros ? { zeros: own(r.grid.zeros) } : {}) };
  const { scales, zeros: zeroPoints, groupSize } = grid;
  const bits = config.wbits;
  const { maxq } = symmetricGrid(bits);
  const signal = options.signal;
  // Pruned entries are exactly 0 (GPTQ forces them; RTN of a pruned 0 gives code = zero), but
  // make the code array agree for every recipe: code = the group's zero point (0 if symmetric).
  const { gs, groups } = groupLayout(cols, groupSize);
  for (let i = 0; i < out.length; i++) if (!mask[i]) {
    out[i] = 0;
    codes[i] = zeroPoints ? zeroPoints[Math.floor(i / cols) * groups + Math.floor((i % cols) / gs)] : 0;
  }
  signal?.throwIfAborted();

  let zeros = 0;
  const histogram = new Array<number>(2 ** bits).fill(0);
  for (let i = 0; i < out.length; i++) {
    if (out[i] === 0) zeros++;
    if (mask[i]) histogram[codes[i] + maxq + 1]++;
  }

  const seconds = (performance.now() - started) / 1000;
  let loss: LayerLoss;
  if (options.skipLoss) {
    loss = { total: NaN, pruning: NaN, quantization: NaN, recovered: NaN, outputEnergy: NaN };
  } else {
    const h = problem.hessian;
    const W = problem.weight;
    const be = options.backend;
    const route = options.lossOnBackend;
    const total = await layerLossOn(be, out, W, rows, cols, h, signal, route);
    // One rows×cols scratch for both terms: the pruned entries, then the RTN of the dense W.
    const scratch = new Float64Array(rows * cols);
    let pruning = 0;
    if (prunes) {
      for (let i = 0; i < scratch.length; i++) if (!mask[i]) scratch[i] = W[i];
      pruning = await layerLossOn(be, scratch, null, rows, cols, h, signal, route);
    }
    // RTN of the dense W on the layer's grid (per group, with zero points when asymmetric).
    rowKernels.quantizeRange(W, scratch, null, cols, scales, maxq, 0, cols, 0, rows, groupSize, zeroPoints ?? null);
    const quantization = await layerLossOn(be, scratch, W, rows, cols, h, signal, route);
    const outputEnergy = await layerLossOn(be, W, null, rows, cols, h, signal, route);
    loss = { total, pruning, quantization, recovered: pruning + quantization - total, outputEnergy };
  }
  return {
    weight: out,
    scales,
    ...(zeroPoints ? { zeros: zeroPoints } : {}),
    groupSize,
    codes,
    mask,
    stats: { loss, sparsity: zeros / out.length, codeHistogram: histogram, seconds },
  };
}
