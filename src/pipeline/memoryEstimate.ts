// Pre-flight MEMORY estimate of a compression job (issue #12 item 2), from the job's structure:
// weights stay on disk (src/onnx/store.ts) and are read one block at a time, the calibration
// forwards run one block's subgraph per session, each finished layer goes to the checkpoint at
// once, and the core holds one layer's problem. So the peak is a fixed part plus the largest of
// three phases, not a multiple of the model:
//
//   peak = FIXED + 2·G + A + max(capture, compress, evaluate)
//     G        the graph file (model.onnx without external data): the loaded graph + the working copy
//     A        onnxruntime's per-batch tensors: batch·seqlen·(2·vocab + 16·hidden + 4·intermediate)·4
//              + the cached block activations: min(budget, 2·samples·seqlen·hidden·4)
//     capture  = B + Σ_inputs n²·(8 + 4 + 4)            one block's weights in a session (B = the
//              largest block's stored bytes), per captured input the float64 sum and onnxruntime's
//              float32 XᵀX output and its arena copy
//     compress = max over layers (rows × cols, n = cols) and the job's recipes of
//              n²·8 (the group's Hessian) + core(recipe, rows, cols) + baselines·rows·cols·4
//     evaluate = max(B, T) (T: the biggest tensor outside the blocks, e.g. lm_head in the tail's session)
//   core(recipe) = 6·rows·cols·8 + 2·rows·cols                    every recipe: the weight read,
//              the scale search's copy, the working copy, the result and the loss scratch (float64),
//              codes and mask (bytes)
//            + rtn, wanda-rtn: nothing more (no damped H)
//            + gptq, sparsegpt-gptq: n²·8·6   the damped H, the triangular factor (a worker copy)
//              and the factorization's scratch (the kernels' memory holds 2 n², plus 1 n² copies in and out)
//            + obr-rtn, obr-gptq (the batched solver, src/core/admm.ts; no damped n×n copy: it reads
//              the caller's H with the damped diagonal), the largest of its moments
//                factor  5·n² + 24·nb·n           (H̃ + ρI), L and L⁻¹ as one packed lower
//                                                  triangle (n(n+1)/2 float64 ≈ 4·n²), factored and
//                                                  inverted in place, plus one block step's operands
//                                                  (three n × nb float64 panels, nb = min(n, 256 from
//                                                  4096 columns, 128 below), a chunk of n²/16 float64);
//                                                  then the float32 inverse made while the triangle
//                                                  is handed back (src/core/spdInverse.ts)
//                step 1  n²·4 + rows·n·4 + 12·blockRows·n + S   the float32 (H̃ + ρI)⁻¹, B = W̃H̃
//                                                  (float32), one block's T (float64) and product
//                                                  result (float32); S = the row block's iteration
//                                                  state, 80·blockRows·n ≤ 256 MiB (Z is the result,
//                                                  counted in common)
//                step 2  m²·4 + rows·n·4 + rows·(4k + 20m) + S·m/n   (k = ⌊α·n⌋, m = n − k)
//                                                  its inverse, B, X1, Z2, B2, X1·H12 and its
//                                                  (narrower) state
//                tail    5·m²·8 + 10·rows·m        obr-gptq: U[k:, k:] from the trailing block (the
//                                                  block, the kernels' 2 m², its copies) and the
//                                                  compact tail's rows × m arrays
// The coefficients are counts of the arrays the code allocates (src/core/compress.ts,
// src/core/admm.ts, src/pipeline/capture.ts); the memory benchmark (scripts/bench/memory.ts,
// docs/benchmarks.md) checks the sum against the measured peak RSS.
import { admmBlockRows, STATE_BYTES_PER_ENTRY } from '../core/admm';
import { blockColumns } from '../core/spdInverse';
import type { RecipeName } from '../protocol/recipes';

/** Node, V8, onnxruntime's libraries and the job's small state (measured ~170 MiB after loading a model). */
export const FIXED_BYTES = 200 * 2 ** 20;

/** The OBR column split when the job does not say (DEFAULT_OPTIONS.alpha). */
const DEFAULT_ALPHA = 0.5;

export interface MemoryLayer {
  rows: number;
  cols: number;
  /** Shared activation input (layers reading the same input share one Hessian). */
  inputName: string;
}

