// OBR's two compensation steps (obr-algorithm.md §2.3–2.4) for ALL rows of a layer at once, by
// ADMM with one factorization shared by every row (Boža, "Fast and Effective Weight Update for
// Pruned Large Language Models", TMLR 2024). Both steps are masked least squares
//   min_X tr((X − W) H (X − W)ᵀ)  s.t.  X = 0 off a per-row support S, X fixed on a per-row set F,
// whose row problems share H (the damped H of P6). With the splitting X = Z, Z supported on S,
// and a scaled dual U:
//   X ← (B + ρ(Z − U)) (H + ρI)⁻¹        one rows×n by n×n product (B = the rows' right sides)
//   Z ← (X̂ + U) ⊙ S,  U ← U + X̂ − Z      (X̂ = λX + (1 − λ)Z: over-relaxation)
// (H + ρI)⁻¹ is factored once per layer and step (wasm Cholesky + triangular inverse, the
// product L⁻ᵀL⁻¹ on the backend); every iteration's product runs on MatrixBackend.matmulF32
// (onnxruntime on the job's execution provider, src/runtime/ortBackend.ts), float32, while Z, U
// and all sums stay float64 in JavaScript. Z is exactly 0 off S, so pruned entries are exact zeros.
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
// Memory: O(n² + rows·n) (the inverse, H's float32 copy, and a handful of rows×n arrays).
import type { MatrixBackend } from './backend';
import type { CompensationProblem } from './kernels';
import { rowKernels } from './kernels';
import { LinAlgError, gemmAccumulate } from './matrix';
import { groupCode, groupLayout, symmetricCode } from './quantize';

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
}

export const DEFAULT_ADMM: AdmmSettings = { rho: 'auto', relax: 1.5, lossTol: 1e-5, minIter: 8, maxIter: 80, lossTol2: 1e-5, maxIter2: 80, residualTol2: 2e-3, scale: true, anderson: 3, residualTol1: 1e-3 };

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
  const m = n - c0;
  let frob = 0;
  for (let i = c0; i < n; i++) {
    const o = i * n;
    const di = h[o + i];
    for (let j = c0; j < n; j++) {
      const v = h[o + j];
      frob += (v * v) / (di * h[j * n + j]);
    }
  }
  const spread = m > 0 && frob > 0 ? frob / m : 1;
  return Math.min(0.5, Math.max(0.06, 2 / spread));
}

/** Median of diag(H)[c0:]. */
export function medianDiagonal(h: Float64Array, n: number, c0 = 0): number {
  const d = new Float64Array(n - c0);
  for (let j = c0; j < n; j++) d[j - c0] = h[j * n + j];
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
  iterations: [number, number];
  /** Seconds: setup (factorizations, right sides), step 1, step 2. */
  seconds: [number, number, number];
  /** Extrapolated relative loss still to gain when each step stopped (what the rule saw). */
  lastChange: [number, number];
}

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

type MatMul64 = (a: Float64Array, b: Float64Array, m: number, k: number, n: number) => Promise<Float64Array>;

/**
 * L⁻¹ of the n×n lower triangular `l` (row-major), by halves: with L = [L11 0; L21 L22],
 * L⁻¹ = [X11 0; −X22 L21 X11, X22], the halves recursively and the off-diagonal block as two
 * float64 products on the backend (multi-threaded DGEMM), down to 512 columns, where the wasm
 * kernel takes over. The wasm triangular inverse alone runs at ≈ 0.7 GFLOP/s (4 s at n = 2048,
 * 30 s at 4096); this does the same float64 arithmetic in a fraction of that.
 */
