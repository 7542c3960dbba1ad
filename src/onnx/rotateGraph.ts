// Graph plumbing shared by the QuaRot rotation (rotate.ts) and the A4/KV4 fake-quant transform
// (fakeQuant.ts): locating a LLaMA decoder's projections, norms, attention heads and RoPE outputs,
// reading/writing float initializers in float64, and a copy-on-write editor that inserts nodes in
// topological order. Nothing here mutates the input model.
import { ModelFormatError } from './errors';
import { attrInt, cloneModel, indexGraph, NameAllocator, type GraphIndex } from './graph';
import { findLinearLayers } from './linear';
import { DataType, type ModelProto, type NodeProto, type TensorProto } from './proto';
import { decodeFloats, elementCount, encodeFloats, inlineTensorBytes, isExternal, tensorDims, toNumber, type LongLike } from './tensor';
import type { AttentionGeometry, LinearLayer } from './types';

/** The graph doesn't have the LLaMA shape the rotation/fake-quant transforms rely on. */
export class GraphPatternFormatError extends Error {
  override name = 'GraphPatternFormatError';
}

// ---- float initializers --------------------------------------------------------------------------

/** An initializer's values as float64 (fp32/fp16/bf16/fp64 storage), in storage order. */
export function readFloat64(t: TensorProto): Float64Array {
  assertInline(t);
  const out = new Float64Array(elementCount(tensorDims(t)));
  return decodeFloats(inlineTensorBytes(t), t.dataType ?? 0, out);
}

/**
 * An initializer's values in a fresh array of the narrowest float type that holds them exactly:
 * float64 for double tensors, float32 otherwise (fp32/fp16/bf16; half the memory of float64 and a
 * byte copy for fp32). Callers may modify it.
 */
export function readFloats(t: TensorProto): Float32Array | Float64Array {
  assertInline(t);
  const n = elementCount(tensorDims(t));
  const out = t.dataType === DataType.DOUBLE ? new Float64Array(n) : new Float32Array(n);
  return decodeFloats(inlineTensorBytes(t), t.dataType ?? 0, out);
}

function assertInline(t: TensorProto): void {
  if (isExternal(t)) {
    throw new ModelFormatError(
      'external-data-missing',
      `initializer "${t.name}" is stored as external data; load the model with its weights inlined (e.g. loadModel + readWeight) before rotating or fake-quantizing it`,
    );
  }
}

/**
 * A new initializer with the same name, dims and element type, holding `values` (rounded to
 * nearest even). A Float32Array for a float32 tensor becomes its raw data without a copy: the
 * caller hands it over.
 */
export function withValues(t: TensorProto, values: ArrayLike<number>): TensorProto {
  const rawData =
    t.dataType === DataType.FLOAT && values instanceof Float32Array ? new Uint8Array(values.buffer, values.byteOffset, values.byteLength) : encodeFloats(values, t.dataType ?? 0);
  return { name: t.name, dims: t.dims, dataType: t.dataType, docString: t.docString, rawData };
}

/** A new float initializer of the given element type (fp32/fp16/bf16/fp64). */
export function floatInitializer(name: string, dims: number[], values: ArrayLike<number>, dataType: number): TensorProto {
  return { name, dims, dataType, rawData: encodeFloats(values, dataType) };
}

export function int64Initializer(name: string, values: number[]): TensorProto {
  const data = BigInt64Array.from(values.map((v) => BigInt(v)));
  return { name, dims: [values.length], dataType: DataType.INT64, rawData: new Uint8Array(data.buffer) };
}

/** Follows Identity/Cast back to an initializer: the stored tensor and the type the consumer sees. */
export function constantSource(idx: GraphIndex, name: string): { initializer: TensorProto; seenType: number } | undefined {
  let cur = name;
  let seenType: number | undefined;
  for (let depth = 0; depth < 8; depth++) {
    const init = idx.initializers.get(cur);
    if (init && !idx.inputNames.has(cur)) return { initializer: init, seenType: seenType ?? init.dataType ?? 0 };
    const p = idx.producer.get(cur);
    if (!p || (p.opType !== 'Cast' && p.opType !== 'Identity') || !p.input?.[0]) return undefined;
    if (p.opType === 'Cast' && seenType === undefined) seenType = attrInt(p, 'to', 0);
    cur = p.input[0];
  }
  return undefined;
}

