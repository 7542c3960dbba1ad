// Packed export: each compressed MatMul/Gemm becomes com.microsoft MatMulNBits (ONNX Runtime
// contrib op), Y = A · dequant(B)ᵀ with dequant(B)[n, k] = (q[n, k] − zp[n, blk]) · scale[n, blk].
//
// Layout (onnxruntime ContribOperators.md, MatMulNBits):
//   B            uint8 [N, n_blocks, blob], blob = block_size·bits/8, codes packed low bits first
//                along K; K is padded up to n_blocks·block_size with the block's zero point.
//   scales       [N · n_blocks] in A's float type: with groups (block size = group size) the real
//                per-group scale; per row, the row's scale repeated in every block.
//   zero_points  uint8 [N · ceil(n_blocks·bits/8)], packed like B, each row padded to a byte.
// Our codes are signed integers c ∈ [−2^(b−1), 2^(b−1) − 1] and zero points z in the same range
// (z = 0 when symmetric), W ≈ scale·(c − z). Stored code q = c + 2^(b−1), stored zero point
// z + 2^(b−1) (2^(b−1) when symmetric), so (q − zp)·s = (c − z)·s exactly, and a pruned weight of a
// symmetric layer (c = 0) dequantizes to 0 whatever the scale.
import { DataType, type ModelProto, type NodeProto, type TensorProto } from './proto';
import { ModelWriteInputError } from './errors';
import { GraphEditor } from './edit';
import { attrFloat, ensureOpset, pruneUnused, setMetadata } from './graph';
import { layerComputeType } from './linear';
import { encodeFloats, elementSize } from './tensor';
import type { LinearLayer } from './types';
import type { LoadedModel } from './load';
import { decodeFloats } from './tensor';
import { intAttr } from './builder';

export interface QuantizedLayer {
  /** Signed codes, row-major [out, in] (rows = output channels N, columns = K). */
  codes: Int8Array;
  /**
   * Scales, row-major [out, groups]: groups = ceil(K / groupSize) with groups, 1 per row
   * (groupSize 0 or absent).
   */
  scales: Float32Array;
  /** Signed zero points [out, groups] (same layout as scales), integers in the code range; absent = symmetric. */
  zeros?: ArrayLike<number>;
  /** Columns per scale: 0 or absent = one scale per row. Must equal the pack block size when > 0. */
  groupSize?: number;
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
    checkQuantized(name, q, N, K, blockSize);
    const floatType = layerComputeType(model, layer);
    if (floatType !== DataType.FLOAT && floatType !== DataType.FLOAT16) {
      throw new ModelWriteInputError('bad-weight', `packMatMulNBits: "${name}" computes in element type ${floatType}; MatMulNBits needs float32 or float16 activations`);
    }
    const packed = packCodes(q, N, K, blockSize);
    const base = layer.weightName.replace(/\.weight$/, '');
    const bName = ed.initializer({ name: ed.names.fresh(`${base}.MatMulNBits.qweight`), dims: [N, packed.blocks, packed.blob], dataType: DataType.UINT8, rawData: packed.b });
    const scales = blockScales(q, N, packed.blocks);
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
  const grouped = [...quantized.values()].some((q) => (q.groupSize ?? 0) > 0);
  const asymmetric = [...quantized.values()].some((q) => q.zeros !== undefined);
  setMetadata(out, 'obr.transform.matmulnbits', JSON.stringify({ blockSize, layers: stats.length, scales: grouped ? 'per-block' : 'per-row', asymmetric }));
  return { model: out, layers: stats, originalBytes, packedBytes, bytesPerWeight: weights ? packedBytes / weights : 0 };
}

function tensorBytes(t: TensorProto): number {
  const count = (t.dims ?? []).reduce<number>((a, d) => a * Number(d), 1);
  return count * (elementSize(t.dataType ?? 0) ?? 0);
}

