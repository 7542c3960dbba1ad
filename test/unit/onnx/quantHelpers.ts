// Round-to-nearest symmetric per-row quantization with magnitude pruning, for packing tests.
// Not a test file itself.
import type { QuantizedLayer } from '../../../src/onnx/packed';

/** W [out, in] → codes in [−2^(b−1), 2^(b−1)−1] with scale = max|w| / (2^(b−1)−1) per row; the
 * `prune` fraction of smallest-|w| entries of each row get code 0. */
export function quantizeRtn(w: Float32Array, rows: number, cols: number, bits = 4, prune = 0.5): QuantizedLayer {
  const codes = new Int8Array(rows * cols);
  const scales = new Float32Array(rows);
  const qmax = (1 << (bits - 1)) - 1;
  for (let r = 0; r < rows; r++) {
    const row = w.subarray(r * cols, (r + 1) * cols);
    let max = 0;
    for (const v of row) max = Math.max(max, Math.abs(v));
    const scale = max / qmax || 1;
    scales[r] = scale;
    const order = Array.from(row.keys()).sort((a, b) => Math.abs(row[a]) - Math.abs(row[b]));
    const pruned = new Set(order.slice(0, Math.floor(prune * cols)));
    for (let c = 0; c < cols; c++) {
      codes[r * cols + c] = pruned.has(c) ? 0 : Math.max(-qmax - 1, Math.min(qmax, Math.round(row[c] / scale)));
    }
  }
  return { codes, scales, bits };
}

/** scale·code as float32 [out, in]: the fake-quant weight the packed model must reproduce. */
export function dequantize(q: QuantizedLayer, rows: number, cols: number): Float32Array {
  const w = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) w[r * cols + c] = Math.fround(q.scales[r] * q.codes[r * cols + c]);
  return w;
}

/**
 * Round-to-nearest with one scale (and zero point when `asymmetric`) per `groupSize` columns of a
 * row (0 = per row), magnitude pruning of the `prune` fraction of each row first. Signed codes and
 * zero points (the pipeline's convention): W ≈ scale·(code − zero); a pruned weight gets
 * code = zero, so it dequantizes to exactly 0. Symmetric: scale = max|w| / (2^(b−1)−1), zero 0;
 * asymmetric: scale = (max − min) / (2^b − 1) over the group (range widened to include 0),
 * zero = round(−min / scale) − 2^(b−1).
 */
export function quantizeRtnGroups(w: Float32Array, rows: number, cols: number, groupSize: number, asymmetric: boolean, bits = 4, prune = 0.5): Required<Pick<QuantizedLayer, 'codes' | 'scales' | 'bits'>> & { zeros?: Float64Array; groupSize: number } {
  const groups = groupSize > 0 ? Math.ceil(cols / groupSize) : 1;
  const width = groupSize > 0 ? groupSize : cols;
  const codes = new Int8Array(rows * cols);
  const scales = new Float32Array(rows * groups);
  const zeros = asymmetric ? new Float64Array(rows * groups) : undefined;
  const half = 1 << (bits - 1);
  for (let r = 0; r < rows; r++) {
    const row = w.subarray(r * cols, (r + 1) * cols);
    const order = Array.from(row.keys()).sort((a, b) => Math.abs(row[a]) - Math.abs(row[b]));
    const pruned = new Set(order.slice(0, Math.floor(prune * cols)));
    for (let g = 0; g < groups; g++) {
      const c0 = g * width;
      const c1 = Math.min(cols, c0 + width);
      let lo = 0;
      let hi = 0;
      for (let c = c0; c < c1; c++) {
        lo = Math.min(lo, row[c]);
        hi = Math.max(hi, row[c]);
      }
      let scale: number;
      let zero = 0;
      if (asymmetric) {
        scale = Math.fround((hi - lo) / (2 * half - 1)) || 1;
        zero = Math.max(-half, Math.min(half - 1, Math.round(-lo / scale) - half));
        zeros![r * groups + g] = zero;
      } else {
        scale = Math.fround(Math.max(hi, -lo) / (half - 1)) || 1;
      }
      scales[r * groups + g] = scale;
      for (let c = c0; c < c1; c++) {
        codes[r * cols + c] = pruned.has(c) ? zero : Math.max(-half, Math.min(half - 1, Math.round(row[c] / scale) + zero));
      }
    }
  }
  return { codes, scales, ...(zeros ? { zeros } : {}), groupSize, bits };
}

/** scale·(code − zero) as float32 [out, in] for a grouped layer from quantizeRtnGroups. */
export function dequantizeGroups(q: ReturnType<typeof quantizeRtnGroups>, rows: number, cols: number): Float32Array {
  const groups = q.groupSize > 0 ? Math.ceil(cols / q.groupSize) : 1;
  const width = q.groupSize > 0 ? q.groupSize : cols;
  const w = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const g = r * groups + Math.floor(c / width);
      w[r * cols + c] = Math.fround(q.scales[g] * (q.codes[r * cols + c] - (q.zeros ? q.zeros[g] : 0)));
    }
  }
  return w;
}
