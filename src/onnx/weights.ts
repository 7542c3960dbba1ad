// Layer weights in the math convention W ∈ R^{out×in} (row-major, rows = output channels),
// whatever the storage (MatMul [in,out], Gemm transB / Transpose [out,in], fp16/bf16, DequantizeLinear),
// and replacing weights in a ModelProto without touching anything else.
import { DataType, type ModelProto, type TensorProto } from './proto';
import { ModelFormatError, ModelWriteInputError } from './errors';
import { cloneModel, indexGraph, attrInt } from './graph';
import type { LoadedModel, ReadWeightOptions } from './load';
import { dataTypeName, elementCount, encodeFloats, tensorDims, tensorHeader } from './tensor';
import type { LinearLayer } from './types';

/** Transposes a row-major rows×cols matrix. */
export function transposeMatrix<T extends Float32Array | Float64Array>(src: T, rows: number, cols: number): T {
  const out = new (src.constructor as { new (n: number): T })(rows * cols);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    for (let c = 0; c < cols; c++) out[c * rows + r] = src[base + c];
  }
  return out;
}

/** W [out, in] row-major as float32 (float64 with `as: 'float64'`), dequantized if stored quantized. */
export async function readLayerWeight(loaded: LoadedModel, layer: LinearLayer, options?: ReadWeightOptions): Promise<Float32Array> {
  const stored = layer.weightPath?.includes('DequantizeLinear')
    ? await readDequantized(loaded, layer)
    : await loaded.readWeight(layer.weightName, options);
  return layer.orientation === 'out-in' ? stored : transposeMatrix(stored, layer.inFeatures, layer.outFeatures);
}

export async function readLayerWeight64(loaded: LoadedModel, layer: LinearLayer, options?: ReadWeightOptions): Promise<Float64Array> {
  if (layer.weightPath?.includes('DequantizeLinear')) return Float64Array.from(await readLayerWeight(loaded, layer, options));
  const stored = await loaded.readWeight64(layer.weightName, options);
  return layer.orientation === 'out-in' ? stored : transposeMatrix(stored, layer.inFeatures, layer.outFeatures);
}

/** DequantizeLinear: (q − zero_point) · scale, per tensor or per `axis`. */
async function readDequantized(loaded: LoadedModel, layer: LinearLayer): Promise<Float32Array> {
  const graph = loaded.model.graph!;
  const idx = indexGraph(graph);
  const dq = (idx.consumers.get(layer.weightName) ?? []).find((n) => n.opType === 'DequantizeLinear');
  if (!dq) throw new ModelFormatError('unknown-initializer', `no DequantizeLinear reads "${layer.weightName}"`);
  const [, scaleName, zpName] = dq.input ?? [];
  const info = loaded.initializerInfo(layer.weightName)!;
  const bytes = await loaded.readBytes(layer.weightName);
  const signed = info.dataType === DataType.INT8;
  if (!signed && info.dataType !== DataType.UINT8) {
    throw new ModelFormatError('unsupported-dtype', `quantized weight "${layer.weightName}" is ${info.dtype}; OBR Studio reads int8/uint8 DequantizeLinear weights`);
  }
  const scale = await loaded.readWeight(scaleName ?? '');
  const zp = zpName ? await loaded.readBytes(zpName) : new Uint8Array(scale.length);
  const dims = info.dims;
  let axis = attrInt(dq, 'axis', 1);
  if (axis < 0) axis += dims.length;
  const count = info.elementCount;
  const out = new Float32Array(count);
  const inner = scale.length === 1 ? count : dims.slice(axis + 1).reduce((a, b) => a * b, 1);
  const q = (i: number) => (signed ? (bytes[i] << 24) >> 24 : bytes[i]);
  const z = (j: number) => (signed ? (zp[j] << 24) >> 24 : zp[j]);
  for (let i = 0; i < count; i++) {
    const j = scale.length === 1 ? 0 : Math.floor(i / inner) % scale.length;
    out[i] = (q(i) - z(j)) * scale[j];
  }
  return out;
}