/** Integer values of a constant tensor (initializer or Constant node), if it is one. */
export function constantInts(idx: GraphIndex, name: string): number[] | undefined {
  const t = idx.initializers.get(name) ?? idx.constants.get(name);
  if (!t || (t.dataType !== DataType.INT64 && t.dataType !== DataType.INT32)) return undefined;
  if (t.rawData && t.rawData.length > 0) {
    const view = new DataView(t.rawData.buffer, t.rawData.byteOffset, t.rawData.byteLength);
    if (t.dataType === DataType.INT64) return Array.from({ length: t.rawData.length / 8 }, (_, i) => Number(view.getBigInt64(i * 8, true)));
    return Array.from({ length: t.rawData.length / 4 }, (_, i) => view.getInt32(i * 4, true));
  }
  if (t.dataType === DataType.INT64) return (t.int64Data ?? []).map((v) => toNumber(v as number | LongLike));
  return [...(t.int32Data ?? [])];
}

// ---- the decoder's structure ---------------------------------------------------------------------

export interface DecoderBlock {
  index: number;
  /** The q, k and v projections; for a fused projection (`fused`) all three are the one qkv layer. */
  q: LinearLayer;
  k: LinearLayer;
  v: LinearLayer;
  /** q/k/v come from one fused projection (GPT-2's c_attn, onnxruntime's packed Attention weight). */
  fused: boolean;
  o: LinearLayer;
  /** Absent in a non-gated MLP (GPT-2: c_fc → GELU → c_proj). */
  gate?: LinearLayer;
  up: LinearLayer;
  down: LinearLayer;
}

export interface Decoder {
  blocks: DecoderBlock[];
  lmHead: LinearLayer | undefined;
  hidden: number;
  intermediate: number;
  headDim: number;
  numHeads: number;
  numKvHeads: number;
}

/** Output rows [start, end) of q, k or v in a block's projection (the qkv layer's part when fused). */
export function partRows(b: DecoderBlock, role: 'q' | 'k' | 'v'): [number, number] {
  const l = b[role];
  if (!b.fused) return [0, l.outFeatures];
  const p = l.parts?.find((x) => x.role === role);
  if (!p) throw new GraphPatternFormatError(`internal: fused projection "${l.name}" has no ${role} part`);
  return p.rows;
}

const REQUIRED_ROLES = ['o', 'up', 'down'] as const;

/**
 * The decoder projections per block (via findLinearLayers) and the attention geometry, from (first
 * that answers): `explicit` (CLI flags), the graph (the Reshape after q_proj, [b, s, heads,
 * head_dim]; a fused attention op's num_heads / kv_num_heads), `fallback` (config.json /
 * genai_config.json beside the model). A plain number is an explicit head_dim. Blocks are LLaMA's
 * q/k/v/o + gate/up/down or GPT-2's fused qkv/o + up/down.
 */
