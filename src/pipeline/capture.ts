// Calibration statistics (§1.6): for each distinct layer input X (tokens × n), the sum XᵀX over
// all calibration tokens, computed inside the graph (src/onnx/hessian.ts: the model's own outputs
// are dropped and the graph pruned, so capturing block b runs blocks 0…b only) and accumulated
// here in float64 across batches, with Σ x_j² per channel (Wanda's activation energy).
// The Hessian handed to the core is H = (2/N)·Σ_k X_kᵀX_k with N = the number of sequences, as
// the official code (P12); its scale doesn't change the compressed weights.
import * as ort from 'onnxruntime-node';
import { addHessianCapture } from '../onnx/hessian';
import type { ModelProto } from '../onnx/proto';
import type { LinearLayer } from '../onnx/types';
import { CausalLm } from '../runtime/lm';
import type { TokenWindows } from '../runtime/text';
import { throwIfAborted } from './cancel';

export interface CaptureRequest {
  /** Activation tensor name (LinearLayer.inputName). */
  input: string;
  /** Its channel count n. */
  features: number;
}

export interface CapturedStats {
  /** (2/N)·Σ XᵀX, n×n row-major float64. */
  hessian: Float64Array;
  /** Mean ‖X_j‖² per sequence (diag of Σ XᵀX / N), length n. */
  channelEnergy: Float64Array;
  tokens: number;
}

/**
 * Runs the calibration windows through `model` with capture outputs for `requests` and returns
 * the accumulated statistics per input name.
 */
export async function captureStats(
  modelBytes: (m: ModelProto) => Uint8Array,
  model: ModelProto,
  layers: readonly LinearLayer[],
  requests: readonly CaptureRequest[],
  windows: TokenWindows,
  opts: { executionProviders: readonly string[]; batch: number; signal?: AbortSignal; onBatch?(done: number, total: number): void },
): Promise<{ stats: Map<string, CapturedStats>; executionProvider: CausalLm['executionProvider'] }> {
  const capture = addHessianCapture(model, layers, { inputs: requests.map((r) => r.input) });
  const names = requests.map((r) => capture.byInput.get(r.input)!);
  const outputs = [...names.flatMap((c) => [c.xtx, c.sumSquares]), capture.tokenCount];
  const lm = await CausalLm.open(modelBytes(capture.model), { executionProviders: opts.executionProviders, outputsOnly: true });
  const sums = requests.map((r) => new Float64Array(r.features * r.features));
  const squares = requests.map((r) => new Float64Array(r.features));
  let tokens = 0;
  try {
    for (let i = 0; i < windows.count; i += opts.batch) {
      throwIfAborted(opts.signal);
      const b = Math.min(opts.batch, windows.count - i);
      const ids = windows.ids.subarray(i * windows.seqlen, (i + b) * windows.seqlen);
      const extra = await lm.runOutputs(ids, b, windows.seqlen, outputs);
      names.forEach((c, k) => {
        for (const [name, acc] of [[c.xtx, sums[k]!], [c.sumSquares, squares[k]!]] as const) {
          const t = extra[name] as ort.Tensor;
          const data = t.data as Float32Array;
          for (let j = 0; j < acc.length; j++) acc[j] += data[j]!;
          t.dispose();
        }
      });
      tokens += Number((extra[capture.tokenCount]!.data as Float32Array)[0]);
      opts.onBatch?.(i + b, windows.count);
    }
  } finally {
    await lm.release();
  }
  const stats = new Map<string, CapturedStats>();
  const n = windows.count;
  requests.forEach((r, k) => {
    const h = sums[k]!;
    const energy = squares[k]!.map((v) => v / n);
    for (let j = 0; j < h.length; j++) h[j] = (2 / n) * h[j]!;
    stats.set(r.input, { hessian: h, channelEnergy: energy, tokens });
  });
  return { stats, executionProvider: lm.executionProvider };
}
