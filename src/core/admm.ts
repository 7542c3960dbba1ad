// OBR's two compensation steps (obr-algorithm.md §2.3–2.4) for ALL rows of a layer at once, by
// ADMM with one factorization shared by every row (Boža, "Fast and Effective Weight Update for
// Pruned Large Language Models", TMLR 2024). Both steps are masked least squares
//   min_X tr((X − W) H (X − W)ᵀ)  s.t.  X = 0 off a per-row support S, X fixed on a per-row set F,
// whose row problems share H (the damped H of P6). With the splitting X = Z, Z supported on S,
// and a scaled dual U:
//   X ← (B + ρ(Z − U)) (H + ρI)⁻¹        one rows×n by n×n product (B = the rows' right sides)
//   Z ← (X̂ + U) ⊙ S,  U ← U + X̂ − Z      (X̂ = λX + (1 − λ)Z: over-relaxation)
// (H + ρI)⁻¹ is made once per layer and step (./spdInverse.ts: blocked Cholesky and triangular
// inverse in place, their products in float64 on the backend, then L⁻ᵀL⁻¹ in float32); every
// iteration's product runs on MatrixBackend.matmulF32
// (onnxruntime on the job's execution provider, src/runtime/ortBackend.ts), float32, while Z, U
// and all sums stay float64. Between two products, one pass per row does the iteration's
// elementwise work (T(V), residual, loss, Anderson history and mixing, the next left operand) in
// a WebAssembly SIMD kernel (admmRows in src/core/wasm/assembly; iterateRows is its JavaScript
// twin, bit for bit): the JavaScript passes it replaces took twice as long as the product at
// 2048 columns. Z is exactly 0 off S, so pruned entries are exact zeros.
//
//   step 1 (pruning):   S = kept set M, B = W H.
//   step 2 (transfer):  only the columns c ≥ k of the α split: S = M[:, k:] (= R2), the
//                       columns < k fixed at X1 = Q(w̄) on E2 and 0 on E1, so
//                       X2 H22 = W2 H22 − (X1 − W1) H12 = (W H)[:, k:] − X1 H12 on R2.
//                       Its minimizer is the exact joint minimizer over R2 given the E2 rounding
//                       (§2.4 "exactness facts"), so this step also removes what is left of step
//                       1's error on R2; it is warm-started from step 1's Z and costs a quarter.
//
// Both steps run in Jacobi-scaled variables (X̃ = X D, H̃ = D⁻¹HD⁻¹, D = diag(H)^½), so outlier
// input channels do not dominate ρ or the float32 error, and each row's iterates are mixed by
// Anderson acceleration (memory 3) of the ADMM fixed-point map (admmStep).
// Warm start: step 1 from Z₀ = W ⊙ M, step 2 from step 1's Z; U₀ = 0 (a dual started from the
// gradient overshoots badly in the first iterations). Stopping rule on the layer loss, evaluated
// at X without a product (X H − B = ρ(V − X)): the loss still to gain is extrapolated from
// the last two relative changes and must be ≤ lossTol twice in a row, and the fixed-point
// residual must be down to residualTol1/2 of the first (see AdmmSettings). ρ: autoRho.
//
// Memory: O(n² + rows·n): the float32 inverse (n²·4; while it is made, one packed float64 triangle
// of n(n+1)/2 entries and a block step's operands, before any rows×n array exists) and a handful
// of rows×n arrays. H̃ is read entry by entry from the
// caller's H (no n×n copy; compressLayer passes its undamped H with the damped diagonal). The
// iteration state (≈ 80 bytes per entry, in the step's kernel instance, freed with it) is bounded
// by solving the rows in blocks of at most ADMM_STATE_BYTES (256 MiB) of state.
import type { MatrixBackend } from './backend';
import { collectDropped } from './gc';
import type { CompensationProblem } from './kernels';
import { rowKernels } from './kernels';
import { LinAlgError, gemmAccumulate } from './matrix';
import { coreMark } from './trace';
import type { MatMul64 } from './spdInverse';
import { choleskyInPlace, invertLowerInPlace, inverseF32, kernelProduct64, PackedLower } from './spdInverse';
import { groupCode, groupLayout, symmetricCode } from './quantize';
import { KERNELS_WASM_BASE64 } from './wasm/kernelsWasm';

export interface AdmmSettings {
  /** ρ relative to the median diagonal of the step's (damped) Hessian block; 'auto' picks it from
   *  the spread of the block's spectrum (autoRho). */
  rho: number | 'auto';
  /** Over-relaxation λ ∈ [1, 2) (1 = plain ADMM). */
  relax: number;
  /** Stop a step when the loss still to gain, extrapolated from the last two changes, is
   *  ≤ lossTol·L (after minIter). */
  lossTol: number;
  minIter: number;
  maxIter: number;
  /** Step 2 limits (the step is a quarter of the cost, and its accuracy decides the rounding). */
  lossTol2: number;
  maxIter2: number;
  /** Step 2 also waits for its residual ‖(XH − B)_S‖ to fall to this fraction of the first
   *  iteration's: OBR_GPTQ's tail moves R2 by the rounding errors, which meet any residual left
   *  there to first order (cross term 2⟨δ, g⟩), so the residual, not only the loss, must be small. */
  residualTol2: number;
  /** Solve in Jacobi-scaled variables (unit diagonal H). */
  scale: boolean;
  /** Anderson acceleration memory (0 = plain ADMM). */
  anderson: number;
  /** Step 1 also waits for its fixed-point residual to fall to this fraction of the first. */
  residualTol1: number;
  /** Run the iterations' elementwise work in the WebAssembly kernel (admmRows) when it loads;
   *  false: the JavaScript twin (iterateRows; the same bits, slower). Default true. */
  wasm?: boolean;
  /** Bytes of iteration state (≈ 80 per entry of the rows × columns solved at once) above which
   *  the rows are solved in blocks, one after another (default ADMM_STATE_BYTES). */
  stateBytes?: number;
}