export async function invertLowerBlocked(l: Float64Array, n: number, mm64?: MatMul64): Promise<Float64Array> {
  if (!mm64 || n <= 512) return rowKernels.invertLower(l, n);
  const n1 = Math.floor(n / 16) * 8;
  const n2 = n - n1;
  const l11 = new Float64Array(n1 * n1);
  const l22 = new Float64Array(n2 * n2);
  const l21 = new Float64Array(n2 * n1);
  for (let i = 0; i < n1; i++) l11.set(l.subarray(i * n, i * n + i + 1), i * n1);
  for (let i = 0; i < n2; i++) {
    const o = (n1 + i) * n;
    l21.set(l.subarray(o, o + n1), i * n1);
    l22.set(l.subarray(o + n1, o + n1 + i + 1), i * n2);
  }
  const x11 = await invertLowerBlocked(l11, n1, mm64);
  const x22 = await invertLowerBlocked(l22, n2, mm64);
  const t = await mm64(l21, x11, n2, n1, n1);
  const x21 = await mm64(x22, t, n2, n2, n1);
  const x = new Float64Array(n * n);
  for (let i = 0; i < n1; i++) x.set(x11.subarray(i * n1, i * n1 + i + 1), i * n);
  for (let i = 0; i < n2; i++) {
    const o = (n1 + i) * n;
    for (let j = 0; j < n1; j++) x[o + j] = -x21[i * n1 + j];
    x.set(x22.subarray(i * n2, i * n2 + i + 1), o + n1);
  }
  return x;
}

/**
 * (A + ρI)⁻¹ of the trailing block A = H[c0:, c0:] (m = n − c0), float32 row-major. Factored in
 * float64 in the wasm kernels; the inverse L⁻ᵀL⁻¹ is one product on the backend.
 */
async function shiftedInverse(matmul: MatMul, h: Float64Array, n: number, c0: number, rho: number, mm64?: MatMul64): Promise<Float32Array> {
  const m = n - c0;
  const l = rowKernels.scratchMatrix(m * m);
  for (let i = 0; i < m; i++) {
    const src = (c0 + i) * n + c0;
    const dst = i * m;
    for (let j = 0; j <= i; j++) l[dst + j] = h[src + j];
    l[dst + i] += rho;
  }
  if (!rowKernels.cholesky(l, m)) throw new LinAlgError(`ADMM: H + ρI (${m}×${m}) is not positive definite; raise --damp`);
  const li = await invertLowerBlocked(l, m, mm64);
  const lit = new Float32Array(m * m);
  const li32 = new Float32Array(m * m);
  for (let i = 0; i < m; i++) {
    const o = i * m;
    for (let j = 0; j <= i; j++) {
      const v = li[o + j];
      li32[o + j] = v;
      lit[j * m + i] = v;
    }
  }
  return matmul(lit, li32, m, m, m);
}

