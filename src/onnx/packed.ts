// Packed export: each compressed MatMul/Gemm becomes com.microsoft MatMulNBits (ONNX Runtime
// contrib op), Y = A · dequant(B)ᵀ with dequant(B)[n, k] = (q[n, k] − zp[n, blk]) · scale[n, blk].
//
// Layout (onnxruntime ContribOperators.md, MatMulNBits):
//   B            uint8 [N, n_blocks, blob], blob = block_size·bits/8, codes packed low bits first
//                along K; K is padded up to n_blocks·block_size with the zero code.
//   scales       [N · n_blocks] in A's float type; our scale is per output row, repeated per block.
//   zero_points  uint8 [N · ceil(n_blocks·bits/8)], packed like B, each row padded to a byte.
// Our codes are symmetric signed integers c ∈ [−2^(b−1), 2^(b−1) − 1] (W ≈ scale·c). Stored code
// q = c + 2^(b−1) with zero point 2^(b−1), so a pruned weight (c = 0) dequantizes to (q − zp)·s = 0
// exactly, whatever the scale.
import { DataType, type ModelProto, type NodeProto, type TensorProto } from './proto';
import { ModelWriteInputError } from './errors';
import { GraphEditor } from './edit';
import { attrFloat, ensureOpset, pruneUnused, setMetadata } from './graph';
import { layerComputeType } from './linear';
import { encodeFloats, elementSize } from './tensor';
import type { LinearLayer } from './types';
import { intAttr } from './builder';

export interface QuantizedLayer {
  /** Signed codes, row-major [out, in] (rows = output channels N, columns = K). */
  codes: Int8Array;
  /** Scale per output row [out]. */
  scales: Float32Array;
  bits: number;
}

export interface PackOptions {
  blockSize: 16 | 32 | 64 | 128 | 256;
  /** MatMulNBits accuracy_level (0 = default fp32 compute; 4 = int8 activations, faster, less exact). */
  accuracyLevel?: number;
}

export interface PackedLayerStats {
  name: string;
  /** Bytes of the original weight initializer. */
  originalBytes: number;
  /** Bytes of B + scales + zero_points. */
  packedBytes: number;
  weights: number;
}

export interface PackResult {
  model: ModelProto;
  layers: PackedLayerStats[];
  originalBytes: number;
  packedBytes: number;
  /** packedBytes / number of packed weights (0.5 = 4 bits before scales and zero points). */
  bytesPerWeight: number;
}

export function packMatMulNBits(
  model: ModelProto,
  layers: readonly LinearLayer[],
  quantized: ReadonlyMap<string, QuantizedLayer>,
  options: PackOptions,
): PackResult {
  const blockSize = options.blockSize;
  if (![16, 32, 64, 128, 256].includes(blockSize)) {
    throw new ModelWriteInputError('bad-option', `packMatMulNBits: block size ${blockSize} is not supported; use 32, 64 or 128`);
  }
  const byName = new Map(layers.map((l) => [l.name, l]));
  for (const name of quantized.keys()) {
    if (!byName.has(name)) throw new ModelWriteInputError('bad-weight', `packMatMulNBits: no linear layer named "${name}"`);
  }
  const ed = new GraphEditor(model, 'obr_packed');
  const graph = ed.model.graph!;
  const nodes = graph.node!;
  const inits = new Map((graph.initializer ?? []).map((t) => [t.name ?? '', t]));
  const stats: PackedLayerStats[] = [];
  for (const [name, q] of quantized) {
    const layer = byName.get(name)!;
    const at = nodes.findIndex((n) => (n.name || n.output?.[0]) === layer.name);
    if (at < 0) throw new ModelWriteInputError('bad-weight', `packMatMulNBits: node "${layer.name}" is not in this model`);
    const original = nodes[at];
    const K = layer.inFeatures;
    const N = layer.outFeatures;
    checkQuantized(name, q, N, K);
    const floatType = layerComputeType(model, layer);
    if (floatType !== DataType.FLOAT && floatType !== DataType.FLOAT16) {
      throw new ModelWriteInputError('bad-weight', `packMatMulNBits: "${name}" computes in element type ${floatType}; MatMulNBits needs float32 or float16 activations`);
    }
    const packed = packCodes(q, N, K, blockSize);
    const base = layer.weightName.replace(/\.weight$/, '');
    const bName = ed.initializer({ name: ed.names.fresh(`${base}.MatMulNBits.qweight`), dims: [N, packed.blocks, packed.blob], dataType: DataType.UINT8, rawData: packed.b });
    const scales = new Float32Array(N * packed.blocks);
    for (let n = 0; n < N; n++) scales.fill(q.scales[n], n * packed.blocks, (n + 1) * packed.blocks);
    const sName = ed.initializer({ name: ed.names.fresh(`${base}.MatMulNBits.scales`), dims: [N * packed.blocks], dataType: floatType, rawData: encodeFloats(scales, floatType) });
    const zName = ed.initializer({ name: ed.names.fresh(`${base}.MatMulNBits.qzeros`), dims: [packed.zp.length], dataType: DataType.UINT8, rawData: packed.zp });
    const replacement: NodeProto[] = [];
    let output = original.output![0];
    let biasName: string | undefined;
    if (original.opType === 'Gemm') {
      if (attrFloat(original, 'alpha', 1) !== 1 || attrFloat(original, 'beta', 1) !== 1) {
        throw new ModelWriteInputError('bad-weight', `packMatMulNBits: Gemm "${name}" scales its product (alpha/beta ≠ 1); that is not supported`);
      }
      biasName = original.input?.[2] || undefined;
      if (biasName) output = ed.names.fresh(`${output}/no_bias`);
    }
    replacement.push({
      opType: 'MatMulNBits',
      domain: 'com.microsoft',
      name: original.name || ed.names.fresh(`/obr_packed/${name}`),
      input: [original.input![0], bName, sName, zName],
      output: [output],
      attribute: [
        intAttr('K', K),
        intAttr('N', N),
        intAttr('bits', q.bits),
        intAttr('block_size', blockSize),
        ...(options.accuracyLevel ? [intAttr('accuracy_level', options.accuracyLevel)] : []),
      ],
    });
    if (biasName) replacement.push({ opType: 'Add', domain: '', name: ed.names.fresh(`${original.name}/bias`), input: [output, biasName], output: [original.output![0]], attribute: [] });
    nodes.splice(at, 1, ...replacement);
    const w = inits.get(layer.weightName);
    const originalBytes = w ? tensorBytes(w) : 0;
    const packedBytes = packed.b.length + scales.length * (floatType === DataType.FLOAT ? 4 : 2) + packed.zp.length;
    stats.push({ name, originalBytes, packedBytes, weights: N * K });
  }
  const out = ed.finish();
  ensureOpset(out, 'com.microsoft', 1);
  pruneUnused(out); // drops the float weights (and their Cast/Transpose) nobody reads any more
  const originalBytes = stats.reduce((s, x) => s + x.originalBytes, 0);
  const packedBytes = stats.reduce((s, x) => s + x.packedBytes, 0);
  const weights = stats.reduce((s, x) => s + x.weights, 0);
  setMetadata(out, 'obr.transform.matmulnbits', JSON.stringify({ blockSize, layers: stats.length }));
  return { model: out, layers: stats, originalBytes, packedBytes, bytesPerWeight: weights ? packedBytes / weights : 0 };
}

