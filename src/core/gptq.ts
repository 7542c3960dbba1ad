// GPTQ (no act-order, static scales, lazy batches of 128 columns) and the joint SparseGPT+GPTQ
// baseline (pitfall P15). Both work on row-major W (rows×cols) and on U = upper Cholesky factor
// of the damped H⁻¹ (H⁻¹ = Uᵀ U), shared by all rows.
// Each row's recursion is independent of the others given U, the scales and the mask, so rows
// can be processed in any order or in batches (invariant §7.9).
//
// Groups (issue 15): the reference GPTQ offers two group modes. The dynamic one fits a group's
// scale when the sweep reaches the group's first column, from the weights as updated by the
// errors of earlier columns; `static_groups` fits every group's scale on the original weights
// before the sweep. We use STATIC groups everywhere: OBR's rule P2 says the quantizer comes from
// the dense weights before pruning and compensation, and using one grid for every recipe keeps
// the recipes comparable and the OBR transfer (§2.4) consistent with the GPTQ tail. The callers
// fit the grid up front (quantize.ts fitGroupGrid on the dense W) and pass it in.
import { rowKernels } from './kernels';
import { symmetricGrid } from './quantize';

export interface GptqOptions {
  /** Kept-weight mask (1 = kept); pruned entries are forced to exactly 0 when reached. */
  mask?: Uint8Array;
  /** First column GPTQ writes; errors of columns before it are not propagated (OBR tail, §2.5). */
  startCol?: number;
  blockSize?: number;
  /** Integer codes output (rows×cols); only columns ≥ startCol are written. */
  codes?: Int8Array;
  /** Columns per scale group (0 = one scale per row); `scales` is then rows×⌈cols/groupSize⌉. */
  groupSize?: number;
  /** Signed zero points, same layout as the scales (asymmetric grid). */
  zeros?: Float64Array;
}

/**
 * In-place GPTQ over columns [startCol, cols) of W: for each column j (left to right),
 * q = Q(w_j)⊙M_j, err = (w_j − q)/U_jj, later columns −= err·U[j, later]. Inside a block of
 * `blockSize` columns the update is immediate; the block's errors reach the trailing columns in
 * one batched update (GPTQ's lazy batch; mathematically identical).
 */
export function gptqInPlace(w: Float64Array, rows: number, cols: number, u: Float64Array, scales: Float64Array, bits: number, options: GptqOptions = {}): void {
  const { maxq } = symmetricGrid(bits);
  rowKernels.gptqRows(w, cols, u, scales, maxq, options.mask ?? null, options.startCol ?? 0, options.blockSize ?? 128, options.codes ?? null, 0, rows, options.groupSize ?? 0, options.zeros ?? null);
}

type SweepSparsity = { kind: 'unstructured'; ratio: number } | { kind: 'nm'; n: number; m: number } | { kind: 'dense' };

/**
 * Joint SparseGPT pruning + GPTQ quantization (OBR_Wrapper.baseline_with_sparsegpt_gptq_obs):
 * per 128-column block, unstructured masks select the block's lowest w²/U_jj² over ALL rows
 * (threshold at ⌊count·s⌋, entries ≤ threshold pruned); N:M masks choose per row at every M-th
 * column from the current (updated) weights. Pruned weights become 0, kept ones are quantized,
 * and the error is fed back as in GPTQ: immediately inside the block, then to every later
 * column in one dense product W[:, i2:] −= Err·U[i1:i2, i2:] over all rows (the reference's lazy
 * batch; kernels.ts sparseGptSweep). Returns the mask (1 = kept); W is overwritten with Ŵ.
 * `scales` (and `zeros`) are the static group grid (see the top of this file); pruned entries
 * get code = zero so that their value scale·(code − zero) is exactly 0.
 */
export function sparseGptInPlace(
  w: Float64Array,
  rows: number,
  cols: number,
  u: Float64Array,
  scales: Float64Array,
  bits: number,
  sparsity: SweepSparsity,
  codes?: Int8Array,
  blockSize = 128,
  groupSize = 0,
  zeros?: Float64Array,
): Uint8Array {
  const { maxq } = symmetricGrid(bits);
  const sweep = rowKernels.sparseGptSweep(w, rows, cols, u, scales, maxq, sparsity, codes ?? null, blockSize, groupSize, zeros ?? null);
  while (sweep.step());
  return sweep.finish();
}

/**
 * sparseGptInPlace that yields to the event loop between blocks and stops with the signal's
 * reason when it is aborted (a 2048-column layer is 16 blocks of a fraction of a second each).
 */
export async function sparseGptInPlaceAsync(
  w: Float64Array,
  rows: number,
  cols: number,
  u: Float64Array,
  scales: Float64Array,
  bits: number,
  sparsity: SweepSparsity,
  options: { codes?: Int8Array; blockSize?: number; groupSize?: number; zeros?: Float64Array; signal?: AbortSignal } = {},
): Promise<Uint8Array> {
  const { maxq } = symmetricGrid(bits);
  const sweep = rowKernels.sparseGptSweep(w, rows, cols, u, scales, maxq, sparsity, options.codes ?? null, options.blockSize ?? 128, options.groupSize ?? 0, options.zeros ?? null);
  for (;;) {
    options.signal?.throwIfAborted();
    if (!sweep.step()) break;
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  return sweep.finish();
}
