// Unfusing the projection of onnxruntime.transformers' packed `Attention` (com.microsoft) so its
// keys and values exist as tensors (KV quantization, docs/rotation.md). Only the projection
// leaves the op: input·W + bias → Split into q, k, v, which then feed com.microsoft
// MultiHeadAttention with the same num_heads / unidirectional / scale / mask_filter_value and the
// same mask. The packed cache interface stays: past [2, b, heads, s, d] is split into past_key /
// past_value and the present_key / present_value outputs are stacked back into `present`.
import { attrInt, attrInts, opsetVersion } from './graph';
import type { ModelProto, NodeProto } from './proto';
import { GraphEditor, GraphPatternFormatError } from './rotateGraph';

export interface UnfusedAttention {
  /** Nodes computing q, k, v (and past_key / past_value), in order. */
  pre: NodeProto[];
  q: string;
  k: string;
  v: string;
  /** Nodes from (possibly transformed) q, k, v to the original node's outputs, in order. */
  post(q: string, k: string, v: string): NodeProto[];
}

/**
 * The explicit projection of packed Attention `att` (the editor's current version of it: earlier
 * rewiring, e.g. an activation quantizer on its input, is kept). The caller replaces `att` by
 * `[...pre, <its own nodes on q/k/v>, ...post(q', k', v')]`.
 */
export function unfusePackedAttention(ed: GraphEditor, original: NodeProto, opset: number, block: number): UnfusedAttention {
  const att = ed.current(original);
  const [x, w, bias, mask, past, attentionBias, pastLength] = att.input ?? [];
  const where = `block ${block}: Attention "${att.name}"`;
  if (!x || !w) throw new GraphPatternFormatError(`${where} has no input or weight`);
  if (attentionBias || pastLength) throw new GraphPatternFormatError(`${where} has an attention bias or past_sequence_length input; KV quantization of this form isn't supported — use kvbits 16`);
  for (const a of ['do_rotary', 'past_present_share_buffer']) {
    if (attrInt(att, a, 0) !== 0) throw new GraphPatternFormatError(`${where} has ${a}=1; KV quantization of this form isn't supported — use kvbits 16`);
  }
  const dims = (ed.initializer(w)?.dims ?? []).map(Number);
  const total = dims[1] ?? 0;
  const sizes = attrInts(att, 'qkv_hidden_sizes') ?? [total / 3, total / 3, total / 3];
  if (!(total > 0) || sizes.length !== 3 || sizes[0] !== sizes[1] || sizes[1] !== sizes[2] || !Number.isInteger(sizes[0])) {
    throw new GraphPatternFormatError(`${where}: can't split its weight (${dims.join('×')}) into three equal q/k/v parts — use kvbits 16`);
  }
  const base = `/model/layers.${block}/attn/unfused`;
  const pre: NodeProto[] = [];
  const add = (n: NodeProto): NodeProto => (pre.push(n), n);
  const outputs = (n: NodeProto, count: number, label: string): string[] => (n.output = Array.from({ length: count }, (_, i) => ed.names.fresh(`${label}_${i}`)));
  const axesInput = (op: string, input: string, axes: number[], label: string): NodeProto =>
    opset >= 13 ? ed.node(op, [input, ed.addInt64(`${label}/axes`, axes)], label) : ed.node(op, [input], label, [{ name: 'axes', type: 7, ints: axes }]);
  const split = (input: string, parts: number[], axis: number, label: string): string[] => {
    const attrs: NodeProto['attribute'] = [{ name: 'axis', type: 2, i: axis }];
    const n = opset >= 13 ? ed.node('Split', [input, ed.addInt64(`${label}/split`, parts)], label, attrs) : ed.node('Split', [input], label, [...attrs, { name: 'split', type: 7, ints: parts }]);
    return outputs(add(n), parts.length, `${label}_output`);
  };

  let qkv = add(ed.node('MatMul', [x, w], `${base}/MatMul`)).output![0];
  if (bias) qkv = add(ed.node('Add', [qkv, bias], `${base}/Add`)).output![0];
  const [q, k, v] = split(qkv, sizes, -1, `${base}/Split`);
  let pastKey = '';
  let pastValue = '';
  if (past) {
    const [pk, pv] = split(past, [1, 1], 0, `${base}/past/Split`);
    pastKey = add(axesInput('Squeeze', pk, [0], `${base}/past_key/Squeeze`)).output![0];
    pastValue = add(axesInput('Squeeze', pv, [0], `${base}/past_value/Squeeze`)).output![0];
  }

  const post = (qIn: string, kIn: string, vIn: string): NodeProto[] => {
    const nodes: NodeProto[] = [];
    const keep = new Set(['num_heads', 'unidirectional', 'scale', 'mask_filter_value']);
    const mha = ed.node('MultiHeadAttention', [qIn, kIn, vIn, '', mask ?? '', '', pastKey, pastValue], `${base}/MultiHeadAttention`, (att.attribute ?? []).filter((a) => keep.has(a.name ?? '')));
    mha.domain = 'com.microsoft';
    const present = att.output?.[1];
    mha.output = [att.output![0], ...(present ? [ed.names.fresh(`${base}/present_key`), ed.names.fresh(`${base}/present_value`)] : [])];
    while (!mha.input![mha.input!.length - 1]) mha.input!.pop();
    nodes.push(mha);
    if (present) {
      const pk = axesInput('Unsqueeze', mha.output[1], [0], `${base}/present_key/Unsqueeze`);
      const pv = axesInput('Unsqueeze', mha.output[2], [0], `${base}/present_value/Unsqueeze`);
      const cat = ed.node('Concat', [pk.output![0], pv.output![0]], `${base}/present/Concat`, [{ name: 'axis', type: 2, i: 0 }]);
      cat.output = [present];
      nodes.push(pk, pv, cat);
    }
    return nodes;
  };
  return { pre, q, k, v, post };
}

/** Every packed Attention of `model` with its projection unfused and nothing in between (same function). */
export function unfusePackedAttentions(model: ModelProto): { model: ModelProto; count: number } {
  const ed = new GraphEditor(model);
  const opset = opsetVersion(model) ?? 17;
  let count = 0;
  for (const n of model.graph?.node ?? []) {
    if (n.opType !== 'Attention' || n.domain !== 'com.microsoft') continue;
    const u = unfusePackedAttention(ed, n, opset, count);
    ed.replaceNode(n, [...u.pre, ...u.post(u.q, u.k, u.v)]);
    count++;
  }
  return { model: count ? ed.finish() : model, count };
}