/**
 * A ModelProto whose initializers `weights` (name → values in STORAGE order and shape) are replaced
 * by new tensors of the same name, shape and element type (fp16/bf16 rounded to nearest even).
 * Everything else is shared with `model`. The input model is not changed.
 */
export function replaceWeights(model: ModelProto, weights: ReadonlyMap<string, ArrayLike<number>>): ModelProto {
  const out = cloneModel(model);
  const inits = out.graph!.initializer!;
  const seen = new Set<string>();
  for (let i = 0; i < inits.length; i++) {
    const t = inits[i];
    const values = weights.get(t.name ?? '');
    if (!values) continue;
    seen.add(t.name ?? '');
    inits[i] = replacedTensor(t, values);
  }
  for (const name of weights.keys()) {
    if (!seen.has(name)) {
      throw new ModelWriteInputError('bad-weight', `replaceWeights: the model has no initializer "${name}"; use the weightName of a layer from findLinearLayers`);
    }
  }
  return out;
}

/** A copy of `t` (name, dims, dtype, doc) holding `values` as raw_data. */
export function replacedTensor(t: TensorProto, values: ArrayLike<number>): TensorProto {
  const dims = tensorDims(t);
  const count = elementCount(dims);
  if (values.length !== count) {
    throw new ModelWriteInputError(
      'bad-weight',
      `new values for "${t.name}" have ${values.length} elements but its shape [${dims.join(', ')}] needs ${count}`,
    );
  }
  const dataType = t.dataType ?? 0;
  if (dataType !== DataType.FLOAT && dataType !== DataType.FLOAT16 && dataType !== DataType.BFLOAT16 && dataType !== DataType.DOUBLE) {
    throw new ModelWriteInputError('bad-weight', `can't store float values in "${t.name}" of element type ${dataTypeName(dataType)}`);
  }
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v - v !== 0) {
      throw new ModelWriteInputError('bad-weight', `new values for "${t.name}" contain ${Number.isNaN(v) ? 'NaN' : 'Inf'} at element ${i}; the compression diverged — lower the damping or check the calibration data`);
    }
  }
  return { ...tensorHeader(t), rawData: encodeFloats(values, dataType) };
}

/** Storage-order values for a layer from W [out, in] row-major (the inverse of readLayerWeight). */
export function layerWeightToStorage(layer: LinearLayer, w: Float32Array | Float64Array): Float32Array | Float64Array {
  if (w.length !== layer.inFeatures * layer.outFeatures) {
    throw new ModelWriteInputError('bad-weight', `weight for "${layer.name}" has ${w.length} elements, expected ${layer.outFeatures}×${layer.inFeatures}`);
  }
  if (layer.weightPath?.includes('DequantizeLinear')) {
    throw new ModelWriteInputError('bad-weight', `"${layer.name}" reads a DequantizeLinear weight; writing it back quantized is not supported — export the model with float weights`);
  }
  return layer.orientation === 'out-in' ? w : transposeMatrix(w, layer.outFeatures, layer.inFeatures);
}

/** replaceWeights keyed by layer name with W [out, in] row-major. */
export function replaceLayerWeights(
  model: ModelProto,
  layers: readonly LinearLayer[],
  weights: ReadonlyMap<string, Float32Array | Float64Array>,
): ModelProto {
  const byName = new Map(layers.map((l) => [l.name, l]));
  const storage = new Map<string, ArrayLike<number>>();
  for (const [name, w] of weights) {
    const layer = byName.get(name);
    if (!layer) throw new ModelWriteInputError('bad-weight', `replaceLayerWeights: no layer named "${name}"`);
    storage.set(layer.weightName, layerWeightToStorage(layer, w));
  }
  return replaceWeights(model, storage);
}
