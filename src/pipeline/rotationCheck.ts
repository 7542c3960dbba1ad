// Checks a QuaRot-rotated model before the expensive part of a job (docs/obr-algorithm.md §1.3):
// the rotation is an exact change of basis, so the rotated, not-yet-quantized model must give the
// dense model's logits up to float rounding. A few calibration windows are run through both; a
// difference beyond float tolerance means the rotation does not fit this graph (head geometry,
// norm placement, an unexpected op) and the job stops with what was found and what to do — before
// calibration, not after hours of compression. The simulated graph (online q/k Hadamards and A4/KV4
// quantizers) is also run once, so a shape error there shows up now too.
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { PROTOBUF_LIMIT_BYTES } from '../onnx/load';
import type { ModelProto, TensorProto } from '../onnx/proto';
import { writeModel } from '../onnx/write';
import { rotationOf } from '../onnx/rotate';
import { GraphPatternFormatError } from '../onnx/rotateGraph';
import { CausalLm, floatData } from '../runtime/lm';
import type { TokenWindows } from '../runtime/text';
import { withFakeQuant } from './transforms';

export interface RotationCheckOptions {
  executionProviders: readonly string[];
  /** Windows compared (the first ones of the calibration set; default 2). */
  windows?: number;
  /** Activation/KV bits of the job: the simulated graph is run once with them. */
  abits: number;
  kvbits: number;
  /** Whether the weights are 16-bit floats (looser tolerance). */
  halfPrecision?: boolean;
  /**
   * A folder for models onnxruntime can't take from memory (over protobuf's 2 GiB limit): they are
   * written there with external data, opened from the file and removed after (the job's working
   * folder). Without it such a model fails with onnxruntime's size error.
   */
  spillDir?: string;
  /** Inline weight bytes above which a model is spilled (default: protobuf's limit less 64 MiB; tests lower it). */
  inMemoryLimit?: number;
}

export interface RotationCheckResult {
  /** ‖logits_rotated − logits_dense‖₂ / ‖logits_dense‖₂ over the compared windows. */
  relativeError: number;
  tolerance: number;
  windows: number;
}

/** Relative tolerance: rotation in float32 is ~1e-6 relative; 16-bit activations ~1e-3. */
export function rotationTolerance(halfPrecision: boolean): number {
  return halfPrecision ? 3e-2 : 1e-3;
}

/** ‖b − a‖₂ / ‖a‖₂ in float64. */
export function relativeDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    const d = b[i]! - a[i]!;
    num += d * d;
    den += a[i]! * a[i]!;
  }
  return den > 0 ? Math.sqrt(num / den) : Math.sqrt(num);
}

/** Bytes of a graph's inline initializer data. */
function inlineBytes(m: ModelProto): number {
  const of = (t: TensorProto): number =>
    (t.rawData?.length ?? 0) + 4 * ((t.floatData?.length ?? 0) + (t.int32Data?.length ?? 0)) + 8 * ((t.int64Data?.length ?? 0) + (t.doubleData?.length ?? 0));
  return (m.graph?.initializer ?? []).reduce((s, t) => s + of(t), 0);
}

/** Leaves headroom under 2 GiB for the graph itself, as writeModel's 'auto' does. */
const IN_MEMORY_LIMIT = PROTOBUF_LIMIT_BYTES - 64 * 1024 * 1024;

/**
 * Logits of `count` windows, run one at a time (models exported for batch 1 work too). A model
 * over protobuf's limit is written with external data into `spillDir` and opened from there.
 */
