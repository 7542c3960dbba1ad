// A GPT-2 decoder in the torch.onnx.export layout, for the LayerNorm → RMSNorm rotation tests:
// word + position embedding Gathers, LayerNormalization (γ and β), a fused c_attn projection split
// into q/k/v (Split), Reshape → Transpose(0,2,1,3) heads, causal softmax attention (a [P, P] mask
// table sliced to the window), c_proj, GELU MLP (c_fc, Erf GELU, c_proj), every projection with a
// bias, final ln_f and lm_head (its own weight, or tied to the word embedding). Two projection layouts: `MatMul` against an [in, out]
// weight + Add(bias) on [b, s, ·] (transformers' Conv1D export), or `Gemm` (transB = 1, [out, in]
// weight, bias as C) between Reshapes to [b·s, ·] and back (torch Linear on 2-D input, as the
// third-party ort-gpt2-past-nohead). int64 input_ids / position_ids, output logits. The residual
// stream gets a few large channels and an offset (non-zero mean), which LayerNorm removes and the
// RMSNorm conversion must reproduce. Not a test file itself.
import { seededUniform } from '../../../src/core/hadamard';
import { floatAttr, floatTensor, int64Tensor, intAttr, intsAttr, model as makeModel, node, valueInfo } from '../../../src/onnx/builder';
import { DataType, type ModelProto, type NodeProto, type TensorProto } from '../../../src/onnx/proto';

export interface TorchGpt2Options {
  vocab: number;
  hidden: number;
  heads: number;
  layers: number;
  /** Position table rows (the longest window); default 64. */
  positions?: number;
  /** Projections as Gemm (transB = 1) between Reshapes instead of MatMul + Add. */
  gemm?: boolean;
  /** lm_head reads the word embedding through a Transpose (HF GPT-2's tied weights), instead of its own [hidden, vocab] weight. */
  tied?: boolean;
  /** MLP width; default 4·hidden. */
  intermediate?: number;
  seed?: number;
}