function tensorBytes(t: TensorProto): number {
  const count = (t.dims ?? []).reduce<number>((a, d) => a * Number(d), 1);
  return count * (elementSize(t.dataType ?? 0) ?? 0);
}

function checkQuantized(name: string, q: QuantizedLayer, N: number, K: number): void {
  if (![2, 4, 8].includes(q.bits)) {
    throw new ModelWriteInputError('bad-weight', `packMatMulNBits: "${name}" has ${q.bits}-bit codes; MatMulNBits packs 2, 4 or 8 bits`);
  }
  if (q.codes.length !== N * K || q.scales.length !== N) {
    throw new ModelWriteInputError(
      'bad-weight',
      `packMatMulNBits: "${name}" needs codes [${N}×${K}] and ${N} scales (W is [out, in]); got ${q.codes.length} codes and ${q.scales.length} scales`,
    );
  }
  const lo = -(1 << (q.bits - 1));
  const hi = (1 << (q.bits - 1)) - 1;
  for (let i = 0; i < q.codes.length; i++) {
    if (q.codes[i] < lo || q.codes[i] > hi) {
      throw new ModelWriteInputError('bad-weight', `packMatMulNBits: "${name}" code ${q.codes[i]} at ${i} is outside the ${q.bits}-bit range [${lo}, ${hi}]`);
    }
  }
  for (let i = 0; i < N; i++) {
    if (!Number.isFinite(q.scales[i])) throw new ModelWriteInputError('bad-weight', `packMatMulNBits: "${name}" scale of row ${i} is not finite`);
  }
}

/** Packs signed codes [N, K] into MatMulNBits' B [N, n_blocks, blob] and zero points. */
export function packCodes(q: QuantizedLayer, N: number, K: number, blockSize: number): { b: Uint8Array; zp: Uint8Array; blocks: number; blob: number } {
  const bits = q.bits;
  const perByte = 8 / bits;
  const offset = 1 << (bits - 1);
  const blocks = Math.ceil(K / blockSize);
  const blob = (blockSize * bits) / 8;
  const rowBytes = blocks * blob;
  const b = new Uint8Array(N * rowBytes);
  for (let n = 0; n < N; n++) {
    const row = n * K;
    const out = n * rowBytes;
    // Codes beyond K (padding of the last block) are the zero code.
    for (let k = 0; k < blocks * blockSize; k++) {
      const stored = (k < K ? q.codes[row + k] : 0) + offset;
      b[out + Math.floor(k / perByte)] |= stored << ((k % perByte) * bits);
    }
  }
  const zpRow = Math.ceil((blocks * bits) / 8);
  const zp = new Uint8Array(N * zpRow);
  for (let n = 0; n < N; n++) {
    for (let blk = 0; blk < blocks; blk++) zp[n * zpRow + Math.floor(blk / perByte)] |= offset << ((blk % perByte) * bits);
  }
  return { b, zp, blocks, blob };
}
