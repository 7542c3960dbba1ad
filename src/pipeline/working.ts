// The model being compressed: its graph (a ModelProto), its linear layers, and weight replacement
// in the [out, in] convention.
//
// A job's working copy (WorkingModel.open) keeps its weights on disk, in a WeightStore
// (src/onnx/store.ts): the graph holds external-data references (the source's data file for
// weights not changed yet, the job's working data file for rotated and compressed ones), and each
// weight is read when a layer is compressed or a block's session is opened, then handed back — so
// memory is bounded by one block, not the model. WorkingModel.fromLoaded is the in-memory copy
// (every weight inline) for tools that open whole-model sessions (sensitivity, runtime benchmark).
import { assertFinite, type LoadedModel } from '../onnx/load';
import { cloneModel } from '../onnx/graph';
import { findLinearLayers } from '../onnx/linear';
import { DataType, encodeModel, type ModelProto, type TensorProto } from '../onnx/proto';
import { WeightStore } from '../onnx/store';
import { decodeFloats, elementCount, isExternal, tensorDims } from '../onnx/tensor';
import type { LinearLayer } from '../onnx/types';
import { layerWeightToStorage, readLayerWeight64, replacedTensor, replaceLayerWeights, transposeMatrix } from '../onnx/weights';
import { wrapModel } from '../onnx/load';
import type { LayerRole } from '../protocol/report';

/** The working data file's name in the job's working folder `.NAME.obr-partial/`. */
export const WORKING_DATA_FILE = 'working.data';

/** The projections OBR compresses (P14); lm_head and embeddings stay dense. */
export const COMPRESSED_ROLES: ReadonlySet<LayerRole> = new Set(['q', 'k', 'v', 'qkv', 'o', 'gate', 'up', 'down']);

export class WorkingModel {
  /** Bytes of each layer weight read by readWeight and not yet replaced (handed back by setWeights). */
  private readonly reading = new Map<string, number>();

  private constructor(
    private current: ModelProto,
    private allLayers: LinearLayer[],
    readonly dir: string,
    /** Where the weights live; undefined for the in-memory copy (every weight inline). */
    readonly store?: WeightStore,
  ) {}

  /** Copies the source model with its external data read inline (the in-memory copy). */
  static async fromLoaded(loaded: LoadedModel): Promise<WorkingModel> {
    const proto = cloneModel(loaded.model);
    const inits = proto.graph!.initializer!;
    for (let i = 0; i < inits.length; i++) {
      const t = inits[i]!;
      if (!isExternal(t)) continue;
      const rawData = await loaded.readBytes(t.name ?? '');
      const inline: TensorProto = { name: t.name, dims: t.dims, dataType: t.dataType ?? DataType.FLOAT, docString: t.docString, rawData };
      inits[i] = inline;
    }
    return new WorkingModel(proto, findLinearLayers(proto), loaded.dir);
  }

  /**
   * The job's working copy: the source graph with its external-data references kept; weights the
   * job changes go to `dataFile` (in the job's working folder; created on the first write and
   * removed by dispose()).
   */
  static open(loaded: LoadedModel, dataFile: string): WorkingModel {
    const proto = cloneModel(loaded.model);
    return new WorkingModel(proto, findLinearLayers(proto), loaded.dir, new WeightStore(loaded.dir, dataFile));
  }

  /** The graph's layers without reading any weight (inspect, pre-flight). */
  static describe(loaded: LoadedModel): WorkingModel {
    const proto = cloneModel(loaded.model);
    return new WorkingModel(proto, findLinearLayers(proto), loaded.dir);
  }

  get proto(): ModelProto {
    return this.current;
  }

  /** Replaces the whole graph (after a rotation) and re-finds the layers; in a store its big tensors go to the working data file. */
  async replaceProto(proto: ModelProto): Promise<void> {
    this.current = this.store ? await this.store.externalize(proto) : proto;
    this.allLayers = findLinearLayers(this.current);
  }

  get layers(): readonly LinearLayer[] {
    return this.allLayers;
  }

