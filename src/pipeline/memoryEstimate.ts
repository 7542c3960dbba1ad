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
//            + obr-rtn, obr-gptq: n²·8·(1 + ADMM_HESSIANS) + 4·rows·cols·8 + min(512 MiB, 80·rows·cols)
//              the damped H, the batched solver's n²-sized matrices (ADMM_HESSIANS), its rows×cols
//              arrays (scaled W, B = WH, Z, step 2's pieces) and its iteration state, which
//              src/core/admm.ts bounds by ADMM_STATE_BYTES (rows solved in blocks)
//
// The coefficients are counts of the arrays the code allocates (src/core/compress.ts,
// src/core/admm.ts, src/pipeline/capture.ts); the memory benchmark (scripts/bench/memory.ts,
// docs/benchmarks.md) checks the sum against the measured peak RSS.
import { ADMM_STATE_BYTES } from '../core/admm';
import type { RecipeName } from '../protocol/recipes';

/** Node, V8, onnxruntime's libraries and the job's small state (measured ~170 MiB after loading a model). */
export const FIXED_BYTES = 200 * 2 ** 20;

/**
 * n×n float64 matrices the batched OBR solver (src/core/admm.ts) holds at its peak besides the
 * damped H: the scaled H, the Cholesky factor in the kernels' memory, its inverse's scratch
 * (20 bytes per entry) and (H + ρI)⁻¹ as float32 — about 4 × 8 bytes per entry, counted from
 * the code, not measured.
 */
export const ADMM_HESSIANS = 4;

/** Iteration state of the batched solver, bytes per rows×cols entry, bounded by ADMM_STATE_BYTES. */
const ADMM_STATE_PER_ENTRY = 80;

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
}

export interface MemoryEstimate {
  peakBytes: number;
  /** The terms of the formula above, in bytes. */
  terms: { fixed: number; graph: number; activations: number; capture: number; compress: number; evaluate: number };
  /** The phase that sets the peak. */
  phase: 'capture' | 'compress' | 'evaluate';
}

/** Core bytes of one layer (rows × cols) with one recipe, the layer's Hessian not included (see the header). */
export function coreBytes(recipe: RecipeName, rows: number, cols: number): number {
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
      return common + (1 + ADMM_HESSIANS) * h + 4 * w + Math.min(ADMM_STATE_BYTES, ADMM_STATE_PER_ENTRY * rows * cols);
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
    const core = Math.max(...x.recipes.map((r) => coreBytes(r, l.rows, l.cols)));
    compress = Math.max(compress, l.cols * l.cols * 8 + core + baselines * l.rows * l.cols * 4);
  }
  const evaluate = Math.max(x.blockBytes, x.outsideBytes);
  const phases = { capture, compress, evaluate } as const;
  const phase = (Object.keys(phases) as Array<keyof typeof phases>).reduce((a, b) => (phases[b] > phases[a] ? b : a));
  return { peakBytes: Math.round(fixed + graph + activations + phases[phase]), terms: { fixed, graph, activations, capture, compress, evaluate }, phase };
}
