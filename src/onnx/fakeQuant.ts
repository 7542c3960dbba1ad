// Inference-time activation and KV-cache fake quantization (quantize → dequantize), built from
// standard ONNX ops so the simulated model runs in any ONNX Runtime (docs/obr-algorithm.md §1.8,
// QuaRot's ActQuantizer). A pure graph transform: the input model is not changed.
//
// What gets quantized:
//   A (abits < 16): the input of every q/k/v/o/gate/up/down projection, per token (one scale per
//     row of the last axis), after the online Hadamards of a rotated model (they precede o/down's
//     MatMul, so "the MatMul's input" is already post-Hadamard). lm_head stays at full precision.
//   K (kvbits < 16): keys after RoPE (GPT-2's learned positions: right after the per-head
//     reshape) — and after a head_dim Hadamard applied to both q and k (QuaRot's
//     QKRotationWrapper; q·kᵀ is unchanged since H·Hᵀ = I) — before the KV-cache Concat.
//   V (kvbits < 16): values after the per-head reshape [b, kv_heads, s, head_dim], before the Concat.
//   Fused attention ops: the K/V inputs of MultiHeadAttention/GroupQueryAttention; onnxruntime's
//   packed Attention gets its projection unfused first (./packedAttention.ts) into MultiHeadAttention.
//   KV grouping: `kvGroup: 'token'` (default) uses one scale per token across all kv heads, which
//   is what the QuaRot/OBR README command runs (k/v_groupsize −1); 'head' uses one scale per token
//   per head (groups of head_dim), a finer grid that is also cheap to run.
//
// Symmetric grid (default): s = clip·max|x| / (2^(b−1) − 1), q = clamp(round(x/s), −2^(b−1), 2^(b−1) − 1),
// y = q·s. Asymmetric: s = clip·(max(x, 0) − min(x, 0)) / (2^b − 1), z = round(−clip·min/s),
// q = clamp(round(x/s) + z, 0, 2^b − 1), y = (q − z)·s. The scale is floored at a tiny ε (Max) so
// an all-zero token quantizes to zeros instead of dividing by zero. Round is ONNX's
// round-half-to-even, like torch.round.
import { hadamardMatrix, hasHadamard, randomOrthogonal } from '../core/hadamard';
import { indexGraph, opsetVersion, setMetadata, type GraphIndex } from './graph';
import { findLinearLayers } from './linear';
import { DataType, type ModelProto, type NodeProto } from './proto';
import { activationType, findDecoder, fusedAttentionOf, GraphEditor, GraphPatternFormatError, hasRope, headsTensor, projectionTensors, ropeOutput } from './rotateGraph';
import type { AttentionGeometry, LinearLayer } from './types';
import { rotationOf } from './rotate';
import { ModelWriteInputError } from './errors';
import { unfusePackedAttention } from './packedAttention';

export interface FakeQuantOptions {
  /** Activation bits for the linear-layer inputs; 16 disables activation quantization. */
  abits: number;
  /** Key/value bits; 16 disables KV quantization (and the q/k Hadamard). */
  kvbits: number;
  /** Asymmetric (min/max with a zero point) instead of symmetric grids (default false, as QuaRot's README command). */
  asymmetric?: boolean;
  /** Scale clipping ratio in (0, 1] (default 1, no clipping). */
  clipRatio?: number;
  /** KV scale groups: per token across heads (default, QuaRot) or per token per head. */
  kvGroup?: 'token' | 'head';
  /** Hadamard of size head_dim on q and k after RoPE when K is quantized (default true). */
  qkHadamard?: boolean;
  /** Attention head size, when the graph doesn't show it. */
  headDim?: number;
  /** Geometry from the user or the model's config; a rotated model's own (metadata) is used first. */
  geometry?: AttentionGeometry;
}

export interface FakeQuantResult {
  model: ModelProto;
  warnings: string[];
  /** What was inserted: quantized activation tensors (by layer role), K and V quantizers per block. */
  quantized: { activations: Array<{ tensor: string; block: number | null; roles: string[] }>; keys: number; values: number; qkHadamard: boolean };
}

export const FAKE_QUANT_METADATA_KEY = 'obr.fakeQuant';

/** Quantizer parameters shared by the ONNX builder and the JS reference. */
export interface QuantGrid {
  bits: number;
  asymmetric: boolean;
  clipRatio: number;
}

/** ε floor of the scale: representable and > 0 in the activation type. */
export function scaleEpsilon(dataType: number): number {
  return dataType === DataType.FLOAT16 ? 2 ** -24 : 1e-8;
}

