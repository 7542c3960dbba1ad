// Weight quantizers. The OBR path uses the symmetric per-row grid of obr-algorithm.md §1.7:
// integer codes in [−2^(b−1), 2^(b−1)−1] times one scale per output row, the scale fitted once
// on the dense weights (pitfall P2) with the MSE shrink search (p ∈ {1.00 … 0.21}, |·|^2.4).
// Asymmetric and grouped variants are exported for baselines.
import { rowKernels } from './kernels';

/** roundHalfEven(x): round half to even, as torch.round (−0 normalized to +0).
 *  symmetricCode(w, scale, maxq): clamp(round(w/scale), −(maxq+1), maxq). See ./kernels.ts. */
export const { roundHalfEven, symmetricCode } = rowKernels;

export interface SymmetricGrid {
  bits: number;
  /** Largest positive code 2^(b−1)−1; codes lie in [−(maxq+1), maxq]. */
  maxq: number;
}

export function symmetricGrid(bits: number): SymmetricGrid {
  if (!Number.isInteger(bits) || bits < 2 || bits > 8) throw new RangeError(`weight bits must be an integer in 2..8, got ${bits}`);
  return { bits, maxq: 2 ** (bits - 1) - 1 };
}

export interface ScaleSearch {
  /** MSE shrink search (QuaRot's w_clip); false = plain absmax. */
  mse: boolean;
  /** Error exponent of the search (2.4). */
  norm?: number;
  /** Grid points per unit shrink (100). */
  grid?: number;
  /** Largest shrink (0.8 → p down to 0.21). */
  maxShrink?: number;
}

/**
 * Per-row symmetric scales of W (rows×cols, row-major). xmax_r = max(|min(w,0)|, max(w,0)),
 * all-zero rows use xmax = 1 (as the reference quantizer), scale = max(xmax/maxq, 1e-5)… with
 * the MSE search, the scale p·xmax/maxq minimizing Σ|Q(w)−w|^2.4 over p = 1 − i/grid,
 * i = 0 … maxShrink·grid − 1 (first minimum wins).
 */
export function symmetricRowScales(w: Float64Array, rows: number, cols: number, bits: number, search: ScaleSearch = { mse: true }): Float64Array {
  const { maxq } = symmetricGrid(bits);
  const grid = search.grid ?? 100;
  const steps = search.mse ? Math.floor((search.maxShrink ?? 0.8) * grid) : 1;
  const scales = new Float64Array(rows);
  rowKernels.symmetricRowScalesRange(w, cols, maxq, search.norm ?? 2.4, grid, steps, scales, 0, rows);
  return scales;
}

/** Fake-quantizes W row-wise onto fixed per-row scales; writes codes when given. Returns Ŵ. */
export function quantizeRows(w: Float64Array, rows: number, cols: number, scales: Float64Array, bits: number, codes?: Int8Array): Float64Array {
  const { maxq } = symmetricGrid(bits);
  const out = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    const s = scales[r];
    for (let j = 0; j < cols; j++) {
      const q = symmetricCode(w[o + j], s, maxq);
      out[o + j] = q * s;
      if (codes) codes[o + j] = q;
    }
  }
  return out;
}

/** Asymmetric per-row (min/max) quantization: codes in [0, 2^b−1], ŵ = s·(q − z). Baselines only. */
export function quantizeRowsAsymmetric(w: Float64Array, rows: number, cols: number, bits: number): { weight: Float64Array; scales: Float64Array; zeros: Float64Array } {
  const maxq = 2 ** bits - 1;
  const weight = new Float64Array(rows * cols);
  const scales = new Float64Array(rows);
  const zeros = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    let lo = 0;
    let hi = 0;
    for (let j = 0; j < cols; j++) {
      lo = Math.min(lo, w[o + j]);
      hi = Math.max(hi, w[o + j]);
    }
    if (lo === 0 && hi === 0) {
      lo = -1;
      hi = 1;
    }
    const s = (hi - lo) / maxq;
    const z = roundHalfEven(-lo / s);
    scales[r] = s;
    zeros[r] = z;
    for (let j = 0; j < cols; j++) {
      const q = Math.min(maxq, Math.max(0, roundHalfEven(w[o + j] / s) + z));
      weight[o + j] = s * (q - z);
    }
  }
  return { weight, scales, zeros };
}

/**
 * Grouped symmetric quantization: every `groupSize` consecutive columns of a row get their own
 * absmax (or MSE-searched) scale. Returns Ŵ and the scales (rows × ⌈cols/groupSize⌉). Baselines only.
 */
export function quantizeRowsGrouped(w: Float64Array, rows: number, cols: number, bits: number, groupSize: number, search: ScaleSearch = { mse: false }): { weight: Float64Array; scales: Float64Array } {
  const groups = Math.ceil(cols / groupSize);
  const weight = new Float64Array(rows * cols);
  const scales = new Float64Array(rows * groups);
  const { maxq } = symmetricGrid(bits);
  for (let g = 0; g < groups; g++) {
    const c0 = g * groupSize;
    const width = Math.min(cols, c0 + groupSize) - c0;
    const block = new Float64Array(rows * width);
    for (let r = 0; r < rows; r++) for (let j = 0; j < width; j++) block[r * width + j] = w[r * cols + c0 + j];
    const s = symmetricRowScales(block, rows, width, bits, search);
    for (let r = 0; r < rows; r++) {
      scales[r * groups + g] = s[r];
      for (let j = 0; j < width; j++) weight[r * cols + c0 + j] = symmetricCode(block[r * width + j], s[r], maxq) * s[r];
    }
  }
  return { weight, scales };
}
