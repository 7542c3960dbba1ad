// A miniature LLaMA-shaped ONNX graph built in memory with src/onnx/builder.ts, for tests that must
// not wait for the trained fixture: Optimum-like names, inputs input_ids/attention_mask/position_ids
// (int64), output logits, RMSNorm decomposed, RoPE-like Mul by a position table, SiLU-gated MLP.
// Random weights (seeded). Not a test file itself.
import { floatTensor, int64Tensor, intAttr, intsAttr, model, node, valueInfo } from '../../../src/onnx/builder';
import { DataType, type ModelProto, type NodeProto, type TensorProto } from '../../../src/onnx/proto';
import { encodeFloats } from '../../../src/onnx/tensor';

export interface LlamaGraphOptions {
  layers?: number;
  hidden?: number;
  heads?: number;
  intermediate?: number;
  vocab?: number;
  /** float16 stores weights as fp16 initializers each followed by a Cast to float. */
  weightType?: 'float32' | 'float16' | 'bfloat16';
  seed?: number;
  /** Store weights as [out, in] behind a Transpose instead of [in, out]. */
  transposedWeights?: boolean;
  /**
   * Makes the projection weight tensors instead of random values (e.g. external-data references
   * for the > 2 GiB benchmark); dims are the stored dims. float32 weights only.
   */
  weightTensor?: (name: string, dims: number[]) => TensorProto;
}

export function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

export function randomNormal(n: number, scale: number, rand: () => number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = Math.max(rand(), 1e-12);
    out[i] = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rand()) * scale;
  }
  return out;
}

