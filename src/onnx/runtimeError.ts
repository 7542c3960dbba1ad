// onnxruntime rejects some graphs only when a session is created (unknown ops, opsets newer than
// the runtime, type or shape mismatches, unreadable external data). The runtime layer catches that
// error and hands it here; this layer owns the wording so every caller reports it the same way.
// No onnxruntime import: the error arrives as a value.
import { ModelFormatError } from './errors';

const HINTS: Array<[RegExp, string]> = [
  [/opset|ai\.onnx.*version|is under development|Unsupported model IR version/i, 're-export the model with an older opset (torch.onnx.export(..., opset_version=17)) or update OBR Studio'],
  [/Could not find an implementation|NOT_IMPLEMENTED|No Op registered|not a registered function\/op/i, 're-export it with standard ONNX ops'],
  [/external data|external_data|\.data/i, 'keep the external data file next to the .onnx file with its original name'],
  [/Type Error|type mismatch|ShapeInferenceError|Invalid rank|dimension mismatch/i, 'run onnx.checker.check_model on it and re-export'],
  [/protobuf parsing failed|Load model .* failed|INVALID_PROTOBUF/i, 'export or copy it again'],
];

/** The operator onnxruntime named as unknown (` (NoSuchOp)`), or ''. */
function unknownOp(message: string): string {
  const op = /(?:No Op registered for |implementation for (?:node )?)(\w+)/.exec(message)?.[1] ?? /([\w.]+:\w+)\(-?\d+\) is not a registered/.exec(message)?.[1];
  return op ? ` (${op})` : '';
}

/** What onnxruntime said, on one line. */
function rawText(error: unknown): string {
  const raw = error instanceof Error ? error.message : String(error);
  return raw.replace(/\s+/g, ' ').trim();
}

/**
 * The error's own text stays out of the message (users see the message; the raw text reads like a
 * crash) and goes into the stack, which the extension writes to its output channel and the CLI
 * prints with OBR_DEBUG=1.
 */
function withRawInLog(e: ModelFormatError, raw: string): ModelFormatError {
  e.stack = `${e.name}: ${e.message}\nonnxruntime: ${raw}`;
  return e;
}

/** Wraps an onnxruntime session-creation error as ModelFormatError('runtime-rejected') with a fix. */
export function runtimeRejectedError(error: unknown, modelLabel = 'the model'): ModelFormatError {
  const message = rawText(error);
  const hint = HINTS.find(([re]) => re.test(message))?.[1] ?? 'check that the model runs in onnxruntime (python -c "import onnxruntime as o; o.InferenceSession(PATH)") and re-export it';
  const what = /opset|version/i.test(message)
    ? 'it uses an opset or IR version this onnxruntime does not support'
    : /Could not find an implementation|NOT_IMPLEMENTED|No Op registered|not a registered function\/op/i.test(message)
      ? `it uses an operator this onnxruntime build lacks${unknownOp(message)}`
      : /external data|external_data|\.data/i.test(message)
        ? 'its external data file is missing or unreadable'
        : /Type Error|type mismatch|ShapeInferenceError|Invalid rank|dimension mismatch/i.test(message)
          ? 'its types or shapes are inconsistent'
          : /protobuf parsing failed|INVALID_PROTOBUF/i.test(message)
            ? 'the file is not a complete ONNX model'
            : 'onnxruntime rejected the graph';
  return withRawInLog(new ModelFormatError('runtime-rejected', `onnxruntime can't load ${modelLabel}: ${what}; ${hint}`, { cause: error }), message);
}

/**
 * Wraps an error from a session run (a node failed while computing) as
 * ModelFormatError('runtime-failed'): which node, what went wrong in words, what to do.
 */
export function runtimeFailedError(error: unknown, modelLabel = 'the model'): ModelFormatError {
  const message = rawText(error);
  const node = /Name:\s*'([^']*)'/.exec(message)?.[1];
  const op = /running (\w+) node/.exec(message)?.[1];
  const at = node ? ` at ${op ? `${op} ` : ''}node "${node}"` : '';
  let what: string;
  let hint: string;
  if (/Failed to allocate|bad_alloc|out of memory|OOM/i.test(message)) {
    what = 'ran out of memory';
    hint = 'use a smaller --batch or a shorter --seqlen, or close other programs';
  } else if (/Got invalid dimensions for input|Invalid rank for input/i.test(message)) {
    const fixed = /input: (\S+) for the following indices\s*index: (\d+) Got: (\d+) Expected: (\d+)/.exec(message);
    if (fixed && (fixed[2] === '0' || fixed[2] === '1')) {
      const [, input, axis, got, expected] = fixed;
      what = `was fed ${input} with ${axis === '0' ? 'a batch' : 'a sequence length'} of ${got}, but the model is exported for exactly ${expected}`;
      hint = `pass ${axis === '0' ? '--batch' : '--seqlen'} ${expected}, or re-export the model with dynamic axes`;
    } else {
      what = "was fed inputs of a shape it doesn't accept (it may be exported for a fixed batch or sequence length)";
      hint = 'pass --seqlen (and --batch) matching the exported shapes, or re-export the model with dynamic axes';
    }
  } else if (/indices element out of data bounds|out of range|idx=/i.test(message) && /Gather/i.test(message)) {
    what = 'was fed a token id outside its vocabulary';
    hint = 'use the tokenizer.json that belongs to this model';
  } else if (/dimension mismatch|shape mismatch|Incompatible dimensions|not broadcastable|ShapeInferenceError|Invalid rank/i.test(message)) {
    what = "met operands whose shapes don't fit together";
    hint = node && /hadamard|rotat/i.test(node)
      ? "the rotation OBR Studio inserted doesn't fit this model's attention geometry; pass --heads, --kv-heads and --head-dim, or compress without rotation (--abits 16 --kvbits 16)"
      : 'check the model runs in onnxruntime on its own; if it does, please report this with the log';
  } else {
    what = 'failed while running';
    hint = 'check the model runs in onnxruntime on its own; if it does, please report this with the log';
  }
  return withRawInLog(new ModelFormatError('runtime-failed', `onnxruntime ${what}${at} in ${modelLabel}; ${hint}`, { cause: error }), message);
}
