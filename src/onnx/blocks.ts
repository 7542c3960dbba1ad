// Splitting a decoder graph into per-block subgraphs for block-streaming calibration and
// evaluation (docs/obr-algorithm.md §1.5: capture the first block's inputs once, then run one
// block at a time on cached hidden states).
//
// The split is found from topology alone. graph.node is topologically sorted, so a "cut" after
// node position p separates the graph in two; the tensors crossing it (produced at ≤ p, read
// after p) are all a later part needs from an earlier one. Between the last linear layer of
// block b−1 and the first of block b we cut where the fewest computed tensors cross: on a
// pre-norm transformer that is right after the residual Add, where only the residual stream and
// the side tensors every block reads (attention mask, rotary cos/sin, sequence-length scalars)
// are live. The first cut is taken after the embedding lookup the same way, so the "prelude"
// region holds the embedding and the last "tail" region the final norm and lm_head.
//
// Static tensors (initializers, Constant outputs and anything computed only from them, such as a
// Cast or Transpose of a weight) never cross a cut: a region subgraph copies their producers.
// What crosses is the region's `reads` (fed from the activation cache) and `writes` (returned).
import { DataType, type GraphProto, type ModelProto, type NodeProto, type TensorProto, type ValueInfoProto } from './proto';
import { valueInfo } from './builder';
import { cloneModel, isDefaultDomain } from './graph';
import { tensorDims } from './tensor';
import type { LinearLayer } from './types';

export interface GraphRegion {
  kind: 'prelude' | 'block' | 'tail';
  /** Decoder block index for kind 'block'. */
  block: number | null;
  /** Node positions [start, end) in graph.node. */
  start: number;
  end: number;
  /** Computed tensors this region reads that an earlier region produced (the cached state). */
  reads: string[];
  /** Graph inputs the region reads (input_ids, attention_mask, position_ids, past_key_values.*). */
  graphInputs: string[];
  /** Computed tensors produced here that a later region reads. */
  writes: string[];
}

export interface BlockSplit {
  regions: GraphRegion[];
  /**
   * Computed tensors whose values depend on the token ids (the hidden states); the others (mask,
   * rotary tables, shapes) depend only on the batch geometry and are cached once per batch size.
   */
  idsDependent: ReadonlySet<string>;
  /** Largest number of ids-dependent tensors crossing a block cut (1 on a plain residual stream). */
  maxHiddenCrossing: number;
}

export type SplitResult = { ok: BlockSplit } | { err: string };

/** Every tensor a node reads, including outer-scope names read by nested subgraphs (If/Loop/Scan). */
function nodeReads(n: NodeProto): string[] {
  const out = (n.input ?? []).filter(Boolean);
  const walk = (g: GraphProto) => {
    for (const m of g.node ?? []) {
      out.push(...(m.input ?? []).filter(Boolean));
      for (const a of m.attribute ?? []) {
        if (a.g) walk(a.g);
        for (const s of a.graphs ?? []) walk(s);
      }
    }
  };
  for (const a of n.attribute ?? []) {
    if (a.g) walk(a.g);
    for (const s of a.graphs ?? []) walk(s);
  }
  return out;
}

interface GraphFacts {
  nodes: NodeProto[];
  reads: string[][];
  producerPos: Map<string, number>;
  lastUse: Map<string, number>;
  isStatic: Set<string>;
  initializers: Map<string, TensorProto>;
  graphInputs: Set<string>;
}

function graphFacts(graph: GraphProto): GraphFacts {
  const nodes = graph.node ?? [];
  const initializers = new Map<string, TensorProto>();
  for (const t of graph.initializer ?? []) initializers.set(t.name ?? '', t);
  const graphInputs = new Set((graph.input ?? []).map((v) => v.name ?? '').filter((n) => !initializers.has(n)));
  const isStatic = new Set<string>(initializers.keys());
  for (const n of graphInputs) isStatic.delete(n);
  const reads = nodes.map(nodeReads);
  const producerPos = new Map<string, number>();
  const lastUse = new Map<string, number>();
  for (let i = 0; i < nodes.length; i++) {
    const n = nodes[i]!;
    for (const x of reads[i]!) lastUse.set(x, i);
    // Static: computed only from constants (random generators are not constants).
    const random = /^Random/.test(n.opType ?? '') || n.opType === 'Multinomial' || n.opType === 'Bernoulli';
    const st = !random && reads[i]!.every((x) => isStatic.has(x)) && (isDefaultDomain(n) || reads[i]!.length > 0);
    for (const o of n.output ?? []) {
      if (!o) continue;
      producerPos.set(o, i);
      if (st) isStatic.add(o);
    }
  }
  return { nodes, reads, producerPos, lastUse, isStatic, initializers, graphInputs };
}

