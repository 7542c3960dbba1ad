// Host ↔ Inspector webview protocol. One union per direction, discriminated on `type`.
// The webview's first message is `ready`; the host answers with a full `snapshot`, and every
// later state change is again a full snapshot (never a delta), so a reloaded webview is whole.
// Requests from the webview carry an `id` and get exactly one `reply` with {ok} or {err}.
// Large numeric data (mask grids, rows of weights) crosses as typed arrays, not JSON number lists.
import type { BenchmarksViewData } from './bench';
import type { CompressionReport, LayerReport, LayerRole } from './report';
import type { ProgressEvent } from './worker';

/**
 * A layer as the inspector's table and charts see it: the report's layer without its per-row
 * arrays (`rowScales`, `rowZeros`: one number per output row, ~18 k per block of a 1 B model).
 * Those stay with the host and reach the webview only inside a `layerDetail` reply for the
 * selected layer, so the first snapshot of a 22–32-block report stays a few hundred KB.
 */
export type LayerSummary = Omit<LayerReport, 'rowScales' | 'rowZeros'>;

/** The report as the webview receives it: every field of the report, its layers as summaries. */
export type ReportSummary = Omit<CompressionReport, 'layers'> & { layers: LayerSummary[] };

/** The summary of one layer (a copy without the per-row arrays). */
export function summarizeLayer(layer: LayerReport): LayerSummary {
  const { rowScales: _scales, rowZeros: _zeros, ...summary } = layer;
  return summary;
}

/** The report as the webview receives it (the host keeps the full report for layer details). */
export function summarizeReport(report: CompressionReport): ReportSummary {
  return { ...report, layers: report.layers.map(summarizeLayer) };
}

/** A compression job as the inspector sees it while it runs and after it ends. */
export interface LiveJob {
  modelPath: string;
  recipe: string;
  state: 'running' | 'done' | 'failed' | 'cancelled';
  /** Layers finished so far (they fill the table while the job runs). */
  layers: LayerSummary[];
  /** Linear layers the job will compress, when known (for "12 / 24"). */
  totalLayers?: number;
  progress?: ProgressEvent;
  error?: string;
}

/** Weight statistics of one linear layer of an uncompressed model (Inspect Model). */
export interface ModelLayerInfo {
  name: string;
  block: number | null;
  role: LayerRole;
  rows: number;
  cols: number;
  dtype: string;
  mean: number;
  std: number;
  absMax: number;
  /** Fraction of exact zeros. */
  zeros: number;
  /** absMax / rms: how heavy the tails are (large values hurt round-to-nearest). */
  crest: number;
}

export interface ModelInspection {
  path: string;
  fileBytes: number;
  weightBytes: number;
  /** Parameters in the linear layers. */
  linearParams: number;
  layers: ModelLayerInfo[];
}

export type InspectorSnapshot =
  | { kind: 'empty'; title: string; message: string }
  | {
      kind: 'report';
      title: string;
      /** Absolute path of the report on disk, when it has one (for reload and layer details). */
      reportPath?: string;
      /** Null while the first job of this panel is still running. Layers without per-row arrays. */
      report: ReportSummary | null;
      job?: LiveJob;
      /** Whether the host can compute layer sensitivities (a worker is available). */
      canComputeSensitivity: boolean;
    }
  | { kind: 'model'; title: string; model: ModelInspection }
  | { kind: 'benchmarks'; title: string; data: BenchmarksViewData };

/** What the webview keeps with vscode.setState, and what the serializer gets back after reload. */
export interface InspectorViewState {
  /** Where the data came from, so a restored panel can load it again. */
  source?: { kind: 'report'; path: string } | { kind: 'model'; path: string } | { kind: 'benchmarks'; path: string };
  selectedLayer?: string;
  sortKey?: string;
  sortDescending?: boolean;
  filter?: string;
  roleFilter?: string;
  /** The table's block range filter as typed ("3-9"). */
  blockFilter?: string;
  /** The error chart: by block or by layer, what the block view's bars show, the blocks shown. */
  chartView?: 'blocks' | 'layers';
  chartMetric?: 'total' | 'pruning' | 'quantization' | `baseline:${string}`;
  chartWindow?: { from: number; to: number };
  chosenRow?: number;
}

/**
 * The selected layer's weights as the inspector draws them. All arrays are row-major.
 * `maskDensity[i * gridCols + j]` is the fraction of nonzero weights in grid block (i, j); each block
 * covers ⌈rows / gridRows⌉ × ⌈cols / gridCols⌉ weights.
 */
export interface LayerDetail {
  name: string;
  rows: number;
  cols: number;
  gridRows: number;
  gridCols: number;
  maskDensity: Float32Array;
  /** Per output row: fraction of kept (nonzero) weights. */
  rowDensity: Float32Array;
  /** Per input column: fraction of kept weights. */
  colDensity: Float32Array;
  /**
   * Per-row quantization scale (from the report, else max|w| / qmax); with groups, the largest
   * group scale of each row.
   */
  rowScales: Float32Array;
  /** The chosen row and its weight values (length cols). */
  row: number;
  rowValues: Float32Array;
  wbits: number;
  /** Columns per scale group (0 = one scale per row) and whether each group has a zero point. */
  groupSize: number;
  asymmetric: boolean;
  /** Where the scales come from: the packed model (groups), the report (per row), or estimated from max|w|. */
  scaleSource: 'packed' | 'report' | 'estimated';
  /**
   * The chosen row's groups (one group per row when groupSize is 0): scale and zero point per
   * group (W ≈ scale·(code − zero)), and counts of its kept weights per code, groups × 2^b
   * row-major, code −2^(b−1) first; offGrid = kept weights not on their group's grid.
   */
  rowGroups: { scales: Float32Array; zeros?: Float32Array; codeCounts: Uint32Array; offGrid: number };
  /** N:M validity when the report's sparsity is N:M: per grid block, fraction of valid groups. */
  nm?: { n: number; m: number; validGroups: number; totalGroups: number; validGrid: Float32Array };
}

export type WebviewRequest =
  | { type: 'layerDetail'; id: number; layer: string; row?: number; gridRows: number; gridCols: number }
  | { type: 'computeSensitivity'; id: number };

export type WebviewReplyValue =
  | { kind: 'layerDetail'; detail: LayerDetail }
  | { kind: 'computeSensitivity'; sensitivity: Array<{ name: string; perplexity: number }> };

export type WebviewToHost =
  | { type: 'ready' }
  | WebviewRequest
  /** Opens a file of the report (simulated/packed model, source) in VS Code. */
  | { type: 'reveal'; path: string }
  | { type: 'compressAgain' };

export type HostToWebview =
  | { type: 'snapshot'; snapshot: InspectorSnapshot }
  | { type: 'reply'; id: number; ok: WebviewReplyValue }
  | { type: 'reply'; id: number; err: { code: string; message: string } };