export function findDecoder(model: ModelProto, idx: GraphIndex, explicit?: number | AttentionGeometry, fallback?: AttentionGeometry): Decoder {
  const layers = findLinearLayers(model);
  const byBlock = new Map<number, Partial<DecoderBlock>>();
  let lmHead: LinearLayer | undefined;
  for (const l of layers) {
    if (l.role === 'lm_head') {
      lmHead = l;
      continue;
    }
    if (l.block === null || l.role === 'other') continue;
    let b = byBlock.get(l.block);
    if (!b) byBlock.set(l.block, (b = { index: l.block, fused: false }));
    const twice = (role: string, prev: LinearLayer) => {
      throw new GraphPatternFormatError(`block ${l.block} has two ${role} projections ("${prev.nodeName}", "${l.nodeName}"); only LLaMA-style (q/k/v/o, gate/up/down) and GPT-2-style (qkv/o, up/down) decoders can be rotated`);
    };
    if (l.role === 'qkv') {
      if (b.q) twice('q/k/v', b.q);
      if (!l.parts || l.parts.length !== 3) throw new GraphPatternFormatError(`"${l.name}" is a fused q/k/v projection whose q, k and v rows can't be told apart; compress this model with --abits 16 --kvbits 16`);
      b.q = b.k = b.v = l;
      b.fused = true;
      continue;
    }
    if (b[l.role]) twice(l.role, b[l.role] as LinearLayer);
    if (b.fused && (l.role === 'q' || l.role === 'k' || l.role === 'v')) twice(l.role, b.q!);
    (b as Record<string, unknown>)[l.role] = l;
  }
  const blocks: DecoderBlock[] = [];
  for (const [index, b] of [...byBlock].sort((x, y) => x[0] - y[0])) {
    const missing: string[] = REQUIRED_ROLES.filter((r) => !b[r]);
    if (!b.q || !b.k || !b.v) missing.unshift(['q', 'k', 'v'].filter((r) => !b[r as 'q']).join('/'));
    if (missing.length > 0) {
      throw new GraphPatternFormatError(`block ${index} has no ${missing.join('/')} projection; only LLaMA-style (q/k/v/o, gate/up/down) and GPT-2-style (qkv/o, up/down) decoders can be rotated`);
    }
    blocks.push(b as DecoderBlock);
  }
  if (blocks.length === 0) throw new GraphPatternFormatError('found no decoder blocks (q/k/v/o, up/down projections); only LLaMA- and GPT-2-style decoders can be rotated');
  if (blocks.some((b) => !!b.gate !== !!blocks[0].gate)) throw new GraphPatternFormatError('some blocks have a gated MLP and some don\'t; can\'t rotate a mixed decoder');
  for (const b of blocks) {
    for (const l of [b.q, b.k, b.v, b.o, b.gate, b.up, b.down]) if (l) checkRotatable(idx, l);
  }
  // lm_head may read the embedding table (tied, through a Transpose): rotateModel unties it.
  if (lmHead) checkRotatable(idx, lmHead, true);
  const b0 = blocks[0];
  const qRows = partRows(b0, 'q');
  const vRows = partRows(b0, 'v');
  const qOut = qRows[1] - qRows[0];
  const vOut = vRows[1] - vRows[0];
  const hidden = b0.q.inFeatures;
  const intermediate = b0.down.inFeatures;
  const given = typeof explicit === 'number' ? { headDim: explicit, source: 'headDim' } : explicit;
  const fromGraph = graphGeometry(idx, b0);
  const tried: string[] = [];
  let headDim: number | undefined;
  for (const g of [given, fromGraph, fallback]) {
    if (!g) continue;
    const d = g.headDim ?? (g.heads ? qOut / g.heads : undefined) ?? (g.kvHeads ? vOut / g.kvHeads : undefined);
    if (!d) continue;
    const ok = Number.isInteger(d) && d > 0 && qOut % d === 0 && vOut % d === 0 && (!g.heads || g.heads * d === qOut) && (!g.kvHeads || g.kvHeads * d === vOut);
    if (ok) {
      headDim = d;
      break;
    }
    const why = `${g.source ?? 'a hint'} says ${[g.heads && `${g.heads} heads`, g.kvHeads && `${g.kvHeads} KV heads`, g.headDim && `head_dim ${g.headDim}`].filter(Boolean).join(', ')}, which doesn't fit q_proj's ${qOut} and v_proj's ${vOut} outputs`;
    // What the user asked for explicitly is never silently replaced by another source.
    if (g === given) throw new GraphPatternFormatError(`${why}; heads × head_dim must equal q_proj's outputs and KV heads × head_dim v_proj's`);
    tried.push(why);
  }
  if (!headDim) {
    throw new GraphPatternFormatError(
      `can't tell the attention head size from the graph of "${b0.q.name}"${tried.length ? ` (${tried.join('; ')})` : ', and there is no config.json or genai_config.json with the head count beside the model'}; pass --heads N (and --kv-heads, --head-dim) to obr compress`,
    );
  }
  return { blocks, lmHead, hidden, intermediate, headDim, numHeads: qOut / headDim, numKvHeads: vOut / headDim };
}