/** Position of the embedding lookup: a Gather over a constant 2-D float table with run-time indices. */
function embeddingPosition(f: GraphFacts, before: number): number {
  for (let i = 0; i < before; i++) {
    const n = f.nodes[i]!;
    if (n.opType !== 'Gather' || !isDefaultDomain(n)) continue;
    const [table, indices] = n.input ?? [];
    if (!table || !indices || !f.isStatic.has(table) || f.isStatic.has(indices)) continue;
    const init = f.initializers.get(table);
    if (init && tensorDims(init).length !== 2) continue;
    return i;
  }
  return -1;
}

/**
 * Splits the graph into prelude, one region per decoder block and tail. Fails (with the reason)
 * when the blocks interleave in graph order or the graph has no blocks.
 */
export function splitBlocks(model: ModelProto, layers: readonly LinearLayer[]): SplitResult {
  const graph = model.graph;
  if (!graph) return { err: 'the model has no graph' };
  const f = graphFacts(graph);
  const span = new Map<number, { min: number; max: number }>();
  let lmHeadPos = f.nodes.length;
  for (const l of layers) {
    if (l.order === undefined) return { err: `layer ${l.name} has no graph position` };
    if (l.block === null) {
      if (l.role === 'lm_head') lmHeadPos = Math.min(lmHeadPos, l.order);
      continue;
    }
    const s = span.get(l.block);
    if (s) {
      s.min = Math.min(s.min, l.order);
      s.max = Math.max(s.max, l.order);
    } else span.set(l.block, { min: l.order, max: l.order });
  }
  const blocks = [...span.entries()].sort((a, b) => a[0] - b[0]);
  if (blocks.length === 0) return { err: 'no decoder blocks were found' };
  for (let b = 1; b < blocks.length; b++) {
    if (blocks[b]![1].min <= blocks[b - 1]![1].max) return { err: `blocks ${blocks[b - 1]![0]} and ${blocks[b]![0]} interleave in graph order` };
  }
  const last = blocks[blocks.length - 1]![1];
  if (lmHeadPos <= last.max) lmHeadPos = f.nodes.length;

  // crossing[p] = computed, non-static tensors produced at ≤ p and read after p (cut after node p).
  const n = f.nodes.length;
  const delta = new Int32Array(n + 1);
  for (const [t, p] of f.producerPos) {
    if (f.isStatic.has(t)) continue;
    const u = f.lastUse.get(t);
    if (u === undefined || u <= p) continue;
    delta[p + 1]! += 1;
    delta[u + 1]! -= 1;
  }
  // crossing after node p = Σ delta[0..p+1]; index with p+1 so p = −1 works.
  const crossing = new Int32Array(n + 1);
  for (let i = 0, s = 0; i <= n; i++) crossing[i] = s += delta[i]!;
  const bestCut = (from: number, to: number): number => {
    let best = from;
    for (let p = from; p <= to; p++) if (crossing[p + 1]! < crossing[best + 1]!) best = p;
    return best;
  };

  const cuts: number[] = [];
  const first = blocks[0]![1].min;
  cuts.push(bestCut(embeddingPosition(f, first), first - 1));
  for (let b = 1; b < blocks.length; b++) cuts.push(bestCut(blocks[b - 1]![1].max, blocks[b]![1].min - 1));
  cuts.push(bestCut(last.max, lmHeadPos - 1));

  const regions: GraphRegion[] = [];
  const bounds: Array<{ kind: GraphRegion['kind']; block: number | null; start: number; end: number }> = [
    { kind: 'prelude', block: null, start: 0, end: cuts[0]! + 1 },
    ...blocks.map(([b], i) => ({ kind: 'block' as const, block: b, start: cuts[i]! + 1, end: cuts[i + 1]! + 1 })),
    { kind: 'tail', block: null, start: cuts[cuts.length - 1]! + 1, end: n },
  ];
  for (const r of bounds) {
    const reads = new Set<string>();
    const inputs = new Set<string>();
    const writes: string[] = [];
    for (let i = r.start; i < r.end; i++) {
      for (const x of f.reads[i]!) {
        if (f.graphInputs.has(x)) inputs.add(x);
        else if (!f.isStatic.has(x) && (f.producerPos.get(x) ?? Infinity) < r.start) reads.add(x);
      }
      for (const o of f.nodes[i]!.output ?? []) {
        if (o && !f.isStatic.has(o) && (f.lastUse.get(o) ?? -1) >= r.end) writes.push(o);
      }
    }
    regions.push({ ...r, reads: [...reads], graphInputs: [...inputs], writes });
  }

  // Ids dependence: forward from input_ids; Shape/Size outputs depend only on the geometry.
  const idsDependent = new Set<string>(f.graphInputs.has('input_ids') ? ['input_ids'] : []);
  for (let i = 0; i < n; i++) {
    const node = f.nodes[i]!;
    if (node.opType === 'Shape' || node.opType === 'Size') continue;
    if (f.reads[i]!.some((x) => idsDependent.has(x))) for (const o of node.output ?? []) if (o) idsDependent.add(o);
  }
  let maxHiddenCrossing = 0;
  for (const r of regions) if (r.kind === 'block') maxHiddenCrossing = Math.max(maxHiddenCrossing, r.reads.filter((t) => idsDependent.has(t)).length);
  return { ok: { regions, idsDependent, maxHiddenCrossing } };
}

