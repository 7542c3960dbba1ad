// Dense linear-algebra kernels on flat, row-major Float64Array matrices.
// Layout: an r×c matrix `a` stores element (i, j) at a[i*c + j]. Symmetric matrices are stored
// in full. Hot loops index typed arrays directly; no per-element accessor calls.
import { rowKernels } from './kernels';

export class LinAlgError extends Error {
  override name = 'LinAlgError';
}

/**
 * cholesky(a, n): in-place lower factor A = L Lᵀ (false when a pivot is not positive);
 * solveLowerInPlace / solveLowerTransposedInPlace / choleskySolveInPlace(l, n, b, ld = n):
 * triangular and SPD solves on the leading n×n block of a matrix with row stride ld.
 * Defined in ./kernels.ts so worker threads can run the same code.
 */
export const { cholesky, solveLowerInPlace, solveLowerTransposedInPlace, choleskySolveInPlace } = rowKernels;

/**
 * Cholesky with relative damping retries: factors A + λ·mean(diag A)·I for λ in `damps`
 * (first that succeeds). Returns the factor (new array) and the λ used.
 */
export function choleskyWithRetry(a: Float64Array, n: number, damps: readonly number[] = [0, 1e-6, 1e-4, 1e-2, 1e-1]): { l: Float64Array; damp: number } {
  let mean = 0;
  for (let i = 0; i < n; i++) mean += a[i * n + i];
  mean = n > 0 ? mean / n : 0;
  for (const d of damps) {
    const l = a.slice();
    if (d > 0) for (let i = 0; i < n; i++) l[i * n + i] += d * mean;
    if (cholesky(l, n)) return { l, damp: d };
  }
  throw new LinAlgError(`matrix (${n}×${n}) is not positive definite even with damping ${damps[damps.length - 1]}`);
}

/** x = A⁻¹ b for SPD A (n×n). Throws LinAlgError when A is not SPD. */
export function solveSpd(a: Float64Array, n: number, b: Float64Array): Float64Array {
  const l = a.slice();
  if (!cholesky(l, n)) throw new LinAlgError(`solveSpd: matrix (${n}×${n}) is not positive definite`);
  const x = b.slice();
  choleskySolveInPlace(l, n, x);
  return x;
}

/** Inverse of a lower-triangular n×n matrix (new array, lower triangular; WebAssembly when available). */
export function invertLower(l: Float64Array, n: number): Float64Array {
  return rowKernels.invertLower(l, n);
}

/** Inverse of an SPD matrix from its lower Cholesky factor: A⁻¹ = L⁻ᵀ L⁻¹ (full symmetric storage). */
export function inverseFromCholesky(l: Float64Array, n: number): Float64Array {
  const li = invertLower(l, n);
  const out = new Float64Array(n * n);
  // out[i, j] = Σ_k li[k, i] li[k, j], k ≥ max(i, j). Accumulate as rank-1 updates by rows of li.
  for (let k = 0; k < n; k++) {
    const rk = k * n;
    for (let i = 0; i <= k; i++) {
      const v = li[rk + i];
      if (v === 0) continue;
      const ri = i * n;
      for (let j = 0; j <= i; j++) out[ri + j] += v * li[rk + j];
    }
  }
  for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) out[j * n + i] = out[i * n + j];
  return out;
}

/** Inverse of an SPD matrix (new array). Throws LinAlgError when not SPD. */
export function inverseSpd(a: Float64Array, n: number): Float64Array {
  const l = a.slice();
  if (!cholesky(l, n)) throw new LinAlgError(`inverseSpd: matrix (${n}×${n}) is not positive definite`);
  return inverseFromCholesky(l, n);
}

/**
 * Upper factor U of A⁻¹ with A⁻¹ = Uᵀ U, computed without forming A⁻¹ twice:
 * let P reverse the index order; chol(P A P) = K Kᵀ (K lower). Then A = (P K P)(P K P)ᵀ with
 * P K P upper, so A⁻¹ = (P K P)⁻ᵀ (P K P)⁻¹ and U = (P K P)⁻¹ is upper triangular with
 * A⁻¹ = Uᵀ U. Uniqueness of the Cholesky factor (positive diagonal) makes it equal to
 * torch.linalg.cholesky(A⁻¹, upper=True), which GPTQ computes as chol → cholesky_inverse → upper chol.
 *
 * With `from` > 0 only the trailing block U[from:, from:] is computed (the rest of the n×n
 * result is 0): it equals the upper factor of (A[from:, from:])⁻¹, because A = U⁻¹U⁻ᵀ with U⁻¹
 * upper gives A[from:, from:] = C Cᵀ for C = (U[from:, from:])⁻¹. A GPTQ pass that starts at
 * column `from` (OBR's tail, §2.5) reads nothing else, and this costs ((n − from)/n)³ of the whole.
 */
