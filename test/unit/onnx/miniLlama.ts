// A hand-built mini LLaMA decoder for the rotation and fake-quant tests, and the helpers they
// share (run the logits, relative error). Not a test file itself: rotateMiniLlama.test.ts checks
// the builder's layout.
import * as ort from 'onnxruntime-node';
import { seededUniform } from '../../../src/core/hadamard';
import { floatTensor, int64Tensor, intAttr, intsAttr, model as makeModel, node, valueInfo } from '../../../src/onnx/builder';
import { DataType, encodeModel, type ModelProto, type NodeProto, type TensorProto } from '../../../src/onnx/proto';

export interface MiniLlama {
  vocab: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  intermediate: number;
  layers: number;
  seq: number;
  opset?: number;
  seed?: number;
  /**
   * All RMSNorm gains equal and stored once (one initializer read by every norm's Mul), as an
   * exporter deduplicates an untrained model's identical gains.
   */
  sharedNormWeight?: boolean;
  /**
   * Dynamic-shape exports read q's shape for later Reshapes (HF's `bsz, q_len = …size()`): the
   * attention output's merge shape is built from Shape(q) instead of a constant.
   */
  shapeQueries?: boolean;
}

/**
 * A LLaMA decoder in the torch.onnx.export layout: Gather embedding, decomposed RMSNorm with a
 * weight Mul, [in, out] MatMul projections, Reshape → Transpose(0,2,1,3) heads, rotate_half RoPE,
 * GQA by Unsqueeze/Expand/Reshape, causal softmax attention, SwiGLU MLP, untied lm_head.
 * Weights are seeded Gaussians with a few large residual channels (outliers).
 */