/**
 * The region as a model of its own: its nodes, the producers of the static tensors it reads
 * (copied), the initializers they read, the graph inputs it reads, its `reads` as inputs of the
 * given element types and `outputs` (default: its writes) as outputs. Opsets, IR version and
 * functions are the source model's.
 */
export function regionModel(
  model: ModelProto,
  region: GraphRegion,
  inputTypes: ReadonlyMap<string, number>,
  outputs: readonly string[] = region.writes,
): ModelProto {
  const graph = model.graph!;
  const f = graphFacts(graph);
  const keep = new Set<number>();
  for (let i = region.start; i < region.end; i++) keep.add(i);
  // Static producers outside the region, transitively.
  const stack: string[] = [];
  for (let i = region.start; i < region.end; i++) stack.push(...f.reads[i]!);
  const seen = new Set<string>();
  while (stack.length) {
    const x = stack.pop()!;
    if (seen.has(x)) continue;
    seen.add(x);
    if (!f.isStatic.has(x)) continue;
    const p = f.producerPos.get(x);
    if (p === undefined || keep.has(p)) continue;
    keep.add(p);
    stack.push(...f.reads[p]!);
  }
  const nodes = [...keep].sort((a, b) => a - b).map((i) => f.nodes[i]!);
  const read = new Set<string>();
  for (const i of keep) for (const x of f.reads[i]!) read.add(x);
  const out = cloneModel(model);
  const g = out.graph!;
  g.node = nodes;
  g.initializer = (graph.initializer ?? []).filter((t) => read.has(t.name ?? ''));
  const typeOf = (name: string): number => {
    const t = inputTypes.get(name);
    if (t === undefined) throw new Error(`internal: no element type for region input ${name}`);
    return t;
  };
  const inputs: ValueInfoProto[] = (graph.input ?? []).filter((v) => region.graphInputs.includes(v.name ?? ''));
  for (const r of region.reads) inputs.push(valueInfo(r, typeOf(r), []));
  // Rank unknown: drop the empty shape so onnxruntime doesn't read it as a scalar.
  for (const v of inputs) if (region.reads.includes(v.name ?? '')) delete v.type!.tensorType!.shape;
  g.input = inputs;
  const declared = new Map<string, ValueInfoProto>();
  for (const v of [...(graph.valueInfo ?? []), ...(graph.output ?? [])]) declared.set(v.name ?? '', v);
  g.output = outputs.map((o) => declared.get(o) ?? { name: o });
  g.valueInfo = (graph.valueInfo ?? []).filter((v) => read.has(v.name ?? '') || outputs.includes(v.name ?? ''));
  return out;
}

/** ONNX element type of an onnxruntime tensor type name. */
export function elementTypeOf(type: string): number {
  switch (type) {
    case 'float32':
      return DataType.FLOAT;
    case 'float16':
      return DataType.FLOAT16;
    case 'int64':
      return DataType.INT64;
    case 'int32':
      return DataType.INT32;
    case 'bool':
      return DataType.BOOL;
    case 'float64':
      return DataType.DOUBLE;
    case 'int8':
      return DataType.INT8;
    case 'uint8':
      return DataType.UINT8;
    default:
      throw new Error(`internal: unsupported activation type ${type}`);
  }
}