/** Iteration state held at once (the rows are solved in blocks beyond it): 256 MiB. A layer of
 *  2048 rows × 5632 columns is solved in four blocks of 512 rows (230 MB of state, not two of
 *  1024 rows and 461 MB); each block's products (512 × 5632 · 5632 × 5632) stay large enough for
 *  SGEMM's full speed. */
export const ADMM_STATE_BYTES = 256 * 2 ** 20;
/** Upper bound of the state per entry: V, B, T, T(V), F (float64), c, two X, the gradient, six
 *  history columns (float32) and the support (admmWorkspace). */
export const STATE_BYTES_PER_ENTRY = 80;

/** Rows solved at once (the row blocks' size) for a rows × cols layer: the state of one block
 *  (STATE_BYTES_PER_ENTRY per entry) stays within stateBytes, the blocks as even as possible. */
export function admmBlockRows(rows: number, cols: number, stateBytes: number = ADMM_STATE_BYTES): number {
  const maxRows = Math.max(1, Math.floor(stateBytes / (STATE_BYTES_PER_ENTRY * cols)));
  return Math.ceil(rows / Math.ceil(rows / maxRows));
}

export const DEFAULT_ADMM: AdmmSettings = { rho: 'auto', relax: 1.5, lossTol: 1e-5, minIter: 8, maxIter: 80, lossTol2: 1e-5, maxIter2: 80, residualTol2: 1e-4, scale: true, anderson: 3, residualTol1: 5e-4 };

/**
 * ρ / median(diag H) for the block H[c0:, c0:], from the spread of its correlation matrix
 * H̃ = D⁻¹ᐟ² H D⁻¹ᐟ² (unit diagonal): s = ‖H̃‖²_F / m = Σλ̃²/m (1 when the inputs are
 * uncorrelated, large when a few directions dominate): ρ_rel = 2/s, clamped to [0.02, 0.5].
 * Fitted on the bundled model's layers (s ≈ 4–9, best ρ 0.2–0.5 × the mean diagonal) and on
 * strongly correlated synthetic layers (s ≈ 25–45, best ≈ 0.05 × mean = 0.1 × median), where a
 * fixed ρ costs 2–3× the iterations on the other kind. Scaled by the median rather than the mean
 * diagonal so that a few outlier input channels do not inflate ρ. O(m²).
 */
export function autoRho(h: Float64Array, n: number, c0 = 0): number {
  const diag = new Float64Array(n);
  for (let j = 0; j < n; j++) diag[j] = h[j * n + j]!;
  return autoRhoOf({ n, diag, at: (i, j) => h[i * n + j]! }, c0);
}

function autoRhoOf(h: SolverHessian, c0: number): number {
  const { n, diag } = h;
  const m = n - c0;
  let frob = 0;
  for (let i = c0; i < n; i++) {
    const di = diag[i]!;
    for (let j = c0; j < n; j++) {
      const v = h.at(i, j);
      frob += (v * v) / (di * diag[j]!);
    }
  }
  const spread = m > 0 && frob > 0 ? frob / m : 1;
  return Math.min(0.5, Math.max(0.06, 2 / spread));
}

/** Median of diag[c0:] (a Hessian's diagonal). */
export function medianDiagonal(diag: Float64Array, c0 = 0): number {
  const d = diag.slice(c0);
  d.sort();
  const m = d.length;
  return m === 0 ? 0 : m % 2 ? d[(m - 1) / 2]! : (d[m / 2 - 1]! + d[m / 2]!) / 2;
}

export interface AdmmProgress {
  step: 1 | 2;
  iteration: number;
  /** Relative change of the loss estimate in this iteration. */
  change: number;
  /** ‖(X H − B) on the support‖ relative to the first iteration's. */
  residual: number;
}

export interface AdmmStats {
  /** ADMM iterations of steps 1 and 2 (the most any row block needed). */
  iterations: [number, number];
  /** Seconds: setup (factorizations, right sides), step 1, step 2. */
  seconds: [number, number, number];
  /** Extrapolated relative loss still to gain when each step stopped (what the rule saw). */
  lastChange: [number, number];
}

/** Anderson memory the fused iteration supports (settings.anderson is clamped to it). */
const MAX_ANDERSON = 3;

type MatMul = (a: Float32Array, b: Float32Array, m: number, k: number, n: number) => Promise<Float32Array>;

/** The backend's float32 product, or a plain-JS float64-accumulating one when it has none. */
export function backendProduct(backend: MatrixBackend): MatMul {
  if (backend.matmulF32) return backend.matmulF32.bind(backend);
  return (a, b, m, k, n) => {
    const c = new Float64Array(m * n);
    gemmAccumulate(Float64Array.from(a.subarray(0, m * k)), Float64Array.from(b.subarray(0, k * n)), c, m, k, n);
    return Promise.resolve(Float32Array.from(c));
  };
}

/**
 * The Hessian the solver works with, entry by entry, without an n×n copy of its own: H̃ = D⁻¹HD⁻¹
 * (Jacobi scaling; D = 1 unscaled) of the caller's H with its diagonal replaced by `diagonal`
 * (the damped one; off-diagonal entries are H's). Each entry is the same expression the solver
 * used to store (H_ij / (d_i·d_j)), so the numbers are the same to the bit; a 5632-column layer
 * no longer holds two extra n×n float64 copies (254 MB each) for it.
 */
interface SolverHessian {
  n: number;
  /** H̃'s diagonal. */
  diag: Float64Array;
  /** H̃[i, j]. */
  at(i: number, j: number): number;
}

