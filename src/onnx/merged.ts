// Optimum's merged decoders (`decoder_model_merged.onnx`): the main graph is one `If` on a bool
// input `use_cache_branch` whose then-branch is the decoder with past (`past_key_values.*` are
// concatenated in front of the new keys/values) and whose else-branch is the decoder without past.
// The branches have no inputs of their own: they read the outer graph's inputs and the weights,
// which Optimum stores once as outer initializers (deduplicated by content) and the branches read
// by name; scalars and 1-D int32/int64 constants stay inside each branch
// (optimum/onnx/graph_transformations.py, `merge_decoders`).
//
// The pipeline never edits the `If` itself: `splitMergedDecoder` cuts each branch out as a plain
// decoder model (the else-branch is exactly Optimum's `decoder_model.onnx`), the existing code
// (layer discovery, block streaming, calibration, rotation, fake quantization, packing) runs on
// plain models, and `mergeDecoders` puts two plain decoders back into Optimum's layout. The same
// transform applied to both branches keeps them equal: the weights they share come out as one
// outer initializer again.
import { createHash } from 'node:crypto';
import { ModelFormatError } from './errors';
import { cloneModel } from './graph';
import type { LoadedModel } from './load';
import { wrapModel } from './load';
import { DataType, onnx, type GraphProto, type ModelProto, type NodeProto, type TensorProto, type ValueInfoProto } from './proto';
import { externalDataEntry, isExternal, inlineTensorBytes, toNumber, type LongLike } from './tensor';

/** The name Optimum gives the branch condition. */
export const USE_CACHE_BRANCH = 'use_cache_branch';

export interface MergedDecoder {
  /** The merged model as read. */
  model: ModelProto;
  /** The top-level `If`. */
  ifNode: NodeProto;
  /** Its condition: a bool graph input (`use_cache_branch`). */
  condition: string;
  /** The branch that reads the KV cache (Optimum's then-branch), as a plain decoder model. */
  withPast: ModelProto;
  /** The branch without past (Optimum's else-branch), as a plain decoder model. */
  noPast: ModelProto;
  /** Which `If` attribute holds which branch. */
  withPastAttribute: 'then_branch' | 'else_branch';
  /** Names of the outer initializers (the weights both branches read). */
  shared: ReadonlySet<string>;
}

const GRAPH = onnx.AttributeProto.AttributeType.GRAPH;

/** A KV-cache input name (past_key_values.N.key/value, past.N…, packed past_N). */
function isPastName(name: string): boolean {
  return name.startsWith('past_key_values.') || name.startsWith('past.') || /^past_\d+$/.test(name) || /^past_(key|value)/.test(name);
}

/** The top-level `If` of a merged decoder, or undefined for any other graph. */
export function mergedDecoderIf(model: ModelProto): NodeProto | undefined {
  const nodes = model.graph?.node ?? [];
  const ifs = nodes.filter((n) => n.opType === 'If' && (n.domain ?? '') === '');
  if (ifs.length !== 1) return undefined;
  const n = ifs[0]!;
  const cond = n.input?.[0] ?? '';
  const isInput = (model.graph?.input ?? []).some((v) => v.name === cond);
  const branches = (n.attribute ?? []).filter((a) => (a.name === 'then_branch' || a.name === 'else_branch') && a.g);
  if (!isInput || branches.length !== 2) return undefined;
  // The branches hold the decoder: at least one of them reads a KV cache input.
  const graphReads = (g: GraphProto) => (g.node ?? []).some((x) => (x.input ?? []).some(isPastName));
  if (!branches.some((a) => graphReads(a.g!))) return undefined;
  return n;
}

export function isMergedDecoder(model: ModelProto): boolean {
  return mergedDecoderIf(model) !== undefined;
}

/** Every tensor name read by the graph's nodes, nested subgraphs included. */
function namesRead(graph: GraphProto, into = new Set<string>()): Set<string> {
  for (const n of graph.node ?? []) {
    for (const x of n.input ?? []) if (x) into.add(x);
    for (const a of n.attribute ?? []) {
      if (a.g) namesRead(a.g, into);
      for (const g of a.graphs ?? []) namesRead(g, into);
    }
  }
  return into;
}

