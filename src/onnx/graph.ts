// Graph queries and copy-on-write helpers shared by the ONNX transforms (Hessian capture, NLL head,
// packed export, rotation, fake-quant). Transforms never mutate their input: they copy the model
// and graph shallowly (`cloneModel`), replace whole nodes/initializers, and keep everything else
// (opsets, metadata, names, value infos) by reference.
import type { AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto } from './proto';
import { toNumber, type LongLike } from './tensor';

export interface GraphIndex {
  readonly graph: GraphProto;
  /** Initializers by name. */
  readonly initializers: Map<string, TensorProto>;
  /** Tensors made by `Constant` nodes (attribute `value`), by output name. */
  readonly constants: Map<string, TensorProto>;
  /** The node producing each tensor. */
  readonly producer: Map<string, NodeProto>;
  /** The nodes consuming each tensor, in graph order (a node appears once per tensor). */
  readonly consumers: Map<string, NodeProto[]>;
  /** Position of each node in graph.node (ONNX requires topological order). */
  readonly order: Map<NodeProto, number>;
  readonly inputNames: Set<string>;
  readonly outputNames: Set<string>;
}

export function indexGraph(graph: GraphProto): GraphIndex {
  const initializers = new Map<string, TensorProto>();
  for (const t of graph.initializer ?? []) initializers.set(t.name ?? '', t);
  const constants = new Map<string, TensorProto>();
  const producer = new Map<string, NodeProto>();
  const consumers = new Map<string, NodeProto[]>();
  const order = new Map<NodeProto, number>();
  const nodes = graph.node ?? [];
  for (let i = 0; i < nodes.length; i++) {
    const n = nodes[i];
    order.set(n, i);
    for (const o of n.output ?? []) if (o) producer.set(o, n);
    const seen = new Set<string>();
    for (const x of n.input ?? []) {
      if (!x || seen.has(x)) continue;
      seen.add(x);
      let list = consumers.get(x);
      if (!list) consumers.set(x, (list = []));
      list.push(n);
    }
    if (n.opType === 'Constant' && isDefaultDomain(n)) {
      const value = attr(n, 'value')?.t;
      if (value && n.output?.[0]) constants.set(n.output[0], value);
    }
  }
  return {
    graph,
    initializers,
    constants,
    producer,
    consumers,
    order,
    inputNames: new Set((graph.input ?? []).map((v) => v.name ?? '')),
    outputNames: new Set((graph.output ?? []).map((v) => v.name ?? '')),
  };
}

export function isDefaultDomain(n: NodeProto): boolean {
  return !n.domain || n.domain === 'ai.onnx';
}

export function attr(n: NodeProto, name: string): AttributeProto | undefined {
  return (n.attribute ?? []).find((a) => a.name === name);
}

export function attrInt(n: NodeProto, name: string, fallback: number): number {
  const a = attr(n, name);
  return a && a.i !== undefined && a.i !== null ? toNumber(a.i as number | LongLike) : fallback;
}

export function attrInts(n: NodeProto, name: string): number[] | undefined {
  const a = attr(n, name);
  return a?.ints && a.ints.length > 0 ? a.ints.map((v) => toNumber(v as number | LongLike)) : undefined;
}

export function attrFloat(n: NodeProto, name: string, fallback: number): number {
  const a = attr(n, name);
  return a && a.f !== undefined && a.f !== null ? a.f : fallback;
}

/** The opset version imported for a domain ('' = the default ONNX domain), or undefined. */
export function opsetVersion(model: ModelProto, domain = ''): number | undefined {
  for (const o of model.opsetImport ?? []) {
    const d = o.domain ?? '';
    if (d === domain || (domain === '' && d === 'ai.onnx')) return toNumber(o.version as number | LongLike);
  }
  return undefined;
}

/**
 * A shallow copy that a transform may change freely at the array level: model and graph objects
 * and their node/initializer/input/output/valueInfo/opsetImport/metadataProps arrays are new; the
 * elements are shared with the source (replace an element, never edit it in place).
 */
export function cloneModel(model: ModelProto): ModelProto {
  const g = model.graph ?? {};
  // Copy only fields the source really has: decoded messages expose protobuf defaults through their
  // prototype, and copying those as own fields would change the encoded bytes.
  const graph: GraphProto = pickOwn(g, ['name', 'docString']);
  for (const key of ['node', 'initializer', 'sparseInitializer', 'input', 'output', 'valueInfo', 'quantizationAnnotation'] as const) {
    (graph as Record<string, unknown>)[key] = [...((g[key] as unknown[] | null | undefined) ?? [])];
  }
  const out: ModelProto = pickOwn(model, ['irVersion', 'producerName', 'producerVersion', 'domain', 'modelVersion', 'docString', 'trainingInfo', 'functions']);
  out.opsetImport = [...(model.opsetImport ?? [])];
  out.metadataProps = [...(model.metadataProps ?? [])];
  out.graph = graph;
  return out;
}