/** MatMul against a constant weight, Gemm y = x·W (+ C) without transA/alpha/beta, or onnxruntime's Attention (packed [in, 3·out] weight). */
function checkRotatable(idx: GraphIndex, l: LinearLayer, head = false): void {
  const node = (idx.graph.node ?? [])[l.order ?? -1];
  if (l.opType === 'Gemm' && node) {
    const f = (name: string, dflt: number) => {
      const a = (node.attribute ?? []).find((x) => x.name === name);
      return a ? Number(a.f ?? a.i ?? dflt) : dflt;
    };
    if (f('transA', 0) !== 0 || f('alpha', 1) !== 1 || f('beta', 1) !== 1) {
      throw new GraphPatternFormatError(`Gemm "${l.name}" uses transA/alpha/beta; rotation supports Gemm as y = x·W + C (torch Linear exports)`);
    }
  }
  if (l.weightPath && l.weightPath.some((op) => op !== 'Cast' && !(head && op === 'Transpose'))) {
    throw new GraphPatternFormatError(`the weight of "${l.name}" reaches it through ${l.weightPath.join(' → ')}; rotation needs a plain float initializer (optionally through Cast)`);
  }
  if (l.weightShared && !head) throw new GraphPatternFormatError(`weight "${l.weightName}" of "${l.name}" is shared with other nodes (tied weights); untie it before rotating`);
}

/** Fused attention ops (com.microsoft) that carry the head counts as attributes. */
const FUSED_ATTENTION = new Set(['MultiHeadAttention', 'GroupQueryAttention', 'Attention', 'PackedAttention']);

/**
 * Geometry the graph shows for block 0: the Reshape after q_proj, or the num_heads attribute of
 * the fused attention op q_proj feeds (through RotaryEmbedding and the like).
 */
function graphGeometry(idx: GraphIndex, b0: DecoderBlock): AttentionGeometry | undefined {
  const packed = b0.q.opType === 'Attention' ? (idx.graph.node ?? [])[b0.q.order ?? -1] : undefined;
  if (packed) {
    const n = attrInt(packed, 'num_heads', 0);
    return n > 0 ? { heads: n, source: 'the graph (Attention num_heads)' } : undefined;
  }
  const tensors = projectionTensors(idx, b0);
  const heads = tensors && headsTensor(idx, tensors.q);
  if (heads) return { headDim: heads.headDim, source: 'the graph' };
  const attention = tensors && fusedAttentionOf(idx, tensors.q);
  if (attention) {
    const n = attrInt(attention, 'num_heads', 0);
    const kv = attrInt(attention, 'kv_num_heads', 0);
    if (n > 0) return { heads: n, ...(kv > 0 ? { kvHeads: kv } : {}), source: `the graph (${attention.opType} num_heads)` };
  }
  return undefined;
}

/**
 * The q, k and v activations of a block: the projections' outputs, or for a fused projection the
 * three outputs of the Split after it (past its bias Add and a Gemm's Reshape back to [b, s, ·]).
 * Undefined for onnxruntime's packed Attention (q/k/v never leave the op).
 */
export function projectionTensors(idx: GraphIndex, b: DecoderBlock): { q: string; k: string; v: string } | undefined {
  if (!b.fused) return { q: b.q.outputName ?? '', k: b.k.outputName ?? '', v: b.v.outputName ?? '' };
  if (b.q.opType === 'Attention') return undefined;
  let t = b.q.outputName ?? '';
  for (let step = 0; step < 4; step++) {
    const c = singleDataConsumer(idx, t);
    if (!c) return undefined;
    if (c.opType === 'Split' && (c.output ?? []).filter(Boolean).length === 3) {
      const [q, k, v] = c.output!;
      return { q: q!, k: k!, v: v! };
    }
    if (c.opType !== 'Add' && c.opType !== 'Reshape') return undefined;
    t = c.output?.[0] ?? '';
  }
  return undefined;
}

