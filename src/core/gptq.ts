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
import { groupCode, groupLayout, symmetricCode, symmetricGrid } from './quantize';

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

/**
 * Joint SparseGPT pruning + GPTQ quantization (OBR_Wrapper.baseline_with_sparsegpt_gptq_obs):
 * per 128-column block, unstructured masks select the block's lowest w²/U_jj² over ALL rows
 * (threshold at ⌊count·s⌋, entries ≤ threshold pruned); N:M masks choose per row at every M-th
 * column from the current (updated) weights. Pruned weights become 0, kept ones are quantized,
 * and the error is fed back as in GPTQ. Returns the mask (1 = kept); W is overwritten with Ŵ.
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
  sparsity: { kind: 'unstructured'; ratio: number } | { kind: 'nm'; n: number; m: number } | { kind: 'dense' },
  codes?: Int8Array,
  blockSize = 128,
  groupSize = 0,
  zeros?: Float64Array,
): Uint8Array {
  const { maxq } = symmetricGrid(bits);
  const { gs, groups } = groupLayout(cols, groupSize);
  const mask = new Uint8Array(rows * cols).fill(1);
  const err = new Float64Array(blockSize);
  for (let i1 = 0; i1 < cols; i1 += blockSize) {
    const i2 = Math.min(cols, i1 + blockSize);
    const count = i2 - i1;
    if (sparsity.kind === 'unstructured') {
      const tmp = new Float64Array(rows * count);
      for (let r = 0; r < rows; r++) {
        for (let j = i1; j < i2; j++) {
          const d = u[j * cols + j];
          const v = w[r * cols + j];
          tmp[r * count + j - i1] = (v * v) / (d * d);
        }
      }
      const sorted = tmp.slice().sort();
      const at = Math.floor(tmp.length * sparsity.ratio + 1e-9);
      if (at < tmp.length) {
        const thresh = sorted[at];
        for (let r = 0; r < rows; r++) for (let j = i1; j < i2; j++) if (tmp[r * count + j - i1] <= thresh) mask[r * cols + j] = 0;
      }
    }
    for (let r = 0; r < rows; r++) {
      const o = r * cols;
      for (let j = i1; j < i2; j++) {
        const gi = r * groups + ((j / gs) | 0);
        const s = scales[gi];
        const z = zeros ? zeros[gi] : 0;
        if (sparsity.kind === 'nm' && (j - i1) % sparsity.m === 0) {
          // Prune the N lowest w²/U_jj² among the next M columns of this row (current values).
          const width = Math.min(sparsity.m, i2 - j);
          const idx = Array.from({ length: width }, (_, t) => j + t);
          const score = (c: number): number => (w[o + c] * w[o + c]) / (u[c * cols + c] * u[c * cols + c]);
          idx.sort((a, b) => score(a) - score(b) || a - b);
          for (let t = 0; t < Math.min(sparsity.n, width); t++) mask[o + idx[t]] = 0;
        }
        const v = w[o + j];
        let q = 0;
        let code = z;
        if (mask[o + j] === 1) {
          // z = 0 on a symmetric grid, where (code − 0)·s is exactly code·s.
          code = zeros ? groupCode(v, s, z, maxq) : symmetricCode(v, s, maxq);
          q = (code - z) * s;
        }
        w[o + j] = q;
        if (codes) codes[o + j] = code;
        const e = (v - q) / u[j * cols + j];
        err[j - i1] = e;
        if (e !== 0) {
          const ru = j * cols;
          for (let t = j + 1; t < i2; t++) w[o + t] -= e * u[ru + t];
        }
      }
      for (let j = i1; j < i2; j++) {
        const e = err[j - i1];
        if (e === 0) continue;
        const ru = j * cols;
        for (let t = i2; t < cols; t++) w[o + t] -= e * u[ru + t];
      }
    }
  }
  return mask;
}
