// Writes a LLaMA-shaped ONNX model whose weights live in external data (`model.onnx.data` beside
// `model.onnx`), for the benchmarks that need big models (onnxLarge.ts, scale.ts). The weight
// values are small finite numbers from a multiplicative hash, one 16 MiB chunk written over and
// over: they don't matter for time and memory, and the file is written without ever holding a
// whole tensor in memory.
//
// Two graphs:
// - the default (no `kvHeads`, `weightType` or `positions` given): the test graph of
//   test/unit/onnx/llamaGraph.ts with float32 projection weights external (embedding inline, a
//   64-position table) — what onnxLarge.ts measures;
// - the real-shape decoder (any of those options given; `scaleLlama` below), in the
//   torch.onnx.export layout of a LLaMA checkpoint such as TinyLlama-1.1B: inputs input_ids /
//   attention_mask / position_ids [batch, seq] (dynamic), every weight — embedding and lm_head
//   included — external, stored as float16 (or float32) and Cast to float32 before use,
//   decomposed RMSNorm, q/k/v → Reshape → Transpose(0,2,1,3), rotate_half RoPE from cos/sin tables
//   of `positions` rows gathered by position_ids, grouped-query attention (k/v with `kvHeads`
//   heads repeated by Unsqueeze/Expand/Reshape), causal + padding mask, SwiGLU MLP, untied lm_head.
import { open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { buildLlamaGraph } from '../../test/unit/onnx/llamaGraph';
import { floatTensor, int64Tensor, intAttr, intsAttr, model as makeModel, node, valueInfo } from '../../src/onnx/builder';
import { DataType, encodeModel, type ModelProto, type NodeProto, type TensorProto } from '../../src/onnx/proto';
import { floatToHalf } from '../../src/onnx/tensor';

export interface LargeLlamaShape {
  layers: number;
  hidden: number;
  heads: number;
  intermediate: number;
  vocab: number;
  /** Key/value heads (grouped-query attention); default `heads`. */
  kvHeads?: number;
  /** Stored weight type (default float32). */
  weightType?: 'float32' | 'float16';
  /** Rows of the RoPE tables = the longest sequence the model takes (default 64 on the test graph). */
  positions?: number;
}

type WeightTensor = (name: string, dims: number[]) => TensorProto;

/** Weight bytes of the real-shape decoder (`scaleLlama`): embedding, 7 projections per block, lm_head. */
export function scaleLlamaWeightBytes(shape: LargeLlamaShape): number {
  const { layers, hidden, heads, intermediate, vocab } = shape;
  const kv = ((shape.kvHeads ?? heads) * hidden) / heads;
  const perBlock = 2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * intermediate;
  return (2 * vocab * hidden + layers * perBlock) * ((shape.weightType ?? 'float32') === 'float16' ? 2 : 4);
}

/** TinyLlama-1.1B's shape (config.json of TinyLlama/TinyLlama-1.1B-Chat-v1.0), fp16. */
export const TINYLLAMA: LargeLlamaShape = { layers: 22, hidden: 2048, heads: 32, kvHeads: 4, intermediate: 5632, vocab: 32000, weightType: 'float16', positions: 2048 };

/**
 * The real-shape LLaMA decoder: every weight made by `weightTensor` (stored [in, out], MatMul
 * convention; embedding [vocab, hidden]) and Cast to float32 when stored as float16.
 */
export function scaleLlama(shape: LargeLlamaShape, weightTensor: WeightTensor): ModelProto {
  const { layers, hidden, heads, intermediate, vocab } = shape;
  const kvHeads = shape.kvHeads ?? heads;
  const positions = shape.positions ?? 2048;
  const half = (shape.weightType ?? 'float32') === 'float16';
  if (hidden % heads !== 0 || heads % kvHeads !== 0) throw new Error(`hidden ${hidden} / heads ${heads} / kv heads ${kvHeads} don't divide`);
  const headDim = hidden / heads;
  const nodes: NodeProto[] = [];
  const inits: TensorProto[] = [];
  let counter = 0;
  const op = (type: string, inputs: string[], name: string, attrs: ReturnType<typeof intAttr>[] = []): string => {
    const out = `${name}_output_${counter++}`;
    nodes.push(node(type, inputs, [out], name, attrs));
    return out;
  };
  const init = (name: string, dims: number[], data: ArrayLike<number>): string => {
    inits.push(floatTensor(name, dims, data));
    return name;
  };
  const ints = (name: string, data: number[]): string => {
    inits.push(int64Tensor(name, [data.length], data));
    return name;
  };
  /** A stored weight, as float32 (through a Cast when stored as float16). */
  const weight = (name: string, dims: number[]): string => {
    inits.push(weightTensor(name, dims));
    return half ? op('Cast', [name], `${name}/Cast`, [intAttr('to', DataType.FLOAT)]) : name;
  };
  init('two', [], [2]);
  init('eps', [], [1e-5]);
  init('one', [], [1]);
  init('neg_big', [], [-1e9]);
  init('attn_scale', [], [1 / Math.sqrt(headDim)]);
  ints('half.start', [0]);
  ints('half.mid', [headDim / 2]);
  ints('half.end', [headDim]);
  ints('last.axis', [-1]);
  ints('axis.1', [1]);
  ints('axis.2', [2]);
  ints('axes.12', [1, 2]);
  ints('index.1', [1]);

  const rmsNorm = (x: string, prefix: string, w: string): string => {
    const mean = op('ReduceMean', [op('Pow', [x, 'two'], `${prefix}/Pow`)], `${prefix}/ReduceMean`, [intsAttr('axes', [-1]), intAttr('keepdims', 1)]);
    const sq = op('Sqrt', [op('Add', [mean, 'eps'], `${prefix}/Add`)], `${prefix}/Sqrt`);
    return op('Mul', [op('Div', [x, sq], `${prefix}/Div`), init(w, [hidden], new Float32Array(hidden).fill(1))], `${prefix}/Mul`);
  };
  const linear = (x: string, name: string, w: string, inF: number, outF: number): string => op('MatMul', [x, weight(w, [inF, outF])], name);

  // RoPE tables [positions, headDim] (rotate_half layout: the two halves share frequencies),
  // gathered by position_ids → [batch, 1, seq, headDim].
  const cos = new Float32Array(positions * headDim);
  const sin = new Float32Array(positions * headDim);
  for (let p = 0; p < positions; p++) {
    for (let i = 0; i < headDim; i++) {
      const f = p / 10000 ** ((2 * (i % (headDim / 2))) / headDim);
      cos[p * headDim + i] = Math.cos(f);
      sin[p * headDim + i] = Math.sin(f);
    }
  }
  const cosBs = op('Unsqueeze', [op('Gather', [init('rope.cos', [positions, headDim], cos), 'position_ids'], '/model/rotary/Gather'), 'axis.1'], '/model/rotary/Unsqueeze');
  const sinBs = op('Unsqueeze', [op('Gather', [init('rope.sin', [positions, headDim], sin), 'position_ids'], '/model/rotary/Gather_1'), 'axis.1'], '/model/rotary/Unsqueeze_1');
  // Mask [batch, 1, seq, seq]: −1e9 above the diagonal (causal) and on padded keys.
  const seq = op('Gather', [op('Shape', ['input_ids'], '/model/mask/Shape'), 'index.1'], '/model/mask/Gather');
  const square = op('Concat', [seq, seq], '/model/mask/Concat', [intAttr('axis', 0)]);
  const ones = op('ConstantOfShape', [square], '/model/mask/ConstantOfShape', [{ name: 'value', type: 4, t: floatTensor('value', [1], [1]) }]);
  const lower = op('Trilu', [ones], '/model/mask/Trilu', [intAttr('upper', 0)]);
  const causal = op('Mul', [op('Sub', ['one', lower], '/model/mask/Sub'), 'neg_big'], '/model/mask/Mul');
  const keep = op('Cast', ['attention_mask'], '/model/mask/Cast', [intAttr('to', DataType.FLOAT)]);
  const padding = op('Unsqueeze', [op('Mul', [op('Sub', ['one', keep], '/model/mask/Sub_1'), 'neg_big'], '/model/mask/Mul_1'), 'axes.12'], '/model/mask/Unsqueeze');
  const mask = op('Add', [causal, padding], '/model/mask/Add');

  const rope = (x: string, prefix: string): string => {
    const lo = op('Slice', [x, 'half.start', 'half.mid', 'last.axis'], `${prefix}/Slice`);
    const hi = op('Slice', [x, 'half.mid', 'half.end', 'last.axis'], `${prefix}/Slice_1`);
    const rot = op('Concat', [op('Neg', [hi], `${prefix}/Neg`), lo], `${prefix}/Concat`, [intAttr('axis', -1)]);
    return op('Add', [op('Mul', [x, cosBs], `${prefix}/Mul`), op('Mul', [rot, sinBs], `${prefix}/Mul_1`)], `${prefix}/Add`);
  };
  const toHeads = (x: string, n: number, prefix: string): string =>
    op('Transpose', [op('Reshape', [x, ints(`${prefix}.shape`, [0, 0, n, headDim])], `${prefix}/Reshape`)], `${prefix}/Transpose`, [intsAttr('perm', [0, 2, 1, 3])]);
  /** [b, kvHeads, s, d] → [b, heads, s, d]: each kv head serves heads / kvHeads query heads. */
  const repeatKv = (x: string, prefix: string): string => {
    if (kvHeads === heads) return x;
    const e = op('Expand', [op('Unsqueeze', [x, 'axis.2'], `${prefix}/Unsqueeze`), ints(`${prefix}.expand`, [1, 1, heads / kvHeads, 1, 1])], `${prefix}/Expand`);
    return op('Reshape', [e, ints(`${prefix}.merge`, [0, heads, -1, headDim])], `${prefix}/Reshape`);
  };

  inits.push(weightTensor('model.embed_tokens.weight', [vocab, hidden]));
  let x = op('Gather', ['model.embed_tokens.weight', 'input_ids'], '/model/embed_tokens/Gather');
  if (half) x = op('Cast', [x], '/model/embed_tokens/Cast', [intAttr('to', DataType.FLOAT)]);
  for (let l = 0; l < layers; l++) {
    const p = `/model/layers.${l}`;
    const w = `model.layers.${l}`;
    const h = rmsNorm(x, `${p}/input_layernorm`, `${w}.input_layernorm.weight`);
    const q = toHeads(linear(h, `${p}/self_attn/q_proj/MatMul`, `${w}.self_attn.q_proj.weight`, hidden, hidden), heads, `${p}/self_attn/q`);
    const k = toHeads(linear(h, `${p}/self_attn/k_proj/MatMul`, `${w}.self_attn.k_proj.weight`, hidden, kvHeads * headDim), kvHeads, `${p}/self_attn/k`);
    const v = toHeads(linear(h, `${p}/self_attn/v_proj/MatMul`, `${w}.self_attn.v_proj.weight`, hidden, kvHeads * headDim), kvHeads, `${p}/self_attn/v`);
    const qr = rope(q, `${p}/self_attn/rope_q`);
    const kr = repeatKv(rope(k, `${p}/self_attn/rope_k`), `${p}/self_attn/rep_k`);
    const kt = op('Transpose', [kr], `${p}/self_attn/Transpose_k`, [intsAttr('perm', [0, 1, 3, 2])]);
    const scores = op('Mul', [op('MatMul', [qr, kt], `${p}/self_attn/MatMul`), 'attn_scale'], `${p}/self_attn/Mul_scale`);
    const probs = op('Softmax', [op('Add', [scores, mask], `${p}/self_attn/Add_mask`)], `${p}/self_attn/Softmax`, [intAttr('axis', -1)]);
    const ctx = op('MatMul', [probs, repeatKv(v, `${p}/self_attn/rep_v`)], `${p}/self_attn/MatMul_1`);
    const merged = op('Reshape', [op('Transpose', [ctx], `${p}/self_attn/Transpose_ctx`, [intsAttr('perm', [0, 2, 1, 3])]), ints(`${p}.ctx.shape`, [0, 0, hidden])], `${p}/self_attn/Reshape_ctx`);
    x = op('Add', [x, linear(merged, `${p}/self_attn/o_proj/MatMul`, `${w}.self_attn.o_proj.weight`, hidden, hidden)], `${p}/Add`);
    const h2 = rmsNorm(x, `${p}/post_attention_layernorm`, `${w}.post_attention_layernorm.weight`);
    const gate = linear(h2, `${p}/mlp/gate_proj/MatMul`, `${w}.mlp.gate_proj.weight`, hidden, intermediate);
    const act = op('Mul', [gate, op('Sigmoid', [gate], `${p}/mlp/act_fn/Sigmoid`)], `${p}/mlp/act_fn/Mul`);
    const up = linear(h2, `${p}/mlp/up_proj/MatMul`, `${w}.mlp.up_proj.weight`, hidden, intermediate);
    const down = linear(op('Mul', [act, up], `${p}/mlp/Mul`), `${p}/mlp/down_proj/MatMul`, `${w}.mlp.down_proj.weight`, intermediate, hidden);
    x = op('Add', [x, down], `${p}/Add_1`);
  }
  const hf = rmsNorm(x, '/model/norm', 'model.norm.weight');
  const logits = linear(hf, '/lm_head/MatMul', 'lm_head.weight', hidden, vocab);
  nodes.push(node('Identity', [logits], ['logits'], '/logits/Identity'));
  return makeModel({
    name: 'main_graph',
    node: nodes,
    initializer: inits,
    input: [
      valueInfo('input_ids', DataType.INT64, ['batch_size', 'sequence_length']),
      valueInfo('attention_mask', DataType.INT64, ['batch_size', 'sequence_length']),
      valueInfo('position_ids', DataType.INT64, ['batch_size', 'sequence_length']),
    ],
    output: [valueInfo('logits', DataType.FLOAT, ['batch_size', 'sequence_length', vocab])],
  });
}

/** Writes `dir/model.onnx` + `dir/model.onnx.data`; returns the external weight bytes and the graph bytes. */
export async function writeLargeLlama(dir: string, shape: LargeLlamaShape): Promise<{ weightBytes: number; onnxBytes: number }> {
  const real = shape.kvHeads !== undefined || shape.weightType !== undefined || shape.positions !== undefined;
  const half = real && shape.weightType === 'float16';
  const elementBytes = half ? 2 : 4;
  const data = await open(join(dir, 'model.onnx.data'), 'w');
  let offset = 0;
  const pending: Array<{ offset: number; bytes: number }> = [];
  const weightTensor: WeightTensor = (name, dims) => {
    const bytes = dims.reduce((a, b) => a * b, 1) * elementBytes;
    pending.push({ offset, bytes });
    const t: TensorProto = {
      name,
      dims,
      dataType: half ? DataType.FLOAT16 : DataType.FLOAT,
      dataLocation: 1,
      externalData: [
        { key: 'location', value: 'model.onnx.data' },
        { key: 'offset', value: String(offset) },
        { key: 'length', value: String(bytes) },
      ],
    };
    offset += bytes;
    return t;
  };
  const model = real ? scaleLlama(shape, weightTensor) : buildLlamaGraph({ ...shape, weightTensor });
  // 16 MiB of values in ±0.02 (a typical trained projection's range), repeated.
  const values = 4 * 1024 * 1024;
  const at = (i: number) => (((i * 2654435761) >>> 0) / 2 ** 32 - 0.5) * 0.04;
  let chunkBytes: Uint8Array;
  if (half) {
    const chunk = new Uint16Array(2 * values);
    for (let i = 0; i < chunk.length; i++) chunk[i] = floatToHalf(at(i));
    chunkBytes = new Uint8Array(chunk.buffer);
  } else {
    const chunk = new Float32Array(values);
    for (let i = 0; i < chunk.length; i++) chunk[i] = at(i);
    chunkBytes = new Uint8Array(chunk.buffer);
  }
  try {
    for (const p of pending) {
      for (let done = 0; done < p.bytes; ) {
        const n = Math.min(chunkBytes.length, p.bytes - done);
        await data.write(chunkBytes, 0, n, p.offset + done);
        done += n;
      }
    }
  } finally {
    await data.close();
  }
  const proto = encodeModel(model);
  await writeFile(join(dir, 'model.onnx'), proto);
  return { weightBytes: offset, onnxBytes: proto.length };
}