export function addFakeQuant(model: ModelProto, options: FakeQuantOptions): FakeQuantResult {
  checkBits('abits', options.abits);
  checkBits('kvbits', options.kvbits);
  const clipRatio = options.clipRatio ?? 1;
  if (!(clipRatio > 0 && clipRatio <= 1)) throw new ModelWriteInputError('bad-option', `clipRatio must be in (0, 1], got ${clipRatio}`);
  if (!model.graph) throw new GraphPatternFormatError('the model has no graph');
  if ((model.metadataProps ?? []).some((p) => p.key === FAKE_QUANT_METADATA_KEY)) {
    throw new ModelWriteInputError('bad-option', 'the model already has activation/KV fake quantization (metadata "obr.fakeQuant"); start from the model without it');
  }
  const asymmetric = options.asymmetric ?? false;
  const aOn = options.abits < 16;
  const kvOn = options.kvbits < 16;
  const qkHadamard = kvOn && (options.qkHadamard ?? true);
  const result: FakeQuantResult = { model, warnings: [], quantized: { activations: [], keys: 0, values: 0, qkHadamard } };
  if (!aOn && !kvOn) return result;

  const idx = indexGraph(model.graph);
  const ed = new GraphEditor(model, idx);
  const opset = opsetVersion(model) ?? 17;
  const consts = new QuantConstants(ed);

  if (aOn) {
    const layers = findLinearLayers(model).filter((l) => l.role !== 'lm_head');
    const byInput = new Map<string, LinearLayer[]>();
    for (const l of layers) {
      let list = byInput.get(l.inputName);
      if (!list) byInput.set(l.inputName, (list = []));
      list.push(l);
    }
    const grid: QuantGrid = { bits: options.abits, asymmetric, clipRatio };
    for (const [tensor, readers] of byInput) {
      const dtype = activationType(idx, readers[0]);
      const base = `${readers[0].nodeName || readers[0].name}/act_quant`;
      const y = insertFakeQuant(ed, consts, tensor, grid, [-1], dtype, opset, base);
      for (const l of readers) ed.rewireInput(nodeAt(idx, l), 0, y);
      result.quantized.activations.push({ tensor, block: readers[0].block, roles: readers.map((l) => l.role) });
    }
  }

  if (kvOn) {
    // A rotated model knows the geometry its rotation used; the q/k Hadamard must match it.
    const rotated = rotationOf(model);
    const explicit = rotated ? { heads: rotated.numHeads, kvHeads: rotated.numKvHeads, headDim: rotated.headDim, source: 'the rotation metadata' } : (options.geometry ?? options.headDim);
    const dec = findDecoder(model, idx, explicit, options.geometry);
    const grid: QuantGrid = { bits: options.kvbits, asymmetric, clipRatio };
    const axes = (options.kvGroup ?? 'token') === 'token' ? [1, 3] : [3];
    let hdName: string | undefined;
    if (qkHadamard) {
      const d = dec.headDim;
      let h: Float64Array;
      if (hasHadamard(d)) h = hadamardMatrix(d);
      else {
        h = randomOrthogonal(d, 0);
        result.warnings.push(`no Hadamard construction for head_dim ${d}; the q/k rotation uses a seeded random orthogonal matrix`);
      }
      hdName = ed.addInitializer(`obr.hadamard.qk.${d}`, [d, d], h, activationType(idx, dec.blocks[0].q));
    }
    for (const b of dec.blocks) {
      const dtype = activationType(idx, b.k);
      if (b.q.opType === 'Attention') {
        // The packed weight hides q/k/v inside the op: unfuse the projection, quantize, feed MultiHeadAttention.
        const att = nodeAt(idx, b.q);
        const u = unfusePackedAttention(ed, att, opset, b.index);
        const base = `/model/layers.${b.index}/attn`;
        const nodes = [...u.pre];
        let qIn = u.q;
        let kIn = u.k;
        if (hdName) {
          const qh = buildHeadwise(ed, u.q, dec.numHeads, dec.headDim, hdName, `${base}/q_hadamard`);
          const kh = buildHeadwise(ed, u.k, dec.numKvHeads, dec.headDim, hdName, `${base}/k_hadamard`);
          nodes.push(...qh.nodes, ...kh.nodes);
          qIn = qh.y;
          kIn = kh.y;
        }
        const kq = buildFakeQuant(ed, consts, kIn, grid, [-1], dtype, opset, `${base}/k_quant`);
        const vq = buildFakeQuant(ed, consts, u.v, grid, [-1], dtype, opset, `${base}/v_quant`);
        nodes.push(...kq.nodes, ...vq.nodes, ...u.post(qIn, kq.y, vq.y));
        ed.replaceNode(att, nodes);
        result.quantized.keys++;
        result.quantized.values++;
        continue;
      }
      const tensors = projectionTensors(idx, b);
      if (!tensors) throw new GraphPatternFormatError(`block ${b.index}: can't find the q/k/v outputs of the fused projection "${b.q.name}" (expected a Split into three); KV quantization needs them — use kvbits 16`);
      const fused = headsTensor(idx, tensors.q) ? undefined : fusedAttentionOf(idx, tensors.q);
      if (fused) {
        quantizeFusedAttentionKv(ed, consts, fused, b.index, dec, grid, dtype, opset, hdName, result);
        continue;
      }
      const qHeads = headsTensor(idx, tensors.q);
      const kHeads = headsTensor(idx, tensors.k);
      const vHeads = headsTensor(idx, tensors.v);
      let qRope = qHeads && ropeOutput(idx, qHeads.tensor);
      let kRope = kHeads && ropeOutput(idx, kHeads.tensor);
      // Learned positions (GPT-2): no RoPE between the heads and the scores; quantize the heads.
      if (qHeads && kHeads && !qRope && !kRope && !hasRope(idx, qHeads.tensor) && !hasRope(idx, kHeads.tensor)) {
        qRope = qHeads.tensor;
        kRope = kHeads.tensor;
      }
      if (!qRope || !kRope || !vHeads) {
        throw new GraphPatternFormatError(
          `block ${b.index}: can't find the ${!vHeads ? 'per-head values' : 'RoPE outputs of q and k'} (expected MatMul → Reshape → Transpose(0,2,1,3) → x·cos + rotate_half(x)·sin, or no RoPE); KV quantization needs a LLaMA- or GPT-2-style attention graph — use kvbits 16`,
        );
      }
      let k = kRope;
      if (hdName) {
        const qh = ed.node('MatMul', [qRope, hdName], `/model/layers.${b.index}/self_attn/q_hadamard/MatMul`);
        ed.insertAfterProducer(qRope, [qh]);
        ed.rewireConsumers(qRope, qh.output![0]);
        const kh = ed.node('MatMul', [kRope, hdName], `/model/layers.${b.index}/self_attn/k_hadamard/MatMul`);
        ed.insertAfterProducer(kRope, [kh]);
        k = kh.output![0];
      }
      const kq = insertFakeQuant(ed, consts, k, grid, axes, dtype, opset, `/model/layers.${b.index}/self_attn/k_quant`, kRope);
      ed.rewireConsumers(kRope, kq);
      result.quantized.keys++;
      const vq = insertFakeQuant(ed, consts, vHeads.tensor, grid, axes, dtype, opset, `/model/layers.${b.index}/self_attn/v_quant`);
      ed.rewireConsumers(vHeads.tensor, vq);
      result.quantized.values++;
    }
  }

  const out = ed.finish();
  setMetadata(
    out,
    FAKE_QUANT_METADATA_KEY,
    JSON.stringify({ abits: options.abits, kvbits: options.kvbits, asymmetric, clipRatio, kvGroup: options.kvGroup ?? 'token', qkHadamard, perToken: true }),
  );
  result.model = out;
  return result;
}

