// Finding the linear layers of a decoder-only LLM graph: every MatMul/Gemm whose weight is a
// constant initializer (directly or through Identity/Cast/Transpose/Reshape/DequantizeLinear),
// with its shape, dtype, storage orientation, decoder block and role.
//
// Roles come from graph topology; node and weight names are only a fallback:
//  - q/k/v: the output flows (through RoPE, reshapes, KV-cache Concat) into the attention score
//    MatMul (q = its left operand, k = its right one) or into the context MatMul softmax·V (v);
//    fused attention ops (com.microsoft Attention/MultiHeadAttention/GroupQueryAttention) count by
//    input slot 0/1/2;
//  - o: the input comes from the context MatMul softmax·V;
//  - down: the input comes from other linear layers' outputs without a normalization in between
//    (gate ⊙ act(…) ⊙ up); of those, the one reached through an activation is `gate`, the other `up`;
//  - lm_head: the last remaining layer whose output reaches a graph output.
// Blocks follow the residual stream: a new block starts whenever the sequence of roles along the
// graph order (attention in → o → MLP in → down) starts over.
import { isMergedDecoder, splitMergedDecoder } from './merged';
import type { LayerRole } from '../protocol/report';
import type { GraphProto, ModelProto, NodeProto, TensorProto } from './proto';
import { ModelFormatError } from './errors';
import { refuseQuantized } from './quantized';
import { attrInt, attrInts, indexGraph, isDefaultDomain, type GraphIndex } from './graph';
import { dataTypeName, tensorDims, weightDtypeOf } from './tensor';
import type { LayerGroup, LinearLayer, WeightDtype } from './types';

export interface FindLinearLayersOptions {
  /** Return [] instead of throwing ModelFormatError('no-linear-layers'). */
  allowEmpty?: boolean;
  /** What to do with a MatMul whose constant weight isn't float32/float16/bfloat16 (default 'throw'). */
  unsupportedDtype?: 'throw' | 'skip';
}

interface TracedWeight {
  initializer: TensorProto;
  /** Ops from the initializer to the consumer, initializer side first. */
  path: string[];
  /** Effective dims as the consumer sees them. */
  dims: number[];
  /** Whether the effective matrix is the transpose of the stored 2-D matrix. */
  transposed: boolean;
  /** Float type after DequantizeLinear (the scale's type), if any. */
  dequantizedType?: number;
}

/** Graph nodes we never treat as linear layers: online Hadamard transforms inserted by rotation. */
const NOT_A_LAYER = /hadamard/i;

export function findLinearLayers(model: ModelProto, options: FindLinearLayersOptions = {}): LinearLayer[] {
  // A merged decoder's branches read the same weights: its layers are those of the no-past branch.
  if (isMergedDecoder(model)) return findLinearLayers(splitMergedDecoder(model).noPast, options);
  const graph = model.graph;
  if (!graph) throw new ModelFormatError('no-graph', 'the model has no graph; pick a .onnx file exported with torch.onnx.export or Optimum');
  const idx = indexGraph(graph);
  const layers: LinearLayer[] = [];
  const nodes = graph.node ?? [];
  for (let i = 0; i < nodes.length; i++) {
    const layer = linearLayerOf(nodes[i], i, idx, options);
    if (layer) layers.push(layer);
  }
  if (layers.length === 0) {
    if (options.allowEmpty) return layers;
    refuseQuantized(model);
    throw new ModelFormatError(
      'no-linear-layers',
      'found no linear layers (MatMul or Gemm with a constant float weight) in the model; OBR Studio compresses transformer LLMs exported with torch.onnx.export or Optimum — check that the weights are initializers, not graph inputs computed at run time',
    );
  }
  assignRoles(layers, idx);
  assignBlocks(layers);
  return layers;
}

/** Layers grouped by their shared input (one Hessian per group), in graph order. */
export function groupLayersByInput(layers: readonly LinearLayer[]): LayerGroup[] {
  const groups = new Map<string, LayerGroup>();
  for (const l of layers) {
    let g = groups.get(l.inputName);
    if (!g) groups.set(l.inputName, (g = { inputName: l.inputName, inFeatures: l.inFeatures, block: l.block, layers: [] }));
    g.layers.push(l.name);
  }
  return [...groups.values()];
}

