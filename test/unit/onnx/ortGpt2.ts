// A GPT-2 decoder in the layout onnxruntime.transformers' optimizer writes (as the third-party
// ortgenai-gpt2-fp32 export in ../shared shows): EmbedLayerNormalization (word + position
// embeddings and ln_1 of block 0), fused Attention with a packed [hidden, 3·hidden] q/k/v weight,
// the attention's c_proj MatMul, SkipLayerNormalization carrying the residual sum (output 3),
// c_fc MatMul + FastGelu (bias inside), c_proj MatMul, lm_head. int32 input_ids / position_ids /
// attention_mask, output logits. Not a test file itself.
import { floatTensor, intAttr, model as makeModel, node, valueInfo } from '../../../src/onnx/builder';
import { DataType, type ModelProto, type NodeProto, type TensorProto } from '../../../src/onnx/proto';
import { randomNormal, rng } from './llamaGraph';

export interface OrtGpt2Options {
  vocab: number;
  hidden: number;
  heads: number;
  layers: number;
  positions?: number;
  seed?: number;
  /** Packed KV cache per block: input past_N [2, b, heads, past_seq, head_dim], output present_N. */
  past?: boolean;
}

export function ortGpt2(o: OrtGpt2Options): ModelProto {
  const rand = rng(o.seed ?? 3);
  const H = o.hidden;
  const nodes: NodeProto[] = [];
  const inits: TensorProto[] = [];
  const t = (name: string, dims: number[], values: ArrayLike<number>) => {
    inits.push(floatTensor(name, dims, values));
    return name;
  };
  const ms = (op: string, name: string, inputs: string[], outputs: string[], attrs: ReturnType<typeof intAttr>[] = []) => {
    nodes.push(node(op, inputs, outputs, name, attrs, 'com.microsoft'));
    return outputs[0]!;
  };
  const gauss = (n: number, std: number) => randomNormal(n, std, rand);
  const ln = (p: string) => [t(`${p}.weight`, [H], Array.from({ length: H }, () => 0.8 + 0.4 * rand())), t(`${p}.bias`, [H], gauss(H, 0.02))];
  const eps = { name: 'epsilon', type: 1, f: 1e-5 };

  const [g0, b0] = ln('transformer.h.0.ln_1');
  ms('EmbedLayerNormalization', 'EmbedLayerNormalization_0', [
    'input_ids', '', t('transformer.wte.weight', [o.vocab, H], gauss(o.vocab * H, 0.5)), t('transformer.wpe.weight', [o.positions ?? 256, H], gauss((o.positions ?? 256) * H, 0.1)), '', g0!, b0!, '', 'position_ids',
  ], ['emb_ln', 'mask_index', 'emb_sum'], [eps]);
  let normed = 'emb_ln';
  let residual = 'emb_sum';
  for (let l = 0; l < o.layers; l++) {
    const p = `transformer.h.${l}`;
    const att = ms(
      'Attention',
      `GptAttention_${l}`,
      [normed, t(`${p}.attn.c_attn.weight`, [H, 3 * H], gauss(H * 3 * H, 1 / Math.sqrt(H))), t(`${p}.attn.c_attn.bias`, [3 * H], gauss(3 * H, 0.02)), 'attention_mask', ...(o.past ? [`past_${l}`] : [])],
      [`GptAttention_${l}_output`, ...(o.past ? [`present_${l}`] : [])],
      [intAttr('num_heads', o.heads), intAttr('unidirectional', 1)],
    );
    nodes.push(node('MatMul', [att, t(`${p}.attn.c_proj.weight`, [H, H], gauss(H * H, 1 / Math.sqrt(H)))], [`GptAttention_${l}_matmul_output`], `GptAttention_${l}_matmul`));
    const [g2, b2] = ln(`${p}.ln_2`);
    ms('SkipLayerNormalization', `SkipLayerNorm_${2 * l}`, [`GptAttention_${l}_matmul_output`, residual, g2!, b2!, t(`${p}.attn.c_proj.bias`, [H], gauss(H, 0.02))], [`ln2_${l}`, '', '', `res_attn_${l}`], [eps]);
    residual = `res_attn_${l}`;
    nodes.push(node('MatMul', [`ln2_${l}`, t(`${p}.mlp.c_fc.weight`, [H, 4 * H], gauss(H * 4 * H, 1 / Math.sqrt(H)))], [`fc_${l}`], `FullyConnect_MatMul_${2 * l}`));
    ms('FastGelu', `FastGelu_${l}`, [`fc_${l}`, t(`${p}.mlp.c_fc.bias`, [4 * H], gauss(4 * H, 0.02))], [`gelu_${l}`]);
    nodes.push(node('MatMul', [`gelu_${l}`, t(`${p}.mlp.c_proj.weight`, [4 * H, H], gauss(4 * H * H, 1 / Math.sqrt(4 * H)))], [`proj_${l}`], `FullyConnect_MatMul_${2 * l + 1}`));
    const [gn, bn] = ln(l + 1 < o.layers ? `transformer.h.${l + 1}.ln_1` : 'transformer.ln_f');
    ms('SkipLayerNormalization', `SkipLayerNorm_${2 * l + 1}`, [`proj_${l}`, residual, gn!, bn!, t(`${p}.mlp.c_proj.bias`, [H], gauss(H, 0.02))], [`ln1_${l + 1}`, '', '', `res_mlp_${l}`], [eps]);
    normed = `ln1_${l + 1}`;
    residual = `res_mlp_${l}`;
  }
  nodes.push(node('MatMul', [normed, t('lm_head.weight', [H, o.vocab], gauss(H * o.vocab, 1 / Math.sqrt(H)))], ['logits'], '/lm_head/MatMul'));
  return makeModel(
    {
      name: 'ort-gpt2',
      node: nodes,
      initializer: inits,
      input: [
        valueInfo('input_ids', DataType.INT32, ['batch_size', 'seq_len']),
        valueInfo('position_ids', DataType.INT32, ['batch_size', 'seq_len']),
        valueInfo('attention_mask', DataType.INT32, ['batch_size', 'total_seq_len']),
        ...(o.past ? Array.from({ length: o.layers }, (_, l) => valueInfo(`past_${l}`, DataType.FLOAT, [2, 'batch_size', o.heads, 'past_seq_len', H / o.heads])) : []),
      ],
      output: [
        valueInfo('logits', DataType.FLOAT, ['batch_size', 'seq_len', o.vocab]),
        ...(o.past ? Array.from({ length: o.layers }, (_, l) => valueInfo(`present_${l}`, DataType.FLOAT, [2, 'batch_size', o.heads, 'total_seq_len', H / o.heads])) : []),
      ],
    },
    11,
    [{ domain: 'com.microsoft', version: 1 }],
  );
}
