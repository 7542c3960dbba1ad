// Weight quantizers. The paper's grid (obr-algorithm.md §1.7) is symmetric per output row:
// integer codes in [−2^(b−1), 2^(b−1)−1] times one scale per row, the scale fitted once on the
// dense weights (pitfall P2) with the MSE shrink search (p ∈ {1.00 … 0.21}, |·|^2.4).
// Group-wise grids (issue 15) give every `groupSize` consecutive input columns of a row their own
// scale, fitted the same way on the group's dense weights; asymmetric grids add an integer zero
// point per group. Codes stay in the SIGNED range in both modes and the zero point is shifted
// the same way (zero ∈ [−2^(b−1), 2^(b−1)−1]); the value is scale·(code − zero).
//
// The asymmetric search is the reference min/max quantizer with its MSE shrink search (GPTQ's
// Quantizer.find_params with mse=True, QuaRot's w_clip for asymmetric weights): the range
// [min(w, 0), max(w, 0)] shrinks at both ends by the same p ∈ {1.00 … 0.21}, scale =
// p·(max − min)/(2^b − 1), zero = round(−p·min/scale), and the p minimizing Σ|Q(w) − w|^2.4 wins.
// We chose it over a joint (scale, zero) search because it is what asymmetric int4 checkpoints are
// produced with, it keeps the zero point consistent with the clipped range, and it costs the
// same 80 candidates per group as the symmetric search (a 2-D search would cost ×16).
import { rowKernels } from './kernels';

/** roundHalfEven(x): round half to even, as torch.round (−0 normalized to +0).
 *  symmetricCode(w, scale, maxq): clamp(round(w/scale), −(maxq+1), maxq).
 *  groupCode(w, scale, zero, maxq): clamp(round(w/scale) + zero, −(maxq+1), maxq) (signed zero).
 *  groupLayout(cols, groupSize): { gs, groups }: column j of row r uses scales[r·groups + ⌊j/gs⌋]. See ./kernels.ts. */
export const { roundHalfEven, symmetricCode, groupCode, groupLayout } = rowKernels;

/** Scale groups per row: ⌈cols/groupSize⌉, or 1 when groupSize is 0 (one scale per row). */
export function groupCount(cols: number, groupSize: number): number {
  return groupSize > 0 ? Math.ceil(cols / groupSize) : 1;
}

/** A layer's quantization grid: scales (and zero points) of rows×groups, row-major. */
export interface GroupGrid {
  /** rows×groups, groups = groupCount(cols, groupSize). */
  scales: Float64Array;
  /** Signed integer zero points, same layout; absent = symmetric. */
  zeros?: Float64Array;
  /** Columns per group; 0 = one scale per row. */
  groupSize: number;
}

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

/**
 * The grid of W (rows×cols) fitted on the weights given (pass the DENSE W, P2): per group the
 * symmetric MSE search of symmetricRowScales, or with `asymmetric` the min/max search described
 * at the top of this file. groupSize 0 and symmetric is exactly symmetricRowScales.
 */
export function fitGroupGrid(w: Float64Array, rows: number, cols: number, bits: number, layout: { groupSize: number; asymmetric?: boolean }, search: ScaleSearch = { mse: true }): GroupGrid {
  const { maxq } = symmetricGrid(bits);
  const grid = search.grid ?? 100;
  const steps = search.mse ? Math.floor((search.maxShrink ?? 0.8) * grid) : 1;
  const groups = groupCount(cols, layout.groupSize);
  const scales = new Float64Array(rows * groups);
  const zeros = layout.asymmetric ? new Float64Array(rows * groups) : null;
  rowKernels.groupScalesRange(w, cols, maxq, search.norm ?? 2.4, grid, steps, layout.groupSize, scales, zeros, 0, rows);
  return zeros ? { scales, zeros, groupSize: layout.groupSize } : { scales, groupSize: layout.groupSize };
}

/** Fake-quantizes W onto a fixed group grid (RTN); writes signed codes when given. Returns Ŵ. */
export function quantizeGroups(w: Float64Array, rows: number, cols: number, grid: GroupGrid, bits: number, codes?: Int8Array): Float64Array {
  const { maxq } = symmetricGrid(bits);
  const out = new Float64Array(rows * cols);
  rowKernels.quantizeRange(w, out, codes ?? null, cols, grid.scales, maxq, 0, cols, 0, rows, grid.groupSize, grid.zeros ?? null);
  return out;
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

/**
 * Grouped symmetric quantization: every `groupSize` consecutive columns of a row get their own
 * absmax (or MSE-searched) scale. Returns Ŵ and the scales (rows × ⌈cols/groupSize⌉).
 */
export function quantizeRowsGrouped(w: Float64Array, rows: number, cols: number, bits: number, groupSize: number, search: ScaleSearch = { mse: false }): { weight: Float64Array; scales: Float64Array } {
  const grid = fitGroupGrid(w, rows, cols, bits, { groupSize }, search);
  return { weight: quantizeGroups(w, rows, cols, grid, bits), scales: grid.scales };
}