/**
 * KV quantization for onnxruntime's fused attention ops (MultiHeadAttention, GroupQueryAttention,
 * Attention with separate q/k/v inputs): the K and V tensors entering the op are quantized per
 * token (all heads of a token share a scale, as kvGroup 'token'), so the op's attention and its
 * `present` cache outputs see quantized keys and values. When RoPE is outside the op (a
 * RotaryEmbedding before it), q and k first get the per-head Hadamard (I_heads ⊗ H_d), which
 * leaves q·kᵀ unchanged. GroupQueryAttention with do_rotary applies RoPE inside, after our
 * quantizer: the keys are then quantized before RoPE and without the Hadamard (said in warnings).
 */
function quantizeFusedAttentionKv(
  ed: GraphEditor,
  consts: QuantConstants,
  att: NodeProto,
  block: number,
  dec: { numHeads: number; numKvHeads: number; headDim: number },
  grid: QuantGrid,
  dtype: number,
  opset: number,
  hdName: string | undefined,
  result: FakeQuantResult,
): void {
  const [q, k, v] = att.input ?? [];
  if (!q || !k || !v) {
    throw new GraphPatternFormatError(`block ${block}: ${att.opType} "${att.name}" takes packed q/k/v in one input; KV quantization needs separate key and value inputs — use kvbits 16`);
  }
  const base = `/model/layers.${block}/attn`;
  const rotaryInside = att.opType === 'GroupQueryAttention' && (att.attribute ?? []).some((a) => a.name === 'do_rotary' && Number(a.i) === 1);
  let qIn = q;
  let kIn = k;
  if (hdName && !rotaryInside) {
    qIn = insertHeadwise(ed, q, dec.numHeads, dec.headDim, hdName, `${base}/q_hadamard`);
    kIn = insertHeadwise(ed, k, dec.numKvHeads, dec.headDim, hdName, `${base}/k_hadamard`);
  } else if (hdName && rotaryInside && block === 0) {
    result.warnings.push(`${att.opType} applies RoPE inside the op: keys are quantized before RoPE and without the q/k Hadamard`);
  }
  const kq = insertFakeQuant(ed, consts, kIn, grid, [-1], dtype, opset, `${base}/k_quant`, k);
  const vq = insertFakeQuant(ed, consts, v, grid, [-1], dtype, opset, `${base}/v_quant`);
  if (qIn !== q) ed.rewireInput(att, 0, qIn);
  ed.rewireInput(att, 1, kq);
  ed.rewireInput(att, 2, vq);
  result.quantized.keys++;
  result.quantized.values++;
}

