// Stage 2, rotate: QuaRot (§1.3) for activation / KV quantization, as a graph transform on the
// working model, checked against the unrotated graph. Keeps the rotated dense graph (the reference
// for baselines, sensitivity and one-shot calibration); the dense perplexity reads the source file.
//
// Memory: the rotation runs tensor by tensor through the working store (rotateModelStreamed):
// each weight is read, rotated, written to the working data file and dropped; the check streams
// the dense and the rotated model through their blocks (checkRotationStreamed) — so the stage
// holds a tensor or a block, never the model.
import path from 'node:path';
import { encodeModel, type ModelProto } from '../../onnx/proto';
import { rotateModel, rotateModelStreamed, type RotateOptions } from '../../onnx/rotate';
import { throwIfAborted } from '../cancel';
import { configGeometry } from '../geometry';
import { DEFAULT_ACTIVATION_CACHE_MIB, type Job } from '../job';
import { checkRotation, checkRotationStreamed } from '../rotationCheck';
import type { LoadedJob } from './load';

export interface RotatedJob {
  /** Rotated (when `rotated`), dense. The unrotated inline copy is not kept: the dense perplexity reads the source model's file. */
  baseProto: ModelProto;
  rotated: boolean;
}

/** The rotation options of a job (the merged decoder's with-past branch is planned with the same). */
export function rotateOptionsOf(job: Job): RotateOptions {
  return { seed: job.options.seed, geometry: job.extra.geometry, configGeometry: configGeometry(job.source) };
}

export async function rotateStage(job: Job, input: LoadedJob): Promise<RotatedJob> {
  const { options } = job;
  const { working } = input;
  const rotated = options.abits < 16 || options.kvbits < 16;
  if (rotated) {
    const t = performance.now();
    job.progress.report('rotate', 0, 1, 'rotating the residual stream (QuaRot)');
    const dense = working.proto;
    const r = working.store
      ? await rotateModelStreamed(dense, rotateOptionsOf(job), working.store, (done, total) => {
          throwIfAborted(job.signal);
          job.progress.report('rotate', 0.5 * (done / total), 1);
        })
      : rotateModel(dense, rotateOptionsOf(job));
    job.warnings.push(...r.warnings);
    const rotatedAt = performance.now();
    // The rotated model must still be the dense model (float tolerance) — checked before calibration,
    // both streamed through their blocks (one block's weights in a session at a time).
    job.progress.report('rotate', 0.5, 1, 'checking the rotated model against the dense one', undefined, true);
    const checkOptions = {
      executionProviders: options.executionProviders,
      abits: options.abits,
      kvbits: options.kvbits,
      halfPrecision: working.layers.some((l) => l.dtype !== 'float32'),
      spillDir: job.paths.partialDir,
    };
    const check = working.store
      ? await checkRotationStreamed(dense, r.model, input.calib, {
          ...checkOptions,
          weights: working.store,
          activations: { budgetBytes: (job.extra.activationCacheMiB ?? DEFAULT_ACTIVATION_CACHE_MIB) * 2 ** 20, spillDir: path.join(job.paths.partialDir, 'activations-rotation') },
          signal: job.signal,
        })
      : { ...(await checkRotation(dense, r.model, input.calib, encodeModel, checkOptions)), streamed: false };
    job.log(
      'info',
      `rotation check: the rotated model's logits match the dense model's to ${check.relativeError.toPrecision(2)} (relative, ${check.windows} calibration windows; tolerance ${check.tolerance}; ${check.streamed ? 'streamed through the blocks' : 'whole-model sessions'})`,
    );
    job.log('debug', `rotate stage: rotation ${((rotatedAt - t) / 1000).toFixed(1)} s, check ${((performance.now() - rotatedAt) / 1000).toFixed(1)} s`);
    await working.replaceProto(r.model);
    job.timings.rotate = (performance.now() - t) / 1000;
    job.progress.report('rotate', 1, 1);
  }
  return { baseProto: working.proto, rotated };
}
