// Typed errors of the ONNX layer. Every message names the problem and what the user can do about
// it; `code` lets callers (CLI, extension, tests) branch without parsing text. The class names end
// in `FormatError` / `InputError` so the CLI prints them without a stack trace (exit code 2).

export type ModelFormatErrorCode =
  | 'empty-file'
  | 'truncated'
  | 'not-onnx'
  | 'no-graph'
  | 'external-data-missing'
  | 'external-data-short'
  | 'external-data-invalid'
  | 'no-linear-layers'
  | 'unsupported-dtype'
  | 'dynamic-weight-shape'
  | 'non-finite-weight'
  | 'unknown-initializer'
  | 'runtime-rejected'
  | 'runtime-failed'
  | 'already-quantized'
  | 'too-large'
  | 'unsupported-graph';

/** The model file (or its external data) can't be used as it is. */
export class ModelFormatError extends Error {
  override name = 'ModelFormatError';
  constructor(
    readonly code: ModelFormatErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export type ModelWriteInputErrorCode = 'overwrite-source' | 'bad-weight' | 'bad-option';

/** A write or transform was asked for something that can't be done (bad path, wrong array size). */
export class ModelWriteInputError extends Error {
  override name = 'ModelWriteInputError';
  constructor(
    readonly code: ModelWriteInputErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
