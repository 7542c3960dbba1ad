// Calibration statistics (§1.6): for each distinct layer input X (tokens × n), the sum XᵀX over
// all calibration tokens, computed inside the graph (src/onnx/hessian.ts: the model's own outputs
// are dropped and the graph pruned, so capturing block b runs blocks 0…b only) and accumulated
// here in float64 across batches, with Σ x_j² per channel (Wanda's activation energy).
// The Hessian handed to the core is H = (2/N)·Σ_k X_kᵀX_k with N = the number of sequences, as
// the official code (P12); its scale doesn't change the compressed weights.
import * as ort from 'onnxruntime-node';
import { addHessianCapture, type HessianCapture } from '../onnx/hessian';
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

/** One capture request per distinct layer input of `group` (layers sharing an input share its Hessian). */
export function requestsFor(group: readonly LinearLayer[]): CaptureRequest[] {
  const seen = new Map<string, CaptureRequest>();
  for (const l of group) if (!seen.has(l.inputName)) seen.set(l.inputName, { input: l.inputName, features: l.inFeatures });
  return [...seen.values()];
}

export interface CapturedStats {
  /** (2/N)·Σ XᵀX, n×n row-major float64. */
  hessian: Float64Array;
  /** Mean ‖X_j‖² per sequence (diag of Σ XᵀX / N), length n. */
  channelEnergy: Float64Array;
  tokens: number;
}

/**
 * Sums of the capture outputs across batches, in float64: Σ XᵀX and Σ x_j² per requested input.
 * Shared by the whole-model capture below and the block-streaming one (src/pipeline/blockStream.ts).
 */
export class StatsAccumulator {
  private readonly sums: Float64Array[];
  private readonly squares: Float64Array[];
  tokens = 0;

  constructor(private readonly requests: readonly CaptureRequest[]) {
    this.sums = requests.map((r) => new Float64Array(r.features * r.features));
    this.squares = requests.map((r) => new Float64Array(r.features));
  }

  /** Output names to request from a capture graph (src/onnx/hessian.ts), in the order add() reads them. */
  static outputs(capture: HessianCapture, requests: readonly CaptureRequest[]): string[] {
    return [...requests.flatMap((r) => [capture.byInput.get(r.input)!.xtx, capture.byInput.get(r.input)!.sumSquares]), capture.tokenCount];
  }

  /** Adds one batch's outputs and disposes them. */
  add(capture: HessianCapture, out: Record<string, ort.Tensor>): void {
    this.requests.forEach((r, k) => {
      const c = capture.byInput.get(r.input)!;
      for (const [name, acc] of [[c.xtx, this.sums[k]!], [c.sumSquares, this.squares[k]!]] as const) {
        const t = out[name]!;
        const data = t.data as Float32Array;
        for (let j = 0; j < acc.length; j++) acc[j] += data[j]!;
        t.dispose();
      }
    });
    const count = out[capture.tokenCount]!;
    this.tokens += Number((count.data as Float32Array)[0]);
    count.dispose();
  }

  /** H = (2/N)·Σ XᵀX and the mean channel energy, N = the number of sequences. */
  finish(sequences: number): Map<string, CapturedStats> {
    const stats = new Map<string, CapturedStats>();
    this.requests.forEach((r, k) => {
      const h = this.sums[k]!;
      const energy = this.squares[k]!.map((v) => v / sequences);
      for (let j = 0; j < h.length; j++) h[j] = (2 / sequences) * h[j]!;
      stats.set(r.input, { hessian: h, channelEnergy: energy, tokens: this.tokens });
    });
    return stats;
  }
}

/**
 * Runs the calibration windows through `model` with capture outputs for `requests` and returns
 * the accumulated statistics per input name (the whole-model path: capturing block b runs
 * blocks 0…b from the token ids).
 */
export async function captureStats(
  modelBytes: (m: ModelProto) => Uint8Array | Promise<Uint8Array>,
  model: ModelProto,
  layers: readonly LinearLayer[],
  requests: readonly CaptureRequest[],
  windows: TokenWindows,
  opts: { executionProviders: readonly string[]; batch: number; signal?: AbortSignal; onBatch?(done: number, total: number): void },
): Promise<{ stats: Map<string, CapturedStats>; executionProvider: CausalLm['executionProvider'] }> {
  const capture = addHessianCapture(model, layers, { inputs: requests.map((r) => r.input) });
  const outputs = StatsAccumulator.outputs(capture, requests);
  const lm = await CausalLm.open(await modelBytes(capture.model), { executionProviders: opts.executionProviders, outputsOnly: true });
  const acc = new StatsAccumulator(requests);
  try {
    for (let i = 0; i < windows.count; i += opts.batch) {
      throwIfAborted(opts.signal);
      const b = Math.min(opts.batch, windows.count - i);
      const ids = windows.ids.subarray(i * windows.seqlen, (i + b) * windows.seqlen);
      acc.add(capture, await lm.runOutputs(ids, b, windows.seqlen, outputs));
      opts.onBatch?.(i + b, windows.count);
    }
  } finally {
    await lm.release();
  }
  return { stats: acc.finish(windows.count), executionProvider: lm.executionProvider };
}