function solverHessian(h: Float64Array, n: number, diagonal: Float64Array, d: Float64Array): SolverHessian {
  const diag = new Float64Array(n);
  for (let j = 0; j < n; j++) diag[j] = diagonal[j]! / (d[j]! * d[j]!);
  return { n, diag, at: (i, j) => (i === j ? diag[i]! : h[i * n + j]! / (d[i]! * d[j]!)) };
}

/**
 * (A + ρI)⁻¹ of the trailing block A = H̃[c0:, c0:] (m = n − c0), float32 row-major, made in one
 * packed lower triangle (./spdInverse.ts; m(m+1)/2 float64, half an m×m array): A + ρI is written
 * into it, factored in place (L), inverted in place (L⁻¹), and handed back panel by panel while
 * the float32 L⁻ᵀL⁻¹ is made. Besides the caller's H, about m²·4 bytes plus one block step's
 * operands (a fraction of m²) are alive; the products run on the backend (float64 ones on its
 * DGEMM, or in the kernels without one). Throws LinAlgError when A + ρI is not positive definite.
 */
async function shiftedInverse(matmul: MatMul, h: SolverHessian, c0: number, rho: number, mm64: MatMul64 = kernelProduct64): Promise<Float32Array> {
  const m = h.n - c0;
  const a = new PackedLower(m);
  for (let i = 0; i < m; i++) {
    const row = a.row(i);
    for (let j = 0; j <= i; j++) row[j] = h.at(c0 + i, c0 + j);
    row[i] += rho;
  }
  coreMark(`factorization: matrix ${m}`);
  if (!(await choleskyInPlace(a, mm64))) throw new LinAlgError(`ADMM: H + ρI (${m}×${m}) is not positive definite; raise --damp`);
  rowKernels.trim();
  coreMark(`factorization: L ${m}`);
  await invertLowerInPlace(a, mm64);
  rowKernels.trim();
  coreMark(`factorization: L⁻¹ ${m}`);
  const inverse = await inverseF32(a, matmul);
  coreMark(`factorization: inverse ${m}`);
  return inverse;
}

/** Columns of H̃ per product in rightSides: an n × c float32 chunk of at most n²/16 entries. */
function rightSideColumns(n: number): number {
  return Math.max(64, Math.ceil(n / 16));
}

/**
 * B = W̃ H̃ (W̃ = W D) in float32, by column chunks: B[:, c0:c1] = W̃ · H̃[:, c0:c1], with the
 * float32 W̃ (rows × n) and one float32 chunk of H̃ (n × c, each entry the float32 rounding of the
 * float64 value the solver uses) alive, not an n×n float32 H̃ and a whole product's output twice
 * (onnxruntime's and its JavaScript copy).
 */
async function rightSides(matmul: MatMul, w: Float64Array, d: Float64Array, h: SolverHessian, rows: number): Promise<Float32Array> {
  const n = h.n;
  let w32: Float32Array | null = new Float32Array(rows * n);
  for (let r = 0; r < rows; r++) for (let j = 0; j < n; j++) w32[r * n + j] = w[r * n + j]! * d[j]!;
  const out = new Float32Array(rows * n);
  const step = rightSideColumns(n);
  for (let c0 = 0; c0 < n; c0 += step) {
    const c = Math.min(n, c0 + step) - c0;
    let hc: Float32Array | null = new Float32Array(n * c);
    for (let i = 0; i < n; i++) for (let j = 0; j < c; j++) hc[i * c + j] = h.at(i, c0 + j);
    const y = await matmul(w32, hc, rows, n, c);
    hc = null;
    for (let r = 0; r < rows; r++) out.set(y.subarray(r * c, (r + 1) * c), r * n + c0);
  }
  w32 = null;
  coreMark(`right sides: ${rows}x${n}`);
  return out;
}

interface StepInput {
  rows: number;
  /** Columns of the unknowns. */
  w: number;
  /** Support (1 = free) of row r, column j at support[r·stride + c0 + j]. */
  support: Uint8Array;
  stride: number;
  c0: number;
  /** Right sides B (rows×w): the solution satisfies (X H_block)_S = B_S (float32 when it is a
   *  product's result: read as the same numbers). */
  b: Float64Array | Float32Array;
  /** The loss's reference point T (rows×w, T H_block = B) when known: then L(X) = Σ (X − T)ᵀH(X − T)
   *  is evaluated directly; without it, L is tracked by differences from `lossStart`. */
  t?: Float64Array;
  lossStart: number;
  /** Also require residual ≤ residualTol to stop (0 = no residual condition). */
  residualTol: number;
  /** Warm start Z₀ (rows×w, zero off S); replaced by the result. */
  z: Float64Array;
  /** (H_block + ρI)⁻¹, w×w float32. */
  inverse: Float32Array;
  rho: number;
  lossTol: number;
  minIter: number;
  maxIter: number;
}

/** The exports of the WebAssembly kernels (src/core/wasm/assembly) that the solver uses. */
interface AdmmKernels {
  memory: { buffer: ArrayBuffer; grow(pages: number): number };
  heapBase(): number;
  admmRows(
    x: number, xPrev: number, gPrev: number, v: number, c: number, b: number, t: number, support: number, tPrev: number, fPrev: number,
    dF0: number, dF1: number, dF2: number, dT0: number, dT1: number, dT2: number, gram: number, scratch: number,
    rows: number, w: number, rho: number, relax: number, hist: number, cols: number, slot: number, out: number,
  ): void;
}

/** Largest memory a step's kernel instance may use (wasm32; headroom under 4 GiB). */
const ADMM_WASM_MAX_BYTES = 3 * 2 ** 30;

