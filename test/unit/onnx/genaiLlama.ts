// A LLaMA decoder in the layout onnxruntime-genai's model builder writes (as the third-party
// ortgenai-llama-fp16 export in ../shared shows): embedding Gather, SimplifiedLayerNormalization,
// SkipSimplifiedLayerNormalization carrying the residual sum (output 3), q/k/v/o/gate/up/down as
// plain MatMuls against [in, out] weights, com.microsoft RotaryEmbedding on [b, s, hidden] and
// MultiHeadAttention (causal) or GroupQueryAttention (GQA), SiLU MLP, fp32 or fp16 end to end.
// Inputs input_ids / attention_mask / position_ids (int64), output logits. Not a test file itself.
import { floatTensor, intAttr, model as makeModel, node, valueInfo } from '../../../src/onnx/builder';
import { DataType, type ModelProto, type NodeProto, type TensorProto } from '../../../src/onnx/proto';
import { encodeFloats } from '../../../src/onnx/tensor';
import { randomNormal, rng } from './llamaGraph';

export interface GenaiLlamaOptions {
  vocab: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  intermediate: number;
  layers: number;
  dtype?: 'float32' | 'float16';
  seed?: number;
  /** Longest position the RoPE caches hold (default 256). */
  maxPositions?: number;
}

