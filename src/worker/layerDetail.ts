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
  /** Per-row scales from the report (per-row jobs). */
  rowScales?: ArrayLike<number>;
  /** Per-row zero points from the report (per-row asymmetric jobs). */
  rowZeros?: ArrayLike<number>;
  /** Columns per scale group of the job (0 or absent = one scale per row). */
  groupSize?: number;
  asymmetric?: boolean;
  /**
   * The job's quantization read from the packed model (MatMulNBits): scales and zero points
   * rows×groups, signed codes rows×cols. Wins over rowScales/rowZeros when given.
   */
  quantization?: { scales: ArrayLike<number>; zeros?: ArrayLike<number>; codes?: Int8Array };
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

  // Grid: codes −2^(b−1) … 2^(b−1)−1, W ≈ scale·(code − zero). The scales come from the packed
  // model (groups), the report (per row), else are estimated as max|w| / (2^(b−1) − 1) per group
  // (the compressor's scales may clip, so an estimate is marked as such).
  const qmax = 2 ** (options.wbits - 1) - 1;
  const groupSize = options.groupSize ?? 0;
  const groups = groupSize > 0 ? Math.ceil(cols / groupSize) : 1;
  const groupWidth = groupSize > 0 ? groupSize : cols;
  const quant = options.quantization && options.quantization.scales.length === rows * groups ? options.quantization : undefined;
  const reportScales = !quant && groups === 1 && options.rowScales && options.rowScales.length === rows ? options.rowScales : undefined;
  const scaleSource: LayerDetail['scaleSource'] = quant ? 'packed' : reportScales ? 'report' : 'estimated';
  /** Scale and zero point of group g of row r. */
  const groupScale = (r: number, g: number): number => {
    if (quant) return Number(quant.scales[r * groups + g]);
    const given = reportScales ? Number(reportScales[r]) : NaN;
    if (Number.isFinite(given) && given > 0) return given;
    if (groups === 1) return absMax[r]! / qmax;
    let amax = 0;
    for (let c = g * groupWidth; c < Math.min(cols, (g + 1) * groupWidth); c++) amax = Math.max(amax, Math.abs(values[r * rs + c * cs]!));
    return amax / qmax;
  };
  const groupZero = (r: number, g: number): number => {
    if (quant) return quant.zeros ? Number(quant.zeros[r * groups + g]) : 0;
    return reportScales && options.rowZeros && options.rowZeros.length === rows ? Number(options.rowZeros[r]) : 0;
  };
  // Per row: the row's scale, or with groups the largest group scale of the row.
  const rowScales = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let m = 0;
    for (let g = 0; g < groups; g++) m = Math.max(m, groupScale(r, g));
    rowScales[r] = m;
  }

  let row = options.row ?? -1;
  if (!(row >= 0 && row < rows)) {
    row = 0;
    for (let r = 1; r < rows; r++) if (rowScales[r]! > rowScales[row]!) row = r;
  }
  const rowValues = new Float32Array(cols);
  for (let c = 0; c < cols; c++) rowValues[c] = values[row * rs + c * cs]!;

  // The chosen row's groups: scale, zero point, and the codes of its kept weights per group (the
  // packed model's codes when given, else round(w / scale) + zero on the group's grid).
  const levels = 2 ** options.wbits;
  const qmin = -(levels / 2);
  const gScales = new Float32Array(groups);
  const gZeros = new Float32Array(groups);
  const codeCounts = new Uint32Array(groups * levels);
  let offGrid = 0;
  for (let g = 0; g < groups; g++) {
    const s = groupScale(row, g);
    const z = groupZero(row, g);
    gScales[g] = s;
    gZeros[g] = z;
    for (let c = g * groupWidth; c < Math.min(cols, (g + 1) * groupWidth); c++) {
      const w = rowValues[c]!;
      if (w === 0) continue;
      const code = quant?.codes ? quant.codes[row * cols + c]! : Math.max(qmin, Math.min(qmin + levels - 1, Math.round(s > 0 ? w / s + z : 0)));
      codeCounts[g * levels + (code - qmin)]!++;
      if (Math.abs(w - s * (code - z)) > 1e-3 * s + 1e-7) offGrid++;
    }
  }

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
    groupSize,
    asymmetric: options.asymmetric ?? false,
    scaleSource,
    rowGroups: { scales: gScales, ...(options.asymmetric ? { zeros: gZeros } : {}), codeCounts, offGrid },
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
