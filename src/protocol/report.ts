// The compression report: written as JSON beside the compressed model, read by the inspector.
// Schema changes bump REPORT_SCHEMA_VERSION.
import type { RecipeName } from './recipes';

export const REPORT_SCHEMA_VERSION = 1;

/** `qkv`: a fused query/key/value projection (GPT-2's c_attn, a packed Attention weight) whose rows are q, k, v in that order. */
export type LayerRole = 'q' | 'k' | 'v' | 'qkv' | 'o' | 'gate' | 'up' | 'down' | 'lm_head' | 'other';

/** Layer loss terms, all tr(ΔW H ΔWᵀ) with the undamped Hessian of the layer's input. */
export interface LayerLoss {
  /** Loss of the final weights against the dense weights. */
  total: number;
  /** Loss of pruning alone (mask applied, no compensation, no quantization). */
  pruning: number;
  /** Loss of quantization alone (dense weights rounded on the same grid). */
  quantization: number;
  /** pruning + quantization − total: what compensation recovered (may be negative). */
  recovered: number;
  /** tr(W H Wᵀ): the dense output energy, to express the others relatively. */
  outputEnergy: number;
}

export interface LayerReport {
  name: string;
  block: number | null;
  role: LayerRole;
  /** Output channels (rows of W in the [out, in] convention). */
  rows: number;
  /** Input channels (columns of W). */
  cols: number;
  /** Fraction of exact zeros in the compressed weight. */
  sparsity: number;
  wbits: number;
  /** Columns per weight scale: 0 = one scale per output row. Absent in reports before groups (= 0). */
  groupSize?: number;
  /** Zero point per group (per row when groupSize is 0). Absent = symmetric. */
  asymmetric?: boolean;
  loss: LayerLoss;
  seconds: number;
  /** Histogram of the integer codes −2^(b−1) … 2^(b−1)−1 of kept weights. */
  codeHistogram: number[];
  /**
   * Per-row symmetric quantization scale (6 significant digits). With the simulated model's
   * weights this gives each row's codes (round(w / scale)) and the mask (w == 0).
   */
  rowScales?: number[];
  /**
   * Per-row zero points (signed integers, W ≈ scale·(code − zero)) of an asymmetric per-row job.
   * With groups neither rowScales nor rowZeros is written: the per-group scales and zero points
   * are in the packed model's MatMulNBits initializers.
   */
  rowZeros?: number[];
}

export interface PerplexityResult {
  perplexity: number;
  /** Mean token negative log-likelihood (nats). */
  nll: number;
  windows: number;
  tokens: number;
  seqlen: number;
  text: string;
  seconds: number;
}

export interface CompressionReport {
  schemaVersion: number;
  tool: { name: 'obr-studio'; version: string };
  createdAt: string;
  source: { path: string; bytes: number; sha256: string };
  /** `folder`: the drop-in output folder holding `packed` (onnxruntime-genai or Optimum layout, docs/pipeline.md). */
  outputs: { simulated?: string; packed?: string; report: string; folder?: { path: string; kind: 'genai' | 'optimum' } };
  recipe: RecipeName;
  options: Record<string, unknown>;
  calibration: { text: string; sha256: string; samples: number; seqlen: number; tokens: number; mode: string };
  executionProvider: { used: string; tried: Array<{ name: string; error?: string; detail?: string }> };
  /**
   * Size of the packed model: the whole file(s) on disk, and the packed layers' storage (codes,
   * scales and zero points) per weight. Absent when no packed model was written.
   */
  packedSize?: { fileBytes: number; layerBytes: number; weights: number; bitsPerWeight: number };
  layers: LayerReport[];
  perplexity: { dense?: PerplexityResult; compressed?: PerplexityResult };
  /**
   * Other recipes run on the same model and calibration, for comparison in the inspector: every
   * layer also compressed with the baseline recipe on the same captured Hessians (same sparsity,
   * bits and damping), one loss per layer in `layers` order, and the perplexity of the model with
   * all layers replaced by the baseline's weights on the same evaluation windows.
   */
  baselines?: Array<{ recipe: RecipeName; perplexity?: PerplexityResult; layers: Array<{ name: string; loss: LayerLoss }> }>;
  /** Perplexity with only one layer compressed, per layer name. */
  sensitivity?: Array<{ name: string; perplexity: number }>;
  timings: Record<string, number>;
  /** The pre-flight estimate of the same stages (seconds), when the job had one: compare with `timings`. */
  estimate?: Record<string, number>;
  warnings: string[];
}