interface AdmmWorkspace {
  kernels: AdmmKernels;
  /** Start handing out views again from the beginning, `rows` (≤ the rows it was sized for) × w each. */
  reset(rows: number): void;
  /** Views on the instance's memory, handed out in order (rows×w elements each). */
  f32(): Float32Array;
  f64(): Float64Array;
  u8(): Uint8Array;
  gram: Float64Array;
  sums: Float64Array;
  /** Byte offset of 12 float64 of scratch (the per-row 3×3 solve). */
  scratch: number;
}

/**
 * A fresh instance of the WebAssembly kernels for one ADMM step (reused by its row blocks, reset
 * before each), its memory grown once to hold the step's state (rows×w: V, B, T, T(V), F in float64; c, two X buffers, the gradient and the
 * history columns in float32; the support; per-row Gram matrices), so views stay valid and
 * nothing else writes there; dropped with the step. Null without WebAssembly SIMD or when the
 * state would not fit in a 32-bit memory (the JavaScript kernel runs instead).
 */
function admmWorkspace(rows: number, w: number, m: number, byT: boolean): AdmmWorkspace | null {
  let size = rows * w;
  const pad = (bytes: number): number => Math.ceil(bytes / 16) * 16;
  const n64 = byT ? 5 : 4; // b, t?, v, tPrev, fPrev
  const n32 = 3 + (byT ? 0 : 1) + 2 * m + (m > 0 && m < MAX_ANDERSON ? 1 : 0); // c, two X, gPrev?, ΔF/ΔT, zero
  const bytes = n64 * pad(size * 8) + n32 * pad(size * 4) + pad(size + 16) + pad(rows * 72) + 96 + 16;
  let kernels: AdmmKernels;
  try {
    const api = (globalThis as unknown as { WebAssembly: { Module: new (b: Uint8Array) => object; Instance: new (m: object, i: object) => { exports: unknown } } }).WebAssembly;
    kernels = new api.Instance(new api.Module(Buffer.from(KERNELS_WASM_BASE64, 'base64')), {}).exports as AdmmKernels;
  } catch {
    return null; // no WebAssembly SIMD here
  }
  let next = kernels.heapBase();
  if (next + bytes > ADMM_WASM_MAX_BYTES) return null;
  const have = kernels.memory.buffer.byteLength;
  if (next + bytes > have) kernels.memory.grow(Math.ceil((next + bytes - have) / 65536));
  const buffer = kernels.memory.buffer;
  const take = (n: number): number => {
    const at = next;
    next += pad(n);
    return at;
  };
  const gram = new Float64Array(buffer, take(rows * 72), rows * 9);
  const sums = new Float64Array(buffer, take(16), 2);
  const scratch = take(96);
  const first = next;
  return {
    kernels,
    reset: (blockRows: number) => {
      if (blockRows > rows) throw new Error(`admmWorkspace: ${blockRows} rows, sized for ${rows}`);
      size = blockRows * w;
      next = first;
    },
    f32: () => new Float32Array(buffer, take(size * 4), size),
    f64: () => new Float64Array(buffer, take(size * 8), size),
    u8: () => new Uint8Array(buffer, take(size + 16), size),
    gram,
    sums,
    scratch,
  };
}

/** The arrays of one step's iteration (admmStep); the kernels below read them into locals. */
interface StepState {
  rows: number;
  w: number;
  /** The step's support, rows×w (compacted from the layer's mask). */
  support: Uint8Array;
  b: Float64Array;
  /** Loss reference T (rows×w) or null: then the loss is tracked by differences (xPrev, gPrev). */
  t: Float64Array | null;
  rho: number;
  relax: number;
  /** V (float64) and the next product's left operand B + ρV (float32). */
  v: Float64Array;
  c: Float32Array;
  /** T(V) and F of the last iteration. */
  tPrev: Float64Array;
  fPrev: Float64Array;
  /** The last iteration's gradient X H − B (loss by differences only). */
  gPrev: Float32Array;
  /** Anderson history: ΔF and ΔT columns (three; unused ones are zero), per-row 3×3 Gram of ΔF. */
  dF: [Float32Array, Float32Array, Float32Array];
  dT: [Float32Array, Float32Array, Float32Array];
  gram: Float64Array;
  gamma: Float64Array;
  lu: Float64Array;
}

/**
 * γ = (G + εI)⁻¹ ΔFᵀF for one row (G its Gram matrix of the `cols` stored ΔF columns, 3×3 at
 * gram[gr..]), by Gaussian elimination; into s.gamma (zeros where G is not positive).
 */
function andersonGamma(s: StepState, gr: number, cols: number, r0: number, r1: number, r2: number): void {
  const { gram, gamma, lu } = s;
  gamma[0] = r0;
  gamma[1] = r1;
  gamma[2] = r2;
  let trace = 0;
  for (let a = 0; a < cols; a++) trace += gram[gr + a * 4]!;
  const eps = 1e-10 * trace + 1e-300;
  for (let a = 0; a < cols; a++) for (let e = 0; e < cols; e++) lu[a * 3 + e] = gram[gr + a * 3 + e]! + (a === e ? eps : 0);
  let ok = trace > 0;
  for (let p = 0; p < cols && ok; p++) {
    const piv = lu[p * 4]!;
    if (!(piv > 0)) {
      ok = false;
      break;
    }
    for (let a = p + 1; a < cols; a++) {
      const f = lu[a * 3 + p]! / piv;
      for (let e = p; e < cols; e++) lu[a * 3 + e] -= f * lu[p * 3 + e]!;
      gamma[a] -= f * gamma[p]!;
    }
  }
  if (!ok) {
    gamma.fill(0);
    return;
  }
  for (let a = cols - 1; a >= 0; a--) {
    let sum = gamma[a]!;
    for (let e = a + 1; e < cols; e++) sum -= lu[a * 3 + e]! * gamma[e]!;
    gamma[a] = sum / lu[a * 4]!;
  }
  for (let a = cols; a < 3; a++) gamma[a] = 0;
}