export function genaiLlama(o: GenaiLlamaOptions): ModelProto {
  const rand = rng(o.seed ?? 5);
  const dt = o.dtype === 'float16' ? DataType.FLOAT16 : DataType.FLOAT;
  const hidden = o.heads * o.headDim;
  const kvDim = o.kvHeads * o.headDim;
  const gqa = o.kvHeads !== o.heads;
  const nodes: NodeProto[] = [];
  const inits: TensorProto[] = [];
  const tensor = (name: string, dims: number[], values: ArrayLike<number>) => {
    inits.push(dt === DataType.FLOAT ? floatTensor(name, dims, values) : { name, dims, dataType: dt, rawData: encodeFloats(values, dt) });
    return name;
  };
  const ms = (name: string, op: string, inputs: string[], outputs: string[], attrs: ReturnType<typeof intAttr>[] = []) => {
    nodes.push(node(op, inputs, outputs, name, attrs, 'com.microsoft'));
    return outputs[0]!;
  };
  const mm = (x: string, name: string, weight: string, inF: number, outF: number) => {
    tensor(weight, [inF, outF], randomNormal(inF * outF, 1 / Math.sqrt(inF), rand));
    nodes.push(node('MatMul', [x, weight], [`${name}/output_0`], name));
    return `${name}/output_0`;
  };
  const gamma = (name: string) => tensor(name, [hidden], Array.from({ length: hidden }, () => 0.6 + 0.8 * rand()));
  const eps = { name: 'epsilon', type: 1, f: 1e-6 };

  // RoPE caches [maxPositions, headDim/2] (non-interleaved halves).
  const P = o.maxPositions ?? 256;
  const half = o.headDim / 2;
  const cos = new Float32Array(P * half);
  const sin = new Float32Array(P * half);
  for (let p = 0; p < P; p++) {
    for (let i = 0; i < half; i++) {
      const f = p / 10000 ** ((2 * i) / o.headDim);
      cos[p * half + i] = Math.cos(f);
      sin[p * half + i] = Math.sin(f);
    }
  }
  tensor('cos_cache', [P, half], cos);
  tensor('sin_cache', [P, half], sin);
  if (gqa) {
    // GroupQueryAttention wants seqlens_k = total length − 1 (int32 [b]) and the total length (int32 scalar).
    inits.push({ name: 'one_i64', dims: [1], dataType: DataType.INT64, rawData: new Uint8Array(BigInt64Array.of(1n).buffer) });
    nodes.push(node('ReduceSum', ['attention_mask', 'one_i64'], ['mask_len'], '/model/attn_mask/ReduceSum', [intAttr('keepdims', 0)]));
    nodes.push(node('Sub', ['mask_len', 'one_i64'], ['mask_len_1'], '/model/attn_mask/Sub'));
    nodes.push(node('Cast', ['mask_len_1'], ['seqlens_k'], '/model/attn_mask/Cast', [intAttr('to', DataType.INT32)]));
    nodes.push(node('Shape', ['attention_mask'], ['mask_shape'], '/model/attn_mask/Shape'));
    inits.push({ name: 'idx_1', dims: [], dataType: DataType.INT64, rawData: new Uint8Array(BigInt64Array.of(1n).buffer) });
    nodes.push(node('Gather', ['mask_shape', 'idx_1'], ['total_len64'], '/model/attn_mask/Gather', [intAttr('axis', 0)]));
    nodes.push(node('Cast', ['total_len64'], ['total_sequence_length'], '/model/attn_mask/Cast_1', [intAttr('to', DataType.INT32)]));
  }

  tensor('model.embed_tokens.weight', [o.vocab, hidden], randomNormal(o.vocab * hidden, 1, rand));
  nodes.push(node('Gather', ['model.embed_tokens.weight', 'input_ids'], ['/model/embed_tokens/Gather/output_0'], '/model/embed_tokens/Gather'));
  let residual = '/model/embed_tokens/Gather/output_0';
  let pending: string | undefined; // the last block's down_proj output, added by the next Skip norm
  const norm = (name: string, weight: string): string => {
    const p = `/model/${name}`;
    if (!pending) {
      nodes.push(node('SimplifiedLayerNormalization', [residual, gamma(weight)], [`${p}/output_0`], `${p}/LayerNorm`, [intAttr('axis', -1), eps, intAttr('stash_type', 1)]));
      return `${p}/output_0`;
    }
    ms(`${p}/SkipLayerNorm`, 'SkipSimplifiedLayerNormalization', [residual, pending, gamma(weight)], [`${p}/output_0`, '', '', `${p}/output_3`], [eps]);
    residual = `${p}/output_3`;
    pending = undefined;
    return `${p}/output_0`;
  };
  for (let l = 0; l < o.layers; l++) {
    const p = `/model/layers.${l}`;
    const w = `model.layers.${l}`;
    const h = norm(`layers.${l}/input_layernorm`, `${w}.input_layernorm.weight`);
    const q = mm(h, `${p}/attn/q_proj/MatMul`, `${w}.attn.q_proj.MatMul.weight`, hidden, hidden);
    const k = mm(h, `${p}/attn/k_proj/MatMul`, `${w}.attn.k_proj.MatMul.weight`, hidden, kvDim);
    const v = mm(h, `${p}/attn/v_proj/MatMul`, `${w}.attn.v_proj.MatMul.weight`, hidden, kvDim);
    let att: string;
    if (gqa) {
      att = ms(`${p}/attn/GroupQueryAttention`, 'GroupQueryAttention', [q, k, v, '', '', 'seqlens_k', 'total_sequence_length', 'cos_cache', 'sin_cache'], [`${p}/attn/GroupQueryAttention/output_0`], [
        intAttr('num_heads', o.heads),
        intAttr('kv_num_heads', o.kvHeads),
        intAttr('do_rotary', 1),
      ]);
    } else {
      const rope = (x: string, which: string) => ms(`${p}/attn/${which}_rotary/RotaryEmbedding`, 'RotaryEmbedding', [x, 'position_ids', 'cos_cache', 'sin_cache'], [`${p}/attn/${which}_rotary/output_0`], [intAttr('interleaved', 0)]);
      att = ms(`${p}/attn/MultiHeadAttention`, 'MultiHeadAttention', [rope(q, 'q'), rope(k, 'k'), v], [`${p}/attn/MultiHeadAttention/output_0`], [intAttr('num_heads', o.heads), intAttr('unidirectional', 1)]);
    }
    pending = mm(att, `${p}/attn/o_proj/MatMul`, `${w}.attn.o_proj.MatMul.weight`, hidden, hidden);
    const h2 = norm(`layers.${l}/post_attention_layernorm`, `${w}.post_attention_layernorm.weight`);
    const gate = mm(h2, `${p}/mlp/gate_proj/MatMul`, `${w}.mlp.gate_proj.MatMul.weight`, hidden, o.intermediate);
    nodes.push(node('Sigmoid', [gate], [`${p}/mlp/act_fn/Sigmoid/output_0`], `${p}/mlp/act_fn/Sigmoid`));
    nodes.push(node('Mul', [gate, `${p}/mlp/act_fn/Sigmoid/output_0`], [`${p}/mlp/act_fn/Mul/output_0`], `${p}/mlp/act_fn/Mul`));
    const up = mm(h2, `${p}/mlp/up_proj/MatMul`, `${w}.mlp.up_proj.MatMul.weight`, hidden, o.intermediate);
    nodes.push(node('Mul', [`${p}/mlp/act_fn/Mul/output_0`, up], [`${p}/mlp/Mul/output_0`], `${p}/mlp/Mul`));
    pending = mm(`${p}/mlp/Mul/output_0`, `${p}/mlp/down_proj/MatMul`, `${w}.mlp.down_proj.MatMul.weight`, o.intermediate, hidden);
  }
  // Final norm: a Skip norm whose sum output is unused.
  const fp = `/model/layers.${o.layers}/final_norm_layernorm`;
  ms(`${fp}/SkipLayerNorm`, 'SkipSimplifiedLayerNormalization', [residual, pending!, gamma(`model.layers.${o.layers}.final_norm_layernorm.weight`)], [`${fp}/output_0`], [eps]);
  tensor('lm_head.MatMul.weight', [hidden, o.vocab], randomNormal(hidden * o.vocab, 1 / Math.sqrt(hidden), rand));
  nodes.push(node('MatMul', [`${fp}/output_0`, 'lm_head.MatMul.weight'], ['logits'], '/lm_head/MatMul'));
  return makeModel(
    {
      name: 'genai-llama',
      node: nodes,
      initializer: inits,
      input: [
        valueInfo('input_ids', DataType.INT64, ['batch_size', 'sequence_length']),
        valueInfo('attention_mask', DataType.INT64, ['batch_size', 'total_sequence_length']),
        valueInfo('position_ids', DataType.INT64, ['batch_size', 'sequence_length']),
      ],
      output: [valueInfo('logits', dt, ['batch_size', 'sequence_length', o.vocab])],
    },
    14,
    [{ domain: 'com.microsoft', version: 1 }],
  );
}
