// OBR closed-form compensation, obr-algorithm.md §2.3–2.4, exact per-row solver.
// For each row c with kept set R (ascending) and pruned set E:
//   pruning:       w̄_R = w_R + H_RR⁻¹ H_RE w_E                       (sign P1: old − new = w_E)
//   quantization:  ê = w̄ − Q_c(w̄);  E2 = {j∈R : j<k}, R2 = {j∈R : j≥k}  (column split, P3)
//                  w̄_R2 += A_R2R2⁻¹ A_R2E2 ê_E2 with A = H_RR          (one transfer E2→R2)
// One factorization per row: R is ordered [R2, E2] before factorizing A, so the leading block
// of chol(A_perm) is chol(A_R2R2) and the second solve reuses it (§2.7).
// Rows with E = ∅ still get the quantization transfer (clean behaviour, P5).
import { type CompensationProblem, type PcgSettings, rowKernels } from './kernels';

export type { CompensationProblem, PcgSettings };

export const DEFAULT_PCG: PcgSettings = { tol: 1e-7, maxIter: 400 };

/**
 * compensateRowsDirect(p, out, row0, row1, signal): rows [row0, row1) of W_c = W⊙M + Δ into
 * `out`, exact (one Cholesky of the gathered [R2, E2] block per row).
 * compensateRowsPcg(p, out, row0, row1, signal, settings): the same with Jacobi-preconditioned
 * CG on the gathered block (exact Cholesky fallback when CG does not converge); returns the
 * CG iterations used. pcgSolveInPlace: the CG solve itself.
 */
export const { compensateRowsDirect, compensateRowsPcg, pcgSolveInPlace } = rowKernels;
