// Models whose weights are already quantized: MatMulNBits / GatherBlockQuantized (onnxruntime's
// block-quantized ops, what our own packed export and onnxruntime-genai's int4 builder write),
// QDQ weights (DequantizeLinear of a constant integer initializer), and the integer MatMul ops.
// OBR starts from float weights: compressing quantization error again only adds error, so such a
// model is refused with a pointer to its float export.
import type { ModelProto } from './proto';
import { ModelFormatError } from './errors';
import { indexGraph } from './graph';

/** Integer element types a QDQ weight is stored in (int8, uint8, int4, uint4, int16, uint16). */
const INTEGER_TYPES = new Set([2, 3, 4, 5, 21, 22]);
const QUANTIZED_OPS = ['MatMulNBits', 'GatherBlockQuantized', 'MatMulInteger', 'QLinearMatMul', 'DynamicQuantizeMatMul', 'MatMulIntegerToFloat', 'MatMulBnb4', 'MatMulFpQ4'];

/** Counts of quantized-weight ops in the main graph, by op ("DequantizeLinear" = QDQ weights). */
export function quantizedWeightOps(model: ModelProto): Map<string, number> {
  const counts = new Map<string, number>();
  const graph = model.graph;
  if (!graph) return counts;
  const idx = indexGraph(graph);
  for (const n of graph.node ?? []) {
    const op = n.opType ?? '';
    let quantized = QUANTIZED_OPS.includes(op);
    if (op === 'DequantizeLinear') {
      const src = n.input?.[0] ?? '';
      const t = idx.initializers.get(src) ?? idx.constants.get(src);
      // Activations are quantized at run time; a constant integer input is a stored weight.
      quantized = !!t && INTEGER_TYPES.has(t.dataType ?? 0) && (t.dims ?? []).length >= 2;
    }
    if (quantized) counts.set(op, (counts.get(op) ?? 0) + 1);
  }
  return counts;
}

/** Throws ModelFormatError('already-quantized') when the model holds quantized weights. */
export function refuseQuantized(model: ModelProto): void {
  const counts = quantizedWeightOps(model);
  if (counts.size === 0) return;
  const parts = [...counts].map(([op, n]) => (op === 'DequantizeLinear' ? `${n} DequantizeLinear weight${n === 1 ? '' : 's'}` : `${n} ${op} node${n === 1 ? '' : 's'}`));
  throw new ModelFormatError('already-quantized', `this model is already quantized (${parts.join(', ')}); compress its fp16/fp32 export`);
}