function pickOwn<T extends object>(src: T, keys: ReadonlyArray<keyof T>): T {
  const out = {} as T;
  for (const k of keys) {
    if (Object.prototype.hasOwnProperty.call(src, k) && src[k] !== undefined && src[k] !== null) out[k] = src[k];
  }
  return out;
}

/** Adds (or raises) an opset import, e.g. com.microsoft 1 for contrib ops. Mutates a cloned model. */
export function ensureOpset(model: ModelProto, domain: string, version: number): void {
  const list = (model.opsetImport ??= []);
  const i = list.findIndex((o) => (o.domain ?? '') === domain);
  if (i < 0) list.push({ domain, version });
  else if (toNumber(list[i].version as number | LongLike) < version) list[i] = { domain, version };
}

/** Sets (or replaces) a metadata_props entry. Mutates a cloned model. */
export function setMetadata(model: ModelProto, key: string, value: string): void {
  const list = (model.metadataProps ??= []);
  const i = list.findIndex((p) => p.key === key);
  if (i < 0) list.push({ key, value });
  else list[i] = { key, value };
}

/** Fresh tensor/node names that collide with nothing in the graph (or earlier fresh names). */
export class NameAllocator {
  private readonly used = new Set<string>();

  constructor(graph: GraphProto) {
    for (const n of graph.node ?? []) {
      if (n.name) this.used.add(n.name);
      for (const x of n.input ?? []) this.used.add(x);
      for (const x of n.output ?? []) this.used.add(x);
    }
    for (const t of graph.initializer ?? []) this.used.add(t.name ?? '');
    for (const v of [...(graph.input ?? []), ...(graph.output ?? []), ...(graph.valueInfo ?? [])]) this.used.add(v.name ?? '');
  }

  fresh(base: string): string {
    let name = base;
    for (let i = 1; this.used.has(name); i++) name = `${base}_${i}`;
    this.used.add(name);
    return name;
  }
}

/** Element type and dims of a value info ('?' or a dim_param name for dynamic dims). */
export function valueInfoShape(v: ValueInfoProto): { elemType: number; dims: Array<number | string> } | undefined {
  const tt = v.type?.tensorType;
  if (!tt) return undefined;
  const dims = (tt.shape?.dim ?? []).map((d) =>
    d.dimValue !== undefined && d.dimValue !== null && toNumber(d.dimValue as number | LongLike) > 0
      ? toNumber(d.dimValue as number | LongLike)
      : d.dimParam || '?',
  );
  return { elemType: tt.elemType ?? 0, dims };
}

/** The value info (graph input/output/value_info) of a tensor, if the graph declares one. */
export function findValueInfo(graph: GraphProto, name: string): ValueInfoProto | undefined {
  for (const list of [graph.input, graph.output, graph.valueInfo]) {
    const v = (list ?? []).find((x) => x.name === name);
    if (v) return v;
  }
  return undefined;
}

/** Every tensor name read by a node of the graph or of any nested subgraph (If/Loop/Scan bodies). */
function namesReadBy(graph: GraphProto, into = new Set<string>()): Set<string> {
  for (const n of graph.node ?? []) {
    for (const x of n.input ?? []) if (x) into.add(x);
    for (const a of n.attribute ?? []) {
      if (a.g) namesReadBy(a.g, into);
      for (const g of a.graphs ?? []) namesReadBy(g, into);
    }
  }
  return into;
}

/**
 * Removes nodes whose outputs nobody reads (not a graph output, not read by a later node or a
 * subgraph), repeatedly, then initializers nobody reads. Mutates a cloned model's graph arrays.
 */
export function pruneUnused(model: ModelProto): { nodes: number; initializers: number } {
  const graph = model.graph!;
  const outputs = new Set((graph.output ?? []).map((o) => o.name ?? ''));
  let removedNodes = 0;
  for (;;) {
    const read = namesReadBy(graph);
    const keep = (graph.node ?? []).filter((n) => (n.output ?? []).some((o) => o && (read.has(o) || outputs.has(o))));
    const removed = (graph.node ?? []).length - keep.length;
    graph.node = keep;
    removedNodes += removed;
    if (removed === 0) break;
  }
  const read = namesReadBy(graph);
  const before = (graph.initializer ?? []).length;
  const removedInits = new Set<string>();
  graph.initializer = (graph.initializer ?? []).filter((t) => {
    const name = t.name ?? '';
    const used = read.has(name) || outputs.has(name);
    if (!used) removedInits.add(name);
    return used;
  });
  // An initializer also listed as a graph input (IR < 4 style) goes with it.
  graph.input = (graph.input ?? []).filter((v) => !removedInits.has(v.name ?? ''));
  return { nodes: removedNodes, initializers: before - graph.initializer.length };
}