/** Accumulators of one lane of iterateRows: loss term, ‖F‖², ΔF₀..₂ᵀF, ΔF₀..₂ᵀΔF_new. */
const LOSS = 0;
const FF = 1;
const S0 = 2;
const N0 = 5;

/**
 * iterateRows' work on entry i, added to the lane accumulators `acc` (see LOSS…N0). The kernel
 * sums even and odd entries in two lanes (f64x2) and the odd last one after them; calling this with
 * the matching lane's `acc` keeps the JavaScript twin's sums in the kernel's order, bit for bit.
 */
function entryTerms(s: StepState, x: Float32Array, xPrev: Float32Array, hist: boolean, cF: Float32Array, cT: Float32Array, tt: Float64Array, byT: boolean, i: number, acc: Float64Array): void {
  const { support, b, rho, relax, v, c, tPrev, fPrev, gPrev } = s;
  const xv = x[i]!;
  const vi = v[i]!;
  const g = rho * (vi - xv); // (X H − B)[i]
  if (byT) acc[LOSS] += (xv - tt[i]!) * g;
  else {
    acc[LOSS] += (xv - xPrev[i]!) * (g + gPrev[i]!);
    gPrev[i] = g;
  }
  const tv = support[i] ? relax * xv + (1 - relax) * vi : vi - relax * xv;
  const fv = tv - vi;
  acc[FF] += fv * fv;
  if (hist) {
    const df = Math.fround(fv - fPrev[i]!);
    cF[i] = df;
    cT[i] = tv - tPrev[i]!;
    for (let a = 0; a < 3; a++) {
      const fa = s.dF[a]![i]!;
      acc[S0 + a] += fa * fv;
      acc[N0 + a] += fa * df;
    }
  } else {
    v[i] = tv;
    c[i] = b[i]! + rho * tv;
  }
  fPrev[i] = fv;
  tPrev[i] = tv;
}

/**
 * One iteration's elementwise work, row by row so that a row's operands stay in cache: T(V), F,
 * the loss term and the new history column (when `hist`: column `slot`, mixing over `cols`
 * columns); the row's Anderson dot products and γ; then V ← T(V) − ΔT γ (or V ← T(V) without
 * history) and c = B + ρV. Returns [loss term, ‖F‖²] in `out`. A small function of its own so
 * that V8 optimizes it once (inside the large async step it deoptimized repeatedly).
 */
function iterateRows(s: StepState, x: Float32Array, xPrev: Float32Array, hist: boolean, cols: number, slot: number, out: Float64Array): void {
  const { rows, w, b, rho, v, c, tPrev, gram, gamma } = s;
  const [e0, e1, e2] = s.dT;
  const cF = s.dF[slot]!;
  const cT = s.dT[slot]!;
  const tt = s.t ?? b;
  const byT = s.t !== null;
  const laneA = new Float64Array(8);
  const laneB = new Float64Array(8);
  let lossTotal = 0;
  let ffTotal = 0;
  for (let r = 0; r < rows; r++) {
    const o = r * w;
    const end = o + w;
    const pairEnd = o + (w & ~1);
    laneA.fill(0);
    laneB.fill(0);
    for (let p = o; p < pairEnd; p += 2) {
      entryTerms(s, x, xPrev, hist, cF, cT, tt, byT, p, laneA);
      entryTerms(s, x, xPrev, hist, cF, cT, tt, byT, p + 1, laneB);
    }
    for (let k = 0; k < 8; k++) laneA[k] += laneB[k]!;
    if (pairEnd < end) entryTerms(s, x, xPrev, hist, cF, cT, tt, byT, pairEnd, laneA);
    const loss = laneA[LOSS]!;
    const ff = laneA[FF]!;
    const [s0, s1, s2] = [laneA[S0]!, laneA[S0 + 1]!, laneA[S0 + 2]!];
    const [n0, n1, n2] = [laneA[N0]!, laneA[N0 + 1]!, laneA[N0 + 2]!];

    lossTotal += loss;
    ffTotal += ff;
    if (!hist) continue;
    // The Gram row/column of the newest ΔF column (older entries are unchanged), then γ.
    const gr = r * 9;
    if (cols > 0) gram[gr + slot] = gram[gr + slot * 3] = n0;
    if (cols > 1) gram[gr + 3 + slot] = gram[gr + slot * 3 + 1] = n1;
    if (cols > 2) gram[gr + 6 + slot] = gram[gr + slot * 3 + 2] = n2;
    andersonGamma(s, gr, cols, s0, s1, s2);
    const g0 = gamma[0]!;
    const g1 = gamma[1]!;
    const g2 = gamma[2]!;
    for (let i = o; i < end; i++) {
      const vn = tPrev[i]! - e0[i]! * g0 - e1[i]! * g1 - e2[i]! * g2;
      v[i] = vn;
      c[i] = b[i]! + rho * vn;
    }
  }
  out[0] += lossTotal;
  out[1] += ffTotal;
}

/**
 * ADMM iterations on one step, in place on `z`, with Anderson acceleration (settings.anderson
 * = m ∈ [1, 3]; 0 = plain ADMM). With Z on S and U off S (U₀ = 0) the iteration is a linear
 * fixed-point map of one variable V = Z − U (V = Z on S, −U off S):
 *   X = (B + ρV)(H + ρI)⁻¹,  X̂ = λX + (1 − λ)PV,  T(V) = P X̂ − Q X̂ + QV  (P, Q: on / off S),
 * so the residual F = T(V) − V = λ(P(X − V) − QX) is X's scaled gradient on S and its
 * infeasibility off S. Anderson (type II, memory m, per row): V ← T(V) − ΔT γ with
 * γ = argmin ‖F − ΔF γ‖ over the last m differences, an m×m solve per row (GMRES-like: about half
 * the products of plain ADMM on our layers, and much less sensitive to ρ).
 * The loss at X costs no product: X(H + ρI) = B + ρV gives X H − B = ρ(V − X), so
 * L(X) − const = Σ (X − T)·(X H − B) = ρ Σ (X − T)·(V − X); without T, by differences
 * L(a) − L(b) = (a − b)·(g_a + g_b). Stops when the loss still to gain (extrapolated from the
 * last two relative changes) is ≤ lossTol twice in a row and the residual ‖F‖ ≤ residualTol ×
 * its first value (after minIter), or after maxIter. The result is P·T(V).
 */
