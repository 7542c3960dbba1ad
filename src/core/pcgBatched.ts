// OBR compensation for ALL rows at once with Jacobi-preconditioned conjugate gradients whose
// matrix products are float32 GEMMs on a fast backend (MatrixBackend.matmulF32, e.g. the
// onnxruntime backend in src/runtime/ortBackend.ts). Same problem as compensateRowsDirect
// (obr.ts, obr-algorithm.md §2.3–2.4):
//   pruning:       H_RR x_r = H_RE w_E           for every row r at once:
//                  B = ((W ⊙ ¬M) H) ⊙ M,  each iteration Q = (P H) ⊙ M   (P supported on M)
//   quantization:  A_R2R2 y_r = A_R2E2 ê_E2      (A = H_RR, R2 = kept ∩ [k, n), E2 = kept ∩ [0, k)):
//                  B2 = (Ê[:, :k] H[:k, k:]) ⊙ M2,  each iteration Q = (P[:, k:] H[k:, k:]) ⊙ M2
// CG minimizes the row loss f(x) = (x, −w_E)ᵀ H (x, −w_E) over x on R, and each step lowers it by
// exactly α·rᵀz, so the loss still to gain is estimated by the last `delay` decrements
// (Hestenes–Stiefel); a row stops when that estimate is ≤ lossTol × its current pruning loss.
// Rows that do not get there within maxIter go to the exact per-row solver (compensateRowsDirect).
// GEMMs are float32; all CG scalars (αs, βs, inner products) accumulate in float64.
import type { MatrixBackend } from './backend';
import { type CompensationProblem, compensateRowsDirect } from './obr';
import { groupCode, groupLayout, symmetricCode } from './quantize';

export interface BatchedPcgSettings {
  /** Stop a row when the estimated loss still to gain is ≤ lossTol × its pruning loss. */
  lossTol: number;
  /** Decrements summed for the estimate. */
  delay: number;
  /** Iterations per stage; rows still unconverged are solved exactly. */
  maxIter: number;
  /** Quantization stage: also require rᵀD⁻¹r ≤ residualTol²·(initial) per row. The GPTQ tail's
   *  change δ on R2 meets the remaining gradient −r to first order (cross term 2rᵀδ), so the
   *  residual, not only the loss gap, must be small there. */
  residualTol: number;
  /** Iteration cap of the quantization stage. */
  maxIter2: number;
}

export const DEFAULT_BATCHED_PCG: BatchedPcgSettings = { lossTol: 2e-4, delay: 4, maxIter: 200, residualTol: 1, maxIter2: 400 };

export interface BatchedPcgStats {
  /** Iterations run (the batch shrinks as rows converge). */
  iterations: [number, number];
  /** Row-iterations (sum over iterations of active rows), per stage. */
  rowIterations: [number, number];
  /** Rows handed to the exact solver. */
  fallbackRows: number;
  seconds: [number, number, number];
}

type MatMul = (a: Float32Array, b: Float32Array, m: number, k: number, n: number) => Promise<Float32Array>;

interface Stage {
  /** Columns of the unknowns (c0..n). */
  c0: number;
  /** Row-major (n−c0)×(n−c0) float32 operator block. */
  op: Float32Array;
  /** 0/1 support per row over columns c0..n (rows×w). */
  support: Uint8Array;
  /** Right-hand sides rows×w (float64). */
  rhs: Float64Array;
  /** Per-row loss scale the tolerance is relative to. */
  scale: Float64Array;
  /** The scale is the loss being minimized: lower it by each decrement. */
  shrink: boolean;
  /** Relative residual (D⁻¹-norm) a row must also reach; 0 = loss criterion only. */
  residualTol: number;
  maxIter: number;
}

