// Summaries of one layer's compressed weights for the inspector's mask heatmap and quantization
// grid. Pure functions over a flat Float32Array; no I/O.
import type { LayerDetail } from '../protocol/webview';

export interface LayerWeight {
  /** Values in storage order. */
  values: Float32Array;
  /** Output channels m (rows of W ∈ R^{m×n}). */
  rows: number;
  /** Input channels n (columns of W). */
  cols: number;
  /** `in-out`: stored as [n, m] (MatMul's B); `out-in`: stored as [m, n] (Gemm with transB). */
  orientation: 'in-out' | 'out-in';
}

export interface DetailOptions {
  name: string;
  gridRows: number;
  gridCols: number;
  wbits: number;
  row?: number;
  rowScales?: ArrayLike<number>;
  /** N:M pattern to check ("prune n of every m consecutive columns of a row"). */
  nm?: { n: number; m: number };
}

/**
 * Downsamples the mask (w ≠ 0) of W (m×n) to a grid of at most gridRows × gridCols blocks, and
 * returns row/column densities, per-row scales and one row's values.
 * The pruned weights of the simulated model are exact zeros and kept weights are code·scale with
 * code ≠ 0 only when |w| ≥ scale/2, so (w ≠ 0) is the mask up to kept weights that rounded to 0.
 */
export function summarizeLayer(weight: LayerWeight, options: DetailOptions): LayerDetail {
  const { values, rows, cols } = weight;
  if (values.length !== rows * cols) throw new Error(`layer ${options.name}: ${values.length} values for ${rows}×${cols}`);
  // Strides to read W[r, c] from storage: out-in → r·cols + c, in-out → c·rows + r.
  const rs = weight.orientation === 'out-in' ? cols : 1;
  const cs = weight.orientation === 'out-in' ? 1 : rows;

  const bh = Math.max(1, Math.ceil(rows / Math.max(1, Math.min(options.gridRows, rows))));
  const bw = Math.max(1, Math.ceil(cols / Math.max(1, Math.min(options.gridCols, cols))));
  const gridRows = Math.ceil(rows / bh);
  const gridCols = Math.ceil(cols / bw);
  const kept = new Float64Array(gridRows * gridCols);
  const cells = new Float64Array(gridRows * gridCols);
  const rowDensity = new Float32Array(rows);
  const colKept = new Float64Array(cols);
  const absMax = new Float64Array(rows);

  for (let r = 0; r < rows; r++) {
    const gi = Math.floor(r / bh) * gridCols;
    let rowKept = 0;
    let amax = 0;
    const base = r * rs;
    for (let c = 0; c < cols; c++) {
      const w = values[base + c * cs]!;
      const g = gi + Math.floor(c / bw);
      cells[g]!++;
      if (w !== 0) {
        kept[g]!++;
        colKept[c]!++;
        rowKept++;
        const a = Math.abs(w);
        if (a > amax) amax = a;
      }
    }
    rowDensity[r] = rowKept / cols;
    absMax[r] = amax;
  }
  const maskDensity = new Float32Array(gridRows * gridCols);
  for (let g = 0; g < maskDensity.length; g++) maskDensity[g] = cells[g]! > 0 ? kept[g]! / cells[g]! : 0;
  const colDensity = new Float32Array(cols);
  for (let c = 0; c < cols; c++) colDensity[c] = colKept[c]! / rows;

  // Symmetric per-row grid: codes −2^(b−1) … 2^(b−1)−1, scale = max|w| / (2^(b−1) − 1) when the
  // report does not carry the scales the compressor chose (which may clip).
  const qmax = 2 ** (options.wbits - 1) - 1;
  const rowScales = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    const given = options.rowScales && options.rowScales.length === rows ? Number(options.rowScales[r]) : NaN;
    rowScales[r] = Number.isFinite(given) && given > 0 ? given : absMax[r]! / qmax;
  }

  let row = options.row ?? -1;
  if (!(row >= 0 && row < rows)) {
    row = 0;
    for (let r = 1; r < rows; r++) if (rowScales[r]! > rowScales[row]!) row = r;
  }
  const rowValues = new Float32Array(cols);
  for (let c = 0; c < cols; c++) rowValues[c] = values[row * rs + c * cs]!;

  const detail: LayerDetail = {
    name: options.name,
    rows,
    cols,
    gridRows,
    gridCols,
    maskDensity,
    rowDensity,
    colDensity,
    rowScales,
    row,
    rowValues,
    wbits: options.wbits,
  };
  if (options.nm && options.nm.m > 1) detail.nm = checkNm(weight, options.nm, bh, bw, gridRows, gridCols);
  return detail;
}

/** A group of m consecutive columns of a row is valid when at least n of its weights are zero. */
function checkNm(
  weight: LayerWeight,
  nm: { n: number; m: number },
  bh: number,
  bw: number,
  gridRows: number,
  gridCols: number,
): NonNullable<LayerDetail['nm']> {
  const { values, rows, cols } = weight;
  const rs = weight.orientation === 'out-in' ? cols : 1;
  const cs = weight.orientation === 'out-in' ? 1 : rows;
  const valid = new Float64Array(gridRows * gridCols);
  const groups = new Float64Array(gridRows * gridCols);
  let validGroups = 0;
  let totalGroups = 0;
  for (let r = 0; r < rows; r++) {
    const gi = Math.floor(r / bh) * gridCols;
    for (let c0 = 0; c0 + nm.m <= cols; c0 += nm.m) {
      let zeros = 0;
      for (let c = c0; c < c0 + nm.m; c++) if (values[r * rs + c * cs] === 0) zeros++;
      const g = gi + Math.floor(c0 / bw);
      groups[g]!++;
      totalGroups++;
      if (zeros >= nm.n) {
        valid[g]!++;
        validGroups++;
      }
    }
  }
  const validGrid = new Float32Array(gridRows * gridCols);
  for (let g = 0; g < validGrid.length; g++) validGrid[g] = groups[g]! > 0 ? valid[g]! / groups[g]! : 1;
  return { n: nm.n, m: nm.m, validGroups, totalGroups, validGrid };
}

/** Mean, spread and tails of a weight, for Inspect Model. */
export function weightStats(values: Float32Array): { mean: number; std: number; absMax: number; zeros: number; crest: number } {
  let sum = 0;
  let sq = 0;
  let amax = 0;
  let zeros = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    sum += v;
    sq += v * v;
    const a = Math.abs(v);
    if (a > amax) amax = a;
    if (v === 0) zeros++;
  }
  const n = Math.max(1, values.length);
  const mean = sum / n;
  const rms = Math.sqrt(sq / n);
  return { mean, std: Math.sqrt(Math.max(0, sq / n - mean * mean)), absMax: amax, zeros: zeros / n, crest: rms > 0 ? amax / rms : 0 };
}