export function upperCholeskyOfInverse(a: Float64Array, n: number, from = 0): Float64Array {
  const m = n - from;
  // Factor P·A[from:, from:]·P in the kernels' scratch memory (see kernels.ts).
  const r = rowKernels.scratchMatrix(m * m);
  for (let i = 0; i < m; i++) {
    const si = (n - 1 - i) * n;
    const ri = i * m;
    for (let j = 0; j < m; j++) r[ri + j] = a[si + (n - 1 - j)];
  }
  if (!cholesky(r, m)) throw new LinAlgError(`matrix (${m}×${m}) is not positive definite`);
  const kinv = invertLower(r, m); // K⁻¹ lower
  // U[from + i, from + j] = K⁻¹[m−1−i, m−1−j] (upper since K⁻¹ is lower).
  const u = new Float64Array(n * n);
  for (let i = 0; i < m; i++) {
    const si = (m - 1 - i) * m;
    const ri = (from + i) * n + from;
    for (let j = i; j < m; j++) u[ri + j] = kinv[si + (m - 1 - j)];
  }
  return u;
}

/**
 * C (m×n) += A (m×k) · B (k×n), all row-major. Blocked over k and n so a panel of B stays in
 * cache while every row of A streams past it. Zero entries of A are skipped (masked operands).
 */
export function gemmAccumulate(a: Float64Array, b: Float64Array, c: Float64Array, m: number, k: number, n: number, kBlock = 128, nBlock = 512): void {
  for (let n0 = 0; n0 < n; n0 += nBlock) {
    const n1 = Math.min(n, n0 + nBlock);
    for (let k0 = 0; k0 < k; k0 += kBlock) {
      const k1 = Math.min(k, k0 + kBlock);
      for (let i = 0; i < m; i++) {
        const ra = i * k;
        const rc = i * n;
        for (let p = k0; p < k1; p++) {
          const av = a[ra + p];
          if (av === 0) continue;
          const rb = p * n;
          for (let j = n0; j < n1; j++) c[rc + j] += av * b[rb + j];
        }
      }
    }
  }
}

/** C = A · B (new array). */
export function gemm(a: Float64Array, b: Float64Array, m: number, k: number, n: number): Float64Array {
  const c = new Float64Array(m * n);
  gemmAccumulate(a, b, c, m, k, n);
  return c;
}

/** Symmetric rank-k product C = A Aᵀ (A m×k row-major) in full storage; only i ≥ j computed. */
export function syrk(a: Float64Array, m: number, k: number): Float64Array {
  const c = new Float64Array(m * m);
  for (let i = 0; i < m; i++) {
    const ri = i * k;
    for (let j = 0; j <= i; j++) {
      const rj = j * k;
      let s0 = 0, s1 = 0;
      let p = 0;
      for (; p + 1 < k; p += 2) {
        s0 += a[ri + p] * a[rj + p];
        s1 += a[ri + p + 1] * a[rj + p + 1];
      }
      if (p < k) s0 += a[ri + p] * a[rj + p];
      c[i * m + j] = s0 + s1;
      c[j * m + i] = s0 + s1;
    }
  }
  return c;
}

/** Σ_r d_rᵀ H d_r = tr(D H Dᵀ) for D (rows×n), H n×n symmetric (the kernels' quadratic form). */
export function traceQuadratic(d: Float64Array, rows: number, n: number, h: Float64Array): number {
  return rowKernels.quadraticFormSum(d, null, rows, n, h);
}

/** Relative damping: returns H + λ·mean(diag H)·I (new array). */
export function dampHessian(h: Float64Array, n: number, lambda: number): Float64Array {
  const out = h.slice();
  let mean = 0;
  for (let i = 0; i < n; i++) mean += h[i * n + i];
  mean /= Math.max(1, n);
  const add = lambda * mean;
  for (let i = 0; i < n; i++) out[i * n + i] += add;
  return out;
}