/** Scales per (row, block) as MatMulNBits stores them: the group's own, or the row's repeated. */
function blockScales(q: QuantizedLayer, N: number, blocks: number): Float32Array {
  const scales = new Float32Array(N * blocks);
  if ((q.groupSize ?? 0) > 0) scales.set(q.scales.subarray(0, N * blocks));
  else for (let n = 0; n < N; n++) scales.fill(q.scales[n], n * blocks, (n + 1) * blocks);
  return scales;
}

/** Columns per scale of a quantized layer and the number of scale groups per row. */
function groupsOf(q: QuantizedLayer, K: number): { groupSize: number; groups: number } {
  const groupSize = q.groupSize ?? 0;
  return { groupSize, groups: groupSize > 0 ? Math.ceil(K / groupSize) : 1 };
}

function checkQuantized(name: string, q: QuantizedLayer, N: number, K: number, blockSize: number): void {
  if (![2, 4, 8].includes(q.bits)) {
    throw new ModelWriteInputError('bad-weight', `packMatMulNBits: "${name}" has ${q.bits}-bit codes; MatMulNBits packs 2, 4 or 8 bits`);
  }
  const { groupSize, groups } = groupsOf(q, K);
  if (groupSize > 0 && groupSize !== blockSize) {
    throw new ModelWriteInputError('bad-option', `packMatMulNBits: "${name}" has groups of ${groupSize} columns but the block size is ${blockSize}; they must be equal`);
  }
  if (q.codes.length !== N * K || q.scales.length !== N * groups || (q.zeros && q.zeros.length !== N * groups)) {
    throw new ModelWriteInputError(
      'bad-weight',
      `packMatMulNBits: "${name}" needs codes [${N}×${K}] and ${N}×${groups} scales${q.zeros ? ' and zero points' : ''} (W is [out, in]); ` +
        `got ${q.codes.length} codes, ${q.scales.length} scales${q.zeros ? ` and ${q.zeros.length} zero points` : ''}`,
    );
  }
  const lo = -(1 << (q.bits - 1));
  const hi = (1 << (q.bits - 1)) - 1;
  for (let i = 0; i < q.codes.length; i++) {
    if (q.codes[i] < lo || q.codes[i] > hi) {
      throw new ModelWriteInputError('bad-weight', `packMatMulNBits: "${name}" code ${q.codes[i]} at ${i} is outside the ${q.bits}-bit range [${lo}, ${hi}]`);
    }
  }
  for (let i = 0; i < q.scales.length; i++) {
    if (!Number.isFinite(q.scales[i])) throw new ModelWriteInputError('bad-weight', `packMatMulNBits: "${name}" scale ${i} (row ${Math.floor(i / groups)}) is not finite`);
  }
  if (q.zeros) {
    for (let i = 0; i < q.zeros.length; i++) {
      const z = q.zeros[i]!;
      if (!Number.isInteger(z) || z < lo || z > hi) {
        throw new ModelWriteInputError('bad-weight', `packMatMulNBits: "${name}" zero point ${z} (row ${Math.floor(i / groups)}) is not an integer in the ${q.bits}-bit range [${lo}, ${hi}]`);
      }
    }
  }
}

/**
 * Packs signed codes [N, K] into MatMulNBits' B [N, n_blocks, blob] and the zero points
 * [N, ceil(n_blocks·bits/8)] (each row padded to a byte). Per-row zero points (groupSize 0) are
 * repeated in every block; symmetric layers store the mid code 2^(b−1).
 */
