// Checks a QuaRot-rotated model before the expensive part of a job (docs/obr-algorithm.md §1.3):
// the rotation is an exact change of basis, so the rotated, not-yet-quantized model must give the
// dense model's logits up to float rounding. A few calibration windows are run through both; a
// difference beyond float tolerance means the rotation does not fit this graph (head geometry,
// norm placement, an unexpected op) and the job stops with what was found and what to do — before
// calibration, not after hours of compression. The simulated graph (online q/k Hadamards and A4/KV4
// quantizers) is also run once, so a shape error there shows up now too.
//
// In a job (checkRotationStreamed) both models are streamed through their blocks as evaluation
// is (src/pipeline/blockStream.ts): one block's subgraph per onnxruntime session, its weights read
// from the working store and handed back, the hidden states of the few windows cached between
// blocks — so the check holds one block, not two whole models. checkRotation runs whole-model
// sessions (models given inline; graphs that can't be cut into blocks).
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { cloneModel } from '../onnx/graph';
import { findLinearLayers } from '../onnx/linear';
import { PROTOBUF_LIMIT_BYTES, type TensorReader } from '../onnx/load';
import { encodeModel, type ModelProto, type TensorProto } from '../onnx/proto';
import { writeModel } from '../onnx/write';
import { rotationOf } from '../onnx/rotate';
import { GraphPatternFormatError } from '../onnx/rotateGraph';
import { CausalLm, floatData } from '../runtime/lm';
import type { TokenWindows } from '../runtime/text';
import type { SpillOptions } from './activations';
import { BlockStream, inlineRegionWeights, type BlockStreamOptions } from './blockStream';
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
  const { geometry, fix } = found(rotated);
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
  checkTolerance(relativeError, tolerance, count, rotated);
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

/** What the rotation found (for messages) and what the user can do about a mismatch. */
function found(rotated: ModelProto): { geometry: string; fix: string } {
  const info = rotationOf(rotated);
  const geometry = info
    ? `${info.numHeads} query heads, ${info.numKvHeads} KV heads, head_dim ${info.headDim}, hidden ${info.hidden}, FF ${info.intermediate}`
    : 'unknown geometry';
  return { geometry, fix: 'pass --heads, --kv-heads and --head-dim if the geometry is wrong, or compress without rotation (--abits 16 --kvbits 16)' };
}

function checkTolerance(relativeError: number, tolerance: number, count: number, rotated: ModelProto): void {
  if (relativeError <= tolerance) return;
  const { geometry, fix } = found(rotated);
  throw new GraphPatternFormatError(
    `the rotated model's logits differ from the dense model's by ${relativeError.toPrecision(3)} (relative, on ${count} calibration window${count === 1 ? '' : 's'}; float tolerance ${tolerance}): the rotation does not fit this graph. It found ${geometry} — ${fix}`,
  );
}

export interface StreamedRotationCheckOptions extends RotationCheckOptions {
  /** Where the models' external weights are read from, a block at a time (the job's working store). */
  weights: TensorReader;
  /** Memory budget of the cached hidden states and where they spill (as calibration's). */
  activations?: SpillOptions;
  signal?: AbortSignal;
  /** Called after each region forward of the three passes (the pre-flight probe times them). */
  onForward?: BlockStreamOptions['onForward'];
}

/** A graph BlockStream can't cut into blocks: the check falls back to whole-model sessions. */
class NotSplittable extends Error {}

/**
 * Streams the first `windows.count` windows through `model`'s blocks (prelude, each block, tail;
 * one window per run, as the whole-model check feeds them) and hands each window's logits to
 * `onWindow`. Throws NotSplittable when the graph can't be cut into blocks.
 */
async function streamedLogits(
  model: ModelProto,
  windows: TokenWindows,
  options: StreamedRotationCheckOptions,
  onWindow: (window: number, logits: Float32Array) => void,
): Promise<void> {
  const layers = findLinearLayers(model, { allowEmpty: true, unsupportedDtype: 'skip' });
  const hasLogits = (model.graph?.output ?? []).some((o) => o.name === 'logits');
  const opened = hasLogits
    ? BlockStream.open(model, layers, windows, { executionProviders: options.executionProviders, batch: 1, weights: options.weights, spill: options.activations, signal: options.signal, onForward: options.onForward })
    : { err: 'no "logits" output' };
  if ('err' in opened) throw new NotSplittable(opened.err);
  const stream = opened.ok;
  try {
    await stream.begin(model);
    for (let b = 0; b < stream.blockRegions.length; b++) await stream.advance(model);
    await stream.tailOutputs(model, ['logits'], (batch, out) => onWindow(batch.start, floatData(out.logits!) as Float32Array));
  } finally {
    stream.dispose();
  }
}