/** Cuts both branches of a merged decoder out as plain decoder models (shared weights by reference). */
export function splitMergedDecoder(model: ModelProto): MergedDecoder {
  const ifNode = mergedDecoderIf(model);
  if (!ifNode) throw new Error('internal: not a merged decoder');
  const outer = model.graph!;
  const others = (outer.node ?? []).filter((n) => n !== ifNode);
  if (others.length > 0) {
    throw new ModelFormatError(
      'unsupported-graph',
      `this merged decoder has ${others.length} node(s) outside its If (${others[0]!.opType} "${others[0]!.name ?? ''}"); OBR Studio reads Optimum's layout (one If on use_cache_branch) — compress decoder_model.onnx instead`,
    );
  }
  const condition = ifNode.input![0]!;
  const branch = (name: 'then_branch' | 'else_branch') => ifNode.attribute!.find((a) => a.name === name)!.g!;
  const readsPast = (g: GraphProto) => [...namesRead(g)].some(isPastName);
  const thenPast = readsPast(branch('then_branch'));
  const elsePast = readsPast(branch('else_branch'));
  if (thenPast === elsePast) {
    throw new ModelFormatError(
      'unsupported-graph',
      `can't tell the merged decoder's branches apart: ${thenPast ? 'both' : 'neither'} read past_key_values.*; compress decoder_model.onnx instead`,
    );
  }
  const withPastAttribute = thenPast ? 'then_branch' : 'else_branch';
  const shared = new Set((outer.initializer ?? []).map((t) => t.name ?? ''));
  const plain = (g: GraphProto): ModelProto => {
    const read = namesRead(g);
    const m = cloneModel(model);
    const graph = m.graph!;
    graph.name = g.name ?? outer.name;
    graph.node = [...(g.node ?? [])];
    graph.initializer = [...(outer.initializer ?? []).filter((t) => read.has(t.name ?? '')), ...(g.initializer ?? [])];
    graph.input = (outer.input ?? []).filter((v) => v.name !== condition && read.has(v.name ?? '') && !shared.has(v.name ?? ''));
    graph.output = [...(g.output ?? [])];
    graph.valueInfo = [...(g.valueInfo ?? [])];
    return m;
  };
  return {
    model,
    ifNode,
    condition,
    withPast: plain(branch(withPastAttribute)),
    noPast: plain(branch(withPastAttribute === 'then_branch' ? 'else_branch' : 'then_branch')),
    withPastAttribute,
    shared,
  };
}

/** The model layer discovery and the pipeline work on: a merged decoder's no-past branch, else the model itself. */
export function plainDecoder(model: ModelProto): ModelProto {
  return isMergedDecoder(model) ? splitMergedDecoder(model).noPast : model;
}

const views = new WeakMap<LoadedModel, MergedDecoder>();

/**
 * A loaded merged decoder seen as its no-past branch (a plain decoder over the same weights and
 * external data); any other model is returned as it is. `mergedSource(view)` gives the merged
 * model back for writing. Closing the view closes the source.
 */