export function packCodes(q: QuantizedLayer, N: number, K: number, blockSize: number): { b: Uint8Array; zp: Uint8Array; blocks: number; blob: number } {
  const bits = q.bits;
  const perByte = 8 / bits;
  const offset = 1 << (bits - 1);
  const blocks = Math.ceil(K / blockSize);
  const blob = (blockSize * bits) / 8;
  const rowBytes = blocks * blob;
  const { groupSize, groups } = groupsOf(q, K);
  // Signed zero point of block `blk` of row n (0 when symmetric).
  const zeroOf = (n: number, blk: number): number => (q.zeros ? q.zeros[n * groups + (groupSize > 0 ? blk : 0)]! : 0);
  const b = new Uint8Array(N * rowBytes);
  for (let n = 0; n < N; n++) {
    const row = n * K;
    const out = n * rowBytes;
    // Codes beyond K (padding of the last block) are the block's zero point: they dequantize to 0.
    for (let k = 0; k < blocks * blockSize; k++) {
      const stored = (k < K ? q.codes[row + k] : zeroOf(n, Math.floor(k / blockSize))) + offset;
      b[out + Math.floor(k / perByte)] |= stored << ((k % perByte) * bits);
    }
  }
  const zpRow = Math.ceil((blocks * bits) / 8);
  const zp = new Uint8Array(N * zpRow);
  for (let n = 0; n < N; n++) {
    for (let blk = 0; blk < blocks; blk++) zp[n * zpRow + Math.floor(blk / perByte)] |= (zeroOf(n, blk) + offset) << ((blk % perByte) * bits);
  }
  return { b, zp, blocks, blob };
}

/** One MatMulNBits layer read back from a packed model: signed codes, scales and zero points per block. */
export interface UnpackedLayer {
  /** Output features N and input features K. */
  rows: number;
  cols: number;
  bits: number;
  blockSize: number;
  /** Blocks per row, ceil(K / blockSize). */
  blocks: number;
  /** Signed codes [N, K]: stored code − 2^(b−1). */
  codes: Int8Array;
  /** [N, blocks]. */
  scales: Float32Array;
  /** Signed zero points [N, blocks]: stored zero point − 2^(b−1) (all 0 for a symmetric layer). */
  zeros: Int8Array;
}

/**
 * Reads the MatMulNBits node named `nodeName` (the original MatMul/Gemm node's name, which the
 * packer keeps) back into signed codes, per-block scales and zero points. Undefined when the model
 * has no such node. The inverse of packCodes + blockScales.
 */
export async function unpackMatMulNBits(loaded: LoadedModel, nodeName: string): Promise<UnpackedLayer | undefined> {
  const node = (loaded.model.graph?.node ?? []).find((n) => n.opType === 'MatMulNBits' && (n.name === nodeName || n.output?.[0] === nodeName));
  if (!node) return undefined;
  const attr = (name: string): number => {
    const a = node.attribute?.find((x) => x.name === name);
    return a ? Number(a.i ?? 0) : NaN;
  };
  const K = attr('K');
  const N = attr('N');
  const bits = attr('bits');
  const blockSize = attr('block_size');
  if (![K, N, bits, blockSize].every((x) => Number.isInteger(x) && x > 0)) {
    throw new ModelWriteInputError('bad-weight', `MatMulNBits node "${nodeName}" lacks K, N, bits or block_size`);
  }
  const [, bName, sName, zName] = node.input ?? [];
  const blocks = Math.ceil(K / blockSize);
  const blob = (blockSize * bits) / 8;
  const perByte = 8 / bits;
  const mask = (1 << bits) - 1;
  const offset = 1 << (bits - 1);
  const b = await loaded.readBytes(bName!);
  const codes = new Int8Array(N * K);
  for (let n = 0; n < N; n++) {
    for (let k = 0; k < K; k++) codes[n * K + k] = ((b[n * blocks * blob + Math.floor(k / perByte)]! >> ((k % perByte) * bits)) & mask) - offset;
  }
  const sInfo = loaded.initializerInfo(sName!);
  const scales = decodeFloats(await loaded.readBytes(sName!), sInfo?.dataType ?? DataType.FLOAT, new Float32Array(N * blocks));
  const zeros = new Int8Array(N * blocks);
  if (zName) {
    const zp = await loaded.readBytes(zName);
    const zpRow = Math.ceil((blocks * bits) / 8);
    for (let n = 0; n < N; n++) {
      for (let blk = 0; blk < blocks; blk++) zeros[n * blocks + blk] = ((zp[n * zpRow + Math.floor(blk / perByte)]! >> ((blk % perByte) * bits)) & mask) - offset;
    }
  }
  return { rows: N, cols: K, bits, blockSize, blocks, codes, scales, zeros };
}