function linearLayerOf(n: NodeProto, order: number, idx: GraphIndex, options: FindLinearLayersOptions): LinearLayer | undefined {
  if (n.opType === 'Attention' && n.domain === 'com.microsoft') return packedAttentionLayer(n, order, idx);
  if (!isDefaultDomain(n) || (n.opType !== 'MatMul' && n.opType !== 'Gemm')) return undefined;
  if (NOT_A_LAYER.test(n.name ?? '')) return undefined;
  const inputs = n.input ?? [];
  const outputName = n.output?.[0] ?? '';
  const [a, b] = inputs;
  if (!a || !b) return undefined;
  if (isConstantTensor(idx, a)) return undefined; // W·X form or constant folding leftovers
  const traced = traceWeight(idx, b);
  if (!traced) return undefined;
  let transB = 0;
  if (n.opType === 'Gemm') {
    if (attrInt(n, 'transA', 0) !== 0) return undefined;
    transB = attrInt(n, 'transB', 0);
  }
  // Effective operand of the product: rank 2 after dropping leading 1s.
  const dims = [...traced.dims];
  while (dims.length > 2 && dims[0] === 1) dims.shift();
  if (dims.length !== 2) return undefined;
  const storedDims = tensorDims(traced.initializer);
  const name = traced.initializer.name ?? '';
  if (storedDims.some((d) => !(d > 0))) {
    throw new ModelFormatError(
      'dynamic-weight-shape',
      `weight "${name}" of ${n.opType} "${n.name ?? outputName}" has shape [${storedDims.join(', ')}] with a zero or unknown dimension; export the model with static weight shapes (constant folding on)`,
    );
  }
  const [k, nOut] = transB ? [dims[1], dims[0]] : [dims[0], dims[1]];
  const floatType = traced.dequantizedType ?? traced.initializer.dataType ?? 0;
  const dtype: WeightDtype | undefined = weightDtypeOf(floatType);
  if (!dtype) {
    if (options.unsupportedDtype === 'skip') return undefined;
    throw new ModelFormatError(
      'unsupported-dtype',
      `weight "${name}" of ${n.opType} "${n.name ?? outputName}" is ${dataTypeName(floatType)}; OBR Studio compresses float32, float16 and bfloat16 weights — convert the model (e.g. onnxconverter-common float16 or plain float32) first`,
    );
  }
  const transposed = traced.transposed !== (transB === 1);
  let biasName: string | undefined;
  if (n.opType === 'Gemm' && inputs[2] && idx.initializers.has(inputs[2])) biasName = inputs[2];
  const weightUsers = idx.consumers.get(name)?.length ?? 0;
  return {
    name: n.name || outputName,
    nodeName: n.name ?? '',
    opType: n.opType,
    weightName: name,
    orientation: transposed ? 'out-in' : 'in-out',
    dtype,
    inFeatures: k,
    outFeatures: nOut,
    inputName: a,
    block: null,
    role: 'other',
    outputName,
    order,
    weightPath: traced.path,
    storedDtype: dataTypeName(traced.initializer.dataType ?? 0),
    weightShared: weightUsers > 1 || idx.outputNames.has(name),
    biasName,
    roleSource: 'none',
  };
}

/**
 * onnxruntime's fused `Attention` (transformers optimizer, e.g. GPT-2): input 1 is the packed
 * [hidden, 3·hidden] weight [W_q | W_k | W_v] applied to input 0 inside the op. It is one linear
 * layer (role qkv) compressed as one matrix; `parts` says which rows are q, k and v.
 */