export function decoderView(loaded: LoadedModel): LoadedModel {
  if (!isMergedDecoder(loaded.model)) return loaded;
  const merged = splitMergedDecoder(loaded.model);
  const plain = wrapModel(merged.noPast, loaded.dir, loaded.path);
  const view = new Proxy(plain, {
    get(target, prop) {
      if (prop === 'fileBytes') return loaded.fileBytes;
      if (prop === 'close') return async () => {
        await target.close();
        await loaded.close();
      };
      const v = Reflect.get(target, prop, target) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  views.set(view, merged);
  return view;
}

/** The merged decoder a `decoderView` stands for. */
export function mergedSource(loaded: LoadedModel): MergedDecoder | undefined {
  return views.get(loaded);
}

/**
 * A transformed branch with the weights `from` (the transformed no-past branch the pipeline
 * compressed) holds under the same names: the shared weights, and initializers the transform
 * created in both (rotated norms, Hadamard constants). The branch's own small constants, which may
 * share a name with the other branch's, are kept.
 */
export function withSharedWeightsOf(merged: MergedDecoder, plain: ModelProto, from: ModelProto): ModelProto {
  const byName = new Map((from.graph?.initializer ?? []).map((t) => [t.name ?? '', t]));
  const own = new Set((merged.withPast.graph?.initializer ?? []).map((t) => t.name ?? ''));
  const m = cloneModel(plain);
  m.graph!.initializer = m.graph!.initializer!.map((t) => {
    const name = t.name ?? '';
    const other = byName.get(name);
    if (!other || !(merged.shared.has(name) || !own.has(name))) return t;
    // A name the transform gave both branches must stand for the same kind of tensor.
    const sameShape = other.dataType === t.dataType && dimsKey(other) === dimsKey(t);
    return sameShape ? other : t;
  });
  return m;
}

function dimsKey(t: TensorProto): string {
  return (t.dims ?? []).map((d) => toNumber(d as number | LongLike)).join(',');
}

/** Optimum keeps scalars and 1-D int32/int64 tensors inside each branch (onnxruntime needs them there after optimization). */
function staysInBranch(t: TensorProto): boolean {
  const dims = t.dims ?? [];
  return dims.length === 0 || (dims.length === 1 && (t.dataType === DataType.INT32 || t.dataType === DataType.INT64));
}

/** Identity of a tensor's contents: type, dims and bytes (or its external-data location). */
function contentKey(t: TensorProto): string {
  const h = createHash('sha256');
  h.update(`${t.dataType ?? 0}|${dimsKey(t)}|`);
  if (isExternal(t)) {
    const e = externalDataEntry(t);
    h.update(`external:${e.location}:${e.offset}:${e.length ?? ''}`);
  } else h.update(inlineTensorBytes(t));
  return h.digest('hex');
}

function sameContent(a: TensorProto, b: TensorProto): boolean {
  return a === b || contentKey(a) === contentKey(b);
}

function renameInputs(nodes: NodeProto[], renames: ReadonlyMap<string, string>): NodeProto[] {
  if (renames.size === 0) return nodes;
  const renameGraph = (g: GraphProto): GraphProto => ({ ...g, node: renameInputs([...(g.node ?? [])], renames) });
  return nodes.map((n) => {
    const touches = (n.input ?? []).some((x) => renames.has(x)) || (n.attribute ?? []).some((a) => a.g || (a.graphs?.length ?? 0) > 0);
    if (!touches) return n;
    return {
      ...n,
      input: (n.input ?? []).map((x) => renames.get(x) ?? x),
      attribute: (n.attribute ?? []).map((a) => (a.g ? { ...a, g: renameGraph(a.g) } : a.graphs?.length ? { ...a, graphs: a.graphs.map(renameGraph) } : a)),
    };
  });
}

export interface MergeOptions {
  /** Name of the merged graph (Optimum: "merged"). */
  graphName?: string;
  /** Name of the If node (Optimum: "optimum::if"). */
  ifName?: string;
  condition?: string;
  /** Model-level fields (producer, metadata, IR version) come from here; default the no-past model. */
  like?: ModelProto;
  /** The If attribute that holds the with-past branch (Optimum: then_branch, so `use_cache_branch` = true runs it). */
  withPastAttribute?: 'then_branch' | 'else_branch';
}

/**
 * Optimum's merged layout from a decoder without past and one with past (same outputs): one `If`
 * on a bool [1] `use_cache_branch` input (then = with past, else = no past); initializers the two
 * hold with the same contents become one outer initializer (a with-past initializer with the
 * no-past's contents under another name is read under the no-past name); scalars and 1-D int
 * tensors stay in their branch; outer inputs are the union of both models' inputs.
 */
export function mergeDecoders(noPast: ModelProto, withPast: ModelProto, options: MergeOptions = {}): ModelProto {
  const np = noPast.graph!;
  const wp = withPast.graph!;
  const npOut = (np.output ?? []).map((o) => o.name ?? '');
  const wpOutByName = new Map((wp.output ?? []).map((o) => [o.name ?? '', o]));
  if (npOut.length !== wpOutByName.size || npOut.some((n) => !wpOutByName.has(n))) {
    throw new ModelFormatError(
      'unsupported-graph',
      `the decoders to merge have different outputs (${npOut.join(', ')} vs ${[...wpOutByName.keys()].join(', ')}); export both with the same outputs`,
    );
  }
  const outer: TensorProto[] = [];
  const byName = new Map<string, TensorProto>();
  const byContent = new Map<string, string>();
  const npLocal: TensorProto[] = [];
  for (const t of np.initializer ?? []) {
    if (staysInBranch(t)) {
      npLocal.push(t);
      continue;
    }
    outer.push(t);
    byName.set(t.name ?? '', t);
  }
  const used = new Set<string>([...namesRead(np), ...namesRead(wp), ...byName.keys(), ...(wp.initializer ?? []).map((t) => t.name ?? '')]);
  const renames = new Map<string, string>();
  const wpLocal: TensorProto[] = [];
  const contentOf = (t: TensorProto) => contentKey(t);
  let indexed = false;
  for (const t of wp.initializer ?? []) {
    if (staysInBranch(t)) {
      wpLocal.push(t);
      continue;
    }
    const name = t.name ?? '';
    const same = byName.get(name);
    if (same && sameContent(same, t)) continue;
    if (!indexed) {
      for (const o of outer) byContent.set(contentOf(o), o.name ?? '');
      indexed = true;
    }
    const key = contentOf(t);
    const existing = byContent.get(key);
    if (existing !== undefined) {
      renames.set(name, existing);
      continue;
    }
    let fresh = name;
    if (same) {
      for (let i = 1; used.has(fresh); i++) fresh = `${name}_with_past_${i}`;
      used.add(fresh);
      renames.set(name, fresh);
    }
    const kept = fresh === name ? t : { ...t, name: fresh };
    outer.push(kept);
    byName.set(fresh, kept);
    byContent.set(key, fresh);
  }
  const condition = options.condition ?? USE_CACHE_BRANCH;
  const inputs: ValueInfoProto[] = [];
  const seen = new Set<string>();
  for (const v of [...(np.input ?? []), ...(wp.input ?? [])]) {
    const n = v.name ?? '';
    if (seen.has(n) || byName.has(n)) continue;
    seen.add(n);
    inputs.push(v);
  }
  inputs.push({ name: condition, type: { tensorType: { elemType: DataType.BOOL, shape: { dim: [{ dimValue: 1 }] } } } });
  const branchGraph = (g: GraphProto, name: string, nodes: NodeProto[], local: TensorProto[], outputs: ValueInfoProto[]): GraphProto => ({
    name,
    node: nodes,
    initializer: local,
    input: [],
    output: outputs,
    valueInfo: [...(g.valueInfo ?? [])],
  });
  const wpOutputs = npOut.map((n) => wpOutByName.get(n)!);
  const withPastIn = options.withPastAttribute ?? 'then_branch';
  const ifNode: NodeProto = {
    opType: 'If',
    name: options.ifName ?? 'optimum::if',
    input: [condition],
    output: npOut,
    attribute: [
      { name: withPastIn, type: GRAPH, g: branchGraph(wp, wp.name || 'with_past', renameInputs([...(wp.node ?? [])], renames), wpLocal, wpOutputs) },
      { name: withPastIn === 'then_branch' ? 'else_branch' : 'then_branch', type: GRAPH, g: branchGraph(np, np.name || 'no_past', [...(np.node ?? [])], npLocal, [...(np.output ?? [])]) },
    ].sort((a, b) => (a.name === 'then_branch' ? -1 : b.name === 'then_branch' ? 1 : 0)),
  };
  const like = options.like ?? noPast;
  const m = cloneModel(like);
  m.graph = {
    name: options.graphName ?? like.graph?.name ?? 'merged',
    node: [ifNode],
    initializer: outer,
    input: inputs,
    // The with-past outputs: their shapes cover both branches (present: past + new length).
    output: wpOutputs,
  };
  const opsets = new Map<string, number>();
  for (const o of [...(noPast.opsetImport ?? []), ...(withPast.opsetImport ?? [])]) {
    const d = o.domain ?? '';
    opsets.set(d, Math.max(opsets.get(d) ?? 0, toNumber(o.version as number | LongLike)));
  }
  m.opsetImport = [...opsets].map(([domain, version]) => ({ domain, version }));
  m.irVersion = Math.max(toNumber(noPast.irVersion as number | LongLike), toNumber(withPast.irVersion as number | LongLike));
  return m;
}

/** Puts two transformed branches of `merged` back into its layout (names of the graph, the If and its condition). */
export function remerge(merged: MergedDecoder, noPast: ModelProto, withPast: ModelProto): ModelProto {
  return mergeDecoders(noPast, withPast, {
    graphName: merged.model.graph?.name ?? 'merged',
    ifName: merged.ifNode.name ?? 'optimum::if',
    condition: merged.condition,
    like: merged.model,
    withPastAttribute: merged.withPastAttribute,
  });
}