/** Past a projection's bias Add (a constant operand) and a Gemm's Reshape back to [b, s, ·]. */
function pastBias(idx: GraphIndex, t: string): string {
  for (let step = 0; step < 3; step++) {
    const c = singleDataConsumer(idx, t);
    if (!c) return t;
    const isBias = c.opType === 'Add' && (c.input ?? []).some((x) => x !== t && !!constantSource(idx, x));
    const isUnflatten = c.opType === 'Reshape' && singleDataConsumer(idx, c.output?.[0] ?? '')?.opType !== 'Transpose';
    if (!isBias && !isUnflatten) return t;
    t = c.output?.[0] ?? '';
  }
  return t;
}

/** The fused attention node a projection output reaches within a few non-MatMul steps, if any. */
export function fusedAttentionOf(idx: GraphIndex, tensor: string): NodeProto | undefined {
  let frontier = [tensor];
  for (let step = 0; step < 4 && frontier.length; step++) {
    const next: string[] = [];
    for (const t of frontier) {
      for (const c of idx.consumers.get(t) ?? []) {
        if (FUSED_ATTENTION.has(c.opType ?? '')) return c;
        if (c.opType === 'MatMul' || c.opType === 'Gemm' || c.opType === 'Shape') continue;
        next.push(...(c.output ?? []).filter(Boolean));
      }
    }
    frontier = next;
  }
  return undefined;
}

/**
 * From a projection output [b, s, heads·d], the per-head tensor [b, heads, s, d] after the
 * Reshape → Transpose(0, 2, 1, 3) chain (past a bias Add), and d (the Reshape's last target dim).
 */
export function headsTensor(idx: GraphIndex, projectionOutput: string): { tensor: string; headDim: number } | undefined {
  const reshape = singleDataConsumer(idx, pastBias(idx, projectionOutput));
  if (!reshape || reshape.opType !== 'Reshape') return undefined;
  const shapeName = reshape.input?.[1] ?? '';
  let headDim: number | undefined;
  const direct = constantInts(idx, shapeName);
  if (direct) headDim = direct[direct.length - 1];
  else {
    const concat = idx.producer.get(shapeName);
    if (concat?.opType === 'Concat') {
      const last = constantInts(idx, concat.input?.[(concat.input?.length ?? 1) - 1] ?? '');
      if (last?.length === 1) headDim = last[0];
    }
  }
  const transpose = singleDataConsumer(idx, reshape.output?.[0] ?? '');
  if (!transpose || transpose.opType !== 'Transpose' || !headDim || headDim <= 0) return undefined;
  const perm = (transpose.attribute ?? []).find((a) => a.name === 'perm')?.ints?.map((v) => toNumber(v as number | LongLike));
  if (!perm || perm.join(',') !== '0,2,1,3') return undefined;
  return { tensor: transpose.output?.[0] ?? '', headDim };
}

/** The one consumer of a tensor that isn't a Shape node (shape queries don't read the data). */
function singleDataConsumer(idx: GraphIndex, tensor: string): NodeProto | undefined {
  const users = (idx.consumers.get(tensor) ?? []).filter((n) => n.opType !== 'Shape');
  return users.length === 1 ? users[0] : undefined;
}

/**
 * The RoPE output for a per-head q or k tensor t: the Add that every data path from t passes
 * through (x·cos + rotate_half(x)·sin) before any MatMul (the scores), i.e. the nearest Add that
 * post-dominates t within the elementwise region after it.
 */