export function miniLlama(c: MiniLlama): ModelProto {
  const rand = seededUniform(c.seed ?? 1);
  const gauss = (n: number, std: number) =>
    Float32Array.from({ length: n }, () => std * Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand()));
  const hidden = c.heads * c.headDim;
  const opset = c.opset ?? 17;
  const nodes: NodeProto[] = [];
  const inits: TensorProto[] = [];
  let counter = 0;
  const op = (type: string, inputs: string[], name: string, attrs: ReturnType<typeof intAttr>[] = []) => {
    const out = `${name}_output_${counter++}`;
    nodes.push(node(type, inputs, [out], name, attrs));
    return out;
  };
  const init = (name: string, dims: number[], data: ArrayLike<number>) => {
    inits.push(floatTensor(name, dims, data));
    return name;
  };
  const ints = (name: string, data: number[]) => {
    inits.push(int64Tensor(name, [data.length], data));
    return name;
  };
  init('two', [], [2]);
  init('eps', [], [1e-5]);
  const rmsNorm = (x: string, prefix: string, weight: string) => {
    const pow = op('Pow', [x, 'two'], `${prefix}/Pow`);
    const mean = opset >= 18 ? op('ReduceMean', [pow, ints(`${prefix}.axes`, [-1])], `${prefix}/ReduceMean`, [intAttr('keepdims', 1)]) : op('ReduceMean', [pow], `${prefix}/ReduceMean`, [intsAttr('axes', [-1]), intAttr('keepdims', 1)]);
    const sq = op('Sqrt', [op('Add', [mean, 'eps'], `${prefix}/Add`)], `${prefix}/Sqrt`);
    if (c.sharedNormWeight) {
      if (!inits.some((t) => t.name === 'norm.weight.shared')) init('norm.weight.shared', [hidden], Float32Array.from({ length: hidden }, (_, i) => 0.75 + 0.5 * ((i * 7) % 5) / 4));
      return op('Mul', [op('Div', [x, sq], `${prefix}/Div`), 'norm.weight.shared'], `${prefix}/Mul`);
    }
    const g = Float32Array.from({ length: hidden }, () => 0.5 + rand());
    return op('Mul', [op('Div', [x, sq], `${prefix}/Div`), init(weight, [hidden], g)], `${prefix}/Mul`);
  };
  const linear = (x: string, name: string, weight: string, inF: number, outF: number, std = 1 / Math.sqrt(inF)) =>
    op('MatMul', [x, init(weight, [inF, outF], gauss(inF * outF, std))], name);

  // RoPE tables [seq, headDim] (rotate_half layout: the two halves share frequencies).
  const cos = new Float32Array(c.seq * c.headDim);
  const sin = new Float32Array(c.seq * c.headDim);
  for (let p = 0; p < c.seq; p++) {
    for (let i = 0; i < c.headDim; i++) {
      const f = p / 10000 ** ((2 * (i % (c.headDim / 2))) / c.headDim);
      cos[p * c.headDim + i] = Math.cos(f);
      sin[p * c.headDim + i] = Math.sin(f);
    }
  }
  init('rope.cos', [c.seq, c.headDim], cos);
  init('rope.sin', [c.seq, c.headDim], sin);
  const mask = new Float32Array(c.seq * c.seq);
  for (let i = 0; i < c.seq; i++) for (let j = i + 1; j < c.seq; j++) mask[i * c.seq + j] = -1e9;
  init('causal_mask', [c.seq, c.seq], mask);
  init('attn_scale', [], [1 / Math.sqrt(c.headDim)]);
  ints('half.start', [0]);
  ints('half.mid', [c.headDim / 2]);
  ints('half.end', [c.headDim]);
  ints('last.axis', [-1]);
  ints('unsq.axis', [2]);
  const rope = (x: string, prefix: string) => {
    const lo = op('Slice', [x, 'half.start', 'half.mid', 'last.axis'], `${prefix}/Slice`);
    const hi = op('Slice', [x, 'half.mid', 'half.end', 'last.axis'], `${prefix}/Slice_1`);
    const rot = op('Concat', [op('Neg', [hi], `${prefix}/Neg`), lo], `${prefix}/Concat`, [intAttr('axis', -1)]);
    return op('Add', [op('Mul', [x, 'rope.cos'], `${prefix}/Mul`), op('Mul', [rot, 'rope.sin'], `${prefix}/Mul_1`)], `${prefix}/Add`);
  };
  const toHeads = (x: string, n: number, prefix: string) =>
    op('Transpose', [op('Reshape', [x, ints(`${prefix}.shape`, [0, 0, n, c.headDim])], `${prefix}/Reshape`)], `${prefix}/Transpose`, [intsAttr('perm', [0, 2, 1, 3])]);
  const repeatKv = (x: string, prefix: string) => {
    if (c.kvHeads === c.heads) return x;
    const rep = c.heads / c.kvHeads;
    const u = op('Unsqueeze', [x, 'unsq.axis'], `${prefix}/Unsqueeze`);
    const e = op('Expand', [u, ints(`${prefix}.expand`, [1, c.kvHeads, rep, c.seq, c.headDim])], `${prefix}/Expand`);
    return op('Reshape', [e, ints(`${prefix}.merge`, [1, c.heads, c.seq, c.headDim])], `${prefix}/Reshape_kv`);
  };

  const emb = gauss(c.vocab * hidden, 1);
  for (let t = 0; t < c.vocab; t++) emb[t * hidden + 1] *= 8; // an outlier channel in the residual stream
  let x = op('Gather', [init('model.embed_tokens.weight', [c.vocab, hidden], emb), 'input_ids'], '/model/embed_tokens/Gather');
  for (let l = 0; l < c.layers; l++) {
    const p = `/model/layers.${l}`;
    const w = `model.layers.${l}`;
    const h = rmsNorm(x, `${p}/input_layernorm`, `${w}.input_layernorm.weight`);
    const q = toHeads(linear(h, `${p}/self_attn/q_proj/MatMul`, `${w}.self_attn.q_proj.weight`, hidden, hidden), c.heads, `${p}/self_attn/q`);
    const k = toHeads(linear(h, `${p}/self_attn/k_proj/MatMul`, `${w}.self_attn.k_proj.weight`, hidden, c.kvHeads * c.headDim), c.kvHeads, `${p}/self_attn/k`);
    const v = toHeads(linear(h, `${p}/self_attn/v_proj/MatMul`, `${w}.self_attn.v_proj.weight`, hidden, c.kvHeads * c.headDim), c.kvHeads, `${p}/self_attn/v`);
    const qr = rope(q, `${p}/self_attn/rope_q`);
    const kr = repeatKv(rope(k, `${p}/self_attn/rope_k`), `${p}/self_attn/rep_k`);
    const kt = op('Transpose', [kr], `${p}/self_attn/Transpose_k`, [intsAttr('perm', [0, 1, 3, 2])]);
    const scores = op('Mul', [op('MatMul', [qr, kt], `${p}/self_attn/MatMul`), 'attn_scale'], `${p}/self_attn/Mul_scale`);
    const probs = op('Softmax', [op('Add', [scores, 'causal_mask'], `${p}/self_attn/Add_mask`)], `${p}/self_attn/Softmax`, [intAttr('axis', -1)]);
    const ctx = op('MatMul', [probs, repeatKv(v, `${p}/self_attn/rep_v`)], `${p}/self_attn/MatMul_1`);
    const ctxShape = c.shapeQueries
      ? op('Concat', [op('Slice', [op('Shape', [q], `${p}/self_attn/Shape_q`), ints(`${p}.bs.start`, [0]), ints(`${p}.bs.end`, [1])], `${p}/self_attn/Slice_bsz`), ints(`${p}.ctx.rest`, [-1, hidden])], `${p}/self_attn/Concat_shape`, [intAttr('axis', 0)])
      : ints(`${p}.ctx.shape`, [0, 0, hidden]);
    const merged = op('Reshape', [op('Transpose', [ctx], `${p}/self_attn/Transpose_ctx`, [intsAttr('perm', [0, 2, 1, 3])]), ctxShape], `${p}/self_attn/Reshape_ctx`);
    x = op('Add', [x, linear(merged, `${p}/self_attn/o_proj/MatMul`, `${w}.self_attn.o_proj.weight`, hidden, hidden)], `${p}/Add`);
    const h2 = rmsNorm(x, `${p}/post_attention_layernorm`, `${w}.post_attention_layernorm.weight`);
    const gate = linear(h2, `${p}/mlp/gate_proj/MatMul`, `${w}.mlp.gate_proj.weight`, hidden, c.intermediate);
    const act = op('Mul', [gate, op('Sigmoid', [gate], `${p}/mlp/Sigmoid`)], `${p}/mlp/Mul`);
    const up = linear(h2, `${p}/mlp/up_proj/MatMul`, `${w}.mlp.up_proj.weight`, hidden, c.intermediate);
    const down = linear(op('Mul', [act, up], `${p}/mlp/Mul_1`), `${p}/mlp/down_proj/MatMul`, `${w}.mlp.down_proj.weight`, c.intermediate, hidden);
    x = op('Add', [x, down], `${p}/Add_1`);
  }
  const hf = rmsNorm(x, '/model/norm', 'model.norm.weight');
  const logits = linear(hf, '/lm_head/MatMul', 'lm_head.weight', hidden, c.vocab);
  nodes.push(node('Identity', [logits], ['logits'], '/logits/Identity'));
  return makeModel(
    {
      name: 'mini-llama',
      node: nodes,
      initializer: inits,
      input: [valueInfo('input_ids', DataType.INT64, [1, c.seq])],
      output: [valueInfo('logits', DataType.FLOAT, [1, c.seq, c.vocab])],
    },
    opset,
  );
}

export async function runLogits(m: ModelProto, ids: number[]): Promise<Float32Array> {
  const s = await ort.InferenceSession.create(encodeModel(m), { intraOpNumThreads: 1, logSeverityLevel: 3 });
  const out = await s.run({ input_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [1, ids.length]) });
  return out.logits.data as Float32Array;
}

/** ‖a − b‖₂ / ‖a‖₂ (float64 accumulation). */
export function relError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += a[i] ** 2;
  }
  return Math.sqrt(num / den);
}
