// What 50% sparsity would save on disk in a sparse storage format. onnxruntime's MatMul and
// MatMulNBits kernels are dense, so the packed model stores (and multiplies) the zeros; these are
// computed byte counts of formats a sparse kernel would read, not measurements.
import type { SparseStorageEstimate } from '../../protocol/bench';

export interface CompressedLinear {
  rows: number;
  cols: number;
  /** Fraction of exact zeros in the compressed weight. */
  sparsity: number;
  /** Bytes the dense weight occupies in the source model (fp32: 4·rows·cols). */
  storedBytes: number;
}

/**
 * Byte counts for the compressed linear layers with N-bit codes and one fp32 scale per row, or
 * per group of `groupSize` columns (plus an N-bit zero point per row or group when asymmetric):
 * - dense int-N: rows·cols·N/8 (what a MatMulNBits-style packing holds, zeros included);
 * - bitmap: 1 bit per weight marking non-zeros + N bits per non-zero;
 * - 2:4 semi-structured (NVIDIA sparse tensor cores): N bits per kept value + 2-bit position
 *   index per kept value, i.e. (N + 2)·cols/2 bits per row at exactly 50%;
 * - CSR: N-bit values + 16-bit column indices + 32-bit row pointers.
 * `denseModelBytes` is the dense model on disk; everything but these layers is kept as stored.
 */
export function sparseStorageEstimate(
  layers: readonly CompressedLinear[],
  wbits: number,
  denseModelBytes: number,
  grid: { groupSize?: number; asymmetric?: boolean } = {},
): SparseStorageEstimate {
  const groupSize = grid.groupSize ?? 0;
  let params = 0;
  let nonzeros = 0;
  let stored = 0;
  let scales = 0;
  let rowPointers = 0;
  for (const l of layers) {
    const n = l.rows * l.cols;
    params += n;
    nonzeros += Math.round(n * (1 - l.sparsity));
    stored += l.storedBytes;
    const groups = l.rows * (groupSize > 0 ? Math.ceil(l.cols / groupSize) : 1);
    scales += 4 * groups + (grid.asymmetric ? Math.ceil((groups * wbits) / 8) : 0);
    rowPointers += 4 * (l.rows + 1);
  }
  const bits = (b: number) => Math.ceil(b / 8);
  const denseIntBytes = bits(params * wbits) + scales;
  const bitmapBytes = bits(params) + bits(nonzeros * wbits) + scales;
  const twoFourBytes = bits(nonzeros * (wbits + 2)) + scales;
  const csrBytes = bits(nonzeros * (wbits + 16)) + rowPointers + scales;
  const restBytes = Math.max(0, denseModelBytes - stored);
  return {
    params,
    nonzeros,
    wbits,
    denseFp32Bytes: params * 4,
    denseIntBytes,
    bitmapBytes,
    twoFourBytes,
    csrBytes,
    restBytes,
    modelBytesBitmap: restBytes + bitmapBytes,
    modelBytesTwoFour: restBytes + twoFourBytes,
  };
}