export function ropeOutput(idx: GraphIndex, t: string): string | undefined {
  const limit = 64;
  // Breadth-first candidates: Adds reachable from t.
  const seen = new Set<NodeProto>();
  const queue: string[] = [t];
  const candidates: NodeProto[] = [];
  while (queue.length && seen.size < limit) {
    const x = queue.shift()!;
    for (const c of idx.consumers.get(x) ?? []) {
      // Shape queries carry no data (dynamic exports read q's shape for later Reshapes); the scores
      // MatMul ends the elementwise region where RoPE lives.
      if (seen.has(c) || c.opType === 'MatMul' || c.opType === 'Shape') continue;
      seen.add(c);
      if (c.opType === 'Add') candidates.push(c);
      queue.push(...(c.output ?? []).filter(Boolean));
    }
  }
  for (const cand of candidates) if (postDominates(idx, t, cand, limit)) return cand.output?.[0] ?? undefined;
  return undefined;
}

/**
 * Whether RoPE-like ops (Sin/Cos tables multiplied in, half slices, Neg, RotaryEmbedding) follow a
 * per-head tensor before the scores MatMul. False for learned absolute positions (GPT-2).
 */
export function hasRope(idx: GraphIndex, t: string): boolean {
  const queue = [t];
  const seen = new Set<NodeProto>();
  while (queue.length && seen.size < 32) {
    const x = queue.shift()!;
    for (const c of idx.consumers.get(x) ?? []) {
      if (seen.has(c) || c.opType === 'MatMul' || c.opType === 'Shape') continue;
      seen.add(c);
      if (['Slice', 'Neg', 'Sin', 'Cos', 'RotaryEmbedding', 'Split'].includes(c.opType ?? '')) return true;
      queue.push(...(c.output ?? []).filter(Boolean));
    }
  }
  return false;
}

function postDominates(idx: GraphIndex, t: string, cand: NodeProto, limit: number): boolean {
  const seen = new Set<NodeProto>();
  const stack = [t];
  while (stack.length) {
    const x = stack.pop()!;
    if (idx.outputNames.has(x)) return false;
    for (const c of idx.consumers.get(x) ?? []) {
      if (c === cand || seen.has(c) || c.opType === 'Shape') continue;
      if (c.opType === 'MatMul') return false;
      seen.add(c);
      if (seen.size > limit) return false;
      stack.push(...(c.output ?? []).filter(Boolean));
    }
  }
  return true;
}

/** The element type of the activations at a MatMul: the type its constant weight is consumed in. */
export function activationType(idx: GraphIndex, layer: LinearLayer): number {
  const node = (idx.graph.node ?? [])[layer.order ?? -1];
  const src = node ? constantSource(idx, node.input?.[1] ?? '') : undefined;
  return src?.seenType ?? DataType.FLOAT;
}

// ---- copy-on-write editing -----------------------------------------------------------------------

/**
 * Collects edits against an index of the *source* graph and produces a new model: replaced
 * initializers, rewired consumers (copies of the original nodes) and new nodes inserted right after
 * the producer of the tensor they read, which keeps graph.node topologically sorted.
 */
export class GraphEditor {
  readonly names: NameAllocator;
  private readonly replacedInit = new Map<string, TensorProto>();
  private readonly newInits: TensorProto[] = [];
  private readonly rewired = new Map<NodeProto, NodeProto>();
  private readonly replaced = new Map<NodeProto, NodeProto[]>();
  /** Insertions after node position i (−1 = before the first node). */
  private readonly inserts = new Map<number, NodeProto[]>();

  constructor(
    readonly model: ModelProto,
    readonly idx: GraphIndex = indexGraph(model.graph ?? {}),
  ) {
    this.names = new NameAllocator(model.graph ?? {});
  }

  replaceInitializer(t: TensorProto): void {
    const added = this.newInits.findIndex((x) => x.name === t.name);
    if (added >= 0) {
      this.newInits[added] = t;
      return;
    }
    if (!this.idx.initializers.has(t.name ?? '')) throw new Error(`no initializer "${t.name}" to replace`);
    this.replacedInit.set(t.name ?? '', t);
  }