export interface MemoryInputs {
  /** The job's recipe first, then its baselines. */
  recipes: readonly RecipeName[];
  /** The layers the job compresses. */
  layers: readonly MemoryLayer[];
  /** Inputs captured together (one calibration forward), as lists of channel counts n. */
  captureGroups: ReadonlyArray<readonly number[]>;
  /** Stored bytes of the largest decoder block's weights. */
  blockBytes: number;
  /** Stored bytes of the biggest tensor outside the blocks (embedding, lm_head). */
  outsideBytes: number;
  /** The graph file's bytes (model.onnx without its external data). */
  graphBytes: number;
  batch: number;
  seqlen: number;
  samples: number;
  hidden: number;
  intermediate: number;
  vocab: number;
  /** Activation cache budget (bytes) before it spills to disk. */
  activationBudgetBytes: number;
  /** The OBR column split α (default 0.5): the batched solver's step 2 and the GPTQ tail. */
  alpha?: number;
}

export interface MemoryEstimate {
  peakBytes: number;
  /** The terms of the formula above, in bytes. */
  terms: { fixed: number; graph: number; activations: number; capture: number; compress: number; evaluate: number };
  /** The phase that sets the peak. */
  phase: 'capture' | 'compress' | 'evaluate';
}

/** The batched OBR solver's largest moment (bytes) on a rows × cols layer, beside the caller's
 *  arrays, and the tail's for obr-gptq (see the header). */
export function obrSolverBytes(recipe: 'obr-rtn' | 'obr-gptq', rows: number, cols: number, alpha = DEFAULT_ALPHA): number {
  const n = cols;
  const w = rows * n * 8;
  const k = Math.max(0, Math.min(n, Math.floor(alpha * n + 1e-9)));
  const m = n - k;
  const blockRows = admmBlockRows(rows, n);
  const state = STATE_BYTES_PER_ENTRY * blockRows * n;
  const factor = 5 * n * n + 24 * Math.min(n, blockColumns(n)) * n;
  const step1 = n * n * 4 + w / 2 + 12 * blockRows * n + state;
  const step2 = k > 0 && k < n ? m * m * 4 + w / 2 + rows * (4 * k + 20 * m) + (state * m) / n : 0;
  const tail = recipe === 'obr-gptq' && k < n ? 5 * m * m * 8 + 10 * rows * m : 0;
  return Math.max(factor, step1, step2, tail);
}

/** Core bytes of one layer (rows × cols) with one recipe, the layer's Hessian not included (see the header). */
export function coreBytes(recipe: RecipeName, rows: number, cols: number, alpha = DEFAULT_ALPHA): number {
  const w = rows * cols * 8;
  const h = cols * cols * 8;
  const common = 6 * w + 2 * rows * cols;
  switch (recipe) {
    case 'rtn':
    case 'wanda-rtn':
      return common;
    case 'gptq':
    case 'sparsegpt-gptq':
      return common + 6 * h;
    case 'obr-rtn':
    case 'obr-gptq':
      return common + obrSolverBytes(recipe, rows, cols, alpha);
  }
}

export function estimateMemory(x: MemoryInputs): MemoryEstimate {
  const fixed = FIXED_BYTES;
  const graph = 2 * x.graphBytes;
  const activations = x.batch * x.seqlen * (2 * x.vocab + 16 * x.hidden + 4 * x.intermediate) * 4 + Math.min(x.activationBudgetBytes, 2 * x.samples * x.seqlen * x.hidden * 4);
  const capture = x.captureGroups.reduce((m, g) => Math.max(m, x.blockBytes + g.reduce((s, n) => s + n * n * 16, 0)), 0);
  const baselines = x.recipes.length - 1;
  let compress = 0;
  for (const l of x.layers) {
    const core = Math.max(...x.recipes.map((r) => coreBytes(r, l.rows, l.cols, x.alpha)));
    compress = Math.max(compress, l.cols * l.cols * 8 + core + baselines * l.rows * l.cols * 4);
  }
  const evaluate = Math.max(x.blockBytes, x.outsideBytes);
  const phases = { capture, compress, evaluate } as const;
  const phase = (Object.keys(phases) as Array<keyof typeof phases>).reduce((a, b) => (phases[b] > phases[a] ? b : a));
  return { peakBytes: Math.round(fixed + graph + activations + phases[phase]), terms: { fixed, graph, activations, capture, compress, evaluate }, phase };
}
