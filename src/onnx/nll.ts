// NLL head: an output `token_nll` [batch, seq − 1] with −log p(input_ids[t+1] | ≤ t) per position,
// computed in-graph with LogSoftmax + GatherElements on the shifted input_ids, so perplexity
// evaluation reads batch×seq numbers instead of batch×seq×vocab logits. Positions whose target is
// padding are not masked here: the caller weights them with attention_mask[:, 1:].
import { DataType, type ModelProto } from './proto';
import { ModelFormatError, ModelWriteInputError } from './errors';
import { GraphEditor, SLICE_TO_END } from './edit';
import { findValueInfo, pruneUnused, setMetadata, valueInfoShape } from './graph';

export interface NllHeadOptions {
  /** Logits output [batch, seq, vocab] (default 'logits'). */
  logits?: string;
  /** Token ids input [batch, seq] (default 'input_ids'). */
  inputIds?: string;
  /** Name of the new output (default 'token_nll'). */
  outputName?: string;
  /** Remove the logits output (and, with no other use, nothing vocab-sized leaves the session). */
  dropLogits?: boolean;
}

export function addNllHead(model: ModelProto, options: NllHeadOptions = {}): ModelProto {
  const logitsName = options.logits ?? 'logits';
  const idsName = options.inputIds ?? 'input_ids';
  const outName = options.outputName ?? 'token_nll';
  const graph = model.graph!;
  const logitsInfo = (graph.output ?? []).find((o) => o.name === logitsName);
  if (!logitsInfo) {
    throw new ModelFormatError('no-graph', `addNllHead: the model has no output "${logitsName}"; pass options.logits with the name of its [batch, seq, vocab] output`);
  }
  if (!(graph.input ?? []).some((i) => i.name === idsName)) {
    throw new ModelFormatError('no-graph', `addNllHead: the model has no input "${idsName}"; pass options.inputIds`);
  }
  if ((graph.output ?? []).some((o) => o.name === outName)) {
    throw new ModelWriteInputError('bad-option', `addNllHead: the model already has an output "${outName}"`);
  }
  const ed = new GraphEditor(model, 'obr_nll');
  const elemType = valueInfoShape(findValueInfo(graph, logitsName) ?? logitsInfo)?.elemType ?? DataType.FLOAT;
  // LogSoftmax in float32 even for fp16 logits: log-probabilities of a large vocabulary need it.
  const logits = elemType === DataType.FLOAT ? logitsName : ed.cast(logitsName, DataType.FLOAT);
  const logProbs = ed.one('LogSoftmax', [logits], [{ name: 'axis', type: 2, i: -1 }]);
  const predicting = ed.slice(logProbs, [0], [-1], [1]); // positions 0 … S−2 predict tokens 1 … S−1
  const targets = ed.unsqueeze(ed.slice(idsName, [1], [SLICE_TO_END], [1]), [2]);
  const picked = ed.one('GatherElements', [predicting, targets], [{ name: 'axis', type: 2, i: 2 }]);
  ed.op('Neg', [ed.squeeze(picked, [2])], [outName]);
  ed.output(outName, DataType.FLOAT, ['batch_size', 'sequence_length_minus_1']);
  const out = ed.finish();
  if (options.dropLogits) {
    out.graph!.output = out.graph!.output!.filter((o) => o.name !== logitsName);
    pruneUnused(out);
  }
  setMetadata(out, 'obr.transform.nll_head', outName);
  return out;
}