async function logitsOf(
  model: ModelProto,
  encode: (m: ModelProto) => Uint8Array,
  spill: { dir?: string; limit: number },
  ids: Int32Array,
  count: number,
  seqlen: number,
  eps: readonly string[],
  label: string,
): Promise<Float32Array> {
  let spilled: string | undefined;
  let input: string | Uint8Array;
  if (spill.dir !== undefined && inlineBytes(model) > spill.limit) {
    spilled = join(spill.dir, `rotation-check-${label.replace(/[^a-z]+/gi, '-')}`);
    await mkdir(spilled, { recursive: true });
    input = (await writeModel(model, join(spilled, 'model.onnx'), { externalData: true })).path;
  } else {
    input = encode(model);
  }
  let lm: CausalLm;
  try {
    lm = await CausalLm.open(input, { executionProviders: eps, label });
  } catch (e) {
    if (spilled) await rm(spilled, { recursive: true, force: true });
    throw e;
  }
  try {
    const parts: Float32Array[] = [];
    for (let w = 0; w < count; w++) {
      const out = await lm.runOutputs(ids.subarray(w * seqlen, (w + 1) * seqlen), 1, seqlen, ['logits']);
      parts.push(Float32Array.from(floatData(out.logits!)));
      out.logits!.dispose();
    }
    const all = new Float32Array(parts.reduce((s, p) => s + p.length, 0));
    let at = 0;
    for (const p of parts) {
      all.set(p, at);
      at += p.length;
    }
    return all;
  } finally {
    await lm.release();
    if (spilled) await rm(spilled, { recursive: true, force: true });
  }
}

/**
 * Compares the rotated model with the dense one on the first windows of `calib`; throws
 * GraphPatternFormatError when they differ beyond float tolerance or the rotated/simulated graph
 * fails to run. `encode` turns a proto into bytes for onnxruntime (the working model's encoder).
 */
export async function checkRotation(
  dense: ModelProto,
  rotated: ModelProto,
  calib: TokenWindows,
  encode: (m: ModelProto) => Uint8Array,
  options: RotationCheckOptions,
): Promise<RotationCheckResult> {
  const count = Math.max(1, Math.min(options.windows ?? 2, calib.count));
  const ids = calib.ids.subarray(0, count * calib.seqlen);
  const info = rotationOf(rotated);
  const geometry = info
    ? `${info.numHeads} query heads, ${info.numKvHeads} KV heads, head_dim ${info.headDim}, hidden ${info.hidden}, FF ${info.intermediate}`
    : 'unknown geometry';
  const fix = 'pass --heads, --kv-heads and --head-dim if the geometry is wrong, or compress without rotation (--abits 16 --kvbits 16)';
  const spill = { dir: options.spillDir, limit: options.inMemoryLimit ?? IN_MEMORY_LIMIT };
  const reference = await logitsOf(dense, encode, spill, ids, count, calib.seqlen, options.executionProviders, 'the dense model');
  let actual: Float32Array;
  try {
    actual = await logitsOf(rotated, encode, spill, ids, count, calib.seqlen, options.executionProviders, 'the rotated model');
  } catch (e) {
    throw new GraphPatternFormatError(`the rotated model does not run (${(e as Error).message}); the rotation found ${geometry} — ${fix}`, { cause: e });
  }
  const relativeError = relativeDifference(reference, actual);
  const tolerance = rotationTolerance(options.halfPrecision ?? false);
  if (!(relativeError <= tolerance)) {
    throw new GraphPatternFormatError(
      `the rotated model's logits differ from the dense model's by ${relativeError.toPrecision(3)} (relative, on ${count} calibration window${count === 1 ? '' : 's'}; float tolerance ${tolerance}): the rotation does not fit this graph. It found ${geometry} — ${fix}`,
    );
  }
  if (options.abits < 16 || options.kvbits < 16) {
    const simulated = withFakeQuant(rotated, { abits: options.abits, kvbits: options.kvbits }).model;
    let logits: Float32Array;
    try {
      logits = await logitsOf(simulated, encode, spill, ids.subarray(0, calib.seqlen), 1, calib.seqlen, options.executionProviders, 'the simulated (A/KV-quantized) model');
    } catch (e) {
      throw new GraphPatternFormatError(`the simulated A${options.abits}/KV${options.kvbits} model does not run (${(e as Error).message}); it found ${geometry} — ${fix}`, { cause: e });
    }
    if (!logits.every(Number.isFinite)) throw new GraphPatternFormatError(`the simulated A${options.abits}/KV${options.kvbits} model gives non-finite logits before any weight is compressed; it found ${geometry} — ${fix}`);
  }
  return { relativeError, tolerance, windows: count };
}