function packedAttentionLayer(n: NodeProto, order: number, idx: GraphIndex): LinearLayer | undefined {
  const [x, wName] = n.input ?? [];
  if (!x || !wName) return undefined;
  const init = idx.initializers.get(wName);
  if (!init || idx.inputNames.has(wName)) return undefined;
  const dims = tensorDims(init);
  const dtype = weightDtypeOf(init.dataType ?? 0);
  if (dims.length !== 2 || !dtype) return undefined;
  const [k, total] = dims as [number, number];
  // qkv_hidden_sizes gives unequal parts (GQA-style); otherwise three equal thirds.
  const sizes = attrInts(n, 'qkv_hidden_sizes') ?? (total % 3 === 0 ? [total / 3, total / 3, total / 3] : undefined);
  if (!sizes || sizes.length !== 3 || sizes.reduce((a, b) => a + b, 0) !== total) return undefined;
  const parts: NonNullable<LinearLayer['parts']> = [];
  let at = 0;
  (['q', 'k', 'v'] as const).forEach((role, i) => {
    parts.push({ role, rows: [at, at + sizes[i]!] });
    at += sizes[i]!;
  });
  return {
    name: n.name || (n.output?.[0] ?? ''),
    nodeName: n.name ?? '',
    opType: 'Attention',
    weightName: wName,
    orientation: 'in-out',
    dtype,
    inFeatures: k,
    outFeatures: total,
    inputName: x,
    block: null,
    role: 'qkv',
    outputName: n.output?.[0] ?? '',
    order,
    weightPath: [],
    storedDtype: dataTypeName(init.dataType ?? 0),
    weightShared: (idx.consumers.get(wName)?.length ?? 0) > 1 || idx.outputNames.has(wName),
    roleSource: 'topology',
    parts,
  };
}

function isConstantTensor(idx: GraphIndex, name: string): boolean {
  return (idx.initializers.has(name) && !idx.inputNames.has(name)) || idx.constants.has(name);
}

/** Follows a MatMul/Gemm operand back to a constant initializer; undefined when it's an activation. */
function traceWeight(idx: GraphIndex, name: string, depth = 0): TracedWeight | undefined {
  const init = idx.initializers.get(name);
  if (init) return { initializer: init, path: [], dims: tensorDims(init), transposed: false };
  const p = idx.producer.get(name);
  if (!p || depth > 8 || !isDefaultDomain(p)) return undefined;
  const src = p.input?.[0];
  if (!src) return undefined;
  switch (p.opType) {
    case 'Identity':
    case 'Cast': {
      const t = traceWeight(idx, src, depth + 1);
      return t && { ...t, path: [...t.path, p.opType] };
    }
    case 'DequantizeLinear': {
      const t = traceWeight(idx, src, depth + 1);
      const scale = idx.initializers.get(p.input?.[1] ?? '') ?? idx.constants.get(p.input?.[1] ?? '');
      if (!t || !scale) return undefined;
      return { ...t, path: [...t.path, 'DequantizeLinear'], dequantizedType: scale.dataType ?? 1 };
    }
    case 'Transpose': {
      const t = traceWeight(idx, src, depth + 1);
      if (!t) return undefined;
      const rank = t.dims.length;
      const perm = attrInts(p, 'perm') ?? [...Array(rank).keys()].reverse();
      const dims = perm.map((i) => t.dims[i]);
      // Only a swap of the last two axes (leading axes kept) maps to a matrix transpose.
      const swapsLastTwo = rank >= 2 && perm[rank - 1] === rank - 2 && perm[rank - 2] === rank - 1 && perm.slice(0, rank - 2).every((v, i) => v === i);
      if (!swapsLastTwo) return undefined;
      return { ...t, path: [...t.path, 'Transpose'], dims, transposed: !t.transposed };
    }
    case 'Reshape': {
      const t = traceWeight(idx, src, depth + 1);
      if (!t) return undefined;
      const shapeName = p.input?.[1] ?? '';
      const shapeTensor = idx.initializers.get(shapeName) ?? idx.constants.get(shapeName);
      if (!shapeTensor) {
        throw new ModelFormatError(
          'dynamic-weight-shape',
          `weight "${t.initializer.name}" is reshaped by "${p.name ?? shapeName}" to a shape computed at run time; export the model with constant folding so weight shapes are static`,
        );
      }
      // Only reshapes that add/drop unit axes keep the matrix (and its orientation) intact.
      const squeeze = (d: number[]) => d.filter((v) => v !== 1);
      const target = constantInts(shapeTensor);
      if (!target || target.some((v) => v <= 0)) return undefined;
      if (squeeze(target).join(',') !== squeeze(t.dims).join(',')) return undefined;
      return { ...t, path: [...t.path, 'Reshape'], dims: target };
    }
    default:
      return undefined;
  }
}