export function torchGpt2(o: TorchGpt2Options): ModelProto {
  const rand = seededUniform(o.seed ?? 11);
  const gauss = (n: number, std: number) =>
    Float32Array.from({ length: n }, () => std * Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand()));
  const H = o.hidden;
  const d = H / o.heads;
  const F = o.intermediate ?? 4 * H;
  const P = o.positions ?? 64;
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
  const layerNorm = (x: string, prefix: string, w: string) =>
    op(
      'LayerNormalization',
      [x, init(`${w}.weight`, [H], Float32Array.from({ length: H }, () => 0.6 + 0.8 * rand())), init(`${w}.bias`, [H], gauss(H, 0.1))],
      `${prefix}/LayerNormalization`,
      [intAttr('axis', -1), floatAttr('epsilon', 1e-5)],
    );
  ints('gemm.flat', [-1, 0]);
  ints('shape.first2.start', [0]);
  ints('shape.first2.end', [2]);
  const linear = (x: string, prefix: string, w: string, inF: number, outF: number) => {
    const weight = gauss(inF * outF, 1 / Math.sqrt(inF)); // [in, out]
    const bias = init(`${w}.bias`, [outF], gauss(outF, 0.05));
    if (!o.gemm) return op('Add', [op('MatMul', [x, init(`${w}.weight`, [inF, outF], weight)], `${prefix}/MatMul`), bias], `${prefix}/Add`);
    const t = new Float32Array(outF * inF);
    for (let i = 0; i < inF; i++) for (let j = 0; j < outF; j++) t[j * inF + i] = weight[i * outF + j];
    const flatShape = ints(`${prefix}.flat`, [-1, inF]);
    const flat = op('Reshape', [x, flatShape], `${prefix}/Reshape`);
    const y = op('Gemm', [flat, init(`${w}.weight`, [outF, inF], t), bias], `${prefix}/Gemm`, [intAttr('transB', 1)]);
    const lead = op('Slice', [op('Shape', [x], `${prefix}/Shape`), 'shape.first2.start', 'shape.first2.end'], `${prefix}/Slice`);
    const back = op('Concat', [lead, ints(`${prefix}.out`, [outF])], `${prefix}/Concat`, [intAttr('axis', 0)]);
    return op('Reshape', [y, back], `${prefix}/Reshape_1`);
  };

  // Causal mask table [P, P] sliced to [s, s] by the window length.
  const mask = new Float32Array(P * P);
  for (let i = 0; i < P; i++) for (let j = i + 1; j < P; j++) mask[i * P + j] = -1e9;
  init('causal_mask', [P, P], mask);
  init('attn_scale', [], [1 / Math.sqrt(d)]);
  init('half', [], [0.5]);
  init('one', [], [1]);
  init('inv_sqrt2', [], [Math.SQRT1_2]);
  ints('zero2', [0, 0]);
  ints('axes01', [0, 1]);
  ints('seq.start', [1]);
  ints('seq.end', [2]);
  ints('qkv.split', [H, H, H]);
  const seqLen = op('Slice', [op('Shape', ['input_ids'], '/transformer/Shape'), 'seq.start', 'seq.end'], '/transformer/Slice');
  const maskEnds = op('Concat', [seqLen, seqLen], '/transformer/Concat', [intAttr('axis', 0)]);
  const causal = op('Slice', ['causal_mask', 'zero2', maskEnds, 'axes01'], '/transformer/Slice_mask');

  // A residual stream with an offset and outlier channels: LayerNorm's mean subtraction matters.
  const wte = gauss(o.vocab * H, 1);
  for (let t = 0; t < o.vocab; t++) {
    wte[t * H + 1] *= 8;
    for (let i = 0; i < H; i++) wte[t * H + i] += 0.7;
  }
  const wpe = gauss(P * H, 0.3);
  let x = op(
    'Add',
    [op('Gather', [init('transformer.wte.weight', [o.vocab, H], wte), 'input_ids'], '/transformer/wte/Gather'), op('Gather', [init('transformer.wpe.weight', [P, H], wpe), 'position_ids'], '/transformer/wpe/Gather')],
    '/transformer/Add',
  );
  const toHeads = (t: string, prefix: string) =>
    op('Transpose', [op('Reshape', [t, ints(`${prefix}.shape`, [0, 0, o.heads, d])], `${prefix}/Reshape`)], `${prefix}/Transpose`, [intsAttr('perm', [0, 2, 1, 3])]);
  for (let l = 0; l < o.layers; l++) {
    const p = `/transformer/h.${l}`;
    const w = `transformer.h.${l}`;
    const h = layerNorm(x, `${p}/ln_1`, `${w}.ln_1`);
    const qkv = linear(h, `${p}/attn/c_attn`, `${w}.attn.c_attn`, H, 3 * H);
    const split = [`${p}/attn/q`, `${p}/attn/k`, `${p}/attn/v`];
    nodes.push(node('Split', [qkv, 'qkv.split'], split, `${p}/attn/Split`, [intAttr('axis', -1)]));
    const [q, k, v] = split.map((t, i) => toHeads(t, `${p}/attn/${'qkv'[i]}_heads`));
    const kt = op('Transpose', [k!], `${p}/attn/Transpose_k`, [intsAttr('perm', [0, 1, 3, 2])]);
    const scores = op('Mul', [op('MatMul', [q!, kt], `${p}/attn/MatMul`), 'attn_scale'], `${p}/attn/Mul`);
    const probs = op('Softmax', [op('Add', [scores, causal], `${p}/attn/Add_mask`)], `${p}/attn/Softmax`, [intAttr('axis', -1)]);
    const ctx = op('MatMul', [probs, v!], `${p}/attn/MatMul_1`);
    const merged = op('Reshape', [op('Transpose', [ctx], `${p}/attn/Transpose_ctx`, [intsAttr('perm', [0, 2, 1, 3])]), ints(`${p}.ctx.shape`, [0, 0, H])], `${p}/attn/Reshape_ctx`);
    x = op('Add', [x, linear(merged, `${p}/attn/c_proj`, `${w}.attn.c_proj`, H, H)], `${p}/Add`);
    const h2 = layerNorm(x, `${p}/ln_2`, `${w}.ln_2`);
    const fc = linear(h2, `${p}/mlp/c_fc`, `${w}.mlp.c_fc`, H, F);
    const erf = op('Erf', [op('Mul', [fc, 'inv_sqrt2'], `${p}/mlp/Mul`)], `${p}/mlp/Erf`);
    const gelu = op('Mul', [op('Mul', [fc, 'half'], `${p}/mlp/Mul_1`), op('Add', [erf, 'one'], `${p}/mlp/Add`)], `${p}/mlp/Mul_2`);
    x = op('Add', [x, linear(gelu, `${p}/mlp/c_proj`, `${w}.mlp.c_proj`, F, H)], `${p}/Add_1`);
  }
  const hf = layerNorm(x, '/transformer/ln_f', 'transformer.ln_f');
  const head = o.tied ? op('Transpose', ['transformer.wte.weight'], '/lm_head/Transpose', [intsAttr('perm', [1, 0])]) : init('lm_head.weight', [H, o.vocab], gauss(H * o.vocab, 1 / Math.sqrt(H)));
  const logits = op('MatMul', [hf, head], '/lm_head/MatMul');
  nodes.push(node('Identity', [logits], ['logits'], '/logits/Identity'));
  return makeModel(
    {
      name: o.gemm ? 'torch-gpt2-gemm' : 'torch-gpt2',
      node: nodes,
      initializer: inits,
      input: [valueInfo('input_ids', DataType.INT64, ['batch_size', 'sequence_length']), valueInfo('position_ids', DataType.INT64, ['batch_size', 'sequence_length'])],
      output: [valueInfo('logits', DataType.FLOAT, ['batch_size', 'sequence_length', o.vocab])],
    },
    17,
  );
}
