// The model being compressed, in memory: a ModelProto with every weight inline (so onnxruntime
// can load it from bytes), its linear layers, and weight replacement in the [out, in] convention.
import { cloneModel } from '../onnx/graph';
import { findLinearLayers } from '../onnx/linear';
import { wrapModel, type LoadedModel } from '../onnx/load';
import { DataType, encodeModel, type ModelProto, type TensorProto } from '../onnx/proto';
import { isExternal } from '../onnx/tensor';
import type { LinearLayer } from '../onnx/types';
import { readLayerWeight64, replaceLayerWeights } from '../onnx/weights';
import type { LayerRole } from '../protocol/report';

/** The projections OBR compresses (P14); lm_head and embeddings stay dense. */
export const COMPRESSED_ROLES: ReadonlySet<LayerRole> = new Set(['q', 'k', 'v', 'qkv', 'o', 'gate', 'up', 'down']);

export class WorkingModel {
  private constructor(
    private current: ModelProto,
    private allLayers: LinearLayer[],
    readonly dir: string,
  ) {}

  /** Copies the source model with its external data read inline. */
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

  get proto(): ModelProto {
    return this.current;
  }

  /** Replaces the whole graph (after a rotation) and re-finds the layers. */
  replaceProto(proto: ModelProto): void {
    this.current = proto;
    this.allLayers = findLinearLayers(proto);
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

  /** W [out, in] row-major, float64. */
  readWeight(layer: LinearLayer): Promise<Float64Array> {
    return readLayerWeight64(wrapModel(this.current, this.dir), layer);
  }

  /** Writes W [out, in] row-major into the layer's initializer (its dtype and orientation). */
  setWeights(weights: ReadonlyMap<string, Float64Array>): void {
    if (weights.size === 0) return;
    this.current = replaceLayerWeights(this.current, this.allLayers, weights);
  }

  bytes(proto: ModelProto = this.current): Uint8Array {
    return encodeModel(proto);
  }
}
