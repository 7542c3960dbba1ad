// Stage 2, rotate: QuaRot (§1.3) for activation / KV quantization, as a graph transform on the
// working model, checked against the unrotated graph. Keeps the rotated dense graph (the reference
// for baselines, sensitivity and one-shot calibration); the dense perplexity reads the source file.
import { encodeModel, type ModelProto } from '../../onnx/proto';
import { rotateModel } from '../../onnx/rotate';
import { configGeometry } from '../geometry';
import type { Job } from '../job';
import { checkRotation } from '../rotationCheck';
import type { LoadedJob } from './load';

export interface RotatedJob {
  /** Rotated (when `rotated`), dense. The unrotated inline copy is not kept: the dense perplexity reads the source model's file. */
  baseProto: ModelProto;
  rotated: boolean;
}

export async function rotateStage(job: Job, input: LoadedJob): Promise<RotatedJob> {
  const { options } = job;
  const { working } = input;
  const rotated = options.abits < 16 || options.kvbits < 16;
  if (rotated) {
    const t = performance.now();
    job.progress.report('rotate', 0, 1, 'rotating the residual stream (QuaRot)');
    // The rotation and its check still work on the whole graph in memory (weights read inline from
    // the store); the rotated weights then go to the working data file and are released.
    const dense = await working.inlined();
    try {
      const r = rotateModel(dense.model, { seed: options.seed, geometry: job.extra.geometry, configGeometry: configGeometry(job.source) });
      job.warnings.push(...r.warnings);
      // The rotated model must still be the dense model (float tolerance) — checked before calibration.
      job.progress.report('rotate', 0, 1, 'checking the rotated model against the dense one');
      const check = await checkRotation(dense.model, r.model, input.calib, encodeModel, {
        executionProviders: options.executionProviders,
        abits: options.abits,
        kvbits: options.kvbits,
        halfPrecision: working.layers.some((l) => l.dtype !== 'float32'),
        spillDir: job.paths.partialDir,
      });
      await working.replaceProto(r.model);
      job.log('info', `rotation check: the rotated model's logits match the dense model's to ${check.relativeError.toPrecision(2)} (relative, ${check.windows} calibration windows; tolerance ${check.tolerance})`);
    } finally {
      working.releaseInline(dense.bytes);
    }
    job.timings.rotate = (performance.now() - t) / 1000;
    job.progress.report('rotate', 1, 1);
  }
  return { baseProto: working.proto, rotated };
}