export function buildLlamaGraph(o: LlamaGraphOptions = {}): ModelProto {
  const L = o.layers ?? 2;
  const H = o.hidden ?? 16;
  const NH = o.heads ?? 2;
  const HD = H / NH;
  const I = o.intermediate ?? 24;
  const V = o.vocab ?? 32;
  const rand = rng(o.seed ?? 1);
  const nodes: NodeProto[] = [];
  const inits: TensorProto[] = [];
  const weightType = o.weightType ?? 'float32';

  const weight = (name: string, rows: number, cols: number, scale: number): string => {
    // A [rows=in, cols=out] matrix (MatMul convention); optionally stored transposed / as fp16.
    if (o.weightTensor) {
      const dims = o.transposedWeights ? [cols, rows] : [rows, cols];
      inits.push(o.weightTensor(name, dims));
      if (!o.transposedWeights) return name;
      nodes.push(node('Transpose', [name], [`${name}_T`], `${name}/Transpose`, [intsAttr('perm', [1, 0])]));
      return `${name}_T`;
    }
    const values = randomNormal(rows * cols, scale, rand);
    let stored = values;
    let dims = [rows, cols];
    if (o.transposedWeights) {
      stored = new Float32Array(rows * cols);
      for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) stored[c * rows + r] = values[r * cols + c];
      dims = [cols, rows];
    }
    let out = name;
    if (weightType === 'float32') inits.push(floatTensor(name, dims, stored));
    else {
      const dt = weightType === 'float16' ? DataType.FLOAT16 : DataType.BFLOAT16;
      inits.push({ name, dims, dataType: dt, rawData: encodeFloats(stored, dt) });
      out = `${name}_cast`;
      nodes.push(node('Cast', [name], [out], `${name}/Cast`, [intAttr('to', DataType.FLOAT)]));
    }
    if (o.transposedWeights) {
      const t = `${name}_T`;
      nodes.push(node('Transpose', [out], [t], `${name}/Transpose`, [intsAttr('perm', [1, 0])]));
      out = t;
    }
    return out;
  };
  const ones = (name: string, n: number) => {
    inits.push(floatTensor(name, [n], Array.from({ length: n }, () => 1 + 0.1 * (rand() - 0.5))));
    return name;
  };
  inits.push(floatTensor('model.embed_tokens.weight', [V, H], randomNormal(V * H, 1, rand)));
  inits.push(floatTensor('eps', [], [1e-6]));
  inits.push(floatTensor('two', [], [2]));
  inits.push(floatTensor('scale', [], [1 / Math.sqrt(HD)]));
  inits.push(floatTensor('one', [], [1]));
  inits.push(floatTensor('neg_big', [], [-1e4]));
  inits.push(int64Tensor('shape_heads', [4], [0, 0, NH, HD]));
  inits.push(int64Tensor('shape_hidden', [3], [0, 0, H]));
  inits.push(int64Tensor('axes_1', [1], [1]));
  inits.push(int64Tensor('axes_12', [2], [1, 2]));
  // "RoPE": a position-dependent table multiplied into q and k (keeps the data flow of rotary).
  const P = 64;
  inits.push(floatTensor('rope_table', [P, HD], Array.from({ length: P * HD }, (_, i) => Math.cos(i * 0.37))));

  nodes.push(node('Gather', ['model.embed_tokens.weight', 'input_ids'], ['/model/embed_tokens/Gather_output_0'], '/model/embed_tokens/Gather'));
  // Additive padding mask [B,1,1,S].
  nodes.push(node('Cast', ['attention_mask'], ['mask_f'], '/model/mask/Cast', [intAttr('to', DataType.FLOAT)]));
  nodes.push(node('Sub', ['one', 'mask_f'], ['mask_inv'], '/model/mask/Sub'));
  nodes.push(node('Mul', ['mask_inv', 'neg_big'], ['mask_add2'], '/model/mask/Mul'));
  nodes.push(node('Unsqueeze', ['mask_add2', 'axes_12'], ['mask_add'], '/model/mask/Unsqueeze'));
  nodes.push(node('Gather', ['rope_table', 'position_ids'], ['rope_bsd'], '/model/rope/Gather'));
  nodes.push(node('Unsqueeze', ['rope_bsd', 'axes_1'], ['rope'], '/model/rope/Unsqueeze'));

  const rmsNorm = (x: string, w: string, p: string): string => {
    nodes.push(node('Pow', [x, 'two'], [`${p}/Pow_output_0`], `${p}/Pow`));
    nodes.push(node('ReduceMean', [`${p}/Pow_output_0`], [`${p}/ReduceMean_output_0`], `${p}/ReduceMean`, [intsAttr('axes', [-1]), intAttr('keepdims', 1)]));
    nodes.push(node('Add', [`${p}/ReduceMean_output_0`, 'eps'], [`${p}/Add_output_0`], `${p}/Add`));
    nodes.push(node('Sqrt', [`${p}/Add_output_0`], [`${p}/Sqrt_output_0`], `${p}/Sqrt`));
    nodes.push(node('Reciprocal', [`${p}/Sqrt_output_0`], [`${p}/Reciprocal_output_0`], `${p}/Reciprocal`));
    nodes.push(node('Mul', [x, `${p}/Reciprocal_output_0`], [`${p}/Mul_output_0`], `${p}/Mul`));
    nodes.push(node('Mul', [w, `${p}/Mul_output_0`], [`${p}/Mul_1_output_0`], `${p}/Mul_1`));
    return `${p}/Mul_1_output_0`;
  };
  const linear = (x: string, wName: string, p: string, rows: number, cols: number): string => {
    const w = weight(wName, rows, cols, 1 / Math.sqrt(rows));
    nodes.push(node('MatMul', [x, w], [`${p}/MatMul_output_0`], `${p}/MatMul`));
    return `${p}/MatMul_output_0`;
  };

  let h = '/model/embed_tokens/Gather_output_0';
  for (let i = 0; i < L; i++) {
    const p = `/model/layers.${i}`;
    const w = `model.layers.${i}`;
    const n1 = rmsNorm(h, ones(`${w}.input_layernorm.weight`, H), `${p}/input_layernorm`);
    const q = linear(n1, `${w}.self_attn.q_proj.weight`, `${p}/self_attn/q_proj`, H, H);
    const k = linear(n1, `${w}.self_attn.k_proj.weight`, `${p}/self_attn/k_proj`, H, H);
    const v = linear(n1, `${w}.self_attn.v_proj.weight`, `${p}/self_attn/v_proj`, H, H);
    const a = `${p}/self_attn`;
    nodes.push(node('Reshape', [q, 'shape_heads'], [`${a}/q4`], `${a}/Reshape`));
    nodes.push(node('Transpose', [`${a}/q4`], [`${a}/qt`], `${a}/Transpose`, [intsAttr('perm', [0, 2, 1, 3])]));
    nodes.push(node('Mul', [`${a}/qt`, 'rope'], [`${a}/qr`], `${a}/Mul_rope_q`));
    nodes.push(node('Reshape', [k, 'shape_heads'], [`${a}/k4`], `${a}/Reshape_1`));
    nodes.push(node('Transpose', [`${a}/k4`], [`${a}/kt`], `${a}/Transpose_1`, [intsAttr('perm', [0, 2, 1, 3])]));
    nodes.push(node('Mul', [`${a}/kt`, 'rope'], [`${a}/kr`], `${a}/Mul_rope_k`));
    nodes.push(node('Transpose', [`${a}/kr`], [`${a}/kT`], `${a}/Transpose_2`, [intsAttr('perm', [0, 1, 3, 2])]));
    nodes.push(node('Reshape', [v, 'shape_heads'], [`${a}/v4`], `${a}/Reshape_2`));
    nodes.push(node('Transpose', [`${a}/v4`], [`${a}/vt`], `${a}/Transpose_3`, [intsAttr('perm', [0, 2, 1, 3])]));
    nodes.push(node('MatMul', [`${a}/qr`, `${a}/kT`], [`${a}/scores`], `${a}/MatMul`));
    nodes.push(node('Mul', [`${a}/scores`, 'scale'], [`${a}/scaled`], `${a}/Mul`));
    nodes.push(node('Add', [`${a}/scaled`, 'mask_add'], [`${a}/masked`], `${a}/Add`));
    nodes.push(node('Softmax', [`${a}/masked`], [`${a}/probs`], `${a}/Softmax`, [intAttr('axis', -1)]));
    nodes.push(node('MatMul', [`${a}/probs`, `${a}/vt`], [`${a}/ctx`], `${a}/MatMul_1`));
    nodes.push(node('Transpose', [`${a}/ctx`], [`${a}/ctxt`], `${a}/Transpose_4`, [intsAttr('perm', [0, 2, 1, 3])]));
    nodes.push(node('Reshape', [`${a}/ctxt`, 'shape_hidden'], [`${a}/ctx3`], `${a}/Reshape_3`));
    const oOut = linear(`${a}/ctx3`, `${w}.self_attn.o_proj.weight`, `${a}/o_proj`, H, H);
    nodes.push(node('Add', [h, oOut], [`${p}/Add_output_0`], `${p}/Add`));
    h = `${p}/Add_output_0`;
    const n2 = rmsNorm(h, ones(`${w}.post_attention_layernorm.weight`, H), `${p}/post_attention_layernorm`);
    const g = linear(n2, `${w}.mlp.gate_proj.weight`, `${p}/mlp/gate_proj`, H, I);
    const u = linear(n2, `${w}.mlp.up_proj.weight`, `${p}/mlp/up_proj`, H, I);
    nodes.push(node('Sigmoid', [g], [`${p}/mlp/act_fn/Sigmoid_output_0`], `${p}/mlp/act_fn/Sigmoid`));
    nodes.push(node('Mul', [g, `${p}/mlp/act_fn/Sigmoid_output_0`], [`${p}/mlp/act_fn/Mul_output_0`], `${p}/mlp/act_fn/Mul`));
    nodes.push(node('Mul', [`${p}/mlp/act_fn/Mul_output_0`, u], [`${p}/mlp/Mul_output_0`], `${p}/mlp/Mul`));
    const d = linear(`${p}/mlp/Mul_output_0`, `${w}.mlp.down_proj.weight`, `${p}/mlp/down_proj`, I, H);
    nodes.push(node('Add', [h, d], [`${p}/Add_1_output_0`], `${p}/Add_1`));
    h = `${p}/Add_1_output_0`;
  }
  const nf = rmsNorm(h, ones('model.norm.weight', H), '/model/norm');
  const lw = weight('lm_head.weight', H, V, 1 / Math.sqrt(H));
  nodes.push(node('MatMul', [nf, lw], ['logits'], '/lm_head/MatMul'));

  return model({
    name: 'main_graph',
    node: nodes,
    initializer: inits,
    input: [
      valueInfo('input_ids', DataType.INT64, ['batch_size', 'sequence_length']),
      valueInfo('attention_mask', DataType.INT64, ['batch_size', 'sequence_length']),
      valueInfo('position_ids', DataType.INT64, ['batch_size', 'sequence_length']),
    ],
    output: [valueInfo('logits', DataType.FLOAT, ['batch_size', 'sequence_length', V])],
  });
}

/** Feeds for a [batch, seq] window: token ids, a mask with `pad` padded positions at the end of row 1. */
export function llamaFeeds(batch: number, seq: number, vocab: number, pad = 0, seed = 7) {
  const rand = rng(seed);
  const ids = new BigInt64Array(batch * seq);
  const mask = new BigInt64Array(batch * seq);
  const pos = new BigInt64Array(batch * seq);
  for (let b = 0; b < batch; b++) {
    for (let s = 0; s < seq; s++) {
      ids[b * seq + s] = BigInt(Math.floor(rand() * vocab));
      mask[b * seq + s] = b === batch - 1 && s >= seq - pad ? 0n : 1n;
      pos[b * seq + s] = BigInt(s);
    }
  }
  return { ids, mask, pos };
}