async function admmStep(matmul: MatMul, s: StepInput, relax: number, anderson: number, ws: AdmmWorkspace | null, signal: AbortSignal | undefined, onIteration: (iteration: number, change: number, residual: number) => void): Promise<{ iterations: number; change: number; loss: number }> {
  const { rows, w, stride, c0, b, z, inverse, rho } = s;
  const size = rows * w;
  const m = Math.max(0, Math.min(MAX_ANDERSON, Math.floor(anderson)));
  const byT = s.t !== undefined;
  // The state lives in a kernel instance's own memory when the WebAssembly kernels load (and it
  // fits), else in plain arrays; both run the same operations (admmRows / iterateRows).
  ws?.reset(rows);
  const f32 = (): Float32Array => (ws ? ws.f32() : new Float32Array(size));
  const f64 = (): Float64Array => (ws ? ws.f64() : new Float64Array(size));
  // History columns are float32 (differences of nearby iterates); the kernel always reads three,
  // the ones not yet written (or beyond m) are zero.
  const zero = m > 0 && m < MAX_ANDERSON ? f32() : new Float32Array(0);
  const column = (a: number): Float32Array => (a < m ? f32() : zero);
  const support = ws ? ws.u8() : new Uint8Array(size);
  for (let r = 0; r < rows; r++) support.set(s.support.subarray(r * stride + c0, r * stride + c0 + w), r * w);
  const state: StepState = {
    rows,
    w,
    support,
    b: ws ? ws.f64() : b instanceof Float64Array ? b : Float64Array.from(b),
    t: byT ? (ws ? ws.f64() : s.t!) : null,
    rho,
    relax,
    v: ws ? ws.f64() : z, // V₀ = Z₀ (U₀ = 0); Z = P·T(V) at the end.
    c: f32(),
    tPrev: f64(),
    fPrev: f64(),
    gPrev: byT ? new Float32Array(0) : f32(),
    dF: [column(0), column(1), column(2)],
    dT: [column(0), column(1), column(2)],
    gram: ws ? ws.gram : new Float64Array(rows * 9),
    gamma: new Float64Array(3),
    lu: new Float64Array(9),
  };
  if (ws) {
    state.b.set(b);
    if (state.t) state.t.set(s.t!);
    state.v.set(z);
    // An earlier row block's values: the kernel reads all three history columns (unused ones
    // must be 0) and the gradient.
    for (const a of [...state.dF, ...state.dT, state.gPrev]) a.fill(0);
  }
  const xBuffers = ws ? [f32(), f32()] : [];
  const sums = ws ? ws.sums : new Float64Array(2);
  let loss = s.lossStart;
  let change = Infinity;
  let remaining = Infinity;
  let firstResidual = 0;
  let residual = Infinity;
  let it = 0;
  let stored = 0; // history columns filled
  let slot = 0; // ring position of the next column
  let xPrev: Float32Array | null = null;
  const { c, tPrev } = state;
  for (let i = 0; i < size; i++) c[i] = b[i]! + rho * z[i]!;
  const dF = state.dF;
  const dT = state.dT;
  while (it < s.maxIter) {
    if (signal?.aborted) throw signal.reason ?? new Error('aborted');
    const x = await matmul(c, inverse, rows, w, w);
    it++;
    // From the second iteration on, this one writes history column `slot` and mixes over `cols`
    // columns; without history V ← T(V).
    const hist = m > 0 && it > 1;
    const cols = hist ? Math.min(m, stored + 1) : 0;
    sums.fill(0);
    if (ws) {
      const xw = xBuffers[it % 2]!;
      xw.set(x);
      const xp = xPrev ?? xw;
      ws.kernels.admmRows(xw.byteOffset, xp.byteOffset, state.gPrev.byteOffset, state.v.byteOffset, c.byteOffset, state.b.byteOffset, state.t ? state.t.byteOffset : 0, support.byteOffset, tPrev.byteOffset, state.fPrev.byteOffset, dF[0].byteOffset, dF[1].byteOffset, dF[2].byteOffset, dT[0].byteOffset, dT[1].byteOffset, dT[2].byteOffset, state.gram.byteOffset, ws.scratch, rows, w, rho, relax, hist ? 1 : 0, cols, slot, sums.byteOffset);
      xPrev = xw;
    } else {
      iterateRows(state, x, xPrev ?? x, hist, cols, slot, sums);
      xPrev = x;
    }
    const lossTerm = sums[0]!;
    const ff = sums[1]!;
    if (hist) {
      slot = (slot + 1) % m;
      stored = cols;
    }
    const before = change;
    if (state.t) {
      if (it > 1) change = Math.abs(lossTerm - loss) / Math.max(Math.abs(lossTerm), 1e-300);
      loss = lossTerm;
    } else if (it > 1) {
      loss += lossTerm;
      change = Math.abs(lossTerm) / Math.max(Math.abs(loss), 1e-300);
    }
    // Converging linearly with the contraction q = change/before, the loss still to come is about
    // change·q/(1 − q). Early iterations are not monotone, so the estimate must hold twice in a row.
    const q = change / before;
    const estimate = q < 0.999 ? (change * q) / (1 - q) : Infinity;
    const settled = estimate <= s.lossTol && remaining <= s.lossTol;
    remaining = estimate;
    if (it === 1) firstResidual = Math.sqrt(ff);
    residual = firstResidual > 0 ? Math.sqrt(ff) / firstResidual : 0;
    onIteration(it, change, residual);
    if (it >= s.minIter && ((settled && residual <= s.residualTol) || change === 0 || ff === 0)) break;
  }
  // Z = P·T(V): the last ADMM step's primal iterate, exactly 0 off S.
  for (let i = 0; i < size; i++) z[i] = support[i] ? tPrev[i]! : 0;
  return { iterations: it, change: remaining, loss };
}