function constantInts(t: TensorProto): number[] | undefined {
  if (t.dataType !== 7) return undefined;
  if (t.rawData && t.rawData.length > 0) {
    const view = new DataView(t.rawData.buffer, t.rawData.byteOffset, t.rawData.byteLength);
    return Array.from({ length: t.rawData.length / 8 }, (_, i) => Number(view.getBigInt64(i * 8, true)));
  }
  return (t.int64Data ?? []).map((v) => Number(v));
}

// ---- roles --------------------------------------------------------------------------------------

const NORM_OPS = new Set([
  'ReduceMean',
  'ReduceL2',
  'ReduceSumSquare',
  'LayerNormalization',
  'SimplifiedLayerNormalization',
  'SkipLayerNormalization',
  'SkipSimplifiedLayerNormalization',
  'RMSNormalization',
]);
const ACTIVATION_OPS = new Set(['Sigmoid', 'Tanh', 'Relu', 'Gelu', 'FastGelu', 'QuickGelu', 'Erf', 'Elu', 'Selu', 'Softplus', 'HardSigmoid', 'HardSwish', 'Mish', 'LeakyRelu']);
const FUSED_ATTENTION_OPS = new Set(['Attention', 'MultiHeadAttention', 'GroupQueryAttention', 'PackedAttention', 'SparseAttention']);
/** Ops whose output describes a shape, not activations. */
const SHAPE_OPS = new Set(['Shape', 'Size']);
/** Ops whose inputs after the first are shapes, indices or axes (torch.onnx exports compute them at run time). */
const DATA_INPUT_ONLY = new Set(['Reshape', 'Expand', 'Slice', 'Tile', 'Pad', 'Unsqueeze', 'Squeeze', 'Split', 'ConstantOfShape', 'Resize', 'TopK']);
/** Bound on nodes visited per trace: keeps role finding linear in the model size. */
const TRACE_LIMIT = 600;

function isDynamicMatMul(n: NodeProto, linearNodes: Set<NodeProto>, idx: GraphIndex): boolean {
  if (n.opType !== 'MatMul' || linearNodes.has(n)) return false;
  const [a, b] = n.input ?? [];
  return !!a && !!b && !isConstantTensor(idx, a) && !isConstantTensor(idx, b);
}

/** Whether a tensor comes from a Softmax within a few shape/elementwise steps. */
function fromSoftmax(idx: GraphIndex, name: string): boolean {
  let frontier = [name];
  for (let step = 0; step < 8 && frontier.length; step++) {
    const next: string[] = [];
    for (const t of frontier) {
      const p = idx.producer.get(t);
      if (!p) continue;
      if (p.opType === 'Softmax') return true;
      if (p.opType === 'MatMul' || p.opType === 'Gemm') continue;
      for (const x of p.input ?? []) if (x && !isConstantTensor(idx, x)) next.push(x);
    }
    frontier = next;
  }
  return false;
}

/** Whether a MatMul's output reaches a Softmax before any other MatMul (attention scores). */
function toSoftmax(idx: GraphIndex, n: NodeProto): boolean {
  let frontier = [...(n.output ?? [])];
  for (let step = 0; step < 8 && frontier.length; step++) {
    const next: string[] = [];
    for (const t of frontier) {
      for (const c of idx.consumers.get(t) ?? []) {
        if (c.opType === 'Softmax') return true;
        if (c.opType === 'MatMul' || c.opType === 'Gemm') continue;
        next.push(...(c.output ?? []));
      }
    }
    frontier = next;
  }
  return false;
}

type AttentionSlot = 'q' | 'k' | 'v' | 'qkv';

