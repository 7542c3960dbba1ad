// The graph transforms the pipeline needs from src/onnx, behind one seam so the pipeline does not
// depend on their exact signatures: activation/KV fake quantization for the simulated model and
// the packed 4-bit MatMulNBits export.
import { addFakeQuant } from '../onnx/fakeQuant';
import { packMatMulNBits, type QuantizedLayer } from '../onnx/packed';
import type { ModelProto } from '../onnx/proto';
import type { LinearLayer } from '../onnx/types';

export interface PackedLayer {
  layer: LinearLayer;
  /** rows×cols integer codes, [out, in] row-major. */
  codes: Int8Array;
  /** Per-row scale. */
  scales: Float64Array;
}

/** Simulated model: per-token activation and KV-cache fake quantization nodes (§1.8). */
export function withFakeQuant(model: ModelProto, opts: { abits: number; kvbits: number }): { model: ModelProto; warnings: string[] } {
  const r = addFakeQuant(model, { abits: opts.abits, kvbits: opts.kvbits });
  return { model: r.model, warnings: r.warnings };
}

/** Packed deployment model (MatMulNBits), or undefined with a reason when it can't be built. */
export function packedModel(model: ModelProto, all: readonly LinearLayer[], layers: readonly PackedLayer[], wbits: number): { model?: ModelProto; warning?: string } {
  if (wbits !== 4 && wbits !== 8 && wbits !== 2) return { warning: `no packed model: MatMulNBits stores 2, 4 or 8-bit weights, not ${wbits}-bit` };
  // onnxruntime's fused Attention keeps its packed q/k/v weight inside the op: MatMulNBits can't
  // replace it, so those layers stay as (already compressed) float weights in the packed model.
  const packable = layers.filter((p) => p.layer.opType !== 'Attention');
  const quantized = new Map<string, QuantizedLayer>(
    packable.map((p) => [p.layer.name, { codes: p.codes, scales: Float32Array.from(p.scales), bits: wbits }]),
  );
  // The scale is per row, repeated per block: the block size only sets the padding of K.
  const blockSize = packable.every((p) => p.layer.inFeatures % 128 === 0) ? 128 : 32;
  return { model: packMatMulNBits(model, all, quantized, { blockSize }).model };
}