/** A compensation problem whose H may come with its own diagonal. */
export interface AdmmProblem extends CompensationProblem {
  /** The diagonal of the H to solve with, when it is not `hessian`'s own: compressLayer passes the
   *  caller's undamped H with the damped diagonal (dead inputs := 1, + λ·mean) instead of an n×n
   *  damped copy. Off-diagonal entries are read from `hessian`. */
  diagonal?: Float64Array;
}

/**
 * compensateAdmm(p, backend): W_c = W⊙M + Δ for every row (as compensateRowsDirect, §2.3–2.4),
 * by batched ADMM on the backend's float32 products. `out` receives W_c (pruned entries 0).
 * `onIteration` is called after every iteration (step, iteration, relative loss change, residual).
 *
 * Memory besides the caller's arrays (n = cols): H̃ is never stored (read entry by entry from
 * p.hessian, SolverHessian); step 1's (H̃ + ρI)⁻¹ as float32 (n²·4), made by shiftedInverse in
 * about n²·4 (a packed float64 triangle, then the float32 result as the triangle goes) plus one
 * block step's operands, before any rows×n array; B = W̃H̃ (rows×n float32; W̃ = W D is not
 * stored: Z lives in `out` from the start, and each row block's loss reference is made for that
 * block), one block's T and the row blocks' iteration state (≤ stateBytes); step 2's pieces after
 * step 1's inverse is dropped (its inverse is a quarter the size at α = ½), B after step 2's
 * right sides are made.
 */
