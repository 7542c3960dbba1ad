// Hessian capture: extra graph outputs with the Gram matrix XᵀX [n, n] and the per-channel sum of
// squares Σ x² [n] of chosen linear-layer inputs X [..., n], summed in-graph over batch and
// sequence with padding rows zeroed by attention_mask, plus the number of counted tokens. The
// layer-wise objective ‖W X − Ŵ X‖² has Hessian 2·XᵀX (OBS/OBC, GPTQ §2; OBR eq. 1), so
// calibration reads n×n sums per batch instead of copying activations into JavaScript.
import { DataType, type ModelProto } from './proto';
import { ModelWriteInputError } from './errors';
import { GraphEditor, SLICE_TO_END } from './edit';
import { pruneUnused, setMetadata } from './graph';
import { layerComputeType } from './linear';
import type { LinearLayer } from './types';

export interface HessianCaptureOptions {
  /** Capture only these layer inputs (LinearLayer.inputName), e.g. one block's; default: all. */
  inputs?: readonly string[];
  /** Graph input with the padding mask [batch, total_seq] (default 'attention_mask' when present; null: count every row). */
  maskInput?: string | null;
  /** Graph input whose axis 1 is the current sequence length (default 'input_ids'); selects the last S mask columns when a KV cache makes the mask longer. */
  idsInput?: string;
  /**
   * Keep the model's own outputs (logits, present.*). Default false: they are removed and nodes no
   * capture needs are pruned, so capturing block b runs only blocks 0..b.
   */
  keepOutputs?: boolean;
}

export interface HessianOutputs {
  inputName: string;
  inFeatures: number;
  /** Layers (LinearLayer.name) reading this input: they share the Hessian. */
  layers: string[];
  /** Output name of XᵀX, float32 [n, n]. */
  xtx: string;
  /** Output name of Σ x² per channel, float32 [n]. */
  sumSquares: string;
}

export interface HessianCapture {
  model: ModelProto;
  captures: HessianOutputs[];
  byInput: Map<string, HessianOutputs>;
  /** Output name of the number of counted (unpadded) tokens, float32 scalar. */
  tokenCount: string;
}

export function addHessianCapture(model: ModelProto, layers: readonly LinearLayer[], options: HessianCaptureOptions = {}): HessianCapture {
  const wanted = options.inputs ? new Set(options.inputs) : undefined;
  const groups = new Map<string, { n: number; layers: LinearLayer[] }>();
  for (const l of layers) {
    if (wanted && !wanted.has(l.inputName)) continue;
    const g = groups.get(l.inputName);
    if (g) g.layers.push(l);
    else groups.set(l.inputName, { n: l.inFeatures, layers: [l] });
  }
  if (wanted) {
    for (const name of wanted) {
      if (!groups.has(name)) {
        throw new ModelWriteInputError('bad-option', `addHessianCapture: no linear layer reads "${name}"; pass inputName values of layers from findLinearLayers`);
      }
    }
  }
  if (groups.size === 0) throw new ModelWriteInputError('bad-option', 'addHessianCapture: no layers to capture');

  const ed = new GraphEditor(model, 'obr_hessian');
  const graph = ed.model.graph!;
  const inputNames = new Set((graph.input ?? []).map((v) => v.name ?? ''));
  if (!options.keepOutputs) graph.output = [];
  const maskName = options.maskInput === undefined ? (inputNames.has('attention_mask') ? 'attention_mask' : null) : options.maskInput;
  if (maskName && !inputNames.has(maskName)) {
    throw new ModelWriteInputError('bad-option', `addHessianCapture: the model has no input "${maskName}" for the padding mask; pass maskInput: null to count every token`);
  }
  const idsName = options.idsInput ?? 'input_ids';

  // Mask column [rows, 1] in the row order of Reshape(X, [-1, n]) (batch-major, then sequence).
  let maskCol: string | undefined;
  if (maskName) {
    let mask = ed.cast(maskName, DataType.FLOAT);
    if (inputNames.has(idsName)) {
      // With a KV cache the mask spans past + current tokens; X only holds the last S.
      const shape = ed.one('Shape', [idsName]);
      const seq = ed.slice(shape, [1], [2], [0]);
      mask = ed.slice(mask, ed.one('Neg', [seq]), [SLICE_TO_END], [1]);
    }
    maskCol = ed.one('Reshape', [mask, ed.int64('shape', [-1, 1])]);
  }

  const captures: HessianOutputs[] = [];
  let firstRows: string | undefined;
  let i = 0;
  for (const [inputName, g] of groups) {
    const computeType = layerComputeType(model, g.layers[0]);
    const x = computeType === DataType.FLOAT ? inputName : ed.cast(inputName, DataType.FLOAT);
    const rows = ed.one('Reshape', [x, ed.int64('shape', [-1, g.n])]);
    firstRows ??= rows;
    const xm = maskCol ? ed.one('Mul', [rows, maskCol]) : rows; // mask ∈ {0,1}: (m·x)ᵀ(m·x) = Σ m·xxᵀ
    const xt = ed.one('Transpose', [xm], [{ name: 'perm', type: 7, ints: [1, 0] }]);
    const xtx = ed.fresh(`${i}/xtx`);
    ed.op('MatMul', [xt, xm], [xtx]);
    const sq = ed.one('Mul', [xm, xm]);
    const sumSquares = ed.fresh(`${i}/sum_squares`);
    ed.op('ReduceSum', ed.opset >= 13 ? [sq, ed.int64('axes', [0])] : [sq], [sumSquares], [
      { name: 'keepdims', type: 2, i: 0 },
      ...(ed.opset >= 13 ? [] : [{ name: 'axes', type: 7, ints: [0] }]),
    ]);
    ed.output(xtx, DataType.FLOAT, [g.n, g.n]);
    ed.output(sumSquares, DataType.FLOAT, [g.n]);
    captures.push({ inputName, inFeatures: g.n, layers: g.layers.map((l) => l.name), xtx, sumSquares });
    i++;
  }
  const tokenCount = ed.fresh('token_count');
  if (maskCol) {
    ed.op('ReduceSum', [maskCol], [tokenCount], [{ name: 'keepdims', type: 2, i: 0 }]);
  } else {
    const rowsShape = ed.one('Shape', [firstRows!]);
    const rowCount = ed.one('Gather', [rowsShape, ed.int64('index', [0], [])]);
    ed.op('Cast', [rowCount], [tokenCount], [{ name: 'to', type: 2, i: DataType.FLOAT }]);
  }
  ed.output(tokenCount, DataType.FLOAT, []);
  const out = ed.finish();
  setMetadata(out, 'obr.transform.hessian_capture', JSON.stringify(captures.map((c) => c.inputName)));
  if (!options.keepOutputs) pruneUnused(out);
  return { model: out, captures, byInput: new Map(captures.map((c) => [c.inputName, c])), tokenCount };
}