  /** The current version of an initializer (replaced, original or added). */
  initializer(name: string): TensorProto | undefined {
    return this.replacedInit.get(name) ?? this.idx.initializers.get(name) ?? this.newInits.find((x) => x.name === name);
  }

  addInitializer(base: string, dims: number[], values: ArrayLike<number>, dataType: number): string {
    const name = this.names.fresh(base);
    this.newInits.push(floatInitializer(name, dims, values, dataType));
    return name;
  }

  /** A new initializer without data yet (name, dims, type): rotate.ts fills it after its weight tasks. */
  addPlaceholder(base: string, dims: number[], dataType: number): string {
    const name = this.names.fresh(base);
    this.newInits.push({ name, dims, dataType });
    return name;
  }

  addInt64(base: string, values: number[]): string {
    const name = this.names.fresh(base);
    this.newInits.push(int64Initializer(name, values));
    return name;
  }

  /** Inserts nodes (in order) right after whatever produces `tensor` (graph start for inputs). */
  insertAfterProducer(tensor: string, nodes: NodeProto[]): void {
    const p = this.idx.producer.get(tensor);
    const pos = p ? this.idx.order.get(p)! : -1;
    let list = this.inserts.get(pos);
    if (!list) this.inserts.set(pos, (list = []));
    list.push(...nodes);
  }

  /** Every original consumer of `from` (except `keep`) reads `to` instead. */
  rewireConsumers(from: string, to: string, keep: (n: NodeProto) => boolean = () => false): void {
    if (this.idx.outputNames.has(from)) throw new GraphPatternFormatError(`tensor "${from}" is a graph output; can't insert a transform on it`);
    for (const c of this.idx.consumers.get(from) ?? []) {
      if (keep(c)) continue;
      const cur = this.rewired.get(c) ?? { ...c, input: [...(c.input ?? [])] };
      cur.input = (cur.input ?? []).map((x) => (x === from ? to : x));
      this.rewired.set(c, cur);
    }
  }

  /** Rewires one input slot of one original node. */
  rewireInput(node: NodeProto, slot: number, to: string): void {
    const cur = this.rewired.get(node) ?? { ...node, input: [...(node.input ?? [])] };
    cur.input![slot] = to;
    this.rewired.set(node, cur);
  }

  /** An original node as the edits so far left it (its rewired inputs/outputs). */
  current(node: NodeProto): NodeProto {
    return this.rewired.get(node) ?? node;
  }

  /** Every output slot of one original node writes `to` instead. */
  rewireOutput(node: NodeProto, slot: number, to: string): void {
    const cur = this.rewired.get(node) ?? { ...node, input: [...(node.input ?? [])] };
    cur.output = [...(cur.output ?? node.output ?? [])];
    cur.output[slot] = to;
    this.rewired.set(node, cur);
  }

  /** Puts `nodes` (in order, producing what `node` produced) in place of an original node. */
  replaceNode(node: NodeProto, nodes: NodeProto[]): void {
    if (this.replaced.has(node)) throw new Error(`internal: node "${node.name}" replaced twice`);
    this.replaced.set(node, nodes);
  }

  node(opType: string, inputs: string[], base: string, attribute: NodeProto['attribute'] = []): NodeProto {
    const name = this.names.fresh(base);
    return { opType, input: inputs, output: [this.names.fresh(`${base}_output_0`)], name, attribute, domain: '' };
  }

  finish(): ModelProto {
    const out = cloneModel(this.model);
    const graph = out.graph!;
    const src = this.model.graph?.node ?? [];
    const nodes: NodeProto[] = [...(this.inserts.get(-1) ?? [])];
    for (let i = 0; i < src.length; i++) {
      const instead = this.replaced.get(src[i]);
      if (instead) nodes.push(...instead);
      else nodes.push(this.rewired.get(src[i]) ?? src[i]);
      nodes.push(...(this.inserts.get(i) ?? []));
    }
    graph.node = nodes;
    graph.initializer = [...(graph.initializer ?? []).map((t) => this.replacedInit.get(t.name ?? '') ?? t), ...this.newInits];
    return out;
  }
}