export async function compensateAdmm(
  p: AdmmProblem,
  backend: MatrixBackend,
  settings: AdmmSettings = DEFAULT_ADMM,
  signal?: AbortSignal,
  out: Float64Array = new Float64Array(p.rows * p.cols),
  onIteration?: (progress: AdmmProgress) => void,
): Promise<{ out: Float64Array; stats: AdmmStats }> {
  const matmul = backendProduct(backend);
  const mm64 = backend.matmulF64?.bind(backend);
  const { rows, cols: n, mask, scales } = p;
  const k = Math.max(0, Math.min(n, p.splitCol));
  const maxq = 2 ** (p.bits - 1) - 1;
  const t0 = performance.now();
  signal?.throwIfAborted();

  // Jacobi scaling (settings.scale): solve in X̃ = X D with H̃ = D⁻¹ H D⁻¹, D = diag(H)^½, so every
  // input channel has unit curvature: the same loss and supports, but one ρ fits all channels
  // (outlier channels no longer dominate) and the float32 products see operands of one scale.
  let diagonal = p.diagonal;
  if (!diagonal) {
    diagonal = new Float64Array(n);
    for (let j = 0; j < n; j++) diagonal[j] = p.hessian[j * n + j]!;
  }
  const d = new Float64Array(n).fill(1);
  if (settings.scale) for (let j = 0; j < n; j++) d[j] = Math.sqrt(diagonal[j]!);
  const h = solverHessian(p.hessian, n, diagonal, d);
  // Step 1's inverse first, while no rows×n array of the solver exists yet (see shiftedInverse).
  const rho1 = (settings.rho === 'auto' ? autoRhoOf(h, 0) : settings.rho) * medianDiagonal(h.diag, 0);
  let inverse1: Float32Array | null = await shiftedInverse(matmul, h, 0, rho1, mm64);
  // W̃ = W D is never stored whole: B, Z₀ and each row block's loss reference T are made from W
  // and D (the same products, so the same numbers as a stored W̃).
  // The one place this solver quantizes: E2 entries with their (row, group) grid, as the final
  // quantization will (so the transfer moves exactly the error that rounding makes, §7.7).
  const { gs, groups } = groupLayout(n, p.groupSize);
  const zeros = p.zeros;
  const quantizeE2 = (v: number, r: number, j: number): number => {
    const gi = r * groups + ((j / gs) | 0);
    const s = scales[gi];
    const dj = d[j];
    const x = v / dj;
    return (zeros ? (groupCode(x, s, zeros[gi], maxq) - zeros[gi]) * s : symmetricCode(x, s, maxq) * s) * dj;
  };

  // B = W H (float32, read as is by both steps); Z₀ = W ⊙ M, U₀ = 0.
  // Z lives in `out` (the caller's result array) from the start.
  let bh: Float32Array | null = await rightSides(matmul, p.weight, d, h, rows);
  const z = out;
  for (let r = 0; r < rows; r++) for (let j = 0; j < n; j++) z[r * n + j] = mask[r * n + j] ? p.weight[r * n + j] * d[j] : 0;
  const t1 = performance.now();
  signal?.throwIfAborted();

  // Row blocks: the iteration state of rows × n entries at once stays within stateBytes (the
  // products of a block are still large: ≥ 512 rows for n ≤ 6500 at the default). Both steps use
  // the same blocks; each block has its own stopping rule (its loss, its residual), so a block
  // meets the tolerances on its own rows and the layer meets them in sum.
  const m = Math.max(0, Math.min(MAX_ANDERSON, Math.floor(settings.anderson)));
  const blockRows = admmBlockRows(rows, n, settings.stateBytes);
  const blocks: Array<[number, number]> = [];
  for (let r0 = 0; r0 < rows; r0 += blockRows) blocks.push([r0, Math.min(rows, r0 + blockRows)]);
  const useWasm = settings.wasm !== false;
  const blockLoss1 = new Float64Array(blocks.length);
  // Each block's loss reference T = W̃ of its rows, in one buffer of blockRows × n (W itself unscaled).
  const tBuffer = settings.scale ? new Float64Array(blockRows * n) : null;
  const scaledRows = (r0: number, r1: number): Float64Array => {
    if (!tBuffer) return p.weight.subarray(r0 * n, r1 * n);
    for (let r = r0; r < r1; r++) for (let j = 0; j < n; j++) tBuffer[(r - r0) * n + j] = p.weight[r * n + j] * d[j];
    return tBuffer.subarray(0, (r1 - r0) * n);
  };
  const s1 = { iterations: 0, change: 0, loss: 0 };
  {
    const ws = useWasm ? admmWorkspace(blockRows, n, m, true) : null;
    coreMark(`step 1 state ${blockRows}x${n}`);
    for (const [bi, [r0, r1]] of blocks.entries()) {
      const span = (a: Float64Array | Float32Array) => a.subarray(r0 * n, r1 * n);
      const r = await admmStep(
        matmul,
        { rows: r1 - r0, w: n, support: mask.subarray(r0 * n, r1 * n), stride: n, c0: 0, b: span(bh!), t: scaledRows(r0, r1), lossStart: NaN, residualTol: settings.residualTol1, z: span(z) as Float64Array, inverse: inverse1, rho: rho1, lossTol: settings.lossTol, minIter: settings.minIter, maxIter: settings.maxIter },
        settings.relax,
        settings.anderson,
        ws,
        signal,
        (iteration, change, residual) => onIteration?.({ step: 1, iteration, change, residual }),
      );
      blockLoss1[bi] = r.loss;
      s1.loss += r.loss;
      s1.iterations = Math.max(s1.iterations, r.iterations);
      s1.change = Math.max(s1.change, r.change);
    }
  }
  coreMark(`step 1 ${rows}x${n}`);
  inverse1 = null;
  // Step 1's state (its kernel instance) and inverse go before step 2 allocates.
  collectDropped(STATE_BYTES_PER_ENTRY * blockRows * n + n * n * 4);
  const t2 = performance.now();

  const s2 = { iterations: 0, change: 0, loss: 0 };
  if (k > 0 && k < n) {
    // Step 2 on columns [k, n): X1 = Q(w̄) on E2 (kept columns < k), 0 on E1.
    const wr = n - k;
    const rho2 = (settings.rho === 'auto' ? autoRhoOf(h, k) : settings.rho) * medianDiagonal(h.diag, k);
    const inverse2 = await shiftedInverse(matmul, h, k, rho2, mm64);
    let x1: Float32Array | null = new Float32Array(rows * k);
    for (let r = 0; r < rows; r++) {
      for (let j = 0; j < k; j++) {
        const i = r * n + j;
        if (mask[i]) x1[r * k + j] = quantizeE2(z[i], r, j);
      }
    }
    let h12: Float32Array | null = new Float32Array(k * wr);
    for (let i = 0; i < k; i++) for (let j = 0; j < wr; j++) h12[i * wr + j] = h.at(i, k + j);
    let x1h: Float32Array | null = await matmul(x1, h12, rows, k, wr);
    h12 = null;
    const z2 = new Float64Array(rows * wr);
    const b2 = new Float64Array(rows * wr);
    for (let r = 0; r < rows; r++) {
      for (let j = 0; j < wr; j++) {
        const v = z[r * n + k + j];
        z2[r * wr + j] = v;
        b2[r * wr + j] = bh![r * n + k + j] - x1h![r * wr + j];
      }
    }
    bh = x1h = null;
    const ws = useWasm ? admmWorkspace(blockRows, wr, m, false) : null;
    for (const [bi, [r0, r1]] of blocks.entries()) {
      // Scale of step 2's loss for the stopping rule: at the warm start L ≈ step 1's loss plus the
      // E2 rounding's δᵀHδ (its diagonal part; the Pythagorean split of §2.4).
      let start = blockLoss1[bi]!;
      for (let r = r0; r < r1; r++) {
        for (let j = 0; j < k; j++) {
          const i = r * n + j;
          if (!mask[i]) continue;
          const dd = x1[r * k + j] - z[i];
          start += dd * dd * h.diag[j]!;
        }
      }
      const r = await admmStep(
        matmul,
        { rows: r1 - r0, w: wr, support: mask.subarray(r0 * n, r1 * n), stride: n, c0: k, b: b2.subarray(r0 * wr, r1 * wr), lossStart: start, residualTol: settings.residualTol2, z: z2.subarray(r0 * wr, r1 * wr), inverse: inverse2, rho: rho2, lossTol: settings.lossTol2, minIter: settings.minIter, maxIter: settings.maxIter2 },
        settings.relax,
        settings.anderson,
        ws,
        signal,
        (iteration, change, residual) => onIteration?.({ step: 2, iteration, change, residual }),
      );
      s2.loss += r.loss;
      s2.iterations = Math.max(s2.iterations, r.iterations);
      s2.change = Math.max(s2.change, r.change);
    }
    coreMark(`step 2 ${rows}x${wr}`);
    x1 = null;
    for (let r = 0; r < rows; r++) for (let j = 0; j < wr; j++) out[r * n + k + j] = z2[r * wr + j];
  }
  if (settings.scale) for (let r = 0; r < rows; r++) for (let j = 0; j < n; j++) out[r * n + j] /= d[j];
  const t3 = performance.now();
  return {
    out,
    stats: {
      iterations: [s1.iterations, s2.iterations],
      seconds: [(t1 - t0) / 1000, (t2 - t1) / 1000, (t3 - t2) / 1000],
      lastChange: [s1.change, s2.change],
    },
  };
}
