// Host ↔ worker protocol. One union per direction, discriminated on `type`. Requests carry an
// `id`; every request is answered by exactly one `result` with {ok} or {err}.
import type { CompressOptions, RecipeName } from './recipes';
import type { CompressionReport, LayerReport } from './report';
import type { BenchRequest, BenchWorkerResult } from './bench';
import type { LayerDetail, ModelInspection } from './webview';

/** `baseline`: the job's baseline recipes (report.baselines) — their layers and their perplexity. */
export type Stage = 'load' | 'rotate' | 'calibrate' | 'compress' | 'baseline' | 'write' | 'evaluate' | 'probe';

export interface ProgressEvent {
  stage: Stage;
  /** Units done and total in this stage (layers, blocks, windows). */
  done: number;
  total: number;
  message?: string;
  /** Estimated seconds until the whole job finishes, when known. */
  etaSeconds?: number;
  /** Fraction of the whole job finished (0…1), when the pipeline knows it (stages may interleave). */
  fraction?: number;
}

export interface ProviderProbe {
  used: string;
  tried: Array<{ name: string; error?: string; detail?: string }>;
  /** Output of the probe graph (y = x·W with x = [1, 2, 3], W = [[1, 0], [0, 1], [1, 1]]). */
  output: number[];
}

export type HostToWorker =
  | { type: 'probeProviders'; id: number; preference: string[] }
  | { type: 'compress'; id: number; modelPath: string; options: CompressOptions }
  | { type: 'cancel'; id: number }
  | { type: 'estimate'; id: number; modelPath: string; options: CompressOptions; job?: JobSettings }
  | { type: 'inspectModel'; id: number; modelPath: string }
  | LayerDetailRequest
  /** `compress` with job settings that don't change the compressed weights (answered with kind `compress`). */
  | { type: 'compressJob'; id: number; modelPath: string; options: CompressOptions; job: JobSettings }
  | { type: 'sensitivity'; id: number; reportPath: string }
  | BenchRequest;

/** Reads one layer's weights from a (compressed) model and summarises them for the inspector. */
export interface LayerDetailRequest {
  type: 'layerDetail';
  id: number;
  modelPath: string;
  /** Layer name as in the report (the MatMul/Gemm node). */
  layer: string;
  /** Row whose values to return; default: the row with the largest scale. */
  row?: number;
  gridRows: number;
  gridCols: number;
  wbits: number;
  /** Per-row scales from the report, when it has them. */
  rowScales?: number[];
  /** Per-row zero points from the report (per-row asymmetric jobs). */
  rowZeros?: number[];
  /** The job's group size (0 = per row) and asymmetry, from the report. */
  groupSize?: number;
  asymmetric?: boolean;
  /** The job's packed model: with groups, the per-group scales, zero points and codes are read from it. */
  packedPath?: string;
  /** The report's sparsity, e.g. "0.5" or "2:4" (N:M validity is checked for the latter). */
  sparsity?: string;
}

/** Settings of one job beyond the recipe: evaluation and analysis passes. */
export interface JobSettings {
  /** Evaluate perplexity on at most this many windows of the evaluation text (0 or absent = all). */
  evalWindows?: number;
  /** false = skip the perplexity evaluation. */
  evaluate?: boolean;
  /** Also compute per-layer sensitivity (perplexity with one layer compressed). */
  sensitivity?: boolean;
  /**
   * Baseline recipes compressed on the same Hessians as the job's recipe, for comparison
   * (report.baselines: per-layer loss and perplexity). The job's own recipe is skipped.
   */
  baselines?: RecipeName[];
  /** Memory budget (MiB) of the block-streaming activation cache; beyond it activations spill to disk. */
  activationCacheMiB?: number;
  /** Output layout (src/pipeline/layouts.ts): auto (default), file or folder. */
  layout?: 'auto' | 'file' | 'folder';
}

/** Pre-flight estimate shown before a job starts. */
export interface CompressionEstimate {
  /** Linear layers that will be compressed. */
  layers: number;
  /** Parameters in those layers. */
  params: number;
  /** Rough wall-clock seconds on this machine. */
  seconds: number;
  /** Rough peak memory of the worker in bytes. */
  peakBytes: number;
  /** Bytes the outputs will take on disk. */
  outputBytes?: number;
  /** False when the peak memory likely exceeds what the machine has free. */
  fits?: boolean;
  /** Free memory when the estimate was made. */
  availableBytes?: number;
  notes: string[];
}

export type WorkerResult =
  | { kind: 'probeProviders'; probe: ProviderProbe }
  | { kind: 'compress'; report: CompressionReport }
  | { kind: 'estimate'; estimate: CompressionEstimate }
  | { kind: 'inspectModel'; model: ModelInspection }
  | { kind: 'layerDetail'; detail: LayerDetail }
  | { kind: 'sensitivity'; sensitivity: Array<{ name: string; perplexity: number }> }
  | BenchWorkerResult;

export interface WorkerError {
  /** Error class name, e.g. ModelFormatError; lets the host pick an action. */
  code: string;
  message: string;
  stack?: string;
}

export type WorkerToHost =
  | { type: 'progress'; id: number; event: ProgressEvent }
  | { type: 'layer'; id: number; layer: LayerReport }
  | { type: 'log'; level: 'info' | 'warn' | 'error'; message: string }
  | { type: 'result'; id: number; ok: WorkerResult }
  | { type: 'result'; id: number; err: WorkerError };