/** Forward trace from a layer's output to the attention it feeds, if any. */
function attentionSlot(layer: LinearLayer, idx: GraphIndex, linearNodes: Set<NodeProto>): AttentionSlot | undefined {
  const seen = new Set<string>();
  const queue = [layer.outputName ?? ''];
  const hits = new Set<AttentionSlot>();
  let visited = 0;
  while (queue.length && visited < TRACE_LIMIT) {
    const t = queue.shift()!;
    if (seen.has(t)) continue;
    seen.add(t);
    for (const c of idx.consumers.get(t) ?? []) {
      visited++;
      if (linearNodes.has(c)) continue;
      const slot = (c.input ?? []).indexOf(t);
      if (FUSED_ATTENTION_OPS.has(c.opType ?? '')) {
        if (slot === 0) hits.add('q');
        else if (slot === 1) hits.add('k');
        else if (slot === 2) hits.add('v');
        continue;
      }
      if (isDynamicMatMul(c, linearNodes, idx)) {
        if (slot === 1 && fromSoftmax(idx, c.input![0])) hits.add('v');
        else if (toSoftmax(idx, c)) hits.add(slot === 0 ? 'q' : 'k');
        continue;
      }
      // A normalization starts the next sub-block: what lies beyond it is not this layer's slot.
      if (c.opType === 'Softmax' || SHAPE_OPS.has(c.opType ?? '') || NORM_OPS.has(c.opType ?? '')) continue;
      if (DATA_INPUT_ONLY.has(c.opType ?? '') && slot !== 0) continue; // t is a shape/index operand here
      queue.push(...(c.output ?? []).filter(Boolean));
    }
  }
  if (hits.size === 3) return 'qkv'; // one projection split into q, k and v (GPT-2's c_attn)
  return hits.size === 1 ? [...hits][0] : undefined;
}

interface BackTrace {
  norm: boolean;
  /** Some path reached a graph input or an embedding Gather (e.g. through a residual Add). */
  source: boolean;
  attention: boolean;
  /** Linear layers reached, and whether the path to each went through an activation. */
  hits: Map<LinearLayer, boolean>;
}

