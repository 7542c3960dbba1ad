// onnxruntime rejects some graphs only when a session is created (unknown ops, opsets newer than
// the runtime, type or shape mismatches, unreadable external data). The runtime layer catches that
// error and hands it here; this layer owns the wording so every caller reports it the same way.
// No onnxruntime import: the error arrives as a value.
import { ModelFormatError } from './errors';

const HINTS: Array<[RegExp, string]> = [
  [/opset|ai\.onnx.*version|is under development|Unsupported model IR version/i, 're-export the model with an older opset (torch.onnx.export(..., opset_version=17)) or update OBR Studio'],
  [/Could not find an implementation|NOT_IMPLEMENTED|No Op registered/i, 'the model uses an operator this onnxruntime build lacks; re-export it with standard ONNX ops'],
  [/external data|external_data|\.data/i, 'keep the external data file next to the .onnx file with its original name'],
  [/Type Error|type mismatch|ShapeInferenceError|Invalid rank|dimension mismatch/i, 'the graph is inconsistent (types or shapes); run onnx.checker.check_model on it and re-export'],
  [/protobuf parsing failed|Load model .* failed|INVALID_PROTOBUF/i, 'the file is not a complete ONNX model; export or copy it again'],
];

/** Wraps an onnxruntime session-creation error as ModelFormatError('runtime-rejected') with a fix. */
export function runtimeRejectedError(error: unknown, modelLabel = 'the model'): ModelFormatError {
  const raw = error instanceof Error ? error.message : String(error);
  const message = raw.replace(/\s+/g, ' ').trim();
  const hint = HINTS.find(([re]) => re.test(message))?.[1] ?? 'check that the model runs in onnxruntime (python -c "import onnxruntime as o; o.InferenceSession(PATH)") and re-export it';
  return new ModelFormatError('runtime-rejected', `onnxruntime can't load ${modelLabel}: ${message}; ${hint}`, { cause: error });
}
