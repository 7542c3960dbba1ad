// `obr inspect`: a JSON summary of a model and its linear layers (what the pipeline will compress).
import { stat } from 'node:fs/promises';
import { opsetVersion, valueInfoShape } from './graph';
import { findLinearLayers, groupLayersByInput } from './linear';
import { loadModel, type LoadedModel } from './load';
import { dataTypeName, toNumber, type LongLike } from './tensor';
import type { LayerGroup, LinearLayer } from './types';

export interface TensorSummary {
  name: string;
  dtype: string;
  /** Numbers for fixed dims, names (or '?') for dynamic ones. */
  shape: Array<number | string>;
}

export interface InspectReport {
  model: {
    path: string;
    opset: number | null;
    /** Every imported opset, e.g. {"": 17, "com.microsoft": 1}. */
    opsets: Record<string, number>;
    irVersion: number;
    producer: string;
    inputs: TensorSummary[];
    outputs: TensorSummary[];
    /** Elements of all initializers. */
    parameters: number;
    /** Bytes on disk: the .onnx plus every external data file it references. */
    bytes: number;
    /** Bytes of all initializers. */
    weightBytes: number;
    externalData: string[];
  };
  layers: LinearLayer[];
  /** Layers sharing an input (one Hessian each). */
  groups: LayerGroup[];
}

export interface InspectOptions {
  /** Read every linear-layer weight once (one at a time) to check for NaN/Inf. */
  checkWeights?: boolean;
}

export async function inspectModel(path: string, options: InspectOptions = {}): Promise<InspectReport> {
  const loaded = await loadModel(path);
  try {
    return await inspectLoaded(loaded, options);
  } finally {
    await loaded.close();
  }
}

export async function inspectLoaded(loaded: LoadedModel, options: InspectOptions = {}): Promise<InspectReport> {
  const { model } = loaded;
  const graph = model.graph!;
  const layers = findLinearLayers(model);
  if (options.checkWeights) {
    for (const l of layers) await loaded.readWeight(l.weightName); // throws ModelFormatError on NaN/Inf
  }
  const files = new Set<string>();
  let parameters = 0;
  for (const name of loaded.initializerNames()) {
    const info = loaded.initializerInfo(name)!;
    parameters += info.elementCount;
    if (info.external) files.add(info.external.file);
  }
  let bytes = loaded.fileBytes;
  for (const f of files) bytes += (await stat(f)).size;
  const summary = (v: { name?: string | null; type?: unknown }): TensorSummary => {
    const s = valueInfoShape(v as Parameters<typeof valueInfoShape>[0]);
    return { name: v.name ?? '', dtype: s ? dataTypeName(s.elemType) : 'unknown', shape: s?.dims ?? [] };
  };
  const opsets: Record<string, number> = {};
  for (const o of model.opsetImport ?? []) opsets[o.domain ?? ''] = toNumber(o.version as number | LongLike);
  return {
    model: {
      path: loaded.path,
      opset: opsetVersion(model) ?? null,
      opsets,
      irVersion: toNumber(model.irVersion as number | LongLike),
      producer: [model.producerName, model.producerVersion].filter(Boolean).join(' '),
      inputs: (graph.input ?? []).filter((v) => !loaded.initializerInfo(v.name ?? '')).map(summary),
      outputs: (graph.output ?? []).map(summary),
      parameters,
      bytes,
      weightBytes: loaded.weightBytes,
      externalData: [...files],
    },
    layers,
    groups: groupLayersByInput(layers),
  };
}