/** y = x·(I_heads ⊗ H) on the last axis of a rank-3 x [b, s, heads·d]: reshape, MatMul, reshape back. */
function insertHeadwise(ed: GraphEditor, x: string, heads: number, d: number, h: string, base: string): string {
  const { y, nodes } = buildHeadwise(ed, x, heads, d, h, base);
  ed.insertAfterProducer(x, nodes);
  return y;
}

/** insertHeadwise's nodes, for the caller to place. */
function buildHeadwise(ed: GraphEditor, x: string, heads: number, d: number, h: string, base: string): { y: string; nodes: NodeProto[] } {
  const split = ed.addInt64(`${base}/split_shape`, [0, 0, heads, d]);
  const merge = ed.addInt64(`${base}/merge_shape`, [0, 0, heads * d]);
  const r = ed.node('Reshape', [x, split], `${base}/Reshape`);
  const mm = ed.node('MatMul', [r.output![0], h], `${base}/MatMul`);
  const back = ed.node('Reshape', [mm.output![0], merge], `${base}/Reshape_1`);
  return { y: back.output![0], nodes: [r, mm, back] };
}

function checkBits(name: string, bits: number): void {
  if (!Number.isInteger(bits) || bits < 2 || bits > 16) throw new ModelWriteInputError('bad-option', `${name} must be an integer from 2 to 16 (16 = off), got ${bits}`);
}

function nodeAt(idx: GraphIndex, l: LinearLayer): NodeProto {
  const n = (idx.graph.node ?? [])[l.order ?? -1];
  if (!n) throw new GraphPatternFormatError(`lost track of node "${l.name}"`);
  return n;
}

/** Scalar constants of the quantizers, one initializer per (value, type), shared by all of them. */
class QuantConstants {
  private readonly cache = new Map<string, string>();
  constructor(private readonly ed: GraphEditor) {}

  scalar(label: string, value: number, dataType: number): string {
    const key = `${value}|${dataType}`;
    let name = this.cache.get(key);
    if (!name) this.cache.set(key, (name = this.ed.addInitializer(`obr.quant.${label}`, [], [value], dataType)));
    return name;
  }

  axes(values: number[]): string {
    const key = `axes|${values.join(',')}`;
    let name = this.cache.get(key);
    if (!name) this.cache.set(key, (name = this.ed.addInt64('obr.quant.axes', values)));
    return name;
  }
}

/**
 * Inserts quantize→dequantize of `x` (groups = the reduced `axes`, kept as size-1 dims) right after
 * x's producer — or after `anchor`'s producer when x is made by nodes inserted there — and returns
 * the dequantized tensor's name. Callers rewire x's readers.
 */
function insertFakeQuant(
  ed: GraphEditor,
  c: QuantConstants,
  x: string,
  grid: QuantGrid,
  axes: number[],
  dtype: number,
  opset: number,
  base: string,
  anchor: string = x,
): string {
  const { y, nodes } = buildFakeQuant(ed, c, x, grid, axes, dtype, opset, base);
  ed.insertAfterProducer(anchor, nodes);
  return y;
}