/** Batched PCG on one stage; returns x (rows×w) and per-row convergence. */
async function batchedPcg(matmul: MatMul, rows: number, w: number, stage: Stage, diagInv: Float64Array, s: BatchedPcgSettings, signal?: AbortSignal): Promise<{ x: Float64Array; r: Float64Array; done: Uint8Array; iterations: number; rowIterations: number }> {
  const { op, support, rhs, shrink } = stage;
  const scale = stage.scale.slice();
  const x = new Float64Array(rows * w);
  const r = rhs.slice();
  const p = new Float64Array(rows * w);
  const rz = new Float64Array(rows);
  const done = new Uint8Array(rows);
  const hist = new Float64Array(rows * s.delay);
  let active: number[] = [];
  const rz0 = new Float64Array(rows);
  for (let i = 0; i < rows; i++) {
    const o = i * w;
    let acc = 0;
    for (let j = 0; j < w; j++) {
      const z = support[o + j] ? r[o + j] * diagInv[j] : 0;
      p[o + j] = z;
      acc += r[o + j] * z;
    }
    rz[i] = acc;
    rz0[i] = acc;
    if (acc > 0) active.push(i);
    else done[i] = 1;
  }
  let it = 0;
  let rowIt = 0;
  const pf = new Float32Array(rows * w);
  while (active.length > 0 && it < stage.maxIter) {
    if (signal?.aborted) throw signal.reason ?? new Error('aborted');
    const m = active.length;
    for (let a = 0; a < m; a++) {
      const o = active[a] * w;
      const d = a * w;
      for (let j = 0; j < w; j++) pf[d + j] = p[o + j];
    }
    const q = await matmul(pf.subarray(0, m * w), op, m, w, w);
    it++;
    rowIt += m;
    const next: number[] = [];
    for (let a = 0; a < m; a++) {
      const i = active[a];
      const o = i * w;
      const d = a * w;
      let pq = 0;
      for (let j = 0; j < w; j++) if (support[o + j]) pq += p[o + j] * q[d + j];
      if (!(pq > 0)) continue; // breakdown: leave to the exact solver
      const alpha = rz[i] / pq;
      let acc = 0;
      for (let j = 0; j < w; j++) {
        if (!support[o + j]) continue;
        x[o + j] += alpha * p[o + j];
        const rv = (r[o + j] -= alpha * q[d + j]);
        acc += rv * rv * diagInv[j];
      }
      const dec = alpha * rz[i];
      hist[i * s.delay + (it % s.delay)] = dec;
      if (shrink) scale[i] -= dec;
      let gain = 0;
      for (let t = 0; t < s.delay; t++) gain += hist[i * s.delay + t];
      const beta = acc / rz[i];
      rz[i] = acc;
      if ((it >= s.delay && gain <= s.lossTol * scale[i] && acc <= stage.residualTol ** 2 * rz0[i]) || acc === 0) {
        done[i] = 1;
        continue;
      }
      for (let j = 0; j < w; j++) if (support[o + j]) p[o + j] = r[o + j] * diagInv[j] + beta * p[o + j];
      next.push(i);
    }
    active = next;
  }
  return { x, r, done, iterations: it, rowIterations: rowIt };
}

/**
 * compensateBatchedPcg(p, backend): W_c = W⊙M + Δ for every row (as compensateRowsDirect), by
 * batched PCG on backend.matmulF32; rows that do not converge are solved exactly.
 */
