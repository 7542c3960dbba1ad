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