/** insertFakeQuant's nodes, for the caller to place. */
function buildFakeQuant(ed: GraphEditor, c: QuantConstants, x: string, grid: QuantGrid, axes: number[], dtype: number, opset: number, base: string): { y: string; nodes: NodeProto[] } {
  const nodes: NodeProto[] = [];
  const add = (op: string, inputs: string[], label: string, attribute: NodeProto['attribute'] = []): string => {
    const n = ed.node(op, inputs, `${base}/${label}`, attribute);
    nodes.push(n);
    return n.output![0];
  };
  const reduce = (op: 'ReduceMax' | 'ReduceMin', input: string, label: string): string =>
    opset >= 18
      ? add(op, [input, c.axes(axes)], label, [{ name: 'keepdims', type: 2, i: 1 }])
      : add(op, [input], label, [
          { name: 'axes', type: 7, ints: axes },
          { name: 'keepdims', type: 2, i: 1 },
        ]);
  const eps = c.scalar('eps', scaleEpsilon(dtype), dtype);
  let y: string;
  if (!grid.asymmetric) {
    const maxq = 2 ** (grid.bits - 1) - 1;
    let mx = reduce('ReduceMax', add('Abs', [x], 'Abs'), 'ReduceMax');
    if (grid.clipRatio !== 1) mx = add('Mul', [mx, c.scalar('clip', grid.clipRatio, dtype)], 'Clip_ratio');
    let s = add('Div', [mx, c.scalar(`maxq${maxq}`, maxq, dtype)], 'Scale');
    s = add('Max', [s, eps], 'Scale_floor');
    const r = add('Round', [add('Div', [x, s], 'Div')], 'Round');
    const q = add('Clip', [r, c.scalar(`qmin${-maxq - 1}`, -maxq - 1, dtype), c.scalar(`maxq${maxq}`, maxq, dtype)], 'Clip');
    y = add('Mul', [q, s], 'Dequantize');
  } else {
    const maxq = 2 ** grid.bits - 1;
    const zero = c.scalar('zero', 0, dtype);
    let mx = add('Max', [reduce('ReduceMax', x, 'ReduceMax'), zero], 'Max0');
    let mn = add('Min', [reduce('ReduceMin', x, 'ReduceMin'), zero], 'Min0');
    if (grid.clipRatio !== 1) {
      const clip = c.scalar('clip', grid.clipRatio, dtype);
      mx = add('Mul', [mx, clip], 'Clip_ratio_max');
      mn = add('Mul', [mn, clip], 'Clip_ratio_min');
    }
    let s = add('Div', [add('Sub', [mx, mn], 'Range'), c.scalar(`maxq${maxq}`, maxq, dtype)], 'Scale');
    s = add('Max', [s, eps], 'Scale_floor');
    const z = add('Round', [add('Div', [add('Neg', [mn], 'Neg'), s], 'Zero_div')], 'Zero');
    const r = add('Add', [add('Round', [add('Div', [x, s], 'Div')], 'Round'), z], 'Shift');
    const q = add('Clip', [r, zero, c.scalar(`maxq${maxq}`, maxq, dtype)], 'Clip');
    y = add('Mul', [add('Sub', [q, z], 'Unshift'), s], 'Dequantize');
  }
  return { y, nodes };
}

/**
 * JS reference of one group's fake quantization, reproducing the float32 graph op by op
 * (Math.fround after each op, round half to even). `group` is overwritten with the result.
 */
export function fakeQuantGroupF32(group: Float32Array, grid: QuantGrid, eps = 1e-8): void {
  const f = Math.fround;
  const epsF = f(eps);
  const clip = f(grid.clipRatio);
  if (!grid.asymmetric) {
    const maxq = 2 ** (grid.bits - 1) - 1;
    let mx = 0;
    for (const v of group) mx = Math.max(mx, Math.abs(v));
    if (grid.clipRatio !== 1) mx = f(mx * clip);
    const s = Math.max(f(mx / maxq), epsF);
    for (let i = 0; i < group.length; i++) {
      const q = Math.min(Math.max(roundHalfEven(f(group[i] / s)), -maxq - 1), maxq);
      group[i] = f(q * s);
    }
    return;
  }
  const maxq = 2 ** grid.bits - 1;
  let mx = 0;
  let mn = 0;
  for (const v of group) {
    mx = Math.max(mx, v);
    mn = Math.min(mn, v);
  }
  if (grid.clipRatio !== 1) {
    mx = f(mx * clip);
    mn = f(mn * clip);
  }
  const s = Math.max(f(f(mx - mn) / maxq), epsF);
  const z = roundHalfEven(f(-mn / s));
  for (let i = 0; i < group.length; i++) {
    const q = Math.min(Math.max(f(roundHalfEven(f(group[i] / s)) + z), 0), maxq);
    group[i] = f(f(q - z) * s);
  }
}

export function roundHalfEven(v: number): number {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}