export async function compensateBatchedPcg(
  p: CompensationProblem,
  backend: MatrixBackend,
  settings: BatchedPcgSettings = DEFAULT_BATCHED_PCG,
  signal?: AbortSignal,
  out: Float64Array = new Float64Array(p.rows * p.cols),
): Promise<{ out: Float64Array; stats: BatchedPcgStats }> {
  const matmul = backend.matmulF32?.bind(backend);
  if (!matmul) throw new Error(`backend ${backend.name} has no matmulF32 (needed by the batched PCG solver)`);
  const { weight: w, rows, cols: n, hessian: h, mask, scales, splitCol } = p;
  const k = Math.max(0, Math.min(n, splitCol));
  const maxq = 2 ** (p.bits - 1) - 1;
  const t0 = performance.now();
  const h32 = Float32Array.from(h);
  const diagInv = new Float64Array(n);
  for (let j = 0; j < n; j++) diagInv[j] = 1 / h[j * n + j];

  // Stage 1: pruning. B = ((W⊙¬M) H) ⊙ M; the pruning-only loss c_r = Σ_E w (W⊙¬M H).
  const wp32 = new Float32Array(rows * n);
  for (let i = 0; i < rows * n; i++) wp32[i] = mask[i] ? 0 : w[i];
  const g = await matmul(wp32, h32, rows, n, n);
  const rhs1 = new Float64Array(rows * n);
  const loss1 = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    const o = r * n;
    let c = 0;
    for (let j = 0; j < n; j++) {
      if (mask[o + j]) rhs1[o + j] = g[o + j];
      else c += w[o + j] * g[o + j];
    }
    loss1[r] = c;
  }
  const s1 = await batchedPcg(matmul, rows, n, { c0: 0, op: h32, support: mask, rhs: rhs1, scale: loss1, shrink: true, residualTol: 1, maxIter: settings.maxIter }, diagInv, settings, signal);
  const t1 = performance.now();

  // W̄ = W⊙M + x; Ê on E2 (kept, < k).
  for (let i = 0; i < rows * n; i++) out[i] = mask[i] ? w[i] + s1.x[i] : 0;
  let s2: { iterations: number; rowIterations: number; done: Uint8Array } = { iterations: 0, rowIterations: 0, done: new Uint8Array(rows).fill(1) };
  if (k > 0 && k < n) {
    const wr = n - k;
    const e32 = new Float32Array(rows * k);
    // ê on E2 with each column's group quantizer (one group per row when groupSize is 0).
    const { gs, groups } = groupLayout(n, p.groupSize);
    const zeros = p.zeros;
    for (let r = 0; r < rows; r++) {
      for (let j = 0; j < k; j++) {
        const v = out[r * n + j];
        if (!mask[r * n + j]) continue;
        const gi = r * groups + ((j / gs) | 0);
        const s = scales[gi];
        if (zeros) e32[r * k + j] = v - (groupCode(v, s, zeros[gi], maxq) - zeros[gi]) * s;
        else e32[r * k + j] = v - symmetricCode(v, s, maxq) * s;
      }
    }
    // One GEMM Ê[:, :k] · H[:k, :] gives the right-hand sides (columns ≥ k) and the loss of the
    // uncompensated E2 rounding c2 = ê H_E2E2 ê (columns < k).
    const hTop = Float32Array.from(h.subarray(0, k * n));
    const hBr = new Float32Array(wr * wr);
    for (let i = 0; i < wr; i++) for (let j = 0; j < wr; j++) hBr[i * wr + j] = h[(k + i) * n + k + j];
    const g2 = await matmul(e32, hTop, rows, k, n);
    const support2 = new Uint8Array(rows * wr);
    const rhs2 = new Float64Array(rows * wr);
    const scale2 = new Float64Array(rows);
    for (let r = 0; r < rows; r++) {
      let c2 = 0;
      for (let j = 0; j < k; j++) c2 += e32[r * k + j] * g2[r * n + j];
      for (let j = 0; j < wr; j++) {
        if (mask[r * n + k + j]) {
          support2[r * wr + j] = 1;
          // plus stage 1's remaining residual on R2, so this (cheaper, tighter) solve also
          // removes the pruning solve's leftover gradient there.
          rhs2[r * wr + j] = g2[r * n + k + j] + s1.r[r * n + k + j];
        }
      }
      // The row's loss after stage 1 plus the E2 rounding loss; CG lowers the second term.
      scale2[r] = Math.max(0, loss1[r] - prunedGain(s1.x, rhs1, r, n)) + c2;
    }
    const d2 = diagInv.subarray(k);
    const res = await batchedPcg(matmul, rows, wr, { c0: k, op: hBr, support: support2, rhs: rhs2, scale: scale2, shrink: true, residualTol: settings.residualTol, maxIter: settings.maxIter2 }, d2, settings, signal);
    for (let r = 0; r < rows; r++) for (let j = 0; j < wr; j++) if (support2[r * wr + j]) out[r * n + k + j] += res.x[r * wr + j];
    s2 = res;
  }
  const t2 = performance.now();

  // Exact fallback for rows that did not converge in either stage.
  let fallbackRows = 0;
  for (let r = 0; r < rows; r++) {
    if (s1.done[r] && s2.done[r]) continue;
    fallbackRows++;
    compensateRowsDirect(p, out, r, r + 1, signal);
  }
  const t3 = performance.now();
  return {
    out,
    stats: {
      iterations: [s1.iterations, s2.iterations],
      rowIterations: [s1.rowIterations, s2.rowIterations],
      fallbackRows,
      seconds: [(t1 - t0) / 1000, (t2 - t1) / 1000, (t3 - t2) / 1000],
    },
  };
}

/** bᵀx of row r: the pruning loss recovered by x (f(x*) = c − bᵀx*). */
function prunedGain(x: Float64Array, b: Float64Array, r: number, n: number): number {
  let acc = 0;
  for (let j = r * n; j < (r + 1) * n; j++) acc += x[j] * b[j];
  return acc;
}