/** Backward trace from a group's input until linear-layer outputs, attention or a normalization. */
function traceInput(input: string, idx: GraphIndex, linearNodes: Set<NodeProto>, byOutput: Map<string, LinearLayer>): BackTrace {
  const result: BackTrace = { norm: false, source: false, attention: false, hits: new Map() };
  const seen = new Set<string>();
  const queue: Array<{ t: string; act: boolean }> = [{ t: input, act: false }];
  let visited = 0;
  while (queue.length && visited < TRACE_LIMIT) {
    const { t, act } = queue.shift()!;
    const key = `${t}|${act}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const layer = byOutput.get(t);
    if (layer && layer.opType === 'Attention') {
      result.attention = true; // the fused op's output is attention, not its packed projection
      continue;
    }
    if (layer) {
      result.hits.set(layer, (result.hits.get(layer) ?? false) || act);
      continue;
    }
    const p = idx.producer.get(t);
    if (!p) {
      if (!isConstantTensor(idx, t)) result.source = true;
      continue;
    }
    visited++;
    const op = p.opType ?? '';
    if (NORM_OPS.has(op)) {
      result.norm = true; // a normalized input: q/k/v, gate/up or lm_head — nothing more to learn
      return result;
    }
    if (FUSED_ATTENTION_OPS.has(op)) {
      result.attention = true;
      continue;
    }
    if (isDynamicMatMul(p, linearNodes, idx)) {
      if (fromSoftmax(idx, p.input![0])) result.attention = true;
      continue;
    }
    if (op === 'Gather') {
      result.source = true;
      continue;
    }
    if (op === 'Softmax' || SHAPE_OPS.has(op)) continue; // a shape query reads no data
    const viaAct = act || ACTIVATION_OPS.has(op) || (op === 'Mul' && selfGated(p, idx));
    // Reshape/Expand/Slice/…: only the data input carries activations; the others are shapes.
    const dataInputs = DATA_INPUT_ONLY.has(op) ? (p.input ?? []).slice(0, 1) : (p.input ?? []);
    for (const x of dataInputs) if (x && !isConstantTensor(idx, x)) queue.push({ t: x, act: viaAct });
  }
  return result;
}

/** `x * sigmoid(x)` (SiLU/Swish decomposed): a Mul whose operand also feeds its other operand. */
function selfGated(mul: NodeProto, idx: GraphIndex): boolean {
  const [a, b] = mul.input ?? [];
  const viaAct = (x: string | undefined, y: string | undefined) => {
    const p = x ? idx.producer.get(x) : undefined;
    return !!p && ACTIVATION_OPS.has(p.opType ?? '') && (p.input ?? []).includes(y ?? '');
  };
  return viaAct(a, b) || viaAct(b, a);
}

const NAME_HINTS: Array<[RegExp, LayerRole]> = [
  [/(^|[^a-z])(q_proj|query|wq|q)([^a-z]|$)/i, 'q'],
  [/(^|[^a-z])(k_proj|key|wk|k)([^a-z]|$)/i, 'k'],
  [/(^|[^a-z])(v_proj|value|wv|v)([^a-z]|$)/i, 'v'],
  [/(^|[^a-z])(o_proj|out_proj|wo|c_proj\b.*attn|attn.*c_proj|dense)([^a-z]|$)/i, 'o'],
  [/(^|[^a-z])(gate_proj|w1|fc_gate)([^a-z]|$)/i, 'gate'],
  [/(^|[^a-z])(up_proj|w3|fc1|fc_in|c_fc)([^a-z]|$)/i, 'up'],
  [/(^|[^a-z])(down_proj|w2|fc2|fc_out)([^a-z]|$)/i, 'down'],
  [/(^|[^a-z])(lm_head|output_projection|embed_out)([^a-z]|$)/i, 'lm_head'],
];

export function roleFromName(name: string): LayerRole | undefined {
  for (const [re, role] of NAME_HINTS) if (re.test(name)) return role;
  return undefined;
}

function assignRoles(layers: LinearLayer[], idx: GraphIndex): void {
  const linearNodes = new Set<NodeProto>();
  const byOutput = new Map<string, LinearLayer>();
  const nodes = idx.graph.node ?? [];
  for (const l of layers) {
    linearNodes.add(nodes[l.order ?? 0]);
    byOutput.set(l.outputName ?? '', l);
  }
  const set = (l: LinearLayer, role: LayerRole) => {
    if (l.roleSource === 'topology') return;
    l.role = role;
    l.roleSource = 'topology';
  };
  // 1. attention inputs by where their outputs go.
  for (const l of layers) {
    const slot = attentionSlot(l, idx, linearNodes);
    if (slot) set(l, slot);
  }
  // A fused q/k/v projection split after the product (GPT-2's c_attn): three equal row blocks.
  for (const l of layers) {
    if (l.role !== 'qkv' || l.parts || l.outFeatures % 3 !== 0) continue;
    const third = l.outFeatures / 3;
    l.parts = (['q', 'k', 'v'] as const).map((role, i) => ({ role, rows: [i * third, (i + 1) * third] as [number, number] }));
  }
  // 2. o / down (+ gate/up) by where a group's input comes from.
  for (const g of groupLayersByInput(layers)) {
    const members = layers.filter((l) => l.inputName === g.inputName);
    if (members.some((l) => l.roleSource === 'topology')) continue;
    const trace = traceInput(g.inputName, idx, linearNodes, byOutput);
    if (trace.norm) continue;
    if (trace.attention && trace.hits.size === 0) {
      for (const l of members) set(l, 'o');
    } else if (trace.hits.size > 0 && !trace.attention && !trace.source) {
      for (const l of members) set(l, 'down');
      const hits = [...trace.hits].filter(([h]) => h.roleSource !== 'topology');
      const gated = hits.some(([, act]) => act) && hits.some(([, act]) => !act);
      for (const [h, act] of hits) set(h, gated && act ? 'gate' : 'up');
    }
  }
  // 3. lm_head: the last unassigned layer whose output reaches a graph output.
  for (let i = layers.length - 1; i >= 0; i--) {
    const l = layers[i];
    if (l.roleSource === 'topology') continue;
    if (reachesGraphOutput(l, idx, linearNodes)) {
      set(l, 'lm_head');
      break;
    }
  }
  // 4. names as a hint for whatever topology couldn't place.
  for (const l of layers) {
    if (l.roleSource === 'topology') continue;
    const hint = roleFromName(l.nodeName) ?? roleFromName(l.weightName);
    if (hint) {
      l.role = hint;
      l.roleSource = 'name';
    }
  }
}

function reachesGraphOutput(layer: LinearLayer, idx: GraphIndex, linearNodes: Set<NodeProto>): boolean {
  const seen = new Set<string>();
  const queue = [layer.outputName ?? ''];
  let visited = 0;
  while (queue.length && visited < 64) {
    const t = queue.shift()!;
    if (seen.has(t)) continue;
    seen.add(t);
    if (idx.outputNames.has(t)) return true;
    for (const c of idx.consumers.get(t) ?? []) {
      visited++;
      if (linearNodes.has(c) || c.opType === 'MatMul' || NORM_OPS.has(c.opType ?? '')) continue;
      queue.push(...(c.output ?? []).filter(Boolean));
    }
  }
  return false;
}

// ---- blocks -------------------------------------------------------------------------------------

const STAGE: Partial<Record<LayerRole, number>> = { q: 0, k: 0, v: 0, qkv: 0, o: 1, gate: 2, up: 2, down: 3 };
const BLOCK_NAME = /(?:layers?|blocks?|h|decoder\.layers)[._/](\d+)(?:[._/]|$)/;

function assignBlocks(layers: LinearLayer[]): void {
  const groups = groupLayersByInput(layers);
  const byName = new Map(layers.map((l) => [l.name, l]));
  let block = -1;
  let lastStage = Infinity;
  let anyStage = false;
  // Layers without a stage (e.g. a fused qkv projection) belong to the block of the next staged
  // group: they sit in front of it on the residual stream.
  let pending: LinearLayer[] = [];
  for (const g of groups) {
    const members = g.layers.map((n) => byName.get(n)!);
    const stages = members.map((l) => STAGE[l.role]).filter((s): s is number => s !== undefined);
    if (stages.length === 0) {
      pending.push(...members);
      continue;
    }
    const stage = Math.min(...stages);
    if (stage <= lastStage) block++;
    lastStage = stage;
    anyStage = true;
    for (const l of [...pending, ...members]) l.block = block;
    pending = [];
  }
  for (const l of pending) l.block = block >= 0 ? block : null;
  for (const l of layers) if (l.role === 'lm_head') l.block = null;
  if (!anyStage) {
    // No role found anywhere: fall back to the block number in the names.
    for (const l of layers) {
      const m = BLOCK_NAME.exec(l.nodeName) ?? BLOCK_NAME.exec(l.weightName);
      l.block = m ? Number(m[1]) : null;
    }
  }
}

/** Convenience for callers holding only a graph. */
export function findLinearLayersInGraph(graph: GraphProto, options?: FindLinearLayersOptions): LinearLayer[] {
  return findLinearLayers({ graph }, options);
}

/**
 * Element type of the activation a layer multiplies (what the MatMul/Gemm computes in): the
 * Cast's target or the DequantizeLinear scale type on the weight path, else the stored type.
 */
export function layerComputeType(model: ModelProto, layer: LinearLayer): number {
  const graph = model.graph!;
  const n = (graph.node ?? [])[layer.order ?? -1];
  const node = n && (n.name || n.output?.[0]) === layer.name ? n : (graph.node ?? []).find((x) => (x.name || x.output?.[0]) === layer.name);
  if (!node) return 1;
  const idx = indexGraph(graph);
  let t = node.input?.[1] ?? '';
  for (let depth = 0; depth < 8; depth++) {
    const p = idx.producer.get(t);
    if (!p) break;
    if (p.opType === 'Cast') return attrInt(p, 'to', 1);
    if (p.opType === 'DequantizeLinear') {
      const s = idx.initializers.get(p.input?.[1] ?? '') ?? idx.constants.get(p.input?.[1] ?? '');
      return s?.dataType ?? 1;
    }
    t = p.input?.[0] ?? '';
  }
  return idx.initializers.get(layer.weightName)?.dataType ?? 1;
}