  /** Layers OBR compresses: the 7 projections of every decoder block, float weights, not shared. */
  compressible(): { layers: LinearLayer[]; skipped: Array<{ layer: LinearLayer; why: string }> } {
    const layers: LinearLayer[] = [];
    const skipped: Array<{ layer: LinearLayer; why: string }> = [];
    for (const l of this.allLayers) {
      if (l.block === null || !COMPRESSED_ROLES.has(l.role)) continue;
      if (l.weightShared) skipped.push({ layer: l, why: 'its weight initializer also feeds other nodes' });
      else if (l.weightPath?.includes('DequantizeLinear')) skipped.push({ layer: l, why: 'its weight is already quantized (DequantizeLinear)' });
      else layers.push(l);
    }
    return { layers, skipped };
  }

  layer(name: string): LinearLayer {
    const l = this.allLayers.find((x) => x.name === name);
    if (!l) throw new Error(`internal: no layer ${name}`);
    return l;
  }

  /** W [out, in] row-major, float64. In a store its bytes count as resident until setWeights replaces it. */
  async readWeight(layer: LinearLayer): Promise<Float64Array> {
    const store = this.store;
    if (!store || layer.weightPath?.includes('DequantizeLinear')) return readLayerWeight64(wrapModel(this.current, this.dir), layer);
    const t = this.initializer(layer.weightName);
    const bytes = await store.readTensor(t);
    if (isExternal(t)) this.reading.set(layer.name, (this.reading.get(layer.name) ?? 0) + bytes.length);
    const stored = decodeFloats(bytes, t.dataType ?? 0, new Float64Array(elementCount(tensorDims(t))));
    assertFinite(layer.weightName, stored);
    return layer.orientation === 'out-in' ? stored : transposeMatrix(stored, layer.inFeatures, layer.outFeatures);
  }

  /** Writes W [out, in] row-major into the layers' initializers (their dtype and orientation). */
  async setWeights(weights: ReadonlyMap<string, Float32Array | Float64Array>): Promise<void> {
    if (weights.size === 0) return;
    this.current = await this.withWeights(this.current, weights);
    for (const name of weights.keys()) {
      this.store?.release(this.reading.get(name) ?? 0);
      this.reading.delete(name);
    }
  }

  /**
   * A copy of `model` (a graph of this working copy, e.g. the rotated dense one) with the layers'
   * weights replaced by `weights` (W [out, in] row-major); in a store they go to the working data file.
   */
  async withWeights(model: ModelProto, weights: ReadonlyMap<string, Float32Array | Float64Array>): Promise<ModelProto> {
    const store = this.store;
    if (!store) return replaceLayerWeights(model, this.allLayers, weights);
    const out = cloneModel(model);
    const inits = out.graph!.initializer!;
    const at = new Map(inits.map((t, i) => [t.name ?? '', i]));
    for (const [name, w] of weights) {
      const layer = this.layer(name);
      const i = at.get(layer.weightName);
      if (i === undefined) throw new Error(`internal: no initializer ${layer.weightName}`);
      const fresh = replacedTensor(inits[i]!, layerWeightToStorage(layer, w));
      inits[i] = await store.put(fresh, fresh.rawData!);
    }
    return out;
  }

  /** A copy of `model` with every weight inline (whole-model sessions); release with releaseInline(). */
  async inlined(model: ModelProto = this.current): Promise<{ model: ModelProto; bytes: number }> {
    return this.store ? this.store.inlined(model) : { model, bytes: 0 };
  }

  releaseInline(bytes: number): void {
    this.store?.release(bytes);
  }

  /** The serialized model with every weight inline (whole-model sessions). */
  async bytes(proto: ModelProto = this.current): Promise<Uint8Array> {
    if (!this.store) return encodeModel(proto);
    const { model, bytes } = await this.store.inlined(proto);
    try {
      return encodeModel(model);
    } finally {
      this.store.release(bytes);
    }
  }

  /** The store's accounting (src/onnx/store.ts); undefined for the in-memory copy. */
  storeStats(): { peakResidentBytes: number; writtenBytes: number; dataFile: string } | undefined {
    const s = this.store;
    return s ? { peakResidentBytes: s.peakResident, writtenBytes: s.written, dataFile: s.dataFile } : undefined;
  }

  /** Closes the store's files and removes its working data file. */
  async dispose(): Promise<void> {
    await this.store?.close();
  }

  private initializer(name: string): TensorProto {
    const t = (this.current.graph?.initializer ?? []).find((x) => x.name === name);
    if (!t) throw new Error(`internal: no initializer ${name}`);
    return t;
  }
}
