// The graph transforms the pipeline needs from src/onnx, behind one seam so the pipeline does not
// depend on their exact signatures: activation/KV fake quantization for the simulated model and
// the packed 4-bit MatMulNBits export.
import { addFakeQuant } from '../onnx/fakeQuant';
import { packMatMulNBits, type PackOptions, type QuantizedLayer } from '../onnx/packed';
import type { ModelProto } from '../onnx/proto';
import type { LinearLayer } from '../onnx/types';

export interface PackedLayer {
  layer: LinearLayer;
  /** rows×cols integer codes, [out, in] row-major. */
  codes: Int8Array;
  /** rows×groups scales (groups = 1 per row), row-major. */
  scales: Float64Array;
  /** rows×groups signed zero points; absent = symmetric. */
  zeros?: Float64Array;
  /** Columns per scale; 0 = one scale per row. */
  groupSize: number;
}

/** Storage of the packed layers: codes, scales and zero points (MatMulNBits' B, scales, zero_points). */
export interface PackedSize {
  /** Bytes of B + scales + zero points over the packed layers. */
  layerBytes: number;
  /** Weights packed. */
  weights: number;
  /** 8·layerBytes / weights: the bit width plus what the scales and zero points add. */
  bitsPerWeight: number;
}

/** Simulated model: per-token activation and KV-cache fake quantization nodes (§1.8). */
export function withFakeQuant(model: ModelProto, opts: { abits: number; kvbits: number }): { model: ModelProto; warnings: string[] } {
  const r = addFakeQuant(model, { abits: opts.abits, kvbits: opts.kvbits });
  return { model: r.model, warnings: r.warnings };
}

/** MatMulNBits block size with one scale per row: 128 when every K allows it, else 32 (it only sets the padding of K). */
export function packedRowBlockSize(layers: readonly LinearLayer[]): number {
  return layers.filter((l) => l.opType !== 'Attention').every((l) => l.inFeatures % 128 === 0) ? 128 : 32;
}

/**
 * Packed deployment model (MatMulNBits), or undefined with a reason when it can't be built.
 * With groups the MatMulNBits block is the group (one real scale and zero point per block); per
 * row, the row's scale is repeated per block and the block size only sets the padding of K.
 */
export function packedModel(
  model: ModelProto,
  all: readonly LinearLayer[],
  layers: readonly PackedLayer[],
  wbits: number,
  /** MatMulNBits block size for per-row scales (default: from these layers); the write stage packs block by block with the job's. */
  rowBlockSize?: number,
): { model?: ModelProto; size?: PackedSize; warning?: string } {
  if (wbits !== 4 && wbits !== 8 && wbits !== 2) return { warning: `no packed model: MatMulNBits stores 2, 4 or 8-bit weights, not ${wbits}-bit` };
  // onnxruntime's fused Attention keeps its packed q/k/v weight inside the op: MatMulNBits can't
  // replace it, so those layers stay as (already compressed) float weights in the packed model.
  const packable = layers.filter((p) => p.layer.opType !== 'Attention');
  const groupSizes = new Set(packable.map((p) => p.groupSize));
  if (groupSizes.size > 1) throw new Error(`internal: layers packed with different group sizes (${[...groupSizes].join(', ')})`);
  const groupSize = packable[0]?.groupSize ?? 0;
  const quantized = new Map<string, QuantizedLayer>(
    packable.map((p) => [
      p.layer.name,
      { codes: p.codes, scales: Float32Array.from(p.scales), ...(p.zeros ? { zeros: p.zeros } : {}), groupSize: p.groupSize, bits: wbits },
    ]),
  );
  const blockSize = (groupSize > 0 ? groupSize : (rowBlockSize ?? packedRowBlockSize(packable.map((p) => p.layer)))) as PackOptions['blockSize'];
  const r = packMatMulNBits(model, all, quantized, { blockSize });
  return { model: r.model, size: { layerBytes: r.packedBytes, weights: r.layers.reduce((n, l) => n + l.weights, 0), bitsPerWeight: Number((r.bytesPerWeight * 8).toFixed(4)) } };
}
