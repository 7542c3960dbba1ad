// Pruning masks (1 = kept) from per-weight scores; lower score = pruned first.
// Unstructured: each row prunes its ⌊n·s⌋ lowest scores (Wanda, pitfall P7), stable (ties →
// lower column index pruned first). N:M: every block of M consecutive columns of a row prunes
// its N lowest ("2:4" prunes 2 of every 4).
import type { Sparsity } from '../protocol/recipes';

/** Wanda score S_rj = |W_rj|·sqrt(a_j), a_j = per-input-channel activation energy. */
export function wandaScores(w: Float64Array, rows: number, cols: number, channelEnergy: Float64Array): Float64Array {
  const root = new Float64Array(cols);
  for (let j = 0; j < cols; j++) root[j] = Math.sqrt(Math.max(0, channelEnergy[j]));
  const s = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    for (let j = 0; j < cols; j++) s[o + j] = Math.abs(w[o + j]) * root[j];
  }
  return s;
}

export function magnitudeScores(w: Float64Array): Float64Array {
  const s = new Float64Array(w.length);
  for (let i = 0; i < w.length; i++) s[i] = Math.abs(w[i]);
  return s;
}

/** SparseGPT score w²/U_jj² with U the upper Cholesky factor of the damped H⁻¹ (Table 5 code). */
export function sparseGptScores(w: Float64Array, rows: number, cols: number, upperInv: Float64Array): Float64Array {
  const s = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    for (let j = 0; j < cols; j++) {
      const d = upperInv[j * cols + j];
      s[o + j] = (w[o + j] * w[o + j]) / (d * d);
    }
  }
  return s;
}

/** Number of entries an unstructured mask prunes per row: ⌊n·s⌋. */
export function prunedPerRow(cols: number, ratio: number): number {
  return Math.floor(cols * ratio + 1e-9);
}

/** Mask (rows×cols, 1 = kept) pruning the lowest scores per row or per N:M block. */
export function pruneMask(scores: Float64Array, rows: number, cols: number, sparsity: Sparsity): Uint8Array {
  const mask = new Uint8Array(rows * cols).fill(1);
  if (sparsity.kind === 'dense') return mask;
  const idx = new Int32Array(cols);
  if (sparsity.kind === 'unstructured') {
    const k = prunedPerRow(cols, sparsity.ratio);
    if (k === 0) return mask;
    const order = Array.from({ length: cols }, (_, j) => j);
    for (let r = 0; r < rows; r++) {
      const o = r * cols;
      // Stable ascending sort of column indices by score.
      order.sort((a, b) => scores[o + a] - scores[o + b] || a - b);
      for (let t = 0; t < k; t++) mask[o + order[t]] = 0;
    }
    return mask;
  }
  const { n, m } = sparsity;
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    for (let b0 = 0; b0 < cols; b0 += m) {
      const width = Math.min(m, cols - b0);
      const prune = Math.min(n, width);
      for (let t = 0; t < width; t++) idx[t] = b0 + t;
      // Selection of the `prune` lowest scores in a tiny block (insertion sort, stable).
      for (let a = 1; a < width; a++) {
        const v = idx[a];
        let p = a - 1;
        while (p >= 0 && scores[o + idx[p]] > scores[o + v]) {
          idx[p + 1] = idx[p];
          p--;
        }
        idx[p + 1] = v;
      }
      for (let t = 0; t < prune; t++) mask[o + idx[t]] = 0;
    }
  }
  return mask;
}
