// The longest sequence a graph can run: the row count of its position tables. A learned
// position embedding (GPT-2's wpe: a Gather over a constant [max_positions, hidden] table with
// indices that are not the token ids) or a rotary cos/sin cache fed to com.microsoft
// RotaryEmbedding / GroupQueryAttention ([max_positions, rotary_dim / 2]) fails inside
// onnxruntime with an out-of-bounds Gather when a window is longer than the table.
import { indexGraph, isDefaultDomain, attrInt } from './graph';
import type { ModelProto } from './proto';
import { tensorDims } from './tensor';

export interface PositionLimit {
  positions: number;
  /** What the limit comes from, e.g. `position table "wpe.weight" [1024, 768]`. */
  source: string;
}

/** The smallest position table of the graph, or undefined when it has none (e.g. RoPE computed from position_ids). */
export function graphPositionLimit(model: ModelProto): PositionLimit | undefined {
  const graph = model.graph;
  if (!graph) return undefined;
  const idx = indexGraph(graph);
  const tableDims = (name: string): number[] | undefined => {
    const t = idx.initializers.get(name) ?? idx.constants.get(name);
    return t ? tensorDims(t) : undefined;
  };
  // Does `tensor` carry token-id values (input_ids reached through anything but Shape/Size)?
  const memo = new Map<string, boolean>();
  const fromIds = (tensor: string, depth = 0): boolean => {
    if (tensor === 'input_ids') return true;
    const known = memo.get(tensor);
    if (known !== undefined) return known;
    memo.set(tensor, false);
    const p = idx.producer.get(tensor);
    const r = !!p && depth < 64 && p.opType !== 'Shape' && p.opType !== 'Size' && (p.input ?? []).some((x) => !!x && fromIds(x, depth + 1));
    memo.set(tensor, r);
    return r;
  };
  let best: PositionLimit | undefined;
  const consider = (positions: number, source: string) => {
    if (positions > 0 && (!best || positions < best.positions)) best = { positions, source };
  };
  for (const n of graph.node ?? []) {
    const inputs = n.input ?? [];
    if (isDefaultDomain(n) && n.opType === 'Gather' && attrInt(n, 'axis', 0) === 0) {
      const dims = tableDims(inputs[0] ?? '');
      if (dims?.length === 2 && inputs[1] && !fromIds(inputs[1])) consider(dims[0]!, `position table "${inputs[0]}" [${dims.join(', ')}]`);
    } else if (n.domain === 'com.microsoft' && (n.opType === 'RotaryEmbedding' || n.opType === 'GroupQueryAttention')) {
      const slot = n.opType === 'RotaryEmbedding' ? 2 : 7;
      const dims = tableDims(inputs[slot] ?? '');
      if (dims && dims.length >= 2) consider(dims[0]!, `rotary cos cache "${inputs[slot]}" [${dims.join(', ')}]`);
    }
  }
  return best;
}