/**
 * checkRotation with both models streamed through their blocks (see the header): same windows,
 * tolerance and errors. `dense` and `rotated` may hold external references `options.weights`
 * reads. Graphs that can't be cut into blocks are checked with whole-model sessions (their
 * weights read inline for the check and handed back after).
 */
export async function checkRotationStreamed(
  dense: ModelProto,
  rotated: ModelProto,
  calib: TokenWindows,
  options: StreamedRotationCheckOptions,
): Promise<RotationCheckResult & { streamed: boolean }> {
  const count = Math.max(1, Math.min(options.windows ?? 2, calib.count));
  const windows: TokenWindows = { ids: calib.ids.subarray(0, count * calib.seqlen), count, seqlen: calib.seqlen, offsets: calib.offsets.slice(0, count) };
  const { geometry, fix } = found(rotated);
  const tolerance = rotationTolerance(options.halfPrecision ?? false);
  try {
    // The dense logits are kept (a few windows × seqlen × vocab floats); the rotated ones are
    // compared window by window as they come: ‖Δ‖² and ‖dense‖² summed in float64.
    const reference: Float32Array[] = [];
    await streamedLogits(dense, windows, options, (w, logits) => {
      reference[w] = Float32Array.from(logits);
    });
    let num = 0;
    let den = 0;
    try {
      await streamedLogits(rotated, windows, options, (w, logits) => {
        const a = reference[w]!;
        if (logits.length !== a.length) throw new Error(`logits of ${logits.length} values instead of ${a.length}`);
        for (let i = 0; i < a.length; i++) {
          const d = logits[i]! - a[i]!;
          num += d * d;
          den += a[i]! * a[i]!;
        }
      });
    } catch (e) {
      if (e instanceof NotSplittable) throw e;
      throw new GraphPatternFormatError(`the rotated model does not run (${(e as Error).message}); the rotation found ${geometry} — ${fix}`, { cause: e });
    }
    const relativeError = den > 0 ? Math.sqrt(num / den) : Math.sqrt(num);
    checkTolerance(relativeError, tolerance, count, rotated);
    if (options.abits < 16 || options.kvbits < 16) {
      const simulated = withFakeQuant(rotated, { abits: options.abits, kvbits: options.kvbits }).model;
      const one: TokenWindows = { ids: windows.ids.subarray(0, calib.seqlen), count: 1, seqlen: calib.seqlen, offsets: [windows.offsets[0] ?? 0] };
      let finite = true;
      try {
        await streamedLogits(simulated, one, options, (_w, logits) => {
          finite &&= logits.every(Number.isFinite);
        });
      } catch (e) {
        if (e instanceof NotSplittable) throw e;
        throw new GraphPatternFormatError(`the simulated A${options.abits}/KV${options.kvbits} model does not run (${(e as Error).message}); it found ${geometry} — ${fix}`, { cause: e });
      }
      if (!finite) throw new GraphPatternFormatError(`the simulated A${options.abits}/KV${options.kvbits} model gives non-finite logits before any weight is compressed; it found ${geometry} — ${fix}`);
    }
    return { relativeError, tolerance, windows: count, streamed: true };
  } catch (e) {
    if (!(e instanceof NotSplittable)) throw e;
  }
  // A graph that can't be cut into blocks: whole-model sessions on inline copies.
  const held: number[] = [];
  const inline = async (m: ModelProto) => {
    const copy = cloneModel(m);
    held.push(await inlineRegionWeights(copy, options.weights));
    return copy;
  };
  try {
    const r = await checkRotation(await inline(dense), await inline(rotated), calib, encodeModel, options);
    return { ...r, streamed: false };
  } finally {
    for (const b of held) options.weights.release(b);
  }
}
