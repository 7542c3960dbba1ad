// The model's vocabulary size, from the graph: the rows of the embedding table that input_ids
// index (a Gather, or onnxruntime's EmbedLayerNormalization), else the last dim of `logits`.
import { indexGraph } from './graph';
import type { ModelProto } from './proto';
import { tensorDims } from './tensor';

export function modelVocabulary(model: ModelProto): number | undefined {
  const graph = model.graph;
  if (!graph) return undefined;
  const idx = indexGraph(graph);
  // input_ids, possibly through Cast/Reshape/Unsqueeze.
  const ids = new Set(['input_ids']);
  for (const n of graph.node ?? []) {
    if ((n.opType === 'Cast' || n.opType === 'Reshape' || n.opType === 'Unsqueeze' || n.opType === 'Identity') && ids.has(n.input?.[0] ?? '')) for (const o of n.output ?? []) ids.add(o);
  }
  for (const n of graph.node ?? []) {
    let table: string | undefined;
    if (n.opType === 'Gather' && ids.has(n.input?.[1] ?? '')) table = n.input?.[0];
    if (n.opType === 'GatherBlockQuantized' && ids.has(n.input?.[1] ?? '')) table = n.input?.[0];
    if (n.opType === 'EmbedLayerNormalization' && ids.has(n.input?.[0] ?? '')) table = n.input?.[2];
    const t = table ? idx.initializers.get(table) : undefined;
    const dims = t ? tensorDims(t) : [];
    if (dims.length === 2 && dims[0]! > 0) return dims[0];
  }
  const logits = (graph.output ?? []).find((o) => o.name === 'logits');
  const last = logits?.type?.tensorType?.shape?.dim?.at(-1)?.dimValue;
  const v = last === undefined || last === null ? undefined : Number(last);
  return v && v > 0 ? v : undefined;
}