interface StepInput {
  rows: number;
  /** Columns of the unknowns. */
  w: number;
  /** Support (1 = free) of row r, column j at support[r·stride + c0 + j]. */
  support: Uint8Array;
  stride: number;
  c0: number;
  /** Right sides B (rows×w): the solution satisfies (X H_block)_S = B_S. */
  b: Float64Array;
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

/**
 * ADMM iterations on one step, in place on `z`, with Anderson acceleration (settings.anderson
 * = m > 0; 0 = plain ADMM). With Z on S and U off S (U₀ = 0) the iteration is a linear fixed-point
 * map of one variable V = Z − U (V = Z on S, −U off S):
 *   X = (B + ρV)(H + ρI)⁻¹,  X̂ = λX + (1 − λ)PV,  T(V) = P X̂ − Q X̂ + QV  (P, Q: on / off S),
 * so the residual F = T(V) − V = λ(P(X − V) − QX) is X's scaled gradient on S and its
 * infeasibility off S. Anderson (type II, memory m, per row): V ← T(V) − ΔT γ with
 * γ = argmin ‖F − ΔF γ‖ over the last m differences, an m×m solve per row (GMRES-like: about half
 * the products of plain ADMM on our layers, and much less sensitive to ρ).
 * The loss at X costs no product: X(H + ρI) = B + ρV gives X H − B = ρ(V − X), so
 * L(X) − const = Σ (X − T)·(X H − B) = ρ Σ (X − T)·(V − X). Stops when the loss still to gain
 * (extrapolated from the last two relative changes) is ≤ lossTol twice in a row and the residual
 * ‖F‖ ≤ residualTol × its first value (after minIter), or after maxIter. The result is P·T(V).
 */
async function admmStep(matmul: MatMul, s: StepInput, relax: number, anderson: number, signal: AbortSignal | undefined, onIteration: (iteration: number, change: number, residual: number) => void): Promise<{ iterations: number; change: number; loss: number }> {
  const { rows, w, support, stride, c0, b, t, z, inverse, rho } = s;
  const size = rows * w;
  const m = Math.max(0, Math.floor(anderson));
  const v = z; // V₀ = Z₀ (U₀ = 0); Z = P·V at the end.
  const c = new Float32Array(size);
  const tPrev = new Float64Array(size); // T(V) of the previous iteration
  const fPrev = new Float64Array(size); // F of the previous iteration
  // Anderson history: ring of m columns ΔF, ΔT (float32: differences of nearby iterates), per-row
  // Gram matrices of ΔF.
  const dF = Array.from({ length: m }, () => new Float32Array(size));
  const dT = Array.from({ length: m }, () => new Float32Array(size));
  const gram = new Float64Array(rows * m * m);
  const rhs = new Float64Array(m);
  const gamma = new Float64Array(m);
  const lu = new Float64Array(m * m);
  // Without T: the previous X and gradient g = XH − B, for L(a) − L(b) = (a − b)·(g_a + g_b).
  const xPrev = t ? null : new Float64Array(size);
  const gPrev = t ? null : new Float64Array(size);
  let loss = s.lossStart;
  let change = Infinity;
  let remaining = Infinity;
  let f0 = 0;
  let residual = Infinity;
  let it = 0;
  let stored = 0; // history columns filled
  let slot = 0; // ring position of the next column
  let tFinal: Float64Array | null = null;
  for (let i = 0; i < size; i++) c[i] = b[i] + rho * v[i];
  while (it < s.maxIter) {
    if (signal?.aborted) throw signal.reason ?? new Error('aborted');
    const x = await matmul(c, inverse, rows, w, w);
    it++;
    let lossTerm = 0;
    let ff = 0;
    const colF = m > 0 && it > 1 ? dF[slot]! : null;
    const colT = m > 0 && it > 1 ? dT[slot]! : null;
    // Pass 1: T(V), F, the loss, and the new history column.
    for (let r = 0; r < rows; r++) {
      const o = r * w;
      const so = r * stride + c0;
      for (let j = 0; j < w; j++) {
        const i = o + j;
        const xv = x[i];
        const vi = v[i];
        const g = rho * (vi - xv); // (X H − B)[i]
        if (t) lossTerm += (xv - t[i]) * g;
        else {
          if (it > 1) lossTerm += (xv - xPrev![i]) * (g + gPrev![i]);
          xPrev![i] = xv;
          gPrev![i] = g;
        }
        let tv: number;
        if (support[so + j]) tv = relax * xv + (1 - relax) * vi;
        else tv = vi - relax * xv;
        const fv = tv - vi;
        if (support[so + j]) ff += fv * fv;
        else ff += fv * fv;
        if (colF) {
          colF[i] = fv - fPrev[i];
          colT![i] = tv - tPrev[i];
        }
        fPrev[i] = fv;
        tPrev[i] = tv;
      }
    }
    if (colF) {
      slot = (slot + 1) % m;
      stored = Math.min(m, stored + 1);
    }
    const before = change;
    if (t) {
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
    if (it === 1) f0 = Math.sqrt(ff);
    residual = f0 > 0 ? Math.sqrt(ff) / f0 : 0;
    onIteration(it, change, residual);
    if (it >= s.minIter && ((settled && residual <= s.residualTol) || change === 0 || ff === 0)) {
      tFinal = tPrev;
      break;
    }
    if (it === s.maxIter) {
      tFinal = tPrev;
      break;
    }
    // Pass 2: V ← T(V) − ΔT γ (per row), and the next product's left operand B + ρV.
    if (stored === 0) {
      for (let i = 0; i < size; i++) {
        v[i] = tPrev[i];
        c[i] = b[i] + rho * tPrev[i];
      }
      continue;
    }
    const newest = (slot + m - 1) % m;
    for (let r = 0; r < rows; r++) {
      const o = r * w;
      const gr = r * m * m;
      // Gram row/column of the newest ΔF column (older entries are unchanged), and ΔFᵀF.
      for (let a = 0; a < m; a++) {
        rhs[a] = 0;
        if (a >= stored && stored < m) continue;
      }
      for (let a = 0; a < stored; a++) {
        const fa = dF[a]!;
        let sf = 0;
        let sn = 0;
        const fn = dF[newest]!;
        for (let j = 0; j < w; j++) {
          const va = fa[o + j];
          sf += va * fPrev[o + j];
          sn += va * fn[o + j];
        }
        rhs[a] = sf;
        gram[gr + a * m + newest] = sn;
        gram[gr + newest * m + a] = sn;
      }
      // Solve (G + εI) γ = rhs by Gaussian elimination on the stored columns (m is tiny).
      let trace = 0;
      for (let a = 0; a < stored; a++) trace += gram[gr + a * m + a];
      const eps = 1e-10 * trace + 1e-300;
      for (let a = 0; a < stored; a++) {
        for (let e = 0; e < stored; e++) lu[a * m + e] = gram[gr + a * m + e] + (a === e ? eps : 0);
        gamma[a] = rhs[a];
      }
      let ok = trace > 0;
      for (let p = 0; p < stored && ok; p++) {
        const piv = lu[p * m + p];
        if (!(piv > 0)) {
          ok = false;
          break;
        }
        for (let a = p + 1; a < stored; a++) {
          const f = lu[a * m + p] / piv;
          for (let e = p; e < stored; e++) lu[a * m + e] -= f * lu[p * m + e];
          gamma[a] -= f * gamma[p];
        }
      }
      if (ok) {
        for (let a = stored - 1; a >= 0; a--) {
          let sum = gamma[a];
          for (let e = a + 1; e < stored; e++) sum -= lu[a * m + e] * gamma[e];
          gamma[a] = sum / lu[a * m + a];
        }
      } else gamma.fill(0);
      for (let j = 0; j < w; j++) {
        const i = o + j;
        let vn = tPrev[i];
        for (let a = 0; a < stored; a++) vn -= dT[a]![i] * gamma[a];
        v[i] = vn;
        c[i] = b[i] + rho * vn;
      }
    }
  }
  // Z = P·T(V): the last ADMM step's primal iterate, exactly 0 off S.
  const tf = tFinal ?? tPrev;
  for (let r = 0; r < rows; r++) {
    const o = r * w;
    const so = r * stride + c0;
    for (let j = 0; j < w; j++) z[o + j] = support[so + j] ? tf[o + j] : 0;
  }
  return { iterations: it, change: remaining, loss };
}

/**
 * compensateAdmm(p, backend): W_c = W⊙M + Δ for every row (as compensateRowsDirect, §2.3–2.4),
 * by batched ADMM on the backend's float32 products. `out` receives W_c (pruned entries 0).
 * `onIteration` is called after every iteration (step, iteration, relative loss change, residual).
 */
export async function compensateAdmm(
  p: CompensationProblem,
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
  const size = rows * n;
  const t0 = performance.now();
  signal?.throwIfAborted();

  // Jacobi scaling (settings.scale): solve in X̃ = X D with H̃ = D⁻¹ H D⁻¹, D = diag(H)^½, so every
  // input channel has unit curvature: the same loss and supports, but one ρ fits all channels
  // (outlier channels no longer dominate) and the float32 products see operands of one scale.
  const d = new Float64Array(n).fill(1);
  if (settings.scale) for (let j = 0; j < n; j++) d[j] = Math.sqrt(p.hessian[j * n + j]);
  const h = settings.scale ? new Float64Array(n * n) : p.hessian;
  const wt = settings.scale ? new Float64Array(size) : p.weight;
  if (settings.scale) {
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) h[i * n + j] = p.hessian[i * n + j] / (d[i] * d[j]);
    for (let r = 0; r < rows; r++) for (let j = 0; j < n; j++) wt[r * n + j] = p.weight[r * n + j] * d[j];
  }
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
  const rho1 = (settings.rho === 'auto' ? autoRho(h, n) : settings.rho) * medianDiagonal(h, n, 0);
  const h32 = Float32Array.from(h);
  const inverse1 = await shiftedInverse(matmul, h, n, 0, rho1, mm64);

  // B = W H; Z₀ = W ⊙ M, U₀ = 0.
  const w32 = new Float32Array(size);
  for (let i = 0; i < size; i++) w32[i] = wt[i];
  const bh = await matmul(w32, h32, rows, n, n);
  const b = Float64Array.from(bh);
  const z = new Float64Array(size);
  for (let i = 0; i < size; i++) z[i] = mask[i] ? wt[i] : 0;
  const t1 = performance.now();
  signal?.throwIfAborted();

  const s1 = await admmStep(
    matmul,
    { rows, w: n, support: mask, stride: n, c0: 0, b, t: wt, lossStart: NaN, residualTol: settings.residualTol1, z, inverse: inverse1, rho: rho1, lossTol: settings.lossTol, minIter: settings.minIter, maxIter: settings.maxIter },
    settings.relax,
    settings.anderson,
    signal,
    (iteration, change, residual) => onIteration?.({ step: 1, iteration, change, residual }),
  );
  const t2 = performance.now();

  let s2 = { iterations: 0, change: 0, loss: 0 };
  out.set(z);
  if (k > 0 && k < n) {
    // Step 2 on columns [k, n): X1 = Q(w̄) on E2 (kept columns < k), 0 on E1.
    const wr = n - k;
    const x1 = new Float32Array(rows * k);
    for (let r = 0; r < rows; r++) {
      for (let j = 0; j < k; j++) {
        const i = r * n + j;
        if (mask[i]) x1[r * k + j] = quantizeE2(z[i], r, j);
      }
    }
    const h12 = new Float32Array(k * wr);
    for (let i = 0; i < k; i++) for (let j = 0; j < wr; j++) h12[i * wr + j] = h[i * n + k + j];
    const rho2 = (settings.rho === 'auto' ? autoRho(h, n, k) : settings.rho) * medianDiagonal(h, n, k);
    const inverse2 = await shiftedInverse(matmul, h, n, k, rho2, mm64);
    const x1h = await matmul(x1, h12, rows, k, wr);
    const z2 = new Float64Array(rows * wr);
    const b2 = new Float64Array(rows * wr);
    for (let r = 0; r < rows; r++) {
      for (let j = 0; j < wr; j++) {
        const v = z[r * n + k + j];
        z2[r * wr + j] = v;
        b2[r * wr + j] = bh[r * n + k + j] - x1h[r * wr + j];
      }
    }
    // Scale of step 2's loss for the stopping rule: at the warm start L ≈ step 1's loss plus the
    // E2 rounding's δᵀHδ (its diagonal part; the Pythagorean split of §2.4).
    let start = s1.loss;
    for (let r = 0; r < rows; r++) {
      for (let j = 0; j < k; j++) {
        const i = r * n + j;
        if (!mask[i]) continue;
        const d = x1[r * k + j] - z[i];
        start += d * d * h[j * n + j];
      }
    }
    s2 = await admmStep(
      matmul,
      { rows, w: wr, support: mask, stride: n, c0: k, b: b2, lossStart: start, residualTol: settings.residualTol2, z: z2, inverse: inverse2, rho: rho2, lossTol: settings.lossTol2, minIter: settings.minIter, maxIter: settings.maxIter2 },
      settings.relax,
      settings.anderson,
      signal,
      (iteration, change, residual) => onIteration?.({ step: 2, iteration, change, residual }),
    );
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
